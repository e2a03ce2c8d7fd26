// One run: status, config, metric curves (step or epoch axis), health line, gradient flow and
// the layer table with sparklines. State (?x=&flow=&flowq=) lives in the URL.

import {
  COLORS,
  FONT,
  LINE_COLORS,
  PLOT_CONFIG,
  bandTraces,
  codeName,
  el,
  epochLabels,
  epochPosition,
  epochShapes,
  flagChip,
  fmt,
  fmtDate,
  fmtDuration,
  fmtPct,
  fmtShape,
  getJSON,
  layerUrl,
  markFirstPlot,
  plotly,
  react,
  readQuery,
  showMessage,
  statusBadge,
  whenVisible,
  writeQuery,
} from "./common.js";
import { drawFlowEpochs, drawFlowHeatmap } from "./flow.js";
import { drawPreview } from "./preview.js";

const runId = document.getElementById("app").dataset.runId;
const SVG = "http://www.w3.org/2000/svg";

function showHeader(run) {
  document.getElementById("run-status").replaceChildren(statusBadge(run));
  const ended = run.ended_at ? ` · ran ${fmtDuration(run.duration_s)}` : " · still running";
  document.getElementById("run-times").textContent = ` · started ${fmtDate(run.started_at)}${ended}`;
  if (run.status_reason) {
    const reason = el("span", { class: "reason" }, ` · ${run.status_reason}`);
    document.getElementById("run-times").append(reason);
  }
}

