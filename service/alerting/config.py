"""Alerting settings: sinks, paging receivers, routes, suppression, grouping, spool.

Embedded in the top-level ``Settings`` as ``alerting``. With no configuration the
router writes every alert to stdout (one JSON line) and to the local SQLite
store under the data directory; Elasticsearch and pagers are switched on here.
Each sink's and receiver's settings model lives in its module under ``sinks/``
and is registered there (``sinks/registry.py``); the lists below accept exactly
the registered ``type`` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from detectors.model import LEVELS

from .sinks.registry import RECEIVERS, SINKS
from .sinks.settings import Level, ReceiverSettings, RetrySettings, SettingsModel, SinkSettings


class SpoolSettings(SettingsModel):
    """On-disk spool per sink. ``fsync``: ``batch`` syncs once per submitted batch
    (the default: an acknowledged batch survives a power cut), ``always`` after each
    record, ``never`` leaves it to the OS (survives a process crash, not a power cut)."""

    fsync: Literal["batch", "always", "never"] = "batch"
    segment_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    max_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=4096)
    """When a sink's spool holds this much, ``submit`` raises (offsets are not committed)."""


if TYPE_CHECKING:
    SinkChoice = SinkSettings
    ReceiverChoice = ReceiverSettings
else:  # the registered models, told apart by ``type`` (see sinks/registry.py)
    SinkChoice = SINKS.settings_union()
    ReceiverChoice = RECEIVERS.settings_union()


class RouteMatch(SettingsModel):
    """Every given criterion must hold; within a list any entry may match.
    Tags and rule ids accept ``*`` globs; fields are dotted event paths."""

    levels: list[Level] = Field(default_factory=list)
    min_level: Level | None = None
    tags: list[str] = Field(default_factory=list)
    rule_ids: list[str] = Field(default_factory=list)
    logsource: dict[Literal["product", "category", "service", "input", "topic"], str] = Field(
        default_factory=dict)
    fields: dict[str, str | list[str]] = Field(default_factory=dict)


class Route(SettingsModel):
    name: str = ""
    match: RouteMatch = Field(default_factory=RouteMatch)
    receivers: list[str]
    continue_: bool = Field(default=True, alias="continue")
    """Keep evaluating later routes after this one matched."""


class SuppressionPolicy(SettingsModel):
    rules: list[str] = Field(default_factory=lambda: ["*"])
    """Rule ids (or ``*`` globs) this policy applies to; the first matching policy wins."""
    group_by: list[str] = Field(default_factory=list)
    """Event fields whose values form the key; empty: one key per rule."""
    window_s: float = Field(gt=0)


class SuppressionSettings(SettingsModel):
    policies: list[SuppressionPolicy] = Field(default_factory=list)
    max_keys: int = Field(default=100_000, ge=1)


class GroupingSettings(SettingsModel):
    """Pages: alerts of one rule and group key become one page until the group has
    been quiet for ``window_s``; then a resolve is sent where the channel has one."""

    group_by: list[str] = Field(default_factory=list)
    window_s: float = Field(default=300.0, gt=0)
    update_interval_s: float = Field(default=60.0, gt=0)
    """At most one count update per group in this interval."""
    max_groups: int = Field(default=50_000, ge=1)


def _default_sinks() -> list[SinkChoice]:
    return [SINKS.get("stdout").settings(), SINKS.get("store").settings()]


DEFAULT_ALERT_BASE_URL = "http://localhost:8080"
"""Links' base when the alerting settings are used without the API's (tests, tools)."""


class AlertingSettings(SettingsModel):
    sinks: list[SinkChoice] = Field(default_factory=_default_sinks)
    receivers: list[ReceiverChoice] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    suppression: SuppressionSettings = Field(default_factory=SuppressionSettings)
    grouping: GroupingSettings = Field(default_factory=GroupingSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    alert_base_url: str | None = None
    """Base of links back to an alert in pages: ``<base>/alerts/<id>``, the console's alert page. Unset: the API's own
    address (``service.config.Settings`` fills it in from ``api.host``/``api.port``/``api.tls``), or
    :data:`DEFAULT_ALERT_BASE_URL` where alerting settings are used alone."""
    store_retention_days: float = Field(default=30.0, gt=0)
    silence_max_duration_s: float = Field(default=30 * 86_400.0, gt=0, le=366 * 86_400.0)
    """The longest silence ``POST /api/v1/silences`` grants (default 30 days)."""

    @field_validator("alert_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value is not None else None

    @property
    def base_url(self) -> str:
        """``alert_base_url``, or :data:`DEFAULT_ALERT_BASE_URL` when unset."""
        return self.alert_base_url or DEFAULT_ALERT_BASE_URL

    @model_validator(mode="after")
    def _check_names(self) -> AlertingSettings:
        names = [s.name for s in self.sinks] + [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink/receiver names must be unique: {dupes}")
        receivers = {r.name for r in self.receivers}
        for route in self.routes:
            missing = [r for r in route.receivers if r not in receivers]
            if missing:
                raise ValueError(f"route {route.name or route.receivers} names unknown receivers {missing}")
        return self


def level_index(level: str) -> int:
    return LEVELS.index(level)


__all__ = ["AlertingSettings", "GroupingSettings", "Level", "ReceiverChoice", "RetrySettings", "Route",
           "RouteMatch", "SinkChoice", "SpoolSettings", "SuppressionPolicy", "SuppressionSettings", "level_index"]
