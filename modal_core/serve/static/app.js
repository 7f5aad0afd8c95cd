// The modal-core web demo: chat about uploaded inputs (/v1/understand) and draw images
// (/v1/generate). Upload widgets come from /v1/modalities, so installed plugins appear
// without changes here. No external scripts: the demo works offline.
"use strict";

const $ = (id) => document.getElementById(id);

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// The server answers every error as {"detail": "..."}; show that sentence.
async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `HTTP ${response.status}`;
  }
}

function addMessage(role, text, images = []) {
  const message = document.createElement("div");
  message.className = `message ${role}`;
  message.textContent = text;
  for (const file of images) {
    const image = document.createElement("img");
    image.className = "attachment";
    image.src = URL.createObjectURL(file);
    image.alt = file.name;
    message.append(image);
  }
  $("chat-log").append(message);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return message;
}

function buildUploads(modalities) {
  const inputs = modalities.filter((m) => m.direction === "input" && m.upload_field);
  for (const modality of inputs) {
    const row = document.createElement("label");
    row.className = "upload";
    const input = document.createElement("input");
    input.type = "file";
    input.id = `upload-${modality.upload_field}`;
    input.name = modality.upload_field;
    input.dataset.modality = modality.name;
    const preview = document.createElement("img");
    preview.hidden = true;
    preview.alt = `${modality.upload_field} preview`;
    input.addEventListener("change", () => {
      const file = input.files[0];
      preview.hidden = !(file && file.type.startsWith("image/"));
      if (!preview.hidden) preview.src = URL.createObjectURL(file);
    });
    row.append(`${modality.upload_field} `, input, preview);
    row.title = `${modality.name}: ${modality.description}`;
    $("uploads").append(row);
  }
  if (!inputs.length) $("uploads").textContent = "This model takes text questions only.";
}

async function ask(event) {
  event.preventDefault();
  const form = new FormData();
  const question = $("question").value.trim();
  form.append("question", question);
  form.append("max_new_tokens", $("max-new-tokens").value);
  form.append("temperature", $("answer-temperature").value);
  const attached = [];
  for (const input of $("uploads").querySelectorAll("input[type=file]")) {
    if (input.files.length) {
      form.append(input.name, input.files[0]);
      attached.push(input.files[0]);
    }
  }
  const names = attached.map((file) => file.name).join(", ");
  const images = attached.filter((file) => file.type.startsWith("image/"));
  addMessage("user", attached.length ? `${question}  [${names}]` : question, images);
  $("question").value = "";
  const pending = addMessage("assistant", "…");
  $("ask").disabled = true;
  try {
    const response = await fetch("/v1/understand", { method: "POST", body: form });
    if (response.ok) {
      pending.textContent = (await response.json()).answer || "(empty answer)";
    } else {
      pending.className = "message error";
      pending.textContent = await errorText(response);
    }
  } catch (error) {
    pending.className = "message error";
    pending.textContent = String(error);
  } finally {
    $("ask").disabled = false;
  }
}

// While a drawing request is in flight, ask the server where it stands (by the id it was
// sent with) to say whether it waits behind others or is being drawn, and for how long.
function newRequestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));  // also where crypto.randomUUID is not (plain http)
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function startProgress(requestId, images) {
  const started = performance.now();
  let seen = false;
  $("progress").hidden = false;
  $("progress-text").textContent = "sending…";
  const timer = setInterval(async () => {
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const response = await fetch(`/v1/requests/${requestId}`).catch(() => null);
    let phase = seen ? "finishing" : "sending";
    if (response && response.ok) {
      const where = await response.json();
      seen = true;
      phase = where.state === "running"
        ? `drawing your ${images ? `${images} ` : ""}image(s)`
        : `waiting in queue: ${where.ahead} request(s) ahead of yours`;
    }
    $("progress-text").textContent = `${phase} · ${seconds} s`;
  }, 250);
  return () => {
    clearInterval(timer);
    $("progress").hidden = true;
  };
}

// An emptied number box is left out of the request so the server's default applies:
// Number("") is 0, and cfg 0 would silently draw images that ignore the prompt.
function setNumber(body, key, id) {
  const value = $(id).value.trim();
  if (value !== "") body[key] = Number(value);
}

function drawnImage(png, index, body, result) {
  const figure = document.createElement("figure");
  const image = document.createElement("img");
  image.src = `data:image/png;base64,${png}`;
  image.alt = `${body.prompt} (${index + 1})`;
  const caption = document.createElement("figcaption");
  const link = document.createElement("a");
  link.href = image.src;
  link.download = `${body.prompt.replace(/[^A-Za-z0-9]+/g, "-").slice(0, 40)}-seed${result.seed}-${index + 1}.png`;
  link.textContent = "download";
  caption.append(`seed ${result.seed} · ${index + 1}/${result.images.length} `, link);
  figure.append(image, caption);
  return figure;
}

async function draw(event) {
  event.preventDefault();
  const seed = $("seed").value.trim();
  const body = { prompt: $("prompt").value.trim(), seed: seed === "" ? null : Number(seed) };
  setNumber(body, "n", "n");
  setNumber(body, "cfg", "cfg");
  setNumber(body, "temperature", "temperature");
  setNumber(body, "top_k", "top-k");
  setNumber(body, "top_p", "top-p");
  $("draw").disabled = true;
  $("draw-error").hidden = true;
  const requestId = newRequestId();
  const stop = startProgress(requestId, body.n);
  try {
    const response = await fetch("/v1/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Request-Id": requestId },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const result = await response.json();
    $("gallery").replaceChildren(...result.images.map((png, index) => drawnImage(png, index, body, result)));
  } catch (error) {
    $("draw-error").textContent = error.message;
    $("draw-error").hidden = false;
  } finally {
    stop();
    $("draw").disabled = false;
  }
}

async function start() {
  $("ask-form").addEventListener("submit", ask);
  $("draw-form").addEventListener("submit", draw);
  try {
    const [health, listing] = await Promise.all([getJSON("/v1/health"), getJSON("/v1/modalities")]);
    $("checkpoint").textContent = health.checkpoint;
    $("n").max = health.limits.max_batch_images;
    $("max-new-tokens").max = health.limits.max_new_tokens;
    buildUploads(listing.modalities);
    const drawable = listing.modalities.some((m) => m.direction === "output");
    $("draw-panel").hidden = !drawable;
    $("server-status").textContent = "ready";
    document.body.dataset.ready = "true";
  } catch (error) {
    $("server-status").textContent = `server unreachable: ${error.message}`;
  }
}

start();
