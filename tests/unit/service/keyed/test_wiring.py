"""``state.scope: keyed`` settings and wiring: defaults, and topic set-ups that would loop refused."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings
from service.detection import Detector, compile_detection
from service.keyed.stage2 import KeyedDetector
from service.keyed.wiring import KeyedConfigError, build_keyed
from tests.conftest import PROJECT_RULES
from tests.support.routers import FakeRouter

RULES = [PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
         PROJECT_RULES / "correlations" / "ssh_brute_force.yml"]


def settings(**kafka: Any) -> Settings:
    return Settings(kafka={"bootstrap_servers": ["x:9092"], "group_id": "g", "topics": {"auth": {}}, **kafka},
                    state={"scope": "keyed", "keyed_topic": "internal"})


def detector() -> Detector:
    outcome = compile_detection(RULES, [], skip_invalid=False)
    assert outcome.detection is not None
    return Detector(outcome.detection, scope="keyed")


def test_defaults_and_scope_values():
    state = Settings(kafka={"bootstrap_servers": ["127.0.0.1:9092"], "topics": {"ci": {}}}, state={"scope": "keyed"}).state
    assert (state.keyed_topic, state.keyed_partitions, state.keyed_group_suffix) == ("pipesentry-keyed-state", None,
                                                                                      "-keyed")
    other_group = Settings(kafka={"bootstrap_servers": ["127.0.0.1:9092"], "topics": {"ci": {}}, "group_id": "team-b"}, state={"scope": "keyed"}).state
    assert other_group.keyed_topic == "team-b-keyed-state"  # two deployments never share state records
    chosen = Settings(kafka={"bootstrap_servers": ["127.0.0.1:9092"], "topics": {"ci": {}}, "group_id": "team-b"}, state={"keyed_topic": "mine"}).state
    assert chosen.keyed_topic == "mine"
    with pytest.raises(ValueError):
        Settings(state={"scope": "keyed", "keyed_partitions": 0})


def test_stage_two_reads_the_internal_topic_in_its_own_group_unscreened_and_follows_reloads():
    first = detector()
    stages = build_keyed(settings(), first, FakeRouter(), None)
    source = stages.source
    assert list(source.settings.topics) == ["internal"] and source.settings.group_id == "g-keyed"
    assert source.settings.topic_pattern is None and source.events.screen is False
    assert isinstance(source.detector, KeyedDetector)
    # stage 2 has its own producer (chained records and their marks), committed after them
    chain = source.state_records
    assert chain is not None and chain is not stages.producer and chain.chain and chain.topic == "internal"
    assert stages.detector.rekey
    replacement = compile_detection(RULES, [], skip_invalid=False, generation=2).detection
    assert replacement is not None
    first.swap(replacement)
    assert stages.detector.current is replacement


@pytest.mark.parametrize("kafka", [{"topics": {"auth": {}, "internal": {}}}, {"topic_pattern": "int.*"},
                                   {"dead_letter_topic": "internal"}])
def test_an_internal_topic_that_is_also_read_or_dead_lettered_is_refused(kafka: dict[str, Any]):
    with pytest.raises(KeyedConfigError, match="keyed_topic"):
        build_keyed(settings(**kafka), detector(), FakeRouter(), None)


def test_keyed_stage_one_keeps_no_correlation_engine_per_partition():
    det = detector()
    assert det.keyed and not det.snapshots_partitions
    assert Detector(det.current, scope="partition").snapshots_partitions
    assert not Detector(det.current, scope="instance").snapshots_partitions
