// The codi2 web chat: sends each turn to /v1/chat/completions/multipart (the typed text with
// a {placeholder} per attached file) with stream=true, shows the answer as it streams (text as
// it comes, a progress bar while an item is rendered, each item when its decoder finishes),
// keeps the session id the server returns so follow-ups continue the conversation, and can
// cancel a running answer (closing the stream stops the generation on the server).
// Each item is shown the way its modality says (`display`: image, audio or video inline, text,
// or a download link with a preview image); nothing here names a modality.
"use strict";

const state = { sessionId: null, files: [], busy: false, controller: null, round: 0, modalities: {} };
const $ = (id) => document.getElementById(id);

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

// --- spectrograms ---------------------------------------------------------------------------

// In-place radix-2 FFT of (re, im), length a power of two.
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const angle = (-2 * Math.PI) / len;
    for (let i = 0; i < n; i += len) {
      for (let k = 0; k < len / 2; k++) {
        const wr = Math.cos(angle * k), wi = Math.sin(angle * k);
        const a = i + k, b = a + len / 2;
        const xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
        re[b] = re[a] - xr; im[b] = im[a] - xi; re[a] += xr; im[a] += xi;
      }
    }
  }
}

// A log-magnitude spectrogram of mono samples at `rate` Hz drawn into a small canvas: time left
// to right, frequency bottom to top on a log scale from 50 Hz (so tones and their harmonics
// show as lines), 80 dB below the loudest cell dark. codi2/core/media/spectrogram.py draws the
// same picture as a PNG for the demo gallery.
function drawSpectrogram(canvas, samples, rate) {
  const size = 1024, cols = canvas.width, rows = canvas.height;
  const hop = Math.max(1, Math.floor((samples.length - size) / cols));
  // each row is the loudest FFT bin in its band (bands of equal width on the log scale)
  const low = Math.log(50), high = Math.log(rate / 2), edge = (r) => (Math.exp(low + ((high - low) * r) / rows) * size) / rate;
  const bands = Array.from({ length: rows }, (_, r) => {
    const band = rows - 1 - r; // the top row is the highest band
    const first = Math.min(Math.floor(edge(band)), size / 2);
    return [first, Math.max(first + 1, Math.ceil(edge(band + 1)))];
  });
  const db = [];
  let peak = -Infinity;
  for (let c = 0; c < cols; c++) {
    const re = new Float64Array(size), im = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      const s = samples[c * hop + i] || 0;
      re[i] = s * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / size)); // Hann window
    }
    fft(re, im);
    const column = bands.map(([first, last]) => {
      let loudest = 0;
      for (let b = first; b < last; b++) loudest = Math.max(loudest, re[b] * re[b] + im[b] * im[b]);
      return 10 * Math.log10(loudest + 1e-10);
    });
    peak = Math.max(peak, ...column);
    db.push(column);
  }
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(cols, rows);
  for (let c = 0; c < cols; c++) {
    for (let r = 0; r < rows; r++) {
      const v = Math.max(0, Math.min(1, (db[c][r] - peak + 80) / 80));
      const k = 4 * (r * cols + c);
      image.data[k] = Math.round(255 * Math.min(1, 2 * v));
      image.data[k + 1] = Math.round(255 * Math.max(0, 2 * v - 1));
      image.data[k + 2] = Math.round(96 * (1 - v));
      image.data[k + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
  canvas.dataset.drawn = "1";
}

// bytes: a Promise of the audio file's ArrayBuffer
async function spectrogramOf(bytes, canvas) {
  try {
    const decoder = new OfflineAudioContext(1, 1, 16000);
    const audio = await decoder.decodeAudioData(await bytes);
    drawSpectrogram(canvas, audio.getChannelData(0), audio.sampleRate);
  } catch (error) {
    canvas.title = `no spectrogram: ${error.message}`;
  }
}

// --- media ----------------------------------------------------------------------------------

// display: "image" | "audio" | "video" | "text" | "download" (the modality's own choice)
function mediaElement(display, src, name, bytes, preview) {
  if (display === "image") {
    const link = element("a", { href: src, target: "_blank", rel: "noopener", title: "open full size" });
    link.append(element("img", { src, alt: name || "image" }));
    return link;
  }
  if (display === "audio") {
    const canvas = element("canvas", { className: "spectrogram", width: 160, height: 64, title: "spectrogram" });
    spectrogramOf(bytes || fetch(src).then((r) => r.arrayBuffer()), canvas);
    return element("span", { className: "audio-item" }, [element("audio", { src, controls: true }), canvas]);
  }
  if (display === "video") return element("video", { src, controls: true, loop: true, muted: true });
  // any other modality: a download link, with the preview image its modality draws (if any)
  const link = element("a", { href: src, download: name || "download", className: "download", title: `download ${name || ""}` });
  if (preview) link.append(element("img", { src: preview, alt: name || "preview" }));
  link.append(element("span", { textContent: `⤓ ${name || "file"}` }));
  return link;
}

// how an attached file is shown: by the display of the modality that takes its MIME type or suffix
function displayOf(file) {
  const suffix = (file.name.match(/\.[^.]+$/) || [""])[0].toLowerCase();
  for (const spec of Object.values(state.modalities)) {
    if (spec.mime_types.includes(file.type) || spec.suffixes.includes(suffix)) return spec.display;
  }
  return "download";
}

function addMessage(role, text, media = []) {
  hideExamples();
  const box = element("div", { className: `message ${role}` });
  const textNode = element("div", { className: "text", textContent: text || "" });
  box.append(textNode);
  const row = element("div", { className: "media" });
  for (const m of media) row.append(mediaElement(m.display, m.src, m.name, m.bytes));
  box.append(row);
  $("log").append(box);
  box.scrollIntoView({ block: "end" });
  return { box, textNode, row };
}

function renderAttachments() {
  const list = $("attachments");
  list.replaceChildren();
  state.files.forEach((entry, i) => {
    const remove = element("button", { type: "button", textContent: "×", title: "remove" });
    remove.addEventListener("click", () => { state.files.splice(i, 1); renderAttachments(); });
    list.append(element("span", { className: "chip" }, [`${entry.file.type || "file"}: ${entry.file.name}`, remove]));
  });
}

function setBusy(busy, note = "") {
  state.busy = busy;
  $("send").disabled = busy;
  $("cancel").hidden = !busy;
  $("status").textContent = note;
}

// --- the stream ---------------------------------------------------------------------------

// Yields {event, data} for each Server-Sent Event of a fetch response.
async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield { event, data };
    }
  }
}

