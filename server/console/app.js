// PCS console: one page, no dependencies. Every view reads /console/api/* (JSON) and redraws
// itself every few seconds; actions POST to /console/api/admin/* (admin role).
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const page = $("#page");
let timer = null;
let heatState = { metric: "writes", table: "", start: "", end: "", rows: 96 };

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function b64hex(b) {
  if (!b) return "";
  const s = atob(b);
  let out = "";
  for (let i = 0; i < s.length; i++) out += s.charCodeAt(i).toString(16).padStart(2, "0");
  return out;
}
function bytes(n) {
  n = Number(n || 0);
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function rate(n) { n = Number(n || 0); return n >= 100 ? n.toFixed(0) : n.toFixed(1); }
function when(ms) { return ms ? new Date(Number(ms)).toLocaleString() : ""; }
function stateCls(s) { return "state-" + String(s || "").toLowerCase().replace(/^table_state_/, ""); }
function showError(msg) {
  const e = $("#error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

async function api(path) {
  const r = await fetch("api/" + path, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
async function action(path, body) {
  const r = await fetch("api/admin/" + path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-PCS-Console": "1" },
    body: JSON.stringify(body),
  });
  const out = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
}

// A button that asks once more before it acts: the first click arms it, the second runs fn.
function armed(label, confirmLabel, fn) {
  const b = document.createElement("button");
  b.className = "danger";
  b.textContent = label;
  b.addEventListener("click", async () => {
    if (!b.classList.contains("confirm")) {
      b.classList.add("confirm");
      b.textContent = confirmLabel;
      setTimeout(() => { b.classList.remove("confirm"); b.textContent = label; }, 5000);
      return;
    }
    b.disabled = true;
    try { await fn(); showError(""); await route(); } catch (e) { showError(e.message); b.disabled = false; }
  });
  return b;
}

function table(headers, rows) {
  const th = headers.map(h => `<th class="${h.num ? "num" : ""}">${esc(h.t ?? h)}</th>`).join("");
  const body = rows.map(r => "<tr>" + r.map((c, i) => `<td class="${headers[i].num ? "num" : ""}">${c}</td>`).join("") + "</tr>").join("");
  return `<table class="grid"><thead><tr>${th}</tr></thead><tbody>${body || `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`}</tbody></table>`;
}
const N = t => ({ t, num: true });

// ---- pages ----

const pages = {
  async cluster() {
    const o = await api("overview");
    const st = o.status, members = o.members.members || [];
    $("#where").textContent = `served by ${st.name} · primary ${st.primary_name || "none"}`;
    page.innerHTML = `<h1>Cluster</h1>
      <div class="cards">
        ${card("Primary", st.primary_name || "none", "primary")}
        ${card("Term", st.term)}
        ${card("Revision", st.revision)}
        ${card("Applied index", st.applied_index)}
        ${card("Cluster version", o.cluster_version)}
        ${card("Members", members.length, "members")}
        ${card("Data nodes up", `${o.nodes_up} / ${o.nodes}`, "nodes")}
        ${card("Tables", o.tables, "tables")}
      </div>
      <h2>Members</h2>
      ${table(["Name", "Role", "Voter", "Client address", "HTTP address", "Peer address"], members.map(m => [
        `<span class="member-name">${esc(m.name)}</span>`, m.primary ? `<b class="state-up">primary</b>` : "follower", m.voter ? "yes" : "no",
        `<span class="mono">${esc(m.client_addr)}</span>`, m.http_addr ? `<a href="http://${esc(m.http_addr)}/console/">${esc(m.http_addr)}</a>` : "",
        `<span class="mono">${esc(m.peer_addr)}</span>`]))}
      <p class="muted">This member: ${esc(st.name)} (${esc(st.raft_state)}), state ${esc(String(st.state).replace("NODE_STATE_", "").toLowerCase())}. Build ${esc(o.build)}.</p>`;
  },

  async nodes() {
    const o = await api("nodes");
    const nodes = o.nodes || [];
    page.innerHTML = `<h1>Data nodes</h1>` + table(
      [N("ID"), "Address", "State", N("Shards"), N("Primaries"), N("Capacity"), N("Used"), N("Disk free"), N("Reads/s"), N("Writes/s"), N("CPU"), "Labels", ""],
      nodes.map(n => [
        esc(n.node.id), `<span class="mono">${esc(n.node.address)}</span>`, `<span class="${stateCls(n.state)} node-state" data-node="${esc(n.node.id)}">${esc(n.state)}</span>`,
        esc(n.shards), esc(n.primaries), bytes(n.node.capacity_bytes), bytes(n.used_bytes), bytes(n.disk_free_bytes),
        rate(n.read_per_sec), rate(n.write_per_sec), (Number(n.cpu) * 100).toFixed(0) + "%",
        Object.entries(n.node.labels || {}).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(" "),
        n.state === "up" || n.state === "disconnected" ? `<span class="act" data-node="${esc(n.node.id)}"></span>` : ""]));
    page.querySelectorAll("span.act").forEach(el => {
      const id = el.dataset.node;
      const b = armed("Drain", `Confirm: drain node ${id}`, () => action("drain", { node_id: Number(id) }));
      b.id = "drain-" + id;
      el.appendChild(b);
    });
  },

  async tables() {
    const o = await api("tables");
    const ts = o.tables.tables || [], jobs = o.jobs.jobs || [];
    page.innerHTML = `<h1>Tables</h1>` + table(["Name", N("ID"), "State", N("Shards"), N("Replicas"), "Partitioned by", "Shard group"],
      ts.map(t => [`<a class="table-link" href="#/table/${encodeURIComponent(t.name)}">${esc(t.name)}</a>`, esc(t.id),
        `<span class="${stateCls(t.state)}">${esc(String(t.state).replace("TABLE_STATE_", "").toLowerCase())}</span>`,
        esc(o.shards[t.name] ?? ""), esc(t.replicas), esc(partDesc(t.partition)), esc(t.shard_group)])) +
      `<h2>DDL and partition jobs</h2>` + table(["Table", "Kind", "Step", "Partition", "Progress", ""], jobs.map(j => {
        const pct = Number(j.total) ? Math.round(100 * Number(j.done) / Number(j.total)) : 0;
        return [esc(j.table), esc(j.kind), esc(j.step), esc(j.partition),
          `<div class="bar" title="${esc(j.done)} / ${esc(j.total)}"><div style="width:${pct}%"></div></div> ${esc(j.done)} / ${esc(j.total)}`,
          `<span class="act" data-table="${esc(j.table)}"></span>`];
      }));
    page.querySelectorAll("span.act").forEach(el => el.appendChild(
      armed("Cancel", `Confirm: cancel ${el.dataset.table}'s job`, () => action("cancel-job", { table: el.dataset.table }))));
  },

  async table(name) {
    const o = await api("table?name=" + encodeURIComponent(name));
    const t = o.table.table, shards = o.shards.shards || [], stats = {};
    for (const s of o.shards.stats || []) stats[s.shard_id] = s;
    const parts = [...new Set(shards.map(s => s.partition))];
    page.innerHTML = `<h1>Table ${esc(t.name)}</h1>
      <div class="cards">${card("ID", t.id)}${card("Shards", o.table.shards)}${card("Partitions", parts.length)}${card("Replicas", t.replicas)}${card("Schema version", t.schema_version)}</div>
      <p><a href="#/heatmap" id="zoom-table">Key heatmap of this table</a></p>
      <h2>Shards${o.shards.more ? " (first 1000)" : ""}</h2>` +
      table([N("ID"), "Partition", "Start", "End", N("Primary"), "Replicas", N("On disk"), N("Reads/s"), N("Writes/s")], shards.map(s => {
        const st = stats[s.id] || {};
        return [esc(s.id), esc(s.partition), `<span class="mono">${esc(b64hex(s.start)) || "−∞"}</span>`, `<span class="mono">${esc(b64hex(s.end)) || "+∞"}</span>`,
          esc(s.primary), esc((s.replicas || []).join(", ")), bytes(st.size_bytes), rate(st.read_per_sec), rate(st.write_per_sec)];
      }));
    $("#zoom-table").addEventListener("click", () => { heatState.table = t.name; heatState.start = heatState.end = ""; });
  },

  async shard() {
    const tables = (await api("tables")).tables.tables || [];
    const q = new URLSearchParams(location.hash.split("?")[1] || "");
    page.innerHTML = `<h1>Shard finder</h1>
      <form class="inline" id="finder">
        <label>Table <select name="table">${tables.map(t => `<option ${t.name === q.get("table") ? "selected" : ""}>${esc(t.name)}</option>`).join("")}</select></label>
        <label>Key <input name="key" placeholder="leading key columns, comma-separated" size="36" value="${esc(q.get("key") || "")}"></label>
        <button type="submit">Find</button>
      </form><div id="found"></div>`;
    $("#finder").addEventListener("submit", ev => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      location.hash = "#/shard?" + new URLSearchParams({ table: f.get("table"), key: f.get("key") });
    });
    if (!q.get("table") || !q.get("key")) return;
    const o = await api("shard?" + new URLSearchParams({ table: q.get("table"), key: q.get("key") }));
    const s = o.shard, st = (o.stats.stats || [])[0] || {}, pos = st.replica_positions || {};
    const top = Math.max(0, ...Object.values(pos).map(Number));
    $("#found").innerHTML = `<div class="cards">${card("Shard", s.id, "shard-id")}${card("Partition", s.partition)}${card("Primary", s.primary)}${card("Term", s.term)}
      ${card("On disk", bytes(st.size_bytes))}${card("Reads/s", rate(st.read_per_sec))}${card("Writes/s", rate(st.write_per_sec))}</div>
      <p class="mono">row key ${esc(o.key)} · range [${esc(b64hex(s.start)) || "−∞"}, ${esc(b64hex(s.end)) || "+∞"})</p>
      <h2>Replicas</h2>` + table([N("Node"), "Role", N("Position"), N("Lag (entries)")],
      [...(s.replicas || []).map(n => [esc(n), n === s.primary ? "primary" : "replica", esc(pos[n] ?? ""), pos[n] !== undefined ? esc(top - Number(pos[n])) : ""]),
       ...(s.learners || []).map(n => [esc(n), "learner", esc(pos[n] ?? ""), pos[n] !== undefined ? esc(top - Number(pos[n])) : ""])]) +
      `<h2>Operators on this shard</h2>` + opTable(o.operators.operators || []);
  },

  async operators() {
    const o = await api("operators");
    const ops = o.operators.operators || [], sch = o.schedule.schedulers || [];
    const live = ops.filter(x => !x.finished_ns || Number(x.finished_ns) === 0), done = ops.filter(x => Number(x.finished_ns) > 0);
    page.innerHTML = `<h1>Operators and schedulers</h1>
      <h2>Running and waiting</h2>${opTable(live)}
      <h2>Schedulers</h2>` + table(["Scheduler", "State", ""], sch.map(s => [esc(s.name), s.paused ? `<span class="state-offline">paused</span>` : `<span class="state-up">running</span>`,
        `<button class="sched" data-name="${esc(s.name)}" data-paused="${s.paused}">${s.paused ? "Resume" : "Pause"}</button>`])) +
      `<h2>Settings</h2>` + table(["Key", "Value"], Object.entries(o.schedule.config || {}).sort().map(([k, v]) => [esc(k), `<span class="mono">${esc(v)}</span>`])) +
      `<h2>Finished (recent)</h2>${opTable(done.slice(-200).reverse())}`;
    page.querySelectorAll("button.sched").forEach(b => b.addEventListener("click", async () => {
      b.disabled = true;
      try { await action("scheduler", { name: b.dataset.name, paused: b.dataset.paused !== "true" }); showError(""); await route(); }
      catch (e) { showError(e.message); b.disabled = false; }
    }));
  },

  async events() {
    const q = new URLSearchParams(location.hash.split("?")[1] || "");
    const kind = q.get("kind") || "";
    const o = await api("events?limit=500" + (kind ? "&kind=" + encodeURIComponent(kind) : ""));
    const kinds = ["", "primary", "member", "node", "table", "ddl", "partition", "shard", "operator", "cluster"];
    page.innerHTML = `<h1>Events</h1>
      <form class="inline"><label>Kind <select id="kind">${kinds.map(k => `<option value="${k}" ${k === kind ? "selected" : ""}>${k || "all"}</option>`).join("")}</select></label>
      <span class="muted">as recorded by ${esc(o.member)}${o.primary ? " (the primary)" : " (the primary is unreachable: this member's own log)"}, newest first</span></form>` +
      table(["Time", "Kind", "Event", N("Raft index")], o.events.map(e => [esc(when(e.at_ms)), `<span class="kind">${esc(e.kind)}</span>`, `<span class="event">${esc(e.text)}</span>`, esc(e.index || "")]));
    $("#kind").addEventListener("change", ev => { location.hash = "#/events" + (ev.target.value ? "?kind=" + ev.target.value : ""); });
  },

  async heatmap() {
    const tables = (await api("tables")).tables.tables || [];
    const p = new URLSearchParams({ metric: heatState.metric, rows: heatState.rows });
    for (const k of ["table", "start", "end"]) if (heatState[k]) p.set(k, heatState[k]);
    const h = await api("heatmap?" + p);
    const metrics = { writes: "writes/s", reads: "reads/s", write_bytes: "bytes written/s", read_bytes: "bytes read/s" };
    page.innerHTML = `<h1>Key heatmap</h1>
      <form class="inline" id="heatform">
        <label>Measure <select name="metric">${Object.entries(metrics).map(([k, v]) => `<option value="${k}" ${k === heatState.metric ? "selected" : ""}>${v}</option>`).join("")}</select></label>
        <label>Table <select name="table"><option value="">all tables</option>${tables.map(t => `<option ${t.name === heatState.table ? "selected" : ""}>${esc(t.name)}</option>`).join("")}</select></label>
        <label>Rows <input name="rows" type="number" min="8" max="1024" value="${heatState.rows}" style="width:5em"></label>
        ${heatState.start || heatState.end ? `<span class="mono">range [${esc(heatState.start) || "−∞"}, ${esc(heatState.end) || "+∞"})</span>` : ""}
        <button type="button" id="heat-reset">Reset zoom</button>
      </form>
      <p id="heat-hottest" class="muted"></p>
      <div class="heatwrap"><canvas id="heat"></canvas><div id="heat-tip"></div></div>
      <div class="legend">0 <canvas id="heat-legend" width="200" height="10"></canvas> <span id="heat-max"></span> ${metrics[h.metric]} ·
        one column per ${(h.interval_ms / 1000).toFixed(1)} s sample · click a row to zoom into its key range</div>`;
    const form = $("#heatform");
    form.addEventListener("change", () => {
      const f = new FormData(form);
      heatState = { metric: f.get("metric"), table: f.get("table"), start: "", end: "", rows: Math.max(8, Math.min(1024, Number(f.get("rows")) || 96)) };
      route();
    });
    $("#heat-reset").addEventListener("click", () => { heatState = { ...heatState, table: "", start: "", end: "" }; route(); });
    drawHeat(h);
  },
};

function card(k, v, id) { return `<div class="card"${id ? ` id="card-${id}"` : ""}><div class="k">${esc(k)}</div><div class="v">${esc(v)}</div></div>`; }
function partDesc(p) {
  if (!p || !p.strategy) return "";
  const kind = String(p.strategy).replace("PARTITION_STRATEGY_", "").toLowerCase();
  if (kind === "none" || kind === "unspecified") return "";
  let d = `${kind}(${(p.columns || []).join(", ")})`;
  if (kind === "hash") d += ` × ${p.hash_partitions}`;
  if (p.interval) d += ` every ${p.interval}` + (p.retention ? `, kept ${p.retention}` : "");
  const sub = partDesc(p.sub);
  return sub ? d + " / " + sub : d;
}
function opTable(ops) {
  return table([N("ID"), "Kind", N("Shard"), "State", "Step", "Why / waiting on", "Created"], ops.map(o => [
    esc(o.id), esc(o.kind), esc(o.shard_id),
    `<span class="${stateCls(o.state)}">${esc(o.state)}</span>`,
    esc((o.steps || []).map((s, i) => (i === o.current ? "▶ " : "") + s.kind + (Number(s.node) ? " " + s.node : "")).join(" → ")),
    esc(o.reason), esc(when(o.created_ms))]));
}

// heat colour: black → blue → magenta → orange → yellow → white, by log scale.
function heatColor(v, max) {
  if (!(v > 0) || !(max > 0)) return [12, 14, 22];
  const x = Math.log1p(v) / Math.log1p(max);
  const stops = [[12, 14, 22], [31, 46, 140], [150, 40, 160], [240, 110, 40], [250, 220, 60], [255, 255, 240]];
  const f = Math.min(0.9999, x) * (stops.length - 1), i = Math.floor(f), t = f - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * t));
}

function drawHeat(h) {
  const cv = $("#heat"), tip = $("#heat-tip"), rows = h.rows || [], cols = h.values || [];
  const gutter = 220, cw = Math.max(3, Math.min(24, Math.floor(960 / Math.max(1, cols.length)))), rh = Math.max(4, Math.min(24, Math.floor(560 / Math.max(1, rows.length))));
  cv.width = gutter + cw * Math.max(1, cols.length);
  cv.height = rh * Math.max(1, rows.length) + 24;
  const g = cv.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, cv.width, cv.height);
  g.font = "11px system-ui, sans-serif"; g.textBaseline = "middle";
  const img = g.createImageData(cw * Math.max(1, cols.length), rh * Math.max(1, rows.length));
  for (let c = 0; c < cols.length; c++) for (let r = 0; r < rows.length; r++) {
    const [R, G, B] = heatColor(cols[c][r], h.max);
    for (let y = r * rh; y < (r + 1) * rh; y++) for (let x = c * cw; x < (c + 1) * cw; x++) {
      const o = (y * img.width + x) * 4; img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
    }
  }
  if (cols.length && rows.length) g.putImageData(img, gutter, 0);
  // Row labels: where the table or partition changes, at least 10 px below the last one.
  let prev = "", lastY = -Infinity;
  g.fillStyle = "#1d2330";
  rows.forEach((r, i) => {
    const lab = r.table + " / " + r.partition + (r.last_partition ? " … " + r.last_partition : "");
    const y = i * rh + rh / 2;
    if (lab !== prev && y - lastY >= 10) {
      g.fillText(lab.length > 34 ? lab.slice(0, 33) + "…" : lab, 4, y);
      g.fillRect(gutter - 6, i * rh, 4, 1);
      lastY = y;
    }
    prev = lab;
  });
  g.fillStyle = "#6b7385";
  if (cols.length) {
    g.fillText(new Date(h.times_ms[0]).toLocaleTimeString(), gutter, rh * rows.length + 12);
    const last = new Date(h.times_ms[cols.length - 1]).toLocaleTimeString();
    g.fillText(last, cv.width - g.measureText(last).width - 2, rh * rows.length + 12);
  } else {
    g.fillText("no samples yet: the primary samples shard load every " + (h.interval_ms / 1000) + " s", gutter, 12);
  }
  // Legend and the hottest range.
  const lg = $("#heat-legend").getContext("2d");
  for (let x = 0; x < 200; x++) { const [R, G, B] = heatColor(x / 199 * h.max || 0, h.max || 1); lg.fillStyle = `rgb(${R},${G},${B})`; lg.fillRect(x, 0, 1, 10); }
  $("#heat-max").textContent = rate(h.max);
  let best = -1, bestSum = 0;
  rows.forEach((r, i) => { const s = cols.reduce((a, col) => a + col[i], 0); if (s > bestSum) { bestSum = s; best = i; } });
  const hot = $("#heat-hottest");
  if (best >= 0) {
    const r = rows[best], peak = Math.max(...cols.map(c => c[best]));
    hot.innerHTML = `Hottest range: <b id="heat-hot-label" data-table="${esc(r.table)}" data-partition="${esc(r.partition)}">${esc(r.table)} / ${esc(r.partition)}${r.last_partition ? " … " + esc(r.last_partition) : ""}</b>
      <span class="mono">[${esc(r.start) || "−∞"}, ${esc(r.end) || "+∞"})</span>, peak ${rate(peak)}`;
  } else {
    hot.textContent = "No load recorded in this window.";
  }
  const cell = ev => {
    const rect = cv.getBoundingClientRect();
    const x = (ev.clientX - rect.left) * cv.width / rect.width - gutter, y = (ev.clientY - rect.top) * cv.height / rect.height;
    const c = Math.floor(x / cw), r = Math.floor(y / rh);
    return c >= 0 && c < cols.length && r >= 0 && r < rows.length ? [c, r, ev.clientX - rect.left, ev.clientY - rect.top] : null;
  };
  cv.addEventListener("mousemove", ev => {
    const at = cell(ev);
    if (!at) { tip.style.display = "none"; return; }
    const [c, r, x, y] = at, row = rows[r];
    tip.textContent = `${row.table} / ${row.partition}${row.last_partition ? " … " + row.last_partition : ""}\n[${row.start || "−∞"}, ${row.end || "+∞"})\n${new Date(h.times_ms[c]).toLocaleTimeString()}: ${rate(cols[c][r])}`;
    tip.style.left = (x + 16) + "px"; tip.style.top = (y + 8) + "px"; tip.style.display = "block";
  });
  cv.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  cv.addEventListener("click", ev => {
    const at = cell(ev);
    if (!at) return;
    const row = rows[at[1]];
    heatState = { ...heatState, table: row.table, start: row.start, end: row.end };
    route();
  });
}

// ---- routing ----

async function route() {
  clearTimeout(timer);
  const hash = location.hash.replace(/^#\/?/, "");
  const [path] = hash.split("?");
  const [name, ...rest] = path.split("/");
  const key = name || "cluster";
  document.querySelectorAll("#nav a").forEach(a => a.classList.toggle("active", a.dataset.page === (key === "table" ? "tables" : key)));
  const fn = pages[key];
  if (!fn) { page.innerHTML = `<h1>Not found</h1><p>No page ${esc(key)}.</p>`; return; }
  const active = document.activeElement;
  const typing = active && (active.tagName === "INPUT" || active.tagName === "SELECT") && page.contains(active);
  try {
    if (!typing) {
      await fn(...rest.map(decodeURIComponent));
      page.dataset.loaded = "true";
      page.dataset.page = key;
    }
    showError("");
  } catch (e) {
    showError(e.message);
  }
  const again = key === "heatmap" ? 5000 : key === "shard" ? 0 : 3000;
  if (again) timer = setTimeout(route, again);
}

window.addEventListener("hashchange", route);
route();
