// petctfm serve: the page. Plain JS over niivue (vendored) and the server's JSON API (docs/viewer.md).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const V = { CT: 0, PET: 1, MASK: 2 };
  const app = { nv: null, caseId: null, state: null, busy: false, boxMode: false, boxA: null, navigate: false,
                selected: null, down: null, mipPet: null, dims: null, affine: null, ready: false };
  window.petctfmViewer = app;  // for tests and the console

  // the token came in the URL; the server set an HttpOnly cookie with it, so drop it from the address bar
  if (location.search.includes("token=")) history.replaceState(null, "", location.pathname);
  $("user").value = localStorage.getItem("petctfm-user") || "";
  $("user").onchange = () => localStorage.setItem("petctfm-user", $("user").value);

  const msg = (text) => { $("msg").textContent = text || ""; };
  const status = (text) => { $("status").textContent = text; };
  const api = (path) => "/api/cases/" + encodeURIComponent(app.caseId) + path;

  // state-changing requests carry the CSRF token the server put in the page (docs/viewer.md, Security)
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  async function call(path, body) {
    const r = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF }, body: JSON.stringify(body) });
    const data = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

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

  async function openCase(id) {
    msg(""); status("opening " + id + " …"); app.ready = false;
    app.caseId = id;
    let st;
    try { st = await call(api("/open"), {}); } catch (e) { msg(e.message); status("could not open " + id); return; }
    const nv = app.nv;
    const [lo, hi] = $("pet-wl").value.split(",").map(Number);
    const [clo, chi] = $("ct-wl").value.split(",").map(Number);
    await nv.loadVolumes([
      { url: api("/volume/ct.nii.gz"), colormap: "gray", cal_min: clo, cal_max: chi },
      { url: api("/volume/pet.nii.gz"), colormap: "hot", opacity: 0.6, cal_min: lo, cal_max: hi },
      { url: api("/volume/mask.nii.gz"), colormap: "red", opacity: 0.55, cal_min: 0, cal_max: 1 },
    ]);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    const pet = nv.volumes[V.PET];
    app.dims = pet.hdr.dims.slice(1, 4);
    app.affine = pet.hdr.affine;
    app.mipPet = mip(pet.img, 0);
    show(st);
    await refreshMask();
    app.ready = true;
    status(`${id}: ${app.dims.join("×")} voxels; opened in ${(st.timings_s.open_s || 0).toFixed(2)} s`);
  }

  // -- the PET MIP (anterior), computed here from the loaded PET; mask MIP drawn over it in red --------------
  function mipAxes() {
    const a = app.affine, pick = (w) => [0, 1, 2].reduce((b, i) => Math.abs(a[w][i]) > Math.abs(a[w][b]) ? i : b, 0);
    return { r: pick(0), ant: pick(1), s: pick(2), sr: Math.sign(a[0][pick(0)]), ss: Math.sign(a[2][pick(2)]) };
  }
  function mip(img, thresholdOnly) {
    const d = app.dims, ax = mipAxes(), w = d[ax.r], h = d[ax.s], out = new Float32Array(w * h);
    const stride = [1, d[0], d[0] * d[1]];
    for (let u = 0; u < w; u++) for (let v = 0; v < h; v++) {
      const ir = ax.sr > 0 ? w - 1 - u : u, is = ax.ss > 0 ? h - 1 - v : v;  // viewer's left = patient's right
      let m = 0; const base = ir * stride[ax.r] + is * stride[ax.s];
      for (let k = 0; k < d[ax.ant]; k++) { const x = img[base + k * stride[ax.ant]]; if (x > m) m = x; }
      out[v * w + u] = thresholdOnly ? (m > 0 ? 1 : 0) : m;
    }
    return { w, h, data: out };
  }
  function drawMip(maskMip) {
    const c = $("mip"), p = app.mipPet; if (!p) return;
    const sp = app.nv.volumes[V.PET].hdr.pixDims, ax = mipAxes();
    c.width = p.w; c.height = p.h;
    c.style.aspectRatio = `${p.w * sp[ax.r + 1]} / ${p.h * sp[ax.s + 1]}`;
    const ctx = c.getContext("2d"), im = ctx.createImageData(p.w, p.h);
    const hi = Number($("pet-wl").value.split(",")[1]);
    for (let i = 0; i < p.data.length; i++) {
      const g = 255 - Math.min(255, Math.max(0, (p.data[i] / hi) * 255));
      const m = maskMip && maskMip.data[i] > 0;
      im.data.set(m ? [255, g * 0.3, g * 0.3, 255] : [g, g, g, 255], 4 * i);
    }
    ctx.putImageData(im, 0, 0);
  }

  // -- state, mask ------------------------------------------------------------------------------------------
  function show(st) {
    app.state = st;
    $("lesion-count").textContent = st.totals.count;
    $("mtv").textContent = st.totals.mtv_ml.toFixed(1);
    $("tlg").textContent = st.totals.tlg.toFixed(1);
    $("undo").disabled = !st.can_undo; $("redo").disabled = !st.can_redo;
    $("auto").disabled = !st.has_auto;
    const f = (x, n) => (x === null || x === undefined ? "—" : Number(x).toFixed(n));
    const esc = (t) => String(t).replace(/[<>&"]/g, "");
    $("organs").tBodies[0].innerHTML = (st.organs || []).map((r) =>
      `<tr data-id="${r.object}" class="${r.object === app.selected ? "sel" : ""}"><td>${r.object}</td>` +
      `<td>${esc(r.name).replace(/_/g, " ")}</td><td>${f(r.volume_ml, 1)}</td><td>${f(r.suv_mean, 2)}</td>` +
      `<td><button data-del="${r.object}" title="delete">×</button></td></tr>`).join("");
    $("lesions").tBodies[0].innerHTML = st.lesions.map((r) =>
      `<tr data-id="${r.object}" class="${r.object === app.selected ? "sel" : ""}"><td>${r.object}</td>` +
      `<td>${f(r.volume_ml, 2)}</td><td>${f(r.suv_max, 2)}</td><td>${f(r.suv_mean, 2)}</td>` +
      `<td>${f(r.suv_peak, 2)}</td><td>${f(r.tlg, 1)}</td><td><button data-del="${r.object}" title="delete">×</button></td></tr>`
    ).join("");
  }
  async function refreshMask() {
    const r = await fetch(api("/mask"));
    if (!r.ok) { msg("mask: " + r.statusText); return; }
    const bits = new Uint8Array(await r.arrayBuffer()), vol = app.nv.volumes[V.MASK], img = vol.img;
    for (let i = 0; i < img.length; i++) img[i] = (bits[i >> 3] >> (i & 7)) & 1;
    app.nv.updateGLVolume();
    drawMip(mip(img, 1));
  }
  async function change(action, body) {
    if (!app.caseId) return;
    if (app.busy) { msg("busy: wait for the last change to finish"); return; }
    app.busy = true; msg("");
    const t0 = performance.now();
    try {
      const st = await call(api("/" + action), { version: app.state.version, user: $("user").value, ...body });
      show(st);
      await refreshMask();
      status(`${action}: ${(performance.now() - t0).toFixed(0)} ms (model ${(st.timings_s.last_change_s * 1000).toFixed(0)} ms)`);
    } catch (e) { msg(e.message); }
    finally { app.busy = false; }
  }

  // -- mouse and keys ---------------------------------------------------------------------------------------
  function crosshairMM() {
    const m = app.nv.frac2mm(app.nv.scene.crosshairPos);
    return [m[0], m[1], m[2]];
  }
  function boxFrom(a, b) {
    const lo = [0, 1, 2].map((i) => Math.min(a[i], b[i])), hi = [0, 1, 2].map((i) => Math.max(a[i], b[i]));
    const ext = Math.max(...[0, 1, 2].map((i) => hi[i] - lo[i]));
    for (let i = 0; i < 3; i++) if (hi[i] - lo[i] < 2) { const c = (hi[i] + lo[i]) / 2; lo[i] = c - ext / 2; hi[i] = c + ext / 2; }
    return { lo, hi };
  }
  function target() {  // which object a click or box goes to: the selected row, else the chosen kind
    if (app.selected) return { object: app.selected };
    const organ = $("kind").value;
    return organ ? { kind: "organ", name: organ } : {};
  }
  function onClick(shift) {
    if (!app.ready || app.navigate) return;
    const ras = crosshairMM();
    if (app.boxMode) {
      if (!app.boxA) { app.boxA = ras; status("box: click the opposite corner"); return; }
      const b = boxFrom(app.boxA, ras); app.boxA = null; setBox(false);
      return change("box", { lo: b.lo, hi: b.hi, ...target() });
    }
    return change("click", { ras, positive: !shift, ...target() });
  }
  function setBox(on) { app.boxMode = on; app.boxA = null; $("box").classList.toggle("on", on); }

  const gl = $("gl");
  gl.addEventListener("pointerdown", (e) => { if (e.button === 0) app.down = { x: e.clientX, y: e.clientY, shift: e.shiftKey }; });
  gl.addEventListener("pointerup", (e) => {
    const d = app.down; app.down = null;
    if (!d || e.button !== 0 || Math.hypot(e.clientX - d.x, e.clientY - d.y) > 4) return;
    setTimeout(() => onClick(d.shift || e.shiftKey), 0);  // after niivue has moved the crosshair
  });
  const onRow = (e) => {
    const del = e.target.getAttribute("data-del");
    if (del) return change("delete", { object: Number(del) });
    const tr = e.target.closest("tr[data-id]");
    if (tr) { const id = Number(tr.dataset.id); app.selected = app.selected === id ? null : id; show(app.state); }
  };
  $("lesions").addEventListener("click", onRow);
  $("organs").addEventListener("click", onRow);
  // the SUV under the mouse (the crosshair's is in #suv): canvas position -> niivue fraction -> PET voxel
  gl.addEventListener("mousemove", (e) => {
    if (!app.ready) return;
    const nv = app.nv, r = gl.getBoundingClientRect(), dpr = nv.uiData.dpr || 1;
    const frac = nv.canvasPos2frac([(e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr]);
    app.hover = null;
    if (frac && frac.every((c) => c >= 0 && c <= 1)) {  // as niivue's own onLocationChange reads values
      const vol = nv.volumes[V.PET], mm = nv.frac2mm(frac, 0, true), v = vol.mm2vox(mm);
      app.hover = { voxel: Array.from(v), mm: Array.from(mm).slice(0, 3), suv: vol.getValue(v[0], v[1], v[2]) };
    }
    $("hover").textContent = app.hover
      ? `mouse: SUV ${Number(app.hover.suv).toFixed(2)} at [${app.hover.mm.map((x) => x.toFixed(0))}] mm` : "mouse: —";
  });
  gl.addEventListener("mouseleave", () => { app.hover = null; $("hover").textContent = "mouse: —"; });
  $("auto").onclick = () => change("auto", {});
  $("undo").onclick = () => change("undo", {});
  $("redo").onclick = () => change("redo", {});
  $("box").onclick = () => setBox(!app.boxMode);
  $("nav").onclick = () => { app.navigate = !app.navigate; $("nav").classList.toggle("on", app.navigate); };
  $("save").onclick = async () => {
    try {
      const r = await call(api("/save"), { user: $("user").value });
      status("saved: " + r.files.map((f) => f.split("/").pop()).join(", "));
    } catch (e) { msg(e.message); }
  };
  $("pet-wl").onchange = () => {
    const [lo, hi] = $("pet-wl").value.split(",").map(Number), v = app.nv.volumes[V.PET];
    if (v) { v.cal_min = lo; v.cal_max = hi; app.nv.updateGLVolume(); refreshMask(); }
  };
  $("ct-wl").onchange = () => {
    const [lo, hi] = $("ct-wl").value.split(",").map(Number), v = app.nv.volumes[V.CT];
    if (v) { v.cal_min = lo; v.cal_max = hi; app.nv.updateGLVolume(); }
  };
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const k = e.key.toLowerCase(), mod = e.ctrlKey || e.metaKey;
    if (mod && k === "z") { e.preventDefault(); change(e.shiftKey ? "redo" : "undo", {}); }
    else if (mod && k === "y") { e.preventDefault(); change("redo", {}); }
    else if (mod && k === "s") { e.preventDefault(); $("save").click(); }
    else if (!mod && k === "a") change("auto", {});
    else if (!mod && k === "b") setBox(!app.boxMode);
    else if (!mod && k === "n") $("nav").click();
    else if (k === "escape") { setBox(false); app.selected = null; if (app.state) show(app.state); }
  }, true);

  async function start() {
    const nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], isColorbar: false, show3Dcrosshair: false,
      multiplanarShowRender: niivue.SHOW_RENDER.NEVER, dragMode: niivue.DRAG_MODE.contrast,
      crosshairColor: [0.2, 0.8, 1, 0.8], crosshairWidth: 1 });
    app.nv = nv;
    await nv.attachTo("gl");
    nv.onLocationChange = (data) => {
      const v = data && data.values && data.values[V.PET];
      $("suv").textContent = v ? `SUV ${Number(v.value).toFixed(2)} at [${data.mm.slice(0, 3).map((x) => x.toFixed(0))}] mm` : "SUV —";
    };
    const ctx = document.createElement("canvas").getContext("webgl2");
    if (!ctx) msg("this browser has no WebGL2: the viewer needs it");
    await listCases();
  }
  start().catch((e) => msg("viewer: " + e.message));
})();
