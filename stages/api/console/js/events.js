// Events: the stored events newest first, filtered by what the address holds
// (camera, rule, kind, class, since, until), a page at a time by the API's
// cursor, with new events arriving from the event stream while the list is on
// screen. An event opens over the list (#/events/<id>?filters): its snapshot,
// its clip, its fields.

import { cameraPath, getJson, withQuery } from "./api.js";
import { el, pause, when } from "./dom.js";
import { parseRoute, report } from "./main.js";

const PAGE = 50;
const LIVE_ROWS = 500; // past this many rows, new events wait behind a link
const FILTERS = ["camera", "rule", "kind", "class", "since", "until"];

const eventPath = (id) => `api/events/${encodeURIComponent(id)}`;

function filtersOf(params) {
  const filters = {};
  for (const name of FILTERS) {
    const value = params.get(name);
    if (value) filters[name] = value;
  }
  return filters;
}

function listAddress(filters, id) {
  const query = new URLSearchParams(filters).toString();
  const path = id ? `#/events/${encodeURIComponent(id)}` : "#/events";
  return query ? `${path}?${query}` : path;
}

/** "2026-12-07T19:30" in the browser's time zone, for a datetime-local input. */
function localInput(unixSeconds) {
  const date = new Date(unixSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function summary(event) {
  const parts = [event.kind.replaceAll("_", " ")];
  if (event.rule && event.rule !== "camera") parts.push(event.rule);
  if (event.class_name) parts.push(event.class_name);
  if (event.direction) parts.push(event.direction);
  if (event.track_id >= 0) parts.push(`#${event.track_id}`);
  return parts.join(" · ");
}

function option(value, label, chosen) {
  return el("option", { value, selected: value === chosen }, label);
}

function filterForm(filters, cameras, kinds, onChange) {
  const rules = [...new Set(cameras.flatMap((c) => c.rules.map((r) => r.name)))].sort();
  const select = (name, label, values) => el("label", {}, label,
    el("select", { name },
      option("", "all", filters[name] || ""),
      values.map((v) => option(v, v, filters[name] || ""))));
  const time = (name, label) => el("label", {}, label,
    el("input", {
      type: "datetime-local", name,
      value: filters[name] && /^\d+(\.\d+)?$/.test(filters[name]) ? localInput(Number(filters[name])) : "",
    }));
  const form = el("form", { class: "filters", "aria-label": "Filters" },
    select("camera", "Camera", cameras.map((c) => c.name)),
    select("rule", "Rule", rules),
    select("kind", "Kind", kinds.map((k) => k.name)),
    el("label", {}, "Class", el("input", {
      name: "class", value: filters.class || "", list: "classes", size: 10, autocomplete: "off",
    })),
    el("datalist", { id: "classes" }),
    time("since", "From"),
    time("until", "To"),
    el("button", { type: "reset" }, "Clear"));
  const read = () => {
    const chosen = {};
    for (const name of FILTERS) {
      const field = form.elements.namedItem(name);
      if (!field?.value) continue;
      chosen[name] = field.type === "datetime-local"
        ? String(Math.floor(new Date(field.value).getTime() / 1000)) : field.value.trim();
    }
    return chosen;
  };
  form.addEventListener("change", () => onChange(read()));
  form.addEventListener("submit", (event) => { event.preventDefault(); onChange(read()); });
  form.addEventListener("reset", () => setTimeout(() => onChange({})));
  return form;
}

function eventRow(event, filters) {
  const picture = event.snapshot_url
    ? el("img", { src: `${eventPath(event.event_id)}/snapshot.jpg`, alt: "", loading: "lazy" })
    : el("span", { class: "no-picture", "aria-hidden": "true" }, "—");
  return el("li", { "data-event": event.event_id },
    el("a", { href: listAddress(filters, event.event_id) },
      picture,
      el("span", { class: "what" }, summary(event)),
      el("span", { class: "where muted" }, `${event.stream_id} · ${when(event.capture_ts)}`)));
}

function fieldTable(event) {
  const shown = ["event_id", "stream_id", "rule", "kind", "class_name", "direction",
    "track_id", "value", "confidence", "seq", "pts"];
  return el("dl", { class: "fields" },
    shown.flatMap((name) => [el("dt", {}, name), el("dd", {}, String(event[name]))]),
    el("dt", {}, "capture time"), el("dd", {}, when(event.capture_ts)),
    el("dt", {}, "data"), el("dd", {}, el("pre", {}, JSON.stringify(event.data, null, 1))));
}

/** The clip once its post-roll is recorded (asking before would only be refused). */
async function showClip(box, event, postRoll, signal) {
  const note = el("p", { class: "muted", role: "status" });
  box.append(note);
  const wait = (event.capture_ts + postRoll + 1) * 1000 - Date.now();
  if (wait > 0) {
    note.textContent = `The clip is being recorded: ready in ${Math.ceil(wait / 1000)} s.`;
    await pause(wait, signal);
    if (signal.aborted) return;
  }
  note.textContent = "";
  const video = el("video", {
    controls: true, muted: true, playsinline: true, preload: "auto",
    src: `${eventPath(event.event_id)}/clip.mp4`, "aria-label": "The event's clip",
  });
  video.addEventListener("error", () => {
    note.textContent = "No clip: deleted by retention, or the recorder was down.";
    video.remove();
  });
  box.prepend(video);
}

async function openEvent(dialog, id, clipsOf, signal) {
  const event = await getJson(eventPath(id), { signal });
  const media = el("div", { class: "media" });
  if (event.snapshot_url) {
    media.append(el("img", { src: `${eventPath(id)}/snapshot.jpg`, alt: `Snapshot of ${summary(event)}` }));
  }
  dialog.replaceChildren(
    el("div", { class: "bar" },
      el("h2", {}, summary(event)),
      el("button", { type: "button", class: "close", onclick: () => dialog.close() }, "Close")),
    media,
    fieldTable(event));
  if (!dialog.open) dialog.showModal();
  const clips = clipsOf(event.stream_id);
  if (event.clip_url && clips) showClip(media, event, clips.post_s, signal).catch(report);
}

export async function showEvents(main, where, signal) {
  let filters = filtersOf(where.params);
  const [cameras, kinds, config] = await Promise.all([
    getJson("api/cameras"), getJson("api/event-kinds"), getJson("api/config"),
  ]);
  const clipsOf = (camera) => config.cameras?.[camera]?.clips || null;
  const list = el("ul", { class: "events", "aria-live": "polite", "aria-label": "Events" });
  const older = el("button", { type: "button", hidden: true }, "Older events");
  const waiting = el("a", { href: listAddress(filters), hidden: true, class: "waiting" });
  const counter = el("p", { class: "muted", role: "status" });
  const dialog = el("dialog", { class: "event", "aria-label": "Event" });
  const classes = new Set();
  const shown = new Set();
  let next = null;
  let held = 0;
  let detail = null; // the open event's AbortController

  const form = filterForm(filters, cameras, kinds, (chosen) => {
    location.hash = listAddress(chosen);
  });
  main.append(el("h1", { class: "sr-only" }, "Events"), form, counter, waiting, list, older, dialog);
  const datalist = form.querySelector("#classes");

  function add(events, atTop) {
    const rows = [];
    for (const event of events) {
      if (shown.has(event.event_id)) continue;
      shown.add(event.event_id);
      rows.push(eventRow(event, filters));
      if (event.class_name && !classes.has(event.class_name)) {
        classes.add(event.class_name);
        datalist.append(el("option", { value: event.class_name }));
      }
    }
    if (atTop) {
      list.prepend(...rows);
      for (const row of rows) row.classList.add("new");
    } else {
      list.append(...rows);
    }
    counter.textContent = `${shown.size} event${shown.size === 1 ? "" : "s"} shown` +
      (filters.until ? "" : ", new ones arrive as they are stored");
  }

  async function page() {
    older.disabled = true;
    const answer = await getJson(
      withQuery("api/events", { ...filters, limit: PAGE, cursor: next }), { signal });
    next = answer.next;
    add(answer.events, false);
    older.hidden = !next;
    older.disabled = false;
  }
  older.addEventListener("click", () => page().catch(report));

  // the stream first, then the first page: an event stored in between comes
  // by both and is shown once
  if (!filters.until) {
    const live = new EventSource(withQuery("api/events/stream", {
      camera: filters.camera, rule: filters.rule, kind: filters.kind, class: filters.class,
    }));
    live.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      if (filters.since && /^\d/.test(filters.since) && event.capture_ts < Number(filters.since)) return;
      if (shown.size < LIVE_ROWS) {
        add([event], true);
      } else {
        held += 1;
        waiting.hidden = false;
        waiting.textContent = `${held} newer event${held === 1 ? "" : "s"}: show`;
      }
    });
    signal.addEventListener("abort", () => live.close(), { once: true });
  }
  await page();

  dialog.addEventListener("close", () => {
    detail?.abort();
    const where = parseRoute();
    if (where.name === "events" && where.parts[0]) location.hash = listAddress(filters);
  });
  const openFromAddress = (id) => {
    detail?.abort();
    if (!id) {
      if (dialog.open) dialog.close();
      return;
    }
    detail = new AbortController();
    signal.addEventListener("abort", () => detail.abort(), { once: true });
    openEvent(dialog, id, clipsOf, detail.signal).catch(report);
  };
  openFromAddress(where.parts[0]);

  return {
    update(address) {
      const same = JSON.stringify(filtersOf(address.params)) === JSON.stringify(filters);
      if (same) openFromAddress(address.parts[0]);
      return same;
    },
  };
}
