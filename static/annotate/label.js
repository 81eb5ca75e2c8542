// Label screen: countdown, active-time tracking and keyboard shortcuts.
// Everything here is an enhancement: without it the page is a plain form
// that posts and redirects. htmx swaps each next comparison into #item.
(() => {
  "use strict";
  const page = document.getElementById("label-page");
  if (!page) return;

  const state = {
    assignment: null, // id of the item on screen
    axis: 0, // index of the highlighted rubric axis
    activeMs: 0, // visible + focused time on this item
    activeSince: null, // performance.now() when the current active stretch began
    deadline: 0, // performance.now() when the budget runs out
    leaseDeadline: 0,
  };

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const item = () => $("#item .item");
  const form = () => $("#judgment-form");
  const axes = () => $$("#judgment-form fieldset.axis");

  // --- active time: the tab is visible AND the window has focus ------------
  const isActive = () => document.visibilityState === "visible" && document.hasFocus();
  function accountActivity() {
    const now = performance.now();
    if (state.activeSince !== null) state.activeMs += now - state.activeSince;
    state.activeSince = isActive() ? now : null;
  }
  document.addEventListener("visibilitychange", accountActivity);
  window.addEventListener("focus", accountActivity);
  window.addEventListener("blur", accountActivity);

  // --- countdown -------------------------------------------------------------
  function fmt(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  function tick() {
    const el = item();
    if (!el) return;
    const now = performance.now();
    const left = (state.deadline - now) / 1000;
    const timer = $(".timer", el);
    const msg = $(".timer-msg", el);
    $(".timer-value", el).textContent = fmt(left);
    let text = "";
    if (now >= state.leaseDeadline) {
      text = "Time is up and the lease has expired: the slot may go to someone else; a late answer is kept only if a slot is still free.";
    } else if (left <= 0) {
      text = "Time is up: you can still submit, and this answer will be marked over budget.";
    }
    timer.classList.toggle("over", left <= 0);
    timer.classList.toggle("soon", left > 0 && left <= 10);
    // Only write when it changes, so screen readers announce it once.
    if (msg.textContent !== text) msg.textContent = text;
  }

  function initItem() {
    const el = item();
    const id = el ? el.dataset.assignment : null;
    const now = performance.now();
    if (id !== state.assignment) {
      // A new comparison: active time starts again. The same one re-rendered
      // with errors keeps its time.
      state.assignment = id;
      state.activeMs = 0;
      state.activeSince = isActive() ? now : null;
      state.axis = 0;
    }
    if (!el) return;
    // Server-computed seconds left, so a reload resumes the countdown and
    // the browser's wall clock (possibly wrong) never matters.
    state.deadline = now + Number(el.dataset.remainingS) * 1000;
    state.leaseDeadline = now + Number(el.dataset.leaseS) * 1000;
    const firstOpen = axes().findIndex((fs) => !$("input:checked", fs));
    state.axis = firstOpen === -1 ? Math.min(state.axis, axes().length - 1) : firstOpen;
    highlightAxis();
    tick();
  }

  function highlightAxis() {
    axes().forEach((fs, i) => {
      const current = i === state.axis;
      fs.classList.toggle("current", current);
      if (current) fs.setAttribute("aria-current", "true");
      else fs.removeAttribute("aria-current");
    });
  }

  function choose(input) {
    if (!input) return;
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function chooseAxis(value) {
    const list = axes();
    if (!list.length) return;
    const fs = list[state.axis];
    choose($(`input[value="${value}"]`, fs));
    // Move on to the next axis still unanswered (wrapping), else stay.
    for (let step = 1; step <= list.length; step++) {
      const i = (state.axis + step) % list.length;
      if (!$("input:checked", list[i])) {
        state.axis = i;
        break;
      }
    }
    highlightAxis();
  }

  function moveAxis(delta) {
    const n = axes().length;
    if (!n) return;
    state.axis = (state.axis + delta + n) % n;
    highlightAxis();
    axes()[state.axis].scrollIntoView({ block: "nearest" });
  }

  // Record active time into the form right before htmx (or the browser) reads it.
  document.addEventListener(
    "submit",
    (e) => {
      if (e.target.id !== "judgment-form") return;
      accountActivity();
      e.target.elements.active_ms.value = String(Math.round(state.activeMs));
    },
    true,
  );

  function isTyping(t) {
    return (
      t instanceof HTMLTextAreaElement ||
      t instanceof HTMLSelectElement ||
      t.isContentEditable ||
      (t instanceof HTMLInputElement && !["radio", "checkbox", "button", "submit"].includes(t.type))
    );
  }

  function onEnter(e) {
    const t = e.target;
    const skipForm = $("#skip-form");
    if (skipForm && skipForm.contains(t)) {
      if (t instanceof HTMLButtonElement) return; // the button does it
      e.preventDefault();
      submitThroughHtmx(skipForm);
      return;
    }
    if (t instanceof HTMLTextAreaElement && !e.ctrlKey) return; // a newline
    if (!e.ctrlKey && (t instanceof HTMLButtonElement || t instanceof HTMLAnchorElement || t.tagName === "SUMMARY")) return;
    const f = form();
    if (!f) return;
    e.preventDefault();
    submitThroughHtmx(f);
  }

  // htmx binds a swapped-in form when the swap settles (~20 ms later); a
  // keyboard that is faster than that would post the plain form and reload
  // the page. Binding it now is idempotent, so do it before every submit.
  function submitThroughHtmx(f) {
    if (window.htmx) window.htmx.process(f);
    f.requestSubmit(); // runs the browser's validation, then htmx posts it
  }

  function toggleSkip() {
    const panel = $("#skip-panel");
    if (!panel) return;
    panel.open = !panel.open;
    if (panel.open) $("#skip-reason").focus();
  }

  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.altKey || e.metaKey) return;
    const help = $("#help");
    if (help.open) {
      if (e.key === "?") {
        e.preventDefault();
        help.close();
      }
      return; // the dialog closes itself on Escape
    }
    if (e.key === "Enter") return onEnter(e);
    const t = e.target;
    if (e.key === "Escape") {
      const panel = $("#skip-panel");
      if (panel && panel.open && panel.contains(t)) panel.open = false;
      if (t instanceof HTMLElement && t !== document.body) t.blur();
      return;
    }
    if (e.ctrlKey || isTyping(t)) return;

    const digit = /^[1-9]$/.test(e.key) ? Number(e.key) : 0;
    if (digit) {
      const input = $(`#judgment-form input[name="overall"][value="${digit}"]`);
      if (input) {
        e.preventDefault();
        choose(input);
      }
      return;
    }
    const actions = {
      "?": () => help.showModal(),
      a: () => chooseAxis("A"),
      b: () => chooseAxis("B"),
      t: () => chooseAxis("tie"),
      j: () => moveAxis(1),
      k: () => moveAxis(-1),
      s: toggleSkip,
      f: () => $('#judgment-form input[name="flags"]')?.focus(),
      c: () => $("#rationale")?.focus(),
      r: () => $("#raw-toggle")?.click(),
      g: () => {
        const g = $("#guidelines");
        if (g) g.open = !g.open;
      },
    };
    const action = actions[e.key.length === 1 ? e.key.toLowerCase() : e.key];
    if (action && (item() || e.key === "?" || e.key === "g")) {
      e.preventDefault();
      action();
    }
  });

  // --- htmx wiring ---------------------------------------------------------
  document.body.addEventListener("htmx:afterSwap", (e) => {
    if (e.target.id === "item") {
      transportProblem("");
      initItem();
    }
  });
  function transportProblem(text) {
    const msg = $("#transport-msg");
    msg.textContent = text;
    msg.hidden = !text;
  }
  document.body.addEventListener("htmx:responseError", () =>
    transportProblem("The server could not save that. Your answer is still on screen: press Enter to try again."),
  );
  document.body.addEventListener("htmx:sendError", () =>
    transportProblem("Network problem: nothing was sent. Press Enter to try again."),
  );

  const helpButton = $("#help-button");
  helpButton.hidden = false;
  helpButton.addEventListener("click", () => $("#help").showModal());

  initItem();
  accountActivity();
  setInterval(tick, 250);
})();
