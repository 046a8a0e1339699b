// Sightline — progressive enhancement for /orders. Plain ES module, no build step.
//
// Without this script the page still works: the form posts to /orders (item
// lines are added and removed by round trips), the server re-renders it with
// every broken rule next to its field, and redirects back with a consistency
// token. With it:
//   - an order is sent as JSON (sightline.js's placeOrder, a client-made id
//     so retries are safe); the server validates it, and only an order the
//     server took becomes a row (`Saving…` until search has it) — invalid
//     input never does: every broken rule is shown next to its field;
//   - every row, whether the server rendered it or this script added it, is a
//     copy of the page's <template id="order-row-template"> (the server's
//     order_row.html), filled by `fillRow`: one markup, one behaviour;
//   - ONE event stream per browser (sightline.js) flips rows to `Confirmed`;
//     a notice for an order the page does not show (another tab, device or
//     API client) fetches it and inserts it in its place; the counters follow
//     every notice;
//   - Cancel offers an undo for a few seconds, then cancels;
//   - search updates as you type; while search is unreachable the page shows
//     the write side's orders (rendered by the server) with a banner, and
//     recovers by itself when search is back;
//   - money and times are printed in the browser's locale;
//   - a row's state opens its journey: how long each stage took, fetched
//     when opened (sightline.js's getJourney, described by `describeJourney`).
//
// The talking to the server is sightline.js's; this file is the page.

import {
  SightlineError,
  cancelOrder,
  configure,
  getJourney,
  getOrder,
  getSummary,
  listOrders,
  newOrderId,
  placeOrder,
  subscribe,
  whenVisible,
} from './sightline.js';

const form = document.getElementById('order-form');
const table = document.getElementById('orders');
const tbody = document.querySelector('#orders tbody');
const rowTemplate = document.getElementById('order-row-template');
const connection = document.getElementById('connection');
const announcer = document.getElementById('announcements');
const alerter = document.getElementById('alerts');
const banner = document.getElementById('search-banner');
const searchForm = document.getElementById('search-form');
const searchInput = document.getElementById('q');

const LAG_SLO_MS = Number(document.body.dataset.lagSloMs) || 5000;
const CURRENCY = document.body.dataset.currency || 'USD';
/** How long Cancel can be undone before it is sent. */
const UNDO_MS = 5000;
/** While search is unreachable, how often the page asks whether it is back. */
const SEARCH_PROBE_MS = 3000;
// Server clock minus ours, so "older than the SLO" uses the server's placed_at fairly.
const CLOCK_OFFSET_MS = (() => {
  const serverNow = Number(document.body.dataset.serverNowMs);
  return Number.isFinite(serverNow) && serverNow > 0 ? serverNow - Date.now() : 0;
})();
const serverNow = () => Date.now() + CLOCK_OFFSET_MS;

const CONNECTION_LABEL = {
  connecting: 'Connecting to live updates…',
  live: 'Live — orders update by themselves',
  reconnecting: 'Connection lost — reconnecting…',
  polling: 'Live updates (checking every few seconds)',
  offline: 'Signed out — reload the page to sign in again',
  'search-down': 'Search is catching up — new orders are saved and will show here',
};

/** id → { row, placedAt (server ms), timer, follow (AbortController) } */
const watched = new Map();
/** id → { timer, row } of cancels waiting out their undo window. */
const undoable = new Map();
/** Ids being fetched because a notice named an order the page lacks. */
const fetching = new Set();

let offline = false;
let streamState = 'connecting';
let searchDown = false;
let searchProbe = 0;
let everLive = false;

const money = (() => {
  const cache = new Map();
  return (cents, currency) => {
    const code = currency || CURRENCY;
    let format = cache.get(code);
    if (!format) {
      try {
        format = new Intl.NumberFormat(undefined, { style: 'currency', currency: code });
      } catch {
        format = { format: (n) => `${n.toFixed(2)} ${code}` };
      }
      cache.set(code, format);
    }
    return format.format(Number(cents) / 100);
  };
})();
const shortTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const exactTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });

if (form && tbody && rowTemplate) {
  init();
}

function init() {
  localise(document);
  for (const row of rows()) {
    enhanceState(row);
    const state = row.dataset.state;
    if (state === 'pending' || state === 'delayed') {
      watch(row.dataset.orderId, row, Number(row.dataset.placedAt) || serverNow());
    }
  }
  form.noValidate = true; // the server's messages, next to their fields
  form.addEventListener('submit', onSubmit);
  form.addEventListener('click', onFormClick);
  form.addEventListener('input', (event) => clearFieldError(event.target));
  tbody.addEventListener('submit', onRowSubmit);
  tbody.addEventListener('click', onRowClick);
  if (searchForm && searchInput) {
    searchForm.addEventListener('submit', (event) => {
      event.preventDefault();
      runSearch();
    });
    searchInput.addEventListener('input', debounce(runSearch, 250));
  }
  window.addEventListener('pagehide', flushCancels);

  const params = new URLSearchParams(window.location.search);
  configure({
    transport: params.get('transport') === 'poll' ? 'poll' : 'auto',
    // Tabs share a stream only when they are signed in as the same user.
    scope: document.querySelector('.who strong')?.textContent || '',
  });
  subscribe(onNotice, { onStatus });
  for (const [id, entry] of watched) follow(id, entry);
  if (banner && !banner.hidden) enterSearchDown();
}

// ---------------------------------------------------------------------------
// Notices

function onNotice(notice) {
  const row = findRow(notice.id);
  if (notice.kind === 'order-visible') {
    if (!row) {
      insertFromServer(notice.id);
    } else if (!olderThanRow(row, notice.version)) {
      if (typeof notice.status === 'string') setStatus(row, notice.status);
      markVisible(notice.id);
    }
  } else if (notice.kind === 'order-failed') {
    // The order committed but cannot be made searchable (its event was
    // dead-lettered): say so rather than wait forever.
    if (row) markFailed(notice.id);
    else insertFromServer(notice.id, { failed: true });
  }
  refreshSummary();
}

function onStatus(state, { fresh }) {
  streamState = state;
  offline = state === 'offline';
  showConnection();
  // A new stream does not replay what came before it: catch up from search.
  if (fresh && state === 'live') {
    if (everLive) refreshList();
    everLive = true;
  }
}

