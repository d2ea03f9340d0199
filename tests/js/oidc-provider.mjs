// A real OpenID provider for the end-to-end tests: panva's oidc-provider (OpenID Certified),
// on 127.0.0.1 and an ephemeral port, with its own login page (no development interactions)
// and accounts from the configuration in argv[2]:
//   {"users": {"bob": {"password": "…", "name": "Bob", "groups": ["cc-agents"]}, …}}
// A user's id is their `sub`; `username` (their id if absent) is their preferred_username, so a
// test can give a username another person had.
// It prints {"ready": "<issuer>"} once listening; the test then drives it with JSON lines on
// stdin, each answered with {"ok": true} (or {"error": "…"}):
//   {"cmd": "client", "client": {…}}     register courtchat as a client (its redirect URIs are
//                                          known only once courtchat listens); starts the provider
//   {"cmd": "disable", "user": "dan"}     the person is disabled: no sign-in, no refresh
//   {"cmd": "rotate"}                     a new signing key, published first (the old one stays)
//   {"cmd": "mischief", "audience": "other-app" | null, "idTokenTtl": 1 | null,
//    "tokenDelayMs": 0}                   ID tokens for another audience (signed with the
//                                          provider's own key), or short-lived and late
import http from "node:http";
import { randomUUID } from "node:crypto";
import readline from "node:readline";
import Provider from "oidc-provider";
import * as jose from "jose";

const config = JSON.parse(process.argv[2] || "{}");
const users = config.users || {};
const mischief = { audience: null, idTokenTtl: null, tokenDelayMs: 0 };
const say = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

async function newKey() {
  const { privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: randomUUID(), alg: "RS256", use: "sig" };
}

let keys = [await newKey()];

