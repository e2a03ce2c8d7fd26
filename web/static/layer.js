// Layer explorer: activations, activation gradients, weights and weight gradients of one layer at
// one snapshot step, as pictures and histograms, with a step slider. State lives in the URL
// (?step=&sample=&param=) so a view can be shared.

import {
  COLORS,
  FONT,
  PLOT_CONFIG,
  el,
  epochOf,
  epochShapes,
  flagChip,
  fmtShape,
  getJSON,
  layerUrl,
  showMessage,
} from "./common.js";
import { drawHistogram } from "./histogram.js";
import { drawTensor, rangeText } from "./images.js";

const app = document.getElementById("app");
const runId = app.dataset.runId;
const layerName = app.dataset.layer;
const QUANTITIES = ["activation", "activation_grad", "weight", "weight_grad"];
const HAS_PARAM = new Set(["weight", "weight_grad"]);
const LABEL = {
  activation: "activation",
  activation_grad: "activation gradient",
  weight: "weight",
  weight_grad: "weight gradient",
};

const ui = {
  slider: document.getElementById("step"),
  prev: document.getElementById("prev-step"),
  next: document.getElementById("next-step"),
  label: document.getElementById("step-label"),
  sample: document.getElementById("sample"),
  param: document.getElementById("param"),
  paramCtl: document.getElementById("param-ctl"),
  pageMessage: document.getElementById("page-message"),
};

const state = { step: null, sample: 0, param: null };
let steps = []; // the slider's stops: activation snapshot steps
let epochs = [];
let layer = null; // this layer's entry of /layers
const snapshotSteps = {}; // quantity -> Set of steps with a snapshot (for the current param)
const tensors = new Map(); // "quantity|param|step" -> Promise of /tensor JSON

const panels = Object.fromEntries(
  QUANTITIES.map((q) => {
    const root = document.getElementById(`panel-${q}`);
    const part = (role) => root.querySelector(`[data-role="${role}"]`);
    return [
      q,
      {
        root,
        meta: part("meta"),
        message: part("message"),
        snapshot: part("snapshot"),
        image: part("image"),
        hist: part("hist"),
        histMessage: part("hist-message"),
        trend: part("trend"),
        series: part("series"),
        token: 0,
      },
    ];
  }),
);

function hasParams() {
  return Object.keys(layer?.params || {}).length > 0;
}

function paramOf(quantity) {
  return HAS_PARAM.has(quantity) ? state.param : null;
}

// --- URL state -------------------------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(window.location.search);
  const int = (name) => (/^\d+$/.test(q.get(name) || "") ? Number(q.get(name)) : null);
  return { step: int("step"), sample: int("sample"), param: q.get("param") };
}

function writeUrl() {
  const q = new URLSearchParams();
  if (state.step !== null) q.set("step", state.step);
  if (state.sample) q.set("sample", state.sample);
  if (state.param && state.param !== defaultParam()) q.set("param", state.param);
  const qs = q.toString();
  history.replaceState(null, "", `${window.location.pathname}${qs ? `?${qs}` : ""}`);
  // The neighbour layers open at the same step and sample, to walk the network at one moment.
  q.delete("param");
  for (const link of document.querySelectorAll(".layer-nav a[data-layer]")) {
    link.search = q.toString();
  }
}

function defaultParam() {
  const names = Object.keys(layer?.params || {});
  return names.includes("weight") ? "weight" : names[0] || null;
}

// --- data ------------------------------------------------------------------------------------

function tensor(quantity, step) {
  const param = paramOf(quantity);
  const key = `${quantity}|${param}|${step}`;
  if (!tensors.has(key)) {
    const query = { layer: layerName, quantity, step, param, format: "json" };
    const request = getJSON(`/runs/${runId}/tensor`, query);
    request.catch(() => tensors.delete(key)); // do not cache failures
    tensors.set(key, request);
  }
  return tensors.get(key);
}

async function loadSnapshotSteps(quantities) {
  await Promise.all(
    quantities.map(async (q) => {
      if (HAS_PARAM.has(q) && !hasParams()) {
        snapshotSteps[q] = new Set();
        return;
      }
      try {
        const query = { layer: layerName, quantity: q, param: paramOf(q) };
        const body = await getJSON(`/runs/${runId}/snapshots`, query);
        snapshotSteps[q] = new Set(body.steps);
      } catch (err) {
        snapshotSteps[q] = new Set();
        snapshotSteps[q].error = err.message;
      }
    }),
  );
}

// --- drawing ---------------------------------------------------------------------------------

