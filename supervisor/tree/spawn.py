"""Starting OS processes: each child leads a new session, made without ``fork()`` in the target.

Twisted's ``spawnProcess`` has no option for a new session or process group, lists every open
descriptor of the daemon on each spawn, and falls back to ``fork()`` (running Python code in
the forked child) whenever a working directory is set. A target with threads must never fork
(DESIGN.md), and a child that does not lead its own group could not be stopped as a group. So
children are started here, with the standard library, and watched with public reactor API:

- **Backend.** ``os.posix_spawn(setsid=True)`` when the child needs nothing that call cannot
  express. A child that needs a step between fork and exec that ``os.posix_spawn`` lacks (a
  working directory, a user, a group with its supplementary groups, a umask) goes through ``subprocess.Popen(start_new_session=True, close_fds=True)``, whose C code
  (vfork, or a C-level fork when it must change ids) does that step and execs: no Python runs
  in the child. ``os.fork`` and ``preexec_fn`` are never used.
- **Descriptors.** The child gets ``/dev/null`` as stdin, a pipe as stdout and one as stderr.
  Nothing is listed or closed per spawn: every descriptor Python opens is close-on-exec
  (PEP 446), and :func:`seal_inherited_fds` marks the ones the process inherited, once, at
  start-up. A program that embeds a supervisor and marks a descriptor inheritable on purpose
  passes it to its process children.
- **Signals.** A posix_spawn child starts with every signal at its default disposition and
  an empty mask; a Popen child gets Popen's ``restore_signals`` (SIGPIPE and SIGXFSZ back to
  default; other signals the daemon ignores stay ignored).
- **Parent death.** Neither call can set a parent-death signal (``PR_SET_PDEATHSIG``), and
  Python must not run in the child to set it. A caller that asks for one gets it through
  util-linux's ``setpriv --pdeathsig <sig> -- <executable> <args>``, a small exec shim (the
  child's ``argv[0]`` is then the executable's path); where ``setpriv`` is missing the child
  starts without one. The executable is checked before the shim runs, so a missing or
  non-executable file still raises ``OSError`` here.
- **Exit.** A pidfd (``os.pidfd_open``, Linux 5.3+) is watched by the reactor, so the exit is
  seen without SIGCHLD and the child is reaped by its own ``waitpid``: no sweep over every
  child on each SIGCHLD, and no reliance on Twisted's process internals.

The protocol is a ``ProcessProtocol``: ``childDataReceived(fd, data)`` for output,
``processExited`` when the child is reaped, ``processEnded`` once it is reaped and both output
pipes are closed, with the same reasons Twisted gives (``ProcessDone``, ``ProcessTerminated``).
"""

from __future__ import annotations

import collections
import errno
import fcntl
import grp
import os
import pwd
import shutil
import signal
import subprocess
from typing import Any, Mapping, Sequence

import attrs
from twisted.internet import error
from twisted.internet.interfaces import IProcessProtocol, IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

#: Default dispositions for every signal in a posix_spawn child (the interpreter ignores
#: SIGPIPE and SIGXFSZ, and exec keeps ignored signals ignored).
_ALL_SIGNALS = tuple(sorted(signal.valid_signals()))
#: The child's stdin, opened by posix_spawn in the child itself.
_STDIN = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
#: One read's size: small enough that its buffer, and the history lines encoded from it,
#: come from the allocator's heap (glibc maps anything larger afresh, page by page).
_READ_SIZE = 32768
#: After a read, a child's output pipes are left alone this long before the next one, so
#: that a chatty child's output is taken a few hundred KiB at a time rather than a few KiB per
#: wake-up (the per-read cost, not the per-byte cost, is most of a chatty child's CPU in the
#: daemon). A quiet child's line is still read at once: the pause only follows a read, and
#: none follows once the child has exited (its end, and so its restart, waits for no pause).
#: Nor does one follow a wake-up that found a pipe half full or more: the child writes faster
#: than the pause allows, so the next read comes in the next reactor turn, before the child
#: has to wait on a full pipe.
_GATHER_SECONDS = 0.002
#: A pipe whose read fills half of :data:`_READ_SIZE` or more is grown to this (``F_SETPIPE_SZ``) so that the child does not
#: block during :data:`_GATHER_SECONDS`; later reads take up to this much. Only pipes that
#: proved chatty grow (an unprivileged user's pipe memory is limited by
#: ``/proc/sys/fs/pipe-user-pages-soft``); where the kernel refuses, the pipe keeps its size.
_CHATTY_PIPE_BYTES = 1024 * 1024
#: Most bytes :meth:`ChildProcess.drainAndClose` reads from one pipe (what a grown pipe holds).
_DRAIN_LIMIT = 1024 * 1024

