"""``twistd supervisor-target --config FILE``: run a supervision tree from YAML."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService
from twisted.internet.error import ReactorNotRunning
from twisted.python import usage

from supervisor.config._common import ConfigError
from supervisor.config.target import TargetConfig, load_target_config

DEFAULT_PIDFILE = "supervisor-target.pid"


def leave_out_tls() -> None:
    """Keep pyOpenSSL, and the cryptography it loads, out of the target's process.

    The target speaks only over Unix sockets, but Twisted's reactor imports its TLS support
    whenever pyOpenSSL is installed (which the relay, in the same package, needs): 12 MB of
    RSS and most of the start-up's imports. Marking ``OpenSSL`` as absent before the reactor
    is imported makes Twisted run without TLS, as it does where pyOpenSSL is not installed.
    A process that imported either already keeps it."""
    if "twisted.internet.reactor" not in sys.modules:
        sys.modules.setdefault("OpenSSL", None)  # type: ignore[arg-type]


class Options(usage.Options):
    synopsis = "--config FILE"
    optParameters = [["config", "c", None, "YAML file describing the tree (required)."]]
    optFlags = [["check", None, "Validate the config file, print 'ok' and exit."]]

    loaded: TargetConfig

    def postOptions(self) -> None:
        leave_out_tls()
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self.loaded = load_target_config(self["config"])
        except ConfigError as e:
            # the error alone, without twistd's usage text (with --check and at start)
            sys.stderr.write(f"invalid config {self['config']}: {e}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None
        if self["check"]:
            print("ok")
            raise SystemExit(0)
        parent = getattr(self, "parent", None)
        # Let a relay and a target run side by side in one folder without --pidfile.
        if parent is not None and parent.get("pidfile") == "twistd.pid":
            parent["pidfile"] = DEFAULT_PIDFILE


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from supervisor._signals import ReloadOnHangup, StopOnce
    from supervisor.target.service import reload_logged, target_service
    from supervisor.tree.spawn import seal_inherited_fds

    seal_inherited_fds()  # process children get only the descriptors they are given
    top, supervisor = target_service(options.loaded, reactor)
    shutting_down: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", shutting_down.append, True)
    # Ctrl-C, a second Ctrl-C and a launcher's SIGTERM may all arrive: one staged shutdown.
    signals = StopOnce(reactor)
    signals.install()
    supervisor.on_tree_stopped(lambda report: signals.stopping_now())
    ReloadOnHangup(reactor, lambda command_id: reload_logged(supervisor, command_id)).install()

    def tree_stopped(report: dict[str, Any]) -> None:
        # A tree that stopped on its own (escalation, shutdown_tree) ends the process; one
        # stopped by the process shutting down needs nothing more.
        if reactor.running and not shutting_down:
            reactor.callLater(0, _stop_reactor, reactor)

    supervisor.on_tree_stopped(tree_stopped)
    return top


def _stop_reactor(reactor: Any) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # it was stopping already
