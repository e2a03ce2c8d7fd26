// Compare: several runs, or several epochs of one run, side by side. The layers that differ most,
// one layer's statistic over time, its histograms overlaid and subtracted, and its snapshots with
// their difference image, all at one aligned moment. Every choice lives in the URL
// (?runs=&epochs=&align=&layer=&quantity=&stat=&param=&probe=&rank=&step=&epoch=&offset=&sample=&log=).

import {
  FONT,
  LINE_COLORS,
  PLOT_CONFIG,
  bandTraces,
  codeName,
  el,
  fmt,
  getJSON,
  layerUrl,
  markFirstPlot,
  purge,
  react,
  readQuery,
  relayout,
  runUrl,
  showMessage,
  writeQuery,
} from "./common.js";
import { drawDifference, drawOverlay } from "./histogram.js";
import { drawTensor, rangeText } from "./images.js";

const app = document.getElementById("app");
const runIds = app.dataset.runs.split(",").filter(Boolean);
const $ = (id) => document.getElementById(id);

const QUANTITIES = ["activation", "activation_grad", "weight", "weight_grad"];
const HAS_PARAM = new Set(["weight", "weight_grad"]);
const PER_SAMPLE = new Set(["activation", "activation_grad"]);
const LABEL = {
  activation: "activations",
  activation_grad: "activation gradients",
  weight: "weights",
  weight_grad: "weight gradients",
};
const DEFAULT_STAT = { activation: "std", activation_grad: "norm", weight: "norm", weight_grad: "norm" };
const STATS = {
  activation: ["std", "mean", "norm", "min", "max", "zero_frac", "dead_frac", "saturated_frac"],
  activation_grad: ["norm", "std", "mean", "min", "max", "zero_frac"],
  weight: ["norm", "std", "mean", "min", "max", "zero_frac"],
  weight_grad: ["norm", "std", "mean", "min", "max", "zero_frac"],
};
const STAT_LABEL = {
  std: "std",
  mean: "mean",
  norm: "L2 norm",
  min: "min",
  max: "max",
  zero_frac: "fraction of zeros",
  dead_frac: "dead units (ReLU)",
  saturated_frac: "saturated (sigmoid/tanh)",
};
// Magnitudes span orders of magnitude between a healthy and a sick run: log axis by default.
const LOG_STATS = new Set(["std", "norm"]);
const TOP_ROWS = 10;

const state = {
  epochs: null, // [n, ...] when comparing epochs of one run, else null
  align: "step",
  layer: null,
  quantity: "activation",
  stat: null, // null: DEFAULT_STAT[quantity]
  param: null, // null: the layer's main parameter
  probe: "auto",
  rank: "activation",
  step: null, // the moment, aligned by step
  epoch: null, // the moment, aligned by epoch
  offset: null, // the moment for epochs of one run: steps into each epoch (null: its end)
  sample: 0,
  log: null, // null: by stat
  all: false,
};

let runs = []; // /runs/<id> of each run
let entries = []; // [{label, color, run, epoch}]
let layerInfo = new Map(); // the first run's layers by name, with their parameters
let rows = []; // /compare/layers rows
let xLabel = "step"; // what /compare/layers measured "apart from" in
let moments = []; // the slider's stops: steps (by step) or offsets (epochs of one run)
let tensorsBody = null; // the last /compare/tensors answer, redrawn when the sample changes

// --- URL state -------------------------------------------------------------------------------

function readState() {
  const q = readQuery();
  const int = (name) => (/^\d+$/.test(q.get(name) || "") ? Number(q.get(name)) : null);
  const list = (q.get("epochs") || "").split(",").filter((s) => /^\d+$/.test(s)).map(Number);
  state.epochs = list.length ? [...new Set(list)] : null;
  state.align = q.get("align") === "epoch" ? "epoch" : "step";
  state.layer = q.get("layer");
  if (QUANTITIES.includes(q.get("quantity"))) state.quantity = q.get("quantity");
  state.stat = q.get("stat");
  state.param = q.get("param");
  if (["0", "1"].includes(q.get("probe"))) state.probe = q.get("probe");
  if ([...QUANTITIES, "all"].includes(q.get("rank"))) state.rank = q.get("rank");
  state.step = int("step");
  state.epoch = int("epoch");
  state.offset = int("offset");
  state.sample = int("sample") ?? 0;
  if (["0", "1"].includes(q.get("log"))) state.log = q.get("log") === "1";
}

