"""``make demo-fleet``: a NATS fleet on this machine — nats-server, three host relays (alpha,
beta, gamma) each with the demo target, and the fleet gateway's one dashboard for all of them.

    python -m supervisor._launch_fleet_demo [--gateway-config etc/fleet-gateway.yaml]
        [--relay-config etc/demo-relay.yaml] [--target-config etc/demo-target.yaml]
        [--certs .local/certs] [--fleet .local/fleet] [--logs .local/logs]
        [--relay-base-port 8444]

The session certificates are ``make demo``'s (the same operator client certificate opens the
gateway's dashboard); the NATS certificates go to ``FLEET/certs``, the nats-server
configuration to ``FLEET/nats-server.conf`` (listening where the gateway's ``nats.servers``
says), each host's ``relay.yaml`` and ``target.yaml`` to ``FLEET/<host>/``. Every service is
started once the one before it is ready (a condition with a deadline), logs to
``LOGS/<name>.log``, and Ctrl-C stops them in reverse order, one SIGTERM each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

import yaml
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react

from supervisor._launch_demo import (Demo, DemoError, EventLines, _accepts, banner, run_demo,
                                     twistd_argv)
from supervisor.certs import DemoCerts, FleetCerts, write_demo_certs, write_fleet_certs
from supervisor.config.gateway import load_gateway_config
from supervisor.fleet.natsconf import write_nats_config

HOSTS = ("alpha", "beta", "gamma")
GATEWAY = "fleet-gateway"
NATS_SERVER = "/usr/sbin/nats-server"


def _dump(path: str, data: Any) -> str:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _nats_listen(servers: tuple[str, ...]) -> tuple[str, int]:
    """Host and port of the gateway's first ``nats.servers`` entry (where nats-server listens)."""
    url = urlsplit(servers[0])
    return url.hostname or "127.0.0.1", url.port or 4222


def host_configs(args: argparse.Namespace, index: int, host: str, certs: DemoCerts,
                 fleet: FleetCerts, nats_url: str) -> tuple[str, str, dict, dict]:
    """``FLEET/<host>/relay.yaml`` and ``target.yaml`` from the demo's; their paths and dicts."""
    folder = os.path.abspath(os.path.join(args.fleet, host))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    port = args.relay_base_port + index
    relay = _load(args.relay_config)
    relay["listen"] = {"bind": f"127.0.0.1:{port}",
                       "public_url": f"wss://localhost:{port}/supervisor"}
    relay["tls"] = {"certificate_path": os.path.abspath(certs.relay_cert),
                    "private_key_path": os.path.abspath(certs.relay_key),
                    "client_ca_path": os.path.abspath(certs.ca_cert)}
    relay["registration"]["listen_path"] = os.path.join(folder, "relay-registration.sock")
    relay["registration"]["allowed_ipc_path_prefixes"] = [folder + "/"]
    relay["audit"]["path"] = os.path.join(folder, "audit.sqlite3")
    cert, key = fleet.hosts[host]
    relay["fleet"] = {"enabled": True, "host_id": host,
                      "trusted_gateways": sorted(fleet.gateway_principals.values()),
                      "heartbeat_ms": 1000}
    relay["nats"] = {"servers": [nats_url],
                     "tls": {"ca_path": os.path.abspath(fleet.ca_cert),
                             "certificate_path": os.path.abspath(cert),
                             "private_key_path": os.path.abspath(key)}}
    target = _load(args.target_config)
    target["supervisor"]["name"] = f"{host} worker"
    target["ipc"]["target_id"] = f"{host}-worker"
    target["ipc"]["path"] = os.path.join(folder, "target.sock")
    target["observability"]["history"]["path"] = os.path.join(folder, "history")
    registration = target["ipc"]["registration"]
    registration["relay_registration_path"] = relay["registration"]["listen_path"]
    registration["display_name"] = f"{host} worker"
    return (_dump(os.path.join(folder, "relay.yaml"), relay),
            _dump(os.path.join(folder, "target.yaml"), target), relay, target)


