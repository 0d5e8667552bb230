// The console's router: the address (#/view/part?filters) names what is shown,
// so every view can be shared and reloaded. A view is built by show(main, where,
// signal), which returns once the view is on screen (its loops go on by
// themselves) with an optional update(where) that takes a new address of its
// own; the AbortSignal ends its loops and live connections when another view
// replaces it.

import { getJson, sendJson, SignInNeeded, ApiError } from "./api.js";
import { showCounts } from "./counts.js";
import { showEditor } from "./editor.js";
import { showEvents } from "./events.js";
import { showLive } from "./live.js";
import { showSignIn } from "./signin.js";

const views = { live: showLive, events: showEvents, counts: showCounts, rules: showEditor };
const main = document.getElementById("view");
const problemLine = document.getElementById("problem");
const signOut = document.getElementById("sign-out");
let leaving = null;
let current = null; // the view shown: { name, handle }

export function parseRoute() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name = "", ...parts] = path.split("/").map(decodeURIComponent);
  return { name: name || "live", parts, params: new URLSearchParams(query) };
}

/** Shows ``text`` in the problem line (empty: hides it). */
export function showProblem(text) {
  problemLine.textContent = text;
  problemLine.hidden = !text;
}

/** What a view does with an error: sign-in for 401, a one-line reason otherwise. */
export function report(error) {
  if (error instanceof SignInNeeded) {
    signIn();
  } else if (error instanceof ApiError) {
    showProblem(error.detail);
  } else if (error?.name !== "AbortError") {
    showProblem(`the API did not answer: ${error.message}`);
  }
}

function leave() {
  current = null;
  leaving?.abort();
  leaving = new AbortController();
  main.replaceChildren();
  showProblem("");
  return leaving.signal;
}

function signIn() {
  const signal = leave();
  for (const link of document.querySelectorAll("nav a")) link.removeAttribute("aria-current");
  signOut.hidden = true;
  showSignIn(main, signal, () => route());
}

async function route() {
  const session = await getJson("api/session").catch((error) => {
    report(error);
    return null;
  });
  if (session === null) return;
  if (!session.signed_in) {
    signIn();
    return;
  }
  signOut.hidden = !session.token_needed;
  const where = parseRoute();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === where.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // a view may take a change of its own address (an event opened over its
  // list) without being built again
  if (current?.name === where.name && current.handle?.update?.(where)) return;
  const show = views[where.name];
  const signal = leave();
  if (!show) {
    showProblem(`no view ${where.name}: try Live, Events, Counts or Rules`);
    return;
  }
  try {
    current = { name: where.name, handle: await show(main, where, signal) };
  } catch (error) {
    if (!signal.aborted) report(error);
  }
}

signOut.addEventListener("click", async () => {
  await sendJson("DELETE", "api/session").catch(report);
  signIn();
});
window.addEventListener("hashchange", route);
route();
