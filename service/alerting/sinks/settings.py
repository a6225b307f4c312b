"""Settings every sink and receiver shares; each sink's own model lives in its module.

A sink module subclasses :class:`SinkSettings` (record sinks) or
:class:`ReceiverSettings` (paging receivers) with a ``type`` literal equal to
the name it registers under (see :mod:`service.alerting.sinks.registry`).
Secrets are ``SecretStr``; every secret field ``X`` may instead be given as
``X_file``, the path of a mounted secret read once at validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.secrets import read_secret_file

Level = Literal["informational", "low", "medium", "high", "critical"]


class SettingsModel(BaseModel):
    """Unknown keys are errors (a typo must not silently become a default)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RetrySettings(SettingsModel):
    """Backoff with full jitter between delivery attempts, and the circuit breaker."""

    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failed attempts that open the circuit."""
    breaker_reset_s: float = Field(default=30.0, gt=0)
    """How long an open circuit waits before one trial attempt (half-open)."""


class SinkSettings(SettingsModel):
    """Base of every sink's settings; ``type`` is the registered name, ``name`` defaults to it."""

    type: str
    name: str = ""
    durable: bool = True
    """Spool to disk before delivery (``submit`` waits for the spool, not the sink)."""
    batch_size: int = Field(default=500, ge=1)
    linger_s: float = Field(default=0.0, ge=0, le=10)
    """Wait this long for a fuller batch when fewer than ``batch_size`` records are waiting."""
    retry: RetrySettings = Field(default_factory=RetrySettings)
    redact: bool = True
    """Replace secrets by redaction markers in what this sink receives (and spools). ``false`` only for a
    trusted destination that must see raw values; ignored when ``redaction.enabled`` is false."""

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """Replace ``X_file`` keys of secret fields ``X`` by the file's content."""
        if not isinstance(data, dict):
            return data
        secret_fields = {name for name, info in cls.model_fields.items() if "SecretStr" in str(info.annotation)}
        resolved = dict(data)
        for key in [k for k in data if isinstance(k, str) and k.endswith("_file")]:
            field = key[: -len("_file")]
            if field not in secret_fields:
                continue
            resolved[field] = read_secret_file(Path(str(resolved.pop(key))), field)
        return resolved

    @model_validator(mode="after")
    def _default_name(self) -> SinkSettings:
        if not self.name:
            self.name = self.type
        return self


class ReceiverSettings(SinkSettings):
    """Base of every paging receiver's settings (pages, not alert documents)."""

    min_level: Level = "informational"
    rate_limit_per_min: float | None = Field(default=None, gt=0)
    """New pages per minute (token bucket); updates and resolves are never limited."""
    burst: int = Field(default=10, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    batch_size: int = Field(default=50, ge=1)


__all__ = ["Level", "ReceiverSettings", "RetrySettings", "SettingsModel", "SinkSettings"]
