// Resuming a reply whose stream broke off (docs/api.md, "Resuming a reply"): any server process sends the rest of
// the reply after the characters the page already has (the SSE id of the last delta it got), then `done`. The page
// keeps the text it had and appends only what follows, so nothing is lost or shown twice.

import { readEventStream } from "./api.js";

const ATTEMPTS = 6; // about 8 s of retries while the network comes back
const FIRST_WAIT_MS = 250;

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new DOMException("aborted", "AbortError"));
      },
      { once: true },
    );
  });
}

/**
 * Ask for the rest of reply `messageId` after `after` characters and feed its events to `onEvent(name, data, id)`
 * (the same handler as the broken stream's). Resolves true once `done` arrived, false when the reply cannot be
 * resumed (gone, not ours, or the server stayed unreachable); rejects with AbortError when `signal` aborts.
 */
export async function resumeReply(conversationId, messageId, after, onEvent, { signal } = {}) {
  let offset = after || 0;
  let finished = false;
  const handle = (name, data, id) => {
    if (name === "delta" && id !== null && id !== undefined) {
      if (id <= offset) return; // already shown (a retried resume replays nothing twice)
      offset = id;
    }
    if (name === "done") finished = true;
    onEvent(name, data, id);
  };
  const path = `/api/conversations/${encodeURIComponent(conversationId)}/messages/${encodeURIComponent(messageId)}/stream`;
  for (let attempt = 0; attempt < ATTEMPTS && !finished; attempt++) {
    await sleep(FIRST_WAIT_MS * 2 ** attempt, signal);
    let res;
    try {
      res = await fetch(`${path}?after=${offset}`, {
        headers: { Accept: "text/event-stream" },
        credentials: "same-origin",
        cache: "no-store",
        signal,
      });
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      continue; // still offline: try again
    }
    if (res.status >= 400 && res.status < 500) return false; // gone, or no longer ours: nothing to resume
    if (!res.ok) continue;
    try {
      await readEventStream(res, handle);
    } catch (e) {
      if (e && e.name === "AbortError") throw e; // else: broke off again; the next try starts at `offset`
    }
  }
  return finished;
}