/**
 * Whether `version` is older than what the row shows (e.g. the placing's
 * notice arriving after the row was cancelled): such news changes nothing.
 * Otherwise the row now shows `version`.
 */
function olderThanRow(row, version) {
  if (!Number.isInteger(version)) return false;
  if (version < (Number(row.dataset.version) || 0)) return true;
  row.dataset.version = String(version);
  return false;
}

/** A notice for an order this page does not show: fetch it, and put it in its place. */
async function insertFromServer(id, { failed = false } = {}) {
  if (fetching.has(id) || !onNewestPage()) return;
  fetching.add(id);
  try {
    const order = await getOrder(id);
    if (findRow(id) || !matchesSearch(order)) return;
    const row = makeRow(order);
    placeRow(row);
    const state = failed ? 'failed' : order.visible ? 'visible' : rowStateFor(order);
    setRowState(row, state);
    if (state === 'pending' || state === 'delayed') {
      watch(id, row, Date.parse(order.placed_at) || serverNow());
      follow(id, watched.get(id));
    }
    flash(row);
    announce(`New order ${describeRow(row)} from elsewhere: ${labelOf(row)}`);
  } catch (error) {
    if (error instanceof SightlineError && error.status === 401) goOffline();
  } finally {
    fetching.delete(id);
  }
}

/** After a gap in the stream: every order of the first page, as search has it now. */
async function refreshList() {
  if (!onNewestPage()) return;
  let list;
  try {
    list = await listOrders({ q: currentQuery() || undefined });
  } catch (error) {
    if (error instanceof SightlineError && error.status === 503) enterSearchDown();
    return;
  }
  leaveSearchDown();
  for (const order of list.orders) {
    const row = findRow(order.id);
    if (!row) {
      addListedRow(order, (row) => placeRow(row));
      continue;
    }
    if (olderThanRow(row, order.version)) continue;
    if (order.status) setStatus(row, order.status);
    if (order.visible) markVisible(order.id, { quiet: true });
  }
  refreshSummary();
}

// ---------------------------------------------------------------------------
// Rows: one markup (the template), filled here

function rows() {
  return tbody.querySelectorAll('tr[data-order-id]');
}

function findRow(id) {
  return tbody.querySelector(`tr[data-order-id="${cssEscape(id)}"]`);
}

function makeRow(order) {
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  fillRow(row, order);
  return row;
}

/** Fills a row from an order of the API (or the one just placed). */
function fillRow(row, order) {
  const id = order.id;
  row.dataset.orderId = id;
  enhanceState(row);
  row.dataset.status = order.status || 'placed';
  row.dataset.version = String(order.version || 1);
  const placedAt = Date.parse(order.placed_at);
  row.dataset.placedAt = String(Number.isFinite(placedAt) ? placedAt : serverNow());
  const list = row.querySelector('[data-slot="items"]');
  list.replaceChildren(
    ...(order.items || []).map((item) => {
      const li = document.createElement('li');
      li.dataset.sku = item.sku;
      li.textContent = `${item.sku} × ${item.quantity}`;
      return li;
    }),
  );
  const total = row.querySelector('[data-slot="total"]');
  const cents = Number.isFinite(order.total_cents) ? order.total_cents : totalOf(order.items || []);
  total.value = String(cents);
  total.dataset.currency = order.currency || CURRENCY;
  row.querySelector('[data-slot="note"]').textContent = order.note || '';
  const time = row.querySelector('[data-slot="placed"]');
  time.dateTime = new Date(Number(row.dataset.placedAt)).toISOString();
  const cancel = row.querySelector('.cancel-form');
  cancel.action = `/orders/${encodeURIComponent(id)}/cancel`;
  cancel.querySelector('button').setAttribute('aria-label', `Cancel order ${id.slice(0, 8)}`);
  setStatus(row, row.dataset.status);
  setRowState(row, row.dataset.state || 'pending');
  localise(row);
}

/** Puts a row where the list's order (newest first, then id) says. */
function placeRow(row) {
  const at = Number(row.dataset.placedAt);
  const id = row.dataset.orderId;
  const after = [...rows()].find((other) => {
    const otherAt = Number(other.dataset.placedAt);
    return otherAt < at || (otherAt === at && other.dataset.orderId < id);
  });
  tbody.insertBefore(row, after || null);
  document.getElementById('empty')?.setAttribute('hidden', '');
}

function rowStateFor(order) {
  const placedAt = Date.parse(order.placed_at) || serverNow();
  return serverNow() - placedAt > LAG_SLO_MS ? 'delayed' : 'pending';
}

/** The one state a person reads; the server's `state_label` says the same. */
function labelFor(state, status) {
  if (state === 'rejected') return 'Not placed';
  if (state === 'failed') return "Couldn't be processed";
  if (status === 'cancelled') return 'Cancelled';
  if (status === 'cancelling') return 'Cancelling…';
  if (state === 'visible') return 'Confirmed';
  if (state === 'delayed') return 'Taking longer than usual';
  return 'Saving…';
}

function labelOf(row) {
  return row.querySelector('[data-slot="label"]').textContent;
}

function relabel(row, extra) {
  const status = undoable.has(row.dataset.orderId) ? 'cancelling' : row.dataset.status;
  const label = labelFor(row.dataset.state, status);
  row.querySelector('[data-slot="label"]').textContent = extra ? `${label} — ${extra}` : label;
}

function setRowState(row, state, extra) {
  const changed = row.dataset.state !== state;
  row.dataset.state = state;
  relabel(row, extra);
  if (state === 'rejected') {
    // Never placed: there is no journey to show.
    closeJourney(row);
    plainState(row);
  } else if (changed && journeyRow(row)) {
    loadJourney(row);
  }
}

function setStatus(row, status) {
  row.dataset.status = status;
  const cancel = row.querySelector('.cancel-form');
  cancel.hidden = status !== 'placed' || undoable.has(row.dataset.orderId) || row.dataset.state === 'rejected';
  relabel(row);
}

function describeRow(row) {
  const skus = [...row.querySelectorAll('[data-slot="items"] li')].map((li) => li.dataset.sku);
  const id = (row.dataset.orderId || '').slice(0, 8);
  return skus.length ? `${skus.join(', ')} (${id})` : id;
}

