// petctfm serve: the page. Plain JS over niivue (vendored) and the server's JSON API (docs/viewer.md).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const V = { CT: 0, PET: 1 };
  // lesions: saturated colours, none red / yellow (the hot PET); organs: muted ones, never a lesion's
  const LESION_RGB = [[0, 229, 255], [118, 255, 3], [255, 64, 255], [41, 121, 255], [0, 230, 118], [255, 145, 0],
    [179, 136, 255], [255, 0, 128], [100, 255, 218], [198, 255, 0], [64, 196, 255], [234, 128, 252]];
  const ORGAN_RGB = [[200, 161, 101], [158, 157, 36], [141, 110, 99], [120, 144, 156], [121, 134, 203], [161, 136, 127],
    [139, 195, 74], [176, 190, 197]];
  const TOOLS = { click: "c", box: "b", brush: "p", erase: "e", grow: "g", threshold: "t", nav: "n" };
  const PLANE = ["axial", "coronal", "sagittal"];  // niivue's axCorSag 0, 1, 2
  const app = { nv: null, views: [], caseId: null, state: null, busy: false, tool: "click", boxA: null,
                selected: null, down: null, stroke: null, dims: null, affine: null, inv: null, ready: false,
                labels: null, drawLut: null, colors: {}, mipData: null, radiological: true, timing: null,
                hover: null, suvMax: 10, orient: {} };
  window.petctfmViewer = app;  // for tests and the console

  // the token came in the URL; the server set an HttpOnly cookie with it, so drop it from the address bar
  if (location.search.includes("token=")) history.replaceState(null, "", location.pathname);
  $("user").value = localStorage.getItem("petctfm-user") || "";
  $("user").onchange = () => localStorage.setItem("petctfm-user", $("user").value);

  const msg = (text) => { $("msg").textContent = text || ""; };
  const status = (text) => { $("status").textContent = text; };
  const api = (path) => "/api/cases/" + encodeURIComponent(app.caseId) + path;
  const frame = () => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));

  // state-changing requests carry the CSRF token the server put in the page (docs/viewer.md, Security)
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  // every request goes through here (one place for headers)
  async function request(path, body, binary) {
    const r = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF }, body: JSON.stringify(body) });
    if (binary && r.ok) return r;
    const data = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }
  const call = (path, body) => request(path, body, false);

  async function listCases() {
    const data = await call("/api/cases");
    const sel = $("case-select");
    sel.innerHTML = "<option value=''>—</option>" +
      data.cases.map((c) => { const id = c.id.replace(/[<>&"]/g, ""); return `<option value="${id}">${id}</option>`; }).join("");
    $("auto").disabled = !data.has_auto;
    $("kind").innerHTML = "<option value=''>lesion</option>" + (data.organs || []).map((o) => {
      const n = o.name.replace(/[^a-z_]/g, "");
      return `<option value="${n}">${n.replace(/_/g, " ")}${o.held_out ? " (zero-shot)" : ""}</option>`; }).join("");
    sel.onchange = () => sel.value && openCase(sel.value);
    if (data.cases.length === 1) { sel.value = data.cases[0].id; openCase(sel.value); }
  }

  // -- geometry: native voxel [i, j, k] of the PET (= the server's [x, y, z]) <-> RAS mm ---------------------
  function invert4(m) {  // 4x4 affine (rows) -> its inverse (rows)
    const r = [[m[0][0], m[0][1], m[0][2]], [m[1][0], m[1][1], m[1][2]], [m[2][0], m[2][1], m[2][2]]];
    const det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0]) +
                r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    const c = (a, b, d, e) => (a * e - b * d) / det;
    const i = [[c(r[1][1], r[1][2], r[2][1], r[2][2]), -c(r[0][1], r[0][2], r[2][1], r[2][2]), c(r[0][1], r[0][2], r[1][1], r[1][2])],
               [-c(r[1][0], r[1][2], r[2][0], r[2][2]), c(r[0][0], r[0][2], r[2][0], r[2][2]), -c(r[0][0], r[0][2], r[1][0], r[1][2])],
               [c(r[1][0], r[1][1], r[2][0], r[2][1]), -c(r[0][0], r[0][1], r[2][0], r[2][1]), c(r[0][0], r[0][1], r[1][0], r[1][1])]];
    return i.map((row) => [...row, -(row[0] * m[0][3] + row[1] * m[1][3] + row[2] * m[2][3])]);
  }
  const vox2mm = (v) => [0, 1, 2].map((r) => app.affine[r][0] * v[0] + app.affine[r][1] * v[1] + app.affine[r][2] * v[2] + app.affine[r][3]);
  const mm2vox = (p) => [0, 1, 2].map((r) => Math.round(app.inv[r][0] * p[0] + app.inv[r][1] * p[1] + app.inv[r][2] * p[2] + app.inv[r][3]));
  const inside = (v) => v.every((c, i) => c >= 0 && c < app.dims[i]);
  const nidx = (v) => v[0] + app.dims[0] * (v[1] + app.dims[1] * v[2]);
  // the native voxel axis closest to RAS axis w (0 R, 1 A, 2 S) and its sign
  const axisOf = (w) => [0, 1, 2].reduce((b, i) => Math.abs(app.affine[w][i]) > Math.abs(app.affine[w][b]) ? i : b, 0);

  // niivue keeps its drawing in the background volume's RAS-permuted order: native index -> drawing index
  function drawLuts(permRAS, d) {  // the mapping niivue's loadDrawing uses (d = hdr.dims)
    const g = [0, 0, 0];
    for (let s = 0; s < 3; s++) for (let a = 0; a < 3; a++) if (Math.abs(permRAS[s]) - 1 === a) g[a] = s * Math.sign(permRAS[s]);
    let stride = 1; const st = [1, 1, 1], flip = [false, false, false];
    for (let s = 0; s < 3; s++) for (let a = 0; a < 3; a++) if (Math.abs(g[a]) === s) {
      st[a] = stride; if (g[a] < 0 || Object.is(g[a], -0)) flip[a] = true; stride *= d[a + 1]; }
    return [0, 1, 2].map((a) => Array.from({ length: d[a + 1] }, (_, i) => (flip[a] ? d[a + 1] - 1 - i : i) * st[a]));
  }

  // -- opening a case --------------------------------------------------------------------------------------
  async function openCase(id) {
    msg(""); status("opening " + id + " …"); app.ready = false;
    app.caseId = id; app.selected = null;
    let st;
    try { st = await call(api("/open"), {}); } catch (e) { msg(e.message); status("could not open " + id); return; }
    for (const v of app.views) v.loaded = false;
    await loadView(app.views[0]);
    const pet = app.nv.volumes[V.PET];
    app.dims = pet.hdr.dims.slice(1, 4);
    app.affine = pet.hdr.affine.map((r) => r.slice());
    app.inv = invert4(app.affine);
    app.luts = drawLuts(app.nv.back.permRAS, app.nv.back.hdr.dims);
    let m = 0; for (let i = 0; i < pet.img.length; i++) if (pet.img[i] > m) m = pet.img[i];
    app.suvMax = m;
    app.labels = new Uint8Array(app.dims[0] * app.dims[1] * app.dims[2]);
    app.mipData = null;
    show(st);
    await loadMask(null, st.version);
    app.ready = true;
    await setLayout();
    status(`${id}: ${app.dims.join("×")} voxels; opened in ${(st.timings_s.open_s || 0).toFixed(2)} s`);
  }
  async function loadView(v) {  // v.role: fused (CT + PET), pet (PET alone), ct (CT alone)
    const lo = Number($("pet-lo").value), hi = Number($("pet-hi").value);
    const [clo, chi] = $("ct-wl").value.split(",").map(Number);
    if (v === app.views[0]) {
      await v.nv.loadVolumes([
        { url: api("/volume/ct.nii.gz"), colormap: "gray", cal_min: clo, cal_max: chi },
        { url: api("/volume/pet.nii.gz"), colormap: "petctfm-hot", opacity: 1, cal_min: lo, cal_max: hi },
      ]);
    } else {  // the side-by-side views: copies of the volumes already in the page (no second download)
      v.nv.volumes = [];
      for (const vol of app.nv.volumes) v.nv.addVolume(vol.clone());
    }
    v.nv.createEmptyDrawing();
    if (v !== app.views[0]) v.nv.drawBitmap = app.nv.drawBitmap;  // one label map, drawn by every view
    v.loaded = true;
    applyDisplay(v);
  }
  const shown = () => app.views.filter((v) => v.loaded && v.canvas.parentElement.style.display !== "none");

  // -- display: modes, window, colour bar, layout, convention ------------------------------------------------
  function applyDisplay(v) {
    const nv = v.nv; if (nv.volumes.length < 2) return;
    const mode = v.role === "fused" ? $("mode").value : v.role;
    const lo = Number($("pet-lo").value), hi = Number($("pet-hi").value);
    const ct = nv.volumes[V.CT], pet = nv.volumes[V.PET];
    const [clo, chi] = $("ct-wl").value.split(",").map(Number);
    ct.cal_min = clo; ct.cal_max = chi;
    ct.opacity = mode === "pet" ? 0 : 1;
    const cmap = mode === "pet" ? "petctfm-invgray" : "petctfm-hot";
    if (pet.colormap !== cmap) pet.colormap = cmap;  // (niivue's setter resets the window: set it first)
    pet.cal_min = lo; pet.cal_max = hi;
    pet.opacity = mode === "ct" ? 0 : mode === "pet" ? 1 : Number($("opacity").value) / 100;
    nv.setRadiologicalConvention(app.radiological);
    nv.drawOpacity = $("fill").checked ? 0.3 : 0;  // niivue's drawing: the fill (under the PET); contours: drawContours
    nv.drawRimOpacity = -1;
    if (app.drawLut) nv.drawLut = app.drawLut;
    nv.updateGLVolume();
    if (nv.drawBitmap) nv.refreshDrawing(true);
  }
  function applyAll() { shown().forEach(applyDisplay); drawColorbar(); drawMip(); }
  function setWindow(lo, hi) {
    if (!(hi > lo)) return;
    $("pet-lo").value = +lo.toFixed(2); $("pet-hi").value = +hi.toFixed(2); applyAll();
  }
  const HOT = { I: [0, 40, 110, 190, 255], R: [0, 180, 255, 255, 255], G: [0, 0, 100, 230, 255], B: [0, 0, 0, 60, 255],
                A: [0, 110, 190, 230, 255] };  // low SUV nearly transparent: the CT stays visible
  const INVGRAY = { I: [0, 255], R: [255, 0], G: [255, 0], B: [255, 0], A: [255, 255] };
  function rampAt(cm, t) {  // the colour of a control-point colormap at t in [0, 1]
    const x = t * 255; let i = 0; while (i < cm.I.length - 2 && x > cm.I[i + 1]) i++;
    const f = Math.min(1, Math.max(0, (x - cm.I[i]) / (cm.I[i + 1] - cm.I[i])));
    return ["R", "G", "B"].map((c) => Math.round(cm[c][i] + f * (cm[c][i + 1] - cm[c][i])));
  }
  function drawColorbar() {
    const c = $("cbar"), ctx = c.getContext("2d"), cm = $("mode").value === "pet" ? INVGRAY : HOT;
    const lo = Number($("pet-lo").value), hi = Number($("pet-hi").value), h = c.height, top = 14, bot = h - 14;
    ctx.fillStyle = "#111"; ctx.fillRect(0, 0, c.width, h);
    for (let y = top; y < bot; y++) { ctx.fillStyle = `rgb(${rampAt(cm, 1 - (y - top) / (bot - top))})`; ctx.fillRect(4, y, 14, 1); }
    ctx.fillStyle = "#ddd"; ctx.font = "11px sans-serif";
    for (let k = 0; k <= 4; k++) {
      const val = lo + (hi - lo) * k / 4, y = bot - (bot - top) * k / 4;
      ctx.fillRect(18, Math.round(y), 4, 1); ctx.fillText(val.toFixed(val >= 10 ? 0 : 1), 24, y + 4);
    }
    ctx.fillText("SUV", 2, 10);
  }
  // "mpr": one view, the three planes with the chosen one large; "triple": PET | CT | fused side by side, one plane
  async function setLayout() {
    const triple = $("layout").value === "triple", plane = PLANE.indexOf($("plane").value);
    $("views").classList.toggle("triple", triple);
    for (const v of app.views) v.canvas.parentElement.style.display = triple || v.role === "fused" ? "" : "none";
    for (const v of app.views) {
      if (triple && !v.loaded && app.caseId && app.ready) await loadView(v);
      if (triple) { v.nv.opts.heroImageFraction = 0; v.nv.setSliceType(plane); }
      else { v.nv.opts.heroImageFraction = 0.62; v.nv.opts.heroSliceType = plane; v.nv.setSliceType(v.nv.sliceTypeMultiplanar); }
      v.nv.resizeListener();
    }
    const on = shown();  // the cursor is shared by the views on screen
    for (const v of on) v.nv.broadcastTo(on.filter((o) => o !== v).map((o) => o.nv), { "2d": true, "3d": false });
    if (app.ready) { on.forEach(applyDisplay); goToVoxel(crossVoxel() || app.dims.map((n) => n >> 1)); }
  }

  // -- the label map: colours, the drawing (contours), sparse updates ----------------------------------------
  function colorsFor(st) {
    const colors = {};
    st.lesions.forEach((r, i) => { colors[r.object] = LESION_RGB[i % LESION_RGB.length]; });
    (st.organs || []).forEach((r, i) => { colors[r.object] = ORGAN_RGB[i % ORGAN_RGB.length]; });
    return colors;
  }
  function setLut(colors) {  // niivue's drawing colour table (RGBA for ids 0..255); uploaded with the colormaps
    const key = JSON.stringify(colors);
    if (key === app.lutKey) return;
    app.lutKey = key;
    const lut = new Uint8ClampedArray(256 * 4);
    for (let k = 1; k < 256; k++) lut.set([...(colors[k] || [255, 255, 255]), 255], 4 * k);
    app.drawLut = { lut, labels: Array.from({ length: 256 }, (_, k) => String(k)) };
    for (const v of app.views) if (v.loaded) { v.nv.drawLut = app.drawLut; v.nv.refreshColormaps(); }
  }
  // the label map's box lo..hi (native voxels, hi exclusive; null: all) from the server -> labels, drawing, MIP
  async function loadMask(box, version) {
    const q = box ? "?box=" + [...box.lo, ...box.hi].join(",") : "";
    const r = await request(api("/mask" + q), undefined, true);
    const vals = new Uint8Array(await r.arrayBuffer());
    if (Number(r.headers.get("X-Version")) !== version && box) return loadMask(null, Number(r.headers.get("X-Version")));
    const lo = box ? box.lo : [0, 0, 0], hi = box ? box.hi : app.dims, d = app.dims, [xl, yl, zl] = app.luts;
    const bmp = app.nv.drawBitmap;
    let n = 0;
    for (let k = lo[2]; k < hi[2]; k++) for (let j = lo[1]; j < hi[1]; j++) {
      let i0 = lo[0] + d[0] * (j + d[1] * k);
      for (let i = lo[0]; i < hi[0]; i++, n++, i0++) { app.labels[i0] = vals[n]; bmp[xl[i] + yl[j] + zl[k]] = vals[n]; }
    }
    for (const v of shown()) { v.nv.drawBitmap = bmp; v.nv.refreshDrawing(false); v.nv.drawScene(); }
    updateMip(box);
    return vals.length;
  }

  // -- the PET MIP (anterior), computed here from the loaded PET; objects in their colours, clickable --------
  function mipGeom() {
    const r = axisOf(0), a = axisOf(1), s = axisOf(2);
    return { r, a, s, sr: Math.sign(app.affine[0][r]), ss: Math.sign(app.affine[2][s]), w: app.dims[r], h: app.dims[s] };
  }
  // MIP pixel (u, v) -> the native (r-axis, s-axis) indices; radiological: the viewer's left = the patient's right
  function mipPix(g, u, v) {
    const rightFirst = app.radiological;  // column 0 shows the most-right (radiological) or most-left voxels
    const ir = (g.sr > 0) === rightFirst ? g.w - 1 - u : u;
    return [ir, g.ss > 0 ? g.h - 1 - v : v];
  }
  function updateMip(box) {
    const g = mipGeom(), pet = app.nv.volumes[V.PET].img, d = app.dims, stride = [1, d[0], d[0] * d[1]];
    if (!app.mipData || app.mipData.w !== g.w) {
      app.mipData = { w: g.w, h: g.h, suv: new Float32Array(g.w * g.h), at: new Int32Array(g.w * g.h),
                      lab: new Uint8Array(g.w * g.h), labAt: new Int32Array(g.w * g.h) };
      box = null;
    }
    const M = app.mipData;
    for (let u = 0; u < g.w; u++) for (let v = 0; v < g.h; v++) {
      const [ir, is] = mipPix(g, u, v);
      if (box && (ir < box.lo[g.r] || ir >= box.hi[g.r] || is < box.lo[g.s] || is >= box.hi[g.s])) continue;
      const base = ir * stride[g.r] + is * stride[g.s];
      let m = -Infinity, at = 0, lm = -Infinity, lab = 0, labAt = 0;
      for (let k = 0; k < d[g.a]; k++) {
        const o = base + k * stride[g.a], x = pet[o];
        if (x > m) { m = x; at = k; }
        if (app.labels[o] && x > lm) { lm = x; lab = app.labels[o]; labAt = k; }
      }
      const p = v * g.w + u;
      M.suv[p] = m; M.at[p] = at; M.lab[p] = lab; M.labAt[p] = labAt;
    }
    drawMip();
  }
  function drawMip() {
    const c = $("mip"), M = app.mipData; if (!M) return;
    const sp = app.nv.volumes[V.PET].hdr.pixDims, g = mipGeom();
    c.width = M.w; c.height = M.h;
    c.style.aspectRatio = `${M.w * sp[g.r + 1]} / ${M.h * sp[g.s + 1]}`;
    const ctx = c.getContext("2d"), im = ctx.createImageData(M.w, M.h), hi = Number($("pet-hi").value);
    const lo = Number($("pet-lo").value);
    for (let p = 0; p < M.suv.length; p++) {
      const gr = 255 - Math.min(255, Math.max(0, ((M.suv[p] - lo) / (hi - lo)) * 255));
      const col = M.lab[p] ? app.colors[M.lab[p]] || [255, 255, 255] : null;
      im.data.set(col ? [0.35 * gr + 0.65 * col[0], 0.35 * gr + 0.65 * col[1], 0.35 * gr + 0.65 * col[2], 255] : [gr, gr, gr, 255], 4 * p);
    }
    ctx.putImageData(im, 0, 0);
    // the crosshair, and the side labels
    const cv = crossVoxel();
    if (cv) {
      const u = [...Array(M.w).keys()].find((x) => mipPix(g, x, 0)[0] === cv[g.r]);
      const v = [...Array(M.h).keys()].find((y) => mipPix(g, 0, y)[1] === cv[g.s]);
      ctx.fillStyle = "rgba(0,120,200,0.6)";
      if (u !== undefined) ctx.fillRect(u, 0, 1, M.h);
      if (v !== undefined) ctx.fillRect(0, v, M.w, 1);
    }
    $("mip-left").textContent = app.radiological ? "R" : "L";
    $("mip-right").textContent = app.radiological ? "L" : "R";
  }
  function mipTarget(ev) {  // the MIP pixel under the mouse -> a native voxel (the object's, or the ray's SUVmax)
    const c = $("mip"), r = c.getBoundingClientRect(), M = app.mipData, g = mipGeom();
    const u = Math.floor((ev.clientX - r.left) / r.width * M.w), v = Math.floor((ev.clientY - r.top) / r.height * M.h);
    if (u < 0 || v < 0 || u >= M.w || v >= M.h) return null;
    const p = v * M.w + u, [ir, is] = mipPix(g, u, v), vox = [0, 0, 0];
    vox[g.r] = ir; vox[g.s] = is; vox[g.a] = M.lab[p] ? M.labAt[p] : M.at[p];
    return { voxel: vox, object: M.lab[p] || null };
  }

  // -- state: the tables, the question about implausible objects, the selected lesion -------------------------
  function show(st) {
    app.state = st;
    app.colors = colorsFor(st);
    if (app.nv.back) setLut(app.colors);
    $("lesion-count").textContent = st.totals.count;
    $("mtv").textContent = st.totals.mtv_ml.toFixed(1);
    $("tlg").textContent = st.totals.tlg.toFixed(1);
    $("undo").disabled = !st.can_undo; $("redo").disabled = !st.can_redo;
    $("auto").disabled = !st.has_auto;
    const f = (x, n) => (x === null || x === undefined ? "—" : Number(x).toFixed(n));
    const esc = (t) => String(t).replace(/[<>&"]/g, "");
    const sw = (k) => `<span class="sw" style="background:rgb(${app.colors[k] || [255, 255, 255]})"></span>`;
    const warn = (r) => r.flags && r.flags.length ? `<span class="flag" title="${esc(r.flags.join("; "))}">${r.confirmed ? "✓" : "⚠"}</span>` : "";
    $("organs").tBodies[0].innerHTML = (st.organs || []).map((r) =>
      `<tr data-id="${r.object}" class="${r.object === app.selected ? "sel" : ""}"><td>${sw(r.object)}${r.object}</td>` +
      `<td>${esc(r.name).replace(/_/g, " ")}</td><td>${f(r.volume_ml, 1)}</td><td>${f(r.suv_mean, 2)}</td>` +
      `<td><button data-del="${r.object}" title="delete">×</button></td></tr>`).join("");
    $("lesions").tBodies[0].innerHTML = st.lesions.map((r) =>
      `<tr data-id="${r.object}" class="${r.object === app.selected ? "sel" : ""}${r.flags && r.flags.length && !r.confirmed ? " flagged" : ""}">` +
      `<td>${sw(r.object)}${r.object}${warn(r)}</td>` +
      `<td>${f(r.volume_ml, 2)}</td><td>${f(r.suv_max, 2)}</td><td>${f(r.suv_peak, 2)}</td><td>${f(r.suv_mean, 2)}</td>` +
      `<td>${f(r.tlg, 1)}</td><td><button data-del="${r.object}" title="delete (Del)">×</button></td></tr>`).join("");
    const ask = st.lesions.find((r) => r.flags && r.flags.length && !r.confirmed && r.n_voxels);
    $("ask").hidden = !ask;
    if (ask) { $("ask-text").textContent = `Object ${ask.object}: ${ask.flags.join("; ")}. A lesion?`; $("ask").dataset.id = ask.object; }
    showSelected();
  }
  const rowOf = (k) => app.state && [...app.state.lesions, ...(app.state.organs || [])].find((r) => r.object === k);
  function showSelected() {
    const r = app.selected && rowOf(app.selected);
    $("selected").textContent = r ? `${r.kind === "organ" ? r.name.replace(/_/g, " ") : "lesion"} ${r.object}: SUVmax ` +
      `${r.suv_max === null ? "—" : r.suv_max.toFixed(2)} · SUVpeak ${r.suv_peak === null ? "—" : r.suv_peak.toFixed(2)} · ` +
      `${r.volume_ml.toFixed(2)} ml` : "no object selected (click a row, or an object in the MIP)";
  }
  function select(k, jump) {
    app.selected = k; show(app.state);
    const r = k && rowOf(k);
    if (jump && r && r.peak_voxel) goToVoxel(r.peak_voxel);
  }

  // -- the cursor ------------------------------------------------------------------------------------------
  function crosshairMM(nv) { const m = (nv || app.nv).frac2mm((nv || app.nv).scene.crosshairPos); return [m[0], m[1], m[2]]; }
  function crossVoxel() { if (!app.inv) return null; const v = mm2vox(crosshairMM()); return inside(v) ? v : null; }
  function goToVoxel(vox) {  // every view on screen (the main one included) to the native voxel vox (3,)
    for (const v of shown()) { v.nv.scene.crosshairPos = v.nv.mm2frac(vox2mm(vox)); v.nv.drawScene(); }
    app.nv.createOnLocationChange();
    drawMip();
  }
  app.crossVoxel = crossVoxel;

  // -- the overlay: contours and numbers in every slice, the selected object's values, R/L at each view's edges --
  function tiles(nv) { return nv.screenSlices.filter((s) => s.axCorSag >= 0 && s.axCorSag <= 2); }
  // RAS mm -> canvas pixels in one 2D tile (niivue's frac2canvasPosWithTile picks the first tile of a plane; the
  // layout with a large main plane shows a plane twice)
  function tilePos(t, mm) {
    const r = t.axCorSag === 1 ? [mm[0], mm[2], mm[1]] : t.axCorSag === 2 ? [mm[1], mm[2], mm[0]] : mm;
    const c = t.leftTopWidthHeight.slice();
    let x = (r[0] - t.leftTopMM[0]) / t.fovMM[0];
    const y = (r[1] - t.leftTopMM[1]) / t.fovMM[1];
    if (c[2] < 0) { c[0] += c[2]; c[2] = -c[2]; x = 1 - x; }
    return [c[0] + x * c[2], c[1] + (1 - y) * c[3]];
  }
  app.tilePos = tilePos;
  // each object's outline in the tile's slice: the voxel edges between different labels, in the object's colour,
  // drawn over everything (niivue blends its drawing under the PET overlay, which would hide a contour)
  function drawContours(ctx, nv, t, normal, slice, dpr) {
    const [p, q] = [0, 1, 2].filter((a) => a !== normal), d = app.dims, L = app.labels;
    const at = (vp, vq) => { const v = [0, 0, 0]; v[normal] = slice; v[p] = vp; v[q] = vq; return tilePos(t, vox2mm(v)); };
    const o = at(0, 0), ep = at(1, 0), eq = at(0, 1);
    const ax = [ep[0] - o[0], ep[1] - o[1]], ay = [eq[0] - o[0], eq[1] - o[1]];
    const scr = (a, b) => [o[0] + a * ax[0] + b * ay[0], o[1] + a * ax[1] + b * ay[1]];
    const paths = {}, st = [1, d[0], d[0] * d[1]], base = slice * st[normal];
    const lab = (i, j) => (i < 0 || j < 0 || i >= d[p] || j >= d[q]) ? 0 : L[base + i * st[p] + j * st[q]];
    for (let j = 0; j < d[q]; j++) for (let i = 0; i < d[p]; i++) {
      const k = L[base + i * st[p] + j * st[q]]; if (!k) continue;
      const path = paths[k] || (paths[k] = []);
      if (lab(i - 1, j) !== k) path.push(scr(i - 0.5, j - 0.5), scr(i - 0.5, j + 0.5));
      if (lab(i + 1, j) !== k) path.push(scr(i + 0.5, j - 0.5), scr(i + 0.5, j + 0.5));
      if (lab(i, j - 1) !== k) path.push(scr(i - 0.5, j - 0.5), scr(i + 0.5, j - 0.5));
      if (lab(i, j + 1) !== k) path.push(scr(i - 0.5, j + 0.5), scr(i + 0.5, j + 0.5));
    }
    const [x0, y0, w, h] = t.leftTopWidthHeight;
    ctx.save(); ctx.beginPath(); ctx.rect(x0, y0, w, h); ctx.clip();
    ctx.lineWidth = 2 * dpr; ctx.lineCap = "square";
    for (const k of Object.keys(paths)) {
      ctx.strokeStyle = `rgb(${app.colors[k] || [255, 255, 255]})`; ctx.beginPath();
      const s = paths[k]; for (let n = 0; n < s.length; n += 2) { ctx.moveTo(s[n][0], s[n][1]); ctx.lineTo(s[n + 1][0], s[n + 1][1]); }
      ctx.stroke();
    }
    ctx.restore();
  }
  function drawOverlay(v) {
    const nv = v.nv, c = v.overlay, dpr = nv.uiData.dpr || 1;
    if (c.width !== nv.canvas.width || c.height !== nv.canvas.height) { c.width = nv.canvas.width; c.height = nv.canvas.height; }
    const ctx = c.getContext("2d"); ctx.clearRect(0, 0, c.width, c.height);
    if (!app.ready || !app.state) return;
    ctx.font = `bold ${Math.round(13 * dpr)}px sans-serif`; ctx.textBaseline = "bottom";
    const here = mm2vox(crosshairMM(nv)), orient = {};
    const main = tiles(nv).reduce((b, t) => (!b || Math.abs(t.leftTopWidthHeight[2]) > Math.abs(b.leftTopWidthHeight[2]) ? t : b), null);
    const label = (text, x, y) => { ctx.strokeText(text, x, y); ctx.fillText(text, x, y); };
    ctx.lineJoin = "round"; ctx.strokeStyle = "rgba(0,0,0,0.8)";
    for (const t of tiles(nv)) {
      const [x0, y0, w, h] = t.leftTopWidthHeight, type = t.axCorSag, normal = axisOf(2 - type);
      // R / L (and A / P, S / I) from where niivue draws a point 50 mm to the patient's right / anterior / superior
      const p = crosshairMM(nv), tag = (dir) => {
        const q = p.slice(); q[dir] += 50;
        const a = tilePos(t, p), b = tilePos(t, q);
        return [b[0] - a[0], b[1] - a[1]];
      };
      const hz = type === 2 ? 1 : 0, dx = tag(hz)[0], names = hz ? ["A", "P"] : ["R", "L"];
      const left = dx < 0 ? names[0] : names[1], right = dx < 0 ? names[1] : names[0];
      orient[PLANE[type]] = { left, right };
      if (here[normal] >= 0 && here[normal] < app.dims[normal]) drawContours(ctx, nv, t, normal, here[normal], dpr);
      ctx.lineWidth = 3 * dpr; ctx.strokeStyle = "rgba(0,0,0,0.8)";
      ctx.fillStyle = "rgba(255,255,255,0.9)"; ctx.lineWidth = 3 * dpr; ctx.strokeStyle = "rgba(0,0,0,0.8)";
      label(left, x0 + 4 * dpr, y0 + h / 2); label(right, x0 + w - 14 * dpr, y0 + h / 2);
      for (const r of $("numbers").checked ? [...app.state.lesions, ...(app.state.organs || [])] : []) {
        if (!r.lo || here[normal] < r.lo[normal] || here[normal] >= r.hi[normal]) continue;
        const a = r.lo.slice(), b = r.hi.map((x) => x - 1); a[normal] = b[normal] = here[normal];
        const pa = tilePos(t, vox2mm(a)), pb = tilePos(t, vox2mm(b));
        const tx = Math.max(pa[0], pb[0]) + 6 * dpr, ty = Math.min(pa[1], pb[1]) - 1;
        if (tx < x0 || tx > x0 + w || ty < y0 || ty > y0 + h) continue;
        const col = app.colors[r.object] || [255, 255, 255];
        ctx.fillStyle = `rgb(${col})`;
        let text = String(r.object);
        if (r.object === app.selected && r.suv_max !== null && t === main) text += `  SUVmax ${r.suv_max.toFixed(1)} · peak ${r.suv_peak.toFixed(1)} · ${r.volume_ml.toFixed(1)} ml`;
        label(text, tx, ty);
      }
    }
    app.orient[v.role] = orient;
  }

  // -- changes -----------------------------------------------------------------------------------------------
  async function change(action, body) {
    if (!app.caseId || !app.state) return;
    if (app.busy) { msg("busy: wait for the last change to finish"); return; }
    app.busy = true; msg("");
    const t0 = performance.now(), before = app.state.version;
    try {
      const st = await call(api("/" + action), { version: app.state.version, user: $("user").value, ...body });
      const tAnswer = performance.now();
      show(st);
      if (app.selected && !rowOf(app.selected)) { app.selected = null; showSelected(); }
      let bytes = 0;
      if (st.version === before + 1 && st.changed) bytes = await loadMask(st.changed, st.version);
      else if (st.version !== before + 1) bytes = await loadMask(null, st.version);
      else { for (const v of shown()) v.nv.drawScene(); }
      await frame();  // painted
      const tVisible = performance.now();
      app.timing = { action, round_trip_ms: tVisible - t0, server_ms: tAnswer - t0, answer_to_visible_ms: tVisible - tAnswer,
                     model_ms: st.timings_s.last_change_s * 1000, bytes };
      const info = st.info && st.info.threshold ? `; threshold SUV ${st.info.threshold.toFixed(2)}` +
        (st.info.peak ? ` (${Math.round(100 * st.info.threshold / st.info.peak)} % of ${st.info.peak.toFixed(2)})` : "") +
        (st.info.touches_box ? " — reaches the box edge" : "") : "";
      status(`${action}: ${app.timing.round_trip_ms.toFixed(0)} ms round trip (model ${app.timing.model_ms.toFixed(0)} ms, ` +
             `shown ${app.timing.answer_to_visible_ms.toFixed(0)} ms after the answer, ${(bytes / 1024).toFixed(1)} kB)${info}`);
    } catch (e) { msg(e.message); }
    finally { app.busy = false; }
  }
  function target() {  // which object a click or tool goes to: the selected row, else the chosen kind
    if (app.selected) return { object: app.selected };
    const organ = $("kind").value;
    return organ ? { kind: "organ", name: organ } : {};
  }
  function boxFrom(a, b) {
    const lo = [0, 1, 2].map((i) => Math.min(a[i], b[i])), hi = [0, 1, 2].map((i) => Math.max(a[i], b[i]));
    const ext = Math.max(...[0, 1, 2].map((i) => hi[i] - lo[i]));
    for (let i = 0; i < 3; i++) if (hi[i] - lo[i] < 2) { const c = (hi[i] + lo[i]) / 2; lo[i] = c - ext / 2; hi[i] = c + ext / 2; }
    return { lo, hi };
  }
  function setTool(t) {
    app.tool = app.tool === t && t !== "click" ? "click" : t; app.boxA = null;
    for (const k of Object.keys(TOOLS)) $("tool-" + k).classList.toggle("on", app.tool === k);
    for (const el of document.querySelectorAll("[data-for]")) el.hidden = !el.dataset.for.split(" ").includes(app.tool);
  }
  const brushArgs = (plane) => ({ radius_mm: Number($("radius").value), plane: $("dim").value === "2d" ? plane : null });
  function isoArgs() {
    const fixed = $("iso-suv").value.trim();
    return fixed ? { suv: Number(fixed) } : { fraction: Number($("iso-pct").value) / 100 };
  }
  function onClick(nv, shift, plane) {
    if (!app.ready) return;
    const ras = crosshairMM(nv);
    drawMip();
    if (app.tool === "nav") return;
    if (app.tool === "box" || app.tool === "threshold") {
      if (!app.boxA) { app.boxA = ras; status(`${app.tool}: click the opposite corner`); return; }
      const b = boxFrom(app.boxA, ras); app.boxA = null;
      if (app.tool === "box") return change("box", { lo: b.lo, hi: b.hi, ...target() });
      return change("threshold", { lo: b.lo, hi: b.hi, ...isoArgs(), ...target() });
    }
    if (app.tool === "grow") return change("grow", { ras, ...isoArgs(), ...target() });
    if (app.tool === "brush" || app.tool === "erase") {
      const points = app.stroke && app.stroke.length ? app.stroke : [ras];
      return change(app.tool, { points, ...brushArgs(plane), ...(app.tool === "erase" ? (app.selected ? { object: app.selected } : {}) : target()) });
    }
    return change("click", { ras, positive: !shift, ...target() });
  }

  // -- mouse and keys ----------------------------------------------------------------------------------------
  function tileAt(nv, e) {
    const r = nv.canvas.getBoundingClientRect(), dpr = nv.uiData.dpr || 1, x = (e.clientX - r.left) * dpr, y = (e.clientY - r.top) * dpr;
    const t = tiles(nv).find((s) => { const [a, b, w, h] = s.leftTopWidthHeight; return x >= a && x <= a + w && y >= b && y <= b + h; });
    return t ? PLANE[t.axCorSag] : null;
  }
  function pointerMM(nv, e) {  // RAS mm under the pointer (as niivue's own onLocationChange reads values), or null
    const r = nv.canvas.getBoundingClientRect(), dpr = nv.uiData.dpr || 1;
    const frac = nv.canvasPos2frac([(e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr]);
    return frac && frac.every((c) => c >= 0 && c <= 1) ? Array.from(nv.frac2mm(frac, 0, true)).slice(0, 3) : null;
  }
  function attach(v) {
    const gl = v.canvas, nv = v.nv;
    const orig = nv.drawScene.bind(nv);
    nv.drawScene = () => { const out = orig(); drawOverlay(v); return out; };
    gl.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      app.down = { x: e.clientX, y: e.clientY, shift: e.shiftKey, plane: tileAt(nv, e) };
      app.stroke = app.tool === "brush" || app.tool === "erase" ? [] : null;
    });
    gl.addEventListener("pointermove", (e) => {  // a brush / eraser stroke: the points under the pointer
      if (!app.stroke || !app.down || !(e.buttons & 1) || app.stroke.length >= 2000) return;
      const mm = pointerMM(nv, e);
      if (mm) app.stroke.push(mm);
    });
    gl.addEventListener("pointerup", (e) => {
      const d = app.down; app.down = null;
      if (!d || e.button !== 0) return;
      const drag = Math.hypot(e.clientX - d.x, e.clientY - d.y) > 4;
      if (drag && !app.stroke) { app.stroke = null; drawMip(); return; }
      setTimeout(() => {  // after niivue has moved the crosshair
        if (app.stroke) app.stroke.push(pointerMM(nv, e) || crosshairMM(nv));
        onClick(nv, d.shift || e.shiftKey, d.plane);
        app.stroke = null;
      }, 0);
    });
    gl.addEventListener("mousemove", (e) => {
      if (!app.ready) return;
      const mm = pointerMM(nv, e);
      app.hover = null;
      if (mm) {
        const vox = mm2vox(mm);
        if (inside(vox)) {
          const k = app.labels ? app.labels[nidx(vox)] : 0, row = k && rowOf(k);
          app.hover = { voxel: vox, mm, suv: app.nv.volumes[V.PET].img[nidx(vox)], object: k || null,
                        name: row ? (row.kind === "organ" ? row.name.replace(/_/g, " ") : "lesion") + " " + k : null };
        }
      }
      $("hover").textContent = app.hover ? `mouse: SUV ${Number(app.hover.suv).toFixed(2)} at [${app.hover.mm.map((x) => x.toFixed(0))}] mm` +
        (app.hover.name ? ` · ${app.hover.name}` : "") : "mouse: —";
      gl.title = app.hover && app.hover.name ? app.hover.name : "";
    });
    gl.addEventListener("mouseleave", () => { app.hover = null; $("hover").textContent = "mouse: —"; });
    nv.onLocationChange = (data) => {
      if (v.role !== "fused") return;
      const vox = app.inv && mm2vox(Array.from(data.mm).slice(0, 3));
      $("suv").textContent = vox && inside(vox) ? `SUV ${app.nv.volumes[V.PET].img[nidx(vox)].toFixed(2)} at ` +
        `[${Array.from(data.mm).slice(0, 3).map((x) => x.toFixed(0))}] mm` : "SUV —";
    };
  }
  const onRow = (e) => {
    const del = e.target.getAttribute("data-del");
    if (del) return change("delete", { object: Number(del) });
    const tr = e.target.closest("tr[data-id]");
    if (tr) { const id = Number(tr.dataset.id); select(app.selected === id ? null : id, app.selected !== id); }
  };
  $("lesions").addEventListener("click", onRow);
  $("organs").addEventListener("click", onRow);
  $("mip").addEventListener("click", (e) => {
    if (!app.ready || !app.mipData) return;
    const t = mipTarget(e); if (!t) return;
    if (t.object) { app.selected = t.object; show(app.state); }
    goToVoxel(t.voxel);
  });
  $("ask-keep").onclick = () => change("confirm", { object: Number($("ask").dataset.id) });
  $("ask-delete").onclick = () => change("delete", { object: Number($("ask").dataset.id) });
  $("auto").onclick = () => change("auto", {});
  $("undo").onclick = () => change("undo", {});
  $("redo").onclick = () => change("redo", {});
  for (const k of Object.keys(TOOLS)) $("tool-" + k).onclick = () => setTool(k);
  $("save").onclick = async () => {
    try {
      const r = await call(api("/save"), { user: $("user").value });
      status("saved: " + r.files.map((f) => f.split("/").pop()).join(", "));
    } catch (e) { msg(e.message); }
  };
  for (const b of document.querySelectorAll("[data-wl]")) b.onclick = () => {
    const [lo, hi] = b.dataset.wl.split(","); setWindow(Number(lo), hi === "max" ? app.suvMax : Number(hi)); };
  $("pet-lo").onchange = $("pet-hi").onchange = () => setWindow(Number($("pet-lo").value), Number($("pet-hi").value));
  $("ct-wl").onchange = $("mode").onchange = $("fill").onchange = applyAll;
  $("numbers").onchange = () => shown().forEach((v) => v.nv.drawScene());
  $("opacity").oninput = applyAll;
  $("layout").onchange = $("plane").onchange = setLayout;
  $("convention").onchange = () => { app.radiological = $("convention").value === "radiological"; app.mipData = null; applyAll(); if (app.ready) updateMip(null); };
  // drag on the colour bar: up / down moves the upper SUV bound (Shift: the lower one)
  $("cbar").addEventListener("pointerdown", (e) => {
    const y0 = e.clientY, lo = Number($("pet-lo").value), hi = Number($("pet-hi").value), shift = e.shiftKey;
    const move = (m) => { const f = Math.exp((y0 - m.clientY) / 120); if (shift) setWindow(Math.max(0, lo * f), hi); else setWindow(lo, Math.max(lo + 0.1, hi * f)); };
    const up = () => { window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", up); };
    window.addEventListener("pointermove", move); window.addEventListener("pointerup", up);
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const k = e.key.toLowerCase(), mod = e.ctrlKey || e.metaKey;
    const tool = Object.keys(TOOLS).find((t) => TOOLS[t] === k);
    if (mod && k === "z") { e.preventDefault(); change(e.shiftKey ? "redo" : "undo", {}); }
    else if (mod && k === "y") { e.preventDefault(); change("redo", {}); }
    else if (mod && k === "s") { e.preventDefault(); $("save").click(); }
    else if (!mod && (k === "delete" || k === "backspace") && app.selected) { e.preventDefault(); change("delete", { object: app.selected }); }
    else if (!mod && k === "a") change("auto", {});
    else if (!mod && tool) setTool(tool);
    else if (k === "escape") { setTool("click"); select(null, false); }
  }, true);

  async function start() {
    niivue.Niivue.prototype.addColormap.call(null, "petctfm-hot", HOT);
    niivue.Niivue.prototype.addColormap.call(null, "petctfm-invgray", INVGRAY);
    for (const [id, role] of [["gl", "fused"], ["gl-pet", "pet"], ["gl-ct", "ct"]]) {
      const nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], isColorbar: false, show3Dcrosshair: false,
        isOrientationTextVisible: false, multiplanarShowRender: niivue.SHOW_RENDER.NEVER,
        dragMode: niivue.DRAG_MODE.contrast, crosshairColor: [1, 1, 1, 0.5], crosshairWidth: 1.5, crosshairWidthUnit: "mm", crosshairGap: 8,
        heroImageFraction: 0.62, heroSliceType: 0 });
      const v = { nv, role, canvas: $(id), overlay: $(id + "-ov") };
      await nv.attachTo(id);
      app.views.push(v);
    }
    app.nv = app.views[0].nv;
    for (const v of app.views) attach(v);
    setTool("click");
    await setLayout();
    drawColorbar();
    const ctx = document.createElement("canvas").getContext("webgl2");
    if (!ctx) msg("this browser has no WebGL2: the viewer needs it");
    await listCases();
  }
  start().catch((e) => msg("viewer: " + e.message));
})();
