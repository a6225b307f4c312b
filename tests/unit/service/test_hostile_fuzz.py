"""Property-based fuzzing of every decoder, the rule/correlation/check loaders and the config model.

Inputs are mutated valid documents (see ``fuzz_helpers``); only the documented error may escape.
Time per input is bounded by the loaders' structural limits (bytes, depth, aliases expanded); the
generous ``deadline`` only catches a regression by orders of magnitude. ``bench/fuzz_inputs.py``
runs the same targets for minutes.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzz_targets import Target, all_targets, sweeps

TARGETS = {t.name: t for t in all_targets()}
EXAMPLES = {"rules": 60, "checks": 60, "config": 80, "config-text": 40}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_only_documented_errors_escape(name: str) -> None:
    target: Target = TARGETS[name]

    @settings(max_examples=EXAMPLES.get(name, 150), deadline=None, database=None,  # no timed assertion: load varies
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        value = data.draw(target.inputs, label="input")
        finding = target.check(value)
        assert finding is None, finding

    run()


SWEEPS = sweeps()


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_path_of_every_seed_with_every_wrong_type(name: str) -> None:
    """Deterministic: each seed document with one path deleted or replaced by each wrong type."""
    inputs, check = SWEEPS[name]
    findings = {finding for finding in map(check, inputs) if finding is not None}
    assert not findings, sorted(findings)[:5]
