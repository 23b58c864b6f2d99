// The lag part of the pipeline view: per consumer group its state (ok | lagging | held | stuck) and why,
// records and seconds behind, held records and why, and the trend over the chosen window as an inline SVG
// chart. Data: api/lag?minutes= (mbyn.pipeline_view.lag). app.js fetches it every tick (lagPath) and calls
// drawLag; the helpers el() and cell() come from app.js. No framework, nothing from a CDN.
"use strict";

const LAG_CHART_W = 320, LAG_CHART_H = 64, LAG_PAD = 3;
const LAG_STATES = {
  ok: "ok", lagging: "lagging", held: "held (by design)", stuck: "stuck",
};

function lagPath() {
  const minutes = document.getElementById("lag-minutes");
  return `api/lag?minutes=${encodeURIComponent(minutes ? minutes.value : "15")}`;
}

function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// One group's trend: seconds behind (solid line, left scale) and records waiting (dashed, its own scale),
// records held by design as a shaded band. Points without a known time are left out of the seconds line.
function lagChart(history, minutes) {
  const svg = el("svg", { width: LAG_CHART_W, height: LAG_CHART_H, class: "lag-chart",
    viewBox: `0 0 ${LAG_CHART_W} ${LAG_CHART_H}`, role: "img" });
  const t1 = Date.now(), t0 = t1 - minutes * 60 * 1000;
  const x = (at) => LAG_PAD + ((Date.parse(at) - t0) / Math.max(t1 - t0, 1)) * (LAG_CHART_W - 2 * LAG_PAD);
  const maxSeconds = Math.max(1, ...history.map((p) => p.lag_seconds || 0));
  const maxRecords = Math.max(1, ...history.map((p) => Math.max(p.waiting || 0, p.held || 0)));
  const y = (value, max) => LAG_CHART_H - LAG_PAD - (value / max) * (LAG_CHART_H - 2 * LAG_PAD);
  svg.appendChild(el("line", { x1: 0, x2: LAG_CHART_W, y1: LAG_CHART_H - LAG_PAD, y2: LAG_CHART_H - LAG_PAD,
    class: "axis" }));
  const line = (points, cls) => {
    if (points.length === 1) points.push([points[0][0] + 1, points[0][1]]);  // one sample: a dot-wide line
    if (points.length) svg.appendChild(el("polyline", { class: cls,
      points: points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ") }));
  };
  const held = history.filter((p) => p.held > 0).map((p) => [x(p.at), y(p.held, maxRecords)]);
  line(held, "held");
  line(history.map((p) => [x(p.at), y(p.waiting || 0, maxRecords)]), "records");
  line(history.filter((p) => p.lag_seconds !== null && p.lag_seconds !== undefined)
    .map((p) => [x(p.at), y(p.lag_seconds, maxSeconds)]), "seconds");
  svg.appendChild(el("text", { x: LAG_CHART_W - LAG_PAD, y: 10, class: "scale", "text-anchor": "end" },
    `max ${fmtSeconds(maxSeconds)} · ${maxRecords} rec`));
  svg.appendChild(el("title", {}, `last ${minutes} min: seconds behind (solid, up to ${fmtSeconds(maxSeconds)}), `
    + `records waiting (dashed) and held (band), up to ${maxRecords}`));
  svg.dataset.points = String(history.length);
  return svg;
}

function drawLag(view) {
  const body = document.getElementById("lag").tBodies[0];
  body.replaceChildren();
  const groups = view.groups || [];
  for (const g of groups) {
    const row = body.insertRow();
    row.dataset.group = g.group;
    row.dataset.state = g.state;
    cell(row, g.consumer).title = `${g.group}${g.worker ? "" : " (not a registered worker)"}`;
    const state = cell(row, LAG_STATES[g.state] || g.state, `state state-${g.state}`);
    state.title = g.why || "";
    const why = cell(row, g.why, "small");
    if (g.state === "held" && g.holds) why.textContent = `${g.why}: ${g.holds}`;
    cell(row, g.waiting, `num ${g.waiting > 0 ? "lagging" : ""}`);
    const held = cell(row, g.held, "num");
    if (g.holds) held.title = g.holds;
    const seconds = cell(row, fmtSeconds(g.lag_seconds), "num");
    seconds.title = g.objective_s ? `objective ${fmtSeconds(g.objective_s)}` : "no objective";
    cell(row, g.members, `num ${g.members ? "" : "bad"}`);
    row.insertCell().appendChild(lagChart(g.history || [], view.minutes));
  }
  const counts = view.states || {};
  document.getElementById("lag-info").textContent = groups.length
    ? `${Object.entries(counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(" · ")} — from ${view.from}`
      + `, sampled ${view.sampled_at}`
    : "no consumer group has committed or joined yet";
}

// A new window redraws at once (getJSON comes from app.js, loaded after this file; called on change only).
document.getElementById("lag-minutes").addEventListener("change", () => {
  getJSON(lagPath()).then(drawLag).catch((err) => {
    document.getElementById("lag-info").textContent = String(err);
  });
});
