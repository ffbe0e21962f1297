// NetSpectra's built-in dashboard. Plain browser JavaScript, no build step:
// every view reads the public /api/v1, the URL fragment holds the view and
// its parameters (#/top?task=per_src_ip&by=bytes), a token (when the server
// wants one) is kept in sessionStorage, and views refresh while a run is
// still writing. Data goes into the page as text, never as HTML.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const TOKEN_KEY = "netspectra.token";
  const THEME_KEY = "netspectra.theme";
  const REFRESH_MS = 5000;
  const DIMENSIONS = ["src_ip", "dst_ip", "src_port", "dst_port", "protocol"];
  const SINCE = ["", "5m", "15m", "1h", "6h", "24h", "7d", "30d"];

  let config = { token_required: false, analyst: false, alerts: false };
  let tasks = null; // the /api/v1/tasks answer, loaded once per sign-in
  let current = null; // { view, params, reload }
  let liveTimer = null;

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  // ---------- helpers ----------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const fmt = new Intl.NumberFormat("en");
  const num = (n) => (n === null || n === undefined ? "" : fmt.format(n));
  function bytes(n) {
    const u = ["B", "KB", "MB", "GB", "TB", "PB"];
    let i = 0, v = n;
    while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${u[i]}`;
  }
  const shortTime = (t) => (t ? t.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1Z") : "");
  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const url = path + (q.toString() ? "?" + q : "");
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const r = await fetch(url, { headers });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) {
      const e = body && body.error ? body.error : { code: "http_" + r.status, message: r.statusText };
      throw new ApiError(r.status, e.code, e.message);
    }
    return body;
  }

  // ---------- URL state ----------
  function parseHash() {
    const h = location.hash.replace(/^#\/?/, "");
    const [view, query] = h.split("?");
    return { view: view || "overview", params: Object.fromEntries(new URLSearchParams(query || "")) };
  }
  function go(view, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const hash = "#/" + view + (q.toString() ? "?" + q : "");
    if (location.hash === hash) render(); else location.hash = hash;
  }
  // The time range and key filter every question takes, from the URL.
  function scope(p) {
    const s = {};
    for (const k of ["from", "to", "since", ...DIMENSIONS]) if (p[k]) s[k] = p[k];
    return s;
  }

  // ---------- theme ----------
  function applyTheme() {
    const t = localStorage.getItem(THEME_KEY) || "auto";
    if (t === "auto") document.documentElement.removeAttribute("data-theme");
    else document.documentElement.setAttribute("data-theme", t);
    $("#theme").textContent = "theme: " + t;
  }
  $("#theme").addEventListener("click", () => {
    const order = ["auto", "dark", "light"];
    const t = localStorage.getItem(THEME_KEY) || "auto";
    localStorage.setItem(THEME_KEY, order[(order.indexOf(t) + 1) % order.length]);
    applyTheme();
    render();
  });
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // ---------- charts ----------
  // Series over windows: x = window starts (s), one line per series; the
  // container carries data-points (x values) for tests and screen readers.
  function chart(container, title, xs, series, yLabel) {
    container.replaceChildren();
    container.dataset.points = String(xs.length);
    container.dataset.series = String(series.length);
    if (xs.length === 0) { container.append(el("p", { class: "muted", text: "No data in this range." })); return; }
    const colors = ["--s1", "--s2", "--s3", "--s4", "--s5", "--s6"].map(cssVar);
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid") }, ticks: { stroke: cssVar("--grid") } };
    const width = Math.max(320, container.clientWidth || 600);
    const opts = {
      title, width, height: 240,
      // One window alone: a minute either side, not uPlot's years.
      scales: { x: xs.length === 1 ? { time: true, auto: false, range: [xs[0] - 60, xs[0] + 60] } : { time: true } },
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], width: 1.5, points: { show: xs.length < 60 } }))],
      axes: [axis, Object.assign({ label: yLabel, size: 70 }, axis)],
    };
    // eslint-disable-next-line no-undef
    new uPlot(opts, [xs, ...series.map((s) => s.values)], container);
  }
  // Aligns several timeseries answers on the union of their window starts.
  function align(answers, measure) {
    const xs = [...new Set(answers.flatMap((a) => a.rows.map((r) => Date.parse(r.window_start) / 1000)))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const series = answers.map((a) => {
      const values = new Array(xs.length).fill(null);
      for (const r of a.rows) values[index.get(Date.parse(r.window_start) / 1000)] = r[measure];
      return { label: a.label, values };
    });
    return { xs, series };
  }

  // ---------- tables ----------
  // columns: [{ title, num?, get(row) -> text, value?(row) -> raw for data-value }]
  function table(rows, columns, id) {
    const head = el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : "", text: c.title })));
    const body = rows.map((r) => el("tr", {}, columns.map((c) => {
      const v = c.get(r);
      const td = el("td", { class: c.num ? "num" : c.key ? "key" : "", "data-col": c.id || c.title });
      if (c.value) td.dataset.value = String(c.value(r));
      if (v instanceof Node) td.append(v); else td.textContent = v === undefined || v === null ? "" : String(v);
      return td;
    })));
    return el("div", { class: "scroll" }, el("table", { id }, el("thead", {}, head), el("tbody", {}, body)));
  }
  function keyColumns(rows) {
    const dims = [];
    for (const r of rows) for (const k of Object.keys(r.key || {})) if (!dims.includes(k)) dims.push(k);
    return dims.map((d) => ({ title: d, id: "key:" + d, key: true, get: (r) => r.key[d] }));
  }
  const badge = (text) => el("span", { class: "badge " + text, text });

  // ---------- forms ----------
  function taskSelect(p, kinds) {
    const choices = tasks.tasks.filter((t) => kinds.includes(t.algorithm || t.kind));
    const sel = el("select", { name: "task" }, choices.map((t) => el("option", { value: t.name, text: `${t.name} (${t.key.join(", ")})` })));
    if (p.task && choices.some((t) => t.name === p.task)) sel.value = p.task;
    return sel;
  }
  function rangeFields(p) {
    return [
      el("label", {}, "since", el("select", { name: "since" }, SINCE.map((s) => el("option", { value: s, text: s || "all time", selected: p.since === s })))),
      el("label", {}, "from (RFC 3339 or ns)", el("input", { type: "text", name: "from", value: p.from || "", placeholder: "2026-01-01T00:00:00Z" })),
      el("label", {}, "to", el("input", { type: "text", name: "to", value: p.to || "", placeholder: "now" })),
    ];
  }
  function filterFields(p) {
    return DIMENSIONS.map((d) => el("label", {}, d, el("input", { type: "text", name: d, value: p[d] || "", class: d.endsWith("ip") ? "" : "short" })));
  }
  function queryForm(view, fields) {
    const form = el("form", { class: "query card" }, fields, el("button", { type: "submit", text: "Show" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      go(view, Object.fromEntries(new FormData(form).entries()));
    });
    return form;
  }

  // ---------- views ----------
  // Each view: title, when(config) it is shown, and render(root, params)
  // which builds the form once and returns reload(), the part that
  // fetches and draws (called again while a run writes).
  const VIEWS = {
    overview: { title: "Overview", render: overview },
    top: { title: "Top keys", render: top },
    sketches: { title: "Heavy hitters & spreaders", render: sketches },
    trace: { title: "Flow trace", render: trace },
    alerts: { title: "Alerts", when: (c) => c.alerts, render: alerts },
    ask: { title: "Ask", when: (c) => c.analyst, render: ask },
  };

  function overview(root, p) {
    const by = p.by === "bytes" ? "bytes" : "packets";
    root.append(
      el("h1", { text: "Overview" }),
      queryForm("overview", [
        el("label", {}, "measure", el("select", { name: "by" }, ["packets", "bytes"].map((m) => el("option", { value: m, text: m, selected: by === m })))),
        rangeFields(p),
      ]),
    );
    const chartBox = el("div", { class: "card chart", id: "overview-chart" });
    const runsBox = el("div", { class: "card", id: "runs" });
    const decodeBox = el("div", { class: "card", id: "decode" });
    const tasksBox = el("div", { class: "card", id: "tasks" });
    root.append(chartBox, el("div", { class: "grid" }, runsBox, decodeBox), tasksBox);
    return async () => {
      const exact = tasks.tasks.filter((t) => t.kind === "exact");
      const [runs, ...series] = await Promise.all([
        api("/api/v1/runs", { limit: 20 }),
        ...exact.map((t) => api("/api/v1/timeseries", Object.assign({ task: t.name, limit: 0 }, scope(p))).then((a) => Object.assign(a, { label: t.name }))),
      ]);
      const { xs, series: s } = align(series, by);
      chart(chartBox, `${by} per window, per exact task`, xs, s, by);
      runsBox.replaceChildren(el("h2", { text: "Runs" }), table(runs.rows.slice().reverse(), [
        { title: "run", num: true, get: (r) => r.run_id },
        { title: "engine", get: (r) => r.engine_id },
        { title: "command", get: (r) => r.command },
        { title: "status", get: (r) => badge(r.status) },
        { title: "started", get: (r) => shortTime(r.started_at) },
        { title: "packets", num: true, get: (r) => num(r.packets), value: (r) => r.packets },
        { title: "bytes", num: true, get: (r) => bytes(r.bytes), value: (r) => r.bytes },
      ], "runs-table"));
      const counters = decodeCounters(runs.rows);
      decodeBox.replaceChildren(el("h2", { text: "Decode counters (runs shown)" }),
        counters.length ? table(counters, [
          { title: "counter", get: (c) => c[0] },
          { title: "count", num: true, get: (c) => num(c[1]), value: (c) => c[1] },
        ], "decode-table") : el("p", { class: "muted", text: "No finished run recorded decode counters." }));
      tasksBox.replaceChildren(el("h2", { text: "Tasks" }), table(tasks.tasks, [
        { title: "task", get: (t) => t.name },
        { title: "kind", get: (t) => t.algorithm || t.kind },
        { title: "key", get: (t) => t.key.join(", ") },
        { title: "window", get: (t) => `${t.window_ns / 1e9} s` },
      ], "tasks-table"));
    };
  }
  // Sums the numeric leaves of the runs' decode counters (nested objects
  // flatten to dotted names).
  function decodeCounters(runs) {
    const sums = new Map();
    const walk = (prefix, v) => {
      if (typeof v === "number") sums.set(prefix, (sums.get(prefix) || 0) + v);
      else if (v && typeof v === "object" && !Array.isArray(v)) for (const [k, x] of Object.entries(v)) walk(prefix ? prefix + "." + k : k, x);
    };
    for (const r of runs) walk("", r.decoded);
    return [...sums.entries()].sort((a, b) => a[0].localeCompare(b[0]));
  }

  function top(root, p) {
    const exact = tasks.tasks.filter((t) => t.kind === "exact");
    if (!p.task && exact.length) p.task = exact[0].name;
    const by = p.by === "bytes" ? "bytes" : "packets";
    root.append(
      el("h1", { text: "Top keys" }),
      queryForm("top", [
        el("label", {}, "task", taskSelect(p, ["exact"])),
        el("label", {}, "by", el("select", { name: "by" }, ["packets", "bytes"].map((m) => el("option", { value: m, text: m, selected: by === m })))),
        el("label", {}, "limit", el("input", { type: "text", name: "limit", class: "short", value: p.limit || "20" })),
        rangeFields(p), filterFields(p),
      ]),
    );
    const chartBox = el("div", { class: "card chart", id: "top-chart" });
    const tableBox = el("div", { class: "card", id: "top" });
    root.append(chartBox, tableBox);
    return async () => {
      if (!p.task) { tableBox.textContent = "No exact task in this store."; return; }
      const q = Object.assign({ task: p.task }, scope(p));
      const [rows, series] = await Promise.all([
        api("/api/v1/top", Object.assign({ by, limit: p.limit || 20 }, q)),
        api("/api/v1/timeseries", Object.assign({ limit: 0 }, q)),
      ]);
      const { xs, series: s } = align([Object.assign(series, { label: p.task })], by);
      chart(chartBox, `${p.task}: ${by} per window`, xs, s, by);
      tableBox.replaceChildren(
        el("h2", { text: `Top ${rows.rows.length} by ${by}` + (rows.truncated ? " (more match)" : "") }),
        table(rows.rows, [
          ...keyColumns(rows.rows),
          { title: "packets", id: "packets", num: true, get: (r) => num(r.packets), value: (r) => r.packets },
          { title: "bytes", id: "bytes", num: true, get: (r) => bytes(r.bytes), value: (r) => r.bytes },
          { title: "first seen", get: (r) => shortTime(r.first_seen) },
          { title: "last seen", get: (r) => shortTime(r.last_seen) },
        ], "top-table"),
      );
    };
  }

  function sketches(root, p) {
    // A sketch task whose algorithm the store cannot tell yet (no rows
    // stored) is listed as `sketch`; either operation answers it, empty.
    const kinds = ["countmin", "hh", "superspread", "sketch"];
    const choices = tasks.tasks.filter((t) => kinds.includes(t.algorithm || t.kind));
    if (!p.task && choices.length) p.task = choices[0].name;
    const chosen = choices.find((t) => t.name === p.task);
    const spread = chosen && chosen.algorithm === "superspread";
    const by = p.by === "bytes" ? "bytes" : "packets";
    root.append(
      el("h1", { text: "Heavy hitters and super-spreaders" }),
      queryForm("sketches", [
        el("label", {}, "sketch task", taskSelect(p, kinds)),
        el("label", {}, "by (heavy hitters)", el("select", { name: "by" }, ["packets", "bytes"].map((m) => el("option", { value: m, text: m, selected: by === m })))),
        el("label", {}, "limit", el("input", { type: "text", name: "limit", class: "short", value: p.limit || "20" })),
        rangeFields(p), filterFields(p),
      ]),
    );
    const box = el("div", { class: "card", id: "sketch" });
    root.append(box);
    return async () => {
      if (!chosen) { box.textContent = "No sketch task in this store."; return; }
      const q = Object.assign({ task: p.task, limit: p.limit || 20 }, scope(p));
      const answer = spread ? await api("/api/v1/super-spreaders", q) : await api("/api/v1/heavy-hitters", Object.assign({ by }, q));
      const est = (r) => (spread ? r.distinct : r[by]);
      box.replaceChildren(
        el("h2", { text: spread ? `Super-spreaders of ${p.task} (distinct ${chosen.key.join(", ")} partners)`
          : chosen.algorithm ? `Heavy hitters of ${p.task} by ${by}` : `Sketch task ${p.task}` }),
        el("p", { class: "muted", text: !chosen.algorithm ? "The store holds no estimate of this task yet." : spread
          ? "Estimates of distinct partners; the true count lies within ± the error bound."
          : "Count-Min over-estimates: the true value lies between estimate − error bound and the estimate." }),
        ...(answer.partial ? [el("p", { class: "error", text: "Partial: a shard changed owner within a period in this range, so estimates may be low." })] : []),
        answer.rows.length === 0 ? el("p", { class: "muted", text: "No estimate stored for this task in this range." }) : table(answer.rows, [
          ...keyColumns(answer.rows),
          { title: spread ? "distinct" : `${by} (estimate)`, id: "estimate", num: true, get: (r) => num(est(r)), value: est },
          { title: spread ? "± error bound" : "error bound", id: "error_bound", num: true, get: (r) => num(r.error_bound), value: (r) => r.error_bound },
          { title: "periods", num: true, get: (r) => r.periods },
        ], "sketch-table"),
      );
    };
  }

  function trace(root, p) {
    const exact = tasks.tasks.filter((t) => t.kind === "exact");
    if (!p.task) p.task = (exact.find((t) => t.key.length >= 5) || exact[0] || {}).name;
    root.append(
      el("h1", { text: "Flow trace" }),
      queryForm("trace", [el("label", {}, "task", taskSelect(p, ["exact"])), filterFields(p), rangeFields(p)]),
    );
    const box = el("div", { class: "card", id: "trace" });
    const chartBox = el("div", { class: "card chart", id: "trace-chart" });
    root.append(box, chartBox);
    return async () => {
      if (!DIMENSIONS.some((d) => p[d])) {
        box.replaceChildren(el("p", { class: "muted", text: "Give at least one key field (for example src_ip) to trace a flow." }));
        chartBox.replaceChildren();
        return;
      }
      const q = Object.assign({ task: p.task }, scope(p));
      const [life, series] = await Promise.all([api("/api/v1/trace", q), api("/api/v1/timeseries", Object.assign({ limit: 0 }, q))]);
      const l = life.lifecycle;
      const fact = (k, v, raw) => [el("dt", { text: k }), el("dd", { "data-value": raw, text: v })];
      box.replaceChildren(el("h2", { text: "Lifecycle" }), el("dl", { class: "facts", id: "lifecycle" },
        fact("first seen", shortTime(l.first_seen), l.first_seen), fact("last seen", shortTime(l.last_seen), l.last_seen),
        fact("packets", num(l.total_packets), l.total_packets), fact("bytes", bytes(l.total_bytes), l.total_bytes),
        fact("windows", num(l.windows), l.windows)));
      const { xs, series: s } = align([Object.assign(series, { label: "packets" })], "packets");
      chart(chartBox, "packets per window", xs, s, "packets");
    };
  }

  function alerts(root, p) {
    root.append(
      el("h1", { text: "Alerts" }),
      queryForm("alerts", [
        el("label", {}, "rule", el("input", { type: "text", name: "rule", value: p.rule || "" })),
        el("label", {}, "state", el("select", { name: "state" }, ["", "firing", "resolved"].map((s) => el("option", { value: s, text: s || "any", selected: (p.state || "") === s })))),
        el("label", {}, "key", el("input", { type: "text", name: "key", value: p.key || "" })),
        rangeFields(p),
      ]),
    );
    const firingBox = el("div", { class: "card", id: "alerts-firing" });
    const historyBox = el("div", { class: "card", id: "alerts-history" });
    root.append(firingBox, historyBox);
    const columns = [
      { title: "rule", get: (a) => a.rule },
      { title: "severity", get: (a) => badge(a.severity) },
      { title: "state", get: (a) => badge(a.state) },
      { title: "task", get: (a) => a.task },
      { title: "key", id: "key", get: (a) => Object.entries(a.key || {}).map(([k, v]) => `${k}=${v}`).join(" ") },
      { title: "value", num: true, get: (a) => `${a.metric} ${num(a.value)} ${a.operator} ${num(a.threshold)}`, value: (a) => a.value },
      { title: "since", get: (a) => shortTime(a.starts_at) },
      { title: "ended", get: (a) => shortTime(a.ends_at) },
    ];
    return async () => {
      const q = scope(p);
      for (const k of ["rule", "state", "key"]) if (p[k]) q[k] = p[k];
      const all = (await api("/api/v1/alerts", q)).alerts;
      const byStart = (a, b) => (b.starts_at || "").localeCompare(a.starts_at || "");
      // Every transition is stored: an instance still firing has a firing
      // transition without `ends_at`; each resolved one is history.
      const firing = all.filter((a) => a.state === "firing" && !a.ends_at).sort(byStart);
      const history = all.filter((a) => a.state === "resolved").sort(byStart);
      firingBox.replaceChildren(el("h2", { text: `Firing (${firing.length})` }),
        firing.length ? table(firing, columns, "alerts-firing-table") : el("p", { class: "muted", text: "Nothing is firing." }));
      historyBox.replaceChildren(el("h2", { text: `History (${history.length})` }),
        history.length ? table(history, columns, "alerts-history-table") : el("p", { class: "muted", text: "No resolved alerts in this range." }));
    };
  }

  // ---------- ask (the AI analyst) ----------
  // POST /api/v1/ask answers as Server-Sent Events (tool_call, delta, then
  // done or error). EventSource cannot POST or send the token, so the
  // stream is read with fetch and parsed here. The model's text is
  // Markdown from an outside party: it is drawn with DOM nodes and
  // textContent (a few basic forms), never as HTML.
  let asking = null; // the AbortController of the answer in progress

  // Calls on(event, data) for each event of the stream, until it ends.
  async function askStream(question, signal, on) {
    const headers = { Accept: "text/event-stream", "Content-Type": "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const r = await fetch("/api/v1/ask", { method: "POST", headers, body: JSON.stringify({ question }), signal });
    if (!r.ok) {
      let body = null;
      try { body = await r.json(); } catch (_) { body = null; }
      const e = body && body.error ? body.error : { code: "http_" + r.status, message: r.statusText };
      throw new ApiError(r.status, e.code, e.message);
    }
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    const dispatch = (block) => {
      let event = "message";
      const data = [];
      for (const line of block.split(/\r\n|\r|\n/)) {
        if (line === "" || line.startsWith(":")) continue; // keep-alive comments
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) on(event, JSON.parse(data.join("\n")));
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // Events end with a blank line.
      let end;
      while ((end = buffer.search(/\r\n\r\n|\n\n|\r\r/)) >= 0) {
        const sep = buffer.slice(end).match(/^(\r\n\r\n|\n\n|\r\r)/)[0];
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + sep.length);
      }
    }
    if (buffer.trim()) dispatch(buffer);
  }

  // `top(task=per_src_ip, by=bytes, limit=5)`.
  function callText(call) {
    const args = Object.entries(call.arguments || {})
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    return `${call.name}(${args.join(", ")})`;
  }

  // **bold**, *em*, `code` of one line, as nodes; everything else is text.
  function inline(text) {
    const out = [];
    const re = /`([^`]+)`|\*\*(.+?)\*\*|__(.+?)__|\*([^*\s][^*]*?)\*/g;
    let last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
      if (m[1] !== undefined) out.push(el("code", { text: m[1] }));
      else if (m[2] !== undefined || m[3] !== undefined) out.push(el("strong", {}, inline(m[2] !== undefined ? m[2] : m[3])));
      else out.push(el("em", { text: m[4] }));
      last = re.lastIndex;
    }
    if (last < text.length) out.push(document.createTextNode(text.slice(last)));
    return out;
  }

  // Markdown's basic forms (paragraphs, headings, lists, fenced code) as
  // DOM nodes; a half-written answer renders too.
  function markdown(text) {
    const nodes = [];
    let para = [], list = null, code = null;
    const flush = () => {
      if (para.length) nodes.push(el("p", {}, para.flatMap((l, i) => (i ? [el("br"), ...inline(l)] : inline(l)))));
      para = [];
      list = null;
    };
    for (const line of text.split(/\r?\n/)) {
      if (code) {
        if (/^\s*```/.test(line)) { code = null; continue; }
        code.textContent += (code.textContent ? "\n" : "") + line;
        continue;
      }
      let m;
      if (/^\s*```/.test(line)) {
        flush();
        code = el("code");
        nodes.push(el("pre", {}, code));
      } else if (line.trim() === "") {
        flush();
      } else if ((m = line.match(/^(#{1,6})\s+(.*)$/))) {
        flush();
        nodes.push(el("h" + Math.min(6, m[1].length + 2), {}, inline(m[2])));
      } else if ((m = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/))) {
        if (para.length) flush();
        const tag = m[1] ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== tag) { list = el(tag); nodes.push(list); }
        list.append(el("li", {}, inline(m[3])));
      } else if (list && /^\s+\S/.test(line)) {
        list.lastChild.append(" ", ...inline(line.trim()));
      } else {
        list = null;
        para.push(line);
      }
    }
    flush();
    return nodes;
  }

  function ask(root) {
    const question = el("textarea", { name: "question", id: "ask-question", rows: 3, maxlength: 4000, required: true,
      placeholder: "Which sources sent the most bytes in the last hour, and is any of them scanning?" });
    const send = el("button", { type: "submit", id: "ask-send", text: "Ask" });
    const stop = el("button", { type: "button", id: "ask-stop", text: "Stop", disabled: true });
    const form = el("form", { class: "card ask", id: "ask-form" }, el("label", {}, "question", question), el("div", { class: "row" }, send, stop));
    const toolsHead = el("h2", { text: "Queries run", hidden: true });
    const toolsBox = el("ul", { class: "tools", id: "ask-tools", hidden: true });
    const answerBox = el("div", { class: "answer", id: "ask-answer", "aria-live": "polite" });
    const status = el("p", { class: "muted", id: "ask-status" });
    const errorBox = el("p", { class: "error", id: "ask-error", hidden: true });
    const out = el("div", { class: "card", id: "ask-output", hidden: true },
      toolsHead, toolsBox, el("h2", { text: "Answer" }), answerBox, status, errorBox);
    root.append(el("h1", { text: "Ask the analyst" }),
      el("p", { class: "muted", text: "Answers come from the stored numbers: the analyst runs the same queries as the other views." }),
      form, out);
    stop.addEventListener("click", () => { if (asking) asking.abort(); });
    question.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); form.requestSubmit(); }
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const q = question.value.trim();
      if (!q) return;
      if (asking) asking.abort();
      const controller = new AbortController();
      asking = controller;
      let text = "";
      let calls = 0;
      const setState = (state, message) => {
        answerBox.dataset.state = state;
        status.textContent = message || "";
      };
      out.hidden = false;
      toolsHead.hidden = toolsBox.hidden = true;
      toolsBox.replaceChildren();
      answerBox.replaceChildren();
      errorBox.hidden = true;
      errorBox.textContent = "";
      send.disabled = true;
      stop.disabled = false;
      setState("streaming", "Thinking…");
      const addCall = (call) => {
        calls++;
        toolsHead.hidden = toolsBox.hidden = false;
        toolsBox.append(el("li", { class: "mono", text: callText(call) }));
      };
      try {
        await askStream(q, controller.signal, (event, data) => {
          if (controller !== asking) return;
          if (event === "tool_call") {
            addCall(data);
          } else if (event === "delta") {
            text += data.text || "";
            answerBox.replaceChildren(...markdown(text));
            setState("streaming", "Answering…");
          } else if (event === "done") {
            // The whole answer is the reference; calls missed are added.
            text = typeof data.answer === "string" ? data.answer : text;
            answerBox.replaceChildren(...markdown(text));
            for (const call of (data.tool_calls || []).slice(calls)) addCall(call);
            setState("done", calls ? `${calls} ${calls === 1 ? "query" : "queries"} run.` : "");
          } else if (event === "error") {
            const e = data.error || {};
            errorBox.hidden = false;
            errorBox.textContent = e.message || "the analyst failed";
            setState("error", "");
          }
        });
        if (answerBox.dataset.state === "streaming") {
          errorBox.hidden = false;
          errorBox.textContent = "The answer stopped before it was complete.";
          setState("error", "");
        }
      } catch (e) {
        if (controller.signal.aborted) {
          setState("stopped", "Stopped.");
        } else if (e instanceof ApiError && e.status === 401) {
          return needLogin("The token was refused.");
        } else {
          errorBox.hidden = false;
          errorBox.textContent = e.message || String(e);
          setState("error", "");
        }
      } finally {
        if (asking === controller) asking = null;
        send.disabled = false;
        stop.disabled = true;
      }
    });
    question.focus();
    // Nothing to reload: an answer is asked for, not refreshed.
    return async () => {};
  }

  // ---------- shell ----------
  function setLive(on) {
    $("#live").hidden = !on;
    if (on && !liveTimer) liveTimer = setInterval(() => current && current.reload && refresh(), REFRESH_MS);
    if (!on && liveTimer) { clearInterval(liveTimer); liveTimer = null; }
  }
  function showError(e) {
    const box = $("#error");
    if (!e) { box.hidden = true; box.textContent = ""; return; }
    box.hidden = false;
    box.textContent = e.message || String(e);
  }
  // Whether a run is still writing: then every view refreshes itself.
  async function checkLive() {
    const runs = await api("/api/v1/runs", { limit: 20 });
    setLive(runs.rows.some((r) => r.status === "running"));
  }
  async function refresh() {
    const mine = current;
    document.body.dataset.state = "loading";
    try {
      await Promise.all([mine.reload(), checkLive()]);
      if (mine === current) { showError(null); document.body.dataset.state = "ready"; }
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return needLogin("The token was refused.");
      if (mine === current) { showError(e); document.body.dataset.state = "error"; }
    }
  }
  function drawNav(active) {
    const nav = $("#nav");
    nav.replaceChildren(...Object.entries(VIEWS)
      .filter(([, v]) => !v.when || v.when(config))
      .map(([name, v]) => el("a", { href: "#/" + name, class: name === active ? "active" : "", "data-view": name, text: v.title })));
  }
  async function render() {
    if (asking) { asking.abort(); asking = null; } // leaving the Ask view ends its answer
    const { view, params } = parseHash();
    const v = VIEWS[view] && (!VIEWS[view].when || VIEWS[view].when(config)) ? VIEWS[view] : null;
    drawNav(view);
    const root = $("#view");
    root.replaceChildren();
    if (!v) { showError(new Error(`No view "${view}".`)); current = null; return; }
    try {
      if (!tasks) tasks = await api("/api/v1/tasks");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return needLogin("The token was refused.");
      showError(e); document.body.dataset.state = "error"; return;
    }
    document.title = `${v.title} · NetSpectra`;
    current = { view, reload: v.render(root, Object.assign({}, params)) };
    await refresh();
  }
  function needLogin(message) {
    if (asking) { asking.abort(); asking = null; } // no answer goes on after logout
    sessionStorage.removeItem(TOKEN_KEY);
    tasks = null; current = null; setLive(false);
    $("#view").replaceChildren();
    $("#nav").replaceChildren();
    $("#logout").hidden = true;
    $("#login").hidden = false;
    const err = $("#login-error");
    err.hidden = !message; err.textContent = message || "";
    document.body.dataset.state = "login";
    $("#token").focus();
  }
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value);
    $("#token").value = "";
    start();
  });
  $("#logout").addEventListener("click", () => needLogin(""));
  function start() {
    if (config.token_required && !token()) return needLogin("");
    $("#login").hidden = true;
    $("#logout").hidden = !config.token_required;
    render();
  }
  window.addEventListener("hashchange", () => { if (!$("#login").hidden) return; render(); });

  applyTheme();
  fetch("ui/config.json").then((r) => r.json()).then((c) => { config = Object.assign(config, c); start(); })
    .catch((e) => showError(new Error("cannot read the dashboard's configuration: " + e.message)));
})();
