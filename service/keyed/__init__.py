"""``state.scope: keyed``: stateful detection re-keyed through an internal Kafka topic (docs/scaling.md).

:mod:`service.keyed.records` owns the state record format; :mod:`service.keyed.stage1` builds
and produces them; :mod:`service.keyed.stage2` feeds them to per-partition correlation and anomaly engines (its own state saved by
:mod:`service.keyed.saved`).
"""