/** Show or hide a panel's snapshot (image + histogram) and its trend over time. */
function setVisible(panel, snapshot, trend = snapshot) {
  panel.snapshot.hidden = !snapshot;
  panel.trend.hidden = !trend;
}

function noParams(panel) {
  panel.token += 1;
  panel.meta.textContent = "";
  showMessage(
    panel.message,
    `This layer has no parameters (a ${layer.type} only transforms its input), ` +
      "so there are no weights or weight gradients to show.",
    "empty",
  );
  panel.root.classList.add("no-params");
  setVisible(panel, false);
}

async function drawPanel(quantity) {
  const panel = panels[quantity];
  if (HAS_PARAM.has(quantity) && !hasParams()) return noParams(panel);
  const step = state.step;
  const token = ++panel.token;
  const available = snapshotSteps[quantity];
  if (available.error) {
    showMessage(panel.message, `Could not list the snapshots: ${available.error}`, "error");
    setVisible(panel, false);
    return;
  }
  if (step === null || !available.has(step)) {
    const listed = [...available].slice(0, 12).join(", ") + (available.size > 12 ? ", …" : "");
    const when = available.size ? ` (this one was recorded at steps ${listed})` : "";
    const text = `No snapshot of the ${LABEL[quantity]} at step ${step ?? "—"} yet${when}.`;
    showMessage(panel.message, text, "empty");
    panel.meta.textContent = "";
    setVisible(panel, false, true); // the trend over time is still worth seeing
    return;
  }
  showMessage(panel.message, `Loading step ${step}…`, "loading");
  panel.root.setAttribute("aria-busy", "true");
  panel.image.classList.add("stale");
  try {
    await drawSnapshot(panel, quantity, step, token);
  } catch (err) {
    // A failed request, or a tensor Plotly could not draw: say so instead of leaving a blank plot.
    if (token !== panel.token) return;
    showMessage(panel.message, `Could not show the snapshot: ${err.message}`, "error");
    setVisible(panel, false, true);
  } finally {
    if (token === panel.token) {
      panel.root.removeAttribute("aria-busy");
      panel.image.classList.remove("stale");
    }
  }
}

/** Fetch and draw one quantity's snapshot image and histogram at `step`. */
async function drawSnapshot(panel, quantity, step, token) {
  const param = paramOf(quantity);
  // Fetched alongside the tensor; settled into {hist} or {error} so a failure is never unhandled.
  const query = { layer: layerName, quantity, step, param };
  const histRequest = getJSON(`/runs/${runId}/histogram`, query).then(
    (hist) => ({ hist }),
    (error) => ({ error }),
  );
  const data = await tensor(quantity, step);
  if (token !== panel.token) return;
  if (quantity === "activation") fillSamples(data.shape[0]);
  setVisible(panel, true);
  const caption = await drawTensor(panel.image, data, quantity, state.sample);
  const sliced = data.full_shape && fmtShape(data.full_shape) !== fmtShape(data.shape);
  const noSignal = data.min === 0 && data.max === 0 && quantity.endsWith("_grad");
  panel.meta.replaceChildren(
    el("strong", {}, `step ${step}`),
    ` · ${param ? `${param} ` : ""}shape ${fmtShape(data.shape)}`,
    sliced ? ` (first ${data.shape[0]} of ${data.full_shape[0]} recorded)` : "",
    ` · ${rangeText(data)}`,
    noSignal
      ? el("strong", { class: "warn-text" }, ": no learning signal reaches this layer at this step")
      : "",
    el("br"),
    el("span", { class: "muted" }, caption),
  );
  const { hist, error } = await histRequest;
  if (token !== panel.token) return;
  showMessage(panel.message, "");
  panel.hist.hidden = Boolean(error);
  if (error) {
    // Histograms and snapshots may be recorded at different steps; the server lists which.
    showMessage(panel.histMessage, `No histogram at step ${step}: ${error.message}`, "empty");
    return;
  }
  showMessage(panel.histMessage, "");
  await drawHistogram(panel.hist, hist);
}

function redrawAll() {
  return Promise.all(QUANTITIES.map(drawPanel));
}

/** Redraw only the per-sample panels from cached data (changing the sample fetches nothing). */
async function redrawSample() {
  for (const q of ["activation", "activation_grad"]) {
    const panel = panels[q];
    if (state.step === null || !snapshotSteps[q]?.has(state.step)) continue;
    try {
      const data = await tensor(q, state.step);
      const caption = await drawTensor(panel.image, data, q, state.sample);
      const note = panel.meta.querySelector(".muted");
      if (note) note.textContent = caption;
    } catch {
      // drawPanel already showed the error for this step.
    }
  }
}

