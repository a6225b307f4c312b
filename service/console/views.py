"""What the console's pages show, computed without I/O: links, event fields, the coverage matrix.

Every value here may come from an event (attacker-controlled): it is returned as
plain text for the templates to escape (Jinja autoescape); a link is only ever
an ``http``/``https`` URL (:func:`safe_url`), never ``javascript:`` or ``data:``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from detectors.alert import ATTACK_TACTICS, parse_attack_tags
from detectors.model import RuleInfo

ATTACK_URL = "https://attack.mitre.org"
MAX_FIELDS = 2000
"""Rows of the original event shown; the rest is summarised (a huge event stays a page)."""
MAX_VALUE = 4096
RANGES = {"15m": "15m", "1h": "1h", "24h": "24h", "7d": "now-7d", "30d": "now-30d"}
"""The queue's time-range choices as ``since`` values of the API (``custom`` uses since/until as given)."""


def safe_url(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL (shown as a link), else None (shown as text)."""
    if not isinstance(value, str) or len(value) > 2048:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` when it is a path on this server (``/x``, not ``//host`` or ``/\\host``), else ``default``."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(c in value for c in "\r\n\t\\") or any(ord(c) < 0x20 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


@dataclass(frozen=True, slots=True)
class Link:
    text: str
    url: str | None


def attack_links(tags: Iterable[str]) -> list[Link]:
    """ATT&CK techniques and tactics of a rule's tags, each with its page on attack.mitre.org."""
    threat = parse_attack_tags(tuple(tags))
    links = [Link(t, f"{ATTACK_URL}/techniques/{t}/") for t in threat.technique_ids]
    links += [Link(s, f"{ATTACK_URL}/techniques/{s.replace('.', '/')}/") for s in threat.subtechnique_ids]
    links += [Link(f"{i} {n}", f"{ATTACK_URL}/tactics/{i}/") for i, n in zip(threat.tactic_ids, threat.tactic_names,
                                                                             strict=False)]
    return links


@dataclass(frozen=True, slots=True)
class FieldRow:
    path: str
    value: str
    matched: bool


def _flatten(value: Any, prefix: str, out: list[tuple[str, Any]]) -> None:
    if len(out) >= MAX_FIELDS:
        return
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        for index, inner in enumerate(value):
            _flatten(inner, f"{prefix}[{index}]", out)
    else:
        out.append((prefix, value))


def event_rows(original: str, matched: Sequence[Mapping[str, Any]]) -> tuple[list[FieldRow], bool]:
    """The original event as (field path, value, whether a rule matched this field) rows, and whether the
    text was not a JSON object (then it is one row, ``original``)."""
    names = {str(m.get("field", "")) for m in matched}
    try:
        doc = orjson.loads(original) if original else {}
    except orjson.JSONDecodeError:
        return [FieldRow("original", original[:MAX_VALUE], False)], True
    if not isinstance(doc, dict):
        return [FieldRow("original", original[:MAX_VALUE], False)], True
    flat: list[tuple[str, Any]] = []
    _flatten(doc, "", flat)
    rows = []
    for path, value in flat:
        text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        rows.append(FieldRow(path, text[:MAX_VALUE], path in names or path.split(".")[-1] in names))
    return rows, False


def contributing_events(details: Mapping[str, Any] | None) -> list[Any]:
    """The events a correlation alert carries in its details (as the detector gave them), if any."""
    if not details:
        return []
    for key in ("events", "contributors", "contributing_events", "contributing", "samples"):
        found = details.get(key)
        if isinstance(found, list):
            return found[:100]
    return []


def group_key(details: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The values that make an alert's group: a correlation's ``group`` (its group-by fields) or an
    anomaly check's ``key``, as sorted (field, value) pairs; empty for a plain Sigma alert."""
    if not details:
        return ()
    for name in ("group", "key"):
        found = details.get(name)
        if isinstance(found, dict) and found:
            return tuple(sorted((str(k), str(v)) for k, v in found.items()))
    return ()


@dataclass(frozen=True, slots=True)
class Coverage:
    tactics: list[tuple[str, str]]
    """(id, name) of each tactic with a rule, in ATT&CK's order."""
    techniques: list[str]
    cells: dict[tuple[str, str], int]
    """(technique, tactic id) -> rules tagged with both."""
    technique_rules: Counter[str]
    untagged: int


def coverage(rules: Sequence[RuleInfo]) -> Coverage:
    """Techniques x tactics of the loaded rules' ATT&CK tags, with rule counts."""
    order = {tid: i for i, (tid, _) in enumerate(ATTACK_TACTICS.values())}
    names = dict(ATTACK_TACTICS.values())
    cells: Counter[tuple[str, str]] = Counter()
    per_technique: Counter[str] = Counter()
    tactics: set[str] = set()
    untagged = 0
    for rule in rules:
        threat = parse_attack_tags(rule.tags)
        if not threat.technique_ids and not threat.tactic_ids:
            untagged += 1
            continue
        rule_tactics = threat.tactic_ids or ("",)
        tactics.update(t for t in threat.tactic_ids)
        for technique in threat.technique_ids:
            per_technique[technique] += 1
            for tactic in rule_tactics:
                cells[(technique, tactic)] += 1
    ordered = sorted(tactics, key=lambda t: order.get(t, 99))
    shown = [(t, names.get(t, t)) for t in ordered]
    if any(tactic == "" for _, tactic in cells):
        shown.append(("", "(no tactic tag)"))
    return Coverage(shown, sorted(per_technique), dict(cells), per_technique, untagged)


def navigator_layer(cov: Coverage, name: str = "pipesentry rules") -> dict[str, Any]:
    """An ATT&CK Navigator layer (format 4.5) scoring each covered technique by its rule count."""
    top = max(cov.technique_rules.values(), default=1)
    by_name = {tid: key for key, (tid, _) in ATTACK_TACTICS.items()}
    techniques = []
    for (technique, tactic), count in sorted(cov.cells.items()):
        entry: dict[str, Any] = {"techniqueID": technique, "score": count, "enabled": True,
                                 "comment": f"{count} rule(s)"}
        if tactic in by_name:
            entry["tactic"] = by_name[tactic]
        techniques.append(entry)
    return {"name": name, "versions": {"layer": "4.5", "navigator": "4.9.1", "attack": "14"},
            "domain": "enterprise-attack", "description": "Techniques the loaded pipesentry rules detect",
            "techniques": techniques,
            "gradient": {"colors": ["#ffe8a3", "#e8590c"], "minValue": 0, "maxValue": top},
            "legendItems": [], "showTacticRowBackground": False}


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


STAGES = ("plan", "code", "build", "test", "release", "deploy", "monitor")
"""The delivery pipeline's stages, in order (the coverage page's second view)."""
STAGE_OF: Mapping[str, str] = {
    "jira": "plan", "confluence": "plan", "linear": "plan",
    "github": "code", "gitlab": "code", "bitbucket": "code", "gitea": "code",
    "jenkins": "build", "ci_job_log": "build", "buildkite": "build", "circleci": "build",
    "appsec": "test", "security_finding": "test", "sonarqube": "test",
    "container_registry": "release", "registry": "release", "artifactory": "release", "nexus": "release",
    "kubernetes": "deploy", "argocd": "deploy", "flux": "deploy", "helm": "deploy", "terraform": "deploy",
    "aws": "monitor", "gcp": "monitor", "azure": "monitor", "linux": "monitor", "windows": "monitor",
    "webserver": "monitor", "application": "monitor", "json": "monitor", "envoy": "monitor", "nginx": "monitor",
}
"""Log source words (product, then category, then service) to the stage their events come from."""


def stage_of(rule: RuleInfo) -> str | None:
    """The stage a rule watches, from its log source (product first: ``jenkins`` + ``ci_job_log`` is build)."""
    ls = rule.logsource
    for word in (ls.product, ls.category, ls.service):
        if word and word.lower() in STAGE_OF:
            return STAGE_OF[word.lower()]
    return None


def stages(rules: Sequence[RuleInfo]) -> list[tuple[str, int, list[str]]]:
    """(stage, rules watching it, up to five of their titles) for every stage, in pipeline order;
    rules whose log source names no stage (correlations, anomaly checks) are counted under ``other``."""
    found: dict[str, list[str]] = {s: [] for s in (*STAGES, "other")}
    for rule in rules:
        found[stage_of(rule) or "other"].append(rule.title)
    return [(s, len(titles), sorted(titles)[:5]) for s, titles in found.items()]
