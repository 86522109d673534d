// The studio page: plays the HLS stream, sends lines through the service's API (which puts
// them on the RabbitMQ queue like any producer), and draws the statechart from its Mermaid
// text with the current state lit. No framework and nothing from a CDN: the page must work
// on a machine with no internet, next to the service and its nginx.
// Every URL is relative to the page, so the same page serves one station at / and each of
// many at /stations/NAME/. Only /login is absolute: one login covers the whole port.
// A hidden tab (another tab in front, a minimised window) holds no event stream: a browser
// opens at most 6 connections to one host and port, and each open stream keeps one.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

// ---- the statechart ------------------------------------------------------------------------

// Reads the lines python-statemachine writes for a stateDiagram-v2:
//   state "Idle" as idle        [*] --> idle        idle --> processing : Message accepted
function parseMermaid(text) {
  const states = [];
  const edges = [];
  let initial = null;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    let m = line.match(/^state "(.+)" as (\S+)$/);
    if (m) { states.push({ id: m[2], label: m[1] }); continue; }
    m = line.match(/^(\S+) --> (\S+)(?:\s*:\s*(.*))?$/);
    if (!m) continue;
    if (m[1] === "[*]") { initial = m[2]; continue; }
    edges.push({ from: m[1], to: m[2], label: m[3] || "" });
  }
  for (const e of edges) {  // a state only named in a transition still gets a box
    for (const id of [e.from, e.to]) {
      if (!states.some((s) => s.id === id)) states.push({ id, label: id });
    }
  }
  return { states, edges, initial };
}

// "Speech finished [blending_in]" + "Failed [blending_in]" -> ["Speech finished / Failed", "[blending_in]"]
function labelLines(labels) {
  const split = labels.map((l) => {
    const m = l.match(/^(.*?)\s*(\[[^\]]*\])?$/);
    return { name: m[1], guard: m[2] || "" };
  });
  const guards = [...new Set(split.map((s) => s.guard))];
  if (guards.length === 1) {
    return [split.map((s) => s.name).join(" / "), guards[0]].filter(Boolean);
  }
  return labels;
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, lines, attrs = {}) {
  const t = el("text", { x, y, ...attrs }, parent);
  lines.forEach((line, i) => {
    const span = el("tspan", { x, dy: i ? "1.2em" : 0 }, t);
    span.textContent = line;
  });
  return t;
}

// States in a row in declaration order: neighbours' forward edges are straight arrows,
// backward edges arc underneath (deeper for longer jumps), self-loops sit on top.
function drawChart(mermaid) {
  const chart = parseMermaid(mermaid);
  const W = 140, H = 48, GAP = 150, TOP = 86, M = 24;
  const index = new Map(chart.states.map((s, i) => [s.id, i]));
  const x = (id) => M + index.get(id) * (W + GAP);
  const width = 2 * M + chart.states.length * W + (chart.states.length - 1) * GAP;
  const svg = el("svg", { viewBox: `0 0 ${width} 272`, role: "img", "aria-label": "statechart" });
  const defs = el("defs", {}, svg);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 10, markerHeight: 10, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" }, defs);
  el("path", { d: "M0,0 L10,5 L0,10 z" }, marker);

  const groups = new Map();
  for (const e of chart.edges) {
    const key = `${e.from}->${e.to}`;
    if (!groups.has(key)) groups.set(key, { from: e.from, to: e.to, labels: [] });
    groups.get(key).labels.push(e.label);
  }
  const mid = TOP + H / 2, bottom = TOP + H;
  for (const g of groups.values()) {
    const a = index.get(g.from), b = index.get(g.to);
    const group = el("g", { class: "edge", "data-from": g.from, "data-to": g.to }, svg);
    const lines = labelLines(g.labels);
    let d, lx, ly;
    if (a === b) {
      const cx = x(g.from) + W / 2;
      d = `M${cx - 22},${TOP} C${cx - 40},${TOP - 46} ${cx + 40},${TOP - 46} ${cx + 22},${TOP}`;
      lx = cx; ly = TOP - 66;
    } else if (b === a + 1) {
      d = `M${x(g.from) + W},${mid} L${x(g.to)},${mid}`;
      lx = x(g.from) + W + GAP / 2; ly = mid - 10 - 13 * (lines.length - 1);
    } else {
      const x1 = x(g.from) + W / 2 + (a > b ? -24 : 24), x2 = x(g.to) + W / 2 + (a > b ? 24 : -24);
      const depth = 34 + 62 * (Math.abs(a - b) - 1);
      const c = bottom + (depth * 4) / 3;
      d = `M${x1},${bottom} C${x1},${c} ${x2},${c} ${x2},${bottom}`;
      lx = (x1 + x2) / 2; ly = bottom + depth + 14;
    }
    el("path", { d, "marker-end": "url(#arrow)" }, group);
    text(group, lx, ly, lines);
  }
  for (const s of chart.states) {
    const g = el("g", { class: "node", "data-state": s.id }, svg);
    el("rect", { x: x(s.id), y: TOP, width: W, height: H, rx: 8 }, g);
    text(g, x(s.id) + W / 2, mid, [s.label]);
  }
  if (chart.initial && index.has(chart.initial)) {
    el("circle", { class: "initial", cx: x(chart.initial) - 14, cy: mid, r: 5 }, svg);
  }
  $("chart").replaceChildren(svg);
}

