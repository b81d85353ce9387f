// paperfetch dashboard: a small vanilla front-end over the coordinator's /v1/ JSON API and its
// /ui/events stream. Every value coming from the coordinator (paper ids, URLs, errors, labels)
// is put in the page as text (textContent / DOM nodes), never parsed as HTML.
'use strict';
(function () {
  const TOKEN_KEY = 'paperfetch.token';
  const PAGE_SIZE = 100;
  const MAX_POINTS = 300;
  const main = document.getElementById('main');
  const errorBox = document.getElementById('error');
  const live = document.getElementById('live');

  // ---- helpers ----
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e[k] = v;
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : String(c)); // strings become text nodes
    }
    return e;
  }
  const num = (v) => Number(v || 0);
  const enumName = (v, prefix) => String(v || '').replace(prefix, '').toLowerCase() || 'unspecified';
  const batchState = (s) => enumName(s, 'BATCH_STATE_');
  const paperState = (s) => enumName(s, 'PAPER_STATE_');
  const reasonName = (r) => enumName(r, 'FAILURE_REASON_');
  function bytes(n) {
    n = num(n);
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + u[i];
  }
  function duration(sec) {
    if (!isFinite(sec) || sec < 0) return '—';
    sec = Math.round(sec);
    if (sec < 60) return sec + 's';
    if (sec < 3600) return Math.floor(sec / 60) + 'm' + String(sec % 60).padStart(2, '0') + 's';
    return Math.floor(sec / 3600) + 'h' + String(Math.floor(sec / 60) % 60).padStart(2, '0') + 'm';
  }
  function when(ts) {
    if (!ts) return '—';
    const d = new Date(ts);
    return isNaN(d) ? '—' : d.toLocaleString();
  }
  function ago(ts) {
    if (!ts) return '—';
    return duration((Date.now() - new Date(ts).getTime()) / 1000) + ' ago';
  }
  // pausedCell says until when and why a host is paused, or '—'.
  function pausedCell(until, why) {
    return el('td', { class: 'paused-cell' }, until ? [stateBadge('paused'), ' until ' + when(until) + ' (' + why + ')'] : '—');
  }
  function stateBadge(name) { return el('span', { class: 'state ' + name }, name.replace('_', ' ')); }
  function showError(msg) {
    if (!msg) { errorBox.hidden = true; errorBox.textContent = ''; return; }
    errorBox.hidden = false;
    errorBox.textContent = msg;
  }

  // ---- auth ----
  const tokenInput = document.getElementById('token');
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h.Authorization = 'Bearer ' + token();
    return h;
  }
  document.getElementById('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = tokenInput.value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    tokenInput.value = '';
    route();
  });
  document.getElementById('token-clear').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  });

  class APIError extends Error {
    constructor(status, body) {
      super((body && body.message) || ('HTTP ' + status));
      this.status = status;
    }
  }
  async function api(path, opts) {
    opts = opts || {};
    const init = { method: opts.method || 'GET', headers: headers(opts.body ? { 'Content-Type': 'application/json' } : {}) };
    if (opts.body) init.body = JSON.stringify(opts.body);
    if (opts.signal) init.signal = opts.signal;
    const resp = await fetch(path, init);
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const err = new APIError(resp.status, body);
      if (resp.status === 401) showError('The coordinator wants a bearer token: enter it above (' + err.message + ').');
      throw err;
    }
    return body;
  }

  // ---- server-sent events over fetch (EventSource cannot send Authorization) ----
  let streamAbort = null;
  function stopStream() {
    if (streamAbort) streamAbort.abort();
    streamAbort = null;
    live.textContent = 'offline';
    live.className = 'live off';
  }
  function openStream(url, onEvent) {
    stopStream();
    const ctl = new AbortController();
    streamAbort = ctl;
    (async function loop() {
      while (!ctl.signal.aborted) {
        let ended = false;
        try {
          const resp = await fetch(url, { headers: headers(), signal: ctl.signal });
          if (!resp.ok) {
            let body = null;
            try { body = await resp.json(); } catch (e) { body = null; }
            const err = new APIError(resp.status, body);
            showError(resp.status === 401 ? 'The coordinator wants a bearer token: enter it above.' : err.message);
            return; // not worth retrying: the page is re-routed when the token changes
          }
          live.textContent = 'live';
          live.className = 'live on';
          const reader = resp.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, i);
              buf = buf.slice(i + 2);
              let event = 'message';
              let data = '';
              for (const line of block.split('\n')) {
                if (line.startsWith('event: ')) event = line.slice(7);
                else if (line.startsWith('data: ')) data += line.slice(6);
              }
              if (!data) continue;
              if (event === 'end') ended = true;
              onEvent(event, JSON.parse(data));
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        if (ended || ctl.signal.aborted) { live.textContent = ended ? 'finished' : 'offline'; live.className = 'live off'; return; }
        live.textContent = 'reconnecting';
        live.className = 'live off';
        await new Promise((r) => setTimeout(r, 2000));
      }
    })();
  }

  // ---- charts (uPlot) ----
  function lineChart(title, label, fmt) {
    const box = el('div', { class: 'chart' });
    const data = [[], []];
    const plot = new uPlot({
      title, width: 600, height: 220,
      scales: { x: { time: true } },
      series: [{}, { label, stroke: '#2f6fdf', fill: 'rgba(47,111,223,.12)', value: (u, v) => v == null ? '—' : fmt(v) }],
      axes: [{}, { values: (u, vals) => vals.map(fmt), size: 80 }],
    }, data, box);
    return {
      box,
      push(y) {
        data[0].push(Date.now() / 1000);
        data[1].push(y);
        if (data[0].length > MAX_POINTS) { data[0].shift(); data[1].shift(); }
        plot.setData(data);
      },
      resize() { plot.setSize({ width: Math.max(300, box.clientWidth), height: 220 }); },
    };
  }
  function barChart(title) {
    const box = el('div', { class: 'chart' });
    let labels = [];
    const plot = new uPlot({
      title, width: 600, height: 220,
      scales: { x: { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] } },
      series: [{ value: (u, v) => labels[v] || '' }, { label: 'failed papers', stroke: '#c0392b', fill: 'rgba(192,57,43,.5)', paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } }],
      axes: [{ values: (u, vals) => vals.map((v) => Number.isInteger(v) ? (labels[v] || '') : ''), rotate: 0 }, { size: 50 }],
    }, [[], []], box);
    return {
      box,
      set(reasons) {
        labels = reasons.map((r) => reasonName(r.reason));
        plot.setData([reasons.map((r, i) => i), reasons.map((r) => num(r.count))]);
      },
      resize() { plot.setSize({ width: Math.max(300, box.clientWidth), height: 220 }); },
    };
  }
  function sumReasons(batches) {
    const m = new Map();
    for (const b of batches) for (const r of (b.failedByReason || [])) m.set(r.reason, (m.get(r.reason) || 0) + num(r.count));
    return [...m.entries()].map(([reason, count]) => ({ reason, count })).sort((a, b) => b.count - a.count);
  }

  // ---- batch summaries ----
  function done(b) {
    const c = b.counts || {};
    return num(c.succeeded) + num(c.failed) + num(c.cancelled);
  }
  function eta(b) {
    const total = num(b.totalPapers);
    const d = done(b);
    const st = batchState(b.state);
    if (st === 'completed' || st === 'cancelled' || d === 0 || total <= d) return '—';
    const start = new Date(b.createdAt).getTime();
    const elapsed = (Date.now() - start) / 1000;
    return duration(elapsed / d * (total - d));
  }
  function progress(b) {
    const total = num(b.totalPapers);
    return el('progress', { max: Math.max(total, 1), value: done(b), title: done(b) + ' / ' + total });
  }
  function counts(b) {
    const c = b.counts || {};
    const part = (cls, label, n, extra) => el('span', { class: cls }, label + ' ' + n + (extra || ''));
    return el('span', { class: 'counts' },
      part('c-queued', 'queued', num(c.queued) + num(c.retryWait), num(c.retryWait) ? ' (' + num(c.retryWait) + ' retrying)' : ''),
      part('c-downloading', 'downloading', num(c.downloading)),
      part('c-succeeded', 'succeeded', num(c.succeeded), num(c.cached) ? ' (' + num(c.cached) + ' cached)' : ''),
      part('c-failed', 'failed', num(c.failed)),
      part('c-cancelled', 'cancelled', num(c.cancelled)));
  }
  function batchPath(id) { return '/v1/batches/' + encodeURIComponent(id); }

  // armedCancels holds, per batch id, until when its Cancel button is armed (one click made).
  const ARM_MS = 5000;
  const armedCancels = new Map();

  // actionButtons returns Cancel (two clicks) and Retry failed buttons for a batch.
  function actionButtons(b, after) {
    const st = batchState(b.state);
    const out = [];
    if (st !== 'completed' && st !== 'cancelled') {
      const btn = el('button', { class: 'danger cancel', type: 'button', title: 'cancel every unfinished paper of the batch' }, 'Cancel batch');
      // The armed state outlives the button: live updates redraw the table every second.
      const show = () => {
        const on = (armedCancels.get(b.batchId) || 0) > Date.now();
        btn.classList.toggle('armed', on);
        btn.textContent = on ? 'Click again to cancel' : 'Cancel batch';
        if (on) setTimeout(show, armedCancels.get(b.batchId) - Date.now() + 10);
        else armedCancels.delete(b.batchId);
      };
      show();
      btn.addEventListener('click', async () => {
        if ((armedCancels.get(b.batchId) || 0) <= Date.now()) {
          armedCancels.set(b.batchId, Date.now() + ARM_MS);
          show();
          return;
        }
        armedCancels.delete(b.batchId);
        btn.disabled = true;
        try {
          await api(batchPath(b.batchId) + ':cancel', { method: 'POST', body: { reason: 'cancelled from the dashboard' } });
          showError('');
          if (after) after();
        } catch (e) { showError('Cancel failed: ' + e.message); btn.disabled = false; }
      });
      out.push(btn);
    }
    if (num((b.counts || {}).failed) > 0 && st !== 'cancelled') {
      const btn = el('button', { class: 'retry', type: 'button', title: 'queue the failed papers again' }, 'Retry failed (' + num(b.counts.failed) + ')');
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        try {
          await api(batchPath(b.batchId) + ':retryFailed', { method: 'POST', body: {} });
          showError('');
          if (after) after();
        } catch (e) { showError('Retry failed: ' + e.message); btn.disabled = false; }
      });
      out.push(btn);
    }
    return out;
  }

  // ---- overview page ----
  function renderOverview() {
    const throughput = lineChart('Throughput (all running batches)', 'bytes/s', (v) => bytes(v) + '/s');
    const failures = barChart('Failed papers by reason (newest 50 batches)');
    const batchesBody = el('tbody');
    const olderBody = el('tbody');
    const hostsBody = el('tbody');
    const fetchersBody = el('tbody');
    const moreBtn = el('button', { type: 'button', hidden: true }, 'Older batches…');
    let olderToken = '';
    main.replaceChildren(
      el('div', { class: 'grid' }, el('section', {}, throughput.box), el('section', {}, failures.box)),
      el('section', {}, el('h2', {}, 'Batches'),
        el('table', { id: 'batches' },
          el('thead', {}, el('tr', {}, ['Batch', 'State', 'Progress', 'Papers', 'Stored', 'Speed', 'ETA', 'Created', ''].map((h) => el('th', {}, h)))),
          batchesBody, olderBody),
        el('div', { class: 'pager' }, moreBtn)),
      el('section', {}, el('h2', {}, 'Hosts with work or trouble'),
        el('table', { id: 'hosts' },
          el('thead', {}, el('tr', {}, ['Host', 'Delay', 'Limit', 'Active', 'Queued', 'Paused', 'Breaker', 'Failures (consecutive)', 'Succeeded', 'Last failure'].map((h) => el('th', {}, h)))),
          hostsBody)),
      el('section', {}, el('h2', {}, 'Fetchers'),
        el('table', { id: 'fetchers' },
          el('thead', {}, el('tr', {}, ['Fetcher', 'Slots', 'In flight', 'Credits', 'State', 'Connected', 'Last heard'].map((h) => el('th', {}, h)))),
          fetchersBody)));
    throughput.resize();
    failures.resize();

    function batchRow(b) {
      const st = batchState(b.state);
      return el('tr', { dataset: { batch: b.batchId } },
        el('td', { class: 'paper-id' }, el('a', { href: '#/batch/' + encodeURIComponent(b.batchId) }, b.batchId)),
        el('td', {}, stateBadge(st)),
        el('td', {}, progress(b), ' ', done(b) + '/' + num(b.totalPapers)),
        el('td', {}, counts(b)),
        el('td', { class: 'num' }, bytes(b.bytesStored)),
        el('td', { class: 'num' }, num(b.bytesPerSecond) ? bytes(b.bytesPerSecond) + '/s' : '—'),
        el('td', { class: 'num' }, eta(b)),
        el('td', {}, when(b.createdAt)),
        el('td', { class: 'actions' }, actionButtons(b)));
    }
    moreBtn.addEventListener('click', async () => {
      try {
        const r = await api('/v1/batches?pageSize=50&pageToken=' + encodeURIComponent(olderToken));
        olderBody.append(...(r.batches || []).map(batchRow));
        olderToken = r.nextPageToken || '';
        moreBtn.hidden = !olderToken;
      } catch (e) { showError(e.message); }
    });
    openStream('/ui/events', (event, data) => {
      if (event === 'error') { showError('Live updates stopped: ' + (data.message || 'error')); return; }
      if (event !== 'overview') return;
      showError('');
      const batches = (data.batches && data.batches.batches) || [];
      batchesBody.replaceChildren(...(batches.length ? batches.map(batchRow) : [el('tr', {}, el('td', { colSpan: 9, class: 'muted' }, 'No batches yet.'))]));
      if (!olderBody.childElementCount) { olderToken = data.batches.nextPageToken || ''; moreBtn.hidden = !olderToken; }
      throughput.push(batches.reduce((s, b) => s + num(b.bytesPerSecond), 0));
      failures.set(sumReasons(batches));
      const hosts = (data.hosts && data.hosts.hosts) || [];
      hostsBody.replaceChildren(...(hosts.length ? hosts.map((h) => {
        const breaker = enumName(h.breaker, 'BREAKER_STATE_');
        return el('tr', { dataset: { host: h.name } },
          el('td', { class: 'url' }, h.name),
          el('td', { class: 'num' }, h.delay || '0s'),
          el('td', { class: 'num' }, num(h.adaptiveLimit) + '/' + num(h.maxConcurrency)),
          el('td', { class: 'num' }, num(h.active)),
          el('td', { class: 'num' }, num(h.queued)),
          pausedCell(h.pausedUntil, h.pauseReason),
          el('td', {}, el('span', { class: 'state ' + (breaker === 'open' ? 'open-breaker' : breaker) }, breaker.replace('_', '-'))),
          el('td', { class: 'num' }, num(h.failures) + ' (' + num(h.consecutiveFailures) + ')'),
          el('td', { class: 'num' }, num(h.successes)),
          el('td', {}, h.lastFailureReason && h.lastFailureReason !== 'FAILURE_REASON_UNSPECIFIED' ? reasonName(h.lastFailureReason) : '—'));
      }) : [el('tr', {}, el('td', { colSpan: 10, class: 'muted' }, 'No host has work or trouble now.'))]));
      const fetchers = (data.fetchers && data.fetchers.fetchers) || [];
      fetchersBody.replaceChildren(...(fetchers.length ? fetchers.map((f) => el('tr', { dataset: { fetcher: f.fetcherId } },
        el('td', { class: 'url' }, f.fetcherId),
        el('td', { class: 'num' }, num(f.slots)),
        el('td', { class: 'num' }, num(f.inFlight)),
        el('td', { class: 'num' }, num(f.credits)),
        el('td', {}, f.draining ? stateBadge('draining') : stateBadge('connected')),
        el('td', {}, when(f.connectedAt)),
        el('td', {}, ago(f.lastHeardAt)))) : [el('tr', {}, el('td', { colSpan: 7, class: 'muted' }, 'No fetcher connected.'))]));
    });
  }

  // ---- batch page ----
  const PAPER_STATES = ['QUEUED', 'RETRY_WAIT', 'DOWNLOADING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];
  const REASONS = ['NOT_FOUND', 'GONE', 'FORBIDDEN', 'NOT_PDF', 'TOO_LARGE', 'FORBIDDEN_ADDRESS', 'BAD_URL', 'REDIRECT_LOOP',
    'CHECKSUM_MISMATCH', 'TIMEOUT', 'STALLED', 'CONNECTION', 'TRUNCATED', 'SERVER_ERROR', 'RATE_LIMITED', 'HTTP_STATUS',
    'STORAGE', 'ABORTED', 'ATTEMPTS_EXHAUSTED', 'HOST_PAUSED'];

  async function downloadPaper(batchId, paperId, btn) {
    btn.disabled = true;
    try {
      const resp = await fetch('/ui/download?batch=' + encodeURIComponent(batchId) + '&paper=' + encodeURIComponent(paperId), { headers: headers() });
      if (!resp.ok) {
        let body = null;
        try { body = await resp.json(); } catch (e) { body = null; }
        throw new APIError(resp.status, body);
      }
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const a = el('a', { href: url, download: paperId.replace(/[^A-Za-z0-9._-]/g, '_') + '.pdf' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) { showError('Download failed: ' + e.message); }
    btn.disabled = false;
  }

  function renderBatch(id) {
    const head = el('div');
    const actions = el('div', { class: 'actions' });
    const throughput = lineChart('Throughput', 'bytes/s', (v) => bytes(v) + '/s');
    const failures = barChart('Failed papers by reason');
    const activeBody = el('tbody');
    const hostsBody = el('tbody');
    const hostsNote = el('p', { class: 'muted', hidden: true });
    const papersBody = el('tbody');
    const stateSel = el('select', { id: 'state-filter' }, el('option', { value: '' }, 'all states'), PAPER_STATES.map((s) => el('option', { value: 'PAPER_STATE_' + s }, s.toLowerCase().replace('_', ' '))));
    const reasonSel = el('select', { id: 'reason-filter' }, el('option', { value: '' }, 'any failure reason'), REASONS.map((r) => el('option', { value: 'FAILURE_REASON_' + r }, r.toLowerCase())));
    const prevBtn = el('button', { type: 'button', disabled: true }, '← Previous');
    const nextBtn = el('button', { type: 'button', disabled: true }, 'Next →');
    const pageInfo = el('span', { class: 'muted' });
    main.replaceChildren(
      el('p', {}, el('a', { href: '#/' }, '← all batches')),
      el('section', {}, head, actions),
      el('div', { class: 'grid' }, el('section', {}, throughput.box), el('section', {}, failures.box)),
      el('section', {}, el('h2', {}, 'Running downloads'),
        el('table', { id: 'active' }, el('thead', {}, el('tr', {}, ['Paper', 'URL', 'Received', 'Speed', 'Attempt'].map((h) => el('th', {}, h)))), activeBody)),
      el('section', {}, el('h2', {}, 'Hosts this batch waits on'),
        el('table', { id: 'batch-hosts' }, el('thead', {}, el('tr', {}, ['Host', 'This batch', 'Queued (all)', 'Active', 'Limit', 'Delay', 'Paused', 'Next start'].map((h) => el('th', {}, h)))), hostsBody),
        hostsNote),
      el('section', {}, el('h2', {}, 'Papers'),
        el('div', { class: 'filters' }, el('label', {}, 'State ', stateSel), el('label', {}, 'Failure reason ', reasonSel)),
        el('table', { id: 'papers' },
          el('thead', {}, el('tr', {}, ['Paper', 'State', 'Attempts', 'Last error', 'Final URL', 'Size', ''].map((h) => el('th', {}, h)))),
          papersBody),
        el('div', { class: 'pager' }, prevBtn, nextBtn, pageInfo)));
    throughput.resize();
    failures.resize();

    let tokens = ['']; // page tokens of the pages seen; the last is the current page's
    let nextToken = '';
    let loading = false;
    let reloadTimer = null;
    let current = null;

    function renderHead(b) {
      current = b;
      const st = batchState(b.state);
      const labels = Object.entries(b.labels || {}).map(([k, v]) => k + '=' + v).join(', ');
      head.replaceChildren(
        el('h1', {}, 'Batch ', el('span', { id: 'batch-id' }, b.batchId), ' ', el('span', { id: 'batch-state' }, stateBadge(st))),
        el('div', { class: 'bar-wide' }, progress(b)),
        el('p', { id: 'batch-progress' }, done(b) + ' of ' + num(b.totalPapers) + ' papers finished · ', counts(b)),
        el('dl', { class: 'meta' },
          el('dt', {}, 'Stored'), el('dd', {}, bytes(b.bytesStored) + ' (' + bytes(b.bytesDownloaded) + ' downloaded)'),
          el('dt', {}, 'Speed'), el('dd', {}, num(b.bytesPerSecond) ? bytes(b.bytesPerSecond) + '/s' : '—'),
          el('dt', {}, 'ETA'), el('dd', {}, eta(b)),
          el('dt', {}, 'Created'), el('dd', {}, when(b.createdAt)),
          el('dt', {}, 'Sealed'), el('dd', {}, when(b.sealedAt)),
          el('dt', {}, 'Finished'), el('dd', {}, when(b.finishedAt)),
          labels ? [el('dt', {}, 'Labels'), el('dd', {}, labels)] : null));
      // After an action the batch changes state (a retried batch runs again): follow it anew.
      actions.replaceChildren(...actionButtons(b, () => { loadPage(); follow(); }));
      failures.set((b.failedByReason || []).slice());
    }

    async function loadPage() {
      if (loading) { scheduleReload(); return; }
      loading = true;
      const q = new URLSearchParams({ pageSize: String(PAGE_SIZE), pageToken: tokens[tokens.length - 1] });
      if (stateSel.value) q.append('states', stateSel.value);
      if (reasonSel.value) q.append('reasons', reasonSel.value);
      try {
        const r = await api(batchPath(id) + '/papers?' + q.toString());
        nextToken = r.nextPageToken || '';
        const papers = r.papers || [];
        papersBody.replaceChildren(...(papers.length ? papers.map((p) => {
          const st = paperState(p.state);
          const pid = (p.spec && p.spec.paperId) || '';
          let urlCell = '—';
          if (p.finalUrl && /^https?:\/\//i.test(p.finalUrl)) urlCell = el('a', { href: p.finalUrl, rel: 'noopener noreferrer', target: '_blank' }, p.finalUrl);
          else if (p.finalUrl) urlCell = p.finalUrl;
          let dl = null;
          if (st === 'succeeded') {
            const btn = el('button', { type: 'button', class: 'download' }, 'Download');
            btn.addEventListener('click', () => downloadPaper(id, pid, btn));
            dl = btn;
          }
          const reason = p.lastFailureReason && p.lastFailureReason !== 'FAILURE_REASON_UNSPECIFIED' ? reasonName(p.lastFailureReason) + ': ' : '';
          return el('tr', { dataset: { paper: pid } },
            el('td', { class: 'paper-id' }, pid),
            el('td', { class: 'paper-state' }, stateBadge(st)),
            el('td', { class: 'num' }, p.attempts),
            el('td', { class: 'err' }, p.lastError ? reason + p.lastError : '—'),
            el('td', { class: 'url' }, urlCell),
            el('td', { class: 'num' }, st === 'succeeded' ? bytes(p.size) : '—'),
            el('td', {}, dl));
        }) : [el('tr', {}, el('td', { colSpan: 7, class: 'muted' }, 'No papers match.'))]));
        prevBtn.disabled = tokens.length <= 1;
        nextBtn.disabled = !nextToken;
        pageInfo.textContent = 'page ' + tokens.length;
      } catch (e) {
        showError('Papers: ' + e.message);
      } finally {
        loading = false;
      }
    }
    function scheduleReload() {
      if (reloadTimer) return;
      reloadTimer = setTimeout(() => { reloadTimer = null; loadPage(); }, 1000);
    }
    stateSel.addEventListener('change', () => { tokens = ['']; loadPage(); });
    reasonSel.addEventListener('change', () => { tokens = ['']; loadPage(); });
    nextBtn.addEventListener('click', () => { if (nextToken) { tokens.push(nextToken); loadPage(); } });
    prevBtn.addEventListener('click', () => { if (tokens.length > 1) { tokens.pop(); loadPage(); } });

    loadPage();
    follow();
    function follow() {
      openStream('/ui/events?batch=' + encodeURIComponent(id), onEvent);
    }
    function onEvent(event, data) {
      if (event === 'error') { showError('Live updates stopped: ' + (data.message || 'error')); return; }
      if (event === 'end') { scheduleReload(); return; }
      if (event !== 'batch') return;
      const u = data.update || {};
      if (u.batch) renderHead(u.batch);
      throughput.push(num(u.batch && u.batch.bytesPerSecond));
      const active = u.active || [];
      activeBody.replaceChildren(...(active.length ? active.map((a) => el('tr', {},
        el('td', { class: 'paper-id' }, a.paperId),
        el('td', { class: 'url' }, a.url),
        el('td', { class: 'num' }, bytes(a.bytes) + (num(a.total) ? ' / ' + bytes(a.total) : '')),
        el('td', { class: 'num' }, bytes(a.bytesPerSecond) + '/s'),
        el('td', { class: 'num' }, a.attempt))) : [el('tr', {}, el('td', { colSpan: 5, class: 'muted' }, 'None.'))]));
      const hosts = u.hosts || [];
      hostsBody.replaceChildren(...(hosts.length ? hosts.map((h) => el('tr', { dataset: { host: h.host } },
        el('td', { class: 'url' }, h.host),
        el('td', { class: 'num remaining' }, num(h.remaining)),
        el('td', { class: 'num' }, num(h.queued)),
        el('td', { class: 'num' }, num(h.active)),
        el('td', { class: 'num' }, num(h.concurrencyLimit) + '/' + num(h.maxConcurrency)),
        el('td', { class: 'num' }, h.delay || '0s'),
        pausedCell(h.pausedUntil, h.pauseCause),
        el('td', {}, h.nextStartAt ? when(h.nextStartAt) : 'now'))) : [el('tr', {}, el('td', { colSpan: 8, class: 'muted' }, 'None.'))]));
      hostsNote.hidden = !num(u.hostsOmitted);
      hostsNote.textContent = num(u.hostsOmitted) + ' more hosts not shown (the 32 with the most queued papers are).';
      if (!u.snapshot && ((u.paperUpdates || []).length || data.truncated)) scheduleReload();
    }
  }

  // ---- routing ----
  function route() {
    showError('');
    stopStream();
    const m = location.hash.match(/^#\/batch\/(.+)$/);
    if (m) renderBatch(decodeURIComponent(m[1]));
    else renderOverview();
  }
  window.addEventListener('hashchange', route);
  route();
})();
