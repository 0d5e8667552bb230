// The sign-in page, shown when the API asks for a token: the token is traded
// for an HttpOnly session cookie (POST api/session), never kept by the page.

import { sendJson } from "./api.js";
import { el } from "./dom.js";

export function showSignIn(main, signal, signedIn) {
  const input = el("input", {
    id: "token", name: "token", type: "password", required: true,
    autocomplete: "current-password", "aria-describedby": "sign-in-why",
  });
  const why = el("p", { id: "sign-in-why", class: "muted" },
    "This framechain asks for its API token (http.token in its config).");
  const refused = el("p", { class: "refused", role: "alert" });
  const button = el("button", { type: "submit" }, "Sign in");
  const form = el("form", { class: "sign-in", "aria-labelledby": "sign-in-title" },
    el("h1", { id: "sign-in-title" }, "Sign in"),
    why,
    // for password managers: the token is a password with no user name
    el("input", { type: "text", name: "username", autocomplete: "username",
      value: "framechain", hidden: true }),
    el("label", { for: "token" }, "Token"),
    input,
    button,
    refused);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    refused.textContent = "";
    try {
      const session = await sendJson("POST", "api/session", { token: input.value });
      if (signal.aborted) return;
      if (session.signed_in) {
        signedIn();
        return;
      }
      refused.textContent = "Wrong token: it is http.token in the config.";
      input.select();
    } catch (error) {
      refused.textContent = `The API did not answer: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
  main.append(form);
  input.focus();
}
