// Snapshots drawn as pictures: a tensor becomes one Plotly heatmap (a mosaic of small tiles for
// conv feature maps and filters, a plain matrix for dense layers) or a bar chart for vectors.

import { FONT, PLOT_CONFIG, fmt, react } from "./common.js";

// ColorBrewer RdBu, blue for negative and red for positive, white at 0: readable with red-green
// colour blindness, unlike red-green scales.
export const DIVERGING = [
  [0, "#053061"],
  [0.1, "#2166ac"],
  [0.2, "#4393c3"],
  [0.3, "#92c5de"],
  [0.4, "#d1e5f0"],
  [0.5, "#f7f7f7"],
  [0.6, "#fddbc7"],
  [0.7, "#f4a582"],
  [0.8, "#d6604d"],
  [0.9, "#b2182b"],
  [1, "#67001f"],
];
export const NEGATIVE = "#2166ac";
export const POSITIVE = "#b2182b";
const GAP = "#c8c8c8"; // between tiles: visibly not a value on either colour scale
const MAX_TILES = 256;

/** Gradients and weights are signed around 0; activations are drawn as intensities. */
export function isSigned(quantity) {
  return quantity !== "activation";
}

const product = (dims) => dims.reduce((a, b) => a * b, 1);

/**
 * Lay `count` tiles of h x w out in `cols` columns with a one-cell gap (null) between them.
 * `value(i, y, x)` gives a tile's value, `label(i, y, x)` its hover text.
 */
function tileGrid(count, h, w, cols, value, label) {
  const rows = Math.ceil(count / cols);
  const height = rows * (h + 1) - 1;
  const width = cols * (w + 1) - 1;
  const z = Array.from({ length: height }, () => new Array(width).fill(null));
  const text = Array.from({ length: height }, () => new Array(width).fill(""));
  for (let i = 0; i < count; i++) {
    const top = Math.floor(i / cols) * (h + 1);
    const left = (i % cols) * (w + 1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        z[top + y][left + x] = value(i, y, x);
        text[top + y][left + x] = label(i, y, x);
      }
    }
  }
  return { z, text, tiles: true };
}

function matrix(rows, cols, data, offset, label) {
  const z = [];
  const text = [];
  for (let r = 0; r < rows; r++) {
    z.push(data.slice(offset + r * cols, offset + (r + 1) * cols));
    text.push(Array.from({ length: cols }, (_, c) => label(r, c)));
  }
  return { z, text, tiles: false };
}

/**
 * What to draw for one snapshot: {kind: "heatmap"|"bars", z, text, caption, ...}.
 * Activations are (batch, ...): one sample for images and sequences, all samples for vectors.
 */
export function layout(tensor, quantity, sample) {
  const shape = tensor.shape;
  const data = tensor.data;
  const perSample = quantity === "activation" || quantity === "activation_grad";
  if (shape.length === 0) return { kind: "bars", y: data, caption: "a single number" };
  if (shape.length === 1) {
    const what = perSample ? "one value per sample" : "one value per output (e.g. a bias)";
    return { kind: "bars", y: data, caption: `${shape[0]} values, ${what}` };
  }
  if (perSample) {
    const batch = shape[0];
    const s = Math.min(sample, batch - 1);
    if (shape.length === 2) {
      const [b, f] = shape;
      return {
        kind: "heatmap",
        ...matrix(b, f, data, 0, (r, c) => `sample ${r}, unit ${c}`),
        xTitle: "unit",
        yTitle: "sample",
        highlightRow: s,
        caption: `${b} samples (rows) × ${f} units (columns); the outlined row is sample ${s}`,
      };
    }
    const channels = shape[1];
    const rest = product(shape.slice(2));
    const base = s * channels * rest;
    if (shape.length === 4) {
      const [, , h, w] = shape;
      const count = Math.min(channels, MAX_TILES);
      const cols = Math.ceil(Math.sqrt(count));
      const more = channels > count ? ` (first ${count} shown)` : "";
      return {
        kind: "heatmap",
        ...tileGrid(
          count,
          h,
          w,
          cols,
          (i, y, x) => data[base + i * h * w + y * w + x],
          (i, y, x) => `channel ${i}, row ${y}, col ${x}`,
        ),
        caption: `sample ${s}: ${channels} channels${more}, each ${h}×${w}, in reading order`,
      };
    }
    // (B, C, L) or (B, T, F): which axis is which depends on the layer, so name them by position.
    const flat = shape.length > 3 ? ` (dims ${shape.slice(2).join("×")} flattened)` : "";
    return {
      kind: "heatmap",
      ...matrix(channels, rest, data, base, (r, c) => `[${r}, ${c}]`),
      xTitle: `dim 2${flat ? "+" : ""}`,
      yTitle: "dim 1",
      caption: `sample ${s}: ${channels} (rows, dim 1) × ${rest} (columns${flat || ", dim 2"})`,
    };
  }
  const out = shape[0];
  const inner = product(shape.slice(1));
  if (shape.length === 4) {
    const [, inCh, kh, kw] = shape;
    if (inCh === 1) {
      // First layer on grey images: one filter per tile, in a square grid.
      const count = Math.min(out, MAX_TILES);
      return {
        kind: "heatmap",
        ...tileGrid(
          count,
          kh,
          kw,
          Math.ceil(Math.sqrt(count)),
          (i, y, x) => data[i * kh * kw + y * kw + x],
          (i, y, x) => `filter ${i}, row ${y}, col ${x}`,
        ),
        caption: `${out} filters, each ${kh}×${kw}, on 1 input channel`,
      };
    }
    const rows = Math.min(out, 64);
    const cols = Math.min(inCh, 64);
    const more = rows < out || cols < inCh ? ` (first ${rows}×${cols} shown)` : "";
    return {
      kind: "heatmap",
      ...tileGrid(
        rows * cols,
        kh,
        kw,
        cols,
        (i, y, x) => {
          const o = Math.floor(i / cols);
          const c = i % cols;
          return data[((o * inCh + c) * kh + y) * kw + x];
        },
        (i, y, x) => `filter ${Math.floor(i / cols)}, input ${i % cols}, row ${y}, col ${x}`,
      ),
      caption: `${out} filters (rows) × ${inCh} input channels (columns), each ${kh}×${kw}${more}`,
    };
  }
  const columns = shape.length === 2 ? `${inner} inputs` : `${shape.slice(1).join("×")} flattened`;
  return {
    kind: "heatmap",
    ...matrix(out, inner, data, 0, (r, c) => `output ${r}, input ${c}`),
    xTitle: shape.length === 2 ? "input" : "input (flattened)",
    yTitle: "output",
    caption: `${out} outputs (rows) × ${columns} (columns)`,
  };
}

