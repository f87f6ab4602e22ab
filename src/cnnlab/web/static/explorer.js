// cnnlab explorer: draws what the JSON API (docs/explorer.md) says about a network, and explains it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  checkpoint: null, modified: null, network: null, last: null, busy: false, pending: null,
  lastRequest: null, lastKind: null, unit: null, story: null, field: null, samplesFor: null,
  knownRuns: null, penUpAt: null, announce: false,
  // Answers to requests made before a Clear or a change of network are dropped: `generation`
  // counts those changes, `unitAsked` the unit requests (only the newest is shown).
  generation: 0, unitAsked: 0,
};
const MAP_SIDE = 72; // on-screen pixels a feature map aims for, whatever its resolution
const ZOOM_SIDE = 288; // the chosen map, enlarged in the arithmetic panel
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

const fmt = (v, digits = 3) => (Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v).toPrecision(digits))
  .replace("-", "−");
const count = (n) => n.toLocaleString("en-US");

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

// A stage's colour scale: signed values around 0 (blue–white–red), others from 0 up (viridis).
function scaleFor(min, max) {
  if (min < 0) {
    const bound = Math.max(-min, max) || 1;
    return { lo: -bound, hi: bound, colour: (v) => ramp(DIVERGING, (v / bound + 1) / 2), stops: DIVERGING };
  }
  const hi = max || 1;
  return { lo: 0, hi, colour: (v) => ramp(VIRIDIS, v / hi), stops: VIRIDIS };
}

const greyInk = (v) => { const g = 255 * (1 - v); return [g, g, g]; }; // dark ink on light
// A picture as it is: a grey level in [0, 1] (0 black), or an [r, g, b] triple in [0, 1].
const natural = (v) => (typeof v === "number" ? [255 * v, 255 * v, 255 * v] : v.map((c) => 255 * c));
const css = ([r, g, b]) => `rgb(${r | 0}, ${g | 0}, ${b | 0})`;
// Black or white text, whichever contrasts more with the colour (WCAG's relative luminance):
// on any colour one of them reaches at least 4.58:1.
function textOn(rgb) {
  const [r, g, b] = rgb.map((c) => { const v = c / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) ? "#000" : "#fff";
}

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

// A colour bar with the range it stands for; the exact range is kept in data-min/data-max.
function legend(box, scale, min, max) {
  box.replaceChildren();
  const bar = document.createElement("canvas");
  bar.width = 96; bar.height = 1;
  const ctx = bar.getContext("2d");
  for (let x = 0; x < 96; x++) { ctx.fillStyle = css(scale.colour(scale.lo + (scale.hi - scale.lo) * x / 95)); ctx.fillRect(x, 0, 1, 1); }
  bar.setAttribute("aria-hidden", "true");
  const lo = document.createElement("span"), hi = document.createElement("span");
  lo.className = "legend-min"; hi.className = "legend-max";
  lo.textContent = fmt(scale.lo); hi.textContent = fmt(scale.hi);
  const range = document.createElement("span");
  range.className = "legend-range";
  range.textContent = `values ${fmt(min)} … ${fmt(max)}`;
  box.dataset.min = min; box.dataset.max = max;
  box.append(lo, bar, hi, range);
}

// ---- the hover tooltip and highlight -----------------------------------------------------------
const tip = $("tip");
const hoverBox = document.createElement("div");
hoverBox.id = "hover-box"; hoverBox.hidden = true;
document.body.append(hoverBox);

function showTip(event, text, cell) {
  tip.textContent = text;
  tip.hidden = false;
  tip.style.left = `${Math.min(event.clientX + 14, innerWidth - tip.offsetWidth - 4)}px`;
  tip.style.top = `${event.clientY + 16}px`;
  if (cell) {
    Object.assign(hoverBox.style, { left: `${cell.left}px`, top: `${cell.top}px`,
      width: `${cell.width}px`, height: `${cell.height}px` });
    hoverBox.hidden = false;
  }
}
function hideTip() { tip.hidden = true; hoverBox.hidden = true; }

// The cell of a rows×cols canvas under the pointer, and its rectangle on the screen.
function cellAt(canvas, event, rows, cols) {
  const outer = canvas.getBoundingClientRect(); // the picture itself starts inside the border
  const box = { left: outer.left + canvas.clientLeft, top: outer.top + canvas.clientTop,
    width: canvas.clientWidth, height: canvas.clientHeight };
  const row = Math.min(rows - 1, Math.max(0, Math.floor((event.clientY - box.top) / box.height * rows)));
  const col = Math.min(cols - 1, Math.max(0, Math.floor((event.clientX - box.left) / box.width * cols)));
  const w = box.width / cols, h = box.height / rows;
  return { row, col, rect: { left: box.left + col * w, top: box.top + row * h, width: w, height: h } };
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
  $("draw").hidden = $("clear").hidden = $("draw-hint").hidden = !digits;
  $("pictures-info").hidden = digits;
  $("pictures-info").textContent = digits ? "" : `This network was trained on ${h}×${w} ${kind}`
    + ` pictures of ${listOf(network.classes)}; upload a picture (PNG, JPEG, BMP or WebP)`
    + " to see what it makes of it.";
  $("draw-title").textContent = digits ? "Draw a digit" : "Upload a picture";
  $("upload-button").classList.toggle("primary", !digits);
  $("upload-text").textContent = digits ? "Upload image…" : "Upload a picture…";
  $("samples-button").textContent = digits ? "New test digits" : "New test pictures";
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
const pen = pad.getContext("2d", { willReadFrequently: true });

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
  state.penUpAt = null;
  choseSample(null);
  stroke(last, last);
});
pad.addEventListener("pointermove", (event) => {
  if (!last) return;
  const point = padPoint(event);
  stroke(last, point);
  last = point;
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => {
    if (!last) return;
    last = null;
    state.penUpAt = performance.now();
    analyse(drawingRequest, "drawing", true); // the finished drawing, answered and announced
  });
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
  analyse(drawingRequest, "drawing");
}

// The pad's grey levels as raw bytes: read at once, nothing to encode (an encoded PNG took up
// to a second to produce after the pen lifted).
function drawingRequest() {
  const rgba = pen.getImageData(0, 0, pad.width, pad.height).data;
  const grey = new Uint8Array(pad.width * pad.height);
  for (let i = 0; i < grey.length; i++) grey[i] = rgba[4 * i];
  return {
    method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: grey,
    params: { width: pad.width, height: pad.height },
  };
}

function imageRequest(blob) {
  const form = new FormData();
  form.append("image", blob, "picture");
  return { method: "POST", body: form };
}

const pixelsRequest = (pixels) => ({
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels }),
});

