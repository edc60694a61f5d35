// @ts-check
// Federated participation: fetch the round task, let hearth-core decide (the device's privacy
// floor, its coin, its privacy ledger), train on this device's events and build the upload (a
// secure-aggregation report: a share for the leader and a seed sealed to the helper; or a
// plaintext update from a single aggregator), then send it, retrying with backoff. At most one
// upload per round per device, across tabs and reloads: the upload is stored, marked as this
// round's, in the same write as the ledger that records it, before it is sent, and a retry
// resends the same bytes (same nonce, so the aggregator counts it once).
import { ledgerSummary } from '../pkg/hearth.js';
import { PRIVATE } from './net.js';
/** @import { Hearth, HelperConfig, RoundTask, TakePart } from '../pkg/hearth.js' */
/** @import { Privacy } from '../hearth.js' */
/** @import { Config, State } from './state.js' */
/** @import { AnyStore } from './consent.js' */
/** @import { Records } from './store.js' */

/**
 * What this device knows of rounds, as stored: the last task seen and when it was checked, the
 * last round it took part in or its coin told it to sit out, and the upload not yet delivered.
 * @typedef {object} Rounds
 * @property {{ round_id: number, min_events: number }} [task]
 * @property {number} [checkedAt]
 * @property {number} [done]
 * @property {number} [notSampled]
 * @property {Pending} [pending]
 */
/**
 * @typedef {object} Pending
 * @property {number} round_id
 * @property {number | null} deadline_ms
 * @property {Uint8Array} update  the report or update, as built
 * @property {string} contentType  application/vnd.hearth.report or application/vnd.hearth.update
 * @property {number} notBefore
 */

/**
 * @typedef {object} Env
 * @property {Hearth} h
 * @property {AnyStore} store
 * @property {Config} config
 * @property {(message: string) => void} warn
 * @property {() => boolean} blocked
 * @property {() => Promise<HelperConfig>} helper  the helper's configuration, from the helper
 * @property {(task: RoundTask, helper: HelperConfig | null, ledger: string | null,
 *   records: (taken: TakePart) => Partial<Records>) => Promise<TakePart>} takePart
 *   hearth-core's decision and upload (`Hearth.takePart`), stored with `records(taken)` in the
 *   write of the profile it trained
 * @property {() => Promise<void>} refreshModel  installs the aggregator's current model
 */

// Ask the aggregator about rounds at most this often per device.
const CHECK_EVERY_MS = 10 * 60_000;
// Retries within one attempt: 1 s, 2 s, 4 s, 8 s (plus jitter); then wait for a later page view.
const RETRIES = 4;
const LATER_MS = 5 * 60_000;

const BLOCKED = 'opted out, Global Privacy Control, or no consent to train';
/** @param {string} reason */
const skipped = (reason) => ({ status: 'skipped', reason });
/** @param {number} round */
const notSampled = (round) => skipped(`not sampled for round ${round}`);
/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Tabs share the store; one of them takes part at a time. A background attempt (on idle) skips
// when another tab holds the lock; an explicit call waits for that attempt and then decides.
/**
 * @param {Env} env
 * @param {{ background?: boolean }} [options]
 */
export function participate(env, { background = false } = {}) {
  if (env.blocked()) return skipped(BLOCKED);
  return navigator.locks.request('hearth-participation', { ifAvailable: background }, (lock) =>
    lock ? attempt(env) : skipped('another tab is taking part'));
}

/** @param {Env} env */
async function attempt(env) {
  const { h, store, config, warn, blocked, refreshModel } = env;
  /** @type {Rounds} */
  const rounds = (await store.get('rounds')) ?? {};
  const now = Date.now();
  const { pending } = rounds;
  if (pending) return send(rounds, pending, env);
  const fresh = rounds.checkedAt !== undefined && now - rounds.checkedAt < CHECK_EVERY_MS;
  const latest = rounds.task?.round_id;
  if (fresh && rounds.done === latest) return skipped(`already took part in round ${rounds.done}`);
  if (fresh && latest !== undefined && rounds.notSampled === latest) return notSampled(latest);
  if (fresh && rounds.task && h.labelledEvents() < rounds.task.min_events) return skipped('not enough local events yet');

  const res = await fetch(new URL('v1/round', config.aggregator), PRIVATE);
  // 503 no_open_round: between rounds; 410 privacy_budget_spent: training has stopped.
  if (res.status === 503 || res.status === 410) return skipped(`no open round (${(await res.json().catch(() => ({}))).error ?? res.status})`);
  if (!res.ok) throw new Error(`GET v1/round: HTTP ${res.status}`);
  /** @type {RoundTask} */
  const task = await res.json();
  rounds.task = { round_id: task.round_id, min_events: task.min_events ?? 0 };
  rounds.checkedAt = now;
  await store.put({ rounds });
  if (rounds.done !== undefined && rounds.done >= task.round_id) return skipped(`already took part in round ${rounds.done}`);
  if (rounds.notSampled === task.round_id) return notSampled(task.round_id);
  if (h.labelledEvents() < (task.min_events ?? 0)) return skipped('not enough local events yet');
  if (task.model_version !== h.modelVersion) await refreshModel();
  if (task.model_version !== h.modelVersion) return skipped(`round ${task.round_id} is for model ${task.model_version}`);
  if (blocked()) return skipped(BLOCKED);

  /** @type {TakePart} */
  let taken;
  try {
    const ledger = await readLedger(store);
    // Without data-helper a secure round gets no helper, and hearth-core refuses it.
    const helper = task.secagg && config.helper ? await env.helper() : null;
    taken = await env.takePart(task, helper, ledger, (t) => {
      if (t.status === 'joined') {
        rounds.done = task.round_id;
        rounds.pending = {
          round_id: task.round_id, deadline_ms: task.deadline_ms ?? null, update: t.upload, contentType: t.contentType, notBefore: 0,
        };
      } else {
        rounds.notSampled = task.round_id;
      }
      return { rounds, ledger: t.ledger };
    });
  } catch (e) {
    switch (e?.name) {
      case 'DeviceBudgetSpent':
        return skipped(e.message);
      case 'LedgerUnreadable':
        // Never read as empty: that would hand the device its spent budget again.
        warn(`${e.message}; taking part in no more rounds, as if the privacy budget were spent`);
        return skipped('privacy ledger unreadable: treated as spent');
      case 'BelowDeviceFloor':
      case 'SecAgg':
        warn(`round ${task.round_id} refused: ${e.message}`);
        return { status: 'refused', reason: e.message };
      default:
        throw e;
    }
  }
  if (taken.status === 'not_sampled') return notSampled(task.round_id);
  return send(rounds, /** @type {Pending} */ (rounds.pending), env);
}

