"""Security scanner reports -> one event per finding, so Sigma rules can alert on pipeline findings.

Four report formats are understood, each registered as a decoder of its own name:

- ``sarif``: SARIF 2.1.0, as written by SAST tools (Semgrep, CodeQL, Bandit, gosec, ...);
- ``zap``: OWASP ZAP's traditional JSON report (DAST), one event per alert type and site;
- ``checkov``: Checkov's JSON output (IaC), one event per failed or skipped check;
- ``trivy``: Trivy's JSON report (schema version 2): vulnerabilities, misconfigurations and secrets.

Every event has the same flat shape (see :data:`FINDING_FIELDS`), with a normalised ``severity``
(``critical``, ``high``, ``medium``, ``low``, ``info`` or ``unknown``) so one rule covers every
tool. Reports rarely say which branch was scanned, so the decoder options ``repository``,
``branch`` and ``commit`` (typically filled from the CI variables of the job that uploads the
report) are copied into every event; SARIF's ``versionControlProvenance`` wins when present.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from service.decoders import DecodeError, Decoder, register_decoder

FINDING_FIELDS: tuple[str, ...] = (
    "report", "scan_type", "tool", "tool_version", "rule_id", "title", "message", "severity",
    "status", "location", "target", "cwe", "package", "installed_version", "fixed_version",
    "vulnerability_id", "help_uri", "repository", "branch", "commit", "scanned_at",
)
"""Fields of a finding event (absent values are left out, never set to null)."""

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
SEVERITIES = ("critical", "high", "medium", "low", "info", "unknown")


@dataclass(frozen=True, slots=True)
class FindingContext:
    """What the report does not say: where the scanned code came from."""

    repository: str | None = None
    branch: str | None = None
    commit: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FindingContext:
        unknown = set(options) - {"repository", "branch", "commit", "max_bytes"}
        if unknown:
            raise ValueError(f"unknown findings decoder option(s): {', '.join(sorted(unknown))}")
        max_bytes = options.get("max_bytes", DEFAULT_MAX_BYTES)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise ValueError("findings decoder option max_bytes must be a positive integer")
        values = {k: options.get(k) for k in ("repository", "branch", "commit")}
        for key, value in values.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"findings decoder option {key} must be a string")
        return cls(max_bytes=max_bytes, **values)

    def fields(self) -> dict[str, str]:
        out = {"repository": self.repository, "branch": _short_branch(self.branch), "commit": self.commit}
        return {k: v for k, v in out.items() if v}


def _short_branch(ref: str | None) -> str | None:
    if ref and ref.startswith("refs/heads/"):
        return ref[len("refs/heads/"):]
    return ref


def _load(raw: bytes, ctx: FindingContext, fmt: str) -> Any:
    if len(raw) > ctx.max_bytes:
        raise DecodeError("too_large", f"{fmt} report of {len(raw)} bytes exceeds max_bytes={ctx.max_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", f"{fmt} report is not JSON: {exc}") from None


MALFORMED = "malformed_report"
"""``DecodeError.reason`` of a report whose structure has the wrong type somewhere."""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _obj(fmt: str, value: Any, where: str) -> Mapping[str, Any]:
    """``value`` when it is an object; absent (null) is empty; anything else names ``where``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DecodeError(MALFORMED, f"{fmt} report: {where} must be an object, not {_kind(value)}")
    return value


def _list(fmt: str, value: Any, where: str) -> list[Any]:
    """``value`` when it is a list; absent (null) is empty; anything else names ``where``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(MALFORMED, f"{fmt} report: {where} must be a list, not {_kind(value)}")
    return value


def _objects(fmt: str, value: Any, where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each element of the list ``value`` (an object), with its path for the next error."""
    for index, item in enumerate(_list(fmt, value, where)):
        path = f"{where}[{index}]"
        yield path, _obj(fmt, item, path)


def _event(report: str, scan_type: str, ctx: FindingContext, **values: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"report": report, "scan_type": scan_type, **ctx.fields()}
    for key, value in values.items():
        if value is not None and value != "" and value != []:
            event[key] = value
    return event


def _text(obj: Any, *path: str) -> str | None:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj if isinstance(obj, str) else None


