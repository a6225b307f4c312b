"""Alerting settings: sinks, paging receivers, routes, suppression, grouping, spool.

Embedded in the top-level ``Settings`` as ``alerting``. With no configuration the
router writes every alert to stdout (one JSON line) and to the local SQLite
store under the data directory; Elasticsearch and pagers are switched on here.
Secrets are ``SecretStr`` so a settings dump never shows them. Every secret field
``X`` of a sink or receiver may instead be given as ``X_file``: the path of a
mounted secret, read once at validation (Kubernetes Secret volumes, Docker secrets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from detectors.model import LEVELS
from service.secrets import read_secret_file

Level = Literal["informational", "low", "medium", "high", "critical"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SpoolSettings(_Model):
    """On-disk spool per sink. ``fsync``: ``batch`` syncs once per submitted batch
    (the default: an acknowledged batch survives a power cut), ``always`` after each
    record, ``never`` leaves it to the OS (survives a process crash, not a power cut)."""

    fsync: Literal["batch", "always", "never"] = "batch"
    segment_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    max_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=4096)
    """When a sink's spool holds this much, ``submit`` raises (offsets are not committed)."""


class RetrySettings(_Model):
    """Backoff with full jitter between delivery attempts, and the circuit breaker."""

    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failed attempts that open the circuit."""
    breaker_reset_s: float = Field(default=30.0, gt=0)
    """How long an open circuit waits before one trial attempt (half-open)."""


class _SinkBase(_Model):
    name: str = ""
    durable: bool = True
    """Spool to disk before delivery (``submit`` waits for the spool, not the sink)."""
    batch_size: int = Field(default=500, ge=1)
    linger_s: float = Field(default=0.0, ge=0, le=10)
    """Wait this long for a fuller batch when fewer than ``batch_size`` records are waiting."""
    retry: RetrySettings = Field(default_factory=RetrySettings)

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
    def _default_name(self) -> _SinkBase:
        if not self.name:
            self.name = getattr(self, "type", "sink")
        return self


class StdoutSink(_SinkBase):
    type: Literal["stdout"] = "stdout"
    durable: bool = False
    full: bool = False
    """Print the whole document instead of the readable summary."""


class StoreSink(_SinkBase):
    type: Literal["store"] = "store"


class NullSink(_SinkBase):
    type: Literal["null"] = "null"
    durable: bool = False


class ElasticsearchSink(_SinkBase):
    type: Literal["elasticsearch"] = "elasticsearch"
    flavor: Literal["elasticsearch", "opensearch"] = "elasticsearch"
    hosts: list[str] = Field(default_factory=lambda: ["http://localhost:9200"])
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    mode: Literal["index", "datastream"] = "index"
    """``index``: dated indices ``<prefix>-YYYY.MM.DD`` by alert time (updates allowed);
    ``datastream``: one data stream named ``<prefix>`` (create-only)."""
    index_prefix: str = "pipesentry-alerts"
    batch_size: int = Field(default=4000, ge=1)
    """About 10 MB of alerts: inside the 5-15 MB bulk size Elasticsearch recommends."""
    linger_s: float = Field(default=0.5, ge=0, le=10)
    """Bulk requests are costly per request (the node syncs its translog for each): batch up."""
    install_template: bool = True
    request_timeout_s: float = Field(default=30.0, gt=0)
    parallel_bulks: int = Field(default=2, ge=1, le=8)
    """Concurrent bulk requests per delivered batch (the node indexes them on separate threads)."""
    item_retries: int = Field(default=3, ge=0)
    """Retries of retriable bulk items (429/5xx) within one delivery before backing off."""
    refresh: bool = False


Sink = Annotated[StdoutSink | StoreSink | NullSink | ElasticsearchSink, Field(discriminator="type")]


class _ReceiverBase(_SinkBase):
    min_level: Level = "informational"
    rate_limit_per_min: float | None = Field(default=None, gt=0)
    """New pages per minute (token bucket); updates and resolves are never limited."""
    burst: int = Field(default=10, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    batch_size: int = Field(default=50, ge=1)


class AlertmanagerReceiver(_ReceiverBase):
    type: Literal["alertmanager"] = "alertmanager"
    url: str = "http://localhost:9093"


class PagerDutyReceiver(_ReceiverBase):
    type: Literal["pagerduty"] = "pagerduty"
    url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key: SecretStr


class OpsgenieReceiver(_ReceiverBase):
    type: Literal["opsgenie"] = "opsgenie"
    url: str = "https://api.opsgenie.com"
    api_key: SecretStr
    responders: list[dict[str, str]] = Field(default_factory=list)


class SlackReceiver(_ReceiverBase):
    type: Literal["slack"] = "slack"
    webhook_url: SecretStr


class WebhookReceiver(_ReceiverBase):
    type: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr | None = None
    """HMAC-SHA256 key for the ``X-Pipesentry-Signature`` header."""
    headers: dict[str, str] = Field(default_factory=dict)


Receiver = Annotated[
    AlertmanagerReceiver | PagerDutyReceiver | OpsgenieReceiver | SlackReceiver | WebhookReceiver,
    Field(discriminator="type"),
]


class RouteMatch(_Model):
    """Every given criterion must hold; within a list any entry may match.
    Tags and rule ids accept ``*`` globs; fields are dotted event paths."""

    levels: list[Level] = Field(default_factory=list)
    min_level: Level | None = None
    tags: list[str] = Field(default_factory=list)
    rule_ids: list[str] = Field(default_factory=list)
    logsource: dict[Literal["product", "category", "service", "input", "topic"], str] = Field(
        default_factory=dict)
    fields: dict[str, str | list[str]] = Field(default_factory=dict)


class Route(_Model):
    name: str = ""
    match: RouteMatch = Field(default_factory=RouteMatch)
    receivers: list[str]
    continue_: bool = Field(default=True, alias="continue")
    """Keep evaluating later routes after this one matched."""


class SuppressionPolicy(_Model):
    rules: list[str] = Field(default_factory=lambda: ["*"])
    """Rule ids (or ``*`` globs) this policy applies to; the first matching policy wins."""
    group_by: list[str] = Field(default_factory=list)
    """Event fields whose values form the key; empty: one key per rule."""
    window_s: float = Field(gt=0)


class SuppressionSettings(_Model):
    policies: list[SuppressionPolicy] = Field(default_factory=list)
    max_keys: int = Field(default=100_000, ge=1)


class GroupingSettings(_Model):
    """Pages: alerts of one rule and group key become one page until the group has
    been quiet for ``window_s``; then a resolve is sent where the channel has one."""

    group_by: list[str] = Field(default_factory=list)
    window_s: float = Field(default=300.0, gt=0)
    update_interval_s: float = Field(default=60.0, gt=0)
    """At most one count update per group in this interval."""
    max_groups: int = Field(default=50_000, ge=1)


def _default_sinks() -> list[Sink]:
    return [StdoutSink(), StoreSink()]


class AlertingSettings(_Model):
    sinks: list[Sink] = Field(default_factory=_default_sinks)
    receivers: list[Receiver] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    suppression: SuppressionSettings = Field(default_factory=SuppressionSettings)
    grouping: GroupingSettings = Field(default_factory=GroupingSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    alert_base_url: str = "http://localhost:8080"
    """Base of links back to an alert in pages: ``<base>/api/v1/alerts/<id>``."""
    store_retention_days: float = Field(default=30.0, gt=0)

    @field_validator("alert_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

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