function stat() {
  return state.stat && STATS[state.quantity].includes(state.stat) ? state.stat : DEFAULT_STAT[state.quantity];
}

function logAxis() {
  return state.log ?? LOG_STATS.has(stat());
}

function writeState() {
  writeQuery({
    runs: runIds.join(","),
    epochs: state.epochs ? state.epochs.join(",") : null,
    align: !state.epochs && state.align === "epoch" ? "epoch" : null,
    layer: state.layer,
    quantity: state.quantity,
    stat: stat() === DEFAULT_STAT[state.quantity] ? null : stat(),
    param: HAS_PARAM.has(state.quantity) && state.param !== mainParam() ? state.param : null,
    probe: state.probe === "auto" ? null : state.probe,
    rank: state.rank === "activation" ? null : state.rank,
    step: !state.epochs && state.align === "step" ? state.step : null,
    epoch: !state.epochs && state.align === "epoch" ? state.epoch : null,
    offset: state.epochs ? state.offset : null,
    sample: state.sample || null,
    log: state.log === null ? null : state.log ? "1" : "0",
  });
}

/** The selection every /compare route takes. */
function selection(extra = {}) {
  return {
    runs: runIds.join(","),
    epochs: state.epochs ? state.epochs.join(",") : null,
    align: state.epochs ? null : state.align,
    ...extra,
  };
}

function tensorQuery(extra = {}) {
  return selection({
    layer: state.layer,
    quantity: state.quantity,
    param: HAS_PARAM.has(state.quantity) ? state.param : null,
    ...extra,
  });
}

/** probe=1 for stats and histograms only when asked for: probe stats exist at snapshot steps. */
function statsProbe() {
  return state.probe === "1" ? 1 : null;
}

// --- layers and parameters -------------------------------------------------------------------

function mainParam() {
  const names = Object.keys(layerInfo.get(state.layer)?.params || {});
  return names.includes("weight") ? "weight" : names[0] || null;
}

function hasParams() {
  return Object.keys(layerInfo.get(state.layer)?.params || {}).length > 0;
}

function fillParams() {
  const names = Object.keys(layerInfo.get(state.layer)?.params || {});
  if (!names.includes(state.param)) state.param = mainParam();
  $("param").replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  $("param").value = state.param ?? "";
  $("param-ctl").hidden = !HAS_PARAM.has(state.quantity) || names.length === 0;
  $("param").disabled = names.length < 2;
}

function fillStats() {
  const s = stat();
  $("stat").replaceChildren(...STATS[state.quantity].map((k) => el("option", { value: k }, STAT_LABEL[k])));
  $("stat").value = s;
  $("log-y").checked = logAxis();
}

// --- header ----------------------------------------------------------------------------------

function showLegend() {
  const items = entries.map((e) =>
    el(
      "span",
      { class: "legend-item" },
      el("span", { class: "swatch", style: `background:${e.color}`, "aria-hidden": "true" }),
      el("a", { href: runUrl(e.run) }, e.label),
    ),
  );
  $("legend").replaceChildren(...items.flatMap((item, i) => (i ? [el("span", { class: "muted" }, " vs "), item] : [item])));
}

function setEntries(list) {
  entries = list.map((e, i) => ({ ...e, color: LINE_COLORS[i % LINE_COLORS.length] }));
  showLegend();
}

/** Epochs of one run: the epoch picker; returns false when there is nothing to compare yet. */
function setupEpochs(run) {
  const known = (run.epochs || []).map((e) => e.epoch);
  $("epochs-ctl").hidden = false;
  $("align-ctl").hidden = true;
  $("epochs-help").textContent = known.length
    ? `comma-separated, of ${known.length > 12 ? `${known[0]}–${known.at(-1)}` : known.join(", ")}`
    : "";
  if (known.length < 2) {
    const text = known.length
      ? `${run.name} logged one epoch only, so there are no epochs to compare. Tick another run on the runs page to compare runs.`
      : `${run.name} logged no epochs (run.log(..., epoch=n)), so there are no epochs to compare. Tick another run on the runs page to compare runs.`;
    pageMessage(text, "empty");
    return false;
  }
  if (!state.epochs || state.epochs.some((n) => !known.includes(n)) || state.epochs.length < 2) {
    if (state.epochs) pageMessage(`Pick two or more of the epochs ${known.join(", ")}.`, "empty");
    state.epochs = [known[0], known.at(-1)];
  }
  $("epochs").value = state.epochs.join(", ");
  setEntries(state.epochs.map((n) => ({ run: run.id, epoch: n, label: `${run.name} · epoch ${n}` })));
  document.title = `Compare epochs of ${run.name} · tracker`;
  return true;
}