# --- SARIF ------------------------------------------------------------------------------------

_SARIF_LEVELS = {"error": "high", "warning": "medium", "note": "low", "none": "info"}


def _cvss_band(score: float) -> str:
    """CVSS v3 qualitative bands (also what CodeQL's ``security-severity`` follows)."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "info"


def _sarif_cwes(tags: Any) -> list[str]:
    out: list[str] = []
    for tag in tags if isinstance(tags, list) else ():
        if not isinstance(tag, str):
            continue
        low = tag.lower()
        marker = low.rfind("cwe-")
        if marker < 0:
            continue
        digits = ""
        for ch in low[marker + 4:]:
            if not ch.isdigit():
                break
            digits += ch
        if digits and f"CWE-{int(digits)}" not in out:
            out.append(f"CWE-{int(digits)}")
    return out


def _sarif_rules(driver: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    return [rule for _, rule in _objects("SARIF", driver.get("rules"), f"{where}.rules")]


def _sarif_location(result: Mapping[str, Any], where: str) -> str | None:
    locations = _list("SARIF", result.get("locations"), f"{where}.locations")
    if not locations:
        return None
    first = _obj("SARIF", locations[0], f"{where}.locations[0]")
    physical = _obj("SARIF", first.get("physicalLocation"), f"{where}.locations[0].physicalLocation")
    uri = _text(physical, "artifactLocation", "uri")
    region = physical.get("region")
    line = region.get("startLine") if isinstance(region, Mapping) else None
    if uri and isinstance(line, int) and not isinstance(line, bool):
        return f"{uri}:{line}"
    return uri


def _sarif_severity(result: Mapping[str, Any], rule: Mapping[str, Any]) -> str:
    props = rule.get("properties")
    score = props.get("security-severity") if isinstance(props, Mapping) else None
    try:
        if score is not None and not isinstance(score, bool):
            band = float(score)
            if band == band:  # NaN falls through to the level
                return _cvss_band(band)
    except (TypeError, ValueError, OverflowError):
        pass
    level = result.get("level") or _text(rule, "defaultConfiguration", "level") or "warning"
    return _SARIF_LEVELS.get(str(level).lower(), "unknown") if isinstance(level, str) else "unknown"


def decode_sarif(raw: bytes, ctx: FindingContext = FindingContext()) -> list[dict[str, Any]]:
    doc = _load(raw, ctx, "SARIF")
    if not isinstance(doc, Mapping) or not isinstance(doc.get("runs"), list):
        raise DecodeError("not_a_report", "SARIF report needs a top-level object with a runs list")
    events: list[dict[str, Any]] = []
    for where, run in _objects("SARIF", doc["runs"], "runs"):
        driver = _obj("SARIF", _obj("SARIF", run.get("tool"), f"{where}.tool").get("driver"), f"{where}.tool.driver")
        rules = _sarif_rules(driver, f"{where}.tool.driver")
        by_id = {r["id"]: r for r in rules if isinstance(r.get("id"), str)}
        vcs = _list("SARIF", run.get("versionControlProvenance"), f"{where}.versionControlProvenance")
        vcs0 = vcs[0] if vcs and isinstance(vcs[0], Mapping) else {}
        run_ctx = FindingContext(
            repository=_text(vcs0, "repositoryUri") or ctx.repository,
            branch=_text(vcs0, "branch") or ctx.branch,
            commit=_text(vcs0, "revisionId") or ctx.commit,
        )
        for rwhere, result in _objects("SARIF", run.get("results"), f"{where}.results"):
            rule_id = result.get("ruleId") if isinstance(result.get("ruleId"), str) else None
            index = result.get("ruleIndex")
            rule = by_id.get(rule_id or "")
            if rule is None and isinstance(index, int) and 0 <= index < len(rules):
                rule = rules[index]
                rule_id = rule_id or _text(rule, "id")
            rule = rule or {}
            props = rule.get("properties")
            events.append(_event(
                "sarif", "sast", run_ctx,
                tool=_text(driver, "name"), tool_version=_text(driver, "semanticVersion") or _text(driver, "version"),
                rule_id=rule_id,
                title=_text(rule, "shortDescription", "text") or _text(rule, "name"),
                message=_text(result, "message", "text"),
                severity=_sarif_severity(result, rule),
                status="suppressed" if result.get("suppressions") else "open",
                location=_sarif_location(result, rwhere),
                cwe=_sarif_cwes(props.get("tags") if isinstance(props, Mapping) else None),
                help_uri=_text(rule, "helpUri"),
            ))
    return events


# --- OWASP ZAP ----------------------------------------------------------------------------------

_ZAP_RISK = {"3": "high", "2": "medium", "1": "low", "0": "info"}
_URL = re.compile(r"https?://[^\s<>\"]+")


def _first_url(html: str | None) -> str | None:
    """ZAP's ``reference`` is HTML paragraphs of links; the first link is the help page."""
    found = _URL.search(html or "")
    return found.group(0) if found else None


