"""``twistd supervisor-target`` as a subprocess, and the operator CLI against it."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from tests.waiting import wait_until

VENV_BIN = pathlib.Path(sys.executable).parent
TWISTD = str(VENV_BIN / "twistd")


@pytest.fixture
def workdir():
    folder = tempfile.mkdtemp(prefix="tgt", dir="/tmp")
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def write_config(folder: pathlib.Path) -> pathlib.Path:
    config = folder / "target.yaml"
    config.write_text(textwrap.dedent(f"""\
        supervisor: {{strategy: one_for_one}}
        policy: {{initial_backoff_ms: 100, max_backoff_ms: 1000, jitter_ratio: 0.1}}
        shutdown: {{graceful_timeout_ms: 2000, abort_wait_ms: 1000}}
        ipc:
          enabled: true
          target_id: cli-target
          path: {folder}/t.sock
          bind_mode: replace_stale
        children:
          - {{name: worker, kind: task, callable: "supervisor.demo:steady_worker"}}
          - name: printer
            kind: process
            command: [{sys.executable}, -u, -c, "import time\\nwhile True:\\n    print('tick', flush=True)\\n    time.sleep(0.2)"]
    """))
    return config


def ctl(folder: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.ctl", "--socket", str(folder / "t.sock"), *args],
        capture_output=True, text=True, timeout=60,
    )


def test_twistd_runs_a_yaml_tree_that_the_cli_can_watch_and_control(workdir):
    config = write_config(workdir)
    proc = subprocess.Popen([TWISTD, "-n", "supervisor-target", "--config", str(config)],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (workdir / "t.sock").exists(), 20, "IPC socket")
        assert (workdir / "supervisor-target.pid").exists(), "pidfile defaults to supervisor-target.pid"
        wait_until(lambda: "tick" in ctl(workdir, "logs").stdout, 20, "process output in the log tail")
        status = ctl(workdir, "status")
        assert status.returncode == 0, status.stderr
        assert "/root/worker" in status.stdout and "/root/printer" in status.stdout
        assert "running" in status.stdout
        state = json.loads(ctl(workdir, "--json", "status").stdout)
        assert [r["child_path"] for r in state["runtime_state"]] == ["/root/worker", "/root/printer"]
        with open(f"/proc/{proc.pid}/maps") as f:
            mapped = f.read()
        # the reactor runs without TLS: neither pyOpenSSL nor the cryptography it loads
        assert "/OpenSSL/" not in mapped and "/cryptography/" not in mapped

        paused = ctl(workdir, "pause", "/root/printer", "--reason", "maintenance")
        assert paused.returncode == 0 and "completed" in paused.stdout
        refused = ctl(workdir, "pause", "/root/printer", "--reason", "again")
        assert refused.returncode == 2 and "illegal_transition" in refused.stdout
        danger = ctl(workdir, "remove", "/root/printer", "--reason", "x")
        assert danger.returncode == 1 and "--yes" in danger.stderr
        events = ctl(workdir, "events")
        assert "child_paused" in events.stdout
        lines = [json.loads(l) for l in ctl(workdir, "--json", "events").stdout.splitlines()]
        assert any(l["event"]["event_type"] == "child_paused" for l in lines if l["type"] == "event")
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode in (0, -signal.SIGTERM), output  # twistd re-raises the signal it stopped on
    assert not (workdir / "t.sock").exists(), "socket removed on clean shutdown"
    assert "Traceback" not in output


def test_config_errors_name_the_key_and_exit_without_a_traceback(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("policy: {initial_backoff_ms: 500, max_backoff_ms: 100}\n")
    result = subprocess.run([TWISTD, "-n", "supervisor-target", "--config", str(bad)],
                            cwd=workdir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"invalid config {bad}: policy.max_backoff_ms: must be ≥ "
                             "initial_backoff_ms (500)\n"), "the error alone, no usage text"


def test_check_validates_without_starting(workdir):
    config = write_config(workdir)
    result = subprocess.run([TWISTD, "-n", "supervisor-target", "--config", str(config), "--check"],
                            cwd=workdir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok"
    assert not (workdir / "t.sock").exists()


def test_an_unusable_ipc_path_stops_start_up_with_a_clear_message(workdir):
    config = write_config(workdir)
    (workdir / "t.sock").write_text("not a socket")
    result = subprocess.run([TWISTD, "-n", "supervisor-target", "--config", str(config)],
                            cwd=workdir, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"cannot listen on {workdir}/t.sock" in output and "not a socket" in output
    assert "Traceback" not in output
    assert (workdir / "t.sock").read_text() == "not a socket"


STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def note(name):
    with open(f"{sys.argv[1]}/{name}.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(f"{sys.argv[1]}/{name}.tmp", f"{sys.argv[1]}/{name}")
if os.fork() == 0:
    os.setsid()
    note("grandchild")
    time.sleep(120)
    os._exit(0)
note("leader")
time.sleep(120)
"""