function pageMessage(text, kind = "") {
  showMessage($("page-message"), text, kind);
}

// --- the layers that differ most -------------------------------------------------------------

async function loadDiffer() {
  const status = $("differ-status");
  showMessage(status, "Ranking layers…", "loading");
  $("differ").setAttribute("aria-busy", "true");
  let body;
  try {
    const quantity = state.rank === "all" ? null : state.rank;
    body = await getJSON("/compare/layers", selection({ quantity, probe: statsProbe() }));
  } catch (err) {
    showMessage(status, `Could not rank the layers: ${err.message}`, "error");
    $("differ").hidden = true;
    return;
  } finally {
    $("differ").removeAttribute("aria-busy");
  }
  rows = body.layers;
  xLabel = body.x_label;
  $("differ-help").textContent = body.help;
  if (!rows.length) {
    showMessage(status, "No layer has this quantity recorded in every run at common steps, so nothing can be ranked.", "empty");
    $("differ").hidden = true;
    $("differ-more").hidden = true;
    return;
  }
  showMessage(status, "");
  drawDiffer();
}

function drawDiffer() {
  const head = $("differ").querySelector("thead tr");
  head.replaceChildren(
    el("th", { class: "num" }, "#"),
    el("th", {}, "Layer"),
    el("th", {}, "Quantity"),
    el("th", { class: "num", title: "Mean distance between the runs in orders of magnitude (log10)" }, "Score"),
    el("th", { class: "num", title: `The first ${xLabel} where they were 10× apart or more` }, `Apart from (${xLabel})`),
    ...entries.map((e) => el("th", { class: "num" }, el("span", { class: "swatch", style: `background:${e.color}` }), ` ${e.label}: last`)),
    ...(state.epochs ? [el("th", {}, "run's flags")] : entries.map((e) => el("th", {}, `flags: ${e.label}`))),
  );
  const top = Math.max(...rows.map((r) => r.score), 1e-9);
  const shown = state.all ? rows : rows.slice(0, TOP_ROWS);
  const body = shown.map((r, i) => {
    const selected = r.layer === state.layer && r.quantity === state.quantity;
    const label = `${r.layer} · ${LABEL[r.quantity]}${r.param && r.param !== "weight" ? ` (${r.param})` : ""}`;
    return el(
      "tr",
      { class: selected ? "selected" : "", dataset: { layer: r.layer, quantity: r.quantity, param: r.param || "" } },
      el("td", { class: "num" }, i + 1),
      el(
        "td",
        { class: "layer-name" },
        el("button", { type: "button", class: "link", "aria-label": `Show ${label} below`, "aria-pressed": selected ? "true" : "false" }, r.layer),
        " ",
        el("a", { href: layerUrl(runIds[0], r.layer), class: "small", title: `Open ${r.layer} in the layer explorer` }, "↗"),
      ),
      el("td", {}, `${LABEL[r.quantity]} (${r.stat})`),
      el(
        "td",
        { class: "num score" },
        el("span", { class: "bar", style: `width:${Math.round((60 * r.score) / top)}px`, "aria-hidden": "true" }),
        fmt(r.score),
      ),
      el("td", { class: "num" }, r.first_apart ?? "—"),
      ...r.last.map((v) => el("td", { class: "num" }, fmt(v))),
      ...(state.epochs ? r.flags.slice(0, 1) : r.flags).map((codes) =>
        el("td", { class: "flags" }, codes.length ? codes.map((c) => el("span", { class: "badge flag" }, codeName(c))) : el("span", { class: "muted" }, "—")),
      ),
    );
  });
  $("differ").querySelector("tbody").replaceChildren(...body);
  $("differ").hidden = false;
  $("differ-more").hidden = rows.length <= TOP_ROWS;
  $("differ-more").textContent = state.all ? `Show the top ${TOP_ROWS}` : `Show every layer (${rows.length})`;
}

function onDifferClick(event) {
  const button = event.target.closest("button.link");
  if (!button) return;
  const tr = button.closest("tr");
  chooseLayer(tr.dataset.layer, tr.dataset.quantity, tr.dataset.param || null);
  $("curves-card").scrollIntoView({ behavior: "smooth", block: "start" });
}

// --- curves over time ------------------------------------------------------------------------

let curveToken = 0;