function totalOf(items) {
  return items.reduce((sum, i) => sum + i.quantity * i.unit_price_cents, 0);
}

function flash(row) {
  row.classList.remove('fresh');
  void row.offsetWidth; // restart the highlight
  row.classList.add('fresh');
}

/** Money and times in the browser's locale; the exact time on hover. */
function localise(root) {
  for (const time of root.querySelectorAll('time[datetime]')) {
    const at = Date.parse(time.dateTime);
    if (!Number.isFinite(at)) continue;
    time.textContent = shortTime.format(at);
    time.title = exactTime.format(at);
  }
  for (const amount of root.querySelectorAll('data[data-currency]')) {
    if (amount.value !== '') amount.textContent = money(amount.value, amount.dataset.currency);
  }
}

// ---------------------------------------------------------------------------
// Watching rows until search can see them

function watch(id, row, placedAt) {
  let entry = watched.get(id);
  if (!entry) {
    entry = { row, placedAt, timer: 0, follow: null };
    watched.set(id, entry);
  } else {
    entry.row = row;
    entry.placedAt = placedAt;
  }
  clearTimeout(entry.timer);
  const due = Math.max(0, placedAt + LAG_SLO_MS - serverNow());
  entry.timer = setTimeout(() => {
    if (watched.get(id) === entry && entry.row.dataset.state === 'pending') {
      setRowState(entry.row, 'delayed');
      // Slow search, or no search at all? Ask, so the page can say which.
      probeSearch();
    }
  }, due);
}

/**
 * Waits (stream, or long polls) until the server says the order is visible;
 * with `version` (after a cancel), until that version is.
 */
function follow(id, entry, version) {
  if (!entry || entry.follow || offline) return;
  const controller = new AbortController();
  entry.follow = controller;
  whenVisible(id, { signal: controller.signal, version }).then(
    (visible) => {
      const row = findRow(id);
      if (row && visible && olderThanRow(row, visible.version)) return;
      if (row && visible && typeof visible.status === 'string') setStatus(row, visible.status);
      markVisible(id);
    },
    (error) => {
      if (controller.signal.aborted || !(error instanceof SightlineError)) return;
      if (entry.follow === controller) entry.follow = null;
      if (error.code === 'order_failed') markFailed(id);
      else if (error.status === 401) goOffline();
    },
  );
}

function unwatch(id) {
  const entry = watched.get(id);
  if (entry) {
    clearTimeout(entry.timer);
    if (entry.follow) entry.follow.abort();
  }
  watched.delete(id);
}

function markVisible(id, { quiet = false } = {}) {
  const row = findRow(id);
  unwatch(id);
  if (!row || row.dataset.state === 'visible') return;
  setRowState(row, 'visible');
  if (quiet) return;
  flash(row);
  announce(`Order ${describeRow(row)}: ${labelOf(row)}`);
}

function markFailed(id) {
  const row = findRow(id);
  unwatch(id);
  if (!row || row.dataset.state === 'visible') return;
  setRowState(row, 'failed');
  alertUser(`Order ${describeRow(row)} couldn't be processed. Nothing was charged twice; please contact support.`);
}

// ---------------------------------------------------------------------------
// A row's journey: its state is a button that opens how the order got there

/** Stages in the words a person reads (the detailed list). */
const STAGE_LABEL = {
  committed: 'Saved, with its event',
  claimed: 'Picked up to be passed on',
  published: 'Handed on',
  delivered_to_projector: 'Reached the search writer',
  retrying: 'Tried again',
  parked: 'Set aside',
  indexed: 'Written to search',
  searchable: 'Searchable',
  noticed: 'Ready to tell you',
  sent: 'Sent to your browser',
};

/**
 * Where a stage falls in the summary: 1 saved (and handed on), 2 indexed,
 * 3 searchable, 4 sent (through noticed); 0 is committed itself.
 */
const STAGE_PHASE = {
  committed: 0,
  claimed: 1,
  published: 1,
  delivered_to_projector: 1,
  retrying: 2,
  parked: 2,
  indexed: 2,
  searchable: 3,
  noticed: 4,
  sent: 4,
};

/**
 * A failure's kind (`retrying`: `elasticsearch_unreachable`, `status_503`,
 * Elasticsearch's error type) or why it was set aside (`parked`: for the
 * order's owner the words its `order-failed` notice gave, already plain; an
 * operator's dead letter error otherwise), in plain words.
 */
export function reasonInWords(reason) {
  const r = String(reason || '').trim().toLowerCase();
  // Words already (the server's own for a customer): as they are.
  if (/^[a-z][a-z ,.'’-]*$/.test(r) && r.includes(' ')) return r.replace(/\.$/, '');
  const status = /^status_(\d{3})$/.exec(r);
  if (r === 'elasticsearch_unreachable') return "search couldn't be reached";
  if (r === 'postgres') return "the order database couldn't be reached";
  if (status) return `search answered with an error (${status[1]})`;
  if (/rejected_execution|too_many_requests/.test(r)) return 'search was too busy';
  if (/cluster_block|read_only|disk/.test(r)) return 'search was not taking new orders (it may be short of disk space)';
  if (/index_not_found|index_closed/.test(r)) return "search's index was not available";
  if (/timeout|timed_out/.test(r)) return 'search took too long to answer';
  if (/pars|mapper|illegal_argument|max_bytes|too_long|strict_dynamic|document/.test(r)) {
    return 'search refused what the order contains';
  }
  return 'something went wrong on the way';
}

/** RFC 3339 (with up to microseconds) → microseconds since the epoch. */
function micros(at) {
  const match = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})$/i.exec(String(at || ''));
  if (!match) return NaN;
  const seconds = Date.parse(match[1] + match[3]);
  return seconds * 1000 + Number((match[2] || '').slice(0, 6).padEnd(6, '0'));
}

