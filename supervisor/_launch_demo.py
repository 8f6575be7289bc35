"""``make demo``: certificates, then the relay, then the demo target; Ctrl-C stops both.

    python -m supervisor._launch_demo [--relay-config etc/demo-relay.yaml]
                                     [--target-config etc/demo-target.yaml] [--certs .local/certs]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Callable

from supervisor.certs import write_demo_certs
from supervisor.config.relay import load_relay_config
from supervisor.config.target import load_target_config

STARTUP_SECONDS = 30.0
STOP_SECONDS = 20.0


def _twistd() -> str:
    return str(pathlib.Path(sys.executable).with_name("twistd"))


def _wait(condition: Callable[[], bool], what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{what}: a process exited early with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not ready within {STARTUP_SECONDS:.0f} s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, name: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within {STOP_SECONDS:.0f} s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def _instructions(url: str, certs: object) -> str:
    return f"""
Dashboard: {url}

The relay asks for a client certificate. Load the demo operator certificate once:
  file:     {certs.operator_p12}
  password: {certs.p12_password}

  Chromium/Chrome: Settings → Privacy and security → Security → Manage certificates →
                   Your certificates → Import → pick the file above, enter the password.
  Firefox:         Settings → Privacy & Security → Certificates → View Certificates →
                   Your Certificates → Import.
  The relay's certificate is signed by the demo CA ({certs.ca_cert}); import it as a trusted
  authority, or accept the browser's warning for localhost.

From a shell:  curl --cacert {certs.ca_cert} --cert {certs.operator_cert} --key {certs.operator_key} {url}

Ctrl-C stops the target and the relay.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor._launch_demo")
    parser.add_argument("--relay-config", default="etc/demo-relay.yaml")
    parser.add_argument("--target-config", default="etc/demo-target.yaml")
    parser.add_argument("--certs", default=".local/certs")
    args = parser.parse_args(argv)

    relay_config = load_relay_config(args.relay_config)
    target_config = load_target_config(args.target_config)
    for folder in {os.path.dirname(relay_config.registration.listen_path),
                   os.path.dirname(target_config.ipc.path or "")}:
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
    certs = write_demo_certs(args.certs)

    named: list[tuple[str, subprocess.Popen]] = []
    procs: list[subprocess.Popen] = []
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        relay = subprocess.Popen([_twistd(), "-n", "supervisor-relay", "--config", args.relay_config])
        procs.append(relay)
        named.append(("relay", relay))
        _wait(lambda: os.path.exists(relay_config.registration.listen_path), "relay", procs)
        target = subprocess.Popen([_twistd(), "-n", "supervisor-target", "--config", args.target_config])
        procs.append(target)
        named.append(("target", target))
        _wait(lambda: os.path.exists(target_config.ipc.path or ""), "target", procs)
        url = relay_config.listen.origin + "/"
        print(_instructions(url, certs), flush=True)
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    print(f"a demo process exited with status {proc.returncode}", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    finally:
        for name, proc in reversed(named):
            _stop(proc, name)
        for path in (target_config.ipc.path, relay_config.registration.listen_path):
            if path and os.path.exists(path):
                os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
