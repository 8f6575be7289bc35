"""The one error shape that crosses every wire: code, stage, target_id, message, retryable."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define(auto_exc=True, eq=False)
class WireError(Exception):
    """A failure that is reported to a peer rather than raised to the reactor."""

    code: str
    stage: str
    message: str
    target_id: str | None = None
    retryable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "stage": self.stage,
            "target_id": self.target_id,
            "message": self.message,
            "retryable": self.retryable,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "WireError":
        return cls(
            code=str(obj.get("code", "unknown_error")),
            stage=str(obj.get("stage", "unknown")),
            message=str(obj.get("message", "")),
            target_id=obj.get("target_id"),
            retryable=bool(obj.get("retryable", False)),
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
