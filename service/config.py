"""The one typed settings model: a YAML file plus ``PIPESENTRY_...`` environment overrides.

Precedence, highest first: environment (``PIPESENTRY_KAFKA__GROUP_ID=x``, nested
keys joined with ``__``), then the YAML file, then the defaults below. Every
model forbids unknown keys so a typo fails at start with the key's dotted path
instead of being silently ignored. Secrets are ``SecretStr``; each may instead
come from a ``*_file`` (a mounted secret), read once at validation.

With no file and no environment the defaults are the embedded mode: HTTP ingest
on 127.0.0.1:8080, stdin when it is not a terminal, the project's rules, alerts
to stdout and the local SQLite store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detectors.event import DEFAULT_TIME_FIELDS
from detectors.model import LogSource
from detectors.yamlsafe import YamlError, YamlLimits, load_one
from service.alerting.config import AlertingSettings
from service.config_env import ConfigEnvError, expand_env
from service.errors import ServiceError
from service.hunt.settings import HuntSettings
from service.kafka_security import KafkaSecurity
from service.logs import register_secrets
from service.redaction import RedactionSettings
from service.secrets import read_secret_file

ENV_PREFIX = "PIPESENTRY_"
DEFAULT_PORT = 8080


CONFIG_YAML_LIMITS = YamlLimits(max_bytes=1 << 20, max_depth=32, max_nodes=100_000)
"""Bounds on the config file's YAML (aliases expanded); see ``detectors.yamlsafe``."""


class ConfigError(ServiceError):
    """Invalid configuration; the message names every bad key (not retriable), never a value."""


class _Strict(BaseModel):
    # hide_input_in_errors: a ValidationError printed anywhere must not carry a secret's value
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _read_secret_file(path: Path | None, what: str) -> SecretStr | None:
    return None if path is None else SecretStr(read_secret_file(path, what))


class LogSourceSettings(_Strict):
    """The Sigma log source an input's events belong to (selects which rules apply)."""

    product: str | None = None
    category: str | None = None
    service: str | None = None

    def to_logsource(self) -> LogSource:
        return LogSource(self.product, self.category, self.service)


class DecoderSettings(_Strict):
    """Which decoder reads an input's raw messages; ``decoder: json`` is shorthand for ``{type: json}``.

    ``options`` go to the decoder's factory (``pattern`` for ``regex``, for example).
    """

    type: str = "json"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known(self) -> DecoderSettings:
        from service.decoders import build_decoder  # late: decoders may be registered after import

        try:
            build_decoder(self.type, self.options)
        except (KeyError, ValueError) as exc:
            raise ValueError(str(exc.args[0] if exc.args else exc)) from None
        return self


class InputSettings(_Strict):
    """What every input shares: log source, decoder, the event time field."""

    logsource: LogSourceSettings = Field(default_factory=LogSourceSettings)
    decoder: DecoderSettings = Field(default_factory=DecoderSettings)
    timestamp_field: str | None = None
    """Dotted field with the event time; ``None`` uses ``events.timestamp_fields``."""


class TopicSettings(InputSettings):
    """One Kafka topic's mapping to a log source and a decoder."""


