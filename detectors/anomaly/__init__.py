"""Stateful anomaly checks: volume, silence, metric, new_value, cardinality, threshold, ratio.

Pure (no I/O, no clock): time is the ``ts`` argument or an event field. See
``docs/anomaly.md`` for each check's model, parameters and YAML schema.

    specs, errors = parse_checks(yaml_text, source="checks.yml")
    engine = AnomalyEngine(specs)
    engine.process(event, ts, logsource) -> list[Match]
    engine.advance(ts) -> list[Match]
"""

from detectors.anomaly.engine import AnomalyEngine
from detectors.anomaly.spec import CHECK_TYPES, CheckCommon, CheckError, parse_checks
from detectors.anomaly.timeutil import parse_duration

__all__ = ["CHECK_TYPES", "AnomalyEngine", "CheckCommon", "CheckError", "parse_checks", "parse_duration"]
