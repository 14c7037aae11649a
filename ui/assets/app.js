// Cohort's web view of the catalog: pages built from the server's JSON, their state in the
// URL's fragment (#/e/NAME?sort=..&sel=..&metric=..), live updates by polling with ETags.
// Every text from the catalog goes into the page through textContent, never as HTML.
(function () {
"use strict";

const { Chart, colorOf, fmt } = window.CohortChart;
const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const statusLine = document.getElementById("status");
const POLL_MS = 3000;
let page = null;      // the current page: {stop()}
let renderedAt = 0;

// ---- helpers -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const etags = new Map();
const bodies = new Map();

// GETs JSON, with the ETag of the last answer: an unchanged answer costs the server nothing
// and returns the same object (so callers can skip redrawing).
async function getJSON(url) {
  const headers = {};
  if (etags.has(url)) headers["If-None-Match"] = etags.get(url);
  const r = await fetch(url, { headers, credentials: "same-origin" });
  if (r.status === 304 && bodies.has(url)) return { data: bodies.get(url), changed: false };
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try { message = (await r.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  const data = await r.json();
  const tag = r.headers.get("ETag");
  if (tag) { etags.set(url, tag); bodies.set(url, data); }
  return { data, changed: true };
}

function setStatus(text, bad) {
  statusLine.textContent = text;
  statusLine.className = bad ? "status error" : "status";
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const d = Date.now() / 1000 - seconds;
  if (d < 60) return Math.max(0, Math.round(d)) + " s ago";
  if (d < 3600) return Math.round(d / 60) + " min ago";
  if (d < 86400) return (d / 3600).toFixed(1) + " h ago";
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ");
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ") + "Z" : "-";
}

function stateBadge(state) {
  return el("span", { class: "state state-" + (state || "unknown"), text: state || "unknown" });
}

function value(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return fmt(v);
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

function api(path) { return "api/experiments" + path; }
function enc(s) { return encodeURIComponent(s); }

// The route: "#/e/NAME/t/3?x=1" -> {parts: ["e", NAME, "t", "3"], q: URLSearchParams}.
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  return { parts: path ? path.split("/").map(decodeURIComponent) : [], q: new URLSearchParams(query || "") };
}

// Replaces the fragment's query without a new history entry (the state stays linkable).
function setQuery(q) {
  const { parts } = route();
  const text = q.toString();
  history.replaceState(null, "", "#/" + parts.map(enc).join("/") + (text ? "?" + text : ""));
}

function setCrumbs(items) {
  crumbs.replaceChildren();
  items.forEach(([text, href], i) => {
    if (i) crumbs.append(el("span", { class: "sep", text: "/" }));
    crumbs.append(href ? el("a", { href, text }) : el("span", { text }));
  });
}

// Runs `tick` now and every POLL_MS while the page is shown.
function poller(tick) {
  let timer = null, stopped = false;
  const run = async () => {
    try {
      await tick();
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      setStatus(String(e.message || e), true);
    }
    if (!stopped) timer = setTimeout(run, POLL_MS);
  };
  run();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

// ---- the experiments -----------------------------------------------------------------------

function experimentsPage() {
  setCrumbs([["experiments"]]);
  const body = el("tbody");
  const note = el("p", { class: "muted" });
  main.replaceChildren(el("h1", { text: "Experiments" }), note,
    el("div", { class: "tablewrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["experiment", "owner", "trials", "states", "best", "last activity", "created"].map((h) => el("th", { text: h })))),
      body)));
  return poller(async () => {
    const { data, changed } = await getJSON("api/experiments");
    if (!changed && body.childElementCount) return;
    body.replaceChildren(...data.experiments.map((e) => el("tr", {},
      el("td", {}, el("a", { href: "#/e/" + enc(e.name), text: e.name })),
      el("td", { text: e.owner }),
      el("td", { class: "num", text: String(e.trials) }),
      el("td", {}, ...Object.entries(e.states).map(([s, n]) => el("span", { class: "pill" }, stateBadge(s), " " + n))),
      el("td", { text: e.best ? `${e.best.metric} ${fmt(e.best.value)} (trial ${e.best.trial})` : "-" }),
      el("td", { text: ago(e.last_activity) }),
      el("td", { text: when(e.created) }))));
    note.textContent = data.experiments.length ? "" : "No experiments in this catalog yet.";
    if (data.warnings.length) note.textContent = data.warnings.length + " damaged file(s) skipped: " + data.warnings.slice(0, 3).join("; ");
  });
}

// ---- one experiment: the trials table and the chart ---------------------------------------

const ROW_HEIGHT = 24;

function experimentPage(name, q) {
  setCrumbs([["experiments", "#/"], [name]]);
  const head = el("div");
  const filter = el("input", { type: "text", placeholder: "where: lr<0.01, state=completed (comma-separated)", value: q.get("where") || "" });
  const limitNote = el("span", { class: "muted" });
  const tableWrap = el("div", { class: "tablewrap" });
  const table = el("table");
  tableWrap.append(table);
  const metricSel = el("select");
  const xSel = el("select", {}, el("option", { value: "step", text: "step" }), el("option", { value: "time", text: "wall time" }));
  const logBox = el("input", { type: "checkbox" });
  const smoothIn = el("input", { type: "range", min: "0", max: "0.99", step: "0.01" });
  const topIn = el("input", { type: "number", min: "1", max: "500", style: null });
  const compareLink = el("a", { text: "compare selected" });
  const searchLink = el("a", { href: "#/e/" + enc(name) + "/search", text: "search" });
  const chartBox = el("div", { class: "panel grow" });
  const scatterBox = el("div", { class: "panel grow" });
  const hpSel = el("select");
  main.replaceChildren(head,
    el("div", { class: "toolbar" }, el("label", { text: "filter" }), filter, limitNote, compareLink, searchLink),
    tableWrap,
    el("div", { class: "toolbar" },
      el("label", { text: "metric" }), metricSel, el("label", { text: "x" }), xSel,
      el("label", {}, logBox, " log"), el("label", { text: "smoothing" }), smoothIn,
      el("label", { text: "top" }), topIn),
    el("div", { class: "row" }, chartBox,
      el("div", { class: "grow" }, el("div", { class: "toolbar" }, el("label", { text: "hyperparameter" }), hpSel), scatterBox)));
  const chart = new Chart(chartBox);
  const scatter = new Chart(scatterBox);
  xSel.value = q.get("x") || "step";
  logBox.checked = q.get("log") === "1";
  smoothIn.value = q.get("smooth") || "0";
  topIn.value = q.get("top") || "10";

  let info = null, tableData = null, rows = [];
  const selected = new Set((q.get("sel") || "").split(",").filter(Boolean).map(Number));
  let seriesKey = "";

  const state = () => {
    const p = new URLSearchParams();
    if (filter.value.trim()) p.set("where", filter.value.trim());
    if (q.get("sort")) p.set("sort", q.get("sort"));
    if (q.get("desc") === "1") p.set("desc", "1");
    if (selected.size) p.set("sel", [...selected].join(","));
    if (metricSel.value) p.set("metric", metricSel.value);
    if (xSel.value !== "step") p.set("x", xSel.value);
    if (logBox.checked) p.set("log", "1");
    if (Number(smoothIn.value) > 0) p.set("smooth", smoothIn.value);
    if (topIn.value !== "10") p.set("top", topIn.value);
    if (hpSel.value) p.set("hp", hpSel.value);
    q = p;
    setQuery(p);
    compareLink.href = "#/e/" + enc(name) + "/compare?ids=" + [...selected].join(",") + (metricSel.value ? "&metric=" + enc(metricSel.value) : "");
    compareLink.style.visibility = selected.size >= 2 ? "visible" : "hidden";
  };

  const tableURL = () => {
    const p = new URLSearchParams();
    for (const w of filter.value.split(/[,;]/).map((s) => s.trim()).filter(Boolean)) p.append("where", w);
    let sort = q.get("sort");
    if (!sort && info && info.search) sort = info.search.metric + (info.search.smaller_is_better ? ":min" : ":max");
    if (sort) p.set("sort", sort);
    if (q.get("desc") === "1" || (!q.get("sort") && info && info.search && !info.search.smaller_is_better)) p.set("desc", "1");
    return api("/" + enc(name) + "/table?" + p.toString());
  };

  // The table, rendered for the rows in view only: 10,000 trials stay fast.
  const renderTable = () => {
    if (!tableData) return;
    const columns = [["", null], ["trial", "id"], ["state", "state"], ["restarts", null], ["last activity", null]]
      .concat(tableData.hparams.map((h) => [h, h]))
      .concat(tableData.metrics.map((m) => [m, m]));
    const sort = q.get("sort"), desc = q.get("desc") === "1";
    const thead = el("thead", {}, el("tr", {}, ...columns.map(([label, field]) => {
      const th = el("th", { text: label, class: field ? "sortable" : null, title: field ? "sort by " + field : null });
      if (field && sort === field) th.classList.add("sorted");
      if (field && sort === field && desc) th.classList.add("desc");
      if (field) th.addEventListener("click", () => {
        if (sort === field) { if (desc) q.delete("desc"); else q.set("desc", "1"); } else { q.set("sort", field); q.delete("desc"); }
        state(); refresh(true);
      });
      return th;
    })));
    const body = el("tbody");
    const top = tableWrap.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - 10);
    // The wrapper's height before the first rows exist: its CSS maximum.
    const view = Math.max(tableWrap.clientHeight, Math.round(window.innerHeight * 0.45));
    const count = Math.ceil(view / ROW_HEIGHT) + 20;
    const last = Math.min(rows.length, first + count);
    const ncol = columns.length;
    if (first > 0) body.append(el("tr", { class: "spacer" }, spacer(ncol, first * ROW_HEIGHT)));
    const bestId = rows.length && info && info.search ? rows[0][0] : null;
    for (let i = first; i < last; i++) {
      const r = rows[i];
      const id = r[0];
      const box = el("input", { type: "checkbox" });
      box.checked = selected.has(id);
      box.addEventListener("change", () => { if (box.checked) selected.add(id); else selected.delete(id); state(); renderTable(); drawChart(); });
      const tr = el("tr", { class: (selected.has(id) ? "selected " : "") + (id === bestId ? "best" : "") },
        el("td", {}, box),
        el("td", {}, el("a", { href: "#/e/" + enc(name) + "/t/" + id, text: String(id) }),
          tableData.damaged.includes(id) ? el("span", { class: "damaged", text: " damaged", title: "some of its files could not be read" }) : null),
        el("td", {}, stateBadge(r[1])),
        el("td", { class: "num", text: String(r[2]) }),
        el("td", { text: ago(r[3]) }));
      for (let c = 4; c < r.length; c++) tr.append(el("td", { class: typeof r[c] === "number" ? "num" : null, text: value(r[c]) }));
      tr.style.height = ROW_HEIGHT + "px";
      body.append(tr);
    }
    if (last < rows.length) body.append(el("tr", { class: "spacer" }, spacer(ncol, (rows.length - last) * ROW_HEIGHT)));
    table.replaceChildren(thead, body);
    tableWrap.scrollTop = top;
  };
  const spacer = (ncol, height) => { const td = el("td", { colspan: String(ncol) }); td.style.height = height + "px"; return td; };
  tableWrap.addEventListener("scroll", () => requestAnimationFrame(renderTable));

  // The chart: the selected trials, else the table's first `top`.
  const chartIds = () => selected.size ? [...selected] : rows.slice(0, Math.max(1, Number(topIn.value) || 10)).map((r) => r[0]);
  const drawChart = async (force) => {
    const metric = metricSel.value;
    if (!metric) { chart.set([], {}); return; }
    const ids = chartIds();
    const url = api("/" + enc(name) + "/series?metric=" + enc(metric) + "&trials=" + ids.join(",") + "&points=1000");
    const { data, changed } = await getJSON(url);
    const key = url + xSel.value + logBox.checked + smoothIn.value + [...selected].join(",");
    if (!changed && !force && key === seriesKey) return;
    seriesKey = key;
    const bestId = rows.length && info && info.search ? rows[0][0] : null;
    chart.set(data.series.map((s, i) => {
      const t0 = s.wall.length ? s.wall[0] : 0;
      return {
        label: "trial " + s.trial,
        xs: xSel.value === "time" ? s.wall.map((w) => w - t0) : s.step,
        ys: s.value,
        color: colorOf(i),
        highlight: s.trial === bestId,
      };
    }), { logY: logBox.checked, smoothing: Number(smoothIn.value), xLabel: xSel.value === "time" ? "time" : "step", yLabel: metric, xTime: xSel.value === "time" });
    // When the table and the chart were first drawn: what the benchmark reads.
    performance.mark("cohort:chart");
  };

  // Hyperparameter against the metric's last value, every trial in the table.
  const drawScatter = () => {
    if (!tableData) return;
    const h = tableData.hparams.indexOf(hpSel.value), m = tableData.metrics.indexOf(metricSel.value);
    if (h < 0 || m < 0) { scatter.set([], {}); return; }
    const hc = 4 + h, mc = 4 + tableData.hparams.length + m;
    const pts = rows.filter((r) => typeof r[hc] === "number" && typeof r[mc] === "number");
    const bestId = rows.length && info && info.search ? rows[0][0] : null;
    scatter.set([
      { label: "trials", xs: pts.map((r) => r[hc]), ys: pts.map((r) => r[mc]), color: "#2f6fdb" },
      { label: "best", xs: pts.filter((r) => r[0] === bestId).map((r) => r[hc]), ys: pts.filter((r) => r[0] === bestId).map((r) => r[mc]), color: "#d9534f", highlight: true },
    ], { mode: "scatter", logY: logBox.checked, xLabel: hpSel.value, yLabel: metricSel.value });
  };

  const fillSelect = (select, names, wanted) => {
    const current = select.value || wanted;
    if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
      select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    }
    if (names.includes(current)) select.value = current;
  };

  const refresh = async (force) => {
    const infoAnswer = await getJSON(api("/" + enc(name)));
    info = infoAnswer.data;
    head.replaceChildren(
      el("h1", { text: name }),
      el("p", { class: "muted" },
        `${info.trials} trials · owner ${info.experiment.owner.user} · created ${when(info.experiment.created)}`,
        info.search ? ` · ${info.search.searcher} search for ${info.search.smaller_is_better ? "the lowest" : "the highest"} ${info.search.metric}` : "",
        info.warnings && info.warnings.length ? ` · ${info.warnings.length} damaged file(s) skipped` : ""),
      el("div", {}, ...Object.entries(info.states).map(([s, n]) => el("span", { class: "pill" }, stateBadge(s), " " + n))));
    searchLink.style.display = info.search ? "" : "none";
    fillSelect(metricSel, info.metrics, q.get("metric") || (info.search && info.search.metric)
      || info.metrics.find((m) => /loss/i.test(m)) || info.metrics[0]);
    fillSelect(hpSel, info.hparams, q.get("hp") || info.hparams[0]);
    let answer;
    try {
      answer = await getJSON(tableURL());
      filter.setCustomValidity("");
    } catch (e) {
      filter.setCustomValidity(e.message);
      limitNote.textContent = e.message;
      limitNote.className = "error";
      return;
    }
    limitNote.className = "muted";
    if (answer.changed || force) {
      tableData = answer.data;
      rows = tableData.rows;
      limitNote.textContent = `${rows.length} of ${tableData.total} trials`;
      renderTable();
      performance.mark("cohort:table");
      drawScatter();
    }
    state();
    await drawChart(force);
  };

  filter.addEventListener("change", () => { state(); refresh(true); });
  for (const input of [metricSel, xSel, logBox, hpSel]) input.addEventListener("change", () => { state(); drawChart(true); drawScatter(); });
  smoothIn.addEventListener("input", () => { state(); drawChart(true); });
  topIn.addEventListener("change", () => { state(); drawChart(true); });
  return poller(() => refresh(false));
}

// ---- one trial -----------------------------------------------------------------------------

function trialPage(name, id) {
  setCrumbs([["experiments", "#/"], [name, "#/e/" + enc(name)], ["trial " + id]]);
  const head = el("div"), facts = el("table", { class: "kv" }), hp = el("table", { class: "kv" });
  const metricsTable = el("table"), ckpts = el("table"), charts = el("div", { class: "charts" });
  const output = el("pre", { class: "output" }), outputNote = el("p", { class: "muted" });
  main.replaceChildren(head,
    el("div", { class: "row" },
      el("div", { class: "panel" }, el("h2", { text: "Run" }), facts),
      el("div", { class: "panel" }, el("h2", { text: "Hyperparameters" }), hp),
      el("div", { class: "panel" }, el("h2", { text: "Metrics" }), metricsTable)),
    el("h2", { text: "Curves" }), charts,
    el("h2", { text: "Checkpoints" }), ckpts,
    el("h2", { text: "Output" }), outputNote, output);
  const chartsByMetric = new Map();
  let lastKey = "";
  return poller(async () => {
    const { data: t, changed } = await getJSON(api("/" + enc(name) + "/trials/" + id));
    const s = t.state_record || {};
    const key = JSON.stringify([t.state, s.updated, t.last_write]);
    if (changed || key !== lastKey) {
      lastKey = key;
      head.replaceChildren(el("h1", {}, `${name} / trial ${id} `, stateBadge(t.state)));
      if (t.damage && t.damage.length) head.append(el("p", { class: "error", text: "damaged: " + t.damage.join("; ") }));
      const kv = [["state", t.state], ["created", when(t.created)], ["started", when(s.started)], ["ended", when(s.ended)],
        ["slurm", s.slurm_job ? `job ${s.slurm_job}` + (s.slurm_step ? ` step ${s.slurm_step}` : "") + (s.slurm_launch ? ` launch ${s.slurm_launch + 1}` : "") + (s.slurm_array ? ` (array element ${s.slurm_array})` : "") : "-"],
        ["nodes", (s.nodes || []).join(", ") || "-"], ["exit status", s.exit_status ?? "-"], ["signal", s.exit_signal || "-"],
        ["message", s.message || "-"], ["requeues", s.requeues || 0],
        ["command", (t.record && t.record.command || []).join(" ") || "-"]];
      facts.replaceChildren(...kv.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: String(v) }))),
        ...(s.restarts || []).map((r) => el("tr", {}, el("td", { text: "restarted" }), el("td", { text: `${when(r.at)}: ${r.reason}` }))));
      hp.replaceChildren(...Object.entries(t.hparams || {}).map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: value(v) }))));
      metricsTable.replaceChildren(el("tr", {}, ...["metric", "last", "step", "min", "max", "points"].map((h) => el("th", { text: h }))),
        ...Object.entries(t.metrics || {}).map(([m, v]) => el("tr", {}, el("td", { text: m }), el("td", { class: "num", text: fmt(v.last) }),
          el("td", { class: "num", text: String(v.last_step) }), el("td", { class: "num", text: fmt(v.min) }), el("td", { class: "num", text: fmt(v.max) }),
          el("td", { class: "num", text: String(v.count) }))));
      ckpts.replaceChildren(el("tr", {}, ...["step", "path", "bytes", "written"].map((h) => el("th", { text: h }))),
        ...(t.checkpoints || []).map((c) => el("tr", {}, el("td", { class: "num", text: String(c.step) }), el("td", { text: c.path }),
          el("td", { class: "num", text: String(c.size ?? "-") }), el("td", { text: when(c.at) }))));
    }
    for (const m of Object.keys(t.metrics || {})) {
      if (!chartsByMetric.has(m)) {
        const box = el("div", { class: "panel" }, el("div", { class: "muted", text: m }));
        charts.append(box);
        chartsByMetric.set(m, new Chart(box, { height: 240 }));
      }
      const { data, changed: moved } = await getJSON(api("/" + enc(name) + "/series?metric=" + enc(m) + "&trials=" + id + "&points=2000"));
      if (moved) chartsByMetric.get(m).set(data.series.map((x) => ({ label: "trial " + x.trial, xs: x.step, ys: x.value, color: colorOf(0) })), { xLabel: "step", yLabel: m });
    }
    if (t.output) {
      const r = await fetch(api("/" + enc(name) + "/trials/" + id + "/output?bytes=65536"), { credentials: "same-origin" });
      const text = r.ok ? await r.text() : "";
      outputNote.textContent = `the last ${Math.min(65536, t.output.bytes)} of ${t.output.bytes} bytes of ${t.output.file}`;
      if (output.textContent !== text) { const end = output.scrollTop + output.clientHeight >= output.scrollHeight - 4; output.textContent = text; if (end) output.scrollTop = output.scrollHeight; }
    } else {
      outputNote.textContent = "the catalog knows no output file of this trial (a search's trials have one)";
    }
  });
}

