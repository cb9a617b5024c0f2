// cnnlab serve: draw on the canvas (mouse, pen or touch through pointer events), and the
// top-k probabilities update while you draw. The server does all preprocessing, with the
// spec stored in the checkpoint, so the page sends the canvas as it is: white ink on black.
"use strict";

const DEBOUNCE_MS = 120;  // while drawing: at most one request per pause this long
const INK = "#fff";
const PAPER = "#000";

// Words: the server writes the page in the reader's language (?lang=es, else Accept-Language) and
// puts this script's messages in a JSON block; t("English text", {name: value}) looks them up.
// Every string a reader sees goes through t(), so scripts/i18n.py extracts it (Babel's JS extractor).
const CATALOG = (() => {
  const block = document.getElementById("cnnlab-catalog");
  try { return block ? JSON.parse(block.textContent) : {}; } catch (err) { return {}; }
})();
const LANG = document.documentElement.lang || "en";

function t(text, values) {
  const s = Object.prototype.hasOwnProperty.call(CATALOG, text) ? CATALOG[text] : text;
  return values ? s.replace(/\{(\w+)\}/g, (m, k) => (k in values ? String(values[k]) : m)) : s;
}

// Numbers the reader's way: "98.7%" in English, "98,7 %" in Spanish.
function percent(p, digits = 1) {
  if (LANG === "en") return `${(100 * p).toFixed(digits)}%`;  // exactly what the page always wrote
  return new Intl.NumberFormat(LANG, { style: "percent", minimumFractionDigits: digits,
                                       maximumFractionDigits: digits }).format(p);
}

function integer(n) {
  return Number(n).toLocaleString(LANG === "en" ? undefined : LANG);
}

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const preview = $("upload-preview");
const kSelect = $("k");

let drawing = false;
let hasInk = false;
let last = null;
let timer = null;
let inFlight = false;   // at most one request at a time ...
let pending = null;     // ... and only the newest waiting one is kept
let previewUrl = null;

function clearPad() {
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
}

function lineWidth() {
  return Math.max(8, Math.round(pad.width / 15));
}

function point(ev) {
  const r = pad.getBoundingClientRect();
  return { x: (ev.clientX - r.left) * (pad.width / r.width), y: (ev.clientY - r.top) * (pad.height / r.height) };
}

function strokeTo(p) {
  ctx.strokeStyle = INK;
  ctx.lineWidth = lineWidth();
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  last = p;
  hasInk = true;
}

function hidePreview() {
  preview.hidden = true;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
}

pad.addEventListener("pointerdown", (ev) => {
  if (ev.button !== undefined && ev.button > 0) return;  // left button, pen or finger only
  ev.preventDefault();
  if (!preview.hidden) { hidePreview(); clearPad(); }
  pad.setPointerCapture(ev.pointerId);
  drawing = true;
  last = point(ev);
  strokeTo({ x: last.x + 0.01, y: last.y });  // a tap leaves a dot
  schedule();
});

pad.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  ev.preventDefault();
  // Coalesced events keep fast strokes smooth on high-rate mice and touch screens.
  const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [];
  for (const e of events.length ? events : [ev]) strokeTo(point(e));
  schedule();
});

function endStroke(ev) {
  if (!drawing) return;
  drawing = false;
  if (pad.hasPointerCapture && pad.hasPointerCapture(ev.pointerId)) pad.releasePointerCapture(ev.pointerId);
  clearTimeout(timer);
  predictCanvas();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(predictCanvas, DEBOUNCE_MS);
}

function predictCanvas() {
  if (!hasInk) return;
  pad.toBlob((blob) => { send(blob, "image/png"); announce(blob, "image/png"); }, "image/png");
}

// inside.js (the layer panel) asks /api/explain about the same image, with its own newest-only queue.
function announce(body, contentType) {
  document.dispatchEvent(new CustomEvent("cnnlab:image", { detail: { body, contentType } }));
}

function send(body, contentType) {
  if (inFlight) { pending = [body, contentType]; return; }
  inFlight = true;
  const headers = contentType ? { "Content-Type": contentType } : {};
  fetch(`/api/predict?top_k=${encodeURIComponent(kSelect.value || 3)}`, { method: "POST", headers, body })
    .then(async (res) => {
      const data = await res.json().catch(() => ({ detail: `HTTP ${res.status}` }));
      if (!res.ok) throw new Error(data.detail || `HTTP ${res.status}`);
      show(data);
    })
    .catch((err) => setStatus(err.message, true))
    .finally(() => {
      inFlight = false;
      if (pending) { const [b, t] = pending; pending = null; send(b, t); }
    });
}

function show(data) {
  $("label").textContent = data.label;
  $("confidence").textContent = t("{percent} sure", { percent: percent(data.prob) });
  $("seen").src = data.input_png;
  const bars = $("bars");
  bars.replaceChildren(...data.top_k.map((c) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * c.prob).toFixed(1)}%`;
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = percent(c.prob);
    li.append(name, track, pct);
    return li;
  }));
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions || 0) + 1);
  setStatus("");
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function resetResult() {
  $("label").textContent = "–";
  $("confidence").textContent = "";
  $("seen").removeAttribute("src");
  $("bars").replaceChildren();
}

$("clear").addEventListener("click", () => {
  clearTimeout(timer);
  pending = null;
  hidePreview();
  clearPad();
  resetResult();
  setStatus("");
  document.dispatchEvent(new CustomEvent("cnnlab:clear"));
});

function upload(file) {
  if (!file) return;
  hidePreview();
  clearPad();
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  preview.hidden = false;
  const form = new FormData();
  form.append("file", file, file.name);
  send(form, null);  // the browser sets multipart/form-data with its boundary
  announce(form, null);
}

$("upload").addEventListener("change", (ev) => { upload(ev.target.files[0]); ev.target.value = ""; });

const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  upload(ev.dataTransfer.files[0]);
});

kSelect.addEventListener("change", () => { if (hasInk) predictCanvas(); });

async function loadModel() {
  try {
    const res = await fetch("/api/model");
    const info = await res.json();
    const m = info.model || {};
    const parts = [m.name, m.dataset && t("trained on {dataset}", { dataset: m.dataset }),
                   m.epoch && t("epoch {epoch}", { epoch: m.epoch }),
                   m.parameters && t("{n} parameters", { n: integer(m.parameters) }),
                   typeof m.test_accuracy === "number" && t("test accuracy {percent}",
                                                            { percent: percent(m.test_accuracy, 2) })];
    $("model-info").textContent = parts.filter(Boolean).join(" · ") || t("{n} classes", { n: info.classes.length });
    const n = info.classes.length;
    for (const k of [...new Set([1, 3, 5, n])].filter((k) => k <= n).sort((a, b) => a - b)) {
      kSelect.append(new Option(String(k), String(k), false, k === info.default_top_k));
    }
  } catch (err) {
    setStatus(t("could not load the model info: {error}", { error: err.message }), true);
  }
}

clearPad();
loadModel();
