"""Validated schema of anomaly check files (YAML beside the rules).

Why: checks are configuration written by people; every field is typed,
unknown fields are refused (``extra="forbid"``) and every error names the
offending key, so a typo cannot silently disable a check.

A check file holds one check per YAML document, a list of checks, or a mapping
``{checks: [...]}``. Each check has a ``type`` (volume, silence, metric,
new_value, cardinality, threshold, ratio); the fields shared by all types are
in :class:`CheckCommon`. See ``docs/anomaly.md`` for the meaning of each field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from detectors.anomaly.timeutil import parse_duration
from detectors.model import LEVELS, LogSource
from detectors.yamlsafe import YamlError, YamlLimits, load_documents

Duration = Annotated[float, BeforeValidator(parse_duration)]
Direction = Literal["both", "up", "down"]
Level = Literal["informational", "low", "medium", "high", "critical"]
assert set(LEVELS) == {"informational", "low", "medium", "high", "critical"}

DAY = 86400.0
WEEK = 7 * DAY


class LogSourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    product: str | None = None
    category: str | None = None
    service: str | None = None

    def to_logsource(self) -> LogSource:
        return LogSource(self.product, self.category, self.service)


class CheckCommon(BaseModel):
    """Fields every check has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/-]+$")
    title: str = ""
    description: str = ""
    level: Level = "medium"
    author: str = "unknown"
    tags: tuple[str, ...] = ()
    logsource: LogSourceSpec = LogSourceSpec()
    by: tuple[str, ...] = ()
    """Key fields; ``_source`` stands for the event's log source. Empty: one key for all events."""
    timestamp_field: str | None = None
    """Event time field; without it the ``ts`` passed to the engine is the event time."""
    allowed_lateness: Duration = 60.0
    max_future: Duration = 3600.0
    learning: Duration | None = None
    """Learning period; ``None`` takes the type's default (see ``default_learning``)."""
    max_keys: int | None = Field(default=None, ge=1)
    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """The file the check came from (set by :func:`parse_checks`)."""
        return self._source

    def default_learning(self) -> float:
        return 0.0

    @property
    def learning_s(self) -> float:
        return self.learning if self.learning is not None else self.default_learning()

    def fingerprint(self) -> str:
        """Changes whenever the check's configuration changes (restored state is then dropped)."""
        return hashlib.sha256(orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class VolumeSpec(CheckCommon):
    type: Literal["volume"]
    interval: Duration = 600.0
    seasonality: tuple[Literal["daily", "weekly"], ...] = ("daily", "weekly")
    utc_offset_hours: float = Field(default=0.0, ge=-14, le=14)
    threshold: float = Field(default=4.0, gt=0)
    cusum: float | None = Field(default=5.0, gt=0)
    cusum_slack: float = Field(default=1.0, ge=0)
    direction: Direction = "both"
    min_count: int = Field(default=10, ge=0)
    adapt: Duration = 2 * DAY
    """Half-life of the level; seasonal factors adapt over ``adapt`` x 3."""

    def default_learning(self) -> float:
        # weekly: every weekday seen twice before alerting (the first week's factors are rough)
        return 2 * WEEK if "weekly" in self.seasonality else (DAY if self.seasonality else 6 * 3600.0)

    @model_validator(mode="after")
    def _check_interval(self) -> VolumeSpec:
        if self.interval < 1 or (self.seasonality and (3600 % self.interval and self.interval % 3600)):
            raise ValueError("interval must be >= 1s and divide an hour (or be whole hours) with seasonality")
        return self


class SilenceSpec(CheckCommon):
    type: Literal["silence"]
    timeout: Duration
    min_events: int = Field(default=3, ge=1)
    recovery: bool = True


class MetricSpec(CheckCommon):
    type: Literal["metric"]
    field: str = Field(min_length=1)
    model: Literal["ewma", "median_mad"] = "ewma"
    aggregate: Literal["mean", "sum", "max", "min", "count"] | None = None
    window: Duration = 300.0
    probability: float = Field(default=1e-4, gt=0, lt=0.5)
    """Alert when the key's two-sided tail probability of the score is at most this (calibrated)."""
    threshold: float | None = Field(default=None, gt=0)
    """A fixed ``|z|`` instead of ``probability`` (uncalibrated, the rule before calibration)."""
    tail_half_life: Duration = Field(default=7 * DAY, gt=0)
    """Event time after which an old score weighs half in the key's tail estimate."""
    cusum: float | None = Field(default=5.0, gt=0)
    cusum_slack: float = Field(default=1.0, ge=0)
    direction: Direction = "both"
    transform: Literal["none", "log"] = "none"
    min_samples: int = Field(default=30, ge=2)
    """Values (or windows) a key must have scored since it started learning, besides ``learn_for``."""
    half_life: Duration = Field(default=6 * 3600.0, gt=0)
    """Event time after which an old value weighs half as much as a new one (ewma model)."""
    learn_for: Duration = DAY
    """Event time a key learns (from its first value, or from its restart after a gap) before alerting."""
    max_gap: Duration | None = Field(default=None, gt=0)
    """A key without values for longer restarts learning; ``None``: four half-lives."""
    seasonality: tuple[Literal["hourly", "daily", "weekly"], ...] = ("hourly", "daily")
    """Additive profiles learnt per key (see ``detectors.anomaly.seasons``); ``[]`` for none."""
    season_half_life: Duration = Field(default=7 * DAY, gt=0)
    """Event time after which an old value weighs half in a profile slot."""
    window_values: int = Field(default=64, ge=8, le=4096)
    """Values kept per key by the median_mad model."""
    min_scale: float = Field(default=0.0, ge=0)
    """Floor of the band half-width unit (avoids alerts on near-constant series)."""

    def default_learning(self) -> float:
        return 3600.0

    @property
    def max_gap_s(self) -> float:
        return self.max_gap if self.max_gap is not None else 4 * self.half_life

    @model_validator(mode="before")
    @classmethod
    def _sample_halflife(cls, data: Any) -> Any:
        """``halflife`` (samples, before durations) converts exactly only when a sample is a window."""
        if not isinstance(data, dict) or "halflife" not in data:
            return data
        data = dict(data)
        samples = data.pop("halflife")
        if "half_life" in data:
            raise ValueError("halflife: set half_life only (halflife counted samples and is replaced)")
        if data.get("aggregate") is None or isinstance(samples, bool) or not isinstance(samples, int | float):
            raise ValueError("halflife: replaced by half_life, a duration (e.g. 6h); a number of values "
                             "has no fixed length in time")
        data["half_life"] = float(samples) * parse_duration(data.get("window", 300.0))
        return data


class NewValueSpec(CheckCommon):
    type: Literal["new_value"]
    fields: tuple[str, ...] = Field(min_length=1)
    key_learning: bool = True
    """Keys first seen after the check's learning period get their own learning period."""
    capacity: int = Field(default=1_000_000, ge=100)
    fp_rate: float = Field(default=1e-4, gt=0, lt=0.1)

    def default_learning(self) -> float:
        return WEEK


class CardinalitySpec(CheckCommon):
    type: Literal["cardinality"]
    field: str = Field(min_length=1)
    window: Duration = 3600.0
    max_distinct: int | None = Field(default=None, ge=1)
    baseline: bool = False
    threshold: float = Field(default=4.0, gt=0)
    min_distinct: int = Field(default=10, ge=0)
    precision: int = Field(default=12, ge=4, le=16)
    exact_limit: int = Field(default=64, ge=0, le=100_000)
    halflife: int = Field(default=48, ge=2)

    def default_learning(self) -> float:
        return DAY if self.baseline else 0.0

    @model_validator(mode="after")
    def _need_bound(self) -> CardinalitySpec:
        if self.max_distinct is None and not self.baseline:
            raise ValueError("set max_distinct, baseline: true, or both")
        return self


class ThresholdSpec(CheckCommon):
    type: Literal["threshold"]
    selection: dict[str, Any] | list[Any] | None = None
    count: int = Field(ge=1, le=100_000)
    window: Duration


class RatioSpec(CheckCommon):
    type: Literal["ratio"]
    selection: dict[str, Any] | list[Any]
    max_ratio: float = Field(gt=0, le=1)
    window: Duration = 3600.0
    slices: int = Field(default=4, ge=1, le=60)
    """The window hops by ``window / slices`` (1: tumbling windows)."""
    min_count: int = Field(default=20, ge=1)


CheckSpec = Annotated[
    VolumeSpec | SilenceSpec | MetricSpec | NewValueSpec | CardinalitySpec | ThresholdSpec | RatioSpec,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(CheckSpec)
CHECK_TYPES = ("volume", "silence", "metric", "new_value", "cardinality", "threshold", "ratio")


@dataclass(frozen=True, slots=True)
class CheckError:
    """A check that could not be loaded: where, which check, why (naming the bad key)."""

    source: str
    check_id: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.check_id or '<no id>'}: {self.reason}"


def _format_validation(exc: ValidationError, check_type: Any) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == check_type:
            loc = loc[1:]  # the discriminator tag is not a key the user wrote
        where = ".".join(loc) or "check"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


CHECK_YAML_LIMITS = YamlLimits(max_bytes=1 << 20, max_depth=32, max_nodes=50_000)
"""Bounds on one check file's YAML (aliases expanded); see ``detectors.yamlsafe``."""


def _documents(yaml_text: str, source: str, errors: list[CheckError]) -> list[Any]:
    """The checks of every document; a document that does not load is one error, the rest still do."""
    items: list[Any] = []
    for loaded in load_documents(yaml_text, limits=CHECK_YAML_LIMITS):
        doc = loaded.value
        if loaded.error is not None:
            errors.append(CheckError(source, None, f"invalid YAML: {loaded.error}"))
            continue
        if doc is None:
            continue
        if isinstance(doc, list):
            items.extend(doc)
        elif isinstance(doc, dict) and "checks" in doc and "type" not in doc:
            if set(doc) != {"checks"} or not isinstance(doc["checks"], list):
                errors.append(CheckError(source, None, f"document {loaded.number}: a mapping with 'checks' "
                                                       "must hold only a list under 'checks'"))
                continue
            items.extend(doc["checks"])
        else:
            items.append(doc)
    return items


def parse_checks(yaml_text: str, source: str = "checks.yml") -> tuple[list[CheckCommon], list[CheckError]]:
    """Valid checks and one error per invalid check (valid ones load regardless)."""
    errors: list[CheckError] = []
    try:
        items = _documents(yaml_text, source, errors)
    except YamlError as exc:
        return [], [CheckError(source, None, f"not a check file: {exc}")]
    specs: list[CheckCommon] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(CheckError(source, None, f"check #{index + 1} is a {type(item).__name__}, not a mapping"))
            continue
        check_id = item.get("id") if isinstance(item.get("id"), str) else None
        check_type = item.get("type")
        if check_type not in CHECK_TYPES:
            errors.append(CheckError(source, check_id,
                                     f"type: {check_type!r} is not one of {', '.join(CHECK_TYPES)}"))
            continue
        try:
            spec: CheckCommon = _ADAPTER.validate_python(item)
        except ValidationError as exc:
            errors.append(CheckError(source, check_id, _format_validation(exc, check_type)))
            continue
        except Exception as exc:  # a validator tripping on an odd value must not stop the other checks
            errors.append(CheckError(source, check_id, f"invalid check: {type(exc).__name__}"))
            continue
        if spec.id in seen:
            errors.append(CheckError(source, spec.id, "id: duplicate check id"))
            continue
        seen.add(spec.id)
        spec._source = source
        specs.append(spec)
    return specs, errors
