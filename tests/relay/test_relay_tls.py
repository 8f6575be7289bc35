"""TLS, identity and the HTTPS site: real handshakes with generated certificates."""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from twisted.internet.threads import deferToThread

from relay_helpers import connect_ws


def _der_fingerprint(cert) -> str:
    return hashlib.sha256(cert.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest_twisted.ensureDeferred
async def test_identity_from_client_certificate(relay):
    relay.start()
    ws = await relay.session(relay.pki.ordered_operator)
    hello = await ws.next("server_hello")
    assert hello["client_identity"] == "mtls_cert_fingerprint:" + _der_fingerprint(
        relay.pki.ordered_operator)
    (session,) = relay.service.hub.sessions.values()
    assert session.identity.principal == "O=Example Ops, CN=demo operator"
    assert session.identity.source == "mtls"
    assert hello["session_id"] == session.session_id


@pytest.mark.parametrize("which", ["none", "unknown_ca_client", "expired", "not_yet_valid",
                                   "server_only"])
@pytest_twisted.ensureDeferred
async def test_bad_client_certificates_get_no_session(relay, which):
    relay.start()
    client = None if which == "none" else getattr(relay.pki, which)
    with pytest.raises(Exception):
        await connect_ws(relay.service.https_port, relay.pki, client, timeout=3)
    assert relay.service.hub.sessions == {}
    # the listener is unharmed: a good certificate still gets a session
    ws = await relay.session()
    await ws.next("server_hello")


def _tls_context(pki, client) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca_path)
    certfile = os.path.join(pki.directory, f"client-{os.getpid()}.pem")
    with open(certfile, "wb") as f:
        f.write(client.cert_pem() + client.key_pem())
    ctx.load_cert_chain(certfile)
    return ctx