let flashTimer = null;
function showState(state, from) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  for (const node of document.querySelectorAll("#chart .node")) {
    node.classList.toggle("current", node.dataset.state === state);
  }
  if (from) {
    for (const edge of document.querySelectorAll("#chart .edge")) {
      edge.classList.toggle("taken", edge.dataset.from === from && edge.dataset.to === state);
    }
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => {
      document.querySelectorAll("#chart .edge.taken").forEach((e) => e.classList.remove("taken"));
    }, 1500);
  }
}

// ---- the numbers ---------------------------------------------------------------------------

let maxChars = null;
const seconds = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)} s`);

function showStatus(s) {
  $("link").textContent = "";
  const air = s.stopped ? "stopped" : s.on_air ? "on_air" : s.reconnecting ? "reconnecting" : "starting";
  $("air").dataset.air = air;
  $("air").textContent = {
    on_air: "ON AIR", reconnecting: "reconnecting", starting: "starting", stopped: "STOPPED by operator",
  }[air];
  // Only the button that would change something is offered (both work either way: idempotent).
  $("stream-stop").disabled = s.stopped;
  $("stream-start").disabled = !s.stopped;
  if ($("state").dataset.state !== s.state) showState(s.state, null);
  $("n-fps").textContent = s.output_fps === null ? "–" : s.output_fps.toFixed(1);
  $("n-underruns").textContent = s.underrun_frames;
  $("n-dropped").textContent = s.dropped_frames;
  $("n-queued").textContent = s.queued_messages;
  $("n-queued-s").textContent = seconds(s.queued_seconds);
  $("n-latency").textContent = seconds(s.last_latency_seconds);
  $("n-latency-mean").textContent = seconds(s.mean_latency_seconds);
  $("n-messages").textContent = Object.entries(s.messages)
    .filter(([, n]) => n > 0).map(([k, n]) => `${k.replace("_", " ")} ${n}`).join(", ") || "none yet";
  $("n-rabbit").textContent = s.rabbitmq_connected ? "connected" : "not connected";
  maxChars = s.max_text_chars;
  updateCount();
}

// The service does not answer (restarting), or answers with an error (the station is gone):
// everything on the page is from before, so the badge must stop saying ON AIR, and the reason
// is shown until the next status arrives.
function showLost(reason) {
  $("air").dataset.air = "lost";
  $("air").textContent = "no connection";
  $("link").textContent = `${reason}; retrying (what the page shows is from before)`;
}

// The tab is hidden and its event stream closed: nobody sees the page now, but whoever looks at
// it (a tab switcher's preview, the moment it shows) must not take its numbers as live.
function showPaused() {
  $("air").dataset.air = "paused";
  $("air").textContent = "paused";
  $("link").textContent = "paused while this tab is hidden; it catches up when shown";
}

function updateCount() {
  const n = $("text").value.length;
  $("count").textContent = maxChars ? `${n} / ${maxChars}` : `${n}`;
  $("count").classList.toggle("over", maxChars !== null && n > maxChars);
}

// ---- sending -------------------------------------------------------------------------------

async function post(path, body) {
  $("error").textContent = "";
  $("notice").textContent = "";
  let response;
  try {
    response = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (err) {
    $("error").textContent = `the service did not answer (${err.message})`;
    return false;
  }
  if (response.status === 401) { logInAgain(); return false; }  // STUDIO_TOKEN: log in again
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("error").textContent = answer.error || `HTTP ${response.status}`;
    return false;
  }
  $("notice").textContent = `queued ${answer.type} message ${answer.id}`;
  return true;
}

$("say-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("say").disabled = true;
  const ok = await post("api/say", { text: $("text").value, interrupt: $("interrupt").checked });
  $("say").disabled = false;
  if (ok) { $("text").value = ""; updateCount(); }
});
for (const id of ["stop", "clear", "stream-stop", "stream-start"]) {
  $(id).addEventListener("click", () => post("api/control", { action: $(id).dataset.action }));
}
$("text").addEventListener("input", updateCount);

// ---- the video -----------------------------------------------------------------------------

// nginx writes the playlist only once the first 2 s fragment is out, and loses it while the
// service restarts, so every fatal error is answered by trying again a little later.
function play(url) {
  const video = $("video");
  if (!url) {
    $("video-note").textContent = "No preview: set STUDIO_HLS_URL to the stream's HLS playlist.";
    return;
  }
  $("video-note").textContent = `HLS: ${url}`;
  if (window.Hls && Hls.isSupported()) {
    const start = () => {
      const hls = new Hls({ liveDurationInfinity: true, manifestLoadingMaxRetry: 2 });
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR) { hls.recoverMediaError(); return; }
        hls.destroy();
        setTimeout(start, 2000);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
    };
    start();
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    video.addEventListener("error", () => setTimeout(() => { video.src = url; video.play().catch(() => {}); }, 2000));
    video.play().catch(() => {});
  } else {
    $("video-note").textContent = "This browser cannot play HLS.";
  }
}

// ---- live updates --------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let events = null;  // the open event stream; null while the tab is hidden or the page polls
let connecting = false;  // connect() is polling api/status

function listen() {
  if (!window.EventSource) {
    setInterval(() => { if (!document.hidden) refresh().catch((err) => showLost(err.message)); }, 1000);
    return;
  }
  if (events) return;
  const stream = events = new EventSource("api/events");
  stream.addEventListener("state", (e) => { const d = JSON.parse(e.data); showState(d.state, d.from); });
  stream.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
  stream.addEventListener("error", () => {
    // EventSource reconnects by itself (after the server's retry: 2 s) when the service restarts;
    // meanwhile api/status says whether the service is there at all.
    if (stream.readyState !== EventSource.CLOSED) { refresh().catch((err) => showLost(err.message)); return; }
    // It gives up on an answer that is not an event stream (too many open, the station gone,
    // a new token): poll api/status, which says why, until it answers, then listen again.
    stream.close();
    if (events === stream) events = null;
    connect(1000);
  });
}

function stopListening() {
  if (events) events.close();
  events = null;
}

// Poll api/status (the first time after `delayMs`) until it answers, then listen to the event
// stream. One poller at a time, and none while the tab is hidden: showing it starts one again.
async function connect(delayMs) {
  if (connecting || events) return;
  connecting = true;
  try {
    for (;;) {
      await sleep(delayMs);
      delayMs = 1000;
      if (document.hidden) return;
      try { await refresh(); break; } catch (err) { showLost(err.message); }
    }
    if (!document.hidden) listen();  // hidden while that status was on its way
  } finally {
    connecting = false;
  }
}

function onVisibilityChange() {
  if (document.hidden) {
    stopListening();
    showPaused();
  } else {
    connect(0);  // the numbers from api/status at once, then live again
  }
}

// One status snapshot, shown; throws an Error whose message says why there is none.
async function refresh() {
  const answer = await getJson("api/status");
  showStatus(answer);
  if (document.hidden) showPaused();  // the tab was hidden while this was on its way: no stream follows
  return answer;
}

(async () => {
  let status;
  for (;;) {
    try { status = await refresh(); break; } catch (err) { showLost(err.message); await sleep(2000); }
  }
  drawChart(status.mermaid);
  showState(status.state, null);
  play(status.hls_url);
  document.addEventListener("visibilitychange", onVisibilityChange);
  if (document.hidden) showPaused(); else listen();  // opened in a background tab: listens once shown
})();