// ---- trials side by side -------------------------------------------------------------------

function comparePage(name, q) {
  const ids = (q.get("ids") || "").split(",").filter(Boolean).map(Number);
  setCrumbs([["experiments", "#/"], [name, "#/e/" + enc(name)], ["compare " + ids.join(", ")]]);
  const table = el("table", { class: "kv" });
  const metricSel = el("select");
  const chartBox = el("div", { class: "panel" });
  main.replaceChildren(el("h1", { text: `${name}: trials ${ids.join(", ")}` }), el("div", { class: "tablewrap" }, table),
    el("div", { class: "toolbar" }, el("label", { text: "metric" }), metricSel), chartBox);
  const chart = new Chart(chartBox);
  let trials = [];
  const draw = async () => {
    if (!metricSel.value) return;
    const { data } = await getJSON(api("/" + enc(name) + "/series?metric=" + enc(metricSel.value) + "&trials=" + ids.join(",") + "&points=2000"));
    chart.set(data.series.map((s, i) => ({ label: "trial " + s.trial, xs: s.step, ys: s.value, color: colorOf(i) })), { xLabel: "step", yLabel: metricSel.value });
    const p = new URLSearchParams(q); p.set("metric", metricSel.value); setQuery(p);
  };
  metricSel.addEventListener("change", draw);
  return poller(async () => {
    trials = await Promise.all(ids.map((id) => getJSON(api("/" + enc(name) + "/trials/" + id)).then((a) => a.data)));
    const hps = [...new Set(trials.flatMap((t) => Object.keys(t.hparams || {})))].sort();
    const ms = [...new Set(trials.flatMap((t) => Object.keys(t.metrics || {})))].sort();
    const row = (label, f) => el("tr", {}, el("td", { text: label }), ...trials.map((t) => el("td", { text: f(t) })));
    table.replaceChildren(el("tr", {}, el("th", { text: "" }), ...trials.map((t) => el("th", {}, el("a", { href: "#/e/" + enc(name) + "/t/" + t.trial, text: "trial " + t.trial })))),
      row("state", (t) => t.state || "-"), row("restarts", (t) => String((t.state_record && t.state_record.restarts || []).length)),
      ...hps.map((h) => row(h, (t) => value((t.hparams || {})[h]))),
      ...ms.map((m) => row(m + " (last)", (t) => fmt(((t.metrics || {})[m] || {}).last))),
      ...ms.map((m) => row(m + " (min)", (t) => fmt(((t.metrics || {})[m] || {}).min))));
    if (!metricSel.options.length) {
      metricSel.replaceChildren(...ms.map((m) => el("option", { value: m, text: m })));
      if (ms.includes(q.get("metric"))) metricSel.value = q.get("metric");
    }
    await draw();
  });
}

