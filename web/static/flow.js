// Gradient flow of one run: every layer's weight-gradient norm (or |g|/|w|) by depth, as a
// heatmap layers x steps or as one line per epoch against depth.

import { FONT, PLOT_CONFIG, SEQUENTIAL, fmt, powerTicks, viridis } from "./common.js";

const MAX_EPOCH_LINES = 10;

function log10Matrix(rows) {
  return rows.map((r) => r.map((v) => (v === null || v <= 0 ? null : Math.log10(v))));
}

function range(matrix) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of matrix) {
    for (const v of row) {
      if (v === null) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  return Number.isFinite(lo) ? [lo, hi] : [-1, 0];
}

/** What the chosen quantity is called and its matrices (step buckets and epochs). */
export function flowQuantity(flow, which) {
  if (which === "ratio") {
    const lr = flow.lr;
    const scale = (rows) => rows.map((r) => r.map((v) => (v === null ? null : lr ? lr * v : v)));
    return {
      label: lr ? `update/weight ≈ lr·|g|/|w| (lr = ${lr})` : "|g|/|w| (gradient norm / weight norm)",
      short: lr ? "lr·|g|/|w|" : "|g|/|w|",
      steps: scale(flow.ratio),
      epochs: scale(flow.epoch_ratio),
    };
  }
  return { label: "weight-gradient norm |g|", short: "|g|", steps: flow.grad_norm, epochs: flow.epoch_grad_norm };
}

/** Heatmap: one row per layer (first layer on top), one column per bucket of steps. */
export async function drawFlowHeatmap(div, flow, which, onLayer) {
  const q = flowQuantity(flow, which);
  const z = log10Matrix(q.steps);
  const [lo, hi] = range(z);
  const names = flow.layers.map((l) => l.name);
  const text = q.steps.map((row, i) =>
    row.map((v, j) => `${names[i]} · steps ${flow.steps[j]}–${flow.steps[j] + flow.bucket - 1}<br>${q.short} = ${fmt(v)}`),
  );
  const ticks = powerTicks(lo, hi);
  const trace = {
    type: "heatmap",
    x: flow.steps,
    y: names,
    z,
    text,
    hovertemplate: "%{text}<extra></extra>",
    hoverongaps: false,
    colorscale: SEQUENTIAL,
    zmin: lo,
    zmax: hi,
    colorbar: { title: { text: q.short, side: "right" }, thickness: 12, ...ticks },
  };
  const height = Math.max(220, Math.min(900, 60 + names.length * 16));
  const layout = {
    font: FONT,
    height,
    margin: { l: 110, r: 10, t: 10, b: 44 },
    xaxis: { title: { text: flow.bucket > 1 ? `step (buckets of ${flow.bucket})` : "step" } },
    yaxis: { autorange: "reversed", automargin: true, tickfont: { size: names.length > 40 ? 8 : 11 } },
    plot_bgcolor: "#eee",
  };
  await Plotly.react(div, [trace], layout, PLOT_CONFIG);
  if (onLayer) {
    div.removeAllListeners?.("plotly_click");
    div.on("plotly_click", (ev) => onLayer(ev.points[0].y));
  }
  return q.label;
}

/** Epochs to draw: all if few, else evenly spaced ones including the first and the last. */
function chosenEpochs(n) {
  if (n <= MAX_EPOCH_LINES) return [...Array(n).keys()];
  return [...new Set(Array.from({ length: MAX_EPOCH_LINES }, (_, i) => Math.round((i * (n - 1)) / (MAX_EPOCH_LINES - 1))))];
}

/** One line per epoch: mean over the epoch against depth, on a log axis; early dark, late light. */
export async function drawFlowEpochs(div, flow, which) {
  const q = flowQuantity(flow, which);
  const names = flow.layers.map((l) => l.name);
  const pick = chosenEpochs(flow.epochs.length);
  const colors = viridis(pick.length);
  const traces = pick.map((e, k) => ({
    type: "scatter",
    mode: names.length > 30 ? "lines" : "lines+markers",
    x: names,
    y: q.epochs.map((row) => row[e]),
    name: `epoch ${flow.epochs[e].epoch}`,
    line: { color: colors[k], width: 1.8 },
    marker: { size: 5 },
    hovertemplate: `epoch ${flow.epochs[e].epoch} · %{x}: %{y:.3g}<extra></extra>`,
  }));
  const layout = {
    font: FONT,
    height: 360,
    margin: { l: 60, r: 10, t: 10, b: 90 },
    xaxis: { title: { text: "layer (input side → output side)" }, tickangle: -40, automargin: true },
    yaxis: { type: "log", title: { text: q.short }, exponentformat: "e" },
    legend: { orientation: "v" },
  };
  await Plotly.react(div, traces, layout, PLOT_CONFIG);
  return `${q.label}, mean over each epoch's steps` + (pick.length < flow.epochs.length ? ` (${pick.length} of ${flow.epochs.length} epochs shown)` : "");
}
