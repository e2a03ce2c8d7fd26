// Helpers every page uses: API calls, error and loading messages, number formats, DOM building.

export const ROOT = document.body.dataset.root || "";
export const API = `${ROOT}/api/v1`;

// Okabe & Ito's palette: distinguishable with every common kind of colour blindness.
export const COLORS = {
  blue: "#0072B2",
  orange: "#E69F00",
  green: "#009E73",
  vermillion: "#D55E00",
  sky: "#56B4E9",
  purple: "#CC79A7",
  yellow: "#F0E442",
  black: "#000000",
};
export const LINE_COLORS = [
  COLORS.blue,
  COLORS.vermillion,
  COLORS.green,
  COLORS.orange,
  COLORS.purple,
  COLORS.sky,
  COLORS.black,
];

/** An error answered by the API, carrying its JSON message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET an API path (e.g. "/runs") with query params; resolve to JSON or throw ApiError. */
export async function getJSON(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const qs = query.toString();
  let response;
  try {
    response = await fetch(`${API}${path}${qs ? `?${qs}` : ""}`, {
      headers: { Accept: "application/json" },
    });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A proxy's HTML error page, say: fall through to the status line.
  }
  if (!response.ok) {
    const message = body?.error?.message || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

/** Run at most `limit` of the async `jobs` at once (keeps the server's few workers responsive). */
export async function pool(jobs, limit = 4) {
  const queue = [...jobs];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await queue.shift()();
  });
  await Promise.all(workers);
}

/** Build an element: el("a", {href: "/", class: "x"}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Show `text` in a message box; kind is "loading", "empty", "error" or "" (hidden when no text). */
export function showMessage(node, text, kind = "") {
  node.textContent = text || "";
  node.className = `message ${kind}`.trim();
  node.hidden = !text;
}

/** A number in at most 3-4 significant digits; null (NaN/Inf from the API) as an em dash. */
export function fmt(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(2).replace("e+", "e");
  if (Number.isInteger(x)) return String(x);
  return Number(x.toPrecision(3)).toString();
}

/** A fraction as a percentage. */
export function fmtPct(x) {
  if (x === null || x === undefined) return "—";
  if (x > 0 && x < 0.001) return "<0.1%";
  return `${(100 * x).toFixed(x < 0.1 ? 1 : 0)}%`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtShape(shape) {
  return shape && shape.length ? shape.join("×") : "—";
}

export function runUrl(runId) {
  return `${ROOT}/runs/${encodeURIComponent(runId)}`;
}

export function layerUrl(runId, layer) {
  return `${runUrl(runId)}/layers/${encodeURIComponent(layer)}`;
}

/** A status badge; colour is never the only cue, the word is always there. */
export function statusBadge(run) {
  const span = el("span", { class: "badges" });
  span.append(
    el("span", { class: `badge status-${run.status}`, title: run.status_reason || "" }, run.status),
  );
  if (run.degraded) {
    span.append(
      el(
        "span",
        { class: "badge status-degraded", title: run.status_reason || "" },
        "degraded",
      ),
    );
  }
  return span;
}

/** "dead_relu" as "dead relu". */
export function codeName(code) {
  return code.replace(/_/g, " ");
}

/** A health flag as a chip that expands to its explanation. */
export function flagChip(flag) {
  return el(
    "details",
    { class: `chip ${flag.severity}`, title: flag.help },
    el("summary", {}, el("strong", {}, codeName(flag.code)), ` ${flag.message}`),
    el("p", {}, flag.help),
  );
}

// --- Plotly, loaded with `async` --------------------------------------------------------------
// Evaluating Plotly's 3.5 MB takes about a second on a slow machine; pages load it with `async`
// and start their API requests at once instead of after it. A page may instead only preload it
// (<link rel="preload" data-plotly>): then the first call to plotly() runs it, so the page can
// draw something first. Draw only through these helpers.

let plotlyPromise = null;

/** Resolves to Plotly once its <script data-plotly> has run (adding the script if preloaded). */
export function plotly() {
  if (!plotlyPromise) {
    plotlyPromise = window.Plotly
      ? Promise.resolve(window.Plotly)
      : new Promise((resolve, reject) => {
          let tag = document.querySelector("script[data-plotly]");
          const preloaded = document.querySelector("link[data-plotly]");
          if (!tag && preloaded) {
            tag = document.createElement("script");
            tag.src = preloaded.href;
            tag.dataset.plotly = "";
            document.head.append(tag);
          }
          if (!tag) {
            reject(new Error("this page does not load Plotly"));
            return;
          }
          tag.addEventListener("load", () => resolve(window.Plotly));
          tag.addEventListener("error", () => reject(new Error("could not load Plotly from this server")));
        });
  }
  return plotlyPromise;
}

/** Plotly.react, once Plotly is loaded. */
export async function react(div, data, layout, config = PLOT_CONFIG) {
  return (await plotly()).react(div, data, layout, config);
}

/** Plotly.relayout, once Plotly is loaded. */
export async function relayout(div, update) {
  return (await plotly()).relayout(div, update);
}

/** Remove a chart (nothing to do when Plotly has not drawn one yet). */
export function purge(div) {
  if (window.Plotly) window.Plotly.purge(div);
}

/** Plotly config shared by all charts: no logo, no cloud buttons, resize with the window. */
export const PLOT_CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
};

