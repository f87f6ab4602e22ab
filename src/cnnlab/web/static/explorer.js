// cnnlab explorer: draws what the JSON API (docs/explorer.md) says about a network.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  checkpoint: null, network: null, last: null, busy: false, pending: null, lastRequest: null,
  lastKind: null, field: null, samplesFor: null,
};
const MAP_SIZE = 48; // on-screen pixels of a feature map, whatever its resolution
const INPUT_SIZE = 224; // on-screen pixels of the input's longer side (at most)

// ---- talking to the server --------------------------------------------------------------
async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function query(params) {
  return new URLSearchParams({ checkpoint: state.checkpoint || "", ...params }).toString();
}

function say(message) { $("status").textContent = message || ""; }

// ---- colours: viridis for values >= 0, blue-white-red around 0 for signed ones --------------
const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
const DIVERGING = [[5, 48, 97], [33, 102, 172], [146, 197, 222], [247, 247, 247],
  [244, 165, 130], [178, 24, 43], [103, 0, 31]];

function ramp(stops, t) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((c, k) => c + (stops[i + 1][k] - c) * f);
}

function colourScale(min, max) {
  if (min < 0) {
    const bound = Math.max(-min, max) || 1;
    return (v) => ramp(DIVERGING, (v / bound + 1) / 2);
  }
  return (v) => ramp(VIRIDIS, v / (max || 1));
}

const greyInk = (v) => { const g = 255 * (1 - v); return [g, g, g]; }; // dark ink on light
// A picture as it is: a grey level in [0, 1] (0 black), or an [r, g, b] triple in [0, 1].
const natural = (v) => (typeof v === "number" ? [255 * v, 255 * v, 255 * v] : v.map((c) => 255 * c));

// Paint a 2-D array onto a canvas, `scale` screen pixels per value. The values are numbers,
// or [r, g, b] triples; `colour` turns one into [r, g, b] in 0…255 (by default: `natural`).
function paint(canvas, rows, colour = natural, scale = 1) {
  const h = rows.length, w = rows[0].length;
  const small = new OffscreenCanvas(w, h);
  const image = new ImageData(w, h);
  rows.forEach((row, y) => row.forEach((v, x) => {
    const [r, g, b] = colour(v);
    image.data.set([r, g, b, 255], 4 * (y * w + x));
  }));
  small.getContext("2d").putImageData(image, 0, 0);
  canvas.width = w * scale;
  canvas.height = h * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, w * scale, h * scale);
}

// ---- digits or pictures ---------------------------------------------------------------------
// A digit network (network.digits) gets the drawing pad and its inputs are drawn as dark ink on
// light paper; any other network gets an upload and its inputs are drawn as they are.
const readsDigits = () => !state.network || state.network.digits !== false;
const pictureColour = () => (readsDigits() ? greyInk : natural);
const inputSize = () => (state.network ? state.network.input.slice(1) : [28, 28]); // [H, W]

function listOf(names, most = 6) {
  if (names.length <= most) return names.join(", ");
  return `${names.slice(0, most).join(", ")} and ${names.length - most} more`;
}

function setMode(network) {
  const digits = network.digits !== false;
  const [depth, h, w] = network.input;
  const kind = depth === 3 ? "colour" : "grey";
  $("draw").hidden = $("clear").hidden = !digits;
  $("pictures-info").hidden = digits;
  $("pictures-info").textContent = digits ? "" : `This network was trained on ${h}×${w} ${kind}`
    + ` pictures of ${listOf(network.classes)}; upload a picture (PNG, JPEG, BMP or WebP)`
    + " to see what it makes of it.";
  $("draw-title").textContent = digits ? "Draw a digit" : "Upload a picture";
  $("upload-button").classList.toggle("primary", !digits);
  $("upload-button").firstChild.textContent = digits ? "Upload image… " : "Upload a picture… ";
  $("samples-button").textContent = digits ? "Test digits" : "Test pictures";
  $("samples").setAttribute("aria-label", digits ? "test digits" : "test pictures");
  $("input-caption").textContent = digits ? "input: 28×28, preprocessed as MNIST was"
    : `input: ${h}×${w} ${kind}, resized and centre-cropped as the training pictures were`;
  const input = $("input");
  const scale = Math.max(1, Math.floor(INPUT_SIZE / Math.max(h, w)));
  input.width = w * scale;
  input.height = h * scale;
}

