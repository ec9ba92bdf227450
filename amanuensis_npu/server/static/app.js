// The page: one request to /page/<task> (the OpenAI route's parser, queue and formats),
// then the transcript with clickable segment times and the downloads the API would give.
"use strict";
const $ = (id) => document.getElementById(id);
let audioBlob = null, audioName = "", result = null, stopAt = null;
const key = () => $("key").value || localStorage.getItem("amanuensis-key") || "";

function headers() {
  const k = key();
  return k ? { Authorization: "Bearer " + k } : {};
}

function showError(message) {
  $("error").textContent = String(message).split("\n")[0];
  $("error").hidden = false;
}

async function refreshRoute() {
  try {
    const r = await fetch("/health");
    const body = await r.json();
    if (r.status === 503) {
      $("route").textContent = body.status === "loading" ? "loading the model…" : "model failed: " + body.error;
      if (body.status === "loading") setTimeout(refreshRoute, 1000);
      return;
    }
    const route = body.route;
    $("route").textContent = `${route.model} · ${routeText(route)}`;
  } catch (e) {
    $("route").textContent = "server unreachable";
  }
}

$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) { audioBlob = f; audioName = f.name; $("recorded").textContent = ""; }
});

let recorder = null, chunks = [];
$("record").addEventListener("click", async () => {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    recorder = new MediaRecorder(stream);
    chunks = [];
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      audioBlob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      audioName = "recording.webm";  // the server decodes by content, whatever the name
      $("record").classList.remove("on");
      $("record").textContent = "● Record";
      $("recorded").textContent = `recorded ${(audioBlob.size / 1024).toFixed(0)} kB`;
      $("file").value = "";
    };
    recorder.start();
    $("record").classList.add("on");
    $("record").textContent = "■ Stop";
  } catch (e) {
    showError("microphone unavailable: " + e.message);
  }
});

function clock(t) {
  const m = Math.floor(t / 60), s = (t - 60 * m).toFixed(2).padStart(5, "0");
  return `${String(m).padStart(2, "0")}:${s}`;
}

function send(form, task) {
  // XMLHttpRequest: it reports upload progress, fetch does not.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/page/" + task);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    const started = performance.now();
    const tick = setInterval(() => {
      if (xhr.readyState < 4 && $("status").dataset.phase === "work")
        $("status").textContent = `transcribing… ${((performance.now() - started) / 1000).toFixed(0)} s`;
    }, 500);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        $("bar").max = e.total; $("bar").value = e.loaded;
        $("status").textContent = `uploading ${Math.round((100 * e.loaded) / e.total)} %`;
      }
    };
    xhr.upload.onload = () => { $("bar").removeAttribute("value"); $("status").dataset.phase = "work"; };
    xhr.onload = () => {
      clearInterval(tick);
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 200 && body) resolve(body);
      else {
        if (xhr.status === 401) $("keyrow").hidden = false;
        reject(new Error(body && body.error ? `${xhr.status}: ${body.error.message}` : `HTTP ${xhr.status}`));
      }
    };
    xhr.onerror = () => { clearInterval(tick); reject(new Error("the server could not be reached")); };
    xhr.send(form);
  });
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("error").hidden = true;
  if (!audioBlob) { showError("choose an audio file or record one first"); return; }
  if ($("key").value) localStorage.setItem("amanuensis-key", $("key").value);
  const form = new FormData();
  form.append("file", audioBlob, audioName);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  if ($("words").checked) form.append("timestamp_granularities[]", "word");
  const task = $("task").value;
  if ($("language").value) form.append("language", $("language").value);
  $("go").disabled = true;
  $("progress").hidden = false;
  $("status").dataset.phase = "upload";
  $("status").textContent = "uploading…";
  try {
    result = await send(form, task);
    render();
  } catch (e) {
    showError(e.message);
  } finally {
    $("go").disabled = false;
    $("progress").hidden = true;
    refreshRoute();
  }
});

// What ran: the attention part only when an attention backend ran (not for a whole-encoder
// route such as OpenVINO or ONNX Runtime).
function routeText(route) {
  const encoder = `encoder ${route.encoder} on ${route.encoder_device} in ${route.encoder_precision}`;
  return route.attention === "none" ? encoder : `${encoder} · attention ${route.attention} · NPU: ${route.npu}`;
}
function render() {
  const v = result.verbose;
  $("player").src = URL.createObjectURL(audioBlob);
  const speed = result.seconds > 0 ? (v.duration / result.seconds).toFixed(1) : "–";
  $("speed").textContent = `${v.duration.toFixed(1)} s of ${v.language} audio in ${result.seconds.toFixed(1)} s ` +
    `(${speed}× real time) · ${routeText(result.route)}`;
  const list = $("segments");
  list.replaceChildren();
  for (const s of v.segments || []) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = `${clock(s.start)} → ${clock(s.end)}`;
    a.addEventListener("click", (e) => { e.preventDefault(); play(s, li); });
    li.append(a, document.createTextNode(s.text.trim()));
    list.append(li);
  }
  $("transcript-text")?.remove();
  const text = document.createElement("p");
  text.id = "transcript-text";
  text.textContent = v.text;
  list.before(text);
  $("output").hidden = false;
}

function play(segment, li) {
  document.querySelectorAll("#segments li.playing").forEach((x) => x.classList.remove("playing"));
  li.classList.add("playing");
  $("player").currentTime = segment.start;
  stopAt = segment.end;
  $("player").play();
}
$("player").addEventListener("timeupdate", () => {
  if (stopAt !== null && $("player").currentTime >= stopAt) { $("player").pause(); stopAt = null; }
});