def _upgrade_status(port: int, pki, client, origin: str | None) -> tuple[int, dict[str, str]]:
    """The HTTP status and headers a WebSocket upgrade of /supervisor gets."""
    conn = http.client.HTTPSConnection("localhost", port, context=_tls_context(pki, client),
                                       timeout=5)
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    if origin is not None:
        headers["Origin"] = origin
    try:
        conn.request("GET", "/supervisor", headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


class _Logged:
    """Collects twisted.logger events (formatted) while installed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event) -> None:
        from twisted.logger import formatEvent
        self.lines.append(formatEvent(event))


@pytest_twisted.ensureDeferred
async def test_cross_origin_is_refused_with_403_and_a_log_line_naming_it(relay):
    from twisted.logger import globalLogPublisher

    relay.start()
    with pytest.raises(Exception):
        await connect_ws(relay.service.https_port, relay.pki, relay.pki.operator,
                         origin="https://evil.example:9443", timeout=3)
    with pytest.raises(Exception):
        await connect_ws(relay.service.https_port, relay.pki, relay.pki.operator,
                         origin="https://localhost:9444", timeout=3)
    assert relay.service.hub.sessions == {}
    logged = _Logged()
    globalLogPublisher.addObserver(logged)
    try:
        for origin in ("https://evil.example:9443", "null", "http://localhost:9443"):
            status, _ = await deferToThread(_upgrade_status, relay.service.https_port,
                                            relay.pki, relay.pki.operator, origin)
            assert status == 403, origin
    finally:
        globalLogPublisher.removeObserver(logged)
    refused = [line for line in logged.lines if "refused" in line and "origin" in line]
    assert any("https://evil.example:9443" in line for line in refused), logged.lines
    assert any("null" in line for line in refused)
    # public_url's own origin (its default port spelled out or not) is allowed
    status, _ = await deferToThread(_upgrade_status, relay.service.https_port, relay.pki,
                                    relay.pki.operator, "https://LOCALHOST:9443")
    assert status == 101


@pytest_twisted.ensureDeferred
async def test_listed_origins_may_open_sessions_and_only_those(relay):
    relay.start(listen={"allowed_origins": ["https://dashboard.example:8443",
                                            "http://localhost:8080"]})
    for origin in ("https://dashboard.example:8443", "http://localhost:8080"):
        ws = await connect_ws(relay.service.https_port, relay.pki, relay.pki.operator,
                              origin=origin, timeout=3)
        hello = await ws.next("server_hello")
        assert hello["principal"] == "CN=demo operator"
    for origin in ("https://dashboard.example", "https://dashboard.example:8444",
                   "https://sub.dashboard.example:8443", "https://localhost:8080"):
        status, _ = await deferToThread(_upgrade_status, relay.service.https_port,
                                        relay.pki, relay.pki.operator, origin)
        assert status == 403, origin
    status, _ = await deferToThread(_upgrade_status, relay.service.https_port, relay.pki,
                                    relay.pki.operator, "https://localhost:9443")
    assert status == 101  # public_url's origin stays allowed


@pytest_twisted.ensureDeferred
async def test_a_plain_get_of_the_websocket_path_is_426_upgrade_required(relay):
    relay.start()
    status, ctype, body = await deferToThread(_https_get, relay.service.https_port, relay.pki,
                                              "/supervisor", relay.pki.operator)
    assert status == 426 and ctype.startswith("text/plain")
    assert b"autobahn" not in body.lower()


@pytest_twisted.ensureDeferred
async def test_max_sessions(relay):
    relay.start(limits={"max_sessions": 1})
    first = await relay.session()
    await first.next("server_hello")
    with pytest.raises(Exception):
        await connect_ws(relay.service.https_port, relay.pki, relay.pki.operator, timeout=3)
    assert len(relay.service.hub.sessions) == 1


def _https_get(port: int, pki, path: str, client=None) -> tuple[int, str, bytes]:
    ctx = ssl.create_default_context(cafile=pki.ca_path)
    ctx.check_hostname = True
    if client is not None:
        certfile = os.path.join(pki.directory, f"client-{os.getpid()}.pem")
        with open(certfile, "wb") as f:
            f.write(client.cert_pem() + client.key_pem())
        ctx.load_cert_chain(certfile)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def _https_headers(port: int, pki, path: str, client) -> dict[str, str]:
    conn = http.client.HTTPSConnection("localhost", port, context=_tls_context(pki, client),
                                       timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_static_site_and_placeholder(relay, sockdir):
    static = os.path.join(sockdir, "static")
    os.makedirs(os.path.join(static, "js"))
    with open(os.path.join(static, "js", "app.js"), "w") as f:
        f.write("export const x = 1;\n")
    with open(os.path.join(static, "style.css"), "w") as f:
        f.write("body{}\n")
    from supervisor.relay.service import RelayService
    from relay_helpers import make_config
    from twisted.internet import reactor

    relay.service = RelayService(make_config(sockdir, relay.pki), reactor=reactor,
                                 static_dir=static)
    relay.service.startService()
    port = relay.service.https_port
    status, ctype, body = await deferToThread(_https_get, port, relay.pki, "/", relay.pki.operator)
    assert status == 200 and ctype.startswith("text/html") and b"Supervisor relay" in body
    with open(os.path.join(static, "index.html"), "w") as f:
        f.write("<!doctype html><title>dash</title>")
    status, ctype, body = await deferToThread(_https_get, port, relay.pki, "/", relay.pki.operator)
    assert (status, body) == (200, b"<!doctype html><title>dash</title>")
    assert ctype.startswith("text/html")
    status, ctype, body = await deferToThread(_https_get, port, relay.pki, "/js/app.js",
                                              relay.pki.operator)
    assert status == 200 and ctype.startswith("text/javascript") and b"export" in body
    status, ctype, _ = await deferToThread(_https_get, port, relay.pki, "/style.css",
                                           relay.pki.operator)
    assert status == 200 and ctype.startswith("text/css")
    status, _, _ = await deferToThread(_https_get, port, relay.pki, "/js/", relay.pki.operator)
    assert status == 404
    status, _, _ = await deferToThread(_https_get, port, relay.pki, "/missing.js",
                                       relay.pki.operator)
    assert status == 404
    # every file carries the dashboard's CSP, the policy of our own index.html
    conn_status = await deferToThread(_https_headers, port, relay.pki, "/js/app.js",
                                      relay.pki.operator)
    from supervisor.relay.web.site import CONTENT_SECURITY_POLICY, STATIC_DIR
    assert conn_status["content-security-policy"] == CONTENT_SECURITY_POLICY
    with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as f:
        assert f'content="{CONTENT_SECURITY_POLICY}"' in f.read()
    # an extension-less path is a client-side route: index.html
    for route in ("/targets/payments-worker-a", "/audit", "/js/routes/deep"):
        status, ctype, body = await deferToThread(_https_get, port, relay.pki, route,
                                                  relay.pki.operator)
        assert (status, body) == (200, b"<!doctype html><title>dash</title>"), route
    # no way out of the folder
    with open(os.path.join(sockdir, "secret.txt"), "w") as f:
        f.write("secret\n")
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/js/%2e%2e/%2e%2e/secret.txt",
                 "/%2e%2e%2fsecret.txt"):
        status, _, body = await deferToThread(_https_get, port, relay.pki, path,
                                              relay.pki.operator)
        assert b"secret" not in body, path
    # without a client certificate the TLS handshake itself fails in mTLS mode
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        await deferToThread(_https_get, port, relay.pki, "/")


@pytest_twisted.ensureDeferred
async def test_trusted_proxy_identity(relay):
    relay.start(trusted_proxy={"enabled": True, "allowed_remote_addrs": ["127.0.0.1"],
                               "identity_header": "X-Verified-Client-Subject"})
    ws = await relay.session(client=False, headers={
        "x-verified-client-subject": "O=Example Ops, CN=demo operator"})
    hello = await ws.next("server_hello")
    assert hello["client_identity"] == "trusted_proxy:O=Example Ops, CN=demo operator"
    (session,) = relay.service.hub.sessions.values()
    assert session.identity.source == "trusted_proxy"
    assert session.identity.principal == "O=Example Ops, CN=demo operator"
    with pytest.raises(Exception):
        await connect_ws(relay.service.https_port, relay.pki, None, timeout=3)


@pytest_twisted.ensureDeferred
async def test_proxy_header_from_unlisted_address_is_refused(relay):
    relay.start(trusted_proxy={"enabled": True, "allowed_remote_addrs": ["10.1.2.3"]})
    with pytest.raises(Exception):
        await connect_ws(relay.service.https_port, relay.pki, None, timeout=3,
                         headers={"x-verified-client-subject": "CN=demo operator"})
    assert relay.service.hub.sessions == {}


def test_a_reload_keeps_the_certificates_when_the_replacement_has_expired(sockdir, pki):
    from supervisor import certs
    from supervisor.config.relay import TLSConfig
    from supervisor.relay.tls import ReloadableServerTLS

    cert, key = os.path.join(sockdir, "r.pem"), os.path.join(sockdir, "r-key.pem")
    pki.server.write(cert, key)
    tls = ReloadableServerTLS(TLSConfig(cert, key, pki.ca_path), require_client_certificate=True)
    before = tls.options
    not_before, not_after = certs.expired_window()
    certs.issue_server_cert(pki.ca, not_before=not_before, not_after=not_after).write(cert, key)
    error = tls.reload()
    assert error is not None and "expired" in error and "tls.certificate_path" in error
    assert tls.options is before and tls.generation == 1
    pki.server.write(cert, key)
    assert tls.reload() is None and tls.generation == 2


@pytest.mark.parametrize("names, ips, url, named", [
    (("localhost",), (), "wss://LOCALHOST:9443/s", True),
    (("*.example.org",), (), "wss://relay.example.org/s", True),
    (("*.example.org",), (), "wss://a.relay.example.org/s", False),
    (("*.example.org",), (), "wss://example.org/s", False),
    ((), ("127.0.0.1",), "wss://127.0.0.1:9443/s", True),
    ((), ("::1",), "wss://[0:0:0:0:0:0:0:1]:9443/s", True),
    (("127.0.0.1",), (), "wss://127.0.0.1/s", False),  # an address is matched as an address
    (("relay.example.org",), (), "wss://localhost/s", False),
])
def test_public_url_host_must_be_named_by_the_server_certificate(sockdir, pki, names, ips,
                                                                 url, named):
    from supervisor import certs
    from supervisor.config._common import ConfigError
    from supervisor.config.relay import TLSConfig
    from supervisor.relay.tls import check_certificates

    cert, key = os.path.join(sockdir, "h.pem"), os.path.join(sockdir, "h-key.pem")
    certs.issue_server_cert(pki.ca, names, ips).write(cert, key)
    tls = TLSConfig(cert, key, pki.ca_path)
    if named:
        check_certificates(tls, require_client_certificate=True, public_url=url)
    else:
        with pytest.raises(ConfigError) as e:
            check_certificates(tls, require_client_certificate=True, public_url=url)
        assert "listen.public_url" in str(e.value)


def test_a_client_ca_not_yet_valid_is_refused(sockdir, pki):
    from supervisor import certs
    from supervisor.config._common import ConfigError
    from supervisor.config.relay import TLSConfig
    from supervisor.relay.tls import check_certificates

    start, end = certs.future_window()
    ca = certs.generate_ca("tomorrow's CA", not_before=start, not_after=end)
    path = os.path.join(sockdir, "future-ca.pem")
    with open(path, "wb") as f:
        f.write(pki.ca.cert_pem() + ca.cert_pem())  # a bundle: every certificate is checked
    tls = TLSConfig(pki.server_cert_path, pki.server_key_path, path)
    with pytest.raises(ConfigError) as e:
        check_certificates(tls, require_client_certificate=True, public_url=None)
    assert "tls.client_ca_path" in str(e.value) and "not valid before" in str(e.value)
