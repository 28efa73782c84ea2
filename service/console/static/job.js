// One job, live: its progress from GET /jobs/{id}/events (Server-Sent Events read with fetch, so the key header
// goes along), its latest training grid, a cancel button. Falls back to polling if the stream is unavailable.
"use strict";
(() => {
  const { $, json, image, events, show, fmt, duration } = DrawAI;
  const id = $("#job-id").dataset.job;
  const path = "/jobs/" + encodeURIComponent(id);
  const ENDED = new Set(["finished", "failed", "canceled"]);
  let updates = 0, gridKey = null, ended = false;

  function render(job) {
    const p = job.progress || {};
    const status = $("#job-status");
    status.textContent = job.status;
    status.className = "badge " + job.status;
    $("#job-phase").textContent = p.phase || "";
    $("#job-detail").textContent = p.detail || "";
    const frac = p.steps ? p.step / p.steps : job.status === "finished" ? 1 : 0;
    $("#job-progress").value = frac;
    $("#job-percent").textContent = Math.round(100 * frac) + " %";
    $("#job-epoch").textContent = p.epochs ? p.epoch + " / " + p.epochs : "–";
    $("#job-step").textContent = p.steps ? p.step + " / " + p.steps : "–";
    $("#job-dloss").textContent = fmt(p.d_loss);
    $("#job-gloss").textContent = fmt(p.g_loss);
    $("#job-rate").textContent = fmt(p.images_per_s, 1);
    $("#job-eta").textContent = ENDED.has(job.status) ? "–" : duration(p.eta_s);
    show($("#job-warning"), p.warning || "");
    show($("#job-error"), job.error ? "Error: " + job.error : "");
    if (job.model_version) {
      $("#job-model").hidden = false;
      const link = $("#job-model-link");
      link.textContent = job.model_version;
      link.href = "/console/models#" + job.model_version;
    }
    ended = ENDED.has(job.status);
    $("#cancel").disabled = ended || job.cancel_requested;
    const key = p.epoch + ":" + job.status;
    if (key !== gridKey) {
      gridKey = key;
      refreshGrid();
    }
  }

  async function refreshGrid() {
    try {
      const r = await image($("#job-grid"), path + "/samples.png");
      if (r) $("#job-grid-caption").textContent = "Latest training grid (" + (r.headers.get("X-DrawAI-Grid") || "") + ")";
    } catch (e) { /* the grid is a bonus: never fail the page for it */ }
  }

  function onEvent(type, data) {
    let job;
    try { job = JSON.parse(data); } catch (e) { return; }
    if (type === "error") {  // Redis failed, or the job's record expired: the page polls from here on
      $("#job-feed").textContent = "stream stopped: " + (job.detail || "");
      return;
    }
    updates += 1;
    $("#job-updates").textContent = updates;
    document.body.dataset.updates = updates;
    render(job);
    if (type === "end") document.body.dataset.ended = "true";
  }

  async function poll() {
    $("#job-feed").textContent = "polling every 2 s";
    while (!ended) {
      await new Promise((r) => setTimeout(r, 2000));
      onEvent("progress", JSON.stringify(await json(path)));
    }
    document.body.dataset.ended = "true";
  }

  async function follow() {
    try {
      $("#job-feed").textContent = "live (server-sent events)";
      await events(path + "/events", onEvent);
    } catch (err) { /* no stream here (an older API, a proxy): poll instead */ }
    if (!ended) render(await json(path));
    if (ended) document.body.dataset.ended = "true";
    else await poll();
  }

  async function cancel() {
    try {
      render(await json(path, { method: "DELETE" }));
    } catch (err) {
      show($("#cancel-error"), err.message);
    }
  }

  DrawAI.start(async () => {
    $("#cancel").addEventListener("click", cancel);
    render(await json(path));
    if (ended) document.body.dataset.ended = "true";
    else follow().catch((err) => show($("#fatal"), "Error: " + err.message));
  });
})();
