// What the browser-page tests share: Chromium launched as CI can run it, pages at desktop and
// phone sizes, screenshots kept as test artifacts, and axe-core's accessibility check.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(import.meta.url);

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

/** Chromium, headless, as the machines here can run it. */
export function launch(executablePath) {
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** A page in a context of its own (its own storage and connection), at `size`. */
export async function openPage(browser, url, size = DESKTOP) {
  const { width, height, ...device } = size;
  const context = await browser.newContext({ viewport: { width, height }, ...device });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  await page.goto(url);
  return { context, page, errors };
}

/** Saves a full-page screenshot as `<dir>/<name>.png`. */
export async function screenshot(page, dir, name) {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** axe-core's serious and critical violations on the page as it is now. */
export async function accessibility(page) {
  // Evaluated through the DevTools protocol, which the pages' Content-Security-Policy (scripts
  // from their own origin only) does not govern; a script tag would be refused, as it should.
  await page.evaluate(readFileSync(require.resolve("axe-core/axe.min.js"), "utf8"));
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    return await axe.run(document, { resultTypes: ["violations"] });
  });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
}

/** A network between a page and the MQTT listener (WebSocket upgrades on `path`) that the test
    can cut: Chromium's offline emulation stops new requests but leaves an open WebSocket alone,
    so the page's MQTT sockets are routed through Playwright, closed when the network goes down,
    and refused until it is back. Set it up before the page connects. */
export async function cuttable(opened, path) {
  const sockets = new Set();
  let down = false;
  await opened.context.routeWebSocket((url) => url.pathname === path, (ws) => {
    if (down) return ws.close();
    // No onClose handlers: closing either side then closes the other, as a real drop would.
    sockets.add([ws, ws.connectToServer()]);
  });
  return {
    async cut() {
      down = true;
      await opened.context.setOffline(true);
      for (const pair of sockets) for (const side of pair) await side.close().catch(() => {});
      sockets.clear();
    },
    async restore() {
      down = false;
      await opened.context.setOffline(false);
    },
  };
}