// In picture mode the picture sent is shown in place of the pad, whole, on a light ground.
function showPreview(source, width, height, smooth) {
  const preview = $("preview");
  const ctx = preview.getContext("2d");
  ctx.clearRect(0, 0, preview.width, preview.height);
  const scale = Math.min(preview.width / width, preview.height / height);
  const w = width * scale, h = height * scale;
  ctx.imageSmoothingEnabled = smooth;
  ctx.drawImage(source, (preview.width - w) / 2, (preview.height - h) / 2, w, h);
  preview.hidden = false;
}

// ---- the drawing canvas -------------------------------------------------------------------
const pad = $("draw");
const pen = pad.getContext("2d");

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
    (event.clientY - box.top) * pad.height / box.height];
}

let last = null;
pad.addEventListener("pointerdown", (event) => {
  if (event.isTrusted) pad.setPointerCapture(event.pointerId); // keep the stroke off the page
  last = padPoint(event);
  stroke(last, last);
});
pad.addEventListener("pointermove", (event) => {
  if (!last) return;
  const point = padPoint(event);
  stroke(last, point);
  last = point;
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => { last = null; });
}

const PEN_WIDTH = 18; // on the 280×280 pad: about MNIST's stroke once scaled to 20×20

function stroke(from, to) {
  pen.strokeStyle = pen.fillStyle = "#000";
  pen.lineWidth = PEN_WIDTH;
  pen.lineCap = pen.lineJoin = "round";
  pen.beginPath();
  pen.arc(...from, PEN_WIDTH / 2, 0, 2 * Math.PI); // a dot where a stroke starts
  pen.fill();
  pen.beginPath();
  pen.moveTo(...from);
  pen.lineTo(...to);
  pen.stroke();
  analyse(() => new Promise((done) => pad.toBlob(done)).then(imageRequest), "drawing");
}

function imageRequest(blob) {
  const form = new FormData();
  form.append("image", blob, "digit.png");
  return { method: "POST", body: form };
}

// One request at a time; while it runs, only the newest input waits (drawing stays smooth).
// `kind` says where the input came from: "drawing", "upload" or "sample".
function analyse(makeRequest, kind) {
  state.pending = state.lastRequest = makeRequest;
  state.lastKind = kind;
  if (!state.busy) next();
}

function setBusy(busy) {
  state.busy = busy;
  $("answer-panel").setAttribute("aria-busy", String(busy));
}

async function next() {
  const makeRequest = state.pending;
  if (!makeRequest) return;
  state.pending = null;
  setBusy(true);
  try {
    const result = await api(`/api/analyze?${query({})}`, await makeRequest());
    state.last = result;
    showAnalysis(result);
    say("");
  } catch (error) {
    say(error.message);
  } finally {
    setBusy(false);
    next();
  }
}

$("clear").addEventListener("click", () => {
  clearPad();
  state.last = state.lastRequest = state.pending = state.lastKind = null;
  showAnalysis(null);
});

$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  event.target.value = "";
  try {
    const bitmap = await createImageBitmap(file);
    if (readsDigits()) {
      clearPad();
      const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
      const w = bitmap.width * scale, h = bitmap.height * scale;
      pen.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    } else {
      showPreview(bitmap, bitmap.width, bitmap.height, true);
    }
  } catch {
    // the browser cannot show it; the server will say what is wrong
    if (readsDigits()) clearPad();
    else $("preview").hidden = true;
  }
  analyse(() => imageRequest(file), "upload");
});

// ---- test digits, or test pictures ----------------------------------------------------------
$("samples-button").addEventListener("click", loadSamples);

async function loadSamples() {
  try {
    const seed = Math.floor(Math.random() * 1e9);
    const samples = await api(`/api/samples?${query({ count: 12, seed })}`);
    const box = $("samples");
    box.replaceChildren();
    state.samplesFor = samplesKey(state.network);
    samples.pixels.forEach((pixels, i) => {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      paint(canvas, pixels, pictureColour(), 1);
      const caption = document.createElement("figcaption");
      caption.textContent = samples.labels[i];
      const what = readsDigits() ? "image" : "picture";
      figure.title = `test ${what} ${samples.indices[i]}, labelled ${samples.labels[i]}`;
      figure.append(canvas, caption);
      figure.addEventListener("click", () => showSample(pixels));
      box.append(figure);
    });
  } catch (error) {
    say(error.message);
  }
}

// The samples shown belong to a data set and an input shape; another network clears them.
const samplesKey = (network) => JSON.stringify([network.input, network.dataset, network.digits]);

