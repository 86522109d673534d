// The station list: one row per station, each linking to that station's studio. Redrawn from
// GET api/stations every second (stations come and go when the process reloads its list).
// Text goes in through textContent only: a station's name is never read as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 1000;

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function draw(stations) {
  const body = $("stations");
  const rows = stations.map((s) => {
    const row = document.createElement("tr");
    row.dataset.station = s.name;
    const link = document.createElement("a");
    link.href = s.path;
    link.textContent = s.name;
    row.insertCell().appendChild(link);
    const stream = cell(row, s.error ? s.error : s.stream, "stream");
    stream.dataset.stream = s.error ? "error" : s.stream;
    cell(row, s.state || "–");
    cell(row, s.error ? "–" : s.queued_messages, "num");
    cell(row, s.error ? "–" : `${s.queued_speech_seconds.toFixed(2)} s`, "num");
    return row;
  });
  body.replaceChildren(...rows);
  $("count").textContent = stations.length;
}

async function refresh() {
  try {
    const response = await fetch("api/stations");
    if (response.status === 401) { window.location.assign("/login"); return; }  // STUDIO_TOKEN: log in again
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    draw((await response.json()).stations);
    $("error").textContent = "";
  } catch (err) {
    $("error").textContent = `the service did not answer (${err.message})`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
