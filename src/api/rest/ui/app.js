// The pincluster dashboard: reads this peer's REST API and redraws every
// REFRESH_MS. Every URL is relative to /ui, so requests go to the same
// origin and carry whatever credentials the browser holds for the API.
'use strict';

const REFRESH_MS = 5000;
// Counting pins asks every peer for the status of every pin: on a large
// pinset that is real work for the cluster, so it is done every sixth
// refresh (30 s), not every 5 s.
const PIN_COUNT_EVERY = 6;
// Above this many peers the picture draws only what is wrong (missing
// links), not the full mesh: 50 peers make 1,225 pairs, and a picture of
// all of them shows nothing.
const FULL_DRAWING_MAX = 12;
const SVG_NS = 'http://www.w3.org/2000/svg';

class ApiError extends Error {
  constructor(path, status, body) {
    let message = body;
    try { message = JSON.parse(body).message || body; } catch (_) { /* plain text */ }
    super(`${path}: HTTP ${status}: ${message}`);
    this.status = status;
  }
}

// A page opened as http://user:pass@host/ui resolves relative URLs with
// those credentials, and fetch refuses such URLs: strip them. The browser
// still sends the Authorization it used for the page (same origin).
function apiURL(path) {
  const url = new URL(path, window.location.href);
  url.username = '';
  url.password = '';
  return url.href;
}

