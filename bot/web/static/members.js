// The members' pages: live progress of a set, voting without a reload, keys 1-4 to pick.
// Every page works without this script (its buttons are forms); the CSP allows no inline
// script, so everything is wired here.
"use strict";

(function () {
  const csrf = document.body.dataset.csrf || "";

  // ----- imagine: one submit per click ---------------------------------------------
  const imagineForm = document.getElementById("imagine-form");
  const imagineButton = document.getElementById("imagine-submit");
  if (imagineForm && imagineButton) {
    imagineForm.addEventListener("submit", function () {
      imagineButton.disabled = true;
      imagineButton.textContent = "Queuing…";
    });
    window.addEventListener("pageshow", function () {
      imagineButton.disabled = false; // back from the set page (the page cache keeps state)
      imagineButton.textContent = "Imagine";
    });
  }

  const set = document.getElementById("set");
  if (!set) {
    return;
  }
  const id = set.dataset.id;
  const status = set.dataset.status;

  // ----- progress: server-sent events until the set is done -------------------------
  if (status === "queued" || status === "running") {
    const bar = document.getElementById("progress");
    const text = document.getElementById("progress-text");
    const state = document.getElementById("set-status");
    const stateIs = function (words) {
      if (state) {
        state.textContent = words;
      }
    };
    const source = new EventSource("/sets/" + id + "/events");
    source.addEventListener("queued", function (event) {
      const data = JSON.parse(event.data);
      bar.removeAttribute("value");
      stateIs("waiting in the queue");
      text.textContent = "waiting in the queue (position " + data.position + ")";
    });
    source.addEventListener("running", function () {
      stateIs("being drawn");
      text.textContent = "generating…";
    });
    source.addEventListener("progress", function (event) {
      const data = JSON.parse(event.data);
      bar.max = data.total;
      bar.value = data.step;
      stateIs("being drawn");
      text.textContent = data.step > 0 ? "step " + data.step + " of " + data.total : "generating…";
    });
    source.addEventListener("done", function () {
      source.close();
      window.location.reload(); // the page shows the images (or what went wrong)
    });
    source.addEventListener("error", function () {
      // A dropped connection is retried by the browser (CONNECTING); a refused stream is
      // not (CLOSED: signed out, the set is gone …): the page itself says what happened.
      if (source.readyState === EventSource.CLOSED) {
        text.textContent = "The live progress stopped; reloading the page…";
        window.setTimeout(function () {
          window.location.reload();
        }, 1000);
      }
    });
    return;
  }

  // ----- voting -----------------------------------------------------------------------
  const statusLine = document.getElementById("vote-status");
  if (status !== "done" || !statusLine) {
    return;
  }
  const next = document.getElementById("next-set");
  const pickers = document.getElementById("pickers");
  const figures = Array.from(document.querySelectorAll("figure.choice"));
  let busy = false;
  let pending = null; // a vote given while another was on its way: sent next (the last wins)

  function say(message, bad) {
    statusLine.textContent = message;
    statusLine.classList.toggle("form-error", bad);
  }

  async function send(value) {
    if (busy) {
      pending = value;
      return;
    }
    busy = true;
    try {
      const answer = await fetch("/sets/" + id + "/vote", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
        body: new URLSearchParams({ vote: value }),
      });
      let data;
      try {
        data = await answer.json();
      } catch (error) {
        data = { error: "prefloop answered " + answer.status + "; reload the page and try again." };
      }
      if (!answer.ok || data.error) {
        say(data.error || "prefloop answered " + answer.status + ".", true);
        return;
      }
      for (const figure of figures) {
        figure.classList.toggle("picked", figure.dataset.index === data.vote);
      }
      say(data.message, false);
      if (pickers && data.pickers_text) {
        pickers.textContent = data.pickers_text;
      }
      if (next) {
        next.hidden = false;
      }
    } catch (error) {
      say("prefloop could not be reached; check your connection and try again.", true);
    } finally {
      busy = false;
      if (pending !== null) {
        const again = pending;
        pending = null;
        send(again);
      }
    }
  }

  for (const form of document.querySelectorAll("form.vote-form")) {
    form.addEventListener("submit", function (event) {
      const button = event.submitter;
      if (!button || !button.value) {
        return; // let the browser post the form
      }
      event.preventDefault();
      send(button.value);
    });
  }
  for (const figure of figures) {
    const image = figure.querySelector("img");
    if (image) {
      image.addEventListener("click", function () {
        send(figure.dataset.index);
      });
    }
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) {
      return;
    }
    const target = event.target;
    if (target && target.closest && target.closest("input, textarea, select, [contenteditable]")) {
      return;
    }
    if (/^[1-4]$/.test(event.key) && figures.some((f) => f.dataset.index === event.key)) {
      event.preventDefault();
      send(event.key);
    }
  });
})();
