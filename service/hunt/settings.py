"""``hunt:`` settings: where the history lives (an index pattern per log source) and how to reach it.

Credentials follow the search sink's style: ``api_key`` or ``username`` + ``password``, each secret
given inline (``${VAR}`` from the environment), as ``X_file`` (a mounted secret read once), or by
``PIPESENTRY_HUNT__API_KEY`` / ``PIPESENTRY_HUNT__PASSWORD``; never on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from detectors.model import LogSource
from service.secrets import read_secret_file

DEFAULT_INDEX = "logs-*"
DEFAULT_TIME_FIELD = "@timestamp"


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL without credentials (those belong in api_key/username/password,
    which are kept out of logs and errors); ``ValueError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url: expected http(s)://host[:port]")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url: no credentials in the URL; use api_key or username/password (or their _file forms)")
    return url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class HuntIndex(_Strict):
    """The indices holding one log source's events; the fields left out match any rule."""

    product: str | None = None
    category: str | None = None
    service: str | None = None
    index: str = Field(min_length=1, max_length=1024)
    """Index name, pattern (``logs-github.audit-*``) or comma-separated list."""
    time_field: str | None = DEFAULT_TIME_FIELD
    """The event-time field ``--since``/``--until`` filter on; ``null``: these events are not time-filtered."""

    @property
    def logsource(self) -> LogSource:
        return LogSource(self.product, self.category, self.service)


class HuntSettings(_Strict):
    target: Literal["elasticsearch", "opensearch"] = "elasticsearch"
    url: str = "http://localhost:9200"
    indices: list[HuntIndex] = Field(default_factory=list)
    default_index: str = Field(default=DEFAULT_INDEX, min_length=1, max_length=1024)
    """Where rules whose log source no ``indices`` entry covers are run."""
    time_field: str | None = DEFAULT_TIME_FIELD
    """Event-time field of ``default_index``."""
    page_size: int = Field(default=1000, ge=1, le=10_000)
    """Hits per page (one scroll request); 10,000 is the nodes' ``index.max_result_window``."""
    max_hits_per_rule: int = Field(default=100_000, ge=1)
    """A rule matching more than this stops at it (listed as truncated): a noisy rule cannot fill the store."""
    scroll_keep_alive: str = Field(default="2m", pattern=r"^\d{1,4}[smh]$")
    request_timeout_s: float = Field(default=60.0, gt=0)
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        resolved = dict(data)
        for name in ("api_key", "password"):
            path = resolved.get(f"{name}_file")
            if path is not None and resolved.get(name) is None:
                resolved[name] = read_secret_file(Path(str(path)), name)
        return resolved

    @model_validator(mode="after")
    def _auth(self) -> HuntSettings:
        if self.password is not None and not self.username:
            raise ValueError("password needs username")
        check_url(self.url)
        return self

    def targets_for(self, logsource: LogSource) -> list[tuple[str, str | None]]:
        """``(indices, time field)`` pairs a rule of ``logsource`` runs over: every entry whose log
        source the rule covers (as the engine routes events: the fields the rule names must be the
        entry's), indices with the same time field joined by commas; ``default_index`` when none."""
        by_field: dict[str | None, list[str]] = {}
        for entry in self.indices:
            if logsource.covers(entry.logsource):
                names = by_field.setdefault(entry.time_field, [])
                if entry.index not in names:
                    names.append(entry.index)
        if not by_field:
            return [(self.default_index, self.time_field)]
        return [(",".join(names), field) for field, names in by_field.items()]