document.querySelectorAll(".downloads button").forEach((b) => b.addEventListener("click", () => {
  const fmt = b.dataset.format;
  const types = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt", json: "application/json" };
  const blob = new Blob([result.formats[fmt]], { type: types[fmt] });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = (audioName.replace(/\.[^.]*$/, "") || "transcript") + "." + fmt;
  a.click();
}));

refreshRoute();

// Live: the microphone over OpenAI's Realtime transcription protocol (/v1/realtime). The
// AudioContext runs at 24 kHz (the browser resamples the microphone), a worklet posts
// PCM16 in 100 ms blocks, the server's VAD cuts turns; each turn's committed words are
// black, the tail it may still change grey (this server's opt-in partial event).
const live = { ws: null, ctx: null, stream: null, node: null, items: new Map(), open: new Set(), stopping: false };

function liveItem(id) {
  if (!live.items.has(id)) {
    const span = document.createElement("span");
    span.className = "item";
    span.dataset.item = id;
    const committed = document.createElement("span");
    committed.className = "committed";
    const partial = document.createElement("span");
    partial.className = "partial";
    span.append(committed, partial, document.createTextNode(" "));
    $("live-text").append(span);
    live.items.set(id, { committed, partial });
  }
  return live.items.get(id);
}

function liveEvent(e) {
  switch (e.type) {
    case "input_audio_buffer.speech_started":
      live.open.add(e.item_id); liveItem(e.item_id); $("live-status").textContent = "listening: speech…"; break;
    case "input_audio_buffer.speech_stopped":
      $("live-status").textContent = "listening"; break;
    case "conversation.item.input_audio_transcription.delta":
      liveItem(e.item_id).committed.textContent += e.delta; break;
    case "amanuensis.input_audio_transcription.partial": {
      const item = liveItem(e.item_id);
      item.partial.textContent = (item.committed.textContent && e.text ? " " : "") + e.text;
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const item = liveItem(e.item_id);
      item.committed.textContent = e.transcript; item.partial.textContent = "";
      live.open.delete(e.item_id); break;
    }
    case "conversation.item.input_audio_transcription.failed":
      live.open.delete(e.item_id); showError("live: " + e.error.message); break;
    case "error":
      // Stop's commit finds no open turn when the VAD has already closed it: not a failure
      if (!(live.stopping && e.error.code === "input_audio_buffer_commit_empty")) showError("live: " + e.error.message);
      if (e.error.code === "invalid_api_key") $("keyrow").hidden = false;
      break;
  }
  if (live.stopping && live.open.size === 0) liveDone();
}

function liveDone() {
  if (live.ws) live.ws.close();
  live.ws = null;
  live.stopping = false;
  $("live").classList.remove("on");
  $("live").textContent = "◉ Live";
  $("live").disabled = false;
  $("live-status").textContent = "done";
  $("live-text").dataset.state = "done";
}

async function liveStart() {
  $("error").hidden = true;
  if ($("key").value) localStorage.setItem("amanuensis-key", $("key").value);
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/realtime?intent=transcription&partial=true`;
  const protocols = ["realtime"];
  if (key()) protocols.push("openai-insecure-api-key." + key());
  live.items.clear(); live.open.clear();
  $("live-text").replaceChildren();
  delete $("live-text").dataset.state;
  $("live-output").hidden = false;
  $("live-status").textContent = "connecting…";
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  } catch (e) { showError("microphone unavailable: " + e.message); return; }
  const ws = new WebSocket(url, protocols);
  live.ws = ws;
  ws.onmessage = (m) => liveEvent(JSON.parse(m.data));
  ws.onclose = (e) => {
    if (live.ws === ws && !live.stopping) { liveStop(true); if (e.code !== 1000 && e.reason) showError("live: " + e.reason); }
  };
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("the server could not be reached")); })
    .catch((e) => { showError(e.message); });
  if (ws.readyState !== WebSocket.OPEN) { liveStop(true); return; }
  const session = { type: "transcription", audio: { input: {
    format: { type: "audio/pcm", rate: 24000 },
    transcription: { model: "whisper-1", ...($("language").value ? { language: $("language").value } : {}) },
    turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 } } } };
  ws.send(JSON.stringify({ type: "session.update", session }));
  live.ctx = new AudioContext({ sampleRate: 24000 });
  await live.ctx.audioWorklet.addModule("/static/live-worklet.js");
  live.node = new AudioWorkletNode(live.ctx, "pcm16-tap");
  live.node.port.onmessage = (e) => {
    if (live.ws && live.ws.readyState === WebSocket.OPEN) {
      const bytes = new Uint8Array(e.data);
      let bin = "";
      for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      live.ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: btoa(bin) }));
    }
  };
  live.ctx.createMediaStreamSource(live.stream).connect(live.node);
  live.node.connect(live.ctx.destination);  // a worklet runs while it is pulled
  $("live").classList.add("on");
  $("live").textContent = "■ Stop live";
  $("live-status").textContent = "listening";
}

async function liveStop(failed = false) {
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.stream = null;
  if (live.node) {
    live.node.port.postMessage("flush");
    await new Promise((r) => setTimeout(r, 100));  // the last block's message
    live.node.disconnect();
    live.node = null;
  }
  if (live.ctx) { live.ctx.close(); live.ctx = null; }
  if (failed || !live.ws || live.ws.readyState !== WebSocket.OPEN) { live.open.clear(); liveDone(); return; }
  live.stopping = true;
  $("live").disabled = true;
  $("live-status").textContent = "finishing…";
  live.ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
  // the answer (committed, or an error when no turn is open) comes back; if nothing is
  // open by then, we are done
  setTimeout(() => { if (live.stopping && live.open.size === 0) liveDone(); }, 1000);
}

$("live").addEventListener("click", () => (live.ws ? liveStop() : liveStart()));
