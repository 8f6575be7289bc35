"""The IPC socket path policy: ``create_new`` refuses anything there, ``replace_stale`` only
replaces a socket of ours that nobody serves."""

from __future__ import annotations

import os
import stat

from supervisor.wire.unixsocket import SocketPathInUse, clear_stale_socket


class SocketPathRefused(Exception):
    """The configured IPC path cannot be used; the message says why."""


def prepare_socket_path(path: str, bind_mode: str) -> None:
    """Make ``path`` bindable under ``bind_mode`` or raise :class:`SocketPathRefused`."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if bind_mode == "create_new":
        raise SocketPathRefused(f"{path} already exists (bind_mode create_new)")
    if stat.S_ISLNK(st.st_mode):
        raise SocketPathRefused(f"{path} is a symlink; refusing to replace it")
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathRefused(f"{path} exists and is not a socket; refusing to replace it")
    if st.st_uid != os.getuid():
        raise SocketPathRefused(f"{path} belongs to uid {st.st_uid}; refusing to replace it")
    try:
        clear_stale_socket(path)
    except SocketPathInUse as e:
        raise SocketPathRefused(str(e)) from None


def remove_if_ours(path: str, inode: int | None) -> None:
    """Remove the socket we created, and nothing that replaced it meanwhile."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if inode is not None and st.st_ino == inode and stat.S_ISSOCK(st.st_mode):
        os.unlink(path)
