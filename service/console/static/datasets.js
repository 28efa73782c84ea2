// Datasets: drag-and-drop upload with progress, the server's report, previews, the stored list.
"use strict";
(() => {
  const { $, json, image, show, el, fmt } = DrawAI;

  function upload(file) {
    const name = $("#ds-name").value.trim();
    const form = new FormData();
    form.append("file", file, file.name);
    if (name) form.append("name", name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/datasets");
    const key = sessionStorage.getItem("drawai.apiKey");
    if (key) xhr.setRequestHeader("Authorization", "Bearer " + key);
    $("#upload-status").hidden = false;
    $("#upload-file").textContent = file.name + " (" + (file.size / 1024).toFixed(0) + " KiB)";
    show($("#upload-error"), "");
    $("#report").hidden = true;
    const bar = $("#upload-progress");
    bar.value = 0;
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable) return;
      bar.value = (100 * ev.loaded) / ev.total;
      $("#upload-percent").textContent = Math.round(bar.value) + " %";
    });
    xhr.upload.addEventListener("load", () => { $("#upload-percent").textContent = "uploaded; reading the slices…"; });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 201) {
        bar.value = 100;
        $("#upload-percent").textContent = "done";
        report(body);
        list();
      } else {
        show($("#upload-error"), "Upload refused (" + xhr.status + "): " + DrawAI.detailText(body, xhr.status));
      }
    });
    xhr.addEventListener("error", () => show($("#upload-error"), "Upload failed: the connection broke."));
    xhr.send(form);
  }

  function facts(dl, pairs) {
    dl.replaceChildren();
    for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
  }

  function report(ds) {
    $("#report").hidden = false;
    $("#report-title").textContent = ds.name + " (" + ds.id + ")";
    const classes = Object.entries(ds.classes).map(([c, n]) => c + ": " + n).join(", ");
    const split = ds.split ? ds.split.train + " training, " + ds.split.heldout + " held out" : "no held-out split";
    facts($("#report-facts"), [["Images", ds.images], ["Classes", classes], ["Split", split],
      ["Stored size", ds.image_size + " px"], ["Duplicates removed", ds.stats ? ds.stats.duplicates : "–"]]);
    const body = $("#skipped tbody");
    body.replaceChildren();
    for (const s of ds.skipped) body.append(el("tr", {}, el("td", {}, s.file || s.name || ""), el("td", {}, s.reason || JSON.stringify(s))));
    $("#skipped-count").textContent = ds.skipped.length;
    $("#skipped-box").open = ds.skipped.length > 0 && ds.skipped.length <= 5;  // a long list stays folded
    $("#report-train").href = "/console/training?dataset=" + encodeURIComponent(ds.id);
    image($("#report-preview"), "/datasets/" + encodeURIComponent(ds.id) + "/preview.png?per_class=8");
  }

  async function list() {
    const page = await json("/datasets?limit=1000");
    const body = $("#datasets tbody");
    body.replaceChildren();
    for (const ds of page.data.slice().reverse()) {
      const classes = Object.entries(ds.classes).map(([c, n]) => c + " " + n).join(", ");
      const preview = el("button", { type: "button", class: "small", onclick: () =>
        image($("#list-preview"), "/datasets/" + encodeURIComponent(ds.id) + "/preview.png?per_class=8") }, "preview");
      const train = el("a", { href: "/console/training?dataset=" + encodeURIComponent(ds.id) }, "train");
      body.append(el("tr", {}, el("td", {}, el("code", {}, ds.id)), el("td", {}, ds.name), el("td", {}, ds.images),
        el("td", {}, classes), el("td", {}, ds.split ? fmt(ds.split.heldout) : "–"),
        el("td", {}, (ds.created || "").slice(0, 19).replace("T", " ")), el("td", {}, preview, " ", train)));
    }
  }

  DrawAI.start(async () => {
    const drop = $("#drop");
    for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    for (const t of ["dragleave", "drop"]) drop.addEventListener(t, () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      const file = ev.dataTransfer.files[0];
      if (file) upload(file);
    });
    $("#file-input").addEventListener("change", (ev) => {
      const file = ev.target.files[0];
      if (file) upload(file);
      ev.target.value = "";
    });
    await list();
  });
})();
