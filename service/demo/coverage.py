"""Per-rule alert counts of the pack over the sample corpus, a normal day and the demo day.

``python -m service.demo.coverage`` prints the Markdown table kept in ``docs/rule-pack.md``.

- *sample corpus*: every event of every ``*.events.json`` (match and near-miss events of all
  rules) evaluated against the whole pack with its file's log source: a rule's count includes
  hits on other rules' samples, so cross-firing shows up;
- *normal day*: raw matches over a generated day without stories (building blocks of
  correlations are expected to fire here; they are suppressed in alerts);
- *demo*: alerts of ``pipesentry demo`` (seed 7) through the detection stage.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from detectors.model import LogSource
from service.demo.corpus import generate
from service.demo.runner import build_detectors, run
from service.demo.sources import BY_NAME
from service.rules import default_rules_dir, load_rules


@dataclass
class RuleRow:
    path: str
    title: str
    level: str
    kind: str
    sample_match: str
    sample_total: int
    normal: int
    demo: int


def _sample_counts(root: Path) -> tuple[Counter[str], dict[str, str]]:
    """Hits per rule title over every sample event, and ``hit/total`` of each rule's own match events."""
    cache: dict[str | None, object] = {}
    totals: Counter[str] = Counter()
    own: dict[str, str] = {}
    for events_file in sorted(root.rglob("*.events.json")):
        rule_file = events_file.with_name(events_file.name[: -len(".events.json")] + ".yml")
        doc = yaml.safe_load(rule_file.read_text(encoding="utf-8"))
        data = json.loads(events_file.read_text(encoding="utf-8"))
        if "correlation" in doc:
            continue
        pipeline = data.get("pipeline")
        if pipeline not in cache:
            cache[pipeline] = load_rules([root], [root / pipeline] if pipeline else []).ruleset
        ruleset = cache[pipeline]
        ls = doc["logsource"]
        source = LogSource(ls.get("product"), ls.get("category"), ls.get("service"))
        hit = 0
        for kind in ("match", "nomatch"):
            for event in data.get(kind, []):
                titles = {m.rule.title for m in ruleset.evaluate(event, source)}  # type: ignore[attr-defined]
                totals.update(titles)
                hit += kind == "match" and doc["title"] in titles
        own[doc["title"]] = f"{hit}/{len(data.get('match', []))}"
    return totals, own


def rows(root: Path | None = None, seed: int = 7) -> list[RuleRow]:
    root = root or default_rules_dir()
    totals, own = _sample_counts(root)
    rs = load_rules([root], [root / "pipelines" / "nginx.pipeline"]).ruleset
    envoy = load_rules([root / "web"], [root / "pipelines" / "envoy.pipeline"]).ruleset
    normal: Counter[str] = Counter()
    for item in generate(seed, stories=()):
        ruleset = envoy if item.source == "envoy" else rs
        normal.update(m.rule.title for m in ruleset.evaluate(item.event, BY_NAME[item.source].logsource))
    demo = run(generate(seed), build_detectors(root)).rule_counts()
    out: list[RuleRow] = []
    for path in sorted(root.rglob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        title = doc["title"]
        kind = "correlation" if "correlation" in doc else "sigma"
        out.append(RuleRow(str(path.relative_to(root)), title, doc.get("level", ""), kind,
                           own.get(title, "seq"), totals[title], normal[title], demo[title]))
    return out


def markdown(table: list[RuleRow]) -> str:
    lines = ["| rule file | title | level | own samples | sample corpus | normal day | demo |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in table:
        lines.append(f"| `{r.path}` | {r.title} | {r.level} | {r.sample_match} | {r.sample_total} | "
                     f"{r.normal} | {r.demo} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(rows()))
