"""Every process a process child started, found by the marks it inherits, and leftovers.

A process child leads its own session, so stopping its group stops what it forks. A
descendant that calls ``setsid`` leaves that group, and one whose parent dies is reparented:
to init, or to the target when it is a *child subreaper* (:func:`become_subreaper`). Neither
would be stopped with the child. So each process child gets three environment variables,
which every descendant inherits through ``fork`` and ``exec``:

- ``SUPERVISOR_TREE``: ``<pid>.<start time>`` of the target process (its identity: a pid
  alone may be reused),
- ``SUPERVISOR_CHILD_PATH``: the child's path (``/root/printer``),
- ``SUPERVISOR_TARGET_ID``: the target's id.

:func:`marked` finds the live processes that carry a tree's marks for one child, by reading
``/proc/<pid>/environ`` (same uid only). :func:`leftovers` finds those of a target whose
tree process is gone (the target was SIGKILLed): a restarted target kills them before it
starts anything, so it never runs a second copy. A descendant that execs with a scrubbed
environment is not found; it is still stopped when it stays in the child's group.

Scanning ``/proc`` costs a read of every process's environment, so :func:`of_child` avoids it
where the kernel already says enough: in a child subreaper with no adopted children, every
live descendant of a process child is in the subtree of its leader (each orphan would have
been reparented to this process), and that subtree is read from ``/proc/<pid>/task/*/children``.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
from typing import Any, Iterator

from twisted.logger import Logger

from supervisor.tree.spawn import LIVE_LEADERS, RECENT_SESSIONS

MARK_TREE = "SUPERVISOR_TREE"
MARK_PATH = "SUPERVISOR_CHILD_PATH"
MARK_TARGET = "SUPERVISOR_TARGET_ID"
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
#: Most processes :func:`subtree` walks: a fork bomb must not make a stop unbounded.
SUBTREE_LIMIT = 65536


def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants; False where unsupported."""
    return _PRCTL is not None and _PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def is_subreaper() -> bool:
    """True when this process is a child subreaper (orphaned descendants come to it)."""
    if _PRCTL is None:
        return False
    flag = ctypes.c_int(0)
    return _PRCTL(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value == 1


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is ``[0]``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].decode("ascii", "replace").split()


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot), None when it is gone."""
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields is not None and len(fields) > 1 else None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and bool(fields) and fields[0] not in ("Z", "X")


def tree_mark(pid: int | None = None) -> str:
    """The ``SUPERVISOR_TREE`` value naming process ``pid`` (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{start_time(pid)}"


def marks(tree: str, path: str, target_id: str) -> dict[str, str]:
    """The environment entries a process child of ``path`` is started with."""
    return {MARK_TREE: tree, MARK_PATH: path, MARK_TARGET: target_id}


def _session(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[3]) if fields is not None and len(fields) > 3 else None


def _environ(pid: int) -> dict[bytes, bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    found = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name in (b"SUPERVISOR_TREE", b"SUPERVISOR_CHILD_PATH", b"SUPERVISOR_TARGET_ID"):
            found[name] = value
    return found


def _marked_processes() -> Iterator[tuple[int, dict[bytes, bytes]]]:
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        env = _environ(int(name))
        if MARK_TREE.encode() in env:
            yield int(name), env


def marked(tree: str, path: str) -> list[int]:
    """Live processes carrying ``tree``'s marks for the child at ``path``, sorted."""
    want_tree, want_path = os.fsencode(tree), os.fsencode(path)
    return sorted(
        pid for pid, env in _marked_processes()
        if env.get(b"SUPERVISOR_TREE") == want_tree and env.get(b"SUPERVISOR_CHILD_PATH") == want_path
        and alive(pid)
    )


def leftovers(target_id: str) -> list[tuple[int, str]]:
    """``(pid, child path)`` of live processes of ``target_id`` whose tree process is gone."""
    want = os.fsencode(target_id)
    found = []
    for pid, env in _marked_processes():
        if env.get(b"SUPERVISOR_TARGET_ID") != want or not alive(pid):
            continue
        owner, _, started = os.fsdecode(env.get(b"SUPERVISOR_TREE", b"")).partition(".")
        if owner.isdigit() and start_time(int(owner)) == started:
            continue  # its tree still runs (another target with the same id): not ours to stop
        found.append((pid, os.fsdecode(env.get(b"SUPERVISOR_CHILD_PATH", b""))))
    return sorted(found)


def reap(pids: list[int]) -> None:
    """Collect those of ``pids`` that are this process's exited children (adopted orphans)."""
    me = os.getpid()
    for pid in pids:
        if parent_of(pid) != me:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        except OSError as e:  # pragma: no cover - waitpid fails only with ECHILD or EINTR
            if e.errno != errno.EINTR:
                raise


def children_of(pid: int | str) -> list[int]:
    """Pids of the direct children of ``pid`` (of any of its threads); [] when it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found.extend(int(child) for child in _read_all(f"/proc/{pid}/task/{tid}/children").split())
        except OSError:
            pass
    return sorted(set(found))


def _read_all(path: str) -> bytes:
    """A /proc file's whole text without a buffered file object (it is read on every exit)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pieces = []
        while chunk := os.read(fd, 65536):
            pieces.append(chunk)
        return b"".join(pieces)
    finally:
        os.close(fd)


def own_children() -> list[int]:
    """Pids of this process's direct children (adopted orphans included)."""
    return children_of("self")


def subtree(pid: int) -> list[int]:
    """Pids of the live descendants of ``pid`` reachable through their parents (at most
    :data:`SUBTREE_LIMIT`), sorted."""
    found: set[int] = set()
    todo = children_of(pid)
    while todo and len(found) < SUBTREE_LIMIT:
        child = todo.pop()
        if child in found:
            continue
        found.add(child)
        todo.extend(children_of(child))
    return sorted(p for p in found if alive(p))


def of_child(leader: int | None, tree: str, path: str) -> list[int]:
    """Live processes of the process child at ``path`` led by ``leader``, the leader excluded.

    Read from the leader's subtree when this process is a subreaper with no adopted children
    (then nothing of the child can be elsewhere); otherwise found by the marks
    (:func:`marked`), the leader's subtree added for any that scrubbed their environment.
    """
    walked = subtree(leader) if leader is not None else []
    if is_subreaper() and all(pid in LIVE_LEADERS for pid in own_children()):
        return walked
    return sorted((set(marked(tree, path)) | set(walked)) - {leader})


class Orphans:
    """Reaps descendants of process children that were reparented to this subreaper.

    A direct child that is not a started child (``LIVE_LEADERS``) is an adopted orphan when
    it carries a tree mark (seen while it lived) or belongs to the session of a recent child;
    once it exits it is reaped here. Other children (a task's own ``subprocess``) are left to
    whoever started them. At most ``limit`` adopted pids are remembered.
    """

    _log = Logger()

    def __init__(self, limit: int = 4096) -> None:
        self._adopted: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._limit = limit
        #: adopted orphans reaped so far
        self.reaped = 0

    def sweep(self) -> int:
        """Note adopted orphans, reap those that exited; returns how many were reaped."""
        sessions = set(RECENT_SESSIONS)
        reaped = 0
        for pid in own_children():
            if pid in LIVE_LEADERS:
                continue
            if pid not in self._adopted:
                if not (_environ(pid).get(MARK_TREE.encode()) or _session(pid) in sessions):
                    continue
                self._adopted[pid] = None
                while len(self._adopted) > self._limit:
                    self._adopted.popitem(last=False)
            if alive(pid):
                continue
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._adopted.pop(pid, None)
                reaped += 1
        self.reaped += reaped
        return reaped


def kill_leftovers(target_id: str, log: Any = None) -> list[tuple[int, str]]:
    """SIGKILL the processes a previous, dead instance of ``target_id`` left running."""
    found = leftovers(target_id)
    for pid, path in found:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    if found and log is not None:
        log.warn(
            "killed {count} process(es) left by a previous instance of target {target_id}: "
            "{pids}", count=len(found), target_id=target_id,
            pids=", ".join(f"{pid} ({path})" for pid, path in found),
        )
    return found
