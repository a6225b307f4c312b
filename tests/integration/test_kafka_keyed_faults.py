"""``state.scope: keyed`` under faults, on a real broker: three ``pipesentry run`` instances of one
group over three input topics (linux auth, GitHub audit, GitHub push webhooks; six partitions)
with the whole rule pack — the SSH brute force, its chained brute-force-then-success, and the
cross-topic GitHub sequences — and a threshold check. The correlation and anomaly alert ids of all
instances are those of ``pipesentry eval`` over the merged stream in time order: without faults,
and with SIGKILLs at seeded random points (one within a key's first minute, aimed at the owner of
its internal partition), a fourth instance joining and a broker restart (every duplicate shares
its id: sets are compared). Last, the takeover of an input partition read to its end: its new
owner reports it idle, which overrides the dead owner's mark, so windows still close
(docs/scaling.md, issue 18).

``PIPESENTRY_FAULT_SEED`` replays a run (the seed is in every failure message).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.support.keyed import (
    FAILED_LOGINS_CHECK,
    FAILED_LOGINS_PER_HOST,
    Feed,
    KeyedCluster,
    LiveStream,
    Step,
    checks_yaml,
    end_offsets,
    interleave,
    internal_partition,
    members,
    reached,
    reference,
)
from tests.support.waits import until

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("PIPESENTRY_FAULT_SEED") or secrets.randbelow(2**32))
ROOT = Path(__file__).resolve().parents[2]
RULES = [ROOT / "sigma-rules"]
CHECKS = checks_yaml(FAILED_LOGINS_CHECK)
BRUTE_FORCE = "2032f4fe-c208-42e1-8b50-5fe10c091d35"
THEN_SUCCESS = "3dd2487f-bf63-41aa-a49a-741cfe49d498"
REMOVED_THEN_PUSH = "39ace70a-6fd5-4880-9507-4eade6452fa6"
WEAKENED_THEN_PUSH = "e8064d4e-d31f-4ca2-9b8e-6e812ca32578"
INTERNAL_PARTITIONS = 4
STATE = {"keyed_watermark_interval_s": 0.2, "snapshot_interval_s": 0.5}


def stateful_rule_ids() -> set[str]:
    """Every correlation of the rule pack and the check: the alerts compared with the reference."""
    ids = {yaml.safe_load(path.read_text())["id"] for path in (ROOT / "sigma-rules" / "correlations").glob("*.yml")}
    return ids | {FAILED_LOGINS_PER_HOST}


def feeds() -> dict[str, Feed]:
    from tests.support.instances import unique_topic

    return {"auth": Feed(unique_topic("auth"), "product=linux,service=auth", 2),
            "audit": Feed(unique_topic("gh-audit"), "product=github,service=audit", 2),
            "webhook": Feed(unique_topic("gh-push"), "product=github,service=webhook", 2)}


def ssh_attack(host: str, failures: int = 12, success: bool = True) -> list[Step]:
    """Failed SSH logins on ``host`` (ten make a brute force) and, with ``success``, an accepted one."""
    source = f"203.0.113.{zlib.crc32(host.encode()) % 200}"
    steps: list[Step] = [("auth", {"hostname": host, "app_name": "sshd",
                                   "message": f"Failed password for invalid user admin{i} from {source} "
                                              f"port {51000 + i} ssh2"}) for i in range(failures)]
    if success:
        steps.append(("auth", {"hostname": host, "app_name": "sshd",
                               "message": f"Accepted password for deploy from {source} port 51190 ssh2"}))
    return steps


def branch_attack(repo: str, change: str = "removed", push_first: bool = False) -> list[Step]:
    """Branch protection of ``repo`` removed or weakened (audit log), and a force push to main (webhook)."""
    audit: dict[str, Any] = {"action": "protected_branch.destroy", "actor": "mallory", "org": "acme",
                             "repo": repo, "branch": "main"}
    if change == "weakened":
        audit = {**audit, "action": "protected_branch.update_allow_force_pushes_enforcement_level",
                 "allow_force_pushes_enforcement_level": "everyone"}
    push = {"ref": "refs/heads/main", "forced": True, "created": False, "deleted": False,
            "repository": {"full_name": repo, "default_branch": "main"}, "pusher": {"name": "mallory"},
            "sender": {"login": "mallory"}}
    steps: list[Step] = [("audit", audit), ("webhook", push)]
    return steps[::-1] if push_first else steps


def cluster_for(tmp_path: Path, bootstrap: str, create: Any, shared_state: bool = True) -> KeyedCluster:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    cluster = KeyedCluster(tmp_path, bootstrap, feeds(), internal_partitions=INTERNAL_PARTITIONS, rules=RULES,
                           checks=[checks], shared_state=shared_state, **STATE)
    cluster.create_topics(create)
    return cluster


async def expected_ids(cluster: KeyedCluster, stream: LiveStream, fired: set[str]) -> set[str]:
    """The reference ids, checked to exercise ``fired`` (rule ids that must raise at least one)."""
    merged = stream.merged(cluster.tmp_path / "merged.ndjson")
    found = await asyncio.to_thread(reference, merged, RULES, [cluster.tmp_path / "checks.yml"])
    raised = {r["rule_id"] for r in found}
    assert fired <= raised, (sorted(fired - raised), SEED)
    return {r["alert_id"] for r in found if r["rule_kind"] in ("correlation", "anomaly")}


async def same_ids(cluster: KeyedCluster, expected: set[str], timeout: float, faults: Sequence[str] = ()) -> None:
    """Every reference alert raised (duplicates allowed), stage 2 drained, and nothing else raised."""
    rule_ids = stateful_rule_ids()
    try:
        await until(lambda: expected <= cluster.alert_ids(rule_ids), timeout, "every reference alert")
    except AssertionError:
        missing = sorted(expected - cluster.alert_ids(rule_ids))
        raise AssertionError(f"seed {SEED}, faults {list(faults)}: missing {missing}\n{cluster.logs()}") from None
    await cluster.drained(60)
    found = cluster.alert_ids(rule_ids)
    assert found == expected, (f"seed {SEED}", list(faults), sorted(found - expected), sorted(expected - found))


async def test_three_instances_over_three_topics_raise_evals_ids(kafka_server, tmp_path):
    rng = random.Random(SEED)
    cluster = cluster_for(tmp_path, kafka_server.bootstrap, kafka_server.create_topic)
    try:
        for name in ("a", "b", "c"):
            cluster.start(name)
        await until(cluster.settled, 120, f"three instances sharing the partitions\n{cluster.logs()}")
        stream = LiveStream(kafka_server.bootstrap, cluster.feeds, rng)
        await stream.produce(interleave(
            rng, ssh_attack("bastion-0"), ssh_attack("bastion-1", success=False), ssh_attack("web-2", 5),
            branch_attack("acme/payments"), branch_attack("acme/web", "weakened"),
            branch_attack("acme/docs", push_first=True)))
        expected = await expected_ids(cluster, stream, {BRUTE_FORCE, THEN_SUCCESS, REMOVED_THEN_PUSH,
                                                        WEAKENED_THEN_PUSH, FAILED_LOGINS_PER_HOST})
        await same_ids(cluster, expected, 120)
        assert len(cluster.alive()) == 3, cluster.logs()
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.parametrize("snapshots", ["local", "kafka"])
async def test_keyed_alerts_survive_kills_a_joining_instance_and_a_broker_restart(kafka_factory, tmp_path, snapshots):
    """``local``: the instances share one state volume; ``kafka``: each has its own, and partitions'
    state moves through the changelog topic (``state.snapshots: kafka``)."""
    from tests.support.instances import unique_topic

    rng = random.Random(SEED)
    broker = await asyncio.to_thread(kafka_factory)
    cluster = cluster_for(tmp_path, broker.bootstrap, broker.create_topic, shared_state=snapshots == "local")
    if snapshots == "kafka":
        cluster.config["state"].update(snapshots="kafka", changelog_topic=unique_topic("changelog"),
                                       changelog_partitions=2)
    stream = LiveStream(broker.bootstrap, cluster.feeds, rng)
    faults: list[str] = []

    async def produce_then(steps: list[Step], at: int) -> list[Step]:
        """Produce ``steps[:at]``, wait until all but up to two of the records so far are
        acknowledged (the rest may be in flight), and hand back the remaining steps."""
        await stream.produce(steps[:at])
        want = len(stream.produced) - rng.randrange(3)
        await until(lambda: _at_least(cluster.acknowledged(), want), 90,
                    f"{want} input records acknowledged (seed {SEED})\n{cluster.logs()}")
        return steps[at:]

    try:
        for name in ("a", "b", "c"):
            cluster.start(name)
        await until(cluster.settled, 120, f"three instances sharing the partitions\n{cluster.logs()}")

        # a fourth instance joins at a random point, records still being produced during the rebalance
        part = interleave(rng, ssh_attack("bastion-0"), branch_attack("acme/payments"),
                          ssh_attack("web-9", 5, success=False))
        rest = await produce_then(part, rng.randrange(1, len(part)))
        cluster.start("d")
        faults.append(f"d joined after {len(stream.produced)} records")
        await stream.produce(rest)

        # SIGKILL within a key's first minute: the first records of a new host, then its internal
        # partition's owner (stage 2) dies before or after they reach it
        await until(cluster.settled, 120, f"four instances sharing the partitions\n{cluster.logs()}")
        host = f"bastion-{rng.randrange(100, 1000)}"
        first = rng.randrange(1, 4)
        attack = ssh_attack(host)
        later = await produce_then(attack, first)
        partition = internal_partition(BRUTE_FORCE, [host], INTERNAL_PARTITIONS)
        owner: list[str] = []

        async def owned() -> bool:
            name = await cluster.stage2_owner(partition)
            owner.extend([name] if name else [])
            return bool(name)

        await until(owned, 60, f"the owner of internal partition {partition}\n{cluster.logs()}")
        cluster.instances[owner[0]].kill()
        faults.append(f"{owner[0]} killed (stage 2 of {host}'s partition {partition}) after {first} of its records")
        await stream.produce(interleave(rng, later, ssh_attack("bastion-1"),
                                        branch_attack("acme/web", "weakened")))

        # a broker restart at a random point (same ports and log dir)
        part = interleave(rng, ssh_attack("bastion-2"), branch_attack("acme/docs", push_first=True),
                          branch_attack("acme/api"))
        rest = await produce_then(part, rng.randrange(1, len(part)))
        await asyncio.to_thread(broker.restart)
        faults.append(f"broker restarted after {len(stream.produced)} records")
        await until(cluster.settled, 180, f"the instances back after the broker restart\n{cluster.logs()}")
        await stream.produce(rest)

        # SIGKILL of a random instance at a random point
        part = interleave(rng, ssh_attack("bastion-3", success=False), branch_attack("acme/infra", "weakened"))
        rest = await produce_then(part, rng.randrange(1, len(part)))
        victim = rng.choice(sorted(cluster.alive()))
        cluster.instances[victim].kill()
        faults.append(f"{victim} killed after {len(stream.produced)} records")
        await stream.produce(rest)

        expected = await expected_ids(cluster, stream, {BRUTE_FORCE, THEN_SUCCESS, REMOVED_THEN_PUSH,
                                                        WEAKENED_THEN_PUSH, FAILED_LOGINS_PER_HOST})
        await same_ids(cluster, expected, 180, faults)
        assert len(cluster.alive()) == 2, cluster.logs()  # a, b, c, d less the two killed
    finally:
        cluster.stop()
        await asyncio.to_thread(broker.stop)


def waiting(document: Any, correlation: str) -> int:
    """How many records of ``correlation`` wait for the watermark in a saved internal partition."""
    if not isinstance(document, dict):
        return 0
    keyed = (document.get("detectors", {}).get("correlation") or {}).get("keyed") or {}
    return sum(1 for record in keyed.get("pending") or () if record.get("id") == correlation)


def applied(document: Any, host: str) -> bool:
    """A saved internal partition holds ``host``'s failed logins applied (in its windows, none waiting)."""
    if not isinstance(document, dict):
        return False
    return waiting(document, BRUTE_FORCE) == 0 and host.encode() in orjson.dumps(document.get("detectors"))