async def _session(reactor: Any, args: argparse.Namespace, demo: Demo, out: TextIO) -> str:
    nats_server = shutil.which("nats-server") or NATS_SERVER
    if not os.path.exists(nats_server):
        raise DemoError("no nats-server: `make nats-server` installs Debian's")
    os.makedirs(args.logs, mode=0o700, exist_ok=True)
    os.makedirs(args.fleet, mode=0o700, exist_ok=True)
    certs = write_demo_certs(args.certs)
    fleet = write_fleet_certs(os.path.join(args.fleet, "certs"), list(HOSTS), [GATEWAY])
    gateway = load_gateway_config(args.gateway_config)
    nats_host, nats_port = _nats_listen(gateway.nats.servers)
    nats_conf = write_nats_config(
        os.path.join(args.fleet, "nats-server.conf"), listen=f"{nats_host}:{nats_port}",
        cert=fleet.server_cert, key=fleet.server_key, ca=fleet.ca_cert,
        hosts=fleet.host_principals, gateways=list(fleet.gateway_principals.values()))
    hosts = [host_configs(args, i, host, certs, fleet, f"tls://{nats_host}:{nats_port}")
             for i, host in enumerate(HOSTS)]

    await demo.start("nats-server", nats_conf, "", lambda: _accepts(nats_host, nats_port),
                     argv=[nats_server, "-c", os.path.abspath(nats_conf)])
    for host, (relay_path, _, relay, _) in zip(HOSTS, hosts):
        registration = relay["registration"]["listen_path"]
        port = int(relay["listen"]["bind"].rsplit(":", 1)[1])
        await demo.start(f"relay-{host}", relay_path, registration,
                         lambda r=registration, p=port: os.path.exists(r) and _accepts("127.0.0.1", p),
                         argv=twistd_argv(args.logs, f"relay-{host}", "supervisor-relay", relay_path))
    for host, (_, target_path, _, target) in zip(HOSTS, hosts):
        ipc = target["ipc"]["path"]
        await demo.start(f"target-{host}", target_path, ipc, lambda p=ipc: os.path.exists(p),
                         argv=twistd_argv(args.logs, f"target-{host}", "supervisor-target", target_path))
    listen = gateway.listen
    await demo.start("gateway", args.gateway_config, "",
                     lambda: _accepts(listen.host, listen.port),
                     argv=twistd_argv(args.logs, "gateway", "supervisor-fleet", args.gateway_config))
    out.write(banner(listen.origin + "/", certs, demo.children,
                     stops="the gateway, the targets, the relays, then nats-server"))
    out.flush()
    for host, (_, _, _, target) in zip(HOSTS, hosts):
        Deferred.fromCoroutine(EventLines(reactor, _HostLines(demo, host)).follow(target["ipc"]["path"],
                                                                target["ipc"]["target_id"]))
    return await demo.exited


class _HostLines:
    """Passes :class:`EventLines`' console lines on with the host's id after the clock."""

    def __init__(self, demo: Demo, host: str) -> None:
        self._demo, self._host = demo, host

    def say(self, line: str) -> None:
        clock, sep, rest = line.partition("  ")
        self._demo.say(f"{clock}  {self._host:<6} {rest}" if sep else f"{self._host}: {line}")


async def _main(reactor: IReactorCore, args: argparse.Namespace, out: TextIO) -> NoReturn:
    await run_demo(reactor, out, args.logs, lambda demo: _session(reactor, args, demo, out))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m supervisor._launch_fleet_demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway-config", default="etc/fleet-gateway.yaml")
    parser.add_argument("--relay-config", default="etc/demo-relay.yaml")
    parser.add_argument("--target-config", default="etc/demo-target.yaml")
    parser.add_argument("--certs", default=".local/certs")
    parser.add_argument("--fleet", default=".local/fleet")
    parser.add_argument("--logs", default=".local/logs")
    parser.add_argument("--relay-base-port", type=int, default=8444,
                        help="the host relays' dashboards listen on this port and the next two")
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    react(_main, (_parser().parse_args(argv), sys.stdout))


if __name__ == "__main__":
    main()
