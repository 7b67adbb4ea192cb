/* global document, window, fetch, EventSource, URLSearchParams */
// The web view's page script. Every value from the server (names, comments, addresses: all
// cluster- or foreign-controlled) reaches the DOM through textContent or an attribute set on an
// element made here; nothing is ever parsed as HTML. No build step, no external resources.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let version = null;
let updates = 0;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// Same rule as `iptables -vnL` (and the CLI): exact up to 99999, then K/M/G/T.
function humanCount(n) {
  if (n <= 99999) return String(n);
  const units = ["K", "M", "G", "T"];
  let value = Math.floor((n + 500) / 1000);
  let unit = 0;
  while (value > 9999 && unit < units.length - 1) {
    value = Math.floor((value + 500) / 1000);
    unit++;
  }
  return value + units[unit];
}

function percent(p) {
  return Math.round(p * 1e6) / 1e4 + "%";
}

async function getJson(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

// --- graph ------------------------------------------------------------------------------------

const BOX_W = 215;
const BOX_H = 48;
const COL_GAP = 56;
const ROW_GAP = 14;
// Arrows that skip a column run along this lane above the boxes instead of under them.
const LANE = 18;

function drawGraph(graph) {
  const columns = new Map();
  for (const n of graph.nodes) {
    if (!columns.has(n.column)) columns.set(n.column, []);
    columns.get(n.column).push(n);
  }
  const tallest = Math.max(...[...columns.values()].map((c) => c.length));
  const height = LANE + tallest * (BOX_H + ROW_GAP) + ROW_GAP;
  const maxColumn = Math.max(...graph.nodes.map((n) => n.column));
  const width = (maxColumn + 1) * (BOX_W + COL_GAP);
  const pos = new Map();
  for (const [column, nodes] of columns) {
    const offset = LANE + (height - LANE - nodes.length * (BOX_H + ROW_GAP) + ROW_GAP) / 2;
    nodes.forEach((n, i) => {
      pos.set(n.id, { x: 4 + column * (BOX_W + COL_GAP), y: offset + i * (BOX_H + ROW_GAP) });
    });
  }
  const root = svg("svg", {
    class: "graph",
    width,
    height,
    viewBox: "0 0 " + width + " " + height,
    role: "img",
    "aria-label": "service graph",
  });
  for (const e of graph.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + BOX_W;
    const y1 = a.y + BOX_H / 2;
    const x2 = b.x;
    const y2 = b.y + BOX_H / 2;
    const mid = (x1 + x2) / 2;
    if (x2 - x1 > COL_GAP + BOX_W) {
      const lane = LANE / 2;
      const r = COL_GAP / 2;
      const d = `M${x1},${y1} C${x1 + r},${y1} ${x1 + r},${lane} ${x1 + COL_GAP},${lane} L${x2 - COL_GAP},${lane} C${x2 - r},${lane} ${x2 - r},${y2} ${x2 - 4},${y2}`;
      root.appendChild(svg("path", { class: "lane", d }));
    } else {
      root.appendChild(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 4},${y2}` }));
    }
    root.appendChild(svg("path", { d: `M${x2 - 9},${y2 - 4} L${x2 - 3},${y2} L${x2 - 9},${y2 + 4}` }));
    if (e.label) {
      root.appendChild(svg("text", { class: "edge-label", x: mid - 18, y: (y1 + y2) / 2 - 4 }, e.label));
    }
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const g = svg("g", { class: n.kind, "data-node": n.kind });
    g.appendChild(svg("rect", { x: p.x, y: p.y, width: BOX_W, height: BOX_H, rx: 5 }));
    g.appendChild(svg("title", {}, n.label + (n.detail ? " — " + n.detail : "")));
    g.appendChild(svg("text", { class: "label", x: p.x + 8, y: p.y + 18 }, n.label));
    const detail = svg("text", { class: "detail", x: p.x + 8, y: p.y + 36 }, n.detail);
    g.appendChild(detail);
    if (n.counterKey) {
      const count = svg("text", {
        class: "count",
        x: p.x + BOX_W - 8,
        y: p.y + 18,
        "text-anchor": "end",
        "data-key": n.counterKey,
        "data-field": "packets",
        "data-suffix": " pkts",
      });
      g.appendChild(count);
    }
    root.appendChild(g);
  }
  return root;
}

// --- services ---------------------------------------------------------------------------
// The list is searched and paged on the server; a Service's page is fetched when it is opened
// (#service/4/ns/name), so the page never holds more than one page of a 10,000-Service node.

let listPage = 1;
let shownService = null;
let shownRules = null;

function serviceFromHash() {
  const m = /^#service\/([46])\/([^/]+)\/([^/]+)$/.exec(window.location.hash);
  return m ? m[1] + "/" + decodeURIComponent(m[2]) + "/" + decodeURIComponent(m[3]) : null;
}

async function loadList() {
  const q = document.querySelector("#services-form input[name=q]").value;
  const data = await getJson("/api/services?" + new URLSearchParams({ q, page: listPage, limit: 50 }));
  listPage = data.page;
  const list = document.getElementById("services-list");
  list.replaceChildren();
  const table = el("table", { class: "services" });
  const head = el("tr");
  for (const h of ["Service", "IPv", "frontends"]) head.appendChild(el("th", {}, h));
  table.appendChild(head);
  for (const s of data.services) {
    const row = el("tr", { "data-list-service": s.service, "data-family": s.family });
    const cell = el("td", { class: "mono" });
    const parts = s.service.split("/");
    const link = el(
      "a",
      {
        href:
          "#service/" + s.family + "/" + encodeURIComponent(parts[0]) + "/" + encodeURIComponent(parts[1]),
      },
      s.service,
    );
    cell.appendChild(link);
    row.appendChild(cell);
    row.appendChild(el("td", {}, s.family));
    row.appendChild(el("td", { class: "mono" }, s.frontends.join(", ")));
    table.appendChild(row);
  }
  if (data.services.length === 0) {
    const row = el("tr");
    row.appendChild(
      el(
        "td",
        { colspan: 3, class: "muted" },
        q ? "no Service matches " + JSON.stringify(q) : "no Service rules on this node",
      ),
    );
    table.appendChild(row);
  }
  list.appendChild(table);
  const count = document.getElementById("services-count");
  count.textContent =
    data.total + " Service" + (data.total === 1 ? "" : "s") + " · page " + data.page + " of " + data.pages;
  document.getElementById("services-prev").disabled = data.page <= 1;
  document.getElementById("services-next").disabled = data.page >= data.pages;
  list.setAttribute("data-query", q);
  list.setAttribute("data-page", String(data.page));
  return data;
}

function walkTable(walk) {
  const table = el("table", { class: "walk" });
  const head = el("tr");
  for (const h of ["pkts", "bytes", "rule"]) head.appendChild(el("th", {}, h));
  table.appendChild(head);
  for (const w of walk) {
    const row = el("tr", { "data-walk": w.depth });
    const attrs = w.counterKey ? { "data-key": w.counterKey } : {};
    row.appendChild(
      el(
        "td",
        Object.assign({ class: "pkts", "data-field": "packets" }, attrs),
        w.packets === undefined ? "" : w.packets,
      ),
    );
    row.appendChild(
      el(
        "td",
        Object.assign({ class: "bytes", "data-field": "bytes" }, attrs),
        w.bytes === undefined ? "" : w.bytes,
      ),
    );
    row.appendChild(el("td", { class: "mono depth-" + Math.min(w.depth, 8) }, w.text));
    table.appendChild(row);
  }
  return table;
}

async function loadService(id) {
  const box = document.getElementById("service");
  if (id === null) {
    box.replaceChildren();
    box.hidden = true;
    return null;
  }
  const s = await getJson("/api/service?" + new URLSearchParams({ service: id }));
  const section = el("div", { class: "service", "data-service": s.service, "data-family": s.family });
  const title = el("h3", {}, s.service);
  const named = s.servicePortNames.filter((n) => n !== s.service);
  title.appendChild(
    el("span", { class: "muted" }, "  IPv" + s.family + (named.length ? " · " + named.join(", ") : "")),
  );
  section.appendChild(title);
  section.appendChild(el("a", { href: "#", class: "back" }, "← all Services"));
  const scroll = el("div", { class: "scroll" });
  scroll.appendChild(drawGraph(s.graph));
  section.appendChild(scroll);
  const table = el("table", { class: "endpoints" });
  const head = el("tr");
  for (const h of ["endpoint", "share of new connections", "via", "endpoint chain", "pkts", "bytes"])
    head.appendChild(el("th", {}, h));
  table.appendChild(head);
  for (const e of s.endpoints) {
    const row = el("tr", { "data-endpoint": e.endpoint });
    row.appendChild(el("td", { class: "mono" }, e.endpoint));
    row.appendChild(el("td", { class: "num" }, percent(e.probability)));
    row.appendChild(el("td", { class: "mono" }, e.viaChain));
    row.appendChild(el("td", { class: "mono" }, e.sepChain));
    const attrs = e.counterKey ? { "data-key": e.counterKey } : {};
    row.appendChild(
      el("td", Object.assign({ class: "pkts", "data-field": "packets" }, attrs), e.packets ?? "-"),
    );
    row.appendChild(
      el("td", Object.assign({ class: "bytes", "data-field": "bytes" }, attrs), e.bytes ?? "-"),
    );
    table.appendChild(row);
  }
  if (s.endpoints.length === 0) {
    const row = el("tr");
    row.appendChild(el("td", { colspan: 6, class: "muted" }, "no endpoints: new connections are not DNATed"));
    table.appendChild(row);
  }
  section.appendChild(table);
  section.appendChild(el("h4", {}, "the walk"));
  const walk = el("div", { class: "scroll" });
  walk.appendChild(walkTable(s.walk));
  section.appendChild(walk);
  box.replaceChildren(section);
  box.hidden = false;
  return s;
}

async function loadServices() {
  const data = await loadList();
  shownService = serviceFromHash();
  await loadService(shownService);
  return data;
}

// --- rules ----------------------------------------------------------------------------------

async function loadRules() {
  const q = document.querySelector("#search-form input[name=q]").value;
  const data = await getJson("/api/rules?" + new URLSearchParams({ q }));
  const table = document.getElementById("rules");
  table.replaceChildren();
  const head = el("tr");
  // The server names the -vnL columns (`columns`), so the page does not repeat the layout.
  for (const h of ["IPv", "table", "chain", ...data.columns]) head.appendChild(el("th", {}, h));
  table.appendChild(head);
  for (const r of data.rules) {
    const row = el("tr", { "data-key": r.key, title: r.rule });
    row.appendChild(el("td", {}, r.family));
    row.appendChild(el("td", {}, r.table));
    row.appendChild(el("td", { class: "mono" }, r.chain));
    for (const f of data.columns) {
      const attrs = { class: f };
      if (f === "pkts" || f === "bytes") {
        attrs["data-key"] = r.key;
        attrs["data-field"] = f === "pkts" ? "packets" : "bytes";
        attrs["data-human"] = "1";
      }
      row.appendChild(el("td", attrs, r[f]));
    }
    table.appendChild(row);
  }
  table.setAttribute("data-query", q);
  shownRules = q;
  const count = document.getElementById("rules-count");
  count.textContent =
    data.total +
    " rule" +
    (data.total === 1 ? "" : "s") +
    (data.truncated ? " (first " + data.rules.length + " shown)" : "");
}

// --- trace ----------------------------------------------------------------------------------

async function runTrace(form) {
  const out = document.getElementById("trace");
  out.replaceChildren(el("p", { class: "muted" }, "tracing…"));
  const params = new URLSearchParams(new window.FormData(form));
  let data;
  try {
    data = await getJson("/api/trace?" + params);
  } catch (err) {
    out.replaceChildren(el("p", { class: "error" }, err.message));
    return;
  }
  out.replaceChildren();
  const p = data.packet;
  out.appendChild(
    el(
      "p",
      {},
      p.protocol +
        " " +
        p.src +
        (p.srcPort ? ":" + p.srcPort : "") +
        " → " +
        p.dst +
        ":" +
        p.dstPort +
        " from " +
        data.origin +
        " (" +
        (p.state || "NEW") +
        ")",
    ),
  );
  const table = el("table", { class: "outcomes" });
  const head = el("tr");
  for (const h of ["#", "probability", "verdict", "DNAT", "destination", "delivery", "masquerade", "assumes"])
    head.appendChild(el("th", {}, h));
  table.appendChild(head);
  data.outcomes.forEach((o, i) => {
    const row = el("tr", { class: "outcome", "data-dnat": o.dnat || "", "data-probability": o.probability });
    const cells = [
      i + 1,
      percent(o.probability),
      o.verdict,
      o.dnat || "—",
      o.destination,
      o.delivery,
      o.verdict === "ACCEPT" ? (o.masquerade ? "yes" : "no") : "",
      o.assumptions.join("; "),
    ];
    cells.forEach((c) => row.appendChild(el("td", {}, c)));
    table.appendChild(row);
  });
  out.appendChild(table);
  if (data.truncated)
    out.appendChild(el("p", { class: "muted" }, "some unknown matches were not explored both ways"));
  data.outcomes.forEach((o, i) => {
    const details = el("details");
    details.appendChild(el("summary", {}, "path of outcome " + (i + 1) + " (" + o.path.length + " steps)"));
    const list = el("ol", { class: "path" });
    for (const s of o.path) {
      const where =
        s.kind === "rule"
          ? s.chain + " #" + s.ruleNumber + ": " + s.rule + " → "
          : s.kind === "chain"
            ? "[" + (s.hook || "") + "] " + (s.table || "") + " " + s.chain + " "
            : "";
      list.appendChild(el("li", {}, "  ".repeat(s.depth) + where + (s.effect || "")));
    }
    details.appendChild(list);
    out.appendChild(details);
  });
}

// --- live counters --------------------------------------------------------------------------

function applyCounters(counters) {
  for (const node of document.querySelectorAll("[data-key][data-field]")) {
    const c = counters[node.getAttribute("data-key")];
    if (!c) continue;
    const value = node.getAttribute("data-field") === "packets" ? c[0] : c[1];
    const text =
      (node.getAttribute("data-human") ? humanCount(value) : String(value)) +
      (node.getAttribute("data-suffix") || "");
    if (node.textContent !== text) {
      node.textContent = text;
      node.parentNode.classList.toggle("bump", true);
    }
  }
}

async function reloadAll() {
  const data = await loadServices();
  if (shownRules !== null) await loadRules();
  version = data.version;
  listen();
}

// The event stream carries the counters of what is on screen: the Service's page, the rules shown.
let events = null;
let eventsUrl = null;

function listen() {
  const params = new URLSearchParams();
  params.set("service", shownService || "");
  if (shownRules !== null) params.set("rules", shownRules);
  const url = "/api/events?" + params;
  if (events !== null && url === eventsUrl) return;
  if (events !== null) events.close();
  eventsUrl = url;
  events = new EventSource(url);
  events.addEventListener("counters", async (ev) => {
    const data = JSON.parse(ev.data);
    try {
      if (data.version !== version) await reloadAll();
      applyCounters(data.counters);
      updates++;
      const status = document.getElementById("status");
      status.setAttribute("data-updates", String(updates));
      setStatus("live · counters at " + new Date(data.takenAt).toLocaleTimeString(), false);
    } catch (err) {
      setStatus(err.message, true);
    }
  });
  events.addEventListener("failure", (ev) =>
    setStatus("cannot read the rules: " + JSON.parse(ev.data).error, true),
  );
  events.onerror = () => setStatus("disconnected: retrying…", true);
}

function showError(err) {
  setStatus(err.message, true);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("trace-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void runTrace(ev.target);
  });
  document.getElementById("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadRules().then(listen).catch(showError);
  });
  document.getElementById("services-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    listPage = 1;
    loadList().catch(showError);
  });
  document.getElementById("services-prev").addEventListener("click", () => {
    listPage = Math.max(1, listPage - 1);
    loadList().catch(showError);
  });
  document.getElementById("services-next").addEventListener("click", () => {
    listPage++;
    loadList().catch(showError);
  });
  window.addEventListener("hashchange", () => {
    shownService = serviceFromHash();
    loadService(shownService).then(listen).catch(showError);
  });
  reloadAll().catch(showError);
});
