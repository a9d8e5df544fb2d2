// ledgerd explorer: a single page over the node's REST API and its /v1/events stream.
//
// Safety rule for this file: every value that comes from the chain reaches the page through
// textContent or a DOM property (el() below), never through innerHTML or an HTML string, so a record
// holding "<script>" shows those characters and runs nothing. The page's Content-Security-Policy
// would block an inline script anyway; this keeps markup injection out as well.
"use strict";

const BASE = "/explorer";
const RATE_WINDOW_S = 300; // the tx/s chart covers the last five minutes
const RATE_BUCKET_S = 10;
const RECENT_BLOCKS = 50; // blocks the overview keeps for the chart and "last signed"
const RECONNECT_MAX_MS = 15000;

const live = {
  status: null,
  blocks: [], // summaries, newest first: {height, hash, timestamp, proposer, tx_count, signers}
  socket: null,
  retryMs: 1000,
  listeners: new Set(),
};

// --- DOM helpers ----------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(path, text, cls) {
  return el("a", { href: BASE + path, "data-nav": true, class: cls || "mono", text });
}

function short(hex) {
  const s = String(hex);
  return s.length > 20 ? s.slice(0, 10) + "…" + s.slice(-6) : s;
}

function hashLink(kind, value) {
  return el("a", { href: `${BASE}/${kind}/${value}`, "data-nav": true, class: "mono", title: value,
                   text: short(value) });
}

function accountLink(address) {
  return hashLink("account", address);
}

function when(ms) {
  if (typeof ms !== "number") return "";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function table(headers, rows, cls) {
  return el("div", { class: "scroll" },
    el("table", { class: cls || "" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length, class: "muted",
                                                                     text: "none" })))));
}

function row(...cells) {
  return el("tr", {}, cells.map((c) => el("td", {}, c)));
}

function fields(pairs) {
  return el("dl", { class: "fields" }, pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}`, text });
}

function section(title, ...body) {
  return el("section", { class: "card" }, el("h2", { text: title }), ...body);
}

function notice(text, kind) {
  return el("p", { class: `notice ${kind || ""}`, text });
}

function json(value) {
  return el("pre", { class: "json", text: JSON.stringify(value, null, 2) });
}

// --- REST -----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    body = null;
  }
  if (!resp.ok) {
    const err = (body && body.error) || {};
    throw new ApiError(resp.status, err.code || "http_" + resp.status, err.message || resp.statusText);
  }
  return body;
}

function enc(text) {
  return encodeURIComponent(text);
}

// --- live updates ---------------------------------------------------------------------------------

function setLive(state, text) {
  document.getElementById("live-dot").className = "dot " + state;
  document.getElementById("live-text").textContent = text;
}

function showHeight() {
  const h = live.blocks.length ? live.blocks[0].height : live.status ? live.status.height : null;
  document.getElementById("live-height").textContent = h === null ? "" : `#${h}`;
}

function addBlock(summary) {
  if (live.blocks.length && summary.height <= live.blocks[0].height) return;
  live.blocks.unshift(summary);
  live.blocks.length = Math.min(live.blocks.length, RECENT_BLOCKS);
  if (live.status) live.status.height = summary.height;
  showHeight();
}

function connectEvents() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const from = live.blocks.length ? `?from_height=${live.blocks[0].height + 1}` : "";
  let socket;
  try {
    socket = new WebSocket(`${scheme}//${location.host}/v1/events${from}`);
  } catch (_) {
    setLive("down", "offline");
    return;
  }
  live.socket = socket;
  socket.addEventListener("open", () => {
    live.retryMs = 1000;
    setLive("up", "live");
  });
  socket.addEventListener("message", (msg) => {
    let event;
    try {
      event = JSON.parse(msg.data);
    } catch (_) {
      return;
    }
    if (!event || event.type !== "block") return;
    const header = event.header || {};
    addBlock({ height: event.height, hash: event.hash, timestamp: header.timestamp, proposer: header.proposer,
               tx_count: header.tx_count, signers: null, txs: event.txs || [] });
    for (const fn of live.listeners) fn(event);
  });
  socket.addEventListener("close", () => {
    live.socket = null;
    setLive("down", "reconnecting");
    setTimeout(connectEvents, live.retryMs);
    live.retryMs = Math.min(live.retryMs * 2, RECONNECT_MAX_MS);
  });
}