function showSample(pixels) {
  const picture = document.createElement("canvas");
  paint(picture, pixels, pictureColour(), 1);
  if (readsDigits()) {
    clearPad();
    pen.imageSmoothingEnabled = true;
    pen.drawImage(picture, 0, 0, pad.width, pad.height);
  } else {
    showPreview(picture, picture.width, picture.height, false);
  }
  analyse(() => ({
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ pixels }),
  }), "sample");
}

// ---- the answer: input, probabilities, feature maps -------------------------------------------
function showAnalysis(result) {
  const input = $("input");
  if (!result) {
    input.getContext("2d").clearRect(0, 0, input.width, input.height);
    $("prediction").textContent = "";
    $("probabilities").replaceChildren();
    document.querySelectorAll(".stage canvas").forEach((c) => c.getContext("2d").clearRect(0, 0, c.width, c.height));
    return;
  }
  const [h, w] = inputSize();
  paint(input, result.input, pictureColour(), Math.max(1, Math.floor(INPUT_SIZE / Math.max(h, w))));
  $("prediction").textContent = result.label;
  const list = $("probabilities");
  list.replaceChildren(...result.probabilities.map((p, i) => {
    const item = document.createElement("li");
    item.className = i === result.predicted ? "best" : "";
    const name = document.createElement("span");
    name.textContent = state.network.classes[i];
    const track = document.createElement("span");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * p).toFixed(1)}%`;
    item.append(name, track, value);
    return item;
  }));
  result.stages.forEach((stage, index) => paintStage(index, stage));
  if (state.field) showField(state.field);
}

// The structure of the maps panel follows the network; painting follows each input.
function buildMaps(stages) {
  const box = $("maps");
  box.replaceChildren();
  let row = null;
  stages.forEach((stage, index) => {
    if (index === stages.length - 1) return; // the output layer is the probabilities above
    const isMap = stage.shape.length === 3;
    if (!row || !isMap || ["conv", "local"].includes(stage.kind)) {
      row = document.createElement("div");
      row.className = "stage-row";
      box.append(row);
    }
    const block = document.createElement("div");
    block.className = isMap ? "stage" : "stage units";
    block.id = `stage-${index}`;
    const title = document.createElement("h3");
    title.textContent = `${stage.name} → ${stage.shape.join("×")}`;
    const grid = document.createElement("div");
    grid.className = "grid";
    const count = isMap ? stage.shape[0] : 1;
    grid.style.gridTemplateColumns = `repeat(${Math.ceil(Math.sqrt(count * 1.25))}, auto)`;
    for (let map = 0; map < count; map++) {
      const canvas = document.createElement("canvas");
      canvas.dataset.stage = index;
      canvas.dataset.map = map;
      if (isMap) canvas.addEventListener("click", (event) => pickUnit(event, index, map));
      grid.append(canvas);
    }
    block.append(title, grid);
    row.append(block);
  });
}

function paintStage(index, stage) {
  const block = $(`stage-${index}`);
  if (!block) return;
  const colour = colourScale(stage.min, stage.max);
  const canvases = block.querySelectorAll("canvas");
  if (stage.shape.length === 3) {
    const scale = Math.max(1, Math.round(MAP_SIZE / stage.shape[1]));
    stage.values.forEach((map, m) => paint(canvases[m], map, colour, scale));
  } else {
    const columns = Math.min(stage.values.length, 50);
    const rows = [];
    for (let i = 0; i < stage.values.length; i += columns) rows.push(stage.values.slice(i, i + columns));
    while (rows[rows.length - 1].length < columns) rows[rows.length - 1].push(stage.min < 0 ? 0 : stage.min);
    paint(canvases[0], rows, colour, 12);
  }
  const field = state.field;
  if (field && field.stage === index) markUnit(canvases[field.map], field);
}

// ---- receptive fields -------------------------------------------------------------------------
async function pickUnit(event, stage, map) {
  const canvas = event.currentTarget;
  const [, rows, cols] = state.network.stages[stage].shape;
  const box = canvas.getBoundingClientRect();
  const row = Math.min(rows - 1, Math.floor((event.clientY - box.top) / box.height * rows));
  const col = Math.min(cols - 1, Math.floor((event.clientX - box.left) / box.width * cols));
  try {
    const area = await api(`/api/receptive-field?${query({ stage, row, col })}`);
    state.field = { stage, map, row, col, rows, cols, ...area };
    if (state.last) showAnalysis(state.last);
    else showField(state.field);
  } catch (error) {
    say(error.message);
  }
}

function showField(field) {
  const input = $("input");
  const ctx = input.getContext("2d");
  const [h0, w0] = inputSize();
  const sy = input.height / h0, sx = input.width / w0;
  const left = field.left * sx, top = field.top * sy;
  const width = (field.right - field.left + 1) * sx, height = (field.bottom - field.top + 1) * sy;
  for (const [colour, line] of [["#fff", 5], ["#e8710a", 3]]) { // visible on any picture
    ctx.strokeStyle = colour;
    ctx.lineWidth = line;
    ctx.strokeRect(left + 1.5, top + 1.5, Math.max(1, width - 3), Math.max(1, height - 3));
  }
  const stage = state.network.stages[field.stage];
  const h = field.bottom - field.top + 1, w = field.right - field.left + 1;
  $("field-info").textContent = `Unit (${field.row}, ${field.col}) of map ${field.map + 1} in`
    + ` ${stage.name} sees input rows ${field.top}–${field.bottom}, columns`
    + ` ${field.left}–${field.right} (${h}×${w} pixels).`;
}

function markUnit(canvas, field) {
  const ctx = canvas.getContext("2d");
  const sx = canvas.width / field.cols, sy = canvas.height / field.rows;
  for (const [colour, width] of [["#000", 4], ["#ffb000", 2]]) { // visible on any colour
    ctx.strokeStyle = colour;
    ctx.lineWidth = width;
    ctx.strokeRect(field.col * sx, field.row * sy, sx, sy);
  }
}

// ---- the network: checkpoints, filters, layers --------------------------------------------------
async function loadCheckpoints() {
  const listing = await api("/api/checkpoints");
  const select = $("checkpoint");
  const names = listing.checkpoints.map((c) => c.name);
  const before = [...select.options].map((o) => o.value).join("\n");
  if (before !== names.join("\n")) {
    select.replaceChildren(...names.map((name) => new Option(name, name)));
  }
  const current = listing.checkpoints.find((c) => c.name === state.checkpoint);
  if (!current) {
    if (!listing.default) { say(`no checkpoint in ${listing.folder} yet`); return; }
    await useCheckpoint(listing.default);
  } else if (current.modified !== state.modified) {
    await useCheckpoint(current.name); // rewritten by a running `cnnlab train`: show the new weights
  }
  select.value = state.checkpoint;
}

async function useCheckpoint(name) {
  state.checkpoint = name;
  const listing = await api("/api/checkpoints");
  state.modified = listing.checkpoints.find((c) => c.name === name)?.modified;
  const network = await api(`/api/network?${query({})}`);
  const inputKey = (n) => JSON.stringify([n.input, n.digits]);
  const sameInput = state.network && inputKey(state.network) === inputKey(network);
  state.network = network;
  state.field = null;
  setMode(network);
  if (state.samplesFor !== samplesKey(network)) {
    $("samples").replaceChildren(); // test images of another data set
    state.samplesFor = null;
  }
  if (!sameInput) {
    $("preview").hidden = true;
    if (state.lastKind !== "upload") { // a drawing or a sample fits only its own input
      state.lastRequest = state.lastKind = null;
      clearPad();
    }
  }
  const accuracy = network.test_accuracy == null ? "" : ` · test ${(100 * network.test_accuracy).toFixed(2)}%`;
  const epoch = network.epoch == null ? "" : ` (epoch ${network.epoch})`;
  $("network-info").textContent = `${network.arch}${accuracy}${epoch}`;
  $("summary").textContent = network.summary;
  showFilters(network.filters);
  buildMaps(network.stages);
  $("field-info").textContent = "Click a unit of any feature map below to see its receptive field on the input.";
  showAnalysis(null);
  say("");
  if (state.lastRequest) analyse(state.lastRequest); // the same input, through the new network
}

function showFilters(filters) {
  const box = $("filters");
  box.replaceChildren();
  if (!filters) { box.textContent = "This network has no convolutional layer."; return; }
  $("filters-hint").textContent = filters.shape[1] === 3
    ? "Shared weights of each feature map as a colour patch: grey = 0, more red, green or blue"
      + " = a larger weight on that channel."
    : "Shared weights of each feature map: darker = larger weight.";
  const all = filters.weights.flat(3);
  const bound = Math.max(...all.map(Math.abs)) || 1;
  const size = filters.shape[2];
  const scale = Math.max(4, Math.round(40 / size));
  for (const filter of filters.weights) {
    const canvas = document.createElement("canvas");
    if (filter.length === 3) { // a colour input: show the filter as an RGB patch
      const rgb = filter[0].map((row, y) => row.map((_, x) => [0, 1, 2].map((c) => filter[c][y][x])));
      paint(canvas, rgb, (v) => v.map((c) => 255 * (c / bound + 1) / 2), scale);
    } else {
      paint(canvas, filter[0], (v) => { const g = 255 * (1 - (v / bound + 1) / 2); return [g, g, g]; }, scale);
    }
    box.append(canvas);
  }
}

$("checkpoint").addEventListener("change", (event) => useCheckpoint(event.target.value).catch((e) => say(e.message)));

// ---- training runs, followed live ---------------------------------------------------------------
async function loadRuns() {
  const { runs } = await api("/api/runs");
  const select = $("run");
  runs.sort((a, b) => b.modified - a.modified);
  const names = runs.map((r) => r.name);
  const chosen = select.value;
  if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((name) => new Option(name, name)));
    select.value = names.includes(chosen) ? chosen : names[0] || "";
  }
  $("training-panel").hidden = names.length === 0;
  if (select.value) await showRun(select.value);
}

async function showRun(name) {
  const run = await api(`/api/metrics?${new URLSearchParams({ run: name })}`);
  const rows = run.history;
  const done = rows.length;
  const planned = run.epochs ? ` of ${run.epochs}` : "";
  const lastRow = rows[rows.length - 1];
  const test = lastRow ? ` · test ${(100 * lastRow.test_accuracy).toFixed(2)}%` : "";
  $("run-status").textContent = `epoch ${done}${planned}${test}`;
  chart($("loss-chart"), "training loss", rows, [["train_loss", "train", "#7b3fa0"]], false);
  chart($("accuracy-chart"), "accuracy (%)", rows, [
    ["train_accuracy", "train", "#1f77b4"],
    ["validation_accuracy", "validation", "#ff7f0e"],
    ["test_accuracy", "test", "#2ca02c"],
  ], true);
}

$("run").addEventListener("change", (event) => showRun(event.target.value).catch((e) => say(e.message)));

// A small line chart: epochs across, one line per series, with a legend.
function chart(canvas, title, rows, series, percent) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 56, R = 96, T = 28, B = 36; // legend on the right
  ctx.clearRect(0, 0, W, H);
  ctx.font = "13px system-ui, sans-serif";
  ctx.fillStyle = "#1d1d1f";
  ctx.fillText(title, L, 18);
  const points = series.map(([key]) => rows.filter((r) => r[key] != null)
    .map((r) => [r.epoch, percent ? 100 * r[key] : r[key]]));
  const values = points.flat().map((p) => p[1]);
  if (!values.length) { ctx.fillText("no finished epoch yet", L, H / 2); return; }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const span = hi - lo; lo -= 0.05 * span; hi += 0.05 * span;
  const epochs = Math.max(...rows.map((r) => r.epoch), 2);
  const x = (e) => L + (e - 1) / (epochs - 1) * (W - L - R);
  const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
  ctx.strokeStyle = "#ccc";
  ctx.fillStyle = "#666";
  ctx.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(W - R, y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(percent ? 2 : 3), 4, y(v) + 4);
  }
  const step = Math.max(1, Math.ceil(epochs / 10));
  for (let e = 1; e <= epochs; e += step) ctx.fillText(String(e), x(e) - 3, H - B + 16);
  ctx.fillText("epoch", W / 2 - 14, H - 6);
  series.forEach(([, label, colour], i) => {
    ctx.strokeStyle = ctx.fillStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points[i].forEach(([e, v], j) => (j ? ctx.lineTo(x(e), y(v)) : ctx.moveTo(x(e), y(v))));
    ctx.stroke();
    points[i].forEach(([e, v]) => { ctx.beginPath(); ctx.arc(x(e), y(v), 3, 0, 2 * Math.PI); ctx.fill(); });
    if (points[i].length) ctx.fillText(`— ${label}`, W - R + 10, T + 10 + 16 * i);
  });
}

// ---- start, and keep up with a running `cnnlab train` --------------------------------------------
clearPad();
loadCheckpoints().catch((error) => say(error.message));
loadRuns().catch((error) => say(error.message));
setInterval(() => {
  loadRuns().catch(() => {});
  loadCheckpoints().catch(() => {});
}, 3000);
