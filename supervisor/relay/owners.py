"""Who owns each target id, kept across lease expiry and relay restarts.

A target id belongs to the first uid that registers it (``unix_uid:<uid>``) and stays that
uid's while it keeps registering; once nothing has registered it for
``registration.owner_quiet_period_seconds`` the id is released and any uid may claim it.
``registration.pinned_owners`` binds an id to one uid for good (see :class:`OwnerBook`).

The book lives in a JSON file beside the audit store (:func:`owners_path`), mode 0600,
replaced atomically (write a temporary file, fsync, rename, fsync the folder). A new claim or
a release is written at once, or, when the file was written less than
:data:`MIN_SAVE_INTERVAL_SECONDS` ago, that long after the last write (so a burst of new
targets costs one write a second, not one each); renewals only move ``last_seen`` in memory
and are written at most every :data:`FLUSH_INTERVAL_SECONDS` and when the relay stops. At most
``registration.max_owner_records`` ids are remembered: ids past their quiet period are
dropped first, and when every record is still owned a new id is refused (``registry_full``,
counted in :attr:`OwnerBook.refused_full`) rather than forgetting an owner.

While a relay runs it holds an exclusive lock on ``<file>.lock``; the operator command
(``python -m supervisor.relay.owners``) lists the book at any time and releases ids only
while the relay is stopped, so the two never overwrite each other.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import sys
import time
from typing import Any, Iterator

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from supervisor.config.relay import RegistrationConfig, RelayConfig

__all__ = ["OwnerRecord", "OwnerBook", "OwnerBookError", "owners_path", "main"]

FILE_NAME = "target-owners.json"
FORMAT = "target-owners.v1"
#: renewals reach the file at most this often (a crash loses at most this much last_seen)
FLUSH_INTERVAL_SECONDS = 60.0
#: claims and releases reach the file within this long (at once when it was not just written)
MIN_SAVE_INTERVAL_SECONDS = 1.0


class OwnerBookError(Exception):
    """The owner file cannot be read, written or locked."""


def owners_path(config: RelayConfig) -> str:
    """The owner file of a relay: ``target-owners.json`` in the audit store's folder."""
    return os.path.join(os.path.dirname(config.audit.path), FILE_NAME)


@attrs.define
class OwnerRecord:
    """One remembered id: its owner and when that owner last registered it."""

    target_id: str
    owner: str
    first_seen: float
    last_seen: float


class OwnerBook:
    """The remembered owners of target ids, their pins, quiet period and bound."""

    log = Logger()

    def __init__(self, path: str | None, config: RegistrationConfig, clock: IReactorTime) -> None:
        self.path = path
        self._config = config
        self._clock = clock
        self._records: dict[str, OwnerRecord] = {}
        self._dirty = False
        self._flushed_at = clock.seconds()
        self._saved_at: float | None = None
        self._pending_save: Any = None
        self._lock_fd: int | None = None
        #: new ids refused because every record was still owned
        self.refused_full = 0
        #: ids released because their owner was quiet for the whole quiet period
        self.released_quiet = 0

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[OwnerRecord]:
        return [r for _, r in sorted(self._records.items())]

    # ownership
    def owner_of(self, target_id: str) -> str | None:
        """Who an id belongs to now: its pin, else its remembered owner (None: free)."""
        pinned = self._config.pinned_owner(target_id)
        if pinned is not None:
            return pinned
        record = self._records.get(target_id)
        if record is None or self._quiet(record):
            return None
        return record.owner

    def pinned(self, target_id: str) -> bool:
        return self._config.pinned_owner(target_id) is not None

    def can_claim(self, target_id: str, owner: str) -> bool:
        """Whether a claim of ``target_id`` by ``owner`` fits in the bound."""
        record = self._records.get(target_id)
        if record is not None and (record.owner == owner or self._quiet(record)):
            return True
        if len(self._records) < self._config.max_owner_records:
            return True
        self.forget_quiet()
        if len(self._records) < self._config.max_owner_records:
            return True
        self.refused_full += 1
        return False

    def claim(self, target_id: str, owner: str) -> None:
        """``owner`` registered ``target_id`` now (call after :meth:`owner_of` allowed it)."""
        now = self._clock.seconds()
        record = self._records.get(target_id)
        if record is not None and record.owner == owner:
            record.last_seen = now
            self._dirty = True
            return
        if record is not None:
            self.log.warn("target id {target_id} passes from {previous} to {owner}",
                          target_id=target_id, previous=record.owner, owner=owner)
        self._records[target_id] = OwnerRecord(target_id, owner, now, now)
        self._save_soon()

    def release(self, target_id: str) -> bool:
        """Forget an id's owner; True when one was remembered."""
        if self._records.pop(target_id, None) is None:
            return False
        self._save_soon()
        return True

    def forget_quiet(self) -> list[str]:
        """Drop the ids whose owner has been quiet for the quiet period; returns them."""
        gone = [r.target_id for r in self._records.values() if self._quiet(r)]
        for target_id in gone:
            record = self._records.pop(target_id)
            self.released_quiet += 1
            self.log.info("target id {target_id} released: {owner} has not registered it "
                          "for {seconds} s", target_id=target_id, owner=record.owner,
                          seconds=self._config.owner_quiet_period_seconds)
        if gone:
            self._save_soon()
        return gone

    def _quiet(self, record: OwnerRecord) -> bool:
        return (self._clock.seconds() - record.last_seen
                >= self._config.owner_quiet_period_seconds)

    # the file
    def lock(self) -> None:
        """Hold ``<file>.lock`` while the relay runs (the operator command checks it)."""
        if self.path is None or self._lock_fd is not None:
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OwnerBookError(f"{self.path}.lock is held: another relay (or the owners "
                                 "command) uses this owner file") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def load(self) -> None:
        """Read the file (a missing one is an empty book); ids already quiet are dropped."""
        if self.path is None:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing was ever written there
        except (OSError, ValueError) as e:
            raise OwnerBookError(f"cannot read target owner file {self.path}: {e}") from None
        self._records = dict(_parse(data, self.path))
        self._flushed_at = self._clock.seconds()
        quiet = self.forget_quiet()
        self.log.info("target owners: {count} remembered from {path} ({released} released "
                      "after their quiet period)", count=len(self._records), path=self.path,
                      released=len(quiet))

    def tick(self) -> None:
        """At the lease-sweep cadence: every :data:`FLUSH_INTERVAL_SECONDS`, release the
        ids that have been quiet for the quiet period and write pending renewals."""
        if self._clock.seconds() - self._flushed_at >= FLUSH_INTERVAL_SECONDS:
            if not self.forget_quiet() and self._dirty:
                self.save()
            self._flushed_at = self._clock.seconds()

    def flush(self) -> None:
        """Write whatever is pending now (the relay stops)."""
        if self._dirty or self._pending_save is not None:
            self.save()

    def _save_soon(self) -> None:
        now = self._clock.seconds()
        if self._saved_at is None or now - self._saved_at >= MIN_SAVE_INTERVAL_SECONDS:
            self.save()
        elif self._pending_save is None:
            self._dirty = True
            self._pending_save = self._clock.callLater(
                self._saved_at + MIN_SAVE_INTERVAL_SECONDS - now, self.save)

    def save(self) -> None:
        """Replace the file atomically (0600); a failure is logged, the book stays in memory."""
        pending, self._pending_save = self._pending_save, None
        if pending is not None and pending.active():
            pending.cancel()
        self._dirty = False
        self._flushed_at = self._saved_at = self._clock.seconds()
        if self.path is None:
            return
        try:
            write_atomically(self.path, _dump(self._records.values()))
        except OSError as e:
            self._dirty = True
            self.log.critical("cannot write target owner file {path}: {error}; ownership is "
                              "kept in memory only", path=self.path, error=str(e))