/**
 * A journey (sightline.js's getJourney) in words, without the page: the
 * total from committed to sent (or the last stage reached), and the parts a
 * person understands — saved (committed → the stage before indexed), indexed,
 * searchable, sent (through noticed) — as whole milliseconds that add up to
 * the total (each part is the difference of rounded offsets). `action`:
 * 'placed', 'cancelled' or 'changed' (what the person did to this version).
 *
 * Returns `{ state, lead, after, headline, totalMs, parts: [{ word, ms }],
 * soFar, reason, sameDatabase, stages: [{ stage, label, offsetMicros, at,
 * detail }] }` (headline: lead, total, after — "Confirmed 38 ms after you
 * placed it"; only the lead, "On its way", while in flight);
 * `state` is 'confirmed' (sent), 'searchable' (searchable, not sent yet),
 * 'on-its-way' or 'set-aside' (parked).
 */
export function describeJourney(journey, { action = 'placed' } = {}) {
  const raw = (journey && Array.isArray(journey.stages) ? journey.stages : []).filter(
    (s) => s && typeof s.stage === 'string' && Number.isFinite(micros(s.at)),
  );
  const start = raw.find((s) => s.stage === 'committed') || raw[0];
  const origin = start ? micros(start.at) : 0;
  const stages = raw.map((s) => ({
    stage: s.stage,
    label: STAGE_LABEL[s.stage] || s.stage.replace(/_/g, ' '),
    at: s.at,
    offsetMicros: micros(s.at) - origin,
    detail: stageDetail(s),
  }));
  const has = (name) => stages.some((s) => s.stage === name);
  const sentAt = stages.findIndex((s) => s.stage === 'sent');
  // The summary ends at sent (what the person saw); the list shows all.
  const counted = sentAt >= 0 ? stages.slice(0, sentAt + 1) : stages;
  const sameDatabase = has('searchable') && !stages.some((s) => [1, 2].includes(STAGE_PHASE[s.stage]));

  const parts = [];
  let reached = 0;
  let previousMs = 0;
  for (const s of counted.slice(1)) {
    const own = STAGE_PHASE[s.stage] ?? reached;
    // A stage stamped late (e.g. marked published once searchable) belongs
    // to the phase after the furthest one reached.
    const phase = own >= reached ? own : Math.min(4, reached + 1);
    reached = Math.max(reached, phase);
    const ms = Math.round(s.offsetMicros / 1000);
    const last = parts[parts.length - 1];
    if (last && last.phase === phase) {
      last.ms += ms - previousMs;
      last.end = s.stage;
    } else {
      parts.push({ phase, ms: ms - previousMs, end: s.stage });
    }
    previousMs = ms;
  }
  const totalMs = previousMs;
  const words = parts.map(({ phase, ms, end }) => ({ word: partWord(phase, end, sameDatabase), ms }));

  const parked = stages.find((s) => s.stage === 'parked');
  const retrying = raw.find((s) => s.stage === 'retrying');
  const state = parked ? 'set-aside' : has('sent') ? 'confirmed' : has('searchable') ? 'searchable' : 'on-its-way';
  const did = { placed: 'placed', cancelled: 'cancelled' }[action] || 'changed';
  const lead = { 'set-aside': 'Set aside', confirmed: 'Confirmed', searchable: 'Searchable' }[state] || 'On its way';
  const after = state === 'on-its-way' ? null : `after you ${did} it`;
  let reason = null;
  if (state === 'set-aside') {
    reason = `It was set aside: ${reasonInWords(raw.find((s) => s.stage === 'parked').reason)}.`;
  }
  if (retrying && state !== 'set-aside') {
    const why = reasonInWords(retrying.reason);
    reason = has('indexed')
      ? `At first ${why}, so it was tried again.`
      : `${why.charAt(0).toUpperCase()}${why.slice(1)} — trying again.`;
  }
  return {
    state,
    lead,
    after,
    headline: after ? `${lead} ${formatMs(totalMs)} ${after}` : lead,
    totalMs,
    parts: words,
    soFar: state === 'on-its-way',
    reason,
    sameDatabase,
    stages,
  };
}

function partWord(phase, end, sameDatabase) {
  if (phase === 1) return 'saved';
  if (phase === 2) return end === 'indexed' ? 'indexed' : 'indexing';
  if (phase === 3) return sameDatabase ? 'saved and searchable' : 'searchable';
  return end === 'sent' ? 'sent' : 'ready to send';
}

function stageDetail(s) {
  if (s.stage === 'sent') {
    const via = s.via === 'poll' ? 'a long poll' : s.via === 'stream' ? 'the live stream' : '';
    return [via && `over ${via}`, s.instance && `by ${s.instance}`].filter(Boolean).join(' ');
  }
  if (s.stage === 'retrying' || s.stage === 'parked') return reasonInWords(s.reason);
  return '';
}

const msFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const fineMsFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const secondsFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** Whole milliseconds as a person reads them: "38 ms", "12.3 s", "4 min". */
export function formatMs(ms) {
  if (ms < 10000) return `${msFormat.format(ms)} ms`;
  if (ms < 120000) return `${secondsFormat.format(ms / 1000)} s`;
  return `${msFormat.format(Math.round(ms / 60000))} min`;
}

/** An offset from committed, finer for the detailed list: "+3.4 ms". */
function formatOffset(offsetMicros) {
  const ms = offsetMicros / 1000;
  if (offsetMicros === 0) return '0 ms';
  return `+${ms < 100 ? `${fineMsFormat.format(ms)} ms` : formatMs(Math.round(ms))}`;
}

/** The summary as one line of text (what the page shows, without markup). */
export function journeyText(described) {
  const parts = described.parts.map((p) => partText(p, described)).join(' · ');
  return parts ? `${described.headline}: ${parts}${described.soFar ? ' so far' : ''}` : described.headline;
}

function partText(part, described) {
  if (described.sameDatabase && part.word === 'saved and searchable' && part.ms === 0) return `${part.word} at once`;
  return `${part.word} ${formatMs(part.ms)}`;
}

/** The row's state becomes the button that opens its journey (the script's rows and the server's). */
function enhanceState(row) {
  const badge = row.querySelector('td.state [data-slot="label"]');
  if (!badge || badge.closest('button.journey-toggle') || row.dataset.state === 'rejected') return;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'journey-toggle';
  button.setAttribute('aria-expanded', 'false');
  const hint = document.createElement('span');
  hint.className = 'visually-hidden';
  hint.dataset.slot = 'journey-hint';
  const chevron = document.createElement('span');
  chevron.className = 'chevron';
  chevron.setAttribute('aria-hidden', 'true');
  badge.replaceWith(button);
  button.append(badge, hint, chevron);
  nameToggle(row);
}

