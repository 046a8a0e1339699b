// Sightline — progressive enhancement for /orders. Plain ES module, no build step.
//
// Without this script the page still works: the form posts to /orders and the
// server redirects back with a consistency token. With it:
//   - a submitted order appears at once as a `pending` row (optimistic), and is
//     POSTed as JSON to /api/orders with a client-generated id (retries are safe);
//   - ONE EventSource per browser (shared by its tabs, see sightline.js) flips
//     rows to `visible` on `order-visible`;
//   - without EventSource (or with ?transport=poll, or when the stream keeps
//     failing) each pending row is long-polled on /api/orders/{id}/visibility;
//   - rows still pending after the lag SLO turn `delayed` (and stay watched).
//
// The talking to the server is sightline.js's (placeOrder, whenVisible,
// subscribe); this file is the page: rows, states, announcements.

import { SightlineError, configure, newOrderId, placeOrder, subscribe, whenVisible } from './sightline.js';

const form = document.getElementById('order-form');
const tbody = document.querySelector('#orders tbody');
const connection = document.getElementById('connection');
const announcer = document.getElementById('announcements');

const LAG_SLO_MS = Number(document.body.dataset.lagSloMs) || 5000;
// Server clock minus ours, so "older than the SLO" uses the server's placed_at fairly.
const CLOCK_OFFSET_MS = (() => {
  const serverNow = Number(document.body.dataset.serverNowMs);
  return Number.isFinite(serverNow) && serverNow > 0 ? serverNow - Date.now() : 0;
})();
const serverNow = () => Date.now() + CLOCK_OFFSET_MS;

const LABEL = {
  sending: 'pending — sending…',
  pending: 'pending — on its way to search',
  delayed: 'delayed — still on its way',
  visible: 'visible',
};
const CONNECTION_LABEL = {
  connecting: 'Connecting to live updates…',
  live: 'Live — orders update the moment search can find them',
  reconnecting: 'Connection lost — reconnecting…',
  polling: 'Live updates by polling',
  offline: 'Signed out — reload the page to sign in again',
};

/** id → { row, placedAt (server ms), accepted (server has it), timer, follow (AbortController) } */
const watched = new Map();

let offline = false;

if (form && tbody) {
  init();
}

function init() {
  localiseTimes(document);
  for (const row of tbody.querySelectorAll('tr[data-order-id]')) {
    const state = row.dataset.state;
    if (state === 'pending' || state === 'delayed') {
      const placedAt = Number(row.dataset.placedAt) || serverNow();
      watch(row.dataset.orderId, row, placedAt, true);
    }
  }
  form.addEventListener('submit', onSubmit);

  const params = new URLSearchParams(window.location.search);
  configure({
    transport: params.get('transport') === 'poll' ? 'poll' : 'auto',
    // Tabs share a stream only when they are signed in as the same user.
    scope: document.querySelector('.who strong')?.textContent || '',
  });
  subscribe(onNotice, { onStatus: setConnection });
  // Rows already on the page, newest first (when polling, they get the slots).
  for (const [id, entry] of watched) follow(id, entry);
}

function onNotice(notice) {
  if (notice.kind === 'order-visible') {
    if (typeof notice.status === 'string') setStatus(notice.id, notice.status);
    markVisible(notice.id);
  } else if (notice.kind === 'order-failed') {
    // The order committed but cannot be made searchable (its event was
    // dead-lettered): say so rather than wait forever.
    markFailed(notice.id, notice.error);
  }
}

// ---------------------------------------------------------------------------
// Rows

function findRow(id) {
  return tbody.querySelector(`tr[data-order-id="${cssEscape(id)}"]`);
}

function setRowState(row, state, label) {
  row.dataset.state = state;
  const badge = row.querySelector('.state .badge');
  if (badge) badge.textContent = label;
}

function describeRow(row) {
  const items = row.querySelector('.items');
  const id = row.dataset.orderId || '';
  const what = items ? items.textContent.trim() : '';
  return what ? `${what} (${id.slice(0, 8)})` : id.slice(0, 8);
}