function showConfig(run) {
  const rows = Object.entries(run.config || {}).map(([k, v]) =>
    el(
      "tr",
      {},
      el("th", { scope: "row" }, k),
      el("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)),
    ),
  );
  const box = document.getElementById("config");
  if (!rows.length) {
    showMessage(box, "No config was logged for this run.", "empty");
    return;
  }
  const extra = [];
  const kv = (key, value) => el("tr", {}, el("th", { scope: "row" }, key), el("td", {}, value));
  if (run.tags?.length) extra.push(kv("tags", run.tags.join(", ")));
  extra.push(kv("last step", run.last_step ?? "—"));
  box.replaceChildren(el("table", { class: "data kv" }, el("tbody", {}, rows, extra)));
}

// loss / val_loss / test_loss share a chart: they are the same quantity on different data.
function metricGroup(name) {
  return name.replace(/^(train|val|valid|validation|test|eval)[_/.]/, "");
}

const state = { x: "step", flow: "heatmap", flowq: "norm" };
let runInfo = null;
let curves = []; // /curves: every metric, downsampled on the server
let flow = null; // /flow, once loaded

function writeState() {
  writeQuery({
    x: state.x === "step" ? null : state.x,
    flow: state.flow === "heatmap" ? null : state.flow,
    flowq: state.flowq === "norm" ? null : state.flowq,
  });
}

function readState() {
  const q = readQuery();
  if (q.get("x") === "epoch") state.x = "epoch";
  if (q.get("flow") === "epochs") state.flow = "epochs";
  if (q.get("flowq") === "ratio") state.flowq = "ratio";
  for (const [name, value] of [["x-axis", state.x], ["flow-view", state.flow], ["flow-quantity", state.flowq]]) {
    const input = document.querySelector(`input[name="${name}"][value="${value}"]`);
    if (input) input.checked = true;
  }
}

/** Draw the metric curves; `curvesRequest` was sent with the run's own request, and the
 * epochs (for the epoch axis and its lines) come with the run. */
async function showMetrics(curvesRequest, runRequest) {
  const box = document.getElementById("metrics");
  try {
    curves = (await curvesRequest).curves;
    await runRequest;
  } catch (err) {
    showMessage(box, `Could not load the metrics: ${err.message}`, "error");
    return;
  }
  if (!curves.length) {
    showMessage(box, "This run logged no metrics (call run.log({\"loss\": …}, step=step)).", "empty");
    return;
  }
  await drawMetrics();
}

async function drawMetrics() {
  const box = document.getElementById("metrics");
  const groups = new Map();
  for (const c of curves) {
    const key = metricGroup(c.name);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(c);
  }
  // "loss" first: it is what everyone looks at.
  const order = [...groups.keys()].sort((a, b) => (b === "loss") - (a === "loss") || a.localeCompare(b));
  if (!box.querySelector(".metric-plot")) box.replaceChildren();
  const epochs = runInfo?.epochs || [];
  const byEpoch = state.x === "epoch" && epochs.length > 0;
  // Every chart's box first, then the charts: each is drawn at its final width in the grid.
  const divs = order.map((key) => {
    let div = box.querySelector(`[data-metric="${CSS.escape(key)}"]`);
    if (!div) {
      div = el("div", { class: "plot metric-plot", dataset: { metric: key } });
      box.append(div);
    }
    return div;
  });
  if (!window.Plotly) {
    // Plotly is still being evaluated: a static preview of every chart now, the interactive
    // charts in their place once it is ready.
    for (const [i, key] of order.entries()) previewMetricGroup(divs[i], key, groups.get(key), epochs, byEpoch);
    markFirstPlot();
  }
  for (const [i, key] of order.entries()) {
    await drawMetricGroup(divs[i], key, groups.get(key), epochs, byEpoch);
    markFirstPlot();
  }
  const note = state.x === "epoch" && !epochs.length ? "This run logged no epochs; showing steps." : "";
  document.getElementById("metrics-note").textContent = note;
}

function previewMetricGroup(div, title, series, epochs, byEpoch) {
  drawPreview(div, {
    title,
    height: 260,
    xTitle: byEpoch ? "epoch" : "step",
    series: series.map((s, i) => ({
      name: s.name,
      color: LINE_COLORS[i % LINE_COLORS.length],
      x: byEpoch ? s.steps.map((st) => epochPosition(st, epochs)) : s.steps,
      y: s.mean,
    })),
  });
}

async function drawMetricGroup(div, title, series, epochs, byEpoch) {
  const traces = series.flatMap((s, i) => {
    const color = LINE_COLORS[i % LINE_COLORS.length];
    const x = byEpoch ? s.steps.map((st) => epochPosition(st, epochs)) : s.steps;
    const where = byEpoch ? "epoch %{x:.2f}" : "step %{x}";
    return bandTraces({
      x,
      mean: s.mean,
      min: s.min,
      max: s.max,
      name: s.name,
      color,
      hover: `${s.name} %{y:.4g}<extra>${where}</extra>`,
    });
  });
  const down = series.find((s) => s.downsampled);
  const xTitle = byEpoch ? "epoch" : "step";
  const layout = {
    title: { text: title, font: { size: 14 }, x: 0, xanchor: "left" },
    font: FONT,
    height: 260,
    margin: { l: 50, r: 10, t: 58, b: 40 },
    xaxis: {
      title: { text: down ? `${xTitle} (${down.total.toLocaleString()} values, mean and min–max of buckets)` : xTitle },
      zeroline: false,
    },
    yaxis: { zeroline: false },
    showlegend: true,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.1, yanchor: "bottom" },
    shapes: byEpoch ? [] : epochShapes(epochs),
    annotations: byEpoch ? [] : epochLabels(epochs),
    hovermode: "x",
  };
  await plotly();
  div.querySelector("svg.preview")?.remove();
  await react(div, traces, layout, PLOT_CONFIG);
}

// --- gradient flow --------------------------------------------------------------------------

async function showFlow() {
  const status = document.getElementById("flow-status");
  try {
    flow = await getJSON(`/runs/${runId}/flow`, { points: 400 });
  } catch (err) {
    showMessage(status, `Could not load the gradient flow: ${err.message}`, "error");
    return;
  }
  if (!flow.layers.length) {
    showMessage(status, "No layer with parameters recorded a weight gradient, so there is no gradient flow to show.", "empty");
    return;
  }
  showMessage(status, "");
  if (flow.lr) document.getElementById("ratio-label").textContent = "update/weight ≈ lr·|g|/|w|";
  await drawFlow();
}

async function drawFlow() {
  if (!flow?.layers.length) return;
  const div = document.getElementById("flow");
  const open = (name) => {
    window.location.href = layerUrl(runId, name);
  };
  let label;
  if (state.flow === "epochs" && flow.epochs.length) {
    label = await drawFlowEpochs(div, flow, state.flowq);
  } else {
    label = await drawFlowHeatmap(div, flow, state.flowq, open);
    label += "; click a cell to open that layer";
  }
  const noEpochs = state.flow === "epochs" && !flow.epochs.length ? "This run logged no epochs: showing steps. " : "";
  document.getElementById("flow-note").textContent = `${noEpochs}Showing ${label}.`;
}

