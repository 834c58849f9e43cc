// Live progress: a running attempt's row (runs page) or page (run page) polls the JSON API and updates
// itself in place, until the attempt finishes.
(function () {
  "use strict";
  const every = window.BRAIN_REFRESH_MS || 2000;
  const text = (el, value) => { if (el && el.textContent !== value) el.textContent = value; };
  const pill = (el, state) => { if (el) { text(el, state); el.className = "pill " + state; } };
  const when = (iso) => iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : "–";

  async function fetchRun(runId) {
    const resp = await fetch("/api/runs/" + encodeURIComponent(runId), {credentials: "same-origin"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    return resp.json();
  }

  function updatePage(root, run) {
    const attempt = run.attempts[0];
    pill(document.getElementById("run-state"), run.state);
    text(document.getElementById("progress-text"), `${run.done} of ${run.total} symbols done`);
    document.getElementById("progress-bar").style.width = (run.total ? Math.round(100 * run.done / run.total) : 0) + "%";
    const body = root.querySelector("#symbols tbody");
    for (const s of attempt.symbols) {
      let tr = body.querySelector(`tr[data-symbol="${CSS.escape(s.symbol)}"]`);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.symbol = s.symbol;
        tr.innerHTML = '<td></td><td><span class="pill" data-field="state"></span></td><td data-field="step"></td>' +
          '<td data-field="error"></td><td data-field="finished"></td>';
        tr.firstChild.textContent = s.symbol;
        body.appendChild(tr);
      }
      pill(tr.querySelector('[data-field="state"]'), s.state);
      text(tr.querySelector('[data-field="step"]'), s.step || "");
      text(tr.querySelector('[data-field="error"]'), s.error || "");
      text(tr.querySelector('[data-field="finished"]'), when(s.finished_at));
    }
    if (run.finished) text(document.getElementById("refresh-note"), "");
  }

  function updateRow(tr, run) {
    pill(tr.querySelector('[data-field="state"]'), run.state);
    text(tr.querySelector('[data-field="progress"]'), `${run.done} of ${run.total} done`);
    tr.querySelector('[data-field="bar"]').style.width = (run.total ? Math.round(100 * run.done / run.total) : 0) + "%";
  }

  function follow(el, update) {
    const runId = el.dataset.run;
    async function tick() {
      try {
        const run = await fetchRun(runId);
        update(el, run);
        if (run.finished) { el.dataset.live = "no"; return; }
      } catch (err) {
        console.warn("refresh of run " + runId + " failed: " + err);
      }
      setTimeout(tick, every);
    }
    setTimeout(tick, every);
  }

  const page = document.getElementById("run");
  if (page && page.dataset.live === "yes") follow(page, updatePage);
  for (const tr of document.querySelectorAll('#runs tr[data-live="yes"]')) follow(tr, updateRow);
})();