function buildRow(id, order) {
  const row = document.createElement('tr');
  row.dataset.orderId = id;
  row.dataset.state = 'pending';
  row.dataset.placedAt = String(serverNow());
  row.className = 'fresh';
  const cell = (cls, text) => {
    const td = document.createElement('td');
    td.className = cls;
    td.textContent = text;
    row.appendChild(td);
    return td;
  };
  cell('items', itemsText(order.items));
  cell('num total', formatMoney(totalOf(order.items)));
  cell('note', order.note || '');
  const placed = cell('placed', '');
  const time = document.createElement('time');
  time.dateTime = new Date(serverNow()).toISOString();
  time.textContent = new Date().toLocaleString();
  placed.appendChild(time);
  const status = cell('status', 'placed');
  status.dataset.status = 'placed';
  const state = cell('state', '');
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.textContent = LABEL.sending;
  state.appendChild(badge);
  cell('actions', '');
  return row;
}

function fillRow(row, order) {
  if (Array.isArray(order.items)) row.querySelector('.items').textContent = itemsText(order.items);
  if (Number.isFinite(order.total_cents)) {
    row.querySelector('.total').textContent = formatMoney(order.total_cents);
  }
  if ('note' in order) row.querySelector('.note').textContent = order.note || '';
  const placedAt = Date.parse(order.placed_at);
  if (Number.isFinite(placedAt)) {
    row.dataset.placedAt = String(placedAt);
    const time = row.querySelector('.placed time');
    if (time) {
      time.dateTime = order.placed_at;
      time.textContent = new Date(placedAt).toLocaleString();
    }
  }
}

function itemsText(items) {
  return items.map((i) => `${i.sku} × ${i.quantity}`).join(', ');
}

function totalOf(items) {
  return items.reduce((sum, i) => sum + i.quantity * i.unit_price_cents, 0);
}

