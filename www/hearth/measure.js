// @ts-check
// Private measurement (hearth-core's measure module: DAP-09 with Prio3SumVec). The device counts
// the ads it showed and what the visitor did with them, per campaign and per slot, in one tally
// per period, and reports it once, after the period: a Prio3 measurement split into two shares,
// one sealed to the leader and one to the helper, so that neither server alone learns anything
// of it and only noised sums of at least K reports are ever released. The device bounds its own
// report (at most M per cell, at most max_cells cells), which is what the task's ε rests on.
//
// When: a period's report leaves at a random moment of the next period (its send window), drawn
// when the period's tally is started, so the upload is tied to no page view. When no page is open
// at that moment, a later page draws a new moment in what remains of the window; past the window
// the report is dropped unsent. A report is stored as built before it is sent, and a failed send
// is retried with those same bytes (the same report id: the leader counts it once).
//
// Who decides: the task is the leader's (GET v1/measure/task at data-aggregator), its id
// recomputed here and its ε checked against the device's ceiling, which data-measure-budget can
// only lower; the helper's key comes only from data-helper. With Global Privacy Control or after
// optOut() nothing is counted or sent; erase() and optOut() delete the tallies and any report not
// yet sent.
import { measureRecord, measureReport, measureTask } from '../pkg/hearth.js';
import { PRIVATE } from './net.js';
import { may } from './state.js';
/** @import { MeasuredKind, MeasureTask } from '../pkg/hearth.js' */
/** @import { State } from './state.js' */

/**
 * What this device keeps for measurement (the stored record `measure`).
 * @typedef {object} Measure
 * @property {{ json: string | null, checkedAt: number }} [task]  the leader's task document as
 *   last asked for (null: it serves none)
 * @property {Period[]} periods  tallies not yet reported
 * @property {Record<string, string>} tasks  the task document of each period's task, by id
 * @property {number} [lastCounted]  the start (s) of the last period counted: the next period
 *   counted starts a day later at least, and an erase keeps it
 */
/**
 * One period's tally and, once built, its report.
 * @typedef {object} Period
 * @property {number} start  the period's start, in seconds since the epoch
 * @property {string} taskId  the task it is counted for
 * @property {number} periodSecs
 * @property {string} tally  hearth-core's tally (JSON)
 * @property {number} sendAt  when to send (ms), in the next period
 * @property {Uint8Array} [report]  the report as built: every attempt sends these bytes
 * @property {number} [attempts]  failed sends so far
 */
/** @typedef {MeasureTask & { json: string }} Active  the task this device counts for */

// Ask the leader for its task at most this often per device.
const CHECK_EVERY_MS = 10 * 60_000;
// A failed send is retried after 2, 4, 8, ... s (plus jitter), at most this long after.
const RETRY_MAX_MS = 5 * 60_000;
// A timer is never set further ahead than this (setTimeout's limit is 24.8 days); it re-arms.
const TIMER_MAX_MS = 86_400_000;
// Tallies kept at once: the current period and the last, plus a few for a task that changed.
const MAX_PERIODS = 8;
// Tabs share the record: every change to it happens under this lock, on the stored copy.
const LOCK = 'hearth-measure';
// One tab sends at a time.
const SEND_LOCK = 'hearth-measure-send';
// DAP's refusal of a task the server does not know (of a report, or of the key to seal one to).
const UNRECOGNIZED_TASK = 'urn:ietf:params:ppm:dap:error:unrecognizedTask';

/** A uniform number in [0, 1) from the platform's CSPRNG: the send moment must not be guessable. */
const uniform = () => crypto.getRandomValues(new Uint32Array(1))[0] / 2 ** 32;
/** @param {Period} p */
const windowEnd = (p) => (p.start + 2 * p.periodSecs) * 1000;
/** @param {Period} p */
const when = (p) => new Date(p.start * 1000).toISOString();

/**
 * Whether measurement may run: the visitor's consent (Purposes 1 and 7, where a CMP asks), and no
 * opt-out as the store says now (another tab may have opted out).
 * @param {State} state
 */