#: Pids of started children not reaped yet: each is reaped by its own watch, nobody else.
LIVE_LEADERS: set[int] = set()
#: The sessions (leader pids) of the most recent children: their members are descendants.
RECENT_SESSIONS: "collections.deque[int]" = collections.deque(maxlen=4096)


def seal_inherited_fds(first: int = 3) -> int:
    """Mark every open descriptor ``>= first`` close-on-exec; return how many were not.

    Run once when a daemon starts: descriptors it inherited from whatever started it are the
    only ones Python did not open close-on-exec.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(fd) for fd in range(first, 1024)]
    sealed = 0
    for name in names:
        fd = int(name)
        if fd < first:
            continue
        try:
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
                sealed += 1
        except OSError:
            pass  # the descriptor listdir itself used, or one closed meanwhile
    return sealed


#: The exec shim that sets a parent-death signal, looked up once (None: not installed).
SETPRIV = shutil.which("setpriv")


def _check_executable(executable: str, cwd: str | None) -> None:
    """Raise the ``OSError`` exec would for ``executable`` (the shim cannot raise it here)."""
    if cwd is not None and not os.path.isdir(cwd):
        return  # the start itself fails on the cwd, with its own error
    path = executable if cwd is None else os.path.join(cwd, executable)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), executable)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), executable)


@attrs.frozen
class Identity:
    """Who a child runs as: a user (with its primary and supplementary groups), a group, a
    umask; ``None`` keeps the daemon's. Changing user or group needs a root daemon."""

    user: str | None = None
    group: str | None = None
    umask: int | None = None

    def popen_args(self) -> dict[str, Any]:
        """``subprocess.Popen`` arguments that set this identity in the child before exec."""
        args: dict[str, Any] = {}
        if self.user is not None:
            entry = pwd.getpwuid(int(self.user)) if self.user.isdigit() else pwd.getpwnam(self.user)
            args["user"] = entry.pw_uid
            args["group"] = entry.pw_gid
            args["extra_groups"] = os.getgrouplist(entry.pw_name, entry.pw_gid)
        if self.group is not None:
            entry_g = grp.getgrgid(int(self.group)) if self.group.isdigit() else grp.getgrnam(self.group)
            args["group"] = entry_g.gr_gid
            if self.user is None:
                args["extra_groups"] = []  # only the named group, not the daemon's
        if self.umask is not None:
            args["umask"] = self.umask
        return args


def needs_popen(cwd: str | None, identity: Identity | None = None) -> bool:
    """Whether a child needs ``subprocess.Popen`` (a step ``os.posix_spawn`` cannot do)."""
    return cwd is not None or (identity is not None and identity != Identity())


def spawn_child(
    reactor: IReactorFDSet,
    protocol: IProcessProtocol,
    executable: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None = None,
    parent_death_signal: int | None = None,
    identity: Identity | None = None,
) -> "ChildProcess":
    """Start ``executable`` (a path, not looked up) as the leader of a new session.

    ``protocol.makeConnection`` is called with the returned :class:`ChildProcess` before
    this returns. Failures to start (a missing or non-executable file, a bad ``cwd``) raise
    ``OSError`` here; no child exists then. ``identity`` sets the child's user, group and
    umask (a user or group that does not exist raises ``KeyError``). With
    ``parent_death_signal`` the child gets that signal when the thread that started it
    ends (the target dies), where ``setpriv`` exists.
    """
    if parent_death_signal is not None and SETPRIV is not None:
        _check_executable(executable, cwd)
        name = signal.Signals(parent_death_signal).name.removeprefix("SIG")
        argv = [SETPRIV, "--pdeathsig", name, "--", executable, *list(argv)[1:]]
        executable = SETPRIV
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    popen: subprocess.Popen[bytes] | None = None
    try:
        if needs_popen(cwd, identity):
            popen = subprocess.Popen(
                list(argv), executable=executable, env=dict(env), cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                close_fds=True, start_new_session=True, restore_signals=True,
                **(identity.popen_args() if identity is not None else {}),
            )
            pid = popen.pid
        else:
            pid = _posix_spawn(executable, argv, env, out_w, err_w)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # out of descriptors: a child we could not watch must not run
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            if popen is not None:
                popen.returncode = -signal.SIGKILL
            raise
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    child = ChildProcess(reactor, protocol, pid, pidfd, {1: out_r, 2: err_r}, popen)
    protocol.makeConnection(child)
    child._watch()
    return child


