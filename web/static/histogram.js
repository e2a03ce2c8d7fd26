// Histograms on the shared binade bins ([2^k, 2^(k+1)), mirrored for negatives, one bin for 0),
// drawn as bars on an ordinal axis labelled by order of magnitude.

import { FONT, PLOT_CONFIG, fmt, react } from "./common.js";
import { NEGATIVE, POSITIVE } from "./images.js";

const ZERO = "#777777";
const NONFINITE = "#000000";

function power(exponent) {
  return `2<sup>${exponent}</sup>`;
}

/** One display bin: its tick label, hover text and bar colour. */
function describe(lo, hi) {
  if (lo === null) return { tick: "−inf/nan", range: "−inf or NaN", color: NONFINITE };
  if (hi === null) return { tick: "+inf/nan", range: "+inf or NaN", color: NONFINITE };
  if (lo < 0 && hi > 0) return { tick: "0", range: "exactly 0 (or tinier than 2^-126)", color: ZERO };
  if (lo >= 0) {
    const k = Math.round(Math.log2(lo));
    const range = `[2^${k}, 2^${k + 1}) = [${fmt(lo)}, ${fmt(hi)})`;
    return { tick: power(k), range, color: POSITIVE };
  }
  const k = Math.round(Math.log2(-hi));
  const range = `(−2^${k + 1}, −2^${k}] = (${fmt(lo)}, ${fmt(hi)}]`;
  return { tick: `−${power(k)}`, range, color: NEGATIVE };
}

/**
 * The display bins worth a slot on the x axis, given `counts` (one histogram, or the sum of
 * several): non-empty bins, the zero bin, and one "⋯" slot for each run of 3+ empty bins
 * between them (a float32 spans 2^-126..2^127, most of which no tensor uses).
 * Returns [{i, tick, range, color}] with i = null for a gap.
 */
export function shownBins(edges, counts) {
  const out = [];
  let empty = [];
  const flush = () => {
    if (empty.length >= 3) {
      const first = describe(edges[empty[0]], edges[empty[0] + 1]);
      const b = empty[empty.length - 1];
      const last = describe(edges[b], edges[b + 1]);
      out.push({ i: null, tick: "⋯", range: `no values from ${first.range} to ${last.range}`, color: ZERO });
    } else {
      for (const i of empty) out.push({ i, ...describe(edges[i], edges[i + 1]) });
    }
    empty = [];
  };
  counts.forEach((c, i) => {
    const isZero = edges[i] !== null && edges[i + 1] !== null && edges[i] < 0 && edges[i + 1] > 0;
    if (c === 0 && !isZero) {
      empty.push(i);
      return;
    }
    flush();
    out.push({ i, ...describe(edges[i], edges[i + 1]) });
  });
  flush();
  return out;
}

/** Bars to draw for one histogram: shownBins with counts and hover text. */
export function bars(hist) {
  const { edges, counts } = hist;
  const total = counts.reduce((a, b) => a + b, 0);
  const out = shownBins(edges, counts).map((b) => {
    if (b.i === null) return { tick: b.tick, count: 0, color: b.color, hover: b.range };
    const pct = total ? ` (${((100 * counts[b.i]) / total).toPrecision(2)}%)` : "";
    return { tick: b.tick, count: counts[b.i], color: b.color, hover: `${b.range}: ${counts[b.i]} values${pct}` };
  });
  return { bars: out, total };
}

/** An ordinal x axis over `shown` slots, labelling at most ~`labels` ticks (and always 0). */
export function binAxis(shown, labels = 8) {
  const x = shown.map((_, i) => i);
  const every = Math.max(1, Math.ceil(shown.length / labels));
  const labelled = (i) => (i % every === 0 && shown[i].tick !== "⋯") || shown[i].tick === "0";
  const tickvals = x.filter(labelled);
  return {
    tickmode: "array",
    tickvals,
    ticktext: tickvals.map((i) => shown[i].tick),
    tickangle: 0,
    tickfont: { size: 10 },
    // At least 9 slots wide, so one or two bars do not fill the whole panel.
    range: [Math.min(-0.5, (shown.length - 10) / 2), Math.max(shown.length - 0.5, (shown.length + 8) / 2)],
  };
}

/** Draw the histogram `hist` (from /histogram) into `div`. */
export async function drawHistogram(div, hist) {
  const { bars: shown, total } = bars(hist);
  const x = shown.map((_, i) => i);
  const trace = {
    type: "bar",
    x,
    y: shown.map((b) => b.count || null),
    marker: { color: shown.map((b) => b.color) },
    customdata: shown.map((b) => b.hover),
    hovertemplate: "%{customdata}<extra></extra>",
  };
  const layout = {
    font: FONT,
    height: 190,
    margin: { l: 48, r: 8, t: 6, b: 44 },
    bargap: 0.08,
    xaxis: {
      ...binAxis(shown),
      title: { text: `order of magnitude · ${total.toLocaleString()} values`, font: { size: 11 } },
      fixedrange: true,
    },
    // A log axis from just under 1, so a bin holding a single value still shows as a bar.
    yaxis: {
      type: "log",
      range: [Math.log10(0.6), Math.log10(Math.max(10, ...shown.map((b) => b.count)) * 1.6)],
      title: { text: "count" },
      fixedrange: true,
      dtick: 1,
      exponentformat: "power",
    },
  };
  await react(div, [trace], layout, PLOT_CONFIG);
}

/** Several runs' histograms on the shared bins (from /compare/histograms), as grouped bars of
 * each one's share of values; `labels` and `colors` per entry. */
