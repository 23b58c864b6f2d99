// The mbyn pipeline view: polls the JSON API next to this page and redraws. No framework, no build step.
//
// Every part (graph, groups, reconciliation, reports) is fetched and drawn on its own: a part whose request
// fails or times out keeps its last drawing, the others still update, the error banner names what failed,
// and the next tick retries. The loop never stops, whatever a tick throws.
"use strict";

const REFRESH_MS = 3000;
const STATUS_EVERY = 4;          // the reconciliation reads records: refresh it every 4th tick only
const TIMEOUT_MS = 20000;        // a request without an answer by then counts as failed (and is retried)
const STATUS_TIMEOUT_MS = 60000; // the reconciliation may scan for up to 30 s on the server
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let tick = 0;
let statusDue = true;            // the reconciliation is fetched on the next tick (first tick, after a failure)

async function getJSON(path, timeoutMs = TIMEOUT_MS) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(path, { credentials: "same-origin", signal: abort.signal });
    if (!response.ok) {
      const text = await response.text();
      throw new Error(`${path}: HTTP ${response.status} ${text.slice(0, 200)}`);
    }
    return await response.json();
  } catch (err) {
    if (err.name === "AbortError") throw new Error(`${path}: no answer within ${timeoutMs / 1000} s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

function fmtRate(rate) {
  if (rate === null || rate === undefined) return "…";
  return rate >= 100 ? rate.toFixed(0) : rate.toFixed(1);
}

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

// Graph ----------------------------------------------------------------------------------------------

const NODE_W = 210, NODE_H = 40, ROW_GAP = 10, COL_GAP = 150, PAD = 16;

function drawGraph(graph) {
  const svg = $("graph");
  svg.replaceChildren();
  // Missing lists or fields (a topic not created yet, a group without members) draw as empty or "–".
  const columns = [
    (graph.producers || []).map((p) => ({ ...p, kind: "producer",
      sub: `${p.source || "?"} · ${fmtRate(p.rate)}/s`, idle: !p.active && !p.rate })),
    (graph.topics || []).map((t) => ({ ...t, kind: "topic",
      sub: `${t.partitions ?? 0}p · end ${t.end ?? "–"} · ${fmtRate(t.rate)}/s`, idle: !t.end })),
    (graph.groups || []).map((g) => ({ ...g, kind: "group",
      sub: `×${g.members ?? 0} · lag ${g.lag ?? "–"} · ${fmtRate(g.rate)}/s`, idle: !g.members })),
  ];
  const rows = Math.max(...columns.map((c) => c.length), 1);
  const width = PAD * 2 + NODE_W * 3 + COL_GAP * 2;
  const height = PAD * 2 + rows * (NODE_H + ROW_GAP);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", String(height));
  const pos = {};
  columns.forEach((nodes, col) => {
    const offset = (rows - nodes.length) * (NODE_H + ROW_GAP) / 2;
    nodes.forEach((n, i) => {
      pos[n.id] = { x: PAD + col * (NODE_W + COL_GAP), y: PAD + offset + i * (NODE_H + ROW_GAP), col };
    });
  });
  const edges = el("g");
  svg.appendChild(edges);
  const rates = {};
  columns.flat().forEach((n) => { rates[n.id] = n.rate; });
  for (const e of graph.edges || []) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const back = a.col > b.col;
    const x1 = back ? a.x : a.x + NODE_W, y1 = a.y + NODE_H / 2;
    const x2 = back ? b.x + NODE_W : b.x, y2 = b.y + NODE_H / 2;
    const bend = back ? -60 : 60;
    const live = (rates[e.from] || 0) > 0 && (rates[e.to] || 0) > 0;
    edges.appendChild(el("path", {
      d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
      class: `edge${back ? " back" : ""}${live ? " live" : ""}`, "data-from": e.from, "data-to": e.to,
    }));
  }
  for (const n of columns.flat()) {
    const p = pos[n.id];
    const looping = (n.crash_looping || []).length > 0;
    const g = el("g", { class: `node ${n.kind}${n.idle ? " idle" : ""}${looping ? " crash-looping" : ""}`, transform: `translate(${p.x},${p.y})`,
      "data-kind": n.kind, "data-name": n.name, "data-rate": n.rate === null || n.rate === undefined ? "" : String(n.rate),
      "data-members": n.members === undefined ? "" : String(n.members) });
    g.appendChild(el("title", {}, n.kind === "group" ? `${n.group} (${n.state}) ${(n.client_ids || []).join(", ")}`
      : n.kind === "producer" ? (n.help || n.name) : n.physical));
    g.appendChild(el("rect", { width: NODE_W, height: NODE_H }));
    g.appendChild(el("text", { x: 8, y: 16, class: "title" }, n.name));
    g.appendChild(el("text", { x: 8, y: 32, class: "sub" }, looping ? `crash-looping: ${n.crash_looping.join(", ")}` : n.sub));
    svg.appendChild(g);
  }
  $("window").textContent = String(graph.rate_window_s);
  $("sampled").textContent = `sampled ${graph.sampled_at}`;
}

// Groups ---------------------------------------------------------------------------------------------

function sparkline(history) {
  const w = 140, h = 28;
  const svg = el("svg", { width: w, height: h, class: "spark", viewBox: `0 0 ${w} ${h}` });
  if (history.length < 2) return svg;
  const t0 = Date.parse(history[0].at), t1 = Date.parse(history[history.length - 1].at) || t0 + 1;
  const max = Math.max(...history.map((p) => p.lag), 1);
  const points = history.map((p) => {
    const x = ((Date.parse(p.at) - t0) / Math.max(t1 - t0, 1)) * (w - 2) + 1;
    const y = h - 2 - (p.lag / max) * (h - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  svg.appendChild(el("polyline", { points: points.join(" ") }));
  svg.appendChild(el("title", {}, `max lag ${max}`));
  return svg;
}

function drawGroups(view) {
  const body = $("groups").tBodies[0];
  body.replaceChildren();
  $("minutes").textContent = String(view.minutes);
  for (const g of view.groups || []) {
    const row = body.insertRow();
    row.dataset.group = g.group;
    const name = cell(row, g.consumer);
    name.title = `${g.group} · ${g.state} · ${(g.client_ids || []).join(", ") || "no members"}`;
    cell(row, g.member_count, "num");
    cell(row, g.lag, `num ${g.lag > 0 ? "bad" : ""}`);
    row.insertCell().appendChild(sparkline(g.history || []));
    cell(row, fmtRate(g.rate), "num");
  }
}

// Status ---------------------------------------------------------------------------------------------

// The four verdicts of mbyn.reconciliation, each with its own colour (CSS class); only "balanced" is green.
const VERDICTS = {
  "balanced": { cls: "balanced", mark: "✓" },
  "lagging": { cls: "lagging", mark: "… lag" },
  "not balanced": { cls: "not-balanced", mark: "✗" },
  "not checked": { cls: "not-checked", mark: "? not checked" },
};
const verdictOf = (name) => VERDICTS[name] || { cls: "unknown", mark: "?" };

function drawStatus(status) {
  const verdict = $("verdict");
  const shown = verdictOf(status.verdict);
  verdict.textContent = `reconciliation: ${status.verdict}`;
  verdict.className = `verdict ${shown.cls}`;
  verdict.title = status.summary || "";
  verdict.dataset.balanced = String(status.balanced);
  verdict.dataset.verdict = String(status.verdict);
  $("summary").textContent = status.summary || "";
  $("summary").className = `small ${shown.cls}`;
  const problems = $("problems");
  problems.replaceChildren(...(status.problems || []).map((p) => {
    const line = document.createElement("p");
    line.className = `${shown.cls} small`;
    line.textContent = p;
    return line;
  }));
  const recon = $("recon").tBodies[0];
  recon.replaceChildren();
  for (const [topic, r] of Object.entries(status.reconciliation?.topics || {})) {
    if (!r.span && !r.rows) continue;
    const row = recon.insertRow();
    cell(row, topic).title = (r.notes || []).join("\n");
    cell(row, r.records ?? `≤${r.span}`, "num");
    cell(row, r.pending, `num ${r.pending ? "bad" : ""}`);
    cell(row, r.quarantined, "num");
    cell(row, r.rows, "num");
    const topicVerdict = verdictOf(r.verdict);
    cell(row, topicVerdict.mark, topicVerdict.cls);
  }
  const q = $("quarantine").tBodies[0];
  q.replaceChildren();
  const warehouse = status.warehouse || {};
  for (const item of warehouse.quarantine || []) {
    const row = q.insertRow();
    const prefix = status.topic_prefix;
    cell(row, item.topic && prefix && item.topic.startsWith(prefix) ? item.topic.slice(prefix.length) : item.topic);
    cell(row, item.reason);
    cell(row, item.count, "num");
    cell(row, item.replayed, "num");
  }
  const dlq = (status.topics || {})["dead-letters"];
  $("dlq-topic").textContent = dlq ? `dead-letters topic: ${dlq.span} record(s); quarantined: ${warehouse.quarantined}` : "";
  const tables = $("tables").tBodies[0];
  tables.replaceChildren();
  for (const [name, rows] of Object.entries(warehouse.tables || {})) {
    const row = tables.insertRow();
    row.dataset.table = name;
    cell(row, name);
    cell(row, rows, "num");
  }
}

function drawWorkers(view) {
  const copies = view.copies || [];
  $("workers-section").hidden = !copies.length;
  const body = $("workers").tBodies[0];
  body.replaceChildren();
  for (const c of copies) {
    const row = body.insertRow();
    row.dataset.copy = c.label;
    row.dataset.state = c.state;
    cell(row, c.label);
    cell(row, c.state, c.state === "crash-looping" ? "bad" : c.state === "restarting" ? "lagging" : "");
    cell(row, c.restarts, "num");
    cell(row, c.recent_restarts, `num ${c.recent_restarts ? "bad" : ""}`);
    cell(row, c.last_exit_code, "num");
    cell(row, c.last_error, c.state === "crash-looping" ? "bad small" : "small");
  }
}

function drawReports(view) {
  const list = $("reports");
  list.replaceChildren();
  if (!(view.reports || []).length) {
    const li = document.createElement("li");
    li.className = "small";
    li.textContent = `no reports yet in ${view.reports_dir}`;
    list.appendChild(li);
  }
  for (const r of (view.reports || []).slice(0, 15)) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = r.url;
    a.target = "_blank";
    a.textContent = r.path;
    li.append(a, ` (${r.modified})`);
    list.appendChild(li);
  }
}

// Topic browser --------------------------------------------------------------------------------------

// Where to read from: the latest records, forward from an offset of one partition, or forward from a time.
function browseQuery(extra = {}) {
  const params = new URLSearchParams();
  const key = $("key").value.trim(), header = $("header").value.trim();
  if (key) params.set("key", key);
  if (header) params.set("header", header);
  params.set("limit", $("limit").value || "20");
  const from = $("from").value, partition = $("partition").value.trim();
  if (partition) params.set("partition", partition);
  if (from === "offset") params.set("offset", $("offset").value.trim() || "0");
  if (from === "time" && $("since").value.trim()) params.set("since", $("since").value.trim());
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params.toString();
}

function showFromInputs() {
  const from = $("from").value;
  $("offset").hidden = from !== "offset";
  $("since").hidden = from !== "time";
  $("partition").placeholder = from === "offset" ? "partition" : "partition (all)";
}

function updateExportLinks() {
  const topic = encodeURIComponent($("topic").value);
  $("export-json").href = `api/topics/${topic}/export?${browseQuery({ format: "json" })}`;
  $("export-csv").href = `api/topics/${topic}/export?${browseQuery({ format: "csv" })}`;
}

async function browse(event) {
  if (event) event.preventDefault();
  updateExportLinks();
  const topic = encodeURIComponent($("topic").value);
  const result = await getJSON(`api/topics/${topic}/messages?${browseQuery()}`);
  const read = (result.ranges || []).filter((r) => r.to > r.from).map((r) => `${r.partition}:${r.from}…${r.to - 1}`);
  $("browse-info").textContent = `${result.count} record(s) shown (${result.order}), ${result.scanned} read from ` +
    `${result.physical}${read.length ? ` [${read.slice(0, 12).join(" ")}${read.length > 12 ? " …" : ""}]` : ""}`;
  const next = result.partition !== null && result.partition !== undefined ? (result.next || {})[String(result.partition)] : undefined;
  $("next-page").hidden = next === undefined;
  $("next-page").dataset.offset = next === undefined ? "" : String(next);
  const body = $("messages").tBodies[0];
  body.replaceChildren();
  for (const m of result.messages) {
    const row = body.insertRow();
    cell(row, `${m.partition}@${m.offset}`);
    cell(row, m.timestamp);
    cell(row, m.key);
    cell(row, Object.entries(m.headers).map(([k, v]) => `${k}=${v}`).join(" "));
    cell(row, typeof m.value === "string" ? m.value : JSON.stringify(m.value));
  }
}

function fillTopics(graph) {
  const select = $("topic");
  if (select.options.length) return;
  for (const t of graph.topics || []) select.add(new Option(t.name, t.name));
  updateExportLinks();
  document.dispatchEvent(new Event("mbyn:topics"));  // actions.js fills its topic lists from this one
}

// Loop -----------------------------------------------------------------------------------------------

// One part of the page: fetch, draw; a failure is logged to the console and collected for the banner.
async function part(what, load, draw, failed) {
  try {
    draw(await load());
    return true;
  } catch (err) {
    console.error(`mbyn pipeline view: ${what} failed:`, err);
    failed.push(`${what}: ${err.message || err}`);
    return false;
  }
}

function showErrors(failed) {
  const banner = $("error");
  banner.textContent = failed.length ? `Could not refresh (retrying every ${REFRESH_MS / 1000} s): ${failed.join(" · ")}` : "";
  banner.hidden = !failed.length;
}

async function refresh() {
  const failed = [];
  await Promise.all([
    part("graph", () => getJSON("api/graph"), (graph) => { drawGraph(graph); fillTopics(graph); }, failed),
    part("groups", () => getJSON("api/groups"), drawGroups, failed),
    part("workers", () => getJSON("api/workers"), drawWorkers, failed),
    part("lag", () => getJSON(lagPath()), (view) => drawLag(view), failed),  // lag.js
  ]);
  if (statusDue || tick % STATUS_EVERY === 0) {
    const done = await Promise.all([
      part("reconciliation", () => getJSON("api/status", STATUS_TIMEOUT_MS), drawStatus, failed),
      part("reports", () => getJSON("api/reports"), drawReports, failed),
    ]);
    statusDue = !done.every(Boolean);
  }
  showErrors(failed);
  tick += 1;
}

async function loop() {
  try {
    if ($("auto").checked) await refresh();
  } catch (err) {  // a bug in a draw function must not end the refresh loop
    console.error("mbyn pipeline view: refresh failed:", err);
    showErrors([String(err)]);
  } finally {
    setTimeout(loop, REFRESH_MS);
  }
}

$("every").textContent = String(REFRESH_MS / 1000);
$("browse").addEventListener("submit", (e) => browse(e).catch((err) => {
  $("browse-info").textContent = String(err);
}));
for (const id of ["key", "header", "limit", "topic", "from", "partition", "offset", "since"]) {
  $(id).addEventListener("change", updateExportLinks);
}
$("from").addEventListener("change", showFromInputs);
$("next-page").addEventListener("click", () => {  // forward from where the last page ended, same partition
  $("from").value = "offset";
  $("offset").value = $("next-page").dataset.offset;
  showFromInputs();
  browse().catch((err) => { $("browse-info").textContent = String(err); });
});
showFromInputs();
loop();