// ---- a search ------------------------------------------------------------------------------

function searchPage(name) {
  setCrumbs([["experiments", "#/"], [name, "#/e/" + enc(name)], ["search"]]);
  const head = el("div"), rungsBox = el("div"), running = el("p"), planBox = el("div");
  const chartBox = el("div", { class: "panel" });
  main.replaceChildren(head, el("h2", { text: "Best value against budget spent" }), chartBox, el("h2", { text: "Running" }), running,
    el("h2", { text: "The plan: brackets and their rungs" }), planBox,
    el("h2", { text: "Rungs: what the searcher promoted and stopped" }), rungsBox);
  const chart = new Chart(chartBox);
  return poller(async () => {
    const { data: s, changed } = await getJSON(api("/" + enc(name) + "/search"));
    if (!changed && rungsBox.childElementCount) return;
    const trialOf = new Map();   // search trial -> catalog trial
    const lengths = new Map();   // catalog trial -> longest length launched
    const live = new Set();
    const reports = [];
    let finished = null, failed = 0, spent = 0;
    const reached = new Map();
    const best = { xs: [], ys: [] };
    let bestSoFar = null;
    for (const e of s.events) {
      if (e.event === "assign") trialOf.set(e.search_trial, e.trial);
      else if (e.event === "launched") { live.add(e.trial); lengths.set(e.trial, Math.max(lengths.get(e.trial) || 0, e.until)); }
      else if (e.event === "exited") live.delete(e.trial);
      else if (e.event === "report") {
        const trial = trialOf.get(e.search_trial);
        spent += e.length - (reached.get(e.search_trial) || 0);
        reached.set(e.search_trial, e.length);
        reports.push({ trial, length: e.length, metric: e.metric });
        if (Number.isFinite(e.metric) && (bestSoFar === null || (s.smaller_is_better ? e.metric < bestSoFar : e.metric > bestSoFar))) bestSoFar = e.metric;
        if (bestSoFar !== null) { best.xs.push(spent); best.ys.push(bestSoFar); }
      } else if (e.event === "failed") failed++;
      else if (e.event === "finished") finished = e.reason;
    }
    head.replaceChildren(el("h1", { text: `${name}: search` }),
      el("p", { class: "muted", text: `${s.plan ? s.plan.searcher : "search"} for ${s.smaller_is_better ? "the lowest" : "the highest"} ${s.metric}; ${trialOf.size} of ${s.max_trials} trials created, ${failed} failed; ${spent}${s.plan ? " of " + s.plan.budget : ""} units trained; controller: ${finished ? "finished (" + finished + ")" : "running or stopped without finishing"}` }));
    chart.set([{ label: "best " + s.metric, xs: best.xs, ys: best.ys, color: colorOf(0) }], { xLabel: "units trained", yLabel: "best " + s.metric });
    planBox.replaceChildren(s.plan ? el("table", {},
      el("tr", {}, ...["bracket", "trials", "rungs (length: trials that reach it)", "budget"].map((h) => el("th", { text: h }))),
      ...s.plan.brackets.map((b, i) => el("tr", {}, el("td", { class: "num", text: String(i) }), el("td", { class: "num", text: String(b.trials) }),
        el("td", { text: b.rungs.map((r) => `${r.length}: ${r.trials}`).join(" · ") }), el("td", { class: "num", text: String(b.budget) }))))
      : el("p", { class: "muted", text: "no plan (the experiment file no longer parses)" }));
    running.replaceChildren(...(live.size ? [...live].map((t) => el("a", { class: "pill", href: "#/e/" + enc(name) + "/t/" + t, text: `trial ${t} to ${lengths.get(t)}` })) : [el("span", { class: "muted", text: "none" })]));
    const byLength = new Map();
    for (const r of reports) { if (!byLength.has(r.length)) byLength.set(r.length, []); byLength.get(r.length).push(r); }
    const lengthsSorted = [...byLength.keys()].sort((a, b) => a - b);
    rungsBox.replaceChildren(...lengthsSorted.map((len, i) => {
      const list = byLength.get(len).slice().sort((a, b) => (s.smaller_is_better ? a.metric - b.metric : b.metric - a.metric));
      const next = lengthsSorted[i + 1];
      return el("div", { class: "panel" }, el("h2", { text: `rung ${i}: length ${len}, ${list.length} trials` }),
        el("table", {}, el("tr", {}, ...["trial", s.metric, "then"].map((h) => el("th", { text: h }))),
          ...list.map((r) => el("tr", {}, el("td", {}, el("a", { href: "#/e/" + enc(name) + "/t/" + r.trial, text: String(r.trial) })),
            el("td", { class: "num", text: fmt(r.metric) }),
            el("td", { text: next === undefined ? "-" : (lengths.get(r.trial) || 0) > len ? "promoted" : live.has(r.trial) ? "running" : "stopped" })))));
    }));
  });
}

