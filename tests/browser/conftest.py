"""Browser test harness: a real relay and a real target started as ``twistd`` subprocesses,
Chromium driven by Playwright with the operator's client certificate for mTLS.

Fixtures
- ``certs``: CA, relay and operator certificates from ``supervisor.certs``.
- ``browser``: the system Chromium at /usr/bin/chromium (Playwright never downloads one).
- ``relay`` / ``target``: processes with per-test configs in a short /tmp directory.
- ``dashboard``: a 1280×800 page of the relay's dashboard, opened with the operator cert.
- ``offline_dashboard``: the page served by a relay but with ``?offline=1`` (no session),
  for feeding synthetic messages through ``window.__dashboard.ingest``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from supervisor.certs import DemoCerts, write_demo_certs
from tests.demo_configs import free_port
from tests.waiting import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TWISTD = str(Path(sys.executable).with_name("twistd"))
OPERATOR = "CN=demo operator"
TARGET_ID = "demo-target"
# Commands the operator is granted; quarantine_child and shutdown_tree are left out so
# refusals (command_not_permitted) can be seen.
GRANTED = ["restart_child", "pause_child", "resume_child", "remove_child", "add_child"]

expect.set_options(timeout=15_000)
LOGS = pytest.StashKey[list]()  # processes whose logs a failing test report shows


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A twistd child process with its output in a log file."""

    def __init__(self, name: str, args: list[str], run_dir: Path) -> None:
        self.name = name
        self.args = args
        self.run_dir = run_dir
        self.log_path = run_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, cwd=self.run_dir, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Relay(Proc):
    """``twistd -n supervisor-relay`` with mTLS on a free localhost port."""

    def __init__(self, run_dir: Path, certs: DemoCerts, *,
                 allowed_origins: tuple[str, ...] = (), static_dir: Path | None = None) -> None:
        self.port = free_port()
        self.origin = f"https://localhost:{self.port}"
        self.registration_path = run_dir / "registration.sock"
        config = run_dir / "relay.yaml"
        operators = "\n".join(f"        - {c}" for c in GRANTED)
        origins = ", ".join(f'"{o}"' for o in allowed_origins)
        dashboard = f"dashboard:\n  static_dir: {static_dir}\n" if static_dir else ""
        config.write_text(dashboard + textwrap.dedent(f"""\
            listen:
              bind: "127.0.0.1:{self.port}"
              public_url: "wss://localhost:{self.port}/supervisor"
              allowed_origins: [{origins}]
            tls:
              certificate_path: {certs.relay_cert}
              private_key_path: {certs.relay_key}
              client_ca_path: {certs.ca_cert}
            registration:
              listen_path: {self.registration_path}
              permissions: "0600"
              allowed_ipc_path_prefixes: [{run_dir}]
            authorization:
              operators:
                - principal: "{OPERATOR}"
                  commands:
            """) + operators + textwrap.dedent(f"""
            audit:
              path: {run_dir / "audit.sqlite3"}
            timeouts:
              reconnect_initial_ms: 100
              reconnect_max_ms: 1000
            """))
        super().__init__("relay", [TWISTD, "-n", "--pidfile=", "supervisor-relay",
                                   "--config", str(config)], run_dir)

    def start(self) -> None:
        super().start()
        wait_for(lambda: port_open(self.port) or not self.alive(), 20, "relay listening")
        assert self.alive(), f"relay exited:\n{self.tail()}"


# The target's tree: a steady worker, a child that fails on purpose, a process child that
# prints to stdout, a spare child to remove, and a nested supervisor with a dependency.
TARGET_TREE = """\
supervisor:
  strategy: one_for_one
policy:
  initial_backoff_ms: 300
  max_backoff_ms: 2000
  child_restart_limit: 1000
  supervisor_failure_limit: 1000
children:
  - name: steady
    kind: task
    callable: supervisor.demo:steady_worker
  - name: flaky
    kind: task
    callable: supervisor.demo:flaky_worker
  - name: printer
    kind: process
    command: ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo printer line $i; sleep 0.3; done"]
  - name: spare
    kind: task
    callable: supervisor.demo:steady_worker
  - name: nested
    kind: supervisor
    strategy: one_for_all
    children:
      - name: db
        kind: task
        callable: supervisor.demo:steady_worker
      - name: api
        kind: task
        callable: supervisor.demo:steady_worker
        dependencies: [db]
"""