def write_atomically(path: str, data: bytes) -> None:
    """Write ``path`` as a new 0600 file renamed over the old one, both fsynced."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temporary, path)
    except OSError:
        os.unlink(temporary)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _dump(records: Any) -> bytes:
    return json.dumps({"format": FORMAT, "owners": [
        {"target_id": r.target_id, "owner": r.owner, "first_seen": r.first_seen,
         "last_seen": r.last_seen} for r in sorted(records, key=lambda r: r.target_id)]},
        separators=(",", ":")).encode() + b"\n"


def _parse(data: Any, path: str) -> Iterator[tuple[str, OwnerRecord]]:
    if not isinstance(data, dict) or data.get("format") != FORMAT or \
            not isinstance(data.get("owners"), list):
        raise OwnerBookError(f"{path} is not a {FORMAT} file")
    for item in data["owners"]:
        try:
            record = OwnerRecord(str(item["target_id"]), str(item["owner"]),
                                 float(item["first_seen"]), float(item["last_seen"]))
        except (KeyError, TypeError, ValueError):
            raise OwnerBookError(f"{path} has a malformed record: {item!r}") from None
        yield record.target_id, record


# the operator command ------------------------------------------------------------------------

def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None, out: Any = sys.stdout) -> int:
    """``python -m supervisor.relay.owners --config relay.yaml list|release ID…``."""
    from twisted.internet.task import Clock

    from supervisor.config.relay import ConfigError, load_relay_config

    parser = argparse.ArgumentParser(
        prog="python -m supervisor.relay.owners",
        description="List the relay's remembered target-id owners, or release ids (while the "
                    "relay is stopped) so that another uid may register them.")
    parser.add_argument("--config", required=True, help="the relay's YAML configuration")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every remembered id, its owner and when it is released")
    release = commands.add_parser("release", help="forget the owners of these ids")
    release.add_argument("target_ids", nargs="+", metavar="TARGET_ID")
    args = parser.parse_args(argv)
    try:
        config = load_relay_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    clock = Clock()
    clock.advance(time.time())
    book = OwnerBook(owners_path(config), config.registration, clock)
    try:
        if args.command == "release":
            book.lock()
        book.load()
    except OwnerBookError as e:
        print(f"error: {e}" + ("; stop the relay first" if "held" in str(e) else ""),
              file=sys.stderr)
        return 1
    try:
        if args.command == "list":
            quiet = config.registration.owner_quiet_period_seconds
            for record in book.records():
                print(f"{record.target_id}\t{record.owner}\tlast seen {_when(record.last_seen)}"
                      f"\treleased after {_when(record.last_seen + quiet)}", file=out)
            for target_id, uid in config.registration.pinned_owners:
                print(f"{target_id}\tunix_uid:{uid}\tpinned (registration.pinned_owners)",
                      file=out)
            return 0
        status = 0
        for target_id in args.target_ids:
            if book.release(target_id):
                print(f"released {target_id}", file=out)
            else:
                print(f"{target_id}: no owner remembered", file=out)
                status = 1
            if config.registration.pinned_owner(target_id) is not None:
                print(f"{target_id}: still pinned by registration.pinned_owners", file=out)
        return status
    finally:
        book.flush()
        book.unlock()


if __name__ == "__main__":
    sys.exit(main())