const SERIES_STATS = {
  activation: ["mean", "std"],
  activation_grad: ["norm"],
  weight: ["norm"],
  weight_grad: ["norm"],
};

function stepLine() {
  return {
    type: "line",
    xref: "x",
    yref: "paper",
    x0: state.step,
    x1: state.step,
    y0: 0,
    y1: 1,
    line: { color: COLORS.orange, width: 2, dash: "dash" },
  };
}

async function drawSeries(quantity) {
  const panel = panels[quantity];
  if (HAS_PARAM.has(quantity) && !hasParams()) return;
  const stats = SERIES_STATS[quantity];
  const param = paramOf(quantity);
  let body;
  try {
    const query = { layer: layerName, quantity, stat: stats.join(","), param };
    body = await getJSON(`/runs/${runId}/series`, query);
  } catch (err) {
    Plotly.purge(panel.series);
    panel.series.className = "plot series-plot message error";
    panel.series.textContent = `Could not load the trend: ${err.message}`;
    return;
  }
  const colors = [COLORS.blue, COLORS.vermillion];
  const traces = stats.map((stat, i) => ({
    type: "scatter",
    mode: "lines",
    x: body.steps,
    y: body.stats[stat],
    name: stat,
    line: { color: colors[i], width: 1.6 },
    hovertemplate: `${stat} %{y:.4g}<extra>step %{x}</extra>`,
  }));
  const layout = {
    font: FONT,
    height: 150,
    margin: { l: 48, r: 8, t: stats.length > 1 ? 22 : 6, b: 32 },
    xaxis: { title: { text: "step", standoff: 4 }, zeroline: false },
    yaxis: { zeroline: false, exponentformat: "e" },
    showlegend: stats.length > 1,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1, yanchor: "bottom" },
    shapes: [...epochShapes(epochs), ...(state.step !== null ? [stepLine()] : [])],
  };
  if (!panel.series.data) panel.series.replaceChildren(); // an earlier error message, not a plot
  panel.series.className = "plot series-plot";
  await Plotly.react(panel.series, traces, layout, PLOT_CONFIG);
}

function moveSeriesMarkers() {
  for (const panel of Object.values(panels)) {
    if (!panel.series.data) continue; // not drawn (yet)
    const shapes = (panel.series.layout.shapes || []).filter((s) => s.line?.dash !== "dash");
    Plotly.relayout(panel.series, { shapes: [...shapes, stepLine()] });
  }
}

// --- controls --------------------------------------------------------------------------------

function fillSamples(batch) {
  if (ui.sample.options.length === batch) return;
  const options = Array.from({ length: batch }, (_, i) => el("option", { value: i }, `#${i}`));
  ui.sample.replaceChildren(...options);
  if (state.sample >= batch) state.sample = 0;
  ui.sample.value = state.sample;
  ui.sample.disabled = batch < 2;
  writeUrl();
}

function showStepLabel(index) {
  const step = steps[index];
  const epoch = epochOf(step, epochs);
  const inEpoch = epoch !== null ? ` · epoch ${epoch}` : "";
  ui.label.textContent = `step ${step}${inEpoch} (${index + 1} of ${steps.length} snapshots)`;
  ui.prev.disabled = index <= 0;
  ui.next.disabled = index >= steps.length - 1;
}

let pending = null;

function goTo(index, delay = 0) {
  if (!steps.length) return;
  const i = Math.max(0, Math.min(steps.length - 1, index));
  ui.slider.value = i;
  showStepLabel(i);
  clearTimeout(pending);
  // While the slider is dragged, wait for it to rest instead of fetching every step it passes.
  pending = setTimeout(() => {
    if (state.step === steps[i]) return;
    state.step = steps[i];
    writeUrl();
    moveSeriesMarkers();
    redrawAll();
  }, delay);
}

function currentIndex() {
  return Number(ui.slider.value);
}

function onKey(event) {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.target.closest("input, select, textarea")) return; // the slider handles its own arrows
  if (event.key === "ArrowLeft") goTo(currentIndex() - 1);
  else if (event.key === "ArrowRight") goTo(currentIndex() + 1);
  else return;
  event.preventDefault();
}