// One request at a time; while it runs, only the newest input waits (drawing stays smooth).
// `kind` says where the input came from: "drawing", "upload" or "sample"; `final` inputs are
// announced to screen readers once answered (not every stroke on the way).
function analyse(makeRequest, kind, final = false) {
  state.pending = state.lastRequest = makeRequest;
  state.lastKind = kind;
  state.announce = final;
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
  const final = state.announce;
  const kind = state.lastKind;
  const generation = state.generation;
  setBusy(true);
  try {
    const { params = {}, ...request } = await makeRequest();
    const result = await api(`/api/analyze?${query(params)}`, request);
    if (generation !== state.generation) return; // cleared, or another network, meanwhile
    state.last = result;
    showAnalysis(result);
    say("");
    $("pad-error").textContent = "";
    if (final && !state.pending) finished(result, kind);
  } catch (error) {
    if (generation !== state.generation) return;
    if (kind === "upload") { // no answer for this picture: nothing of an older one stays
      state.last = state.lastRequest = null;
      showAnalysis(null);
      $("pad-error").textContent = `Not read: ${error.message}`;
    } else if (!/blank/.test(error.message)) {
      say(error.message);
    }
  } finally {
    setBusy(false);
    next();
  }
}

// A finished prediction: announced once, and the time from pen-up to answer kept for the tests.
function finished(result, kind) {
  const share = (100 * result.probabilities[result.predicted]).toFixed(1);
  $("announce").textContent = `The network says ${result.label}, ${share}% sure.`;
  if (kind === "drawing" && state.penUpAt != null) {
    document.body.dataset.answerMs = (performance.now() - state.penUpAt).toFixed(0);
  }
  if (state.unit) openUnit(state.unit); // the chosen unit's arithmetic, for this input
}

$("clear").addEventListener("click", () => {
  clearPad();
  state.generation++;
  state.last = state.lastRequest = state.pending = state.lastKind = null;
  choseSample(null);
  showAnalysis(null);
});

$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  event.target.value = "";
  choseSample(null);
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
  analyse(() => imageRequest(file), "upload", true);
});

// ---- test digits, or test pictures, right or wrong ---------------------------------------------
$("samples-button").addEventListener("click", () => loadSamples());
$("mistakes-only").addEventListener("change", () => loadSamples());

async function loadSamples(show = false) {
  const mistakes = $("mistakes-only").checked;
  try {
    const seed = Math.floor(Math.random() * 1e9);
    const samples = await api(`/api/samples?${query({ count: 12, seed, mistakes: mistakes ? 1 : 0 })}`);
    const box = $("samples");
    box.replaceChildren();
    state.samplesFor = samplesKey(state.network);
    const what = readsDigits() ? "digit" : "picture";
    const wrong = samples.labels.filter((label, i) => samples.predicted[i] !== label).length;
    $("samples-hint").textContent = mistakes && !samples.pixels.length
      ? `This network gets every test ${what} right.`
      : `✓ the network's answer is right, ✗ wrong (${wrong} of ${samples.labels.length} shown).`;
    samples.pixels.forEach((pixels, i) => {
      const right = samples.predicted[i] === samples.labels[i];
      const button = document.createElement("button");
      button.type = "button";
      button.className = right ? "right" : "wrong";
      button.setAttribute("aria-pressed", "false");
      const canvas = document.createElement("canvas");
      paint(canvas, pixels, pictureColour(), 1);
      const caption = document.createElement("span");
      caption.textContent = right ? `${samples.labels[i]} ✓` : `${samples.labels[i]}→${samples.predicted[i]} ✗`;
      button.setAttribute("aria-label", `test ${what} ${samples.indices[i]}, labelled `
        + `${samples.labels[i]}; the network says ${samples.predicted[i]}, ${right ? "right" : "wrong"}`);
      button.append(canvas, caption);
      button.addEventListener("click", () => { choseSample(button); showSample(pixels); });
      box.append(button);
    });
    if (show && box.firstChild) box.firstChild.click();
  } catch (error) {
    $("samples-hint").textContent = error.message;
  }
}

function choseSample(button) {
  document.querySelectorAll("#samples button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
}

// The samples shown belong to a data set and an input shape; another network clears them.
const samplesKey = (network) => JSON.stringify([network.input, network.dataset, network.digits, state.checkpoint]);

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
  analyse(() => pixelsRequest(pixels), "sample", true);
}

// ---- the answer: input, probabilities, feature maps -------------------------------------------
function showAnalysis(result) {
  const input = $("input");
  if (!result) {
    input.getContext("2d").clearRect(0, 0, input.width, input.height);
    $("prediction").textContent = $("verdict").textContent = "";
    $("probabilities").replaceChildren();
    document.querySelectorAll(".stage canvas").forEach((c) => c.getContext("2d").clearRect(0, 0, c.width, c.height));
    document.querySelectorAll(".stage .legend").forEach((l) => l.replaceChildren());
    return;
  }
  const [h, w] = inputSize();
  paint(input, result.input, pictureColour(), Math.max(1, Math.floor(INPUT_SIZE / Math.max(h, w))));
  const share = (100 * result.probabilities[result.predicted]).toFixed(1);
  $("prediction").textContent = result.label;
  $("verdict").textContent = `says ${result.label} · ${share}%`;
  const output = state.network.stages.length - 1;
  $("probabilities").replaceChildren(...result.probabilities.map((p, i) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = i === result.predicted ? "best" : "";
    if (state.unit && state.unit.stage === output && state.unit.map === i) button.classList.add("chosen");
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
    button.setAttribute("aria-label", `${state.network.classes[i]}: ${(100 * p).toFixed(1)}%; show its arithmetic`);
    button.append(name, track, value);
    button.addEventListener("click", () => openUnit({ stage: output, map: i, row: 0, col: 0 }));
    item.append(button);
    return item;
  }));
  result.stages.forEach((stage, index) => paintStage(index, stage));
  if (state.field) showField(state.field);
}

// What each kind of stage does, in the chapter's terms.
const ABOUT = {
  conv: (s, n) => `Each of the ${s.shape[0]} feature maps is one filter of shared weights and a`
    + " bias slid over the layer below: every unit looks at its own local receptive field with"
    + ` the same weights as every other unit of its map (${count(s.shape[1] * s.shape[2])} units),`
    + ` so a map finds one feature anywhere. ${n}`,
  local: (s, n) => `Locally connected: the windows of a convolution, but every position has weights of its own (nothing shared). ${n}`,
  pool: (s) => `${s.name.split(" ")[0] === "max" ? "Max-pooling keeps the largest activation"
    : s.name.startsWith("l2") ? "L2 pooling keeps √(Σ a²)" : "Average pooling keeps the mean"} of each`
    + " region of each map on its own: whether a feature is there, not exactly where. No parameters.",
  batchnorm: (s, n) => `Batch normalisation: each map rescaled with statistics gathered in training, (a − mean)/√(variance + ε) · scale + shift. ${n}`,
  subsample: (s, n) => `LeNet-5's subsampling: each region's sum, times a trainable coefficient, plus a bias, through the squashing function. ${n}`,
  fc: (s, n) => `Fully connected: every unit weighs every activation of the layer below. ${n}`,
};