// The provider's state (sessions, grants, codes, refresh tokens), kept outside the Provider
// object: rotating the signing key builds a new one, and a real provider's rotation keeps
// everything else. oidc-provider's own memory adapter is per instance, so this is a small one.
const stored = new Map();
const grants = new Map();
class SharedAdapter {
  constructor(model) {
    this.model = model;
  }
  key(id) {
    return `${this.model}:${id}`;
  }
  async upsert(id, payload, expiresIn) {
    stored.set(this.key(id), { payload, until: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    if (payload.grantId) {
      const members = grants.get(payload.grantId) || new Set();
      members.add(this.key(id));
      grants.set(payload.grantId, members);
    }
    if (payload.uid) stored.set(`${this.model}:uid:${payload.uid}`, { payload: id, until: Infinity });
  }
  async find(id) {
    const entry = stored.get(this.key(id));
    if (!entry || entry.until < Date.now()) return undefined;
    return entry.payload;
  }
  async findByUid(uid) {
    const id = stored.get(`${this.model}:uid:${uid}`);
    return id ? this.find(id.payload) : undefined;
  }
  async findByUserCode() {
    return undefined;
  }
  async consume(id) {
    const entry = stored.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    stored.delete(this.key(id));
  }
  async revokeByGrantId(grantId) {
    for (const key of grants.get(grantId) || []) stored.delete(key);
    grants.delete(grantId);
  }
}
let client = null;
let provider = null;
let issuer = null;

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, error = "") {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Court sign-in</title></head>
<body><main><h1>Court sign-in</h1>${error ? `<p id="idp-error">${escape(error)}</p>` : ""}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Login <input name="login" id="idp-login" autocomplete="username"></label>
<label>Password <input name="password" id="idp-password" type="password"></label>
<button type="submit" id="idp-submit">Sign in</button></form></main></body></html>`;
}

function build() {
  const next = new Provider(issuer, {
    adapter: SharedAdapter,
    clients: [client],
    jwks: { keys },
    cookies: { keys: ["courtchat-test-provider-cookie-key"] },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    scopes: ["openid", "profile", "groups", "offline_access"],
    claims: { openid: ["sub"], profile: ["name", "preferred_username"], groups: ["groups"] },
    // The claims go in the ID token, as Entra, Keycloak and Okta can be set to do.
    conformIdTokenClaims: false,
    async findAccount(_ctx, id) {
      const user = users[id];
      if (!user || user.disabled) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            name: user.name,
            preferred_username: user.username || id,
            groups: user.groups || [],
          };
        },
      };
    },
    // A refresh token for every code, so that courtchat can ask again whether a person is still
    // here (Keycloak does this by default; Entra and Okta with offline_access).
    async issueRefreshToken(_ctx, theClient) {
      return theClient.grantTypeAllowed("refresh_token");
    },
    rotateRefreshToken: true,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 600,
      BackchannelAuthenticationRequest: 600,
      ClientCredentials: 600,
      DeviceCode: 600,
      Grant: 86400,
      IdToken: () => mischief.idTokenTtl || 3600,
      Interaction: 3600,
      PreAuthorizedCode: 600,
      RefreshToken: 86400,
      Session: 86400,
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  next.use(async (ctx, nextMiddleware) => {
    await nextMiddleware();
    // Late: the answer, its ID token already issued, is held back (a slow network, a clock
    // behind the provider's).
    if (ctx.path === "/token" && mischief.tokenDelayMs) {
      await new Promise((resolve) => setTimeout(resolve, mischief.tokenDelayMs));
    }
    if (ctx.path === "/token" && mischief.audience && ctx.body && ctx.body.id_token) {
      // The provider's own ID token, re-signed with its own key for another client: what a
      // token obtained by another relying party and replayed here looks like.
      const payload = jose.decodeJwt(ctx.body.id_token);
      payload.aud = mischief.audience;
      const key = await jose.importJWK(keys[0], "RS256");
      ctx.body = {
        ...ctx.body,
        id_token: await new jose.SignJWT(payload).setProtectedHeader({ alg: "RS256", kid: keys[0].kid }).sign(key),
      };
    }
  });
  next.on("grant.error", (_ctx, error) => {
    process.stderr.write(`provider: grant error: ${error.message} (${error.error_detail || ""})\n`);
  });
  provider = next;
}

async function readForm(req) {
  let body = "";
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error("too long");
  }
  return Object.fromEntries(new URLSearchParams(body));
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (req.method === "POST" && req.url.endsWith("/login")) {
    const form = await readForm(req);
    const user = users[form.login];
    if (user && user.disabled) {
      await provider.interactionFinished(req, res, { error: "access_denied", error_description: "the account is disabled" });
      return;
    }
    if (!user || user.password !== form.password) {
      res.writeHead(200, { "content-type": "text/html" }).end(loginPage(uid, "Wrong login or password"));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: form.login } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === "login") {
    res.writeHead(200, { "content-type": "text/html" }).end(loginPage(uid));
    return;
  }
  // Consent: courtchat is the court's own application, so what it asks for is granted.
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(" "));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(" "));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const server = http.createServer(async (req, res) => {
  try {
    if (!provider) {
      res.writeHead(503).end("no client registered yet");
      return;
    }
    if (req.url.startsWith("/interaction/")) {
      await interaction(req, res);
      return;
    }
    provider.callback()(req, res);
  } catch (error) {
    process.stderr.write(`provider: ${error.stack || error}\n`);
    if (!res.headersSent) res.writeHead(500).end(String(error.message || error));
  }
});

server.listen(0, "127.0.0.1", () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  say({ ready: issuer });
});

const commands = readline.createInterface({ input: process.stdin });
commands.on("line", async (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    return;
  }
  try {
    switch (command.cmd) {
      case "client":
        client = command.client;
        build();
        break;
      case "disable":
        users[command.user].disabled = true;
        break;
      case "rotate":
        keys = [await newKey(), ...keys];
        build();
        break;
      case "mischief":
        Object.assign(mischief, { audience: null, idTokenTtl: null, tokenDelayMs: 0 }, command);
        delete mischief.cmd;
        break;
      default:
        throw new Error(`unknown command ${command.cmd}`);
    }
    say({ ok: true, cmd: command.cmd });
  } catch (error) {
    say({ error: String(error.message || error), cmd: command.cmd });
  }
});
commands.on("close", () => process.exit(0));
