"""`make demo`'s launcher: relay first, then target, a URL that answers with the operator
certificate, and Ctrl-C stopping both and removing their sockets."""

from __future__ import annotations

import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from supervisor.certs import write_demo_certs
from tests.demo_configs import write_demo_configs


def test_demo_launcher_starts_both_ends_and_ctrl_c_stops_them():
    run_dir = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    certs_dir = run_dir / "certs"
    try:
        certs = write_demo_certs(str(certs_dir))
        relay_config, target_config, port = write_demo_configs(run_dir, certs)
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor._launch_demo", "--relay-config", str(relay_config),
             "--target-config", str(target_config), "--certs", str(certs_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        lines: list[str] = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if "Ctrl-C stops" in line:
                    break
            output = "".join(lines)
            url = re.search(r"Dashboard: (https://\S+)", output).group(1)
            assert url == f"https://localhost:{port}/"
            assert f"password: {certs.p12_password}" in output and certs.operator_p12 in output
            context = ssl.create_default_context(cafile=certs.ca_cert)
            context.load_cert_chain(certs.operator_cert, certs.operator_key)
            with urllib.request.urlopen(url, context=context, timeout=10) as response:
                assert response.status == 200 and b"<html" in response.read().lower()
            sockets = [run_dir / "relay-registration.sock", run_dir / "payments-worker-a.sock"]
            assert all(s.exists() for s in sockets)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
            assert not any(s.exists() for s in sockets)
            leftovers = subprocess.run(["pgrep", "-f", str(relay_config)], capture_output=True, text=True)
            assert leftovers.stdout.strip() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
