// The blind reader test: one slice at a time, "real or synthetic?", then the results.
"use strict";
(() => {
  const { $, json, image, show, el, fmt } = DrawAI;
  let version = null, reader = null, position = null, busy = false;

  const base = () => "/models/" + encodeURIComponent(version) + "/quiz";
  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(0) + " %");

  async function next(state) {
    $("#q-total").textContent = state.total;
    if (state.next === null) {
      $("#q-board").hidden = true;
      await results();
      return;
    }
    position = state.next;
    const q = new URLSearchParams({ reader });
    await image($("#q-image"), base() + "/items/" + position + ".png?" + q);
    $("#q-pos").textContent = state.answered + 1;  // once the slice is there: answers before it are ignored
    $("#q-board").hidden = false;
    $("#q-board").dataset.position = position;
  }

  async function begin(ev) {
    ev.preventDefault();
    show($("#q-error"), "");
    version = $("#q-model").value;
    reader = $("#q-reader").value.trim();
    $("#q-results").hidden = true;
    try {
      await next(await json(base() + "?" + new URLSearchParams({ reader })));
    } catch (err) {
      show($("#q-error"), err.message);
    }
  }

  async function answer(kind) {
    if (busy || position === null || $("#q-board").hidden) return;
    busy = true;
    try {
      const state = await json(base() + "/answers", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reader, position, answer: kind }) });
      await next(state);
    } catch (err) {
      show($("#q-error"), err.message);
    } finally {
      busy = false;
    }
  }

  async function results() {
    version = version || $("#q-model").value;
    const r = await json(base() + "/results");
    $("#q-results").hidden = false;
    $("#q-results-version").textContent = r.version;
    const p = r.pooled;
    $("#q-pooled").textContent = "Pooled: " + p.correct + " of " + p.answered + " correct, accuracy " + pct(p.accuracy) +
      " (95 % interval " + pct(p.low) + "–" + pct(p.high) + ")";
    const body = $("#q-readers tbody");
    body.replaceChildren();
    for (const x of r.readers) {
      body.append(el("tr", { class: x.reader === reader ? "me" : "" }, el("td", {}, x.reader + (x.complete ? "" : " (unfinished)")),
        el("td", {}, x.answered + " / " + r.total), el("td", {}, x.correct), el("td", {}, pct(x.accuracy)),
        el("td", {}, pct(x.low) + "–" + pct(x.high))));
    }
    const box = $("#q-fooled");
    box.replaceChildren();
    for (const f of r.fooled.filter((f) => f.fooled > 0).slice(0, 8)) {
      const img = el("img", { alt: f.item, class: "pixel" });
      box.append(el("figure", {}, img, el("figcaption", {}, "fooled " + f.fooled + " of " + f.shown +
        (f.label ? " · " + f.label : "") + " · seed " + f.seed)));
      const q = new URLSearchParams({ model: r.version, seed: f.seed, count: 1, format: "png" });
      if (f.label) q.set("label", f.label);
      image(img, "/generate?" + q, { method: "POST" }).catch(() => {});
    }
    if (!box.children.length) box.append(el("p", { class: "hint" }, "No synthetic slice has fooled a reader yet."));
    document.body.dataset.results = "true";
  }

  DrawAI.start(async () => {
    const models = await DrawAI.models();
    DrawAI.fillModels($("#q-model"), models, new URLSearchParams(location.search).get("model"));
    $("#q-reader").value = sessionStorage.getItem("drawai.reader") || "";
    $("#q-reader").addEventListener("change", () => sessionStorage.setItem("drawai.reader", $("#q-reader").value.trim()));
    $("#quiz-start").addEventListener("submit", begin);
    $("#q-real").addEventListener("click", () => answer("real"));
    $("#q-synthetic").addEventListener("click", () => answer("synthetic"));
    $("#q-show-results").addEventListener("click", () => { version = $("#q-model").value; results().catch((e) => show($("#q-error"), e.message)); });
    document.addEventListener("keydown", (ev) => {
      if (ev.target.tagName === "INPUT") return;
      if (ev.key === "r" || ev.key === "R") answer("real");
      if (ev.key === "s" || ev.key === "S") answer("synthetic");
    });
  });
})();
