"""Kafka connection security (TLS, SASL), shared by every Kafka client of the service: the Kafka
input, its dead-letter producer, the keyed scope's producer and the Kafka alert sink.

A leaf module (pydantic and :mod:`service.secrets` only): the alert sinks' settings use it without
importing :mod:`service.config`, which imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from service.secrets import read_secret_file


def _secret_from_file(path: Path, what: str) -> SecretStr:
    return SecretStr(read_secret_file(path, what))


class KafkaSecurity(BaseModel):
    """Passed through to aiokafka; secrets never leave this object except into the client."""

    # hide_input_in_errors: a ValidationError printed anywhere must not carry a secret's value
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _resolve(self) -> KafkaSecurity:
        if self.sasl_password_file is not None:
            object.__setattr__(self, "sasl_password", _secret_from_file(self.sasl_password_file, "sasl_password"))
        if self.ssl_key_password_file is not None:
            object.__setattr__(self, "ssl_key_password",
                               _secret_from_file(self.ssl_key_password_file, "ssl_key_password"))
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError("sasl_mechanism is required with a SASL protocol")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError("sasl_username and sasl_password (or sasl_password_file) are required with SASL")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
        return self


def security_kwargs(sec: KafkaSecurity) -> dict[str, Any]:
    """aiokafka's keyword arguments for ``sec``: protocol, TLS context, SASL credentials."""
    kwargs: dict[str, Any] = {"security_protocol": sec.protocol}
    if sec.protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(
            cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None,
            certfile=str(sec.ssl_certfile) if sec.ssl_certfile else None,
            keyfile=str(sec.ssl_keyfile) if sec.ssl_keyfile else None,
            password=sec.ssl_key_password.get_secret_value() if sec.ssl_key_password else None,
        )
        context.check_hostname = sec.ssl_check_hostname
        kwargs["ssl_context"] = context
    if sec.protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = sec.sasl_mechanism
        kwargs["sasl_plain_username"] = sec.sasl_username
        kwargs["sasl_plain_password"] = sec.sasl_password.get_secret_value() if sec.sasl_password else None
    return kwargs


__all__ = ["KafkaSecurity", "security_kwargs"]
