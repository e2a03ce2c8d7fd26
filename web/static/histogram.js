// Histograms on the shared binade bins ([2^k, 2^(k+1)), mirrored for negatives, one bin for 0),
// drawn as bars on an ordinal axis labelled by order of magnitude.

import { FONT, PLOT_CONFIG, fmt } from "./common.js";
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
 * Bars to draw: non-empty bins, the zero bin, and single "⋯" gaps for runs of 3+ empty bins
 * between them (a float32 spans 2^-126..2^127, most of which no tensor uses).
 */
export function bars(hist) {
  const { edges, counts } = hist;
  const total = counts.reduce((a, b) => a + b, 0);
  const bin = (i) => {
    const d = describe(edges[i], edges[i + 1]);
    const pct = total ? ` (${((100 * counts[i]) / total).toPrecision(2)}%)` : "";
    const hover = `${d.range}: ${counts[i]} values${pct}`;
    return { tick: d.tick, count: counts[i], color: d.color, hover };
  };
  const out = [];
  let empty = [];
  const flush = () => {
    if (empty.length >= 3) {
      const a = empty[0];
      const b = empty[empty.length - 1];
      const first = describe(edges[a], edges[a + 1]);
      const last = describe(edges[b], edges[b + 1]);
      const hover = `no values from ${first.range} to ${last.range}`;
      out.push({ tick: "⋯", count: 0, color: ZERO, hover });
    } else {
      for (const i of empty) out.push(bin(i));
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
    out.push(bin(i));
  });
  flush();
  return { bars: out, total };
}

/** Draw the histogram `hist` (from /histogram) into `div`. */
export async function drawHistogram(div, hist) {
  const { bars: shown, total } = bars(hist);
  const x = shown.map((_, i) => i);
  // Label at most ~8 ticks so they stay readable in a narrow panel; hover has every bin.
  const every = Math.max(1, Math.ceil(shown.length / 8));
  const labelled = (i) => (i % every === 0 && shown[i].tick !== "⋯") || shown[i].tick === "0";
  const tickvals = x.filter(labelled);
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
      tickmode: "array",
      tickvals,
      ticktext: tickvals.map((i) => shown[i].tick),
      tickangle: 0,
      tickfont: { size: 10 },
      title: {
        text: `value (order of magnitude); ${total.toLocaleString()} values`,
        font: { size: 11 },
      },
      fixedrange: true,
      // At least 9 slots wide, so one or two bars do not fill the whole panel.
      range: [
        Math.min(-0.5, (shown.length - 10) / 2),
        Math.max(shown.length - 0.5, (shown.length + 8) / 2),
      ],
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
  await Plotly.react(div, [trace], layout, PLOT_CONFIG);
}