@pytest.mark.parametrize("snapshots", ["local", "kafka"])
async def test_state_of_a_moved_internal_partition_reaches_its_next_owner(kafka_server, tmp_path, snapshots):
    """Per-instance state directories (the Helm chart's persistence mode), SIGKILL of the stage-2
    owner of the internal partition that holds the first failed logins of a host; the brute force
    still fires with ``pipesentry eval``'s id.

    ``local``: the logins wait in the owner's reorder buffer (a long allowed lateness keeps them
    there) and in its snapshot; the next owner has no snapshot of the partition and reads it again
    from the committed offset, which the waiting records held back (docs/scaling.md, "Stage 2's
    commits"). ``kafka`` (``state.snapshots: kafka``): the logins are applied to the owner's windows
    and saved in the changelog topic; the next owner, its own state directory empty, restores the
    windows from there ("Snapshots in Kafka"; with ``local`` these logins would be lost)."""
    from tests.support.instances import unique_topic

    rng = random.Random(SEED)
    cluster = cluster_for(tmp_path, kafka_server.bootstrap, kafka_server.create_topic, shared_state=False)
    if snapshots == "kafka":
        cluster.config["state"].update(snapshots="kafka", changelog_topic=unique_topic("changelog"),
                                       changelog_partitions=2)
    else:
        cluster.config["correlation"] = {"allowed_lateness": 30}
    try:
        for name in ("a", "b"):
            cluster.start(name)
        await until(cluster.settled, 120, f"two instances sharing the partitions\n{cluster.logs()}")
        stream = LiveStream(kafka_server.bootstrap, cluster.feeds, rng)
        host = f"bastion-{rng.randrange(100, 1000)}"
        first = rng.randrange(3, 8)
        attack = ssh_attack(host)
        await stream.produce(attack[:first])
        partition = internal_partition(BRUTE_FORCE, [host], INTERNAL_PARTITIONS)
        owner = await cluster.stage2_owner(partition)
        assert owner is not None, cluster.logs()

        async def saved() -> bool:
            if snapshots == "kafka":
                return applied(await cluster.changelog_state(partition), host)
            return waiting(cluster.saved_state(owner, partition), BRUTE_FORCE) >= first

        await until(saved, 60, f"{first} records of {host} in {owner}'s snapshot of {partition}\n{cluster.logs()}")
        cluster.instances[owner].kill()
        await stream.produce(attack[first:])
        expected = await expected_ids(cluster, stream, {BRUTE_FORCE, THEN_SUCCESS})
        await same_ids(cluster, expected, 180, [f"{owner} killed after {first} records of {host}"])
        assert len(cluster.alive()) == 1, cluster.logs()
    finally:
        cluster.stop()


