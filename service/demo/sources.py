"""The demo's log sources: name, Sigma log source, Kafka topic and NDJSON file of each.

The names and log sources are the taxonomy of ``sigma-rules/README.md``; a real
deployment labels its inputs the same way so the pack's rules apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detectors.model import LogSource


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    logsource: LogSource
    description: str
    time_field: str | None = None
    """Dotted field holding the event time in this source's schema (None: none, use arrival time)."""

    @property
    def topic(self) -> str:
        return f"pipesentry.demo.{self.name}"

    @property
    def filename(self) -> str:
        return f"{self.name}.ndjson"


def _src(name: str, description: str, product: str | None = None, category: str | None = None,
         service: str | None = None, time: str | None = "@timestamp") -> Source:
    return Source(name, LogSource(product=product, category=category, service=service), description, time)


SOURCES: tuple[Source, ...] = (
    _src("github_audit", "GitHub audit log stream", "github", service="audit"),
    _src("github_webhook", "GitHub push webhooks", "github", service="webhook", time="repository.pushed_at"),
    _src("github_actions", "GitHub Actions job log lines", "github", "ci_job_log", "actions"),
    _src("gitlab_audit", "GitLab streamed audit events", "gitlab", service="audit", time="created_at"),
    _src("gitlab_ci", "GitLab CI job log lines", "gitlab", "ci_job_log", "ci"),
    _src("jenkins_audit", "Jenkins Audit Trail plugin", "jenkins", service="audit"),
    _src("jenkins_build", "Jenkins build console lines", "jenkins", "ci_job_log", "build"),
    _src("argocd", "Argo CD application events", "argocd", service="events", time="lastTimestamp"),
    _src("k8s_audit", "Kubernetes API server audit log", "kubernetes", "application", "audit",
         time="requestReceivedTimestamp"),
    _src("registry", "container registry notifications", "container_registry", service="distribution",
         time="timestamp"),
    _src("cloudtrail", "AWS CloudTrail records", "aws", service="cloudtrail", time="eventTime"),
    _src("auditd", "Linux auditd records", "linux", service="auditd", time=None),
    _src("linux_auth", "Linux auth syslog (sshd, sudo, useradd)", "linux", service="auth", time="timestamp"),
    _src("nginx", "nginx JSON access log (edge)", "nginx", "webserver", time="time_iso8601"),
    _src("envoy", "Envoy/Istio JSON access log (mesh ingress)", "envoy", "webserver", time="start_time"),
    _src("app", "JSON application log", "json", "application", time="ts"),
    _src("findings", "security scanner findings (SARIF, ZAP, Checkov, Trivy)", "appsec", "security_finding",
         time=None),
)

BY_NAME: dict[str, Source] = {s.name: s for s in SOURCES}


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    """One generated event, its source, its event time and the story it belongs to (None: normal)."""

    source: str
    ts: float
    event: dict[str, Any]
    story: str | None = None
