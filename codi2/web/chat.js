// The codi2 web chat: sends each turn to /v1/chat/completions/multipart (the typed text with
// a {placeholder} per attached file), keeps the session id the server returns so follow-ups
// continue the conversation, and shows each generated item the way its modality says
// (`display`: image, audio or video inline; text; or a download link with a preview image).
"use strict";

const state = { sessionId: null, files: [], busy: false, modalities: {} };
const $ = (id) => document.getElementById(id);

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function mediaElement(kind, src, name, preview) {
  if (kind === "image") {
    const link = element("a", { href: src, target: "_blank", rel: "noopener", title: "open full size" });
    link.append(element("img", { src, alt: name || "image" }));
    return link;
  }
  if (kind === "audio") return element("audio", { src, controls: true });
  if (kind === "video") return element("video", { src, controls: true, loop: true, muted: true });
  // any other modality: a download link, with the preview image its modality draws (if any)
  const link = element("a", { href: src, download: name || "download", className: "download", title: `download ${name || ""}` });
  if (preview) link.append(element("img", { src: preview, alt: name || "preview" }));
  link.append(element("span", { textContent: `⤓ ${name || "file"}` }));
  return link;
}

function addMessage(role, text, media = []) {
  const box = element("div", { className: `message ${role}` });
  if (text) box.append(element("div", { className: "text", textContent: text }));
  if (media.length) {
    const row = element("div", { className: "media" });
    for (const m of media) row.append(mediaElement(m.kind, m.src, m.name, m.preview));
    box.append(row);
  }
  $("log").append(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

// how an attached file is shown: by the display of the modality that takes its MIME type or suffix
function kindOf(file) {
  const suffix = (file.name.match(/\.[^.]+$/) || [""])[0].toLowerCase();
  for (const spec of Object.values(state.modalities)) {
    if (spec.mime_types.includes(file.type) || spec.suffixes.includes(suffix)) return spec.display;
  }
  return "download";
}

function renderAttachments() {
  const list = $("attachments");
  list.replaceChildren();
  state.files.forEach((file, i) => {
    const remove = element("button", { type: "button", textContent: "×", title: "remove" });
    remove.addEventListener("click", () => { state.files.splice(i, 1); renderAttachments(); });
    list.append(element("span", { className: "chip" }, [`${kindOf(file)}: ${file.name}`, remove]));
  });
}

function setBusy(busy, note = "") {
  state.busy = busy;
  $("send").disabled = busy;
  $("status").textContent = note;
}

// Typed braces are literal text: the prompt format uses {name} for attachments.
const escapeBraces = (text) => text.replace(/\{/g, "{{").replace(/\}/g, "}}");

async function send(event) {
  event.preventDefault();
  if (state.busy) return;
  const text = $("prompt").value.trim();
  const files = state.files.slice();
  if (!text && !files.length) return;

  const names = files.map((_, i) => `m${i}`);
  const prompt = [...names.map((n) => `{${n}}`), escapeBraces(text)].filter(Boolean).join(" ");
  const form = new FormData();
  form.append("prompt", prompt);
  files.forEach((file, i) => form.append(names[i], file, file.name));
  if (state.sessionId) form.append("session_id", state.sessionId);

  addMessage("user", text, files.map((f) => ({ kind: kindOf(f), src: URL.createObjectURL(f), name: f.name })));
  $("prompt").value = "";
  state.files = [];
  renderAttachments();
  setBusy(true, "thinking…");
  try {
    const response = await fetch("/v1/chat/completions/multipart", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ error: { message: `HTTP ${response.status}` } }));
    if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    if (body.session_id) state.sessionId = body.session_id;
    const message = body.choices[0].message;
    const parts = message.content.filter((p) => p.type !== "text");
    const media = parts.map((p) => ({
      kind: p.display || p.type, name: p.name || p.type, preview: p.preview,
      src: p.url || `data:${p.mime_type};base64,${p.data}`,
    }));
    const box = addMessage("assistant", message.text.trim(), media);
    box.dataset.session = state.sessionId || "";
    setBusy(false, "");
  } catch (error) {
    addMessage("error", `error: ${error.message}`);
    setBusy(false, "");
  }
}

function reset() {
  const id = state.sessionId;
  state.sessionId = null;
  $("log").replaceChildren();
  if (id) fetch(`/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" }).catch(() => {});
  $("status").textContent = "new conversation";
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
    state.files.push(...e.target.files);
    e.target.value = "";
    renderAttachments();
  });
  $("reset").addEventListener("click", reset);
  showModel();
});