class KafkaSettings(_Strict):
    """The Kafka input: one consumer group over ``topics`` and/or ``topic_pattern``."""

    bootstrap_servers: list[str] = Field(min_length=1)
    group_id: str = "pipesentry"
    client_id: str = "pipesentry"
    topics: dict[str, TopicSettings] = Field(default_factory=dict)
    topic_pattern: str | None = None
    """Regex of further topics to subscribe to; they use ``pattern_defaults``."""
    pattern_defaults: TopicSettings = Field(default_factory=TopicSettings)
    dead_letter_topic: str | None = None
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_batch: int = Field(default=5000, ge=1)
    """Records taken per ``getmany`` call."""
    max_in_flight_batches: int = Field(default=4, ge=1)
    """Batches detected but not yet accepted by the router; beyond it partitions are paused."""
    max_message_bytes: int = Field(default=1_048_576, ge=1)
    commit_interval_s: float = Field(default=1.0, gt=0)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    fetch_max_bytes: int = Field(default=52_428_800, ge=1024)
    max_partition_fetch_bytes: int = Field(default=1_048_576, ge=1024)
    connect_backoff_initial_s: float = Field(default=0.5, gt=0)
    connect_backoff_max_s: float = Field(default=30.0, gt=0)
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)

    @field_validator("topic_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return value

    @model_validator(mode="after")
    def _dead_letters_apart(self) -> KafkaSettings:
        if self.dead_letter_topic and self.dead_letter_topic in self.topics:
            raise ValueError("dead_letter_topic must not be one of the consumed topics")
        if self.dead_letter_topic and self.topic_pattern:
            import re

            if re.match(self.topic_pattern, self.dead_letter_topic):
                raise ValueError("topic_pattern matches dead_letter_topic: rejects would be consumed again")
        return self

    def topic_settings(self, topic: str) -> TopicSettings:
        return self.topics.get(topic, self.pattern_defaults)


class HttpIngestSettings(InputSettings):
    """``POST /api/v1/events``; ``?product=&category=&service=`` override ``logsource`` per request."""

    enabled: bool = True
    max_body_bytes: int = Field(default=10_485_760, ge=1024)
    max_events: int = Field(default=100_000, ge=1)


class StdinSettings(InputSettings):
    """Newline-delimited events on standard input; ``auto`` reads it only when it is not a terminal."""

    enabled: bool | Literal["auto"] = "auto"


class FileInputSettings(InputSettings):
    """Follow a file like ``tail -F``: reopens it after rotation or truncation."""

    path: Path
    start_at: Literal["beginning", "end"] = "end"
    poll_interval_s: float = Field(default=0.5, gt=0)


TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A token's name is a metric label and a log field: short, plain, bounded."""


class TokenSettings(_Strict):
    """One named API bearer token with its role, given inline or read from a secret file.

    Roles (see ``service.api.roles``): ``ingest`` posts events only; ``read`` reads rules,
    alerts, silences and metrics; ``analyst`` is ``read`` plus silences; ``admin`` may do
    everything. ``expires``: after it the token is refused (401) and the start logs a warning.
    """

    name: str = Field(pattern=TOKEN_NAME_PATTERN)
    role: Literal["ingest", "read", "analyst", "admin"]
    expires: datetime | None = None
    """When the token stops working; a time without a zone is UTC."""
    token: SecretStr | None = None
    token_file: Path | None = None

    @field_validator("expires")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def _resolve(self) -> TokenSettings:
        if self.token_file is not None:
            object.__setattr__(self, "token", _read_secret_file(self.token_file, "token"))
        if self.token is None or not self.token.get_secret_value():
            raise ValueError("set token or token_file")
        if len(self.token.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters")
        return self


class IngestRateSettings(_Strict):
    """Per-token limits of ``POST /api/v1/events`` (token buckets; ``null`` switches one off).

    A request is admitted while its caller's buckets are not in debt and then charged in full,
    so one request larger than the burst still passes and the next waits for the debt to clear.
    """

    events_per_s: float | None = Field(default=20_000.0, gt=0)
    bytes_per_s: float | None = Field(default=20.0 * 1024 * 1024, gt=0)
    burst_s: float = Field(default=5.0, gt=0, le=3600)
    """Seconds of rate a caller may save up (the buckets' size)."""

ApiRole = Literal["ingest", "read", "analyst", "admin"]


class ClientIdentitySettings(_Strict):
    """A verified client certificate that stands for a principal (mTLS instead of a bearer token).

    ``subject`` matches the certificate's subject as ``CN=<common name>`` (or the whole RFC 4514
    string, e.g. ``CN=shipper,O=ci``); ``san`` matches one of its DNS, URI or e-mail
    subject alternative names. Set exactly one.
    """

    subject: str | None = None
    san: str | None = None
    name: str = Field(min_length=1, max_length=128)
    role: ApiRole = "read"

    @model_validator(mode="after")
    def _one_selector(self) -> ClientIdentitySettings:
        if (self.subject is None) == (self.san is None):
            raise ValueError("set exactly one of subject or san")
        return self


class TlsSettings(_Strict):
    """HTTPS for the API; the certificate and key are re-read when their files change (rotation)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    """CA bundle that client certificates are verified against (mTLS)."""
    client_certs: Literal["optional", "required"] = "optional"
    """With ``client_ca_file``: ``required`` refuses the handshake without a valid client certificate."""
    client_identities: list[ClientIdentitySettings] = Field(default_factory=list)
    require_client_cert_for: list[ApiRole] = Field(default_factory=list)
    """Roles whose requests must come with a verified client certificate (403 otherwise)."""
    reload_interval_s: float = Field(default=10.0, gt=0)
    """How often the certificate and key files are checked for changes."""

    @model_validator(mode="after")
    def _files(self) -> TlsSettings:
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
        if (self.client_identities or self.require_client_cert_for or self.client_certs == "required") \
                and self.client_ca_file is None:
            raise ValueError("client certificates need client_ca_file")
        return self


class ConsoleSettings(_Strict):
    """The browser console (``service.console``): sign-in sessions and their limits."""

    enabled: bool = True
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0, le=7 * 86_400.0)
    """A session ends this long after sign-in, whatever its use."""
    idle_timeout_s: float = Field(default=3600.0, gt=0, le=7 * 86_400.0)
    """A session unused this long ends."""
    max_sessions: int = Field(default=1000, ge=1, le=100_000)
    sign_in_failures: int = Field(default=5, ge=1, le=1000)
    """Failed sign-ins one client address may make per ``sign_in_window_s``; more are refused (429)."""
    sign_in_window_s: float = Field(default=60.0, gt=0, le=86_400.0)


class ApiSettings(_Strict):
    """The HTTP API. With no ``tokens`` authentication is off (the loopback default)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    tokens: list[TokenSettings] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    """Without tokens: host names (besides loopback names, the bind address and IP addresses) the
    ``Host`` header may carry, so a DNS-rebound page cannot reach the API; ``"*"`` allows any."""
    metrics_public: bool = True
    """Serve ``/metrics`` without a token (Prometheus scrapers rarely carry one)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Limit for every request body except event ingest (see ``http_ingest.max_body_bytes``)."""
    ingest_rate: IngestRateSettings = Field(default_factory=IngestRateSettings)
    docs: bool = True
    rules_test_concurrency: int = Field(default=2, ge=1, le=64)
    """``POST /api/v1/rules/test`` compiling at once; more are refused (429), not queued."""
    rules_test_max_body_bytes: int = Field(default=524_288, ge=1024)
    """Body limit of ``rules/test`` (the largest SigmaHQ rule is about 300 kB)."""
    rules_test_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """A rule test still compiling after this answers 503; its slot stays taken until it ends."""
    tls: TlsSettings | None = None
    """HTTPS (and optional mTLS); ``None`` serves plain HTTP."""
    access_log: Literal["all", "sampled", "off"] = "sampled"
    """``sampled``: every request except ingest (``/api/v1/events``), of which one in
    ``access_log_sample_every`` is logged; ``all``: every request; ``off``: none."""
    access_log_sample_every: int = Field(default=100, ge=1)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    """The browser console at ``/`` (sign-in with a token of ``tokens``)."""

    @model_validator(mode="after")
    def _cert_roles_need_auth(self) -> ApiSettings:
        if self.tls is not None and self.tls.require_client_cert_for and not self.tokens \
                and not self.tls.client_identities:
            raise ValueError("tls.require_client_cert_for needs tokens or tls.client_identities "
                             "(with authentication off every caller is admin)")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> ApiSettings:
        names = [t.name for t in self.tokens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"token names must be unique: {dupes}")
        values = [t.token.get_secret_value() for t in self.tokens if t.token is not None]
        if len(set(values)) != len(values):  # one secret must mean one name and one role
            raise ValueError("two tokens have the same value; give each name its own token")
        return self


FieldNames = Literal["insensitive", "sensitive"]
"""``rules.field_names``: whether Sigma rule field names match event keys in any case."""


class RulesSettings(_Strict):
    """Where rules come from and how reloads behave."""

    paths: list[Path] = Field(default_factory=list)
    """Rule files or directories; empty means the project's ``sigma-rules/``."""
    pipelines: list[Path] = Field(default_factory=list)
    skip_invalid: bool = False
    """False: a (re)load with any rule error is rejected as a whole; True: bad rules are left out."""
    watch: bool = True
    watch_interval_s: float = Field(default=2.0, gt=0)
    regex_timeout_ms: float = Field(default=50.0, gt=0, le=10_000)
    """Time budget of one evaluation of a ``|re`` pattern RE2 cannot run; running out counts as a match."""
    field_names: FieldNames = "insensitive"
    """How a rule's field names meet event keys: ``insensitive`` (``User`` matches ``user``) or
    ``sensitive`` (spelled exactly, as Elasticsearch, Splunk and pySigma's backends compare them);
    see ``docs/semantics.md``, "Field names"."""
    cache_dir: Path | None = None
    """Keep compiled rulesets here (private files, keyed by a hash of the rules, pipelines, engine and
    options) and start from them while nothing changed; None: compile at every start (see
    ``service.rules_cache``)."""

    def resolved_paths(self) -> list[Path]:
        if self.paths:
            return list(self.paths)
        from service.rules import default_rules_dir

        return [default_rules_dir()]


class EventSettings(_Strict):
    """How events are read, whatever the input."""

    timestamp_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_TIME_FIELDS))
    """Dotted fields tried in order for the event time (ISO 8601, epoch seconds or milliseconds)."""
    max_depth: int = Field(default=64, ge=1, le=1000)
    max_event_bytes: int = Field(default=1_048_576, ge=64)
    screen: bool = True
    """Clear JSON events no rule can match with the native screen (``detectors._native``) before
    decoding, on every input; off, or without the native module, every event is decoded in Python."""


