"""Time parameters: unix seconds, RFC 3339 and times relative to now."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from service.api.params import query_time

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("value", "expected"), [
    ("now", NOW), ("15m", NOW - 900), ("24h", NOW - 86_400), ("now-7d", NOW - 7 * 86_400), ("-30s", NOW - 30),
    ("2w", NOW - 14 * 86_400), ("NOW-1H", NOW - 3600), ("1700000000", 1_700_000_000.0),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0), ("", None), (None, None),
])
def test_times(value: str | None, expected: float | None) -> None:
    assert query_time(value, "since", clock=lambda: NOW) == expected


@pytest.mark.parametrize("value", ["now+1h", "15", "15 m", "1y", "now-", "now-9999999999d", "yesterday", "nan"])
def test_refused(value: str) -> None:
    if value == "15":  # a bare number is unix seconds (1970): accepted
        assert query_time(value, "since", clock=lambda: NOW) == 15.0
        return
    with pytest.raises(HTTPException) as caught:
        query_time(value, "since", clock=lambda: NOW)
    assert caught.value.status_code == 422 and "since" in str(caught.value.detail)
