"""The `etc/` demo configs, rewritten only where paths and ports live, so tests can run the
demo exactly as shipped without disturbing a demo that is already running."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.ports import free_port

ETC = Path(__file__).resolve().parent.parent / "etc"




def write_demo_configs(run_dir: Path, certs) -> tuple[Path, Path, int]:
    """Relay and target YAML under ``run_dir``; returns their paths and the relay's port."""
    port = free_port()
    relay = yaml.safe_load((ETC / "demo-relay.yaml").read_text())
    relay["listen"] = {"bind": f"127.0.0.1:{port}", "public_url": f"wss://localhost:{port}/supervisor"}
    relay["tls"] = {"certificate_path": certs.relay_cert, "private_key_path": certs.relay_key,
                    "client_ca_path": certs.ca_cert}
    relay["registration"]["listen_path"] = str(run_dir / "relay-registration.sock")
    relay["registration"]["allowed_ipc_path_prefixes"] = [f"{run_dir}/"]
    relay["audit"]["path"] = str(run_dir / "audit.sqlite3")
    target = yaml.safe_load((ETC / "demo-target.yaml").read_text())
    target["ipc"]["path"] = str(run_dir / "payments-worker-a.sock")
    target["observability"]["history"]["path"] = str(run_dir / "history")
    target["ipc"]["registration"]["relay_registration_path"] = relay["registration"]["listen_path"]
    relay_path, target_path = run_dir / "relay.yaml", run_dir / "target.yaml"
    relay_path.write_text(yaml.safe_dump(relay))
    target_path.write_text(yaml.safe_dump(target))
    return relay_path, target_path, port
