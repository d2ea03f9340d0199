// Sign-in with the court's identity provider (OpenID Connect), for the desk: the button that
// starts it (`/v1/oidc/login`, a navigation to the provider and back), collecting the finished
// sign-in the server hands back in the fragment (`#signin=<one-time code>`, exchanged at
// `POST /v1/oidc/session`; the fragment is removed at once so that neither history nor a copied
// address keeps it), and, at sign-out, the way to end the provider's session too. Which ways to
// sign in the desk offers is the server's to say (`/web/config.json`).

import { api } from "/web/shared/courtchat.js";

/** Shows the ways to sign in that the server offers. */
export function offerSignIn(config, $) {
  $("sign-in-provider").hidden = !config.provider_sign_in;
  $("password-sign-in").hidden = config.password_sign_in === false;
}

/**
 * The sign-in the server handed back in the fragment, collected: `{token, expires_at,
 * username, end_session_url?}`, or null when there is none. Throws with the server's words when
 * the code is refused (expired, used).
 */
export async function collectSignIn() {
  const match = /^#signin=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return api("/v1/oidc/session", { method: "POST", body: { code: match[1] } });
}

/** After the server ended the token: to the provider, to end its session too, if it offers. */
export function endProviderSession(auth) {
  if (!auth || !auth.end_session_url) return false;
  location.assign(auth.end_session_url);
  return true;
}
