"""Chains of more than one level in ``state.scope: keyed``: a correlation referencing one that itself
references a correlation, each level keyed by another field, so every level's alerts are re-keyed
through the internal topic. The top level fires with the ids of the instance-scope reference (what
``pipesentry eval`` gives over the merged stream) however stage 2's reads, its re-keyed records and
its chain marks interleave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.model import LogSource, Origin
from service.detection import Detector, compile_detection
from service.keyed.records import chain_fields, chain_levels, level_row
from service.keyed.stage2 import KeyedDetector
from service.sources.base import Item
from tests.support import internal_topic
from tests.support.fixtures import rule_text
from tests.support.internal_topic import INTERNAL, Topic, chain_mark, mark

AUTH = LogSource(product="linux", service="auth")
T0 = 1_764_113_000.0
INPUTS = 4
FROM_SOURCE, PER_USER, PER_HOST = (f"6f1d1a4e-0000-4000-8000-0000000000{n}" for n in (31, 32, 33))
THREE_LEVELS = "chained_three_levels"
"""Three levels, each grouped by another field (``tests/fixtures/rules``): source bursts (level 0, by
address) feed a per-user correlation (level 1), whose alerts feed a per-host one (level 2: it reads
``hostname``, a field of the failed logins that neither level below groups by)."""


def three_levels(tmp_path: Path) -> Any:
    path = tmp_path / "deep.yml"
    path.write_text(rule_text(THREE_LEVELS))
    outcome = compile_detection([path], [], skip_invalid=False, correlation_lateness_s=0.0)
    assert outcome.detection is not None and outcome.detection.correlation is not None, outcome.errors
    return outcome.detection


def attack(users: int = 2, hosts: int = 1, per_source: int = 2, sources: int = 2, step: float = 10.0) -> list[Item]:
    """Failed logins: on each host each user attacked from ``sources`` addresses, ``per_source``
    times each, in time order, round robin over the input partitions."""
    events = []
    for host in range(hosts):
        for user in range(users):
            for source in range(sources):
                for _ in range(per_source):
                    address = f"198.51.{host}.{user * sources + source}"
                    events.append({"user": f"user{user}", "src_ip": address, "hostname": f"bastion-{host}",
                                   "app_name": "sshd",
                                   "message": f"Failed password for user{user} from {address} port 50000 ssh2"})
    return [Item({**event, "ts": T0 + step * i}, Origin("kafka", "auth", i % INPUTS, i // INPUTS), AUTH, ("ts",), 0.0)
            for i, event in enumerate(events)]


def reference(detection: Any, items: list[Item]) -> list[str]:
    """The correlation alert ids of the instance-scope run (the referenced levels' own alerts are
    not shown: ``generate`` is off for them, so these are the top level's)."""
    alerts = [a for a in Detector(detection, scope="instance").process(items, now=T0) if a.rule.kind == "correlation"]
    assert {a.rule.id for a in alerts} <= {PER_HOST}
    return sorted(a.id for a in alerts)


def test_levels_and_the_fields_each_level_carries_for_the_levels_above(tmp_path):
    specs = three_levels(tmp_path).correlation.specs
    assert chain_levels(specs) == {FROM_SOURCE: 0, PER_USER: 1, PER_HOST: 2}
    # a source burst's records carry what the per-user and the per-host correlations read
    assert chain_fields(specs) == {FROM_SOURCE: ("user", "hostname"), PER_USER: ("hostname",)}


def test_the_top_level_waits_for_the_middle_levels_chain_marks_and_fires_with_the_reference_ids(tmp_path):
    """The middle level's alerts reach the top level's partition after the base lane released
    everything: the top level still takes them (before: found late, the top alert lost)."""
    det = three_levels(tmp_path)
    items = attack()
    expected = reference(det, items)
    assert len(expected) == 1
    topic = Topic()
    start = [0] * len(topic.partitions)
    second = KeyedDetector(det, rekey=True)
    internal_topic.stage1(Detector(det, scope="keyed"), attack(), topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3 * 3600 for p in range(INPUTS)})
    # first read: the bursts fire in the base lane, which releases past every event
    fired = second.process(topic.items(start), now=T0)
    records, progress = second.take_records()
    assert records and {r.correlation for r in records} == {PER_USER}
    assert set(progress) == {(INTERNAL, p) for p in range(len(topic.partitions))}  # level 0 only so far
    topic.send_records(records)
    chain_mark(topic, "s2", progress)
    # second read: the per-user lane takes the bursts and releases; its alerts go out for the top level
    fired += second.process(topic.items(start), now=T0)
    records, progress = second.take_records()
    assert records and {r.correlation for r in records} == {PER_HOST}
    assert all(r.fields["hostname"] == "bastion-0" for r in records)  # carried up from the failed logins
    levels = {row for row in progress if row[0] != INTERNAL}
    assert levels == {level_row(INTERNAL, p, 1) for p in range(len(topic.partitions))}
    topic.send_records(records)
    # the top level's inputs arrive while no level-1 mark has: they wait, none is late
    fired += second.process(topic.items(start), now=T0)
    assert second.chain_watermark((INTERNAL, 0), 1) is None
    assert not [a for a in fired if a.rule.id == PER_HOST]
    chain_mark(topic, "s2", progress)
    fired += internal_topic.stage2(second, topic, start, now=T0)
    assert [a.rule.id for a in fired].count(PER_HOST) == 1
    assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected
    # no chained lane found an input late
    assert not any(engine.counters.get("late") for lanes in second._parents.values() for engine in lanes.values())


