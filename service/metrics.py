"""Every Prometheus metric pipesentry exports, defined once.

Labels only ever carry bounded values: configured source, sink and receiver
names, rule ids of the loaded ruleset, Sigma levels, fixed reason words and
Kafka topic/partition pairs of the subscription. Never event content.
Dashboards and alerting rules in ``deploy/`` refer to these names; a test
checks that every metric they query exists here.

The registry also carries the standard ``process_*`` (CPU, memory, file
descriptors) and ``python_*`` (interpreter, garbage collector) series, and
``pipesentry_build_info``. No ``*_created`` series are exported: they double
the series count and no dashboard or rule uses them.
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# process-wide in prometheus_client, read when a metric is collected
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- ingest -----------------------------------------------------------------
EVENTS = Counter("pipesentry_events", "Events read (decoded and evaluated, or cleared by the native screen), "
                 "by source.", ["source"], registry=REGISTRY)
EVENTS_SCREENED = Counter(
    "pipesentry_events_screened", "Events the native screen cleared without decoding (no rule can "
    "match them), by input; counted in pipesentry_events_total too.", ["source"], registry=REGISTRY)
MESSAGES_REJECTED = Counter(
    "pipesentry_messages_rejected",
    "Messages that could not become events (reason: decode, oversize, utf8, depth, not_object, ...).",
    ["source", "reason"], registry=REGISTRY)
DEAD_LETTERS = Counter("pipesentry_dead_letters", "Messages written to the dead-letter destination.",
                       ["source"], registry=REGISTRY)
DEAD_LETTER_FAILURES = Counter("pipesentry_dead_letter_failures",
                               "Dead-letter writes that failed (the message is retried, not committed).",
                               ["source"], registry=REGISTRY)
HTTP_REJECTED = Counter("pipesentry_http_requests_rejected",
                        "API requests refused (reason: unauthenticated, expired, forbidden, too_large; for event "
                        "ingest also invalid: a body with no usable event, unsupported_media_type: a content "
                        "type or encoding it does not read).", ["reason"], registry=REGISTRY)
API_INVALID_REQUESTS = Counter(
    "pipesentry_api_invalid_requests",
    "API requests answered 422 because a query parameter or JSON body failed validation, by route template "
    "(/api/v1/alerts, /api/v1/rules/{rule_id}, ...); not counted in pipesentry_http_requests_rejected_total.",
    ["route"], registry=REGISTRY)

# --- kafka ------------------------------------------------------------------
KAFKA_PARTITIONS_ASSIGNED = Gauge("pipesentry_kafka_partitions_assigned",
                                  "Partitions currently assigned to this instance, by consumer (input: the "
                                  "input topics; keyed: stage 2 of state.scope keyed, the internal topic).",
                                  ["consumer"], registry=REGISTRY)
KAFKA_CONSUMER_LAG = Gauge("pipesentry_kafka_consumer_lag", "Messages behind the partition's high watermark.",
                           ["topic", "partition"], registry=REGISTRY)
KAFKA_COMMITS = Counter("pipesentry_kafka_commits", "Offset commits by result (ok, failed).", ["result"],
                        registry=REGISTRY)
KAFKA_PAUSED_PARTITIONS = Gauge("pipesentry_kafka_paused_partitions",
                                "Partitions paused by backpressure, by consumer (input, keyed).", ["consumer"],
                                registry=REGISTRY)
KAFKA_CONNECT_ERRORS = Counter("pipesentry_kafka_connect_errors",
                               "Failed attempts to reach the Kafka cluster.", registry=REGISTRY)
KAFKA_PRODUCER_REPLACEMENTS = Counter(
    "pipesentry_kafka_producer_replacements",
    "Kafka producers dropped because they could never send again (fenced, out-of-order sequence, unknown "
    "producer id, sender stopped) and built anew, by producer: keyed (stage 1's state records), keyed_chain "
    "(stage 2's chained records), sink:<name> (a kafka alert sink).", ["producer"], registry=REGISTRY)

# --- detection --------------------------------------------------------------
DETECTION_LATENCY = Histogram("pipesentry_detection_latency_seconds",
                              "Time from receiving an event to its alerts being handed to the router.",
                              buckets=_LATENCY_BUCKETS, registry=REGISTRY)
EVENTS_SKIPPED = Counter("pipesentry_detector_skips",
                         "Events a stateful detector skipped (detector: correlation, anomaly; reason).",
                         ["detector", "reason"], registry=REGISTRY)
ANOMALY_LEARNING = Gauge("pipesentry_anomaly_check_learning",
                         "1 while an anomaly check is still learning its baseline.", ["check"],
                         registry=REGISTRY)
STATE_KEYS = Gauge("pipesentry_state_keys", "Keys held by stateful detectors.", ["detector"],
                   registry=REGISTRY)
STATE_EVICTIONS = Counter("pipesentry_state_evictions", "Keys evicted by state caps.", ["detector"],
                          registry=REGISTRY)

# --- rules ------------------------------------------------------------------
RULES_LOADED = Gauge("pipesentry_rules_loaded", "Rules in the active ruleset, by kind.", ["kind"],
                     registry=REGISTRY)
RULE_ERRORS = Gauge("pipesentry_rule_errors", "Rules that failed to load in the last (re)load.",
                    registry=REGISTRY)
RELOADS = Counter("pipesentry_rule_reloads", "Ruleset reloads by result (ok, rejected, failed).", ["result"],
                  registry=REGISTRY)
LAST_RELOAD = Gauge("pipesentry_last_reload_timestamp_seconds", "Unix time of the last reload attempt.",
                    registry=REGISTRY)
LAST_RELOAD_SUCCESS = Gauge("pipesentry_last_reload_success",
                            "1 if the last (re)load succeeded, the initial load included; 0 while the last "
                            "reload attempt is rejected or failed.", registry=REGISTRY)

# --- alerts -----------------------------------------------------------------
ALERTS = Counter("pipesentry_alerts", "Alerts produced, by rule and level.", ["rule_id", "level"],
                 registry=REGISTRY)
ALERTS_SUPPRESSED = Counter("pipesentry_alerts_suppressed",
                            "Alerts not sent on (reason: window, silence, rate_limit, min_level).",
                            ["reason"], registry=REGISTRY)
SINK_DELIVERIES = Counter("pipesentry_sink_deliveries", "Alerts delivered, by sink.", ["sink"],
                          registry=REGISTRY)
SINK_FAILURES = Counter("pipesentry_sink_failures", "Failed delivery attempts, by sink.", ["sink"],
                        registry=REGISTRY)
SINK_LATENCY = Histogram("pipesentry_sink_latency_seconds", "Time of one delivery call, by sink.", ["sink"],
                         buckets=_LATENCY_BUCKETS, registry=REGISTRY)
SINK_UP = Gauge("pipesentry_sink_up", "1 when the sink's last delivery succeeded (circuit closed).", ["sink"],
                registry=REGISTRY)
SPOOL_RECORDS = Gauge("pipesentry_spool_records", "Alerts waiting in a sink's on-disk spool.", ["sink"],
                      registry=REGISTRY)
SPOOL_BYTES = Gauge("pipesentry_spool_bytes", "Bytes in a sink's on-disk spool.", ["sink"], registry=REGISTRY)
SPOOL_CORRUPT = Counter("pipesentry_spool_corrupt_records", "Spool records skipped as corrupt.", ["sink"],
                        registry=REGISTRY)

# --- supervision, spool and store faults ------------------------------------
TASK_UP = Gauge("pipesentry_task_up", "1 while a supervised background task runs (0: crashed, waiting to "
                "restart, or stopped).", ["task"], registry=REGISTRY)
TASK_RESTARTS = Counter("pipesentry_task_restarts", "Crashes of a supervised background task (each is "
                        "logged and restarted with backoff).", ["task"], registry=REGISTRY)
SPOOL_CORRUPT_BYTES = Counter("pipesentry_spool_corrupt_bytes", "Spool bytes skipped while resynchronising "
                              "past corrupt or torn frames.", ["sink"], registry=REGISTRY)
SPOOL_ERRORS = Counter("pipesentry_spool_errors", "Spool disk errors (op: append, fsync, cursor, read, "
                       "dead_letter).", ["sink", "op"], registry=REGISTRY)
STORE_ERRORS = Counter("pipesentry_store_errors", "Alert store (SQLite) errors (reason: full, corrupt, io, "
                       "other).", ["reason"], registry=REGISTRY)
STORE_RECOVERIES = Counter("pipesentry_store_recoveries", "Corrupt alert databases moved aside and replaced "
                           "by a fresh one.", registry=REGISTRY)

# --- regex ------------------------------------------------------------------
REGEX_TIMEOUTS = Counter("pipesentry_regex_timeouts",
                         "Evaluations of a backtracking (non-RE2) |re pattern that ran out of their time "
                         "budget (rules.regex_timeout_ms); each counts as a match.", registry=REGISTRY)

# --- per-partition detector state (service.partition_state) -------------------
PARTITION_STATE_TAKEOVERS = Counter(
    "pipesentry_partition_state_takeovers",
    "Assigned partitions by how their detector state started (restored, none, stale: saved by another "
    "owner than the committed offset's, ahead: past the committed offset, error: could not be read).",
    ["outcome"], registry=REGISTRY)
PARTITION_STATE_SAVES = Counter("pipesentry_partition_state_saves",
                                "Partition state snapshots written, by result (ok, failed).", ["result"],
                                registry=REGISTRY)
STATE_CHANGELOG_UNREADABLE = Counter("pipesentry_state_changelog_unreadable",
                                     "Snapshots in the state changelog topic that could not be assembled (chunks "
                                     "missing, size or digest wrong, not JSON): the partition started empty.",
                                     registry=REGISTRY)
PARTITION_STATE_COMMITS_HELD = Counter(
    "pipesentry_partition_state_commits_held",
    "Offset commits of a partition held back because its base state could not be saved yet.",
    registry=REGISTRY)

RULES_TEST_REJECTED = Counter("pipesentry_rules_test_rejected",
                              "POST /api/v1/rules/test refused: busy (429), timeout (503) or "
                              "invalid rule (422).", ["reason"], registry=REGISTRY)

HUNTS = Counter("pipesentry_hunts", "Hunts run through POST /api/v1/hunts by result: done or failed.",
                ["result"], registry=REGISTRY)
HUNT_HITS = Counter("pipesentry_hunt_hits", "Search hits turned into alerts by API hunts.", registry=REGISTRY)

# --- redaction of secrets (service.redaction) -----------------------------------
REDACTIONS = Counter("pipesentry_redactions", "Secrets replaced by a redaction marker in alerts, pages, dead "
                     "letters and log lines, by kind (aws-access-key-id, github-token, password, secret-field, ...).",
                     ["kind"], registry=REGISTRY)

# --- API roles, cross-site guard, ingest rate limits (service.api) -------------
HTTP_CROSS_SITE_REFUSED = Counter(
    "pipesentry_http_cross_site_refused",
    "Requests refused (403) in no-token mode as possibly cross-site (reason: host, origin, content_type).",
    ["reason"], registry=REGISTRY)
HTTP_RATE_LIMITED = Counter(
    "pipesentry_http_rate_limited",
    "POST /api/v1/events refused (429) by the caller's rate limit, by token name (never the token).",
    ["token"], registry=REGISTRY)

# --- API security: TLS, audit trail, ingest accounting (service.api.tls, service.audit) ---------
API_TLS_RELOADS = Counter("pipesentry_api_tls_reloads", "API certificate/key reloads after the files changed, "
                          "by result (ok; failed: the previous pair stays in use).", ["result"], registry=REGISTRY)
API_TLS_CERT_EXPIRY = Gauge("pipesentry_api_tls_certificate_expiry_timestamp_seconds",
                            "Unix time the API's loaded certificate expires.", registry=REGISTRY)
AUDIT_ENTRIES = Counter("pipesentry_audit_entries", "Audit trail entries by action (a fixed word such as "
                        "silence.create, auth.denied) and outcome (ok, rejected, denied, failed).",
                        ["action", "outcome"], registry=REGISTRY)
AUDIT_WRITE_FAILURES = Counter("pipesentry_audit_write_failures", "Audit entries the local store could not "
                               "keep (the audit log line was still written).", registry=REGISTRY)
AUDIT_PRUNED = Counter("pipesentry_audit_pruned", "Audit entries deleted past audit.retention_days.",
                       registry=REGISTRY)
API_INGEST_REQUESTS = Counter("pipesentry_api_ingest_requests", "POST /api/v1/events requests (not in the "
                              "audit trail), by the caller's configured name and outcome.",
                              ["principal", "outcome"], registry=REGISTRY)

# --- build ----------------------------------------------------------------------
BUILD_INFO = Gauge("pipesentry_build_info", "Always 1; the labels say which pipesentry runs: version, Python "
                   "version and whether the native screen is loaded (true, false).",
                   ["version", "python", "native_screen"], registry=REGISTRY)


def package_version() -> str:
    try:
        return metadata.version("pipesentry")
    except metadata.PackageNotFoundError:
        return "unknown"


def record_build_info(native_screen: bool) -> None:
    """Set ``pipesentry_build_info`` (one series: a previous one is removed)."""
    BUILD_INFO.clear()
    BUILD_INFO.labels(package_version(), platform.python_version(), "true" if native_screen else "false").set(1)


# --- alert triage (service.alerting.triage_api) ---------------------------------------
ALERT_DISPOSITIONS = Counter("pipesentry_alert_dispositions", "Alerts resolved (or reclassified) by analysts, by "
                             "rule id (at most 1000 distinct, then other) and disposition (true_positive, "
                             "false_positive, benign).", ["rule_id", "disposition"], registry=REGISTRY)

# --- state.scope: keyed (service.keyed) ----------------------------------------------------
KEYED_STATE_RECORDS = Counter("pipesentry_keyed_state_records", "Records of the keyed scope's internal topic, by "
                              "kind: sent (stage 1 state records), watermark (stage 1 watermark records), "
                              "applied, duplicate, late, unreadable, overflow (applied early: buffer full), unknown (its anomaly "
                              "check is gone) (stage 2).", ["kind"], registry=REGISTRY)
KEYED_WATERMARK_LAG = Gauge("pipesentry_keyed_watermark_lag_seconds", "Stage 2: the newest event time received "
                            "minus the released watermark, largest over the internal partitions this instance owns.",
                            registry=REGISTRY)