def _posix_spawn(executable: str, argv: Sequence[str], env: Mapping[str, str],
                 out_w: int, err_w: int) -> int:
    moved = []
    actions: list[tuple[Any, ...]] = [_STDIN]
    for child_fd, parent_fd in ((1, out_w), (2, err_w)):
        if parent_fd <= 2:
            # the daemon's own 0-2 were closed, so a pipe end landed on a number the child's
            # stdio needs: copy it above them (close-on-exec) before the dup2 actions run
            parent_fd = fcntl.fcntl(parent_fd, fcntl.F_DUPFD_CLOEXEC, 3)
            moved.append(parent_fd)
        actions.append((os.POSIX_SPAWN_DUP2, parent_fd, child_fd))
    try:
        return os.posix_spawn(
            executable, list(argv), env, file_actions=actions,
            setsid=True, setsigdef=_ALL_SIGNALS, setsigmask=(),
        )
    finally:
        for fd in moved:
            os.close(fd)


def _reason(status: int | None) -> Failure:
    """Twisted's reason for a wait status: ``ProcessDone`` for exit 0, else ``ProcessTerminated``."""
    if status is None:
        return Failure(error.ProcessTerminated(None, None, None))
    if os.WIFEXITED(status):
        code, sig = os.WEXITSTATUS(status), None
    else:
        code, sig = None, os.WTERMSIG(status)
    if code or sig:
        return Failure(error.ProcessTerminated(code, sig, status))
    return Failure(error.ProcessDone(status))


class ChildProcess:
    """The daemon's side of one started child: its pid, its output pipes, its exit."""

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        protocol: IProcessProtocol,
        pid: int,
        pidfd: int,
        pipes: dict[int, int],
        popen: subprocess.Popen[bytes] | None,
    ) -> None:
        self._reactor = reactor
        self._protocol: IProcessProtocol | None = protocol
        #: the child's pid; it also names the child's session and process group
        self.pid = pid
        self._exit = _ExitWatch(self, pidfd)
        self._pipes = {fd: _OutputPipe(self, fd, parent) for fd, parent in pipes.items()}
        self._popen = popen  # kept so that subprocess never polls (and reaps) the pid itself
        self._reason: Failure | None = None
        self._reading_paused = False
        #: the pending call that ends a gathering pause (see :data:`_GATHER_SECONDS`), if any
        self._gather: Any = None
        LIVE_LEADERS.add(pid)
        RECENT_SESSIONS.append(pid)

    def _watch(self) -> None:
        for pipe in self._pipes.values():
            self._reactor.addReader(pipe)
        self._reactor.addReader(self._exit)

    @property
    def reaped(self) -> bool:
        return self._reason is not None

    def signalProcess(self, signum: int | str) -> None:
        """Send ``signum`` (a number or a name such as ``"TERM"``) to the child alone."""
        if isinstance(signum, str):
            signum = getattr(signal, "SIG" + signum)
        if self.reaped:
            raise error.ProcessExitedAlready()
        signal.pidfd_send_signal(self._exit.fileno(), signum)

    def loseConnection(self) -> None:
        """Stop reading the child's output (the child keeps running)."""
        self._cancel_gather()
        for pipe in list(self._pipes.values()):
            pipe.close()

    def _cancel_gather(self) -> None:
        if self._gather is not None:
            if self._gather.active():
                self._gather.cancel()
            self._gather = None

    def pauseReading(self) -> None:
        """Stop reading the output pipes for now: a child that keeps writing blocks on a full
        pipe (backpressure), as it would writing to a slow file."""
        if not self._reading_paused:
            self._reading_paused = True
            for pipe in self._pipes.values():
                if pipe.fileno() >= 0:
                    self._reactor.removeReader(pipe)

    def resumeReading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            for pipe in self._pipes.values():
                if pipe.fileno() >= 0 and self._gather is None:
                    self._reactor.addReader(pipe)

    def drainAndClose(self) -> None:
        """Read what the pipes already hold (at most ``_DRAIN_LIMIT`` bytes each), then stop
        reading: for a leader that exited while others keep its pipes open."""
        self._cancel_gather()
        for pipe in list(self._pipes.values()):
            pipe.drain(_DRAIN_LIMIT)
            pipe.close()

    # what the readers report

    def _call(self, method: str, *args: Any) -> None:
        """Tell the protocol; a protocol that raises is logged and cannot stall the child."""
        if self._protocol is None:
            return
        try:
            getattr(self._protocol, method)(*args)
        except Exception:
            self._log.failure("process protocol {method} failed", method=method)

    def _output(self, fd: int, data: bytes) -> None:
        self._call("childDataReceived", fd, data)

    def _gather_pause(self, busy: bool) -> None:
        """After a read, leave every pipe of the child alone for :data:`_GATHER_SECONDS`, or
        only until the next reactor turn when the read found a pipe ``busy`` (half full)."""
        if self._gather is None and self._pipes and self._reason is None:
            for pipe in self._pipes.values():
                self._reactor.removeReader(pipe)
            self._gather = self._reactor.callLater(0 if busy else _GATHER_SECONDS,
                                                   self._gathered)

    def _gathered(self) -> None:
        """Read every pipe in turn (stdout first: what was written before a stderr line in
        the same pause is recorded before it), then pause again or watch the pipes."""
        self._gather = None
        if self._reading_paused:
            return  # resumeReading watches the pipes again
        took = busy = False
        for fd in sorted(self._pipes):
            pipe = self._pipes.get(fd)
            if pipe is not None and pipe.fileno() >= 0:
                taken = pipe.take()
                took = took or taken > 0
                busy = busy or pipe.busy(taken)
        if took and self._pipes and self._reason is None:
            self._gather_pause(busy)
        else:
            self._watch_pipes()

    def _watch_pipes(self) -> None:
        """Have the reactor read the open pipes again (unless reading is paused)."""
        if self._reading_paused:
            return
        for pipe in self._pipes.values():
            if pipe.fileno() >= 0:
                self._reactor.addReader(pipe)

    def _pipe_closed(self, fd: int) -> None:
        del self._pipes[fd]
        if not self._pipes:
            self._cancel_gather()
        self._call("childConnectionLost", fd)
        self._maybe_ended()

    def _exited(self, status: int | None) -> None:
        LIVE_LEADERS.discard(self.pid)
        self._reason = _reason(status)
        if self._popen is not None:
            self._popen.returncode = -1 if status is None else os.waitstatus_to_exitcode(status)
            self._popen = None
        self._call("processExited", self._reason)
        if self._gather is not None:
            # the leader is gone: what is left in its pipes is read now, and no pause
            # follows (the exit is reported once they close, and a restart waits for that)
            self._cancel_gather()
            self._watch_pipes()
        self._maybe_ended()

    def _maybe_ended(self) -> None:
        if self._reason is not None and not self._pipes and self._protocol is not None:
            self._call("processEnded", self._reason)
            self._protocol = None


