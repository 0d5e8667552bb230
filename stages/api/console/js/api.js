// The console's one way to the API: same-origin fetches, answered JSON, the
// session cookie sent by the browser. Paths are relative, so a console served
// under a proxy's path prefix still reaches its own API.

/** The API answered 401: the browser has to sign in (again). */
export class SignInNeeded extends Error {}

/** The API answered an error; ``detail`` is its one-line reason. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

async function reason(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return response.statusText;
  }
}

/** A response after the checks every call needs (401, errors). */
export async function request(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options });
  if (response.status === 401) throw new SignInNeeded();
  if (!response.ok) throw new ApiError(response.status, await reason(response));
  return response;
}

export async function getJson(path, options = {}) {
  const response = await request(path, {
    ...options,
    headers: { Accept: "application/json", ...(options.headers || {}) },
  });
  return response.status === 204 ? null : response.json();
}

export async function sendJson(method, path, body) {
  return getJson(path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** ``path`` with a query string of the non-empty values of ``params``. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== "") query.append(key, one);
    }
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export const cameraPath = (camera) => `api/cameras/${encodeURIComponent(camera)}`;