/** The symmetric colour range of a signed tensor, so that white is exactly 0. */
function signedRange(tensor) {
  const m = Math.max(Math.abs(tensor.min ?? 0), Math.abs(tensor.max ?? 0));
  return m > 0 ? m : 1;
}

/**
 * Draw `tensor` into `div` (a Plotly graph div); returns the caption. Options: `signed` (draw on
 * the diverging scale whatever the quantity, e.g. a difference) and `range` ([lo, hi]: one colour
 * range shared by images drawn side by side, so equal colours mean equal values).
 */
export async function drawTensor(div, tensor, quantity, sample, options = {}) {
  const spec = layout(tensor, quantity, sample);
  const signed = options.signed ?? isSigned(quantity);
  const width = div.clientWidth || 320;
  const base = {
    font: FONT,
    paper_bgcolor: "#fff",
    plot_bgcolor: GAP,
    margin: { l: 8, r: 8, t: 6, b: 8 },
  };
  if (spec.kind === "bars") {
    const colors = spec.y.map((v) => (v < 0 ? NEGATIVE : POSITIVE));
    const yRange = options.range ? { range: [Math.min(0, options.range[0]), Math.max(0, options.range[1])] } : {};
    const trace = {
      type: "bar",
      y: spec.y,
      marker: { color: signed ? colors : "#0072B2" },
      hovertemplate: "index %{x}: %{y:.4g}<extra></extra>",
    };
    const lay = {
      ...base,
      plot_bgcolor: "#fff",
      height: 170,
      margin: { l: 48, r: 8, t: 6, b: 32 },
      xaxis: { title: { text: "index" } },
      yaxis: { zeroline: true, zerolinecolor: "#555", ...yRange },
      bargap: 0.1,
    };
    await react(div, [trace], lay, PLOT_CONFIG);
    return spec.caption;
  }
  const rows = spec.z.length;
  const cols = spec.z[0]?.length || 1;
  const trace = {
    type: "heatmap",
    z: spec.z,
    text: spec.text,
    hovertemplate: "%{text}: %{z:.4g}<extra></extra>",
    hoverongaps: false,
    colorscale: signed ? DIVERGING : "Viridis",
    colorbar: { thickness: 10, len: 0.9, outlinewidth: 0, tickfont: { size: 10 }, exponentformat: "e" },
    xgap: 0,
    ygap: 0,
  };
  if (signed) {
    const m = options.range ? Math.max(Math.abs(options.range[0]), Math.abs(options.range[1])) || 1 : signedRange(tensor);
    Object.assign(trace, { zmin: -m, zmax: m, zmid: 0 });
  } else if (options.range) {
    Object.assign(trace, { zmin: options.range[0], zmax: options.range[1] });
  }
  const axis = { showgrid: false, zeroline: false, showticklabels: false, ticks: "" };
  const lay = { ...base, xaxis: { ...axis }, yaxis: { ...axis, autorange: "reversed" } };
  if (spec.tiles) {
    // Square pixels, like a picture; the plot is as tall as the mosaic needs, within limits.
    const plotW = width - 70;
    lay.height = Math.max(140, Math.min(460, Math.round((plotW * rows) / cols) + 16));
    lay.yaxis.scaleanchor = "x";
    lay.yaxis.constrain = "domain";
    lay.xaxis.constrain = "domain";
  } else {
    lay.height = Math.max(150, Math.min(340, rows * 14 + 50));
    lay.margin = { l: 44, r: 8, t: 6, b: 36 };
    lay.xaxis = { ...axis, showticklabels: true, ticks: "outside", title: { text: spec.xTitle } };
    lay.yaxis = {
      ...lay.yaxis,
      showticklabels: true,
      ticks: "outside",
      title: { text: spec.yTitle },
    };
    if (spec.highlightRow !== undefined) {
      lay.shapes = [
        {
          type: "rect",
          xref: "paper",
          yref: "y",
          x0: 0,
          x1: 1,
          y0: spec.highlightRow - 0.5,
          y1: spec.highlightRow + 0.5,
          line: { color: "#E69F00", width: 2 },
        },
      ];
    }
  }
  await react(div, [trace], lay, PLOT_CONFIG);
  return spec.caption;
}

/** "min -0.34 · max 0.33", or what it means when every value is 0. */
export function rangeText(tensor) {
  if (tensor.min === null && tensor.max === null) return "no finite values (all NaN/Inf)";
  if (tensor.min === 0 && tensor.max === 0) return "every value is exactly 0";
  return `min ${fmt(tensor.min)} · max ${fmt(tensor.max)}`;
}
