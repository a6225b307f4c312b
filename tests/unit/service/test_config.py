"""Settings: YAML + environment precedence, unknown keys named, secrets from files, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import main
from service.config import ConfigError, describe, load_settings

KAFKA_YAML = """
kafka:
  bootstrap_servers: ["127.0.0.1:9092"]
  group_id: from-file
  topics:
    ci-logs: {decoder: json, logsource: {category: ci_job_log}, timestamp_field: ts}
    syslog: {decoder: syslog, logsource: {product: linux}}
  dead_letter_topic: dlq
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("PIPESENTRY_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipesentry.yml"
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_mode():
    s = load_settings()
    assert s.kafka is None and s.http_ingest.enabled and s.stdin.enabled == "auto"
    assert (s.api.host, s.api.port, s.api.tokens) == ("127.0.0.1", 8080, [])
    assert s.rules.resolved_paths()[0].name == "sigma-rules"
    assert [sink.type for sink in s.alerting.sinks] == ["stdout", "store"]


def test_yaml_file_and_topic_mapping(tmp_path):
    s = load_settings(write(tmp_path, KAFKA_YAML))
    assert s.kafka is not None and s.kafka.group_id == "from-file"
    ci = s.kafka.topic_settings("ci-logs")
    assert ci.decoder.type == "json" and ci.logsource.category == "ci_job_log" and ci.timestamp_field == "ts"
    assert s.kafka.topic_settings("syslog").decoder.type == "syslog"
    assert s.kafka.topic_settings("other") == s.kafka.pattern_defaults


def test_environment_overrides_file_with_nested_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPESENTRY_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("PIPESENTRY_API__PORT", "9191")
    monkeypatch.setenv("PIPESENTRY_LOG_LEVEL", "debug")
    s = load_settings(write(tmp_path, KAFKA_YAML))
    assert s.kafka.group_id == "from-env"
    assert s.kafka.bootstrap_servers == ["127.0.0.1:9092"]  # the rest of the file's section stays
    assert s.api.port == 9191 and s.log_level == "DEBUG"


def test_unknown_keys_and_wrong_types_are_named(tmp_path):
    path = write(tmp_path, KAFKA_YAML + "  bootstrap_server: x\napi:\n  port: eighty\nrulez: []\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert "kafka.bootstrap_server: unknown key" in text
    assert "api.port:" in text and "integer" in text
    assert "rulez: unknown key" in text


@pytest.mark.parametrize("snippet, expected", [
    ("kafka: {bootstrap_servers: [x]}", "set at least one of topics or topic_pattern"),
    ("kafka: {bootstrap_servers: [x]}\nstate: {scope: keyed}", "set at least one of topics or topic_pattern"),
    ("kafka: {bootstrap_servers: [x], topics: {a: {decoder: nope}}}", "unknown decoder 'nope'"),
    ("kafka: {bootstrap_servers: [x], topics: {a: {decoder: {type: regex}}}}", "needs option 'pattern'"),
    ("kafka: {bootstrap_servers: [x], topic_pattern: '(bad'}", "invalid regex"),
    ("kafka: {bootstrap_servers: [x], topics: {a: {}}, dead_letter_topic: a}", "must not be one of"),
    ("kafka: {bootstrap_servers: [x], topics: {a: {}}, security: {protocol: SASL_SSL}}", "sasl_mechanism"),
    ("kafka: {bootstrap_servers: [x], topic_pattern: 'ci-.*', dead_letter_topic: ci-dlq}", "matches dead_letter"),
    ("api: {tokens: [{name: a, role: read, token: short}]}", "at least 16 characters"),
    ("api: {tokens: [{name: a, role: admin}]}", "set token or token_file"),
    ("api: {tokens: [{token: 0123456789abcdefgh}]}", "api.tokens.0.name: required key is missing"),
    ("api: {tokens: [{name: a, role: root, token: 0123456789abcdefgh}]}", "api.tokens.0.role: Input should be"),
    ("api: {tokens: [{name: 'a b', role: read, token: 0123456789abcdefgh}]}", "api.tokens.0.name: String should match"),
    ("api: {tokens: [{name: a, role: read, token: 0123456789abcdefgh}, {name: a, role: admin, "
     "token: 0123456789abcdefgX}]}", "token names must be unique: \\['a'\\]"),
    ("api: {tokens: [{name: a, role: read, token: 0123456789abcdefgh}, {name: b, role: admin, "
     "token: 0123456789abcdefgh}]}", "two tokens have the same value"),
    ("- a list", "mapping at the top level"),
    ("a: [unclosed", "not valid YAML"),
])
def test_invalid_settings(tmp_path, snippet, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        load_settings(write(tmp_path, snippet))


def test_secrets_from_files_are_masked(tmp_path):
    (tmp_path / "kafka.pw").write_text("s3cret-kafka-password\n")
    (tmp_path / "admin.token").write_text("admin-token-0123456789\n")
    path = write(tmp_path, KAFKA_YAML + f"""  security:
    protocol: SASL_PLAINTEXT
    sasl_mechanism: SCRAM-SHA-512
    sasl_username: svc
    sasl_password_file: {tmp_path / 'kafka.pw'}
api:
  tokens:
    - {{name: ops, role: admin, token_file: {tmp_path / 'admin.token'}}}
""")
    s = load_settings(path)
    assert s.kafka.security.sasl_password.get_secret_value() == "s3cret-kafka-password"
    assert s.api.tokens[0].token.get_secret_value() == "admin-token-0123456789"
    dumped = str(describe(s)) + repr(s)
    assert "s3cret" not in dumped and "admin-token" not in dumped


def test_missing_secret_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read token file"):
        load_settings(write(tmp_path, f"api: {{tokens: [{{name: a, role: read, token_file: {tmp_path / 'none'}}}]}}"))


def test_kafka_client_kwargs_pass_security_through(tmp_path):
    from service.sources.kafka import consumer_kwargs

    path = write(tmp_path, KAFKA_YAML + """  security:
    protocol: SASL_PLAINTEXT
    sasl_mechanism: PLAIN
    sasl_username: svc
    sasl_password: pw-inline
""")
    kwargs = consumer_kwargs(load_settings(path).kafka)
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and kwargs["sasl_mechanism"] == "PLAIN"
    assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == "pw-inline"
    assert kwargs["enable_auto_commit"] is False and kwargs["group_id"] == "from-file"


def test_config_check_command(tmp_path, capsys):
    assert main(["config", "check", str(write(tmp_path, KAFKA_YAML))]) == 0
    assert "valid (inputs: kafka, http, stdin" in capsys.readouterr().out
    assert main(["config", "check", str(write(tmp_path, "kafka: {bootstrap_servers: [x], topicz: {}}"))]) == 1
    err = capsys.readouterr().err
    assert "kafka.topicz: unknown key" in err


def test_stateful_detector_settings_from_file_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPESENTRY_CORRELATION__ALLOWED_LATENESS", "12.5")
    monkeypatch.setenv("PIPESENTRY_STATE__SNAPSHOT_INTERVAL_S", "30")
    s = load_settings(write(tmp_path, "correlation: {max_keys: 500}\nstate: {heartbeat_interval_s: 2}\n"))
    assert (s.correlation.max_keys, s.correlation.allowed_lateness) == (500, 12.5)
    assert (s.state.snapshot_interval_s, s.state.heartbeat_interval_s) == (30.0, 2.0)
    monkeypatch.delenv("PIPESENTRY_STATE__SNAPSHOT_INTERVAL_S")  # the environment wins over the file
    with pytest.raises(ConfigError, match=r"state\.snapshot_interval_s"):
        load_settings(write(tmp_path, "state: {snapshot_interval_s: 0}\n"))
    with pytest.raises(ConfigError, match=r"correlation\.max_lateness"):
        load_settings(write(tmp_path, "correlation: {max_lateness: 3}\n"))
