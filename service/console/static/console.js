// Draw.AI console: shared helpers. Plain JavaScript, no libraries, no build step.
"use strict";

const DrawAI = (() => {
  const KEY = "drawai.apiKey";
  const $ = (sel, root = document) => root.querySelector(sel);
  const key = () => sessionStorage.getItem(KEY) || "";

  function headers(extra) {
    const h = new Headers(extra || {});
    const k = key();
    if (k) h.set("Authorization", "Bearer " + k);
    return h;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super(detailText(body, status));
      this.status = status;
      this.body = body;
    }
  }

  function detailText(body, status) {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => (e.loc || []).slice(1).join(".") + ": " + e.msg).join("; ");
    return "HTTP " + status;
  }

  async function api(path, opts = {}) {
    const r = await fetch(path, { ...opts, headers: headers(opts.headers) });
    if (r.status === 401 || r.status === 403) {
      const body = await r.clone().json().catch(() => null);
      if (body && typeof body.detail === "string" && /API key/.test(body.detail)) askKey(body.detail);
    }
    return r;
  }

  async function json(path, opts = {}) {
    const r = await api(path, opts);
    const body = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }

  // An image from the API, fetched with the key (an <img src> cannot send headers); null when 204.
  async function image(img, path, opts = {}) {
    const r = await api(path, opts);
    if (r.status === 204) return null;
    if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
    const url = URL.createObjectURL(await r.blob());
    if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
    img.dataset.objectUrl = url;
    img.src = url;
    img.hidden = false;
    return r;
  }

  function show(el, text) {
    el.textContent = text;
    el.hidden = !text;
  }

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
    return e;
  }

  function fmt(x, digits = 3) {
    if (x === null || x === undefined) return "–";
    return typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(digits)) : String(x);
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + " h " : "") + (h || m ? m + " min " : "") + r + " s";
  }

  // Server-Sent Events read with fetch(), so the key header goes along (EventSource cannot send headers).
  // Calls onEvent(type, data) per event; resolves when the stream ends.
  async function events(path, onEvent, signal) {
    const r = await api(path, { signal, headers: { Accept: "text/event-stream" } });
    if (!r.ok || !r.body) throw new ApiError(r.status, await r.json().catch(() => null));
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", type = "message", data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length) onEvent(type, data.join("\n"));
          type = "message";
          data = [];
        } else if (!line.startsWith(":")) {
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          let v = c < 0 ? "" : line.slice(c + 1);
          if (v.startsWith(" ")) v = v.slice(1);
          if (field === "event") type = v;
          else if (field === "data") data.push(v);
        }
      }
    }
  }

  async function models() {
    const page = await json("/models?limit=1000");
    return page.data;
  }

  function fillModels(select, list, preferred) {
    select.replaceChildren();
    for (const m of list.slice().reverse()) {
      select.append(el("option", { value: m.version }, m.version + (m.active ? " (active)" : "") +
        " · " + m.architecture + " " + m.image_size + "px"));
    }
    const want = preferred || (list.find((m) => m.active) || {}).version;
    if (want) select.value = want;
  }

  // The key gate: /auth/check answers 204 when this tab may use the keyed routes.
  function askKey(message) {
    $("#app").hidden = true;
    $("#keygate").hidden = false;
    show($("#key-error"), message || "");
    $("#key-input").focus();
  }

  async function gate() {
    const r = await fetch("/auth/check", { headers: headers() });
    if (r.status === 204) return true;
    const body = await r.json().catch(() => null);
    if (r.status === 401 && !key()) askKey("");
    else askKey(r.status === 403 ? "That key was not accepted." : detailText(body, r.status));
    return false;
  }

  async function start(init) {
    $("#key-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(KEY, $("#key-input").value.trim());
      if (await gate()) location.reload();
    });
    $("#forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      location.reload();
    });
    try {
      if (!(await gate())) return;
      $("#forget-key").hidden = !key();
      $("#keygate").hidden = true;
      $("#app").hidden = false;
      await init();
      document.body.dataset.ready = "true";
    } catch (err) {
      show($("#fatal"), "Error: " + err.message);
    }
  }

  return { $, api, json, image, events, show, el, fmt, duration, models, fillModels, start, detailText, ApiError };
})();
