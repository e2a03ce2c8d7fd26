// Runs list: one row per run with its health and config, filterable and sortable; tick runs to
// compare them. Sort and filter live in the URL (?sort=&dir=&q=) so a view can be shared.

import {
  ROOT,
  el,
  fmt,
  fmtDate,
  fmtDuration,
  getJSON,
  markFirstPlot,
  readQuery,
  runUrl,
  showMessage,
  statusBadge,
  writeQuery,
} from "./common.js";

const table = document.getElementById("runs");
const thead = table.querySelector("thead tr");
const tbody = table.querySelector("tbody");
const status = document.getElementById("status");
const filter = document.getElementById("filter");
const count = document.getElementById("count");
const compareLink = document.getElementById("compare");
const selectedNote = document.getElementById("selected");
const pickAll = document.getElementById("pick-all");

const MAX_CONFIG_COLUMNS = 8;
const HEALTH_ORDER = { error: 0, warning: 1, ok: 2 };
const HEALTH_BATCH = 50;

let runs = [];
let configKeys = [];
let sortKey = "started_at";
let sortDir = -1; // newest first, as the API returns them
const picked = new Set();
const health = new Map(); // run id -> {health, codes, layers} | null (gone) ; absent: not loaded

function configText(value) {
  if (value === undefined) return "";
  return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
}

/** Config keys as columns: those most runs have first, at most MAX_CONFIG_COLUMNS. */
function pickConfigKeys() {
  const seen = new Map();
  for (const run of runs) {
    for (const key of Object.keys(run.config || {})) seen.set(key, (seen.get(key) || 0) + 1);
  }
  return [...seen.entries()]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, MAX_CONFIG_COLUMNS)
    .map(([key]) => key);
}

function addConfigHeaders() {
  for (const key of configKeys) {
    const th = el(
      "th",
      { dataset: { key: `config.${key}` }, "aria-sort": "none", class: "config-col" },
      el("button", { type: "button", title: `config value ${key}` }, key),
    );
    thead.append(th);
  }
}

function healthBadge(run) {
  if (!health.has(run.id)) return el("span", { class: "muted small" }, "…");
  const h = health.get(run.id);
  if (!h) return el("span", { class: "muted" }, "—");
  const icon = { ok: "✓", warning: "⚠", error: "✖" }[h.health] || "";
  const title = h.codes.length
    ? `${h.codes.map((c) => c.replace(/_/g, " ")).join(", ")} in ${h.layers.join(", ")}`
    : "no layer shows a problem at the last step";
  return el("span", { class: `badge health-${h.health}`, title }, `${icon} ${h.health}`);
}

function row(run) {
  const box = el("input", {
    type: "checkbox",
    class: "pick-run",
    value: run.id,
    "aria-label": `Select ${run.name} to compare`,
    checked: picked.has(run.id),
  });
  const cells = [
    el("td", { class: "pick" }, box),
    el("td", { class: "run-name" }, el("a", { href: runUrl(run.id) }, run.name)),
    el("td", {}, run.project),
    el("td", {}, statusBadge(run)),
    el("td", { class: "health-cell" }, healthBadge(run)),
    el("td", {}, fmtDate(run.started_at)),
    el("td", { class: "num" }, fmtDuration(run.duration_s)),
    el("td", { class: "num" }, run.last_step ?? "—"),
    el("td", { class: "num" }, fmt(run.final_loss)),
    el("td", {}, (run.tags || []).map((t) => el("span", { class: "tag" }, t))),
    ...configKeys.map((key) => {
      const text = configText(run.config?.[key]);
      return el("td", { class: "config", title: text }, text.length > 24 ? `${text.slice(0, 23)}…` : text);
    }),
  ];
  return el(
    "tr",
    { class: `clickable${picked.has(run.id) ? " picked" : ""}`, dataset: { href: runUrl(run.id), id: run.id } },
    cells,
  );
}

function matches(run, needle) {
  if (!needle) return true;
  const config = Object.entries(run.config || {}).map(([k, v]) => `${k}=${configText(v)}`);
  const hay = [run.name, run.project, run.status, ...(run.tags || []), ...config]
    .join(" ")
    .toLowerCase();
  return needle
    .toLowerCase()
    .split(/\s+/)
    .every((word) => hay.includes(word));
}

function sortValue(run) {
  if (sortKey === "health") {
    const h = health.get(run.id);
    return h ? HEALTH_ORDER[h.health] : null;
  }
  if (sortKey.startsWith("config.")) {
    const v = run.config?.[sortKey.slice(7)];
    return typeof v === "number" || typeof v === "string" ? v : (v === undefined ? null : configText(v));
  }
  return run[sortKey];
}

function compare(a, b) {
  const x = sortValue(a);
  const y = sortValue(b);
  if (x === y) return 0;
  if (x === null || x === undefined) return 1; // missing values last, whatever the direction
  if (y === null || y === undefined) return -1;
  return (x < y ? -1 : 1) * sortDir;
}

function shown() {
  return runs.filter((r) => matches(r, filter.value.trim())).sort(compare);
}

