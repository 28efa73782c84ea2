// Training: the TrainSpec form with presets; the API's validation messages next to the fields.
"use strict";
(() => {
  const { $, json, show, el } = DrawAI;
  const presets = JSON.parse($("#presets").textContent);
  const form = () => $("#train-form");

  function placeholders() {
    const name = $("#f-preset").value;
    const values = presets[name === "auto" ? "quick" : name] || {};
    for (const input of form().querySelectorAll("input[name]")) {
      const v = values[input.name];
      input.placeholder = v === undefined || v === null ? "" : String(v);
    }
    for (const select of form().querySelectorAll("select[name]")) {
      const first = select.options[0];
      if (first && first.value === "" && select.name in values) first.textContent = "(preset: " + values[select.name] + ")";
    }
  }

  function spec() {
    const out = {};
    for (const f of form().querySelectorAll("input[name], select[name]")) {
      const v = f.value.trim();
      if (v === "") continue;
      if (f.type === "number") out[f.name] = Number(v);
      else if (f.hasAttribute("data-bool")) out[f.name] = v === "true";
      else out[f.name] = v;
    }
    return out;
  }

  function clearErrors() {
    for (const s of form().querySelectorAll(".field-error")) s.textContent = "";
    for (const f of form().querySelectorAll(".invalid")) f.classList.remove("invalid");
    show($("#form-errors"), "");
  }

  function showErrors(err) {
    const detail = err.body && err.body.detail;
    if (!Array.isArray(detail)) {
      show($("#form-errors"), err.message);
      return;
    }
    const general = [];
    for (const e of detail) {
      const field = (e.loc || [])[1];
      const span = field && form().querySelector('.field-error[data-for="' + field + '"]');
      if (span) {
        span.textContent = e.msg;
        const input = form().querySelector('[name="' + field + '"]');
        if (input) input.classList.add("invalid");
      } else general.push(e.msg.replace(/^Value error, /, ""));
    }
    show($("#form-errors"), general.join("; "));
  }

  async function submit(ev) {
    ev.preventDefault();
    clearErrors();
    $("#train-submit").disabled = true;
    try {
      const job = await json("/jobs/train", { method: "POST", body: JSON.stringify(spec()),
        headers: { "Content-Type": "application/json" } });
      location.href = "/console/jobs/" + encodeURIComponent(job.id);
    } catch (err) {
      showErrors(err);
    } finally {
      $("#train-submit").disabled = false;
    }
  }

  DrawAI.start(async () => {
    const page = await json("/datasets?limit=1000");
    const select = $("#f-dataset");
    for (const ds of page.data.slice().reverse()) {
      select.append(el("option", { value: ds.id }, ds.name + " · " + ds.images + " images (" + ds.id + ")"));
    }
    const wanted = new URLSearchParams(location.search).get("dataset");
    if (wanted) select.value = wanted;
    $("#f-preset").addEventListener("change", placeholders);
    placeholders();
    form().addEventListener("submit", submit);
  });
})();
