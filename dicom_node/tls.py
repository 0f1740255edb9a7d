"""DICOM TLS (PS3.15 Annex B, "BCP 195" profile): the node's server and client contexts.

TLS 1.2 or 1.3 only; for TLS 1.2 only ECDHE key exchange with AES-GCM (RFC 9325, which
PS3.15 B.9 references); TLS 1.3's suites are all AEAD.  Compression and renegotiation are off.
The same certificate and key serve both directions; peers' certificates must chain to
``tls.ca_file``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from dicom_node.config import ConfigError, TlsSettings

# OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are configured separately and all AEAD).
TLS12_CIPHERS = "ECDHE+AESGCM:!aNULL:!eNULL"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsConfigError(ConfigError):
    """The TLS files cannot be used (missing, unreadable, key does not match): reported like
    any configuration error, so ``serve`` and ``check-config`` refuse with one line."""

    def __init__(self, reason: str):
        super().__init__("[tls]", [reason])


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def _load(ctx: ssl.SSLContext, settings: TlsSettings, resolve: Callable[[Path], Path],
          *, peers_ca: bool = True) -> None:
    """The node's certificate and key, and (``peers_ca``) the CA that peers chain to."""
    names = ["certificate_file", "private_key_file"] + (["ca_file"] if peers_ca else [])
    files = [getattr(settings, name) for name in names]
    if None in files:
        raise TlsConfigError(", ".join(f"tls.{name}" for name in names) + " must all be set")
    try:
        ctx.load_cert_chain(resolve(files[0]), resolve(files[1]))
        if peers_ca:
            ctx.load_verify_locations(cafile=str(resolve(files[2])))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError("tls." + "/".join(names) + ": cannot load "
                             f"({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc})"
                             ) from None


def server_context(settings: TlsSettings, resolve: Callable[[Path], Path]) -> ssl.SSLContext:
    """Context for the TLS listener.

    A client certificate is required when ``tls.require_client_certificate``; otherwise one
    that is presented must still chain to the CA (peers with ``require_client_certificate``
    are then checked per association).
    """
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load(ctx, settings, resolve)
    ctx.verify_mode = (ssl.CERT_REQUIRED if settings.require_client_certificate
                       else ssl.CERT_OPTIONAL)
    return ctx


def https_context(settings: TlsSettings, resolve: Callable[[Path], Path]) -> ssl.SSLContext:
    """Context for the HTTPS endpoint (health, metrics, dashboard): the node's certificate with
    the same protocol and cipher rules; browsers are not asked for a certificate (the
    dashboard has its own login)."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load(ctx, settings, resolve, peers_ca=False)
    return ctx


def client_context(settings: TlsSettings, resolve: Callable[[Path], Path]) -> ssl.SSLContext:
    """Context for sending: the peer's certificate must chain to the CA and name the peer."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED + check_hostname
    _load(ctx, settings, resolve)
    return ctx