export const FONT = {
  family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
  size: 12,
  color: "#222",
};

/** Faint vertical lines at the first step of every epoch but the first (none for more than 40
 * epochs: they would hide the data). */
export function epochShapes(epochs) {
  if ((epochs || []).length > 40) return [];
  return (epochs || [])
    .filter((e) => e.first_step > 0)
    .map((e) => ({
      type: "line",
      xref: "x",
      yref: "paper",
      x0: e.first_step,
      x1: e.first_step,
      y0: 0,
      y1: 1,
      line: { color: "rgba(0,0,0,0.18)", width: 1, dash: "dot" },
      layer: "below",
    }));
}

/** Small "epoch n" labels at the top of those lines (skipped when they would crowd). */
export function epochLabels(epochs) {
  const shown = (epochs || []).filter((e) => e.first_step > 0);
  if (shown.length > 12) return [];
  return shown.map((e) => ({
    xref: "x",
    yref: "paper",
    x: e.first_step,
    y: 1,
    yanchor: "bottom",
    xanchor: "left",
    text: `epoch ${e.epoch}`,
    showarrow: false,
    font: { size: 10, color: "#777" },
  }));
}

/** The epoch that `step` belongs to, or null. */
export function epochOf(step, epochs) {
  const found = (epochs || []).find((e) => step >= e.first_step && step <= e.last_step);
  return found ? found.epoch : null;
}

// --- page state in the URL ------------------------------------------------------------------

/** The page's query string as URLSearchParams. */
export function readQuery() {
  return new URLSearchParams(window.location.search);
}

/** Replace the query string with `values` (null/undefined/"" drop a key), keeping the path. */
export function writeQuery(values) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== null && value !== undefined && value !== "") q.set(key, value);
  }
  const qs = q.toString().replace(/%2C/g, ","); // "runs=a,b" reads better than "a%2Cb"
  history.replaceState(null, "", `${window.location.pathname}${qs ? `?${qs}` : ""}`);
}

/** Mark the moment the page's first chart (the runs page: its table) is drawn; bench/ui.py
 * measures the time from navigation to this mark. */
export function markFirstPlot() {
  if (!performance.getEntriesByName("first-plot").length) performance.mark("first-plot");
}

// --- series drawing -------------------------------------------------------------------------

/** `step` as a fractional epoch (2.5 = half way through epoch 2), or null outside every epoch. */
export function epochPosition(step, epochs) {
  const e = (epochs || []).find((x) => step >= x.first_step && step <= x.last_step);
  if (!e) return null;
  return e.epoch + (step - e.first_step) / (e.last_step - e.first_step + 1);
}

/** A colour as rgba() with alpha `a` (for min-max bands under a line). */
export function fade(hex, a) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

/**
 * Plotly traces for one downsampled series: the mean line and, when buckets hold several
 * values, a light band from min to max so spikes show. `x`, `mean`, `min`, `max` are arrays.
 */
export function bandTraces({ x, mean, min, max, name, color, hover, group, showBand = true }) {
  const traces = [];
  const spread = showBand && min && max && min.some((v, i) => v !== max[i]);
  if (spread) {
    traces.push({
      type: "scatter",
      mode: "lines",
      x,
      y: min,
      line: { width: 0, color },
      hoverinfo: "skip",
      showlegend: false,
      legendgroup: group || name,
    });
    traces.push({
      type: "scatter",
      mode: "lines",
      x,
      y: max,
      line: { width: 0, color },
      fill: "tonexty",
      fillcolor: fade(color, 0.18),
      hoverinfo: "skip",
      showlegend: false,
      legendgroup: group || name,
    });
  }
  traces.push({
    type: "scatter",
    mode: x.length > 60 ? "lines" : "lines+markers",
    x,
    y: mean,
    name,
    legendgroup: group || name,
    line: { color, width: 1.8 },
    marker: { size: 4 },
    hovertemplate: hover || `${name} %{y:.4g}<extra>%{x}</extra>`,
  });
  return traces;
}

// Viridis (perceptually uniform, readable with colour blindness) for magnitudes and counts.
export const SEQUENTIAL = "Viridis";

/** `count` colours from dark to light along Viridis, for ordered things such as epochs. */
export function viridis(count) {
  const stops = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
  if (count <= 1) return [stops[0]];
  return Array.from({ length: count }, (_, i) => stops[Math.round((i * (stops.length - 1)) / (count - 1))]);
}

/** Tick labels for a log10 axis of a magnitude: 1e-3 as "0.001" or "1e-3". */
export function powerTicks(lo, hi) {
  const vals = [];
  for (let k = Math.ceil(lo); k <= Math.floor(hi); k++) vals.push(k);
  const every = Math.max(1, Math.ceil(vals.length / 8));
  const shown = vals.filter((k) => k % every === 0);
  return { tickvals: shown, ticktext: shown.map((k) => (k >= -2 && k <= 3 ? String(10 ** k) : `1e${k}`)) };
}

/** Run `job` once `node` scrolls within `margin` of the screen: what is off screen is not fetched. */
export function whenVisible(node, job, margin = "200px") {
  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((e) => e.isIntersecting)) {
        observer.disconnect();
        job();
      }
    },
    { rootMargin: margin },
  );
  observer.observe(node);
}
