"""The redactor (``detectors/redaction.py``): each format, markers, idempotence, documents."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.redaction import FORMATS, HASH_HEX, MARKER, Redactor, secret_name

KEY = b"k" * 32
R = Redactor(KEY)

AWS_ID = "AKIAQX3T7FJ2LMNOPQRS"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq3kLm9tZe"
GITHUB = "ghp_R8x2Lk9Qm4Np7Tv1Wy3Zb6Cd0Ef5Gh8Jk2Mn"
SLACK = "xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----"

CASES = [
    # (text, secret that must vanish, kind, kept prefix)
    (f"export AWS_ACCESS_KEY_ID={AWS_ID}", AWS_ID, "aws-access-key-id", "AKIA"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "aws-secret-key", ""),
    (f"git push https://{GITHUB}@github.com/acme/x", GITHUB, "github-token", "ghp_"),
    (f"clone https://x-access:{GITHUB}@github.com/acme/x", GITHUB, "github-token", "ghp_"),
    (f"token={SLACK}", SLACK, "slack-token", "xoxb-"),
    (f"Authorization: Bearer {JWT}", JWT, "jwt", "eyJ"),
    (f"cat id_ed25519\n{PEM}\nend", PEM, "private-key", ""),
    ("DATABASE_URL=postgres://app:s3cr3t-Pa55@db:5432/app", "s3cr3t-Pa55", "url-password", ""),
    ("db_password=hunter2hunter2 next", "hunter2hunter2", "password", ""),
    ('{"client_secret": "a b c d", "user": "x"}', "a b c d", "password", ""),
    ('{"m": "{\\"api_key\\": \\"k-9 9\\"}"}', "k-9 9", "password", ""),
    ("PASSWORD: 'with space'", "with space", "password", ""),
    ("glpat token glpat-Xk3Lm9Qr7Tv2Wy5Zb8Cd", "glpat-Xk3Lm9Qr7Tv2Wy5Zb8Cd", "gitlab-token", "glpat-"),
    ("key AIzaSyD4x9Qe7Lk2mN5pR8sT1vW3yZ6bC0dF2gH", "AIzaSyD4x9Qe7Lk2mN5pR8sT1vW3yZ6bC0dF2gH", "gcp-api-key", "AIza"),
]


@pytest.mark.parametrize(("text", "secret", "kind", "prefix"), CASES)
def test_each_format_is_replaced_by_a_marker(text: str, secret: str, kind: str, prefix: str) -> None:
    counts: dict[str, int] = {}
    out = R.text(text, counts)
    assert secret not in out
    expected = f"[REDACTED:{kind}{':' + prefix + '…' if prefix else ''}:h={R.digest(secret)}]"
    assert expected in out, out
    assert counts == {kind: 1}
    assert len(R.digest(secret)) == HASH_HEX


@pytest.mark.parametrize("spec", FORMATS, ids=lambda s: f"{s.kind}:{s.rule}")
def test_every_format_redacts_its_sample(spec) -> None:  # type: ignore[no-untyped-def]
    counts: dict[str, int] = {}
    out = R.text(spec.sample, counts)
    assert out != spec.sample and MARKER.search(out)
    assert sum(counts.values()) == 1


def test_same_secret_same_marker_other_key_other_hash() -> None:
    a = R.text(f"one {GITHUB} two {GITHUB}")
    markers = MARKER.findall(a)
    assert len(re.findall(r"\[REDACTED:[^\]]*\]", a)) == 2 and len(set(re.findall(r"h=[0-9a-f]+", a))) == 1
    assert markers
    assert Redactor(b"other").text(GITHUB) != R.text(GITHUB)


def test_text_without_secrets_is_returned_as_is() -> None:
    for text in ["", "plain build log line 42", '{"passed": true, "secret_scanning": {"enabled": 1}}',
                 "password reset requested for alice", "https://example.com/path?x=1"]:
        assert R.text(text) is text or R.text(text) == text


def test_names_like_secrets() -> None:
    assert all(secret_name(n) for n in ["db_password", "API_KEY", "x.client_secret", "Token", "passwd", "privateKey"])
    assert not any(secret_name(n) for n in ["user", "passed", "keyboard", "message", "compass"])


def test_document_redacts_matched_by_field_name_and_details_by_key() -> None:
    doc = {"message": "m", "event": {"original": f'{{"db_password": "p4ss", "k": "{AWS_ID}"}}'},
           "pipesentry": {"matched": [{"field": "db_password", "value": "p4ss"},
                                      {"field": "message", "value": f"id {AWS_ID}"}],
                          "details": {"token": "abc", "nested": {"secret": 5, "ok": "fine"}}},
           "labels": {"source": {"token": "in:t:0:1"}}}
    counts: dict[str, int] = {}
    out = R.document(doc, counts)
    text = repr(out)
    assert "p4ss" not in text and AWS_ID not in text and "'abc'" not in text and "5," not in text
    assert out["labels"]["source"]["token"] == "in:t:0:1"  # structural names outside details stay
    assert out["pipesentry"]["details"]["nested"]["ok"] == "fine"
    assert doc["pipesentry"]["matched"][0]["value"] == "p4ss"  # the input is not changed
    assert counts["secret-field"] == 3 and counts["aws-access-key-id"] == 2


def test_page_redacts_group_values_by_name() -> None:
    page = {"matched": [{"field": "password", "value": "x1"}], "group": {"user.password": "x1", "user": "bob"},
            "note": f"saw {SLACK}"}
    out = R.page(page)
    assert "x1" not in repr(out) and SLACK not in repr(out) and out["group"]["user"] == "bob"


secretish = st.sampled_from([AWS_ID, AWS_SECRET, GITHUB, SLACK, JWT, PEM, "password=", "token: ", "://u:p@h",
                             "\\\"secret\\\":\\\"", '"api_key": "', "[REDACTED:", "]", "-----BEGIN PRIVATE KEY-----"])
texts = st.lists(st.one_of(st.text(max_size=12), secretish), max_size=12).map("".join)
spaced = st.lists(st.one_of(st.text(max_size=12), secretish), max_size=12).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(texts, spaced))
def test_redaction_is_idempotent_and_bounded(text: str) -> None:
    counts: dict[str, int] = {}
    once = R.text(text, counts)
    assert R.text(once) == once
    n = sum(counts.values())
    longest = len(R.marker("azure-client-secret", "x", "github_pat_"))
    assert len(once) <= len(text) + n * longest
    for secret in (AWS_ID, GITHUB, SLACK, JWT):
        if f" {secret} " in f" {text} ":
            assert f" {secret} " not in f" {once} "


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        Redactor(b"")


def test_a_secret_exposed_by_a_neighbours_marker_is_redacted_in_the_same_call() -> None:
    glued = f"{PEM}{JWT}"  # no boundary before the JWT until the key block is a marker
    once = R.text(glued)
    assert JWT not in once and R.text(once) == once
    assert R.text(f"https://{GITHUB}@github.com") == f"https://{R.marker('github-token', GITHUB, 'ghp_')}@github.com"


class _Unfiltered(Redactor):
    """Every format on every text, at every position: what the anchor prefilter must not change."""

    def _prefilter(self, text: str) -> tuple[tuple[int, ...], list[int] | None]:
        return tuple(range(len(FORMATS))), None


UNFILTERED = _Unfiltered(KEY)
samples = st.sampled_from([spec.sample for spec in FORMATS] + [text for text, *_ in CASES])
cased = st.sampled_from(["KEY", "Pass", "AwS", "\u0131", "\u0130", "\u017f", "\u212a",  # dotless i, dotted I, long s, Kelvin
                         "aw\u017f_\u017fecret_acce\u017f\u017f_\u212aey=", "cred\u0131ent\u0131al="])
noisy = st.lists(st.one_of(st.text(max_size=12), secretish, samples, cased), max_size=10)


@settings(max_examples=400, deadline=None)
@given(noisy, st.sampled_from(["", " ", "\n", "="]))
def test_the_anchor_prefilter_changes_no_result(parts: list[str], glue: str) -> None:
    text = glue.join(parts)
    assert R.text(text) == UNFILTERED.text(text)
    document = {"event": {"original": text}, "pipesentry": {"matched": [{"field": "cmd", "value": text}],
                                                           "details": {"token": text, "n": 1}}, "url": [text, None]}
    assert R.document(document) == UNFILTERED.document(document)


name_words = ["password", "passwd", "passphrase", "pwd", "secret", "token", "api_key", "api-key", "apikey",
              "access_key", "access-key", "private_key", "private-key", "privatekey", "client_secret",
              "client-secret", "credential", "credentials", "auth_key", "auth-key", "session_key", "signing-key",
              "private_key_id", "aws_secret_access_key", "accountkey=", "xoxb-", "q~"]
"""Every word of :data:`SECRET_NAME` and the other anchors a match can hold after its start (``reach``)."""
anchored = st.builds(lambda word, upper, prefix, sep, value: (prefix + (word.upper() if upper else word) + sep + value),
                     st.sampled_from(name_words), st.booleans(), st.sampled_from(["", "x", "db_", "MY.", "_", "0", "-"]),
                     st.sampled_from(["=", ": ", "\":\"", "\\\":\\\"", "='", " = \"", "=[REDACTED:", " "]),
                     st.one_of(st.text(max_size=10), st.sampled_from([AWS_SECRET, GITHUB, "Xy18Q~" + "a" * 31])))
markers = st.sampled_from(["[REDACTED:url-password:h=12345678]", "[REDACTED:secret-field:h=0]", "[REDACTED:",
                           "[REDACTED:password]", "***"])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(anchored, markers, samples, cased, st.text(max_size=8)), min_size=1, max_size=8),
       st.sampled_from(["", " ", "\n", "=", ",", "\""]))
def test_trying_the_pattern_only_near_anchors_changes_no_result(parts: list[str], glue: str) -> None:
    """The prefilter's start positions (``FormatSpec.reach`` before each anchor, markers) against a scan of
    every position: secret names of every spelling, markers before and inside them, dense anchors."""
    text = glue.join(parts)
    assert R.text(text) == UNFILTERED.text(text)
    counts: dict[str, int] = {}
    unfiltered: dict[str, int] = {}
    R.text(text, counts)
    UNFILTERED.text(text, unfiltered)
    assert counts == unfiltered


def test_the_prefilter_gives_positions_only_where_they_save_work() -> None:
    chosen, starts = R._prefilter("GET /?q=../../../../etc/passwd HTTP/1.1 from 192.0.2.7 curl/8.0")
    assert chosen and starts is not None and len(starts) == 9  # "pass" at 18: positions 10..18
    assert R._prefilter("key " * 40)[1] is None  # anchors every few characters: one scan is cheaper
    assert R._prefilter("\u0130 /etc/passwd and more text to scan here")[1] is None  # İ lower-cases to 2 characters
    assert R._prefilter("no anchor at all") == ((), None)
    marked = "[REDACTED:jwt:h=00000000] then /etc/passwd and other words"
    assert 0 in (R._prefilter(marked)[1] or [])


def test_letters_that_re_reads_as_ascii_ones_do_not_hide_an_anchor() -> None:
    text = f"aw\u017f_\u017fecret_acce\u017f\u017f_\u212aey={AWS_SECRET}"  # long s, Kelvin sign: re -i reads s, k
    assert AWS_SECRET not in R.text(text) and R.text(text) == UNFILTERED.text(text)
    assert AWS_SECRET not in repr(R.page({"note": text}))


def test_secret_names_are_remembered_and_still_right() -> None:
    for _ in range(2):
        assert secret_name("db_password") and secret_name("API_KEY") and not secret_name("tokens")
