"""The dashboard's vocabulary.js is generated from supervisor.wire.vocabulary and current."""

from pathlib import Path

from supervisor.wire import vocabulary


def test_dashboard_vocabulary_is_generated_from_python():
    current = Path(vocabulary.JS_PATH).read_text(encoding="utf-8")
    assert current == vocabulary.javascript(), (
        "supervisor/relay/web/static/vocabulary.js is stale: "
        "run `python -m supervisor.wire.vocabulary`"
    )


def test_every_event_type_has_a_contract_severity():
    assert set(vocabulary.EVENT_SEVERITY.values()) <= set(vocabulary.SEVERITIES)
    assert set(vocabulary.EVENT_LIFECYCLE) <= set(vocabulary.EVENT_TYPES)
    assert set(vocabulary.EVENT_LIFECYCLE.values()) <= set(vocabulary.LIFECYCLE_STATES)
    assert vocabulary.DANGEROUS_COMMANDS <= set(vocabulary.COMMANDS)
