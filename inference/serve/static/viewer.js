/* ductai viewer: plain JS, no build step, no third-party code.
 *
 * Talks to the HTTP API of docs/serve-design.md with `Authorization: Bearer <token>`. Images
 * come through fetch() and blob URLs / ImageBitmaps because <img src> cannot send headers.
 * Per view: the source image on a canvas (window/level applied at display resolution, so a
 * 4k x 3k radiograph costs only the visible pixels per redraw), the heatmap coloured once at
 * <= OVERLAY_MAX px, the duct outline traced per redraw at screen resolution (a thin line at
 * any zoom) and the lesion boxes as vectors.
 *
 * Hooks for tests and scripts: body[data-state] (idle, loading, waiting, ready, failed,
 * error), .view-panel[data-sop][data-ready], canvas[data-render-count] (+1 per redraw),
 * table rows [data-lesion-id][data-score], img.surgical-map[data-loaded].
 */
"use strict";

(() => {
  const API = "/v1";
  const TOKEN_KEY = "ductai.token";
  const OVERLAY_MAX = 2048; // overlay long side: enough for a 1:1 look at a mammogram's ROI
  const POLL_MS = [500, 1000, 1000, 2000, 3000]; // then 3000
  const FLAG_TEXT = {
    no_opacified_duct: "No opacified duct found: failed or empty fill?",
    contrast_stops_early: "Contrast stops early: incomplete fill, distal lesions may be missed.",
    extravasation: "Extravasation: contrast outside the ducts.",
    no_segmentation: "No duct segmentation: outline and duct path lengths unavailable.",
    no_segmentation_model: "No segmentation model: outline and duct path lengths unavailable.",
    no_detection_model: "No detection model: lesions were not searched for.",
    single_view: "Only one view of this breast: clock position and depth are less certain.",
  };

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  const state = {
    token: "",
    analysisId: "",
    loadSeq: 0, // bumps on every (re)load: late answers for an old analysis are dropped
    pollTimer: null,
    views: [], // ViewState objects, see buildView()
    blobUrls: [],
    wl: { width: 255, level: 128, invert: false },
    layers: { outline: true, heatmap: true, lesions: true, nipple: true },
    opacity: 0.45,
  };

  // ---- status and errors ------------------------------------------------------------------
  function setStatus(text, kind) {
    const el = $("#status");
    el.textContent = text;
    el.dataset.state = kind;
  }

  function setPageState(kind) {
    document.body.dataset.state = kind;
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  // ---- HTTP -------------------------------------------------------------------------------
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
    const response = await fetch(`${API}${path}`, { ...options, headers });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_) {
        /* not JSON: keep the status text */
      }
      if (response.status === 401) detail = `token refused (${detail})`;
      if (response.status === 503) {
        const retry = response.headers.get("Retry-After");
        if (retry) detail += `; retry after ${retry} s`;
      }
      throw new ApiError(response.status, detail);
    }
    return response;
  }

  const apiJson = async (path, options) => (await api(path, options)).json();
  const apiBlob = async (path) => (await api(path)).blob();
  const enc = encodeURIComponent;
  const viewPath = (id, sop, name) => `/analyses/${enc(id)}/views/${enc(sop)}/${name}`;
  const studyPath = (id, folder, name) => `/analyses/${enc(id)}/studies/${enc(folder)}/${name}`;

  function objectUrl(blob) {
    const url = URL.createObjectURL(blob);
    state.blobUrls.push(url);
    return url;
  }

  // ---- token --------------------------------------------------------------------------------
  function initToken() {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      // Keep the secret out of the address bar, history and screenshots.
      params.delete("token");
      const query = params.toString();
      history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY) || "";
    $("#token-input").value = state.token;
  }

  // ---- analyses list, upload, polling --------------------------------------------------------
  function asList(body, key) {
    if (Array.isArray(body)) return body;
    if (body && Array.isArray(body[key])) return body[key];
    if (body && Array.isArray(body.items)) return body.items;
    return [];
  }

  async function refreshList() {
    if (!state.token) return;
    try {
      const items = asList(await apiJson("/analyses"), "analyses");
      const select = $("#analysis-select");
      select.replaceChildren(new Option("(pick an analysis)", ""));
      for (const a of items) {
        const when = a.created ? String(a.created).replace("T", " ").slice(0, 19) : "";
        const n = a.files != null ? ` · ${a.files} file${a.files === 1 ? "" : "s"}` : "";
        const option = new Option(`${a.id} · ${a.state}${n}${when ? ` · ${when}` : ""}`, a.id);
        option.dataset.state = a.state;
        select.add(option);
      }
      if (state.analysisId) select.value = state.analysisId;
      if (!state.analysisId && document.body.dataset.state === "idle") {
        setStatus(items.length ? "Pick an analysis or upload a study." : "No analyses yet: upload a study.", "idle");
      }
    } catch (err) {
      setStatus(`Cannot list analyses: ${err.detail || err.message}`, "error");
    }
  }

  async function upload(event) {
    event.preventDefault();
    const files = $("#upload-files").files;
    if (!files.length) {
      setStatus("Choose one or more DICOM files first.", "error");
      return;
    }
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const button = $("#upload-submit");
    button.disabled = true;
    setStatus(`Uploading ${files.length} file${files.length === 1 ? "" : "s"}…`, "uploading");
    try {
      const body = await apiJson("/analyses", { method: "POST", body: form });
      $("#upload-files").value = "";
      await loadAnalysis(body.id);
      refreshList();
    } catch (err) {
      setStatus(`Upload refused: ${err.detail || err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  async function loadAnalysis(id) {
    const seq = ++state.loadSeq;
    clearTimeout(state.pollTimer);
    state.analysisId = id;
    const params = new URLSearchParams(location.search);
    if (id) params.set("analysis", id);
    else params.delete("analysis");
    history.replaceState(null, "", `${location.pathname}?${params}`); // drops any #<id>
    clearAnalysis();
    if (!id) {
      setPageState("idle");
      return;
    }
    $("#analysis-select").value = id;
    setPageState("loading");
    setStatus(`Loading analysis ${id}…`, "loading");
    await poll(id, seq, 0);
  }

  async function poll(id, seq, attempt) {
    let status;
    try {
      status = await apiJson(`/analyses/${enc(id)}`);
    } catch (err) {
      if (seq !== state.loadSeq) return;
      setPageState("error");
      setStatus(`Analysis ${id}: ${err.detail || err.message}`, "error");
      return;
    }
    if (seq !== state.loadSeq) return;
    showInfo(status);
    if (status.state === "queued" || status.state === "running") {
      setPageState("waiting");
      setStatus(`Analysis ${id} ${status.state}…`, status.state);
      const delay = POLL_MS[Math.min(attempt, POLL_MS.length - 1)];
      state.pollTimer = setTimeout(() => poll(id, seq, attempt + 1), delay);
      return;
    }
    if (status.state === "failed") {
      setPageState("failed");
      setStatus(`Analysis ${id} failed: ${status.error || "no reason given"}`, "failed");
      return;
    }
    setStatus(`Analysis ${id} done; loading results…`, "loading");
    try {
      await renderAnalysis(status, seq);
    } catch (err) {
      if (seq !== state.loadSeq) return;
      setPageState("error");
      setStatus(`Analysis ${id}: ${err.detail || err.message}`, "error");
      return;
    }
    if (seq !== state.loadSeq) return;
    setPageState("ready");
    const nViews = state.views.length;
    setStatus(`Analysis ${id} done: ${nViews} view${nViews === 1 ? "" : "s"}.`, "done");
    refreshList();
  }

  function showInfo(status) {
    const info = $("#analysis-info");
    const parts = [`analysis ${status.id}`, status.state];
    if (status.source) parts.push(`from ${status.source}`);
    if (status.files != null) parts.push(`${status.files} file(s)`);
    if (status.created) parts.push(`created ${status.created}`);
    if (status.finished) parts.push(`finished ${status.finished}`);
    const model = status.model || (status.results && status.results.model);
    if (model) parts.push(`model ${model}`);
    info.textContent = parts.join(" · ");
    // Files the run could not analyse (not DICOM images, unreadable geometry...).
    const errors = status.file_errors || [];
    if (errors.length) {
      const box = document.createElement("div");
      box.className = "flags-warning file-errors";
      box.setAttribute("role", "alert");
      box.textContent = `${errors.length} file(s) not analysed: ${errors.map((e) => e.error || e.stage).join("; ")}`;
      info.append(box);
    }
    info.hidden = false;
  }

  function clearAnalysis() {
    for (const url of state.blobUrls) URL.revokeObjectURL(url);
    state.blobUrls = [];
    for (const v of state.views) {
      if (v.observer) v.observer.disconnect();
      for (const bmp of [v.image, v.mask]) if (bmp && bmp.close) bmp.close();
    }
    state.views = [];
    $("#breasts").replaceChildren();
    $("#analysis-info").hidden = true;
  }

  // Tolerant of both the status' own lists and run.json's (status.results).
  function viewsOf(status) {
    const list = status.views || (status.results && status.results.views) || [];
    return list
      .map((v) => (typeof v === "string" ? { sop: v } : { ...v, sop: v.sop_instance_uid || v.sop_uid || v.folder }))
      .filter((v) => v.sop);
  }

  function studiesOf(status) {
    const list = status.studies || (status.results && status.results.breasts) || [];
    return list
      .map((s) => (typeof s === "string" ? { folder: s } : { ...s, folder: s.folder || s.study_folder || s.name }))
      .filter((s) => s.folder);
  }

  // One section per breast (its views side by side, then its surgical map and lesions), as
  // the surgeon reads them; views outside any breast go to a last section.
  async function renderAnalysis(status, seq) {
    const views = viewsOf(status);
    const studies = studiesOf(status);
    const home = new Map();
    const jobs = [];
    for (const study of studies) {
      const section = breastSection(study.folder, breastTitle(study.laterality, study.study_instance_uid));
      for (const sop of study.views || []) home.set(typeof sop === "string" ? sop : sop.sop_instance_uid, section);
      jobs.push(buildStudy(status.id, study, section, seq));
    }
    let other = null;
    for (const view of views) {
      let section = home.get(view.sop);
      if (!section) section = other = other || breastSection("", "Other views");
      jobs.push(buildView(status.id, view, $(".views", section), seq));
    }
    if (!views.length) $("#breasts").append(emptyNote("This analysis has no views with results."));
    const results = await Promise.allSettled(jobs);
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length) throw failed[0].reason;
  }

  const breastTitle = (laterality, uid) =>
    `${{ L: "Left breast", R: "Right breast" }[laterality] || "Breast"}${uid ? ` · study ${uid}` : ""}`;

  function breastSection(folder, title) {
    const section = $("#breast-template").content.firstElementChild.cloneNode(true);
    section.dataset.study = folder;
    $(".breast-title", section).textContent = title;
    $("#breasts").append(section);
    return section;
  }

  function emptyNote(text) {
    const p = document.createElement("p");
    p.className = "empty-note";
    p.textContent = text;
    return p;
  }

  // ---- one view -----------------------------------------------------------------------------
  async function buildView(id, entry, container, seq) {
    const panel = $("#view-template").content.firstElementChild.cloneNode(true);
    panel.dataset.sop = entry.sop;
    const canvas = $("canvas", panel);
    canvas.id = `view-canvas-${entry.sop}`;
    canvas.dataset.sop = entry.sop;
    const table = $(".lesion-table", panel);
    table.id = `lesion-table-${entry.sop}`;
    table.dataset.sop = entry.sop;
    $(".view-title", panel).textContent = [entry.laterality, entry.view].filter(Boolean).join(" ") || "view";
    $(".view-uid", panel).textContent = entry.sop;
    container.append(panel);

    const [report, image, mask, heat] = await Promise.all([
      apiJson(viewPath(id, entry.sop, "report.json")),
      loadBitmap(viewPath(id, entry.sop, "image.png")),
      loadBitmap(viewPath(id, entry.sop, "duct_mask.png"), true),
      loadBitmap(viewPath(id, entry.sop, "heatmap.png"), true),
    ]);
    if (seq !== state.loadSeq) return;

    const img = report.image || {};
    $(".view-title", panel).textContent = [img.laterality, img.view].filter(Boolean).join(" ") || "view";
    panel.dataset.view = img.view || "";
    panel.dataset.laterality = img.laterality || "";
    showFlags(panel, report.flags || [], report.messages || []);
    fillLesionTable(table, report.lesions || []);

    const width = (image.ok && image.bitmap.width) || img.columns || mask.width || heat.width || 1;
    const height = (image.ok && image.bitmap.height) || img.rows || mask.height || heat.height || 1;
    const view = {
      sop: entry.sop,
      panel,
      canvas,
      table,
      report,
      width,
      height,
      image: image.ok ? image.bitmap : null,
      mask: mask.ok ? mask.bitmap : null,
      scratch: null, // canvas the outline is traced on
      heatmap: heat.ok ? makeHeatmap(heat.bitmap) : null,
      scale: 1,
      tx: 0,
      ty: 0,
      fitted: false,
      selected: null,
      renders: 0,
      frame: 0,
    };
    state.views.push(view);
    attachInteraction(view);
    view.observer = new ResizeObserver(() => {
      if (!view.fitted) fit(view);
      scheduleRender(view);
    });
    view.observer.observe($(".canvas-wrap", panel));
    fit(view);
    render(view);
    const missing = [image, mask, heat].filter((b) => !b.ok).map((b) => b.name);
    panel.dataset.ready = missing.includes("image.png") ? "error" : "true";
    if (missing.length) {
      $(".canvas-loading", panel).textContent = `missing: ${missing.join(", ")}`;
      showFlags(panel, report.flags || [], [...(report.messages || []), `Could not load ${missing.join(", ")}.`]);
    }
  }

  // A missing layer must not hide the others: report it instead of failing the view.
  async function loadBitmap(path, overlay = false) {
    const name = path.split("/").pop();
    try {
      const blob = await apiBlob(path);
      let bitmap = await createImageBitmap(blob);
      const long = Math.max(bitmap.width, bitmap.height);
      if (overlay && long > OVERLAY_MAX) {
        const f = OVERLAY_MAX / long;
        const small = await createImageBitmap(bitmap, {
          resizeWidth: Math.max(1, Math.round(bitmap.width * f)),
          resizeHeight: Math.max(1, Math.round(bitmap.height * f)),
          resizeQuality: "medium",
        });
        bitmap.close();
        bitmap = small;
      }
      return { ok: true, name, bitmap, width: bitmap.width, height: bitmap.height };
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
      return { ok: false, name, error: err };
    }
  }

  function pixelsOf(bitmap) {
    const c = document.createElement("canvas");
    c.width = bitmap.width;
    c.height = bitmap.height;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    return { canvas: c, ctx, data: ctx.getImageData(0, 0, c.width, c.height) };
  }

  // Heatmap grey levels -> turbo colours, alpha rising with the value so that the background
  // (low probability) leaves the radiograph visible.
  const TURBO = buildTurbo();
  function buildTurbo() {
    const lut = new Uint8ClampedArray(256 * 4);
    for (let v = 0; v < 256; v++) {
      const x = v / 255;
      const r = 0.13572138 + x * (4.6153926 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))));
      const g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604))));
      const b = 0.1066733 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))));
      lut[4 * v] = 255 * r;
      lut[4 * v + 1] = 255 * g;
      lut[4 * v + 2] = 255 * b;
      lut[4 * v + 3] = 255 * Math.min(1, Math.max(0, (v - 12) / 140));
    }
    return lut;
  }

  function makeHeatmap(bitmap) {
    const { canvas, ctx, data } = pixelsOf(bitmap);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      const o = 4 * px[i];
      px[i] = TURBO[o];
      px[i + 1] = TURBO[o + 1];
      px[i + 2] = TURBO[o + 2];
      px[i + 3] = TURBO[o + 3];
    }
    ctx.putImageData(data, 0, 0);
    bitmap.close();
    return canvas;
  }

  function showFlags(panel, flags, messages) {
    const box = $(".flags-warning", panel);
    const lines = [...flags.map((f) => FLAG_TEXT[f] || f.replaceAll("_", " ")), ...messages];
    box.replaceChildren();
    box.dataset.flags = flags.join(" ");
    if (!lines.length) {
      box.hidden = true;
      return;
    }
    const title = document.createElement("strong");
    title.textContent = "Warning";
    const list = document.createElement("ul");
    for (const line of lines) {
      const li = document.createElement("li");
      li.textContent = line;
      list.append(li);
    }
    box.append(title, list);
    box.hidden = false;
  }

  const fmt = (value, digits = 1) => (value === null || value === undefined || Number.isNaN(value) ? "–" : typeof value === "number" ? value.toFixed(digits) : String(value));

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  // One lesion's row: id badge, label, score, then `afterScore`, the localization columns
  // shared by the view and breast tables, then `extra`.
  function lesionRow(l, afterScore, extra) {
    const tr = document.createElement("tr");
    tr.className = "lesion-row";
    tr.dataset.lesionId = String(l.id);
    tr.dataset.score = String(l.score);
    const idCell = cell("", "col-id");
    const badge = document.createElement("span");
    badge.className = "lesion-id";
    badge.textContent = String(l.id);
    idCell.append(badge);
    tr.append(
      idCell,
      cell(l.label, "col-label"),
      cell(fmt(l.score, 3), "col-score"),
      ...afterScore,
      cell(fmt(l.distance_to_nipple_mm), "col-distance"),
      cell(fmt(l.duct_path_length_mm), "col-path"),
      cell(fmt(l.branch_generation, 0), "col-generation"),
      cell(fmt(l.clock), "col-clock"),
      cell(fmt(l.quadrant), "col-quadrant"),
      cell(fmt(l.depth), "col-depth"),
      ...extra,
    );
    return tr;
  }

  // Empties a lesion table; returns its body, or null when there is nothing to list.
  function resetLesionTable(table, count) {
    const body = $("tbody", table);
    body.replaceChildren();
    table.dataset.count = String(count);
    if (count) return body;
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell("no lesions found");
    td.colSpan = 10;
    tr.append(td);
    body.append(tr);
    return null;
  }

  function fillLesionTable(table, lesions) {
    const body = resetLesionTable(table, lesions.length);
    if (!body) return;
    lesions.forEach((l, index) => {
      const tr = lesionRow(l, [cell(fmt(l.diameter_mm), "col-diameter")], []);
      tr.dataset.index = String(index);
      body.append(tr);
    });
    body.addEventListener("mouseover", (e) => selectFromRow(table, e, false));
    body.addEventListener("mouseleave", () => selectLesion(table.dataset.sop, null, false));
    body.addEventListener("click", (e) => selectFromRow(table, e, true));
  }

  function selectFromRow(table, event, zoom) {
    const tr = event.target.closest("tr.lesion-row");
    if (!tr) return;
    selectLesion(table.dataset.sop, Number(tr.dataset.index), zoom);
  }

  function selectLesion(sop, index, zoom) {
    const view = state.views.find((v) => v.sop === sop);
    if (!view) return;
    view.selected = index;
    $$("tr.lesion-row", view.table).forEach((tr) => tr.classList.toggle("selected", Number(tr.dataset.index) === index));
    const lesion = index === null ? null : (view.report.lesions || [])[index];
    if (zoom && lesion && lesion.bbox_px) zoomTo(view, lesion.bbox_px);
    scheduleRender(view);
  }

  // ---- one breast -------------------------------------------------------------------------
  async function buildStudy(id, entry, section, seq) {
    const panel = $("#study-template").content.firstElementChild.cloneNode(true);
    panel.dataset.study = entry.folder;
    $(".study-title", panel).textContent = "Surgical map and lesions";
    $(".view-uid", panel).textContent = "";
    const img = $("img.surgical-map", panel);
    img.dataset.study = entry.folder;
    img.dataset.loaded = "false";
    const table = $(".study-lesion-table", panel);
    table.dataset.study = entry.folder;
    section.append(panel);

    const [report, map] = await Promise.all([
      apiJson(studyPath(id, entry.folder, "study_report.json")),
      apiBlob(studyPath(id, entry.folder, "surgical_map.png")).catch((err) => err),
    ]);
    if (seq !== state.loadSeq) return;
    $(".breast-title", section).textContent = breastTitle(report.laterality || entry.laterality, report.study_instance_uid);
    showFlags(panel, report.flags || [], report.messages || []);
    fillStudyTable(table, report);
    const n = (report.lesions || []).length;
    $(".view-uid", panel).textContent = `${n} lesion${n === 1 ? "" : "s"}`;
    if (map instanceof Blob) {
      await new Promise((resolve) => {
        img.onload = () => {
          img.dataset.loaded = "true";
          resolve();
        };
        img.onerror = () => {
          img.dataset.loaded = "error";
          resolve();
        };
        img.src = objectUrl(map);
      });
    } else {
      img.dataset.loaded = "error";
      img.alt = `surgical map unavailable: ${map.detail || map.message}`;
    }
  }

  function fillStudyTable(table, report) {
    const lesions = report.lesions || [];
    const viewName = new Map((report.views || []).map((v) => [v.sop_instance_uid, v.view]));
    const body = resetLesionTable(table, lesions.length);
    if (!body) return;
    for (const l of lesions) {
      const seen = (l.views || []).map((v) => `${v.view || viewName.get(v.sop_instance_uid) || "?"} #${v.index + 1}`);
      const tr = lesionRow(l, [], [cell(seen.join(", "), "col-views")]);
      // Hovering a breast-level lesion shows it in every view it was matched in.
      tr.addEventListener("mouseenter", () => (l.views || []).forEach((v) => selectLesion(v.sop_instance_uid, v.index, false)));
      tr.addEventListener("mouseleave", () => (l.views || []).forEach((v) => selectLesion(v.sop_instance_uid, null, false)));
      tr.addEventListener("click", () => (l.views || []).forEach((v) => selectLesion(v.sop_instance_uid, v.index, true)));
      body.append(tr);
    }
  }

  // ---- geometry -----------------------------------------------------------------------------
  function canvasSize(view) {
    const wrap = view.canvas.parentElement;
    return { w: Math.max(1, wrap.clientWidth), h: Math.max(1, wrap.clientHeight) };
  }

  function fit(view) {
    const { w, h } = canvasSize(view);
    view.scale = Math.min(w / view.width, h / view.height);
    view.tx = (w - view.width * view.scale) / 2;
    view.ty = (h - view.height * view.scale) / 2;
    view.fitted = true;
  }

  function zoomAt(view, factor, sx, sy) {
    const { w, h } = canvasSize(view);
    const min = 0.5 * Math.min(w / view.width, h / view.height);
    const scale = Math.min(16, Math.max(min, view.scale * factor));
    const f = scale / view.scale;
    view.tx = sx - (sx - view.tx) * f;
    view.ty = sy - (sy - view.ty) * f;
    view.scale = scale;
    view.fitted = false;
    scheduleRender(view);
  }

  function zoomTo(view, [x0, y0, x1, y1]) {
    const { w, h } = canvasSize(view);
    const bw = Math.max(1, x1 - x0);
    const bh = Math.max(1, y1 - y0);
    const fitScale = Math.min(w / view.width, h / view.height);
    // The box fills about a quarter of the panel: the duct around it stays in view.
    view.scale = Math.max(fitScale, Math.min(4, 0.25 * Math.min(w / bw, h / bh)));
    view.tx = w / 2 - ((x0 + x1) / 2) * view.scale;
    view.ty = h / 2 - ((y0 + y1) / 2) * view.scale;
    view.fitted = false;
  }

  // ---- drawing -------------------------------------------------------------------------------
  function windowLut() {
    const { width, level, invert } = state.wl;
    const lo = level - width / 2;
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) {
      const out = ((v - lo) / width) * 255;
      lut[v] = invert ? 255 - out : out;
    }
    return lut;
  }

  function scheduleRender(view) {
    if (view.frame) return;
    view.frame = requestAnimationFrame(() => {
      view.frame = 0;
      render(view);
    });
  }

  const renderAll = () => state.views.forEach(scheduleRender);

  function render(view) {
    const { canvas } = view;
    const dpr = window.devicePixelRatio || 1;
    const { w, h } = canvasSize(view);
    const cw = Math.round(w * dpr);
    const ch = Math.round(h * dpr);
    if (canvas.width !== cw || canvas.height !== ch) {
      canvas.width = cw;
      canvas.height = ch;
    }
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, cw, ch);

    const s = view.scale * dpr;
    const ox = view.tx * dpr;
    const oy = view.ty * dpr;
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = view.scale < 1 ? "high" : "low";
    ctx.setTransform(s, 0, 0, s, ox, oy);
    if (view.image) {
      ctx.drawImage(view.image, 0, 0);
      applyWindow(ctx, ox, oy, view.width * s, view.height * s, cw, ch);
    }
    ctx.setTransform(s, 0, 0, s, ox, oy);
    ctx.globalAlpha = state.opacity;
    if (state.layers.heatmap && view.heatmap) ctx.drawImage(view.heatmap, 0, 0, view.width, view.height);
    // The outline fades less than the heatmap: a thin line at low alpha is lost.
    ctx.globalAlpha = 0.35 + 0.65 * state.opacity;
    if (state.layers.outline && view.mask) drawOutline(ctx, view, s, ox, oy, cw, ch);
    ctx.globalAlpha = 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (state.layers.nipple) drawNipple(ctx, view);
    if (state.layers.lesions) drawLesions(ctx, view);

    view.renders += 1;
    canvas.dataset.renderCount = String(view.renders);
    canvas.dataset.layers = Object.keys(state.layers).filter((k) => state.layers[k]).join(" ");
  }

  // Window/level on the displayed pixels only: O(panel), not O(detector).
  function applyWindow(ctx, ox, oy, iw, ih, cw, ch) {
    const { width, level, invert } = state.wl;
    if (width >= 255 && Math.abs(level - 127.5) <= 0.5 && !invert) return;
    const x0 = Math.max(0, Math.floor(ox));
    const y0 = Math.max(0, Math.floor(oy));
    const x1 = Math.min(cw, Math.ceil(ox + iw));
    const y1 = Math.min(ch, Math.ceil(oy + ih));
    if (x1 <= x0 || y1 <= y0) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    const data = ctx.getImageData(x0, y0, x1 - x0, y1 - y0);
    const px = data.data;
    const lut = windowLut();
    for (let i = 0; i < px.length; i += 4) {
      const v = lut[px[i]];
      px[i] = v;
      px[i + 1] = v;
      px[i + 2] = v;
    }
    ctx.putImageData(data, x0, y0);
  }

  // The mask resampled to the visible screen pixels; a pixel whose 3x3 neighbourhood holds
  // both duct and background is outline: a 2 px line whatever the zoom. The low threshold
  // keeps ducts thinner than a screen pixel (fitted 4k views) visible.
  const OUTLINE_RGB = [53, 224, 161];
  const MASK_THRESHOLD = 64;
  function drawOutline(ctx, view, s, ox, oy, cw, ch) {
    const x0 = Math.max(0, Math.floor(ox));
    const y0 = Math.max(0, Math.floor(oy));
    const w = Math.min(cw, Math.ceil(ox + view.width * s)) - x0;
    const h = Math.min(ch, Math.ceil(oy + view.height * s)) - y0;
    if (w < 3 || h < 3) return;
    if (!view.scratch) view.scratch = document.createElement("canvas");
    const scratch = view.scratch;
    if (scratch.width !== w || scratch.height !== h) {
      scratch.width = w;
      scratch.height = h;
    }
    const sctx = scratch.getContext("2d", { willReadFrequently: true });
    sctx.setTransform(1, 0, 0, 1, 0, 0);
    sctx.clearRect(0, 0, w, h);
    sctx.imageSmoothingEnabled = true;
    sctx.imageSmoothingQuality = "high";
    sctx.setTransform(s, 0, 0, s, ox - x0, oy - y0);
    sctx.drawImage(view.mask, 0, 0, view.width, view.height);
    const data = sctx.getImageData(0, 0, w, h);
    const px = data.data;
    const inside = new Uint8Array(w * h);
    for (let i = 0; i < w * h; i++) inside[i] = px[4 * i] >= MASK_THRESHOLD ? 1 : 0;
    px.fill(0);
    const [r, g, b] = OUTLINE_RGB;
    for (let y = 1; y < h - 1; y++) {
      for (let x = 1; x < w - 1; x++) {
        const i = y * w + x;
        const sum =
          inside[i - w - 1] + inside[i - w] + inside[i - w + 1] +
          inside[i - 1] + inside[i] + inside[i + 1] +
          inside[i + w - 1] + inside[i + w] + inside[i + w + 1];
        if (sum > 0 && sum < 9) {
          px[4 * i] = r;
          px[4 * i + 1] = g;
          px[4 * i + 2] = b;
          px[4 * i + 3] = 255;
        }
      }
    }
    sctx.putImageData(data, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(scratch, x0, y0);
  }

  function toScreen(view, x, y) {
    return [view.tx + x * view.scale, view.ty + y * view.scale];
  }

  function drawNipple(ctx, view) {
    const p = view.report.nipple_px;
    if (!p) return;
    const [x, y] = toScreen(view, p[0], p[1]);
    ctx.strokeStyle = "#ff5fd2";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x, y, 7, 0, 2 * Math.PI);
    ctx.moveTo(x - 11, y);
    ctx.lineTo(x + 11, y);
    ctx.moveTo(x, y - 11);
    ctx.lineTo(x, y + 11);
    ctx.stroke();
    label(ctx, "N", x + 9, y - 9, "#ff5fd2");
  }

  function drawLesions(ctx, view) {
    (view.report.lesions || []).forEach((l, index) => {
      if (!l.bbox_px) return;
      const [x0, y0] = toScreen(view, l.bbox_px[0], l.bbox_px[1]);
      const [x1, y1] = toScreen(view, l.bbox_px[2], l.bbox_px[3]);
      const selected = view.selected === index;
      const colour = selected ? "#ffffff" : "#ffc53d";
      ctx.lineWidth = selected ? 3 : 1.5;
      ctx.strokeStyle = colour;
      ctx.strokeRect(x0, y0, Math.max(2, x1 - x0), Math.max(2, y1 - y0));
      label(ctx, `${l.id} · ${fmt(l.score, 2)}`, x0, y0 - 3, colour);
    });
  }

  function label(ctx, text, x, y, colour) {
    ctx.font = "600 12px system-ui, sans-serif";
    const w = ctx.measureText(text).width + 6;
    ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
    ctx.fillRect(x, y - 14, w, 15);
    ctx.fillStyle = colour;
    ctx.fillText(text, x + 3, y - 3);
  }

  // ---- interaction ---------------------------------------------------------------------------
  function attachInteraction(view) {
    const { canvas } = view;
    let drag = null;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => {
      // Right button (or Ctrl/Shift + left) adjusts window/level, as on reading stations.
      const mode = e.button === 2 || e.ctrlKey || e.shiftKey ? "wl" : "pan";
      drag = { mode, x: e.clientX, y: e.clientY, wl: { ...state.wl } };
      canvas.setPointerCapture(e.pointerId);
      canvas.classList.add("dragging");
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (drag.mode === "pan") {
        view.tx += dx;
        view.ty += dy;
        view.fitted = false;
        drag.x = e.clientX;
        drag.y = e.clientY;
        scheduleRender(view);
      } else {
        setWindow(drag.wl.width + dx, drag.wl.level - dy);
      }
    });
    const end = (e) => {
      if (!drag) return;
      drag = null;
      canvas.classList.remove("dragging");
      if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const rect = canvas.getBoundingClientRect();
        zoomAt(view, Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
      },
      { passive: false },
    );
    canvas.addEventListener("dblclick", () => {
      fit(view);
      scheduleRender(view);
    });
  }

  function setWindow(width, level) {
    state.wl.width = Math.round(Math.min(255, Math.max(1, width)));
    state.wl.level = Math.round(Math.min(255, Math.max(0, level)));
    $("#window-width").value = String(state.wl.width);
    $("#window-level").value = String(state.wl.level);
    $("#wl-readout").textContent = `W ${state.wl.width} / L ${state.wl.level}`;
    renderAll();
  }

  function initControls() {
    $("#token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      state.token = $("#token-input").value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      refreshList();
      if (state.analysisId) loadAnalysis(state.analysisId);
    });
    $("#analysis-select").addEventListener("change", (e) => loadAnalysis(e.target.value));
    $("#analysis-refresh").addEventListener("click", refreshList);
    $("#upload-form").addEventListener("submit", upload);

    for (const box of $$("[data-layer]")) {
      state.layers[box.dataset.layer] = box.checked;
      box.addEventListener("change", () => {
        state.layers[box.dataset.layer] = box.checked;
        renderAll();
      });
    }
    const opacity = $("#overlay-opacity");
    state.opacity = Number(opacity.value) / 100;
    opacity.addEventListener("input", () => {
      state.opacity = Number(opacity.value) / 100;
      renderAll();
    });
    $("#window-width").addEventListener("input", (e) => setWindow(Number(e.target.value), state.wl.level));
    $("#window-level").addEventListener("input", (e) => setWindow(state.wl.width, Number(e.target.value)));
    $("[data-control=invert]").addEventListener("change", (e) => {
      state.wl.invert = e.target.checked;
      renderAll();
    });
    for (const button of $$("[data-zoom]")) {
      button.addEventListener("click", () => {
        const how = button.dataset.zoom;
        if (how === "reset-wl") return setWindow(255, 128);
        for (const view of state.views) {
          const { w, h } = canvasSize(view);
          if (how === "fit") {
            fit(view);
            scheduleRender(view);
          } else zoomAt(view, how === "in" ? 1.25 : 0.8, w / 2, h / 2);
        }
      });
    }
  }

  // ?analysis=<id>, or #<id> / #analysis=<id> (the API's "viewer" links use the hash).
  function wantedAnalysis() {
    const fromQuery = new URLSearchParams(location.search).get("analysis");
    if (fromQuery) return fromQuery;
    const hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    return hash.startsWith("analysis=") ? hash.slice("analysis=".length) : hash;
  }

  async function main() {
    initToken();
    initControls();
    setWindow(255, 128);
    const wanted = wantedAnalysis();
    state.analysisId = wanted; // loaded once a token is entered
    if (!state.token) {
      setStatus("Enter the bearer token of this server.", "idle");
      return;
    }
    await refreshList();
    if (wanted) await loadAnalysis(wanted);
  }

  main();
})();
