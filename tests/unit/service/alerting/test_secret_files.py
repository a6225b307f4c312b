"""Secrets of sinks and receivers can come from mounted files (``X_file``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.alerting.config import AlertingSettings


def test_receiver_and_sink_secrets_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "rk").write_text("routing-key-123\n")
    (tmp_path / "pw").write_text("s3cret")
    settings = AlertingSettings.model_validate({
        "receivers": [{"type": "pagerduty", "name": "pd", "routing_key_file": str(tmp_path / "rk")}],
        "sinks": [{"type": "elasticsearch", "password_file": str(tmp_path / "pw"), "username": "u"}],
    })
    receiver = settings.receivers[0]
    assert receiver.routing_key.get_secret_value() == "routing-key-123"  # type: ignore[union-attr]
    sink = next(s for s in settings.sinks if s.type == "elasticsearch")
    assert sink.password.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert "s3cret" not in repr(settings)


def test_missing_or_empty_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ValidationError, match=r"routing_key file .* is empty"):
        AlertingSettings.model_validate(
            {"receivers": [{"type": "pagerduty", "routing_key_file": str(tmp_path / "empty")}]})
    with pytest.raises(ValidationError, match="cannot read api_key file"):
        AlertingSettings.model_validate(
            {"receivers": [{"type": "opsgenie", "api_key_file": str(tmp_path / "absent")}]})


def test_file_key_for_a_non_secret_field_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="url_file"):
        AlertingSettings.model_validate({"receivers": [{"type": "webhook", "url_file": "x", "url": "http://h"}]})