@implementer(IReadDescriptor)
class _OutputPipe:
    """The read end of one output pipe, read by the reactor until end of file."""

    def __init__(self, child: ChildProcess, child_fd: int, fd: int) -> None:
        os.set_blocking(fd, False)
        self._child = child
        self._child_fd = child_fd
        self._fd = fd
        #: reads per wake-up: one until the pipe proves chatty (see :meth:`_grow`)
        self._pieces = 1

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"child {self._child.pid} fd {self._child_fd}"

    def doRead(self) -> None:
        taken = self.take()
        if taken:
            self._child._gather_pause(self.busy(taken))

    def busy(self, taken: int) -> bool:
        """Whether one wake-up's ``taken`` bytes were half of what it may read or more."""
        return taken * 2 >= self._pieces * _READ_SIZE

    def take(self) -> int:
        """Read what the pipe holds (up to its size); how many bytes were read."""
        took = 0
        for _ in range(self._pieces):
            try:
                data = os.read(self._fd, _READ_SIZE)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    break
                data = b""
            if not data:
                self.close()
                return took
            took += len(data)
            if self._pieces == 1 and len(data) >= _READ_SIZE // 2:
                self._grow()
            self._child._output(self._child_fd, data)
            if self._fd < 0 or len(data) < _READ_SIZE // 2:
                break  # closed by the protocol, or the pipe is (nearly) empty
        return took

    def _grow(self) -> None:
        try:
            size = fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, _CHATTY_PIPE_BYTES)
        except OSError:
            size = _READ_SIZE
        # reads of at most _READ_SIZE (smaller buffers are reused by the allocator; a
        # megabyte would be fresh pages from the kernel each time), as many as the pipe holds
        self._pieces = max(2, size // _READ_SIZE)

    def connectionLost(self, reason: Failure) -> None:
        self.close()

    def drain(self, limit: int) -> None:
        """Read without waiting until the pipe is empty, closed, or ``limit`` bytes were read."""
        taken = 0
        while self._fd >= 0 and taken < limit:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except OSError:
                return
            if not data:
                return
            taken += len(data)
            self._child._output(self._child_fd, data)

    def close(self) -> None:
        if self._fd < 0:
            return
        self._child._reactor.removeReader(self)
        os.close(self._fd)
        self._fd = -1
        self._child._pipe_closed(self._child_fd)


@implementer(IReadDescriptor)
class _ExitWatch:
    """The child's pidfd: readable once the child has exited; then it is reaped here."""

    def __init__(self, child: ChildProcess, pidfd: int) -> None:
        self._child = child
        self._fd = pidfd

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"child {self._child.pid} exit"

    def doRead(self) -> None:
        try:
            pid, status = os.waitpid(self._child.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self._child.pid, None  # reaped by someone else: status unknown
        if pid == 0:
            return None  # not exited after all
        self._close()
        self._child._exited(status)
        return None

    def connectionLost(self, reason: Failure) -> None:
        self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            self._child._reactor.removeReader(self)
            os.close(self._fd)
            self._fd = -1
