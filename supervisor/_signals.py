"""One stop per process: the first SIGINT or SIGTERM stops the reactor, later ones are noted.

A terminal's Ctrl-C, a second Ctrl-C and a launcher's or service manager's SIGTERM can all
reach a process whose staged shutdown is already under way. Twisted's handlers answer each
with another ``reactor.stop()``, which raises ``ReactorNotRunning`` inside the reactor and is
logged as a critical traceback. :class:`StopOnce` keeps the handler the reactor installed for
the first signal (it logs the signal, records it as the exit signal and stops the reactor)
and, once a shutdown has begun by any road, logs the later ones and lets the shutdown finish.

The reactor installs its handlers only when it starts to run, after the services started:
a target's tree has started its children by then. A signal in between would end the process
by its default disposition and leave every child running, so until the reactor runs the
stop signals (and ``SIGHUP``) are queued for it instead.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Callable

from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The reactor's own handler of each stop signal (public methods of Twisted's ReactorBase).
_REACTOR_HANDLERS = {signal.SIGINT: "sigInt", signal.SIGTERM: "sigTerm"}
Handler = Callable[[int, "FrameType | None"], Any]


class StopOnce:
    """Holds stop signals until the reactor runs, then wraps its handlers; see the module
    docstring.

    ``on_repeat(signal_name)`` is told of each signal that arrives during the shutdown (by
    default it is logged).
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore,
                 on_repeat: Callable[[str], None] | None = None) -> None:
        self._reactor = reactor
        self._on_repeat = on_repeat or self._log_repeat
        #: True from the first stop signal, the start of a shutdown or :meth:`stopping_now`
        self.stopping = False
        #: the handlers found by :meth:`install` before the reactor ran
        self._original: dict[int, Any] = {}

    def install(self) -> None:
        """Handle stop signals from now on: call before the services start (or once the reactor
        runs)."""
        self._reactor.addSystemEventTrigger("before", "shutdown", self.stopping_now)
        if getattr(self._reactor, "running", False):
            self._wrap_handlers()
            return
        self._original = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum, original in self._original.items():
            if callable(original) or original == signal.SIG_DFL:
                signal.signal(signum, self._before_running)
        # runs right after the reactor's own "during startup" trigger, which installs its handlers
        self._reactor.addSystemEventTrigger("during", "startup", self._take_over)

    def _before_running(self, signum: int, frame: FrameType | None) -> None:
        """A stop signal before the reactor runs: the reactor's own handler runs once it does."""
        name = signal.Signals(signum).name
        if self.stopping:
            self._on_repeat(name)
            return
        self.stopping = True
        self.log.info("Received {signal} while starting; stopping once started", signal=name)
        self._reactor.callFromThread(self._reactor_handler(signum), signum, None)

    def _reactor_handler(self, signum: int) -> Handler:
        """What the reactor does on ``signum``: log it, record it as the exit signal, stop."""
        handler = getattr(self._reactor, _REACTOR_HANDLERS[signum], None)
        return handler if handler is not None else (lambda number, frame: self._reactor.stop())

    def _take_over(self) -> None:
        """Once the reactor has installed its handlers: where it left one of ours (it replaces
        SIGINT's only when it finds Python's own there), put in what it would have, or what was
        there before; then wrap them all."""
        installed = signal.getsignal(signal.SIGTERM) != self._before_running
        for signum, original in self._original.items():
            if signal.getsignal(signum) != self._before_running:
                continue
            if installed and (original is signal.default_int_handler or original == signal.SIG_DFL):
                signal.signal(signum, self._reactor_handler(signum))
            else:
                signal.signal(signum, original)
        self._wrap_handlers()

    def stopping_now(self) -> None:
        """A shutdown has begun by another road (the program's own stop): signals only log."""
        self.stopping = True

    def _wrap_handlers(self) -> None:
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if callable(previous):  # left alone: ignored (SIG_IGN) or default dispositions
                signal.signal(signum, self._handler(previous))

    def _log_repeat(self, name: str) -> None:
        self.log.info("Received {signal} while shutting down; the shutdown continues", signal=name)

    def _handler(self, previous: Handler) -> Handler:
        def handle(signum: int, frame: FrameType | None) -> None:
            if self.stopping:
                self._on_repeat(signal.Signals(signum).name)
                return
            self.stopping = True
            previous(signum, frame)

        return handle


class ReloadOnHangup:
    """``SIGHUP`` asks the target to reload its config, as a ``reload_config`` command would.

    The handler only wakes the reactor (``callFromThread``); ``reload()`` runs there, one at
    a time (a hangup during a reload is logged and dropped: the running reload reads the
    file anyway).
    """

    log = Logger()

    def __init__(self, reactor: Any, reload: Callable[[str], Any]) -> None:
        self._reactor = reactor
        self._reload = reload
        self._count = 0
        self._running = False

    def install(self) -> None:
        """Take over ``SIGHUP`` now: one that arrives before the reactor runs is queued for it."""
        signal.signal(signal.SIGHUP, lambda signum, frame: self._reactor.callFromThread(self.hangup))

    def hangup(self) -> None:
        """Run one reload (on the reactor thread)."""
        if self._running:
            self.log.info("SIGHUP during a config reload: that reload reads the file already")
            return
        self._count += 1
        self._running = True
        d = self._reload(f"sighup-{self._count}")

        def done(result: Any) -> Any:
            self._running = False
            return result

        d.addBoth(done)