// ---- registered models ---------------------------------------------------------------------

function modelsPage() {
  setCrumbs([["experiments", "#/"], ["models"]]);
  const body = el("tbody");
  const note = el("p", { class: "muted" });
  main.replaceChildren(el("h1", { text: "Models" }), note,
    el("div", { class: "tablewrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["model", "versions", "latest", "registered", "aliases"].map((h) => el("th", { text: h })))),
      body)));
  return poller(async () => {
    const { data, changed } = await getJSON("api/models");
    if (!changed && body.childElementCount) return;
    body.replaceChildren(...data.models.map((m) => el("tr", {},
      el("td", {}, el("a", { href: "#/m/" + enc(m.name), text: m.name })),
      el("td", { class: "num", text: String(m.versions) }),
      el("td", { class: "num", text: m.latest === null ? "-" : String(m.latest) }),
      el("td", { text: when(m.latest_registered) }),
      el("td", {}, ...Object.entries(m.aliases).map(([a, v]) => el("span", { class: "pill", text: `${a} → ${v}` }))))));
    note.textContent = data.models.length ? "" : "No models registered yet (cohort model register NAME --from EXPERIMENT/NUMBER).";
    if (data.warnings.length) note.textContent = data.warnings.length + " damaged file(s) skipped: " + data.warnings.slice(0, 3).join("; ");
  });
}