function nameToggle(row) {
  const hint = row.querySelector('[data-slot="journey-hint"]');
  if (hint) hint.textContent = ` — how order ${(row.dataset.orderId || '').slice(0, 8)} got here`;
}

/** Back to the plain badge (an order never placed has no journey). */
function plainState(row) {
  const button = row.querySelector('button.journey-toggle');
  if (!button) return;
  button.replaceWith(button.querySelector('[data-slot="label"]'));
}

function journeyRow(row) {
  const next = row.nextElementSibling;
  return next && next.matches('tr.journey-row') && next.dataset.journeyFor === row.dataset.orderId ? next : null;
}

function toggleJourney(row) {
  if (journeyRow(row)) closeJourney(row);
  else openJourney(row);
}

function openJourney(row) {
  const id = row.dataset.orderId;
  const button = row.querySelector('button.journey-toggle');
  if (!id || !button) return;
  nameToggle(row);
  const panelId = `journey-${id}`;
  const detail = document.createElement('tr');
  detail.className = 'journey-row';
  detail.dataset.journeyFor = id;
  const cell = document.createElement('td');
  cell.colSpan = row.cells.length || 6;
  const panel = document.createElement('div');
  panel.className = 'journey';
  panel.id = panelId;
  const summary = document.createElement('p');
  summary.className = 'journey-summary';
  // Read out once it is loaded (and when it changes while open).
  summary.setAttribute('aria-live', 'polite');
  summary.textContent = 'Loading how it got here…';
  panel.append(summary);
  cell.append(panel);
  detail.append(cell);
  row.after(detail);
  row.classList.add('journey-open');
  button.setAttribute('aria-expanded', 'true');
  button.setAttribute('aria-controls', panelId);
  loadJourney(row);
}

function closeJourney(row) {
  const detail = journeyRow(row);
  const entry = journeys.get(row.dataset.orderId);
  if (entry) {
    entry.controller.abort();
    clearTimeout(entry.timer);
    journeys.delete(row.dataset.orderId);
  }
  if (!detail) return;
  detail.remove();
  row.classList.remove('journey-open');
  const button = row.querySelector('button.journey-toggle');
  if (button) {
    button.setAttribute('aria-expanded', 'false');
    button.removeAttribute('aria-controls');
  }
}

/** id → { controller, timer } of a journey being fetched. */
const journeys = new Map();
/** `sent` is written in batches, a moment after the notice went out: ask again a few times. */
const SENT_RETRIES = 5;
const SENT_RETRY_MS = 250;

async function loadJourney(row, attempt = 0) {
  const id = row.dataset.orderId;
  const previous = journeys.get(id);
  if (previous) {
    previous.controller.abort();
    clearTimeout(previous.timer);
  }
  const entry = { controller: new AbortController(), timer: 0 };
  journeys.set(id, entry);
  const version = Number(row.dataset.version) || undefined;
  const action = version === 1 || !version ? 'placed' : row.dataset.status === 'cancelled' ? 'cancelled' : 'changed';
  let journey;
  try {
    journey = await getJourney(id, { version, signal: entry.controller.signal });
  } catch (error) {
    if (entry.controller.signal.aborted || journeys.get(id) !== entry) return;
    journeys.delete(id);
    if (error instanceof SightlineError && error.status === 401) goOffline();
    const why =
      error instanceof SightlineError && error.status === 404
        ? 'Its journey is not available (journeys are kept only for a while).'
        : `Couldn't load how it got here: ${(error && error.error) || 'please try again'}.`;
    showJourney(row, null, why);
    return;
  }
  if (journeys.get(id) !== entry) return;
  const described = describeJourney(journey, { action });
  showJourney(row, described);
  // The page was told it is visible, so `sent` is coming: ask again shortly.
  const waitingForSent = row.dataset.state === 'visible' && (described.state === 'searchable' || described.state === 'on-its-way');
  if (waitingForSent && attempt < SENT_RETRIES) {
    entry.timer = setTimeout(() => {
      if (journeys.get(id) === entry && journeyRow(row)) loadJourney(row, attempt + 1);
    }, SENT_RETRY_MS);
  } else {
    journeys.delete(id);
  }
}

function showJourney(row, described, failure) {
  const detail = journeyRow(row);
  if (!detail) return;
  const panel = detail.querySelector('.journey');
  const summary = panel.querySelector('.journey-summary');
  for (const extra of panel.querySelectorAll(':scope > :not(.journey-summary)')) extra.remove();
  if (!described) {
    panel.dataset.journeyState = 'unavailable';
    summary.textContent = failure;
    return;
  }
  panel.dataset.journeyState = described.state;
  const head = document.createElement('strong');
  head.className = 'journey-headline';
  if (described.after) {
    const total = document.createElement('data');
    total.className = 'journey-total';
    total.value = String(described.totalMs);
    total.textContent = formatMs(described.totalMs);
    head.append(`${described.lead} `, total, ` ${described.after}`);
  } else {
    head.textContent = described.lead;
  }
  const nodes = [head];
  described.parts.forEach((part, i) => {
    nodes.push(i === 0 ? ': ' : ' · ');
    const span = document.createElement('span');
    span.className = 'journey-part';
    span.dataset.word = part.word;
    const amount = document.createElement('data');
    amount.value = String(part.ms);
    amount.textContent = partText(part, described).slice(part.word.length + 1);
    span.append(`${part.word} `, amount);
    nodes.push(span);
  });
  if (described.soFar && described.parts.length) nodes.push(' so far');
  summary.replaceChildren(...nodes);
  if (described.reason) {
    const reason = document.createElement('p');
    reason.className = 'journey-reason';
    reason.textContent = described.reason;
    panel.append(reason);
  }
  const list = document.createElement('ol');
  list.className = 'journey-stages';
  list.setAttribute('aria-label', 'Every stage, after it was saved');
  for (const s of described.stages) {
    const li = document.createElement('li');
    li.dataset.stage = s.stage;
    const name = document.createElement('span');
    name.className = 'stage-name';
    const code = document.createElement('code');
    code.textContent = s.stage;
    name.append(s.detail ? `${s.label} — ${s.detail} ` : `${s.label} `, code);
    const offset = document.createElement('span');
    offset.className = 'stage-offset';
    offset.textContent = formatOffset(s.offsetMicros);
    offset.title = s.at;
    li.append(name, ' ', offset);
    list.append(li);
  }
  panel.append(list);
}