class CorrelationSettings(_Strict):
    enabled: bool | None = None
    """``None``: on whenever the ruleset has correlation rules."""
    max_keys: int = Field(default=100_000, ge=1)
    """Group keys per correlation before the least recently updated one is evicted."""
    allowed_lateness: float = Field(default=5.0, ge=0, le=86_400)
    """Seconds of event-time disorder absorbed before an event counts as late (several interleaved
    Kafka topics or partitions read from a backlog are never in exact event-time order)."""


class AnomalySettings(_Strict):
    checks: list[Path] = Field(default_factory=list)


class StateSettings(_Strict):
    """Snapshots of the stateful detectors (correlation, anomaly) under ``<data_dir>/state``."""

    snapshot_interval_s: float = Field(default=60.0, gt=0)
    """How often each scope (Kafka partition, or the local inputs) is snapshotted; also at shutdown."""
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    """How often idle scopes let event time run on (silence checks, deferred windows)."""
    scope: Literal["partition", "instance", "keyed"] = "partition"
    """Whose events share correlation/anomaly state. ``partition``: one engine pair per Kafka
    partition, snapshotted with its offset and moved with it on rebalance. ``instance``: every
    Kafka partition uses the ``local`` scope (one engine pair for the whole instance), so
    correlations can join events of different topics; see docs/scaling.md for its rebalance
    and crash behaviour. ``keyed``: Kafka events that feed a correlation or an anomaly check are re-keyed
    through ``keyed_topic`` to a second consumer (stage 2) that owns each group key (docs/scaling.md)."""
    keyed_topic: str = Field(default="", max_length=249)
    """``keyed``: the internal topic of state records (create it with as many partitions as stage-2
    instances you may run, replication >= 3; see docs/scaling.md). Empty (the default):
    ``<kafka.group_id>-keyed-state``, so two deployments never mix each other's state records."""
    keyed_partitions: int | None = Field(default=None, ge=1, le=10_000)
    """``keyed``: create ``keyed_topic`` with this many partitions at start if it does not exist."""
    keyed_group_suffix: str = Field(default="-keyed", min_length=1, max_length=100)
    """``keyed``: stage 2's consumer group is ``kafka.group_id`` plus this suffix."""
    keyed_watermark_interval_s: float = Field(default=1.0, gt=0)
    """``keyed``: how often stage 1 sends its watermark to every partition of ``keyed_topic``."""
    keyed_role: Literal["both", "stage1", "stage2"] = "both"
    """``keyed``: the stages this instance runs. ``both``: stage 1 (the input topics) and stage 2 (the
    internal topic); ``stage1``: the input topics only, no stage-2 consumer; ``stage2``: the internal
    topic only, no input consumer (stateful work on instances of its own; docs/scaling.md)."""

    snapshots: Literal["local", "kafka"] = "local"
    """Where the snapshots of Kafka partitions' state go. ``local``: ``<data_dir>/state`` (on a shared
    volume the state follows a partition to its next owner; on a per-instance volume it does not).
    ``kafka``: the compacted topic ``changelog_topic``, so the state follows a partition to any instance
    of the group without shared storage (docs/scaling.md); the local scope stays in ``data_dir``."""
    changelog_topic: str = Field(default="", max_length=249)
    """``snapshots: kafka``: the compacted changelog topic. Empty (the default):
    ``<kafka.group_id>-state-changelog``."""
    changelog_partitions: int = Field(default=6, ge=1, le=10_000)
    """``snapshots: kafka``: partitions to create ``changelog_topic`` with when it does not exist. A takeover
    reads one partition of it, so more partitions make takeovers shorter. Keep the count of an existing
    topic: with another count a partition's state is looked up elsewhere and it starts empty."""

    @model_validator(mode="after")
    def _role_needs_keyed_scope(self) -> StateSettings:
        if self.keyed_role != "both" and self.scope != "keyed":
            raise ValueError(f"keyed_role {self.keyed_role!r} splits the two stages of scope keyed; with scope "
                             f"{self.scope!r} there is one stage: leave keyed_role at both or set scope: keyed")
        return self