// A view registers what it wants to hear while it is shown; the router clears it on navigation.
function onBlock(fn) {
  live.listeners.add(fn);
}

// --- views ----------------------------------------------------------------------------------------

function rateChart(blocks) {
  const canvas = el("canvas", { class: "chart", width: 600, height: 120, role: "img",
                                "aria-label": "committed transactions per second, last five minutes" });
  const now = Date.now();
  const buckets = new Array(RATE_WINDOW_S / RATE_BUCKET_S).fill(0);
  for (const b of blocks) {
    const age = (now - b.timestamp) / 1000;
    if (age < 0 || age >= RATE_WINDOW_S) continue;
    buckets[buckets.length - 1 - Math.floor(age / RATE_BUCKET_S)] += b.tx_count || 0;
  }
  const rates = buckets.map((n) => n / RATE_BUCKET_S);
  const peak = Math.max(1, ...rates);
  const ctx = canvas.getContext("2d");
  if (ctx) {
    const w = canvas.width, h = canvas.height, bw = w / rates.length;
    ctx.fillStyle = "#eef2f9";
    ctx.fillRect(0, 0, w, h);
    ctx.fillStyle = "#2f6fdf";
    rates.forEach((r, i) => {
      const bh = Math.round((r / peak) * (h - 18));
      ctx.fillRect(i * bw + 1, h - bh, bw - 2, bh);
    });
    ctx.fillStyle = "#334";
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(`peak ${peak.toFixed(1)} tx/s`, 6, 14);
  }
  const total = buckets.reduce((a, b) => a + b, 0);
  // Only the latest RECENT_BLOCKS blocks are loaded: on a busy chain they span less than the window,
  // and the caption says so rather than averaging over time it has no blocks for.
  const oldest = blocks.length ? blocks[blocks.length - 1].timestamp : now;
  const full = blocks.length >= RECENT_BLOCKS && (now - oldest) / 1000 < RATE_WINDOW_S;
  const span = full ? Math.max(1, (now - oldest) / 1000) : RATE_WINDOW_S;
  const over = full ? `the last ${blocks.length} blocks (${Math.round(span)}s)` : `the last ${RATE_WINDOW_S / 60} minutes`;
  return el("figure", { class: "chart-box" }, canvas,
    el("figcaption", { class: "muted",
                       text: `${(total / span).toFixed(2)} tx/s committed on average over ${over} ` +
                             `(${RATE_BUCKET_S}s bars)` }));
}

function lastSigned(blocks) {
  const seen = new Map();
  for (const b of blocks) {
    for (const v of b.signers || []) if (!seen.has(v)) seen.set(v, b.height);
    if (b.proposer && !seen.has(b.proposer)) seen.set(b.proposer, b.height);
  }
  return seen;
}

