"""Text output of ``pipesentry demo``: progress bar, alerts grouped by story, summary table."""

from __future__ import annotations

import sys
from collections import Counter
from typing import IO

from detectors.model import LEVELS, level_rank
from service.demo.runner import NORMAL, DemoResult
from service.demo.stories import STORIES, Story

BAR_WIDTH = 30


class ProgressBar:
    """``[#####.....]  45%  2,700/6,012 events`` redrawn in place on a terminal, a few lines otherwise."""

    def __init__(self, label: str, out: IO[str] | None = None) -> None:
        self.label = label
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if not self.tty:
            decile = int(fraction * 4)
            if decile == self._last_decile:
                return
            self._last_decile = decile
        filled = int(fraction * BAR_WIDTH)
        line = (f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}"
                f"  {done:,}/{total:,} events")
        if self.tty:
            self.out.write("\r" + line + ("\n" if done >= total else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


_LEVEL_TAGS = {"critical": "CRIT", "high": "HIGH", "medium": "MED ", "low": "LOW ", "informational": "INFO"}


def _level_tag(level: str) -> str:
    return _LEVEL_TAGS.get(level, level.upper()[:4].ljust(4))


def story_sections(result: DemoResult, stories: tuple[Story, ...] = STORIES) -> list[str]:
    """For each story (in time order): title, what happened, and its alerts by rule."""
    lines: list[str] = []
    by_story = result.by_story()
    for story in sorted(stories, key=lambda s: s.hour):
        items = by_story.get(story.name, [])
        hh, mm = int(story.hour), round((story.hour % 1) * 60)
        lines.append(f"== {story.title}  [{story.name}, {hh:02d}:{mm:02d} UTC]  {len(items)} alerts")
        lines.append(f"   {story.summary}")
        counts: Counter[tuple[str, str, str]] = Counter(
            (a.alert.rule.level, a.alert.rule.title, a.alert.rule.kind) for a in items)
        for (level, title, kind), count in sorted(counts.items(), key=lambda kv: (-level_rank(kv[0][0]), kv[0][1])):
            suffix = f"  x{count}" if count > 1 else ""
            marker = {"correlation": " (correlation)", "anomaly": " (anomaly check)"}.get(kind, "")
            lines.append(f"   {_level_tag(level)} {title}{marker}{suffix}")
        missing = [t for t in story.expected if t not in {a.alert.rule.title for a in items}]
        if missing:
            lines.append(f"   missing expected detections: {', '.join(missing)}")
        lines.append("")
    normal = by_story.get(NORMAL, [])
    lines.append(f"== Normal traffic  {len(normal)} alerts")
    for title, count in Counter(a.alert.rule.title for a in normal).most_common():
        lines.append(f"   {title}  x{count}")
    lines.append("")
    return lines


def missing_detections(result: DemoResult, story: Story) -> list[str]:
    """The story's expected alert titles that no alert of the story carries."""
    titles = {a.alert.rule.title for a in result.by_story().get(story.name, [])}
    return [t for t in story.expected if t not in titles]


def summary_table(result: DemoResult, events_per_story: Counter[str],
                  stories: tuple[Story, ...] = STORIES) -> list[str]:
    """One row per story plus normal traffic: events, alerts per level, expected detections found."""
    levels = list(reversed(LEVELS))[:4]  # critical, high, medium, low
    header = ["story", "events", "alerts", *levels, "expected"]
    rows: list[list[str]] = []
    by_story = result.by_story()
    for story in sorted(stories, key=lambda s: s.hour):
        items = by_story.get(story.name, [])
        per_level = Counter(a.alert.rule.level for a in items)
        found = len(story.expected) - len(missing_detections(result, story))
        rows.append([story.name, str(events_per_story[story.name]), str(len(items)),
                     *(str(per_level[lv]) for lv in levels), f"{found}/{len(story.expected)}"])
    normal = by_story.get(NORMAL, [])
    per_level = Counter(a.alert.rule.level for a in normal)
    rows.append([NORMAL, str(events_per_story[NORMAL]), str(len(normal)),
                 *(str(per_level[lv]) for lv in levels), "-"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return [fmt(header), rule, *(fmt(r) for r in rows)]
