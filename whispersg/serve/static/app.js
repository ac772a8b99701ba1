// The WhisperSG page: upload a recording to the OpenAI-compatible API, or stream the microphone
// to /v1/realtime. Plain browser APIs only, nothing loaded from elsewhere: it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const SAMPLE_RATE = 16000;
let server = { auth: false, max_upload_bytes: Infinity };

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  return server.auth && apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
}

function setStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds - minutes * 60).toFixed(1).padStart(4, "0");
  return `${String(minutes).padStart(2, "0")}:${rest}`;
}

async function loadServerStatus() {
  try {
    const response = await fetch("/health");
    server = await response.json();
    setStatus($("server-status"), `model ${server.model} · ready`);
    $("key-section").hidden = !server.auth;
    $("api-key").value = localStorage.getItem("whispersg-api-key") || "";
  } catch (error) {
    setStatus($("server-status"), `the server does not answer: ${error}`, true);
  }
}

$("api-key").addEventListener("change", () => localStorage.setItem("whispersg-api-key", apiKey()));

// ---- file transcription --------------------------------------------------------------------------

function renderSegment(segment) {
  const line = document.createElement("div");
  line.className = "segment";
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `[${clock(segment.start)} → ${clock(segment.end)}]`;
  line.appendChild(time);
  if (segment.speaker) {
    const speaker = document.createElement("span");
    speaker.className = "speaker";
    speaker.textContent = `${segment.speaker}:`;
    line.appendChild(speaker);
  }
  const words = segment.words || [];
  if (words.length) {
    for (const word of words) {
      const span = document.createElement("span");
      span.className = "word";
      span.textContent = `${word.word.trim()} `;
      if (word.start !== undefined) span.title = `${word.start.toFixed(2)}–${word.end.toFixed(2)} s`;
      line.appendChild(span);
    }
  } else {
    line.appendChild(document.createTextNode(segment.text.trim()));
  }
  return line;
}

function wordsBySegment(result) {
  // verbose_json lists words apart from segments: put each back under the segment it falls in.
  const segments = (result.segments || []).map((segment) => ({ ...segment, words: [] }));
  let index = 0;
  for (const word of result.words || []) {
    while (index < segments.length - 1 && word.start >= segments[index + 1].start) index += 1;
    if (segments[index]) segments[index].words.push(word);
  }
  return segments;
}

function showDownloads(result, name) {
  const stem = name.replace(/\.[^.]+$/, "") || "transcript";
  for (const link of document.querySelectorAll("#downloads a")) {
    const format = link.dataset.format;
    const body = result.files && result.files[format];
    if (!body) continue;
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([body], { type: "text/plain;charset=utf-8" }));
    link.download = `${stem}.${format}`;
  }
  $("downloads").hidden = false;
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file-input").files[0];
  if (!file) return;
  const status = $("upload-status");
  if (file.size > server.max_upload_bytes) {
    setStatus(status, `${file.name} is larger than this server accepts (${(server.max_upload_bytes / 1048576).toFixed(0)} MB)`, true);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  form.append("model", "whisper-1");
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  form.append("timestamp_granularities[]", "word");
  form.append("formats", "txt,srt,vtt,json");
  if ($("language").value.trim()) form.append("language", $("language").value.trim());
  if ($("diarize").checked) {
    form.append("diarize", "true");
    if ($("num-speakers").value) form.append("num_speakers", $("num-speakers").value);
  }
  const request = new XMLHttpRequest();
  request.open("POST", "/v1/audio/transcriptions");
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  const progress = $("upload-progress");
  progress.hidden = false;
  progress.value = 0;
  $("upload-button").disabled = true;
  $("downloads").hidden = true;
  $("transcript").replaceChildren();
  setStatus(status, `uploading ${file.name}…`);
  request.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = e.loaded / e.total; };
  request.upload.onload = () => { progress.removeAttribute("value"); setStatus(status, `transcribing ${file.name}…`); };
  request.onerror = () => finish(`the upload of ${file.name} failed (network error)`, true);
  request.onload = () => {
    let body = null;
    try { body = JSON.parse(request.responseText); } catch (error) { body = null; }
    if (request.status !== 200 || !body) {
      const message = body && body.error ? body.error.message : `HTTP ${request.status}`;
      finish(`${file.name}: ${message}`, true);
      return;
    }
    const segments = wordsBySegment(body);
    $("transcript").replaceChildren(...segments.map(renderSegment));
    showDownloads(body, file.name);
    finish(`${file.name}: ${segments.length} segments, ${clock(body.duration)} of audio`);
  };
  function finish(text, isError = false) {
    progress.hidden = true;
    $("upload-button").disabled = false;
    setStatus(status, text, isError);
  }
  request.send(form);
});

