// @ts-check
// What the visitor's consent allows the worker, as the snippet reads it from the page's TCF v2.2
// CMP (HearthConsent in ../hearth.d.ts; null: no CMP, so not gated). Without Purpose 1 the
// worker never opens IndexedDB: it keeps what it needs for this page view in memory. When the
// visitor withdraws a purpose (here, or on a page without Hearth: checked at every start), what
// Hearth kept for it is erased at once: the profile and local embedding (Purpose 3), an update
// built but not sent (3 or 10), measurement's tallies and unsent reports (7), and with Purpose 1
// all three, after which the store is left alone. The downloaded model and catalog and the
// privacy ledger (no events or pages: see Privacy in ../hearth.d.ts) stay.
import { forget, resume } from './measure.js';
import { may } from './state.js';
import { DB_NAME, Store } from './store.js';
import { changeProfile, sync } from './tabs.js';
/** @import { HearthConsent } from '../hearth.js' */
/** @import { State } from './state.js' */
/** @import { Records } from './store.js' */

/**
 * The store's records, held for this page view only, where the visitor has not consented to
 * storage: the same calls as Store, and copies in and out, as IndexedDB makes.
 */
export class MemoryStore {
  /** @type {Map<keyof Records, unknown>} */
  records = new Map();

  /**
   * @template {keyof Records} K
   * @param {K} key
   * @returns {Promise<Records[K] | undefined>}
   */
  async get(key) {
    return structuredClone(/** @type {Records[K] | undefined} */ (this.records.get(key)));
  }

  /** @param {Partial<Records>} records */
  async put(records) {
    for (const [key, value] of Object.entries(records)) this.records.set(/** @type {keyof Records} */ (key), structuredClone(value));
  }

  /** @param {...keyof Records} keys */
  async delete(...keys) {
    for (const key of keys) this.records.delete(key);
  }
}

/** @typedef {Store | MemoryStore} AnyStore */

/**
 * IndexedDB with consent to storage, memory without.
 * @param {HearthConsent | null} consent
 * @param {(message: string) => void} warn
 * @returns {Promise<AnyStore>}
 */
export const openStore = (consent, warn) => (may({ consent }, 'storage') ? Store.open(warn) : Promise.resolve(new MemoryStore()));

/**
 * Takes the CMP's latest answer: stops what it no longer allows, erases what was kept for it, and
 * moves between memory and IndexedDB as storage is given or withdrawn.
 * @param {State} state
 * @param {HearthConsent | null} consent
 * @param {boolean} answered  the CMP's answer, not the "nothing yet" a worker starts with
 */
export async function applyConsent(state, consent, answered) {
  state.consent = consent;
  if (answered && !may(state, 'storage') && state.store instanceof MemoryStore) await eraseStored(state.warn);
  if (may(state, 'storage') && state.store instanceof MemoryStore) {
    const memory = state.store;
    state.store = await Store.open(state.warn);
    // The model and catalog this page view downloaded, and an opt-out made in it, are stored as
    // if storage had been given from the start; nothing else was kept without it.
    const [model, catalog, settings] = await Promise.all([memory.get('model'), memory.get('catalog'), memory.get('settings')]);
    await state.store.put({ ...(model && { model }), ...(catalog && { catalog }), ...(settings?.optedOut && { settings }) });
    await reload(state);
    await resume(state); // measurement's own check asks for consent
  }
  if (state.store instanceof MemoryStore) return;
  if (!may(state, 'learn') && hasProfile(state)) await changeProfile(state, () => state.h.eraseProfile());
  if (!may(state, 'train')) {
    const rounds = await state.store.get('rounds');
    if (rounds?.pending) {
      delete rounds.pending;
      await state.store.put({ rounds });
    }
  }
  if (!may(state, 'measure')) {
    clearTimeout(state.measureTimer);
    state.measureTimer = undefined;
    if ((await state.store.get('measure'))?.periods.length) await forget(state);
  }
  if (!may(state, 'storage')) {
    state.store = new MemoryStore();
    await reload(state);
  }
}

/**
 * Storage refused by the CMP while this worker kept to memory: what an earlier consent let Hearth
 * store about the visitor (profile, local embedding, unsent update, measurement) is deleted from
 * IndexedDB (deleting is erasure, not storage), and the profile's revision moves so that another
 * tab still holding it reloads it empty. The model, the catalog and the privacy ledger stay.
 * @param {(message: string) => void} warn
 */
async function eraseStored(warn) {
  if (!(await indexedDB.databases()).some((d) => d.name === DB_NAME)) return; // never stored: nothing to erase
  const stored = await Store.open(warn);
  const rev = (await stored.get('profileRev')) ?? 0;
  await stored.delete('profile', 'localU', 'rounds', 'measure');
  await stored.put({ profileRev: rev + 1 });
  stored.db.close();
}

/**
 * Whether the profile holds anything: events, or an embedding local training fitted.
 * @param {State} state
 */
const hasProfile = ({ h }) => JSON.parse(h.exportProfile()).events.length > 0 || h.localEmbedding().some((x) => x !== 0);

/**
 * Makes the model hold the profile of the store now in use (another store's revisions count
 * apart, so the next sync reloads whatever the revision).
 * @param {State} state
 */
async function reload(state) {
  state.profileRev = -1;
  await sync(state);
}