function parametersNote(layer, kind) {
  if (!layer || !layer.parameters) return "";
  const what = kind === "conv" ? "shared parameters" : kind === "local" ? "unshared parameters" : "parameters";
  return `${layer.formula} = ${count(layer.parameters)} ${what}.`;
}

// The structure of the maps panel follows the network; painting follows each input.
function buildMaps(network) {
  const box = $("maps");
  box.replaceChildren();
  let row = null;
  const stages = network.stages;
  stages.forEach((stage, index) => {
    if (index === stages.length - 1) return; // the output layer is the probabilities above
    const isMap = stage.shape.length === 3;
    if (!row || !isMap || ["conv", "local"].includes(stage.kind)) {
      row = document.createElement("div");
      row.className = "stage-row";
      box.append(row);
    }
    const layer = network.layers[stage.layer + 1];
    const sameLayer = stages[index - 1] && stages[index - 1].layer === stage.layer;
    const note = sameLayer ? "The layer's bias and σ come after the pooling, as in network3." : parametersNote(layer, stage.kind);
    const block = document.createElement("div");
    block.className = isMap ? "stage" : "stage units";
    block.id = `stage-${index}`;
    const title = document.createElement("h3");
    title.textContent = `${stage.name} → ${stage.shape.join("×")}`;
    const about = document.createElement("p");
    about.className = "about";
    about.textContent = (ABOUT[stage.kind] || (() => ""))(stage, note) || note;
    const scaleBox = document.createElement("div");
    scaleBox.className = "legend";
    const grid = document.createElement("div");
    grid.className = "grid";
    const maps = isMap ? stage.shape[0] : 1;
    const [rows, cols] = isMap ? stage.shape.slice(1) : unitGrid(stage.shape[0]);
    const scale = isMap ? Math.min(24, Math.max(3, Math.round(MAP_SIDE / Math.max(rows, cols)))) : 12;
    for (let map = 0; map < maps; map++) {
      const canvas = document.createElement("canvas");
      canvas.width = cols * scale; canvas.height = rows * scale; // the real size from the start
      canvas.tabIndex = 0;
      canvas.setAttribute("role", "button");
      canvas.setAttribute("aria-label", isMap ? `map ${map + 1} of ${stage.name}: open a unit's arithmetic (arrow keys move)`
        : `${stage.shape[0]} units of ${stage.name}: open a unit's arithmetic (arrow keys move)`);
      canvas.dataset.stage = index;
      canvas.dataset.map = map;
      const unitOf = (event) => {
        const cell = cellAt(canvas, event, rows, cols);
        return isMap ? { stage: index, map, row: cell.row, col: cell.col, rect: cell.rect }
          : { stage: index, map: cell.row * cols + cell.col, row: 0, col: 0, rect: cell.rect };
      };
      canvas.addEventListener("click", (event) => {
        const unit = unitOf(event);
        if (isMap || unit.map < stage.shape[0]) openUnit(unit);
      });
      canvas.addEventListener("mousemove", (event) => {
        const unit = unitOf(event);
        const values = state.last && state.last.stages[index].values;
        if (!values || (!isMap && unit.map >= stage.shape[0])) { hideTip(); return; }
        const value = isMap ? values[map][unit.row][unit.col] : values[unit.map];
        const where = isMap ? `map ${map + 1}, unit (${unit.row}, ${unit.col})` : `unit ${unit.map + 1}`;
        showTip(event, `${where}: ${fmt(value, 4)}`, unit.rect);
      });
      canvas.addEventListener("mouseleave", hideTip);
      canvas.addEventListener("keydown", (event) => keyUnit(event, index, map));
      if (isMap) linkFilter(canvas, index, map);
      grid.append(canvas);
    }
    block.append(title, about, scaleBox, grid);
    row.append(block);
  });
}

// The units of a vector stage, laid out in rows of up to 25.
const unitGrid = (n) => { const cols = Math.min(n, 25); return [Math.ceil(n / cols), cols]; };

function paintStage(index, stage) {
  const block = $(`stage-${index}`);
  if (!block) return;
  const scale = scaleFor(stage.min, stage.max);
  legend(block.querySelector(".legend"), scale, stage.min, stage.max);
  const canvases = block.querySelectorAll("canvas[data-map]");
  if (stage.shape.length === 3) {
    const factor = canvases[0].width / stage.shape[2];
    stage.values.forEach((map, m) => paint(canvases[m], map, scale.colour, factor));
  } else {
    const [, cols] = unitGrid(stage.values.length);
    const rows = [];
    for (let i = 0; i < stage.values.length; i += cols) rows.push(stage.values.slice(i, i + cols));
    const blank = [255, 255, 255];
    while (rows[rows.length - 1].length < cols) rows[rows.length - 1].push(null);
    paint(canvases[0], rows, (v) => (v == null ? blank : scale.colour(v)), 12);
  }
  markChosen();
}

// ---- filter i and map i: the same shared weights -----------------------------------------------
// The first conv layer's filters make the maps of its stages (its conv, and the pooling and
// batch norm right after, which keep the maps apart).
function linkedStages() {
  const filters = state.network && state.network.filters;
  if (!filters) return [];
  const stages = state.network.stages;
  const first = stages.findIndex((s) => s.layer === filters.layer);
  const linked = [];
  for (let i = first; i >= 0 && i < stages.length - 1; i++) {
    if (i > first && !["pool", "batchnorm", "subsample"].includes(stages[i].kind)) break;
    linked.push(i);
  }
  return linked;
}

function lightUp(map, on) {
  document.querySelectorAll(`#filters canvas[data-map="${map}"]`).forEach((c) => c.classList.toggle("linked", on));
  for (const stage of linkedStages()) {
    const canvas = document.querySelector(`#stage-${stage} canvas[data-map="${map}"]`);
    if (canvas) canvas.classList.toggle("linked", on);
  }
}

function linkFilter(canvas, stage, map) {
  canvas.addEventListener("mouseenter", () => { if (linkedStages().includes(stage)) lightUp(map, true); });
  canvas.addEventListener("mouseleave", () => lightUp(map, false));
}

