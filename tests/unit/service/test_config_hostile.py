"""Config errors name file, line, column and key, never the value (a credential may be on the line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import ConfigError, Settings, load_settings

SECRET = "hunter2-very-secret-value"


@pytest.mark.parametrize("text, where", [
    (f"kafka:\n  security:\n    sasl_password: {SECRET}: x\n", "line 3, column"),
    (f"api: {{tokens: [{{token: '{SECRET}}}]}}\n", "line 2, column 1: while scanning a quoted scalar"),
    (f"api:\n  tokens:\n  - token: {SECRET}\n\tname: x\n", "line 4, column"),
])
def test_yaml_syntax_error_names_the_place_not_the_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert SECRET not in message
    assert str(path) in message and where in message


def test_config_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["x0: &a0 [" + ",".join(["lol"] * 10) + "]"]
    lines += [f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "c.yml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"nodes \(aliases expanded\)"):
        load_settings(path)


@pytest.mark.parametrize("data", [
    {"api": {"tokens": [{"name": "a", "role": "admin", "token": [SECRET]}]}},
    {"api": {"port": SECRET}},
    {"alerting": {"sinks": [{"type": "elasticsearch", "name": "es", "hosts": ["http://x"], "password": [SECRET]}]}},
])
def test_validation_errors_never_echo_input_values(tmp_path: Path, data: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**data)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.errors(include_input=False))


@pytest.mark.parametrize("text, overrides, message", [
    ("1: x\n", None, "top-level keys must be strings, found a int key"),
    ("null: x\n", None, "found a NoneType key"),
    ("api: 5\n", {"api.port": 1}, "cannot set api.port: api is not a mapping"),
])
def test_odd_keys_and_overrides_are_config_errors(tmp_path: Path, text: str, overrides: dict[str, object] | None,
                                                  message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, overrides=overrides)