class Target(Proc):
    """``twistd -n supervisor-target`` registering with the relay."""

    def __init__(self, run_dir: Path, relay: Relay) -> None:
        self.ipc_path = run_dir / f"{TARGET_ID}.sock"
        config = run_dir / "target.yaml"
        config.write_text(TARGET_TREE + textwrap.dedent(f"""\
            ipc:
              enabled: true
              target_id: {TARGET_ID}
              path: {self.ipc_path}
              bind_mode: replace_stale
              registration:
                enabled: true
                relay_registration_path: {relay.registration_path}
                display_name: demo target
                lease_seconds: 10
                registration_heartbeat_interval_seconds: 2
            """))
        super().__init__("target", [TWISTD, "-n", "--pidfile=", "supervisor-target",
                                    "--config", str(config)], run_dir)

    def start(self) -> None:
        super().start()
        wait_for(lambda: self.ipc_path.exists() or not self.alive(), 20, "target IPC socket")
        assert self.alive(), f"target exited:\n{self.tail()}"


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> DemoCerts:
    return write_demo_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Unix socket paths must stay short: a fresh folder directly under /tmp.
    path = Path(tempfile.mkdtemp(prefix="dash-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def relay(run_dir, certs, request) -> Iterator[Relay]:
    relay = Relay(run_dir, certs)
    relay.start()
    request.node.stash.setdefault(LOGS, []).append(relay)
    yield relay
    relay.stop()


@pytest.fixture
def target(run_dir, relay, request) -> Iterator[Target]:
    target = Target(run_dir, relay)
    target.start()
    request.node.stash.setdefault(LOGS, []).append(target)
    yield target
    target.stop()


def new_page(browser: Browser, relay: Relay, certs: DemoCerts | None, *,
             width: int = 1280, height: int = 800, init_script: str | None = None):
    """A page in a fresh context; with ``certs`` the operator certificate is offered."""
    options = dict(viewport={"width": width, "height": height}, ignore_https_errors=True,
                   locale="en-US")
    if certs is not None:
        options["client_certificates"] = [{"origin": relay.origin,
                                           "certPath": certs.operator_cert,
                                           "keyPath": certs.operator_key}]
    context = browser.new_context(**options)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.page_errors = errors  # checked by tests that care
    return context, page


@pytest.fixture
def dashboard(browser, relay, target, certs) -> Iterator[Page]:
    context, page = new_page(browser, relay, certs)
    page.goto(relay.origin + "/")
    expect(page.locator("#relay-status")).to_have_class("status st-established")
    yield page
    assert page.page_errors == [], page.page_errors
    context.close()


@pytest.fixture(scope="module")
def static_relay(certs, request) -> Iterator[Relay]:
    path = Path(tempfile.mkdtemp(prefix="dash-", dir="/tmp"))
    relay = Relay(path, certs)
    relay.start()
    yield relay
    relay.stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def offline_dashboard(browser, static_relay, certs) -> Iterator[Page]:
    context, page = new_page(browser, static_relay, certs)
    page.goto(static_relay.origin + "/?offline=1")
    page.wait_for_function("window.__dashboard !== undefined")
    yield page
    assert page.page_errors == [], page.page_errors
    context.close()


def ingest(page: Page, messages: list[dict]) -> None:
    """Feed relay messages to the page and wait until they are rendered."""
    page.evaluate("ms => { for (const m of ms) window.__dashboard.ingest(m); }", messages)
    page.evaluate("() => window.__dashboard.nextFrame()")


def screenshot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path))
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, append the tails of the relay and target logs to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("call", "setup"):
        for proc in item.stash.get(LOGS, []):
            report.sections.append((f"{proc.name} log", proc.tail(60)))
