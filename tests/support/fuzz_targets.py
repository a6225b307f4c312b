"""Fuzz targets: an input strategy and a check that names what escaped (``None``: a documented outcome).

Used by ``tests/unit/service/test_hostile_fuzz.py`` (a few seconds each) and ``bench/fuzz_inputs.py``
(minutes). A finding is an exception other than the target's documented error, or a
documented answer of the wrong shape.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st
from pydantic import ValidationError

from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.anomaly.spec import CheckError
from detectors.correlation.compile import compile_correlations
from detectors.sigma import RuleError, RuleText, compile_ruleset
from service.config import ConfigError, Settings, load_settings
from service.decoders import DecodeError, build_decoder, decoder_names
from tests.conftest import ROOT
from tests.support.fixtures import finding_report
from tests.support.fuzz import (
    YAML_SPLICES,
    alias_bomb,
    json_bytes,
    mutated,
    raw_messages,
    single_mutations,
    spliced_text,
    yaml_text,
)


@dataclass(frozen=True)
class Target:
    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], str | None]


def _escaped(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# --- decoders -----------------------------------------------------------------------------------

def decoder_check(name: str, options: dict[str, Any] | None = None) -> Callable[[bytes], str | None]:
    decode = build_decoder(name, options or {})

    def check(raw: bytes) -> str | None:
        try:
            events = decode(raw)
        except DecodeError as exc:
            if not exc.reason or " " in exc.reason:
                return f"DecodeError reason {exc.reason!r} is not a fixed word"
            return None
        except Exception as exc:
            return _escaped(exc)
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return f"decoder returned {type(events).__name__}, not a list of objects"
        return None
    return check


SARIF, ZAP, CHECKOV, TRIVY = (finding_report(name) for name in ("codeql.sarif", "zap", "checkov", "trivy"))
FINDING_SEEDS = {"sarif": [SARIF], "zap": [ZAP], "checkov": [CHECKOV, CHECKOV[0]], "trivy": [TRIVY]}
LINE_DECODERS = {"json": None, "ndjson": None, "syslog": None, "text": None,
                 "regex": {"pattern": r"(?P<date>\S+) (?P<time>\S+) (?P<level>[A-Z]+) (?P<rest>.*)"}}


def decoder_targets() -> list[Target]:
    targets = []
    for name in decoder_names():
        if name in FINDING_SEEDS:
            inputs = st.one_of(mutated(FINDING_SEEDS[name]).map(json_bytes), raw_messages())
            targets.append(Target(f"decoder:{name}", inputs, decoder_check(name)))
        elif name in LINE_DECODERS:
            targets.append(Target(f"decoder:{name}", raw_messages(), decoder_check(name, LINE_DECODERS[name])))
    return targets


# --- rules, correlations, checks -------------------------------------------------------------------

RULE_DOCS: list[Any] = [
    {"title": "Curl piped to shell", "id": "6f1d1a4e-0000-4000-8000-000000000001", "name": "curl_sh",
     "status": "test", "author": "fuzz", "date": "2026-01-02", "level": "high", "tags": ["attack.t1059"],
     "logsource": {"category": "ci_job_log", "product": "gitlab"},
     "detection": {"sel": {"message|contains": ["| sh", "|bash"], "user|re": "^ro+t$"},
                   "filter": {"host|startswith": "build-", "n|gt": 3}, "keywords": ["wget*"],
                   "condition": "(sel or keywords) and not filter"}},
    {"title": "Burst", "id": "6f1d1a4e-0000-4000-8000-000000000002", "author": "fuzz",
     "correlation": {"type": "event_count", "rules": ["curl_sh"], "group-by": ["user"], "timespan": "5m",
                     "condition": {"gte": 3}}},
    {"title": "Distinct hosts", "id": "6f1d1a4e-0000-4000-8000-000000000003", "author": "fuzz",
     "correlation": {"type": "value_count", "rules": ["curl_sh"], "group-by": ["user"], "timespan": "1h",
                     "condition": {"field": "host", "gt": 2, "lte": 10}}},
    {"title": "Not on runners", "logsource": {"category": "ci_job_log"},
     "filter": {"rules": ["curl_sh"], "sel": {"host": "runner"}, "condition": "sel"}},
]


def _rule_texts() -> st.SearchStrategy[str]:
    seeds = ["\n---\n".join(yaml_text(d) for d in RULE_DOCS)]
    whole = st.lists(mutated(RULE_DOCS, max_mutations=4), min_size=1, max_size=4).map(
        lambda docs: "\n---\n".join(yaml_text(d) for d in docs))
    bombs = st.tuples(st.integers(2, 9), st.integers(2, 12)).map(
        lambda lw: seeds[0] + "\n---\n" + alias_bomb(*lw)
        + f"title: bomb\ndetection: {{sel: {{a: *a{lw[0] - 1}}}, condition: sel}}\n")
    return st.one_of(whole, spliced_text(seeds, YAML_SPLICES), bombs)


def check_rules(text: str) -> str | None:
    try:
        result = compile_ruleset([RuleText("fuzz.yml", text, "fuzz")], skip_invalid=True)
        if not all(isinstance(e, RuleError) and e.source == "fuzz.yml" and e.reason for e in result.errors):
            return f"errors are not RuleErrors with a source and a reason: {result.errors!r:.300}"
        _, corr_errors = compile_correlations(result.ruleset, max_keys=100)
        if not all(isinstance(e, RuleError) for e in corr_errors):
            return "correlation errors are not RuleErrors"
        for event in ({"message": "curl x | sh", "user": "root", "host": "h", "n": 1}, {"user": ["x", {}]}):
            result.ruleset.evaluate(event)
    except Exception as exc:
        return _escaped(exc)
    return None


def _check_docs() -> list[Any]:
    return list(yaml.safe_load((ROOT / "docs/examples/anomaly-checks.yml").read_text())["checks"])


def _check_texts() -> st.SearchStrategy[str]:
    docs = _check_docs()
    seed = yaml_text({"checks": docs})
    whole = st.lists(mutated(docs, max_mutations=4), min_size=1, max_size=6).map(lambda d: yaml_text({"checks": d}))
    return st.one_of(whole, mutated([{"checks": docs}]).map(yaml_text), spliced_text([seed], YAML_SPLICES),
                     st.tuples(st.integers(2, 9), st.integers(2, 12)).map(lambda lw: alias_bomb(*lw, key="id")))


def check_checks(text: str) -> str | None:
    try:
        specs, errors = parse_checks(text, source="fuzz.yml")
        if not all(isinstance(e, CheckError) and e.reason for e in errors):
            return "errors are not CheckErrors with a reason"
        AnomalyEngine(specs)
    except Exception as exc:
        return _escaped(exc)
    return None


# --- config -------------------------------------------------------------------------------------

CONFIG_DOCS: list[Any] = [{
    "log_level": "info", "data_dir": "/tmp/pipesentry-fuzz",
    "kafka": {"bootstrap_servers": ["127.0.0.1:9092"], "group_id": "g",
              "topics": {"ci": {"decoder": "json", "logsource": {"category": "ci_job_log"}, "timestamp_field": "ts"},
                         "sys": {"decoder": {"type": "regex", "options": {"pattern": "(?P<a>x)"}}}},
              "dead_letter_topic": "dlq",
              "security": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u",
                           "sasl_password": "hunter2-secret-value"}},
    "http_ingest": {"enabled": True, "max_body_bytes": 1_000_000},
    "api": {"tokens": [{"name": "ops", "role": "admin", "token": "hunter2-secret-value-admin"}]},
    "rules": {"paths": ["sigma-rules"], "skip_invalid": True},
    "alerting": {"sinks": [{"type": "stdout"}, {"type": "store"}]},
}]
SECRETS = ("hunter2-secret-value",)


def check_config(doc: Any) -> str | None:
    try:
        Settings(**doc) if isinstance(doc, dict) else Settings.model_validate(doc)
    except ValidationError as exc:
        if any(s in str(exc) for s in SECRETS):
            return "a secret value is echoed in the validation error"
        return None
    except Exception as exc:
        return _escaped(exc)
    return None


def check_config_text(text: str) -> str | None:
    fd, name = tempfile.mkstemp(suffix=".yml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(text)
        load_settings(name)
    except ConfigError as exc:
        if any(s in str(exc) for s in SECRETS):
            return "a secret value is echoed in the config error"
        return None
    except Exception as exc:
        return _escaped(exc)
    finally:
        os.unlink(name)
    return None


def _config_texts() -> st.SearchStrategy[str]:
    seed = yaml_text(CONFIG_DOCS[0])
    return st.one_of(spliced_text([seed], YAML_SPLICES),
                     st.tuples(st.integers(2, 9), st.integers(2, 12)).map(lambda lw: alias_bomb(*lw)))


def all_targets() -> list[Target]:
    return [
        *decoder_targets(),
        Target("rules", _rule_texts(), check_rules),
        Target("checks", _check_texts(), check_checks),
        Target("config", mutated(CONFIG_DOCS, max_mutations=4).map(yaml_text), check_config_text),
        Target("config-text", _config_texts(), check_config_text),
    ]


def sweeps() -> dict[str, tuple[list[Any], Callable[[Any], str | None]]]:
    """Name -> (inputs, check) for the exhaustive single-mutation sweep of every seed document."""
    out: dict[str, tuple[list[Any], Callable[[Any], str | None]]] = {
        "rules": ([("\n---\n".join(yaml_text(d) for d in docs)) for docs in single_mutations(RULE_DOCS)],
                  check_rules),
        "checks": ([yaml_text({"checks": docs}) for docs in single_mutations(_check_docs())], check_checks),
        "config": ([docs[0] for docs in single_mutations(CONFIG_DOCS)], check_config),
    }
    for name, seeds in FINDING_SEEDS.items():
        out[f"decoder:{name}"] = ([json_bytes(docs[0]) for docs in single_mutations(seeds[:1])],
                                  decoder_check(name))
    return out
