"""``hunt:`` settings: credentials kept out of URLs and the command line, secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.hunt.settings import HuntSettings
from service.hunt.timerange import TimeRange, parse_when


def test_secrets_from_files_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "key"
    key.write_text("c2VjcmV0LWtleQ==\n")
    settings = HuntSettings.model_validate({"api_key_file": str(key)})
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "c2VjcmV0LWtleQ=="
    assert "c2VjcmV0" not in repr(settings)
    monkeypatch.setenv("PIPESENTRY_HUNT__USERNAME", "hunter")
    monkeypatch.setenv("PIPESENTRY_HUNT__PASSWORD", "pw-from-env")
    from_env = Settings().hunt
    assert from_env.username == "hunter" and from_env.password is not None


@pytest.mark.parametrize(("given", "says"), [
    ({"url": "http://user:pw@search:9200"}, "no credentials in the URL"),
    ({"url": "ftp://search"}, "expected http(s)"),
    ({"password": "x"}, "password needs username"),
    ({"api_key_file": "/nonexistent/key"}, "cannot read api_key file"),
    ({"page_size": 20_000}, "less than or equal to 10000"),
])
def test_bad_settings_are_refused_without_echoing_secrets(given: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HuntSettings.model_validate(given)
    assert says in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_time_expressions() -> None:
    now = 1_800_000_000.0
    assert parse_when("7d", now) == now - 7 * 86_400
    assert parse_when("90s", now) == now - 90
    assert parse_when("2w", now) == now - 14 * 86_400
    assert parse_when("2026-11-24T00:00:00Z", now) == 1_795_478_400.0
    assert parse_when("1795478400", now) == 1_795_478_400.0
    for bad in ("yesterday", "7y", "-5", "1e20"):
        with pytest.raises(ValueError):
            parse_when(bad, now)
    with pytest.raises(ValueError, match="empty"):
        TimeRange(10.0, 10.0)
    assert TimeRange().range_filter("@timestamp") is None
    assert TimeRange(1.5).range_filter(None) is None
    assert TimeRange(until=2.0).range_filter("ts") == {"range": {"ts": {"format": "epoch_millis", "lt": 2000}}}