async function showHealth() {
  const box = document.getElementById("health");
  let health;
  try {
    health = await getJSON(`/runs/${runId}/health`);
  } catch (err) {
    showMessage(box, `Could not check the layers' health: ${err.message}`, "error");
    return;
  }
  const byCode = new Map();
  for (const [layer, flags] of Object.entries(health.layers)) {
    for (const f of flags) {
      if (!byCode.has(f.code)) byCode.set(f.code, { severity: f.severity, help: f.help, layers: [] });
      const entry = byCode.get(f.code);
      entry.layers.push(layer);
      if (f.severity === "error") entry.severity = "error";
    }
  }
  box.className = `health message ${health.health}`;
  const labels = { ok: "Healthy", warning: "Warnings", error: "Problems found" };
  const label = labels[health.health] || health.health;
  box.replaceChildren(el("strong", {}, `${label}: `));
  if (!byCode.size) {
    box.append("no layer shows dead units, saturation, vanishing or exploding gradients or NaN.");
    return;
  }
  const parts = [...byCode.entries()].map(([code, e]) =>
    el(
      "span",
      { class: `sev-${e.severity}`, title: e.help },
      `${codeName(code)} in ${e.layers.join(", ")}`,
    ),
  );
  parts.forEach((p, i) => box.append(i ? "; " : "", p));
  box.append(". Hover for what each means; details in the layer table.");
}

// --- diagnosis ----------------------------------------------------------------------------

const SEVERITY_ICON = { error: "✖", warning: "⚠", info: "ℹ" };

function stepsOf(f) {
  if (f.first_step === null || f.first_step === undefined) return "";
  return f.last_step !== null && f.last_step !== f.first_step
    ? `steps ${f.first_step}–${f.last_step}`
    : `step ${f.first_step}`;
}

function evidenceText(evidence) {
  return Object.entries(evidence || {})
    .map(([k, v]) => `${k.replace(/_/g, " ")} ${typeof v === "number" ? fmt(v) : JSON.stringify(v)}`)
    .join(" · ");
}

function findingItem(f, i) {
  const where = f.layer
    ? el("a", { href: layerUrl(runId, f.layer), class: "finding-layer" }, f.layer)
    : el("span", { class: "muted" }, "whole run");
  const steps = stepsOf(f);
  const evidence = evidenceText(f.evidence);
  return el(
    "li",
    { class: `finding ${f.severity}`, id: `finding-${i}`, dataset: { code: f.code, layer: f.layer || "" } },
    el(
      "p",
      { class: "finding-head" },
      el("span", { class: `badge sev-badge ${f.severity}` }, `${SEVERITY_ICON[f.severity] || ""} ${f.code}`),
      " ",
      where,
      steps ? el("span", { class: "muted" }, ` · ${steps}`) : "",
      " — ",
      el("strong", {}, f.message),
    ),
    el("p", { class: "finding-why" }, f.explanation),
    el("p", { class: "finding-fix" }, el("span", { class: "label" }, "Try: "), f.suggestion),
    evidence ? el("p", { class: "finding-evidence muted small" }, `Measured: ${evidence}`) : "",
  );
}

async function showDiagnosis() {
  const status = document.getElementById("diagnosis-status");
  const list = document.getElementById("diagnosis");
  let body;
  try {
    body = await getJSON(`/runs/${runId}/diagnosis`);
  } catch (err) {
    showMessage(status, `Could not diagnose this run: ${err.message}`, "error");
    return [];
  }
  if (!body.findings.length) {
    showMessage(
      status,
      "No problems found: no NaN/Inf, dead or saturated units, missing, vanishing or exploding " +
        "gradients, or badly sized updates in the recorded statistics.",
      "ok",
    );
    return [];
  }
  const counts = ["error", "warning", "info"]
    .map((sev) => [sev, body.findings.filter((f) => f.severity === sev).length])
    .filter(([, n]) => n)
    .map(([sev, n]) => `${n} ${sev}${n > 1 ? "s" : ""}`);
  showMessage(status, `${counts.join(", ")}, worst and earliest first.`, body.summary);
  list.replaceChildren(...body.findings.map(findingItem));
  list.hidden = false;
  return body.findings;
}

