"""Event constructors in each source's real schema, shared by normal traffic and attack stories.

Every function returns ``(source name, event)``; the caller decides the time. Field names
follow the producers' documented formats (see ``sigma-rules/README.md`` for references).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

Built = tuple[str, dict[str, Any]]


def iso(ts: float, millis: bool = False) -> str:
    stamp = datetime.fromtimestamp(ts, UTC)
    if millis:
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def sha1(seed: str) -> str:
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()


def github_audit(ts: float, action: str, actor: str, repo: str | None = None, **fields: Any) -> Built:
    event: dict[str, Any] = {"@timestamp": int(ts * 1000), "created_at": int(ts * 1000), "action": action,
                             "actor": actor, "actor_location": {"country_code": fields.pop("country", "DE")},
                             "org": "acme", "business": "acme-corp",
                             "_document_id": sha1(f"{ts}{action}{actor}")[:22]}
    if repo:
        event["repo"] = repo
    event.update(fields)
    return "github_audit", event


def github_push(ts: float, repo: str, ref: str, pusher: str, forced: bool = False) -> Built:
    return "github_webhook", {
        "ref": ref, "before": sha1(f"b{ts}{repo}"), "after": sha1(f"a{ts}{repo}"), "forced": forced,
        "created": False, "deleted": False,
        "repository": {"full_name": repo, "default_branch": "main", "private": True, "pushed_at": int(ts)},
        "pusher": {"name": pusher}, "sender": {"login": pusher},
        "head_commit": {"id": sha1(f"a{ts}{repo}"), "timestamp": iso(ts), "message": "Merge pull request"},
    }


def ci_line(ts: float, system: str, repo: str, job: str, message: str, ref: str = "refs/heads/main",
            run_id: int = 0) -> Built:
    """One job log line; ``system`` is github_actions, gitlab_ci or jenkins_build."""
    event: dict[str, Any] = {"@timestamp": iso(ts, millis=True), "repository": repo, "job": job,
                             "run_id": run_id, "ref": ref, "message": message}
    if system == "github_actions":
        event.update(workflow="ci", runner="github-hosted")
    elif system == "gitlab_ci":
        event.update(pipeline_id=run_id, runner="gitlab-runner-shared-3")
    else:
        event.update(build=run_id, node="build-agent-3")
    return system, event


def gitlab_audit(ts: float, event_type: str, author: str, target_type: str, target: str,
                 entity: str = "platform/payments", **details: Any) -> Built:
    d = {"author_name": author, "author_class": "User", "target_type": target_type, "target_details": target,
         "ip_address": details.pop("ip", "10.20.0.15"), "entity_path": entity, **details}
    return "gitlab_audit", {
        "id": int(ts) % 1_000_000, "created_at": iso(ts, millis=True), "event_type": event_type, "author_id": 41,
        "author_name": author, "entity_id": 311, "entity_type": "Project", "entity_path": entity,
        "target_type": target_type, "target_details": target, "target_id": 9, "details": d,
    }


def jenkins_audit(ts: float, uri: str, user: str, addr: str = "10.20.0.31") -> Built:
    return "jenkins_audit", {"@timestamp": iso(ts, millis=True), "user": user, "uri": uri, "remote_addr": addr,
                             "node": "jenkins-controller-0", "message": f"{uri} by {user} from {addr}"}


def argocd_event(ts: float, app: str, reason: str, message: str) -> Built:
    return "argocd", {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{app}.{sha1(str(ts))[:12]}", "namespace": "argocd"},
        "involvedObject": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "name": app,
                           "namespace": "argocd"},
        "reason": reason, "message": message, "source": {"component": "argocd-server"}, "type": "Normal",
        "count": 1, "firstTimestamp": iso(ts), "lastTimestamp": iso(ts),
    }


def k8s_audit(ts: float, verb: str, resource: str, user: str, namespace: str | None = "prod",
              name: str | None = None, subresource: str | None = None, request: dict[str, Any] | None = None,
              code: int = 200, groups: tuple[str, ...] = ("system:authenticated",), uri: str | None = None,
              api_group: str = "", decision: str = "allow", agent: str = "kubectl/v1.31.2") -> Built:
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1", "apiGroup": api_group}
    if namespace is not None:
        ref["namespace"] = namespace
    if name is not None:
        ref["name"] = name
    if subresource:
        ref["subresource"] = subresource
    path = uri or "/api/v1" + (f"/namespaces/{namespace}" if namespace else "") + f"/{resource}" + (
        f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")
    event: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse" if request else "Metadata",
        "auditID": sha1(f"{ts}{verb}{resource}{name}")[:32], "stage": "ResponseComplete", "requestURI": path,
        "verb": verb, "user": {"username": user, "groups": list(groups)}, "sourceIPs": ["10.0.1.20"],
        "userAgent": agent, "objectRef": ref, "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": iso(ts, millis=True), "stageTimestamp": iso(ts + 0.05, millis=True),
        "annotations": {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": ""},
    }
    if request is not None:
        event["requestObject"] = request
    return "k8s_audit", event


def pod_spec(image: str, **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    security = extra.pop("securityContext", None)
    if security:
        container["securityContext"] = security
    return {"containers": [container], **extra}


def workload(kind: str, name: str, image: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": "apps/v1", "metadata": {"name": name},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": name}},
                                                 "spec": pod_spec(image, **extra)}}}


def registry(ts: float, action: str, repo: str, tag: str | None, actor: str, ua: str = "buildkit/v0.16.0",
             addr: str = "10.0.3.17") -> Built:
    dig = digest(f"{repo}:{tag}:{ts}")
    target: dict[str, Any] = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1578,
                              "digest": dig, "length": 1578, "repository": repo,
                              "url": f"https://registry.acme.io/v2/{repo}/manifests/{dig}"}
    if tag:
        target["tag"] = tag
    method = {"push": "PUT", "delete": "DELETE"}.get(action, "GET")
    return "registry", {"id": sha1(f"r{ts}{repo}")[:32], "timestamp": iso(ts, millis=True), "action": action,
                        "target": target,
                        "request": {"id": sha1(f"q{ts}")[:32], "addr": f"{addr}:51234", "host": "registry.acme.io",
                                    "method": method, "useragent": ua},
                        "actor": {"name": actor}, "source": {"addr": "registry-0:5000"}}


def cloudtrail(ts: float, source: str, name: str, identity: dict[str, Any], request: dict[str, Any] | None = None,
               response: dict[str, Any] | None = None, error: str | None = None, ip: str = "10.0.7.12",
               read_only: bool = False) -> Built:
    event: dict[str, Any] = {
        "eventVersion": "1.10", "userIdentity": identity, "eventTime": iso(ts), "eventSource": source,
        "eventName": name, "awsRegion": "eu-west-1", "sourceIPAddress": ip,
        "userAgent": "aws-cli/2.17.40 md/Botocore#1.35.0", "requestParameters": request,
        "responseElements": response, "requestID": sha1(f"req{ts}{name}")[:36],
        "eventID": sha1(f"ev{ts}{name}")[:36], "readOnly": read_only, "eventType": "AwsApiCall",
        "managementEvent": True, "recipientAccountId": "123456789012", "eventCategory": "Management",
    }
    if error:
        event["errorCode"] = error
        event["errorMessage"] = "User is not authorized to perform this operation"
    return "cloudtrail", event


def role_identity(role: str, session: str) -> dict[str, Any]:
    return {"type": "AssumedRole", "principalId": f"AROA{sha1(role)[:16].upper()}:{session}",
            "arn": f"arn:aws:sts::123456789012:assumed-role/{role}/{session}", "accountId": "123456789012",
            "sessionContext": {"sessionIssuer": {"type": "Role", "userName": role,
                                                 "arn": f"arn:aws:iam::123456789012:role/{role}"}}}


def user_identity(name: str) -> dict[str, Any]:
    return {"type": "IAMUser", "principalId": "AIDAXAMPLE5R3T7Y", "arn": f"arn:aws:iam::123456789012:user/{name}",
            "accountId": "123456789012", "userName": name}


def auditd_execve(ts: float, host: str, *args: str) -> Built:
    event: dict[str, Any] = {"type": "EXECVE", "host": host, "msg": f"audit({ts:.3f}:{int(ts) % 100000})",
                             "argc": len(args)}
    for i, arg in enumerate(args):
        event[f"a{i}"] = arg
    return "auditd", event


def auditd_path(ts: float, host: str, name: str, nametype: str = "NORMAL", key: str | None = None) -> Built:
    event: dict[str, Any] = {"type": "PATH", "host": host, "msg": f"audit({ts:.3f}:{int(ts) % 100000})", "item": 0,
                             "name": name, "inode": 1049623, "dev": "fd:01", "mode": "0100644", "ouid": 0,
                             "ogid": 0, "nametype": nametype}
    if key:
        event["key"] = key
    return "auditd", event


def syslog_auth(ts: float, host: str, program: str, message: str, pid: int = 48211) -> Built:
    """An auth/authpriv message as the ``syslog`` decoder yields it (RFC 5424 field names)."""
    facility = "authpriv" if program == "sudo" else "auth"
    return "linux_auth", {"timestamp": datetime.fromtimestamp(ts, UTC).isoformat(), "hostname": host,
                          "app_name": program, "procid": str(pid), "facility": 10 if facility == "authpriv" else 4,
                          "facility_name": facility, "severity": 6, "severity_name": "info", "message": message,
                          "syslog_format": "rfc5424"}


def nginx(ts: float, ip: str, method: str, uri: str, status: int, ua: str, size: int = 1024,
          host: str = "shop.acme.io") -> Built:
    return "nginx", {"time_iso8601": datetime.fromtimestamp(ts, UTC).isoformat(), "remote_addr": ip, "host": host,
                     "request_method": method, "request_uri": uri, "uri": uri.split("?", 1)[0], "status": status,
                     "body_bytes_sent": size, "request_time": 0.012, "http_referer": "", "http_user_agent": ua}


def envoy(ts: float, ip: str, method: str, path: str, code: int, ua: str, authority: str = "api.acme.internal") -> Built:
    return "envoy", {"start_time": iso(ts, millis=True), "method": method, "path": path, "protocol": "HTTP/2",
                     "response_code": code, "response_flags": "-", "bytes_received": 0, "bytes_sent": 742,
                     "duration": 9, "upstream_service_time": "8", "x_forwarded_for": ip, "user_agent": ua,
                     "request_id": sha1(f"env{ts}{path}")[:36], "authority": authority,
                     "upstream_host": "10.0.9.14:8080", "downstream_remote_address": f"{ip}:40522"}


def app_log(ts: float, event: str, level: str, msg: str, **fields: Any) -> Built:
    return "app", {"ts": iso(ts, millis=True), "level": level, "logger": fields.pop("logger", "payments.api"),
                   "service": "payments", "env": "prod", "event": event, "msg": msg, **fields}
