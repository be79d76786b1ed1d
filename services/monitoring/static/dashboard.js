// Driftline's dashboard: polls monitoring's JSON endpoints and redraws, no build step.
// Charts are hand-written SVG; every text from the data goes in as textContent.
"use strict";

const POLL_MS = 2000;
const CHART_POINTS = 400; // per chart: about one per pixel
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);

// ---- small DOM helpers

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(digits);
  return String(value);
}

function signed(value) {
  if (value === null || value === undefined) return "-";
  return (value > 0 ? "+" : "") + value.toFixed(4);
}

function row(cells, attrs = {}) {
  const tr = el("tr", attrs);
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = el("td", { class: "l" });
      td.appendChild(cell);
      tr.appendChild(td);
    } else {
      const [text, cls] = Array.isArray(cell) ? cell : [cell, ""];
      tr.appendChild(el("td", cls ? { class: cls } : {}, fmt(text)));
    }
  }
  return tr;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// versions: integers numerically, anything else after them by text (shared.registry)
function versionOrder(a, b) {
  const da = /^\d+$/.test(a), db = /^\d+$/.test(b);
  if (da && db) return Number(a) - Number(b);
  if (da !== db) return da ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---- sections

function drawSummary(summary) {
  const metric = summary.task === "regression" ? "mae" : "accuracy";
  document.querySelectorAll("#summary th.metric").forEach((th) => (th.textContent = metric));
  document.querySelectorAll("#summary th.window").forEach((th) => (th.textContent = "window " + metric));
  const rows = summary.models.map((m) => {
    const versions = el("span", { class: "versions" });
    const sorted = [...m.versions].sort((a, b) => versionOrder(a.version, b.version));
    sorted.forEach((v, i) => {
      if (i) versions.append(", ");
      const span = el("span", { class: "version", "data-version": v.version }, v.version);
      versions.append(span, ` (n=${v.n}, ${fmt(v.metrics[metric])})`);
    });
    return row(
      [
        [m.model, "l"], [m.source, "l"], m.n, m.metrics[metric], m.metrics.f1,
        m.metrics.log_loss, m.window[metric],
        m.estimated ? m.estimated.accuracy : null,
        m.estimated ? m.estimated.calibration_gap : null,
        m.unscored, m.expired, m.alerts, versions,
      ],
      { class: "series", "data-subject": `${m.model}:${m.source}` },
    );
  });
  fill($("#summary tbody"), rows);
}

function gapBar(gap) {
  // a bar from the middle: left (red) when served is worse, right (green) when better
  const w = 120, h = 12, mid = w / 2;
  const node = svg("svg", { width: w, height: h, class: "gapbar" });
  node.append(svg("line", { x1: mid, y1: 0, x2: mid, y2: h, class: "axis" }));
  if (gap !== null && gap !== undefined) {
    const len = Math.min(mid, Math.abs(gap) * mid * 2); // 0.5 of accuracy fills half
    node.append(svg("rect", {
      x: gap < 0 ? mid - len : mid, y: 2, width: len, height: h - 4,
      fill: gap < 0 ? "#d62728" : "#2ca02c",
    }));
  }
  return node;
}

function drawGap(timeline) {
  const rows = [];
  for (const g of timeline.gap) {
    const served = g.served.length ? g.served : [{ source: "-" }];
    for (const s of served) {
      const cls = s.gap_window < 0 ? "neg" : s.gap_window > 0 ? "pos" : "";
      rows.push(row(
        [
          [g.model, "l"], g.learner.window, [s.source, "l"], s.window,
          [signed(s.gap_window), cls], [signed(s.gap_cumulative), ""], gapBar(s.gap_window),
        ],
        { "data-model": g.model, "data-source": s.source },
      ));
    }
  }
  fill($("#gap tbody"), rows);
}

function timeOf(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

function shortTime(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function chart(series, timeline) {
  const W = 440, H = 190, L = 36, R = 10, T = 16, B = 28;
  const regression = timeline.task === "regression";
  const pts = series.points.map(([t, n, v]) => [timeOf(t) ?? n, v]).sort((a, b) => a[0] - b[0]);
  const box = el("div", { class: "chart", "data-subject": series.subject });
  box.append(el("h3", {}, `${series.model} · ${series.source}  (n=${series.n}, versions ${series.versions.join(", ")})`));
  const node = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  box.append(node);
  // the span: the points, where this series' versions start (its first one precedes
  // them) and its promotions (the one away from it comes after them)
  const promotions = timeline.promotions.filter((p) => p.source === series.source &&
    (p.to_model === series.model || p.from_model === series.model));
  const xs = pts.map((p) => p[0]);
  if (pts.length && timeOf(series.points[0][0]) !== null) {
    for (const m of [...series.marks, ...promotions]) {
      if (timeOf(m.event_time) !== null) xs.push(timeOf(m.event_time));
    }
  }
  const t0 = Math.min(...xs), t1 = Math.max(...xs);
  // accuracy: from a tenth below its lowest point to 1 (changes stay visible); MAE: 0 to max
  const values = pts.map((p) => p[1]);
  const top = regression ? Math.max(1e-9, ...values) : 1;
  const bottom = regression || !values.length ? 0 : Math.max(0, Math.floor(Math.min(...values) * 10 - 1) / 10);
  const x = (t) => L + (W - L - R) * (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5);
  const y = (v) => T + (H - T - B) * (1 - (v - bottom) / (top - bottom));
  node.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  node.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const f of [0, 0.5, 1]) {
    const v = bottom + (top - bottom) * f;
    node.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v, 2)));
  }
  if (!pts.length) {
    node.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no points yet"));
    return box;
  }
  if (series.points.length && timeOf(series.points[0][0]) !== null) {
    node.append(svg("text", { x: L, y: H - 8 }, shortTime(t0)));
    node.append(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, shortTime(t1)));
  }
  const inRange = (t) => t !== null && t >= t0 && t <= t1;
  const mark = (t, cls, label, title) => {
    const g = svg("g", { class: `mark-group ${cls}` });
    g.append(svg("line", { x1: x(t), y1: T, x2: x(t), y2: H - B, class: `mark ${cls}` }));
    if (label) {  // right of its line, or left of it near the right edge
      const right = x(t) > W - R - 40;
      g.append(svg("text", {
        x: x(t) + (right ? -2 : 2), y: cls === "promotion" ? T + 10 : T - 4,
        "text-anchor": right ? "end" : "start", class: "mark-label",
      }, label));
    }
    g.append(svg("title", {}, title));
    node.append(g);
  };
  for (const m of series.marks) {
    const t = timeOf(m.event_time);
    if (inRange(t)) mark(t, "version", `v${m.version}`, `version ${m.version} from n=${m.n}`);
  }
  for (const p of promotions) {
    const t = timeOf(p.event_time);
    if (inRange(t)) {
      mark(t, "promotion", `▲${p.to_model}`, `${p.source}: ${p.from_model} → ${p.to_model} v${p.version}`);
    }
  }
  for (const a of timeline.alerts) {
    const mine = a.kind === "concept_drift" ? a.subject === series.subject : a.kind === "data_drift";
    const t = timeOf(a.event_time);
    if (mine && inRange(t)) mark(t, a.kind, "", `${a.kind}: ${a.subject} at ${a.event_time}`);
  }
  node.append(svg("polyline", {
    class: "line", "data-points": pts.length,
    points: pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
  }));
  const last = pts[pts.length - 1];
  node.append(svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 2.5, fill: "#1f77b4" }));
  return box;
}

