// Layer explorer: activations, activation gradients, weights and weight gradients of one layer at
// one snapshot step, as pictures and histograms, with a step slider, and one quantity's histogram
// over time. State lives in the URL (?step=&sample=&param=&probe=&hist=) so a view can be shared.

import {
  COLORS,
  FONT,
  PLOT_CONFIG,
  bandTraces,
  el,
  epochOf,
  epochShapes,
  flagChip,
  fmtShape,
  getJSON,
  layerUrl,
  markFirstPlot,
  purge,
  react,
  relayout,
  showMessage,
  whenVisible,
} from "./common.js";
import { drawHistogram, drawHistogramOverTime } from "./histogram.js";
import { drawTensor, rangeText } from "./images.js";

const app = document.getElementById("app");
const runId = app.dataset.runId;
const layerName = app.dataset.layer;
const QUANTITIES = ["activation", "activation_grad", "weight", "weight_grad"];
const HAS_PARAM = new Set(["weight", "weight_grad"]);
const PER_SAMPLE = new Set(["activation", "activation_grad"]); // the ones a probe pass records
const HIST_POINTS = 300; // columns of the histogram-over-time heatmap
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
  probe: document.getElementById("probe"),
  probeCtl: document.getElementById("probe-ctl"),
  probeHelp: document.getElementById("probe-help"),
  histTime: document.getElementById("hist-time"),
  histTimeStatus: document.getElementById("hist-time-status"),
  histTimeNote: document.getElementById("hist-time-note"),
  pageMessage: document.getElementById("page-message"),
};

const state = { step: null, sample: 0, param: null, probe: false, hist: "activation" };
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

/** probe=1 for the quantities a probe pass records, when the probe inputs are shown. */
function probeOf(quantity) {
  return state.probe && PER_SAMPLE.has(quantity) ? 1 : null;
}

// --- URL state -------------------------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(window.location.search);
  const int = (name) => (/^\d+$/.test(q.get(name) || "") ? Number(q.get(name)) : null);
  return {
    step: int("step"),
    sample: int("sample"),
    param: q.get("param"),
    probe: q.get("probe") === "1",
    hist: QUANTITIES.includes(q.get("hist")) ? q.get("hist") : null,
  };
}

function writeUrl() {
  const q = new URLSearchParams();
  if (state.step !== null) q.set("step", state.step);
  if (state.sample) q.set("sample", state.sample);
  if (state.param && state.param !== defaultParam()) q.set("param", state.param);
  if (state.probe) q.set("probe", "1");
  if (state.hist !== "activation") q.set("hist", state.hist);
  const qs = q.toString();
  history.replaceState(null, "", `${window.location.pathname}${qs ? `?${qs}` : ""}`);
  // The neighbour layers open at the same step, sample and inputs, to walk the network at one
  // moment.
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
  const probe = probeOf(quantity);
  const key = `${quantity}|${param}|${step}|${probe}`;
  if (!tensors.has(key)) {
    const query = { layer: layerName, quantity, step, param, probe, format: "json" };
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
        const query = { layer: layerName, quantity: q, param: paramOf(q), probe: probeOf(q) };
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
  const query = { layer: layerName, quantity, step, param, probe: probeOf(quantity) };
  const histRequest = getJSON(`/runs/${runId}/histogram`, query).then(
    (hist) => ({ hist }),
    (error) => ({ error }),
  );
  const data = await tensor(quantity, step);
  if (token !== panel.token) return;
  if (quantity === "activation") fillSamples(data.shape[0]);
  setVisible(panel, true);
  const caption = await drawTensor(panel.image, data, quantity, state.sample);
  markFirstPlot();
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
  if (probeOf(quantity)) {
    panel.meta.querySelector(".muted").prepend("probe inputs (the same examples at every step) · ");
  }
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

const SERIES_POINTS = 600; // buckets per trend line: about one per pixel of a panel

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
    const query = { layer: layerName, quantity, stat: stats.join(","), param, probe: probeOf(quantity), points: SERIES_POINTS };
    body = await getJSON(`/runs/${runId}/series`, query); // downsampled on the server
  } catch (err) {
    purge(panel.series);
    panel.series.className = "plot series-plot message error";
    panel.series.textContent = `Could not load the trend: ${err.message}`;
    return;
  }
  const colors = [COLORS.blue, COLORS.vermillion];
  // Each stat's bucket means, with a light min–max band where a bucket holds several steps.
  const traces = stats.flatMap((stat, i) =>
    bandTraces({
      x: body.steps,
      mean: body.stats[stat],
      min: body.min[stat],
      max: body.max[stat],
      name: stat,
      color: colors[i],
      hover: `${stat} %{y:.4g}<extra>step %{x}</extra>`,
    }),
  );
  const layout = {
    font: FONT,
    height: 150,
    margin: { l: 48, r: 8, t: stats.length > 1 ? 22 : 6, b: 32 },
    xaxis: {
      title: { text: body.downsampled ? `step (${body.total.toLocaleString()} values, bucketed)` : "step", standoff: 4 },
      zeroline: false,
    },
    yaxis: { zeroline: false, exponentformat: "e" },
    showlegend: stats.length > 1,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1, yanchor: "bottom" },
    shapes: [...epochShapes(epochs), ...(state.step !== null ? [stepLine()] : [])],
  };
  if (!panel.series.data) panel.series.replaceChildren(); // an earlier error message, not a plot
  panel.series.className = "plot series-plot";
  await react(panel.series, traces, layout, PLOT_CONFIG);
  markFirstPlot();
}

