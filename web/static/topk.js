// Top inputs page: per channel of a layer, the held-out inputs that activate it most, as image
// patches, for one epoch of this run, optionally beside another epoch or another run. State lives
// in the URL (?layer=&epoch=&vs=&vs_epoch=) so a view can be shared.

import { ApiError, el, fmt, getJSON, runUrl, showMessage } from "./common.js";

const app = document.getElementById("app");
const runId = app.dataset.runId;
const runName = app.dataset.runName;
const PAGE = 32; // channels fetched per request
const PIXEL = 6; // screen pixels per input pixel

const ui = {
  layer: document.getElementById("topk-layer"),
  epoch: document.getElementById("topk-epoch"),
  vs: document.getElementById("topk-vs"),
  vsEpoch: document.getElementById("topk-vs-epoch"),
  message: document.getElementById("topk-message"),
  columns: document.getElementById("topk-columns"),
  more: document.getElementById("topk-more"),
};
const state = { count: PAGE };
const passesOf = new Map(); // run id -> passes

function passLabel(p) {
  return p.epoch === null ? `step ${p.step}` : `epoch ${p.epoch} (step ${p.step})`;
}

function passKey(p) {
  return p.epoch === null ? `s${p.step}` : `e${p.epoch}`;
}

function query(p) {
  return p.epoch === null ? { step: p.step } : { epoch: p.epoch };
}

async function passes(id) {
  if (!passesOf.has(id)) passesOf.set(id, (await getJSON(`/runs/${id}/topk`)).passes);
  return passesOf.get(id);
}

function fillPasses(select, list, wanted) {
  select.replaceChildren(...list.map((p) => el("option", { value: passKey(p) }, passLabel(p))));
  const keys = list.map(passKey);
  select.value = keys.includes(wanted) ? wanted : keys[keys.length - 1] || "";
}

function chosenPass(list, key) {
  return list.find((p) => passKey(p) === key) || list[list.length - 1];
}

function syncUrl() {
  const params = new URLSearchParams();
  params.set("layer", ui.layer.value);
  if (ui.epoch.value) params.set("epoch", ui.epoch.value);
  if (ui.vs.value) {
    params.set("vs", ui.vs.value);
    if (ui.vsEpoch.value) params.set("vs_epoch", ui.vsEpoch.value);
  }
  history.replaceState(null, "", `?${params}`);
}

