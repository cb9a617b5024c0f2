// cnnlab serve, "inside the network": every conv and pool layer's feature maps for the current
// drawing (from POST /api/explain), a click-through to a map's kernel and the arithmetic at one
// position, and the attribution overlaid on the image the model saw.
// app.js announces each image with a "cnnlab:image" event and a cleared pad with "cnnlab:clear".
"use strict";

(() => {
  const t = window.t || ((s) => s);  // the page's translation function, when the i18n script provides one
  const $ = (id) => document.getElementById(id);
  const panel = $("inside");
  const layersBox = $("layers");
  const kernelBox = $("kernel");
  const overlay = $("attr-overlay");
  const toggle = $("attr-toggle");

  let controller = null;  // the request in flight, aborted when the pad is cleared
  let pending = null;     // only the newest image waits; older ones are dropped, never queued
  let latest = null;      // the last answer shown
  let selected = null;    // {layer, channel, row, col} of the clicked map

  // Viridis, 9 stops: a perceptual scale, the one cnnlab's figures use for feature maps.
  const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                   [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];

  function colour(v) {
    const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
    const f = x - i;
    return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
  }

  function floats(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return new Float32Array(bytes.buffer);  // little-endian float32, as the server sends
  }

  function paint(canvas, values, offset, h, w, lo, hi) {
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    const span = hi > lo ? hi - lo : 1;
    for (let i = 0; i < h * w; i++) {
      const [r, g, b] = colour((values[offset + i] - lo) / span);
      img.data.set([r, g, b, 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
  }

  function send(body, contentType) {
    if (controller) { pending = [body, contentType]; return; }
    controller = new AbortController();
    const mine = controller;
    const headers = contentType ? { "Content-Type": contentType } : {};
    fetch("/api/explain", { method: "POST", headers, body, signal: mine.signal })
      .then(async (res) => {
        const data = await res.json().catch(() => ({ detail: `HTTP ${res.status}` }));
        if (!res.ok) throw new Error(data.detail || `HTTP ${res.status}`);
        if (!pending) show(data);  // a newer drawing is waiting: skip drawing this stale answer
      })
      .catch((err) => { if (err.name !== "AbortError") $("inside-status").textContent = err.message; })
      .finally(() => {
        if (controller === mine) controller = null;
        if (pending) { const [b, c] = pending; pending = null; send(b, c); }
      });
  }

  function show(data) {
    latest = data;
    $("inside-status").textContent = "";
    layersBox.replaceChildren(...data.layers.map(layerRow));
    if (data.left_out.length) {
      const p = document.createElement("p");
      p.className = "muted small";
      p.textContent = t("Layers left out (too large to send):") + " " + data.left_out.join(", ");
      layersBox.append(p);
    }
    drawAttribution(data.attribution);
    panel.hidden = false;
    if (selected && data.layers.some((l) => l.name === selected.layer)) showKernel(selected);
    else kernelBox.replaceChildren();
    document.body.dataset.explains = String(Number(document.body.dataset.explains || 0) + 1);
  }

  function layerRow(layer) {
    const [c, h, w] = layer.shape;
    const row = document.createElement("div");
    row.className = "layer";
    row.dataset.name = layer.name;
    row.dataset.kind = layer.kind;
    const title = document.createElement("div");
    title.className = "layer-title small";
    title.textContent = `${layer.name} · ${layer.type} · ${c}×${h}×${w}`;
    const maps = document.createElement("div");
    maps.className = "maps";
    const values = floats(layer.maps);
    const size = Math.max(28, Math.min(84, Math.round(560 / Math.max(c, 6))));
    for (let ch = 0; ch < c; ch++) {
      const canvas = document.createElement("canvas");
      canvas.width = w;
      canvas.height = h;
      canvas.className = "map";
      canvas.style.width = canvas.style.height = `${size}px`;
      canvas.dataset.channel = String(ch);
      canvas.title = `${layer.name} · ${t("channel")} ${ch}`;
      paint(canvas, values, ch * h * w, h, w, layer.min, layer.max);
      canvas.addEventListener("click", (ev) => {
        const r = canvas.getBoundingClientRect();
        const row_ = Math.min(h - 1, Math.floor((ev.clientY - r.top) / r.height * h));
        const col = Math.min(w - 1, Math.floor((ev.clientX - r.left) / r.width * w));
        selected = { layer: layer.name, channel: ch, row: row_, col };
        showKernel(selected);
      });
      maps.append(canvas);
    }
    row.append(title, maps);
    return row;
  }

  function fmt(v) { return (Math.abs(v) < 0.005 ? 0 : v).toFixed(2); }

  function showKernel(sel) {
    const layer = latest.layers.find((l) => l.name === sel.layer);
    const [, h, w] = layer.shape;
    const maps = floats(layer.maps);
    const out = maps[sel.channel * h * w + sel.row * w + sel.col];
    for (const el of layersBox.querySelectorAll("canvas.map.selected")) el.classList.remove("selected");
    const row = [...layersBox.querySelectorAll(".layer")].find((r) => r.dataset.name === sel.layer);
    if (row) row.querySelectorAll("canvas.map")[sel.channel].classList.add("selected");
    const head = document.createElement("p");
    head.className = "small";
    head.textContent = `${sel.layer}, ${t("channel")} ${sel.channel}, ${t("position")} (${sel.row}, ${sel.col}) = ${fmt(out)}`;
    if (!layer.conv) {
      const p = document.createElement("p");
      p.className = "small muted";
      const k = layer.pool && layer.pool.kernel_size;
      p.textContent = t("A pooling layer has no kernel: each value is the largest (max pooling) or the mean " +
                        "(average pooling) of a window of the layer before it.") + (k ? ` ${t("Window")}: ${k}×${k}.` : "");
      kernelBox.replaceChildren(head, p);
      return;
    }
    const conv = layer.conv;
    const [cin, ih, iw] = conv.input.shape;
    const [, , kh, kw] = conv.weight.shape;
    const x = floats(conv.input.f32);
    const wts = floats(conv.weight.f32);
    const top = sel.row * conv.stride[0] - conv.padding[0];
    const left = sel.col * conv.stride[1] - conv.padding[1];
    let sum = 0;
    const blocks = [];
    for (let c = 0; c < cin; c++) {
      const table = document.createElement("table");
      table.className = "arith";
      let part = 0;
      for (let i = 0; i < kh; i++) {
        const tr = document.createElement("tr");
        for (let j = 0; j < kw; j++) {
          const r = top + i * conv.dilation[0];
          const q = left + j * conv.dilation[1];
          const v = r >= 0 && r < ih && q >= 0 && q < iw ? x[c * ih * iw + r * iw + q] : 0;  // zero padding
          const wt = wts[((sel.channel * cin + c) * kh + i) * kw + j];
          part += v * wt;
          const td = document.createElement("td");
          td.textContent = `${fmt(v)}×${fmt(wt)}`;
          td.style.background = wt >= 0 ? `rgba(220,38,38,${Math.min(0.6, Math.abs(wt) * 2)})`
                                         : `rgba(37,99,235,${Math.min(0.6, Math.abs(wt) * 2)})`;
          tr.append(td);
        }
        table.append(tr);
      }
      sum += part;
      const fig = document.createElement("figure");
      const cap = document.createElement("figcaption");
      cap.className = "small muted";
      cap.textContent = `${t("input channel")} ${c}: ${fmt(part)}`;
      fig.append(table, cap);
      blocks.push(fig);
    }
    const bias = conv.bias ? conv.bias[sel.channel] : 0;
    const total = document.createElement("p");
    total.className = "small sum";
    total.textContent = `${t("sum of input × kernel")} ${fmt(sum)} + ${t("bias")} ${fmt(bias)} = ${fmt(sum + bias)}`;
    const note = document.createElement("p");
    note.className = "small muted";
    note.textContent = t("Each cell: the input value under the kernel × the kernel's weight (red positive, " +
                         "blue negative). Click another position of a map to move the window.");
    const grid = document.createElement("div");
    grid.className = "arith-grid";
    grid.append(...blocks);
    kernelBox.replaceChildren(head, grid, total, note);
  }

  function drawAttribution(att) {
    const [h, w] = att.shape;
    overlay.width = w;
    overlay.height = h;
    const a = floats(att.f32);
    const ctx = overlay.getContext("2d");
    const img = ctx.createImageData(w, h);
    const m = att.max_abs || 1;
    for (let i = 0; i < h * w; i++) {
      const v = a[i] / m;
      const alpha = Math.round(255 * Math.min(1, Math.abs(v) * 2.5) * 0.85);
      img.data.set(v >= 0 ? [220, 38, 38, alpha] : [37, 99, 235, alpha], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
    $("attr-caption").textContent = `${t("red: pixels for")} ${att.target}, ${t("blue: against")}`;
    overlay.hidden = !toggle.checked;
    $("attr-caption").hidden = overlay.hidden;
  }

  toggle.addEventListener("change", () => {
    overlay.hidden = !toggle.checked || !latest;
    $("attr-caption").hidden = overlay.hidden;
  });

  document.addEventListener("cnnlab:image", (ev) => send(ev.detail.body, ev.detail.contentType));
  document.addEventListener("cnnlab:clear", () => {
    pending = null;
    if (controller) controller.abort();
    latest = null;
    selected = null;
    layersBox.replaceChildren();
    kernelBox.replaceChildren();
    overlay.hidden = true;
    panel.hidden = true;
  });
})();