async function viewOverview(root) {
  const [status, page] = await Promise.all([api("/v1/status"), api(`/v1/blocks?limit=${RECENT_BLOCKS}`)]);
  live.status = status;
  // Live events carry no signers; the page of summaries does, so it replaces what was gathered.
  const newer = live.blocks.filter((b) => !page.blocks.length || b.height > page.blocks[0].height);
  live.blocks = newer.concat(page.blocks).slice(0, RECENT_BLOCKS);
  showHeight();

  const heightText = el("span", { id: "overview-height", class: "big mono", text: String(status.height) });
  const mempool = el("span", { text: String(status.mempool_size) });
  const chartSlot = el("div", {}, rateChart(live.blocks));
  const validatorsSlot = el("div", {});
  const renderValidators = (st) => {
    const peers = new Map((st.peers || []).map((p) => [p.node_id, p]));
    const signed = lastSigned(live.blocks);
    validatorsSlot.replaceChildren(table(["Name", "Node id", "Link", "Height", "Last signed"],
      (st.validators || []).map((v) => {
        const self = v.node_id === st.node_id;
        const peer = peers.get(v.node_id);
        const connected = self ? badge("this node", "ok") : peer && peer.connected ? badge("connected", "ok")
          : badge("not connected", "bad");
        const height = self ? st.height : peer && peer.height !== null && peer.height !== undefined ? peer.height : "?";
        const last = signed.get(v.node_id);
        return row(el("span", { text: v.name || "" }),
                   el("span", { class: "mono", title: v.node_id, text: short(v.node_id) }),
                   connected, String(height),
                   last === undefined ? el("span", { class: "muted", text: `not in the last ${live.blocks.length}` })
                     : link(`/block/${last}`, `#${last}`));
      }), "validators"));
  };
  renderValidators(status);
  const validatorIds = new Set((status.validators || []).map((v) => v.node_id));
  const observers = (status.peers || []).filter((p) => !validatorIds.has(p.node_id));
  const recent = el("tbody", { id: "recent-blocks" });
  const renderRecent = () => {
    recent.replaceChildren(...live.blocks.slice(0, 10).map((b) =>
      row(link(`/block/${b.height}`, `#${b.height}`), hashLink("block", b.hash), String(b.tx_count),
          el("span", { class: "mono", title: b.proposer || "", text: short(b.proposer || "") }),
          el("span", { title: when(b.timestamp), text: ago(b.timestamp) }))));
  };
  renderRecent();

  root.replaceChildren(
    el("div", { class: "grid" },
      section("Chain", fields([
        ["Chain", el("span", { class: "mono", text: status.chain_id })],
        ["Height", heightText],
        ["Consensus", `${status.consensus} · ${status.consensus_health || "unknown"}`],
        ["Last block", el("span", { title: when(status.latest_timestamp), text: when(status.latest_timestamp) })],
        ["Mempool", mempool],
        ["This node", el("span", { class: "mono", title: status.node_id,
                                   text: `${status.name || ""} ${short(status.node_id)}` })],
      ])),
      section("Committed transactions per second", chartSlot)),
    section("Validators", validatorsSlot),
    section("Observers", observers.length
      ? table(["Node id", "Link", "Height"], observers.map((p) => row(
        el("span", { class: "mono", text: short(p.node_id) }),
        p.connected ? badge("connected", "ok") : badge("not connected", "bad"), String(p.height ?? "?"))))
      : el("p", { class: "muted", text: "No observer is configured on this node." })),
    section("Latest blocks",
      el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Height", "Hash", "Txs", "Proposer", "Time"].map((h) => el("th", { text: h })))),
        recent)),
      el("p", {}, link("/blocks", "All blocks →", "more"))),
  );
  onBlock((event) => {
    heightText.textContent = String(event.height);
    renderRecent();
    chartSlot.replaceChildren(rateChart(live.blocks));
    // Events carry no certificate: the block's summary says who signed it.
    Promise.all([api("/v1/status"), api(`/v1/blocks?before=${event.height + 1}&limit=1`)]).then(([st, pg]) => {
      const summary = pg.blocks[0];
      const known = live.blocks.find((b) => summary && b.height === summary.height);
      if (known) known.signers = summary.signers;
      mempool.textContent = String(st.mempool_size);
      renderValidators({ ...st, height: Math.max(st.height, live.blocks.length ? live.blocks[0].height : 0) });
    }, () => {});
  });
}

