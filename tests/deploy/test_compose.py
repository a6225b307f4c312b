"""deploy/compose.yaml: parses, references only official images or this repo's build and
files that exist, wires the services together, and gives pipesentry valid settings."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import build_parser
from service.config import load_settings
from service.demo.kafka import topics_config
from tests.deploy import tools
from tests.deploy.tools import DEPLOY, ROOT

COMPOSE = DEPLOY / "compose.yaml"
# Images published by the projects themselves: Docker Official Images (library/) and the
# upstream organisations' own repositories.
OFFICIAL = re.compile(r"^(?:(?:docker\.io/)?(?:library/)?[a-z0-9-]+"
                      r"|(?:docker\.io/)?apache/kafka"
                      r"|(?:docker\.io/)?prom/(?:prometheus|alertmanager)"
                      r"|(?:docker\.io/)?grafana/grafana(?:-oss)?"
                      r"|docker\.elastic\.co/(?:elasticsearch/elasticsearch|kibana/kibana))"
                      r":[A-Za-z0-9._-]+$")
REQUIRED = {"kafka", "elasticsearch", "kibana", "prometheus", "alertmanager", "grafana", "pipesentry",
            "demo-producer"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of the service's bind mounts; named volumes are skipped."""
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((DEPLOY / source).resolve(), target))
    return out


def host_path(service: dict[str, Any], container_path: str) -> Path:
    for host, target in bind_mounts(service):
        if container_path == target:
            return host
        if container_path.startswith(target.rstrip("/") + "/"):
            return host / container_path[len(target.rstrip("/")) + 1:]
    raise KeyError(container_path)


def test_the_stack_has_every_service() -> None:
    assert set(services()) >= REQUIRED
    assert set(compose()) <= {"name", "services", "volumes", "networks", "configs", "secrets"}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_images_are_official_or_built_here(name: str) -> None:
    service = services()[name]
    if "build" in service:
        build = service["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).is_file()
        return
    image = service["image"]
    assert OFFICIAL.match(image), f"{name}: {image} is not an official image with a pinned tag"
    assert not image.endswith(":latest")


def test_images_without_build_are_pulled_not_expected_locally() -> None:
    built = {s["image"] for s in services().values() if "build" in s}
    for name, service in services().items():
        if "build" not in service:
            assert service["image"] not in built, f"{name} uses a locally built image without a build section"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_bind_mounted_files_exist(name: str) -> None:
    for host, _ in bind_mounts(services()[name]):
        assert host.exists(), f"{name}: {host} does not exist"
        assert host.is_relative_to(ROOT), f"{name}: {host} is outside the repository"


def test_named_volumes_and_dependencies_are_declared() -> None:
    declared = set(compose().get("volumes", {}))
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
        depends = service.get("depends_on", {})
        for dep in depends:
            assert dep in services(), f"{name} depends on unknown {dep}"
            if isinstance(depends, dict) and depends[dep].get("condition") == "service_healthy":
                has_check = "healthcheck" in services()[dep] or "build" in services()[dep]  # image HEALTHCHECK
                assert has_check, f"{name} waits for {dep} to be healthy, which has no health check"


def pipesentry_settings(monkeypatch: pytest.MonkeyPatch):
    service = services()["pipesentry"]
    args = build_parser().parse_args(service["command"])
    for key in [k for k in os.environ if k.upper().startswith("PIPESENTRY_")]:
        monkeypatch.delenv(key)
    return load_settings(host_path(service, str(args.config)))


def test_pipesentry_consumes_the_demo_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = pipesentry_settings(monkeypatch)
    assert settings.kafka is not None
    configured = {t: s.model_dump(mode="json", exclude_defaults=True) for t, s in settings.kafka.topics.items()}
    from service.config import TopicSettings

    expected = {t: TopicSettings(**s).model_dump(mode="json", exclude_defaults=True)
                for t, s in topics_config().items()}
    assert configured == expected, "deploy/compose/pipesentry.yaml is out of date with service/demo/kafka.py"


def test_pipesentry_reaches_the_other_services_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = pipesentry_settings(monkeypatch)
    kafka_env = services()["kafka"]["environment"]
    assert settings.kafka is not None
    assert settings.kafka.bootstrap_servers == [kafka_env["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]]
    sinks = {s.type: s for s in settings.alerting.sinks}
    assert sinks["elasticsearch"].hosts == ["http://elasticsearch:9200"]
    assert {r.type: r for r in settings.alerting.receivers}["alertmanager"].url == "http://alertmanager:9093"
    for path in settings.anomaly.checks:
        # Installed into the image's virtualenv from the service package.
        relative = str(path).split("/site-packages/")[1]
        assert (ROOT / relative).is_file(), path
    assert settings.api.host == "0.0.0.0" and settings.api.port == 8080
    targets = {v.split(":")[1] for v in services()["pipesentry"]["volumes"]}
    assert str(settings.data_dir) in targets, "data_dir must be on a volume (the root is read-only)"


def test_demo_producer_writes_to_the_stack_kafka() -> None:
    service = services()["demo-producer"]
    args = build_parser().parse_args(service["command"])
    assert args.command == "demo" and args.kafka
    assert args.bootstrap == ["kafka:9092"]
    assert service["depends_on"]["pipesentry"]["condition"] == "service_healthy"


def test_prometheus_config_is_valid_and_scrapes_pipesentry(tmp_path: Path) -> None:
    service = services()["prometheus"]
    config_in_container = next(a.split("=", 1)[1] for a in service["command"] if a.startswith("--config.file="))
    config = yaml.safe_load(host_path(service, config_in_container).read_text(encoding="utf-8"))
    config["rule_files"] = [str(host_path(service, p)) for p in config["rule_files"]]
    assert any(rf.endswith("prometheus/pipesentry-alerts.yml") for rf in config["rule_files"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["pipesentry"]["static_configs"][0]["targets"] == ["pipesentry:8080"]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = tools.run([tools.require("promtool"), "check", "config", local], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisions_the_dashboard() -> None:
    service = services()["grafana"]
    provisioning = host_path(service, "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards" / "pipesentry.yaml").read_text(encoding="utf-8"))
    folder = providers["providers"][0]["options"]["path"]
    dashboard = next(h for h, t in bind_mounts(service) if t.startswith(folder + "/"))
    assert dashboard == (DEPLOY / "grafana" / "pipesentry-dashboard.json").resolve()
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text(encoding="utf-8"))
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"


def test_pipesentry_container_is_locked_down() -> None:
    service = services()["pipesentry"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