async function allowed(state) {
  return !state.config.gpc && may(state, 'measure') && !(await state.store.get('settings'))?.optedOut;
}

/**
 * Changes the stored record under the lock: `change` gets the latest copy, without periods whose
 * window has passed, and returns false to leave it as stored. Nothing is written when measurement
 * is not allowed (an opt-out deletes the record under the same lock, so nothing brings it back).
 * @param {State} state
 * @param {(m: Measure) => boolean | void} change
 * @returns {Promise<Measure | undefined>}  the record as written, or undefined
 */
async function update(state, change) {
  return await navigator.locks.request(LOCK, async () => {
    if (!(await allowed(state))) return undefined;
    const now = Date.now();
    /** @type {Measure} */
    const m = (await state.store.get('measure')) ?? { periods: [], tasks: {} };
    m.periods = m.periods.filter((p) => now < windowEnd(p));
    if (change(m) === false) return undefined;
    const used = new Set(m.periods.map((p) => p.taskId));
    m.tasks = Object.fromEntries(Object.entries(m.tasks).filter(([id]) => used.has(id)));
    await state.store.put({ measure: m });
    return m;
  });
}

/**
 * Deletes every tally and unsent report (erase, opt-out), keeping only when the last period counted
 * started.
 * @param {State} state
 */
export const forget = ({ store }) =>
  navigator.locks.request(LOCK, async () => {
    // The day's one report may already be spent: the start of the last period counted is kept
    // (it holds no count, page or ad), so an erase cannot make room for a second report that day.
    const lastCounted = (await store.get('measure'))?.lastCounted;
    if (lastCounted === undefined) await store.delete('measure');
    else await store.put({ measure: { periods: [], tasks: {}, lastCounted } });
  });

/**
 * The leader's task document, or null when it serves none.
 * @param {string} aggregator
 */
async function fetchTask(aggregator) {
  const url = new URL('v1/measure/task', aggregator);
  const res = await fetch(url, PRIVATE);
  if (res.status === 404) return null; // measurement is not enabled there
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.text();
}

/**
 * The task this device counts for now, or null: none served, no data-helper, or a task this
 * device refuses (with a warning). Checked once per page view; `fresh` asks the leader again
 * whatever was stored (its task changed under a report).
 * @param {State} state
 * @param {boolean} [fresh]
 * @returns {Promise<Active | null>}
 */
function activeTask(state, fresh = false) {
  if (fresh) state.measurement = undefined;
  state.measurement ??= (async () => {
    const { config, store, warn } = state;
    const stored = (await store.get('measure'))?.task;
    let json = stored?.json ?? null;
    if (fresh || !stored || !(Date.now() - stored.checkedAt < CHECK_EVERY_MS)) {
      json = await fetchTask(config.aggregator);
      const checkedAt = Date.now();
      await update(state, (m) => void (m.task = { json, checkedAt }));
    }
    if (json === null) return null;
    if (!config.helper) {
      warn('measurement: the leader serves a task, but the script tag has no data-helper to take the second key from; not counting');
      return null;
    }
    try {
      return { json, ...measureTask(json, config.measureBudget) };
    } catch (e) {
      warn(`measurement task refused: ${e.message}`);
      return null;
    }
  })().catch((e) => {
    state.measurement = undefined; // a failed fetch is tried again by the next event
    throw e;
  });
  return state.measurement;
}

/**
 * Counts one ad event in this period's tally (the caller has checked GPC, opt-out and consent).
 * @param {State} state
 * @param {MeasuredKind} kind
 * @param {string | undefined} campaign
 * @param {string | undefined} slot
 */
