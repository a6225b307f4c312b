// pipesentry console: live updates of the queue and the actions of the pages' forms.
// Loaded as a file (the Content-Security-Policy forbids inline script). Values from alerts are
// never inserted as HTML here: results are shown with textContent, and pages are re-rendered by
// the server (which escapes everything).
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function say(text) {
    const status = document.getElementById("status");
    if (status) { status.textContent = text; }
  }

  function list(value) {
    return value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
  }

  function payload(form) {
    const data = new FormData(form);
    switch (form.dataset.kind) {
      case "triage": {
        const body = {};
        ["status", "disposition", "assignee"].forEach(function (k) {
          const v = data.get(k);
          if (v) { body[k] = v; }
        });
        return body;
      }
      case "note":
        return { text: data.get("text") };
      case "bulk": {
        const ids = data.getAll("ids");
        const action = data.get("action");
        if (!ids.length) { throw new Error("select alerts first"); }
        return action === "acknowledged" ? { ids: ids, status: "acknowledged" }
          : { ids: ids, status: "resolved", disposition: action };
      }
      case "silence": {
        const match = {};
        const rules = list(data.get("rule_ids") || "");
        const tags = list(data.get("tags") || "");
        if (rules.length) { match.rule_ids = rules; }
        if (tags.length) { match.tags = tags; }
        if (data.get("levels")) { match.levels = [data.get("levels")]; }
        return { match: match, duration_s: Math.round(parseFloat(data.get("hours")) * 3600),
                 comment: data.get("comment") };
      }
      case "rule-test": {
        let events;
        try { events = JSON.parse(data.get("events") || "[]"); } catch (e) {
          throw new Error("events: not JSON (" + e.message + ")");
        }
        return { rule: data.get("rule"), events: events };
      }
      default:
        return null;
    }
  }

  async function send(form, event) {
    event.preventDefault();
    let body;
    try { body = payload(form); } catch (e) { say(e.message); return; }
    const headers = { "X-CSRF-Token": csrf };
    if (body !== null) { headers["Content-Type"] = "application/json"; }
    const button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    try {
      const response = await fetch(form.dataset.api, {
        method: form.dataset.method || "POST", headers: headers, credentials: "same-origin",
        body: body === null ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      const target = form.dataset.result && document.getElementById(form.dataset.result);
      if (target) {
        let shown = text;
        try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
        target.textContent = response.status + " " + shown;
        return;
      }
      if (response.ok) {
        say("Done.");
        window.location.reload();
      } else {
        let detail = text;
        try { detail = JSON.stringify(JSON.parse(text).detail); } catch (e) { /* not JSON */ }
        say("Refused (" + response.status + "): " + detail);
      }
    } catch (e) {
      say("Failed: " + e.message);
    } finally {
      if (button) { button.disabled = false; }
    }
  }

  function poll(live) {
    const newest = live.dataset.newest;
    async function check() {
      try {
        const response = await fetch(live.dataset.poll, { credentials: "same-origin" });
        if (response.status === 401) { return; }
        if (response.ok) {
          const page = await response.json();
          const first = page.items.length ? page.items[0].event.id : "";
          if (first && first !== newest) { live.hidden = false; }
        }
      } catch (e) { /* offline for a moment: try again next round */ }
      window.setTimeout(check, 5000);
    }
    window.setTimeout(check, 5000);
  }

  // The counts by level and by rule of the queue's filters, filled in after the page is shown.
  // Rule names are set as text and rule ids only ever go into a URL through encodeURIComponent.
  async function counts(section) {
    try {
      const response = await fetch(section.dataset.summary, { credentials: "same-origin" });
      if (!response.ok) { return; }
      const summary = await response.json();
      section.querySelectorAll("[data-level]").forEach(function (cell) {
        cell.textContent = String(summary.by_level[cell.dataset.level] || 0);
      });
      const list = document.getElementById("rule-counts");
      summary.by_rule.slice(0, 15).forEach(function (rule) {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = "/?rule=" + encodeURIComponent(rule.rule_id) + "&range=" + encodeURIComponent(section.dataset.range);
        link.textContent = rule.rule_name;
        item.appendChild(link);
        item.appendChild(document.createTextNode(" " + rule.count));
        list.appendChild(item);
      });
    } catch (e) { /* the counts stay unknown */ }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const section = document.getElementById("counts");
    if (section && section.dataset.summary) { counts(section); }
    document.querySelectorAll("form[data-api]").forEach(function (form) {
      form.addEventListener("submit", function (event) { send(form, event); });
    });
    const live = document.getElementById("live");
    if (live && live.dataset.poll) { poll(live); }
  });
}());
