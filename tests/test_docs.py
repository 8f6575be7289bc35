"""docs/configuration.md lists every key the loaders accept, with the defaults the code uses."""

from __future__ import annotations

import pathlib
import re

import attrs
import pytest

from supervisor.config import fleet, gateway, relay, target
from supervisor.tree.spec import (
    HistoryConfig, Observability, Policy, PrometheusConfig, ResourcesConfig, ShutdownPolicy,
)

DOC = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()


def table(heading: str) -> dict[str, str]:
    """``{key: default}`` from the table under ``### heading``."""
    section = DOC.split("## Relay", 1)[0].split(f"### `{heading}`", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \|", section, re.M)
    return {key: default.strip() for key, default in rows}


@pytest.mark.parametrize(
    "heading, keys",
    [
        ("supervisor", ("strategy", "name")),
        ("policy", target.POLICY_KEYS),
        ("shutdown", target.SHUTDOWN_KEYS),
        ("observability", target.OBSERVABILITY_KEYS),
        ("observability.resources", target.RESOURCES_KEYS),
        ("observability.prometheus", target.PROMETHEUS_KEYS),
        ("observability.history", target.HISTORY_KEYS),
        ("children[]", target.CHILD_KEYS),
        ("ipc", target.IPC_KEYS),
        ("ipc.registration", target.REGISTRATION_KEYS),
        ("ipc.add_child", target.ADD_CHILD_KEYS),
    ],
)
def test_every_target_key_is_documented(heading, keys):
    assert set(table(heading)) == set(keys)


@pytest.mark.parametrize(
    "heading, model", [("policy", Policy), ("shutdown", ShutdownPolicy), ("observability", Observability),
                       ("observability.resources", ResourcesConfig),
                       ("observability.prometheus", PrometheusConfig),
                       ("observability.history", HistoryConfig)]
)
def test_documented_defaults_match_the_models(heading, model):
    documented = table(heading)
    for field in attrs.fields(model):
        if attrs.has(type(field.default)):  # a nested section: its own table below
            assert documented[field.name] == f"see `{heading}.{field.name}`", field.name
        elif field.default is None:  # off, or required once the section is enabled
            assert documented[field.name] == "off" or documented[field.name].startswith(
                "required"), field.name
        else:
            assert documented[field.name] == str(field.default).lower(), field.name


def doc_form(value) -> str:
    """How the reference writes a default in its table."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if value == ():
        return "`[]`"
    return f"`{value}`"


MODE_0600 = '`"0600"`'


@pytest.mark.parametrize("part, heading, model, phrases", [
    ("target", "ipc", target.IpcConfig, {"permissions": MODE_0600, "registration": "disabled",
                                         "add_child": "refuses all"}),
    ("target", "ipc.add_child", target.AddChildPolicy, {}),
    ("target", "ipc.registration", target.RegistrationConfig, {"display_name": "the target id"}),
    ("relay", "registration", relay.RegistrationConfig, {"permissions": MODE_0600,
                                                         "pinned_owners": "`{}`"}),
    ("relay", "audit", relay.AuditConfig, {}),
    ("relay", "trusted_proxy", relay.TrustedProxyConfig, {}),
])
def test_documented_settings_defaults_match_the_models(part, heading, model, phrases):
    documented = table(heading) if part == "target" else relay_table(heading)
    for field in attrs.fields(model):
        if documented[field.name] != "required":
            want = phrases.get(field.name) or doc_form(field.default)
            assert documented[field.name] == want, field.name


RELAY_SECTIONS = {
    "listen": {"bind", "public_url", "allowed_origins"},
    "dashboard": {f.name for f in attrs.fields(relay.DashboardConfig)},
    "tls": {f.name for f in attrs.fields(relay.TLSConfig)},
    "trusted_proxy": {f.name for f in attrs.fields(relay.TrustedProxyConfig)},
    "registration": {f.name for f in attrs.fields(relay.RegistrationConfig)},
    "authorization": {f.name for f in attrs.fields(relay.AuthorizationConfig)},
    "audit": {f.name for f in attrs.fields(relay.AuditConfig)},
    "limits": {f.name for f in attrs.fields(relay.LimitsConfig)},
    "timeouts": {f.name for f in attrs.fields(relay.TimeoutsConfig)},
    "metrics": {f.name for f in attrs.fields(relay.MetricsConfig)},
    "alerts": {f.name for f in attrs.fields(relay.AlertsConfig)},
    "fleet": set(fleet.FLEET_KEYS),
    "nats": set(fleet.NATS_KEYS),
    "gateway": set(gateway.GATEWAY_KEYS),
}


def relay_table(heading: str) -> dict[str, str]:
    section = DOC.split("## Relay", 1)[1].split(f"### `{heading}`", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \|", section, re.M)
    return {key: default.strip() for key, default in rows}


@pytest.mark.parametrize("heading", sorted(RELAY_SECTIONS))
def test_every_relay_key_is_documented(heading):
    assert set(relay_table(heading)) == RELAY_SECTIONS[heading]


@pytest.mark.parametrize("heading, model", [("limits", relay.LimitsConfig), ("timeouts", relay.TimeoutsConfig),
                                            ("gateway", gateway.GatewaySettings)])
def test_documented_relay_defaults_match_the_models(heading, model):
    documented = relay_table(heading)
    for field in attrs.fields(model):
        assert documented[field.name] == str(field.default), field.name


def test_documented_relay_sections_are_the_ones_the_loader_accepts():
    with pytest.raises(relay.ConfigError, match="unknown key"):
        relay.parse_relay_config({"bogus": {}}, "/tmp")
    for heading in set(RELAY_SECTIONS) - {"gateway"}:
        try:
            relay.parse_relay_config({heading: {}}, "/tmp")
        except relay.ConfigError as e:
            assert "unknown key" not in str(e), heading


FLEET_DOC = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "fleet.md").read_text()


def test_every_fleet_subject_is_named_in_the_fleet_guide():
    from supervisor.fleet import subjects

    named = [name for name in subjects.__all__
             if name.endswith(("_subject", "_pattern")) or name.startswith("ALL_")]
    assert {"heartbeat_subject", "registry_subject", "stream_subject", "rpc_subject",
            "host_rpc_pattern"} <= set(named)
    missing = [name for name in named if f"`{name}`" not in FLEET_DOC]
    assert not missing, missing


def test_the_fleet_guide_quotes_natsconf_output():
    from supervisor.fleet.natsconf import HostUser, render_nats_config

    text = render_nats_config(
        listen="0.0.0.0:4222", cert="/etc/nats/nats-server.pem",
        key="/etc/nats/nats-server-key.pem", ca="/etc/nats/ca.pem",
        hosts=[HostUser("a", "CN=host-a, O=Supervisor Fleet")],
        gateways=["CN=fleet-gateway, O=Supervisor Fleet"])
    assert f"```\n{text}```" in FLEET_DOC


def test_the_configuration_reference_points_at_the_fleet_guide():
    fleet_section = DOC.split("### `fleet`", 1)[1].split("\n### ", 1)[0]
    assert "docs/fleet.md" in fleet_section
