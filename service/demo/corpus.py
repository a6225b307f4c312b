"""The demo corpus: a seeded normal day with the attack stories woven in, and its NDJSON files."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from service.demo.normal import normal_day
from service.demo.sources import SOURCES, GeneratedEvent
from service.demo.stories import STORIES, Story

DEFAULT_DAY = datetime(2026, 11, 24, tzinfo=UTC).timestamp()
"""The demo's day (UTC midnight); fixed so the corpus is identical for a seed, whatever the date."""


def story_events(story: Story, seed: int, day_start: float) -> list[GeneratedEvent]:
    rng = random.Random(f"{seed}:{story.name}")
    start = day_start + story.hour * 3600.0
    return [GeneratedEvent(source, ts, event, story.name) for ts, (source, event) in story.build(rng, start)]


def generate(seed: int = 7, day_start: float = DEFAULT_DAY, *, stories: Sequence[Story] | None = STORIES,
             normal: bool = True) -> list[GeneratedEvent]:
    """All events in event-time order (stable for equal times: normal traffic first, then stories)."""
    events = normal_day(seed, day_start) if normal else []
    for story in stories or ():
        events.extend(story_events(story, seed, day_start))
    events.sort(key=lambda e: e.ts)
    return events


def write_ndjson(events: Iterable[GeneratedEvent], out_dir: Path) -> dict[str, Path]:
    """One ``<source>.ndjson`` per source (every source gets a file, possibly empty)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {s.name: out_dir / s.filename for s in SOURCES}
    handles = {name: path.open("wb") for name, path in paths.items()}
    try:
        for item in events:
            handles[item.source].write(orjson.dumps(item.event, option=orjson.OPT_APPEND_NEWLINE))
    finally:
        for handle in handles.values():
            handle.close()
    return paths
