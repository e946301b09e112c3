// The search page: words, a filter, collections, an image (dropped, pasted or picked) or a clip ("more like
// this") -> /search -> a grid of thumbnails; a click plays the clip from its start. The page URL holds the
// search (q, filter, collection, like, group_by, mode): links can be shared and back / forward rerun searches. An
// image is never put in the URL; it is kept in this page's memory for back / forward only. A demo server's page
// also lists example searches; a click runs one as if it had been typed.
"use strict";

const PAGE = 24;
const form = document.getElementById("search-form");
const input = document.getElementById("q");
const filterInput = document.getElementById("filter");
const filterError = document.getElementById("filter-error");
const group = document.getElementById("group");
const modeSelect = document.getElementById("mode");
const MODES = ["visual", "speech", "hybrid"];
const collectionsBox = document.getElementById("collections");
const collectionList = document.getElementById("collection-list");
const pickImage = document.getElementById("pick-image");
const imageFile = document.getElementById("image-file");
const example = document.getElementById("example");
const exampleImg = document.getElementById("example-img");
const exampleClear = document.getElementById("example-clear");
const imageWeight = document.getElementById("image-weight");
const likeBanner = document.getElementById("like-banner");
const likeText = document.getElementById("like-text");
const likeClear = document.getElementById("like-clear");
const grid = document.getElementById("results");
const statusLine = document.getElementById("status");
const more = document.getElementById("more");
const player = document.getElementById("player");
const video = document.getElementById("video");
const nowPlaying = document.getElementById("now-playing");
const timeline = document.getElementById("timeline");
const demoQueries = document.getElementById("demo-queries");
const demoQueryList = document.getElementById("demo-query-list");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key");

// The search shown (or being fetched); image is a key of `images`, never a URL parameter.
let current = { q: "", filter: "", collections: [], like: null, likeTitle: "", group: false, mode: "", image: null };
let shown = { offset: 0, total: 0 };
let generation = 0; // answers to older searches are dropped
let image = null; // { key, file, url } of the image in the form
const images = new Map(); // key -> File, for history entries of image searches (this page's memory only)
let imageCount = 0;
let pendingCollections = null; // names from the URL, ticked once GET /collections has answered

function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

// ---- the search state <-> the page URL and the form

function stateFromUrl() {
  const p = new URLSearchParams(location.search);
  const like = Number.parseInt(p.get("like") || "", 10);
  return {
    q: (p.get("q") || "").trim(),
    filter: (p.get("filter") || "").trim(),
    collections: (p.get("collection") || "").split(",").map((c) => c.trim()).filter(Boolean),
    like: Number.isFinite(like) && like > 0 ? like : null,
    likeTitle: "",
    group: p.get("group_by") === "video",
    mode: MODES.includes(p.get("mode")) ? p.get("mode") : "",
    image: null,
  };
}

function urlOf(state) {
  const p = new URLSearchParams();
  if (state.like) p.set("like", String(state.like));
  else if (state.q) p.set("q", state.q);
  if (state.filter) p.set("filter", state.filter);
  if (state.collections.length) p.set("collection", state.collections.join(","));
  if (state.group) p.set("group_by", "video");
  if (state.mode) p.set("mode", state.mode);
  const query = p.toString();
  return location.pathname + (query ? `?${query}` : "");
}

function checkedCollections() {
  if (pendingCollections) return [...pendingCollections];
  return [...collectionList.querySelectorAll("input:checked")].map((box) => box.value);
}

function stateFromForm() {
  return {
    q: input.value.trim(),
    filter: filterInput.value.trim(),
    collections: checkedCollections(),
    like: null,
    likeTitle: "",
    group: group.checked,
    mode: modeSelect.value,
    image: image ? image.key : null,
  };
}

function tickCollections(names) {
  const boxes = collectionList.querySelectorAll("input");
  if (!boxes.length) {
    pendingCollections = [...names]; // not loaded yet
    return;
  }
  pendingCollections = null;
  for (const box of boxes) box.checked = names.includes(box.value);
}

function fillForm(state) {
  input.value = state.q;
  filterInput.value = state.filter;
  group.checked = state.group;
  modeSelect.value = state.mode || "";
  tickCollections(state.collections);
  setImage(state.image && images.has(state.image) ? { key: state.image, file: images.get(state.image) } : null);
  showFilterError("");
}

function el(tag, properties, ...children) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

// ---- collections

function collectionBox(name, checked, ...after) {
  const box = el("input", { type: "checkbox", name: "collection", value: name, checked });
  box.addEventListener("change", () => {
    if (searchable(current)) newSearch({ ...formOrLike(), collections: checkedCollections() });
  });
  const label = el("label", { className: "collection" }, box, ` ${name} `, ...after);
  collectionList.append(label);
  return label;
}

