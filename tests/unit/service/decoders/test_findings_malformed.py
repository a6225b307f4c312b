"""Malformed scanner reports raise ``DecodeError`` naming what was wrong where (never TypeError/AttributeError)."""

from __future__ import annotations

import orjson
import pytest

from service.decoders import DecodeError, build_decoder

CASES = [
    ("sarif", {"runs": [{"tool": True}]}, "runs[0].tool must be an object, not a boolean"),
    ("sarif", {"runs": [{"tool": {"driver": []}}]}, "runs[0].tool.driver must be an object, not a list"),
    ("sarif", {"runs": [{"tool": {"driver": {"rules": 3}}}]}, "runs[0].tool.driver.rules must be a list"),
    ("sarif", {"runs": [{"results": {"a": 1}}]}, "runs[0].results must be a list, not an object"),
    ("sarif", {"runs": [{"results": [{"locations": [{"physicalLocation": "x"}]}]}]},
     "runs[0].results[0].locations[0].physicalLocation must be an object, not a string"),
    ("sarif", {"runs": [{"results": [{"locations": [{"physicalLocation": {"region": 5}}]}]}]}, None),
    ("sarif", {"runs": [{"results": [{"ruleIndex": 0}], "tool": {"driver": {"rules": [{"properties": []}]}}}]}, None),
    ("sarif", {"runs": [7]}, "runs[0] must be an object, not a number"),
    ("zap", {"site": [{"alerts": 1}]}, "site[0].alerts must be a list, not a number"),
    ("zap", {"site": [{"alerts": [{"instances": {"uri": "x"}}]}]}, "site[0].alerts[0].instances must be a list"),
    ("zap", {"site": [{"alerts": [{"cweid": [], "pluginid": {}, "riskcode": [3]}]}]}, None),
    ("checkov", {"results": {"failed_checks": {"x": 1}}}, "results.failed_checks must be a list, not an object"),
    ("checkov", [{"results": {"failed_checks": ["x"]}}], "[0].results.failed_checks[0] must be an object"),
    ("checkov", {"results": {"failed_checks": [{"file_path": "a", "file_line_range": [{}]}]}}, None),
    ("trivy", {"Results": -1}, "Results must be a list, not a number"),
    ("trivy", {"Results": [{"Vulnerabilities": [{"CweIDs": 5}]}]},
     "Results[0].Vulnerabilities[0].CweIDs must be a list"),
    ("trivy", {"Results": [{"Secrets": "x"}]}, "Results[0].Secrets must be a list, not a string"),
    ("trivy", {"Results": [{"Misconfigurations": [{"Status": {"x": 1}, "Severity": 3}]}]}, None),
]


@pytest.mark.parametrize("name, doc, where", CASES)
def test_malformed_report(name: str, doc: object, where: str | None) -> None:
    decode = build_decoder(name)
    if where is None:  # a leaf of the wrong type is left out; the finding itself is kept
        events = decode(orjson.dumps(doc))
        assert all(isinstance(e, dict) and e["report"] == name for e in events)
        return
    with pytest.raises(DecodeError) as caught:
        decode(orjson.dumps(doc))
    assert caught.value.reason == "malformed_report"
    assert where in str(caught.value)


def test_an_odd_misconfiguration_status_is_reported_not_dropped() -> None:
    doc = {"Results": [{"Misconfigurations": [{"Status": ["FAIL"], "ID": "X1"}, {"Status": "PASS", "ID": "X2"}]}]}
    events = build_decoder("trivy")(orjson.dumps(doc))
    assert [e["rule_id"] for e in events] == ["X1"]


@pytest.mark.parametrize("name, options", [("json", {"max_depth": {}}), ("json", {"max_bytes": True}),
                                           ("syslog", {"max_bytes": "1"}), ("text", {"max_bytes": -1}),
                                           ("regex", {"pattern": "(?P<a>x)", "keep_message": "no"}),
                                           ("sarif", {"max_bytes": []})])
def test_bad_decoder_options_are_value_errors(name: str, options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        build_decoder(name, options)