// ---- a unit: its receptive field and its arithmetic ---------------------------------------------
function keyUnit(event, stage, map) {
  const shape = state.network.stages[stage].shape;
  const isMap = shape.length === 3;
  const here = state.unit && state.unit.stage === stage && (!isMap || state.unit.map === map) ? state.unit
    : { stage, map: isMap ? map : 0, row: isMap ? shape[1] >> 1 : 0, col: isMap ? shape[2] >> 1 : 0 };
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    openUnit(here);
  } else if (moves[event.key]) {
    event.preventDefault();
    const [dr, dc] = moves[event.key];
    const unit = isMap ? { ...here, row: clamp(here.row + dr, shape[1]), col: clamp(here.col + dc, shape[2]) }
      : { ...here, map: clamp(here.map + dc + dr * unitGrid(shape[0])[1], shape[0]) };
    state.unit = unit; // the next key moves on from here; the story follows once keys pause
    clearTimeout(keyUnit.timer);
    keyUnit.timer = setTimeout(() => openUnit(unit), 80);
  }
}
const clamp = (v, n) => Math.min(n - 1, Math.max(0, v));

async function openUnit(unit) {
  const { stage, map, row, col } = unit;
  state.unit = { stage, map, row, col };
  if (!state.last) { $("unit-body").textContent = "Draw or choose an input first: the arithmetic needs its numbers."; return; }
  const shape = state.network.stages[stage].shape;
  const asked = ++state.unitAsked, generation = state.generation;
  const zoomed = document.activeElement && document.activeElement.closest("#unit-body .zoom");
  try {
    const [story, field] = await Promise.all([
      api(`/api/unit?${query({ stage, map, row, col })}`, pixelsRequest(state.last.input)),
      shape.length === 3 ? api(`/api/receptive-field?${query({ stage, row, col })}`) : null,
    ]);
    if (asked !== state.unitAsked || generation !== state.generation) return; // a newer one was asked
    state.story = story;
    document.querySelectorAll("#filters canvas.shared").forEach((c) => c.classList.remove("shared"));
    state.field = field && { stage, map, row, col, rows: shape[1], cols: shape[2], ...field };
    showAnalysis(state.last);
    if (!state.field) $("field-info").textContent = "";
    showStory(story);
    if (zoomed) document.querySelector("#unit-body .zoom canvas")?.focus(); // arrow keys go on
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
    + ` ${field.left}–${field.right} (${h}×${w} pixels): its receptive field, outlined on the input.`;
}

// The chosen unit outlined on its map, and the window it reads outlined on the maps below.
function markChosen() {
  document.querySelectorAll(".stage canvas.window").forEach((c) => c.classList.remove("window"));
  const story = state.story, unit = state.unit;
  if (!unit || !story || story.stage !== unit.stage || story.unit.map !== unit.map
      || story.unit.row !== unit.row || story.unit.col !== unit.col) return;
  const shape = state.network.stages[unit.stage].shape;
  const canvas = document.querySelector(`#stage-${unit.stage} canvas[data-map="${shape.length === 3 ? unit.map : 0}"]`);
  if (canvas && shape.length === 3) outline(canvas, shape[1], shape[2], unit.row, unit.col, 1, 1, "#ffb000");
  if (canvas && shape.length !== 3) {
    const [, cols] = unitGrid(shape[0]);
    outline(canvas, canvas.height / 12, cols, Math.floor(unit.map / cols), unit.map % cols, 1, 1, "#ffb000");
  }
  if (!story.window || story.below < 0) return;
  const below = state.network.stages[story.below];
  const maps = story.pool || story.kind === "subsample" ? [unit.map]
    : story.connected || [...Array(below.shape[0]).keys()];
  for (const m of maps) {
    const c = document.querySelector(`#stage-${story.below} canvas[data-map="${m}"]`);
    if (!c) continue;
    c.classList.add("window");
    const w = story.window;
    outline(c, below.shape[1], below.shape[2], w.top, w.left, w.size, w.size, "#ff00ff");
  }
}

function outline(canvas, rows, cols, row, col, h, w, colour) {
  const ctx = canvas.getContext("2d");
  const sx = canvas.width / cols, sy = canvas.height / rows;
  for (const [c, width] of [["#000", 4], [colour, 2]]) {
    ctx.strokeStyle = c;
    ctx.lineWidth = width;
    ctx.strokeRect(col * sx, row * sy, w * sx, h * sy);
  }
}

// ---- the story of one unit, in the chapter's notation -------------------------------------------
const UNIT_PROMPT = $("unit-body").firstElementChild.cloneNode(true); // what the page says at first
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

function cellTable(caption, rows, scale, options = {}) {
  const table = el("table", { id: options.id || "" }, el("caption", { textContent: caption }));
  rows.forEach((row, i) => {
    const tr = el("tr");
    row.forEach((v, j) => {
      const td = el("td", { textContent: fmt(v, 3) });
      const inside = !options.inside || options.inside[i][j];
      if (!inside) { td.className = "pad"; td.textContent = "pad"; td.title = "padding: a zero outside the picture"; }
      else {
        const colour = scale.colour(v);
        td.style.background = css(colour);
        td.style.color = textOn(colour);
      }
      td.dataset.cell = `${i},${j}`;
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

function showStory(story) {
  const body = $("unit-body");
  body.replaceChildren();
  const unit = story.unit;
  const where = story.kind === "softmax" ? `class ${state.network.classes[unit.map]}`
    : "window" in story || story.kind === "batchnorm" && state.network.stages[story.stage].shape.length === 3
      ? `unit (${unit.row}, ${unit.col}) of map ${unit.map + 1}` : `unit ${unit.map + 1}`;
  body.append(el("h3", { textContent: `${where} in ${story.name}` }));
  const zoomed = state.network.stages[story.stage].shape.length === 3;
  if (zoomed) body.append(zoom(story));
  const explain = STORIES[story.pool ? "pool" : story.kind] || STORIES.fc;
  explain(body, story);
  body.append(el("p", { className: "sums", id: "unit-value",
    textContent: `The network's own value for this unit: ${fmt(story.value, 6)}` }));
}

// The chosen map, enlarged: a unit is easy to click or tap, and arrow keys move it.
function zoom(story) {
  const { stage, unit: { map } } = story;
  const shape = state.network.stages[stage].shape;
  const values = state.last.stages[stage].values[map];
  const stageInfo = state.last.stages[stage];
  const scale = scaleFor(stageInfo.min, stageInfo.max);
  const factor = Math.max(8, Math.floor(ZOOM_SIDE / Math.max(shape[1], shape[2])));
  const canvas = el("canvas", { tabIndex: 0 });
  canvas.setAttribute("role", "button");
  canvas.setAttribute("aria-label", `map ${map + 1} enlarged: arrow keys move the unit`);
  paint(canvas, values, scale.colour, factor);
  outline(canvas, shape[1], shape[2], story.unit.row, story.unit.col, 1, 1, "#ffb000");
  canvas.addEventListener("click", (event) => {
    const cell = cellAt(canvas, event, shape[1], shape[2]);
    openUnit({ stage, map, row: cell.row, col: cell.col });
  });
  canvas.addEventListener("mousemove", (event) => {
    const cell = cellAt(canvas, event, shape[1], shape[2]);
    showTip(event, `unit (${cell.row}, ${cell.col}): ${fmt(values[cell.row][cell.col], 4)}`, cell.rect);
  });
  canvas.addEventListener("mouseleave", hideTip);
  canvas.addEventListener("keydown", (event) => keyUnit(event, stage, map));
  return el("div", { className: "zoom" }, canvas);
}

const sigma = (name) => ({ relu: "ReLU: max(0, z)", sigmoid: "σ(z) = 1/(1 + e^−z)", tanh: "tanh z",
  linear: "z itself", lecun: "1.7159·tanh(2z/3)" }[name] || name);
const formula = (text) => el("p", { className: "formula", innerHTML: text });

const STORIES = {
  conv(body, s) {
    const depth = s.weights.length;
    const k = s.window.size;
    const map = s.unit.map + 1;
    const below = s.below < 0 ? "the input" : state.network.stages[s.below].name;
    body.append(formula(`a = σ(b + Σ<sub>l,m</sub> w<sub>l,m</sub> · a<sub>j+l, k+m</sub>)`
      + ` over the ${k}×${k}${depth > 1 ? `×${depth}` : ""} local receptive field in ${below}`
      + (s.standardised ? " (the input standardised: (x − mean)/std)" : "")));
    body.append(el("p", { className: "hint", textContent: s.shared
      ? `These ${count(depth * k * k)} weights and the bias are shared by every unit of map ${map}: the same filter`
        + `${s.below < 0 ? " (highlighted among the filters)" : ""} slid to another place.`
      : "These weights belong to this position alone: a locally connected layer shares nothing." }));
    let channel = 0;
    const cells = el("div", { className: "cells" });
    const draw = () => {
      const inputs = s.inputs[channel], weights = s.weights[channel], products = s.products[channel];
      const bound = (rows) => Math.max(...rows.flat().map(Math.abs)) || 1;
      const signed = (rows) => scaleFor(-bound(rows), bound(rows));
      cells.replaceChildren(
        cellTable(`a: the ${k}×${k} window${depth > 1 ? ` of input map ${channel + 1}` : ""}`, inputs, signed(inputs), { inside: s.window.inside, id: "unit-inputs" }),
        cellTable(s.shared ? "w: the shared weights" : "w: this position's own weights", weights, signed(weights), { id: "unit-weights" }),
        cellTable("w · a", products, signed(products), { inside: s.window.inside, id: "unit-products" }),
      );
    };
    if (depth > 1) {
      const select = el("select", { id: "unit-channel" });
      s.channel_sums.forEach((sum, c) => select.append(new Option(`input map ${c + 1}: Σ w·a = ${fmt(sum)}`, c)));
      select.addEventListener("change", () => { channel = Number(select.value); draw(); });
      body.append(el("label", { textContent: "show " }, select));
      if (s.connected) body.append(el("p", { className: "hint", textContent: `This map sees input maps ${s.connected.map((c) => c + 1).join(", ")} only (LeNet-5's connection table); the other weights are 0.` }));
    }
    draw();
    body.append(cells);
    const sums = el("p", { className: "sums", id: "unit-sums" });
    sums.textContent = `Σ w·a = ${fmt(s.sum, 5)}${depth > 1 ? ` (over all ${depth} input maps)` : ""};`
      + ` z = Σ + b = ${fmt(s.sum, 5)} + ${fmt(s.bias, 5)} = ${fmt(s.z, 5)};`
      + ` a = ${sigma(s.activation)} = ${fmt(s.a, 5)}`;
    body.append(sums, stepper(cells, () => channel, s));
    if (s.below < 0 && state.network.filters && state.network.filters.layer === state.network.stages[s.stage].layer) {
      document.querySelectorAll("#filters canvas").forEach((c) => c.classList.toggle("shared", Number(c.dataset.map) === s.unit.map));
    }
  },
  local(body, s) { STORIES.conv(body, s); },
  pool(body, s) {
    const k = s.window.size;
    const how = { max: "max", l2: "√(Σ a²)", avg: "mean" }[s.pool];
    body.append(formula(`${s.pool === "max" ? "max-pooling" : s.pool === "l2" ? "L2 pooling" : "average pooling"}: a = ${how} over a ${k}×${k} region of map ${s.unit.map + 1} below`));
    const rows = s.inputs;
    const table = cellTable(s.bias != null ? "w ∗ a of the region (before the bias)" : "the region", rows, scaleFor(Math.min(0, ...rows.flat()), Math.max(...rows.flat())), { id: "unit-inputs" });
    if (s.winner) table.rows[s.winner[0]].cells[s.winner[1]].classList.add("won");
    body.append(el("div", { className: "cells" }, table));
    let text = `${how} = ${fmt(s.pooled, 5)}${s.winner ? ` (the outlined cell won)` : ""}`;
    if (s.bias != null) text += `; z = ${fmt(s.pooled, 5)} + b ${fmt(s.bias, 5)} = ${fmt(s.z, 5)}; a = ${sigma(s.activation)} = ${fmt(s.a, 5)}`;
    body.append(el("p", { className: "sums", id: "unit-sums", textContent: text }));
  },
  subsample(body, s) {
    body.append(formula("a = σ(c · Σ a + b): the region's sum, a trainable coefficient c and bias b"));
    const rows = s.inputs;
    body.append(el("div", { className: "cells" }, cellTable(`the ${s.window.size}×${s.window.size} region`, rows, scaleFor(Math.min(0, ...rows.flat()), Math.max(...rows.flat())), { id: "unit-inputs" })));
    body.append(el("p", { className: "sums", id: "unit-sums", textContent: `Σ a = ${fmt(s.sum, 5)}; z = ${fmt(s.coefficient, 5)} · ${fmt(s.sum, 5)} + ${fmt(s.bias, 5)} = ${fmt(s.z, 5)}; a = ${sigma(s.activation)} = ${fmt(s.a, 5)}` }));
  },
  batchnorm(body, s) {
    body.append(formula("a = (x − mean) / √(variance + ε) · scale + shift"));
    body.append(el("p", { className: "sums", id: "unit-sums", textContent: `(${fmt(s.input, 5)} − ${fmt(s.mean, 5)}) / √(${fmt(s.variance, 5)} + ${s.eps}) = ${fmt(s.normalised, 5)}; · ${fmt(s.scale, 5)} + ${fmt(s.shift, 5)} = ${fmt(s.a, 5)}` }));
  },
  fc(body, s) {
    body.append(formula(`a = σ(b + Σ<sub>j</sub> w<sub>j</sub> a<sub>j</sub>) over all ${count(s.count)} activations below`));
    body.append(terms(s));
    body.append(el("p", { className: "sums", id: "unit-sums", textContent: `z = ${fmt(s.sum, 5)} + b ${fmt(s.bias, 5)} = ${fmt(s.z, 5)}; a = ${sigma(s.activation)} = ${fmt(s.a, 5)}` }));
  },
  softmax(body, s) {
    const classes = state.network.classes;
    body.append(formula("p<sub>j</sub> = e<sup>z<sub>j</sub></sup> / Σ<sub>k</sub> e<sup>z<sub>k</sub></sup>, with z<sub>j</sub> = b<sub>j</sub> + Σ w<sub>j,i</sub> a<sub>i</sub>"));
    const table = el("table", { id: "unit-softmax" }, el("caption", { textContent: "every class: weighted input z, e^(z − max z), probability" }),
      el("tr", {}, ...["class", "z", "e^(z − max)", "p"].map((t) => el("th", { textContent: t }))));
    s.logits.forEach((z, j) => {
      const tr = el("tr", {}, ...[classes[j], fmt(z, 4), fmt(s.exponentials[j], 4), `${(100 * s.probabilities[j]).toFixed(2)}%`].map((t) => el("td", { textContent: t })));
      if (j === s.unit.map) tr.style.fontWeight = "600";
      table.append(tr);
    });
    body.append(el("div", { className: "table-wrap" }, table));
    body.append(el("p", { className: "sums", id: "unit-sums", textContent: `Σ e^(z − max) = ${fmt(s.exp_sum, 5)}; p(${classes[s.unit.map]}) = ${fmt(s.exponentials[s.unit.map], 5)} / ${fmt(s.exp_sum, 5)} = ${fmt(s.a, 5)}` }));
    body.append(el("p", { className: "hint", textContent: `z for ${classes[s.unit.map]} = ${fmt(s.sum, 5)} + b ${fmt(s.bias, 5)} = ${fmt(s.z, 5)}, from these terms:` }), terms(s));
  },
};

// A fully-connected unit's largest terms w·a, one by one, and the rest in one sum.
function terms(s) {
  const table = el("table", { id: "unit-terms" }, el("caption", { textContent: `the ${s.top.length} largest of ${count(s.count)} terms w·a` }),
    el("tr", {}, ...["input (map, row, col)", "a", "w", "w·a"].map((t) => el("th", { textContent: t }))));
  for (const t of s.top) {
    const at = t.at.length === 3 ? `(${t.at[0] + 1}, ${t.at[1]}, ${t.at[2]})` : `${t.at[0] + 1}`;
    table.append(el("tr", {}, ...[at, fmt(t.input, 4), fmt(t.weight, 4), fmt(t.product, 4)].map((x) => el("td", { textContent: x }))));
  }
  table.append(el("tr", {}, el("td", { textContent: `the other ${count(s.count - s.top.length)}` }), el("td"), el("td"), el("td", { textContent: fmt(s.rest, 4) })));
  if (s.input_scale !== 1) table.append(el("caption", { textContent: `inputs scaled by ${s.input_scale} (dropout, network3's way)` }));
  return el("div", { className: "table-wrap" }, table);
}

// Step through a window's products one at a time, keeping the running sum.
function stepper(cells, channel, s) {
  const button = el("button", { type: "button", textContent: "Step through the sum" });
  const line = el("p", { className: "sums", id: "unit-running" });
  let timer = null;
  button.addEventListener("click", () => {
    clearInterval(timer);
    const k = s.window.size;
    const c = channel();
    let step = 0, total = s.channel_sums.slice(0, c).reduce((a, b) => a + b, 0);
    const before = total;
    timer = setInterval(() => {
      cells.querySelectorAll("td.step").forEach((td) => td.classList.remove("step"));
      if (step === k * k) {
        clearInterval(timer);
        line.textContent = `Σ over input map${s.weights.length > 1 ? "s 1–" + (c + 1) : ""}: ${fmt(total, 5)}`
          + (s.weights.length > 1 ? ` (all ${s.weights.length} maps: ${fmt(s.sum, 5)})` : "");
        return;
      }
      const i = Math.floor(step / k), j = step % k;
      cells.querySelectorAll(`td[data-cell="${i},${j}"]`).forEach((td) => td.classList.add("step"));
      total += s.products[c][i][j];
      line.textContent = `${before ? fmt(before, 4) + " + " : ""}… + w·a at (${i}, ${j}) = ${fmt(s.weights[c][i][j], 3)} × ${fmt(s.inputs[c][i][j], 3)}: running Σ = ${fmt(total, 5)}`;
      step++;
    }, 250);
  });
  return el("div", {}, button, line);
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
    await useCheckpoint(listing.default, listing);
  } else if (current.modified !== state.modified) {
    await useCheckpoint(current.name, listing); // rewritten by a running `cnnlab train`: show the new weights
  }
  select.value = state.checkpoint;
}

async function useCheckpoint(name, listing = null) {
  state.checkpoint = name;
  listing = listing || await api("/api/checkpoints");
  state.modified = listing.checkpoints.find((c) => c.name === name)?.modified;
  const network = await api(`/api/network?${query({})}`);
  const inputKey = (n) => JSON.stringify([n.input, n.digits]);
  const sameInput = state.network && inputKey(state.network) === inputKey(network);
  state.network = network;
  state.generation++;
  state.last = state.field = state.story = null;
  if (state.unit && state.unit.stage >= network.stages.length) state.unit = null;
  setMode(network);
  if (state.samplesFor !== samplesKey(network)) {
    $("samples").replaceChildren(); // test images of another data set, or marked by another network
    state.samplesFor = null;
  }
  if (!sameInput) {
    $("preview").hidden = true;
    state.unit = null;
    if (state.lastKind !== "upload") { // a drawing or a sample fits only its own input
      state.lastRequest = state.lastKind = state.pending = null;
      clearPad();
    }
  }
  const accuracy = network.test_accuracy == null ? "" : ` · test ${(100 * network.test_accuracy).toFixed(2)}%`;
  const epoch = network.epoch == null ? "" : ` (epoch ${network.epoch})`;
  $("network-info").textContent = `${network.arch}${accuracy}${epoch}`;
  showLayers(network.layers);
  showFilters(network.filters);
  buildMaps(network);
  $("field-info").textContent = "";
  $("unit-body").replaceChildren(UNIT_PROMPT.cloneNode(true));
  showAnalysis(null);
  say("");
  followRun();
  const again = state.lastRequest; // the same input, through the new network
  if (!state.samplesFor) await loadSamples(!again); // a page opens with a test digit loaded
  if (again) analyse(again, state.lastKind, true);
}

function showLayers(layers) {
  const table = $("layers");
  const head = ["layer", "output", "parameters", "= how", "FLOPs", "receptive field"];
  table.replaceChildren(el("tr", {}, ...head.map((t) => el("th", { textContent: t, scope: "col" }))));
  for (const l of layers) {
    table.append(el("tr", {}, ...[l.name, l.shape.join("×"), count(l.parameters), l.formula, count(l.flops), l.receptive_field]
      .map((t) => el("td", { textContent: t }))));
  }
  const total = layers.reduce((a, l) => a + l.parameters, 0);
  table.append(el("tr", {}, el("th", { textContent: "total", scope: "row" }), el("td"), el("td", { textContent: count(total) }), el("td"), el("td", { textContent: count(layers.reduce((a, l) => a + l.flops, 0)) }), el("td")));
}

function showFilters(filters) {
  const box = $("filters");
  box.replaceChildren();
  $("filters-legend").replaceChildren();
  if (!filters) { box.textContent = "This network has no convolutional layer."; $("filters-hint").textContent = ""; return; }
  const [maps, depth, size] = filters.shape;
  $("filters-hint").textContent = `The ${maps} filters of ${filters.name}: the ${size}×${size}`
    + `${depth > 1 ? `×${depth}` : ""} weights each feature map shares, one filter per map`
    + (depth === 3 ? ", each shown as a colour patch: grey = 0, more red, green or blue = a larger weight on that channel."
      : " (scale below). Hover over a filter to see its map light up.");
  const all = filters.weights.flat(3);
  const bound = Math.max(...all.map(Math.abs)) || 1;
  const scale = scaleFor(-bound, bound);
  if (depth !== 3) legend($("filters-legend"), scale, Math.min(...all), Math.max(...all));
  const factor = Math.max(4, Math.round(40 / size));
  filters.weights.forEach((filter, m) => {
    const canvas = el("canvas", { tabIndex: 0 });
    canvas.dataset.map = m;
    canvas.setAttribute("aria-label", `filter ${m + 1}: the weights of map ${m + 1}`);
    if (depth === 3) {
      const rgb = filter[0].map((row, y) => row.map((_, x) => [0, 1, 2].map((c) => filter[c][y][x])));
      paint(canvas, rgb, (v) => v.map((c) => 255 * (c / bound + 1) / 2), factor);
    } else {
      paint(canvas, filter[0], scale.colour, factor);
    }
    canvas.addEventListener("mousemove", (event) => {
      const cell = cellAt(canvas, event, size, size);
      showTip(event, `filter ${m + 1}, w(${cell.row}, ${cell.col}) = ${fmt(filter[0][cell.row][cell.col], 4)}${depth > 1 ? " (first channel)" : ""}`, cell.rect);
    });
    for (const [on, events] of [[true, ["mouseenter", "focus"]], [false, ["mouseleave", "blur"]]]) {
      for (const e of events) canvas.addEventListener(e, () => { lightUp(m, on); if (!on) hideTip(); });
    }
    box.append(canvas);
  });
}

$("checkpoint").addEventListener("change", (event) => useCheckpoint(event.target.value).catch((e) => say(e.message)));

// ---- the geometry playground ----------------------------------------------------------------------
const geometryInputs = ["side", "depth", "size", "stride", "padding", "maps", "pool", "hidden"];
const playground = { answer: null, params: null, step: 0, playing: true, asked: 0 };

async function updateGeometry() {
  const params = Object.fromEntries(geometryInputs.map((n) => [n, $(`g-${n}`).value || "0"]));
  const asked = ++playground.asked;
  try {
    const answer = await api(`/api/geometry?${new URLSearchParams(params)}`);
    if (asked !== playground.asked) return; // the form changed again meanwhile
    playground.answer = answer;
    playground.params = params;
    playground.step = 0;
    $("g-error").textContent = "";
    const { conv, pool, local, fc } = answer;
    const [, side] = answer.input;
    const p = Number(params.padding), k = Number(params.size), s = Number(params.stride);
    $("g-sizes").textContent = `(${side} + 2·${p} − ${k}) / ${s} + 1 = ${conv.shape[1]} positions a side:`
      + ` ${conv.shape.join("×")} feature maps${pool ? `, pooled ${params.pool}×${params.pool} to ${pool.shape.join("×")}` : ""}.`;
    const table = $("g-counts");
    table.replaceChildren(el("tr", {}, ...["layer", "parameters", "= how"].map((t) => el("th", { textContent: t, scope: "col" }))));
    for (const [what, row] of [["shared weights (conv)", conv], ["unshared (locally connected)", local], [`fully connected, ${params.hidden} units`, fc]]) {
      table.append(el("tr", {}, el("td", { textContent: what }), el("td", { textContent: count(row.parameters), className: "g-count" }), el("td", { textContent: row.formula })));
    }
  } catch (error) {
    if (asked !== playground.asked) return;
    playground.answer = null;
    $("g-error").textContent = error.message;
  }
}

// The input (with its padding, grey) on the left, the window at one position; the feature map
// on the right, the unit that position makes lit.
function drawGeometry() {
  const canvas = $("g-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const answer = playground.answer;
  if (!answer) return;
  const side = answer.input[1];
  const { padding: p, size: k, stride: s } = Object.fromEntries(Object.entries(playground.params).map(([n, v]) => [n, Number(v)]));
  const out = answer.conv.shape[1];
  const total = side + 2 * p;
  const room = canvas.height;
  const cell = room / total;
  const grid = (x0, n, size, fill) => {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        ctx.fillStyle = fill(i, j);
        ctx.fillRect(x0 + j * size, i * size, size, size);
      }
    }
    ctx.strokeStyle = "#bbb";
    ctx.lineWidth = 0.5;
    for (let i = 0; i <= n; i++) {
      ctx.beginPath(); ctx.moveTo(x0, i * size); ctx.lineTo(x0 + n * size, i * size); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(x0 + i * size, 0); ctx.lineTo(x0 + i * size, n * size); ctx.stroke();
    }
  };
  const padded = (i, j) => i < p || j < p || i >= p + side || j >= p + side;
  grid(0, total, cell, (i, j) => (padded(i, j) ? "#e0e0e0" : "#fff"));
  const step = playground.step % (out * out);
  const row = Math.floor(step / out), col = step % out;
  ctx.fillStyle = "rgba(179, 80, 0, 0.35)";
  ctx.fillRect(col * s * cell, row * s * cell, k * cell, k * cell);
  ctx.strokeStyle = "#b35000";
  ctx.lineWidth = 2;
  ctx.strokeRect(col * s * cell, row * s * cell, k * cell, k * cell);
  const x0 = room + 24, outCell = Math.min(cell * Math.max(1, s), (canvas.width - x0) / out);
  grid(x0, out, outCell, (i, j) => (i === row && j === col ? "#b35000" : i * out + j < step ? "#f3d9c4" : "#fff"));
  canvas.setAttribute("aria-label", `the ${k}×${k} window at position (${row}, ${col}) of ${out}×${out}`);
}

$("geometry-form").addEventListener("input", () => updateGeometry().then(drawGeometry));
$("geometry-form").addEventListener("submit", (event) => event.preventDefault());
$("g-play").addEventListener("click", () => {
  playground.playing = !playground.playing;
  $("g-play").textContent = playground.playing ? "Pause" : "Play";
});
setInterval(() => { if (playground.playing && playground.answer) { playground.step++; drawGeometry(); } }, 200);

// ---- training runs, followed live ---------------------------------------------------------------
// The run of the chosen checkpoint, if it belongs to one of the folder's runs.
function runOf(checkpoint) {
  if (!checkpoint) return null;
  const slash = checkpoint.lastIndexOf("/");
  return slash < 0 ? "." : checkpoint.slice(0, slash);
}

function followRun() {
  const run = runOf(state.checkpoint);
  const select = $("run");
  if ([...select.options].some((o) => o.value === run) && select.value !== run) {
    select.value = run;
    showRun(run).catch((e) => say(e.message));
  }
}

async function loadRuns() {
  const { runs } = await api("/api/runs");
  const select = $("run");
  runs.sort((a, b) => b.modified - a.modified);
  const names = runs.map((r) => r.name);
  let chosen = select.value;
  const fresh = state.knownRuns ? names.filter((n) => !state.knownRuns.has(n)) : [];
  const firstLoad = !state.knownRuns;
  state.knownRuns = new Set(names);
  if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((name) => new Option(name, name)));
  }
  if (fresh.length) chosen = fresh[0]; // a run started while the page was open: follow it
  else if (firstLoad || !names.includes(chosen)) chosen = names.includes(runOf(state.checkpoint)) ? runOf(state.checkpoint) : names[0] || "";
  select.value = chosen;
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
  chart($("loss-chart"), "training loss", rows, [["train_loss", "train", "#6a329f"]], false);
  chart($("accuracy-chart"), "accuracy (%)", rows, [
    ["train_accuracy", "train", "#1f5b99"],
    ["validation_accuracy", "validation", "#a04a00"],
    ["test_accuracy", "test", "#1b6e1b"],
  ], true);
}

$("run").addEventListener("change", (event) => showRun(event.target.value).catch((e) => say(e.message)));

// A small line chart: whole epochs across, one line per series, a legend; drawn at the canvas's
// size on the screen, so its text stays legible on a phone.
function chart(canvas, title, rows, series, percent) {
  const ratio = window.devicePixelRatio || 1;
  const W = canvas.clientWidth || 520, H = canvas.clientHeight || 260;
  canvas.width = W * ratio; canvas.height = H * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const L = 52, R = W < 420 ? 12 : 100, T = 28, B = W < 420 ? 58 : 36;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "13px system-ui, sans-serif";
  ctx.fillStyle = "#1d1d1f";
  ctx.fillText(title, L, 18);
  const points = series.map(([key]) => rows.filter((r) => r[key] != null)
    .map((r) => [r.epoch, percent ? 100 * r[key] : r[key]]));
  const values = points.flat().map((p) => p[1]);
  if (!values.length) { ctx.fillText("no finished epoch yet", L, H / 2); return; }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= percent ? 0.5 : 0.05 * Math.abs(lo) || 0.5; hi += percent ? 0.5 : 0.05 * Math.abs(hi) || 0.5; }
  const span = hi - lo; lo -= 0.05 * span; hi += 0.05 * span;
  if (percent) { hi = Math.min(hi, 100); lo = Math.max(lo, 0); }
  if (!percent) lo = Math.max(lo, 0);
  const epochs = Math.max(...rows.map((r) => r.epoch));
  canvas.dataset.axes = JSON.stringify({ lo, hi, epochs }); // what the axes span, for the tests
  const x = epochs === 1 ? () => L + (W - L - R) / 2 : (e) => L + (e - 1) / (epochs - 1) * (W - L - R);
  const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
  ctx.strokeStyle = "#ccc";
  ctx.fillStyle = "#555";
  ctx.font = "12px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(W - R, y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(percent ? 2 : 3), 2, y(v) + 4);
  }
  const step = Math.max(1, Math.ceil(epochs / 10));
  for (let e = 1; e <= epochs; e += step) ctx.fillText(String(e), x(e) - 3, H - B + 16);
  ctx.fillText("epoch", (W - R + L) / 2 - 14, H - B + 32);
  series.forEach(([, label, colour], i) => {
    ctx.strokeStyle = ctx.fillStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points[i].forEach(([e, v], j) => (j ? ctx.lineTo(x(e), y(v)) : ctx.moveTo(x(e), y(v))));
    ctx.stroke();
    points[i].forEach(([e, v]) => { ctx.beginPath(); ctx.arc(x(e), y(v), 3.5, 0, 2 * Math.PI); ctx.fill(); });
    if (!points[i].length) return;
    ctx.font = "12px system-ui, sans-serif";
    if (W < 420) ctx.fillText(`— ${label}`, L + 90 * i, H - 8);
    else ctx.fillText(`— ${label}`, W - R + 10, T + 10 + 16 * i);
  });
  canvas.setAttribute("aria-label", `${title} per epoch: ${series.map(([key, label]) => {
    const lastPoint = points[series.findIndex((s) => s[0] === key)].slice(-1)[0];
    return lastPoint ? `${label} ${lastPoint[1].toFixed(percent ? 2 : 4)} at epoch ${lastPoint[0]}` : "";
  }).filter(Boolean).join(", ")}`);
}

// ---- start, and keep up with a running `cnnlab train` --------------------------------------------
clearPad();
updateGeometry().then(drawGeometry);
loadCheckpoints().catch((error) => say(error.message)).then(() => loadRuns()).catch((error) => say(error.message));
setInterval(() => {
  loadRuns().catch(() => {});
  loadCheckpoints().catch(() => {});
}, 3000);