async function viewBlocks(root, params) {
  const before = params.get("before");
  const page = await api(`/v1/blocks?limit=25${before ? `&before=${enc(before)}` : ""}`);
  const body = el("tbody", {}, page.blocks.map(blockRow));
  root.replaceChildren(section(before ? `Blocks below #${before}` : "Latest blocks",
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Height", "Hash", "Txs", "Proposer", "Signers", "Time"]
        .map((h) => el("th", { text: h })))), body)),
    page.next_before ? el("p", {}, link(`/blocks?before=${page.next_before}`, "Older blocks →", "more")) : null));
  if (!before) {
    onBlock((event) => {
      const h = event.header || {};
      body.prepend(blockRow({ height: event.height, hash: event.hash, tx_count: h.tx_count, proposer: h.proposer,
                              timestamp: h.timestamp, signers: null }));
    });
  }
}

function blockRow(b) {
  return row(link(`/block/${b.height}`, `#${b.height}`), hashLink("block", b.hash), String(b.tx_count),
             el("span", { class: "mono", title: b.proposer, text: short(b.proposer) }),
             b.signers ? String(b.signers.length) : "…",
             el("span", { title: when(b.timestamp), text: when(b.timestamp) }));
}

function signersOf(cert) {
  if (!cert) return [];
  if (Array.isArray(cert.seals)) return cert.seals.map((s) => s.validator);
  return cert.leader ? [cert.leader] : [];
}

async function viewBlock(root, ref) {
  const isHeight = /^[0-9]{1,19}$/.test(ref);
  const block = await api(isHeight ? `/v1/blocks/${enc(ref)}` : `/v1/blocks/by-hash/${enc(ref)}`);
  const h = block.header;
  const cert = block.certificate || {};
  const txRows = block.txs.map((tx, i) => {
    const r = block.receipts[i] || {};
    const body = tx.body || {};
    return row(String(i), hashLink("tx", r.hash), el("span", { text: body.type }), accountLink(body.sender),
               badge(r.code === "ok" ? "committed" : "failed"), el("span", { text: r.code || "" }));
  });
  root.replaceChildren(
    section(`Block #${block.height}`,
      fields([
        ["Hash", el("span", { class: "mono wrap", text: block.hash })],
        ["Time", when(h.timestamp)],
        ["Proposer", el("span", { class: "mono wrap", text: h.proposer })],
        ["Previous", block.height > 1 ? link(`/block/${block.height - 1}`, h.prev_hash, "mono wrap")
                                      : el("span", { class: "mono wrap", text: h.prev_hash })],
        ["Transactions", String(h.tx_count)],
        ["Tx root", el("span", { class: "mono wrap", text: h.tx_root })],
        ["App hash", el("span", { class: "mono wrap", text: h.app_hash })],
        ["Certificate", `${cert.engine || (cert.seals ? "pbft" : "")} ${cert.round !== undefined
          ? "round " + cert.round : cert.term !== undefined ? "term " + cert.term : ""}`],
      ]),
      el("nav", { class: "pager" },
        block.height > 1 ? link(`/block/${block.height - 1}`, "← previous", "more") : null,
        link(`/block/${block.height + 1}`, "next →", "more"))),
    section("Certificate signers", el("ul", { class: "plain" },
      signersOf(cert).map((v) => el("li", { class: "mono wrap", text: v })))),
    section("Transactions", table(["#", "Hash", "Type", "Sender", "Status", "Result"], txRows)));
}

function payloadFields(body) {
  const p = body.payload || {};
  const rows = [["Type", el("span", { text: body.type })], ["Sender", accountLink(body.sender)],
                ["Nonce", String(body.nonce)]];
  if (body.type === "transfer") {
    rows.push(["To", accountLink(p.to)], ["Amount", `${p.amount} ${p.asset}`]);
  } else if (body.type === "issue") {
    rows.push(["Asset", el("span", { text: p.asset })], ["Supply", String(p.supply)]);
  } else if (body.type === "record") {
    rows.push(["Key", link(`/record/${body.sender}/${enc(p.key)}`, p.key, "wrap")],
              ["Value", el("pre", { class: "value", text: p.value })]);
  } else if (body.type === "propose") {
    rows.push(["Action", el("span", { text: p.action })],
              ["Arguments", el("ul", { class: "plain" }, Object.entries(p.args || {}).map(([k, v]) =>
                el("li", {}, el("span", { class: "muted", text: k + ": " }),
                   typeof v === "string" && /^[0-9a-f]{64}$/.test(v) ? accountLink(v) : el("span", { text: String(v) }))))]);
  } else if (body.type === "vote") {
    rows.push(["Proposal", hashLink("tx", p.proposal)], ["Vote", p.approve ? "approve" : "reject"]);
  } else {
    rows.push(["Payload", json(p)]);
  }
  return rows;
}

