// The applicant's token, renewed before it expires (POST /v1/applicant-tokens/renew), so that
// a conversation longer than one token never goes offline: the gateway ends a connection when
// its token expires, so the page connects again with the renewed token (the same subject, the
// same conversation) well before then. A refusal that asking again cannot change (the token
// was renewed already, the kiosk was revoked, the conversation reached its longest time) stops
// renewing: the connection then ends when the token expires, as it did before renewal existed.

import { api } from "/web/shared/courtchat.js";

/** Renew once this share of the time left has passed: with a quarter left, room to retry. */
const RENEW_AFTER = 0.7;
/** The soonest a renewal is asked for, and the longest wait between two failed attempts. */
const MIN_WAIT_MS = 500;
const MAX_RETRY_MS = 15000;

export class TokenRenewal {
  /**
   * `identity` is the answer of /v1/applicant-tokens (`token`, `expires_at`); `renewed(identity)`
   * is called with each renewed one, and should connect with its token.
   */
  constructor(identity, renewed) {
    this.identity = identity;
    this.renewed = renewed;
    this.timer = null;
    this.stopped = false;
    this.#schedule(this.#left() * RENEW_AFTER);
  }

  /** Milliseconds until the current token expires. */
  #left() {
    return Date.parse(this.identity.expires_at) - Date.now();
  }

  #schedule(ms) {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => this.#renew(), Math.max(MIN_WAIT_MS, ms));
  }

  async #renew() {
    if (this.stopped) return;
    let identity;
    try {
      identity = await api("/v1/applicant-tokens/renew", { method: "POST", token: this.identity.token });
    } catch (error) {
      if (this.stopped) return;
      if (error.status === 401) {
        this.stop();
        return;
      }
      const asked = error.status === 429 && error.problem && Number(error.problem.retry_after);
      const retry = asked > 0 ? asked * 1000 : Math.min(MAX_RETRY_MS, this.#left() / 3);
      if (this.#left() > 0) this.#schedule(retry);
      return;
    }
    if (this.stopped) return;
    this.identity = identity;
    this.#schedule(this.#left() * RENEW_AFTER);
    try {
      await this.renewed(identity);
    } catch {
      // The connection retries by itself with the new token.
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
  }
}
