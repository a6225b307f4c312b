"""SIGKILL ``pipesentry run`` at chosen points of stateful detection, restart it, and compare every alert id
with ``pipesentry eval`` over the same stream (the harness is ``bench/crash_points.py``; its script runs
randomized rounds)."""

from __future__ import annotations

import random

import pytest

from bench.crash_points import KillPoint, crash_run, make_stream

pytestmark = pytest.mark.integration


async def test_sigkill_at_crash_points_loses_no_alert_and_counts_nothing_twice(kafka_server, tmp_path):
    """Four runs over one partition: killed on its first commits (before any periodic snapshot), right after
    a periodic snapshot file was written, as soon as alerts were printed (before their commit); the last run
    finishes the stream. 8 failures per host in the first chunk, the success in a later one."""
    stream = make_stream(random.Random(4), hosts=4, length=240)
    points = [KillPoint("before_first_snapshot"), KillPoint("after_snapshot"), KillPoint("alerts_printed")]
    outcome = await crash_run(kafka_server.bootstrap, lambda topic: kafka_server.create_topic(topic, 1), tmp_path,
                              stream, [70, 60, 60, 50], points, snapshot_interval_s=2.0)
    assert outcome.expected > 10, outcome  # the stream has correlation and Sigma alerts to lose
    assert not outcome.missing, f"lost alerts: {outcome}"
    assert not outcome.extra, f"alerts eval does not raise (state counted twice): {outcome}"
