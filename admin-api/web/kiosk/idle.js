// A public kiosk must not keep the last person's conversation: someone who walks away would
// leave it on screen for the next person to read, and to write in as them. After a time
// without input (a key, a touch, a click; what the agent sends does not count), the kiosk asks
// "Are you still there?" with a countdown; without an answer it hands over to `clear`, which
// forgets everything. Only kiosks are watched: a phone is its owner's.

/** Input that says someone is at the screen. */
const ACTIVITY = ["keydown", "pointerdown", "input", "wheel", "touchstart"];

export class IdleWatch {
  /**
   * `idleMs` without input, then the question for `warningMs`. `watching()` says whether
   * there is anything to forget now (nothing is asked on an empty start screen); `clear()`
   * forgets it. `dialog` is the question (a <dialog>), with `countdown` (the seconds left),
   * `stay` (the answer) and `clearNow` (forget at once).
   */
  constructor({ idleMs, warningMs, watching, clear, dialog, countdown, stay, clearNow }) {
    Object.assign(this, { idleMs, warningMs, watching, clear, dialog, countdown });
    this.timer = null;
    this.ticker = null;
    this.deadline = 0;
    for (const type of ACTIVITY) {
      // While the question is shown, only an answer to it counts.
      document.addEventListener(type, () => !this.asking && this.restart(), { capture: true, passive: true });
    }
    stay.addEventListener("click", () => this.answered());
    clearNow.addEventListener("click", () => this.expire());
    // Escape closes a modal dialog: that is an answer too, from someone at the keyboard.
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      this.answered();
    });
  }

  get asking() {
    return this.dialog.open;
  }

  /** Starts the wait again (input, or a new thing to forget such as a conversation). */
  restart() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.#idle(), this.idleMs);
  }

  /** Nothing to watch any more (the page was cleared). */
  stop() {
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    this.timer = null;
    this.ticker = null;
    if (this.dialog.open) this.dialog.close();
  }

  #idle() {
    this.timer = null;
    if (!this.watching()) return;
    this.deadline = Date.now() + this.warningMs;
    this.#showLeft();
    this.dialog.showModal();
    this.ticker = setInterval(() => {
      if (Date.now() >= this.deadline) this.expire();
      else this.#showLeft();
    }, 250);
  }

  #showLeft() {
    const seconds = Math.max(0, Math.ceil((this.deadline - Date.now()) / 1000));
    const left = `${seconds} ${seconds === 1 ? "second" : "seconds"}`;
    if (this.countdown.textContent !== left) this.countdown.textContent = left;
  }

  answered() {
    clearInterval(this.ticker);
    this.ticker = null;
    if (this.dialog.open) this.dialog.close();
    this.restart();
  }

  expire() {
    this.stop();
    this.clear();
  }
}
