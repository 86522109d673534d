// The station list: one row per station, each linking to that station's studio. Redrawn from
// GET api/stations about every second (stations come and go when the process reloads its list).
// Text goes in through textContent only: a station's name is never read as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 1000;  // from the end of one request to the start of the next
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
  $("air").dataset.air = "live";
  $("air").textContent = "live";
  $("error").textContent = "";
}

// As the studio page's showLost: the rows are from before, and the reason shows until the
// next list arrives.
function showLost(reason) {
  $("air").dataset.air = "lost";
  $("air").textContent = "no connection";
  $("error").textContent = `${reason}; retrying (the list shows what was there before)`;
}

// The page this browser is on, for the login form to come back to ("/" is where it goes anyway).
// One list, drawn; throws an Error whose message says why there is none.
async function refresh() {
  const answer = await getJson("api/stations");
  draw(answer.stations);
}

// One request at a time, the next one a while after the last has ended: with setInterval a
// server that accepts and never answers would collect one more hanging request every second,
// and with them the browser's 6 connections to this port, which the studio pages need too.
(async () => {
  for (;;) {
    try { await refresh(); } catch (err) { showLost(err.message); }
    await sleep(REFRESH_MS);
  }
})();
