// @ts-check
// Federated participation: fetch the round task, train on this device's events, upload one
// clipped and noised update, retrying with backoff. At most one upload per round per device,
// across tabs and reloads: the update is stored, marked as this round's, before it is sent, and
// a retry resends the same bytes (same nonce, so the aggregator counts it once).
import { PRIVATE } from './net.js';
/** @import { Hearth, RoundTask } from '../pkg/hearth.js' */
/** @import { Config } from './state.js' */
/** @import { Store } from './store.js' */

/**
 * What this device knows of rounds, as stored: the last task seen and when it was checked, the
 * last round it took part in, and the update not yet delivered.
 * @typedef {object} Rounds
 * @property {{ round_id: number, min_events: number }} [task]
 * @property {number} [checkedAt]
 * @property {number} [done]
 * @property {Pending} [pending]
 */
/** @typedef {{ round_id: number, deadline_ms: number | null, update: Uint8Array, notBefore: number }} Pending */

/**
 * @typedef {object} Env
 * @property {Hearth} h
 * @property {Store} store
 * @property {Config} config
 * @property {(message: string) => void} warn
 * @property {() => boolean} blocked
 * @property {(task: RoundTask) => Promise<Uint8Array>} train  trains and builds the update
 * @property {() => Promise<void>} refreshModel  installs the aggregator's current model
 */

const UPDATE_TYPE = 'application/vnd.hearth.update';
// Ask the aggregator about rounds at most this often per device.
const CHECK_EVERY_MS = 10 * 60_000;
// Retries within one attempt: 1 s, 2 s, 4 s, 8 s (plus jitter); then wait for a later page view.
const RETRIES = 4;
const LATER_MS = 5 * 60_000;

/** @param {string} reason */
const skipped = (reason) => ({ status: 'skipped', reason });
/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Tabs share the store; one of them takes part at a time. A background attempt (on idle) skips
// when another tab holds the lock; an explicit call waits for that attempt and then decides.
/**
 * @param {Env} env
 * @param {{ background?: boolean }} [options]
 */
export function participate(env, { background = false } = {}) {
  if (env.blocked()) return skipped('opted out or Global Privacy Control');
  return navigator.locks.request('hearth-participation', { ifAvailable: background }, (lock) =>
    lock ? attempt(env) : skipped('another tab is taking part'));
}

/** @param {Env} env */
async function attempt({ h, store, config, warn, blocked, train, refreshModel }) {
  /** @type {Rounds} */
  const rounds = (await store.get('rounds')) ?? {};
  const now = Date.now();
  if (rounds.pending) return send(rounds, rounds.pending, { store, config, warn });
  const fresh = rounds.checkedAt !== undefined && now - rounds.checkedAt < CHECK_EVERY_MS;
  if (fresh && rounds.done === rounds.task?.round_id) return skipped(`already took part in round ${rounds.done}`);
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
  if (h.labelledEvents() < (task.min_events ?? 0)) return skipped('not enough local events yet');
  if (task.model_version !== h.modelVersion) await refreshModel();
  if (task.model_version !== h.modelVersion) return skipped(`round ${task.round_id} is for model ${task.model_version}`);
  if (blocked()) return skipped('opted out or Global Privacy Control');

  const update = await train(task);
  rounds.done = task.round_id;
  rounds.pending = { round_id: task.round_id, deadline_ms: task.deadline_ms ?? null, update, notBefore: 0 };
  await store.put({ rounds });
  return send(rounds, rounds.pending, { store, config, warn });
}

/**
 * @param {Rounds} rounds
 * @param {Pending} p  `rounds.pending`
 * @param {Pick<Env, 'store' | 'config' | 'warn'>} env
 */
async function send(rounds, p, { store, config, warn }) {
  if (p.deadline_ms !== null && Date.now() > p.deadline_ms) return finish(rounds, store, 'skipped', `round ${p.round_id} closed`);
  if (Date.now() < p.notBefore) return skipped(`upload for round ${p.round_id} waits to retry`);
  for (let i = 0; ; i++) {
    let res;
    try {
      res = await fetch(new URL('v1/updates', config.aggregator), {
        ...PRIVATE,
        method: 'POST',
        headers: { 'Content-Type': UPDATE_TYPE },
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
 * @param {Store} store
 * @param {'uploaded' | 'skipped' | 'refused'} status
 * @param {string} reason
 */
async function finish(rounds, store, status, reason) {
  delete rounds.pending;
  await store.put({ rounds });
  return { status, reason };
}
