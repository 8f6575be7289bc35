"""`make demo-fleet`'s launcher as an operator meets it: nats-server, three host relays with
their demo targets and the fleet gateway come up in order; the banner names the gateway's URL
and ``make demo``'s operator certificate; one wss:// session on the gateway lists the targets
of all three hosts; Ctrl-C, sent to the whole foreground group as a terminal does, stops every
process the launcher started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import pytest_twisted
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent / "relay"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "fleet"))

from fleet_support import wait_message  # noqa: E402
from relay_helpers import close_ws, connect_ws  # noqa: E402
from supervisor.certs import CertKey  # noqa: E402
from tests.demo_configs import ETC, free_port  # noqa: E402
from tests.test_demo_launcher import TIMEOUT, Console  # noqa: E402

HOSTS = ("alpha", "beta", "gamma")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fleet-demo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_gateway_config(run_dir: Path) -> tuple[Path, int]:
    """etc/fleet-gateway.yaml with this run's ports and paths; its path and its https port."""
    port, nats_port = free_port(), free_port()
    config = yaml.safe_load((ETC / "fleet-gateway.yaml").read_text())
    # the session origin the test helpers send; the listener is on a free port
    config["listen"] = {"bind": f"127.0.0.1:{port}",
                        "public_url": "wss://localhost:9443/supervisor"}
    certs, fleet = run_dir / "certs", run_dir / "fleet" / "certs"
    config["tls"] = {"certificate_path": str(certs / "relay.pem"),
                     "private_key_path": str(certs / "relay-key.pem"),
                     "client_ca_path": str(certs / "ca.pem")}
    config["audit"]["path"] = str(run_dir / "fleet-gateway-audit.sqlite3")
    config["nats"]["servers"] = [f"tls://127.0.0.1:{nats_port}"]
    config["nats"]["tls"] = {"ca_path": str(fleet / "ca.pem"),
                             "certificate_path": str(fleet / "fleet-gateway.pem"),
                             "private_key_path": str(fleet / "fleet-gateway-key.pem")}
    path = run_dir / "fleet-gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def relay_config(run_dir: Path) -> Path:
    """etc/demo-relay.yaml with this run's audit path (the launcher rewrites the rest per host)."""
    config = yaml.safe_load((ETC / "demo-relay.yaml").read_text())
    config["audit"]["path"] = str(run_dir / "unused-audit.sqlite3")
    path = run_dir / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def operator(certs: Path) -> tuple[SimpleNamespace, CertKey]:
    """The demo CA (as the helpers' PKI) and the operator's certificate, from the files."""
    def load(cert: str, key: str) -> CertKey:
        return CertKey(cert=x509.load_pem_x509_certificate((certs / cert).read_bytes()),
                       key=serialization.load_pem_private_key((certs / key).read_bytes(), None))
    return (SimpleNamespace(ca=load("ca.pem", "ca-key.pem")),
            load("operator.pem", "operator-key.pem"))


def started(run_dir: Path) -> list[int]:
    """Pids of the processes whose command line names a file under ``run_dir``."""
    result = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest_twisted.ensureDeferred
async def test_the_fleet_demo_lists_every_hosts_targets_and_ctrl_c_stops_all(run_dir):
    gateway_config, port = write_gateway_config(run_dir)
    logs, certs = run_dir / "logs", run_dir / "certs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor._launch_fleet_demo",
         "--gateway-config", str(gateway_config), "--relay-config", str(relay_config(run_dir)),
         "--target-config", str(ETC / "demo-target.yaml"), "--certs", str(certs),
         "--fleet", str(run_dir / "fleet"), "--logs", str(logs),
         "--relay-base-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    console = Console(proc)
    pids: list[int] = []
    try:
        console.until(r"^Ctrl-C stops")
        banner = console.text
        # the gateway's public origin (its listener is on a free port here)
        url = re.search(r"^Dashboard: +(https://\S+)$", banner, re.M).group(1)
        assert url == "https://localhost:9443/"
        assert re.search(rf"^Certificate: +{re.escape(str(certs / 'operator.p12'))}$", banner, re.M)
        assert re.search(r"^Password: +\S+ +\(saved in ", banner, re.M)
        assert f"--cert {certs / 'operator.pem'} --key {certs / 'operator-key.pem'} {url}" in banner
        names = ["nats-server", *(f"relay-{h}" for h in HOSTS), *(f"target-{h}" for h in HOSTS),
                 "gateway"]
        for name in names:
            assert re.search(rf"^  {name} log: +{re.escape(str(logs / (name + '.log')))}$",
                             banner, re.M), banner
        assert (run_dir / "fleet" / "nats-server.conf").exists()
        for host in HOSTS:
            assert (run_dir / "fleet" / host / "relay.yaml").exists()
            assert (run_dir / "fleet" / host / "target.yaml").exists()
        pids = started(run_dir)
        assert len(pids) >= len(names), pids  # the launcher and the eight services

        pki, client = operator(certs)
        ws = await connect_ws(port, pki, client, timeout=10)
        await ws.next("server_hello", timeout=10)
        ws.send({"type": "client_hello", "client_store_id": "fleet-demo", "resume_cursor": {}})
        wanted = {f"{h}/{h}-worker" for h in HOSTS}
        listed = await wait_message(
            ws, lambda m: m.get("type") == "target_list"
            and {t["target_id"] for t in m["targets"]} >= wanted, TIMEOUT, "all three hosts")
        assert {t["target_id"] for t in listed["targets"]} >= wanted
        await close_ws(ws)

        os.killpg(proc.pid, signal.SIGINT)
        console.until(r"^stopping the gateway…$")
        assert proc.wait(TIMEOUT) == 0
        text = console.rest()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in started(run_dir):  # a failed test leaves nothing behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    assert text.rstrip().endswith("stopped."), text
    order = [text.index(f"stopping the {name}…") for name in reversed(names)]
    assert order == sorted(order), text
    assert all(gone(pid) for pid in pids), pids
    assert started(run_dir) == []
    assert "Traceback" not in text
    for name in names[1:]:
        log = (logs / f"{name}.log").read_text()
        assert "Traceback" not in log, log
        assert log.count("Received SIGTERM, shutting down.") == 1, log
        assert "Server Shut Down" in log, log
