// Counts: for each line, zone and crowd rule, its events per minute, hour or
// day over a time range, drawn with uPlot (shipped in console/vendor), each
// series apart (a line's in and out; a zone's entries, exits, dwells ...), with
// the numbers as a table and as a CSV download of exactly what is drawn.
//
// The range is pinned to Unix times when asked (since and until), so the
// numbers shown are one exact /api/counts answer, kept in data-query.

import { getJson, withQuery } from "./api.js";
import { el } from "./dom.js";
import { report } from "./main.js";

const BUCKETS = { minute: 60, hour: 3600, day: 86400 };
const RANGES = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const DEFAULT_RANGE = { minute: "1h", hour: "24h", day: "30d" };
const MAX_POINTS = 2000; // buckets in one chart: a minute chart reaches back 33 h
const REFRESH_MS = 30000;
const COLOURS = ["#ffd23f", "#3ecf8e", "#4ea8ff", "#ff6b6b", "#c792ea", "#f5a524"];
const RULE_KINDS = new Set(["line", "zone", "crowd"]);

let uPlotLoaded = null;

/** uPlot, loaded on the first counts view only (the rest of the console never needs it). */
function loadUPlot() {
  uPlotLoaded ??= new Promise((resolve, reject) => {
    document.head.append(el("link", { rel: "stylesheet", href: "console/vendor/uPlot.min.css" }));
    const script = el("script", { src: "console/vendor/uPlot.iife.min.js" });
    script.addEventListener("load", () => resolve(window.uPlot));
    script.addEventListener("error", () => reject(new Error("console/vendor/uPlot.iife.min.js did not load")));
    document.head.append(script);
  });
  return uPlotLoaded;
}

function settingsOf(params) {
  const bucket = BUCKETS[params.get("bucket")] ? params.get("bucket") : "minute";
  const range = RANGES[params.get("range")] ? params.get("range") : DEFAULT_RANGE[bucket];
  return { bucket, range, camera: params.get("camera") || "" };
}

function address(settings) {
  const query = new URLSearchParams(Object.entries(settings).filter(([, v]) => v));
  return `#/counts?${query}`;
}

/** The name a row's count is drawn under within its rule's chart. */
function seriesName(row) {
  return row.direction || row.kind;
}

/** Per rule: its bucket starts and one array of counts per series, gaps as 0. */
export function tabulate(rows, since, until, bucketSeconds) {
  const first = Math.floor(since / bucketSeconds) * bucketSeconds;
  const starts = [];
  for (let t = first; t < until; t += bucketSeconds) starts.push(t);
  const index = new Map(starts.map((t, i) => [t, i]));
  const rules = new Map();
  for (const row of rows) {
    const key = `${row.camera}\u0000${row.rule}`;
    if (!rules.has(key)) rules.set(key, new Map());
    const series = rules.get(key);
    const name = seriesName(row);
    if (!series.has(name)) series.set(name, new Array(starts.length).fill(0));
    const at = index.get(row.start);
    if (at !== undefined) series.get(name)[at] += row.count;
  }
  return { starts, rules };
}

function csvOf(starts, series) {
  const names = [...series.keys()];
  const lines = [["bucket_start", ...names].join(",")];
  starts.forEach((t, i) => {
    lines.push([new Date(t * 1000).toISOString(), ...names.map((n) => series.get(n)[i])].join(","));
  });
  return lines.join("\n") + "\n";
}

function dataTable(starts, series, caption) {
  const names = [...series.keys()];
  return el("table", {},
    el("caption", { class: "sr-only" }, caption),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "bucket start"),
      names.map((n) => el("th", { scope: "col" }, n)))),
    el("tbody", {}, starts.map((t, i) => el("tr", { "data-start": t },
      el("th", { scope: "row" }, new Date(t * 1000).toLocaleString()),
      names.map((n) => el("td", {}, String(series.get(n)[i])))))));
}

function drawChart(uPlot, box, starts, series, bucket) {
  const names = [...series.keys()];
  const width = Math.max(280, box.clientWidth || 600);
  const options = {
    width, height: 220,
    scales: { x: { time: true } },
    axes: [
      { stroke: "#9aa4b1", grid: { stroke: "#2c333d" } },
      { stroke: "#9aa4b1", grid: { stroke: "#2c333d" } },
    ],
    series: [
      { label: bucket },
      ...names.map((name, i) => ({
        label: name, stroke: COLOURS[i % COLOURS.length], width: 2,
        points: { show: starts.length <= 120 },
      })),
    ],
  };
  return new uPlot(options, [starts, ...names.map((n) => series.get(n))], box);
}