export async function count(state, kind, campaign, slot) {
  const task = await activeTask(state);
  if (!task) return;
  const nowSecs = Math.floor(Date.now() / 1000);
  const start = nowSecs - (nowSecs % task.periodSecs);
  const written = await update(state, (m) => {
    // A catalog change makes a new task mid-period: this period's tally (kept by name) moves to
    // it rather than start a second report for the same period.
    const p = m.periods.find((q) => q.start === start && q.taskId === task.taskId) ?? adopt(m, start, task);
    // One period a day at most, whatever the task's period (hearth-core's DEVICE_REPORT_GAP_SECS):
    // a leader serving short periods cannot multiply what a day of browsing costs.
    if (!p && m.lastCounted !== undefined && start < m.lastCounted + task.reportGapSecs) return false;
    const tally = measureRecord(p?.tally ?? null, start, kind, campaign ?? null, slot ?? null);
    if (p) p.tally = tally;
    else if (m.periods.length < MAX_PERIODS) {
      m.lastCounted = start;
      // The send moment is drawn now, once: uniform over the next period.
      const sendAt = (start + task.periodSecs * (1 + uniform())) * 1000;
      m.periods.push({ start, taskId: task.taskId, periodSecs: task.periodSecs, tally, sendAt });
      m.tasks[task.taskId] = task.json;
    } else return false;
  });
  if (written) arm(state, written);
}

/**
 * Moves the unsent tally of period `start`, counted for another task of the same period length,
 * to `task` (the tally is kept by name: cells the new task does not count are left out of its
 * report). Returns it, or undefined when there is none.
 * @param {Measure} m
 * @param {number} start
 * @param {Active} task
 */
function adopt(m, start, task) {
  const p = m.periods.find((q) => q.start === start && q.taskId !== task.taskId && q.periodSecs === task.periodSecs);
  if (!p) return undefined;
  p.taskId = task.taskId;
  delete p.report;
  m.tasks[task.taskId] = task.json;
  return p;
}

/**
 * On a page's start: a report whose moment passed with no page open (or whose retry is due) gets
 * a new random moment in what remains of its window, rather than this page view's moment, which
 * it would tie the report to; then this page waits for the next report due.
 * @param {State} state
 */
export async function resume(state) {
  if (!(await allowed(state))) return;
  // A tab holding the send lock is sending what is due; its moment was not missed.
  const m = await navigator.locks.request(SEND_LOCK, { ifAvailable: true }, (lock) => lock && update(state, (m) => {
    const now = Date.now();
    for (const p of m.periods.filter((p) => p.sendAt <= now)) p.sendAt = now + uniform() * (windowEnd(p) - now);
  }));
  const current = m ?? (await state.store.get('measure'));
  if (current) arm(state, current);
}

/**
 * Sets this page's one timer for the earliest report due in `m`.
 * @param {State} state
 * @param {Measure} m
 */
function arm(state, m) {
  clearTimeout(state.measureTimer);
  state.measureTimer = undefined;
  const now = Date.now();
  const open = m.periods.filter((p) => now < windowEnd(p));
  // A page without data-helper cannot build a report; a page that has one will send it.
  if (!open.length || !state.config.helper) return;
  const next = Math.min(...open.map((p) => p.sendAt));
  const delay = Math.min(Math.max(0, next - now), TIMER_MAX_MS);
  state.measureTimer = setTimeout(() => sendDue(state).catch((e) => state.warn(`measurement: ${e.message}`)), delay);
}

/**
 * Sends every report due, one tab at a time, then waits for the next.
 * @param {State} state
 */
async function sendDue(state) {
  state.measureTimer = undefined;
  await navigator.locks.request(SEND_LOCK, async () => {
    for (;;) {
      const m = await state.store.get('measure');
      const now = Date.now();
      const due = m?.periods.find((p) => p.sendAt <= now && now < windowEnd(p));
      if (!m || !due || !(await allowed(state)) || !(await send(state, due, m.tasks[due.taskId]))) break;
    }
  });
  const m = await state.store.get('measure');
  if (m && (await allowed(state))) arm(state, m);
}

/**
 * Changes the stored copy of period `p` (gone after an erase: then nothing is written).
 * @param {State} state
 * @param {Period} p
 * @param {(q: Period, m: Measure) => void} change
 */
