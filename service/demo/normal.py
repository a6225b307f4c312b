"""A day of ordinary delivery-pipeline and production activity, for every source.

It is deliberately full of near-misses of the rule pack (masked tokens, forced pushes to
feature branches, automated night syncs, digest-pinned images, privileged CNI pods in
kube-system, self-issued access keys, critical findings on feature branches...): a rule
that fires on this day without being meant to is a false positive to fix.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from service.demo import builders as b
from service.demo import reports
from service.demo.sources import GeneratedEvent

DAY = 86_400.0
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank")
REPOS = ("acme/payments", "acme/web", "acme/infra-terraform", "acme/deploy-config")
PROD_APPS = ("payments-prod", "web-prod", "checkout-prod")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
MOBILE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"

Gen = Callable[[random.Random, float], Iterator[b.Built]]


def _times(rng: random.Random, start: float, count: int, hours: tuple[int, int] = (0, 24)) -> list[float]:
    lo, hi = hours[0] * 3600.0, hours[1] * 3600.0
    return sorted(start + rng.uniform(lo, hi) for _ in range(count))


def github(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    actions: list[tuple[str, dict[str, Any]]] = [
        ("pull_request.merge", {}), ("repo.create", {"visibility": "private"}),
        ("protected_branch.update_required_status_checks_enforcement_level",
         {"required_status_checks_enforcement_level": "everyone", "branch": "main"}),
        ("hook.events_changed", {"hook_id": 1001, "events": ["push", "pull_request"]}),
        ("secret_scanning_alert.resolve", {"resolution": "revoked", "alert_number": 3}),
        ("repository_vulnerability_alert.resolve", {"alert_number": 8}),
        ("org.add_member", {"permission": "read", "user": "newhire"}),
        ("public_key.create", {"user": "bob", "title": "bob laptop"}),
        ("workflows.completed_workflow_run", {"workflow_run_id": 9120044, "conclusion": "success"}),
        ("org.set_default_workflow_permissions", {"default_workflow_permissions": "read"}),
        ("repo.remove_self_hosted_runner", {"runner_name": "old-builder"}),
    ]
    for ts in _times(rng, start, 160, (7, 19)):
        action, fields = rng.choice(actions)
        repo = None if action.startswith(("org.", "public_key")) else rng.choice(REPOS)
        yield ts, b.github_audit(ts, action, rng.choice(PEOPLE), repo, **fields)
    for ts in _times(rng, start, 90, (7, 20)):
        repo = rng.choice(REPOS)
        if rng.random() < 0.3:
            yield ts, b.github_push(ts, repo, f"refs/heads/feature/{rng.choice(['retry', 'ui', 'perf'])}",
                                    rng.choice(PEOPLE), forced=True)
        else:
            yield ts, b.github_push(ts, repo, "refs/heads/main", rng.choice(PEOPLE))


CI_LINES = (
    "Run actions/checkout@v4", "Syncing repository: {repo}", "$ npm ci", "added 812 packages in 14s",
    "$ pip install -r requirements.txt", "Successfully installed requests-2.32.3 urllib3-2.2.3",
    "$ curl -sSfLo install.sh https://get.tools.example.net/install.sh && sha256sum -c install.sh.sha256",
    "$ trivy image --severity CRITICAL,HIGH --exit-code 1 registry.acme.io/payments:1.42.0",
    "Total: 0 (CRITICAL: 0, HIGH: 0)", "$ checkov -d infra/ --framework terraform",
    "GH_TOKEN=***", "Run aws configure set aws_access_key_id ***", "$ pytest -q", "412 passed in 38.2s",
    "$ git clone https://gitlab-ci-token:[MASKED]@gitlab.acme.io/platform/payments.git",
    "$ cosign verify --key cosign.pub registry.acme.io/payments:1.42.0",
    "The signatures were verified against the specified public key", "-----BEGIN PUBLIC KEY-----",
    "$ npm ci --registry=https://artifacts.acme.internal/api/npm/npm-remote/",
    "Masking supported pattern matches of $DEPLOY_TOKEN", "[Pipeline] sh", "+ make test", "Finished: SUCCESS",
    "Job succeeded",
)


def ci_logs(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    for system, count in (("github_actions", 600), ("gitlab_ci", 300), ("jenkins_build", 300)):
        for ts in _times(rng, start, count, (6, 21)):
            repo = rng.choice(REPOS)
            ref = "refs/heads/main" if rng.random() < 0.5 else "refs/heads/feature/ui"
            line = rng.choice(CI_LINES).format(repo=repo)
            yield ts, b.ci_line(ts, system, repo, rng.choice(["build", "test", "scan", "deploy"]), line, ref,
                                run_id=9_120_000 + int(ts) % 5000)


def gitlab_jenkins(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    gitlab = [
        ("member_created", "User", "newhire", {"change": "access_level", "to": "Developer"}),
        ("ci_variable_created", "Ci::Variable", "DEPLOY_REGION", {}),
        ("protected_branch_created", "ProtectedBranch", "release/2026.12", {}),
        ("deploy_key_removed", "DeployKey", "old-mirror", {}),
        ("deploy_token_revoked", "DeployToken", "legacy", {}),
    ]
    for ts in _times(rng, start, 40, (8, 18)):
        event_type, target_type, target, details = rng.choice(gitlab)
        yield ts, b.gitlab_audit(ts, event_type, rng.choice(PEOPLE), target_type, target, **details)
    uris = ("/job/payments/build", "/job/web/build", "/job/payments/configSubmit",
            "/manage/credentials/store/system/domain/_/", "/manage/configure", "/job/web/lastBuild/stop")
    for ts in _times(rng, start, 120, (7, 20)):
        yield ts, b.jenkins_audit(ts, rng.choice(uris), rng.choice(PEOPLE))


def argocd(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    for ts in _times(rng, start, 60):
        app = rng.choice((*PROD_APPS, "payments-staging", "web-staging"))
        rev = b.sha1(str(ts))[:8]
        yield ts, b.argocd_event(ts, app, "OperationStarted", f"Initiated automated sync to '{rev}'")
        yield ts + 40, b.argocd_event(ts + 40, app, "OperationCompleted", f"Sync operation to {rev} succeeded")
    for ts in _times(rng, start, 12, (9, 17)):
        app = rng.choice(PROD_APPS)
        yield ts, b.argocd_event(ts, app, "OperationStarted",
                                 f"{rng.choice(PEOPLE)} initiated sync to HEAD ({b.sha1(str(ts))[:8]})")
    for ts in _times(rng, start, 10):
        yield ts, b.argocd_event(ts, "web-staging", "OperationStarted", f"{rng.choice(PEOPLE)} initiated sync to HEAD")


def kubernetes(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    image = "registry.acme.io/payments:1.42.0@" + b.digest("payments-1.42.0")
    rsc = "system:serviceaccount:kube-system:replicaset-controller"
    for ts in _times(rng, start, 500):
        pick = rng.random()
        who = f"{rng.choice(PEOPLE)}@acme.io"
        if pick < 0.35:
            yield ts, b.k8s_audit(ts, "list", "pods", who, namespace=rng.choice(["prod", "staging"]))
        elif pick < 0.5:
            yield ts, b.k8s_audit(ts, "get", "secrets", "system:serviceaccount:prod:payments", name="payments-db")
        elif pick < 0.6:
            yield ts, b.k8s_audit(ts, "create", "pods", rsc, name=f"payments-{b.sha1(str(ts))[:5]}",
                                  request={"kind": "Pod", "spec": b.pod_spec(image)}, code=201)
        elif pick < 0.68:
            yield ts, b.k8s_audit(ts, "patch", "deployments", "system:serviceaccount:argocd:argocd-application-controller",
                                  name="payments", api_group="apps", request=b.workload("Deployment", "payments", image))
        elif pick < 0.75:
            yield ts, b.k8s_audit(ts, "create", "pods", who, namespace="staging", name="web-1", subresource="exec",
                                  code=101)
        elif pick < 0.85:
            yield ts, b.k8s_audit(ts, "create", "serviceaccounts", "system:node:ip-10-0-3-17.eu-west-1.compute.internal",
                                  name="payments", subresource="token", code=201)
        elif pick < 0.93:
            yield ts, b.k8s_audit(ts, "get", "nonresource", "system:anonymous", namespace=None, uri="/healthz",
                                  groups=("system:unauthenticated",))
        else:
            yield ts, b.k8s_audit(ts, "get", "configmaps", who, name="payments-config")
    ts = start + 3 * 3600
    yield ts, b.k8s_audit(ts, "patch", "daemonsets", "system:serviceaccount:kube-system:helm", namespace="kube-system",
                          name="cilium", api_group="apps",
                          request=b.workload("DaemonSet", "cilium", "quay.io/cilium/cilium:v1.16.3",
                                             securityContext={"privileged": True}, hostNetwork=True))


def registry_cloud(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    for ts in _times(rng, start, 150):
        pick = rng.random()
        if pick < 0.2:
            yield ts, b.registry(ts, "push", "payments", f"1.42.{rng.randint(1, 9)}", "ci-bot")
        elif pick < 0.3:
            yield ts, b.registry(ts, "push", "web", f"pr-{rng.randint(1200, 1300)}", rng.choice(PEOPLE), "docker/27.3.1")
        elif pick < 0.95:
            yield ts, b.registry(ts, "pull", "payments", "1.42.0", "system:node", "containerd/1.7.22")
        else:
            yield ts, b.registry(ts, "delete", "web", None, "svc-retention", "retention/1.0")
    ci = b.role_identity("payments-ci", "gha-9120044")
    for ts in _times(rng, start, 300):
        pick = rng.random()
        person = rng.choice(PEOPLE)
        if pick < 0.45:
            yield ts, b.cloudtrail(ts, "ec2.amazonaws.com", "DescribeInstances", ci, read_only=True)
        elif pick < 0.65:
            yield ts, b.cloudtrail(ts, "sts.amazonaws.com", "AssumeRoleWithWebIdentity", ci,
                                   {"roleArn": "arn:aws:iam::123456789012:role/payments-ci"})
        elif pick < 0.75:
            yield ts, b.cloudtrail(ts, "ecr.amazonaws.com", "PutImage", ci, {"repositoryName": "payments",
                                                                             "imageTag": "1.42.3"})
        elif pick < 0.85:
            yield ts, b.cloudtrail(ts, "signin.amazonaws.com", "ConsoleLogin", b.user_identity(person),
                                   response={"ConsoleLogin": "Success"}, ip="198.51.100.10")
        elif pick < 0.9:
            yield ts, b.cloudtrail(ts, "iam.amazonaws.com", "CreateAccessKey", b.user_identity(person),
                                   {"userName": person}, {"accessKey": {"userName": person, "status": "Active"}})
        elif pick < 0.95:
            yield ts, b.cloudtrail(ts, "iam.amazonaws.com", "PutRolePolicy", b.role_identity("Terraform", "tf"), {
                "roleName": "payments-ci", "policyName": "ecr-push",
                "policyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:PutImage"],"Resource":"*"}]}'})
        else:
            yield ts, b.cloudtrail(ts, "cloudtrail.amazonaws.com", "StopLogging", b.user_identity(person),
                                   {"name": "org-trail"}, error="AccessDenied")


def hosts(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    servers = ("prod-web-1", "prod-web-2", "prod-web-3", "prod-bastion-1", "build-agent-3")
    for ts in _times(rng, start, 400):
        host = rng.choice(servers)
        pick = rng.random()
        if pick < 0.4:
            yield ts, b.auditd_execve(ts, host, rng.choice(["systemctl", "ls", "python3", "git"]), "status")
        elif pick < 0.55:
            yield ts, b.auditd_execve(ts, host, "chmod", rng.choice(["755", "644", "-R", "u+x"]), "/opt/app/run.sh")
        elif pick < 0.6:
            yield ts, b.auditd_path(ts, host, "/etc/nginx/nginx.conf")
        elif pick < 0.8:
            yield ts, b.syslog_auth(ts, host, "sshd", f"Accepted publickey for deploy from 10.0.3.{rng.randint(2, 250)} "
                                    "port 40122 ssh2: ED25519 SHA256:Zr1mS3n8Vq0pK5tY7wXe2uB4cD6fG8hJ9kL0aQ2sW3E")
        elif pick < 0.85:
            yield ts, b.syslog_auth(ts, host, "sshd", f"Failed password for {rng.choice(PEOPLE)} from 10.0.5.12 port 40000 ssh2")
        else:
            yield ts, b.syslog_auth(ts, host, "sudo", "  deploy : TTY=pts/1 ; PWD=/srv/app ; USER=root ; "
                                    "COMMAND=/usr/bin/systemctl restart app")


def web(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    pages = ("/", "/products?id={n}", "/search?q=union+station+bags", "/static/js/app.3f9a1c.min.js",
             "/api/v1/cart", "/checkout", "/favicon.ico", "/healthz", "/products?id={n}&sort=price")
    for ts in _times(rng, start, 1500):
        uri = rng.choice(pages).format(n=rng.randint(1000, 1100))
        status = 404 if uri == "/favicon.ico" else 200
        yield ts, b.nginx(ts, f"198.51.100.{rng.randint(2, 250)}", "GET", uri, status, rng.choice((BROWSER, MOBILE)))
    for ts in _times(rng, start, 800):
        path = rng.choice(("/payments.v1.Payments/Authorize", "/api/v1/orders?page=2", "/healthz"))
        yield ts, b.envoy(ts, f"10.0.{rng.randint(1, 9)}.{rng.randint(2, 250)}", "POST" if "v1." in path else "GET",
                          path, 200, "grpc-go/1.66.2")
    for ts in _times(rng, start, 600):
        user = rng.choice(PEOPLE)
        ip = f"198.51.100.{rng.randint(2, 250)}"
        pick = rng.random()
        if pick < 0.6:
            yield ts, b.app_log(ts, f"authn_login_success:{user}", "info", "login ok", user=user, client_ip=ip)
        elif pick < 0.7:
            yield ts, b.app_log(ts, f"authn_login_fail:{user}", "warn", "login failed: bad password", user=user, client_ip=ip)
        elif pick < 0.75:
            yield ts, b.app_log(ts, "db_error", "error", "psycopg.errors.UniqueViolation: duplicate key value violates "
                                "unique constraint \"users_email_key\"", path="/signup")
        else:
            yield ts, b.app_log(ts, "render_ok", "info", "rendered template invoice.html in 4ms", path="/invoice/1042")


def findings(rng: random.Random, start: float) -> Iterator[tuple[float, b.Built]]:
    ts = start + 2 * 3600
    raw = reports.sarif("Semgrep OSS", [
        ("python.lang.best-practice.logging-format", "Logging with f-strings", "warning", None, ["CWE-117"], "src/app.py:12", False),
        ("python.flask.security.audit.debug-enabled", "Flask debug mode", "warning", 5.0, ["CWE-489"], "src/app.py:3", False),
    ], branch="main", commit=b.sha1("main-nightly"))
    yield from ((ts, ("findings", e)) for e in reports.decode("sarif", raw, "main", b.sha1("main-nightly")))
    raw = reports.sarif("CodeQL", [("py/sql-injection", "SQL query built from user-controlled sources", "error", 8.8,
                                    ["external/cwe/cwe-089"], "src/report.py:40", False)],
                        branch="feature/reports", commit=b.sha1("feat"))
    yield from ((ts + 600, ("findings", e)) for e in reports.decode("sarif", raw, "feature/reports", b.sha1("feat")))
    raw = reports.zap("https://staging.shop.acme.io", [("10038", "Content Security Policy (CSP) Header Not Set", 2, 693, "https://staging.shop.acme.io/"),
                                                        ("10021", "X-Content-Type-Options Header Missing", 1, 693, "https://staging.shop.acme.io/static/")],
                      "Tue, 24 Nov 2026 02:10:00")
    yield from ((ts + 1200, ("findings", e)) for e in reports.decode("zap", raw, "main", b.sha1("main-nightly")))
    raw = reports.checkov([("CKV_AWS_18", "Ensure the S3 bucket has access logging enabled", "/infra/s3.tf", "aws_s3_bucket.logs")],
                          [("CKV_AWS_144", "Ensure that S3 bucket has cross-region replication enabled", "/infra/s3.tf", "aws_s3_bucket.logs")])
    yield from ((ts + 1800, ("findings", e)) for e in reports.decode("checkov", raw, "main", b.sha1("main-nightly")))
    raw = reports.trivy("registry.acme.io/payments:1.42.0", [
        ("CVE-2023-45853", "zlib1g", "1:1.2.13.dfsg-1", "CRITICAL", None),
        ("CVE-2024-6119", "openssl", "3.0.14-1~deb12u1", "HIGH", "3.0.14-1~deb12u2"),
    ], "2026-11-24T02:40:00Z")
    yield from ((ts + 2400, ("findings", e)) for e in reports.decode("trivy", raw, "main", b.sha1("main-nightly")))
    _ = rng


GENERATORS: tuple[Callable[[random.Random, float], Iterator[tuple[float, b.Built]]], ...] = (
    github, ci_logs, gitlab_jenkins, argocd, kubernetes, registry_cloud, hosts, web, findings,
)


def normal_day(seed: int, start: float) -> list[GeneratedEvent]:
    """Every source's ordinary traffic over one day from ``start`` (deterministic for a seed)."""
    out: list[GeneratedEvent] = []
    for index, generate in enumerate(GENERATORS):
        rng = random.Random(seed * 1000 + index)
        for ts, (source, event) in generate(rng, start):
            out.append(GeneratedEvent(source, ts, event, None))
    out.sort(key=lambda e: e.ts)
    return out