function progressBar(view) {
  if (!view.progress) {
    view.progress = element("div", { className: "progress" }, [element("progress"), element("span")]);
    view.box.append(view.progress);
  }
  return view.progress;
}

function showProgress(view, p) {
  const [bar, label] = progressBar(view).children;
  if (p.steps) {
    bar.max = p.steps;
    bar.value = p.step;
    label.textContent = `rendering ${p.modality} · step ${p.step}/${p.steps}`;
  } else {
    bar.removeAttribute("value"); // indeterminate until the decoder reports its steps
    label.textContent = `rendering ${p.modality}…`;
  }
}

function clearProgress(view) {
  if (view.progress) view.progress.remove();
  view.progress = null;
}

async function readAnswer(response, view) {
  for await (const { event, data } of serverSentEvents(response)) {
    if (data === "[DONE]") return;
    const body = JSON.parse(data);
    if (event === "error" || body.error) throw new Error(body.error.message);
    if (body.progress) { showProgress(view, body.progress); continue; }
    if (body.session_id) state.sessionId = body.session_id;
    const delta = (body.choices && body.choices[0] && body.choices[0].delta) || {};
    if (delta.media) {
      clearProgress(view); // the item's Markdown link is in delta.content: shown as the item instead
      for (const m of delta.media) {
        view.row.append(mediaElement(m.display, m.url || `data:${m.mime_type};base64,${m.data}`, m.name, null, m.preview));
      }
    } else if (delta.content) {
      view.textNode.textContent += delta.content;
    }
  }
  throw new Error("the answer ended early (connection closed)");
}

// Typed braces are literal text: the prompt format uses {name} for attachments.
const escapeBraces = (text) => text.replace(/\{/g, "{{").replace(/\}/g, "}}");