// ---- live microphone -----------------------------------------------------------------------------

let live = null;

function toPcm16(samples, fromRate) {
  // Downsample (linear interpolation) to 16 kHz if the browser would not open a 16 kHz context.
  const ratio = fromRate / SAMPLE_RATE;
  const length = Math.floor(samples.length / ratio);
  const pcm = new Int16Array(length);
  for (let i = 0; i < length; i += 1) {
    const position = i * ratio;
    const left = Math.floor(position);
    const right = Math.min(left + 1, samples.length - 1);
    const value = samples[left] + (samples[right] - samples[left]) * (position - left);
    pcm[i] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
  }
  return pcm;
}

function appendCommitted(segments) {
  const committed = $("live-committed");
  for (const segment of segments) {
    const text = segment.text.trim();
    if (!text) continue;
    const span = document.createElement("span");
    span.className = "segment";
    span.title = `${clock(segment.start)} → ${clock(segment.end)}`;
    span.textContent = `${segment.speaker ? `[${segment.speaker}] ` : ""}${text} `;
    committed.appendChild(span);
  }
}

async function startMicrophone() {
  const status = $("live-status");
  const params = new URLSearchParams();
  if ($("live-language").value.trim()) params.set("language", $("live-language").value.trim());
  if ($("live-diarize").checked) params.set("diarize", "true");
  if (server.auth && apiKey()) params.set("api_key", apiKey());
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (error) {
    setStatus(status, `no microphone: ${error.message || error}`, true);
    return;
  }
  const context = new AudioContext({ sampleRate: SAMPLE_RATE });
  await context.audioWorklet.addModule("/static/pcm-worklet.js");
  const input = context.createMediaStreamSource(stream);
  const capture = new AudioWorkletNode(context, "pcm-capture");
  const protocol = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${protocol}://${location.host}/v1/realtime?${params}`);
  socket.binaryType = "arraybuffer";
  live = { stream, context, socket, capture };
  $("live-committed").replaceChildren();
  $("live-settled").textContent = "";
  $("live-interim").textContent = "";
  setStatus(status, "connecting…");
  let pending = [];
  let pendingLength = 0;
  capture.port.onmessage = (event) => {
    if (socket.readyState !== WebSocket.OPEN) return;
    pending.push(event.data);
    pendingLength += event.data.length;
    if (pendingLength < context.sampleRate / 10) return;  // send 100 ms at a time
    const joined = new Float32Array(pendingLength);
    let offset = 0;
    for (const part of pending) { joined.set(part, offset); offset += part.length; }
    pending = [];
    pendingLength = 0;
    socket.send(toPcm16(joined, context.sampleRate).buffer);
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "ready") setStatus(status, `listening (model ${message.model})… speak, then press Stop`);
    else if (message.type === "interim") {
      $("live-settled").textContent = message.settled ? `${message.settled} ` : "";
      $("live-interim").textContent = message.text;
      if (message.behind) setStatus(status, "the server is behind; interim text paused");
    } else if (message.type === "committed") {
      $("live-settled").textContent = "";
      $("live-interim").textContent = "";
      appendCommitted(message.segments);
    } else if (message.type === "done") setStatus(status, `stopped · ${clock(message.duration)} transcribed`);
    else if (message.type === "error") setStatus(status, message.message, true);
  };
  socket.onclose = (event) => {
    if (event.code !== 1000 && event.code !== 1005 && !status.classList.contains("error")) {
      setStatus(status, `connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`, true);
    }
    stopCapture();
  };
  input.connect(capture);
  $("mic-button").textContent = "Stop";
  $("mic-button").classList.add("recording");
}

function stopCapture() {
  if (!live) return;
  live.stream.getTracks().forEach((track) => track.stop());
  live.context.close();
  live = null;
  $("mic-button").textContent = "Start microphone";
  $("mic-button").classList.remove("recording");
}

$("mic-button").addEventListener("click", () => {
  if (!live) { startMicrophone(); return; }
  const socket = live.socket;
  if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "stop" }));
  setStatus($("live-status"), "finishing…");
  live.stream.getTracks().forEach((track) => track.stop());
});

loadServerStatus();