async function drawCurves() {
  const token = ++curveToken;
  const status = $("curves-status");
  const div = $("curves");
  const s = stat();
  $("curves-title").textContent = `${state.layer} · ${LABEL[state.quantity]}${HAS_PARAM.has(state.quantity) && state.param ? ` (${state.param})` : ""} · ${STAT_LABEL[s]}`;
  if (HAS_PARAM.has(state.quantity) && !hasParams()) {
    purge(div);
    showMessage(status, `${state.layer} has no parameters, so it has no ${LABEL[state.quantity]}. Pick activations or another layer.`, "empty");
    return;
  }
  showMessage(status, div.data ? "" : "Loading…", div.data ? "" : "loading");
  div.classList.add("stale");
  let body;
  try {
    body = await getJSON("/compare", tensorQuery({ stat: s, points: 1000, probe: statsProbe() }));
  } catch (err) {
    if (token !== curveToken) return;
    purge(div);
    div.classList.remove("stale");
    showMessage(status, `Could not load the curves: ${err.message}`, "error");
    return;
  }
  if (token !== curveToken) return;
  div.classList.remove("stale");
  const missing = body.entries.filter((e) => e.error);
  const log = logAxis();
  const traces = body.entries.flatMap((e, i) => {
    if (e.error || !e.x.length) return [];
    const y = (v) => (log ? v.map((x) => (x !== null && x > 0 ? x : null)) : v);
    return bandTraces({
      x: e.x,
      mean: y(e.mean),
      min: y(e.min),
      max: y(e.max),
      name: entries[i].label,
      color: entries[i].color,
      hover: `${entries[i].label}: %{y:.4g}<extra>${body.x_label} %{x}</extra>`,
    });
  });
  if (!traces.length) {
    purge(div);
    showMessage(status, `No ${STAT_LABEL[s]} of ${state.layer}'s ${LABEL[state.quantity]} was recorded in ${entries.length > 2 ? "these runs" : "either run"}.`, "empty");
    return;
  }
  const zeros = log && body.entries.some((e) => !e.error && e.mean.some((v) => v === 0));
  if (zeros) traces.push(...zeroMarkers(body, traces));
  const notes = [];
  if (missing.length) notes.push(`not recorded in ${missing.map((e) => e.label).join(", ")}`);
  if (zeros) notes.push("▼ at the bottom marks exact zeros, which a log axis cannot show");
  showMessage(status, notes.length ? `Note: ${notes.join("; ")}.` : "", notes.length ? "empty" : "");
  const down = body.entries.find((e) => e.total > e.x.length);
  const layout = {
    font: FONT,
    height: 300,
    margin: { l: 60, r: 10, t: 10, b: 44 },
    xaxis: { title: { text: down ? `${body.x_label} (mean and min–max of buckets)` : body.x_label }, zeroline: false },
    yaxis: { type: log ? "log" : "linear", title: { text: STAT_LABEL[s] }, exponentformat: "e", zeroline: false },
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" },
    hovermode: "x",
    shapes: momentLine(),
  };
  await react(div, traces, layout, PLOT_CONFIG);
  markFirstPlot();
}

/** Exact zeros (a dead layer's std, a vanished gradient) as ▼ along the bottom of a log axis. */
function zeroMarkers(body, traces) {
  const positive = traces.flatMap((t) => t.y.filter((v) => v !== null && v > 0));
  const floor = positive.length ? Math.min(...positive) / 3 : 1e-12;
  return body.entries.flatMap((e, i) => {
    if (e.error) return [];
    const x = e.x.filter((_, j) => e.mean[j] === 0);
    if (!x.length) return [];
    return [
      {
        type: "scatter",
        mode: "markers",
        x,
        y: x.map(() => floor),
        name: `${entries[i].label} = 0`,
        legendgroup: entries[i].label,
        showlegend: false,
        marker: { symbol: "triangle-down", size: 7, color: entries[i].color },
        hovertemplate: `${entries[i].label}: exactly 0<extra>${body.x_label} %{x}</extra>`,
      },
    ];
  });
}

/** The dashed line at the moment shown below (on the curves' x axis). */
function momentLine() {
  let x = null;
  if (state.epochs) x = state.offset;
  else if (state.align === "epoch" && state.epoch !== null) x = state.epoch + 1; // its end
  else x = state.step;
  if (x === null || x === undefined) return [];
  return [{ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color: "#E69F00", width: 2, dash: "dash" } }];
}

function moveMomentLine() {
  if ($("curves").data) relayout($("curves"), { shapes: momentLine() });
}

