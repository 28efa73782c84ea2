// Generate: a model, a class for conditional models, count, seed; shows the images and downloads the result.
"use strict";
(() => {
  const { $, api, json, show, el } = DrawAI;
  let models = [];

  async function pickModel() {
    const version = $("#g-model").value;
    const wrap = $("#g-label-wrap"), select = $("#g-label");
    select.replaceChildren(el("option", { value: "" }, "(training proportions)"));
    wrap.hidden = true;
    if (!version) return;
    const m = await json("/models/" + encodeURIComponent(version));
    if (m.labels && m.labels.length) {
      for (const l of m.labels) select.append(el("option", { value: l.name }, l.name));
      wrap.hidden = false;
    }
  }

  function query(format) {
    const q = new URLSearchParams({ model: $("#g-model").value, count: $("#g-count").value || "1", format });
    const seed = $("#g-seed").value.trim();
    if (seed !== "") q.set("seed", seed);
    if (!$("#g-label-wrap").hidden && $("#g-label").value) q.set("label", $("#g-label").value);
    return q;
  }

  async function showImages(ev) {
    ev.preventDefault();
    show($("#g-error"), "");
    try {
      const body = await json("/generate?" + query("json"), { method: "POST" });
      const box = $("#g-images");
      box.replaceChildren();
      for (const img of body.images) {
        const caption = "seed " + img.seed + (img["class"] ? " · " + img["class"] : "");
        box.append(el("figure", {}, el("img", { src: "data:image/png;base64," + img.png_base64, alt: img.file,
          class: "pixel", title: img.file }), el("figcaption", {}, caption)));
      }
      $("#g-info").textContent = body.count + " synthetic images from " + body.model_version + " (" + body.engine +
        " " + body.precision + "), seeds " + body.images[0].seed + "–" + body.images[body.images.length - 1].seed;
      if ($("#g-seed").value.trim() === "") $("#g-seed").value = body.images[0].seed;  // "Download" gets the same
    } catch (err) {
      show($("#g-error"), err.message);
    }
  }

  async function download() {
    show($("#g-error"), "");
    const format = $("#g-format").value;
    const r = await api("/generate?" + query(format), { method: "POST" });
    if (!r.ok) {
      show($("#g-error"), DrawAI.detailText(await r.json().catch(() => null), r.status));
      return;
    }
    const disposition = r.headers.get("Content-Disposition") || "";
    const m = /filename="([^"]+)"/.exec(disposition);
    const name = m ? m[1] : "drawai." + (format === "grid" ? "png" : format);
    const a = el("a", { href: URL.createObjectURL(await r.blob()), download: name });
    document.body.append(a);
    a.click();
    a.remove();
  }

  DrawAI.start(async () => {
    models = await DrawAI.models();
    if (!models.length) {
      show($("#g-error"), "No model yet: train one first.");
      return;
    }
    DrawAI.fillModels($("#g-model"), models, new URLSearchParams(location.search).get("model"));
    $("#g-model").addEventListener("change", pickModel);
    await pickModel();
    $("#gen-form").addEventListener("submit", showImages);
    $("#g-download").addEventListener("click", download);
  });
})();
