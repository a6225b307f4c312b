"""``pipesentry demo``: the rule pack at work on a generated day with attack stories woven in.

Without servers it generates the seeded corpus, runs it through the service's detection stage
(Sigma pack, correlations, the demo's anomaly checks), prints the alerts grouped by story with a
summary table, and writes them to the local alert store so ``pipesentry run``'s
``GET /api/v1/alerts`` lists them. With ``--kafka`` it produces the same events to one topic per
source instead, for a running ``pipesentry run`` to consume.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from service.cli.output import FAILED, OK, UNAVAILABLE, USAGE
from service.config import ConfigError, Settings, load_settings
from service.demo.sources import GeneratedEvent
from service.pipeline import tune_gc
from service.redaction import RedactionError

Progress = Callable[[int, int], None]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the rule pack over a generated day with attack stories",
        description="Generate a seeded day of CI/CD and production logs with attack stories woven in, "
                    "detect them with the rule pack and show the alerts by story.")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7); same seed, same day")
    parser.add_argument("--out", type=Path, metavar="DIR", help="also write the corpus as one NDJSON file per source")
    parser.add_argument("--kafka", action="store_true", help="produce the events to Kafka instead of detecting locally")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", action="append",
                        help="Kafka bootstrap server (repeatable; default: kafka.bootstrap_servers of the settings)")
    parser.add_argument("--config", "-c", type=Path, help="YAML settings file (data_dir, kafka)")
    parser.add_argument("--data-dir", type=Path, help="alert store location (overrides data_dir)")
    parser.add_argument("--rules", type=Path, metavar="DIR", help="rule pack directory (default: the bundled pack)")
    parser.add_argument("--no-store", action="store_true", help="do not write alerts to the local alert store")
    parser.add_argument("--quiet", "-q", action="store_true", help="summary table only")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"data_dir": str(args.data_dir)} if args.data_dir else None
    return load_settings(args.config, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    from service.demo.corpus import generate, write_ndjson
    from service.demo.render import ProgressBar

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"pipesentry demo: {exc}", file=sys.stderr)
        return USAGE
    events = generate(args.seed)
    stories = Counter(e.story or "normal traffic" for e in events)
    print(f"generated {len(events):,} events from {len({e.source for e in events})} sources "
          f"(seed {args.seed}): {len(stories) - 1} attack stories in a day of normal traffic", file=sys.stderr)
    if args.out:
        paths = write_ndjson(events, args.out)
        print(f"wrote {len(paths)} NDJSON files to {args.out}", file=sys.stderr)
    if args.kafka:
        return _to_kafka(args, settings, events, ProgressBar("producing "))
    return _detect(args, settings, events, stories, ProgressBar("detecting "))


def _detect(args: argparse.Namespace, settings: Settings, events: list[GeneratedEvent], stories: Counter[str],
            bar: Progress) -> int:
    """Detect, print and store; non-zero when a rule failed to load or a story's expected alert is missing
    (a demo that shows nothing must not look like success)."""
    from service.demo.render import missing_detections, story_sections, summary_table
    from service.demo.runner import build_detectors
    from service.demo.runner import run as run_demo
    from service.demo.stories import STORIES

    detectors = build_detectors(args.rules)
    tune_gc()
    for error in detectors.errors:
        print(f"rule error: {error.source}: {error.reason}", file=sys.stderr)
    result = run_demo(events, detectors, progress=bar)
    out = sys.stdout
    if not args.quiet:
        out.write("\n".join(story_sections(result)) + "\n")
    out.write("\n".join(summary_table(result, stories)) + "\n")
    if not args.no_store and result.alerts:
        try:
            path = _store(settings, [a.alert.to_document() for a in result.alerts])
        except (OSError, sqlite3.Error, RedactionError) as exc:
            print(f"pipesentry demo: cannot write the alert store under {settings.data_dir}: {exc}", file=sys.stderr)
            return UNAVAILABLE
        out.write(f"\n{len(result.alerts)} alerts written to {path} "
                  "(pipesentry run serves them at GET /api/v1/alerts)\n")
    missing = [(story.name, title) for story in STORIES for title in missing_detections(result, story)]
    for name, title in missing:
        print(f"pipesentry demo: story {name}: expected alert not raised: {title}", file=sys.stderr)
    if detectors.errors or missing:
        print(f"pipesentry demo: {len(detectors.errors)} rule error(s), {len(missing)} expected alert(s) missing",
              file=sys.stderr)
        return FAILED
    return OK


def store_path(settings: Settings) -> Path:
    """Where :class:`service.alerting.router.AlertRouter` keeps its store under ``data_dir``."""
    return Path(settings.data_dir) / "alerting" / "alerts.db"


def _store(settings: Settings, docs: list[dict[str, Any]]) -> Path:
    """Write the documents as the running service would: redacted (the API serves the store)."""
    from service.alerting.store import AlertStore
    from service.redaction import Redaction

    redaction = Redaction(settings.redaction, settings.data_dir)
    if redaction.enabled:
        redaction.start()
        docs = [redaction.document(d) for d in docs]
    path = store_path(settings)
    store = AlertStore(path)
    try:
        store.open()
        store.upsert(docs)
    finally:
        store.close()
    return path


def _to_kafka(args: argparse.Namespace, settings: Settings, events: list[GeneratedEvent], bar: Progress) -> int:
    from service.demo.kafka import produce, topics_config

    if args.bootstrap:
        client: dict[str, Any] = {"bootstrap_servers": list(args.bootstrap)}
    elif settings.kafka is not None:
        from service.sources.kafka import client_kwargs

        client = client_kwargs(settings.kafka)
    else:
        print("pipesentry demo: --kafka needs --bootstrap or kafka.bootstrap_servers in the settings", file=sys.stderr)
        return USAGE
    try:
        sent = asyncio.run(produce(events, client, progress=bar))
    except Exception as exc:  # connection refused, auth failure, unknown host: one clear line
        print(f"pipesentry demo: cannot produce to Kafka at {', '.join(client['bootstrap_servers'])}: {exc}",
              file=sys.stderr)
        return UNAVAILABLE
    for topic, count in sorted(sent.items()):
        print(f"{count:>7,}  {topic}")
    print("\nto detect them, give pipesentry run these kafka.topics (log source per topic):")
    print(yaml.safe_dump({"kafka": {"topics": topics_config()}}, sort_keys=False).rstrip())
    return OK