// --- the moment: histograms and snapshots ----------------------------------------------------

/** The moment's query: step=, epoch= or offset=. */
function momentQuery() {
  if (state.epochs) return { offset: state.offset };
  if (state.align === "epoch") return { epoch: state.epoch };
  return { step: state.step };
}

/** The slider's stops: every histogram or snapshot step all runs share (by step), the steps
 * into an epoch (epochs of one run), or the epochs every run logged (by epoch). */
async function setupMoment() {
  const slider = $("step");
  $("step-ctl").hidden = state.align === "epoch" && !state.epochs;
  $("epoch-ctl").hidden = !(state.align === "epoch" && !state.epochs);
  if (state.align === "epoch" && !state.epochs) {
    const sets = runs.map((r) => new Set((r.epochs || []).map((e) => e.epoch)));
    const common = [...sets[0]].filter((n) => sets.every((s) => s.has(n))).sort((a, b) => a - b);
    $("epoch").replaceChildren(...common.map((n) => el("option", { value: n }, `epoch ${n}`)));
    if (!common.includes(state.epoch)) state.epoch = common.at(-1) ?? null;
    $("epoch").value = state.epoch ?? "";
    $("epoch").disabled = common.length < 2;
    showMomentLabel();
    return;
  }
  if (state.epochs) {
    const spans = state.epochs.map((n) => runs[0].epochs.find((e) => e.epoch === n));
    const longest = Math.max(...spans.map((e) => e.last_step - e.first_step + 1));
    moments = [...Array(longest).keys()]; // the last stop is "the end of each epoch"
    if (state.offset !== null && state.offset >= longest - 1) state.offset = null;
  } else {
    let steps = [];
    try {
      const body = await getJSON("/compare/snapshots", tensorQuery());
      steps = state.probe === "1" ? body.probe_common : body.common;
      if (state.probe === "auto" && body.has_probe) steps = body.probe_common;
      const hist = await getJSON("/compare/histograms", tensorQuery({ probe: statsProbe() }));
      steps = [...new Set([...steps, ...hist.steps])].sort((a, b) => a - b);
    } catch {
      // The panels below say what is missing.
    }
    moments = steps;
    if (moments.length && (state.step === null || !moments.includes(state.step))) {
      const before = moments.filter((s) => state.step !== null && s <= state.step);
      state.step = before.length ? before.at(-1) : moments.at(-1);
    }
  }
  slider.max = Math.max(0, moments.length - 1);
  slider.disabled = moments.length < 2;
  slider.value = currentIndex();
  showMomentLabel();
}

function currentIndex() {
  if (state.epochs) return state.offset === null ? moments.length - 1 : state.offset;
  const i = moments.indexOf(state.step);
  return i < 0 ? moments.length - 1 : i;
}

function showMomentLabel() {
  let text;
  if (state.align === "epoch" && !state.epochs) text = state.epoch === null ? "no epoch every run logged" : `the last recorded step of epoch ${state.epoch} in each run`;
  else if (state.epochs) text = state.offset === null ? "the end of each epoch" : `${state.offset} steps into each epoch`;
  else text = moments.length ? `step ${state.step}` : "no step every run recorded";
  $("moment-label").textContent = text;
  const i = Number($("step").value);
  $("prev-step").disabled = i <= 0 || $("step").disabled;
  $("next-step").disabled = i >= moments.length - 1 || $("step").disabled;
}

let pendingMoment = null;

function goToMoment(index, delay = 0) {
  if (!moments.length) return;
  const i = Math.max(0, Math.min(moments.length - 1, index));
  $("step").value = i;
  if (state.epochs) state.offset = i === moments.length - 1 ? null : moments[i];
  else state.step = moments[i];
  showMomentLabel();
  clearTimeout(pendingMoment);
  pendingMoment = setTimeout(() => {
    writeState();
    moveMomentLine();
    drawMoment();
  }, delay);
}

let momentToken = 0;

async function drawMoment() {
  const token = ++momentToken;
  await Promise.all([drawHistograms(token), drawSnapshots(token)]);
}

/** "healthy: step 50 · sick: step 50" (or one step when they all agree). */
function stepsText(list) {
  const steps = list.map((e) => e.step);
  if (steps.every((s) => s === steps[0])) return steps[0] === null ? "nothing recorded" : `step ${steps[0]}`;
  return list.map((e, i) => `${entries[i].label}: ${e.step === null ? "none" : `step ${e.step}`}`).join(" · ");
}

