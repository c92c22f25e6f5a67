/*
 * churnwatch dashboard logic. Fetches the at-risk ranking every 5 seconds
 * and renders it; clicking a row (or opening #account=ID) loads that
 * account's explain breakdown into the side panel. All text from the
 * server is inserted with textContent, never as HTML: account ids and
 * plans come from customer events. URLs are relative so the page also
 * works behind a path prefix (ingress, reverse proxy).
 */
'use strict';

(function () {
  const REFRESH_MS = 5000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const WINDOW_LABELS = {
    logins_7d: 'Logins, 7 days',
    logins_30d: 'Logins, 30 days',
    active_users_7d: 'Active users, 7 days',
    active_users_30d: 'Active users, 30 days',
    usage_7d: 'Usage, 7 days',
    usage_30d: 'Usage, 30 days',
    features_30d: 'Features used, 30 days',
  };

  let items = [];         /* last at-risk answer */
  let selected = null;    /* account id shown in the detail panel */
  let timer = null;

  const $ = (id) => document.getElementById(id);

  /* el('td', {class: 'x', dataset: {a: 1}}, child, 'text', ...) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === 'class') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  const human = (name) => String(name || '').replace(/_/g, ' ');
  const sentence = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : '–');
  const fmtScore = (s) => (typeof s === 'number' ? s.toFixed(1) : '–');
  const bandClass = (b) => (b === 'danger' || b === 'caution' || b === 'healthy' ? b : '');

  function fmtNum(v, digits) {
    if (v === null || v === undefined) return '–';
    if (typeof v !== 'number') return String(v);
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    return v.toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? 2 : digits });
  }

  function fmtDate(ms) {
    if (typeof ms !== 'number') return '–';
    return new Date(ms).toISOString().slice(0, 10);
  }

  function scoreBar(score, band) {
    const bar = el('div', { class: 'bar ' + bandClass(band) }, el('span'));
    bar.firstChild.style.width = Math.max(0, Math.min(100, score || 0)) + '%';
    return bar;
  }

  /* Inline SVG sparkline of [[asof_ms, score], ...] on a fixed 0–100 axis. */
  function sparkline(history, band, width, height) {
    const s = svg('svg', {
      class: 'spark ' + bandClass(band),
      width: width,
      height: height,
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
    });
    const pts = Array.isArray(history) ? history.filter((p) => Array.isArray(p) && p.length === 2) : [];
    const title = svg('title');
    if (pts.length === 0) {
      title.textContent = 'no score history yet';
      s.append(title);
      s.append(svg('line', { class: 'grid', x1: 0, y1: height / 2, x2: width, y2: height / 2 }));
      return s;
    }
    const first = pts[0], last = pts[pts.length - 1];
    title.textContent = `${pts.length} scores from ${fmtDate(first[0])} (${fmtScore(first[1])}) ` +
      `to ${fmtDate(last[0])} (${fmtScore(last[1])})`;
    s.append(title);
    const pad = 3;
    const t0 = first[0], t1 = last[0];
    const x = (t) => (t1 > t0 ? pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad) : width / 2);
    const y = (v) => pad + (1 - Math.max(0, Math.min(100, v)) / 100) * (height - 2 * pad);
    s.append(svg('line', { class: 'grid', x1: 0, y1: y(50), x2: width, y2: y(50) }));
    const coords = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    if (pts.length > 1) {
      const area = `M${x(t0).toFixed(1)},${height - pad} L${coords.join(' L')} ` +
        `L${x(t1).toFixed(1)},${height - pad} Z`;
      s.append(svg('path', { class: 'area', d: area }));
      s.append(svg('polyline', { class: 'line', points: coords.join(' ') }));
    }
    s.append(svg('circle', { class: 'last', cx: x(t1).toFixed(1), cy: y(last[1]).toFixed(1), r: 2.5 }));
    return s;
  }

  function setStatus(ok, text) {
    const st = $('status');
    st.classList.toggle('ok', ok);
    st.classList.toggle('error', !ok);
    $('status-text').textContent = text;
  }

  /* ---- the table ---- */

  function renderSummary(list) {
    const count = (b) => list.filter((i) => i.band === b).length;
    $('sum-total').textContent = list.length;
    $('sum-danger').textContent = count('danger');
    $('sum-caution').textContent = count('caution');
    $('sum-healthy').textContent = count('healthy');
    $('sum-alerting').textContent = list.filter((i) => (i.active_reasons || []).length > 0).length;
  }

  function renderRow(item) {
    const drivers = el('div', { class: 'drivers' });
    for (const d of item.drivers || []) {
      drivers.append(el('span', {
        class: 'driver',
        title: `${human(d.name)}: normalised ${fmtNum(d.normalised, 2)} of 1`,
      }, human(d.name) + ' ', el('b', {}, '−' + fmtNum(d.points_lost, 1))));
    }
    if (!drivers.childNodes.length) drivers.append(el('span', { class: 'muted' }, '–'));

    const acct = el('td', {}, el('div', { class: 'acct' }, item.account_id));
    if ((item.active_reasons || []).length) {
      const rs = el('div', { class: 'reasons' });
      for (const r of item.active_reasons) rs.append(el('span', { class: 'reason' }, human(r)));
      acct.append(rs);
    }

    const tr = el('tr', {
      tabindex: 0,
      class: item.account_id === selected ? 'selected' : null,
      dataset: { account: item.account_id },
      'aria-label': `${item.account_id}, score ${fmtScore(item.score)}, ${item.band || 'unknown band'}`,
    },
      el('td', { class: 'num' }, item.rank),
      acct,
      el('td', {}, el('div', { class: 'score' },
        el('span', { class: 'n' }, fmtScore(item.score)), scoreBar(item.score, item.band))),
      el('td', {}, el('span', { class: 'pill ' + bandClass(item.band) }, item.band || 'unknown')),
      el('td', { class: 'nowrap' }, item.tier ? sentence(item.tier + ' touch') : '–'),
      el('td', { class: 'nowrap' }, sentence(item.phase)),
      el('td', {}, drivers),
      el('td', {}, sparkline(item.history, item.band, 120, 28)));
    tr.addEventListener('click', () => select(item.account_id));
    tr.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        select(item.account_id);
      }
    });
    return tr;
  }

  function renderRows() {
    const q = $('filter').value.trim().toLowerCase();
    const shown = q ? items.filter((i) => i.account_id.toLowerCase().includes(q)) : items;
    $('rows').replaceChildren(...shown.map(renderRow));
    $('empty').hidden = items.length > 0;
    renderSummary(items);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const res = await fetch('at-risk?limit=' + encodeURIComponent($('limit').value), { cache: 'no-store' });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      const data = await res.json();
      if (!Array.isArray(data)) throw new Error('unexpected answer');
      items = data;
      renderRows();
      setStatus(true, 'live · updated ' + new Date().toLocaleTimeString());
      if (selected) await loadDetail(selected, false);
    } catch (err) {
      setStatus(false, 'cannot load data (' + err.message + '), retrying');
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  /* ---- the detail panel ---- */

  function select(id) {
    if (location.hash !== '#account=' + encodeURIComponent(id)) {
      location.hash = 'account=' + encodeURIComponent(id); /* hashchange loads it */
    } else {
      loadDetail(id, true);
    }
  }

  function closeDetail() {
    selected = null;
    $('detail').hidden = true;
    $('layout').classList.remove('with-detail');
    for (const tr of $('rows').children) tr.classList.remove('selected');
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  }

  function openPanel(id) {
    selected = id;
    const d = $('detail');
    d.hidden = false;
    d.dataset.account = id;
    $('layout').classList.add('with-detail');
    for (const tr of $('rows').children) tr.classList.toggle('selected', tr.dataset.account === id);
    return d;
  }

  function panelHead(id) {
    const close = el('button', { class: 'close', type: 'button', 'aria-label': 'Close' }, '×');
    close.addEventListener('click', closeDetail);
    return el('div', { class: 'panel-head' },
      el('div', {}, el('h2', { class: 'acct' }, id), el('div', { class: 'asof', id: 'detail-asof' })),
      close);
  }

  async function loadDetail(id, showLoading) {
    const d = openPanel(id);
    if (showLoading) d.replaceChildren(panelHead(id), el('div', { class: 'body muted' }, 'loading…'));
    let res;
    try {
      res = await fetch('accounts/' + encodeURIComponent(id), { cache: 'no-store' });
    } catch (err) {
      if (selected === id) d.replaceChildren(panelHead(id), el('div', { class: 'body' }, 'cannot reach churnwatch'));
      return;
    }
    if (selected !== id) return; /* another account was picked meanwhile */
    if (res.status === 404) {
      d.replaceChildren(panelHead(id), el('div', { class: 'body' }, 'Unknown account.'));
      return;
    }
    if (!res.ok) {
      d.replaceChildren(panelHead(id), el('div', { class: 'body' }, 'Cannot load the breakdown (HTTP ' + res.status + ').'));
      return;
    }
    renderDetail(d, await res.json());
  }

  function renderDetail(d, x) {
    const row = items.find((i) => i.account_id === x.account_id);
    const body = el('div', { class: 'body' });

    body.append(el('div', { class: 'headline' },
      el('span', { class: 'big', id: 'detail-score' }, fmtScore(x.score)),
      el('span', { class: 'of' }, '/ 100'),
      el('span', { class: 'pill ' + bandClass(x.band), id: 'detail-band' }, x.band || 'unknown'),
      el('span', { class: 'muted' }, `${sentence((x.tier || '?') + ' touch')} · ${x.phase || '?'}`)));
    if (row && row.history) {
      body.append(el('h3', {}, 'Score history'), sparkline(row.history, x.band, 440, 70));
    }

    const signals = el('tbody');
    for (const s of x.signals || []) {
      const tr = el('tr', { class: s.missing ? 'missing' : null, dataset: { signal: s.name } },
        el('td', {}, el('div', {}, human(s.name)), s.description ? el('div', { class: 'desc' }, s.description) : null),
        el('td', { class: 'r' }, s.missing ? 'no data' : fmtNum(s.raw, 2)),
        el('td', {}, s.missing ? el('span', { class: 'muted' }, '–') : scoreBar(100 * s.normalised, '')),
        el('td', { class: 'r' }, fmtNum(s.weight, 1)),
        el('td', { class: 'r' }, s.missing ? '–' : fmtNum(s.contribution, 1)));
      signals.append(tr);
    }
    body.append(el('h3', {}, 'Why this score'),
      el('table', { class: 'signals' },
        el('thead', {}, el('tr', {}, el('th', {}, 'Signal'), el('th', { class: 'r' }, 'Value'),
          el('th', {}, 'Normalised'), el('th', { class: 'r' }, 'Weight'), el('th', { class: 'r' }, 'Points'))),
        signals));

    const win = el('div', { class: 'windows' });
    for (const [k, v] of Object.entries(x.windows || {})) {
      win.append(el('div', { dataset: { window: k } },
        el('span', {}, WINDOW_LABELS[k] || human(k)), el('span', { class: 'v' }, fmtNum(v, 0))));
    }
    body.append(el('h3', {}, 'Activity windows'), win);

    const a = x.attributes || {};
    body.append(el('h3', {}, 'Account'), el('div', { class: 'attrs' },
      el('div', {}, el('span', {}, 'ARR'), el('span', {}, a.arr === null || a.arr === undefined ? '–' : '¥' + fmtNum(a.arr, 0))),
      el('div', {}, el('span', {}, 'Seats'), el('span', {}, fmtNum(a.seats))),
      el('div', {}, el('span', {}, 'Plan'), el('span', {}, a.plan || '–')),
      el('div', {}, el('span', {}, 'Renewal'), el('span', {}, a.renewal_date || '–'))));

    const la = x.last_alert;
    body.append(el('h3', {}, 'Last alert'), el('div', { class: 'lastalert' },
      la ? `${human(la.reason || 'alert')} · ${la.as_of ? la.as_of.slice(0, 10) : ''}` : 'none'));

    d.replaceChildren(panelHead(x.account_id), body);
    $('detail-asof').textContent = x.as_of ? 'as of ' + x.as_of.replace('T', ' ').slice(0, 16) + ' UTC' : '';
  }

  function fromHash() {
    const m = /^#account=(.+)$/.exec(location.hash);
    if (m) loadDetail(decodeURIComponent(m[1]), true);
    else if (selected) closeDetail();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('limit').addEventListener('change', refresh);
    $('filter').addEventListener('input', renderRows);
    window.addEventListener('hashchange', fromHash);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && selected) closeDetail();
    });
    refresh();
    fromHash();
  });
})();
