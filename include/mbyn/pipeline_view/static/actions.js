// The view's actions — re-send quarantined records, send test messages, rewind a group — each an Airflow DAG run.
//
// Loaded after app.js (uses its $, getJSON and cell). The server route checks Airflow's permission for the
// DAG: a 401 asks to log in, a 403 says "your role cannot trigger this". /api/features says up front whether
// this user may trigger each DAG (the buttons are disabled and the message shown) and whether export is on.
// Every triggered run is listed with its state, polled until it ends, and linked to its page in the Airflow UI.
"use strict";

const RUN_POLL_MS = 2000;
const DONE_STATES = new Set(["success", "failed"]);
const AIRFLOW_ROOT = new URL("../", window.location.href);  // the page is served at <airflow>/mbyn/
let features = { actions: [], export: true, forbidden_message: "your role cannot trigger this" };
let lastPreview = null;  // the conf of the rewind whose dry run succeeded

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Accept": "application/json" },
    body: JSON.stringify(body),
  });
  let doc = null;
  try { doc = await response.json(); } catch (err) { doc = null; }
  return { status: response.status, doc };
}

// FastAPI answers {"detail": "text"} or {"detail": [{"loc": [...], "msg": "..."}, ...]}.
function detailText(doc) {
  const detail = doc && doc.detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  return detail ? String(detail) : "";
}

function say(id, text, cls = "") {
  const node = $(id);
  node.textContent = text;
  node.className = `small action-msg ${cls}`;
}

function actionOf(name) {
  return (features.actions || []).find((a) => a.action === name) || {};
}

// Triggering ---------------------------------------------------------------------------------------------

async function trigger(action, body, msgId) {
  say(msgId, "triggering…");
  let result;
  try {
    result = await postJSON(`api/actions/${action}`, body);
  } catch (err) {
    say(msgId, `could not reach the server: ${err.message || err}`, "bad");
    return null;
  }
  const { status, doc } = result;
  if (status === 200 && doc && doc.run_id) {
    say(msgId, `triggered ${doc.dag_id} run ${doc.run_id}`, "good");
    addRun(doc);
    return doc;
  }
  if (status === 401) say(msgId, "you are not logged in to Airflow (log in again, then retry)", "bad forbidden");
  else if (status === 403) {  // the server's detail starts with the message; Airflow's own says only "Forbidden"
    const detail = detailText(doc);
    say(msgId, detail.startsWith(features.forbidden_message) ? detail : `${features.forbidden_message} (${detail})`,
      "bad forbidden");
  }
  else say(msgId, `HTTP ${status}: ${detailText(doc) || "no details"}`, "bad");
  return null;
}

// Runs: one row per triggered run, polled until it ends -------------------------------------------------------

const runs = new Map();  // "dag/run" → { doc, row, onDone }

function runLink(doc) {
  const a = document.createElement("a");
  a.href = new URL(doc.url, AIRFLOW_ROOT).href;
  a.target = "_top";  // the page is in the UI's iframe: open the run in the UI itself
  a.textContent = doc.run_id;
  return a;
}

function addRun(doc, onDone) {
  $("runs-section").hidden = false;
  const body = $("runs").tBodies[0];
  const row = body.insertRow(0);
  row.dataset.dag = doc.dag_id;
  row.dataset.run = doc.run_id;
  cell(row, doc.dag_id);
  row.insertCell().appendChild(runLink(doc));
  cell(row, doc.state, "state");
  cell(row, JSON.stringify(doc.conf), "small");
  runs.set(`${doc.dag_id}/${doc.run_id}`, { doc, row, onDone });
}

async function pollRuns() {
  for (const [key, run] of runs) {
    try {
      const doc = await getJSON(`api/actions/runs/${encodeURIComponent(run.doc.dag_id)}/${encodeURIComponent(run.doc.run_id)}`);
      const stateCell = run.row.querySelector("td.state");
      stateCell.textContent = doc.state;
      stateCell.className = `state ${doc.state === "success" ? "good" : doc.state === "failed" ? "bad" : "lagging"}`;
      run.row.dataset.state = doc.state;
      if (DONE_STATES.has(doc.state)) {
        runs.delete(key);
        if (doc.state === "failed") stateCell.title = "see the task log in Airflow (the run's link)";
        if (run.onDone) run.onDone(doc);
        if (doc.dag_id === "quarantine_resend") loadQuarantine();
      }
    } catch (err) {
      console.error("mbyn pipeline view: run state failed:", err);
    }
  }
}

async function runLoop() {
  try { await pollRuns(); } finally { setTimeout(runLoop, RUN_POLL_MS); }
}

// Re-send quarantined records ------------------------------------------------------------------------------

async function loadQuarantine() {
  const body = $("q-records").tBodies[0];
  let doc;
  try {
    doc = await getJSON("api/quarantine?limit=200");
  } catch (err) {
    say("resend-msg", `quarantine unreadable: ${err.message || err}`, "bad");
    return;
  }
  body.replaceChildren();
  for (const r of doc.records || []) {
    const row = body.insertRow();
    row.dataset.id = String(r.id);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = String(r.id);
    box.className = "q-pick";
    row.insertCell().appendChild(box);
    cell(row, r.id, "num");
    cell(row, `${r.topic} ${r.partition}@${r.offset}`);
    cell(row, r.reason).title = r.error || "";
    cell(row, r.value, "small mono");
  }
  $("q-empty").hidden = (doc.records || []).length > 0;
}