async def test_a_taken_over_partition_read_to_its_end_reports_idle_and_windows_still_close(kafka_server, tmp_path):
    """A brute force over every auth partition (every partition's owner sent marks), all committed;
    SIGKILL of one instance: its partitions' new owner reads them to the end without a record and
    reports them idle, which overrides the dead owner's marks (latest report wins), so a second
    brute force, on the survivor's partitions only, is released and fires."""
    rng = random.Random(SEED)
    cluster = cluster_for(tmp_path, kafka_server.bootstrap, kafka_server.create_topic)
    try:
        for name in ("a", "b"):
            cluster.start(name)
        await until(cluster.settled, 120, f"two instances sharing the partitions\n{cluster.logs()}")
        stream = LiveStream(kafka_server.bootstrap, cluster.feeds, rng)
        auth = cluster.feeds["auth"]
        await stream.produce(ssh_attack("bastion-0", success=False), {"auth": [0, 1]})  # on both auth partitions
        expected = await expected_ids(cluster, stream, {BRUTE_FORCE})
        await same_ids(cluster, expected, 90)

        ends = await end_offsets(cluster.bootstrap, cluster.topics)
        await until(lambda: reached(cluster.bootstrap, cluster.group, ends), 60, "every input record committed")
        owners = await members(cluster.bootstrap, cluster.group)
        victim = rng.choice(sorted(owners))
        survivor = next(name for name in owners if name != victim)
        kept = sorted(p for topic, p in owners[survivor] if topic == auth.topic)
        assert len(kept) == 1, owners  # the round robin assignor gives each one auth partition
        cluster.instances[victim].kill()
        await stream.produce(ssh_attack("bastion-1", success=False), {"auth": kept})
        expected = await expected_ids(cluster, stream, {BRUTE_FORCE})
        await same_ids(cluster, expected, 90)
        assert cluster.alive().keys() == {survivor}, cluster.logs()
    finally:
        cluster.stop()


async def _at_least(count: Any, want: int) -> bool:
    return int(await count) >= want
