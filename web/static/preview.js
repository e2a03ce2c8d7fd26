// A static line chart in plain SVG, drawn from the same downsampled data while Plotly (3.5 MB,
// about a second to evaluate on a slow machine) is still loading; the interactive Plotly chart
// replaces it in the same box. Lines, axes with a few ticks, a title and a legend; no interaction.

import { FONT, fmt } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";

function node(tag, attrs = {}, text = null) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== null) n.textContent = text;
  return n;
}

/** About `count` round tick values covering [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * Draw `series` ([{x, y, name, color}], y null for gaps) into `div` as an SVG of `height` px,
 * titled `title`, with `xTitle` under the x axis. Returns the SVG element (class "preview").
 */
export function drawPreview(div, { series, title, xTitle, height }) {
  const width = div.clientWidth || 400;
  const m = { l: 50, r: 10, t: 58, b: 40 }; // the Plotly chart's margins: nothing jumps
  const xs = series.flatMap((s) => s.x.filter((_, i) => s.y[i] !== null));
  const ys = series.flatMap((s) => s.y.filter((v) => v !== null));
  const svg = node("svg", { class: "preview", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.style.fontFamily = FONT.family;
  svg.style.fontSize = `${FONT.size}px`;
  svg.append(node("title", {}, `${title} (loading the interactive chart…)`));
  svg.append(node("text", { x: m.l - 40, y: 22, "font-size": 14, fill: FONT.color }, title));
  if (!xs.length) {
    div.replaceChildren(svg);
    return svg;
  }
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const w = width - m.l - m.r;
  const h = height - m.t - m.b;
  const sx = (x) => m.l + (x1 > x0 ? ((x - x0) / (x1 - x0)) * w : w / 2);
  const sy = (y) => m.t + h - ((y - y0) / (y1 - y0)) * h;
  for (const v of ticks(y0, y1)) {
    svg.append(node("line", { x1: m.l, x2: m.l + w, y1: sy(v), y2: sy(v), stroke: "#eee" }));
    svg.append(node("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end", fill: FONT.color }, fmt(v)));
  }
  for (const v of ticks(x0, x1, 6)) {
    svg.append(node("text", { x: sx(v), y: m.t + h + 16, "text-anchor": "middle", fill: FONT.color }, fmt(v)));
  }
  svg.append(node("text", { x: m.l + w / 2, y: height - 6, "text-anchor": "middle", fill: FONT.color }, xTitle));
  series.forEach((s, k) => {
    let d = "";
    let pen = "M";
    s.y.forEach((v, i) => {
      if (v === null || s.x[i] === null) {
        pen = "M";
        return;
      }
      d += `${pen}${sx(s.x[i]).toFixed(1)},${sy(v).toFixed(1)}`;
      pen = "L";
    });
    svg.append(node("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.8 }));
    const lx = m.l + w - 90 * (series.length - k);
    svg.append(node("line", { x1: lx, x2: lx + 18, y1: 40, y2: 40, stroke: s.color, "stroke-width": 2 }));
    svg.append(node("text", { x: lx + 22, y: 44, fill: FONT.color }, s.name));
  });
  div.replaceChildren(svg);
  return svg;
}