async function resend() {
  const ids = [...document.querySelectorAll("input.q-pick:checked")].map((b) => Number(b.value));
  if (!ids.length) { say("resend-msg", "tick one or more quarantined records first", "bad"); return; }
  await trigger("quarantine-resend", { ids }, "resend-msg");
}

// Test messages --------------------------------------------------------------------------------------------

async function sendTestMessage() {
  await trigger("test-message", { topic: $("tm-topic").value, count: Number($("tm-count").value) }, "tm-msg");
}

// Rewind a group: dry run (preview) first, then the real rewind of exactly what was previewed ------------------

function rewindConf() {
  return { topic: $("rw-topic").value, group: $("rw-group").value.trim(), from_ts: $("rw-time").value.trim() };
}

function drawPreview(doc) {
  const summary = (doc.results || {}).replay_from_timestamp;
  const out = $("rw-preview");
  out.replaceChildren();
  if (doc.state !== "success" || !summary) {
    say("rw-msg", `the dry run ${doc.state}: see its task log in Airflow (link above)`, "bad");
    return;
  }
  const head = document.createElement("p");
  head.className = "small";
  const members = summary.active_members || [];
  head.textContent = `${summary.group} on ${summary.topic} from ${summary.from_ts}: ${summary.rewound_records} ` +
    `record(s) would be re-read; re-load: ${summary.reload || "–"}` +
    (members.length ? `; STOP its ${members.length} active member(s) first: ${members.join(", ")}` : "");
  const table = document.createElement("table");
  table.id = "rw-partitions";
  const thead = table.createTHead().insertRow();
  for (const h of ["partition", "from offset", "to offset", "records"]) thead.appendChild(document.createElement("th")).textContent = h;
  const tbody = table.createTBody();
  for (const p of summary.partitions || []) {
    const row = tbody.insertRow();
    cell(row, p.partition, "num");
    cell(row, p.from_offset, "num");
    cell(row, p.to_offset, "num");
    cell(row, p.records, "num");
  }
  out.append(head, table);
  lastPreview = { topic: doc.conf.topic, group: doc.conf.group, from_ts: doc.conf.from_ts };
  $("rw-go").disabled = actionOf("rewind").may_trigger === false;
  say("rw-msg", "preview ready: check it, then rewind", "good");
}

async function preview() {
  lastPreview = null;
  $("rw-go").disabled = true;
  $("rw-preview").replaceChildren();
  const doc = await trigger("rewind", { ...rewindConf(), dry_run: true }, "rw-msg");
  if (doc) runs.get(`${doc.dag_id}/${doc.run_id}`).onDone = drawPreview;
}

async function rewindNow() {
  if (!lastPreview) return;
  const conf = lastPreview;
  lastPreview = null;
  $("rw-go").disabled = true;
  await trigger("rewind", { ...conf, dry_run: false }, "rw-msg");
}

// Features: permissions and the export switch ----------------------------------------------------------------

const BUTTONS = { "quarantine-resend": ["resend"], "test-message": ["tm-send"], "rewind": ["rw-preview-btn"] };
const MESSAGES = { "quarantine-resend": "resend-msg", "test-message": "tm-msg", "rewind": "rw-msg" };

function applyFeatures(doc) {
  features = doc;
  $("export-links").hidden = !doc.export;
  document.body.dataset.export = doc.export ? "on" : "off";
  const topics = $("tm-topic");
  if (!topics.options.length) for (const t of doc.test_message_topics || []) topics.add(new Option(t, t));
  for (const a of doc.actions || []) {
    for (const id of BUTTONS[a.action] || []) $(id).disabled = a.may_trigger === false;
    if (a.may_trigger === false) say(MESSAGES[a.action], `${doc.forbidden_message} (DAG ${a.dag_id})`, "bad forbidden");
    else if (!a.loaded) say(MESSAGES[a.action], `DAG ${a.dag_id} is not loaded in Airflow yet`, "lagging");
    else if (a.paused) say(MESSAGES[a.action], `DAG ${a.dag_id} is paused: runs wait until it is unpaused`, "lagging");
  }
}

async function loadFeatures() {
  try {
    applyFeatures(await getJSON("api/features"));
  } catch (err) {
    console.error("mbyn pipeline view: features failed:", err);
  }
}

async function fillRewindChoices() {
  const topics = $("rw-topic");
  if (!topics.options.length) for (const o of $("topic").options) topics.add(new Option(o.text, o.value));
  try {
    const view = await getJSON("api/groups");
    const list = $("rw-groups");
    list.replaceChildren(...(view.groups || []).map((g) => new Option(g.consumer, g.consumer)));
  } catch (err) {
    console.error("mbyn pipeline view: groups for the rewind failed:", err);
  }
}

$("resend").addEventListener("click", () => resend());
$("q-reload").addEventListener("click", () => loadQuarantine());
$("tm-send").addEventListener("click", () => sendTestMessage());
$("rw-preview-btn").addEventListener("click", () => preview());
$("rw-go").addEventListener("click", () => rewindNow());
for (const id of ["rw-topic", "rw-group", "rw-time"]) $(id).addEventListener("input", () => {
  lastPreview = null;  // a changed form needs a new preview before the real rewind
  $("rw-go").disabled = true;
});
document.addEventListener("mbyn:topics", () => fillRewindChoices());  // app.js filled the topic list
$("rw-time").value = new Date(Date.now() - 3600 * 1000).toISOString().replace(/\.\d+Z$/, "Z");
loadFeatures();
loadQuarantine();
fillRewindChoices();
runLoop();