function moveSeriesMarkers() {
  const plots = [...Object.values(panels).map((p) => p.series), ui.histTime];
  for (const div of plots) {
    if (!div.data) continue; // not drawn (yet)
    const shapes = (div.layout.shapes || []).filter((s) => s.line?.dash !== "dash");
    relayout(div, { shapes: [...shapes, stepLine()] });
  }
}

// --- histogram over time ---------------------------------------------------------------------

let histToken = 0;

async function drawHistTime() {
  const quantity = state.hist;
  const token = ++histToken;
  const div = ui.histTime;
  const name = LABEL[quantity];
  const clear = (text, kind) => {
    purge(div);
    div.hidden = true;
    showMessage(ui.histTimeStatus, text, kind);
    ui.histTimeNote.textContent = "";
  };
  if (HAS_PARAM.has(quantity) && !hasParams()) {
    clear(`This layer has no parameters, so it has no ${name}s.`, "empty");
    return;
  }
  showMessage(ui.histTimeStatus, div.data ? "" : "Loading…", div.data ? "" : "loading");
  let body;
  try {
    const query = { layer: layerName, quantity, param: paramOf(quantity), probe: probeOf(quantity), points: HIST_POINTS };
    body = await getJSON(`/runs/${runId}/histograms`, query);
  } catch (err) {
    if (token === histToken) clear(`Could not load the histograms: ${err.message}`, "error");
    return;
  }
  if (token !== histToken) return;
  if (!body.steps.length) {
    clear(`No histogram of the ${name} was recorded (they are taken every histogram_every steps; see run.watch).`, "empty");
    return;
  }
  showMessage(ui.histTimeStatus, "");
  div.hidden = false;
  await drawHistogramOverTime(div, body, state.step);
  const inputs = probeOf(quantity) ? " of the probe inputs" : "";
  ui.histTimeNote.textContent =
    `${body.total.toLocaleString()} histograms of the ${name}${paramOf(quantity) ? ` (${paramOf(quantity)})` : ""}${inputs}` +
    (body.downsampled ? `, averaged into ${body.steps.length} columns` : "") +
    ". Click a column to show the snapshot nearest that step above.";
  if (!div.dataset.wired) {
    div.dataset.wired = "true";
    div.on("plotly_click", (ev) => {
      const step = ev.points[0].x;
      let best = 0;
      steps.forEach((s, i) => {
        if (Math.abs(s - step) < Math.abs(steps[best] - step)) best = i;
      });
      goTo(best);
    });
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
    if (HAS_PARAM.has(state.hist) && ui.histTime.data) drawHistTime();
  });
  ui.probe.addEventListener("change", async () => {
    state.probe = ui.probe.value === "1";
    await loadSnapshotSteps([...PER_SAMPLE]);
    setupSteps(state.step);
    writeUrl();
    moveSeriesMarkers();
    await Promise.all([redrawAll(), ...[...PER_SAMPLE].map(drawSeries)]);
    if (PER_SAMPLE.has(state.hist) && ui.histTime.data) drawHistTime();
  });
  for (const input of document.querySelectorAll('input[name="hist-quantity"]')) {
    input.addEventListener("change", () => {
      state.hist = input.value;
      writeUrl();
      drawHistTime();
    });
  }
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

