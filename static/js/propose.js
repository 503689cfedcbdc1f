// The propose form teaches while the author types (progressive enhancement: without JavaScript the
// form still works and the server gives the same answers as field errors).
// - the team's name prefix beside the team choice (and in an empty name field);
// - the next runs of the cron in its zone, from the schedule preview API;
// - "non-standard: rationale needed" as soon as the cron (or criticality, timeout) makes it so;
// - the submit button reads "Create" where the chosen environment needs no approval.
(function () {
  "use strict";
  var preview = document.getElementById("cron-preview");
  if (!preview) return;
  var form = preview.closest("form");
  var byId = function (id) { return document.getElementById(id); };
  var cron = byId("id_cron"), zone = byId("id_timezone"), team = byId("id_team"), env = byId("id_environment");
  var name = byId("id_name"), hint = byId("nonstandard-hint"), prefixHint = byId("name-prefix");
  var button = form.querySelector("[data-testid=submit-proposal]");

  function selected(select) {
    return select && select.selectedIndex >= 0 ? select.options[select.selectedIndex] : null;
  }

  function showPrefix() {
    var option = selected(team);
    var prefix = option && option.dataset.prefix;
    if (!prefix || !prefixHint) return;
    prefixHint.textContent = "Job names of this team must start with ";
    var code = document.createElement("code");
    code.textContent = prefix;
    prefixHint.appendChild(code);
    if (name && (!name.value || /^[a-z0-9-]+\.$/.test(name.value))) name.value = prefix;
  }

  function showButton() {
    var option = selected(env);
    if (!button || !option || !option.dataset.governed || form.querySelector("[name=based_on_revision]")) return;
    button.textContent = option.dataset.governed === "1" ? button.dataset.governedLabel : button.dataset.ungovernedLabel;
  }

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  var list = preview.querySelector("ol.runs"), placeholder = preview.querySelector(".placeholder");
  var pending = null, generation = 0;

  function params(extra) {
    var query = new URLSearchParams(extra);
    if (preview.dataset.job) query.set("job", preview.dataset.job);
    return query;
  }

  function renderRuns(entries) {
    list.textContent = "";
    entries.forEach(function (e) {
      var item = text("li", e.utc);
      if (e.zone !== "UTC") item.appendChild(text("span", " · " + e.local + " " + e.zone, "muted"));
      if (e.dst) item.appendChild(text("span", " · " + e.dst, "dst-note"));
      if (e.decision && e.decision !== "fire") item.appendChild(text("span", " · " + e.decision + ": " + e.reason, "warn-text"));
      list.appendChild(item);
    });
    placeholder.hidden = entries.length > 0;
    if (!entries.length) placeholder.textContent = "This schedule has no upcoming runs.";
  }

  function renderError(body) {
    list.textContent = "";
    var messages = [];
    Object.keys(body || {}).forEach(function (key) { messages = messages.concat(body[key]); });
    placeholder.hidden = false;
    placeholder.textContent = messages.join(" ") || "The schedule cannot be previewed.";
    placeholder.className = "field-error placeholder";
  }

  function renderHints(reasons) {
    if (!hint) return;
    hint.hidden = reasons.length === 0;
    hint.querySelector(".reasons").textContent = reasons.length ? "This job " + reasons.join("; it ") + "." : "";
    var rationale = byId("id_rationale");
    if (rationale) rationale.setAttribute("aria-required", reasons.length ? "true" : "false");
  }

  function refresh() {
    var mine = ++generation;
    var c = cron ? cron.value.trim() : "", tz = zone ? zone.value.trim() : "";
    if (!c || !tz) {
      list.textContent = "";
      placeholder.hidden = false;
      renderHints([]);
      return;
    }
    var query = params({ cron: c, tz: tz, count: "5", detail: "true" });
    ["gap", "overlap"].forEach(function (f) { var el = byId("id_" + f); if (el && el.value) query.set(f, el.value); });
    fetch(preview.dataset.previewUrl + "?" + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        if (mine !== generation) return;
        placeholder.className = "muted small placeholder";
        if (res.ok) renderRuns(res.body); else renderError(res.body);
      })
      .catch(function () {});
    var hintQuery = params({ cron: c, timezone: tz });
    ["criticality", "timeout_seconds", "name", "environment"].forEach(function (f) {
      var el = byId("id_" + f);
      if (el) hintQuery.set(f, el.value);
    });
    fetch(preview.dataset.hintsUrl + "?" + hintQuery, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { nonstandard: [] }; })
      .then(function (body) { if (mine === generation) renderHints(body.nonstandard || []); })
      .catch(function () {});
  }

  function later() {
    clearTimeout(pending);
    pending = setTimeout(refresh, 250);
  }

  ["id_cron", "id_timezone", "id_criticality", "id_timeout_seconds", "id_gap", "id_overlap", "id_environment", "id_name"].forEach(function (id) {
    var el = byId(id);
    if (el) { el.addEventListener("input", later); el.addEventListener("change", later); }
  });
  if (team) team.addEventListener("change", showPrefix);
  if (env) env.addEventListener("change", showButton);
  showPrefix();
  showButton();
  refresh();
  // After a refused submit, take the reader to the error summary, whose links lead to the fields.
  var summary = byId("error-summary");
  if (summary) summary.focus();
})();
