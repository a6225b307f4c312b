"""SIGKILL ``pipesentry run`` at chosen points of stateful detection, restart it, and compare every alert id
with ``pipesentry eval`` over the same stream (the harness is ``bench/crash_points.py``; its script runs
randomized rounds)."""

from __future__ import annotations

import random

import pytest

from bench.crash_points import KillPoint, crash_run, make_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


async def test_a_member_with_its_own_data_dir_does_not_rewind_what_another_member_committed(kafka_server, tmp_path):
    """The Helm chart's per-instance persistence: A stops (its snapshot stays in its data dir), B takes the
    partition and commits further, A comes back: it starts at B's commit instead of re-raising B's alerts."""
    import orjson

    from bench.crash_points import Observer, produce, service_config, start_run, write_rules
    from tests.support.waits import until

    topic = f"crash-members-{random.randrange(1 << 30):08x}"
    group = f"grp-{random.randrange(1 << 30):08x}"
    kafka_server.create_topic(topic, 1)
    rules = write_rules(tmp_path / "rules")

    def failed(n: int, host: str, message: str = "Failed password for git from 203.0.113.9 port 22 ssh2") -> bytes:
        return orjson.dumps({"time": 1_767_323_045.0 + n, "host": host, "message": message})

    dirs = {name: tmp_path / name for name in ("a", "b", "a2")}
    for path in dirs.values():
        path.mkdir()
    config_a = service_config(kafka_server.bootstrap, topic, group, rules, dirs["a"] / "data", 3600)
    config_b = service_config(kafka_server.bootstrap, topic, group, rules, dirs["b"] / "data", 3600)
    observer = Observer(kafka_server.bootstrap, topic, group, dirs["a"] / "data")
    await observer.start()
    try:
        a = start_run(dirs["a"], config_a, 0)
        try:
            await produce(kafka_server.bootstrap, topic, [failed(n, "web-1") for n in range(3)])
            await until(lambda: _committed(observer, 3), 90, "A committed 3", a)
        finally:
            a.stop()  # clean: A's snapshot at offset 3 stays in A's data dir
        assert observer.snapshot_offset() == 3

        b = start_run(dirs["b"], config_b, 0)
        try:
            await produce(kafka_server.bootstrap, topic, [*(failed(n, "web-2") for n in range(3, 8)),
                                                          failed(8, "web-2", "Accepted password for git")])
            await until(lambda: _committed(observer, 9), 90, "B committed 9", b)
        finally:
            b.stop()
        assert [x["rule"]["name"] for x in b.alerts()] == ["SSH Login Succeeds After A Brute Force"], b.log()

        a2 = start_run(dirs["a"], {**config_a}, 1)
        try:
            await produce(kafka_server.bootstrap, topic, [failed(9, "web-3")])
            await until(lambda: _committed(observer, 10), 90, "A committed 10 again", a2)
        finally:
            a2.stop()
    finally:
        await observer.stop()
    assert a2.alerts() == [], "A re-raised alerts B had raised and committed"
    assert "stale" in a2.stderr.read_text(), a2.log()


async def _committed(observer, offset: int) -> bool:
    return await observer.committed() >= offset
