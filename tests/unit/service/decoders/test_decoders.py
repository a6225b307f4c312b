"""Decoders: JSON, syslog (RFC 5424 / 3164), named-group regex, and the open registry."""

from __future__ import annotations

import pytest

from service.decoders import DecodeError, build_decoder, decoder_names, register_decoder


def reason(decode, data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data)
    return info.value.reason


def test_json_object_and_rejects():
    decode = build_decoder("json")
    assert decode(b'{"a": {"b": [1, 2]}}') == [{"a": {"b": [1, 2]}}]
    assert reason(decode, b"[1, 2]") == "not_object"
    assert reason(decode, b'{"a": ') == "decode"
    assert reason(decode, b'{"a": "\xff\xfe"}') == "utf8"
    deep = b'{"a":' * 70 + b"1" + b"}" * 70
    assert reason(decode, deep) == "depth"
    assert reason(build_decoder("json", {"max_bytes": 10}), b'{"a": "0123456789"}') == "oversize"


def test_json_depth_limit_counts_nesting_not_brackets():
    decode = build_decoder("json", {"max_depth": 3})
    assert decode(b'{"a": [], "b": [], "c": [], "d": {}}')  # many brackets, depth 2
    assert reason(decode, b'{"a": {"b": {"c": {}}}}') == "depth"


def test_ndjson_yields_every_line_and_names_the_bad_one():
    decode = build_decoder("ndjson")
    assert decode(b'{"a": 1}\n\n{"a": 2}\n') == [{"a": 1}, {"a": 2}]
    with pytest.raises(DecodeError, match="line 2"):
        decode(b'{"a": 1}\n[]\n')


def test_syslog_rfc5424_with_structured_data():
    decode = build_decoder("syslog")
    [event] = decode(b'<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 '
                     b'[exampleSDID@32473 iut="3" eventSource="App\\"x\\]"][meta@1 a="b"] '
                     b'\xef\xbb\xbf\'su root\' failed')
    assert event["facility_name"] == "auth" and event["severity_name"] == "crit"
    assert event["hostname"] == "mymachine.example.com" and event["app_name"] == "su"
    assert event["procid"] is None and event["msgid"] == "ID47"
    assert event["structured_data"] == {"exampleSDID@32473": {"iut": "3", "eventSource": 'App"x]'},
                                        "meta@1": {"a": "b"}}
    assert event["message"] == "'su root' failed"
    assert event["syslog_format"] == "rfc5424"


def test_syslog_rfc5424_nil_structured_data_and_no_message():
    [event] = build_decoder("syslog")(b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - -")
    assert event["structured_data"] == {} and event["message"] == ""
    assert event["facility"] == 20 and event["severity"] == 5


def test_syslog_rfc3164_with_and_without_pri():
    decode = build_decoder("syslog")
    [event] = decode(b"<13>Feb  5 17:32:18 gitlab-runner sshd[4121]: Failed password for root\n")
    assert event["timestamp"] == "Feb  5 17:32:18" and event["hostname"] == "gitlab-runner"
    assert event["app_name"] == "sshd" and event["procid"] == "4121"
    assert event["message"] == "Failed password for root" and event["syslog_format"] == "rfc3164"
    [bare] = decode(b"Oct 11 22:14:15 host cron: job done")
    assert "facility" not in bare and bare["app_name"] == "cron"


def test_syslog_rejects():
    decode = build_decoder("syslog")
    assert reason(decode, b"just some text") == "decode"
    assert reason(decode, b"<999>1 2003-10-11T22:14:15Z h a p m - x") == "decode"
    assert reason(decode, b"<34>1 2003-10-11T22:14:15Z h a p m [broken") == "decode"
    assert reason(decode, b"<34>Oct 11 22:14:15 host app: \xff") == "utf8"


def test_regex_named_groups():
    decode = build_decoder("regex", {"pattern": r"^(?P<user>\w+) ran (?P<cmd>\S+)(?: as (?P<as>\w+))?$"})
    assert decode(b"alice ran deploy.sh\r\n") == [
        {"user": "alice", "cmd": "deploy.sh", "message": "alice ran deploy.sh"}]
    assert reason(decode, b"nothing here") == "no_match"
    no_msg = build_decoder("regex", {"pattern": r"(?P<n>\d+)", "keep_message": False})
    assert no_msg(b"id 42") == [{"n": "42"}]


@pytest.mark.parametrize("options, message", [
    ({}, "needs option 'pattern'"),
    ({"pattern": "(unclosed"}, "does not compile"),
    ({"pattern": "(a)"}, "no named groups"),
    ({"pattern": "(?P<a>a)", "bogus": 1}, "unknown regex decoder option"),
])
def test_regex_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        build_decoder("regex", options)


def test_registry_is_open_and_guards_names():
    def decode_csvish(data: bytes) -> list[dict]:
        return [dict(zip(("a", "b"), data.decode().split(","), strict=False))]

    register_decoder("test-csvish", decode_csvish)
    assert "test-csvish" in decoder_names()
    assert build_decoder("test-csvish")(b"1,2") == [{"a": "1", "b": "2"}]
    with pytest.raises(ValueError, match="takes no options"):
        build_decoder("test-csvish", {"x": 1})
    with pytest.raises(ValueError, match="already registered"):
        register_decoder("test-csvish", decode_csvish)
    register_decoder("test-csvish", factory=lambda opts: lambda data: [{"n": opts.get("n")}], replace=True)
    assert build_decoder("test-csvish", {"n": 3})(b"") == [{"n": 3}]
    with pytest.raises(KeyError, match="unknown decoder 'nope'"):
        build_decoder("nope")
    with pytest.raises(TypeError):
        register_decoder("x")
