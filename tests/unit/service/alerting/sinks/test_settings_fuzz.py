"""Fuzz the registered sink and receiver settings through the alerting config model.

Any mapping is either accepted or refused with a ``ValidationError`` (never another
exception), and an accepted one reads back as the same model from its dump.
``PIPESENTRY_FUZZ_EXAMPLES=5000`` runs longer.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.alerting.config import AlertingSettings
from service.alerting.sinks import RECEIVERS, SINKS

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**7), st.floats(allow_nan=True),
                    st.text(max_size=12), st.just("http://127.0.0.1:9/x"), st.just("\x00"), st.just("/"))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=3))


def plausible(annotation: object) -> st.SearchStrategy[Any]:
    """Values of the field's type (within usual bounds), so many drawn documents are valid."""
    text = str(annotation)
    if "RetrySettings" in text:
        return st.fixed_dictionaries({}, optional={"initial_backoff_s": st.floats(0.01, 1), "breaker_failures": st.integers(1, 9)})
    if "bool" in text:
        return st.booleans()
    if "int" in text:
        return st.integers(1, 8)
    if "float" in text:
        return st.floats(0.01, 10.0)
    if "list[str]" in text:
        return st.lists(st.just("http://127.0.0.1:9"), min_size=1, max_size=2)
    if "dict[str, str]" in text or "list[dict" in text:
        return st.dictionaries(st.text("abc-", min_size=1, max_size=4), st.text(max_size=4), max_size=2).map(
            lambda d: [d] if "list[dict" in text else d)
    if "Literal" in text:
        return st.sampled_from([a for a in getattr(annotation, "__args__", ()) if isinstance(a, str)] or [""])
    return st.text("abcxyz:/.", min_size=1, max_size=12)


@st.composite
def entry(draw: st.DrawFn, role: str) -> dict[str, Any]:
    registry = SINKS if role == "sinks" else RECEIVERS
    name = draw(st.sampled_from(registry.names()))
    fields = [f for f in registry.get(name).settings.model_fields if f != "type"]
    secrets = [f for f, info in registry.get(name).settings.model_fields.items() if "SecretStr" in str(info.annotation)]
    keys = draw(st.lists(st.sampled_from(fields), max_size=6, unique=True))
    if draw(st.integers(0, 9)) == 0:  # a key the model does not have, or a secret from a file
        keys.append(draw(st.sampled_from([f"{s}_file" for s in secrets] + ["bogus", "type_file"])))
    doc: dict[str, Any] = {"type": draw(st.sampled_from([name.upper(), "", 3]))} \
        if draw(st.integers(0, 9)) == 0 else {"type": name}
    model_fields = registry.get(name).settings.model_fields
    for key in keys:
        info = model_fields.get(key)
        doc[key] = draw(VALUES if info is None or draw(st.integers(0, 9)) == 0 else plausible(info.annotation))
    for required, info in registry.get(name).settings.model_fields.items():
        if info.is_required() and required != "type" and draw(st.integers(0, 9)) > 0:
            doc.setdefault(required, "http://127.0.0.1:9/x")
    return doc


@settings(max_examples=int(os.environ.get("PIPESENTRY_FUZZ_EXAMPLES") or 300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entry("sinks"), max_size=3), st.lists(entry("receivers"), max_size=3))
def test_any_sink_mapping_is_accepted_or_refused_cleanly(sinks: list[dict[str, Any]],
                                                         receivers: list[dict[str, Any]]) -> None:
    for i, doc in enumerate(sinks + receivers):
        doc.setdefault("name", f"n{i}")  # names must be unique; a drawn name may still collide
    try:
        parsed = AlertingSettings.model_validate({"sinks": sinks, "receivers": receivers})
    except ValidationError:
        event("refused")
        return
    event(f"accepted {len(parsed.sinks)} sinks, {len(parsed.receivers)} receivers")
    again = AlertingSettings.model_validate(parsed.model_dump())
    assert again == parsed
    assert [type(s) for s in again.sinks] == [SINKS.get(s.type).settings for s in parsed.sinks]
    assert [type(r) for r in again.receivers] == [RECEIVERS.get(r.type).settings for r in parsed.receivers]
