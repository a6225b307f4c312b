"""Pure detection logic: Sigma compile and evaluate, correlation, anomaly checks, alert model.

Nothing in this package performs I/O, reads the wall clock or imports the
service layer; time is always passed in as an argument.
"""

from detectors.model import LEVELS, Event, LogSource, Match, Origin, RuleInfo, level_rank

__all__ = ["LEVELS", "Event", "LogSource", "Match", "Origin", "RuleInfo", "level_rank"]