async function viewTx(root, hash) {
  const status = await api(`/v1/transactions/${enc(hash)}`);
  const parts = [];
  let body = null;
  if (status.height !== null && status.height !== undefined) {
    const block = await api(`/v1/blocks/${status.height}`);
    const tx = block.txs[status.index];
    body = tx ? tx.body : null;
  }
  const proofMessage = el("p", { class: "notice", hidden: true });
  const proofUrl = `/v1/transactions/${enc(hash)}/proof`;
  const proofLink = el("a", { href: proofUrl, class: "button", download: `proof-${hash}.json`, id: "proof",
                              text: "Download proof" });
  proofLink.addEventListener("click", async (ev) => {
    ev.preventDefault();
    proofMessage.hidden = true;
    try {
      const resp = await fetch(proofUrl, { headers: { Accept: "application/json" } });
      if (resp.status === 404) {
        let code = "";
        try { code = ((await resp.json()).error || {}).code || ""; } catch (_) { code = ""; }
        proofMessage.textContent = code === "not_found"
          ? "This node does not serve inclusion proofs yet (GET /v1/transactions/{hash}/proof is missing)."
          : "No proof is available for this transaction (it is not committed on this node).";
        proofMessage.hidden = false;
        return;
      }
      if (!resp.ok) throw new Error(`the node answered ${resp.status}`);
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: `proof-${hash}.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      proofMessage.textContent = `Could not download the proof: ${err.message}`;
      proofMessage.hidden = false;
    }
  });
  parts.push(section("Transaction",
    fields([
      ["Hash", el("span", { class: "mono wrap", id: "tx-hash", text: status.hash })],
      ["Status", badge(status.status)],
      ["Block", status.height !== null && status.height !== undefined
        ? link(`/block/${status.height}`, `#${status.height} (index ${status.index})`) : "not in a block yet"],
      ["Result", el("span", { id: "tx-result", text: status.result ? status.result.code : "pending" })],
      status.result && status.result.message
        ? ["Message", el("span", { text: status.result.message })] : null,
    ].filter(Boolean)),
    status.status === "committed" ? el("p", {}, proofLink) : null, proofMessage));
  if (body) parts.push(section("Payload", fields(payloadFields(body))));
  if (status.status === "pending") {
    parts.push(notice("Waiting for this transaction to be committed; the page updates by itself."));
    onBlock((event) => {
      if ((event.txs || []).some((t) => t.hash === status.hash)) route();
    });
  }
  root.replaceChildren(...parts);
}

