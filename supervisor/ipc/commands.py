"""``command.*`` IPC requests: validate per CONTRACTS.md §4 (target side), run, report truthfully."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from supervisor.config.target import IpcConfig
from supervisor.tree.commands import CommandOutcome, CommandRequest
from supervisor.tree.runtime import Supervisor
from supervisor.wire.commands import CommandResult
from supervisor.wire.errors import WireError
from supervisor.wire.timestamps import rfc3339
from supervisor.wire.vocabulary import DRY_RUN_COMMANDS, ipc_method, needs_confirmation


class CommandHost(Protocol):
    """What running a command needs from the IPC server."""

    target_id: str
    display_name: str
    supervisor: Supervisor
    config: IpcConfig
    clock: IReactorTime


REQUIRED = ("command_id", "target_id", "command", "target", "reason", "requested_by", "confirmed")
TOPOLOGY_COMMANDS = frozenset({"add_child", "remove_child", "shutdown_tree", "reload_config"})


def _invalid(message: str, target_id: str) -> WireError:
    return WireError("invalid_command_params", "command_validate", message, target_id)


def parse_request(method: str, params: dict[str, Any], target_id: str,
                  origin: str = "direct_ipc", peer: dict[str, Any] | None = None) -> CommandRequest:
    """Structural checks; anything wrong is an ``invalid_command_params`` error response."""
    missing = [k for k in REQUIRED if k not in params]
    if missing:
        raise _invalid(f"missing params: {', '.join(missing)}", target_id)
    command = params["command"]
    if method != ipc_method(str(command)):
        raise _invalid(f"method {method} does not match command {str(command)[:64]}", target_id)
    if params["target_id"] != target_id:
        raise WireError("validation_failed", "command_validate",
                        f"this is target {target_id}, not {str(params['target_id'])[:100]}", target_id)
    for key in ("command_id", "reason", "requested_by"):
        if not isinstance(params[key], str):
            raise _invalid(f"{key} must be a string", target_id)
    if not params["command_id"].strip():
        raise _invalid("command_id must not be blank", target_id)
    if not isinstance(params["confirmed"], bool):
        raise _invalid("confirmed must be true or false", target_id)
    target = params["target"]
    if not isinstance(target, dict):
        raise _invalid("target must be an object", target_id)
    child_path = target.get("child_path")
    if child_path is not None and not isinstance(child_path, str):
        raise _invalid("target.child_path must be a string or null", target_id)
    signal = target.get("signal")
    if signal is not None and not isinstance(signal, str):
        raise _invalid("target.signal must be a string or null", target_id)
    correlation = params.get("correlation_id")
    if correlation is not None and not isinstance(correlation, str):
        raise _invalid("correlation_id must be a string or null", target_id)
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise _invalid("dry_run must be true or false", target_id)
    if dry_run and command not in DRY_RUN_COMMANDS:
        raise _invalid(f"{command} has no dry run", target_id)
    return CommandRequest(
        command=command,
        command_id=params["command_id"],
        requested_by=params["requested_by"],
        reason=params["reason"],
        child_path=child_path,
        child_manifest=target.get("child_manifest"),
        origin=origin,
        peer=peer,
        signal=signal,
        dry_run=dry_run,
    )


def run_command(server: CommandHost, method: str, params: dict[str, Any],
                origin: str = "direct_ipc", peer: dict[str, Any] | None = None
                ) -> defer.Deferred[dict[str, Any]]:
    """Fires with the ``command_result`` body; structural errors raise WireError at once.

    ``origin`` and ``peer`` say where the command came from (``COMMAND_ORIGINS``)."""
    target_id = server.target_id
    request = parse_request(method, params, target_id, origin, peer)
    correlation = params.get("correlation_id") or request.command_id
    if needs_confirmation(request.command, request.dry_run) and params["confirmed"] is not True:
        return defer.succeed(_body(server, request, correlation, _refused(
            request, "confirmation_required", "dangerous command requires confirmed=true", target_id)))
    timeout = server.config.command_timeout_seconds
    late = CommandOutcome(request.command_id, "failed", WireError(
        "command_timeout", "command_execute",
        f"{request.command} did not finish within {timeout} s; it may still complete",
        target_id, True))
    d = _first_of(server.supervisor.execute(request), timeout, late, server.clock)
    return d.addCallback(lambda outcome: _body(server, request, correlation, outcome))


def _first_of(d: defer.Deferred[CommandOutcome], timeout: float, late: CommandOutcome,
              clock: Any) -> defer.Deferred[CommandOutcome]:
    """``d``'s result, or ``late`` after ``timeout`` seconds; ``d`` itself is never cancelled
    (cancelling a half-done stop would strand the child)."""
    result: defer.Deferred[CommandOutcome] = defer.Deferred()
    call = clock.callLater(timeout, lambda: result.called or result.callback(late))

    def done(value: Any) -> None:
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(value)

    d.addBoth(done)
    return result


def _refused(request: CommandRequest, code: str, message: str, target_id: str) -> CommandOutcome:
    return CommandOutcome(request.command_id, "rejected",
                          WireError(code, "command_validate", message, target_id))


def _body(server: CommandHost, request: CommandRequest, correlation: str,
          outcome: CommandOutcome) -> dict[str, Any]:
    sup = server.supervisor
    delta = None
    if outcome.accepted and not request.dry_run:
        delta = {"state_generation": sup.tree.state_generation}
        if request.command in TOPOLOGY_COMMANDS:
            state = sup.state(server.display_name)
            delta["topology"] = state["topology"]
            delta["runtime_state"] = state["runtime_state"]
        else:
            delta["runtime_state"] = sup.rows(outcome.affected)
    return CommandResult(
        command_id=request.command_id,
        correlation_id=correlation,
        target_id=server.target_id,
        accepted=outcome.accepted,
        status=outcome.status,
        requested_by=request.requested_by,
        error=outcome.error,
        state_delta=delta,
        completed_at=rfc3339(server.clock.seconds()),
        diff=outcome.report if request.command == "reload_config" and outcome.accepted else None,
    ).to_message()
