"""Detection and redaction agree: the rule pack's secret rules and ``detectors/redaction.FORMATS``.

Each format names the rule that detects it. Both directions are checked: a format's sample fires
its rule (the redactor does not hide something the rule pack would not call a secret by another
shape), and every ``match`` example event of a secret rule stops matching once its message is
redacted (what the rule detects, the redactor removes). A new ``ci_log_*`` rule about leaked
credentials (ATT&CK T1552) without a format fails here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.redaction import FORMATS, Redactor
from detectors.sigma import Ruleset
from service.rules import load_rules
from tests.conftest import PROJECT_RULES

R = Redactor(b"agreement")
RULED = sorted({f.rule for f in FORMATS if f.rule})


def _secret_rule_files() -> list[Path]:
    out = []
    for path in sorted((PROJECT_RULES / "ci").glob("ci_log_*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if any(str(t).startswith("attack.t1552") for t in doc.get("tags", [])):
            out.append(path)
    return out


@cache
def _ruleset(stem: str) -> Ruleset:
    result = load_rules([PROJECT_RULES / "ci" / f"{stem}.yml"], skip_invalid=False)
    assert result.ruleset.rules, stem
    return result.ruleset


def _match_events(stem: str) -> list[dict[str, Any]]:
    data = json.loads((PROJECT_RULES / "ci" / f"{stem}.events.json").read_text(encoding="utf-8"))
    return list(data["match"])


def test_every_secret_rule_of_the_pack_has_a_format() -> None:
    stems = [p.stem for p in _secret_rule_files()]
    assert stems, "no secret rules found under sigma-rules/ci"
    assert sorted(stems) == RULED


@pytest.mark.parametrize("spec", [f for f in FORMATS if f.rule], ids=lambda f: f"{f.kind}:{f.rule}")
def test_a_format_sample_fires_its_rule(spec) -> None:  # type: ignore[no-untyped-def]
    assert _ruleset(spec.rule).evaluate({"message": spec.sample}), spec.sample


@pytest.mark.parametrize("stem", RULED)
def test_redacted_examples_no_longer_fire_the_rule(stem: str) -> None:
    rs = _ruleset(stem)
    events = _match_events(stem)
    assert events
    for event in events:
        assert rs.evaluate(event), event  # the example is a real detection ...
        redacted = {k: R.text(v) if isinstance(v, str) else v for k, v in event.items()}
        assert not rs.evaluate(redacted), redacted["message"]  # ... and redaction removes what it found
