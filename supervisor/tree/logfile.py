"""A process child's output as plain text (``children[].log_file``), rotated by size.

For operators who want ``tail -f`` and ``grep`` on one child's output, as supervisord's
``stdout_logfile`` gives them: every line of stdout and stderr, in the order read, appended
to ``path``. Once a write would take the file past ``max_bytes`` it is renamed ``path.1``
(``path.1`` to ``path.2``, …, the oldest beyond ``backups`` removed) and a new file begun.
Appends go to the page cache a pipe read at a time (one ``write`` per read, as supervisord
does); a failed write (a full disk) is counted in ``lost_lines`` and reported once per
failure streak through ``report``, and the child keeps running.
"""

from __future__ import annotations

import os
from typing import Callable


class RotatingLogFile:
    """Appends lines to ``path``, rotating at ``max_bytes`` and keeping ``backups`` old files."""

    def __init__(self, path: str, max_bytes: int, backups: int,
                 report: Callable[[str], None] = lambda problem: None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.lost_lines = 0
        self._report = report
        self._failing = False
        self._fd = -1
        self._size = 0

    def write_lines(self, data: bytes, count: int) -> None:
        """Append ``data`` (``count`` whole lines, newline terminated)."""
        try:
            if self._fd < 0:
                self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError as e:
            self.lost_lines += count
            if not self._failing:
                self._failing = True
                self._report(f"cannot write {self.path}: {e.strerror or e}")
            self.close()  # reopened (at its real size) on the next write
            return
        self._failing = False

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        self.close()
        if self.backups == 0:
            os.unlink(self.path)
        else:
            for number in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{number}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{number + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