/** Mark the layer table's rows that a finding names: a badge per finding, linked to it. */
function markFindings(findings) {
  const rows = new Map(
    [...document.querySelectorAll("#layers tbody tr")].map((tr) => [tr.dataset.layer, tr]),
  );
  findings.forEach((f, i) => {
    const tr = rows.get(f.layer);
    if (!tr) return;
    tr.classList.add(`diagnosed-${f.severity}`);
    const title = `${f.message}. ${f.explanation} Try: ${f.suggestion}`;
    tr.querySelector(".finding-badges").append(
      el("a", { href: `#finding-${i}`, class: `badge finding-badge ${f.severity}`, title }, f.code),
    );
  });
}

function statsOf(layer, quantity, part) {
  const byPart = layer.latest?.[quantity];
  if (!byPart) return null;
  return (byPart[part] || Object.values(byPart)[0])?.stats ?? null;
}

function mainParam(layer) {
  const names = Object.keys(layer.params || {});
  return names.includes("weight") ? "weight" : names[0];
}

function nonFinite(layer) {
  let total = 0;
  for (const byPart of Object.values(layer.latest || {})) {
    for (const { stats } of Object.values(byPart)) {
      total += (stats.nan_count || 0) + (stats.inf_count || 0);
    }
  }
  return total;
}

function numCell(text, title) {
  return el("td", { class: "num", title }, text);
}

function layerRow(layer, index) {
  const act = statsOf(layer, "activation", "output");
  const grad = statsOf(layer, "activation_grad", "output");
  const param = mainParam(layer);
  const weight = param ? statsOf(layer, "weight", param) : null;
  const wgrad = param ? statsOf(layer, "weight_grad", param) : null;
  const bad = nonFinite(layer);
  const kind = layer.kind;
  const na = "·"; // not applicable to this kind of layer, as opposed to "—" (not recorded)
  const trends = el("td", { class: "trends", dataset: { layer: layer.name, param: param || "" } });
  return el(
    "tr",
    {
      class: layer.flags.some((f) => f.severity === "error") ? "has-error" : "",
      dataset: { layer: layer.name },
    },
    numCell(index + 1), // not layer.position, which also counts unwatched container modules
    el(
      "td",
      { class: "layer-name" },
      el("a", { href: layerUrl(runId, layer.name), class: "layer-link" }, layer.name),
      el("span", { class: "finding-badges" }),
    ),
    el("td", {}, layer.type, kind && kind !== layer.type.toLowerCase() ? ` (${kind})` : ""),
    el(
      "td",
      { class: "flags" },
      layer.flags.length ? layer.flags.map(flagChip) : el("span", { class: "ok" }, "ok"),
    ),
    el("td", { class: "mono" }, fmtShape(layer.shapes?.output)),
    numCell(fmt(act?.mean)),
    numCell(fmt(act?.std)),
    numCell(fmtPct(act?.zero_frac)),
    numCell(kind === "relu" ? fmtPct(act?.dead_frac) : na),
    numCell(kind === "sigmoid" || kind === "tanh" ? fmtPct(act?.saturated_frac) : na),
    numCell(fmt(grad?.norm)),
    numCell(param ? fmt(weight?.norm) : na, param ? `parameter ${param}` : "no parameters"),
    numCell(param ? fmt(wgrad?.norm) : na, param ? `parameter ${param}` : "no parameters"),
    el("td", { class: `num${bad ? " bad" : ""}` }, bad ? String(bad) : "0"),
    trends,
  );
}

/** A tiny line chart as inline SVG: 24 of these cost far less than 24 Plotly plots. */
function sparkline(steps, values, color, label) {
  const w = 96;
  const h = 18;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("class", "spark");
  const finite = values.filter((v) => v !== null);
  const title = document.createElementNS(SVG, "title");
  if (!finite.length) {
    title.textContent = `${label}: no finite values`;
    svg.append(title);
    return svg;
  }
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  const x0 = steps[0];
  const x1 = steps[steps.length - 1];
  const sx = (s) => (x1 > x0 ? ((s - x0) / (x1 - x0)) * (w - 2) + 1 : w / 2);
  const sy = (v) => (hi > lo ? h - 1 - ((v - lo) / (hi - lo)) * (h - 2) : h / 2);
  let d = "";
  let pen = "M";
  values.forEach((v, i) => {
    if (v === null) {
      pen = "M"; // a gap where the value was NaN/Inf
      return;
    }
    d += `${pen}${sx(steps[i]).toFixed(1)},${sy(v).toFixed(1)}`;
    pen = "L";
  });
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", color);
  path.setAttribute("stroke-width", "1.3");
  const last = finite[finite.length - 1];
  title.textContent =
    `${label}: ${fmt(finite[0])} at step ${x0} → ${fmt(last)} at step ${x1}` +
    ` (range ${fmt(lo)} … ${fmt(hi)})`;
  svg.append(title, path);
  return svg;
}

