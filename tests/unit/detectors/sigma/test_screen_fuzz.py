"""Differential fuzzing of the native screen against the Python engine (see ``bench/fuzz_screen.py``).

A cleared event the engine matches is a lost alert, and so is a decision that a matching rule does
not match (a rule decided to match that does not is an invented one). Seeded, and bounded by input counts (not
time), so each run tries the same inputs whatever the load; ``bench/fuzz_screen.py`` runs
longer and with other seeds. Set ``PIPESENTRY_FUZZ_SEED`` to try another seed here.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_screen import (
    MAX_BYTES,
    MAX_DEPTH,
    NUMBER_SPELLINGS,
    SIGMAHQ_SMALL,
    Report,
    corpus_targets,
    generated_targets,
    run,
)
from detectors.model import LogSource
from detectors.sigma.screen import AVAILABLE
from detectors.sigma.text import as_text
from tests.conftest import PROJECT_RULES
from tests.support.sigma import build, rule_yaml

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")

SEED = int(os.environ.get("PIPESENTRY_FUZZ_SEED", "20261203"))


def assert_sound(report: Report) -> None:
    print(json.dumps({k: v for k, v in report.as_dict().items() if k != "samples"}))
    assert not report.findings, json.dumps(report.samples[:10], indent=1)
    # a fuzzer whose events all go to Python, or none of which match, proves nothing; nor one that
    # judges no decision of the screen (or no decision that some rule matches)
    assert report.matching > report.tried // 10 and report.cleared > report.tried // 10
    assert report.decided > report.tried // 10 and report.decided_matching > report.tried // 20
    # ... nor one that checks no matched fields the screen shows itself
    assert report.shown_matches > report.decided_matching // 4


def test_generated_modifier_rules_and_the_rule_pack():
    """Every modifier the engine supports, under ``sel``, ``not sel`` and mixed conditions, and the
    project's rule pack (its log source routes and the all-rules route)."""
    targets = generated_targets(random.Random(SEED)) + corpus_targets([PROJECT_RULES])
    assert_sound(run(targets, seconds=math.inf, seed=SEED, max_inputs=50_000))


def test_generated_rules_and_the_rule_pack_with_cased_field_names():
    """The same with ``rules.field_names: sensitive``: keys in another case than the rule's are
    other fields, for the screen's clearing and its decisions alike."""
    targets = generated_targets(random.Random(SEED), cased_fields=True) + corpus_targets([PROJECT_RULES],
                                                                                         cased_fields=True)
    assert_sound(run(targets, seconds=math.inf, seed=SEED + 1, max_inputs=50_000))


@pytest.mark.slow
def test_sigmahq_rules(shared_dir: Path):
    folders = [shared_dir / "sigmahq" / folder for folder in SIGMAHQ_SMALL]
    assert_sound(run(corpus_targets(folders), seconds=math.inf, seed=SEED, max_inputs=30_000))


LS = LogSource(product="test")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.integers(-(2 ** 70), 2 ** 70).map(float),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.integers(2 ** 52, 2 ** 64).map(float)),
       spelling=st.sampled_from(NUMBER_SPELLINGS))
def test_any_number_spelling_matching_a_rule_goes_to_python(value: float, spelling):
    """The rule is the engine's own text of the number orjson reads: the screen must not clear it."""
    raw = b'{"n": %s}' % spelling(value).encode()
    text = as_text(orjson.loads(raw)["n"])
    detection = {"sel": {"n": text}, "condition": "sel"}
    ruleset = build(rule_yaml(detection))
    assert ruleset.evaluate(orjson.loads(raw), LS)
    screen = ruleset.screen(LS)
    assert screen is not None
    assert screen.scan([raw], [0], None, MAX_BYTES, MAX_DEPTH)[0] == [0]