// ---------------------------------------------------------------------------
// Cancel, with a few seconds to undo

function onRowSubmit(event) {
  const cancel = event.target.closest('.cancel-form');
  if (!cancel) return;
  event.preventDefault();
  const row = cancel.closest('tr[data-order-id]');
  if (row) startCancel(row);
}

function onRowClick(event) {
  const toggle = event.target.closest('button.journey-toggle');
  if (toggle) {
    const row = toggle.closest('tr[data-order-id]');
    if (row) toggleJourney(row);
    return;
  }
  const undo = event.target.closest('button.undo');
  if (!undo) return;
  const row = undo.closest('tr[data-order-id]');
  if (row) undoCancel(row);
}

function startCancel(row) {
  const id = row.dataset.orderId;
  if (undoable.has(id)) return;
  const undo = document.createElement('button');
  undo.type = 'button';
  undo.className = 'quiet undo';
  undo.textContent = 'Undo';
  undo.setAttribute('aria-label', `Undo cancelling order ${id.slice(0, 8)}`);
  row.querySelector('.row-actions').append(undo);
  undoable.set(id, { timer: setTimeout(() => sendCancel(row), UNDO_MS), row });
  setStatus(row, row.dataset.status);
  undo.focus();
  announce(`Order ${describeRow(row)} will be cancelled in ${UNDO_MS / 1000} seconds. Press Undo to keep it.`);
}

function undoCancel(row) {
  const id = row.dataset.orderId;
  const pending = undoable.get(id);
  if (!pending) return;
  clearTimeout(pending.timer);
  undoable.delete(id);
  row.querySelector('button.undo')?.remove();
  setStatus(row, row.dataset.status);
  row.querySelector('.cancel-form button')?.focus();
  announce(`Order ${describeRow(row)} kept`);
}

async function sendCancel(row, { keepalive = false } = {}) {
  const id = row.dataset.orderId;
  if (!undoable.delete(id)) return;
  row.querySelector('button.undo')?.remove();
  try {
    const order = await cancelOrder(id, { keepalive });
    if (Number.isInteger(order.version)) row.dataset.version = String(order.version);
    setStatus(row, order.status || 'cancelled');
    if (order.consistency_token) rememberToken(order.consistency_token);
    if (order.visible) {
      markVisible(id, { quiet: true });
    } else {
      // Cancelled now; search shows it once the cancel's version is there.
      setRowState(row, 'pending');
      unwatch(id);
      watch(id, row, serverNow());
      follow(id, watched.get(id), order.version);
    }
    announce(`Order ${describeRow(row)} cancelled`);
    refreshSummary();
  } catch (error) {
    setStatus(row, row.dataset.status);
    if (error instanceof SightlineError && error.status === 401) goOffline();
    alertUser(`Couldn't cancel order ${describeRow(row)}: ${(error && error.error) || 'please try again'}`);
  }
}

/** Leaving the page ends the undo window: the cancels still go out. */
function flushCancels() {
  for (const { timer, row } of [...undoable.values()]) {
    clearTimeout(timer);
    sendCancel(row, { keepalive: true });
  }
}

// ---------------------------------------------------------------------------
// The form: item lines, placing an order, the server's messages

function lines() {
  return [...form.querySelectorAll('.item-line')];
}

function onFormClick(event) {
  const button = event.target.closest('button');
  if (!button) return;
  if (button.id === 'add-item') {
    event.preventDefault();
    addLine();
  } else if (button.classList.contains('remove-item')) {
    event.preventDefault();
    removeLine(button.closest('.item-line'));
  }
}

function addLine() {
  const all = lines();
  if (all.length >= (Number(form.dataset.maxItems) || 100)) return;
  const line = all[0].cloneNode(true);
  for (const input of line.querySelectorAll('input')) {
    input.value = input.name === 'quantity' ? '1' : '';
  }
  all[all.length - 1].after(line);
  renumberLines();
  line.querySelector('input[name="sku"]').focus();
  announce(`Item ${lines().length} added`);
}

function removeLine(line) {
  if (!line || lines().length < 2) return;
  line.remove();
  renumberLines();
  lines()[0].querySelector('input[name="sku"]').focus();
  announce('Item removed');
}

/** Ids and labels follow positions: line 1 keeps `sku`, later lines `sku-2`, … */
function renumberLines() {
  const all = lines();
  all.forEach((line, i) => {
    line.dataset.line = String(i);
    for (const field of line.querySelectorAll('.field')) {
      const input = field.querySelector('input');
      const label = field.querySelector('label');
      const error = field.querySelector('.field-error');
      const id = i === 0 ? input.name : `${input.name}-${i + 1}`;
      input.id = id;
      label.htmlFor = id;
      error.id = `${id}-error`;
      clearFieldError(input);
    }
    const skuLabel = line.querySelector('.sku-field label');
    skuLabel.replaceChildren('SKU');
    if (all.length > 1) {
      const which = document.createElement('span');
      which.className = 'unit';
      which.textContent = `(item ${i + 1})`;
      skuLabel.append(' ', which);
    }
    let remove = line.querySelector('.remove-item');
    if (all.length > 1 && !remove) {
      remove = document.createElement('button');
      remove.type = 'submit';
      remove.name = 'remove_item';
      remove.formNoValidate = true;
      remove.className = 'quiet remove-item';
      remove.textContent = 'Remove';
      line.querySelector('.line-actions').append(remove);
    } else if (all.length < 2 && remove) {
      remove.remove();
      remove = null;
    }
    if (remove) {
      remove.value = String(i);
      remove.setAttribute('aria-label', `Remove item ${i + 1}`);
    }
  });
}

