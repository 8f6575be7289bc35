"""The leased target registry (§2): upsert by owner, id and path exclusivity, lease expiry.

An id's owner outlives its lease: :class:`~supervisor.relay.owners.OwnerBook` remembers it
(and the pins of the configuration), so another uid cannot take an id over while its
target is stopped or the relay restarts.
"""

from __future__ import annotations

from typing import Protocol

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from supervisor.config.relay import RegistrationConfig
from supervisor.relay.owners import OwnerBook
from supervisor.wire.registration import Registration, RegistrationRefused

__all__ = [
    "TargetEntry",
    "RegistryObserver",
    "Registry",
]


@attrs.define
class TargetEntry:
    """A live registry entry: the registration, who owns it and when its lease ends."""

    registration: Registration
    owner: str
    registered_at: float
    renewed_at: float
    expires_at: float

    @property
    def target_id(self) -> str:
        return self.registration.target_id


class RegistryObserver(Protocol):
    """Told about registry changes (the session hub listens)."""

    def target_added(self, entry: TargetEntry) -> None: ...

    def target_updated(self, entry: TargetEntry, previous: Registration) -> None: ...

    def target_expired(self, entry: TargetEntry) -> None: ...


class Registry:
    """Targets by id, with exclusive ids (per owner) and paths, each held for a lease."""

    log = Logger()

    def __init__(self, clock: IReactorTime, max_targets: int,
                 owners: OwnerBook | None = None) -> None:
        self._clock = clock
        self._max_targets = max_targets
        #: remembered and pinned owners of ids (an in-memory book with no pins by default)
        self.owners = owners if owners is not None else OwnerBook(
            None, RegistrationConfig(listen_path="", allowed_ipc_path_prefixes=()), clock)
        self._by_id: dict[str, TargetEntry] = {}
        self._by_path: dict[str, str] = {}
        self._observers: list[RegistryObserver] = []

    def add_observer(self, observer: RegistryObserver) -> None:
        self._observers.append(observer)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, target_id: str) -> TargetEntry | None:
        entry = self._by_id.get(target_id)
        if entry is not None and entry.expires_at <= self._clock.seconds():
            return None
        return entry

    def entries(self) -> list[TargetEntry]:
        """Live entries ordered by target id."""
        now = self._clock.seconds()
        return [e for _, e in sorted(self._by_id.items()) if e.expires_at > now]

    def register(self, registration: Registration, owner: str) -> TargetEntry:
        """Insert or renew (same owner); raises RegistrationRefused on owner/path conflicts."""
        self.sweep()
        now = self._clock.seconds()
        target_id = registration.target_id
        existing = self._by_id.get(target_id)
        if existing is not None and existing.owner != owner:
            raise RegistrationRefused(
                "target_id_owner_mismatch",
                f"target id {target_id} is held by another owner", False)
        known = self.owners.owner_of(target_id)
        if known is not None and known != owner:
            pinned = self.owners.pinned(target_id)
            raise RegistrationRefused(
                "target_id_owner_mismatch",
                f"target id {target_id} is pinned to another owner" if pinned else
                f"target id {target_id} belongs to another owner (kept until it has been "
                f"quiet for registration.owner_quiet_period_seconds, or released)", False)
        holder = self._by_path.get(registration.ipc_path)
        if holder is not None and holder != registration.target_id:
            raise RegistrationRefused(
                "ipc_path_conflict", f"ipc path is already used by target {holder}", False
            )
        if existing is None and len(self._by_id) >= self._max_targets:
            raise RegistrationRefused(
                "registry_full", f"the relay already holds {self._max_targets} targets", True
            )
        if not self.owners.can_claim(target_id, owner):
            raise RegistrationRefused(
                "registry_full", f"the relay already remembers the owners of "
                f"{len(self.owners)} target ids (registration.max_owner_records)", True)
        self.owners.claim(target_id, owner)
        expires = now + registration.lease_seconds
        if existing is None:
            entry = TargetEntry(registration, owner, now, now, expires)
            self._by_id[registration.target_id] = entry
            self._by_path[registration.ipc_path] = registration.target_id
            self.log.info("target {target_id} registered at {ipc_path} by {owner}",
                          target_id=registration.target_id, ipc_path=registration.ipc_path,
                          owner=owner)
            for observer in list(self._observers):
                observer.target_added(entry)
            return entry
        previous = existing.registration
        existing.renewed_at = now
        existing.expires_at = expires
        if previous != registration:
            if previous.ipc_path != registration.ipc_path:
                del self._by_path[previous.ipc_path]
                self._by_path[registration.ipc_path] = registration.target_id
            existing.registration = registration
            self.log.info("target {target_id} re-registered with changes",
                          target_id=registration.target_id)
            for observer in list(self._observers):
                observer.target_updated(existing, previous)
        return existing

    def sweep(self) -> list[TargetEntry]:
        """Remove entries whose lease ended, freeing id and path; returns them."""
        now = self._clock.seconds()
        expired = [e for e in self._by_id.values() if e.expires_at <= now]
        for entry in expired:
            del self._by_id[entry.target_id]
            if self._by_path.get(entry.registration.ipc_path) == entry.target_id:
                del self._by_path[entry.registration.ipc_path]
            self.log.info("target {target_id} lease expired", target_id=entry.target_id)
        for entry in expired:
            for observer in list(self._observers):
                observer.target_expired(entry)
        self.owners.tick()
        return expired
