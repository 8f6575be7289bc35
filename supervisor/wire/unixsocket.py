"""Unix stream listeners whose file mode is already in force at bind time.

``reactor.listenUNIX`` binds with the process umask and chmods afterwards, which leaves a
window with a wider mode (666 by default). We bind under a umask that yields exactly the
wanted mode, so no peer can ever connect through wider permissions. Stale socket files left
by a crashed process are removed; a path where someone is still listening, or that is not a
socket, is a loud error rather than being deleted.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from twisted.internet.interfaces import IListeningPort, IReactorUNIX
from twisted.internet.protocol import Factory

__all__ = ["listen_unix", "clear_stale_socket", "SocketPathInUse", "peer_uid", "peer_credentials"]


class SocketPathInUse(Exception):
    """The socket path is held by a live listener or by a non-socket file."""


def clear_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on; raise if it is in use."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathInUse(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        raise SocketPathInUse(f"{path} cannot be probed: {e.strerror}") from None
    finally:
        probe.close()
    raise SocketPathInUse(f"another process is listening on {path}")


def listen_unix(
    reactor: IReactorUNIX, path: str, factory: Factory, mode: int, backlog: int = 128
) -> IListeningPort:
    """Listen on ``path`` with ``mode`` in force from the moment the socket file exists."""
    clear_stale_socket(path)
    old = os.umask(0o777 & ~mode)
    try:
        return reactor.listenUNIX(path, factory, backlog=backlog, mode=mode)
    finally:
        os.umask(old)


_PEERCRED = getattr(socket, "SO_PEERCRED", None)


def peer_uid(sock: socket.socket) -> int | None:
    """The connected peer's uid from SO_PEERCRED (None where unsupported)."""
    if _PEERCRED is None:
        return None
    import struct

    raw = sock.getsockopt(socket.SOL_SOCKET, _PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """The connected peer's ``(pid, uid, gid)`` from SO_PEERCRED (None where unsupported)."""
    if _PEERCRED is None:
        return None
    import struct

    raw = sock.getsockopt(socket.SOL_SOCKET, _PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid
