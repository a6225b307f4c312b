"""A reload re-reads the config file and rolls routing changes out with the rules."""

from __future__ import annotations

from pathlib import Path

import yaml

from service.alerting.config import AlertingSettings
from service.config import load_settings
from service.detection import Detector, compile_detection
from service.reload import Reloader

RULE = """
title: Curl in a build
id: 0f4c5a7e-2b4f-4f7e-9d55-0c8f6a3c1a01
status: test
logsource: {product: ci}
detection:
  sel: {command|contains: curl}
  condition: sel
level: high
"""


def _write_config(path: Path, rules_dir: Path, route_level: str) -> None:
    path.write_text(yaml.safe_dump({
        "rules": {"paths": [str(rules_dir)]},
        "alerting": {
            "receivers": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"}],
            "routes": [{"name": "to-hook", "match": {"min_level": route_level}, "receivers": ["hook"]}],
        },
    }))


def _reloader(tmp_path: Path) -> tuple[Reloader, list[AlertingSettings], Path]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "curl.yml").write_text(RULE)
    config = tmp_path / "pipesentry.yaml"
    _write_config(config, rules_dir, "high")
    settings = load_settings(config)
    detector = Detector(compile_detection([rules_dir], [], skip_invalid=False, generation=1).detection)
    applied: list[AlertingSettings] = []
    reloader = Reloader(detector, settings.rules, settings.correlation, settings.anomaly, config_path=config,
                        settings_loader=lambda: load_settings(config), apply_alerting=applied.append)
    return reloader, applied, config


async def test_reload_hands_the_new_routing_to_the_router(tmp_path: Path) -> None:
    reloader, applied, config = _reloader(tmp_path)
    _write_config(config, tmp_path / "rules", "critical")
    result = await reloader.reload("api")
    assert result.result == "ok"
    assert len(applied) == 1
    assert applied[0].routes[0].match.min_level == "critical"


async def test_invalid_config_rejects_the_reload_and_keeps_routing(tmp_path: Path) -> None:
    reloader, applied, config = _reloader(tmp_path)
    config.write_text(config.read_text() + "\nunknown_key: 1\n")
    result = await reloader.reload("sighup")
    assert result.result == "rejected"
    assert "unknown_key" in result.message
    assert applied == []


def test_config_file_is_watched(tmp_path: Path) -> None:
    reloader, _, config = _reloader(tmp_path)
    assert config in reloader.watched_paths()
