"""Config reload of ``twistd supervisor-target`` as a subprocess: SIGHUP and ``ctl reload``."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

from supervisor.tree.descendants import alive
from tests.test_twistd_target import TWISTD, ctl, workdir  # noqa: F401  (fixture)
from tests.waiting import wait_until


def child(name: str, *extra: str) -> str:
    """A process child that appends its pid to ``pids-<name>`` and sleeps."""
    script = f"import os, time; open('pids-{name}', 'a').write(str(os.getpid()) + chr(10)); time.sleep(600)"
    return f"  - {{name: {name}, kind: process, command: {[sys.executable, '-c', script, *extra]!r}}}\n"


def write(folder: pathlib.Path, *children: str, broken: bool = False) -> pathlib.Path:
    config = folder / "target.yaml"
    config.write_text(
        "policy: {initial_backoff_ms: 100, max_backoff_ms: 1000}\n"
        "shutdown: {graceful_timeout_ms: 2000, abort_wait_ms: 1000}\n"
        "ipc:\n  enabled: true\n  target_id: reload-target\n"
        f"  path: {folder}/t.sock\n  bind_mode: replace_stale\n"
        "children:\n" + "".join(children)
        + ("  - {name: bad, kind: process, command: []}\n" if broken else "")
    )
    return config


def status(folder: pathlib.Path) -> dict[str, dict]:
    done = ctl(folder, "--json", "status")
    if done.returncode != 0:
        return {}
    return {r["child_path"]: r for r in json.loads(done.stdout)["runtime_state"]}


def pids(folder: pathlib.Path, name: str) -> list[int]:
    path = folder / f"pids-{name}"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def settled(rows: dict[str, dict]) -> dict[str, dict]:
    """The rows without their resource figures, which the periodic sampling may refresh at any time."""
    return {path: {k: v for k, v in row.items() if k != "resources"} for path, row in rows.items()}


def running(folder: pathlib.Path, *paths: str) -> bool:
    rows = status(folder)
    return all(rows.get(p, {}).get("lifecycle_state") == "running" for p in paths)


def test_sighup_and_ctl_reload_apply_the_edited_file_to_the_running_target(workdir):  # noqa: F811
    config = write(workdir, child("keep"), child("edit"), child("gone"))
    proc = subprocess.Popen([TWISTD, "-n", "supervisor-target", "--config", str(config)],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: running(workdir, "/root/keep", "/root/edit", "/root/gone"), 30, "children up")
        wait_until(lambda: all(pids(workdir, n) for n in ("keep", "edit", "gone")), 10, "pid files")
        keep_pid, edit_pid, gone_pid = (pids(workdir, n)[0] for n in ("keep", "edit", "gone"))

        write(workdir, child("keep"), child("edit", "changed"), child("fresh"))
        # the dry run prints the diff and changes nothing
        dry = ctl(workdir, "reload", "--dry-run", "--reason", "check the edit")
        assert dry.returncode == 0, dry.stderr
        assert "dry run, nothing changed" in dry.stdout
        assert "+ /root/fresh" in dry.stdout and "- /root/gone" in dry.stdout
        assert "~ /root/edit  command  (restarts)" in dry.stdout
        assert "1 unchanged" in dry.stdout
        assert set(status(workdir)) == {"/root/keep", "/root/edit", "/root/gone"}
        # without --yes the real thing is refused
        refused = ctl(workdir, "reload", "--reason", "x")
        assert refused.returncode == 1 and "--yes" in refused.stderr

        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: running(workdir, "/root/fresh") and "/root/gone" not in status(workdir),
                   30, "reload applied")
        wait_until(lambda: running(workdir, "/root/edit") and len(pids(workdir, "edit")) == 2, 30,
                   "edit restarted")
        rows = status(workdir)
        assert rows["/root/keep"]["generation"] == 1 and pids(workdir, "keep") == [keep_pid]
        assert alive(keep_pid)
        assert rows["/root/edit"]["generation"] == 2
        wait_until(lambda: not alive(edit_pid) and not alive(gone_pid), 10, "old processes gone")

        # an invalid file changes nothing, on SIGHUP and through ctl, and names the key
        write(workdir, child("keep"), child("edit", "changed"), child("fresh"), broken=True)
        before = settled(status(workdir))
        os.kill(proc.pid, signal.SIGHUP)
        bad = ctl(workdir, "reload", "--reason", "broken edit", "--yes")
        assert bad.returncode == 2
        assert "invalid_config" in bad.stdout and "children[3].command" in bad.stdout
        assert settled(status(workdir)) == before

        write(workdir, child("keep"), child("edit", "changed"))
        good = ctl(workdir, "reload", "--reason", "drop fresh", "--yes")
        assert good.returncode == 0 and "- /root/fresh" in good.stdout, good.stdout
        assert set(status(workdir)) == {"/root/keep", "/root/edit"}
        assert pids(workdir, "keep") == [keep_pid]

        events = ctl(workdir, "events").stdout
        assert "config_reloaded" in events and "child_reconfigured" in events
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    log = out.decode()
    assert "config reloaded (sighup-1): 1 added, 1 removed, 1 changed, 1 unchanged" in log
    assert "config reload refused (sighup-2): invalid_config" in log
    assert "children[3].command" in log
    assert proc.returncode in (0, -signal.SIGTERM), log  # twistd re-raises the signal it stopped on
    assert "Traceback" not in log
