// MQTT.js in headless Chromium against a running courtchat, over WebSocket and secure
// WebSocket, as the agent dashboard will connect. Driven by tests/tests/e2e/mqttjs.rs (JSON in
// argv[2], one JSON line of results on stdout).
import { chromium } from "playwright-core";
import { fileURLToPath } from "node:url";

const config = JSON.parse(process.argv[2]);
// The browser bundle MQTT.js ships; the package's export map does not expose it by name.
const bundle = fileURLToPath(new URL("./node_modules/mqtt/dist/mqtt.min.js", import.meta.url));

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // The test server's certificate is self-signed for this run.
    "--ignore-certificate-errors",
  ],
});
try {
  const page = await browser.newPage();
  await page.setContent("<!doctype html><title>courtchat dashboard probe</title>");
  await page.addScriptTag({ path: bundle });
  const results = [];
  for (const [kind, url] of Object.entries(config.urls)) {
    for (const protocolVersion of [4, 5]) {
      const clientId = `js-browser-${kind}-v${protocolVersion}`;
      results.push(
        await page.evaluate(async ({ kind, url, protocolVersion, clientId, token }) => {
          const timeout = (what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), 10000));
          const client = mqtt.connect(url, {
            clientId,
            username: clientId,
            password: token,
            protocolVersion,
            reconnectPeriod: 0,
          });
          try {
            await Promise.race([
              new Promise((resolve, reject) => {
                client.once("connect", resolve);
                client.once("error", reject);
              }),
              timeout("connect"),
            ]);
            const topic = `sandbox/browser/${kind}/${protocolVersion}`;
            const granted = await client.subscribeAsync(topic, { qos: 1 });
            const received = new Promise((resolve) => client.once("message", (t, payload, packet) => resolve({ payload: payload.toString(), qos: packet.qos })));
            await client.publishAsync(topic, `hello from ${clientId}`, { qos: 1 });
            const message = await Promise.race([received, timeout("message")]);
            return { kind, protocolVersion, ok: true, grantedQos: granted[0].qos, payload: message.payload, deliveredQos: message.qos };
          } catch (error) {
            return { kind, protocolVersion, ok: false, error: String(error) };
          } finally {
            client.end(true);
          }
        }, { kind, url, protocolVersion, clientId, token: config.tokens[clientId] }),
      );
    }
  }
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