function formatMoney(cents) {
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(Math.trunc(cents));
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, '0')}`;
}

function localiseTimes(root) {
  for (const time of root.querySelectorAll('#orders time[datetime]')) {
    const at = Date.parse(time.dateTime);
    if (Number.isFinite(at)) {
      time.title = time.textContent;
      time.textContent = new Date(at).toLocaleString();
    }
  }
}

// ---------------------------------------------------------------------------
// Watching rows until search can see them

function watch(id, row, placedAt, accepted) {
  let entry = watched.get(id);
  if (!entry) {
    entry = { row, placedAt, accepted, timer: 0, follow: null };
    watched.set(id, entry);
  } else {
    entry.row = row;
    entry.placedAt = placedAt;
    entry.accepted = entry.accepted || accepted;
  }
  clearTimeout(entry.timer);
  const due = Math.max(0, placedAt + LAG_SLO_MS - serverNow());
  entry.timer = setTimeout(() => {
    if (watched.get(id) === entry && entry.row.dataset.state === 'pending') {
      setRowState(entry.row, 'delayed', LABEL.delayed);
    }
  }, due);
}

/** Waits (stream, or long polls) until the server says the order is visible. */
function follow(id, entry) {
  if (!entry.accepted || entry.follow || offline) return;
  const controller = new AbortController();
  entry.follow = controller;
  whenVisible(id, { signal: controller.signal }).then(
    () => markVisible(id),
    (error) => {
      if (controller.signal.aborted || !(error instanceof SightlineError)) return;
      if (entry.follow === controller) entry.follow = null;
      if (error.code === 'order_failed') markFailed(id, error.orderError);
      else if (error.status === 401) goOffline();
      // 404: not an order of ours the server knows; stop asking about it.
      else if (error.status === 404) entry.accepted = false;
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

function markVisible(id) {
  const entry = watched.get(id);
  const row = entry ? entry.row : findRow(id);
  unwatch(id);
  if (!row || row.dataset.state === 'visible') return;
  setRowState(row, 'visible', LABEL.visible);
  row.classList.remove('fresh');
  void row.offsetWidth; // restart the highlight
  row.classList.add('fresh');
  announce(`Order ${describeRow(row)} is now visible`);
}

function setStatus(id, status) {
  const row = findRow(id);
  const cell = row && row.querySelector('.status');
  if (!cell) return;
  cell.dataset.status = status;
  cell.textContent = status;
  if (status !== 'placed') {
    const actions = row.querySelector('.actions');
    if (actions) actions.textContent = '';
  }
}

function markFailed(id, error) {
  const entry = watched.get(id);
  const row = entry ? entry.row : findRow(id);
  unwatch(id);
  if (!row || row.dataset.state === 'visible') return;
  setRowState(row, 'failed', `failed: ${error || 'could not be made searchable'}`);
  announce(`Order ${describeRow(row)} could not be made searchable`);
}

function announce(message) {
  if (!announcer) return;
  announcer.textContent = '';
  // A fresh text node in a later task is announced even if the text repeats.
  setTimeout(() => {
    announcer.textContent = message;
  }, 50);
}

// ---------------------------------------------------------------------------
// Placing an order

function onSubmit(event) {
  event.preventDefault();
  const data = new FormData(form);
  const note = String(data.get('note') || '').trim();
  const order = {
    id: newOrderId(),
    items: [
      {
        sku: String(data.get('sku') || '').trim(),
        quantity: Number(data.get('quantity')),
        unit_price_cents: Number(data.get('unit_price_cents')),
      },
    ],
    note: note === '' ? null : note,
  };

  // The optimistic row goes in first, before anything leaves the browser.
  const row = buildRow(order.id, order);
  tbody.prepend(row);
  document.getElementById('empty')?.remove();
  document.getElementById('form-error')?.remove();
  watch(order.id, row, serverNow(), false);

  // Ready for the next order.
  form.elements.sku.value = '';
  form.elements.note.value = '';
  form.elements.quantity.value = '1';
  form.elements.unit_price_cents.value = '';
  const hiddenId = form.elements.namedItem('id');
  if (hiddenId) hiddenId.value = newOrderId();
  form.elements.sku.focus();

  send(order, row);
}

/** Puts a rejected order back into the form, unless the user started another. */
function restoreForm(order) {
  const f = form.elements;
  const untouched =
    f.sku.value === '' && f.note.value === '' && f.quantity.value === '1' && f.unit_price_cents.value === '';
  if (!untouched) return;
  const [item] = order.items;
  f.sku.value = item.sku;
  f.quantity.value = String(item.quantity);
  f.unit_price_cents.value = String(item.unit_price_cents);
  f.note.value = order.note || '';
}

async function send(order, row) {
  let body;
  try {
    // The id makes placeOrder's retries safe: the server answers 200 if it already has it.
    body = await placeOrder(order);
  } catch (error) {
    if (error && error.status === 401) goOffline();
    restoreForm(order);
    return reject(order.id, row, (error && error.error) || 'the server could not be reached');
  }
  accepted(order.id, row, body || {});
}

function accepted(id, row, body) {
  row.dataset.accepted = 'true';
  fillRow(row, body);
  if (body.consistency_token) rememberToken(body.consistency_token);
  if (body.visible === true) return markVisible(id);
  const entry = watched.get(id);
  if (!entry || row.dataset.state === 'visible') return; // the stream was faster
  if (row.dataset.state === 'pending') setRowState(row, 'pending', LABEL.pending);
  const placedAt = Number(row.dataset.placedAt) || entry.placedAt;
  watch(id, row, placedAt, true);
  // whenVisible asks once before it listens: a notice that came before this
  // answer is not missed.
  follow(id, entry);
}

function reject(id, row, message) {
  unwatch(id);
  row.classList.remove('fresh');
  setRowState(row, 'rejected', `rejected: ${message}`);
  announce(`Order ${describeRow(row)} was rejected: ${message}`);
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
// Connection: what sightline.js says about the shared stream

function setConnection(state) {
  if (!connection) return;
  if (offline && state !== 'live') return;
  offline = state === 'offline';
  connection.hidden = false;
  connection.dataset.state = state;
  const label = connection.querySelector('.connection-label');
  if (label) label.textContent = CONNECTION_LABEL[state] || state;
}

function goOffline() {
  setConnection('offline');
}

function cssEscape(value) {
  return window.CSS && typeof window.CSS.escape === 'function'
    ? window.CSS.escape(value)
    : String(value).replace(/["\\]/g, '\\$&');
}