/** Price as typed ("12.5", "$1,234.50") → cents; null if it is not an amount. */
function parseAmount(text) {
  const cleaned = String(text).trim().replace(/^[$€£¥₹]/, '').replace(/[,\s]/g, '');
  const match = /^(\d{0,12})(?:\.(\d{0,2}))?$/.exec(cleaned);
  if (!match || (match[1] === '' && !match[2])) return null;
  return Number(match[1] || '0') * 100 + Number((match[2] || '').padEnd(2, '0'));
}

function onSubmit(event) {
  const submitter = event.submitter;
  // "Add"/"Remove" are handled by the click; anything else is "Place order".
  if (submitter && submitter.name && submitter.name !== '') return;
  event.preventDefault();
  clearAllErrors();
  const items = [];
  for (const line of lines()) {
    const sku = line.querySelector('input[name="sku"]').value.trim();
    const quantityText = line.querySelector('input[name="quantity"]').value.trim();
    const priceText = line.querySelector('input[name="unit_price"]').value;
    const quantity = /^-?\d+$/.test(quantityText) ? Number(quantityText) : null;
    const cents = parseAmount(priceText);
    if (quantity === null || cents === null) {
      // What this script cannot even read, the server reads and explains,
      // with every other rule, in the form's own round trip.
      form.submit();
      return;
    }
    items.push({ sku, quantity, unit_price_cents: cents });
  }
  const note = form.elements.note.value.trim();
  const hiddenId = form.elements.namedItem('id');
  const order = { id: hiddenId && hiddenId.value ? hiddenId.value : newOrderId(), items, note: note === '' ? null : note };
  send(order);
}

async function send(order) {
  const button = document.getElementById('place-order');
  button.disabled = true;
  button.textContent = 'Placing…';
  let body;
  try {
    // The id makes placeOrder's retries safe: the server answers 200 if it already has it.
    body = await placeOrder(order);
  } catch (error) {
    button.disabled = false;
    button.textContent = 'Place order';
    if (error instanceof SightlineError && error.status === 422) {
      showErrors(error.errors || [{ field: error.field || '', message: error.error }]);
      return;
    }
    if (error instanceof SightlineError && error.status === 401) goOffline();
    // Not placed for another reason (signed out, too many, unreachable):
    // a row says so, and the form keeps what was typed for another try.
    const row = makeRow({ ...order, placed_at: new Date(serverNow()).toISOString(), currency: CURRENCY });
    placeRow(row);
    row.dataset.state = 'rejected';
    setStatus(row, 'placed'); // hides Cancel: there is nothing to cancel
    setRowState(row, 'rejected', (error && error.error) || 'the server could not be reached');
    alertUser(`Order ${describeRow(row)} was not placed: ${(error && error.error) || 'the server could not be reached'}`);
    return;
  }
  button.disabled = false;
  button.textContent = 'Place order';
  resetForm();
  accepted(body || order);
}

function accepted(order) {
  let row = findRow(order.id);
  if (!row) {
    row = makeRow(order);
    placeRow(row);
  }
  if (order.consistency_token) rememberToken(order.consistency_token);
  flash(row);
  row.scrollIntoView({ block: 'nearest' });
  if (order.visible === true) {
    setRowState(row, 'pending');
    markVisible(order.id);
    return;
  }
  if (row.dataset.state === 'visible') return; // the stream was faster
  setRowState(row, 'pending');
  announce(`Order ${describeRow(row)} placed — saving`);
  watch(order.id, row, Number(row.dataset.placedAt) || serverNow());
  // whenVisible asks once before it listens: a notice that came before this
  // answer is not missed.
  follow(order.id, watched.get(order.id));
}

function resetForm() {
  const all = lines();
  for (const line of all.slice(1)) line.remove();
  renumberLines();
  form.elements.sku.value = '';
  form.elements.quantity.value = '1';
  form.elements.unit_price.value = '';
  form.elements.note.value = '';
  const hiddenId = form.elements.namedItem('id');
  if (hiddenId) hiddenId.value = newOrderId();
  document.getElementById('form-error')?.remove();
  form.elements.sku.focus();
}

/** `items[1].quantity` → the quantity input of line 2; `note` → the note. */
function inputFor(field) {
  if (field === 'note') return form.elements.note;
  const match = /^items\[(\d+)\]\.(sku|quantity|unit_price_cents)$/.exec(field || '');
  if (!match) return null;
  const line = lines()[Number(match[1])];
  const name = match[2] === 'unit_price_cents' ? 'unit_price' : match[2];
  return line ? line.querySelector(`input[name="${name}"]`) : null;
}

function showErrors(errors) {
  const unplaced = [];
  let first = null;
  for (const { field, message } of errors) {
    const input = inputFor(field);
    if (!input || input.getAttribute('aria-invalid') === 'true') {
      if (!input) unplaced.push(message);
      continue;
    }
    const error = document.getElementById(`${input.id}-error`);
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', error.id);
    error.textContent = message;
    error.hidden = false;
    first = first || input;
  }
  const count = errors.length;
  const summary = `The order was not placed: ${count === 1 ? 'one thing needs' : `${count} things need`} fixing, marked below.`;
  setFormError([summary, ...unplaced].join(' '));
  if (first) first.focus();
}

function setFormError(message) {
  let box = document.getElementById('form-error');
  if (!box) {
    box = document.createElement('p');
    box.id = 'form-error';
    box.className = 'error';
    box.setAttribute('role', 'alert');
    form.before(box);
  }
  box.textContent = message;
}

function clearFieldError(input) {
  if (!(input instanceof HTMLInputElement) || input.getAttribute('aria-invalid') !== 'true') return;
  input.removeAttribute('aria-invalid');
  input.removeAttribute('aria-describedby');
  const error = document.getElementById(`${input.id}-error`);
  if (error) {
    error.textContent = '';
    error.hidden = true;
  }
}

function clearAllErrors() {
  for (const input of form.querySelectorAll('input[aria-invalid="true"]')) clearFieldError(input);
  document.getElementById('items-error')?.remove();
  document.getElementById('form-error')?.remove();
}

/** Lets a reload show this order even before search can (read-your-writes). */
function rememberToken(token) {
  try {
    const url = new URL(window.location.href);
    url.searchParams.set('consistency_token', token);
    window.history.replaceState(window.history.state, '', url);
  } catch {
    // Not important enough to fail over.
  }
}

// ---------------------------------------------------------------------------
// Counters

