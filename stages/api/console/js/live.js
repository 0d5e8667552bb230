// Live: every camera's annotated picture with its health, and one camera large.
//
// The grid asks each camera's latest.jpg in turn, at most http.preview.grid_fps
// a second and not while the page is hidden: a browser opens at most six
// connections to one host, so one long-lived MJPEG stream per tile would leave
// none for the rest of the console. The large view, alone, uses stream.mjpeg.

import { cameraPath, getJson, request } from "./api.js";
import { el, pause, seconds } from "./dom.js";
import { report } from "./main.js";

const HEALTH_EVERY_MS = 2000;

function healthText(camera) {
  const parts = [camera.state];
  if (camera.reason) parts.push(camera.reason);
  if (camera.state === "online") {
    parts.push(`${camera.fps_out.toFixed(1)} fps`, `age ${seconds(camera.frame_age_p50_s)}`);
  }
  return parts.join(" · ");
}

function healthBadge() {
  return el("span", { class: "health", role: "status" });
}

function showHealth(badge, camera) {
  badge.textContent = healthText(camera);
  badge.dataset.state = camera.state;
}

/** Pictures per second: of a grid tile (http.preview.grid_fps), or of one camera (fps). */
export async function previewRate(grid = false) {
  const preview = (await getJson("api/config"))?.http?.preview || {};
  return Math.min(preview.fps || 2, grid ? preview.grid_fps || 2 : Infinity);
}

/** Keeps ``img`` showing the camera's newest picture until ``signal`` ends. */
export async function followPictures(img, camera, fps, signal) {
  let shown = null;
  while (!signal.aborted) {
    const started = performance.now();
    if (document.hidden) {
      await pause(500, signal);
      continue;
    }
    try {
      const response = await request(`${cameraPath(camera)}/latest.jpg`, { signal });
      const url = URL.createObjectURL(await response.blob());
      img.src = url;
      if (shown) URL.revokeObjectURL(shown);
      shown = url;
      img.dataset.pictures = String(Number(img.dataset.pictures || 0) + 1);
    } catch (error) {
      if (signal.aborted) break;
      if (error.status !== 503) report(error); // 503: no picture yet, the badge says why
      await pause(2000, signal);
    }
    await pause(Math.max(0, 1000 / fps - (performance.now() - started)), signal);
  }
  if (shown) URL.revokeObjectURL(shown);
}

async function followHealth(badges, signal, path = "api/cameras") {
  while (!signal.aborted) {
    try {
      const answer = await getJson(path, { signal });
      for (const camera of [].concat(answer)) {
        const badge = badges.get(camera.name);
        if (badge) showHealth(badge, camera);
      }
    } catch (error) {
      if (signal.aborted) break;
      report(error);
    }
    await pause(HEALTH_EVERY_MS, signal);
  }
}

async function showGrid(main, signal) {
  const [cameras, fps] = await Promise.all([getJson("api/cameras"), previewRate(true)]);
  const grid = el("div", { class: "grid" });
  const badges = new Map();
  main.append(el("h1", { class: "sr-only" }, "Live"), grid);
  if (cameras.length === 0) grid.append(el("p", {}, "No cameras in the config."));
  for (const camera of cameras) {
    const img = el("img", { alt: `${camera.name}, live` });
    const badge = healthBadge();
    showHealth(badge, camera);
    badges.set(camera.name, badge);
    const tile = el("a", { class: "tile", href: `#/live/${encodeURIComponent(camera.name)}`,
      "data-camera": camera.name },
    img,
    el("span", { class: "tile-name" }, camera.name),
    badge);
    if (camera.width && camera.height) tile.style.aspectRatio = `${camera.width} / ${camera.height}`;
    grid.append(tile);
    followPictures(img, camera.name, fps, signal);
  }
  followHealth(badges, signal);
}

async function showCamera(main, name, signal) {
  const camera = await getJson(cameraPath(name));
  const img = el("img", {
    class: "large", alt: `${name}, live`, src: `${cameraPath(name)}/stream.mjpeg`,
  });
  const badge = healthBadge();
  showHealth(badge, camera);
  main.append(
    el("div", { class: "bar" },
      el("a", { href: "#/live" }, "← All cameras"),
      el("h1", {}, name),
      badge,
      el("a", { href: `#/events?camera=${encodeURIComponent(name)}` }, "Events"),
      el("a", { href: `#/rules/${encodeURIComponent(name)}` }, "Edit rules")),
    img);
  // leaving the view closes the stream: its slot (streams_per_client) is freed
  signal.addEventListener("abort", () => img.removeAttribute("src"), { once: true });
  followHealth(new Map([[name, badge]]), signal, cameraPath(name));
}

export async function showLive(main, where, signal) {
  if (where.parts[0]) await showCamera(main, where.parts[0], signal);
  else await showGrid(main, signal);
  return {};
}
