// The search page: query -> GET /search -> a grid of thumbnails; a click plays the clip from its start.
"use strict";

const PAGE = 24;
const form = document.getElementById("search-form");
const input = document.getElementById("q");
const group = document.getElementById("group");
const grid = document.getElementById("results");
const statusLine = document.getElementById("status");
const more = document.getElementById("more");
const player = document.getElementById("player");
const video = document.getElementById("video");
const nowPlaying = document.getElementById("now-playing");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key");

let current = { q: "", offset: 0, total: 0 };

function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

function card(hit) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "result";
  button.dataset.start = String(hit.start);
  button.dataset.end = String(hit.end);
  button.dataset.media = hit.media_url;
  const title = hit.video.title || hit.video.path.split("/").pop();
  const img = document.createElement("img");
  img.src = hit.thumbnail_url;
  img.alt = title;
  img.loading = "lazy";
  const meta = document.createElement("span");
  meta.className = "meta";
  const name = document.createElement("span");
  name.className = "title";
  name.textContent = title;
  name.title = title;
  const facts = document.createElement("span");
  facts.className = "facts";
  const range = document.createElement("span");
  range.className = "range";
  range.textContent = `${clock(hit.start)}–${clock(hit.end)}`;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  facts.append(range, score);
  meta.append(name, facts);
  button.append(img, meta);
  button.addEventListener("click", () => play(button, hit, title));
  return button;
}

function play(button, hit, title) {
  for (const other of grid.querySelectorAll(".result.playing")) other.classList.remove("playing");
  button.classList.add("playing");
  player.hidden = false;
  nowPlaying.textContent = `${title} · ${clock(hit.start)}–${clock(hit.end)}`;
  const base = hit.media_url.split("#")[0];
  const start = hit.start;
  const seekAndPlay = () => {
    if (Math.abs(video.currentTime - start) > 0.25) video.currentTime = start;
    video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  };
  if (video.dataset.base === base && video.readyState >= 1) {
    seekAndPlay();
  } else {
    video.dataset.base = base;
    video.src = hit.media_url; // the #t=start,end fragment: the browser starts there by itself
    video.addEventListener("loadedmetadata", seekAndPlay, { once: true });
    video.load();
  }
  player.scrollIntoView({ behavior: "smooth", block: "start" });
}

async function search(offset) {
  const q = input.value.trim();
  if (!q) return;
  const params = new URLSearchParams({ q, k: String(PAGE), offset: String(offset) });
  if (group.checked) params.set("group_by", "video");
  statusLine.textContent = "Searching…";
  more.hidden = true;
  let body;
  try {
    const response = await fetch(`/search?${params}`);
    body = await response.json();
    if (response.status === 401) {
      // TVR_READ_API_KEY: the key goes into a cookie, which the thumbnails and the player send too
      keyForm.hidden = false;
      keyInput.focus();
      statusLine.textContent = body.detail;
      return;
    }
    if (!response.ok) {
      statusLine.textContent = `Error ${response.status}: ${body.message || body.detail}`;
      return;
    }
  } catch (err) {
    statusLine.textContent = `The server did not answer (${err})`;
    return;
  }
  if (offset === 0) grid.replaceChildren();
  for (const hit of body.results) grid.append(card(hit));
  current = { q, offset: offset + body.results.length, total: body.total };
  statusLine.textContent = body.total
    ? `${Math.min(current.offset, body.total)} of ${body.total} results in ${body.took_ms.toFixed(0)} ms`
    : "No results";
  more.hidden = current.offset >= body.total || body.results.length === 0;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search(0);
});
more.addEventListener("click", () => search(current.offset));
keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  document.cookie = `tvr_key=${encodeURIComponent(keyInput.value)}; path=/; SameSite=Strict`;
  keyInput.value = "";
  keyForm.hidden = true;
  search(0);
});