async function drawHistograms(token) {
  const status = $("hist-status");
  const diffStatus = $("diff-status");
  if (HAS_PARAM.has(state.quantity) && !hasParams()) {
    for (const id of ["overlay", "diff"]) purge($(id));
    showMessage(status, `${state.layer} has no parameters.`, "empty");
    showMessage(diffStatus, "");
    $("overlay-meta").textContent = "";
    return;
  }
  showMessage(status, $("overlay").data ? "" : "Loading…", $("overlay").data ? "" : "loading");
  let body;
  try {
    body = await getJSON("/compare/histograms", tensorQuery({ ...momentQuery(), probe: statsProbe() }));
  } catch (err) {
    if (token !== momentToken) return;
    for (const id of ["overlay", "diff"]) purge($(id));
    showMessage(status, `Could not load the histograms: ${err.message}`, "error");
    return;
  }
  if (token !== momentToken) return;
  $("overlay-meta").textContent = `${LABEL[state.quantity]} of ${state.layer} at ${stepsText(body.entries)}`;
  const empty = body.entries.filter((e) => e.step === null);
  if (empty.length === body.entries.length) {
    for (const id of ["overlay", "diff"]) purge($(id));
    showMessage(status, "No histogram of this tensor was recorded at or before this moment (histograms are taken every histogram_every steps).", "empty");
    showMessage(diffStatus, "");
    return;
  }
  showMessage(status, empty.length ? `No histogram at this moment in ${empty.map((e) => e.label).join(", ")}.` : "", empty.length ? "empty" : "");
  const labels = entries.map((e) => e.label);
  const colors = entries.map((e) => e.color);
  await drawOverlay($("overlay"), body, labels, colors);
  await drawDifference($("diff"), body, labels, colors);
  showMessage(diffStatus, "");
  markFirstPlot();
}

function sharedRange(list) {
  const los = list.filter((t) => t && t.min !== null).map((t) => t.min);
  const his = list.filter((t) => t && t.max !== null).map((t) => t.max);
  if (!los.length) return null;
  return [Math.min(...los), Math.max(...his)];
}

async function drawSnapshots(token) {
  const status = $("snapshots-status");
  const grid = $("snapshots");
  if (HAS_PARAM.has(state.quantity) && !hasParams()) {
    grid.replaceChildren();
    showMessage(status, `${state.layer} has no parameters.`, "empty");
    $("snapshots-meta").textContent = "";
    return;
  }
  showMessage(status, grid.children.length ? "" : "Loading…", grid.children.length ? "" : "loading");
  grid.classList.add("stale");
  let body;
  try {
    body = await getJSON("/compare/tensors", tensorQuery({ ...momentQuery(), probe: state.probe }));
  } catch (err) {
    if (token !== momentToken) return;
    grid.classList.remove("stale");
    grid.replaceChildren();
    showMessage(status, `Could not load the snapshots: ${err.message}`, "error");
    return;
  }
  if (token !== momentToken) return;
  grid.classList.remove("stale");
  tensorsBody = body;
  await paintSnapshots();
}

