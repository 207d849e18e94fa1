// Sluice web UI: plain JS, no build step. Pages are hash routes: #/ (jobs),
// #/jobs/<name> (one job), #/workers. Every call goes to the JSON API under
// api/; a job's new batches arrive as server-sent events.
'use strict';

const TOKEN_KEY = 'sluice.token';
const main = document.getElementById('main');

// ---- small helpers ----

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid == null) continue;
    e.append(kid instanceof Node ? kid : String(kid));
  }
  return e;
}

const num = (v) => Number(v || 0);
const fmtInt = (v) => num(v).toLocaleString('en-US');
const fmtRate = (v) => num(v).toLocaleString('en-US', { maximumFractionDigits: 1 });
function fmtMs(ms) {
  if (ms == null || isNaN(ms)) return '—';
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + ' ms';
  return (ms / 1000).toFixed(2) + ' s';
}
// A protobuf JSON duration ("1.250s") in milliseconds.
const durMs = (d) => (d ? parseFloat(d) * 1000 : 0);
const shortState = (s) => (s || '').replace(/^JOB_STATE_|^BATCH_STATE_|^CAP_SOURCE_/, '');
function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(t);
  return d.toLocaleTimeString('en-GB', { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}
function fmtAge(ms) {
  if (ms < 1000) return ms + ' ms ago';
  if (ms < 120000) return (ms / 1000).toFixed(1) + ' s ago';
  return Math.round(ms / 60000) + ' min ago';
}

function notice(text, kind) {
  const n = document.getElementById('notice');
  n.textContent = text || '';
  n.className = kind || '';
  n.hidden = !text;
}

// ---- API and authentication ----

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: 'Bearer ' + t } : {};
}

let tokenPrompt = null; // the open prompt, shared by concurrent requests
let tokenDeclined = false; // the user cancelled: polling stops asking

function askToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  const dlg = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  document.getElementById('token-reason').textContent = reason;
  input.value = '';
  tokenPrompt = new Promise((resolve) => {
    const done = (ok) => {
      dlg.removeEventListener('close', onClose);
      document.getElementById('token-cancel').onclick = null;
      tokenPrompt = null;
      resolve(ok);
    };
    const onClose = () => {
      if (dlg.returnValue === 'save' && input.value.trim()) {
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        tokenDeclined = false;
        document.getElementById('token-button').hidden = false;
        done(true);
      } else {
        tokenDeclined = true;
        done(false);
      }
    };
    dlg.addEventListener('close', onClose);
    document.getElementById('token-cancel').onclick = () => dlg.close('cancel');
    dlg.returnValue = '';
    dlg.showModal();
    input.focus();
  });
  return tokenPrompt;
}

// api calls the JSON API; on 401 or 403 it asks for a token and retries
// (the user can cancel).
async function api(path, opts = {}) {
  const method = opts.method || 'GET';
  for (;;) {
    const res = await fetch(path, { method, headers: authHeaders(), cache: 'no-store' });
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    const msg = (body && body.error) || res.statusText;
    if (res.status === 401 || res.status === 403) {
      const why = res.status === 401
        ? 'The coordinator requires authentication: ' + msg
        : 'Your token may not do this: ' + msg + '. Enter a token with the needed role.';
      if ((!opts.background || !tokenDeclined) && await askToken(why)) continue;
      throw new ApiError(res.status, msg);
    }
    if (!res.ok) throw new ApiError(res.status, msg);
    return body;
  }
}

// streamEvents reads server-sent events with fetch (EventSource cannot send
// the Authorization header) and calls onEvent(type, data, id) for each.
async function streamEvents(path, signal, onEvent) {
  const res = await fetch(path, { headers: authHeaders(), signal, cache: 'no-store' });
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).error; } catch (e) { /* not JSON */ }
    throw new ApiError(res.status, msg);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let type = 'message', data = '', id = '';
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        const val = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
        if (field === 'event') type = val;
        else if (field === 'data') data += (data ? '\n' : '') + val;
        else if (field === 'id') id = val;
      }
      if (data) onEvent(type, data, id);
    }
  }
}

// ---- page lifecycle ----

let page = null; // { timers, aborts, charts } of the current page