function wireControls() {
  ui.slider.addEventListener("input", () => goTo(currentIndex(), 150));
  ui.prev.addEventListener("click", () => goTo(currentIndex() - 1));
  ui.next.addEventListener("click", () => goTo(currentIndex() + 1));
  document.addEventListener("keydown", onKey);
  ui.sample.addEventListener("change", () => {
    state.sample = Number(ui.sample.value);
    writeUrl();
    redrawSample();
  });
  ui.param.addEventListener("change", async () => {
    state.param = ui.param.value;
    writeUrl();
    await loadSnapshotSteps(["weight", "weight_grad"]);
    drawPanel("weight");
    drawPanel("weight_grad");
    drawSeries("weight");
    drawSeries("weight_grad");
  });
}

// --- header ----------------------------------------------------------------------------------

function showHeader(all) {
  const kind = layer.kind && layer.kind !== layer.type.toLowerCase() ? `, ${layer.kind}` : "";
  document.getElementById("layer-type").textContent = `(${layer.type}${kind})`;
  const params = Object.entries(layer.params || {}).map(([p, s]) => `${p} ${fmtShape(s)}`);
  const index = all.findIndex((l) => l.name === layerName);
  document.getElementById("layer-info").textContent =
    `Layer ${index + 1} of ${all.length} · output ${fmtShape(layer.shapes?.output)}` +
    (params.length ? ` · parameters: ${params.join(", ")}` : " · no parameters");
  document.getElementById("layer-flags").replaceChildren(...layer.flags.map(flagChip));
  const link = (id, other, text) => {
    if (!other) return;
    const a = document.getElementById(id);
    a.href = layerUrl(runId, other.name);
    a.dataset.layer = other.name;
    a.textContent = text(other.name);
    a.hidden = false;
  };
  link("prev-layer", all[index - 1], (n) => `← ${n}`);
  link("next-layer", all[index + 1], (n) => `${n} →`);
}

function fillParams() {
  const names = Object.keys(layer.params || {});
  if (!names.length) {
    ui.paramCtl.hidden = true;
    return;
  }
  ui.param.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  ui.param.value = state.param;
  ui.param.disabled = names.length < 2;
}

function pageError(text) {
  showMessage(ui.pageMessage, text, "error");
  for (const panel of Object.values(panels)) {
    showMessage(panel.message, "Nothing to show (see the message above).", "error");
    setVisible(panel, false);
  }
}

async function main() {
  let run;
  let all;
  try {
    [run, all] = await Promise.all([getJSON(`/runs/${runId}`), getJSON(`/runs/${runId}/layers`)]);
  } catch (err) {
    pageError(`Could not load the run: ${err.message}`);
    return;
  }
  epochs = run.epochs || [];
  all = all.layers;
  layer = all.find((l) => l.name === layerName);
  if (!layer) {
    pageError(`This run has no layer named ${layerName}.`);
    return;
  }
  showHeader(all);
  const wanted = readUrl();
  const names = Object.keys(layer.params || {});
  state.param = names.includes(wanted.param) ? wanted.param : defaultParam();
  state.sample = wanted.sample ?? 0;
  fillParams();

  await loadSnapshotSteps(QUANTITIES);
  steps = [...snapshotSteps.activation].sort((a, b) => a - b);
  if (!steps.length) {
    // No activation snapshots (e.g. activations not recorded): step through whatever exists.
    const union = new Set(QUANTITIES.flatMap((q) => [...snapshotSteps[q]]));
    steps = [...union].sort((a, b) => a - b);
  }
  wireControls();
  if (!steps.length) {
    ui.label.textContent = "no snapshots";
    showMessage(
      ui.pageMessage,
      "No snapshots of this layer were recorded yet. They are taken every snapshot_every " +
        "steps (see run.watch); the trends below come from the per-step statistics.",
      "empty",
    );
    ui.prev.disabled = true;
    ui.next.disabled = true;
  } else {
    let index = steps.length - 1;
    if (wanted.step !== null) {
      // The nearest snapshot at or before the asked step, so old links keep working.
      const before = steps.filter((s) => s <= wanted.step);
      index = before.length ? before.length - 1 : 0;
      if (steps[index] !== wanted.step) {
        const text = `There is no snapshot at step ${wanted.step}; showing step ${steps[index]}.`;
        showMessage(ui.pageMessage, text, "empty");
      }
    }
    ui.slider.max = steps.length - 1;
    ui.slider.disabled = steps.length < 2;
    ui.slider.value = index;
    state.step = steps[index];
    showStepLabel(index);
    writeUrl();
  }
  await Promise.all([redrawAll(), ...QUANTITIES.map(drawSeries)]);
  app.dataset.ready = "true"; // for tests and curious users: the first full draw is done
}

main();
