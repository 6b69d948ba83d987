"""The model server's settings and request limits, read once at the edge (environment variables, or the
`housing-mlops serve` options that set them). No heavy imports: the CLI reads these without loading the server."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may hold. The body size is the server's (housing_mlops.server.Settings)."""

    max_rows: int = 250_000
    max_elements: int = 2_500_000  # values over all inputs (9 columns x max_rows fit)
    max_depth: int = 8  # lists nested in an input's ``data``


@dataclass(frozen=True)
class Settings:
    """Everything the server reads, each from an environment variable (`housing-mlops serve` sets them from
    its options; the chart's ServingRuntime sets them from `inference.limits`)."""

    model_dir: Path
    model_name: str = "housing-model"
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081  # 0: no gRPC
    metrics_port: int = 8082  # 0: no metrics endpoint
    max_body_bytes: int = 32 * MiB  # REST body (inflated, when gzip) and gRPC message
    max_rows: int = Limits.max_rows
    max_elements: int = Limits.max_elements
    max_depth: int = Limits.max_depth
    timeout_seconds: float = 30.0
    workers: int = 4  # inference threads
    load_later: bool = False

    ENV: ClassVar[dict[str, str]] = {
        "model_name": "HOUSING_SERVE_MODEL_NAME",  # the V2 name (the chart: the InferenceService's)
        "host": "HOUSING_SERVE_HOST",
        "http_port": "HOUSING_SERVE_HTTP_PORT",
        "grpc_port": "HOUSING_SERVE_GRPC_PORT",
        "metrics_port": "HOUSING_SERVE_METRICS_PORT",
        "max_body_bytes": "HOUSING_SERVE_MAX_BODY_BYTES",
        "max_rows": "HOUSING_SERVE_MAX_ROWS",
        "max_elements": "HOUSING_SERVE_MAX_ELEMENTS",
        "max_depth": "HOUSING_SERVE_MAX_DEPTH",
        "timeout_seconds": "HOUSING_SERVE_TIMEOUT_SECONDS",
        "workers": "HOUSING_SERVE_WORKERS",
        "load_later": "HOUSING_SERVE_LOAD_LATER",
    }

    @classmethod
    def from_env(cls, model_dir: Path, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        given: dict[str, Any] = {}
        kinds = {f.name: f.type for f in fields(cls)}
        for name, var in cls.ENV.items():
            value = env.get(var, "").strip()
            if not value:
                continue
            kind = kinds[name]
            try:
                if kind == "bool":
                    given[name] = value.lower() in ("1", "true", "yes", "on")
                elif kind == "int":
                    given[name] = int(value)
                elif kind == "float":
                    given[name] = float(value)
                else:
                    given[name] = value
            except ValueError:
                raise SystemExit(f"error: {var}={value!r} is not a {kind}") from None
        settings = cls(model_dir=Path(model_dir), **given)
        for name in ("max_body_bytes", "max_rows", "max_elements", "max_depth", "workers"):
            if getattr(settings, name) < 1:
                raise SystemExit(f"error: {cls.ENV[name]} must be at least 1, got {getattr(settings, name)}")
        if not settings.timeout_seconds > 0:
            raise SystemExit(f"error: {cls.ENV['timeout_seconds']} must be positive")
        return settings

    def to_env(self) -> dict[str, str]:
        out = {}
        for name, var in self.ENV.items():
            value = getattr(self, name)
            out[var] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out

    @property
    def limits(self) -> Limits:
        return Limits(max_rows=self.max_rows, max_elements=self.max_elements, max_depth=self.max_depth)
