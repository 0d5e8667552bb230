// Rules: a camera's lines and zones drawn over its live picture. Draw a line
// (press, drag, release) or a zone (click its corners, then click the first one,
// double-click or press Enter), drag any point, or type its numbers; the arrow on
// a line points to the side that counts as "in". Save sends the camera's rules
// to the API (PUT .../rules), which validates them, writes them into the config
// file keeping its comments, and the chain counts with them on its next frames;
// each rule's counts since the save show beside it.

import { cameraPath, getJson, sendJson, withQuery } from "./api.js";
import { el } from "./dom.js";
import { followPictures, previewRate } from "./live.js";
import { report } from "./main.js";

const SVG = "http://www.w3.org/2000/svg";
const COUNTS_EVERY_MS = 2000;

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** The rule's editable points: a line's two ends, a zone's (or crowd's) corners. */
function pointsOf(rule) {
  if (rule.kind === "line" && rule.start && rule.end) return [rule.start, rule.end];
  if (Array.isArray(rule.polygon)) return rule.polygon;
  return [];
}

function uniqueName(rules, stem) {
  const names = new Set(rules.map((r) => r.name));
  for (let i = 1; ; i += 1) if (!names.has(`${stem}-${i}`)) return `${stem}-${i}`;
}

export async function showEditor(main, where, signal) {
  const cameras = await getJson("api/cameras");
  if (cameras.length === 0) {
    main.append(el("p", {}, "No cameras in the config."));
    return {};
  }
  const name = where.parts[0];
  if (!name || !cameras.some((c) => c.name === name)) {
    location.replace(`#/rules/${encodeURIComponent(cameras[0].name)}`);
    return {};
  }
  const [camera, written, fps] = await Promise.all([
    getJson(cameraPath(name)), getJson(`${cameraPath(name)}/rules`), previewRate(),
  ]);
  const width = camera.width || 1280;
  const height = camera.height || 720;
  let rules = structuredClone(written.rules);
  let selected = rules.findIndex((r) => pointsOf(r).length);
  let mode = "select"; // or "line", "zone"
  let drawing = null; // the points of a line or zone being drawn
  let dragging = null; // { rule, point }
  let dirty = false;
  let savedAt = null;
  let counts = new Map(); // rule name -> text

  const picture = el("img", { alt: `${name}, live, with its rules` });
  const overlay = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "overlay", role: "application",
    "aria-label": "Rules drawn on the picture",
  });
  const stage = el("div", { class: "stage" }, picture, overlay);
  stage.style.aspectRatio = `${width} / ${height}`;
  const list = el("ul", { class: "rule-list", "aria-label": "Rules" });
  const details = el("div", { class: "rule-details" });
  const status = el("p", { class: "save-status", role: "status" });
  const save = el("button", { type: "button", class: "primary" }, "Save");
  const undo = el("button", { type: "button" }, "Undo changes");
  const drawLine = el("button", { type: "button", "aria-pressed": "false" }, "Draw a line");
  const drawZone = el("button", { type: "button", "aria-pressed": "false" }, "Draw a zone");
  const pick = el("select", { "aria-label": "Camera" },
    cameras.map((c) => el("option", { value: c.name, selected: c.name === name }, c.name)));
  pick.addEventListener("change", () => { location.hash = `#/rules/${encodeURIComponent(pick.value)}`; });

  main.append(
    el("div", { class: "bar" }, el("h1", {}, "Rules"), pick,
      el("span", { class: "muted" }, `${width} × ${height} px`)),
    el("div", { class: "editor" },
      stage,
      el("div", { class: "panel" },
        el("div", { class: "tools" }, drawLine, drawZone),
        list, details,
        el("div", { class: "tools" }, save, undo),
        status)));
  followPictures(picture, name, fps, signal);

  function scale() {
    const box = overlay.getBoundingClientRect();
    return box.width ? width / box.width : 1;
  }

  function toFrame(event) {
    const matrix = overlay.getScreenCTM().inverse();
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(matrix);
    return [Math.round(Math.min(width, Math.max(0, point.x))),
      Math.round(Math.min(height, Math.max(0, point.y)))];
  }

  function changed() {
    dirty = true;
    status.textContent = "Not saved yet.";
    render();
  }

  function setMode(next) {
    mode = next;
    drawing = null;
    drawLine.setAttribute("aria-pressed", String(mode === "line"));
    drawZone.setAttribute("aria-pressed", String(mode === "zone"));
    overlay.classList.toggle("drawing", mode !== "select");
    render();
  }

  function inArrow(start, end, r) {
    const [dx, dy] = [end[0] - start[0], end[1] - start[1]];
    const length = Math.hypot(dx, dy) || 1;
    // "in" is the right-hand side going from start to end, on the picture (y down)
    const [nx, ny] = [-dy / length, dx / length];
    const [mx, my] = [(start[0] + end[0]) / 2, (start[1] + end[1]) / 2];
    const reach = 34 * r;
    const tip = [mx + nx * reach, my + ny * reach];
    const wing = 9 * r;
    const back = [tip[0] - nx * wing * 1.4, tip[1] - ny * wing * 1.4];
    return svg("g", { class: "arrow" },
      svg("line", { x1: mx, y1: my, x2: tip[0], y2: tip[1] }),
      svg("polygon", {
        points: [tip, [back[0] + (dx / length) * wing, back[1] + (dy / length) * wing],
          [back[0] - (dx / length) * wing, back[1] - (dy / length) * wing]].map((p) => p.join(",")).join(" "),
      }),
      svg("text", { x: tip[0] + nx * 12 * r, y: tip[1] + ny * 12 * r + 5 * r, "font-size": 15 * r }, "in"));
  }

  function shape(rule, index) {
    const points = pointsOf(rule);
    const chosen = index === selected;
    const group = svg("g", { class: `rule ${rule.kind}${chosen ? " selected" : ""}`, "data-rule": rule.name });
    const r = scale();
    if (rule.kind === "line") {
      const [start, end] = points;
      group.append(
        svg("line", { x1: start[0], y1: start[1], x2: end[0], y2: end[1], class: "shape" }),
        inArrow(start, end, r));
    } else {
      group.append(svg("polygon", { points: points.map((p) => p.join(",")).join(" "), class: "shape" }));
    }
    const [lx, ly] = points[0];
    group.append(svg("text", { x: lx + 6 * r, y: ly - 6 * r, "font-size": 15 * r, class: "label" }, rule.name));
    group.addEventListener("pointerdown", (event) => {
      if (mode !== "select") return;
      selected = index;
      render();
      event.stopPropagation();
    });
    if (chosen) {
      points.forEach((point, at) => {
        const handle = svg("circle", { cx: point[0], cy: point[1], r: 7 * r, class: "handle", "data-point": at });
        handle.addEventListener("pointerdown", (event) => {
          if (mode !== "select") return;
          event.stopPropagation();
          overlay.setPointerCapture(event.pointerId);
          dragging = { rule: index, point: at };
        });
        group.append(handle);
      });
    }
    return group;
  }

  function render() {
    const r = scale();
    save.disabled = !dirty;
    overlay.replaceChildren(...rules.map((rule, i) => (pointsOf(rule).length ? shape(rule, i) : null)).filter(Boolean));
    if (drawing?.length) {
      const kind = mode === "line" ? "line" : "zone";
      const points = drawing.map((p) => p.join(",")).join(" ");
      overlay.append(svg("g", { class: `rule ${kind} selected drawing` },
        svg("polyline", { points, class: "shape" }),
        ...drawing.map((p) => svg("circle", { cx: p[0], cy: p[1], r: 5 * r, class: "handle" }))));
    }
    renderList();
    renderDetails();
  }

  function renderList() {
    list.replaceChildren(...rules.map((rule, i) => el("li", {},
      el("button", {
        type: "button", "aria-pressed": String(i === selected), "data-rule": rule.name,
        onclick: () => { selected = i; render(); },
      }, el("span", {}, rule.name), el("span", { class: "muted" }, ` ${rule.kind}`)),
      el("span", { class: "rule-count", "data-rule": rule.name }, counts.get(rule.name) || ""))));
    if (rules.length === 0) list.append(el("li", { class: "muted" }, "No rules yet: draw a line or a zone."));
  }

  function numberInput(label, value, set) {
    const input = el("input", { type: "number", value, min: 0, step: 1, "aria-label": label });
    input.addEventListener("change", () => {
      if (input.value === "") return;
      set(Math.round(Number(input.value)));
      changed();
    });
    return input;
  }

  function renderDetails() {
    const rule = rules[selected];
    if (!rule) {
      details.replaceChildren();
      return;
    }
    const nameInput = el("input", { value: rule.name, id: "rule-name", autocomplete: "off" });
    nameInput.addEventListener("change", () => { rule.name = nameInput.value.trim(); changed(); });
    const points = pointsOf(rule);
    const rows = points.map((point, at) => el("div", { class: "point" },
      el("span", { class: "muted" }, rule.kind === "line" ? (at === 0 ? "start" : "end") : `corner ${at + 1}`),
      numberInput(`${rule.name} point ${at + 1} x`, point[0], (v) => { point[0] = v; }),
      numberInput(`${rule.name} point ${at + 1} y`, point[1], (v) => { point[1] = v; })));
    const actions = el("div", { class: "tools" });
    if (rule.kind === "line") {
      actions.append(el("button", { type: "button", onclick: () => {
        [rule.start, rule.end] = [rule.end, rule.start];
        changed();
      } }, "Swap in and out"));
    }
    actions.append(el("button", { type: "button", onclick: () => {
      rules.splice(selected, 1);
      selected = -1;
      changed();
    } }, "Delete rule"));
    details.replaceChildren(
      el("label", { for: "rule-name" }, "Name"), nameInput,
      el("p", { class: "muted" }, `${rule.kind}${rule.kind === "line" ? ": the arrow points to in" : ""}`),
      ...rows, actions);
  }

  function finishDrawing() {
    const points = drawing || [];
    if (mode === "line" && points.length === 2 && Math.hypot(points[1][0] - points[0][0], points[1][1] - points[0][1]) >= 5) {
      rules.push({ kind: "line", name: uniqueName(rules, "line"), start: points[0], end: points[1] });
    } else if (mode === "zone" && points.length >= 3) {
      rules.push({ kind: "zone", name: uniqueName(rules, "zone"), polygon: points });
    } else {
      setMode("select");
      return;
    }
    selected = rules.length - 1;
    setMode("select");
    changed();
    document.getElementById("rule-name")?.select();
  }

  overlay.addEventListener("pointerdown", (event) => {
    if (mode === "line") {
      overlay.setPointerCapture(event.pointerId);
      const at = toFrame(event);
      drawing = [at, at];
      render();
    } else if (mode === "zone") {
      const at = toFrame(event);
      drawing ??= [];
      const first = drawing[0];
      if (first && drawing.length >= 3 && Math.hypot(at[0] - first[0], at[1] - first[1]) < 12 * scale()) {
        finishDrawing();
        return;
      }
      drawing.push(at);
      render();
    } else if (event.target === overlay) {
      selected = -1;
      render();
    }
  });
  overlay.addEventListener("pointermove", (event) => {
    if (mode === "line" && drawing) {
      drawing[1] = toFrame(event);
      render();
    } else if (dragging) {
      const point = pointsOf(rules[dragging.rule])[dragging.point];
      [point[0], point[1]] = toFrame(event);
      dirty = true;
      render();
    }
  });
  overlay.addEventListener("pointerup", () => {
    if (mode === "line" && drawing) finishDrawing();
    if (dragging) {
      dragging = null;
      changed();
    }
  });
  overlay.addEventListener("dblclick", () => { if (mode === "zone") finishDrawing(); });
  const keys = (event) => {
    if (mode === "select") return;
    if (event.key === "Enter") finishDrawing();
    if (event.key === "Escape") setMode("select");
  };
  document.addEventListener("keydown", keys);
  signal.addEventListener("abort", () => document.removeEventListener("keydown", keys), { once: true });
  drawLine.addEventListener("click", () => setMode(mode === "line" ? "select" : "line"));
  drawZone.addEventListener("click", () => setMode(mode === "zone" ? "select" : "zone"));
  undo.addEventListener("click", () => {
    rules = structuredClone(written.rules);
    selected = -1;
    dirty = false;
    status.textContent = "";
    render();
  });
  save.addEventListener("click", async () => {
    save.disabled = true;
    status.textContent = "Saving…";
    try {
      const answer = await sendJson("PUT", `${cameraPath(name)}/rules`, rules);
      written.rules = structuredClone(rules);
      dirty = false;
      savedAt = Math.floor(Date.now() / 1000);
      counts = new Map();
      status.textContent = `Saved; applied ${answer.applied}.`;
      status.dataset.saved = String(savedAt);
      render();
    } catch (error) {
      if (error.detail) status.textContent = `Not saved: ${error.detail}`;
      else report(error);
    } finally {
      save.disabled = !dirty;
    }
  });
  window.addEventListener("resize", render, { signal });

  // each rule's counts since the last save: the new rules at work
  (async () => {
    while (!signal.aborted) {
      await new Promise((done) => setTimeout(done, COUNTS_EVERY_MS));
      if (savedAt === null || signal.aborted) continue;
      try {
        const answer = await getJson(withQuery("api/counts", { camera: name, bucket: "day", since: savedAt }), { signal });
        const totals = new Map();
        for (const row of answer.counts) {
          const series = row.direction || row.kind;
          const rule = totals.get(row.rule) || new Map();
          rule.set(series, (rule.get(series) || 0) + row.count);
          totals.set(row.rule, rule);
        }
        counts = new Map([...totals].map(([rule, series]) =>
          [rule, [...series].map(([s, n]) => `${s} ${n}`).join(" · ") + " since saved"]));
        if (!dragging && !drawing) renderList();
      } catch (error) {
        if (!signal.aborted) report(error);
      }
    }
  })();
  render();
  return {};
}