async function request(path) {
  const res = await fetch(apiURL(path), { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (!res.ok) throw new ApiError(path, res.status, await res.text());
  return res;
}

async function getJSON(path) {
  const res = await request(path);
  return res.status === 204 ? null : res.json();
}

// An NDJSON stream, handed over item by item without holding it whole.
async function eachNDJSON(path, onItem) {
  const res = await request(path);
  if (res.status === 204 || !res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let rest = '';
  for (;;) {
    const { done, value } = await reader.read();
    rest += decoder.decode(value || new Uint8Array(), { stream: !done });
    const lines = rest.split('\n');
    rest = lines.pop();
    for (const line of lines) if (line.trim()) onItem(JSON.parse(line));
    if (done) break;
  }
  if (rest.trim()) onItem(JSON.parse(rest));
}

const short = (id) => (id && id.length >= 8 ? `${id.slice(0, 2)}*${id.slice(-6)}` : id || '');

function bytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

function metricsByPeer(list) {
  const out = new Map();
  for (const m of list || []) out.set(m.peer, m.value);
  return out;
}

// Everything the page shows, read in parallel. Pins are counted as they
// stream in, so a large pinset never sits in memory; `pins` is the last
// count, reused when `countPins` is false.
async function load(countPins, pins) {
  const pinCounts = countPins ? new Map() : pins.pinCounts;
  let pinTotal = countPins ? 0 : pins.pinTotal;
  const peers = [];
  const [self, graph, alerts, freespace, pinqueue] = await Promise.all([
    getJSON('id'),
    getJSON('health/graph'),
    getJSON('health/alerts'),
    getJSON('monitor/metrics/freespace').catch(() => []),
    getJSON('monitor/metrics/pinqueue').catch(() => []),
    eachNDJSON('peers', (p) => peers.push(p)),
    countPins && eachNDJSON('pins', (info) => {
      pinTotal++;
      for (const entry of Object.values(info.peer_map || {})) {
        pinCounts.set(entry.status, (pinCounts.get(entry.status) || 0) + 1);
      }
    }),
  ]);
  return {
    self, graph, alerts: alerts || [], peers, pinCounts, pinTotal,
    freespace: metricsByPeer(freespace), pinqueue: metricsByPeer(pinqueue),
  };
}

// One row per cluster peer of the graph (and any other peer /peers lists),
// this peer first.
function peerRows(data) {
  const { graph, peers } = data;
  const byId = new Map(peers.map((p) => [p.id, p]));
  const ids = new Set([...Object.keys(graph.cluster_links || {}), ...byId.keys()]);
  const ordered = [...ids].sort((a, b) => (a === graph.cluster_id ? -1 : b === graph.cluster_id ? 1 : a.localeCompare(b)));
  return ordered.map((id) => {
    const info = byId.get(id);
    const links = (graph.cluster_links || {})[id];
    const reachable = id === graph.cluster_id || (info && !info.error && links && links.length > 0);
    return {
      id,
      name: (graph.id_to_peername || {})[id] || (info && info.peername) || '',
      isSelf: id === graph.cluster_id,
      reachable,
      error: info && info.error,
      ipfs: (graph.cluster_to_ipfs || {})[id],
      sees: links ? links.length : 0,
    };
  });
}

function renderPeers(data, rows) {
  const body = document.querySelector('#peers tbody');
  body.replaceChildren(...rows.map((r) => {
    const state = r.reachable ? el('span', { class: 'ok' }, 'up') : el('span', { class: 'bad' }, 'unreachable');
    const ipfs = r.ipfs
      ? el('span', { class: 'ok', title: r.ipfs }, short(r.ipfs))
      : el('span', { class: 'bad' }, 'down');
    const free = data.freespace.has(r.id) ? bytes(Number(data.freespace.get(r.id))) : '–';
    const queue = data.pinqueue.has(r.id) ? data.pinqueue.get(r.id) : '–';
    const name = el('td', { title: r.id }, el('strong', {}, r.name || '(no name)'), ' ', el('code', {}, short(r.id)));
    if (r.isSelf) name.append(' ', el('span', { class: 'tag' }, 'this peer'));
    return el('tr', { 'data-peer': r.id, class: r.reachable && r.ipfs ? '' : 'row-bad' },
      name, el('td', { title: r.error || '' }, state), el('td', {}, ipfs),
      el('td', {}, free), el('td', {}, String(queue)), el('td', {}, `${r.sees} peers`));
  }));
  document.getElementById('peer-count').textContent = `${rows.length}`;
}

function renderPins(data) {
  const body = document.querySelector('#pins tbody');
  const order = ['pinned', 'pinning', 'pin_queued', 'pin_error', 'unpinning', 'unpin_queued', 'unpin_error', 'remote', 'cluster_error', 'unexpectedly_unpinned'];
  const statuses = [...data.pinCounts.keys()].sort((a, b) => {
    const ia = order.indexOf(a), ib = order.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  body.replaceChildren(...statuses.map((s) => el('tr', { 'data-status': s, class: /error|unpinned/.test(s) ? 'row-bad' : '' },
    el('td', {}, s), el('td', {}, String(data.pinCounts.get(s))))));
  document.getElementById('pin-total').textContent = `${data.pinTotal} pins`;
}

function renderAlerts(data) {
  const body = document.querySelector('#alerts tbody');
  const recent = data.alerts.slice(-20).reverse();
  body.replaceChildren(...recent.map((a) => el('tr', {},
    el('td', {}, a.triggered_at || ''), el('td', { title: a.peer }, el('code', {}, short(a.peer))), el('td', {}, a.name))));
  document.getElementById('alert-count').textContent = data.alerts.length ? `${data.alerts.length}` : 'none';
}

// The health graph: cluster peers on a circle (this peer at the top), each
// one's IPFS daemon just outside it. Links among peers and among daemons
// are drawn in full for small clusters; for larger ones only missing links
// are drawn (in red), so the picture shows what is wrong at any size. A
// daemon that is down is a large red node on a dotted red line.
function renderGraph(graph, rows) {
  const n = rows.length;
  const full = n <= FULL_DRAWING_MAX;
  const spacing = full ? 150 : 46;
  const r1 = n === 1 ? 0 : Math.max(full ? 120 : 160, (n * spacing) / (2 * Math.PI));
  const r2 = r1 + (full ? 95 : 60);
  const size = 2 * (r2 + (full ? 75 : 45));
  const c = size / 2;
  const pos = new Map();
  rows.forEach((r, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    const ipfsRadius = n === 1 ? 90 : r2;
    pos.set(r.id, {
      x: c + r1 * Math.cos(a), y: c + r1 * Math.sin(a),
      ix: c + ipfsRadius * Math.cos(a), iy: c + ipfsRadius * Math.sin(a),
    });
  });
  const links = graph.cluster_links || {};
  const linked = (a, b) => (links[a] || []).includes(b) || (links[b] || []).includes(a);
  const edges = svg('g', { class: 'edges' });
  const nodes = svg('g', { class: 'nodes' });
  let missing = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const a = rows[i], b = rows[j];
      const pa = pos.get(a.id), pb = pos.get(b.id);
      if (linked(a.id, b.id)) {
        if (full) edges.append(svg('line', { class: 'link cluster', x1: pa.x, y1: pa.y, x2: pb.x, y2: pb.y }));
      } else if (a.reachable && b.reachable) {
        missing++;
        edges.append(svg('line', { class: 'link missing', x1: pa.x, y1: pa.y, x2: pb.x, y2: pb.y }));
      }
    }
  }
  // Swarm links among the cluster's own daemons.
  const ipfsLinks = graph.ipfs_links || {};
  const ownerOf = new Map(rows.filter((r) => r.ipfs).map((r) => [r.ipfs, r.id]));
  let swarmPairs = 0;
  for (const [daemon, peers] of Object.entries(ipfsLinks)) {
    for (const other of peers) {
      if (daemon >= other || !ownerOf.has(daemon) || !ownerOf.has(other)) continue;
      swarmPairs++;
      if (!full) continue;
      const pa = pos.get(ownerOf.get(daemon)), pb = pos.get(ownerOf.get(other));
      edges.append(svg('line', { class: 'link swarm', x1: pa.ix, y1: pa.iy, x2: pb.ix, y2: pb.iy }));
    }
  }
  let down = 0;
  for (const r of rows) {
    const p = pos.get(r.id);
    const ipfsDown = !r.ipfs;
    if (ipfsDown) down++;
    edges.append(svg('line', { class: ipfsDown ? 'own down' : 'own', x1: p.x, y1: p.y, x2: p.ix, y2: p.iy }));
    // The daemon: a cylinder when there is room, a dot when there is not.
    const ipfs = svg('g', { class: ipfsDown ? 'node ipfs down' : 'node ipfs', 'data-peer': r.id, transform: `translate(${p.ix},${p.iy})` },
      svg('title', {}, ipfsDown ? `IPFS daemon of ${r.name || r.id}: not reachable` : `IPFS ${r.ipfs}`));
    if (full) {
      ipfs.append(svg('rect', { x: -46, y: -20, width: 92, height: 40, rx: 46, ry: 9 }),
        svg('text', { y: -3 }, ipfsDown ? 'IPFS DOWN' : 'IPFS'),
        svg('text', { y: 12, class: 'sub' }, ipfsDown ? '' : short(r.ipfs)));
    } else {
      ipfs.append(svg('circle', { r: ipfsDown ? 13 : 7 }));
    }
    nodes.append(ipfs);
    const cls = ['node', 'cluster'];
    if (r.isSelf) cls.push('self');
    if (!r.reachable) cls.push('unreachable');
    const peer = svg('g', { class: cls.join(' '), 'data-peer': r.id, transform: `translate(${p.x},${p.y})` },
      svg('title', {}, `${r.name} ${r.id}${r.reachable ? '' : ' (unreachable)'}`));
    if (full) {
      if (r.isSelf) peer.append(svg('rect', { class: 'outer', x: -62, y: -25, width: 124, height: 50, rx: 8 }));
      peer.append(svg('rect', { x: -57, y: -20, width: 114, height: 40, rx: 6 }),
        svg('text', { y: -3 }, (r.name || '').slice(0, 16)),
        svg('text', { y: 12, class: 'sub' }, short(r.id)));
    } else {
      peer.append(svg('rect', { x: -22, y: -10, width: 44, height: 20, rx: 4 }),
        svg('text', { y: 4, class: 'tiny' }, (r.name || short(r.id)).slice(0, 8)));
    }
    nodes.append(peer);
  }
  const picture = svg('svg', { viewBox: `0 0 ${size} ${size}`, role: 'img', 'data-peers': n }, edges, nodes);
  document.getElementById('graph').replaceChildren(picture);
  const parts = [`${n} peer${n === 1 ? '' : 's'}`];
  parts.push(missing ? `${missing} missing cluster links` : 'cluster fully connected');
  parts.push(down ? `${down} IPFS daemon${down > 1 ? 's' : ''} down` : 'all IPFS daemons up');
  parts.push(`${swarmPairs} IPFS links`);
  if (!full) parts.push('only problems drawn');
  const summary = document.getElementById('graph-summary');
  summary.textContent = parts.join(' · ');
  summary.className = missing || down ? 'bad' : 'muted';
}

function renderSelf(self) {
  const name = self.peername || '';
  document.getElementById('self').textContent = `${name} ${short(self.id)} · v${self.version || '?'}`;
  document.title = `pincluster · ${name}`;
}

function showProblem(message) {
  const p = document.getElementById('problem');
  p.hidden = !message;
  p.textContent = message || '';
}

let running = false;
let refreshes = 0;
let lastPins = null;
async function refresh() {
  if (running) return; // a slow cluster must not pile up requests
  running = true;
  try {
    const countPins = !lastPins || refreshes % PIN_COUNT_EVERY === 0;
    const data = await load(countPins, lastPins);
    lastPins = { pinCounts: data.pinCounts, pinTotal: data.pinTotal };
    refreshes++;
    const rows = peerRows(data);
    renderSelf(data.self);
    renderGraph(data.graph, rows);
    renderPeers(data, rows);
    renderPins(data);
    renderAlerts(data);
    showProblem('');
    document.getElementById('refreshed').textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = 'true';
  } catch (e) {
    showProblem(e.status === 401 || e.status === 403
      ? 'The API refused the credentials: log in to this peer\'s REST API and reload.'
      : `Cannot read the cluster: ${e.message}`);
  } finally {
    running = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
