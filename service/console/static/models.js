// Models: versions, the selected one's samples, manifest and quality report, activation.
"use strict";
(() => {
  const { $, json, image, show, el, fmt } = DrawAI;

  async function list() {
    const models = await DrawAI.models();
    const body = $("#models tbody");
    body.replaceChildren();
    for (const m of models.slice().reverse()) {
      const activate = el("button", { type: "button", class: "small", onclick: () => activateVersion(m.version) }, "Activate");
      activate.disabled = m.active;
      const open = el("a", { href: "#" + m.version }, m.version);
      body.append(el("tr", { "data-version": m.version }, el("td", {}, open), el("td", {}, m.architecture),
        el("td", {}, m.image_size + " px"), el("td", {}, Object.keys(m.classes).join(", ")),
        el("td", {}, el("code", {}, m.dataset)), el("td", {}, (m.created || "").slice(0, 19).replace("T", " ")),
        el("td", {}, m.active ? el("span", { class: "badge finished" }, "active") : ""), el("td", {}, activate)));
    }
    $("#no-models").hidden = models.length > 0;
    return models;
  }

  async function activateVersion(version) {
    show($("#models-error"), "");
    try {
      await json("/models/" + encodeURIComponent(version) + "/activate", { method: "POST" });
      await list();
    } catch (err) {
      show($("#models-error"), "Activation refused: " + err.message);
    }
  }

  function reportTable(report) {
    const rows = Object.entries(report.summary || {}).map(([name, s]) => {
      if (s.computed === false) return el("tr", {}, el("td", {}, name), el("td", { colspan: 3 }, "not computed: " + s.reason));
      return el("tr", {}, el("td", {}, name), el("td", {}, fmt(s.value)), el("td", {}, fmt(s.reference)),
        el("td", {}, s.reading || ""));
    });
    return el("table", { class: "compact" }, el("thead", {}, el("tr", {}, el("th", {}, "metric"),
      el("th", {}, "value"), el("th", {}, "real vs real"), el("th", {}, "reading"))), el("tbody", {}, ...rows));
  }

  async function select(version) {
    if (!version) return;
    const m = await json("/models/" + encodeURIComponent(version));
    $("#model").hidden = false;
    $("#model-version").textContent = m.version + (m.active ? " (active)" : "");
    const dl = $("#model-facts");
    dl.replaceChildren();
    const labels = m.labels ? m.labels.map((l) => l.name).join(", ") : "unconditional";
    for (const [k, v] of [["Architecture", m.architecture + " " + m.image_size + " px"], ["Classes", labels],
      ["Dataset", m.dataset], ["Epochs / steps", m.epochs + " / " + m.steps], ["Job", m.job_id],
      ["Serving", m.serving ? m.serving.engine + " " + m.serving.precision : "not loaded here"]]) {
      dl.append(el("dt", {}, k), el("dd", {}, v));
    }
    image($("#model-samples"), "/models/" + encodeURIComponent(version) + "/samples.png").catch(() => {});
    const box = $("#model-report");
    $("#model-report-link").href = "/models/" + encodeURIComponent(version) + "/report.html";
    try {
      box.replaceChildren(reportTable(await json("/models/" + encodeURIComponent(version) + "/report")));
      $("#model-report-link").hidden = false;
    } catch (err) {
      box.replaceChildren(el("p", { class: "hint" }, err.message));
      $("#model-report-link").hidden = true;
    }
  }

  DrawAI.start(async () => {
    const models = await list();
    window.addEventListener("hashchange", () => select(location.hash.slice(1)));
    const active = models.find((m) => m.active);
    await select(location.hash.slice(1) || (active && active.version));
  });
})();
