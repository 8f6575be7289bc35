"""``make demo``: certificates, the relay, the demo target, and an operator's console.

    python -m supervisor._launch_demo [--relay-config etc/demo-relay.yaml]
        [--target-config etc/demo-target.yaml] [--certs .local/certs] [--logs .local/logs]

The console shows a banner (dashboard URL, operator certificate and its password, the curl
line, where the logs are) and then one line per notable event of the target: failures,
restarts, holds, and every command with who sent it. The relay's and the target's own output
goes to size-capped files under ``--logs`` (``relay.log``, ``target.log``; at most
:data:`LOG_ROTATE_BYTES` each plus one rotated ``.1`` file; the previous run's log is kept as
``.1``). The two services run in their own process group, so the terminal's Ctrl-C reaches
only this launcher, which sends each of them one SIGTERM: the target first, then the relay.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Coroutine, NoReturn, TextIO

from twisted.internet import abstract, fdesc
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from supervisor._signals import StopOnce
from supervisor.certs import DemoCerts, write_demo_certs
from supervisor.config._common import ConfigError
from supervisor.config.relay import load_relay_config
from supervisor.config.target import load_target_config
from supervisor.wire.client import NDJSONClientProtocol, connect_unix
from supervisor.wire.errors import WireError

STARTUP_SECONDS = 30.0
STOP_SECONDS = 20.0
POLL_SECONDS = 0.1
IPC_TIMEOUT_SECONDS = 10.0
LOG_ROTATE_BYTES = 4 * 1024 * 1024
LOG_TAIL_LINES = 20


class DemoError(Exception):
    """Why the demo could not start; printed without a traceback."""


class _OutputToLog(abstract.FileDescriptor):
    """Copies a child's stdout/stderr pipe into a :class:`LogFile` as it arrives."""

    def __init__(self, reactor: Any, pipe: Any, log: LogFile) -> None:
        super().__init__(reactor)
        self._pipe = pipe
        self._log = log
        fdesc.setNonBlocking(pipe.fileno())
        self.startReading()

    def fileno(self) -> int:
        return self._pipe.fileno()

    def doRead(self) -> Any:
        return fdesc.readFromFD(self._pipe.fileno(), self._log.write)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._pipe.close()
        self._log.close()


def twistd_argv(logs: str, name: str, plugin: str, config: str) -> list[str]:
    """``twistd -n PLUGIN --config CONFIG`` of this virtualenv, its pid file in ``logs``."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    return [twistd, "-n", f"--pidfile={os.path.join(logs, name + '.pid')}", plugin,
            "--config", config]


class Child:
    """One ``twistd -n`` service in its own process group, its output in a capped log file."""

    def __init__(self, reactor: Any, name: str, config: str, logs: str,
                 argv: list[str] | None = None) -> None:
        self.name = name
        self.log_path = os.path.join(logs, f"{name}.log")
        log = LogFile(f"{name}.log", logs, rotateLength=LOG_ROTATE_BYTES, maxRotatedFiles=1)
        if log.size:
            log.rotate()  # the previous run's output becomes NAME.log.1
        self.proc = subprocess.Popen(
            argv or twistd_argv(logs, name, f"supervisor-{name}", config),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            process_group=0,
        )
        self._output = _OutputToLog(reactor, self.proc.stdout, log)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        """The last lines the child wrote, for a start that failed."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-LOG_TAIL_LINES:])
        except OSError:
            return ""


