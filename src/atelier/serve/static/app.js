// Atelier studio: the page over the studio's HTTP API (see atelier/serve/app.py).
// Plain JavaScript, no build step. The page's CSP allows only this file and style.css: no inline
// scripts or styles, nothing external. Data from the API is put into the page with textContent only.
"use strict";

(() => {
  const SCOPES = ["read", "generate", "stylize", "rate", "admin"];
  const SIGNED_IN_HINT = "atelier.signedIn"; // not a secret: only "ask /v1/session on load"
  const NOTICE = "atelier.notice";

  const $ = (selector) => document.querySelector(selector);
  const $$ = (selector) => Array.from(document.querySelectorAll(selector));

  const state = {
    csrf: null,
    principal: null,
    scopes: new Set(),
    models: [],
    tab: null,
    visited: new Set(),
  };

  // -- the API ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  /** fetch() with the session cookie, the CSRF header on state-changing requests and JSON errors. */
  async function api(path, { method = "GET", json, form, signal, expect = "json" } = {}) {
    const headers = {};
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form; // multipart: the browser sets the boundary
    }
    if (method !== "GET" && method !== "HEAD") {
      if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, signal, credentials: "same-origin" });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "The studio could not be reached. Is the server running?", null);
    }
    if (!response.ok) {
      let detail = { code: `http_${response.status}`, message: response.statusText || "request failed", field: null };
      try {
        const data = await response.json();
        if (data && data.error) detail = data.error;
      } catch (_) { /* not JSON */ }
      const error = new ApiError(response.status, detail.code, detail.message, detail.field);
      if (response.status === 401 && state.principal && path !== "/v1/session") sessionEnded();
      throw error;
    }
    if (expect === "blob") return response.blob();
    if (expect === "none") return null;
    return response.json();
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
    let text = error.message || error.code;
    if (error.field) text += ` (${error.field})`;
    if (error.status === 403 && error.code === "forbidden") text += ". Ask an admin for a token with that scope.";
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function showError(el, error) {
    el.textContent = typeof error === "string" ? error : describe(error);
    el.hidden = false;
  }

  function clearError(el) {
    el.textContent = "";
    el.hidden = true;
  }

  const isAbort = (error) => error && error.name === "AbortError";
  const enc = encodeURIComponent;

  function has(scope) {
    return state.scopes.has("admin") || state.scopes.has(scope);
  }

  /** Put a fresh object URL into an <img>, revoking the one it replaces once the new one shows. */
  function showBlob(img, blob) {
    const old = img.dataset.objectUrl;
    const url = URL.createObjectURL(blob);
    img.dataset.objectUrl = url;
    return new Promise((resolve) => {
      const done = () => {
        img.removeEventListener("load", done);
        img.removeEventListener("error", done);
        if (old) URL.revokeObjectURL(old);
        resolve(url);
      };
      img.addEventListener("load", done);
      img.addEventListener("error", done);
      img.src = url;
      img.hidden = false;
    });
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function compact(n) {
    if (n === null || n === undefined) return "–";
    if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
    return String(n);
  }

  function bytes(n) {
    if (!n) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function num(x, digits = 2) {
    return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
  }

  function when(iso) {
    if (!iso) return "";
    const hasZone = /[zZ]|[+-]\d\d:?\d\d$/.test(iso);
    const date = new Date(hasZone ? iso : `${iso}Z`);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function intIn(input, lo, hi, fallback) {
    const v = Number.parseInt(input.value, 10);
    if (!Number.isFinite(v)) return fallback;
    return Math.min(hi, Math.max(lo, v));
  }

  // -- login, session, logout ------------------------------------------------------------------------

  function showLogin(message) {
    $("#boot").hidden = true;
    $("#app-view").hidden = true;
    $("#user-bar").hidden = true;
    $("#login-view").hidden = false;
    const err = $("#login-error");
    if (message) showError(err, message);
    else clearError(err);
    $("#token").focus();
  }

  async function login(event) {
    event.preventDefault();
    const token = $("#token").value.trim();
    const err = $("#login-error");
    clearError(err);
    if (!token) {
      showError(err, "Enter your access token.");
      return;
    }
    const button = $("#login");
    button.disabled = true;
    try {
      const session = await api("/v1/session", { method: "POST", json: { token } });
      $("#token").value = "";
      localStorage.setItem(SIGNED_IN_HINT, "1");
      await enterApp(session);
    } catch (error) {
      showError(err, error.status === 401 ? "That token was not accepted: it is unknown, mistyped, expired or "
        + "revoked." : error);
      $("#token").select();
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await api("/v1/session", { method: "DELETE" });
    } catch (_) { /* the cookie may be gone already; log out locally anyway */ }
    localStorage.removeItem(SIGNED_IN_HINT);
    state.csrf = null;
    state.principal = null;
    location.assign("/"); // a fresh page: nothing of this session is left in memory
  }

  function sessionEnded() {
    localStorage.removeItem(SIGNED_IN_HINT);
    sessionStorage.setItem(NOTICE, "Your session has ended (expired, logged out elsewhere or the token was "
      + "revoked). Sign in again.");
    state.principal = null;
    location.reload();
  }

  async function enterApp(session) {
    state.csrf = session.csrf;
    state.principal = session.principal;
    state.scopes = new Set(session.scopes || []);
    $("#boot").hidden = true;
    $("#login-view").hidden = true;
    $("#app-view").hidden = false;
    $("#user-bar").hidden = false;
    $("#whoami").textContent = session.principal;
    const list = $("#scopes");
    list.replaceChildren(...SCOPES.map((scope) => el("li", {
      class: `scope ${has(scope) ? "on" : "off"}`,
      title: has(scope) ? `you have the ${scope} scope` : `you lack the ${scope} scope`,
      dataset: { scope },
      text: scope,
    })));
    for (const tab of $$("[role=tab]")) {
      const needed = tab.dataset.scope.split(" ");
      const ok = needed.some(has);
      tab.disabled = !ok;
      tab.title = ok ? "" : `needs the ${needed.join(" or ")} scope`;
    }
    for (const tool of $$(".tool[data-scope]")) {
      tool.hidden = !has(tool.dataset.scope);
    }
    if (has("read")) await loadModels();
    const wanted = location.hash.slice(1);
    const first = $$("[role=tab]").find((t) => !t.disabled && t.dataset.tab === wanted)
      || $$("[role=tab]").find((t) => !t.disabled);
    if (first) {
      showTab(first.dataset.tab);
    } else {
      $("#boot").textContent = "This token may not use any part of the studio.";
      $("#boot").hidden = false;
    }
  }

  async function boot() {
    bindUI();
    const notice = sessionStorage.getItem(NOTICE);
    sessionStorage.removeItem(NOTICE);
    if (!localStorage.getItem(SIGNED_IN_HINT)) {
      showLogin(notice);
      return;
    }
    try {
      const session = await api("/v1/session");
      if (!session.csrf) throw new ApiError(401, "unauthenticated", "no session", null);
      await enterApp(session);
    } catch (error) {
      localStorage.removeItem(SIGNED_IN_HINT);
      showLogin(error.status === 401 ? notice : error);
    }
  }

  // -- tabs --------------------------------------------------------------------------------------------

  function showTab(name, { focusPanel = false } = {}) {
    const tab = $(`#tab-${name}`);
    if (!tab || tab.disabled) return;
    state.tab = name;
    for (const t of $$("[role=tab]")) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
    }
    for (const panel of $$("[role=tabpanel]")) panel.hidden = panel.id !== `panel-${name}`;
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
    const first = !state.visited.has(name);
    state.visited.add(name);
    onTabShown(name, first);
    if (focusPanel && name === "rate") $("#rate-stage").focus();
  }

  function onTabKey(event) {
    const tabs = $$("[role=tab]").filter((t) => !t.disabled);
    const i = tabs.indexOf(document.activeElement);
    if (i < 0) return;
    let next = null;
    if (event.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
    else if (event.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
    else if (event.key === "Home") next = tabs[0];
    else if (event.key === "End") next = tabs[tabs.length - 1];
    if (!next) return;
    event.preventDefault();
    event.stopPropagation();
    next.focus();
    showTab(next.dataset.tab);
  }

  function onTabShown(name, first) {
    if (name === "generate" && first) runGenerate();
    if (name === "interpolate" && first) runInterp();
    if (name === "rate") {
      if (first) nextTask();
      refreshBoard();
    }
    if (name === "jobs") refreshJobs();
    if (name !== "jobs") stopJobsPolling();
  }

  // -- models and the gallery -------------------------------------------------------------------------

  const withOp = (op) => state.models.filter((m) => (m.operations || []).includes(op));

  function fillSelect(select, models, empty) {
    const previous = select.value;
    select.replaceChildren(...models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.family})` })));
    if (!models.length) select.append(el("option", { value: "", text: empty || "no suitable model" }));
    if (models.some((m) => m.name === previous)) select.value = previous;
    select.disabled = !models.length;
  }

  async function loadModels() {
    const err = $("#gallery-error");
    clearError(err);
    try {
      state.models = await api("/v1/models");
    } catch (error) {
      showError(err, error);
      state.models = [];
    }
    renderGallery();
    fillSelect($("#gen-model"), withOp("sample"), "no generative model");
    fillSelect($("#interp-model"), withOp("interpolate"), "no model that interpolates");
    const tools = { style: withOp("stylize"), translate: withOp("translate"),
      recon: withOp("reconstruct").filter((m) => !m.class_names), // the studio reconstructs unconditionally
      edit: withOp("edit"), inpaint: withOp("inpaint") };
    for (const [tool, models] of Object.entries(tools)) {
      fillSelect($(`#${tool}-model`), models);
      $(`#${tool}-none`).hidden = models.length > 0;
      $(`#${tool}-body`).hidden = !models.length;
    }
    onGenModel(false);
    onInterpModel(false);
  }

  function renderGallery() {
    const gallery = $("#gallery");
    if (!state.models.length) {
      gallery.replaceChildren(el("p", { class: "muted", text: "No models are served (or none this token may use)." }));
      return;
    }
    gallery.replaceChildren(...state.models.map(modelCard));
  }

  function modelCard(m) {
    const ops = m.operations || [];
    const thumb = ops.includes("sample")
      ? el("img", { src: `/v1/models/${enc(m.name)}/grid.png`, alt: `Samples from ${m.name}`, class: "pixel",
        loading: "lazy", width: 240, height: 240 })
      : el("div", { class: "thumb-none", text: ops.includes("stylize") ? "applies a style to your photos"
        : ops.includes("translate") ? "translates between two domains" : "no samples" });
    const classes = m.classes
      ? `${m.classes}${m.class_names ? ` (${m.class_names.slice(0, 4).join(", ")}${m.classes > 4 ? ", …" : ""})` : ""}`
      : "unconditional";
    const metrics = Object.entries(m.metrics || {});
    const facts = [
      ["Resolution", m.resolution ? `${m.resolution} px${m.channels ? `, ${m.channels} ch` : ""}` : "any"],
      ["Classes", classes],
      ["Parameters", compact(m.parameters)],
      ["Size", bytes(m.size_bytes)],
      ["Metrics", metrics.length ? metrics.map(([k, v]) => `${k} ${Number(v).toPrecision(4)}`).join(" · ") : "none yet"],
    ];
    const actions = [];
    if (ops.includes("sample") && has("generate")) {
      actions.push(el("button", { type: "button", class: "secondary small-btn", text: "Generate",
        dataset: { go: "generate", model: m.name } }));
    }
    if (ops.includes("interpolate") && has("generate")) {
      actions.push(el("button", { type: "button", class: "secondary small-btn", text: "Interpolate",
        dataset: { go: "interpolate", model: m.name } }));
    }
    return el("article", { class: "card model-card", dataset: { testid: "model-card", model: m.name } },
      el("div", { class: "thumb" }, thumb),
      el("div", { class: "model-head" }, el("h3", { text: m.name }), el("span", { class: "badge", text: m.family })),
      el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      el("ul", { class: "ops", "aria-label": "operations" }, ops.map((op) => el("li", { class: "op", text: op }))),
      actions.length ? el("div", { class: "actions" }, actions) : null);
  }

  function onGalleryClick(event) {
    const button = event.target.closest("button[data-go]");
    if (!button) return;
    const target = button.dataset.go;
    const select = target === "generate" ? $("#gen-model") : $("#interp-model");
    select.value = button.dataset.model;
    if (target === "generate") onGenModel(state.visited.has("generate"));
    else onInterpModel(state.visited.has("interpolate"));
    showTab(target);
    $(`#tab-${target}`).focus();
  }

  const modelNamed = (name) => state.models.find((m) => m.name === name);

  // a class by its name (airplane, …) where the model's data named its classes, else by its index
  const className = (m, i) => (m && m.class_names && m.class_names[i] !== undefined ? m.class_names[i] : String(i));

  function classOptions(select, names, withAll) {
    const options = names.map((n, i) => el("option", { value: String(i), text: `${i}: ${n}` }));
    if (withAll) options.unshift(el("option", { value: "", text: "all classes (mixed)" }));
    select.replaceChildren(...options);
  }

  // -- generate ----------------------------------------------------------------------------------------

  const gen = { timer: null, controller: null, seq: 0 };

  function onGenModel(run = true) {
    const m = modelNamed($("#gen-model").value);
    const names = m && m.class_names;
    $("#gen-class-row").hidden = !names;
    classOptions($("#gen-class"), names || [], true);
    $("#gen-placeholder").hidden = !!m;
    if (run) runGenerate();
  }

  function syncGenOutputs() {
    $("#gen-seed-value").textContent = $("#gen-seed-number").value;
    $("#gen-n-value").textContent = $("#gen-n").value;
    const on = $("#gen-trunc-on").checked;
    $("#gen-trunc").disabled = !on;
    $("#gen-trunc-value").textContent = on ? Number($("#gen-trunc").value).toFixed(2) : "off";
  }

  function scheduleGenerate(delay = 150) {
    syncGenOutputs();
    clearTimeout(gen.timer);
    gen.timer = setTimeout(runGenerate, delay);
  }

  async function runGenerate() {
    clearTimeout(gen.timer);
    syncGenOutputs();
    const name = $("#gen-model").value;
    if (!name || !has("generate")) return;
    const img = $("#generate-image");
    const status = $("#gen-status");
    const err = $("#gen-error");
    if (gen.controller) gen.controller.abort(); // only the latest request counts
    const controller = new AbortController();
    gen.controller = controller;
    const seq = ++gen.seq;
    const seed = intIn($("#gen-seed-number"), 0, Number.MAX_SAFE_INTEGER, 0);
    const n = intIn($("#gen-n"), 1, 64, 16);
    const label = $("#gen-class-row").hidden || $("#gen-class").value === "" ? null : Number($("#gen-class").value);
    const truncation = $("#gen-trunc-on").checked ? Number($("#gen-trunc").value) : null;
    const body = { n, seed, label, truncation, format: "png" };
    status.textContent = "generating…";
    img.classList.add("stale");
    const started = performance.now();
    try {
      const blob = await api(`/v1/models/${enc(name)}/generate`,
        { method: "POST", json: body, signal: controller.signal, expect: "blob" });
      if (seq !== gen.seq) return; // a newer request was sent meanwhile
      const url = await showBlob(img, blob);
      if (seq !== gen.seq) return;
      clearError(err);
      img.classList.remove("stale");
      img.dataset.seed = String(seed);
      img.dataset.seq = String(seq);
      img.alt = `${n} samples from ${name}, seed ${seed}`;
      const link = $("#gen-download");
      link.href = url;
      link.download = `${name}-seed${seed}.png`;
      link.hidden = false;
      const ms = Math.round(performance.now() - started);
      status.textContent = `${name} · ${n} image${n > 1 ? "s" : ""} · seed ${seed}`
        + `${label !== null ? ` · class ${className(modelNamed(name), label)}` : ""}`
        + `${truncation !== null ? ` · truncation ${truncation}` : ""} · ${ms} ms`;
    } catch (error) {
      if (isAbort(error) || seq !== gen.seq) return;
      img.classList.remove("stale");
      status.textContent = "";
      showError(err, error);
    } finally {
      if (gen.controller === controller) gen.controller = null;
    }
  }

  function onSeedRange() {
    $("#gen-seed-number").value = $("#gen-seed").value;
    scheduleGenerate();
  }

  function onSeedNumber() {
    const v = intIn($("#gen-seed-number"), 0, Number.MAX_SAFE_INTEGER, 0);
    $("#gen-seed").value = String(Math.min(v, Number($("#gen-seed").max)));
    scheduleGenerate();
  }

  function randomSeed() {
    const v = Math.floor(Math.random() * 10000);
    $("#gen-seed-number").value = String(v);
    $("#gen-seed").value = String(v);
    runGenerate();
  }

  // -- interpolation player ---------------------------------------------------------------------------

  const interp = { controller: null, seq: 0 };

  function onInterpModel(run = true) {
    const m = modelNamed($("#interp-model").value);
    const names = m && m.class_names;
    $("#interp-mode-row").hidden = !names;
    if (!names) $("#interp-mode").value = "seeds";
    classOptions($("#interp-class-a"), names || [], false);
    classOptions($("#interp-class-b"), names || [], false);
    if (names && names.length > 1) $("#interp-class-b").value = String(Math.min(7, names.length - 1));
    onInterpMode(run);
  }

  function onInterpMode(run = true) {
    const classes = $("#interp-mode").value === "classes" && !$("#interp-mode-row").hidden;
    $("#interp-seeds").hidden = classes;
    $("#interp-classes").hidden = !classes;
    if (run) runInterp();
  }

  async function runInterp(event) {
    if (event) event.preventDefault();
    $("#interp-steps-value").textContent = $("#interp-steps").value;
    const name = $("#interp-model").value;
    if (!name || !has("generate")) return;
    const err = $("#interp-error");
    const status = $("#interp-status");
    if (interp.controller) interp.controller.abort();
    const controller = new AbortController();
    interp.controller = controller;
    const seq = ++interp.seq;
    const body = { steps: intIn($("#interp-steps"), 2, 64, 12), method: $("#interp-method").value };
    if (!$("#interp-classes").hidden) {
      body.classes = [Number($("#interp-class-a").value), Number($("#interp-class-b").value)];
      body.seed = intIn($("#interp-seed"), 0, Number.MAX_SAFE_INTEGER, 0);
    } else {
      body.seeds = [intIn($("#interp-seed-a"), 0, Number.MAX_SAFE_INTEGER, 1),
        intIn($("#interp-seed-b"), 0, Number.MAX_SAFE_INTEGER, 2)];
    }
    status.textContent = "rendering…";
    const path = `/v1/models/${enc(name)}/interpolate`;
    try {
      const [gif, png] = await Promise.all(["gif", "png"].map((format) => api(path,
        { method: "POST", json: { ...body, format }, signal: controller.signal, expect: "blob" })));
      if (seq !== interp.seq) return;
      await Promise.all([showBlob($("#interp-gif"), gif), showBlob($("#interp-strip"), png)]);
      clearError(err);
      status.textContent = `${name} · ${body.steps} frames · ${body.method} · `
        + (body.classes ? `class ${className(modelNamed(name), body.classes[0])} → `
          + `${className(modelNamed(name), body.classes[1])}, seed ${body.seed}`
          : `seed ${body.seeds[0]} → ${body.seeds[1]}`);
    } catch (error) {
      if (isAbort(error) || seq !== interp.seq) return;
      status.textContent = "";
      showError(err, error);
    }
  }

  // -- stylise, translate, reconstruct ----------------------------------------------------------------

  async function submitBusy(form, work) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Working…";
    try {
      await work();
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  function fileOf(input) {
    return input.files && input.files[0];
  }

  // One upload, a few extra form fields, one image back: fast style, CycleGAN, flow edit and inpaint.
  async function uploadForImage(event, prefix, operation, fields) {
    event.preventDefault();
    const err = $(`#${prefix}-error`);
    clearError(err);
    const file = fileOf($(`#${prefix}-file`));
    if (!file) return showError(err, "Choose an image first.");
    const form = new FormData();
    form.append("image", file);
    for (const field of fields) form.append(field, $(`#${prefix}-${field}`).value);
    await submitBusy(event.currentTarget, async () => {
      try {
        const blob = await api(`/v1/models/${enc($(`#${prefix}-model`).value)}/${operation}`,
          { method: "POST", form, expect: "blob" });
        await showBlob($(`#${prefix}-result`), blob);
      } catch (error) {
        showError(err, error);
      }
    });
  }

  const runStyle = (event) => uploadForImage(event, "style", "stylize", ["strength"]);
  const runTranslate = (event) => uploadForImage(event, "translate", "translate", ["direction"]);
  const runEdit = (event) => uploadForImage(event, "edit", "edit", ["strength", "steps", "seed"]);
  function runInpaint(event) {
    const box = $("#inpaint-box").value.split(",").map((v) => Number(v.trim()));
    const ok = box.length === 4 && box.every((v) => Number.isFinite(v) && v >= 0 && v <= 1) &&
      box[0] < box[2] && box[1] < box[3];
    if (!ok) {  // the server would refuse it too; say so without a round trip
      event.preventDefault();
      return showError($("#inpaint-error"), "The hole is x0,y0,x1,y1: four fractions of the side in [0, 1], " +
        "with x0 < x1 and y0 < y1 (e.g. 0.25,0.25,0.75,0.75).");
    }
    return uploadForImage(event, "inpaint", "inpaint", ["box", "n", "seed"]);
  }

  async function runRecon(event) {
    event.preventDefault();
    const err = $("#recon-error");
    clearError(err);
    const file = fileOf($("#recon-file"));
    if (!file) return showError(err, "Choose an image first.");
    const form = new FormData();
    form.append("image", file);
    await submitBusy(event.currentTarget, async () => {
      try {
        const out = await api(`/v1/models/${enc($("#recon-model").value)}/reconstruct`, { method: "POST", form });
        $("#recon-image").src = `data:image/png;base64,${out.image_png}`;
        $("#recon-out").hidden = false;
        const latent = out.latent || [];
        $("#recon-latent").replaceChildren(
          el("p", { class: "muted small", text: `latent (posterior mean, ${latent.length} numbers)` }),
          el("ol", { class: "latent-list", start: 0 },
            latent.map((v, i) => el("li", { title: `z${i}`, class: v < 0 ? "neg" : "pos", text: num(v, 3) }))));
      } catch (error) {
        showError(err, error);
      }
    });
  }

  // -- Gatys (a job, followed with server-sent events) ------------------------------------------------

  const gatysJob = { id: null, source: null, previews: 0, lastPreview: null };

  async function runGatys(event) {
    event.preventDefault();
    const err = $("#gatys-error");
    clearError(err);
    const content = fileOf($("#gatys-content"));
    const style = fileOf($("#gatys-style"));
    if (!content || !style) return showError(err, "Choose a content image and a style image.");
    const form = new FormData();
    form.append("content", content);
    form.append("style", style);
    form.append("steps", String(intIn($("#gatys-steps"), 1, 5000, 100)));
    form.append("size", String(intIn($("#gatys-size"), 32, 2048, 256)));
    const run = $("#gatys-run");
    run.disabled = true;
    try {
      const job = await api("/v1/jobs/gatys", { method: "POST", form });
      followGatys(job.id);
    } catch (error) {
      run.disabled = false;
      showError(err, error);
    }
  }

  function followGatys(id) {
    if (gatysJob.source) gatysJob.source.close();
    Object.assign(gatysJob, { id, previews: 0, lastPreview: null });
    const bar = $("#gatys-progress");
    bar.hidden = false;
    bar.value = 0;
    bar.removeAttribute("value"); // indeterminate until the first event
    $("#gatys-message").textContent = "queued…";
    $("#gatys-result").hidden = true;
    $("#gatys-preview").hidden = true;
    $("#gatys-cancel").disabled = false;
    const source = new EventSource(`/v1/jobs/${enc(id)}/events`);
    gatysJob.source = source;
    source.addEventListener("progress", (e) => onGatysEvent(id, JSON.parse(e.data)));
    source.addEventListener("end", (e) => {
      source.close();
      onGatysEvent(id, JSON.parse(e.data));
      finishGatys(id, JSON.parse(e.data));
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && gatysJob.id === id) {
        // refused (e.g. the session ended): ask for the job's state once, to say why
        api(`/v1/jobs/${enc(id)}`).then((job) => {
          if (["succeeded", "failed", "cancelled"].includes(job.status)) finishGatys(id, job);
          else $("#gatys-message").textContent = "lost the progress stream; see the Jobs tab";
        }).catch((error) => showError($("#gatys-error"), error));
      }
    });
  }

  function onGatysEvent(id, data) {
    if (gatysJob.id !== id) return;
    const bar = $("#gatys-progress");
    if (typeof data.progress === "number") bar.value = data.progress;
    $("#gatys-message").textContent = [data.status, data.message].filter(Boolean).join(": ");
    // `preview` is a checksum of the newest preview image: a new value means a new image
    if (data.preview != null && data.preview !== gatysJob.lastPreview) {
      gatysJob.lastPreview = data.preview;
      gatysJob.previews += 1;
      const img = $("#gatys-preview");
      img.src = `/v1/jobs/${enc(id)}/preview.png?t=${gatysJob.previews}`;
      img.hidden = false;
    }
  }

  async function finishGatys(id, data) {
    if (gatysJob.id !== id) return;
    $("#gatys-cancel").disabled = true;
    $("#gatys-run").disabled = false;
    if (data.status === "succeeded") {
      $("#gatys-progress").value = 1;
      try {
        const job = await api(`/v1/jobs/${enc(id)}`);
        const file = (job.files || []).find((f) => f.media_type === "image/png") || (job.files || [])[0];
        if (file) {
          const img = $("#gatys-result");
          img.src = file.url;
          img.hidden = false;
          $("#gatys-preview").hidden = true;
        }
        $("#gatys-message").textContent = "done";
      } catch (error) {
        showError($("#gatys-error"), error);
      }
    } else if (data.status === "failed") {
      showError($("#gatys-error"), `The job failed: ${data.error || data.message || "no reason given"}`);
    } else {
      $("#gatys-message").textContent = `${data.status}`;
    }
  }

  async function cancelGatys() {
    if (!gatysJob.id) return;
    $("#gatys-cancel").disabled = true;
    try {
      const out = await api(`/v1/jobs/${enc(gatysJob.id)}/cancel`, { method: "POST" });
      $("#gatys-message").textContent = `cancel requested (${out.status})`;
    } catch (error) {
      showError($("#gatys-error"), error);
    }
  }

  // -- rating ------------------------------------------------------------------------------------------

  const rate = { mode: "pair", task: null, busy: false, votes: 0, seq: 0 };
  const KEYS = {
    pair: { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "both_good", ArrowDown: "both_bad" },
    real: { ArrowLeft: "real", ArrowRight: "generated" },
  };

  const rateArea = () => (rate.mode === "pair" ? $("#pair-area") : $("#real-area"));

  function setRateState(value) {
    rateArea().dataset.state = value;
    const ready = value === "ready";
    for (const b of rateArea().querySelectorAll("button[data-answer]")) b.disabled = !ready;
  }

  async function fetchImage(img, url) {
    const blob = await api(url, { expect: "blob" });
    await showBlob(img, blob);
  }

  async function nextTask() {
    const seq = ++rate.seq;
    const err = $("#rate-error");
    rate.busy = true;
    rate.task = null;
    setRateState("loading");
    try {
      const task = await api(rate.mode === "pair" ? "/v1/ratings/pairs" : "/v1/ratings/real",
        { method: "POST", json: {} });
      if (seq !== rate.seq) return;
      if (task.kind === "pair") {
        await Promise.all([fetchImage($("#pair-left"), task.left), fetchImage($("#pair-right"), task.right)]);
      } else {
        await fetchImage($("#real-image"), task.image);
      }
      if (seq !== rate.seq) return;
      clearError(err);
      rate.task = task;
      rateArea().dataset.task = task.id;
      setRateState("ready");
    } catch (error) {
      if (seq !== rate.seq) return;
      if (error.code === "not_enough_models") {
        showError(err, rate.mode === "pair"
          ? `Pairwise rating needs at least two generative models you may use. ${describe(error)}`
          : `“Real or generated” needs a generative model you may use. ${describe(error)}`);
        setRateState("unavailable");
      } else {
        showError(err, error);
        setRateState("error");
      }
    } finally {
      if (seq === rate.seq) rate.busy = false;
    }
  }

  async function vote(answer) {
    const task = rate.task;
    if (rate.busy || !task || !task.answers.includes(answer)) return;
    rate.busy = true;
    setRateState("voting");
    const button = rateArea().querySelector(`button[data-answer="${answer}"]`);
    if (button) button.classList.add("chosen");
    try {
      await api(`/v1/ratings/tasks/${enc(task.id)}/vote`, { method: "POST", json: { answer } });
      rate.votes += 1;
      $("#vote-count").textContent = String(rate.votes);
      refreshBoard();
    } catch (error) {
      if (button) button.classList.remove("chosen");
      if (error.code !== "already_rated") {
        showError($("#rate-error"), error);
        rate.busy = false;
        setRateState("ready"); // let the rater try again
        return;
      }
    }
    if (button) button.classList.remove("chosen");
    await nextTask();
  }

  function setRateMode(mode) {
    if (rate.mode === mode && rateArea().dataset.state !== "idle") return;
    rate.mode = mode;
    $("#rate-mode-pair").setAttribute("aria-pressed", String(mode === "pair"));
    $("#rate-mode-real").setAttribute("aria-pressed", String(mode === "real"));
    $("#pair-area").hidden = mode !== "pair";
    $("#real-area").hidden = mode !== "real";
    clearError($("#rate-error"));
    nextTask();
  }

  function onKey(event) {
    if (state.tab !== "rate" || $("#app-view").hidden) return;
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey || event.repeat) return;
    const target = event.target;
    if (target.closest && (target.closest("input, select, textarea, [role=tablist]") || target.isContentEditable)) {
      return;
    }
    const answer = KEYS[rate.mode][event.key];
    if (!answer) return;
    event.preventDefault();
    vote(answer);
  }

  const board = { seq: 0 };

  async function refreshBoard() {
    if (!has("read")) return;
    const seq = ++board.seq;
    const err = $("#board-error");
    try {
      const [lb, rf] = await Promise.all([api("/v1/ratings/leaderboard"), api("/v1/ratings/real-fraction")]);
      if (seq !== board.seq) return;
      clearError(err);
      renderLeaderboard(lb.rows || []);
      renderRealFraction(rf);
    } catch (error) {
      if (seq === board.seq) showError(err, error);
    }
  }

  function renderLeaderboard(rows) {
    const table = $("#leaderboard");
    table.querySelector("tbody").replaceChildren(...rows.map((r) => el("tr", { dataset: { model: r.model } },
      el("td", { text: String(r.rank) }),
      el("td", { text: r.model }),
      el("td", {}, el("strong", { text: num(r.score) }), el("span", { class: "muted", text: ` [${num(r.low)}, ${num(r.high)}]` })),
      el("td", { class: "votes", text: String(r.votes) }),
      el("td", { text: `${r.wins}/${r.losses}/${r.ties}` }))));
    table.dataset.rows = String(rows.length);
    table.dataset.votes = String(rows.reduce((a, r) => a + r.votes, 0));
    table.hidden = !rows.length;
    $("#leaderboard-empty").hidden = rows.length > 0;
  }

  function renderRealFraction(data) {
    const sources = Object.entries((data && data.sources) || {});
    const hype = (data && data.hype) || {};
    const rows = sources.map(([name, s]) => el("tr", {},
      el("td", { text: name }),
      el("td", {}, el("strong", { text: `${Math.round(100 * s.fraction)}%` }),
        el("span", { class: "muted", text: ` [${Math.round(100 * s.low)}–${Math.round(100 * s.high)}%]` }),
        hype[name] ? el("span", { class: "muted", text: ` · HYPE∞ ${num(hype[name].error_rate)}` }) : null),
      el("td", { text: String(s.n) })));
    $("#real-fraction").querySelector("tbody").replaceChildren(...rows);
    $("#real-fraction").hidden = !rows.length;
    $("#real-fraction-empty").hidden = rows.length > 0;
  }

  // -- jobs --------------------------------------------------------------------------------------------

  const jobsView = { timer: null, seq: 0 };

  function stopJobsPolling() {
    clearTimeout(jobsView.timer);
    jobsView.timer = null;
  }

  async function refreshJobs() {
    stopJobsPolling();
    const seq = ++jobsView.seq;
    const err = $("#jobs-error");
    try {
      const jobs = (await api("/v1/jobs")).slice(0, 50);
      const details = await Promise.all(jobs.map((j) => (j.status === "succeeded"
        ? api(`/v1/jobs/${enc(j.id)}`).catch(() => j) : Promise.resolve(j))));
      if (seq !== jobsView.seq) return;
      clearError(err);
      renderJobs(details);
      if (state.tab === "jobs" && details.some((j) => j.status === "queued" || j.status === "running")) {
        jobsView.timer = setTimeout(refreshJobs, 2000);
      }
    } catch (error) {
      if (seq === jobsView.seq) showError(err, error);
    }
  }

  function renderJobs(jobs) {
    const rows = jobs.map((j) => {
      const active = j.status === "queued" || j.status === "running";
      const files = (j.files || []).map((f) => el("a", { href: f.url, download: f.name, text: f.name,
        title: `${f.media_type}, ${bytes(f.bytes)}` }));
      const progress = el("progress", { max: 1, value: j.progress || 0 });
      return el("tr", { dataset: { job: j.id, status: j.status } },
        el("td", {}, el("code", { text: j.id.slice(0, 10), title: j.id })),
        el("td", { text: j.kind }),
        el("td", { text: j.model || "–" }),
        el("td", {}, el("span", { class: `status status-${j.status}`, text: j.status }),
          j.error ? el("div", { class: "error small", text: j.error }) : null),
        el("td", {}, progress, el("span", { class: "muted small", text: ` ${Math.round(100 * (j.progress || 0))}%` }),
          j.message ? el("div", { class: "muted small", text: j.message }) : null),
        el("td", { class: "small", text: when(j.created_at) }),
        el("td", { class: "files" }, files.length ? files : (j.status === "succeeded" ? "–" : "")),
        el("td", {}, active ? el("button", { type: "button", class: "secondary small-btn", text: "Cancel",
          dataset: { cancel: j.id } }) : null));
    });
    $("#jobs").querySelector("tbody").replaceChildren(...rows);
    $("#jobs").hidden = !rows.length;
    $("#jobs-empty").hidden = rows.length > 0;
  }

  async function onJobsClick(event) {
    const button = event.target.closest("button[data-cancel]");
    if (!button) return;
    button.disabled = true;
    try {
      await api(`/v1/jobs/${enc(button.dataset.cancel)}/cancel`, { method: "POST" });
    } catch (error) {
      showError($("#jobs-error"), error);
    }
    refreshJobs();
  }

  // -- wiring ------------------------------------------------------------------------------------------

  function bindUI() {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    const tablist = $("#tabs");
    tablist.addEventListener("click", (e) => {
      const tab = e.target.closest("[role=tab]");
      if (tab) showTab(tab.dataset.tab, { focusPanel: true });
    });
    tablist.addEventListener("keydown", onTabKey);

    $("#gallery-refresh").addEventListener("click", loadModels);
    $("#gallery").addEventListener("click", onGalleryClick);

    $("#gen-form").addEventListener("submit", (e) => { e.preventDefault(); runGenerate(); });
    $("#gen-model").addEventListener("change", () => onGenModel(true));
    $("#gen-seed").addEventListener("input", onSeedRange);
    $("#gen-seed-number").addEventListener("input", onSeedNumber);
    $("#gen-random").addEventListener("click", randomSeed);
    $("#gen-class").addEventListener("change", () => scheduleGenerate(0));
    $("#gen-trunc-on").addEventListener("change", () => scheduleGenerate(0));
    $("#gen-trunc").addEventListener("input", () => scheduleGenerate());
    $("#gen-n").addEventListener("input", () => scheduleGenerate());
    syncGenOutputs();

    $("#interp-form").addEventListener("submit", runInterp);
    $("#interp-model").addEventListener("change", () => onInterpModel(true));
    $("#interp-mode").addEventListener("change", () => onInterpMode(true));
    $("#interp-steps").addEventListener("input", () => {
      $("#interp-steps-value").textContent = $("#interp-steps").value;
    });
    $("#interp-steps-value").textContent = $("#interp-steps").value;
    // a player: a changed setting plays again (sliders when released)
    for (const id of ["#interp-steps", "#interp-method", "#interp-seed-a", "#interp-seed-b", "#interp-class-a",
      "#interp-class-b", "#interp-seed"]) {
      $(id).addEventListener("change", () => runInterp());
    }

    $("#style-form").addEventListener("submit", runStyle);
    for (const prefix of ["style", "edit"]) {
      const show = () => { $(`#${prefix}-strength-value`).textContent = Number($(`#${prefix}-strength`).value).toFixed(2); };
      $(`#${prefix}-strength`).addEventListener("input", show);
      show();
    }
    $("#translate-form").addEventListener("submit", runTranslate);
    $("#edit-form").addEventListener("submit", runEdit);
    $("#inpaint-form").addEventListener("submit", runInpaint);
    $("#recon-form").addEventListener("submit", runRecon);
    $("#gatys-form").addEventListener("submit", runGatys);
    $("#gatys-cancel").addEventListener("click", cancelGatys);

    $("#rate-mode-pair").addEventListener("click", () => setRateMode("pair"));
    $("#rate-mode-real").addEventListener("click", () => setRateMode("real"));
    $("#rate-skip").addEventListener("click", () => nextTask());
    for (const b of $$("button[data-answer]")) b.addEventListener("click", () => vote(b.dataset.answer));
    $("#leaderboard-refresh").addEventListener("click", refreshBoard);
    document.addEventListener("keydown", onKey);

    $("#jobs-refresh").addEventListener("click", refreshJobs);
    $("#jobs").addEventListener("click", onJobsClick);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
