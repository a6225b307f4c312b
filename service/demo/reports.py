"""Scanner reports (SARIF, ZAP JSON, Checkov JSON, Trivy JSON) as the tools write them.

The demo feeds these through the real finding decoders (``service.decoders.findings``), so the
events the rules see are exactly what a CI upload of the same report would produce.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.decoders.findings import decode_checkov, decode_sarif, decode_trivy, decode_zap

Finding = dict[str, Any]


def sarif(tool: str, results: list[tuple[str, str, str, float | None, list[str], str, bool]],
          branch: str, commit: str, repo: str = "https://github.com/acme/payments") -> bytes:
    """``results``: (rule id, short description, level, security-severity, tags, location, suppressed)."""
    rules = []
    out = []
    for index, (rule_id, text, level, score, tags, location, suppressed) in enumerate(results):
        props: dict[str, Any] = {"tags": ["security", *tags]}
        if score is not None:
            props["security-severity"] = f"{score:.1f}"
        rules.append({"id": rule_id, "shortDescription": {"text": text}, "defaultConfiguration": {"level": level},
                      "properties": props})
        path, _, line = location.partition(":")
        result: dict[str, Any] = {
            "ruleId": rule_id, "ruleIndex": index, "level": level, "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": path},
                                                "region": {"startLine": int(line or 1)}}}],
        }
        if suppressed:
            result["suppressions"] = [{"kind": "inSource", "justification": "reviewed"}]
        out.append(result)
    doc = {"version": "2.1.0", "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
           "runs": [{"tool": {"driver": {"name": tool, "semanticVersion": "2.19.3", "rules": rules}},
                     "versionControlProvenance": [{"repositoryUri": repo, "revisionId": commit, "branch": branch}],
                     "results": out}]}
    return orjson.dumps(doc)


def zap(site: str, alerts: list[tuple[str, str, int, int, str]], generated: str) -> bytes:
    """``alerts``: (plugin id, name, riskcode, cwe id, instance uri)."""
    risk = {3: "High", 2: "Medium", 1: "Low", 0: "Informational"}
    doc = {"@programName": "ZAP", "@version": "2.15.0", "@generated": generated,
           "site": [{"@name": site, "@host": site.split("//", 1)[-1], "@port": "443", "@ssl": "true",
                     "alerts": [{"pluginid": pid, "alertRef": pid, "alert": name, "name": name, "riskcode": str(code),
                                 "confidence": "2", "riskdesc": f"{risk[code]} (Medium)", "desc": f"<p>{name}</p>",
                                 "instances": [{"uri": uri, "method": "GET", "param": "", "attack": "", "evidence": ""}],
                                 "count": "1", "solution": "", "reference": "", "cweid": str(cwe), "wascid": "0",
                                 "sourceid": "1"} for pid, name, code, cwe, uri in alerts]}]}
    return orjson.dumps(doc)


def checkov(failed: list[tuple[str, str, str, str]], skipped: list[tuple[str, str, str, str]]) -> bytes:
    """Each check: (check id, check name, file path, resource); skipped ones carry a suppress comment."""
    def check(item: tuple[str, str, str, str], result: str) -> dict[str, Any]:
        cid, name, path, resource = item
        entry: dict[str, Any] = {"check_id": cid, "bc_check_id": None, "check_name": name,
                                 "check_result": {"result": result}, "file_path": path, "file_line_range": [1, 20],
                                 "resource": resource, "severity": None,
                                 "guideline": f"https://docs.prismacloud.io/en/policy-reference/{cid.lower()}"}
        if result == "SKIPPED":
            entry["suppress_comment"] = "temporary exception for the migration"
        return entry
    doc = {"check_type": "terraform",
           "results": {"passed_checks": [], "failed_checks": [check(c, "FAILED") for c in failed],
                       "skipped_checks": [check(c, "SKIPPED") for c in skipped], "parsing_errors": []},
           "summary": {"passed": 41, "failed": len(failed), "skipped": len(skipped), "parsing_errors": 0}}
    return orjson.dumps(doc)


def trivy(artifact: str, vulns: list[tuple[str, str, str, str, str | None]], created: str,
          secrets: list[tuple[str, str, str]] | None = None) -> bytes:
    """``vulns``: (id, package, installed, severity, fixed); ``secrets``: (rule id, title, severity)."""
    results: list[dict[str, Any]] = [{
        "Target": f"{artifact} (debian 12.8)", "Class": "os-pkgs", "Type": "debian",
        "Vulnerabilities": [
            {"VulnerabilityID": vid, "PkgName": pkg, "InstalledVersion": inst, "Severity": sev,
             "Title": f"{pkg}: {vid}", "PrimaryURL": f"https://avd.aquasec.com/nvd/{vid.lower()}",
             **({"FixedVersion": fixed} if fixed else {})}
            for vid, pkg, inst, sev, fixed in vulns],
    }]
    if secrets:
        results.append({"Target": "/app/.env", "Class": "secret", "Secrets": [
            {"RuleID": rid, "Category": "AWS", "Severity": sev, "Title": title, "StartLine": 3, "EndLine": 3,
             "Match": "AWS_ACCESS_KEY_ID=********************"} for rid, title, sev in secrets]})
    doc = {"SchemaVersion": 2, "CreatedAt": created, "ArtifactName": artifact, "ArtifactType": "container_image",
           "Results": results}
    return orjson.dumps(doc)


def decode(kind: str, raw: bytes, branch: str, commit: str, repository: str = "acme/payments") -> list[Finding]:
    """Decode a report with the production decoder for ``kind``."""
    from service.decoders.findings import FindingContext

    ctx = FindingContext(repository=repository, branch=branch, commit=commit)
    decoder = {"sarif": decode_sarif, "zap": decode_zap, "checkov": decode_checkov, "trivy": decode_trivy}[kind]
    return decoder(raw, ctx)