/**
 * The helper's configuration, from the helper itself (data-helper), never from the leader: a key
 * the leader handed on could be the leader's own. Fetched once per page view (the worker lives
 * as long as its page); a failed fetch is tried again by the next attempt.
 * @param {Pick<State, 'config' | 'helper'>} state
 * @returns {Promise<HelperConfig>}
 */
export function helperConfig(state) {
  state.helper ??= (async () => {
    const url = new URL('v1/helper_config', /** @type {string} */ (state.config.helper));
    const res = await fetch(url, PRIVATE);
    if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
    return res.json();
  })().catch((e) => {
    state.helper = undefined;
    throw e;
  });
  return state.helper;
}

/**
 * The stored ledger (null: none yet). One the store cannot read throws an Error named
 * LedgerUnreadable, as hearth-core does for one that does not parse.
 * @param {AnyStore} store
 */
async function readLedger(store) {
  try {
    return (await store.get('ledger')) ?? null;
  } catch (e) {
    throw Object.assign(new Error(e.message ?? String(e)), { name: 'LedgerUnreadable' });
  }
}

/**
 * What this device's ledger adds up to, for the visitor. An unreadable ledger counts as spent.
 * @param {Pick<State, 'store' | 'config'>} state
 * @returns {Promise<Privacy>}
 */
export async function privacy({ store, config }) {
  try {
    return { unreadable: false, ...ledgerSummary(await readLedger(store), config.privacyBudget) };
  } catch (e) {
    if (e?.name !== 'LedgerUnreadable') throw e;
    return { unreadable: true, may_join: false };
  }
}

/**
 * @param {Rounds} rounds
 * @param {Pending} p  `rounds.pending`
 * @param {Pick<Env, 'store' | 'config' | 'warn' | 'blocked'>} env
 */
async function send(rounds, p, { store, config, warn, blocked }) {
  if (p.deadline_ms !== null && Date.now() > p.deadline_ms) return finish(rounds, store, 'skipped', `round ${p.round_id} closed`);
  if (Date.now() < p.notBefore) return skipped(`upload for round ${p.round_id} waits to retry`);
  for (let i = 0; ; i++) {
    // An opt-out or a consent withdrawn between retries: nothing more leaves (the upload was
    // dropped with it).
    if (blocked()) return skipped(BLOCKED);
    let res;
    try {
      res = await fetch(new URL('v1/updates', config.aggregator), {
        ...PRIVATE,
        method: 'POST',
        headers: { 'Content-Type': p.contentType },
        body: /** @type {Uint8Array<ArrayBuffer>} */ (p.update), // a copy out of wasm memory, never a SharedArrayBuffer
      });
    } catch {
      res = Response.error(); // status 0: offline or refused
    }
    if (res.status === 202) return finish(rounds, store, 'uploaded', `round ${p.round_id}`);
    // 409: already stored (a retry of a send that landed) or the round moved on.
    if (res.status === 409) return finish(rounds, store, 'uploaded', `round ${p.round_id} (${(await res.json().catch(() => ({}))).error})`);
    const transient = res.status === 0 || res.status === 408 || res.status === 429 || res.status >= 500;
    if (!transient) {
      const why = await res.text().catch(() => '');
      warn(`update for round ${p.round_id} refused: HTTP ${res.status} ${why}`);
      return finish(rounds, store, 'refused', `HTTP ${res.status}`);
    }
    if (i === RETRIES) break;
    const after = Number(res.headers.get('Retry-After')) * 1000 || 0;
    await sleep(Math.max(after, 1000 * 2 ** i * (1 + Math.random() / 2)));
  }
  p.notBefore = Date.now() + LATER_MS;
  await store.put({ rounds });
  return skipped(`upload for round ${p.round_id} failed; will retry later`);
}

/**
 * @param {Rounds} rounds
 * @param {AnyStore} store
 * @param {'uploaded' | 'skipped' | 'refused'} status
 * @param {string} reason
 */
async function finish(rounds, store, status, reason) {
  delete rounds.pending;
  await store.put({ rounds });
  return { status, reason };
}
