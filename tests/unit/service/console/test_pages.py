"""The console over the ASGI app: sign-in/out, sessions, CSRF, roles, redirects, headers and escaping."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest

from detectors.alert import build_alert
from detectors.model import Match, Origin
from service.console.headers import CSP
from service.console.sessions import COOKIE
from tests.support.alerts import rule
from tests.support.api import ADMIN, ANALYST, EXPIRED, INGESTER, READER
from tests.support.console import XSS_EVENT, console_client, fresh_alert, sign_in

PAGES = ["/", "/alerts/abc", "/rules", "/rules/curl", "/coverage", "/coverage/navigator-layer.json",
         "/silences", "/audit"]


def test_every_page_needs_a_session_and_comes_back_after_sign_in(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        for page in PAGES:
            response = client.get(page)
            assert response.status_code == 303, page
            assert response.headers["location"].startswith("/sign-in?next="), page
        response = client.post("/sign-in", data={"token": READER, "next": "/rules?q=curl"})
        assert response.status_code == 303 and response.headers["location"] == "/rules?q=curl"
        for page in PAGES[:-1]:
            assert client.get(page).status_code in (200, 404), page


def test_sign_in_sets_a_strict_http_only_cookie_and_never_echoes_the_token(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        response = client.post("/sign-in", data={"token": ANALYST, "next": "/"})
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure
        assert ANALYST not in cookie
        page = client.get("/")
        assert ANALYST not in page.text and "triage" in page.text


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                    "javascript:alert(1)", "/%0d%0aSet-Cookie:x=1", "\\\\evil"])
def test_next_must_be_a_local_path(tmp_path: Path, target: str) -> None:
    with console_client(tmp_path) as (client, _):
        response = client.post("/sign-in", data={"token": READER, "next": target})
        location = response.headers["location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        assert "evil" not in location.split("?")[0] or location.startswith("/%")


def test_failed_sign_ins_are_audited_and_rate_limited(tmp_path: Path) -> None:
    with console_client(tmp_path, console={"sign_in_failures": 3}) as (client, _):
        for token in ("w" * 24, EXPIRED, INGESTER):
            response = client.post("/sign-in", data={"token": token})
            assert response.status_code == 401 and COOKIE not in response.headers.get("set-cookie", "")
        assert client.post("/sign-in", data={"token": ADMIN}).status_code == 429  # even the right one, for now
    with console_client(tmp_path / "b") as (client, _):
        client.post("/sign-in", data={"token": "x" * 24})
        sign_in(client, ADMIN)
        audit = client.get("/audit").text
        assert "console.sign_in" in audit and "unauthenticated" in audit and "denied" in audit


def test_a_sign_in_posted_from_another_site_is_refused(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        response = client.post("/sign-in", data={"token": ADMIN}, headers={"Origin": "https://evil.example"})
        assert response.status_code == 403 and "set-cookie" not in response.headers


def test_sign_out_needs_the_csrf_token_and_ends_the_session(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        csrf = sign_in(client, READER)
        assert client.post("/sign-out", data={"csrf": "wrong"}).status_code == 403
        assert client.get("/").status_code == 200
        assert client.post("/sign-out", data={"csrf": csrf}).status_code == 303
        client.cookies.clear()
        assert client.get("/").status_code == 303


def test_the_api_accepts_the_session_and_needs_the_csrf_header_for_writes(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, alerts):
        a = fresh_alert(1)
        alerts.store.upsert([a.to_document()])
        csrf = sign_in(client, ANALYST)
        assert client.get("/api/v1/alerts").json()["total"] == 1
        body = {"status": "acknowledged"}
        refused = client.patch(f"/api/v1/alerts/{a.id}", json=body)
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        wrong = client.patch(f"/api/v1/alerts/{a.id}", json=body, headers={"X-CSRF-Token": "x" * 43})
        assert wrong.status_code == 403
        done = client.patch(f"/api/v1/alerts/{a.id}", json=body, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200, done.text
        page = client.get(f"/alerts/{a.id}").text
        assert "acknowledged" in page and "triage" in page  # the history names the session's token


def test_a_read_session_sees_no_actions_and_cannot_change_anything(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, alerts):
        a = fresh_alert(1)
        alerts.store.upsert([a.to_document()])
        csrf = sign_in(client, READER)
        headers = {"X-CSRF-Token": csrf}
        page = client.get(f"/alerts/{a.id}").text
        assert 'id="acknowledge"' not in page and 'id="note-form"' not in page
        assert 'id="bulk-apply"' not in client.get("/").text
        assert 'id="create-silence"' not in client.get("/silences").text
        assert 'id="reload"' not in client.get("/rules").text and 'id="run-test"' not in client.get("/rules/curl").text
        assert client.get("/audit").status_code == 403
        assert client.patch(f"/api/v1/alerts/{a.id}", json={"status": "acknowledged"}, headers=headers).status_code == 403
        assert client.post(f"/api/v1/alerts/{a.id}/notes", json={"text": "x"}, headers=headers).status_code == 403
        silence = {"match": {"rule_ids": ["r1"]}, "duration_s": 60, "comment": "x"}
        assert client.post("/api/v1/silences", json=silence, headers=headers).status_code == 403
        assert client.post("/api/v1/rules/reload", headers=headers).status_code == 403


def test_pages_carry_a_csp_without_inline_script_and_other_headers(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        for response in (client.get("/sign-in"), client.get("/docs"), client.get("/")):
            assert response.headers["content-security-policy"] == CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
        sign_in(client, ADMIN)
        for page in ("/", "/rules", "/coverage", "/silences", "/audit", "/docs", "/sign-in"):
            text = client.get(page).text
            assert "<script>" not in text and "onclick" not in text and "style=" not in text, page
            assert "https://cdn" not in text and "fonts.googleapis" not in text, page


def test_docs_are_served_from_packaged_files(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        docs = client.get("/docs")
        assert docs.status_code == 200 and "/console/swagger/swagger-ui-bundle.js" in docs.text
        bundle = client.get("/console/swagger/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 100_000
        assert client.get("/console/swagger/index.html").status_code == 404
        assert client.get("/console/static/console.js").status_code == 200
        for sneaky in ("/console/static/../pages.py", "/console/static/..%2Fpages.py", "/console/static/%2e%2e/pages.py"):
            response = client.get(sneaky)
            assert response.status_code in (401, 404) and "console_router" not in response.text, sneaky


def test_event_values_are_escaped_and_script_urls_not_linked(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, alerts):
        a = fresh_alert(1, event=XSS_EVENT, refs=("javascript:window.pwned=4", "https://ok.example/ref"))
        alerts.store.upsert([a.to_document()])
        sign_in(client, ADMIN)
        for page in ("/", f"/alerts/{a.id}", "/?q=script"):
            text = client.get(page).text
            assert "<script>window" not in text and "<img" not in text, page
            assert 'href="javascript:' not in text, page
        text = client.get(f"/alerts/{a.id}").text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in text
        assert 'href="https://ok.example/ref"' in text
        assert "Tester" in text  # the rule's author


def test_the_queue_filters_counts_and_pages(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, alerts):
        docs = [fresh_alert(i, level=lv).to_document() for i, lv in enumerate(["low", "high", "critical", "high"])]
        alerts.store.upsert(docs)
        sign_in(client, READER)
        page = client.get("/", params=[("level", "high"), ("level", "critical"), ("range", "24h"), ("q", "")])
        assert page.status_code == 200 and '<span id="total">3</span>' in page.text
        found = re.search(r'data-summary="([^"]+)"', page.text)
        assert found is not None  # the counts are fetched by the page's script from the API, same filters
        counts = client.get(html.unescape(found.group(1))).json()
        assert counts["by_level"] == {"high": 2, "critical": 1}
        assert client.get("/", params={"range": "15m", "min_level": "critical"}).text.count('class="alert-link"') == 1
        paged = client.get("/", params={"limit": "2"})
        assert paged.text.count('class="alert-link"') == 2 and 'id="next-page"' in paged.text
        assert client.get("/", params={"level": "bogus"}).status_code == 422


def test_coverage_and_the_navigator_layer(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        sign_in(client, READER)
        assert client.get("/coverage").status_code == 200
        layer = client.get("/coverage/navigator-layer.json").json()
        assert layer["domain"] == "enterprise-attack" and isinstance(layer["techniques"], list)


def test_without_tokens_continue_signs_in_as_the_anonymous_admin(tmp_path: Path) -> None:
    with console_client(tmp_path, tokens=[]) as (client, _):
        assert client.get("/").status_code == 303
        assert "Authentication is off" in client.get("/sign-in").text
        assert client.post("/sign-in", data={}).status_code == 303
        assert client.get("/audit").status_code == 200


def test_without_tokens_a_rebound_host_name_cannot_use_the_console(tmp_path: Path) -> None:
    with console_client(tmp_path, tokens=[]) as (client, _):
        rebound = {"Host": "attacker.example:8080"}
        assert client.get("/sign-in", headers=rebound).status_code == 403
        response = client.post("/sign-in", data={}, headers={**rebound, "Origin": "http://attacker.example:8080"})
        assert response.status_code == 403 and "set-cookie" not in response.headers
        assert client.get("/sign-in", headers={"Host": "localhost:8080"}).status_code == 200


def test_with_the_console_off_only_docs_remain_and_cookies_mean_nothing(tmp_path: Path) -> None:
    with console_client(tmp_path, console={"enabled": False}) as (client, _):
        assert client.get("/docs").status_code == 200
        assert client.get("/").status_code == 401 and client.post("/sign-in", data={"token": ADMIN}).status_code == 401
        assert client.get("/api/v1/alerts", headers={"cookie": f"{COOKIE}={'x' * 43}"}).status_code == 401


def test_a_new_sign_in_replaces_the_session_it_was_made_from(tmp_path: Path) -> None:
    with console_client(tmp_path) as (client, _):
        sign_in(client, READER)
        old = client.cookies[COOKIE]
        sign_in(client, ADMIN)
        assert client.cookies[COOKIE] != old
        new = client.cookies[COOKIE]
        client.cookies.clear()
        assert client.get("/", headers={"cookie": f"{COOKIE}={old}"}).status_code == 303  # the old session ended
        assert client.get("/", headers={"cookie": f"{COOKIE}={new}"}).status_code == 200


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    from tests.support.tls import TestCA

    server = TestCA(tmp_path / "pki").issue("server", "pipesentry", server=True)
    tls = {"cert_file": str(server.cert), "key_file": str(server.key)}
    with console_client(tmp_path / "app", tls=tls) as (client, _):
        cookie = client.post("/sign-in", data={"token": READER}).headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_an_alert_page_lists_the_same_rule_and_group_key(tmp_path: Path) -> None:
    r = rule("brute", "high")

    def correlation(n: int, user: str) -> str:
        now = time.time()
        details = {"group": {"user.name": user}, "alert_key": f"brute-{n}"}
        a = build_alert(Match(rule=r, details=details), {"user": {"name": user}},
                        Origin(input="kafka", topic="auth", partition=0, offset=n), event_time=now, now=now)
        alerts.store.upsert([a.to_document()])
        return a.id

    with console_client(tmp_path) as (client, alerts):
        first, same, other = correlation(1, "mallory"), correlation(2, "mallory"), correlation(3, "alice")
        sign_in(client, READER)
        text = client.get(f"/alerts/{first}").text
        group = text.split('id="related-group"', 1)[1].split("</ul>", 1)[0]
        assert "<code>user.name=mallory</code>" in text
        assert f"/alerts/{same}" in group and f"/alerts/{other}" not in group and f"/alerts/{first}" not in group