class AuditSettings(_Strict):
    """The audit trail of state-changing API actions, sign-in failures and reloads."""

    enabled: bool = True
    retention_days: float = Field(default=90.0, gt=0)
    prune_interval_s: float = Field(default=3600.0, gt=0)


class Settings(BaseSettings):
    """Everything pipesentry reads at start."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      frozen=True, case_sensitive=False, hide_input_in_errors=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    data_dir: Path = Path("pipesentry-data")
    kafka: KafkaSettings | None = None
    http_ingest: HttpIngestSettings = Field(default_factory=HttpIngestSettings)
    stdin: StdinSettings = Field(default_factory=StdinSettings)
    files: list[FileInputSettings] = Field(default_factory=list)
    events: EventSettings = Field(default_factory=EventSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)
    state: StateSettings = Field(default_factory=StateSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    """Secrets in alerts, pages, dead letters and logs are replaced by markers (on by default)."""
    audit: AuditSettings = Field(default_factory=AuditSettings)
    hunt: HuntSettings = Field(default_factory=HuntSettings)
    """``pipesentry hunt`` and ``POST /api/v1/hunts``: the search cluster and its index per log source."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _alert_links_follow_api(self) -> Settings:
        """Unset ``alerting.alert_base_url``: pages link to this instance's API address."""
        if self.alerting.alert_base_url is None:
            object.__setattr__(self, "alerting", self.alerting.model_copy(
                update={"alert_base_url": api_base_url(self.api)}))
        return self

    @model_validator(mode="after")
    def _kafka_reads_topics(self) -> Settings:
        """The input needs topics, except on a ``stage2`` instance, which reads only the internal topic."""
        kafka = self.kafka
        stage2_only = self.state.scope == "keyed" and self.state.keyed_role == "stage2"
        if kafka is not None and not kafka.topics and not kafka.topic_pattern and not stage2_only:
            raise ValueError("kafka: set at least one of topics or topic_pattern")
        return self

    @model_validator(mode="after")
    def _changelog_needs_kafka(self) -> Settings:
        """``state.snapshots: kafka`` keeps snapshots in a topic of the input's cluster; unset topic: one per group."""
        state, kafka = self.state, self.kafka
        if state.snapshots != "kafka":
            return self
        if kafka is None:
            raise ValueError("state.snapshots kafka keeps snapshots in a Kafka topic: configure the kafka input "
                             "or set state.snapshots: local")
        topic = state.changelog_topic or f"{kafka.group_id}-state-changelog"
        if topic in kafka.topics or topic in (kafka.dead_letter_topic, state.keyed_topic) or (
                kafka.topic_pattern and re.match(kafka.topic_pattern, topic)):
            raise ValueError(f"state.changelog_topic {topic!r} must not be an input, dead-letter or internal topic")
        object.__setattr__(self, "state", state.model_copy(update={"changelog_topic": topic}))
        return self

    @model_validator(mode="after")
    def _keyed_topic_follows_group(self) -> Settings:
        """Unset ``state.keyed_topic``: one internal topic per consumer group."""
        if not self.state.keyed_topic and self.kafka is not None:
            object.__setattr__(self, "state", self.state.model_copy(
                update={"keyed_topic": f"{self.kafka.group_id}-keyed-state"}))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init values; the environment must win over it.
        return env_settings, init_settings


