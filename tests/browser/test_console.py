"""The console in real headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium)
against a real uvicorn on a free loopback port, its store fed with the demo stories' alerts.

Screenshots of the main pages are kept under the pytest base temp (``console-screens/``);
``PIPESENTRY_UPDATE_SCREENSHOTS=1`` also refreshes those of ``docs/console/``.
Skipped, with the reason, where the browser, its driver or Selenium is not installed
(``make system-packages`` and the dev extras install them).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from detectors.alert import Alert
from service.alerting.router import AlertRouter
from service.api import create_app
from tests.support.alerts import alert
from tests.support.api import ADMIN, ANALYST, READER, build_ctx
from tests.support.console import XSS_EVENT, fresh_alert

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extras)")
if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    pytest.skip("chromium/chromedriver not installed (make system-packages)", allow_module_level=True)

from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AlertRouter, dict[str, str], Alert]]:
    """(base URL, the alert router whose store it serves, alert and rule ids by purpose, the correlation alert)."""
    from service.demo.corpus import generate
    from service.demo.runner import build_detectors, run

    tmp = tmp_path_factory.mktemp("console-server")
    ctx, alerts = build_ctx(tmp)
    ctx.extra["alerts"] = alerts
    stories = [e for e in generate(7) if e.story]
    demo = run(stories, build_detectors(), now=time.time())
    docs = [d.alert.to_document() for d in demo.alerts]
    xss = fresh_alert(999_999, level="critical", event=XSS_EVENT, refs=("javascript:window.pwned=4",))
    curl_rule = ctx.detector.current.ruleset.rules[0]  # a loaded rule: its page shows its false-positive ratio
    curl = [alert(900_000 + i, r=curl_rule, event={"message": f"curl https://x/{i} | sh"}, ts=time.time())
            for i in range(2)]
    alerts.store.upsert([*docs, xss.to_document(), *(c.to_document() for c in curl)])
    busy = Counter(d.alert.rule.id for d in demo.alerts if d.alert.rule.kind == "sigma").most_common(1)[0][0]
    ids = {"xss": xss.id, "busy_rule": busy, "curl": curl[0].id, "curl2": curl[1].id, "curl_rule": curl_rule.id, "correlation": next(d.alert.id for d in demo.alerts if d.alert.rule.kind == "correlation"),
           "high": next(d.alert.id for d in demo.alerts if d.alert.level == "high")}
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    _until(lambda: server.started, "uvicorn to start")
    try:
        correlation = next(d.alert for d in demo.alerts if d.alert.id == ids["correlation"])
        yield f"http://127.0.0.1:{port}", alerts, ids, correlation
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        alerts.store.close()


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    folder = tmp_path_factory.getbasetemp() / "console-screens"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    docs = Path(__file__).resolve().parents[2] / "docs" / "console"
    if os.environ.get("PIPESENTRY_UPDATE_SCREENSHOTS") == "1" and name in ("queue", "alert", "coverage", "rules"):
        shutil.copyfile(path, docs / f"{name}.png")
    return path


def wait(driver: Any, check: Callable[[Any], Any], timeout: float = 20.0) -> Any:
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,
                                                              NoSuchElementException)).until(check)


def sign_in(driver: Any, base: str, token: str, path: str = "/") -> None:
    driver.get(base + path)
    wait(driver, lambda d: "/sign-in" in d.current_url)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    wait(driver, lambda d: d.find_elements(By.ID, "who"))


def test_a_read_session_sees_alerts_but_no_actions(served: Any, browser: Any,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    base, alerts, ids, _ = served
    sign_in(browser, base, READER, f"/alerts/{ids['high']}")
    assert browser.current_url.endswith(f"/alerts/{ids['high']}")  # the page asked for before sign-in
    assert not browser.find_elements(By.ID, "acknowledge") and not browser.find_elements(By.ID, "note-form")
    browser.get(base + "/")
    assert not browser.find_elements(By.ID, "bulk-apply")
    assert browser.find_elements(By.CSS_SELECTOR, "a.alert-link")
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies["pipesentry_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # nothing for page scripts to read
    assert READER not in browser.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    live = browser.find_element(By.ID, "live")
    assert not live.is_displayed()
    alerts.store.upsert([fresh_alert(777_777, level="medium").to_document()])  # a new alert arrives
    wait(browser, lambda d: d.find_element(By.ID, "live").is_displayed(), timeout=30)  # the poll noticed it


def test_docs_render_offline_under_the_csp(served: Any, browser: Any) -> None:
    base, _, _, _ = served
    browser.get(base + "/docs")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), timeout=30)
    assert "pipesentry" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .btn.authorize")  # the bearer scheme


def test_an_analyst_filters_opens_a_correlation_triages_and_silences(
        served: Any, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    base, alerts, ids, correlation = served
    sign_in(browser, base, ANALYST)
    for level in ("high", "critical"):
        browser.find_element(By.ID, f"level-{level}").click()
    Select(browser.find_element(By.ID, "range")).select_by_value("24h")
    browser.find_element(By.ID, "apply").click()
    wait(browser, lambda d: "level=high" in d.current_url and "level=critical" in d.current_url)
    badges = {b.text for b in browser.find_elements(By.CSS_SELECTOR, "#queue tbody .badge")}
    assert badges and badges <= {"high", "critical"}
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-level=high]").text.isdigit())  # counts arrived
    assert browser.find_element(By.CSS_SELECTOR, "[data-level=low]").text == "0"
    assert browser.find_elements(By.CSS_SELECTOR, "#rule-counts li a")
    shot(browser, tmp_path_factory, "queue")

    browser.get(f"{base}/alerts/{ids['correlation']}")
    assert browser.find_element(By.ID, "rule-author").text.strip()
    contributing = browser.find_elements(By.CSS_SELECTOR, "#contributing tbody tr")
    assert len(contributing) >= 2
    assert browser.find_elements(By.CSS_SELECTOR, "#contributing a[href^='/alerts/']")  # the base rules' alerts
    browser.find_element(By.ID, "acknowledge").click()
    wait(browser, lambda d: d.find_element(By.ID, "alert-status").text.startswith("acknowledged"))
    browser.find_element(By.ID, "assign").click()
    wait(browser, lambda d: d.find_element(By.ID, "alert-assignee").text == "triage")
    browser.find_element(By.ID, "note").send_keys("looked at the contributors")
    browser.find_element(By.ID, "add-note").click()
    wait(browser, lambda d: "looked at the contributors" in d.find_element(By.ID, "notes").text)
    shot(browser, tmp_path_factory, "alert")

    browser.find_element(By.ID, "silence-link").click()
    wait(browser, lambda d: d.find_elements(By.ID, "silence-form"))
    assert browser.find_element(By.ID, "s-rule").get_attribute("value")  # pre-filled from the alert
    browser.find_element(By.ID, "s-comment").send_keys("known noise during the demo")
    browser.find_element(By.ID, "create-silence").click()
    wait(browser, lambda d: "known noise during the demo" in d.find_element(By.ID, "silences").text)
    assert "triage" in browser.find_element(By.ID, "silences").text  # created_by is the token's name
    repeat = replace(correlation, id="repeat-of-the-correlation", created=time.time())
    silence = alerts.silences.silenced_by(repeat, time.time())
    assert silence is not None and silence.created_by == "triage"  # a repeat of the alert is suppressed
    browser.find_element(By.CSS_SELECTOR, "#silences button").click()  # expire it again
    wait(browser, lambda d: "known noise during the demo" not in d.find_element(By.ID, "silences").text)
    assert alerts.silences.silenced_by(repeat, time.time()) is None
    shot(browser, tmp_path_factory, "silences")


def test_false_positives_show_on_the_rule_and_admins_see_each_action_audited(
        served: Any, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    base, _, ids, _ = served
    sign_in(browser, base, ANALYST, f"/rules/{ids['curl_rule']}")
    assert "ratio" not in browser.find_element(By.ID, "rule-stats").text  # nothing resolved yet
    for alert_id, disposition in ((ids["curl"], "false_positive"), (ids["curl2"], "true_positive")):
        browser.get(f"{base}/alerts/{alert_id}")
        Select(browser.find_element(By.ID, "disposition")).select_by_value(disposition)
        browser.find_element(By.ID, "resolve").click()
        wait(browser, lambda d: d.find_element(By.ID, "alert-status").text.startswith("resolved"))
    browser.get(f"{base}/rules/{ids['curl_rule']}")
    assert "1 false positive (ratio 50%)" in browser.find_element(By.ID, "rule-stats").text
    browser.find_element(By.CSS_SELECTOR, "form.who button").click()  # sign out
    wait(browser, lambda d: "/sign-in" in d.current_url)
    browser.get(base + "/audit")
    wait(browser, lambda d: "/sign-in?next=%2Faudit" in d.current_url)
    browser.find_element(By.ID, "token").send_keys(ADMIN)
    browser.find_element(By.ID, "sign-in").click()
    wait(browser, lambda d: d.find_elements(By.ID, "audit"))
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")]
    assert any("triage" in r and "alert.triage" in r and ids["curl"] in r for r in rows)
    assert any("triage" in r and "console.sign_out" in r for r in rows)
    assert any("ops" in r and "console.sign_in" in r for r in rows)


def test_bulk_acknowledge_of_a_selection(served: Any, browser: Any) -> None:
    base, _, ids, _ = served
    sign_in(browser, base, ANALYST, f"/?rule={ids['busy_rule']}&status=new&range=24h")
    boxes = browser.find_elements(By.CSS_SELECTOR, "#queue input[name=ids]")
    assert len(boxes) >= 2
    chosen = [b.get_attribute("value") for b in boxes[:2]]
    for box in boxes[:2]:
        box.click()
    Select(browser.find_element(By.ID, "bulk-action")).select_by_value("acknowledged")
    browser.find_element(By.ID, "bulk-apply").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#queue input[name=ids]")) == len(boxes) - 2)
    for alert_id in chosen:
        browser.get(f"{base}/alerts/{alert_id}")
        assert browser.find_element(By.ID, "alert-status").text == "acknowledged"


def test_the_queue_works_from_the_keyboard(served: Any, browser: Any) -> None:
    base, _, _, _ = served
    sign_in(browser, base, READER)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip"
    focused = []
    for _ in range(40):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        element = browser.switch_to.active_element
        focused.append((element.tag_name, element.get_attribute("id") or element.get_attribute("class") or ""))
        if element.get_attribute("class") == "alert-link":
            break
    assert ("input", "level-critical") in focused and ("a", "alert-link") in focused  # filters, then the queue
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")  # a visible focus style
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)")
    assert unlabelled == []


def test_attacker_controlled_event_values_do_not_execute(served: Any, browser: Any,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    base, _, ids, _ = served
    sign_in(browser, base, ADMIN)
    for path in (f"/alerts/{ids['xss']}", "/?q=pwned", "/rules", "/coverage", "/audit"):
        browser.get(base + path)
        wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert  # noqa: B018 (no dialog was opened by a payload)
        assert browser.execute_script("return window.pwned === undefined"), path
    browser.get(f"{base}/alerts/{ids['xss']}")
    assert "<script>window.pwned=1</script>" in browser.find_element(By.ID, "event").text  # shown as text
    links = [a.get_attribute("href") or "" for a in browser.find_elements(By.TAG_NAME, "a")]
    assert not any(h.startswith("javascript:") for h in links)
    for name, path in (("rules", "/rules"), ("coverage", "/coverage"), ("audit", "/audit")):
        browser.get(base + path)
        shot(browser, tmp_path_factory, name)
    assert "console.sign_in" in browser.find_element(By.ID, "audit").text
