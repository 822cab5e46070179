"""Server settings: embedded defaults, overridden by WAYBILL_* environment variables,
overridden by command-line flags. Validated once at start; a bad value stops the
process with a message naming the setting and the value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.registry import DEFAULT_ROOT

ENV_PREFIX = "WAYBILL_"


class SettingsError(Exception):
    pass


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 50051
    # Written with the bound port once the server is ready (useful with port 0).
    port_file: Path | None = None
    registry: Path = DEFAULT_ROOT
    # Models to serve; empty means every model found in the registry.
    models: tuple[str, ...] = ()
    max_rows: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    max_message_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    max_metadata_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024
    # Applied when the caller sets no deadline, so no request can hang forever.
    default_deadline_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    # How long in-flight calls may finish after SIGTERM/SIGINT.
    grace_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    predict_threads: Annotated[int, Field(ge=1, le=64)] = 2
    log_level: Annotated[str, Field(pattern=r"^(debug|info|warning|error)$")] = "info"


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = tuple(m for m in raw.split(",") if m) if name == "models" else raw
    return values


def load_settings(
    overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < environment < explicit overrides (CLI flags that were given)."""
    values = _from_env(os.environ if environ is None else environ)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}"
            for e in err.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