/** Draw tensorsBody: each entry's picture on one colour range, then each difference image. */
async function paintSnapshots() {
  const body = tensorsBody;
  const status = $("snapshots-status");
  const grid = $("snapshots");
  const found = body.entries.filter((e) => e.step !== null);
  const inputs = body.probe ? "probe inputs (the same examples in every run)" : "training batch";
  const perSample = PER_SAMPLE.has(state.quantity);
  $("snapshots-meta").textContent = `${LABEL[state.quantity]} of ${state.layer} at ${stepsText(body.entries)}${perSample ? ` · ${inputs}` : ""}`;
  if (!found.length) {
    grid.replaceChildren();
    showMessage(status, `No snapshot of this tensor was recorded at or before this moment in any ${state.epochs ? "epoch" : "run"} (snapshots are taken every snapshot_every steps).`, "empty");
    return;
  }
  const notes = [];
  const missing = body.entries.filter((e) => e.step === null).map((e) => e.label);
  if (missing.length) notes.push(`no snapshot in ${missing.join(", ")}`);
  if (perSample && !body.probe) notes.push("these are each run's own training batch at that step: the pictures are of the same examples only if the runs shuffled identically");
  showMessage(status, notes.length ? `Note: ${notes.join("; ")}.` : "", notes.length ? "empty" : "");
  const batch = perSample ? Math.min(...found.map((e) => e.shape[0])) : 0;
  fillSamples(batch);
  const range = sharedRange(body.entries);
  const figures = [];
  const draws = [];
  body.entries.forEach((e, i) => {
    const plot = el("div", { class: "plot image-plot" });
    const caption = el("figcaption", {}, el("span", { class: "swatch", style: `background:${entries[i].color}` }), ` ${entries[i].label}`);
    const meta = el("p", { class: "meta small" });
    figures.push(el("figure", { class: "snapshot", dataset: { entry: i } }, caption, meta, plot));
    if (e.step === null) {
      meta.textContent = "no snapshot at this moment";
      return;
    }
    meta.textContent = `step ${e.step} · ${rangeText(e)}`;
    draws.push(() => drawTensor(plot, e, state.quantity, state.sample, { range }));
  });
  body.difference.forEach((d, k) => {
    const i = k + 1;
    const label = `${entries[i].label} − ${entries[0].label}`;
    const plot = el("div", { class: "plot image-plot diff-plot" });
    const meta = el("p", { class: "meta small" });
    figures.push(el("figure", { class: "snapshot difference", dataset: { difference: k } }, el("figcaption", {}, `Difference: ${label}`), meta, plot));
    if (!d) {
      const why = body.entries[i].step === null || body.entries[0].step === null ? "one side has no snapshot" : "the shapes differ";
      meta.textContent = `no difference image: ${why}`;
      return;
    }
    const same = d.min === 0 && d.max === 0;
    meta.textContent = same ? "identical: every value is equal" : `red: ${entries[i].label} larger · blue: smaller · ${rangeText(d)}`;
    draws.push(() => drawTensor(plot, d, state.quantity, state.sample, { signed: true }));
  });
  grid.replaceChildren(...figures);
  grid.style.setProperty("--columns", Math.min(4, figures.length));
  for (const draw of draws) await draw(); // laid out first, so each plot knows its width
}

function fillSamples(batch) {
  const ctl = $("sample-ctl");
  ctl.hidden = batch < 2;
  if (batch < 2) return;
  if ($("sample").options.length !== batch) {
    $("sample").replaceChildren(...Array.from({ length: batch }, (_, i) => el("option", { value: i }, `#${i}`)));
  }
  if (state.sample >= batch) state.sample = 0;
  $("sample").value = state.sample;
}

// --- choosing what to look at ----------------------------------------------------------------

async function chooseLayer(layer, quantity, param) {
  state.layer = layer;
  state.quantity = quantity;
  if (param) state.param = param;
  $("layer").value = layer;
  $("quantity").value = quantity;
  await selectionChanged();
}

/** The layer, quantity or parameter changed: everything below the list follows. */
async function selectionChanged({ keepStat = false } = {}) {
  if (!keepStat) state.stat = null;
  fillParams();
  fillStats();
  for (const tr of $("differ").querySelectorAll("tbody tr")) {
    const on = tr.dataset.layer === state.layer && tr.dataset.quantity === state.quantity;
    tr.classList.toggle("selected", on);
    tr.querySelector("button.link")?.setAttribute("aria-pressed", on ? "true" : "false");
  }
  writeState();
  const curves = drawCurves();
  await setupMoment();
  writeState();
  await Promise.all([curves, drawMoment()]);
}

function wireControls() {
  $("differ").addEventListener("click", onDifferClick);
  $("differ-more").addEventListener("click", () => {
    state.all = !state.all;
    drawDiffer();
  });
  $("rank").addEventListener("change", () => {
    state.rank = $("rank").value;
    writeState();
    loadDiffer();
  });
  $("layer").addEventListener("change", () => {
    state.layer = $("layer").value;
    selectionChanged();
  });
  $("quantity").addEventListener("change", () => {
    state.quantity = $("quantity").value;
    selectionChanged();
  });
  $("stat").addEventListener("change", () => {
    state.stat = $("stat").value;
    state.log = null;
    $("log-y").checked = logAxis();
    writeState();
    drawCurves();
  });
  $("log-y").addEventListener("change", () => {
    state.log = $("log-y").checked;
    writeState();
    drawCurves();
  });
  $("param").addEventListener("change", () => {
    state.param = $("param").value;
    selectionChanged({ keepStat: true });
  });
  $("probe").addEventListener("change", () => {
    state.probe = $("probe").value;
    loadDiffer();
    selectionChanged({ keepStat: true });
  });
  for (const input of document.querySelectorAll('input[name="align"]')) {
    input.addEventListener("change", () => {
      state.align = input.value;
      loadDiffer();
      selectionChanged({ keepStat: true });
    });
  }
  $("epochs-apply").addEventListener("click", applyEpochs);
  $("epochs").addEventListener("keydown", (e) => {
    if (e.key === "Enter") applyEpochs();
  });
  $("step").addEventListener("input", () => goToMoment(Number($("step").value), 150));
  $("prev-step").addEventListener("click", () => goToMoment(Number($("step").value) - 1));
  $("next-step").addEventListener("click", () => goToMoment(Number($("step").value) + 1));
  $("epoch").addEventListener("change", () => {
    state.epoch = Number($("epoch").value);
    showMomentLabel();
    writeState();
    moveMomentLine();
    drawMoment();
  });
  $("sample").addEventListener("change", () => {
    state.sample = Number($("sample").value);
    writeState();
    if (tensorsBody) paintSnapshots();
  });
}