def _scalar_text(value: Any) -> str | None:
    """A string or integer as text (ZAP writes ids both ways); other types are absent."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value) or None


def decode_zap(raw: bytes, ctx: FindingContext = FindingContext()) -> list[dict[str, Any]]:
    doc = _load(raw, ctx, "ZAP")
    if not isinstance(doc, Mapping) or not isinstance(doc.get("site"), list):
        raise DecodeError("not_a_report", "ZAP JSON report needs a top-level object with a site list")
    events: list[dict[str, Any]] = []
    for where, site in _objects("ZAP", doc["site"], "site"):
        for awhere, alert in _objects("ZAP", site.get("alerts"), f"{where}.alerts"):
            instances = _list("ZAP", alert.get("instances"), f"{awhere}.instances")
            first = instances[0] if instances and isinstance(instances[0], Mapping) else {}
            cweid = alert.get("cweid")
            cwe = str(cweid) if isinstance(cweid, str | int) and not isinstance(cweid, bool) else ""
            events.append(_event(
                "zap", "dast", ctx,
                tool="OWASP ZAP", tool_version=_text(doc, "@version"),
                rule_id=_scalar_text(alert.get("pluginid")) or _scalar_text(alert.get("alertRef")),
                title=_text(alert, "name") or _text(alert, "alert"),
                message=_text(alert, "desc"),
                severity=_ZAP_RISK.get(_scalar_text(alert.get("riskcode")) or "", "unknown"),
                status="open",
                location=_text(first, "uri"),
                target=_text(site, "@name"),
                cwe=[f"CWE-{cwe}"] if cwe.isdigit() and cwe != "0" and cwe != "-1" else [],
                help_uri=_first_url(_text(alert, "reference")),
                instances=len(instances),
                scanned_at=_text(doc, "@generated"),
            ))
    return events


# --- Checkov ----------------------------------------------------------------------------------

def _checkov_reports(doc: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(doc, list):
        yield from (d for d in doc if isinstance(d, Mapping))
    elif isinstance(doc, Mapping):
        yield doc


def decode_checkov(raw: bytes, ctx: FindingContext = FindingContext()) -> list[dict[str, Any]]:
    doc = _load(raw, ctx, "Checkov")
    reports = list(_checkov_reports(doc))
    if not reports or not any(isinstance(r.get("results"), Mapping) or "summary" in r for r in reports):
        raise DecodeError("not_a_report", "Checkov report needs an object (or list of objects) with results")
    events: list[dict[str, Any]] = []
    for number, report in enumerate(reports):
        where = f"[{number}].results" if isinstance(doc, list) else "results"
        results = _obj("Checkov", report.get("results"), where)
        for key, status in (("failed_checks", "failed"), ("skipped_checks", "skipped")):
            for _, check in _objects("Checkov", results.get(key), f"{where}.{key}"):
                lines = check.get("file_line_range")
                path = _text(check, "file_path")
                first_line = lines[0] if isinstance(lines, list) and lines else None
                location = f"{path}:{first_line}" if path and isinstance(first_line, int | str) else path
                severity = check.get("severity")
                events.append(_event(
                    "checkov", "iac", ctx,
                    tool="Checkov", rule_id=_text(check, "check_id"), title=_text(check, "check_name"),
                    severity=str(severity).lower() if isinstance(severity, str) and severity.lower() in SEVERITIES else "unknown",
                    status=status, location=location, target=_text(check, "resource"),
                    framework=_text(report, "check_type"), help_uri=_text(check, "guideline"),
                    message=_text(check, "suppress_comment") if status == "skipped" else None,
                ))
    return events


# --- Trivy ------------------------------------------------------------------------------------

def decode_trivy(raw: bytes, ctx: FindingContext = FindingContext()) -> list[dict[str, Any]]:
    doc = _load(raw, ctx, "Trivy")
    if not isinstance(doc, Mapping) or ("Results" not in doc and "ArtifactName" not in doc):
        raise DecodeError("not_a_report", "Trivy report needs a top-level object with Results")
    artifact = _text(doc, "ArtifactName")
    events: list[dict[str, Any]] = []
    for where, result in _objects("Trivy", doc.get("Results"), "Results"):
        target = _text(result, "Target")
        for vwhere, vuln in _objects("Trivy", result.get("Vulnerabilities"), f"{where}.Vulnerabilities"):
            events.append(_event(
                "trivy", "container" if _text(doc, "ArtifactType") == "container_image" else "sca", ctx,
                tool="Trivy", rule_id=_text(vuln, "VulnerabilityID"), vulnerability_id=_text(vuln, "VulnerabilityID"),
                title=_text(vuln, "Title"), severity=_trivy_severity(vuln), status="open",
                package=_text(vuln, "PkgName"), installed_version=_text(vuln, "InstalledVersion"),
                fixed_version=_text(vuln, "FixedVersion"), target=artifact, location=target,
                cwe=[c for c in _list("Trivy", vuln.get("CweIDs"), f"{vwhere}.CweIDs") if isinstance(c, str)],
                help_uri=_text(vuln, "PrimaryURL"),
                scanned_at=_text(doc, "CreatedAt"),
            ))
        for _, mis in _objects("Trivy", result.get("Misconfigurations"), f"{where}.Misconfigurations"):
            status = mis.get("Status", "FAIL")
            if not isinstance(status, str) or status.upper() == "FAIL":  # an odd status is reported, not dropped
                events.append(_event(
                    "trivy", "iac", ctx, tool="Trivy", rule_id=_text(mis, "AVDID") or _text(mis, "ID"),
                    title=_text(mis, "Title"), message=_text(mis, "Message"), severity=_trivy_severity(mis),
                    status="failed", target=artifact, location=target, help_uri=_text(mis, "PrimaryURL"),
                    scanned_at=_text(doc, "CreatedAt"),
                ))
        for _, secret in _objects("Trivy", result.get("Secrets"), f"{where}.Secrets"):
            line = secret.get("StartLine")
            events.append(_event(
                "trivy", "secret", ctx, tool="Trivy", rule_id=_text(secret, "RuleID"), title=_text(secret, "Title"),
                severity=_trivy_severity(secret), status="open", target=artifact,
                location=f"{target}:{line}" if target and isinstance(line, int) else target,
                message=_text(secret, "Match"), scanned_at=_text(doc, "CreatedAt"),
            ))
    return events


def _trivy_severity(item: Mapping[str, Any]) -> str:
    value = item.get("Severity")
    value = value.lower() if isinstance(value, str) else "unknown"
    return value if value in SEVERITIES else "unknown"


# --- registration -----------------------------------------------------------------------------

DecodeFn = Callable[[bytes, FindingContext], list[dict[str, Any]]]
DECODERS: dict[str, DecodeFn] = {
    "sarif": decode_sarif,
    "zap": decode_zap,
    "checkov": decode_checkov,
    "trivy": decode_trivy,
}


def _factory(decode: DecodeFn) -> Callable[[Mapping[str, Any]], Decoder]:
    def build(options: Mapping[str, Any]) -> Decoder:
        ctx = FindingContext.from_options(options)
        return lambda raw: decode(raw, ctx)
    return build


def register_all(replace: bool = False) -> None:
    """Register the four report decoders (idempotent with ``replace=True``)."""
    for name, decode in DECODERS.items():
        register_decoder(name, factory=_factory(decode), replace=replace)


register_all(replace=True)
