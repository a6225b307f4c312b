"""Helpers for the Sigma engine tests: build one-rule rulesets and check both evaluators agree."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import yaml

from detectors.model import LogSource, Match
from detectors.sigma import Ruleset, RuleText, compile_ruleset

_ids = itertools.count(1)


def rule_yaml(detection: dict[str, Any], logsource: dict[str, str] | None = None, **meta: Any) -> str:
    rule: dict[str, Any] = {
        "title": meta.pop("title", "test rule"),
        "id": meta.pop("id", f"00000000-0000-4000-8000-{next(_ids):012d}"),
        "logsource": logsource or {"product": "test"},
        "detection": detection,
    }
    rule.update(meta)
    return yaml.safe_dump(rule, sort_keys=False, allow_unicode=True)


def build(*texts: str, pipelines: tuple[str, ...] = (), cased_fields: bool = False) -> Ruleset:
    result = compile_ruleset([RuleText(f"rule{i}.yml", t, "unit") for i, t in enumerate(texts)],
                             pipelines=list(pipelines), cased_fields=cased_fields)
    assert result.errors == [], result.errors
    return result.ruleset


def agree(ruleset: Ruleset, event: Any, logsource: LogSource | None = None) -> list[Match]:
    """Evaluate with the index and naively; both must give the same matches, and the native
    screen (when built) must not clear a matching event."""
    fast = ruleset.evaluate(event, logsource)
    slow = ruleset.evaluate_naive(event, logsource)
    assert [(m.rule.id, m.fields) for m in fast] == [(m.rule.id, m.fields) for m in slow]
    screen = ruleset.screen(logsource)
    if fast and screen is not None and isinstance(event, dict):
        try:
            raw = orjson.dumps(event)
        except TypeError:  # not JSON (bytes, dates ...): no Kafka message looks like it
            return fast
        if orjson.loads(raw) == event:
            picked, _ = screen.scan([raw], [], None, 1 << 20, 64)
            assert picked == [0], f"the screen cleared a matching event: {raw!r}"
    return fast


def hit(detection: dict[str, Any], event: Any, *, cased_fields: bool = False) -> bool:
    """Whether a rule with this detection matches the event (``cased_fields``: field names as spelled)."""
    return bool(agree(build(rule_yaml(detection), cased_fields=cased_fields), event))


def assert_same_as_full(texts: list[RuleText], memo: Any, pipelines: tuple[str, ...] = ()) -> Any:
    """Compile ``texts`` with ``memo`` (a :class:`~detectors.sigma.memo.CompileMemo`) and without:
    the results must be the same (rules, atoms, errors, correlations, the unrouted route's index
    and screen plan: what a snapshot holds, compared value by value); returns the incremental result.

    The snapshot bytes are compared too when there is no processing pipeline: with one, equal values
    can pickle differently (a pipeline's field names are one string object per compile, and a
    reused rule's atoms keep the previous compile's)."""
    import pickle

    from detectors.sigma.snapshot import MAGIC, snapshot

    full = compile_ruleset(texts, pipelines=list(pipelines))
    incremental = compile_ruleset(texts, pipelines=list(pipelines), memo=memo)
    assert incremental.errors == full.errors
    mine, theirs = snapshot(incremental), snapshot(full)
    assert mine is not None and theirs is not None
    if not pipelines:
        assert mine == theirs
    a, b = pickle.loads(mine[len(MAGIC):]), pickle.loads(theirs[len(MAGIC):])
    assert a.keys() == b.keys()
    for key in a:
        if key == "route":
            assert pickle.loads(a[key]) == pickle.loads(b[key])
        elif key == "correlations":
            assert [(info, pickle.dumps(corr)) for info, corr in a[key]] == [
                (info, pickle.dumps(corr)) for info, corr in b[key]]
        else:
            assert a[key] == b[key], key
    return incremental