async function viewAccount(root, address, params) {
  const after = params.get("after");
  const [account, txs, records] = await Promise.all([
    api(`/v1/accounts/${enc(address)}`),
    api(`/v1/accounts/${enc(address)}/transactions?limit=25${after ? `&after=${enc(after)}` : ""}`),
    api(`/v1/accounts/${enc(address)}/records?limit=25`),
  ]);
  const balances = Object.entries(account.balances || {});
  const txRows = txs.transactions.map((t) => row(
    hashLink("tx", t.hash), link(`/block/${t.height}`, `#${t.height}`), el("span", { text: t.type }),
    t.sender === address ? el("span", { class: "muted", text: "sent" }) : accountLink(t.sender),
    badge(t.status), el("span", { text: t.result.code || "" })));
  const recordRows = records.records.map((r) => row(
    link(`/record/${address}/${enc(r.key)}`, r.key, "wrap"),
    el("span", { class: "value-cell", text: r.value }), link(`/block/${r.height}`, `#${r.height}`)));
  root.replaceChildren(
    section("Account", fields([
      ["Address", el("span", { class: "mono wrap", text: account.address })],
      ["Nonce", String(account.nonce)],
      ["Balances", balances.length ? el("ul", { class: "plain" }, balances.map(([asset, amount]) =>
        el("li", {}, el("span", { class: "mono", text: String(amount) }), " ", el("span", { text: asset }))))
        : el("span", { class: "muted", text: "none" })],
      ["Roles", (account.roles || []).length ? (account.roles || []).join(", ") : "none"],
      ["Frozen", account.frozen ? badge("frozen", "bad") : "no"],
      ["Allow-listed", account.allowed ? "yes" : "no"],
    ])),
    section(after ? "Older transactions" : "Transactions (newest first)",
      table(["Hash", "Block", "Type", "Sender", "Status", "Result"], txRows, "account-txs"),
      txs.next_after ? el("p", {}, link(`/account/${address}?after=${txs.next_after}`, "Older →", "more")) : null),
    section("Records", table(["Key", "Value", "Block"], recordRows),
      records.next_after ? el("p", { class: "muted", text: "More records exist; look one up by key." }) : null));
}

function recordForm(owner, key) {
  const ownerInput = el("input", { name: "owner", value: owner || "", placeholder: "owner address",
                                   spellcheck: "false", class: "mono" });
  const keyInput = el("input", { name: "key", value: key || "", placeholder: "record key", spellcheck: "false" });
  const form = el("form", { class: "inline" }, ownerInput, keyInput, el("button", { type: "submit", text: "Look up" }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    navigate(`${BASE}/record/${ownerInput.value.trim()}/${enc(keyInput.value)}`);
  });
  return form;
}

async function viewRecord(root, owner, key) {
  if (!owner || !key) {
    root.replaceChildren(section("Record lookup", recordForm(owner, key)));
    return;
  }
  const rec = await api(`/v1/records/${enc(owner)}/${enc(key)}`);
  root.replaceChildren(
    section("Record lookup", recordForm(owner, key)),
    section("Record", fields([
      ["Owner", accountLink(rec.owner)],
      ["Key", el("span", { class: "wrap", id: "record-key", text: rec.key })],
      ["Value", el("pre", { class: "value", id: "record-value", text: rec.value })],
      ["Written in", link(`/block/${rec.height}`, `#${rec.height}`)],
      ["By transaction", hashLink("tx", rec.tx)],
    ])));
}

async function viewGovernance(root) {
  const [gov, list] = await Promise.all([api("/v1/governance"), api("/v1/governance/proposals?limit=50")]);
  if (!gov.enabled) {
    root.replaceChildren(section("Governance", el("p", { class: "muted",
      text: "This chain has no committee: governance is disabled (its genesis has no governance section)." })));
    return;
  }
  const c = gov.committee;
  const proposalRows = list.proposals.map((p) => el("tr", { class: "proposal" },
    el("td", {}, hashLink("tx", p.id)),
    el("td", {}, el("span", { text: p.action })),
    el("td", {}, el("ul", { class: "plain" }, Object.entries(p.args || {}).map(([k, v]) =>
      el("li", {}, el("span", { class: "muted", text: k + ": " }),
         typeof v === "string" && /^[0-9a-f]{64}$/.test(v) ? accountLink(v) : el("span", { text: String(v) }))))),
    el("td", {}, badge(p.status)),
    el("td", {}, el("ul", { class: "plain votes" }, (p.votes || []).map((v) =>
      el("li", {}, accountLink(v.member), " ", badge(v.approve ? "approve" : "reject", v.approve ? "ok" : "bad"))))),
    el("td", { text: p.tally ? `${p.tally.approve_weight}/${p.tally.total_weight} (needs ${p.tally.threshold})` : "" })));
  root.replaceChildren(
    el("div", { class: "grid" },
      section("Committee", fields([
        ["Threshold", `${c.threshold.numerator}/${c.threshold.denominator} of weight ${c.total_weight}`],
        ["Proposal lifetime", `${c.lifetime} blocks`],
        ["Members", el("ul", { class: "plain" }, c.members.map((m) =>
          el("li", {}, accountLink(m.address), el("span", { class: "muted", text: ` weight ${m.weight}` }))))],
      ])),
      section("Policy", fields([
        ["Accounts", el("span", { text: gov.policy.accounts })],
        ["Issuing", el("span", { text: gov.policy.issue })],
        ["Roles", el("ul", { class: "plain" }, Object.entries(gov.roles || {}).map(([role, holders]) =>
          el("li", {}, el("span", { text: `${role}: ` }), holders.length ? holders.map((a) => accountLink(a))
            : el("span", { class: "muted", text: "none" }))))],
      ]))),
    section("Proposals (newest first)",
      table(["Proposal", "Action", "Arguments", "Status", "Votes", "Tally"], proposalRows, "proposals")));
  onBlock((event) => {
    if ((event.governance || []).length || (event.txs || []).some((t) => t.type === "propose" || t.type === "vote")) {
      route();
    }
  });
}