function applyEpochs() {
  const known = runs[0].epochs.map((e) => e.epoch);
  const wanted = [...new Set($("epochs").value.split(/[\s,]+/).filter(Boolean).map(Number))];
  const bad = wanted.filter((n) => !Number.isInteger(n) || !known.includes(n));
  if (wanted.length < 2 || wanted.length > 8 || bad.length) {
    const why = bad.length ? `${run0Name()} has no epoch ${bad[0]}` : "give two to eight epochs";
    pageMessage(`Cannot compare those epochs: ${why}. Its epochs are ${known.join(", ")}.`, "error");
    return;
  }
  pageMessage("");
  state.epochs = wanted;
  state.offset = null;
  setupEpochs(runs[0]);
  loadDiffer();
  selectionChanged({ keepStat: true });
}

function run0Name() {
  return runs[0]?.name ?? runIds[0];
}

// --- start -----------------------------------------------------------------------------------

function failEverywhere(text) {
  pageMessage(text, "error");
  for (const id of ["differ-status", "curves-status", "hist-status", "snapshots-status"]) {
    showMessage($(id), "Nothing to show (see the message above).", "error");
  }
}

async function main() {
  readState();
  wireControls();
  try {
    runs = await Promise.all(runIds.map((id) => getJSON(`/runs/${id}`)));
  } catch (err) {
    failEverywhere(`Could not load the runs: ${err.message}`);
    return;
  }
  if (runs.length === 1) {
    if (!setupEpochs(runs[0])) {
      for (const id of ["differ-status", "curves-status", "hist-status", "snapshots-status"]) showMessage($(id), "");
      for (const id of ["differ-card", "curves-card", "moment", "snapshots-card"]) $(id).hidden = true;
      document.querySelector(".two-col-even").hidden = true;
      document.querySelector(".toolbar.controls").hidden = true;
      return;
    }
  } else {
    state.epochs = null;
    setEntries(runs.map((r) => ({ run: r.id, epoch: null, label: r.name })));
    if (state.align === "epoch" && runs.some((r) => !(r.epochs || []).length)) {
      const none = runs.filter((r) => !(r.epochs || []).length).map((r) => r.name);
      pageMessage(`${none.join(", ")} logged no epochs: aligned by step instead.`, "empty");
      state.align = "step";
    }
    document.querySelector(`input[name="align"][value="${state.align}"]`).checked = true;
  }
  // Layers every run has, in the first run's order.
  const shared = runs[0].layers.filter((name) => runs.every((r) => r.layers.includes(name)));
  if (!shared.length) {
    failEverywhere("These runs have no layer name in common, so there is nothing to line up.");
    return;
  }
  $("layer").replaceChildren(...shared.map((n) => el("option", { value: n }, n)));
  $("rank").value = state.rank;
  $("probe").value = state.probe;
  const [layers] = await Promise.all([
    getJSON(`/runs/${runIds[0]}/layers`, { latest: 0 }).catch(() => ({ layers: [] })),
    loadDiffer(),
  ]);
  layerInfo = new Map(layers.layers.map((l) => [l.name, l]));
  if (!shared.includes(state.layer)) {
    // The layer that differs most, or the first one.
    const top = rows[0];
    state.layer = top ? top.layer : shared[0];
    if (top && !readQuery().has("quantity")) state.quantity = top.quantity;
    if (top?.param) state.param = top.param;
  }
  $("layer").value = state.layer;
  $("quantity").value = state.quantity;
  await selectionChanged({ keepStat: true });
  app.dataset.ready = "true";
}

main();
