"""The HTTP endpoint over HTTPS (``http.tls``): the node's certificate, the BCP 195 rules,
Secure cookies and HSTS, a handshake that cannot hold up the listener, and a configuration
that refuses the dashboard in clear off loopback."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.config import ConfigError, check_config, is_loopback, parse_config
from dicom_node.dashboard import Dashboard, hash_password
from dicom_node.metrics import NodeMetrics
from dicom_node.tls import TlsConfigError, https_context
from dicom_node.web import StatusServer
from storage import migrate
from storage.database import Database
from storage.files import FileStore
from tests.security.test_tls import make_ca, make_cert

PASSWORD = "operator-pass-123"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder, "ca")
    make_cert(folder, "node", "ca")
    (folder / "node.key").chmod(0o600)
    return folder


def _settings(pki: Path, address: str = "127.0.0.1", **http: object) -> dict:
    return {"http": {"address": address, **http},
            "tls": {"certificate_file": str(pki / "node.crt"),
                    "private_key_file": str(pki / "node.key")},
            "dashboard": {"users": [{"name": "olga", "role": "operator",
                                     "password_hash": hash_password(PASSWORD)}]}}


@pytest.fixture()
def https_server(tmp_path, pki) -> Iterator[int]:
    config = parse_config(_settings(pki, tls=True))
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    files = FileStore(tmp_path / "data")
    server = StatusServer("127.0.0.1", 0, db, files, NodeMetrics(), 0,
                          dashboard=Dashboard(config, db, files),
                          tls_context=https_context(config.tls, config.resolve))
    server.start()
    yield server.port
    server.stop()
    db.dispose()


def _client(pki: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki / "ca.crt"))


def _request(port: int, pki: Path, method: str, path: str,
             form: dict | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=_client(pki), timeout=10)
    body = urllib.parse.urlencode(form) if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_dashboard_off_loopback_needs_https(pki):
    for address in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(address)
        parse_config(_settings(pki, address))
    for address in ("0.0.0.0", "::", "", "10.0.0.30", "ainode.example.org"):
        assert not is_loopback(address)
        with pytest.raises(ConfigError, match="http.tls = true"):
            parse_config(_settings(pki, address))
        parse_config(_settings(pki, address, tls=True))
    # Without users or without the dashboard nothing secret is served: health and metrics
    # may go out in clear, as Prometheus scrapes them.
    parse_config({"http": {"address": "0.0.0.0"}})
    parse_config({**_settings(pki, "0.0.0.0"), "dashboard": {"enabled": False}})
    with pytest.raises(ConfigError, match="needs tls.certificate_file"):
        parse_config({"http": {"tls": True}})


def test_check_config_loads_the_https_certificate(tmp_path, pki):
    config = parse_config({**_settings(pki, tls=True),
                           "tls": {"certificate_file": str(tmp_path / "missing.crt"),
                                   "private_key_file": str(pki / "node.key")}})
    engines = sorted({r.engine for r in config.routes})
    errors, _ = check_config(config, engines)
    assert any("cannot load" in line for line in errors), errors
    with pytest.raises(TlsConfigError):
        https_context(config.tls, config.resolve)
    assert check_config(parse_config(_settings(pki, tls=True)), engines)[0] == []


def test_https_health_login_secure_cookie_and_hsts(https_server, pki):
    assert _request(https_server, pki, "GET", "/healthz/live").status == 200
    login = _request(https_server, pki, "POST", "/login", {"user": "olga", "password": PASSWORD})
    assert login.status == 303
    cookie = login.getheader("Set-Cookie")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert login.getheader("Strict-Transport-Security") == "max-age=31536000"
    page = _request(https_server, pki, "GET", "/login")
    assert page.status == 200 and page.getheader("Strict-Transport-Security")


def test_plain_http_and_weak_tls_get_nothing(https_server, pki):
    plain = http.client.HTTPConnection("127.0.0.1", https_server, timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, http.client.BadStatusLine,
                        ConnectionError)):
        plain.request("GET", "/healthz/live")
        plain.getresponse()
    plain.close()
    weak = _client(pki)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("ECDHE-ECDSA-AES128-SHA:AES128-SHA")  # CBC, or RSA key exchange
    with (socket.create_connection(("127.0.0.1", https_server), timeout=10) as raw,
          pytest.raises(ssl.SSLError)):
        weak.wrap_socket(raw, server_hostname="127.0.0.1")
    # The listener survives both.
    assert _request(https_server, pki, "GET", "/healthz/live").status == 200


def test_a_silent_client_does_not_hold_up_the_listener(https_server, pki):
    with socket.create_connection(("127.0.0.1", https_server), timeout=10):
        # Connected, sends nothing: its handshake waits in its own thread.
        started = time.monotonic()
        assert _request(https_server, pki, "GET", "/healthz/live").status == 200
        assert time.monotonic() - started < 5