function drawCharts(timeline) {
  $("#charts-title").textContent =
    `Recent-window ${timeline.metric === "mae" ? "MAE" : "accuracy"} over event time, per model and source`;
  $("#charts").replaceChildren(...timeline.series.map((s) => chart(s, timeline)));
}

// points [[x, value], ...] from 0 up; a dashed line at `threshold` unless it is null
function sparkline(points, threshold, w = 190, h = 44) {
  const node = svg("svg", { width: w, height: h, class: "sparkline" });
  const top = Math.max(threshold === null ? 1 : threshold * 1.5, ...points.map((p) => p[1]));
  const n0 = points.length ? points[0][0] : 0, n1 = points.length ? points[points.length - 1][0] : 1;
  const x = (n) => 2 + (w - 4) * (n1 > n0 ? (n - n0) / (n1 - n0) : 1);
  const y = (v) => 2 + (h - 4) * (1 - v / top);
  if (threshold !== null) {
    node.append(svg("line", { x1: 0, y1: y(threshold), x2: w, y2: y(threshold), class: "threshold" }));
  }
  if (points.length) {
    node.append(svg("polyline", {
      class: "spark", "data-points": points.length,
      points: points.map(([n, v]) => `${x(n).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
    }));
  }
  return node;
}

function drawFeatures(drift, timeline) {
  const history = Object.fromEntries(timeline.features.map((f) => [f.feature, f.points]));
  const cards = drift.features.map((f) => {
    const card = el("div", { class: "feature" + (f.drift ? " drifting" : ""), "data-feature": f.feature });
    card.append(el("h3", {}, f.feature + (f.drift ? " — drifting" : "")));
    card.append(el("div", { class: "value" },
      `${f.statistic.toUpperCase()} ${fmt(f.value, 3)} (threshold ${fmt(f.threshold, 2)}), ` +
      `reference ${f.reference_n}, current ${f.current_n}`));
    card.append(sparkline(history[f.feature] || [], f.threshold));
    return card;
  });
  $("#features").replaceChildren(...cards);
  const drifting = drift.features.filter((f) => f.drift).map((f) => f.feature);
  const line = $("#drifting");
  line.className = drifting.length ? "alarm" : "muted";
  line.textContent = drift.features.length === 0 ? "No feature watched."
    : drifting.length ? `Drifting: ${drifting.join(", ")}` : "No feature drifting.";
}

function drawLag(lag) {
  const rows = lag.services.map((s) => {
    const spark = sparkline(s.points.filter((p) => p[1] !== null).map((p) => [p[0], p[1]]), null, 150, 22);
    return row(
      [
        [s.service, "l"], [s.group, "l"], s.running ? s.lag : "not running",
        s.consumed_per_s, s.produced_per_s, spark,
      ],
      { "data-service": s.service, class: s.running ? "running" : "stopped" },
    );
  });
  fill($("#lag tbody"), rows);
}

function drawChampion(models) {
  const c = models.champion;
  const line = $("#champion");
  line.dataset.model = c.model;
  line.textContent = `${c.model}${c.pinned ? ` (pinned at version ${c.pinned})` : ""}: ` +
    (c.action ? `${c.action} by ${c.by}, ${c.reason}` : c.reason) +
    (c.pinned && c.policy_model !== c.model ? `; the policy would serve ${c.policy_model}` : "");
  const changes = models.changes.slice(0, 20).map((x) => {
    const e = x.evidence || {};
    const evidence = e.test ? `${e.test}: ${e.b} / ${e.c}, p=${Number(e.p_value).toExponential(1)}` : "";
    return row(
      [[x.changed_at, "l"], [x.action, "l"], [x.model + (x.version ? ` v${x.version}` : ""), "l"], [x.by, "l"], [x.reason, "l"], evidence],
      { class: "change", "data-action": x.action, "data-model": x.model },
    );
  });
  fill($("#changes tbody"), changes);
  const actions = models.actions.slice(0, 20).map((a) => {
    const d = a.details || {};
    return row(
      [[a.raised_at, "l"], [a.subject, "l"], `${fmt(d.error_before, 3)} → ${fmt(d.error_after, 3)}`, [d.action, "l"], [d.event_time, "l"]],
      { class: "action", "data-action": d.action },
    );
  });
  fill($("#actions tbody"), actions);
}

function drawInfluence(models, summary) {
  const served = new Set(models.champion ? [models.champion.model]
    : (summary ? summary.models : []).filter((m) => m.source !== "learner").map((m) => m.model));
  const cards = models.models.map((m) => {
    const card = el("div", { class: "influence" + (served.has(m.name) ? " served" : ""), "data-model": m.name });
    card.append(el("h3", {}, `${m.name} v${m.version}${served.has(m.name) ? " (served)" : ""}`));
    if (!m.influence.length) card.append(el("p", { class: "value" }, "nothing to show for this model"));
    for (const part of m.influence.slice(0, 8)) {
      const line = el("div", { class: "bar-row", "data-feature": part.feature });
      const bar = el("span", { class: "bar" });
      bar.style.width = `${Math.max(1, Math.round(part.share * 120))}px`;
      line.append(el("span", { class: "bar-name" }, part.feature), bar, el("span", { class: "value" }, `${(part.share * 100).toFixed(1)}%`));
      card.append(line);
    }
    return card;
  });
  fill($("#influence"), cards);
}

function drawAlerts(alerts) {
  const rows = alerts.alerts.slice(0, 50).map((a) => {
    const d = a.details || {};
    const detail = a.kind === "data_drift"
      ? `${d.statistic} ${fmt(d.value, 3)} > ${d.threshold}`
      : a.kind === "concept_drift"
        ? `error ${fmt(d.error_before, 3)} → ${fmt(d.error_after, 3)}, version ${d.model_version}`
        : JSON.stringify(d).slice(0, 120);
    return row(
      [[a.raised_at, "l"], [a.kind, "l"], [a.subject, "l"], [a.detector, "l"], [detail, "l"], [d.event_time, "l"]],
      { class: "alert", "data-kind": a.kind, "data-subject": a.subject },
    );
  });
  fill($("#alerts tbody"), rows);
}

// ---- the loop

let polls = 0;

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function poll() {
  const paths = ["/api/summary", `/api/timeline?points=${CHART_POINTS}`, "/api/drift", "/api/alerts?limit=50", "/api/lag", "/api/models"];
  const got = await Promise.allSettled(paths.map(getJSON));
  const [summary, timeline, drift, alerts, lag, models] = got.map((r) => (r.status === "fulfilled" ? r.value : null));
  const draws = [
    [summary, () => drawSummary(summary)],
    [timeline, () => { drawGap(timeline); drawCharts(timeline); }],
    [drift && timeline, () => drawFeatures(drift, timeline)],
    [lag, () => drawLag(lag)],
    [models, () => drawInfluence(models, summary)],
    [models && models.champion, () => drawChampion(models)],
    [alerts, () => drawAlerts(alerts)],
  ];
  for (const [data, draw] of draws) {
    try {
      if (data) draw();
    } catch (error) {
      console.error(error);
    }
  }
  polls += 1;
  const failed = got.filter((r) => r.status === "rejected").length;
  const status = $("#status");
  document.body.dataset.polls = String(polls);
  status.textContent = summary
    ? `task ${summary.task}${summary.replaying ? " (rebuilding state from the topics…)" : ""}; ` +
      `${summary.consumed} messages read, ${summary.alerts} alerts; updated ${new Date().toLocaleTimeString()}` +
      (failed ? `; ${failed} of ${paths.length} requests failed` : "")
    : "monitoring does not answer; retrying";
}

async function loop() {
  try {
    await poll();
  } catch (error) {
    console.error(error);
  } finally {
    setTimeout(loop, POLL_MS);
  }
}

loop();