const refreshSummary = debounce(async () => {
  let summary;
  try {
    summary = await getSummary();
  } catch {
    return; // the counters keep their last values; search may be catching up
  }
  setText('summary-placed', String(summary.orders_placed ?? 0));
  setText('summary-cancelled', String(summary.orders_cancelled ?? 0));
  const spent = document.getElementById('summary-spent');
  if (spent) {
    const entries = Object.entries(summary.spent_cents || {});
    if (entries.length === 0) entries.push([CURRENCY, 0]);
    spent.replaceChildren();
    entries.forEach(([currency, cents], i) => {
      if (i > 0) spent.append(', ');
      const amount = document.createElement('data');
      amount.value = String(cents);
      amount.dataset.currency = currency;
      spent.append(amount);
    });
    localise(spent);
  }
  const last = document.getElementById('summary-last');
  if (last && summary.last_order_at) {
    const time = document.createElement('time');
    time.dateTime = summary.last_order_at;
    last.replaceChildren(time);
    localise(last);
  }
}, 150);

function setText(id, text) {
  const element = document.getElementById(id);
  if (element) element.textContent = text;
}

// ---------------------------------------------------------------------------
// Search as you type; search down and back

function currentQuery() {
  return searchInput ? searchInput.value.trim() : '';
}

function onNewestPage() {
  return !table.dataset.paged;
}

/** The prefix rule search uses: every word of the query begins a word of the SKUs or note. */
function matchesSearch(order) {
  const words = (text) => String(text || '').toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean);
  const wanted = words(currentQuery());
  if (wanted.length === 0) return true;
  const have = [...(order.items || []).flatMap((i) => words(i.sku)), ...words(order.note)];
  return wanted.every((w) => have.some((h) => h.startsWith(w)));
}

let searchController = null;

async function runSearch() {
  const q = currentQuery();
  if (searchController) searchController.abort();
  const controller = new AbortController();
  searchController = controller;
  let list;
  try {
    list = await listOrders({ q: q || undefined, signal: controller.signal });
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof SightlineError && error.status === 503) enterSearchDown();
    else if (error instanceof SightlineError && error.status === 401) goOffline();
    else if (error instanceof SightlineError) alertUser(`Search failed: ${error.error}`);
    return;
  }
  leaveSearchDown();
  showList(list);
  const url = new URL(window.location.href);
  if (q) url.searchParams.set('q', q);
  else url.searchParams.delete('q');
  url.searchParams.delete('cursor');
  window.history.replaceState(window.history.state, '', url);
  delete table.dataset.paged;
  announce(
    list.orders.length === 0
      ? 'No orders match'
      : `${list.orders.length}${list.next_cursor ? '+' : ''} order${list.orders.length === 1 ? '' : 's'} found`,
  );
}

/** A row for an order of a list answer, in its state, watched until visible. */
function addListedRow(order, put) {
  const row = makeRow(order);
  put(row);
  if (order.visible) {
    setRowState(row, 'visible');
  } else {
    setRowState(row, rowStateFor(order));
    watch(order.id, row, Number(row.dataset.placedAt));
    follow(order.id, watched.get(order.id));
  }
  return row;
}

function showList(list) {
  for (const id of [...watched.keys()]) unwatch(id);
  tbody.replaceChildren();
  for (const order of list.orders) addListedRow(order, (row) => tbody.append(row));
  const empty = document.getElementById('empty');
  if (empty) {
    const q = currentQuery();
    empty.textContent = q ? `No orders match “${q}”.` : 'No orders yet — place one above.';
    empty.hidden = list.orders.length > 0;
  }
  const pager = document.querySelector('.pager');
  if (pager) {
    pager.replaceChildren();
    if (list.next_cursor) {
      const older = document.createElement('a');
      const params = new URLSearchParams();
      if (currentQuery()) params.set('q', currentQuery());
      params.set('cursor', list.next_cursor);
      older.href = `/orders?${params}`;
      older.rel = 'next';
      older.id = 'older';
      older.textContent = 'Older →';
      pager.append(older);
    }
  }
  document.getElementById('list-error')?.remove();
}

function enterSearchDown() {
  if (banner) banner.hidden = false;
  if (!searchDown) {
    searchDown = true;
    showConnection();
  }
  clearTimeout(searchProbe);
  searchProbe = setTimeout(probeSearch, SEARCH_PROBE_MS);
}

function leaveSearchDown() {
  clearTimeout(searchProbe);
  if (!searchDown) return;
  searchDown = false;
  if (banner) banner.hidden = true;
  table.dataset.readSource = 'read-model';
  showConnection();
  announce('Search is back — your orders are up to date');
}

/** Is search reachable? Back: reload the list from it; down: say so, ask again later. */
async function probeSearch() {
  try {
    await listOrders({ limit: 1 });
  } catch (error) {
    // 503: search is down. Anything else while down (the network, say):
    // keep asking; the banner stays until search answers.
    if (searchDown || (error instanceof SightlineError && error.status === 503)) enterSearchDown();
    return;
  }
  if (!searchDown) return;
  leaveSearchDown();
  await runSearchQuietly();
  refreshSummary();
}

async function runSearchQuietly() {
  try {
    showList(await listOrders({ q: currentQuery() || undefined }));
  } catch {
    enterSearchDown();
  }
}

// ---------------------------------------------------------------------------
// Connection and announcements

function showConnection() {
  if (!connection) return;
  const state = offline ? 'offline' : searchDown && streamState !== 'offline' ? 'search-down' : streamState;
  connection.hidden = false;
  connection.dataset.state = state;
  const label = connection.querySelector('.connection-label');
  if (label) label.textContent = CONNECTION_LABEL[state] || state;
}

function goOffline() {
  offline = true;
  showConnection();
}

/** Polite: what happened to an order. */
function announce(message) {
  speak(announcer, message);
}

/** Assertive: what went wrong and needs the person. */
function alertUser(message) {
  speak(alerter, message);
}

function speak(region, message) {
  if (!region) return;
  region.textContent = '';
  // A fresh text node in a later task is announced even if the text repeats.
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function cssEscape(value) {
  return window.CSS && typeof window.CSS.escape === 'function'
    ? window.CSS.escape(value)
    : String(value).replace(/["\\]/g, '\\$&');
}