function newPage() {
  if (page) {
    page.timers.forEach(clearInterval);
    page.aborts.forEach((a) => a.abort());
    page.charts.forEach((c) => c.destroy());
  }
  page = { timers: [], aborts: [], charts: [] };
  main.replaceChildren();
  notice('');
  return page;
}

function every(p, ms, f) {
  p.timers.push(setInterval(() => { if (page === p) f(); }, ms));
}

function setNav(which) {
  document.getElementById('nav-jobs').classList.toggle('active', which === 'jobs');
  document.getElementById('nav-workers').classList.toggle('active', which === 'workers');
}

async function refreshRole() {
  try {
    const c = await api('api/cluster', { background: true });
    document.getElementById('role').textContent = c.leader ? 'leader' : 'standby' + (c.leaderAddr ? ' · leader ' + c.leaderAddr : '');
    document.getElementById('token-button').hidden = !c.auth;
  } catch (e) { /* the page shows its own error */ }
}

function route() {
  const h = decodeURIComponent(location.hash.replace(/^#/, '')) || '/';
  if (h.startsWith('/jobs/')) jobPage(h.slice('/jobs/'.length));
  else if (h === '/workers') workersPage();
  else jobsPage();
}

function stateBadge(s) {
  const st = shortState(s) || 'UNSPECIFIED';
  return el('span', { class: 'state ' + st, text: st });
}

// ---- jobs page ----

function jobsPage() {
  const p = newPage();
  setNav('jobs');
  document.title = 'Jobs · Sluice';
  const tbody = el('tbody');
  main.append(
    el('h1', { text: 'Jobs' }),
    el('table', { id: 'jobs' },
      el('thead', {}, el('tr', {},
        el('th', { text: 'Job' }), el('th', { text: 'State' }), el('th', { text: 'Message' }),
        el('th', { class: 'num', text: 'Input rate (records/s)' }), el('th', { class: 'num', text: 'Lag (records)' }),
        el('th', { class: 'num', text: 'Last batch' }), el('th', { text: 'Updated' }))),
      tbody));
  const load = async (background) => {
    try {
      const r = await api('api/jobs', { background });
      if (page !== p) return;
      if (!r.jobs.length) {
        tbody.replaceChildren(el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No jobs. Submit one with `sluice submit -f job.yaml`.' })));
        return;
      }
      tbody.replaceChildren(...r.jobs.map((s) => {
        const j = s.job, name = j.spec.name, running = j.state === 'JOB_STATE_RUNNING';
        return el('tr', { 'data-job': name },
          el('td', {}, el('a', { href: '#/jobs/' + encodeURIComponent(name), text: name })),
          el('td', {}, stateBadge(j.state)),
          el('td', { class: j.state === 'JOB_STATE_FAILED' ? 'msg FAILED-msg' : 'msg', text: j.message || '' }),
          el('td', { class: 'num', text: running ? fmtRate(s.inputRate) : '—' }),
          el('td', { class: 'num', title: s.lagError || null, text: s.lag == null ? '?' : fmtInt(s.lag) }),
          el('td', { class: 'num', text: fmtInt(j.lastBatchId) }),
          el('td', { class: 'muted', text: j.updateTime ? new Date(j.updateTime).toLocaleString('en-GB') : '' }));
      }));
      notice('');
    } catch (e) {
      if (page === p) notice('Cannot list jobs: ' + e.message);
    }
  };
  load(false);
  every(p, 3000, () => load(true));
}

// ---- job page ----

const CHARTS = [
  { key: 'rate', title: 'Input rate', unit: 'records/s', color: '#1f6feb' },
  { key: 'proc', title: 'Processing time', unit: 'ms', color: '#8250df' },
  { key: 'sched', title: 'Scheduling delay', unit: 'ms', color: '#bf8700' },
  { key: 'total', title: 'Total delay', unit: 'ms', color: '#cf222e' },
];

function batchPoint(b, intervalSec) {
  const m = b.metrics || {};
  return {
    t: new Date(b.batchTime).getTime() / 1000,
    rate: num(m.recordsIn) / intervalSec,
    proc: durMs(m.processingTime),
    sched: durMs(m.schedulingDelay),
    total: durMs(m.totalDelay),
  };
}

function rangesCell(ranges) {
  const rs = (ranges || []).map((r) => `${r.topic}/${num(r.partition)} [${num(r.fromOffset)}, ${num(r.untilOffset)})`);
  if (rs.length <= 3) return el('td', { class: 'ranges' }, rs.join('\n') || '—');
  return el('td', { class: 'ranges' }, el('details', {},
    el('summary', { text: `${rs.length} ranges: ${rs[0]} …` }),
    el('div', {}, rs.map((r) => el('div', { text: r })))));
}

function capText(c) {
  if (!c) return '—';
  const src = shortState(c.source) || '—';
  const parts = [src.toLowerCase().replace('_', ' ')];
  if (num(c.rate)) parts.push(fmtInt(c.rate) + '/s');
  if (num(c.maxRecords)) parts.push('≤ ' + fmtInt(c.maxRecords));
  if (c.limited) parts.push('(limited)');
  return parts.join(' ');
}

function batchRow(b, intervalSec, fresh) {
  const m = b.metrics || {};
  const committed = b.state === 'BATCH_STATE_COMMITTED';
  return el('tr', { 'data-batch-id': b.id, class: fresh ? 'new' : null },
    el('td', { class: 'num', text: b.id }),
    el('td', { text: fmtTime(b.batchTime) }),
    el('td', { text: shortState(b.state).toLowerCase() }),
    el('td', { class: 'num', text: committed ? fmtInt(m.recordsIn) : '—' }),
    el('td', { class: 'num', text: committed ? fmtRate(num(m.recordsIn) / intervalSec) : '—' }),
    el('td', { class: 'num', text: committed ? fmtInt(m.recordsOut) : '—' }),
    el('td', { class: 'num', text: committed ? fmtInt(m.recordsFailed) + (num(m.recordsDeadLettered) ? ` (${fmtInt(m.recordsDeadLettered)} dead-lettered)` : '') : '—' }),
    el('td', { class: 'num', text: committed ? fmtMs(durMs(m.schedulingDelay)) : '—' }),
    el('td', { class: 'num', text: committed ? fmtMs(durMs(m.processingTime)) : '—' }),
    el('td', { class: 'num', text: committed ? fmtMs(durMs(m.totalDelay)) : '—' }),
    el('td', { class: 'num', text: committed ? `${num(m.tasks)} / ${num(m.taskAttempts)}` + (num(m.speculativeTasks) ? ` (+${m.speculativeTasks} spec.)` : '') : '—' }),
    el('td', { class: 'cap', text: capText(b.cap) }),
    rangesCell(b.ranges));
}

function jobPage(name) {
  const p = newPage();
  setNav('jobs');
  document.title = name + ' · Sluice';
  const batches = new Map(); // id -> batch
  let intervalSec = 1;
  let job = null;

  const title = el('h1', {}, el('span', { id: 'job-name', text: name }));
  const stateSlot = el('span', { id: 'job-state' });
  const stopBtn = el('button', { id: 'stop', class: 'danger', type: 'button', text: 'Stop' });
  const resumeBtn = el('button', { id: 'resume', class: 'primary', type: 'button', text: 'Resume' });
  title.append(stateSlot, el('span', { class: 'actions' }, stopBtn, resumeBtn));
  const message = el('p', { id: 'job-message', class: 'msg' });
  const cards = el('div', { class: 'cards', id: 'cards' });
  const charts = el('div', { class: 'charts', id: 'charts' });
  const tbody = el('tbody');
  const offBody = el('tbody');
  const offError = el('p', { class: 'msg' });
  const spec = el('pre', { class: 'spec', id: 'spec' });
  main.append(
    el('p', {}, el('a', { href: '#/', text: '← Jobs' })),
    title, message, cards,
    el('h2', { text: 'Batches over time' }), charts,
    el('h2', { text: 'Recent batches' }),
    el('div', { class: 'scroll' }, el('table', { id: 'batches' }, el('thead', {}, el('tr', {},
      ['Batch', 'Batch time', 'State', 'Records in', 'Input rate (/s)', 'Records out', 'Failed',
        'Scheduling delay', 'Processing time', 'Total delay', 'Tasks / attempts', 'Cap', 'Ranges']
        .map((h, i) => el('th', { class: i === 1 || i === 2 || i >= 11 ? null : 'num', text: h })))), tbody)),
    el('h2', { text: 'Offsets and lag per partition' }), offError,
    el('table', { id: 'offsets' }, el('thead', {}, el('tr', {},
      ['Topic', 'Partition', 'Committed', 'Latest', 'Lag'].map((h, i) => el('th', { class: i ? 'num' : null, text: h })))), offBody),
    el('h2', { text: 'Spec (secrets redacted)' }), spec);

  // Charts: one uPlot each, sized to its box.
  const plots = CHARTS.map((c) => {
    const box = el('div', { class: 'chart', 'data-chart': c.key }, el('h3', { text: `${c.title} (${c.unit})` }));
    charts.append(box);
    const u = new uPlot({
      width: Math.max(box.clientWidth - 16, 300), height: 180,
      scales: { x: { time: true } },
      legend: { show: false },
      series: [{}, { label: c.title, stroke: c.color, width: 2, fill: c.color + '18', points: { show: true, size: 5 } }],
      axes: [{}, { size: 60 }],
    }, [[], []], box);
    p.charts.push(u);
    return { c, u, box };
  });
  const onResize = () => plots.forEach(({ u, box }) => u.setSize({ width: Math.max(box.clientWidth - 16, 300), height: 180 }));
  window.addEventListener('resize', onResize);
  p.aborts.push({ abort: () => window.removeEventListener('resize', onResize) });

  const committed = () => [...batches.values()].filter((b) => b.state === 'BATCH_STATE_COMMITTED').sort((a, b) => num(a.id) - num(b.id));

  function redraw() {
    const pts = committed().map((b) => batchPoint(b, intervalSec));
    const xs = pts.map((q) => q.t);
    for (const { c, u } of plots) u.setData([xs, pts.map((q) => q[c.key])]);
    const recent = pts.slice(-10);
    const avg = (k) => (recent.length ? recent.reduce((s, q) => s + q[k], 0) / recent.length : NaN);
    const card = (k, v, id) => el('div', { class: 'card', id }, el('div', { class: 'k', text: k }), el('div', { class: 'v', text: v }));
    cards.replaceChildren(
      card('Input rate (last 10)', recent.length ? fmtRate(avg('rate')) + ' /s' : '—', 'card-rate'),
      card('Processing time', fmtMs(avg('proc')), 'card-proc'),
      card('Scheduling delay', fmtMs(avg('sched')), 'card-sched'),
      card('Total delay', fmtMs(avg('total')), 'card-total'),
      card('Batches committed', fmtInt(job ? job.lastBatchId : 0), 'card-batches'),
      card('Batch interval', fmtMs(intervalSec * 1000), 'card-interval'));
  }

  function renderTable(freshId) {
    const rows = [...batches.values()].sort((a, b) => num(b.id) - num(a.id)).slice(0, 100);
    if (!rows.length) {
      tbody.replaceChildren(el('tr', {}, el('td', { colspan: 13, class: 'muted', text: 'No batches yet.' })));
      return;
    }
    tbody.replaceChildren(...rows.map((b) => batchRow(b, intervalSec, b.id === freshId)));
  }

  function renderJob(j) {
    job = j;
    const d = j.spec.batchInterval;
    intervalSec = d ? parseFloat(d) : 1;
    stateSlot.replaceChildren(stateBadge(j.state));
    message.textContent = j.message || '';
    message.className = j.state === 'JOB_STATE_FAILED' ? 'msg FAILED-msg' : 'msg';
    const running = j.state === 'JOB_STATE_RUNNING';
    stopBtn.disabled = !running;
    resumeBtn.disabled = running;
    spec.textContent = JSON.stringify(j.spec, null, 2);
  }

  function renderOffsets(r) {
    offError.textContent = r.offsetsError ? 'Offsets unavailable: ' + r.offsetsError : '';
    const parts = (r.offsets && r.offsets.partitions) || [];
    offBody.replaceChildren(...parts.map((q) => el('tr', { 'data-partition': `${q.topic}/${num(q.partition)}` },
      el('td', { text: q.topic }), el('td', { class: 'num', text: num(q.partition) }),
      el('td', { class: 'num', text: fmtInt(q.committed) }), el('td', { class: 'num', text: fmtInt(q.latest) }),
      el('td', { class: 'num', text: fmtInt(q.lag) }))));
  }

  const base = 'api/jobs/' + encodeURIComponent(name);
  async function refresh(background, limit) {
    const r = await api(base + '?limit=' + limit, { background });
    if (page !== p) return null;
    renderJob(r.job);
    renderOffsets(r);
    for (const b of r.batches) {
      const old = batches.get(b.id);
      if (!old || old.state !== 'BATCH_STATE_COMMITTED') batches.set(b.id, b);
    }
    return r;
  }

  async function act(verb, btn) {
    btn.disabled = true;
    try {
      const r = await api(base + '/' + verb, { method: 'POST' });
      if (page === p) renderJob(r.job);
      notice(`Job ${name}: ${verb === 'stop' ? 'stopped' : 'resumed'}.`, 'info');
    } catch (e) {
      notice(`Cannot ${verb} ${name}: ${e.message}`);
      if (job && page === p) renderJob(job);
    }
  }
  stopBtn.addEventListener('click', () => act('stop', stopBtn));
  resumeBtn.addEventListener('click', () => act('resume', resumeBtn));

  // Live: the batches committed after the ones loaded arrive as events;
  // the stream resumes after the last one it delivered.
  async function live() {
    const ctl = new AbortController();
    p.aborts.push(ctl);
    let delay = 1000;
    while (page === p) {
      const after = committed().reduce((m, b) => Math.max(m, num(b.id)), 0);
      try {
        await streamEvents(`${base}/events?after=${after}`, ctl.signal, (type, data) => {
          if (type === 'error') { notice('Batch stream: ' + JSON.parse(data)); return; }
          if (type !== 'batch') return;
          const b = JSON.parse(data);
          batches.set(b.id, b);
          if (job) job.lastBatchId = b.id;
          redraw();
          renderTable(b.id);
          delay = 1000;
        });
      } catch (e) {
        if (ctl.signal.aborted || page !== p) return;
        if (e.status === 401 || e.status === 403) {
          try { await api(base + '?limit=1'); } catch (e2) { notice('Batch stream: ' + e2.message); }
        }
      }
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  (async () => {
    try {
      await refresh(false, 100);
    } catch (e) {
      if (page === p) notice(`Cannot load job ${name}: ${e.message}`);
      return;
    }
    redraw();
    renderTable(null);
    live();
    // State, message and offsets change without a batch (stop, failure).
    every(p, 3000, async () => {
      try { await refresh(true, 1); } catch (e) { /* shown on the next success */ }
    });
  })();
}

// ---- workers page ----

function workersPage() {
  const p = newPage();
  setNav('workers');
  document.title = 'Workers · Sluice';
  const tbody = el('tbody');
  const standby = el('p', { class: 'msg', id: 'standby' });
  main.append(el('h1', { text: 'Workers' }), standby,
    el('table', { id: 'workers' }, el('thead', {}, el('tr', {},
      ['Worker', 'Host', 'Labels', 'Slots', 'Running tasks', 'Last heartbeat'].map((h, i) => el('th', { class: i >= 3 && i <= 4 ? 'num' : null, text: h })))),
    tbody));
  const load = async (background) => {
    try {
      const r = await api('api/workers', { background });
      if (page !== p) return;
      standby.textContent = r.cluster.leader ? '' : 'This coordinator is a standby: workers connect to the leader' + (r.cluster.leaderAddr ? ' at ' + r.cluster.leaderAddr : '') + '.';
      if (!r.workers.length) {
        tbody.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'No workers connected.' })));
        return;
      }
      tbody.replaceChildren(...r.workers.map((w) => el('tr', { 'data-worker': w.id },
        el('td', { text: w.id }), el('td', { text: w.host || '—' }), el('td', { text: w.labels.join(', ') || '—', title: w.processors ? 'Go processors: ' + w.processors.join(', ') : null }),
        el('td', { class: 'num', text: w.slots }), el('td', { class: 'num', text: w.running }),
        el('td', { title: w.lastHeartbeat, text: fmtAge(w.heartbeatAgeMs) }))));
      notice('');
    } catch (e) {
      if (page === p) notice('Cannot list workers: ' + e.message);
    }
  };
  load(false);
  every(p, 2000, () => load(true));
}

// ---- start ----

document.getElementById('token-button').addEventListener('click', () => {
  tokenDeclined = false;
  askToken('Enter a token to use for this tab.').then((ok) => { if (ok) route(); });
});
window.addEventListener('hashchange', route);
route();
refreshRole();
setInterval(refreshRole, 10000);