export async function drawOverlay(div, body, labels, colors) {
  const sum = body.edges.slice(1).map((_, i) => body.entries.reduce((a, e) => a + e.counts[i], 0));
  const shown = shownBins(body.edges, sum);
  const x = shown.map((_, i) => i);
  const traces = body.entries.map((e, k) => ({
    type: "bar",
    name: labels[k],
    x,
    y: shown.map((b) => (b.i === null ? null : 100 * e.share[b.i])),
    marker: { color: colors[k] },
    customdata: shown.map((b) =>
      b.i === null ? b.range : `${b.range}: ${e.counts[b.i].toLocaleString()} values (${(100 * e.share[b.i]).toPrecision(3)}%)`,
    ),
    hovertemplate: `${labels[k]}<br>%{customdata}<extra></extra>`,
  }));
  const layout = {
    font: FONT,
    height: 260,
    barmode: "group",
    bargap: 0.15,
    bargroupgap: 0.05,
    margin: { l: 52, r: 8, t: 8, b: 46 },
    xaxis: { ...binAxis(shown, 10), title: { text: "value (order of magnitude)", font: { size: 11 } }, fixedrange: true },
    yaxis: { title: { text: "share of values (%)" }, rangemode: "tozero", fixedrange: true },
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" },
  };
  await react(div, traces, layout, PLOT_CONFIG);
}

/** The difference of each run's share per bin from the first run's (body.difference). */
export async function drawDifference(div, body, labels, colors) {
  const sum = body.edges.slice(1).map((_, i) => body.entries.reduce((a, e) => a + e.counts[i], 0));
  const shown = shownBins(body.edges, sum);
  const x = shown.map((_, i) => i);
  const traces = body.difference.map((d, k) => ({
    type: "bar",
    name: `${labels[k + 1]} − ${labels[0]}`,
    x,
    y: shown.map((b) => (b.i === null ? null : 100 * d[b.i])),
    marker: { color: colors[k + 1] },
    customdata: shown.map((b) => b.range),
    hovertemplate: `${labels[k + 1]} − ${labels[0]}: %{y:+.3g} points<br>%{customdata}<extra></extra>`,
  }));
  const layout = {
    font: FONT,
    height: 260,
    barmode: "group",
    margin: { l: 52, r: 8, t: 8, b: 46 },
    xaxis: { ...binAxis(shown, 10), title: { text: "value (order of magnitude)", font: { size: 11 } }, fixedrange: true },
    yaxis: { title: { text: "difference in share (points)" }, zeroline: true, zerolinecolor: "#444", fixedrange: true },
    showlegend: true,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" },
  };
  await react(div, traces, layout, PLOT_CONFIG);
}

/**
 * Histograms over time (from /histograms): a heatmap with one column per step (or bucket of
 * steps) and one row per shared bin that holds any value (runs of empty bins between them fold
 * into one "⋯" row, as in the bar charts), coloured by the share of values on a log scale.
 * `step` (or null) is marked with a dashed line.
 */
export async function drawHistogramOverTime(div, body, step) {
  const totals = body.counts.map((c) => c.reduce((a, b) => a + b, 0));
  const sum = body.edges.slice(1).map((_, r) => body.counts.reduce((a, c) => a + c[r], 0));
  const shown = shownBins(body.edges, sum);
  const share = (c, j, r) => (c[r] > 0 && totals[j] ? c[r] / totals[j] : 0);
  const z = shown.map((b) => body.counts.map((c, j) => (b.i === null || !share(c, j, b.i) ? null : Math.log10(share(c, j, b.i)))));
  const text = shown.map((b) =>
    body.counts.map((c, j) => {
      if (b.i === null) return `step ${body.steps[j]} · ${b.range}`;
      const pct = (100 * share(c, j, b.i)).toPrecision(2);
      return `step ${body.steps[j]} · ${b.range}<br>${fmt(c[b.i])} values (${pct}%)`;
    }),
  );
  // ~12 labelled rows, always including 0.
  const every = Math.max(1, Math.ceil(shown.length / 12));
  const tickvals = shown.map((_, i) => i).filter((i) => (i % every === 0 && shown[i].tick !== "⋯") || shown[i].tick === "0");
  const trace = {
    type: "heatmap",
    x: body.steps,
    y: shown.map((_, i) => i),
    z,
    text,
    hovertemplate: "%{text}<extra></extra>",
    hoverongaps: false,
    colorscale: "Viridis",
    zmin: -4,
    zmax: 0,
    xgap: body.steps.length < 60 ? 1 : 0,
    colorbar: {
      title: { text: "share", side: "right" },
      thickness: 10,
      tickvals: [-4, -3, -2, -1, 0],
      ticktext: ["0.01%", "0.1%", "1%", "10%", "100%"],
    },
  };
  const by = body.downsampled ? ` (mean of buckets; ${body.total.toLocaleString()} histograms)` : "";
  const layout = {
    font: FONT,
    height: Math.max(240, Math.min(460, shown.length * 12 + 90)),
    margin: { l: 64, r: 8, t: 8, b: 40 },
    plot_bgcolor: "#f3f3f3",
    xaxis: { title: { text: `step${by}` }, zeroline: false },
    yaxis: {
      tickmode: "array",
      tickvals,
      ticktext: tickvals.map((i) => shown[i].tick),
      title: { text: "value" },
      zeroline: false,
      fixedrange: true,
    },
    shapes:
      step === null
        ? []
        : [{ type: "line", xref: "x", yref: "paper", x0: step, x1: step, y0: 0, y1: 1, line: { color: "#E69F00", width: 2, dash: "dash" } }],
  };
  await react(div, [trace], layout, PLOT_CONFIG);
}