async def _until(reactor: Any, condition: Callable[[], bool], seconds: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``seconds`` pass (False)."""
    deadline = reactor.seconds() + seconds
    while not condition():
        if reactor.seconds() >= deadline:
            return False
        await deferLater(reactor, POLL_SECONDS, lambda: None)
    return True


class Demo:
    """The two services, started in order and stopped in reverse."""

    def __init__(self, reactor: Any, out: TextIO, logs: str) -> None:
        self._reactor = reactor
        self._out = out
        self._logs = logs
        self.children: list[Child] = []
        self.sockets: list[str] = []
        #: fires with a message when a service exits while the demo runs
        self.exited: Deferred[str] = Deferred()
        self._watch = LoopingCall(self._check)
        self._watch.clock = reactor
        self._stopped = False

    def say(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    async def start(self, name: str, config: str, socket_path: str,
                    ready: Callable[[], bool], argv: list[str] | None = None) -> Child:
        """Start one service and wait until ``ready()``; DemoError with its log tail if it fails.

        ``socket_path`` is the Unix socket it serves, removed once it has stopped; ``argv``
        replaces the ``twistd -n supervisor-NAME --config CONFIG`` command line.
        """
        child = Child(self._reactor, name, config, self._logs, argv)
        self.children.append(child)
        self.sockets.append(socket_path)
        self.say(f"starting the {name} (log: {child.log_path})")
        up = await _until(self._reactor, lambda: not child.running or ready(), STARTUP_SECONDS)
        if not child.running:
            raise DemoError(f"the {name} exited with status {child.proc.returncode}; "
                            f"the end of {child.log_path}:\n{child.tail()}")
        if not up:
            raise DemoError(f"the {name} was not ready within {STARTUP_SECONDS:.0f} s; "
                            f"see {child.log_path}")
        if not self._watch.running:
            self._watch.start(POLL_SECONDS * 5, now=False)
        return child

    def _check(self) -> None:
        for child in self.children:
            if not child.running and not self.exited.called:
                self.exited.callback(f"the {child.name} exited with status {child.proc.returncode}; "
                                     f"see {child.log_path}")

    def stop(self) -> Deferred[None]:
        """SIGTERM each service, newest first, waiting for each; then remove their sockets."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._watch.running:
            self._watch.stop()
        for child in reversed(self.children):
            if not child.running:
                continue
            self.say(f"stopping the {child.name}…")
            child.proc.send_signal(signal.SIGTERM)
            if not await _until(self._reactor, lambda: not child.running, STOP_SECONDS):
                self.say(f"the {child.name} did not stop within {STOP_SECONDS:.0f} s; killing it")
                child.proc.kill()
                await _until(self._reactor, lambda: not child.running, STOP_SECONDS)
        for path in self.sockets:
            if os.path.exists(path):
                os.unlink(path)
        if self.children:
            self.say("stopped.")


def _accepts(host: str, port: int) -> bool:
    """True when a TCP connection to ``host:port`` is accepted (the relay's site is up)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _clock(event: dict[str, Any]) -> str:
    nanos = event.get("occurred_at_unix_nanos")
    return time.strftime("%H:%M:%S", time.localtime(nanos / 1e9)) if isinstance(nanos, int) else "--:--:--"


def describe(event: dict[str, Any]) -> str | None:
    """One console line for a notable event (local time, what, where, why); None for others."""
    p = event.get("payload") or {}
    kind = event.get("event_type")
    path = event.get("target_path", "")
    what: str | None = None
    if kind == "child_failed":
        what = f"failed      {path}: {p.get('reason', '')}"
    elif kind == "child_restarted":
        what = f"restarted   {path} (restart {p.get('restart_count', '?')})"
    elif kind in ("child_paused", "child_resumed", "child_quarantined", "child_removed", "child_added"):
        what = f"{kind[len('child_'):]:<11} {path}"
    elif kind == "child_heartbeat_stale":
        what = f"stale       {path}: no heartbeat for {p.get('silent_ms', '?')} ms"
    elif kind in ("supervisor_escalated", "restart_intensity_exceeded"):
        what = f"escalated   {path}: {p.get('reason') or kind}"
    elif kind == "tree_stopped":
        what = f"stopped     the tree: {p.get('reason', '')}"
    elif kind == "command_received":
        origin = p.get("origin")
        unverified = f" (NOT via the relay: {origin}, sender unverified)" if origin and origin != "relay" else ""
        what = (f"command     {p.get('command')} {path} from {p.get('requested_by')}{unverified}: "
                f"\"{p.get('reason', '')}\"")
    elif kind == "command_completed":
        error = f" ({p['error']})" if p.get("error") else ""
        what = f"command     {p.get('command')} {path}: {p.get('status')}{error}"
    return None if what is None else f"{_clock(event)}  {what}"


class EventLines:
    """Subscribes to the target's events and prints :func:`describe`'s line for each."""

    def __init__(self, reactor: Any, demo: Demo) -> None:
        self._reactor = reactor
        self._demo = demo

    def push(self, push: dict[str, Any]) -> None:
        if push.get("type") == "event":
            line = describe(push.get("event") or {})
            if line:
                self._demo.say(line)
        elif push.get("type") == "dropped_count":
            self._demo.say(f"(the target dropped {push.get('dropped_event_count')} events "
                           "this console did not read in time)")

    async def follow(self, ipc_path: str, target_id: str) -> None:
        """Replay the journal from the start, then stream until the target goes away."""
        def build() -> NDJSONClientProtocol:
            return NDJSONClientProtocol(self._reactor, default_timeout=IPC_TIMEOUT_SECONDS,
                                        on_push=self.push)

        try:
            client = await connect_unix(self._reactor, ipc_path, build, timeout=IPC_TIMEOUT_SECONDS)
            await client.request("events.subscribe", {
                "target_id": target_id, "session_established": True, "since_sequence": 0})
        except WireError as e:
            self._demo.say(f"(no event lines: {e.message})")
            return
        await client.closed


def banner(url: str, certs: DemoCerts, logs: list[Child],
           stops: str = "the target, then the relay") -> str:
    """What the operator needs to open the dashboard, as the first screen of the console."""
    width = max([13] + [len(child.name) + 6 for child in logs])
    log_lines = "\n".join(f"  {child.name + ' log:':<{width}} {child.log_path}" for child in logs)
    return f"""
Dashboard:     {url}
Certificate:   {certs.operator_p12}
Password:      {certs.p12_password}   (saved in {certs.p12_password_file})

  The relay asks for a client certificate. Import the file above once, with the password:
  Chromium/Chrome: Settings → Privacy and security → Security → Manage certificates →
                   Your certificates → Import.
  Firefox:         Settings → Privacy & Security → Certificates → View Certificates →
                   Your Certificates → Import.
  The relay's certificate is signed by the demo CA ({certs.ca_cert}); import it as a
  trusted authority, or accept the browser's warning for localhost.

From a shell:  curl --cacert {certs.ca_cert} --cert {certs.operator_cert} --key {certs.operator_key} {url}

{log_lines}

Ctrl-C stops {stops}. Notable events follow (local time):
"""


async def _session(reactor: Any, args: argparse.Namespace, demo: Demo, out: TextIO) -> str:
    relay_config = load_relay_config(args.relay_config)
    target_config = load_target_config(args.target_config)
    ipc_path = target_config.ipc.path or ""
    for folder in {os.path.dirname(relay_config.registration.listen_path), os.path.dirname(ipc_path)}:
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
    os.makedirs(args.logs, mode=0o700, exist_ok=True)
    certs = write_demo_certs(args.certs)
    registration, listen = relay_config.registration.listen_path, relay_config.listen
    await demo.start("relay", args.relay_config, registration,
                     lambda: os.path.exists(registration) and _accepts(listen.host, listen.port))
    await demo.start("target", args.target_config, ipc_path, lambda: os.path.exists(ipc_path))
    out.write(banner(relay_config.listen.origin + "/", certs, demo.children))
    out.flush()
    Deferred.fromCoroutine(EventLines(reactor, demo).follow(ipc_path, target_config.ipc.target_id))
    return await demo.exited


async def run_demo(reactor: IReactorCore, out: TextIO, logs: str,
                   session: Callable[[Demo], Coroutine[Any, Any, str]]) -> NoReturn:
    """Run ``session(demo)`` (start the services, then wait; it returns why it ended) until
    Ctrl-C or a failure, then stop every service; exits 0 on Ctrl-C, else 1 with the reason."""
    demo = Demo(reactor, out, logs)
    StopOnce(reactor, on_repeat=lambda name: demo.say(
        f"({name}: already stopping; each service gets up to {STOP_SECONDS:.0f} s)")).install()
    work = Deferred.fromCoroutine(session(demo))
    # Ctrl-C stops the reactor: stop waiting, then stop the services before it exits
    reactor.addSystemEventTrigger("before", "shutdown", work.cancel)
    reactor.addSystemEventTrigger("before", "shutdown", demo.stop)
    try:
        why = await work
    except CancelledError:
        raise SystemExit(0)
    except (ConfigError, DemoError) as e:
        why = str(e)
    print(f"error: {why}", file=sys.stderr)
    await demo.stop()
    raise SystemExit(1)


async def _main(reactor: IReactorCore, args: argparse.Namespace, out: TextIO) -> NoReturn:
    await run_demo(reactor, out, args.logs, lambda demo: _session(reactor, args, demo, out))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m supervisor._launch_demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--relay-config", default="etc/demo-relay.yaml")
    parser.add_argument("--target-config", default="etc/demo-target.yaml")
    parser.add_argument("--certs", default=".local/certs")
    parser.add_argument("--logs", default=".local/logs", help="folder for relay.log and target.log")
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    react(_main, (_parser().parse_args(argv), sys.stdout))


if __name__ == "__main__":
    main()