def api_base_url(api: ApiSettings) -> str:
    """The URL the API serves at, as a client on this host reaches it: ``http(s)://host:port``
    (a wildcard bind address becomes ``localhost``; IPv6 literals get brackets)."""
    host = api.host
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if api.tls is not None else "http"
    return f"{scheme}://{host}:{api.port}"


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}): {exc.error_count()} error(s)"]
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path``; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8: {exc.reason}") from None
    try:
        data = load_one(text, limits=CONFIG_YAML_LIMITS)
    except YamlError as exc:  # names line and column, never the line's text (it may hold a secret)
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


_CREDENTIAL_KEY = re.compile(r"(?i)token|key|secret|password|passwd|credential|auth|webhook|dsn|url")
"""Config keys whose ``${VAR}`` values are registered with the log redactor even when the field is a
plain string (a URL with a token in it, a header); ``SecretStr`` fields are registered anyway."""


def load_settings(path: Path | str | None = None, *, overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``path`` (optional) and the environment; raises :class:`ConfigError`.

    ``${VAR}`` references in the file's values are expanded first (:mod:`service.config_env`);
    ``overrides`` (for example CLI flags, dotted keys) are merged over the file;
    the environment still wins over both.
    """
    data: dict[str, Any] = read_yaml(Path(path)) if path is not None else {}
    origin = str(path) if path is not None else "defaults and environment"
    try:
        data, expanded = expand_env(data, os.environ if environ is None else environ)
    except ConfigEnvError as exc:
        raise ConfigError(f"invalid configuration ({origin}): {exc}") from None
    register_secrets(*(value for key, value in expanded if _CREDENTIAL_KEY.search(key.rsplit(".", 1)[-1])))
    odd = [key for key in data if not isinstance(key, str)]
    if odd:  # Settings(**data) would raise TypeError; name the type, not the value
        raise ConfigError(f"invalid configuration ({origin}): top-level keys must be strings, "
                          f"found a {type(odd[0]).__name__} key")
    for dotted, value in (overrides or {}).items():
        target = data
        *parents, leaf = dotted.split(".")
        for depth, part in enumerate(parents, 1):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"invalid configuration ({origin}): cannot set {dotted}: "
                                  f"{'.'.join(parents[:depth])} is not a mapping")
        target[leaf] = value
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def describe(settings: Settings) -> dict[str, Any]:
    """A JSON-safe summary for logs and ``config check``; secrets show as ``**********``."""
    return settings.model_dump(mode="json")