def test_three_levels_fire_with_the_reference_ids_through_the_packed_topic(tmp_path):
    det = three_levels(tmp_path)
    items = attack(users=3, hosts=2)
    expected = reference(det, items)
    assert len(expected) == 2  # one per host
    topic = Topic()
    internal_topic.stage1(Detector(det, scope="keyed"), attack(users=3, hosts=2), topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3 * 3600 for p in range(INPUTS)})
    fired = internal_topic.stage2(KeyedDetector(det, rekey=True), topic, [0] * len(topic.partitions), now=T0)
    assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected


def test_the_lanes_of_every_level_travel_with_the_partition_snapshot(tmp_path):
    det = three_levels(tmp_path)
    expected = reference(det, attack())
    topic = Topic()
    start = [0] * len(topic.partitions)
    second = KeyedDetector(det, rekey=True)
    internal_topic.stage1(Detector(det, scope="keyed"), attack(), topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3 * 3600 for p in range(INPUTS)})
    fired: list[Any] = []
    for round in range(2):  # up to the top level's inputs waiting for the level-1 marks
        fired += second.process(topic.items(start), now=T0)
        records, last = second.take_records()
        topic.send_records(records)
        if round == 0:
            chain_mark(topic, "s2", last)
    fired += second.process(topic.items(start), now=T0)
    saved = {k: orjson.loads(orjson.dumps(second.export_scope(k))) for k in second.scopes()}
    docs = [doc["correlation"]["keyed"] for doc in saved.values()]
    assert all(len(d["released"]) == 3 for d in docs)  # a release per lane
    assert any(r["id"] == PER_HOST for d in docs for r in d["pending"])
    restored = KeyedDetector(det, rekey=True)
    for key, doc in saved.items():
        restored.import_scope(key, doc)
    chain_mark(topic, "s2", last)
    fired += internal_topic.stage2(restored, topic, start, now=T0)
    assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected


# -- differential: random interleavings of stage 1's batches, stage 2's reads and its marks ---------

def run_interleaved(det: Any, items: list[Item], partitions: int, owners: int, choices: Any) -> list[str]:
    """Stage 1's batches (in time order, their input marks after them) and stage 2's owners (each a
    detector of its own, owning every ``owners``-th internal partition) reading a few messages of a
    partition at a time, sending the chained records they raise at once and their chain marks only
    when chosen to, in an order ``choices`` draws; then every owner drains the topic."""
    topic = Topic(partitions)
    first = Detector(det, scope="keyed")
    seconds = [KeyedDetector(det, rekey=True) for _ in range(owners)]
    starts = [[0] * partitions for _ in range(owners)]
    for owner in range(owners):  # a partition is read by its owner only
        for p in range(partitions):
            if p % owners != owner:
                starts[owner][p] = -1
    marks: list[dict[tuple[str, int], float]] = [{} for _ in range(owners)]
    sent: list[dict[tuple[str, int], float]] = [{} for _ in range(owners)]
    fired: list[Any] = []
    position = 0

    def read(owner: int, p: int, limit: int) -> bool:
        start = starts[owner]
        if start[p] < 0 or start[p] >= len(topic.partitions[p]):
            return False
        fired.extend(seconds[owner].process(topic.read(p, start, limit), now=T0))
        records, progress = seconds[owner].take_records()
        topic.send_records(records)  # acknowledged before its marks may go (the submit step)
        for row, ts in progress.items():
            marks[owner][row] = max(ts, marks[owner].get(row, ts))
        return True

    def send_marks(owner: int) -> bool:
        moved = {row: ts for row, ts in marks[owner].items() if ts > sent[owner].get(row, float("-inf"))}
        if not moved:
            return False
        sent[owner].update(moved)
        chain_mark(topic, f"s2-{owner}", sent[owner])
        return True

    while True:
        action = choices.draw(st.integers(0, 3))
        if action == 0:
            if position >= len(items):
                break
            size = choices.draw(st.integers(1, 8))
            internal_topic.stage1(first, items[position:position + size], topic, "a", now=T0)
            position += size
        elif action == 1:
            send_marks(choices.draw(st.integers(0, owners - 1)))
        else:
            owner = choices.draw(st.integers(0, owners - 1))
            read(owner, choices.draw(st.integers(0, partitions - 1)), choices.draw(st.integers(1, 3)))
    internal_topic.stage1(first, items[position:], topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3 * 3600 for p in range(INPUTS)})
    for _ in range(50):  # drain: every owner reads all it owns and sends its marks, until quiet
        busy = False
        for owner in range(owners):
            for p in range(partitions):
                busy |= read(owner, p, 1_000)
            busy |= send_marks(owner)
        if not busy:
            return sorted(a.id for a in fired if a.rule.kind == "correlation")
    raise AssertionError("stage 2 still busy")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(users=st.integers(1, 3), hosts=st.integers(1, 2), per_source=st.integers(1, 3),
       partitions=st.integers(1, 4), owners=st.integers(1, 2), choices=st.data())
def test_keyed_three_level_chains_give_the_reference_ids_for_any_interleaving(
        tmp_path_factory: Any, users: int, hosts: int, per_source: int, partitions: int, owners: int,
        choices: Any) -> None:
    det = three_levels(tmp_path_factory.mktemp("deep"))
    items = attack(users=users, hosts=hosts, per_source=per_source)
    expected = reference(det, attack(users=users, hosts=hosts, per_source=per_source))
    got = run_interleaved(det, items, partitions, min(owners, partitions), choices)
    assert got == expected
