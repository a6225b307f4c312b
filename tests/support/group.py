"""A consumer group of one partition in memory (its records and its commits with metadata), a member
consumer of it, and crash images: what a SIGKILL leaves of a state directory and of the group."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.support.kafka import FakeConsumer
from tests.support.waits import until

if TYPE_CHECKING:
    from service.sources.kafka import KafkaSource

CI = TopicPartition("ci", 0)


class Group:
    """The broker side of a consumer group: one partition's records and its commits (with metadata)."""

    def __init__(self, records: list[Any], tp: TopicPartition = CI) -> None:
        self.records = records
        self.tp = tp
        self.commits: list[OffsetAndMetadata] = []

    def committed(self) -> OffsetAndMetadata | None:
        return self.commits[-1] if self.commits else None

    def image(self) -> Group:
        """The group as it is now (for a crash at this point)."""
        copy = Group(self.records, self.tp)
        copy.commits = list(self.commits)
        return copy


class Coordinator:
    def __init__(self, group: Group) -> None:
        self.group = group

    async def fetch_committed_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Any]:
        found = self.group.committed()
        return {tp: found for tp in partitions if found is not None}


class GroupConsumer(FakeConsumer):
    """A member of ``group``: resumes at the committed offset, commits with metadata, seeks."""

    def __init__(self, group: Group) -> None:
        super().__init__({group.tp: group.records})
        self.group = group
        self._coordinator = Coordinator(group)
        found = group.committed()
        self.positions[group.tp] = found.offset if found is not None else 0
        self.seeks: list[int] = []

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        await super().commit(offsets)
        self.group.commits.append(offsets[self.group.tp])

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.positions[tp] = offset


def crash_image(data: Path, group: Group, into: Path) -> Group:
    """What a SIGKILL now leaves behind: the state directory as on disk and the group's commits.

    Snapshot files are replaced atomically, so each is copied whole, old or new; temporary files of
    a save in progress (which a restart ignores) are left out.
    """
    into.mkdir(parents=True)
    if data.exists():
        shutil.copytree(data, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.tmp"))
    return group.image()


async def run_and_crash(runner: KafkaSource, data: Path, group: Group, into: Path, condition: Any) -> Group:
    """Run until ``condition``, then take the crash image (the runner is stopped afterwards, off the image)."""
    crashed: list[Group] = []

    def check() -> bool:
        if not crashed and condition():
            crashed.append(crash_image(data, group, into))
        return bool(crashed)

    await run_until(runner, check)
    return crashed[0]


async def run_until(runner: KafkaSource, condition: Any) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await until(condition)
    finally:
        stop.set()
        await task


def committed(group: Group) -> int | None:
    found = group.committed()
    return found.offset if found is not None else None
