// Enrolment links: an admin turns a device into a kiosk by opening
// `/kiosk/#enrol=<credential>` on it. A link is only a URL that anyone can send, so nothing is
// taken from it on trust: the credential leaves the address bar at once (whatever it holds, so
// that it is neither in the history nor on the screen), its shape is checked, the server says
// which kiosk it names (`GET /v1/kiosk-credential`), and the person at the device confirms
// "Make this device the kiosk <name> (<team>)?" before anything is stored. A link that is
// malformed, unknown or revoked changes nothing.

import { api } from "/web/shared/courtchat.js";

const LINK = "#enrol=";
/** `cck_<kiosk id>_<secret>`, as the server issues it (admin-api's kiosk_credential.rs). */
const CREDENTIAL = /^cck_k-[0-9a-f]{16}_[0-9a-f]{64}$/;

/**
 * Takes an enrolment link out of the address. Null when there is none; otherwise
 * `{credential}`, the credential when it has the right shape, or null when it does not (a
 * link cut short, `%` that is no escape, anything else).
 */
function takeEnrolmentLink() {
  const hash = location.hash;
  if (!hash.startsWith(LINK)) return null;
  history.replaceState(null, "", location.pathname + location.search);
  let text = null;
  try {
    text = decodeURIComponent(hash.slice(LINK.length));
  } catch {
    // Not a valid escape: no credential.
  }
  return { credential: text !== null && CREDENTIAL.test(text) ? text : null };
}

/**
 * Asks the server which kiosk `credential` names: `{kiosk: {id, name, team}}`, or
 * `{refusal}` in words for the person at the device.
 */
async function checkCredential(credential) {
  try {
    return { kiosk: await api("/v1/kiosk-credential", { token: credential }) };
  } catch (error) {
    if (error.status === 401) return { refusal: "This enrolment link is not valid: the kiosk it names is unknown or was revoked." };
    if (error.status === 429) {
      const wait = (error.problem && error.problem.retry_after) || 60;
      return { refusal: `Too many enrolment checks from this network: open the link again in ${wait} s.` };
    }
    return { refusal: "The help desk cannot be reached to check this enrolment link. Try again later." };
  }
}

/** The confirmation question for `kiosk`. */
function enrolmentQuestion(kiosk) {
  const team = kiosk.team ? ` (${kiosk.team})` : "";
  return `Make this device the kiosk ${kiosk.name}${team}?`;
}

/** The person at the device says yes or no to the question on screen. */
function answer(view) {
  return new Promise((resolve) => {
    const choose = (yes) => () => {
      view.enrolConfirm.onclick = null;
      view.enrolCancel.onclick = null;
      resolve(yes);
    };
    view.enrolConfirm.onclick = choose(true);
    view.enrolCancel.onclick = choose(false);
  });
}

/**
 * Follows an enrolment link in the address, if there is one: checked, asked, and enrolled
 * (`page.enrol(credential)`) only if the person at the device says yes. `page.view` holds the
 * page's elements; `page.busy()` says a conversation is on screen (a link then changes
 * nothing); `page.enrolled()` whether the device is a kiosk already.
 */
export async function enrolFromLink(page) {
  const { view } = page;
  const link = takeEnrolmentLink();
  if (!link) return;
  const unchanged = () => (page.enrolled() ? "This device stays the kiosk it was." : "This device stays a phone.");
  const notice = (text) => {
    view.enrolNotice.textContent = text;
    view.enrolNotice.hidden = false;
  };
  view.enrolNotice.hidden = true;
  if (!link.credential) return notice(`This enrolment link is not valid. ${unchanged()}`);
  if (page.busy()) return notice(`Finish the conversation before enrolling this device. ${unchanged()}`);
  view.startView.hidden = true;
  view.enrolView.hidden = false;
  view.enrolChoice.hidden = true;
  view.enrolQuestion.textContent = "Checking the enrolment link…";
  const { kiosk, refusal } = await checkCredential(link.credential);
  if (refusal) {
    view.enrolView.hidden = true;
    view.startView.hidden = false;
    return notice(`${refusal} ${unchanged()}`);
  }
  view.enrolQuestion.textContent = enrolmentQuestion(kiosk);
  view.enrolChoice.hidden = false;
  view.enrolQuestion.focus();
  const yes = await answer(view);
  view.enrolView.hidden = true;
  view.startView.hidden = false;
  if (yes) {
    page.enrol(link.credential);
    notice(`This device is now the kiosk ${kiosk.name}.`);
  } else {
    notice(`Not enrolled. ${unchanged()}`);
  }
  view.firstMessage.focus();
}
