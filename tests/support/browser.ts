/**
 * A real browser for the page tests: Debian's headless Chromium, driven over
 * the DevTools protocol on its own WebSocket (no browser download, no npm
 * driver). Chromium is optional (`apt-get install chromium`, which `.ci/run`
 * does when apt is there): without it the tests that need it are skipped, with
 * a line saying so. `CHROMIUM_BIN` names another binary.
 *
 * @module
 */

/** The Chromium binary, or undefined (and a line saying the browser tests are skipped). */
export const CHROMIUM: string | undefined = await (async () => {
  const candidates = [Deno.env.get("CHROMIUM_BIN"), "chromium", "chromium-browser", "google-chrome"];
  for (const bin of candidates.filter((c): c is string => !!c)) {
    try {
      const { success } = await new Deno.Command(bin, { args: ["--version"], stdout: "null", stderr: "null" })
        .output();
      if (success) return bin;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  console.log("chromium not found: skipping the browser tests (apt-get install chromium provides it)");
  return undefined;
})();

/** One tab, attached. */
export interface Page {
  /** Evaluates `expression` in the page (promises awaited) and returns its value. */
  evaluate<T>(expression: string): Promise<T>;
  /** A PNG of the viewport. */
  screenshot(): Promise<Uint8Array>;
  /** Exceptions thrown and console errors (CSP violations included) so far. */
  errors: string[];
}

/** A running headless browser. */
export interface Browser extends AsyncDisposable {
  /** Opens `url` in a new tab of `width` × `height` CSS pixels (a phone by default). */
  open(url: string, viewport?: { width: number; height: number; scale?: number }): Promise<Page>;
}

/** Starts headless Chromium with a fresh profile. */
export async function launchBrowser(bin = CHROMIUM!): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "va_chromium_" });
  const child = new Deno.Command(bin, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--hide-scrollbars",
      `--user-data-dir=${profile}`,
      "--remote-debugging-port=0",
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const close = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  };
  // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
  let address: string | undefined;
  let text = "";
  const decoder = new TextDecoder();
  const reader = child.stderr.getReader();
  const deadline = Date.now() + 30_000;
  while (address === undefined && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    address = text.match(/DevTools listening on (ws:\/\/\S+)/)?.[1];
  }
  if (address === undefined) {
    await close();
    throw new Error(`chromium did not start:\n${text.slice(-2000)}`);
  }
  // Keep draining its stderr so that it never blocks on a full pipe.
  (async () => {
    for (;;) if ((await reader.read().catch(() => ({ done: true }))).done) return;
  })();

  const socket = new WebSocket(address);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const listeners = new Set<(method: string, params: Record<string, unknown>, session?: string) => void>();
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.id !== undefined) {
      const waiting = pending.get(data.id);
      pending.delete(data.id);
      if (data.error) waiting?.reject(new Error(`DevTools: ${data.error.message}`));
      else waiting?.resolve(data.result);
    } else {
      for (const listener of listeners) listener(data.method, data.params, data.sessionId);
    }
  };
  // deno-lint-ignore no-explicit-any
  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<any> => {
    const id = nextId++;
    socket.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  };

  return {
    async open(url, viewport = { width: 412, height: 915, scale: 2 }) {
      const { targetId } = await send("Target.createTarget", { url: "about:blank" });
      const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
      const errors: string[] = [];
      listeners.add((method, params, session) => {
        if (session !== sessionId) return;
        if (method === "Runtime.exceptionThrown") errors.push(JSON.stringify(params.exceptionDetails));
        if (method === "Log.entryAdded") {
          const entry = params.entry as { level: string; text: string };
          if (entry.level === "error") errors.push(entry.text);
        }
      });
      await send("Runtime.enable", {}, sessionId);
      await send("Log.enable", {}, sessionId);
      await send("Page.enable", {}, sessionId);
      await send("Emulation.setDeviceMetricsOverride", {
        width: viewport.width,
        height: viewport.height,
        deviceScaleFactor: viewport.scale ?? 1,
        mobile: viewport.width < 600,
      }, sessionId);
      const loaded = new Promise<void>((resolve) =>
        listeners.add((method, _params, session) => {
          if (session === sessionId && method === "Page.loadEventFired") resolve();
        })
      );
      await send("Page.navigate", { url }, sessionId);
      await loaded;
      return {
        errors,
        async evaluate<T>(expression: string): Promise<T> {
          const { result, exceptionDetails } = await send(
            "Runtime.evaluate",
            { expression, returnByValue: true, awaitPromise: true },
            sessionId,
          );
          if (exceptionDetails) throw new Error(`in the page: ${JSON.stringify(exceptionDetails)}`);
          return result.value as T;
        },
        async screenshot() {
          const { data } = await send("Page.captureScreenshot", { format: "png" }, sessionId);
          return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        },
      };
    },
    async [Symbol.asyncDispose]() {
      socket.close();
      for (const { reject } of pending.values()) reject(new Error("browser closed"));
      await close();
    },
  };
}