function modelPage(name) {
  setCrumbs([["experiments", "#/"], ["models", "#/models"], [name]]);
  const head = el("div"), versions = el("tbody"), history = el("tbody"), detail = el("div");
  main.replaceChildren(head,
    el("h2", { text: "Versions" }),
    el("div", { class: "tablewrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["version", "aliases", "trial", "step", "metrics at the step", "checkpoint", "bytes", "sha256", "registered", "by"].map((h) => el("th", { text: h })))),
      versions)),
    el("h2", { text: "Alias history" }),
    el("table", {}, el("thead", {}, el("tr", {}, ...["when", "alias", "from", "to", "by"].map((h) => el("th", { text: h })))), history),
    detail);
  return poller(async () => {
    const { data: m, changed } = await getJSON("api/models/" + enc(name));
    if (!changed && versions.childElementCount) return;
    head.replaceChildren(el("h1", { text: "Model " + m.name }),
      el("p", { class: "muted", text: `created ${when(m.created)} by ${m.created_by.user}` }));
    if (m.warnings.length) head.append(el("p", { class: "error", text: "skipped: " + m.warnings.join("; ") }));
    versions.replaceChildren(...m.versions.slice().reverse().map((v) => el("tr", {},
      el("td", { class: "num", text: String(v.number) }),
      el("td", {}, ...v.aliases.map((a) => el("span", { class: "pill", text: a }))),
      el("td", {}, el("a", { href: "#/e/" + enc(v.source.experiment) + "/t/" + v.source.trial, text: `${v.source.experiment}/${v.source.trial}` })),
      el("td", { class: "num", text: String(v.checkpoint.step) }),
      el("td", { text: Object.entries(v.metrics).map(([k, x]) => `${k} ${fmt(x.value)}`).join(", ") || "-" }),
      el("td", { class: v.checkpoint_present ? "" : "error", text: v.checkpoint.path + (v.checkpoint_present ? "" : " (missing)") }),
      el("td", { class: "num", text: String(v.checkpoint.size) }),
      el("td", { class: "mono", title: v.checkpoint.sha256, text: v.checkpoint.sha256.slice(0, 12) }),
      el("td", { text: when(v.registered) }),
      el("td", { text: v.registered_by.user }))));
    history.replaceChildren(...m.alias_history.slice().reverse().map((h) => el("tr", {},
      el("td", { text: when(h.at) }), el("td", { text: h.alias }),
      el("td", { class: "num", text: h.from === null || h.from === undefined ? "-" : String(h.from) }),
      el("td", { class: "num", text: h.to === null || h.to === undefined ? "(removed)" : String(h.to) }),
      el("td", { text: `${h.by.user}@${h.by.host}` }))));
    if (!m.alias_history.length) history.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "muted", text: "no alias set yet" })));
    const latest = m.versions[m.versions.length - 1];
    detail.replaceChildren();
    if (latest) {
      detail.append(el("h2", { text: `Version ${latest.number}` + (latest.description ? `: ${latest.description}` : "") }),
        el("div", { class: "row" },
          el("div", { class: "panel" }, el("h2", { text: "Provenance" }), el("table", { class: "kv" },
            ...[["trial", `${latest.source.experiment}/${latest.source.trial}` + (latest.source.state ? ` (${latest.source.state})` : "")],
              ["slurm job", latest.source.slurm_job || "-"], ["nodes", (latest.source.nodes || []).join(", ") || "-"],
              ["command", (latest.source.command || []).join(" ") || "-"], ["sha256", latest.checkpoint.sha256]]
              .map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: v }))))),
          el("div", { class: "panel" }, el("h2", { text: "Hyperparameters" }), el("table", { class: "kv" },
            ...Object.entries(latest.hparams).map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: value(v) })))))));
    }
  });
}