function ruleCard(uPlot, camera, rule, starts, series, settings, charts) {
  const title = `${camera} · ${rule.name} (${rule.kind})`;
  const chartBox = el("div", { class: "chart", role: "img", "aria-label": `${title}: events per ${settings.bucket}` });
  const csv = csvOf(starts, series);
  const download = el("a", {
    class: "download",
    href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })),
    download: `${camera}-${rule.name}-per-${settings.bucket}.csv`,
  }, "CSV");
  const totals = [...series.entries()].map(([name, values]) =>
    `${name} ${values.reduce((a, b) => a + b, 0)}`).join(" · ") || "no events";
  const card = el("section", { class: "rule-counts", "data-camera": camera, "data-rule": rule.name },
    el("div", { class: "bar" }, el("h2", {}, title), el("span", { class: "muted" }, totals), download),
    chartBox,
    el("details", {}, el("summary", {}, "Numbers"), dataTable(starts, series, title)));
  card.downloadUrl = download.href;
  requestAnimationFrame(() => {
    if (series.size) charts.push(drawChart(uPlot, chartBox, starts, series, settings.bucket));
    else chartBox.append(el("p", { class: "muted" }, "No events in this range."));
  });
  return card;
}

export async function showCounts(main, where, signal) {
  const settings = settingsOf(where.params);
  const [cameras, uPlot] = await Promise.all([getJson("api/cameras"), loadUPlot()]);
  const choose = (name, label, values, chosen) => el("label", {}, label,
    el("select", { name }, values.map(([value, text]) =>
      el("option", { value, selected: value === chosen }, text))));
  const form = el("form", { class: "filters", "aria-label": "Counts" },
    choose("camera", "Camera", [["", "all"], ...cameras.map((c) => [c.name, c.name])], settings.camera),
    choose("bucket", "Per", Object.keys(BUCKETS).map((b) => [b, b]), settings.bucket),
    choose("range", "Over the last", Object.keys(RANGES).map((r) => [r, r]), settings.range));
  form.addEventListener("change", (event) => {
    const chosen = Object.fromEntries(new FormData(form));
    if (event.target.name === "bucket") chosen.range = DEFAULT_RANGE[chosen.bucket];
    location.hash = address(chosen);
  });
  const cards = el("div", { class: "cards" });
  const stamp = el("p", { class: "muted", role: "status" });
  main.append(el("h1", { class: "sr-only" }, "Counts"), form, stamp, cards);

  const ruled = cameras
    .filter((c) => !settings.camera || c.name === settings.camera)
    .flatMap((c) => c.rules.filter((r) => RULE_KINDS.has(r.kind)).map((r) => [c.name, r]));
  let charts = [];
  let urls = [];

  async function refresh() {
    const bucketSeconds = BUCKETS[settings.bucket];
    const until = Math.floor(Date.now() / 1000);
    const span = Math.min(RANGES[settings.range], MAX_POINTS * bucketSeconds);
    const since = Math.floor((until - span) / bucketSeconds) * bucketSeconds;
    const query = withQuery("api/counts", {
      bucket: settings.bucket, since, until, camera: settings.camera,
      rule: [...new Set(ruled.map(([, r]) => r.name))],
    });
    const answer = await getJson(query, { signal });
    const { starts, rules } = tabulate(answer.counts, since, until, bucketSeconds);
    for (const chart of charts) chart.destroy();
    for (const url of urls) URL.revokeObjectURL(url);
    charts = [];
    const built = ruled.map(([camera, rule]) =>
      ruleCard(uPlot, camera, rule, starts, rules.get(`${camera}\u0000${rule.name}`) || new Map(), settings, charts));
    urls = built.map((card) => card.downloadUrl);
    cards.replaceChildren(...built);
    cards.dataset.query = query;
    stamp.textContent = ruled.length
      ? `Events per ${settings.bucket}, until ${new Date(until * 1000).toLocaleTimeString()}; refreshed every 30 s.`
      : "No line, zone or crowd rule: add one in Rules.";
  }

  await refresh();
  const timer = setInterval(() => refresh().catch(report), REFRESH_MS);
  signal.addEventListener("abort", () => {
    clearInterval(timer);
    for (const chart of charts) chart.destroy();
    for (const url of urls) URL.revokeObjectURL(url);
  }, { once: true });
  return {};
}