/** This layer's health flags at the run's last step, as chips under the title. */
async function showFlags() {
  try {
    const full = await getJSON(`/runs/${runId}/layers/${encodeURIComponent(layerName)}`);
    document.getElementById("layer-flags").replaceChildren(...full.flags.map(flagChip));
  } catch (err) {
    const note = el("span", { class: "muted small" }, `Could not check this layer's health: ${err.message}`);
    document.getElementById("layer-flags").replaceChildren(note);
  }
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
    // Names, types and parameters only (latest=0): the catalog answers at once, where the
    // latest stats of every layer take a while on big runs. This layer's flags follow.
    [run, all] = await Promise.all([
      getJSON(`/runs/${runId}`),
      getJSON(`/runs/${runId}/layers`, { latest: 0 }),
    ]);
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
  const flags = showFlags();
  const wanted = readUrl();
  const names = Object.keys(layer.params || {});
  state.param = names.includes(wanted.param) ? wanted.param : defaultParam();
  state.sample = wanted.sample ?? 0;
  state.probe = wanted.probe;
  state.hist = wanted.hist ?? "activation";
  fillParams();

  await Promise.all([loadSnapshotSteps(QUANTITIES), findProbe()]);
  if (state.probe && ui.probeCtl.hidden) state.probe = false; // asked for, but none recorded
  ui.probe.value = state.probe ? "1" : "0";
  if (state.probe) await loadSnapshotSteps([...PER_SAMPLE]);
  wireControls();
  setupSteps(wanted.step);
  const hist = document.querySelector(`input[name="hist-quantity"][value="${state.hist}"]`);
  if (hist) hist.checked = true;
  // The histogram over time is drawn once its card scrolls near the screen.
  whenVisible(document.getElementById("hist-time-card"), drawHistTime, "300px");
  await Promise.all([redrawAll(), ...QUANTITIES.map(drawSeries), flags]);
  app.dataset.ready = "true"; // for tests and curious users: the first full draw is done
}

/** Show the inputs picker when this layer has snapshots of probe inputs (run.watch(probe=)). */
async function findProbe() {
  try {
    const query = { layer: layerName, quantity: "activation", probe: 1 };
    const body = await getJSON(`/runs/${runId}/snapshots`, query);
    ui.probeCtl.hidden = !body.steps.length;
    ui.probeHelp.hidden = !body.steps.length;
  } catch {
    ui.probeCtl.hidden = true; // the panels report what is wrong with this layer
  }
}

/** The slider's stops: activation snapshot steps (of the inputs shown), nearest `wanted`. */
function setupSteps(wantedStep) {
  steps = [...snapshotSteps.activation].sort((a, b) => a - b);
  if (!steps.length) {
    // No activation snapshots (e.g. activations not recorded): step through whatever exists.
    const union = new Set(QUANTITIES.flatMap((q) => [...snapshotSteps[q]]));
    steps = [...union].sort((a, b) => a - b);
  }
  showMessage(ui.pageMessage, "");
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
    if (wantedStep !== null) {
      // The nearest snapshot at or before the asked step, so old links keep working.
      const before = steps.filter((s) => s <= wantedStep);
      index = before.length ? before.length - 1 : 0;
      if (steps[index] !== wantedStep) {
        const text = `There is no snapshot at step ${wantedStep}; showing step ${steps[index]}.`;
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
}

main();
