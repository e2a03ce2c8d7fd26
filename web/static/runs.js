// Runs list: one table row per run, filterable and sortable, a click opens the run.

import {
  el,
  fmt,
  fmtDate,
  fmtDuration,
  getJSON,
  runUrl,
  showMessage,
  statusBadge,
} from "./common.js";

const table = document.getElementById("runs");
const tbody = table.querySelector("tbody");
const status = document.getElementById("status");
const filter = document.getElementById("filter");
const count = document.getElementById("count");

let runs = [];
let sortKey = "started_at";
let sortDir = -1; // newest first, as the API returns them

function configSummary(config) {
  const parts = Object.entries(config || {}).map(([k, v]) => {
    const value = typeof v === "object" && v !== null ? JSON.stringify(v) : v;
    return `${k}=${value}`;
  });
  const text = parts.join(", ");
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

function row(run) {
  return el(
    "tr",
    { class: "clickable", dataset: { href: runUrl(run.id) } },
    el("td", {}, el("a", { href: runUrl(run.id) }, run.name)),
    el("td", {}, run.project),
    el("td", {}, statusBadge(run)),
    el("td", {}, fmtDate(run.started_at)),
    el("td", { class: "num" }, fmtDuration(run.duration_s)),
    el("td", { class: "num" }, run.last_step ?? "—"),
    el("td", { class: "num" }, fmt(run.final_loss)),
    el("td", {}, (run.tags || []).map((t) => el("span", { class: "tag" }, t))),
    el("td", { class: "config", title: JSON.stringify(run.config) }, configSummary(run.config)),
  );
}

function matches(run, needle) {
  if (!needle) return true;
  const hay = [run.name, run.project, run.status, ...(run.tags || [])].join(" ").toLowerCase();
  return needle
    .toLowerCase()
    .split(/\s+/)
    .every((word) => hay.includes(word));
}

function compare(a, b) {
  const x = a[sortKey];
  const y = b[sortKey];
  if (x === y) return 0;
  if (x === null || x === undefined) return 1; // missing values last, whatever the direction
  if (y === null || y === undefined) return -1;
  return (x < y ? -1 : 1) * sortDir;
}

function render() {
  const shown = runs.filter((r) => matches(r, filter.value.trim())).sort(compare);
  tbody.replaceChildren(...shown.map(row));
  count.textContent = `${shown.length} of ${runs.length} runs`;
  if (!shown.length) {
    const none = el("td", { colspan: 9, class: "muted" }, "No run matches the filter.");
    tbody.append(el("tr", {}, none));
  }
  for (const th of table.querySelectorAll("th[data-key]")) {
    const key = th.dataset.key;
    const direction = sortDir > 0 ? "ascending" : "descending";
    th.setAttribute("aria-sort", key === sortKey ? direction : "none");
  }
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
  // The name is a real link (keyboard, middle-click); a click elsewhere on the row follows it too.
  if (event.target.closest("a")) return;
  const tr = event.target.closest("tr.clickable");
  if (tr && !window.getSelection().toString()) window.location.href = tr.dataset.href;
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
  showMessage(status, "");
  table.hidden = false;
  render();
  filter.addEventListener("input", render);
  table.querySelector("thead").addEventListener("click", onSort);
  tbody.addEventListener("click", onRowClick);
}

main();
