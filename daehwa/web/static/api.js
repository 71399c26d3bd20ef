// The HTTP API (docs/api.md) as the page uses it: JSON calls with the session cookie and the CSRF header, and
// streamed turns read from a fetch body as Server-Sent Events.

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** An API error: `status` 0 means the server could not be reached. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const err = (body && body.error) || {};
    super(err.message || (status ? `HTTP ${status}` : "network error"));
    this.name = "ApiError";
    this.status = status;
    this.code = err.code || (status ? null : "network_error");
    this.param = err.param || null;
    this.retryAfter = retryAfter ? Number(retryAfter) : null;
  }
}

function headers(method, hasBody) {
  const h = { Accept: "application/json" };
  if (hasBody) h["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) h["X-CSRF-Token"] = csrfToken;
  return h;
}

async function send(method, path, body, signal) {
  const hasBody = body !== undefined;
  try {
    return await fetch(path, {
      method,
      headers: headers(method, hasBody),
      body: hasBody ? JSON.stringify(body) : undefined,
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, null, null);
  }
}

async function failure(res) {
  const body = await res.json().catch(() => null);
  return new ApiError(res.status, body, res.headers.get("Retry-After"));
}

/** One JSON call; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(method, path, body, { signal } = {}) {
  const res = await send(method, path, body, signal);
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return null;
  return res.json();
}

/**
 * A streamed turn: POST `body` (with stream: true) and call `onEvent(name, data)` for each SSE event as it arrives.
 * Rejects with ApiError when the request is refused before the turn starts (nothing was stored then).
 */
export async function streamTurn(path, body, onEvent, { signal } = {}) {
  const res = await send("POST", path, { ...body, stream: true }, signal);
  if (!res.ok) throw await failure(res);
  const type = res.headers.get("Content-Type") || "";
  if (!type.startsWith("text/event-stream")) {
    // A server that answered without streaming still gives a complete TurnResult.
    onEvent("done", await res.json());
    return;
  }
  await readEventStream(res, onEvent);
}

/**
 * Read a `text/event-stream` response, calling `onEvent(name, data, id)` per event (`id` is the SSE id as a
 * number, or null). Rejects with ApiError (status 0) when the connection breaks.
 */
export async function readEventStream(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(0, null, null);
    }
    if (chunk.done) break;
    buffer += chunk.value;
    // Events end with a blank line; normalise CRLF first (a lone trailing CR may be half of one: keep it).
    buffer = buffer.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseEvent(block);
      if (event) onEvent(event.name, event.data, event.id);
    }
  }
}

function parseEvent(block) {
  let name = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "id" && /^\d+$/.test(value)) id = Number(value);
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { name, id, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}
