// Gradient flow of one run: every layer's weight-gradient norm (or |g|/|w|) by depth, as a
// heatmap layers x steps or as one line per epoch against depth.

import { FONT, PLOT_CONFIG, SEQUENTIAL, fmt, powerTicks, react, viridis } from "./common.js";

const MAX_EPOCH_LINES = 10;

function log10Matrix(rows) {
  return rows.map((r) => r.map((v) => (v === null || v <= 0 ? null : Math.log10(v))));
}

/** Exact zeros (a gradient that vanished completely) one decade below the smallest value, on
 * the darkest colour, so they read as "nothing" rather than as a gap in the recording. */
function withZeros(rows, z, lo) {
  const floor = Math.floor(lo) - 1;
  let found = false;
  const out = z.map((row, i) =>
    row.map((v, j) => {
      if (rows[i][j] === 0) {
        found = true;
        return floor;
      }
      return v;
    }),
  );
  return { z: out, floor: found ? floor : null };
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
  const logs = log10Matrix(q.steps);
  const [lo, hi] = range(logs);
  const { z, floor } = withZeros(q.steps, logs, lo);
  const names = flow.layers.map((l) => l.name);
  const span = (j) => (flow.bucket > 1 ? `steps ${flow.steps[j]}–${flow.steps[j] + flow.bucket - 1}` : `step ${flow.steps[j]}`);
  const value = (v) => (v === 0 ? "0 (no gradient at all)" : v === null ? "not recorded" : fmt(v));
  const text = q.steps.map((row, i) => row.map((v, j) => `${names[i]} · ${span(j)}<br>${q.short} = ${value(v)}`));
  const ticks = powerTicks(lo, hi);
  if (floor !== null) {
    ticks.tickvals = [floor, ...ticks.tickvals];
    ticks.ticktext = ["0", ...ticks.ticktext];
  }
  const trace = {
    type: "heatmap",
    x: flow.steps,
    y: names,
    z,
    text,
    hovertemplate: "%{text}<extra></extra>",
    hoverongaps: false,
    colorscale: SEQUENTIAL,
    zmin: floor ?? lo,
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
  await react(div, [trace], layout, PLOT_CONFIG);
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
  // A log axis cannot show 0, the value of a gradient that vanished completely: such points sit
  // on a floor below every other value, drawn as ▼.
  const positive = pick.flatMap((e) => q.epochs.map((row) => row[e]).filter((v) => v !== null && v > 0));
  const floor = positive.length ? Math.min(...positive) / 4 : 1e-12;
  const traces = pick.map((e, k) => {
    const values = q.epochs.map((row) => row[e]);
    const label = `epoch ${flow.epochs[e].epoch}`;
    return {
      type: "scatter",
      mode: "lines+markers",
      x: names,
      y: values.map((v) => (v === 0 ? floor : v)),
      customdata: values.map((v) => (v === 0 ? "0 (no gradient at all)" : fmt(v))),
      name: label,
      line: { color: colors[k], width: 1.8 },
      marker: {
        size: values.map((v) => (v === 0 ? 9 : names.length > 30 ? 3 : 5)),
        symbol: values.map((v) => (v === 0 ? "triangle-down" : "circle")),
      },
      hovertemplate: `${label} · %{x}: %{customdata}<extra></extra>`,
    };
  });
  const zeros = traces.some((t) => t.customdata.some((c) => c.startsWith("0 ")));
  const layout = {
    font: FONT,
    height: 360,
    margin: { l: 60, r: 10, t: 10, b: 90 },
    xaxis: { title: { text: "layer (input side → output side)" }, tickangle: -40, automargin: true },
    yaxis: { type: "log", title: { text: q.short }, exponentformat: "e" },
    legend: { orientation: "v" },
  };
  await react(div, traces, layout, PLOT_CONFIG);
  return (
    `${q.label}, mean over each epoch's steps` +
    (pick.length < flow.epochs.length ? ` (${pick.length} of ${flow.epochs.length} epochs shown)` : "") +
    (zeros ? "; ▼ at the bottom: exactly 0, no gradient reached the layer" : "")
  );
}