// prompt: placeholder text; files: [{name, file}] one per placeholder; shown: the user's bubble
async function ask(prompt, files, shownText) {
  const form = new FormData();
  form.append("prompt", prompt);
  form.append("stream", "true");
  files.forEach(({ name, file }) => form.append(name, file, file.name));
  if (state.sessionId) form.append("session_id", state.sessionId);

  addMessage("user", shownText, files.map(({ file }) => ({
    display: displayOf(file), src: URL.createObjectURL(file), name: file.name, bytes: file.arrayBuffer(),
  })));
  setBusy(true, "thinking…");
  const round = ++state.round;
  state.controller = new AbortController();
  let view = null;
  try {
    const response = await fetch("/v1/chat/completions/multipart", {
      method: "POST", body: form, signal: state.controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({ error: { message: `HTTP ${response.status}` } }));
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    view = addMessage("assistant", "");
    view.box.classList.add("streaming");
    setBusy(true, "answering…");
    await readAnswer(response, view);
    view.box.classList.remove("streaming");
    view.box.dataset.session = state.sessionId || "";
    setBusy(false, "");
    if (state.queued) { state.queued = false; $("composer").requestSubmit(); }
  } catch (error) {
    state.queued = false;
    if (round !== state.round) return; // the conversation was reset meanwhile
    if (view) { clearProgress(view); view.box.classList.remove("streaming"); }
    if (error.name === "AbortError") {
      if (view) view.box.classList.add("cancelled");
      addMessage("note", "cancelled");
    } else {
      addMessage("error", `error: ${error.message}`);
    }
    setBusy(false, "");
  } finally {
    if (round === state.round) state.controller = null;
  }
}

function send(event) {
  event.preventDefault();
  if (state.busy) { state.queued = true; return; } // sent when the running answer is complete
  const text = $("prompt").value.trim();
  const files = state.files.map((entry, i) => ({ name: `m${i}`, file: entry.file }));
  if (!text && !files.length) return;
  const prompt = [...files.map(({ name }) => `{${name}}`), escapeBraces(text)].filter(Boolean).join(" ");
  $("prompt").value = "";
  state.files = [];
  renderAttachments();
  ask(prompt, files, text);
}

function cancel() {
  if (state.controller) state.controller.abort();
}

// --- examples on an empty conversation ----------------------------------------------------------

function hideExamples() {
  const box = $("examples");
  if (box) box.remove();
}

function fileOfDataUri(uri, fileName) {
  const [head, payload] = uri.split(",", 2);
  const type = head.slice(5).split(";")[0];
  const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
  return new File([bytes], fileName, { type });
}

async function showExamples() {
  if ($("log").querySelector(".message")) return;
  let examples = [];
  try {
    const response = await fetch("/v1/examples");
    if (response.ok) examples = (await response.json()).examples;
  } catch (error) { /* no examples: the page works without them */ }
  if (!examples.length || $("log").querySelector(".message")) return;
  const box = element("div", { id: "examples" }, [element("p", { className: "muted", textContent: "Try one of these:" })]);
  for (const example of examples) {
    const button = element("button", { type: "button", className: "example" });
    button.append(element("b", { textContent: example.title }), element("span", { textContent: example.prompt }));
    for (const m of example.media) {
      if (m.display === "image") button.append(element("img", { src: m.data, alt: m.name }));
    }
    button.addEventListener("click", () => {
      if (state.busy) return;
      const files = example.media.map((m) => ({ name: m.name, file: fileOfDataUri(m.data, m.file_name) }));
      ask(example.prompt, files, example.prompt.replace(/\{(\w+)\}/g, "[$1]"));
    });
    box.append(button);
  }
  $("log").append(box);
}

function reset() {
  const id = state.sessionId;
  cancel();
  state.round += 1;
  setBusy(false, "");
  state.sessionId = null;
  $("log").replaceChildren();
  if (id) fetch(`/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" }).catch(() => {});
  $("status").textContent = "new conversation";
  showExamples();
}

async function showModel() {
  try {
    const response = await fetch("/v1/models");
    const body = await response.json();
    if (!response.ok) throw new Error(body.error.message);
    const m = body.data[0];
    state.modalities = m.modalities || {};
    const accepted = Object.values(state.modalities).flatMap((s) => [...s.mime_types, ...s.suffixes]);
    if (accepted.length) $("files").accept = accepted.join(",");
    const reads = m.input_modalities.filter((x) => x !== "text");
    $("model").textContent = `${m.id} · reads text, ${reads.join(", ")} · writes text, ${m.output_modalities.join(", ") || "no media"}`;
  } catch (error) {
    $("model").textContent = `model not ready: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("files").addEventListener("change", (e) => {
    state.files.push(...[...e.target.files].map((file) => ({ file })));
    e.target.value = "";
    renderAttachments();
  });
  $("reset").addEventListener("click", reset);
  $("cancel").addEventListener("click", cancel);
  showModel();
  showExamples();
});
