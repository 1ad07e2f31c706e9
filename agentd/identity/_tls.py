"""TLS for NATS (and the LLM gateway): server config blocks and client SSL contexts."""

from __future__ import annotations

import json
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: importing the config models costs agentctl's start
    from pathlib import Path

    from agentd.config import TlsConfig

__all__ = ["client_ssl_context", "nats_tls_block", "server_ssl_context", "trusting_ssl_context"]


def nats_tls_block(cfg: TlsConfig) -> str:
    """The embedded nats-server's `tls { ... }` block ("" when TLS is off)."""
    if not cfg.enabled:
        return ""
    lines = [
        "tls {",
        f"  cert_file: {json.dumps(str(cfg.cert_file))}",
        f"  key_file: {json.dumps(str(cfg.key_file))}",
        "  timeout: 2",
        "}",
    ]
    return "\n".join(lines) + "\n"


def client_ssl_context(cfg: TlsConfig) -> ssl.SSLContext | None:
    """A client context trusting `ca_file` (or the system's CAs); None when TLS is off."""
    if not cfg.enabled and cfg.ca_file is None:
        return None
    return trusting_ssl_context(cfg.ca_file)


def trusting_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context trusting `ca_file`, else the system's CAs (agentctl: no config models)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_ssl_context(cfg: TlsConfig) -> ssl.SSLContext | None:
    """A server context for an HTTP listener (the LLM gateway); None when TLS is off."""
    if not cfg.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    return context