/** Draw one patch (in_channels x h x w, null outside the input) as a grey or RGB image. */
function patchCanvas(patch, lo, hi, title) {
  const channels = patch.length;
  const h = patch[0].length;
  const w = patch[0][0].length;
  const canvas = el("canvas", {
    width: w,
    height: h,
    class: "topk-patch",
    title,
    role: "img",
    "aria-label": title,
    style: `width:${w * PIXEL}px;height:${h * PIXEL}px;image-rendering:pixelated;border:1px solid #ccc`,
  });
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const span = hi > lo ? hi - lo : 1;
  const level = (v) => Math.round((255 * (v - lo)) / span);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = 4 * (y * w + x);
      const v = patch[0][y][x];
      if (v === null) {
        // Outside the input (the field hangs over a border): a light hatch, not black.
        const light = (x + y) % 2 ? 235 : 250;
        image.data.set([light, light, light, 255], i);
        continue;
      }
      const rgb = channels === 3 ? [0, 1, 2].map((c) => level(patch[c][y][x])) : [level(v), level(v), level(v)];
      image.data.set([...rgb, 255], i);
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function grid(data, range, heading) {
  const rows = [];
  for (let c = 0; c < data.values.length; c++) {
    const channel = data.start + c;
    const values = data.values[c];
    const best = values[0];
    const dead = best !== null && best <= 0;
    const cells = values.map((value, j) => {
      const title = `input #${data.indices[c][j]}: value ${fmt(value)}`;
      if (!data.patches) return el("span", { class: "small", title }, `#${data.indices[c][j]}`);
      return patchCanvas(data.patches[c][j], range[0], range[1], title);
    });
    rows.push(
      el(
        "div",
        {
          class: "topk-row",
          dataset: { channel: String(channel) },
          style: "display:grid;grid-template-columns:7.5rem 1fr;align-items:center;margin:2px 0",
        },
        el(
          "div",
          { class: "topk-label small" },
          el("strong", {}, `ch ${channel}`),
          el("br"),
          `max ${fmt(best)}`,
          dead ? el("span", { class: "badge health-error", title: "no held-out input made this channel positive" }, "never positive") : null,
        ),
        el("div", { class: "topk-cells", style: "display:flex;gap:3px;flex-wrap:wrap" }, cells),
      ),
    );
  }
  const note = data.field_exact
    ? `receptive field ${data.patches ? data.patches[0][0][0].length : "?"}×${data.patches ? data.patches[0][0][0][0].length : "?"} input pixels`
    : "receptive field unknown (no gradient reached the input): whole inputs shown";
  return el(
    "section",
    { class: "panel topk-grid", "aria-label": heading },
    el("h2", {}, heading),
    el("p", { class: "meta small" }, `${data.channels} channels · top ${data.k} of ${data.dataset_size} held-out inputs · ${note}`),
    rows,
  );
}

const API_PAGE = 64; // the API's most channels per request

/** The first `count` channels of one column, fetched a page at a time and joined. */
async function channels(col, layer, count) {
  const path = `/runs/${col.id}/layers/${encodeURIComponent(layer)}/topk`;
  let joined = null;
  for (let start = 0; start < count; start += API_PAGE) {
    const page = await getJSON(path, { ...query(col.pass), start, count: Math.min(API_PAGE, count - start) });
    if (!joined) joined = page;
    else {
      for (const key of ["values", "indices", "boxes"]) joined[key].push(...page[key]);
      if (joined.patches) joined.patches.push(...page.patches);
      joined.stop = page.stop;
      if (page.patch_range && joined.patch_range) {
        joined.patch_range = [
          Math.min(joined.patch_range[0], page.patch_range[0]),
          Math.max(joined.patch_range[1], page.patch_range[1]),
        ];
      }
    }
    if (page.stop >= page.channels) break;
  }
  return joined;
}

async function render() {
  syncUrl();
  showMessage(ui.message, "Loading…", "loading");
  const mine = await passes(runId);
  const layer = ui.layer.value;
  const columns = [{ id: runId, name: runName, pass: chosenPass(mine, ui.epoch.value) }];
  if (ui.vs.value) {
    const theirs = await passes(ui.vs.value);
    if (theirs.length) {
      const name = ui.vs.options[ui.vs.selectedIndex].textContent;
      columns.push({ id: ui.vs.value, name, pass: chosenPass(theirs, ui.vsEpoch.value) });
    }
  }
  let results;
  try {
    results = await Promise.all(columns.map((col) => channels(col, layer, state.count)));
  } catch (err) {
    const text = err instanceof ApiError ? err.message : String(err);
    showMessage(ui.message, `Could not load the top inputs: ${text}`, "error");
    ui.columns.replaceChildren();
    return;
  }
  // One grey scale for every grid on screen: the same input looks the same everywhere.
  const ranges = results.map((r) => r.patch_range).filter(Boolean);
  const range = ranges.length
    ? [Math.min(...ranges.map((r) => r[0])), Math.max(...ranges.map((r) => r[1]))]
    : [0, 1];
  ui.columns.style.cssText = "display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(28rem,1fr))";
  ui.columns.replaceChildren(
    ...results.map((data, i) => grid(data, range, `${columns[i].name} · ${layer} · ${passLabel(columns[i].pass)}`)),
  );
  const total = Math.max(...results.map((r) => r.channels));
  ui.more.hidden = state.count >= total;
  showMessage(ui.message, "");
}

async function onVsChange() {
  if (!ui.vs.value) {
    ui.vsEpoch.replaceChildren();
    ui.vsEpoch.disabled = true;
    return;
  }
  const theirs = await passes(ui.vs.value);
  ui.vsEpoch.disabled = false;
  fillPasses(ui.vsEpoch, theirs, ui.vsEpoch.value || new URLSearchParams(location.search).get("vs_epoch"));
}

async function main() {
  const url = new URLSearchParams(location.search);
  let mine;
  try {
    mine = await passes(runId);
  } catch (err) {
    showMessage(ui.message, `Could not load the top inputs: ${err.message}`, "error");
    return;
  }
  if (!mine.length) {
    showMessage(
      ui.message,
      "This run has no top inputs recorded. Record them with run.watch(model, top_k=9, dataset=held_out), or after training with tracker.top_k(run, model, dataset).",
      "empty",
    );
    document.getElementById("topk-controls").hidden = true;
    return;
  }
  const layers = [...new Set(mine.flatMap((p) => p.layers))];
  ui.layer.replaceChildren(...layers.map((l) => el("option", { value: l }, l)));
  const asked = url.get("layer");
  ui.layer.value = layers.includes(asked) ? asked : layers[0];
  const note = document.getElementById("topk-note");
  if (asked && !layers.includes(asked)) {
    note.textContent = `${asked} has no top inputs recorded (they are kept for conv and linear layers, or those chosen with top_k_layers=); showing ${layers[0]}.`;
    note.hidden = false;
  }
  fillPasses(ui.epoch, mine, url.get("epoch"));
  const runs = (await getJSON("/runs", { limit: 200 })).runs;
  ui.vs.append(
    el("option", { value: runId }, `${runName} (this run)`),
    ...runs.filter((r) => r.id !== runId).map((r) => el("option", { value: r.id }, r.name)),
  );
  ui.vs.value = runs.some((r) => r.id === url.get("vs")) || url.get("vs") === runId ? url.get("vs") : "";
  await onVsChange();
  for (const select of [ui.layer, ui.epoch, ui.vsEpoch]) select.addEventListener("change", render);
  ui.vs.addEventListener("change", async () => {
    await onVsChange();
    await render();
  });
  ui.more.addEventListener("click", () => {
    state.count += PAGE;
    render();
  });
  await render();
}

main();
