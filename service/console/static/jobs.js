// Jobs: every remembered job, newest first.
"use strict";
(() => {
  const { $, json, el } = DrawAI;

  function progressText(p) {
    if (!p) return "–";
    if (p.steps) return p.step + " / " + p.steps + " steps";
    return p.epochs ? "epoch " + p.epoch + " / " + p.epochs : "–";
  }

  async function list() {
    const page = await json("/jobs?limit=1000");
    const body = $("#jobs tbody");
    body.replaceChildren();
    for (const j of page.data) {
      const p = j.progress || {};
      const model = j.model_version ? el("a", { href: "/console/models#" + j.model_version }, j.model_version) : "–";
      body.append(el("tr", {},
        el("td", {}, el("a", { href: "/console/jobs/" + encodeURIComponent(j.id) }, el("code", {}, j.id.slice(0, 8)))),
        el("td", {}, el("span", { class: "badge " + j.status }, j.status)), el("td", {}, p.phase || "–"),
        el("td", {}, progressText(p)), el("td", {}, j.dataset || "–"), el("td", {}, model),
        el("td", {}, (j.created_at || "").slice(0, 19).replace("T", " "))));
    }
    $("#no-jobs").hidden = page.data.length > 0;
  }

  DrawAI.start(async () => {
    $("#refresh").addEventListener("click", list);
    await list();
  });
})();