// --- search and routing ---------------------------------------------------------------------------

async function search(text) {
  const q = text.trim();
  if (!q) return;
  const result = await api(`/v1/search?q=${enc(q)}`).catch((err) => ({ kind: "none", message: err.message }));
  if (result.kind === "tx") navigate(`${BASE}/tx/${result.hash}`);
  else if (result.kind === "block") navigate(`${BASE}/block/${result.height}`);
  else if (result.kind === "account") navigate(`${BASE}/account/${result.address}`);
  else {
    const root = document.getElementById("view");
    root.replaceChildren(section("Search", notice(result.message || "Nothing found.", "warn")));
  }
}

function navigate(path) {
  history.pushState(null, "", path);
  route();
}

let routeSeq = 0;

async function route() {
  const seq = ++routeSeq;
  live.listeners.clear();
  const root = document.getElementById("view");
  const params = new URLSearchParams(location.search);
  const parts = location.pathname.slice(BASE.length).split("/").filter(Boolean);
  let decoded;
  try {
    decoded = parts.map((p) => decodeURIComponent(p));
  } catch (_) {
    decoded = parts;
  }
  const [kind, a, ...rest] = decoded;
  document.querySelectorAll("header nav a").forEach((n) => {
    const target = n.getAttribute("href").slice(BASE.length).split("/").filter(Boolean)[0];
    n.classList.toggle("active", target === kind);
  });
  const scratch = el("div", {});
  try {
    if (!kind) await viewOverview(scratch);
    else if (kind === "blocks") await viewBlocks(scratch, params);
    else if (kind === "block" && a) await viewBlock(scratch, a);
    else if (kind === "tx" && a) await viewTx(scratch, a);
    else if (kind === "account" && a) await viewAccount(scratch, a, params);
    else if (kind === "record") await viewRecord(scratch, a, rest.join("/"));
    else if (kind === "governance") await viewGovernance(scratch);
    else scratch.replaceChildren(section("Not found", notice("This explorer has no such page.", "warn")));
  } catch (err) {
    const code = err instanceof ApiError ? ` (${err.code})` : "";
    scratch.replaceChildren(section("Not found", notice(`${err.message}${code}`, "warn")));
  }
  if (seq !== routeSeq) return; // a later navigation won the race
  root.replaceChildren(...scratch.childNodes);
  document.title = `ledgerd explorer${kind ? " · " + kind : ""}`;
}

function start() {
  document.addEventListener("click", (ev) => {
    const a = ev.target instanceof Element ? ev.target.closest("a[data-nav]") : null;
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    navigate(a.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  document.getElementById("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search(document.getElementById("search-input").value);
  });
  route().then(connectEvents);
}

start();