// ---- routing -------------------------------------------------------------------------------

function show() {
  if (page) page.stop();
  const { parts, q } = route();
  renderedAt = Date.now();
  try {
    if (parts.length === 0) page = experimentsPage();
    else if (parts[0] === "e" && parts.length === 2) page = experimentPage(parts[1], q);
    else if (parts[0] === "e" && parts[2] === "t" && parts.length === 4) page = trialPage(parts[1], Number(parts[3]));
    else if (parts[0] === "e" && parts[2] === "compare") page = comparePage(parts[1], q);
    else if (parts[0] === "e" && parts[2] === "search") page = searchPage(parts[1]);
    else if (parts[0] === "models" && parts.length === 1) page = modelsPage();
    else if (parts[0] === "m" && parts.length === 2) page = modelPage(parts[1]);
    else { main.replaceChildren(el("p", { class: "error", text: "No such page: " + location.hash })); page = null; }
  } catch (e) {
    main.replaceChildren(el("p", { class: "error", text: String(e) }));
  }
}

// A link inside the app changes the fragment: show that page (the query-only changes that
// pages make themselves use replaceState, which fires no event).
window.addEventListener("hashchange", show);
// The token came in the URL once; the cookie carries it now: take it out of the address bar.
if (location.search.includes("token=")) history.replaceState(null, "", location.pathname + location.hash);
show();
})();