const updatePeriod = (state, p, change) => update(state, (m) => {
  const q = m.periods.find((q) => q.start === p.start && q.taskId === p.taskId);
  if (!q) return false;
  change(q, m);
});

/**
 * @param {State} state
 * @param {Period} p
 */
const drop = (state, p) => updatePeriod(state, p, (q, m) => void m.periods.splice(m.periods.indexOf(q), 1));

/**
 * A server's DAP HPKE configuration list. A leader whose task changed refuses the old task's key
 * as it would its report (DAP's unrecognizedTask): that refusal is thrown as is, for send() to
 * move the tally to the new task.
 * @param {string} base  the server's base URL
 * @param {string} taskId
 */
async function hpkeConfigs(base, taskId) {
  const url = new URL(`dap/hpke_config?task_id=${taskId}`, base);
  const res = await fetch(url, PRIVATE);
  if (res.status === 400 && (await problemType(res)) === UNRECOGNIZED_TASK) throw res;
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/**
 * The DAP problem type of a refusal, or undefined (the body is read from a clone: the caller may
 * still read it).
 * @param {Response} res
 */
async function problemType(res) {
  try {
    return (await res.clone().json())?.type;
  } catch {
    return undefined;
  }
}

/**
 * One attempt at sending period `p`'s report, built first if it is not yet. Returns whether the
 * period is settled (sent, or dropped): false leaves it for a later attempt.
 * @param {State} state
 * @param {Period} p
 * @param {string} task  the document of the task `p` was counted for
 * @returns {Promise<boolean>}
 */
async function send(state, p, task) {
  const { config, warn } = state;
  const helperUrl = /** @type {string} */ (config.helper); // arm() waits for none without it
  let report = p.report;
  /** @type {Response} */
  let res;
  try {
    if (!report) {
      const [leader, helper] = await Promise.all([hpkeConfigs(config.aggregator, p.taskId), hpkeConfigs(helperUrl, p.taskId)]);
      try {
        report = measureReport(task, p.tally, leader, helper, config.measureBudget);
      } catch (e) {
        warn(`measurement report of the period starting ${when(p)} dropped: ${e.message}`);
        await drop(state, p);
        return true;
      }
      const built = /** @type {Uint8Array} */ (report);
      if (!(await updatePeriod(state, p, (q) => void (q.report = built)))) return true; // erased meanwhile
    }
    res = await fetch(new URL(`dap/tasks/${p.taskId}/reports`, config.aggregator), {
      ...PRIVATE,
      method: 'PUT',
      headers: { 'Content-Type': 'application/dap-report' },
      body: /** @type {Uint8Array<ArrayBuffer>} */ (report), // a copy out of wasm memory
    });
  } catch (e) {
    // A key refused for an unknown task is answered below; else status 0: offline, refused, or
    // a server's key unreachable.
    res = e instanceof Response ? e : Response.error();
  }
  if (res.ok) {
    await drop(state, p);
    return true;
  }
  if (res.status === 400 && (await problemType(res)) === UNRECOGNIZED_TASK) {
    // The leader serves another task now (its catalog changed): move the tally to it and build
    // again, once the new task is known and of the same period length; else drop it below.
    const current = await activeTask(state, true).catch(() => null);
    if (current && current.taskId !== p.taskId && (await updatePeriod(state, p, (q, m) => void adopt(m, q.start, current)))) return false;
  }
  if (!(res.status === 0 || res.status === 408 || res.status === 429 || res.status >= 500)) {
    warn(`measurement report of the period starting ${when(p)} refused: HTTP ${res.status} ${await res.text().catch(() => '')}`);
    await drop(state, p);
    return true;
  }
  const after = Number(res.headers.get('Retry-After')) * 1000 || 0;
  await updatePeriod(state, p, (q) => {
    q.attempts = (q.attempts ?? 0) + 1;
    const backoff = Math.min(RETRY_MAX_MS, 1000 * 2 ** q.attempts) * (1 + uniform() / 2);
    q.sendAt = Date.now() + Math.max(after, backoff);
  });
  return false;
}
