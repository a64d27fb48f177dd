// graphtag report: module tree, hierarchy chart (plotly, inlined), module graph, search.
// Everything comes from the JSON in #report-data; nothing is fetched.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const M = D.modules;
  const hasTime = D.profile !== null;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- helpers
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) =>
    ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
  const int = (n) => (n === null || n === undefined) ? "" : n.toLocaleString("en-US");
  function compact(n) {
    if (!n) return "0";
    const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [size, unit] of units) if (n >= size) return (n / size).toFixed(n >= 10 * size ? 1 : 2) + unit;
    return String(n);
  }
  function bytes(n) {
    if (!n) return "0 B";
    const units = [[2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]];
    for (const [size, unit] of units) if (n >= size) return (n / size).toFixed(1) + " " + unit;
    return n + " B";
  }
  const ms = (v) => (v === null || v === undefined) ? "" : v.toFixed(v >= 100 ? 0 : 2);
  const shortClass = (c) => c ? c.slice(c.lastIndexOf(".") + 1) : "";
  const depth = new Int32Array(M.length);
  for (let i = 1; i < M.length; i++) depth[i] = depth[M[i].parent] + 1;  // pre-order

  // ---------------------------------------------------------------- header
  $("title").textContent = D.title;
  const m = D.model;
  const totals = [
    ["nodes", int(m.nodes)], ["modules", int(m.modules)], ["parameters", compact(m.params)],
    ["initializers", bytes(m.bytes)], ["shared parameters", int(m.shared_parameters)],
  ];
  if (m.functions) totals.push(["functions", int(m.functions)]);
  if (hasTime) totals.push(["profiled total", ms(D.profile.total_ms) + " ms"]);
  if (m.opset) totals.push(["opset", m.opset]);
  $("totals").innerHTML = totals.map(([k, v]) => `${esc(k)} <b>${esc(v)}</b>`).join(" · ");
  $("notes").innerHTML = D.notes.map((n) => `<div class="note">${esc(n)}</div>`).join("");

  // ---------------------------------------------------------------- tree
  const columns = [
    ["module", "name"], ["class", ""], ["nodes", "num"], ["params", "num"], ["size", "num"],
  ];
  if (hasTime) columns.push(["self ms", "num"], ["total ms", "num"], ["calls", "num"]);
  $("tree-head").innerHTML = columns.map(([t, c]) => `<th class="${c}">${esc(t)}</th>`).join("");
  const expanded = new Uint8Array(M.length);
  expanded[0] = 1;
  let selected = 0;
  let matches = null;     // Uint8Array: module matches the search, or null (no search)
  let onPath = null;      // Uint8Array: module is a match or an ancestor of one

  function rowHtml(i) {
    const e = M[i];
    const kids = e.children.length;
    const open = matches ? onPath[i] && e.children.some((c) => onPath[c]) || expanded[i] : expanded[i];
    const twisty = kids ? (open ? "▾" : "▸") : "";
    const cls = ["row"];
    if (i === selected) cls.push("selected");
    if (matches && matches[i]) cls.push("hit");
    const dim = e.executed === false ? " dim" : "";
    let html = `<tr data-i="${i}" data-tag="${esc(e.tag)}" class="${cls.join(" ")}">` +
      `<td class="name${dim}" style="padding-left:${6 + depth[i] * 14}px" title="${esc(e.tag)}">` +
      `<span class="twisty">${twisty}</span>${esc(e.name)}</td>` +
      `<td class="cls" title="${esc(e.class)}">${esc(shortClass(e.class))}</td>` +
      `<td class="num">${int(e.nodes_incl)}</td><td class="num">${compact(e.params_incl)}</td>` +
      `<td class="num">${bytes(e.bytes_incl)}</td>`;
    if (hasTime) html += `<td class="num">${ms(e.self_ms)}</td><td class="num">${ms(e.total_ms)}</td>` +
      `<td class="num">${int(e.calls)}</td>`;
    return html + "</tr>";
  }

  function isOpen(i) {
    if (matches) return expanded[i] || M[i].children.some((c) => onPath[c]);
    return expanded[i];
  }

  function renderTree() {
    const parts = [];
    const stack = [0];
    while (stack.length) {
      const i = stack.pop();
      if (matches && !onPath[i]) continue;
      parts.push(rowHtml(i));
      if (isOpen(i)) {
        const kids = M[i].children;
        for (let k = kids.length - 1; k >= 0; k--) stack.push(kids[k]);
      }
    }
    document.querySelector("#tree tbody").innerHTML = parts.join("");
  }

  document.querySelector("#tree tbody").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-i]");
    if (!row) return;
    const i = Number(row.dataset.i);
    if (event.target.classList.contains("twisty")) {
      expanded[i] = isOpen(i) ? 0 : 1;
      if (matches && !expanded[i]) for (const c of M[i].children) onPath[c] = 0;
      renderTree();
      return;
    }
    select(i, false);
  });
  $("expand-all").addEventListener("click", () => { expanded.fill(1); renderTree(); });
  $("collapse-all").addEventListener("click", () => { expanded.fill(0); expanded[0] = 1; renderTree(); });

  function reveal(i) {
    for (let p = M[i].parent; p >= 0; p = M[p].parent) expanded[p] = 1;
  }

  // ---------------------------------------------------------------- search
  function parseQuery(text) {
    return text.trim().toLowerCase().split(/\s+/).filter(Boolean).map((token) => {
      const cut = token.indexOf(":");
      const field = cut > 0 ? token.slice(0, cut) : "";
      if (["op", "class", "tag"].includes(field)) return [field, token.slice(cut + 1)];
      return ["", token];
    });
  }
  const lowerOps = M.map((e) => Object.keys(e.ops).map((o) => o.toLowerCase()));
  function matchesToken(i, field, value) {
    const e = M[i];
    if (!value) return true;
    const tag = field === "" || field === "tag" ? e.tag.toLowerCase().includes(value) : false;
    const cls = field === "" || field === "class" ? e.class.toLowerCase().includes(value) : false;
    const op = field === "" || field === "op" ? lowerOps[i].some((o) => o === value || (field === "op" && o.includes(value))) : false;
    return tag || cls || op;
  }
  function runSearch() {
    const tokens = parseQuery($("search").value);
    document.body.dataset.query = $("search").value;  // tests wait for it
    if (!tokens.length) {
      matches = onPath = null;
      $("search-info").textContent = "";
      renderTree();
      return;
    }
    matches = new Uint8Array(M.length);
    onPath = new Uint8Array(M.length);
    let count = 0;
    for (let i = 0; i < M.length; i++) {
      if (tokens.every(([f, v]) => matchesToken(i, f, v))) {
        matches[i] = 1;
        count++;
        for (let p = i; p >= 0 && !onPath[p]; p = M[p].parent) onPath[p] = 1;
      }
    }
    $("search-info").textContent = count ? `${count} module${count === 1 ? "" : "s"} match` : "no module matches";
    renderTree();
  }
  let searchTimer = 0;
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(runSearch, 120); });

  // ---------------------------------------------------------------- details
  function chips(items) {
    return items.length ? `<div class="chips">${items.map((s) => `<span>${esc(s)}</span>`).join("")}</div>` : "<span class=muted>none</span>";
  }
  function renderDetails(i) {
    const e = M[i];
    const rows = [
      ["class", e.class ? `<code>${esc(e.class)}</code>` : `<span class=muted>${e.in_hierarchy ? "" : "not in the stored hierarchy"}</span>`],
    ];
    if (e.torch_name !== null) rows.push(["PyTorch name", `<code>${esc(e.torch_name || "(root)")}</code>`]);
    if (e.executed === false) rows.push(["executed", "no (never ran in the traced forward)"]);
    rows.push(["nodes", `${int(e.nodes)} own, ${int(e.nodes_incl)} with descendants`]);
    rows.push(["parameters", `${int(e.params)} own (${bytes(e.bytes)}), ${int(e.params_incl)} with descendants (${bytes(e.bytes_incl)})`]);
    const ops = Object.entries(e.ops).map(([k, v]) => `${k} ×${v}`);
    rows.push(["op types", chips(ops)]);
    rows.push(["shared parameters", chips(e.shared)]);
    const fns = Object.entries(e.functions).map(([k, v]) => `${k} ×${v}`).concat(e.outlined_as.map((k) => `outlined as ${k}`));
    rows.push(["functions", chips(fns)]);
    const inferred = Object.entries(e.inferred).map(([k, v]) => `${k}: ${v}`);
    rows.push(["inferred tags", chips(inferred)]);
    rows.push(["nodes with contexts", int(e.contexts)]);
    if (hasTime) rows.push(["time", e.total_ms === null ? "<span class=muted>not in the profile</span>" :
      `${ms(e.self_ms)} ms self, ${ms(e.total_ms)} ms total, ${int(e.calls)} call(s)` +
      (D.profile.total_ms ? ` (${(100 * e.total_ms / D.profile.total_ms).toFixed(1)}% of ${ms(D.profile.total_ms)} ms)` : "")]);
    let inits = "";
    if (e.initializers.length) {
      inits = `<details><summary>${e.initializers.length + e.initializers_more} initializer(s) counted here</summary><table>` +
        e.initializers.map(([name, shape, dtype, b]) => `<tr><td class="mono">${esc(name)}</td><td class="mono">${esc(dtype)}[${esc((shape || ["?"]).join(","))}]</td><td>${bytes(b)}</td></tr>`).join("") +
        (e.initializers_more ? `<tr><td colspan=3 class=muted>+${e.initializers_more} more</td></tr>` : "") + "</table></details>";
    }
    $("details").innerHTML = `<h2 class="mono">${esc(e.tag || "(model)")}</h2><table>` +
      rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`).join("") + `</table>${inits}`;
  }

  // ---------------------------------------------------------------- chart
  const metricKey = {params: "params", bytes: "bytes", nodes: "nodes", time: "self_ms"};
  const metricName = {params: "parameters", bytes: "bytes", nodes: "nodes", time: "self ms"};
  if (!hasTime) $("chart-metric").querySelector("option[value=time]").disabled = true;
  if (hasTime) $("chart-metric").value = "time";
  const ids = M.map((_, i) => String(i));
  const parents = M.map((e) => e.parent < 0 ? "" : String(e.parent));
  const labels = M.map((e) => e.name);
  let chartReady = false;
  function drawChart() {
    const kind = $("chart-kind").value;
    const metric = $("chart-metric").value;
    const key = metricKey[metric];
    const values = M.map((e) => Math.max(0, e[key] || 0));
    const total = values.reduce((a, b) => a + b, 0);
    $("chart-note").textContent = total ? `${kind} of the module tree sized by ${metricName[metric]} (click to zoom, the root to zoom out)` :
      `nothing to size by ${metricName[metric]}: every module has 0`;
    const incl = new Float64Array(M.length);
    for (let i = M.length - 1; i >= 0; i--) { incl[i] += values[i]; if (M[i].parent >= 0) incl[M[i].parent] += incl[i]; }
    const fmt = metric === "bytes" ? bytes : metric === "time" ? (v) => ms(v) + " ms" : compact;
    const hover = M.map((e, i) => `${esc(e.tag || "(model)")}<br>${esc(shortClass(e.class))}<br>${metricName[metric]}: ${fmt(incl[i])}`);
    const trace = {
      type: kind, ids, labels, parents, values, branchvalues: "remainder", maxdepth: 3,
      hovertext: hover, hoverinfo: "text", textinfo: "label",
    };
    if (kind === "treemap") trace.pathbar = {visible: true};
    const layout = {margin: {t: 4, l: 4, r: 4, b: 4}, uirevision: kind};
    Plotly.react($("chart"), [trace], layout, {displaylogo: false, responsive: true, displayModeBar: false});
    if (!chartReady) {
      chartReady = true;
      $("chart").on("plotly_click", (ev) => {
        const point = ev && ev.points && ev.points[0];
        if (point && point.id !== undefined) select(Number(point.id), true);
      });
    }
  }
  $("chart-kind").addEventListener("change", drawChart);
  $("chart-metric").addEventListener("change", drawChart);

  // ---------------------------------------------------------------- module graph
  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  const indexOfTag = new Map(M.map((e, i) => [e.tag, i]));
  function renderGraph(i) {
    const e = M[i];
    const host = $("graph");
    host.textContent = "";
    $("graph-title").textContent = e.tag || "(model)";
    const g = e.graph;
    if (!g) {
      $("graph-note").textContent = e.children.length ?
        "its children hold no node of the main graph" :
        `no child modules: its ${e.nodes} node(s) are listed under op types above`;
      return;
    }
    $("graph-note").textContent = `${g.boxes.length} boxes, ${g.edges.length} flows; click a child to open it. Dashed: against graph order.`;
    const svg = el("svg", {width: g.width, height: g.height, viewBox: `0 0 ${g.width} ${g.height}`}, host);
    const defs = el("defs", {}, svg);
    const marker = el("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"}, defs);
    el("path", {d: "M0,0 L10,5 L0,10 z", fill: "#8b95a7"}, marker);
    const byId = new Map(g.boxes.map((b) => [b.id, b]));
    for (const edge of g.edges) {
      const a = byId.get(edge.s), b = byId.get(edge.t);
      let d;
      const x1 = a.x + a.w / 2, y1 = a.y + a.h, x2 = b.x + b.w / 2, y2 = b.y;
      if (edge.via === null) {
        const my = (y1 + y2) / 2;
        d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
      } else {  // back or layer-skipping: down (or up) the right of the boxes in between
        const v = edge.via, ya = a.y + a.h / 2, yb = b.y + b.h / 2;
        d = `M${a.x + a.w},${ya} C${v},${ya} ${v},${ya} ${v},${(ya + yb) / 2} S${v},${yb} ${b.x + b.w},${yb}`;
      }
      const path = el("path", {d, class: "edge" + (edge.back ? " back" : ""), "marker-end": "url(#arrow)"}, svg);
      const t = el("title", {}, path);
      t.textContent = `${edge.n} value(s): ${edge.names.join(", ")}${edge.n > edge.names.length ? ", ..." : ""}`;
      if (edge.n > 1 && edge.via === null) {
        const label = el("text", {x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2, class: "edge-label"}, svg);
        label.textContent = "×" + edge.n;
      }
    }
    for (const b of g.boxes) {
      const kind = b.id === "in" || b.id === "out" ? "io" : b.id === "self" ? "self" : "child";
      const group = el("g", {class: "box " + kind, "data-id": b.id, transform: `translate(${b.x},${b.y})`}, svg);
      el("rect", {width: b.w, height: b.h, rx: 4}, group);
      const maxChars = Math.floor((b.w - 12) / 7);
      const cut = (s) => s.length > maxChars ? s.slice(0, maxChars - 1) + "…" : s;
      const t1 = el("text", {x: 8, y: b.sub ? 16 : 24}, group);
      t1.textContent = cut(b.label);
      if (b.sub) { const t2 = el("text", {x: 8, y: 31, class: "sub"}, group); t2.textContent = cut(b.sub); }
      const title = el("title", {}, group);
      title.textContent = kind === "child" ? b.id : b.label;
      if (kind === "child") group.addEventListener("click", () => select(indexOfTag.get(b.id), true));
    }
  }

  // ---------------------------------------------------------------- selection
  function select(i, fromOutside) {
    if (i === undefined || i < 0 || i >= M.length) return;
    selected = i;
    if (fromOutside) reveal(i);
    renderTree();
    renderDetails(i);
    renderGraph(i);
    if (fromOutside) {
      const row = document.querySelector(`#tree tr[data-i="${i}"]`);
      if (row) row.scrollIntoView({block: "nearest"});
    }
  }

  // Expand single-child chains from the root, so the first screen shows real structure.
  for (let i = 0; M[i].children.length === 1; i = M[i].children[0]) expanded[M[i].children[0]] = 1;
  select(0, false);
  drawChart();
  document.body.dataset.ready = "1";  // for tests and scripts: the first render is done
})();