DAEMONIZER = """
import os, sys, time
if os.fork() == 0:
    if os.fork() == 0:
        with open(sys.argv[1] + "/daemon.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + "/daemon.tmp", sys.argv[1] + "/daemon")
        time.sleep(120)
    os._exit(0)
time.sleep(120)
"""


def write_owner_config(folder: pathlib.Path) -> pathlib.Path:
    config = folder / "owner.yaml"
    config.write_text(textwrap.dedent(f"""\
        shutdown: {{graceful_timeout_ms: 500, abort_wait_ms: 2000}}
        ipc: {{enabled: true, target_id: owner-target, path: {folder}/t.sock, bind_mode: replace_stale}}
        children:
          - {{name: stubborn, kind: process, parent_death_signal: KILL,
              command: [{sys.executable}, -c, {json.dumps(STUBBORN)}, {folder}]}}
          - {{name: daemonizer, kind: process, command: [{sys.executable}, -c, {json.dumps(DAEMONIZER)}, {folder}]}}
    """))
    return config


def pid_in(path: pathlib.Path) -> int | None:
    return int(path.read_text()) if path.exists() else None


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_killed_target_leaves_no_second_copy_and_orphans_come_back_to_it(workdir):
    config = write_owner_config(workdir)
    names = ("leader", "grandchild", "daemon")
    first = subprocess.Popen([TWISTD, "-n", "--pidfile=", "supervisor-target", "--config", str(config)],
                             cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        old = wait_until(lambda: all((workdir / n).exists() for n in names) and
                         {n: pid_in(workdir / n) for n in names}, 30, "every process wrote its pid")
        # the daemon's parent exited: it came back to the target, its subreaper
        assert parent(old["daemon"]) == first.pid
        first.kill()
        first.wait(timeout=30)
        for name in names:
            (workdir / name).unlink()
        # the leader was given SIGKILL as its parent-death signal; what left its session waits
        wait_until(lambda: not running(old["leader"]), 10, "the leader died with the target")
        assert running(old["grandchild"])
        second = subprocess.Popen([TWISTD, "-n", "--pidfile=", "supervisor-target", "--config", str(config)],
                                  cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        new = wait_until(lambda: all((workdir / n).exists() for n in names) and
                         {n: pid_in(workdir / n) for n in names}, 30, "the new copies wrote their pids")
        assert not any(running(pid) for pid in old.values()), "the dead target's processes are gone"
        assert all(running(pid) for pid in new.values())
        removed = ctl(workdir, "remove", "/root/daemonizer", "--reason", "test", "--yes")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        wait_until(lambda: not os.path.exists(f"/proc/{new['daemon']}"), 10,
                   "the adopted daemon was killed and reaped")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
    assert second is not None
    assert not any(running(pid_in(workdir / n) or 0) for n in ("leader", "grandchild") if (workdir / n).exists())
