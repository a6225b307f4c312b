"""Chained correlations in ``state.scope: keyed`` when the records they depend on travel packed:
stage 1's records of a batch, and stage 2's re-keyed child alerts, several to one message of the
internal topic (``service/keyed/records.py: pack``). Each record of a message counts on its own:
the parents fire exactly as the instance-scope reference does, and a replayed message fires nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.model import LogSource, Origin
from service.detection import Detector, compile_detection
from service.keyed.stage2 import KeyedDetector
from service.sources.base import Item
from tests.conftest import PROJECT_RULES
from tests.support import internal_topic
from tests.support.fixtures import rule_text
from tests.support.internal_topic import Topic, mark

AUTH = LogSource(product="linux", service="auth")
T0 = 1_764_113_000.0
INPUTS = 4
SOURCES_PER_USER = "One User Attacked From Several Sources"
THEN_SUCCESS = "3dd2487f-bf63-41aa-a49a-741cfe49d498"
"""ssh_brute_force_then_success: a temporal_ordered correlation over a burst (event_count) and a login."""


def compiled(paths: list[Path]) -> Any:
    outcome = compile_detection(paths, [], skip_invalid=False, correlation_lateness_s=0.0)
    assert outcome.detection is not None and outcome.detection.correlation is not None, outcome.errors
    return outcome.detection


def sources_per_user(tmp_path: Path) -> Any:
    """event_count per source address -> event_count per user (the parent re-keys its inputs)."""
    path = tmp_path / "chained.yml"
    path.write_text(rule_text("chained_sources_per_user"))
    return compiled([path])


def burst_then_success() -> Any:
    """event_count per host -> temporal_ordered per host with a successful login (the rule pack's)."""
    return compiled([PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
                     PROJECT_RULES / "linux" / "linux_auth_ssh_successful_login.yml",
                     PROJECT_RULES / "correlations" / "ssh_failed_login_burst.yml",
                     PROJECT_RULES / "correlations" / "ssh_brute_force_then_success.yml"])


def items(events: list[dict[str, Any]]) -> list[Item]:
    """``events`` in time order, round robin over the input partitions."""
    return [Item(event, Origin("kafka", "auth", i % INPUTS, i // INPUTS), AUTH, ("ts",), 0.0)
            for i, event in enumerate(events)]


def two_users_from_three_sources() -> list[dict[str, Any]]:
    out = []
    for i in range(18):
        user, source = ("alice" if i % 2 else "bob"), f"198.51.100.{i % 6}"
        out.append({"ts": T0 + 15 * i, "user": user, "src_ip": source, "app_name": "sshd",
                    "message": f"Failed password for {user} from {source} port {50000 + i} ssh2"})
    return out


def two_hosts_broken_into() -> list[dict[str, Any]]:
    """Twelve failed logins on each of two hosts, interleaved, then an accepted login on each."""
    out = []
    for i in range(24):
        host = f"bastion-{i % 2}"
        out.append({"ts": T0 + 5 * i, "hostname": host, "app_name": "sshd",
                    "message": f"Failed password for invalid user admin{i} from 203.0.113.77 port {51000 + i} ssh2"})
    for n, host in enumerate(("bastion-0", "bastion-1")):
        out.append({"ts": T0 + 200 + n, "hostname": host, "app_name": "sshd",
                    "message": f"Accepted password for deploy from 203.0.113.77 port {52000 + n} ssh2"})
    return out


def reference(detection: Any, events: list[dict[str, Any]]) -> list[str]:
    return sorted(a.id for a in Detector(detection, scope="instance").process(items(events), now=T0)
                  if a.rule.kind == "correlation")


def both_stages(detection: Any, events: list[dict[str, Any]], topic: Topic) -> list[Any]:
    """Every event in one stage-1 batch (its records packed per internal partition), then stage 2
    with its producer (chained records packed the same way) until nothing new comes."""
    internal_topic.stage1(Detector(detection, scope="keyed"), items(events), topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3600 for p in range(INPUTS)})
    start = [0] * len(topic.partitions)
    return internal_topic.stage2(KeyedDetector(detection, rekey=True), topic, start, now=T0)


def unpacked(value: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in value.split(b"\n")]


def record_messages(topic: Topic) -> list[list[dict[str, Any]]]:
    """Every message of state records (watermarks left out), in partition then offset order."""
    return [docs for values in topic.partitions for docs in map(unpacked, values) if docs[0]["k"] != "w"]


def chained_messages(topic: Topic) -> list[list[dict[str, Any]]]:
    """Messages of re-keyed child alerts (records with a parent's evidence ``x``)."""
    return [docs for docs in record_messages(topic) if any("x" in doc for doc in docs)]


@pytest.mark.parametrize("partitions", [1, 3])
def test_two_parents_fed_by_child_alerts_of_one_packed_message_fire_with_the_reference_ids(
        tmp_path: Path, partitions: int) -> None:
    detection = sources_per_user(tmp_path)
    expected = reference(detection, two_users_from_three_sources())
    topic = Topic(partitions)
    fired = both_stages(detection, two_users_from_three_sources(), topic)
    parents = [a for a in fired if a.rule.title == SOURCES_PER_USER]
    assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected
    assert len(parents) == 2 and {orjson.loads(a.original)["user"] for a in parents} == {"alice", "bob"}
    chained = chained_messages(topic)
    if partitions == 1:
        # every stage-1 record came in one message, and the six child alerts went out re-keyed in one
        assert [len(docs) for docs in record_messages(topic)] == [18, 6]
        assert [len(docs) for docs in chained] == [6]
    # each re-keyed record has its own origin: the internal position of the record that raised it
    # and its index there (one message raised several)
    origins = [tuple(doc["o"]) for docs in chained for doc in docs]
    assert len(set(origins)) == len(origins) == 6


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_temporal_chain_over_bursts_of_one_packed_message_fires_for_both_hosts(partitions: int) -> None:
    detection = burst_then_success()
    events = two_hosts_broken_into()
    expected = reference(detection, events)
    topic = Topic(partitions)
    fired = both_stages(detection, events, topic)
    assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected
    then_success = [a for a in fired if a.rule.id == THEN_SUCCESS]
    assert len(then_success) == 2 and {orjson.loads(a.original)["hostname"] for a in then_success} == {
        "bastion-0", "bastion-1"}
    if partitions == 1:
        # the parent's lane gets, in one message each, its own base records (the accepted logins, with
        # the bursts' base records) and the two bursts re-keyed: told apart by position, none a replay
        (batch, rekeyed) = record_messages(topic)
        assert len(batch) == len(events) and len([d for d in batch if d["id"] == THEN_SUCCESS]) == 2
        assert len(rekeyed) == 2 and all(d["id"] == THEN_SUCCESS and "x" in d for d in rekeyed)


def test_a_packed_message_replayed_whole_fires_nothing_again(tmp_path: Path) -> None:
    """Stage 1 and stage 2 both crashed before their commits: every packed message comes again."""
    detection = sources_per_user(tmp_path)
    topic = Topic(1)
    internal_topic.stage1(Detector(detection, scope="keyed"), items(two_users_from_three_sources()), topic, "a",
                          now=T0)
    mark(topic, "a", {p: T0 + 3600 for p in range(INPUTS)})
    second = KeyedDetector(detection, rekey=True)
    start = [0]
    fired = internal_topic.stage2(second, topic, start, now=T0)
    assert len([a for a in fired if a.rule.title == SOURCES_PER_USER]) == 2
    for value in list(topic.partitions[0]):
        if unpacked(value)[0]["k"] != "w":  # the records, stage 1's and the chained ones, not the watermarks
            topic.send(value, partition=0)
    assert internal_topic.stage2(second, topic, start, now=T0) == []
    assert second.take_records() == ([], {})  # nothing re-keyed again either
