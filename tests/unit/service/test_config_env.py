"""``${VAR}`` in the YAML config: expanded once at load, a clear error for an unset variable,
expanded credentials masked in logs (the docs' own example is loaded as written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, load_settings
from service.logs import REDACTOR, redact
from tests.conftest import ROOT

DOCS = ROOT / "docs"


@pytest.fixture(autouse=True)
def _fresh_redactor():
    REDACTOR.clear()
    yield
    REDACTOR.clear()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipesentry.yml"
    path.write_text(text)
    return path


def test_references_defaults_and_escapes_are_expanded(tmp_path):
    path = write(tmp_path, "data_dir: ${DATA_ROOT}/pipesentry\n"
                           "api: {host: '${API_HOST:-127.0.0.2}', port: '${API_PORT}'}\n"
                           "rules: {paths: ['$${NOT_EXPANDED}', '${EMPTY:-fallback}']}\n")
    s = load_settings(path, environ={"DATA_ROOT": "/srv", "API_PORT": "9443", "EMPTY": ""})
    assert str(s.data_dir) == "/srv/pipesentry"
    assert s.api.host == "127.0.0.2" and s.api.port == 9443
    assert [str(p) for p in s.rules.paths] == ["${NOT_EXPANDED}", "fallback"]


def test_an_expanded_value_stays_a_string(tmp_path):
    path = write(tmp_path, "api: {tokens: [{name: ci, role: read, token: '${TOKEN}'}]}\n")
    s = load_settings(path, environ={"TOKEN": "0000000000000123"})
    assert s.api.tokens[0].token is not None
    assert s.api.tokens[0].token.get_secret_value() == "0000000000000123"


def test_an_unset_variable_names_itself_and_the_key_and_no_value(tmp_path):
    path = write(tmp_path, "api:\n  tokens:\n    - {name: ci, token: 'present-secret-value-1', role: read}\n"
                           "    - {name: ops, token: '${OPS_TOKEN}', role: admin}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    message = str(err.value)
    assert "OPS_TOKEN" in message and "api.tokens[1].token" in message
    assert "present-secret-value-1" not in message


def test_a_malformed_reference_is_an_error(tmp_path):
    path = write(tmp_path, "data_dir: '${not a name}'\n")
    with pytest.raises(ConfigError, match=r"data_dir: invalid reference"):
        load_settings(path, environ={})


def test_keys_are_not_expanded(tmp_path):
    path = write(tmp_path, "'${X}': 1\n")
    with pytest.raises(ConfigError, match=r"\$\{X\}: unknown key"):
        load_settings(path, environ={"X": "log_level"})


def test_the_alerting_docs_example_loads_with_the_api_key_from_the_environment(tmp_path):
    text = (DOCS / "alerting.md").read_text()
    block = text.split("## Configuration example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    assert "api_key: ${SEARCH_API_KEY}" in block
    key = "c2VhcmNoLWFwaS1rZXktZnJvbS1lbnY"
    s = load_settings(write(tmp_path, block), environ={"SEARCH_API_KEY": key})
    search = next(sink for sink in s.alerting.sinks if sink.type == "elasticsearch")
    assert search.api_key is not None and search.api_key.get_secret_value() == key  # type: ignore[attr-defined]
    assert "${" not in repr(s.model_dump(mode="json"))
    # an expanded credential is masked in log lines from the moment the config is read
    assert key not in redact(f"connecting with {key}")


def test_expanded_credentials_in_plain_string_fields_reach_the_redactor(tmp_path):
    hook = "https://hooks.example.org/in/abcdefghijklmnopqrstu"
    path = write(tmp_path, "alerting:\n  receivers:\n"
                           "    - {type: webhook, name: hook, url: '${HOOK_URL}'}\n")
    load_settings(path, environ={"HOOK_URL": hook})
    assert hook not in redact(f"POST {hook} failed")
    # a value under an ordinary key is not a secret: it is left readable
    load_settings(write(tmp_path, "api: {host: '${BIND}'}\n"), environ={"BIND": "192.0.2.10"})
    assert redact("listening on 192.0.2.10") == "listening on 192.0.2.10"
