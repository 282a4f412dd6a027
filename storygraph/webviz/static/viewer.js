/* storygraph viewer: the story graph (Cytoscape.js) in labelled timeline lanes, live updates over SSE, scene and
   character panels, the read-only Cypher console (table or graph, with history and saved queries), and in the
   studio: editing, references, deleting, the generation queue (run all / a timeline / the stale scenes, progress
   with an estimate of the time left, cancel), takes side by side and timelines played end to end. Text from the
   story is always inserted as text (textContent), never as HTML. */
(function () {
  'use strict';

  const TOKEN_KEY = 'storygraph-token';
  const THUMB_ZOOM = 0.35;        // big stories: thumbnails only at this zoom or closer
  const THUMB_MAX = 250;          // ... and for at most this many scenes in view
  const CHUNK = 2500;             // big stories: elements Cytoscape takes in per step after the first frame
  const CLIENT_CLASSES = ['thumb-on', 'labeled', 'dim', 'hit', 'focus', 'found'];
  const HISTORY_MAX = 50;         // console queries remembered per story
  const LABEL_ZOOM = 0.8;         // big stories: scene labels in view at this zoom or closer

  const S = window.storygraph = {
    cy: null, meta: null, lastSeq: 0, token: '', editable: false, big: false, layout: 'preset',
    show: { appears: false, setin: false }, branches: [], found: [], foundAt: -1, cut: null, compare: null,
    clockPos: {}, pending: new Map(), selected: null, es: null, backoff: 1000, reconnectTimer: null,
    live: 'connecting', ready: false, fullyLoaded: false, startedAt: Date.now(), firstRenderAt: null, cyAllAt: null,
    pendingEdges: new Map(), overview: null,
    fullRenderAt: null, updates: [], events: [], jobs: new Map(), refreshing: new Map(), reloadTimer: null,
    connects: 0,
  };

  // ---------------------------------------------------------------------------------------------
  // small DOM helpers (text only)

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, String(v));
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return '—';
    if (typeof x === 'number') return Number.isInteger(x) ? String(x) : x.toFixed(digits === undefined ? 3 : digits);
    return String(x);
  }

  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

  function debounce(fn, ms) {
    let t = null;
    return function () { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  // ---------------------------------------------------------------------------------------------
  // token and API

  function initToken() {
    const meta = $('meta[name="storygraph-token"]');
    const fromPage = meta ? meta.content : '';
    const rejected = ($('meta[name="storygraph-token-rejected"]') || {}).content === 'yes';
    let t = fromPage;
    try {
      if (fromPage) sessionStorage.setItem(TOKEN_KEY, fromPage);
      else if (rejected) sessionStorage.removeItem(TOKEN_KEY);  // the address held a stale token
      else t = sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (e) { /* storage may be off */ }
    const url = new URL(location.href);
    if (url.searchParams.has('token')) {  // keep the secret out of history and bookmarks
      url.searchParams.delete('token');
      history.replaceState(null, '', url.pathname + (url.search || '') + url.hash);
    }
    S.token = t;
    S.editable = ($('meta[name="storygraph-editable"]') || {}).content === 'yes';
    updateTokenBox();
  }

  function updateTokenBox() {
    $('#token-box').hidden = !!S.token;
  }

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function api(method, url, body) {
    const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (method !== 'GET') {
      opts.headers['Content-Type'] = 'application/json';
      opts.headers['X-Storygraph-Token'] = S.token;
      opts.body = JSON.stringify(body || {});
    }
    let resp;
    try { resp = await fetch(url, opts); } catch (e) { throw new ApiError('network error: ' + e.message, 0); }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = (data && data.error) || (resp.status + ' ' + resp.statusText);
      if (resp.status === 401) { S.token = ''; updateTokenBox(); }
      throw new ApiError(msg, resp.status);
    }
    return data;
  }

  // ---------------------------------------------------------------------------------------------
  // the graph

  function graphStyle(big) {
    if (big) return bigStyle();
    const st = [
      { selector: 'node', style: {
        // big stories: labels only for the scenes in view when zoomed in (measuring 10 000 labels is slow)
        'label': big ? '' : 'data(label)', 'font-size': 10, 'min-zoomed-font-size': 8, 'color': '#c9cfdd',
        'text-valign': 'bottom', 'text-margin-y': 4, 'text-wrap': 'ellipsis', 'text-max-width': 96 } },
      { selector: 'node.labeled, node.character, node.environment', style: { 'label': 'data(label)' } },
      { selector: 'node.scene', style: {
        'shape': 'round-rectangle', 'width': 72, 'height': 46, 'background-color': '#3b4a63',
        'border-width': 2, 'border-color': '#6b7a99' } },
      { selector: 'node.status-done', style: { 'background-color': '#2f6f4f', 'border-color': '#58c08a' } },
      { selector: 'node.status-generating', style: { 'border-color': '#f0a030', 'border-style': 'dashed', 'border-width': 4 } },
      { selector: 'node.status-failed', style: { 'background-color': '#6f2f2f', 'border-color': '#e05555' } },
      { selector: 'node.status-generating.stepping', style: { 'border-color': '#ffd27a' } },
      { selector: 'node.status-stale', style: { 'background-color': '#5f5220', 'border-color': '#e0c040', 'border-style': 'dotted', 'border-width': 4 } },
      { selector: 'node.status-interrupted', style: { 'background-color': '#4a3b63', 'border-color': '#f0a030' } },
      { selector: 'node.scene.thumb-on[?thumb]', style: { 'background-image': 'data(thumb)', 'background-fit': 'cover',
        'background-clip': 'node' } },
      { selector: 'node.character', style: { 'shape': 'ellipse', 'width': 44, 'height': 44,
        'background-color': '#7d55b8', 'border-width': 2, 'border-color': '#b79cf0', 'font-size': 12 } },
      { selector: 'node.environment', style: { 'shape': 'hexagon', 'width': 54, 'height': 40,
        'background-color': '#23707e', 'border-width': 2, 'border-color': '#63c3d3', 'text-valign': 'top',
        'text-margin-y': -4 } },
      { selector: 'edge', style: { 'width': 1.5, 'line-color': '#667', 'opacity': 0.8,
        'curve-style': big ? 'haystack' : 'bezier' } },
      // retention shows in the width only: a long gap must stay as visible as a short one
      { selector: 'edge.next', style: { 'line-color': '#99a', 'width': 'mapData(decay, 0, 1, 2, 6)',
        'opacity': 0.95, 'target-arrow-shape': big ? 'none' : 'triangle' } },
      { selector: 'edge.next.continuous', style: { 'line-color': '#7fb3ff', 'target-arrow-color': '#7fb3ff' } },
      { selector: 'edge.next.cut', style: { 'line-style': 'dashed', 'line-color': '#c9c9d9', 'target-arrow-color': '#c9c9d9' } },
      { selector: 'edge.next.time_skip', style: { 'line-style': 'dotted', 'line-color': '#f2c14e',
        'target-arrow-color': '#f2c14e', 'width': 3.5, 'label': big ? '' : 'data(skip)', 'font-size': 10,
        'color': '#f2c14e', 'text-background-color': '#12141a', 'text-background-opacity': 0.85,
        'text-background-padding': 2, 'text-margin-y': -8 } },
      { selector: 'edge.appears', style: { 'curve-style': 'haystack', 'line-color': '#a07fd6',
        'width': 'mapData(strength, 0, 5, 0.6, 6)', 'opacity': 0.4 } },
      { selector: 'edge.appears.planned', style: { 'line-style': 'dashed', 'opacity': 0.22 } },
      { selector: 'edge.setin', style: { 'curve-style': 'haystack', 'line-color': '#3aa0b0', 'width': 1, 'opacity': 0.22 } },
      // cast and places are hidden unless asked for: with them every scene joins every character (a hairball)
      { selector: 'edge.appears', style: { 'display': S.show.appears ? 'element' : 'none' } },
      { selector: 'edge.setin', style: { 'display': S.show.setin ? 'element' : 'none' } },
      { selector: 'node.lane', style: { 'shape': 'round-rectangle', 'width': 'label', 'height': 20, 'padding': 6,
        'background-color': '#1d2436', 'border-width': 1, 'border-color': '#3b4a70', 'label': 'data(label)',
        'text-valign': 'center', 'text-halign': 'center', 'text-margin-y': 0, 'color': '#b9c8ea', 'font-size': 11,
        'text-wrap': 'none', 'text-max-width': 400,
        'min-zoomed-font-size': 4, 'events': 'no', 'z-index': 1 } },
      { selector: 'node.lane.main', style: { 'border-color': '#7fb3ff', 'color': '#dfe8ff' } },
      { selector: 'node.found', style: { 'border-color': '#ffd400', 'border-width': 6 } },
      { selector: 'edge.conditioned', style: { 'curve-style': 'unbundled-bezier', 'control-point-distances': 'data(bend)',
        'line-color': '#ff6fa8', 'target-arrow-shape': 'vee', 'target-arrow-color': '#ff6fa8', 'width': 3,
        'opacity': 1, 'label': 'data(label)', 'font-size': 9, 'color': '#ffc0d8', 'text-background-color': '#12141a',
        'text-background-opacity': 0.8, 'text-background-padding': 2, 'z-index': 20 } },
      { selector: '.dim', style: { 'opacity': 0.1, 'text-opacity': 0.2 } },
      { selector: 'node.focus', style: { 'border-color': '#ffffff', 'border-width': 5 } },
      { selector: 'node:selected', style: { 'border-color': '#ffffff', 'border-width': 5 } },
      { selector: '.hit', style: { 'overlay-color': '#ffd400', 'overlay-opacity': 0.4, 'overlay-padding': 7 } },
    ];
    return st;
  }

  function bigStyle() {
    // a large story: Cytoscape applies every rule to every element (about 80 µs each on a slow CPU), so only the
    // rules a large story uses, with fixed values instead of per-element mappings
    return [
      { selector: 'node', style: { 'label': '', 'width': 72, 'height': 46, 'shape': 'round-rectangle',
        'background-color': '#3b4a63', 'border-width': 2, 'border-color': '#6b7a99', 'font-size': 10, 'color': '#c9cfdd',
        'text-valign': 'bottom', 'text-margin-y': 4, 'min-zoomed-font-size': 8 } },
      { selector: 'node.labeled, node.character, node.environment', style: { 'label': 'data(label)' } },
      { selector: 'node.status-done', style: { 'background-color': '#2f6f4f', 'border-color': '#58c08a' } },
      { selector: 'node.status-generating', style: { 'border-color': '#f0a030', 'border-width': 4 } },
      { selector: 'node.status-failed', style: { 'background-color': '#6f2f2f', 'border-color': '#e05555' } },
      { selector: 'node.status-stale', style: { 'border-color': '#e6a23c', 'border-width': 6 } },
      { selector: 'node.thumb-on', style: { 'background-image': 'data(thumb)', 'background-fit': 'cover' } },
      { selector: 'node.character', style: { 'shape': 'ellipse', 'width': 44, 'height': 44, 'background-color': '#7d55b8' } },
      { selector: 'node.environment', style: { 'shape': 'hexagon', 'width': 54, 'height': 40, 'background-color': '#23707e' } },
      { selector: 'node.lane', style: { 'label': 'data(label)', 'width': 150, 'height': 20, 'background-color': '#1d2436',
        'border-width': 1, 'border-color': '#3b4a70', 'text-valign': 'center', 'color': '#b9c8ea', 'font-size': 11,
        'min-zoomed-font-size': 4, 'events': 'no' } },
      { selector: 'edge', style: { 'curve-style': 'haystack', 'width': 3, 'line-color': '#99a', 'opacity': 0.95 } },
      { selector: 'edge.continuous', style: { 'line-color': '#7fb3ff' } },
      { selector: 'edge.time_skip', style: { 'line-color': '#f2c14e', 'line-style': 'dotted', 'width': 3.5 } },
      { selector: 'edge.cut', style: { 'line-style': 'dashed', 'line-color': '#c9c9d9' } },
      { selector: 'edge.conditioned', style: { 'curve-style': 'bezier', 'line-color': '#ff6fa8', 'target-arrow-shape': 'vee',
        'target-arrow-color': '#ff6fa8', 'label': 'data(label)', 'font-size': 9, 'color': '#ffc0d8', 'z-index': 20 } },
      { selector: '.dim', style: { 'opacity': 0.1 } },
      { selector: 'node.focus, node:selected', style: { 'border-color': '#ffffff', 'border-width': 5 } },
      { selector: 'node.found', style: { 'border-color': '#ffd400', 'border-width': 6 } },
      { selector: '.hit', style: { 'overlay-color': '#ffd400', 'overlay-opacity': 0.4, 'overlay-padding': 7 } },
    ];
  }

  function setLoading(text) {
    const e = $('#loading');
    e.textContent = text || '';
    e.hidden = !text;
  }

  function markRendered(key, then) {
    // two frames: the one cytoscape draws in, and the next, by when it is on screen
    requestAnimationFrame(() => requestAnimationFrame(() => { if (!S[key]) S[key] = Date.now(); if (then) then(); }));
  }

  async function start() {
    initToken();
    bindUi();
    setLoading('loading the story…');
    let g;
    S.timing = { script: Date.now() };
    try {
      g = await api('GET', '/api/graph');
      S.timing.graph = Date.now();
    } catch (e) {
      setLoading('could not load the story: ' + e.message);
      setTimeout(start, 3000);
      return;
    }
    buildGraph(g);
    fillQueryLists();
    S.timing.built = Date.now();
    connect();
    if (S.editable) loadJobs();
  }

  function applyMeta(g) {
    S.meta = { story: g.story, counts: g.counts, backend: g.backend, big: g.big, lanes: g.lanes };
    S.editable = !!g.editable;
    S.big = !!g.big;
    const c = g.counts;
    $('#counts').textContent = `${c.scenes} scenes · ${c.characters} characters · ${c.environments} environments · ` +
      `${c.transitions} transitions`;
    if (g.story && g.story.title) { $('#story-title').textContent = g.story.title; document.title = g.story.title + ' · storygraph'; }
    for (const n of g.nodes) if (n.data.type === 'scene' && n.position) S.clockPos[n.data.id] = n.position;
    fillSelectors(g);
    $('#edit-readonly').hidden = S.editable;
    $('#run-controls').hidden = !S.editable;
    $$('#tab-edit form button, #tab-edit form input, #tab-edit form select, #tab-edit form textarea')
      .forEach((x) => { x.disabled = !S.editable; });
  }

  function buildGraph(g) {
    S.lastSeq = Math.max(S.lastSeq, g.last_seq || 0);
    applyMeta(g);
    S.layout = g.layout;
    $('#layout').value = g.layout;
    if (g.big || !g.dagre) $('#layout').disabled = true;
    const container = $('#cy');
    const base = {
      container, style: graphStyle(g.big), layout: { name: 'preset', fit: false }, minZoom: 0.01, maxZoom: 4,
      motionBlur: false, selectionType: 'single', boxSelectionEnabled: false,
    };
    if (!g.big) {
      S.cy = cytoscape(Object.assign(base, { elements: g.nodes.concat(g.edges).concat(laneNodes(g.branches)) }));
      if (S.layout === 'dagre') runDagre(); else placeLanes();
      S.cy.fit(undefined, 40);
      S.cy.nodes('.scene[?thumb]').addClass('thumb-on');
      afterBuild();
      S.cy.one('render', () => markRendered('firstRenderAt'));
      S.fullyLoaded = true;
      S.cy.one('render', () => markRendered('fullRenderAt'));
      return;
    }
    // big stories: draw the region where the story begins first, then stream in the rest
    const w = container.clientWidth || 1200, ht = container.clientHeight || 800, zoom = 0.5;
    let minX = Infinity, minY = Infinity;
    for (const n of g.nodes) if (n.data.type === 'scene') { minX = Math.min(minX, n.position.x); minY = Math.min(minY, n.position.y); }
    const x0 = minX - 80, y0 = minY - 200;
    const x1 = x0 + 2 * w / zoom, y1 = y0 + 2 * ht / zoom;
    const first = laneNodes(g.branches), rest = [], inFirst = new Set();
    for (const n of g.nodes) {
      const p = n.position;
      if (n.data.type !== 'scene' || (p.x >= x0 && p.x <= x1 && p.y >= y0 && p.y <= y1)) { first.push(n); inFirst.add(n.data.id); }
      else rest.push(n);
    }
    const restEdges = [];
    for (const e of g.edges) {
      if (inFirst.has(e.data.source) && inFirst.has(e.data.target)) first.push(e); else restEdges.push(e);
    }
    for (const n of rest) S.pending.set(n.data.id, n);
    for (const e of restEdges) S.pendingEdges.set(e.data.id, e);
    S.cy = cytoscape(Object.assign(base, {
      elements: first, zoom, pan: { x: -x0 * zoom, y: -y0 * zoom }, pixelRatio: 1,
      hideEdgesOnViewport: true, textureOnViewport: false,
    }));
    // Cytoscape's layered texture cache draws the whole graph into canvases as wide as the story; for a long
    // timeline zoomed out they pass the browser's 32767 px canvas limit and elements go missing. Draw each
    // element from its own cache instead (cytoscape 3.34 internals; see static/vendor/README.md).
    const lyr = S.cy.renderer() && S.cy.renderer().data && S.cy.renderer().data.lyrTxrCache;
    if (lyr && typeof lyr.getLayers === 'function') lyr.getLayers = () => null;
    afterBuild();
    startOverview();
    const queue = rest.concat(restEdges);
    let i = 0;
    setLoading(`taking in ${queue.length} more elements…`);
    const step = () => {
      const chunk = queue.slice(i, i + CHUNK);
      i += chunk.length;
      const add = [];
      for (const el of chunk) {
        if (el.data.type === 'scene') {  // its data may have been updated by an event while it waited
          add.push(S.pending.get(el.data.id) || el);
          S.pending.delete(el.data.id);
        } else {
          add.push(el);
          S.pendingEdges.delete(el.data.id);
        }
      }
      S.cy.add(add);  // nodes come before edges in the queue, so every edge finds its ends
      drawOverviewSoon();
      if (i < queue.length) {
        setLoading(`taking in ${queue.length - i} more elements…`);
        setTimeout(step, 0);
      } else {
        setLoading('');
        S.fullyLoaded = true;
        applyFilter();
        updateThumbs();
        S.cy.one('render', () => markRendered('cyAllAt'));
      }
    };
    // the whole story is on screen from the first frame (what Cytoscape has not taken in yet, the overview
    // draws); Cytoscape takes the rest in small steps after it, so the page answers meanwhile
    S.cy.one('render', () => requestAnimationFrame(() => requestAnimationFrame(() => {
      S.firstRenderAt = S.firstRenderAt || Date.now();
      drawOverview();
      markRendered('fullRenderAt', () => setTimeout(step, 0));
    })));
  }

  // ---------------------------------------------------------------------------------------------
  // the overview of a large story: scenes and transitions Cytoscape has not taken in yet, drawn as plain
  // rectangles and lines on a canvas under Cytoscape's, following its pan and zoom

  const STATUS_FILL = { planned: '#3b4a63', done: '#2f6f4f', generating: '#6b4a12', failed: '#6f2f2f', stale: '#5a4a20',
    interrupted: '#4a3b63' };
  const KIND_STROKE = { continuous: '#7fb3ff', cut: '#c9c9d9', time_skip: '#f2c14e' };

  function startOverview() {
    const wrap = $('#cy-wrap');
    const canvas = h('canvas', { id: 'overview', class: 'overview', 'aria-hidden': 'true' });
    wrap.insertBefore(canvas, $('#cy'));
    S.overview = { canvas, raf: null };
    S.cy.on('viewport resize', drawOverviewSoon);
  }

  function drawOverviewSoon() {
    if (!S.overview || S.overview.raf) return;
    S.overview.raf = requestAnimationFrame(() => { S.overview.raf = null; drawOverview(); });
  }

  function drawOverview() {
    const ov = S.overview;
    if (!ov) return;
    const cy = S.cy, c = ov.canvas, w = $('#cy').clientWidth, ht = $('#cy').clientHeight;
    if (c.width !== w || c.height !== ht) { c.width = w; c.height = ht; }
    const ctx = c.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, w, ht);
    if (!S.pending.size && !S.pendingEdges.size) {  // Cytoscape holds everything now
      cy.off('viewport resize', drawOverviewSoon);
      c.remove();
      S.overview = null;
      return;
    }
    const z = cy.zoom(), pan = cy.pan();
    ctx.setTransform(z, 0, 0, z, pan.x, pan.y);
    const ext = cy.extent(), m = 100;
    const inView = (p) => p.x >= ext.x1 - m && p.x <= ext.x2 + m && p.y >= ext.y1 - m && p.y <= ext.y2 + m;
    const at = (id) => { const p = S.pending.get(id); if (p) return p.position; const n = cy.getElementById(id); return n.nonempty() ? n.position() : null; };
    ctx.lineWidth = 3;
    for (const kind of Object.keys(KIND_STROKE)) {
      ctx.strokeStyle = KIND_STROKE[kind];
      ctx.beginPath();
      for (const e of S.pendingEdges.values()) {
        if (e.data.kind !== kind) continue;
        const a = at(e.data.source), b = at(e.data.target);
        if (!a || !b || (!inView(a) && !inView(b))) continue;
        ctx.moveTo(a.x, a.y);
        ctx.lineTo(b.x, b.y);
      }
      ctx.stroke();
    }
    for (const [status, fill] of Object.entries(STATUS_FILL)) {
      ctx.fillStyle = fill;
      for (const n of S.pending.values()) {
        if ((n.data.status || 'planned') !== status || !inView(n.position)) continue;
        ctx.fillRect(n.position.x - 36, n.position.y - 23, 72, 46);
      }
    }
  }

  function afterBuild() {
    const cy = S.cy;
    if (!S.big) setLoading('');
    // one listener with no selector: every event an element emits (thousands while a story loads) is matched
    // against each listener cy holds
    cy.on('tap', (e) => {
      const t = e.target;
      if (t === cy) clearSelection();
      else if (t.isNode && t.isNode()) {
        if (t.hasClass('scene')) selectScene(t.id());
        else if (t.hasClass('character')) selectCharacter(t.id());
        else if (t.hasClass('environment')) showEnvironment(t);
      }
    });
    if (S.big) { cy.on('viewport', debounce(updateThumbs, 150)); updateThumbs(); }
    S.ready = true;
    applyFilter();
  }

  function runDagre() {
    const cy = S.cy;
    const els = cy.elements('node.scene, edge.next');
    if (els.nodes().length === 0) return;
    els.layout({ name: 'dagre', rankDir: 'LR', nodeSep: 34, rankSep: 64, edgeSep: 10, fit: false, animate: false }).run();
    placeSatellites();
    placeLanes();
  }

  function placeClock() {
    S.cy.batch(() => {
      S.cy.nodes('.scene').forEach((n) => { const p = S.clockPos[n.id()]; if (p) n.position({ x: p.x, y: p.y }); });
    });
    placeSatellites();
    placeLanes();
  }

  function placeSatellites() {
    const cy = S.cy;
    const scenes = cy.nodes('.scene');
    if (scenes.length === 0) return;
    const bb = scenes.boundingBox();
    const row = (sel, y, xsOf) => {
      const items = cy.nodes(sel).map((n) => {
        const xs = xsOf(n);
        return { n, want: xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : (bb.x1 + bb.x2) / 2 };
      }).sort((a, b) => a.want - b.want);
      let prev = -Infinity;
      for (const it of items) { const x = Math.max(it.want, prev + 120); it.n.position({ x, y }); prev = x; }
    };
    row('node.character', bb.y2 + 150, (c) => scenes.filter((sn) => (sn.data('characters') || []).includes(c.id())).map((sn) => sn.position('x')));
    row('node.environment', bb.y1 - 150, (e) => scenes.filter((sn) => sn.data('environment') === e.id()).map((sn) => sn.position('x')));
  }

  // timeline lanes: a label at the start of every branch, named after it (the first one is the main timeline)
  function laneLabel(b, i) {
    const n = b.scenes;
    return (i === 0 ? 'main · ' : '⎇ ') + b.branch + (S.big ? '' : ` (${n})`);
  }

  function laneNodes(branches) {
    S.branches = branches || [];
    fillBranchSelects();
    return S.branches.map((b, i) => ({ group: 'nodes', data: { id: 'lane:' + b.branch, type: 'lane', label: laneLabel(b, i),
      branch: b.branch }, position: { x: b.x0 - 130, y: b.y }, classes: 'lane' + (i === 0 ? ' main' : ''), selectable: false,
      grabbable: false }));
  }

  function refreshLanes(branches) {
    const cy = S.cy;
    cy.batch(() => { cy.remove('node.lane'); cy.add(laneNodes(branches)); });
    placeLanes();
  }

  function placeLanes() {
    // beside the first scene of each branch, wherever the layout put it
    const cy = S.cy;
    cy.batch(() => cy.nodes('.lane').forEach((n) => {
      const b = S.branches.find((x) => x.branch === n.data('branch'));
      const first = b && cy.getElementById(b.first);
      if (first && first.nonempty()) {
        const p = first.position();
        n.position({ x: p.x - 60 - n.width() / 2 - 24, y: p.y });
      }
    }));
  }

  function fillBranchSelects() {
    for (const sel of [$('#run-branch'), $('#timeline-select')]) {
      const cur = sel.value;
      clear(sel);
      S.branches.forEach((b, i) => sel.appendChild(h('option', { value: b.branch, text: (i === 0 ? 'main: ' : '') + b.branch })));
      if (S.branches.some((b) => b.branch === cur)) sel.value = cur;
    }
  }

  function setClasses(ele, serverClasses) {
    const keep = CLIENT_CLASSES.filter((c) => ele.hasClass(c));
    ele.classes((serverClasses || '') + ' ' + keep.join(' '));
  }

  function updateThumbs() {
    // big stories: thumbnails and labels only for the scenes in view, and only when zoomed in enough to see them
    const cy = S.cy;
    if (!cy) return;
    if (!S.big) { cy.nodes('.scene').forEach((n) => n.toggleClass('thumb-on', !!n.data('thumb'))); return; }
    const thumbs = cy.zoom() >= THUMB_ZOOM, labels = cy.zoom() >= LABEL_ZOOM;
    const ext = cy.extent();
    const inView = (n) => { const p = n.position(); return p.x >= ext.x1 && p.x <= ext.x2 && p.y >= ext.y1 && p.y <= ext.y2; };
    cy.batch(() => {
      cy.nodes('.scene.thumb-on, .scene.labeled').forEach((n) => {
        if (!inView(n)) n.removeClass('thumb-on labeled');
        else { if (!thumbs) n.removeClass('thumb-on'); if (!labels) n.removeClass('labeled'); }
      });
      if (!thumbs) return;
      let count = 0;
      cy.nodes('.scene').forEach((n) => {
        if (count >= THUMB_MAX || !inView(n)) return;
        count++;
        if (n.data('thumb')) n.addClass('thumb-on');
        if (labels) n.addClass('labeled');
      });
    });
  }

  // a full reload merged into the graph on screen (new scenes, edits, a reset)
  function scheduleReload(ms) {
    clearTimeout(S.reloadTimer);
    S.reloadTimer = setTimeout(reloadGraph, ms === undefined ? 120 : ms);
  }

  async function reloadGraph() {
    let g;
    try { g = await api('GET', '/api/graph'); } catch (e) { scheduleReload(2000); return; }
    if (!S.cy) { buildGraph(g); return; }
    if (!S.fullyLoaded) { scheduleReload(500); return; }
    applyMeta(g);
    const cy = S.cy, want = new Set();
    let added = 0;
    cy.batch(() => {
      for (const el of g.nodes.concat(g.edges)) {
        want.add(el.data.id);
        const ex = cy.getElementById(el.data.id);
        if (ex.nonempty()) { ex.data(el.data); setClasses(ex, el.classes); }
        else if (el.data.source === undefined || (cy.getElementById(el.data.source).nonempty() &&
                 cy.getElementById(el.data.target).nonempty())) { cy.add(el); added++; }
      }
      cy.elements().filter((x) => !want.has(x.id()) && !x.hasClass('conditioned') && !x.hasClass('lane')).remove();
    });
    refreshLanes(g.branches);
    if (added) {
      if (S.layout === 'dagre' && !S.big) runDagre(); else placeClock();
    }
    updateThumbs();
    applyFilter();
    if (S.selected) refreshSelected();
    markUpdate('*reload', null);
  }

  function markUpdate(id, seq, status) {
    requestAnimationFrame(() => requestAnimationFrame(() => {
      S.updates.push({ id, seq, status, at: Date.now() });
      if (S.updates.length > 2000) S.updates.splice(0, 1000);
    }));
  }

  async function refreshScene(id, seq) {
    // one request per scene at a time; events arriving meanwhile cause one more
    if (S.refreshing.has(id)) { S.refreshing.set(id, true); return; }
    S.refreshing.set(id, false);
    try {
      const el = await api('GET', '/api/scenes/' + encodeURIComponent(id) + '/element');
      const cy = S.cy, n = cy.getElementById(id);
      if (n.empty()) {
        const p = S.pending.get(id);
        if (p) { p.data = Object.assign(p.data, el.node.data); p.classes = el.node.classes; drawOverviewSoon(); }
        else scheduleReload();
      } else {
        cy.batch(() => {
          n.data(el.node.data);
          setClasses(n, el.node.classes);
          if (!S.big) {
            const want = new Set(el.edges.map((e) => e.data.id));
            n.connectedEdges('.appears').filter((e) => !want.has(e.id())).remove();
            for (const e of el.edges) {
              const ex = cy.getElementById(e.data.id);
              if (ex.nonempty()) { ex.data(e.data); setClasses(ex, e.classes); }
              else if (cy.getElementById(e.data.source).nonempty()) cy.add(e);
            }
          }
          n.toggleClass('thumb-on', !!n.data('thumb') && (!S.big || cy.zoom() >= THUMB_ZOOM));
        });
        applyFilter();
      }
      markUpdate(id, seq, el.node.data.status);
      if (S.selected && S.selected.type === 'scene' && S.selected.id === id) refreshSelected();
    } catch (e) {
      if (e.status === 404) scheduleReload();
    } finally {
      const again = S.refreshing.get(id);
      S.refreshing.delete(id);
      if (again) refreshScene(id, seq);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // live updates

  function setLive(state, text) {
    S.live = state;
    const e = $('#live');
    e.className = 'live ' + state;
    $('#live-text').textContent = text || state;
  }

  function connect() {
    clearTimeout(S.reconnectTimer);
    if (S.es) { S.es.close(); S.es = null; }
    S.connects++;
    const es = new EventSource('/events?lastEventId=' + encodeURIComponent(S.lastSeq));
    S.es = es;
    es.onopen = () => { S.backoff = 1000; setLive('live', 'live · #' + S.lastSeq); };
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      onEvent(ev);
    };
    es.addEventListener('hello', () => setLive('live', 'live · #' + S.lastSeq));
    es.addEventListener('reset', (m) => {
      let d = {};
      try { d = JSON.parse(m.data); } catch (e) { /* keep going */ }
      if (typeof d.last_seq === 'number') S.lastSeq = d.last_seq;
      logLine({ seq: S.lastSeq, kind: 'reset', ref_id: '', payload: { reason: d.reason } });
      scheduleReload(0);
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // a non-200 answer closes an EventSource for good: make a new one, passing our last id ourselves
        if (S.es === es) S.es = null;
        setLive('offline', 'offline · retry in ' + Math.round(S.backoff / 1000) + ' s');
        S.reconnectTimer = setTimeout(connect, S.backoff + Math.random() * 300);
        S.backoff = Math.min(S.backoff * 2, 30000);
      } else {
        setLive('connecting', 'reconnecting');
      }
    };
  }

  const SCENE_KINDS = /^(take\.|scene\.)/;
  const STRUCTURAL = new Set(['scene.added', 'scene.updated', 'scene.planned', 'scene.deleted', 'transition.added']);

  function onEvent(ev) {
    if (typeof ev.seq === 'number') {
      if (ev.seq <= S.lastSeq && S.events.length && ev.seq <= S.events[S.events.length - 1].seq) return;
      S.lastSeq = Math.max(S.lastSeq, ev.seq);
    }
    S.events.push(ev);
    if (S.events.length > 1000) S.events.splice(0, 500);
    setLive('live', 'live · #' + S.lastSeq);
    logLine(ev);
    if (ev.kind.startsWith('job.')) { updateJob(ev); return; }  // the engine's own events move the graph
    if (!S.cy) return;
    const known = ev.ref_id && (S.cy.getElementById(ev.ref_id).nonempty() || S.pending.has(ev.ref_id));
    if (SCENE_KINDS.test(ev.kind) && known) {
      if (STRUCTURAL.has(ev.kind)) scheduleReload();  // cast, setting or timeline may have changed
      else refreshScene(ev.ref_id, ev.seq);
    } else {
      scheduleReload();
    }
  }

  function logLine(ev) {
    const list = $('#event-log');
    const p = ev.payload || {};
    const extra = Object.keys(p).length ? ' ' + JSON.stringify(p).slice(0, 160) : '';
    const when = ev.at ? ev.at.slice(11, 19) : '';
    list.insertBefore(h('li', { value: ev.seq }, h('span', { class: 'muted', text: when + ' ' }),
      h('b', { text: ev.kind }), ' ', ev.ref_id ? sceneLink(ev.ref_id) : '', h('span', { class: 'muted', text: extra })),
    list.firstChild);
    while (list.children.length > 300) list.removeChild(list.lastChild);
  }

  // the queue: jobs keep the latest state they reached (an answer that arrives after the job's own events never
  // takes it back to "queued")
  const JOB_RANK = { queued: 0, running: 1, cancelling: 2, done: 3, failed: 3, cancelled: 3 };
  const JOB_EVENTS = { 'job.queued': 'queued', 'job.started': 'running', 'job.progress': 'running',
    'job.cancelling': 'cancelling', 'job.finished': 'done', 'job.failed': 'failed', 'job.cancelled': 'cancelled' };

  function mergeJob(j) {
    const id = j.id === undefined ? j.job : j.id;
    const old = S.jobs.get(id);
    if (old && (JOB_RANK[old.state] || 0) > (JOB_RANK[j.state] || 0)) {
      if (j.progress && old.state === 'cancelling') old.progress = j.progress;
      return old;
    }
    const merged = Object.assign({}, old || {}, j, { id });
    if (!j.progress && old && old.progress) merged.progress = old.progress;
    S.jobs.set(id, merged);
    return merged;
  }

  function updateJob(ev) {
    const p = ev.payload || {};
    if (p.job === undefined) return;
    const state = JOB_EVENTS[ev.kind] || p.state;
    const j = mergeJob(Object.assign({}, p, { id: p.job, state: p.state || state }));
    if (ev.kind === 'job.progress' && p.progress && p.progress.scene) markStepping(p.progress);
    if (JOB_RANK[j.state] === 3) clearStepping();
    renderJobs();
  }

  function markStepping(pr) {
    S.stage = { scene: pr.scene, stage: pr.stage, take: pr.take, step: pr.step, steps: pr.steps };
    if (!S.cy) return;
    S.cy.nodes('.stepping').removeClass('stepping');
    S.cy.getElementById(pr.scene).addClass('stepping');
  }

  function clearStepping() {
    S.stage = null;
    if (S.cy) S.cy.nodes('.stepping').removeClass('stepping');
  }

  function fmtSeconds(x) {
    if (x === null || x === undefined) return '…';
    x = Math.max(0, Math.round(x));
    return x >= 3600 ? `${Math.floor(x / 3600)} h ${Math.round((x % 3600) / 60)} min` : x >= 60 ? `${Math.floor(x / 60)} min ${x % 60} s` : `${x} s`;
  }

  function jobLine(j) {
    const bits = [`#${j.id} `, j.kind === 'scene' && j.target ? sceneLink(j.target) : (j.label || j.kind)];
    if (j.kind === 'scene' && j.takes) bits.push(` · ${j.takes} take${j.takes === 1 ? '' : 's'}`);
    bits.push(h('span', { class: 'job-state', text: ' · ' + j.state }));
    if (JOB_RANK[j.state] === 3) {
      const n = (j.done || []).length || j.done_count || 0;
      bits.push(` · ${n} scene${n === 1 ? '' : 's'} made`);
      if (j.duration_s !== null && j.duration_s !== undefined) bits.push(` · ${fmtSeconds(j.duration_s)}`);
    }
    return bits;
  }

  function progressText(j) {
    const pr = j.progress || {};
    if (!pr.scene) return j.state === 'cancelling' ? 'cancelling…' : 'starting…';
    let t = `${pr.scene} · ${pr.stage || ''}`;
    if (pr.take !== null && pr.take !== undefined) t += ` (take ${pr.take})`;
    if (pr.steps) t += ` · step ${pr.step}/${pr.steps}`;
    if (pr.scenes) t += ` · scene ${Math.min(pr.scene_index + 1, pr.scenes)} of ${pr.scenes}`;
    t += ` · ${pr.eta_s === null || pr.eta_s === undefined ? 'estimating time left' : fmtSeconds(pr.eta_s) + ' left'}`;
    return t;
  }

  function progressShare(j) {
    const pr = j.progress || {};
    if (!pr.scenes) return 0;
    const inScene = pr.steps ? Math.min(1, pr.step / pr.steps) : 0;
    return Math.min(1, (pr.scene_index + inScene) / pr.scenes);
  }

  function renderJobs() {
    const jobs = Array.from(S.jobs.values()).sort((a, b) => b.id - a.id);
    const running = jobs.filter((j) => j.state === 'running' || j.state === 'cancelling');
    const waiting = jobs.filter((j) => j.state === 'queued').sort((a, b) => a.id - b.id);
    const finished = jobs.filter((j) => JOB_RANK[j.state] === 3);
    const runBox = clear($('#job-running'));
    if (!running.length) runBox.appendChild(h('p', { class: 'muted', text: 'Nothing is being generated.' }));
    for (const j of running) {
      runBox.appendChild(h('div', { class: 'job job-' + j.state, 'data-job': j.id }, jobLine(j),
        h('div', { class: 'muted', text: progressText(j) }),
        h('div', { class: 'bar' }, h('div', { style: `width:${Math.round(progressShare(j) * 100)}%` })),
        S.editable && j.state === 'running' ? h('button', { type: 'button', class: 'danger cancel-job', text: 'Cancel',
          onclick: () => cancelJob(j.id) }) : null));
    }
    const waitBox = clear($('#job-waiting'));
    if (!waiting.length) waitBox.appendChild(h('p', { class: 'muted', text: 'Nothing waits.' }));
    for (const j of waiting) {
      waitBox.appendChild(h('div', { class: 'job job-queued', 'data-job': j.id }, jobLine(j),
        S.editable ? h('button', { type: 'button', class: 'link cancel-job', text: 'cancel', onclick: () => cancelJob(j.id) }) : null));
    }
    const box = clear($('#jobs'));
    if (!finished.length) box.appendChild(h('p', { class: 'muted', text: 'No generation yet.' }));
    for (const j of finished.slice(0, 100)) {
      box.appendChild(h('div', { class: 'job job-' + j.state, 'data-job': j.id }, jobLine(j),
        j.error ? h('div', { class: 'error', text: j.error }) : null));
    }
    const cur = running[0];
    $('#progress-box').hidden = !cur;
    if (cur) {
      $('#progress').textContent = `#${cur.id} ${cur.label || ''}: ` + progressText(cur) + (waiting.length ? ` · ${waiting.length} waiting` : '');
      $('#progress-bar').style.width = Math.round(progressShare(cur) * 100) + '%';
      $('#cancel-running').disabled = !S.editable || cur.state !== 'running';
      $('#cancel-running').dataset.job = cur.id;
    }
  }

  async function loadJobs() {
    try {
      const r = await api('GET', '/api/jobs');
      for (const j of r.jobs) mergeJob(j);
      renderJobs();
    } catch (e) { /* the events bring them */ }
  }

  async function queueRun(kind, target) {
    try {
      const r = await api('POST', '/api/runs', target ? { kind, target } : { kind });
      mergeJob(r.job);
      S.lastJob = r.job.id;
      renderJobs();
      return r.job;
    } catch (e) {
      $('#progress-box').hidden = false;
      $('#progress').textContent = e.message;
      return null;
    }
  }

  async function cancelJob(id) {
    try { mergeJob((await api('POST', `/api/jobs/${id}/cancel`, {})).job); renderJobs(); } catch (e) {
      $('#progress').textContent = e.message;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // selection and panels

  function showTab(name) {
    $$('#tabs button').forEach((b) => b.classList.toggle('active', b.dataset.tab === name));
    $$('.tab').forEach((t) => t.classList.toggle('active', t.id === 'tab-' + name));
  }

  function sceneLink(id) {
    return h('a', { class: 'link', text: id, onclick: (e) => { e.preventDefault(); selectScene(id, true); } });
  }

  function clearSelection() {
    S.selected = null;
    if (S.cy) { S.cy.remove('edge.conditioned'); S.cy.nodes('.focus').removeClass('focus'); }
  }

  function refreshSelected() {
    if (!S.selected) return;
    if (S.selected.type === 'scene') loadScenePanel(S.selected.id, false);
    else if (S.selected.type === 'character') loadCharacterPanel(S.selected.id, false);
    else if (S.selected.type === 'environment' && S.cy && S.cy.getElementById(S.selected.id).nonempty()) {
      showEnvironment(S.cy.getElementById(S.selected.id));
    }
  }

  function focusNode(id, center) {
    const n = S.cy.getElementById(id);
    S.cy.nodes('.focus').removeClass('focus');
    if (n.nonempty()) {
      n.addClass('focus');
      if (center) S.cy.animate({ center: { eles: n }, duration: 250 });
    }
  }

  function selectScene(id, center) {
    clearSelection();
    S.selected = { type: 'scene', id };
    focusNode(id, center);
    showTab('scene');
    loadScenePanel(id, true);
  }

  async function loadScenePanel(id, fresh) {
    const box = $('#tab-scene');
    if (fresh) clear(box).appendChild(h('p', { class: 'muted', text: 'loading ' + id + '…' }));
    let d;
    try { d = await api('GET', '/api/scenes/' + encodeURIComponent(id)); } catch (e) {
      clear(box).appendChild(h('div', { class: 'error', text: e.message }));
      return;
    }
    if (!S.selected || S.selected.id !== id) return;
    const playing = box.querySelector('video');
    if (!fresh && playing && !playing.paused) return;  // do not interrupt playback; the next event refreshes
    renderScenePanel(box, d);
    drawConditioning(d);
  }

  function drawConditioning(d) {
    const cy = S.cy;
    cy.remove('edge.conditioned');
    const seen = new Set();
    cy.batch(() => {
      d.conditioning.forEach((c, i) => {
        const target = c.scene_id;
        if (!target || target === d.id || cy.getElementById(target).empty()) return;
        const key = target + '|' + c.role + '|' + (c.character_id || '');
        if (seen.has(key)) return;
        seen.add(key);
        const label = c.role + (c.character_id ? ' · ' + c.character_id : '') + (c.score !== null && c.score !== undefined ? ' · ' + fmt(c.score, 2) : '');
        cy.add({ group: 'edges', data: { id: 'cond:' + d.id + ':' + i, source: d.id, target, label, type: 'conditioned',
          bend: -60 - 40 * seen.size },
          classes: 'conditioned' });
      });
    });
  }

  function statusBadge(status) { return h('span', { class: 'status status-' + status, text: status }); }

  function thumbImg(url, alt) {
    return url ? h('img', { class: 'thumb', src: url, alt: alt || '', loading: 'lazy' }) : h('span', { class: 'thumb empty' });
  }

  function renderScenePanel(box, d) {
    clear(box);
    const sp = d.spec;
    box.appendChild(h('h2', {}, sp.title || d.id, statusBadge(d.status)));
    box.appendChild(h('div', { class: 'sub' }, `${d.id} · clock ${fmt(d.clock, 2)} · branch ${d.branch} · #${d.pos}`,
      d.transition_in ? h('div', {}, '← ', sceneLink(d.transition_in.from),
        ` (${d.transition_in.kind}, gap ${fmt(d.transition_in.gap, 2)}, retention ${fmt(d.transition_in.decay, 2)}) `,
        d.editable ? h('button', { type: 'button', class: 'link danger-link', id: 'delete-transition', text: 'delete transition',
          onclick: () => deleteTransition(d.transition_in.from, d.id) }) : null) : h('div', { text: 'starts a timeline' })));
    renderStale(box, d);
    if (d.video_url) {
      box.appendChild(h('video', { class: 'media', id: 'scene-video', src: d.video_url, controls: true, preload: 'metadata',
        poster: d.thumb_url || null, playsinline: true }));
    } else if (d.thumb_url) {
      box.appendChild(h('img', { class: 'media', src: d.thumb_url, alt: 'last frame' }));
    } else {
      box.appendChild(h('div', { class: 'placeholder', text: d.status === 'generating' ? 'generating…' : 'not generated yet' }));
    }
    if (d.editable) {
      const n = h('input', { type: 'number', min: 1, max: 16, value: 2, id: 'gen-n', title: 'takes' });
      box.appendChild(h('div', { class: 'row gen-row' },
        h('button', { type: 'button', id: 'gen-1', text: 'Generate', onclick: () => generate(d.id, 1) }),
        h('button', { type: 'button', id: 'gen-n-btn', text: 'Generate N takes', onclick: () => generate(d.id, parseInt(n.value, 10) || 1) }), n,
        h('button', { type: 'button', id: 'edit-scene', class: 'link', text: 'edit', onclick: () => openSceneForm(d) }),
        h('button', { type: 'button', id: 'delete-scene', class: 'link danger-link', text: 'delete', onclick: () => deleteScene(d) })));
      box.appendChild(h('div', { id: 'gen-status', class: 'form-status' }));
    }
    // a scene being (re)made shows the prompt it is made from, not the one of the take it replaces
    const fresh = d.status !== 'done' && d.next_prompt;
    box.appendChild(h('h3', { text: fresh ? 'Prompt (next generation)' : 'Prompt' }));
    box.appendChild(h('pre', { id: 'scene-prompt', text: (fresh ? d.next_prompt : d.prompt) || d.next_prompt || '(built when the scene is generated)' }));
    if (fresh && d.prompt && d.prompt !== d.next_prompt) {
      box.appendChild(h('details', {}, h('summary', { class: 'muted', text: 'prompt of the chosen take' }), h('pre', { text: d.prompt })));
    }
    box.appendChild(h('h3', { text: 'Scene' }));
    const dl = h('dl', { class: 'spec' });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== '') dl.append(h('dt', { text: k }), h('dd', {}, v)); };
    add('action', sp.action);
    add('characters', sp.characters.length ? sp.characters.flatMap((c, i) => [i ? ', ' : '',
      h('a', { class: 'link', text: c, onclick: () => selectCharacter(c) })]) : '—');
    add('environment', d.environment ? `${d.environment.name || d.environment.id}` : sp.environment);
    add('lighting', sp.lighting); add('weather', sp.weather); add('camera', sp.camera); add('memory', sp.memory);
    add('generation', `${sp.width}×${sp.height} · ${sp.frames} frames @ ${sp.fps} fps · ${sp.steps} steps · seed ${fmt(d.seed)}`);
    box.appendChild(dl);
    box.appendChild(h('h3', { text: `References (${sp.references.length})` }));
    const refs = h('div', { class: 'refs', id: 'scene-refs' });
    sp.references.forEach((r) => {
      refs.appendChild(h('figure', { class: 'ref', 'data-kind': r.kind, 'data-character': r.character || '' },
        h('img', { class: 'ref-img', src: r.image_url, alt: `${r.kind} reference`, loading: 'lazy' }),
        h('figcaption', {}, `${r.kind}${r.character ? ' · ' + r.character : ''} · strength ${fmt(r.strength, 2)}`,
          d.editable ? h('button', { type: 'button', class: 'link danger-link', text: 'remove',
            onclick: () => removeReference({ to: 'scene', id: d.id, kind: r.kind, character: r.character }) }) : null)));
    });
    if (!sp.references.length) refs.appendChild(h('p', { class: 'muted', text: 'none: memory and the story decide' }));
    box.appendChild(refs);
    if (d.editable) box.appendChild(referenceForm('scene', d.id, sp.characters));

    box.appendChild(h('h3', { text: 'Scores' }));
    const sc = d.scores, tb = h('table');
    for (const [k, v] of Object.entries(sc)) tb.appendChild(h('tr', {}, h('td', { text: k.replace(/_/g, ' ') }), h('td', { text: fmt(v) })));
    box.appendChild(tb);

    box.appendChild(h('h3', { text: `Conditioned on (${d.conditioning.length})` }));
    if (!d.conditioning.length) box.appendChild(h('p', { class: 'muted', text: d.status === 'done' ? 'no memory was used' : '—' }));
    for (const c of d.conditioning) {
      box.appendChild(h('div', { class: 'cond-item' }, thumbImg(c.thumb_url, c.target_id),
        h('div', {},
          h('div', {}, h('b', { text: c.role }), c.mode ? ' (' + c.mode + ')' : '', c.character_id ? ' · ' + c.character_id : '', ' · ',
            c.scene_id ? sceneLink(c.scene_id) : c.target_id,
            ` · frame ${c.frame_index} · strength ${fmt(c.strength, 2)} · score ${fmt(c.score, 3)}`),
          h('div', { class: 'reason', text: c.reason || '' }))));
    }
    box.appendChild(h('h3', {}, `Takes (${d.takes.length}) `, d.takes.filter((t) => t.video_url).length > 1 ?
      h('button', { type: 'button', id: 'compare-takes', text: 'Side by side', onclick: () => openCompare(d) }) : null));
    if (!d.takes.length) box.appendChild(h('p', { class: 'muted', text: 'no takes yet' }));
    for (const t of d.takes) {
      const playBtn = t.video_url ? h('a', { class: 'link', text: 'play', onclick: () => {
        const v = $('#scene-video'); if (v) { v.src = t.video_url; v.play().catch(() => {}); } } }) : null;
      box.appendChild(h('div', { class: 'take-item', 'data-take': t.take }, thumbImg(t.thumb_url, 'take ' + t.take),
        h('div', {},
          h('div', {}, h('b', { text: 'take ' + t.take }), ` · seed ${t.seed} · identity ${fmt(t.scores.identity)} · text ${fmt(t.scores.text_alignment)} `,
            t.chosen ? h('span', { class: 'chosen', text: '✓ chosen' }) :
              (d.editable ? h('button', { type: 'button', class: 'choose', text: 'choose', onclick: () => chooseTake(d.id, t.take) }) : null),
            ' ', playBtn))));
    }
    if (d.notes) { box.appendChild(h('h3', { text: 'Notes' })); box.appendChild(h('pre', { text: d.notes })); }
  }

  // a stale scene: why (the change and the scene it came from), and making it and the stale scenes after it again
  function renderStale(box, d) {
    if (!d.stale_reason) return;
    const btn = d.editable ? h('button', { type: 'button', id: 'regen-downstream', text: 'Regenerate downstream',
      onclick: () => regenerateDownstream(d.id) }) : null;
    box.appendChild(h('div', { class: 'stale-box' }, h('b', { text: 'stale: ' }), d.stale_reason,
      d.stale_from && d.stale_from !== d.id ? h('span', {}, ' · from ', sceneLink(d.stale_from)) : null, ' ', btn,
      h('div', { id: 'regen-status', class: 'form-status' })));
  }

  async function regenerateDownstream(id) {
    const st = $('#regen-status');
    try {
      const r = await api('POST', '/api/scenes/' + encodeURIComponent(id) + '/regenerate-downstream', {});
      for (const j of r.jobs) S.jobs.set(j.id, j);
      renderJobs();
      if (st) { st.className = 'form-status ok'; st.textContent = `${r.jobs.length} scene(s) queued`; }
    } catch (e) {
      if (st) { st.className = 'form-status error'; st.textContent = e.message; }
    }
  }

  async function generate(id, takes) {
    const st = $('#gen-status');
    if (st) { st.className = 'form-status muted'; st.textContent = 'queuing…'; }
    try {
      const r = await api('POST', '/api/scenes/' + encodeURIComponent(id) + '/generate', { takes });
      const j = mergeJob(r.job);
      S.lastJob = r.job.id;
      if (st) { st.className = 'form-status ok'; st.textContent = `job ${r.job.id} (${takes} take${takes === 1 ? '' : 's'}): ${j.state}`; st.dataset.job = r.job.id; }
      renderJobs();
    } catch (e) {
      if (st) { st.className = 'form-status error'; st.textContent = e.message; }
    }
  }

  async function chooseTake(id, take) {
    const st = $('#gen-status');
    try {
      await api('POST', '/api/scenes/' + encodeURIComponent(id) + '/choose', { take });
      if (st) { st.className = 'form-status ok'; st.textContent = `take ${take} chosen`; }
    } catch (e) {
      if (st) { st.className = 'form-status error'; st.textContent = e.message; }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // confirming, deleting

  function confirmAction(text, yes) {
    // an in-page dialog (not window.confirm): it says what goes, and nothing happens until it is answered
    return new Promise((resolve) => {
      const box = $('#confirm');
      $('#confirm-text').textContent = text;
      $('#confirm-yes').textContent = yes || 'Delete';
      box.hidden = false;
      const done = (answer) => {
        box.hidden = true;
        $('#confirm-yes').onclick = null;
        $('#confirm-no').onclick = null;
        resolve(answer);
      };
      $('#confirm-yes').onclick = () => done(true);
      $('#confirm-no').onclick = () => done(false);
      $('#confirm-no').focus();
    });
  }

  function sceneStatus(text, kind) {
    const st = $('#gen-status');
    if (st) { st.className = 'form-status ' + (kind || ''); st.textContent = text; }
  }

  async function deleteScene(d) {
    const after = d.children && d.children.length ? ` The scenes after it (${d.children.join(', ')}) start timelines of their own.` : '';
    if (!await confirmAction(`Delete scene ${d.id} with its ${d.takes.length} take(s) and their media?${after}`)) return;
    try {
      await api('DELETE', '/api/scenes/' + encodeURIComponent(d.id), {});
      clearSelection();
      clear($('#tab-scene')).appendChild(h('p', { class: 'ok', id: 'deleted-note', text: `scene ${d.id} deleted` }));
    } catch (e) { sceneStatus(e.message, 'error'); }
  }

  async function deleteTransition(from, to) {
    if (!await confirmAction(`Delete the transition ${from} → ${to}? ${to} and what follows it become a timeline of their own.`)) return;
    try {
      await api('DELETE', `/api/transitions/${encodeURIComponent(from)}/${encodeURIComponent(to)}`, {});
      sceneStatus(`transition ${from} → ${to} deleted`, 'ok');
    } catch (e) { sceneStatus(e.message, 'error'); }
  }

  // ---------------------------------------------------------------------------------------------
  // reference images: upload, attach, replace, remove

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(new Error('could not read ' + file.name));
      r.readAsDataURL(file);
    });
  }

  function referenceForm(to, id, characters) {
    // to: character | environment | scene; a scene reference also names its kind (and whose, for character/costume)
    const file = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp,image/gif', class: 'ref-file', 'aria-label': 'reference image' });
    const kind = to === 'scene' ? h('select', { class: 'ref-kind' },
      ['character', 'costume', 'place'].map((k) => h('option', { value: k, text: k }))) : null;
    const who = to === 'scene' ? h('select', { class: 'ref-character' }, (characters || []).map((c) => h('option', { value: c, text: c }))) : null;
    const status = h('div', { class: 'form-status ref-status' });
    const form = h('form', { class: 'ref-form', 'data-to': to, 'data-id': id },
      h('div', { class: 'row' }, kind, who, file,
        h('button', { type: 'submit', class: 'ref-upload', text: to === 'scene' ? 'Add reference' : 'Upload reference' })), status);
    if (kind) kind.addEventListener('change', () => { who.disabled = kind.value === 'place'; });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = file.files && file.files[0];
      const say = (text, kind) => { status.className = 'form-status ref-status ' + kind; status.textContent = text; };
      if (!f) { say('choose an image first', 'error'); return; }
      say('uploading…', 'muted');
      try {
        const body = { to, id, image: await readFile(f) };
        if (kind) { body.kind = kind.value; if (kind.value !== 'place') body.character = who.value; }
        const r = await api('POST', '/api/references', body);
        say(`attached ${r.name}`, 'ok');
        form.dataset.attached = r.name;
      } catch (e) { say(e.message, 'error'); }
    });
    return form;
  }

  async function removeReference(body) {
    try { await api('DELETE', '/api/references', body); } catch (e) { sceneStatus(e.message, 'error'); }
  }

  function referenceBlock(to, id, url, editable) {
    const box = h('div', { class: 'refs' });
    box.appendChild(url ? h('figure', { class: 'ref' }, h('img', { class: 'ref-img', id: to + '-reference', src: url + '?v=' + S.lastSeq, alt: 'reference image' }),
      editable ? h('figcaption', {}, h('button', { type: 'button', class: 'link danger-link', text: 'remove',
        onclick: () => removeReference({ to, id }) })) : null) : h('p', { class: 'muted', text: 'no reference image' }));
    if (editable) box.appendChild(referenceForm(to, id));
    return box;
  }

  // ---------------------------------------------------------------------------------------------
  // takes side by side: one transport for every take, kept in step

  function openCompare(d) {
    const takes = d.takes.filter((t) => t.video_url);
    const grid = clear($('#compare-grid'));
    $('#compare-title').textContent = `${d.spec.title || d.id}: ${takes.length} takes`;
    const vids = [];
    for (const t of takes) {
      const v = h('video', { src: t.video_url, preload: 'auto', muted: true, playsinline: true, loop: false, class: 'compare-video', 'data-take': t.take });
      v.muted = true;
      vids.push(v);
      const sc = t.scores || {};
      grid.appendChild(h('div', { class: 'compare-cell' + (t.chosen ? ' chosen-cell' : ''), 'data-take': t.take }, v,
        h('div', {}, h('b', { text: 'take ' + t.take }), ` · seed ${t.seed} `,
          t.chosen ? h('span', { class: 'chosen', text: '✓ chosen' }) :
            (d.editable ? h('button', { type: 'button', class: 'choose', text: 'choose this take', onclick: async () => {
              await chooseTake(d.id, t.take);
              closeCompare();
            } }) : null)),
        h('table', { class: 'scores' }, Object.entries(sc).map(([k, val]) => h('tr', {}, h('td', { text: k.replace(/_/g, ' ') }), h('td', { text: fmt(val) }))))));
    }
    grid.style.gridTemplateColumns = `repeat(${Math.min(4, Math.max(1, takes.length))}, 1fr)`;
    const master = vids[0];
    const sync = () => {
      // followers follow the first take's clock; a drift beyond 50 ms is corrected
      if (!S.compare) return;
      for (const v of vids.slice(1)) {
        if (Math.abs(v.currentTime - master.currentTime) > 0.05 && v.readyState >= 1) v.currentTime = Math.min(master.currentTime, v.duration || master.currentTime);
        if (master.paused !== v.paused) { if (master.paused) v.pause(); else v.play().catch(() => {}); }
      }
      const dur = master.duration || 0;
      $('#compare-seek').value = dur ? Math.round(1000 * master.currentTime / dur) : 0;
      $('#compare-time').textContent = `${fmt(master.currentTime, 2)} / ${fmt(dur, 2)} s`;
      S.compare.raf = requestAnimationFrame(sync);
    };
    S.compare = { scene: d.id, vids, raf: null };
    master.addEventListener('ended', () => vids.forEach((v) => v.pause()));
    $('#compare').hidden = false;
    S.compare.raf = requestAnimationFrame(sync);
  }

  function comparePlay() {
    if (!S.compare) return;
    const t = S.compare.vids[0].currentTime;
    const atEnd = S.compare.vids[0].ended;
    for (const v of S.compare.vids) { v.currentTime = atEnd ? 0 : t; v.play().catch(() => {}); }
  }

  function comparePause() { if (S.compare) S.compare.vids.forEach((v) => v.pause()); }

  function compareSeek(e) {
    if (!S.compare) return;
    const m = S.compare.vids[0];
    const t = (m.duration || 0) * Number(e.target.value) / 1000;
    for (const v of S.compare.vids) v.currentTime = t;
  }

  function closeCompare() {
    if (S.compare) { cancelAnimationFrame(S.compare.raf); S.compare.vids.forEach((v) => { v.pause(); v.removeAttribute('src'); v.load(); }); }
    S.compare = null;
    $('#compare').hidden = true;
    clear($('#compare-grid'));
  }

  // ---------------------------------------------------------------------------------------------
  // a timeline played end to end

  async function playTimeline() {
    const branch = $('#timeline-select').value;
    const st = $('#timeline-status'), video = $('#timeline-video'), list = clear($('#timeline-scenes'));
    st.className = 'form-status muted';
    st.textContent = 'stitching the timeline…';
    let r;
    try { r = await api('POST', '/api/cut', branch ? { branch } : {}); } catch (e) {
      st.className = 'form-status error'; st.textContent = e.message; video.hidden = true; return;
    }
    S.cut = r;
    st.className = 'form-status ok';
    st.textContent = `${r.scenes.length} scene${r.scenes.length === 1 ? '' : 's'} · ${fmt(r.duration_s, 2)} s` +
      (r.stopped_at ? ` · stops before ${r.stopped_at} (not generated)` : '');
    for (const sc of r.scenes) {
      list.appendChild(h('li', { 'data-scene': sc.scene_id, 'data-start': sc.start_s },
        h('a', { class: 'link', text: sc.scene_id, onclick: () => { video.currentTime = sc.start_s + 0.001; video.play().catch(() => {}); } }),
        ` · take ${sc.take} · ${fmt(sc.start_s, 2)}–${fmt(sc.start_s + sc.duration_s, 2)} s`));
    }
    video.hidden = false;
    video.src = r.url;
    video.play().catch(() => {});
  }

  function timelineTick() {
    // the scene now on screen is marked in the list and in the graph
    const v = $('#timeline-video');
    if (!S.cut || v.hidden) return;
    const t = v.currentTime;
    let cur = null;
    for (const sc of S.cut.scenes) if (t >= sc.start_s) cur = sc.scene_id;
    $$('#timeline-scenes li').forEach((li) => li.classList.toggle('now', li.dataset.scene === cur));
    if (cur && S.cy && S.timelineScene !== cur) { S.timelineScene = cur; focusNode(cur, false); }
  }

  function selectCharacter(id) {
    clearSelection();
    S.selected = { type: 'character', id };
    focusNode(id, false);
    showTab('character');
    loadCharacterPanel(id, true);
  }

  async function loadCharacterPanel(id, fresh) {
    const box = $('#tab-character');
    if (fresh) clear(box).appendChild(h('p', { class: 'muted', text: 'loading ' + id + '…' }));
    let d;
    try { d = await api('GET', '/api/characters/' + encodeURIComponent(id)); } catch (e) {
      clear(box).appendChild(h('div', { class: 'error', text: e.message }));
      return;
    }
    if (!S.selected || S.selected.id !== id) return;
    clear(box);
    box.appendChild(h('h2', { text: d.name }));
    box.appendChild(h('div', { class: 'sub', text: `${d.id} · memory time constant ${d.decay_tau === null ? 'default' : fmt(d.decay_tau, 1)}` +
      (d.reference ? ` · reference ${d.reference}` : '') }));
    box.appendChild(h('p', { text: d.description }));
    box.appendChild(h('h3', { text: 'Reference image' }));
    box.appendChild(referenceBlock('character', d.id, d.reference_url, d.editable));
    box.appendChild(h('div', { class: 'row' },
      h('button', { type: 'button', text: 'Show only this character', onclick: () => { $('#filter').value = d.id; applyFilter(); } }),
      d.editable ? h('button', { type: 'button', class: 'link', text: 'edit', onclick: () => openCharacterForm(d) }) : null));
    box.appendChild(h('h3', { text: 'Identity along the story' }));
    box.appendChild(identityPlot(d));
    box.appendChild(h('h3', { text: `Appearances (${d.appearances.length})` }));
    if (!d.appearances.length) box.appendChild(h('p', { class: 'muted', text: 'not generated in any scene yet' }));
    for (const a of d.appearances) {
      box.appendChild(h('div', { class: 'app-item' }, thumbImg(a.thumb_url, a.scene_id),
        h('div', {}, sceneLink(a.scene_id), ` · take ${a.take} · frame ${a.frame_index}`,
          h('div', { class: 'reason', text: `clock ${fmt(a.clock, 2)} · identity ${fmt(a.identity_score)} · strength ${fmt(a.strength, 2)}` }))));
    }
    box.appendChild(h('h3', { text: `Scenes (${d.scenes.length})` }));
    box.appendChild(h('div', {}, d.scenes.flatMap((sc, i) => [i ? ', ' : '', sceneLink(sc.id)])));
  }

  function hue(str) {
    let x = 0;
    for (let i = 0; i < str.length; i++) x = (x * 31 + str.charCodeAt(i)) >>> 0;
    return x % 360;
  }

  function identityPlot(d) {
    const W = 400, H = 190, L = 40, R = 10, T = 12, B = 30;
    const clocks = d.scenes.map((x) => x.clock).concat(d.appearances.map((a) => a.clock));
    let x0 = Math.min(...clocks, 0), x1 = Math.max(...clocks, 1);
    if (x1 === x0) x1 = x0 + 1;
    const vals = d.appearances.map((a) => a.identity_score);
    const y0 = Math.min(0, ...vals), y1 = Math.max(1, ...vals);
    const X = (c) => L + (c - x0) / (x1 - x0) * (W - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    const svg = s('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'identity score by story clock' });
    for (const v of [y0, (y0 + y1) / 2, y1]) {
      svg.appendChild(s('line', { class: 'grid', x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
      svg.appendChild(s('text', { x: L - 4, y: Y(v) + 3, 'text-anchor': 'end' }, fmt(v, 2)));
    }
    svg.appendChild(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    svg.appendChild(s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
    svg.appendChild(s('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle' }, 'story clock'));
    svg.appendChild(s('text', { x: L, y: H - B + 12, 'text-anchor': 'middle' }, fmt(x0, 1)));
    svg.appendChild(s('text', { x: W - R, y: H - B + 12, 'text-anchor': 'end' }, fmt(x1, 1)));
    const seen = new Set(d.appearances.map((a) => a.scene_id));
    for (const sc of d.scenes) {  // planned scenes: ticks on the axis
      if (seen.has(sc.id)) continue;
      svg.appendChild(s('line', { x1: X(sc.clock), x2: X(sc.clock), y1: H - B - 5, y2: H - B, stroke: '#8b93a8' },
        s('title', {}, `${sc.id} (${sc.status}) at clock ${fmt(sc.clock, 2)}`)));
    }
    const byBranch = new Map();
    for (const a of d.appearances) {
      if (!byBranch.has(a.branch)) byBranch.set(a.branch, []);
      byBranch.get(a.branch).push(a);
    }
    for (const [branch, list] of byBranch) {
      const color = `hsl(${hue(branch)}, 65%, 65%)`;
      const pts = list.slice().sort((a, b) => a.clock - b.clock);
      if (pts.length > 1) svg.appendChild(s('polyline', { points: pts.map((a) => `${X(a.clock)},${Y(a.identity_score)}`).join(' '),
        fill: 'none', stroke: color, 'stroke-width': 1.2, opacity: 0.7 }));
      for (const a of pts) {
        const c = s('circle', { cx: X(a.clock), cy: Y(a.identity_score), r: 2.5 + Math.min(4, a.strength), fill: color,
          'data-scene': a.scene_id, style: 'cursor:pointer' },
          s('title', {}, `${a.scene_id} · clock ${fmt(a.clock, 2)} · identity ${fmt(a.identity_score)} · strength ${fmt(a.strength, 2)} · branch ${branch}`));
        c.addEventListener('click', () => selectScene(a.scene_id, true));
        svg.appendChild(c);
      }
    }
    return svg;
  }

  function showEnvironment(node) {
    clearSelection();
    S.selected = { type: 'environment', id: node.id() };
    focusNode(node.id(), false);
    const box = clear($('#tab-scene'));
    showTab('scene');
    const d = node.data();
    box.appendChild(h('h2', { text: d.name || d.id }));
    box.appendChild(h('div', { class: 'sub', text: `environment ${d.id} · ${d.scenes} scenes` }));
    box.appendChild(h('p', { text: d.description }));
    if (S.editable) box.appendChild(h('button', { type: 'button', class: 'link', text: 'edit', onclick: () => openEnvironmentForm(d) }));
    box.appendChild(h('h3', { text: 'Reference image' }));
    box.appendChild(referenceBlock('environment', d.id, d.has_reference ? '/api/reference-image/environment/' + encodeURIComponent(d.id) : null, S.editable));
    const scenes = S.cy.nodes('.scene').filter((n) => n.data('environment') === d.id);
    box.appendChild(h('div', {}, scenes.map((n, i) => [i ? ', ' : '', sceneLink(n.id())]).flat()));
  }

  // ---------------------------------------------------------------------------------------------
  // filter, layout

  function fillSelectors(g) {
    const chars = g.nodes.filter((n) => n.data.type === 'character').map((n) => n.data);
    const envs = g.nodes.filter((n) => n.data.type === 'environment').map((n) => n.data);
    const scenes = g.nodes.filter((n) => n.data.type === 'scene').map((n) => n.data);
    const filter = $('#filter'), cur = filter.value;
    clear(filter).appendChild(h('option', { value: '', text: 'all' }));
    for (const c of chars) filter.appendChild(h('option', { value: c.id, text: c.name || c.id }));
    filter.value = chars.some((c) => c.id === cur) ? cur : '';
    S.sceneIds = scenes.map((x) => x.id);
    const form = $('#scene-form');
    const checked = new Set($$('input[type=checkbox]', $('#scene-form-chars')).filter((x) => x.checked).map((x) => x.value));
    const charBox = clear($('#scene-form-chars'));
    for (const c of chars) charBox.appendChild(h('label', {}, h('input', { type: 'checkbox', name: 'characters', value: c.id, checked: checked.has(c.id) }), c.name || c.id));
    const envSel = form.elements.environment, envCur = envSel.value;
    clear(envSel).appendChild(h('option', { value: '', text: '(none)' }));
    for (const e of envs) envSel.appendChild(h('option', { value: e.id, text: e.name || e.id }));
    envSel.value = envCur;
    const fillScenes = (sel, none) => {
      const v = sel.value;
      clear(sel);
      if (none) sel.appendChild(h('option', { value: '', text: none }));
      const list = scenes.length > 3000 ? scenes.slice(-3000) : scenes;
      for (const sc of list) sel.appendChild(h('option', { value: sc.id, text: sc.id }));
      sel.value = v;
    };
    fillScenes(form.elements.parent_id, '(none: a new timeline)');
    fillScenes($('#transition-form').elements.from);
    fillScenes($('#transition-form').elements.to);
  }

  function applyFilter() {
    const cy = S.cy;
    if (!cy) return;
    const cid = $('#filter').value;
    cy.batch(() => {
      cy.elements('.dim').removeClass('dim');
      if (!cid) return;
      const keep = cy.nodes('.scene').filter((n) => (n.data('characters') || []).includes(cid));
      cy.nodes('.scene').difference(keep).addClass('dim');
      cy.nodes('.character').filter((n) => n.id() !== cid).addClass('dim');
      cy.edges('.appears').filter((e) => e.data('source') !== cid).addClass('dim');
      cy.edges('.setin').addClass('dim');
      cy.edges('.next').filter((e) => !(keep.contains(e.source()) && keep.contains(e.target()))).addClass('dim');
    });
  }

  // ---------------------------------------------------------------------------------------------
  // search and the cast / places toggles

  function search() {
    const cy = S.cy;
    if (!cy) return;
    const q = $('#search').value.trim().toLowerCase();
    cy.nodes('.found').removeClass('found');
    S.found = [];
    S.foundAt = -1;
    if (q) {
      const hits = cy.nodes('.scene, .character, .environment').filter((n) => {
        const d = n.data();
        return [d.id, d.label, d.name, d.description].some((x) => typeof x === 'string' && x.toLowerCase().includes(q));
      });
      hits.addClass('found');
      S.found = hits.map((n) => n.id());
      for (const [id, el] of S.pending) if (id.toLowerCase().includes(q) || String(el.data.label || '').toLowerCase().includes(q)) S.found.push(id);
    }
    $('#search-count').textContent = q ? `${S.found.length} found` : '';
  }

  function nextFound() {
    if (!S.found.length) return;
    S.foundAt = (S.foundAt + 1) % S.found.length;
    const id = S.found[S.foundAt];
    const n = S.cy.getElementById(id);
    if (n.empty()) return;
    if (n.hasClass('scene')) selectScene(id, true);
    else if (n.hasClass('character')) { selectCharacter(id); S.cy.animate({ center: { eles: n }, duration: 250 }); }
    else { showEnvironment(n); S.cy.animate({ center: { eles: n }, duration: 250 }); }
  }

  function setShown(what, on) {
    S.show[what] = on;
    if (S.cy) S.cy.style(graphStyle(S.big));
  }

  // ---------------------------------------------------------------------------------------------
  // console

  // history and saved queries live in this browser (localStorage), per story
  function storeKey(what) { return `storygraph:${what}:${(S.meta && S.meta.story && S.meta.story.id) || ''}`; }
  function readList(what) { try { return JSON.parse(localStorage.getItem(storeKey(what)) || '[]'); } catch (e) { return []; } }
  function writeList(what, list) { try { localStorage.setItem(storeKey(what), JSON.stringify(list)); } catch (e) { /* storage off */ } }
  const oneLine = (q) => q.replace(/\s+/g, ' ').trim();

  function remember(cypher) {
    const list = readList('history').filter((q) => q !== cypher);
    list.unshift(cypher);
    writeList('history', list.slice(0, HISTORY_MAX));
    fillQueryLists();
  }

  function fillQueryLists() {
    const hist = clear($('#query-history'));
    hist.appendChild(h('option', { value: '', text: `history (${readList('history').length})…` }));
    readList('history').forEach((q, i) => hist.appendChild(h('option', { value: String(i), text: oneLine(q).slice(0, 90) })));
    const saved = clear($('#query-saved'));
    saved.appendChild(h('option', { value: '', text: `saved (${readList('saved').length})…` }));
    readList('saved').forEach((x, i) => saved.appendChild(h('option', { value: String(i), text: x.name })));
  }

  function saveQuery() {
    const cypher = $('#cypher').value.trim();
    if (!cypher) return;
    const name = (window.prompt('Name this query', oneLine(cypher).slice(0, 40)) || '').trim();
    if (!name) return;
    const list = readList('saved').filter((x) => x.name !== name);
    list.push({ name, cypher });
    list.sort((a, b) => a.name.localeCompare(b.name));
    writeList('saved', list);
    fillQueryLists();
  }

  function showQueryView(view) {
    $$('#query-views button').forEach((b) => b.classList.toggle('active', b.dataset.view === view));
    $('#query-result').hidden = view !== 'table';
    $('#query-graph').hidden = view !== 'graph';
    S.queryView = view;
    if (view === 'graph' && S.qcy) { S.qcy.resize(); S.qcy.fit(undefined, 20); }
  }

  function drawResultGraph(g) {
    // nodes and relationships the query returned, drawn apart from the story graph; a click on a story element
    // selects it there
    if (S.qcy) { S.qcy.destroy(); S.qcy = null; }
    const has = g && g.nodes.length;
    $('#query-views').hidden = !has;
    if (!has) { showQueryView('table'); return; }
    $('#query-graph').hidden = false;
    S.qcy = cytoscape({ container: $('#query-graph'), elements: g.nodes.concat(g.edges), minZoom: 0.05, maxZoom: 4,
      style: [
        { selector: 'node', style: { 'label': 'data(label)', 'text-wrap': 'wrap', 'font-size': 9, 'color': '#dfe3ee',
          'text-valign': 'bottom', 'width': 22, 'height': 22, 'background-color': '#5a6c94' } },
        { selector: 'node[kind = "Scene"]', style: { 'shape': 'round-rectangle', 'background-color': '#3b6f52' } },
        { selector: 'node[kind = "Character"]', style: { 'background-color': '#7d55b8' } },
        { selector: 'node[kind = "Environment"]', style: { 'shape': 'hexagon', 'background-color': '#23707e' } },
        { selector: 'edge', style: { 'label': 'data(label)', 'font-size': 8, 'color': '#b9c0d0', 'curve-style': 'bezier',
          'target-arrow-shape': 'triangle', 'width': 1.5, 'line-color': '#8890a8', 'target-arrow-color': '#8890a8' } },
      ],
      layout: { name: g.nodes.length <= 300 ? 'cose' : 'grid', animate: false, fit: true, padding: 20 } });
    S.qcy.on('tap', 'node', (e) => {
      const ref = e.target.data('ref');
      if (!ref || !S.cy || S.cy.getElementById(ref).empty()) return;
      const n = S.cy.getElementById(ref);
      if (n.hasClass('scene')) selectScene(ref, true); else if (n.hasClass('character')) selectCharacter(ref);
    });
    showQueryView(S.queryView || 'table');
  }

  async function runQuery() {
    const cypher = $('#cypher').value;
    const err = $('#query-error'), out = clear($('#query-result')), st = $('#query-status');
    err.hidden = true;
    st.textContent = 'running…';
    if (cypher.trim()) remember(cypher);
    let r;
    try { r = await api('POST', '/api/query', { cypher }); } catch (e) {
      st.textContent = e.status === 403 ? 'refused' : 'failed';
      err.hidden = false;
      err.textContent = e.message;
      return;
    }
    const ids = new Set();
    const collect = (v) => {
      if (typeof v === 'string') { if (S.cy.getElementById(v).nonempty() && S.cy.getElementById(v).isNode()) ids.add(v); }
      else if (Array.isArray(v)) v.forEach(collect);
      else if (v && typeof v === 'object') { if (typeof v.id === 'string') collect(v.id); }
    };
    const table = h('table', { id: 'query-table' });
    table.appendChild(h('tr', {}, r.columns.map((c) => h('th', { text: c }))));
    for (const row of r.rows) {
      table.appendChild(h('tr', {}, row.map((v) => {
        collect(v);
        const text = cellText(v);
        return h('td', { class: 'cell', title: typeof v === 'object' && v !== null ? JSON.stringify(v) : text, text });
      })));
    }
    out.appendChild(table);
    drawResultGraph(r.graph);
    S.cy.elements('.hit').removeClass('hit');
    const hits = S.cy.collection();
    ids.forEach((id) => { hits.merge(S.cy.getElementById(id)); });
    hits.addClass('hit');
    st.textContent = `${r.row_count} row${r.row_count === 1 ? '' : 's'}${r.truncated ? ' (first ' + r.rows.length + ' shown)' : ''} · ` +
      `${fmt(r.elapsed_ms, 1)} ms · ${hits.length} node${hits.length === 1 ? '' : 's'} highlighted · read-only, time limit ${r.time_limit_s} s`;
    S.lastQuery = { rows: r.row_count, hits: hits.length, graphNodes: r.graph ? r.graph.nodes.length : 0,
      graphEdges: r.graph ? r.graph.edges.length : 0 };
  }

  function cellText(v) {
    if (v === null || v === undefined) return '∅';
    if (typeof v !== 'object') return String(v);
    if (!Array.isArray(v) && v._LABEL) return `(:${v._LABEL}${v.id ? ' ' + v.id : ''})`;
    const t = JSON.stringify(v);
    return t.length > 120 ? t.slice(0, 119) + '…' : t;
  }

  // ---------------------------------------------------------------------------------------------
  // forms

  function formStatus(form, text, kind) {
    const st = form.querySelector('.form-status');
    st.className = 'form-status ' + (kind || '');
    st.textContent = text;
  }

  const SPEC_TEXT = ['title', 'action', 'lighting', 'weather', 'camera'];
  const SPEC_INT = ['frames', 'seed', 'steps'];

  function readSceneForm(form) {
    const f = form.elements, out = {};
    for (const k of SPEC_TEXT) out[k] = f[k].value;
    for (const k of SPEC_INT) out[k] = f[k].value === '' ? null : Number(f[k].value);
    // the scene's own order first (it is the prompt's order), characters newly ticked after them
    const ticked = $$('input[name=characters]', form).filter((x) => x.checked).map((x) => x.value);
    const before = ((form.dataset.original ? JSON.parse(form.dataset.original) : {}).characters) || [];
    out.characters = before.filter((c) => ticked.includes(c)).concat(ticked.filter((c) => !before.includes(c)));
    out.environment = f.environment.value || null;
    out.memory = f.memory.value || null;
    return out;
  }

  function openSceneForm(d) {
    const form = $('#scene-form'), f = form.elements;
    showTab('edit');
    $('#scene-form-box').open = true;
    form.dataset.original = d ? JSON.stringify(d.spec) : '';
    f.mode.value = d ? 'edit' : 'new';
    f.id.value = d ? d.id : '';
    f.id.readOnly = !!d;
    $('#scene-form-title').textContent = d ? 'Edit scene ' + d.id : 'New scene';
    $('#scene-form-new').hidden = !!d;
    const sp = d ? d.spec : {};
    for (const k of SPEC_TEXT) f[k].value = sp[k] || '';
    for (const k of SPEC_INT) f[k].value = sp[k] === null || sp[k] === undefined ? '' : sp[k];
    $$('input[name=characters]', form).forEach((x) => { x.checked = !!(sp.characters || []).includes(x.value); });
    f.environment.value = sp.environment || '';
    f.memory.value = sp.memory || '';
    if (!d && S.selected && S.selected.type === 'scene') f.parent_id.value = S.selected.id;
    formStatus(form, '');
  }

  async function submitSceneForm(ev) {
    ev.preventDefault();
    const form = ev.target, f = form.elements;
    const fields = readSceneForm(form);
    try {
      if (f.mode.value === 'edit') {
        const orig = JSON.parse(form.dataset.original || '{}');
        const changed = {};
        for (const [k, v] of Object.entries(fields)) {
          const o = orig[k] === undefined ? null : orig[k];
          if (JSON.stringify(o === '' ? null : o) !== JSON.stringify(v === '' ? null : v)) changed[k] = v;
        }
        if (!Object.keys(changed).length) { formStatus(form, 'nothing changed', 'muted'); return; }
        await api('PATCH', '/api/scenes/' + encodeURIComponent(f.id.value), changed);
        form.dataset.original = JSON.stringify(Object.assign(orig, changed));
        formStatus(form, 'saved ' + f.id.value + ' (' + Object.keys(changed).join(', ') + ')', 'ok');
      } else {
        for (const k of Object.keys(fields)) if (fields[k] === '' || fields[k] === null) delete fields[k];
        fields.action = f.action.value;
        const body = Object.assign({ id: f.id.value, parent_id: f.parent_id.value || null, kind: f.kind.value,
          gap: f.gap.value === '' ? null : Number(f.gap.value) }, fields);
        await api('POST', '/api/scenes', body);
        formStatus(form, 'added ' + f.id.value, 'ok');
      }
    } catch (e) { formStatus(form, e.message, 'error'); }
  }

  function openCharacterForm(d) {
    const form = $('#character-form'), f = form.elements;
    showTab('edit');
    form.closest('details').open = true;
    f.id.value = d.id; f.name.value = d.name || ''; f.description.value = d.description || '';
    f.decay_tau.value = d.decay_tau === null || d.decay_tau === undefined ? '' : d.decay_tau;
    formStatus(form, '');
  }

  function openEnvironmentForm(d) {
    const form = $('#environment-form'), f = form.elements;
    showTab('edit');
    form.closest('details').open = true;
    f.id.value = d.id; f.name.value = d.name || ''; f.description.value = d.description || '';
    formStatus(form, '');
  }

  function bindForm(id, url, read) {
    const form = $(id);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        await api('POST', url, read(form.elements));
        formStatus(form, 'saved', 'ok');
      } catch (e) { formStatus(form, e.message, 'error'); }
    });
  }

  // ---------------------------------------------------------------------------------------------
  // wiring

  function bindUi() {
    $$('#tabs button').forEach((b) => b.addEventListener('click', () => showTab(b.dataset.tab)));
    $('#fit').addEventListener('click', () => { if (S.cy) S.cy.fit(undefined, 40); });
    $('#filter').addEventListener('change', applyFilter);
    $('#layout').addEventListener('change', (e) => {
      S.layout = e.target.value;
      if (!S.cy) return;
      if (S.layout === 'dagre') runDagre(); else placeClock();
      S.cy.fit(undefined, 40);
    });
    $('#run-all').addEventListener('click', () => queueRun('all'));
    $('#run-branch-btn').addEventListener('click', () => { const b = $('#run-branch').value; if (b) queueRun('branch', b); });
    $('#run-stale').addEventListener('click', () => queueRun('stale'));
    $('#cancel-running').addEventListener('click', (e) => { const id = Number(e.target.dataset.job); if (id) cancelJob(id); });
    $('#compare-play').addEventListener('click', comparePlay);
    $('#compare-pause').addEventListener('click', comparePause);
    $('#compare-seek').addEventListener('input', compareSeek);
    $('#compare-close').addEventListener('click', closeCompare);
    $('#timeline-play').addEventListener('click', playTimeline);
    $('#timeline-video').addEventListener('timeupdate', timelineTick);
    $('#search').addEventListener('input', debounce(search, 120));
    $('#search').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); search(); nextFound(); } });
    $('#show-appears').addEventListener('change', (e) => setShown('appears', e.target.checked));
    $('#show-setin').addEventListener('change', (e) => setShown('setin', e.target.checked));
    $('#run-query').addEventListener('click', runQuery);
    $('#cypher').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runQuery(); } });
    $('#clear-hits').addEventListener('click', () => { if (S.cy) S.cy.elements('.hit').removeClass('hit'); });
    $('#save-query').addEventListener('click', saveQuery);
    $('#query-history').addEventListener('change', (e) => {
      const q = readList('history')[Number(e.target.value)];
      if (e.target.value !== '' && q) $('#cypher').value = q;
      e.target.value = '';
    });
    $('#query-saved').addEventListener('change', (e) => {
      const x = readList('saved')[Number(e.target.value)];
      if (x) $('#cypher').value = x.cypher;
    });
    $('#delete-saved').addEventListener('click', () => {
      const i = $('#query-saved').value;
      if (i === '') return;
      const list = readList('saved');
      list.splice(Number(i), 1);
      writeList('saved', list);
      fillQueryLists();
    });
    $$('#query-views button').forEach((b) => b.addEventListener('click', () => showQueryView(b.dataset.view)));
    $('#token-box').addEventListener('submit', (e) => {
      e.preventDefault();
      S.token = $('#token-input').value.trim();
      try { sessionStorage.setItem(TOKEN_KEY, S.token); } catch (e) { /* storage may be off */ }
      $('#token-input').value = '';
      updateTokenBox();
    });
    $('#scene-form').addEventListener('submit', submitSceneForm);
    $('#scene-form-reset').addEventListener('click', () => openSceneForm(null));
    bindForm('#character-form', '/api/characters', (f) => ({ id: f.id.value, name: f.name.value,
      description: f.description.value, decay_tau: f.decay_tau.value === '' ? null : Number(f.decay_tau.value) }));
    bindForm('#environment-form', '/api/environments', (f) => ({ id: f.id.value, name: f.name.value, description: f.description.value }));
    bindForm('#transition-form', '/api/transitions', (f) => ({ from: f.from.value, to: f.to.value, kind: f.kind.value,
      gap: f.gap.value === '' ? null : Number(f.gap.value) }));
    window.addEventListener('beforeunload', () => { if (S.es) S.es.close(); });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