// The JSON of a GET, or null when there is none (e.g. a 401 before the read key is given: asked again after it is)
async function getJson(path) {
  try {
    const response = await fetch(path);
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

async function loadCollections() {
  const body = await getJson("/collections");
  if (!body) return;
  const wanted = pendingCollections || checkedCollections();
  collectionList.replaceChildren();
  for (const c of body.collections || []) {
    const hours = c.hours >= 1 ? `${c.hours.toFixed(1)} h` : `${Math.round(c.hours * 60)} min`;
    const label = collectionBox(c.name, wanted.includes(c.name), el("span", { className: "hint", textContent: `(${c.videos})` }));
    label.title = `${c.videos} videos, ${c.clips} clips, ${hours}`;
  }
  // names asked for that the server does not list stay asked for (its 422 says so)
  for (const name of wanted) {
    if (!collectionList.querySelector(`input[value="${CSS.escape(name)}"]`)) collectionBox(name, true).classList.add("unknown");
  }
  pendingCollections = null;
  collectionsBox.hidden = collectionList.childElementCount === 0;
}

// ---- the demo's example searches (only a demo server's page has data-demo: GET /demo/queries lists them)

async function loadDemoQueries() {
  if (!("demo" in document.body.dataset)) return;
  const body = await getJson("/demo/queries");
  if (!body) return;
  demoQueryList.replaceChildren();
  for (const query of body.queries || []) {
    const button = el("button", { type: "button", className: "demo-query", textContent: query });
    button.addEventListener("click", () => {
      input.value = query;
      form.requestSubmit(); // as if typed: the URL holds it, with the form's filter and collections
    });
    demoQueryList.append(el("li", {}, button));
  }
  demoQueries.hidden = demoQueryList.childElementCount === 0;
}

// ---- the image searched by

function setImage(next) {
  if (image && image.url) URL.revokeObjectURL(image.url);
  image = null;
  if (next) {
    image = { key: next.key, file: next.file, url: URL.createObjectURL(next.file) };
    exampleImg.src = image.url;
  } else {
    exampleImg.removeAttribute("src");
    imageFile.value = "";
  }
  example.hidden = !image;
}

function searchByImage(file) {
  if (!file) return;
  if (!/^image\//.test(file.type || "image/")) {
    statusLine.textContent = `Not an image: ${file.name || file.type}`;
    return;
  }
  imageCount += 1;
  const key = `image-${imageCount}`;
  images.set(key, file);
  setImage({ key, file });
  newSearch({ ...stateFromForm(), image: key });
}

function imageOf(transfer) {
  if (!transfer) return null;
  for (const file of transfer.files || []) if (file.type.startsWith("image/")) return file;
  for (const item of transfer.items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

function hasFiles(event) {
  return event.dataTransfer && [...event.dataTransfer.types].includes("Files");
}

// ---- results

function card(hit) {
  const item = document.createElement("div");
  item.className = "result";
  item.dataset.start = String(hit.start);
  item.dataset.end = String(hit.end);
  item.dataset.media = hit.media_url;
  item.dataset.clip = String(hit.clip_id);
  item.dataset.video = String(hit.video_id);
  const title = hit.video.title || hit.video.path.split("/").pop();
  const facts = el(
    "span",
    { className: "facts" },
    el("span", { className: "range", textContent: `${clock(hit.start)}–${clock(hit.end)}` }),
    el("span", { className: "score", textContent: hit.score.toFixed(3), title: "cosine similarity" }),
  );
  if (hit.confidence !== null && hit.confidence !== undefined) {
    const percent = Math.round(hit.confidence * 100);
    facts.append(
      el("span", {
        className: "confidence",
        textContent: `${percent}% sure`,
        title: "Probability that this clip matches the words (the checkpoint's calibration)",
      }),
    );
  }
  if ((hit.matched || []).includes("speech")) {
    facts.append(el("span", { className: "said", textContent: "said", title: "Its subtitles hold the words" }));
  }
  const meta = el("span", { className: "meta" }, el("span", { className: "title", textContent: title, title }), facts);
  const img = el("img", { src: hit.thumbnail_url, alt: title, loading: "lazy" });
  const button = el("button", { type: "button", className: "play" }, img, meta);
  button.addEventListener("click", () => play(item, hit, title));
  const like = el("button", {
    type: "button",
    className: "like",
    textContent: "More like this",
    title: `Clips that look like this one (${title}, ${clock(hit.start)}–${clock(hit.end)})`,
  });
  like.addEventListener("click", () => {
    const state = { ...current, q: "", image: null, like: hit.clip_id };
    state.likeTitle = `${title} · ${clock(hit.start)}–${clock(hit.end)}`;
    fillForm(state);
    newSearch(state);
    window.scrollTo({ top: 0 });
  });
  item.append(button);
  if (hit.snippet) item.append(snippet(hit.snippet, hit.highlights || []));
  item.append(like);
  return item;
}

// The subtitle text that matched, its matched words marked (offsets from the API; text nodes only, no HTML).
function snippet(text, highlights) {
  const node = el("p", { className: "snippet" });
  let at = 0;
  for (const [start, end] of highlights) {
    if (start < at || end > text.length) continue;
    node.append(text.slice(at, start), el("mark", { textContent: text.slice(start, end) }));
    at = end;
  }
  node.append(text.slice(at));
  return node;
}

function play(item, hit, title) {
  for (const other of grid.querySelectorAll(".result.playing")) other.classList.remove("playing");
  item.classList.add("playing");
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
    video.dataset.video = String(hit.video_id);
    video.src = hit.media_url; // the #t=start,end fragment: the browser starts there by itself
    video.addEventListener("loadedmetadata", seekAndPlay, { once: true });
    video.load();
  }
  player.scrollIntoView({ behavior: "smooth", block: "start" });
  drawTimeline(hit);
}

function seek(start) {
  video.currentTime = start;
  video.play().catch(() => {});
}

// Under the player, for a search in words: every clip's score along the video (GET /videos/{id}/moments),
// its moments marked; a click on a bar or a moment plays from its start.
async function drawTimeline(hit) {
  timeline.replaceChildren();
  timeline.hidden = true;
  if (!current.q || current.like || current.image) return;
  const asked = hit.video_id;
  const body = await getJson(`/videos/${hit.video_id}/moments?${new URLSearchParams({ q: current.q })}`);
  if (!body || !body.curve.length || video.dataset.video !== String(asked)) return;
  const length = hit.video.duration || Math.max(...body.curve.map((p) => p.end));
  const scores = body.curve.map((p) => p.score);
  const low = Math.min(...scores);
  const range = Math.max(...scores) - low || 1;
  const place = (node, start, end) => {
    node.style.left = `${(100 * start) / length}%`;
    node.style.width = `${(100 * (end - start)) / length}%`;
  };
  for (const point of body.curve) {
    const bar = el("button", {
      type: "button",
      className: "bar",
      title: `${clock(point.start)}–${clock(point.end)}: ${point.score.toFixed(3)}`,
    });
    place(bar, point.start, point.end);
    bar.style.height = `${15 + (85 * (point.score - low)) / range}%`;
    bar.dataset.start = String(point.start);
    bar.addEventListener("click", () => seek(point.start));
    timeline.append(bar);
  }
  for (const moment of body.moments) {
    const sure = moment.confidence === null ? "" : `, ${Math.round(moment.confidence * 100)}% sure`;
    const band = el("button", {
      type: "button",
      className: "moment",
      title: `moment ${clock(moment.start)}–${clock(moment.end)}${sure}`,
    });
    place(band, moment.start, moment.end);
    band.dataset.start = String(moment.start);
    band.addEventListener("click", () => seek(moment.start));
    timeline.append(band);
  }
  timeline.hidden = false;
}

function showFilterError(message) {
  filterError.textContent = message;
  filterError.hidden = !message;
  if (message) filterInput.setAttribute("aria-invalid", "true");
  else filterInput.removeAttribute("aria-invalid");
}

function showLike(state) {
  likeBanner.hidden = !state.like;
  if (state.like) likeText.textContent = `More like clip ${state.like}${state.likeTitle ? ` (${state.likeTitle})` : ""}`;
}

function request(state, offset) {
  const common = { k: String(PAGE), offset: String(offset) };
  if (state.group) common.group_by = "video";
  if (state.filter) common.filter = state.filter;
  if (state.collections.length) common.collection = state.collections.join(",");
  if (state.mode && state.q && !state.like) common.mode = state.mode; // speech needs words
  if (state.image && images.has(state.image)) {
    const data = new FormData();
    data.append("image", images.get(state.image));
    if (state.q) data.append("q", state.q);
    data.append("image_weight", imageWeight.value);
    for (const [key, value] of Object.entries(common)) data.append(key, value);
    return fetch("/search", { method: "POST", body: data });
  }
  const params = new URLSearchParams(state.like ? { like: String(state.like) } : { q: state.q });
  for (const [key, value] of Object.entries(common)) params.set(key, value);
  return fetch(`/search?${params}`);
}

function searchable(state) {
  return Boolean(state.like || state.q || (state.image && images.has(state.image)));
}

async function run(state, offset) {
  const mine = ++generation;
  current = state;
  showLike(state);
  if (!searchable(state)) {
    grid.replaceChildren();
    more.hidden = true;
    shown = { offset: 0, total: 0 };
    statusLine.textContent = state.image ? "The image of this search is no longer here: drop it again" : "";
    return;
  }
  statusLine.textContent = "Searching…";
  more.hidden = true;
  let response;
  let body;
  try {
    response = await request(state, offset);
    body = await response.json();
  } catch (err) {
    if (mine === generation) statusLine.textContent = `The server did not answer (${err})`;
    return;
  }
  if (mine !== generation) return; // a newer search has started
  if (response.status === 401) {
    // TVR_READ_API_KEY: the key goes into a cookie, which the thumbnails and the player send too
    keyForm.hidden = false;
    keyInput.focus();
    statusLine.textContent = body.detail;
    return;
  }
  if (!response.ok) {
    const message = body.message || (typeof body.detail === "string" ? body.detail : "invalid request");
    const aboutFilter = Array.isArray(body.detail) && body.detail.some((e) => (e.loc || []).includes("filter"));
    if (response.status === 422 && aboutFilter) {
      showFilterError(message);
      statusLine.textContent = "The filter was not accepted";
    } else {
      statusLine.textContent = `Error ${response.status}: ${message}`;
    }
    if (offset === 0) grid.replaceChildren();
    return;
  }
  showFilterError("");
  if (offset === 0) grid.replaceChildren();
  for (const hit of body.results) grid.append(card(hit));
  shown = { offset: offset + body.results.length, total: body.total };
  const what = state.like ? " like this clip" : state.image ? (state.q ? " for the image and words" : " for the image") : "";
  statusLine.textContent = body.total
    ? `${Math.min(shown.offset, body.total)} of ${body.total} results${what} in ${body.took_ms.toFixed(0)} ms`
    : "No results";
  more.hidden = shown.offset >= body.total || body.results.length === 0;
}

function newSearch(state) {
  // a new history entry per search; replaced when the same search is run again (the URL would not change)
  const url = urlOf(state);
  const same = url === location.pathname + location.search && history.state && history.state.image === state.image;
  if (same) history.replaceState(state, "", url);
  else history.pushState(state, "", url);
  run(state, 0);
}

function formOrLike() {
  // the form's search; with the words box empty a like-search shown stays one (with the form's filter)
  const state = stateFromForm();
  if (!state.q && !state.image && current.like) return { ...state, like: current.like, likeTitle: current.likeTitle };
  return state;
}

// ---- events

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const state = formOrLike();
  if (!searchable(state)) {
    statusLine.textContent = "Type some words, or drop, paste or pick an image";
    input.focus();
    return;
  }
  newSearch(state);
});
more.addEventListener("click", () => run(current, shown.offset));
group.addEventListener("change", () => {
  if (searchable(current)) newSearch({ ...formOrLike(), group: group.checked });
});
modeSelect.addEventListener("change", () => {
  if (searchable(current)) newSearch({ ...formOrLike(), mode: modeSelect.value });
});
filterInput.addEventListener("input", () => showFilterError(""));
likeClear.addEventListener("click", () => newSearch({ ...stateFromForm(), like: null }));
exampleClear.addEventListener("click", () => {
  setImage(null);
  if (current.image) newSearch({ ...stateFromForm(), image: null });
});
pickImage.addEventListener("click", () => imageFile.click());
imageFile.addEventListener("change", () => searchByImage(imageFile.files[0]));

document.addEventListener("dragover", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) document.body.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  document.body.classList.remove("dragging");
  const file = imageOf(event.dataTransfer);
  if (!file && !hasFiles(event)) return; // dropped text goes where it was dropped
  event.preventDefault();
  if (file) searchByImage(file);
  else statusLine.textContent = "Only an image (JPEG, PNG, WebP) can be dropped to search";
});
document.addEventListener("paste", (event) => {
  const file = imageOf(event.clipboardData);
  if (!file) return; // pasted text goes into the field as usual
  event.preventDefault();
  searchByImage(file);
});

window.addEventListener("popstate", (event) => {
  const state = event.state || stateFromUrl();
  fillForm(state);
  run(state, 0);
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  document.cookie = `tvr_key=${encodeURIComponent(keyInput.value)}; path=/; SameSite=Strict`;
  keyInput.value = "";
  keyForm.hidden = true;
  loadCollections();
  loadDemoQueries();
  run(current, 0);
});

// a URL with a search in it (a shared link, a reload) runs that search
{
  const state = history.state || stateFromUrl();
  history.replaceState(state, "", urlOf(state));
  fillForm(state);
  loadCollections();
  loadDemoQueries();
  if (searchable(state)) run(state, 0);
  else showLike(state);
}