function render() {
  const list = shown();
  tbody.replaceChildren(...list.map(row));
  count.textContent = `${list.length} of ${runs.length} runs`;
  if (!list.length) {
    const none = el("td", { colspan: 10 + configKeys.length, class: "muted" }, "No run matches the filter.");
    tbody.append(el("tr", {}, none));
  }
  for (const th of table.querySelectorAll("th[data-key]")) {
    const direction = sortDir > 0 ? "ascending" : "descending";
    th.setAttribute("aria-sort", th.dataset.key === sortKey ? direction : "none");
  }
  pickAll.checked = list.length > 0 && list.every((r) => picked.has(r.id));
  if (picked.size) updateCompare();
  writeQuery({ q: filter.value.trim(), sort: sortKey === "started_at" ? null : sortKey, dir: sortDir > 0 ? "asc" : null });
  loadHealth(list);
}

function updateCompare() {
  // In the order shown (then any the filter hides): the first is the reference of the compare
  // page's differences, so sorting by loss puts the best run first.
  const ids = [...new Set([...shown(), ...runs].filter((r) => picked.has(r.id)).map((r) => r.id))];
  let href = null;
  let text = "Compare";
  if (ids.length === 1) {
    href = `${ROOT}/compare?runs=${ids[0]}`;
    text = "Compare its epochs";
    selectedNote.textContent = "1 run selected: compare two of its epochs, or tick another run.";
  } else if (ids.length > 1) {
    href = `${ROOT}/compare?runs=${ids.slice(0, 8).join(",")}`;
    text = `Compare ${Math.min(ids.length, 8)} runs`;
    selectedNote.textContent = ids.length > 8 ? "At most 8 runs are compared: the first 8 ticked." : `${ids.length} runs selected.`;
  } else {
    selectedNote.textContent = "Tick runs to compare them.";
  }
  compareLink.textContent = text;
  if (href) {
    compareLink.href = href;
    compareLink.removeAttribute("aria-disabled");
  } else {
    compareLink.removeAttribute("href");
    compareLink.setAttribute("aria-disabled", "true");
  }
  for (const tr of tbody.querySelectorAll("tr[data-id]")) tr.classList.toggle("picked", picked.has(tr.dataset.id));
}

/** Fetch health badges for the rows shown that have none yet, a batch at a time. */
let healthRequest = Promise.resolve();
function loadHealth(list) {
  const missing = list.map((r) => r.id).filter((id) => !health.has(id));
  if (!missing.length) return;
  healthRequest = healthRequest.then(async () => {
    for (let i = 0; i < missing.length; i += HEALTH_BATCH) {
      const ids = missing.slice(i, i + HEALTH_BATCH).filter((id) => !health.has(id));
      if (!ids.length) continue;
      try {
        const body = await getJSON("/runs/health", { ids: ids.join(",") });
        for (const id of ids) health.set(id, body.runs[id] ?? null);
      } catch {
        for (const id of ids) health.set(id, null); // a dash, not an endless "…"
      }
      for (const id of ids) {
        const cell = tbody.querySelector(`tr[data-id="${id}"] td.health-cell`);
        const run = runs.find((r) => r.id === id);
        if (cell && run) cell.replaceChildren(healthBadge(run));
      }
    }
  });
}

function onSort(event) {
  const th = event.target.closest("th[data-key]");
  if (!th) return;
  if (th.dataset.key === sortKey) sortDir = -sortDir;
  else {
    sortKey = th.dataset.key;
    sortDir = 1;
  }
  render();
}

function onRowClick(event) {
  // The name is a real link (keyboard, middle-click) and the box a real checkbox; a click
  // elsewhere on the row opens the run.
  if (event.target.closest("a, input, label, td.pick")) return;
  const tr = event.target.closest("tr.clickable");
  if (tr && !window.getSelection().toString()) window.location.href = tr.dataset.href;
}

function onPick(event) {
  const box = event.target.closest("input.pick-run");
  if (!box) return;
  if (box.checked) picked.add(box.value);
  else picked.delete(box.value);
  pickAll.checked = shown().every((r) => picked.has(r.id));
  updateCompare();
}

function onPickAll() {
  for (const run of shown()) {
    if (pickAll.checked) picked.add(run.id);
    else picked.delete(run.id);
  }
  for (const box of tbody.querySelectorAll("input.pick-run")) box.checked = picked.has(box.value);
  updateCompare();
}

async function main() {
  try {
    runs = (await getJSON("/runs", { limit: 1000 })).runs;
  } catch (err) {
    showMessage(status, `Could not load the runs: ${err.message}`, "error");
    return;
  }
  if (!runs.length) {
    showMessage(status, "");
    document.getElementById("empty").hidden = false;
    document.getElementById("toolbar").hidden = true;
    return;
  }
  const q = readQuery();
  filter.value = q.get("q") || "";
  configKeys = pickConfigKeys();
  addConfigHeaders();
  const wanted = q.get("sort");
  if (wanted && table.querySelector(`th[data-key="${CSS.escape(wanted)}"]`)) {
    sortKey = wanted;
    sortDir = q.get("dir") === "asc" ? 1 : -1;
  }
  showMessage(status, "");
  table.hidden = false;
  render();
  updateCompare();
  markFirstPlot(); // this page's first content is the table
  document.getElementById("app").dataset.ready = "true";
  filter.addEventListener("input", render);
  thead.addEventListener("click", onSort);
  tbody.addEventListener("click", onRowClick);
  tbody.addEventListener("change", onPick);
  pickAll.addEventListener("change", onPickAll);
}

main();
