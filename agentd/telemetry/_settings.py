"""What a process needs to know to trace: whether and where to export, and what to redact.

The daemon builds `TelemetrySettings` from agentd.toml ([trace.otlp] and
[trace].redact_patterns); a worker reads them from its environment, which the daemon fills with
the standard OpenTelemetry variables (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_TRACES_*`,
`OTEL_BSP_SCHEDULE_DELAY`) plus two of agentd's own (`AGENTD_TRACE_REDACT_PATTERNS`, a JSON
list, and `AGENTD_TRACE_CAPTURE_CONTENT`). A replica started by hand can therefore be pointed at
a collector the usual way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from agentd.config import TraceConfig
from agentd.errors import ConfigError

__all__ = ["TelemetrySettings"]

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True, kw_only=True)
class TelemetrySettings:
    """Span export and redaction settings of one process. `endpoint` is the full traces URL."""

    export: bool = False
    endpoint: str = "http://127.0.0.1:4318" + TRACES_PATH
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    export_interval_s: float = 5.0
    redact_patterns: tuple[str, ...] = ()
    capture_content: bool = False

    @classmethod
    def from_config(cls, trace: TraceConfig) -> TelemetrySettings:
        otlp = trace.otlp
        return cls(
            export=otlp.enabled,
            endpoint=traces_url(otlp.endpoint),
            headers=dict(otlp.headers),
            timeout_s=otlp.timeout_s,
            export_interval_s=otlp.export_interval_s,
            redact_patterns=tuple(trace.redact_patterns),
            capture_content=otlp.capture_content,
        )

    def to_env(self) -> dict[str, str]:
        """The environment that gives a worker these settings (see `from_env`)."""
        env = {
            "OTEL_TRACES_EXPORTER": "otlp" if self.export else "none",
            "AGENTD_TRACE_REDACT_PATTERNS": json.dumps(list(self.redact_patterns)),
            "AGENTD_TRACE_CAPTURE_CONTENT": "1" if self.capture_content else "0",
        }
        if self.export:
            env.update(
                {
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": ",".join(
                        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.headers.items()
                    ),
                    # the specification's unit for both is milliseconds
                    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": str(round(self.timeout_s * 1000)),
                    "OTEL_BSP_SCHEDULE_DELAY": str(round(self.export_interval_s * 1000)),
                }
            )
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TelemetrySettings:
        """Read the settings `to_env` writes; raises `ConfigError` listing every bad variable.

        Export is on only with `OTEL_TRACES_EXPORTER=otlp`: an `OTEL_EXPORTER_OTLP_*` left in
        an operator's shell does not turn it on by itself.
        """
        env = os.environ if environ is None else environ
        problems: list[str] = []
        exporter = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
        if exporter not in {"otlp", "none"}:
            problems.append(f"OTEL_TRACES_EXPORTER: {exporter!r} is not 'otlp' or 'none'")
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        if exporter == "otlp" and protocol != "http/protobuf":
            problems.append(
                f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: {protocol!r} is not supported "
                "(only http/protobuf)"
            )
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or cls.endpoint
        if not endpoint.startswith(("http://", "https://")):
            problems.append(f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: {endpoint!r} is not a URL")

        def millis(key: str, default_s: float) -> float:
            text = env.get(key)
            if not text:
                return default_s
            try:
                value = float(text) / 1000
            except ValueError:
                problems.append(f"{key}: not a number of milliseconds ({text!r})")
                return default_s
            if value <= 0:
                problems.append(f"{key}: must be positive")
                return default_s
            return value

        settings = cls(
            export=exporter == "otlp",
            endpoint=endpoint,
            headers=_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""), problems),
            timeout_s=millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", cls.timeout_s),
            export_interval_s=millis("OTEL_BSP_SCHEDULE_DELAY", cls.export_interval_s),
            redact_patterns=_patterns(env.get("AGENTD_TRACE_REDACT_PATTERNS", ""), problems),
            capture_content=env.get("AGENTD_TRACE_CAPTURE_CONTENT", "0") in {"1", "true"},
        )
        if problems:
            raise ConfigError("the tracing environment", problems)
        return settings


def traces_url(endpoint: str) -> str:
    """A collector's base URL -> its OTLP/HTTP traces URL (kept when it already is one)."""
    path = urlsplit(endpoint).path.rstrip("/")
    if path.endswith(TRACES_PATH):
        return endpoint
    return endpoint.rstrip("/") + TRACES_PATH


def _headers(text: str, problems: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"OTEL_EXPORTER_OTLP_TRACES_HEADERS: {item!r} is not key=value")
            continue
        headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def _patterns(text: str, problems: list[str]) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError as exc:
        problems.append(f"AGENTD_TRACE_REDACT_PATTERNS: not JSON ({exc})")
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        problems.append("AGENTD_TRACE_REDACT_PATTERNS: must be a JSON list of strings")
        return ()
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(f"AGENTD_TRACE_REDACT_PATTERNS: {pattern!r} is not a regex: {exc}")
            return ()
    return tuple(value)
