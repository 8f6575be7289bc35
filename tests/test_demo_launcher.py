"""`make demo`'s launcher as an operator meets it: the banner, a URL that answers with the
operator certificate, the services' logs in files, one console line per notable event (a
failure, a restart, a command and who sent it), and Ctrl-C — pressed several times, sent to
the whole foreground process group as a terminal does — stopping both ends cleanly."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from supervisor.certs import write_demo_certs
from tests.demo_configs import write_demo_configs
from tests.waiting import wait_until

TIMEOUT = 60


class Console:
    """The launcher's stdout, read line by line with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.text = ""
        self._partial = b""

    def until(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Read until ``pattern`` matches what was printed so far; the match."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while not (match := re.search(pattern, self.text, re.M)):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} in the console:\n{self.text}"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"the launcher closed its output; no {pattern!r} in:\n{self.text}"
                self.text += chunk.decode(errors="replace")
        return match

    def rest(self) -> str:
        self.text += self.proc.stdout.read().decode(errors="replace")
        return self.text


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ctl(ipc_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor.ctl", "--socket", str(ipc_path), *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def kill_services(logs):
    """SIGKILL the relay and target the launcher started, by their pid files, if still there."""
    for name in ("relay", "target"):
        try:
            os.kill(int((logs / f"{name}.pid").read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_the_demo_console_is_an_operators_view_and_ctrl_c_stops_both_ends(run_dir):
    certs = write_demo_certs(str(run_dir / "certs"))
    relay_config, target_config, port = write_demo_configs(run_dir, certs)
    logs = run_dir / "logs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor._launch_demo", "--relay-config", str(relay_config),
         "--target-config", str(target_config), "--certs", str(certs.directory), "--logs", str(logs)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    console = Console(proc)
    ipc_path = run_dir / "payments-worker-a.sock"
    sockets = [run_dir / "relay-registration.sock", ipc_path]
    try:
        console.until(r"^Ctrl-C stops")
        banner = console.text
        url = re.search(r"^Dashboard: +(https://\S+)$", banner, re.M).group(1)
        assert url == f"https://localhost:{port}/"
        assert re.search(rf"^Certificate: +{re.escape(certs.operator_p12)}$", banner, re.M)
        assert re.search(rf"^Password: +{re.escape(certs.p12_password)} +\(saved in "
                         rf"{re.escape(certs.p12_password_file)}\)$", banner, re.M)
        assert f"curl --cacert {certs.ca_cert} --cert {certs.operator_cert} --key {certs.operator_key} {url}" in banner
        for name in ("relay", "target"):
            assert re.search(rf"^  {name} log: +{re.escape(str(logs / (name + '.log')))}$", banner, re.M)
        # the services' own output is in their files, not on the console
        assert "twistd" not in banner and "processed batch" not in banner
        wait_until(lambda: "processed batch" in (logs / "target.log").read_text(), TIMEOUT, "target log")
        wait_until(lambda: "registered at" in (logs / "relay.log").read_text(), TIMEOUT, "registered")

        context = ssl.create_default_context(cafile=certs.ca_cert)
        context.load_cert_chain(certs.operator_cert, certs.operator_key)
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
        assert all(s.exists() for s in sockets)

        # the demo exists to show failures and restarts: each is one line, in local time
        console.until(r"^\d\d:\d\d:\d\d  failed +/root/flaky_exporter: RuntimeError: simulated failure$")
        console.until(r"^\d\d:\d\d:\d\d  restarted +/root/flaky_exporter \(restart \d+\)$")
        # a command shows who sent it and why, then its outcome; the CLI talks to the target
        # directly, so "alice" is only what it wrote, and the line says so
        paused = ctl(ipc_path, "--as", "alice", "pause", "/root/invoice_writer", "--reason", "console check")
        assert paused.returncode == 0, paused.stderr
        console.until(r'^\d\d:\d\d:\d\d  command +pause_child /root/invoice_writer from alice '
                      r'\(NOT via the relay: direct_ipc, sender unverified\): "console check"$')
        console.until(r"^\d\d:\d\d:\d\d  paused +/root/invoice_writer$")
        console.until(r"^\d\d:\d\d:\d\d  command +pause_child /root/invoice_writer: completed$")
        assert "child_heartbeat" not in console.text and "processed batch" not in console.text

        # Ctrl-C, then twice more while stopping: the terminal signals the whole group
        os.killpg(proc.pid, signal.SIGINT)
        console.until(r"^stopping the target…$")
        os.killpg(proc.pid, signal.SIGINT)
        console.until(r"^\(SIGINT: already stopping")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
        text = console.rest()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        kill_services(logs)  # a failed test leaves no relay or target behind
    assert text.rstrip().endswith("stopped."), text
    assert not any(s.exists() for s in sockets)
    for name in ("relay", "target"):
        log = (logs / f"{name}.log").read_text()
        assert "Traceback" not in log and "critical" not in log, log
        # the services are outside the terminal's process group: one SIGTERM each, no SIGINT
        assert log.count("Received SIGTERM, shutting down.") == 1, log
        assert "SIGINT" not in log, log
        assert "Server Shut Down" in log, log
    assert "Traceback" not in text
    leftovers = subprocess.run(["pgrep", "-f", str(relay_config)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""


def test_a_service_that_cannot_start_is_explained_with_the_end_of_its_log(run_dir):
    certs = write_demo_certs(str(run_dir / "certs"))
    relay_config, target_config, _ = write_demo_configs(run_dir, certs)
    bad = run_dir / "bad.pem"
    bad.write_text("not a certificate\n")
    config = yaml.safe_load(relay_config.read_text())
    config["tls"]["certificate_path"] = str(bad)
    relay_config.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "supervisor._launch_demo", "--relay-config", str(relay_config),
         "--target-config", str(target_config), "--certs", str(certs.directory),
         "--logs", str(run_dir / "logs")],
        capture_output=True, text=True, timeout=TIMEOUT, start_new_session=True,
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stdout + result.stderr
    assert "Dashboard:" not in result.stdout and "starting the target" not in result.stdout
    log = run_dir / "logs" / "relay.log"
    assert result.stderr.startswith(f"error: the relay exited with status 2; the end of {log}:\n"), result.stderr
    assert f"{bad} holds no PEM certificate" in result.stderr, result.stderr
