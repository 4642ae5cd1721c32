// Progressive enhancement of the Webhooks page: every feature here also
// works without it (plain forms). Loaded from this file only: the page's
// Content-Security-Policy forbids inline script.
"use strict";
(function () {
  const live = document.getElementById("live");
  const say = (text) => { if (live) { live.textContent = ""; setTimeout(() => { live.textContent = text; }, 30); } };
  const show = (el) => { el.hidden = false; };

  // A form that is submitting cannot be submitted again: a double click on
  // "Save webhook" would post it twice, and the second answer ("name
  // taken") would replace the first, hiding that the webhook was saved and
  // its one-time secret. Every form that posts (save, rotate, test,
  // re-fire, delete, enable/disable, replay, ...) has its submit buttons
  // disabled from its submit until the next page.
  const postForms = document.querySelectorAll('form[method="post"]');
  // The in-place toggle stays on its page: its switch is marked
  // aria-disabled rather than disabled, which would take the focus away.
  const setBusy = (form, on) => {
    if (on) { form.dataset.submitting = "true"; form.setAttribute("aria-busy", "true"); } else { delete form.dataset.submitting; form.removeAttribute("aria-busy"); }
    const inPlace = form.hasAttribute("data-toggle");
    form.querySelectorAll('button[type="submit"], button:not([type]), input[type="submit"]').forEach((b) => {
      if (inPlace) { if (on) b.setAttribute("aria-disabled", "true"); else b.removeAttribute("aria-disabled"); } else { b.disabled = on; }
    });
  };
  postForms.forEach((form) => {
    form.addEventListener("submit", (ev) => {
      if (form.dataset.submitting) { ev.preventDefault(); ev.stopImmediatePropagation(); return; }
      // A disabled button is not sent: keep a named submitter's value.
      const by = ev.submitter;
      if (by && by.name && !form.querySelector('input[type="hidden"][data-submitter]')) {
        const keep = document.createElement("input");
        keep.type = "hidden"; keep.name = by.name; keep.value = by.value; keep.dataset.submitter = "";
        form.appendChild(keep);
      }
      setBusy(form, true);
    });
  });
  // Back to a page kept in the back-forward cache: its forms work again.
  window.addEventListener("pageshow", (ev) => {
    if (!ev.persisted) return;
    postForms.forEach((form) => {
      form.querySelectorAll("input[data-submitter]").forEach((el) => el.remove());
      setBusy(form, false);
    });
  });

  // Active toggle in place: the form posts with fetch and the switch flips.
  document.querySelectorAll("form[data-toggle]").forEach((form) => {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const btn = form.querySelector("[role=switch]");
      const field = form.querySelector("input[name=active]");
      btn.setAttribute("aria-busy", "true");
      let plain = false;
      try {
        const res = await fetch(form.action, {
          method: "POST", body: new URLSearchParams(new FormData(form)),
          headers: { "Accept": "application/json" }, credentials: "same-origin",
        });
        const out = await res.json();
        if (!res.ok) { say(out.error || "Not changed"); alert(out.error || "Not changed"); return; }
        btn.setAttribute("aria-checked", out.active ? "true" : "false");
        btn.querySelector(".switch-text").textContent = out.active ? "On" : "Off";
        field.value = out.active ? "false" : "true";
        say(out.name + (out.active ? " enabled" : " disabled"));
      } catch (e) {
        plain = true;
        form.submit();
      } finally {
        btn.removeAttribute("aria-busy");
        if (!plain) setBusy(form, false); // answered in place: the switch works again
      }
    });
  });

  // Copy buttons copy the named field.
  document.querySelectorAll("[data-copy]").forEach((btn) => {
    show(btn);
    btn.addEventListener("click", async () => {
      const input = document.getElementById(btn.dataset.copy);
      if (!input || !input.value) { say("Nothing to copy"); return; }
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (e) {
        input.select(); document.execCommand("copy");
      }
      const was = btn.textContent; btn.textContent = "Copied"; say("Copied to the clipboard");
      setTimeout(() => { btn.textContent = was; }, 1500);
    });
  });

  // Generate fills the named field with 32 random bytes (base64url) and
  // shows it, so that it can be copied before saving.
  document.querySelectorAll("[data-generate]").forEach((btn) => {
    show(btn);
    btn.addEventListener("click", () => {
      const input = document.getElementById(btn.dataset.generate);
      const b = new Uint8Array(32);
      crypto.getRandomValues(b);
      input.value = btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      input.type = "text";
      say("Secret generated; copy it now");
    });
  });

  // Header rows: add and remove.
  const rows = document.querySelector("[data-header-rows]");
  const add = document.querySelector("[data-add-row]");
  if (rows && add) {
    let n = rows.children.length;
    const wire = (row) => {
      const rm = row.querySelector("[data-remove-row]");
      show(rm);
      rm.addEventListener("click", () => { row.remove(); say("Header removed"); });
    };
    rows.querySelectorAll("[data-header-row]").forEach(wire);
    show(add);
    add.addEventListener("click", () => {
      const row = rows.querySelector("[data-header-row]").cloneNode(true);
      n++;
      row.querySelectorAll(".error").forEach((el) => el.remove());
      row.querySelectorAll("input").forEach((input, i) => {
        input.value = ""; input.placeholder = i === 0 ? "Header name" : "Value";
        input.id = (i === 0 ? "hn" : "hv") + n;
        input.removeAttribute("aria-invalid"); input.removeAttribute("aria-describedby");
      });
      row.querySelectorAll("label").forEach((label, i) => {
        label.htmlFor = (i === 0 ? "hn" : "hv") + n;
        label.textContent = (i === 0 ? "Header name " : "Header value ") + n;
      });
      row.querySelector("[data-remove-row]").setAttribute("aria-label", "Remove header " + n);
      rows.appendChild(row);
      wire(row);
      row.querySelector("input").focus();
    });
  }

  // The HTTPS warning as the URL is typed.
  document.querySelectorAll("[data-https-check]").forEach((input) => {
    const warn = document.querySelector("[data-http-warning]");
    const check = () => { warn.hidden = !/^http:\/\//i.test(input.value.trim()); };
    input.addEventListener("input", check);
    check();
  });
})();