async function drawTrends(cell) {
  const layer = cell.dataset.layer;
  const param = cell.dataset.param;
  const wanted = [["activation", "std", null, COLORS.blue, "activation std"]];
  if (param) wanted.push(["weight_grad", "norm", param, COLORS.vermillion, `${param} gradient norm`]);
  const lines = await Promise.all(
    wanted.map(async ([quantity, stat, p, color, label]) => {
      try {
        const query = { layer, quantity, stat, param: p, points: 96 }; // one point per pixel
        const s = await getJSON(`/runs/${runId}/series`, query);
        return el("div", { class: "spark-row" }, sparkline(s.steps, s.stats[stat], color, label));
      } catch (err) {
        return el("div", { class: "spark-row error small" }, err.message);
      }
    }),
  );
  cell.replaceChildren(...lines);
}

/** Load sparklines only for rows that scroll into view, a few requests at a time. */
function lazyTrends(cells) {
  const queue = [];
  let running = 0;
  const pump = () => {
    while (running < 4 && queue.length) {
      running += 1;
      drawTrends(queue.shift()).finally(() => {
        running -= 1;
        pump();
      });
    }
  };
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      queue.push(entry.target);
    }
    pump();
  });
  cells.forEach((c) => observer.observe(c));
}

async function showLayers(diagnosis) {
  const status = document.getElementById("layers-status");
  const table = document.getElementById("layers");
  let layers;
  try {
    layers = (await getJSON(`/runs/${runId}/layers`)).layers;
  } catch (err) {
    showMessage(status, `Could not load the layers: ${err.message}`, "error");
    return;
  }
  if (!layers.length) {
    showMessage(status, "No layers were watched in this run (call run.watch(model)).", "empty");
    return;
  }
  showMessage(status, "");
  table.querySelector("tbody").replaceChildren(...layers.map((layer, i) => layerRow(layer, i)));
  table.hidden = false;
  const steps = layers.flatMap((l) => Object.values(l.latest?.activation || {}).map((p) => p.step));
  if (steps.length) {
    document.getElementById("layers-step").textContent =
      `Statistics from the latest recorded step (${Math.max(...steps)}). ` +
      "“·” = does not apply to this layer, “—” = not recorded.";
  }
  lazyTrends([...table.querySelectorAll("td.trends")]);
  markFindings(await diagnosis);
}

function wireControls() {
  document.getElementById("x-axis").addEventListener("change", (e) => {
    state.x = e.target.value;
    writeState();
    if (curves.length) drawMetrics();
  });
  document.getElementById("flow-view").addEventListener("change", (e) => {
    state.flow = e.target.value;
    writeState();
    drawFlow();
  });
  document.getElementById("flow-quantity").addEventListener("change", (e) => {
    state.flowq = e.target.value;
    writeState();
    drawFlow();
  });
}

async function main() {
  readState();
  wireControls();
  // The metric curves first: they are the first plot; the rest follows without waiting for them.
  // Both requests go out at once, while Plotly is still loading.
  const runRequest = getJSON(`/runs/${runId}`);
  const curvesRequest = getJSON(`/runs/${runId}/curves`, { points: 1000 });
  curvesRequest.catch(() => {}); // reported by showMetrics, once the run itself is known
  let run;
  try {
    run = await runRequest;
  } catch (err) {
    for (const id of ["config", "metrics"]) {
      showMessage(document.getElementById(id), `Could not load the run: ${err.message}`, "error");
    }
    return;
  }
  runInfo = run;
  const metrics = showMetrics(curvesRequest, runRequest).finally(plotly); // Plotly after them
  showHeader(run);
  showConfig(run);
  showHealth();
  const diagnosis = showDiagnosis();
  const layersShown = showLayers(diagnosis);
  whenVisible(document.getElementById("flow-card"), () => metrics.then(showFlow));
  await Promise.all([metrics, diagnosis, layersShown]);
  document.getElementById("app").dataset.ready = "true";
}

main();
