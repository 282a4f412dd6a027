/* storygraph viewer: the story graph (Cytoscape.js), live updates over SSE, scene and character panels,
   the read-only Cypher console, editing and generating. Text from the story is always inserted as text
   (textContent), never as HTML. */
(function () {
  'use strict';

  const TOKEN_KEY = 'storygraph-token';
  const THUMB_ZOOM = 0.35;        // big stories: thumbnails only at this zoom or closer
  const THUMB_MAX = 250;          // ... and for at most this many scenes in view
  const CHUNK = 8000;             // big stories: elements added per step after the first render
  const CLIENT_CLASSES = ['thumb-on', 'labeled', 'dim', 'hit', 'focus'];
  const LABEL_ZOOM = 0.8;         // big stories: scene labels in view at this zoom or closer

  const S = window.storygraph = {
    cy: null, meta: null, lastSeq: 0, token: '', editable: false, big: false, layout: 'dagre',
    clockPos: {}, pending: new Map(), selected: null, es: null, backoff: 1000, reconnectTimer: null,
    live: 'connecting', ready: false, fullyLoaded: false, startedAt: Date.now(), firstRenderAt: null,
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
      { selector: 'edge.next', style: { 'line-color': '#99a', 'width': 'mapData(decay, 0, 1, 1, 7)',
        'opacity': 'mapData(decay, 0, 1, 0.25, 1)', 'target-arrow-shape': big ? 'none' : 'triangle' } },
      { selector: 'edge.next.continuous', style: { 'line-color': '#7fb3ff', 'target-arrow-color': '#7fb3ff' } },
      { selector: 'edge.next.cut', style: { 'line-style': 'dashed', 'line-color': '#c9c9d9', 'target-arrow-color': '#c9c9d9' } },
      { selector: 'edge.next.time_skip', style: { 'line-style': 'dotted', 'line-color': '#f2c14e',
        'target-arrow-color': '#f2c14e' } },
      { selector: 'edge.appears', style: { 'curve-style': 'haystack', 'line-color': '#a07fd6',
        'width': 'mapData(strength, 0, 5, 0.6, 6)', 'opacity': 0.4 } },
      { selector: 'edge.appears.planned', style: { 'line-style': 'dashed', 'opacity': 0.22 } },
      { selector: 'edge.setin', style: { 'curve-style': 'haystack', 'line-color': '#3aa0b0', 'width': 1, 'opacity': 0.22 } },
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

  function setLoading(text) {
    const e = $('#loading');
    e.textContent = text || '';
    e.hidden = !text;
  }

  function markRendered(key) {
    // two frames: the one cytoscape draws in, and the next, by when it is on screen
    requestAnimationFrame(() => requestAnimationFrame(() => { if (!S[key]) S[key] = Date.now(); }));
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
    S.timing.built = Date.now();
    connect();
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
    $$('#tab-edit form button, #tab-edit form input, #tab-edit form select, #tab-edit form textarea')
      .forEach((x) => { x.disabled = !S.editable; });
  }

  function buildGraph(g) {
    S.lastSeq = Math.max(S.lastSeq, g.last_seq || 0);
    applyMeta(g);
    S.layout = g.layout;
    $('#layout').value = g.layout;
    if (g.big) $('#layout').disabled = true;
    const container = $('#cy');
    const base = {
      container, style: graphStyle(g.big), layout: { name: 'preset', fit: false }, minZoom: 0.01, maxZoom: 4,
      motionBlur: false, selectionType: 'single', boxSelectionEnabled: false,
    };
    if (!g.big) {
      S.cy = cytoscape(Object.assign(base, { elements: g.nodes.concat(g.edges) }));
      if (S.layout === 'dagre') runDagre();
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
    const first = [], rest = [], inFirst = new Set();
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
    const queue = rest.concat(restEdges);
    let i = 0;
    setLoading(`loading ${queue.length} more elements…`);
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
        }
      }
      S.cy.add(add);  // nodes come before edges in the queue, so every edge finds its ends
      if (i < queue.length) {
        setLoading(`loading ${queue.length - i} more elements…`);
        setTimeout(step, 0);
      } else {
        setLoading('');
        S.fullyLoaded = true;
        applyFilter();
        updateThumbs();
        S.cy.one('render', () => markRendered('fullRenderAt'));
      }
    };
    // stream the rest in only once the first frame is on screen
    S.cy.one('render', () => requestAnimationFrame(() => requestAnimationFrame(() => {
      S.firstRenderAt = S.firstRenderAt || Date.now();
      setTimeout(step, 0);
    })));
  }

  function afterBuild() {
    const cy = S.cy;
    if (!S.big) setLoading('');
    cy.on('tap', 'node.scene', (e) => selectScene(e.target.id()));
    cy.on('tap', 'node.character', (e) => selectCharacter(e.target.id()));
    cy.on('tap', 'node.environment', (e) => showEnvironment(e.target));
    cy.on('tap', (e) => { if (e.target === cy) clearSelection(); });
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
  }

  function placeClock() {
    S.cy.batch(() => {
      S.cy.nodes('.scene').forEach((n) => { const p = S.clockPos[n.id()]; if (p) n.position({ x: p.x, y: p.y }); });
    });
    placeSatellites();
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
      cy.elements().filter((x) => !want.has(x.id()) && !x.hasClass('conditioned')).remove();
    });
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
        if (p) { p.data = Object.assign(p.data, el.node.data); p.classes = el.node.classes; }
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
  const STRUCTURAL = new Set(['scene.added', 'scene.updated', 'scene.planned', 'transition.added']);

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
    if (ev.kind === 'scene.stage' || ev.kind === 'scene.generating') {
      S.stage = { scene: ev.ref_id, stage: (ev.payload || {}).stage || 'start', take: (ev.payload || {}).take };
      renderJobs();
    } else if (ev.kind === 'scene.done' || ev.kind === 'scene.failed') {
      if (S.stage && S.stage.scene === ev.ref_id) S.stage = null;
      renderJobs();
    }
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

  function updateJob(ev) {
    const p = ev.payload || {};
    if (p.job === undefined) return;
    const state = { 'job.queued': 'queued', 'job.started': 'running', 'job.finished': 'done', 'job.failed': 'failed' }[ev.kind] || p.state;
    S.jobs.set(p.job, { id: p.job, scene_id: ev.ref_id, takes: p.takes, state, error: p.error || null });
    renderJobs();
  }

  function renderJobs() {
    const box = clear($('#jobs'));
    const jobs = Array.from(S.jobs.values()).sort((a, b) => b.id - a.id);
    if (!jobs.length) box.appendChild(h('p', { class: 'muted', text: 'No generation yet.' }));
    for (const j of jobs.slice(0, 50)) {
      box.appendChild(h('div', { class: 'job job-' + j.state },
        `#${j.id} `, sceneLink(j.scene_id), ` · ${j.takes} take${j.takes === 1 ? '' : 's'} · ${j.state}`,
        j.error ? h('div', { class: 'error', text: j.error }) : null));
    }
    const running = jobs.filter((j) => j.state === 'running');
    const queued = jobs.filter((j) => j.state === 'queued');
    const prog = $('#progress');
    const st = S.stage;
    let text = '';
    if (running.length || st) {
      const sid = running.length ? running[0].scene_id : st.scene;
      text = `generating ${sid}`;
      if (st && st.scene === sid) text += ` · ${st.stage}` + (st.take !== undefined ? ` (take ${st.take})` : '');
      if (queued.length) text += ` · ${queued.length} queued`;
    }
    prog.textContent = text;
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
        ` (${d.transition_in.kind}, gap ${fmt(d.transition_in.gap, 2)}, retention ${fmt(d.transition_in.decay, 2)})`) : h('div', { text: 'starts a timeline' })));
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
        h('button', { type: 'button', id: 'edit-scene', class: 'link', text: 'edit', onclick: () => openSceneForm(d) })));
      box.appendChild(h('div', { id: 'gen-status', class: 'form-status' }));
    }
    box.appendChild(h('h3', { text: 'Prompt' }));
    box.appendChild(h('pre', { text: d.prompt || '(built when the scene is generated)' }));
    box.appendChild(h('h3', { text: 'Scene' }));
    const dl = h('dl', { class: 'spec' });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== '') dl.append(h('dt', { text: k }), h('dd', {}, v)); };
    add('action', sp.action);
    add('characters', sp.characters.length ? sp.characters.flatMap((c, i) => [i ? ', ' : '',
      h('a', { class: 'link', text: c, onclick: () => selectCharacter(c) })]) : '—');
    add('environment', d.environment ? `${d.environment.name || d.environment.id}` : sp.environment);
    add('lighting', sp.lighting); add('weather', sp.weather); add('camera', sp.camera); add('memory', sp.memory);
    add('generation', `${sp.width}×${sp.height} · ${sp.frames} frames @ ${sp.fps} fps · ${sp.steps} steps · seed ${fmt(d.seed)}`);
    if (sp.references && sp.references.length) add('references', sp.references.map((r) => `${r.kind}${r.character ? ' ' + r.character : ''}: ${r.name}`).join('; '));
    box.appendChild(dl);

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
    box.appendChild(h('h3', { text: `Takes (${d.takes.length})` }));
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
      if (st) { st.className = 'form-status ok'; st.textContent = `job ${r.job.id} queued (${takes} take${takes === 1 ? '' : 's'})`; }
      S.jobs.set(r.job.id, r.job); renderJobs();
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
  // console

  async function runQuery() {
    const cypher = $('#cypher').value;
    const err = $('#query-error'), out = clear($('#query-result')), st = $('#query-status');
    err.hidden = true;
    st.textContent = 'running…';
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
    S.cy.elements('.hit').removeClass('hit');
    const hits = S.cy.collection();
    ids.forEach((id) => { hits.merge(S.cy.getElementById(id)); });
    hits.addClass('hit');
    st.textContent = `${r.row_count} row${r.row_count === 1 ? '' : 's'}${r.truncated ? ' (first ' + r.rows.length + ' shown)' : ''} · ` +
      `${fmt(r.elapsed_ms, 1)} ms · ${hits.length} node${hits.length === 1 ? '' : 's'} highlighted · read-only, time limit ${r.time_limit_s} s`;
    S.lastQuery = { rows: r.row_count, hits: hits.length };
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
    out.characters = $$('input[name=characters]', form).filter((x) => x.checked).map((x) => x.value);
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
    $('#run-query').addEventListener('click', runQuery);
    $('#cypher').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runQuery(); } });
    $('#clear-hits').addEventListener('click', () => { if (S.cy) S.cy.elements('.hit').removeClass('hit'); });
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
