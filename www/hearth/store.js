// @ts-check
// Hearth's on-device store: one IndexedDB database, one key-value object store, a schema
// version, and a bound on every record. A store this code did not write (another schema, a
// foreign database of the same name, unreadable records) is deleted and started afresh with a
// warning: the device loses its profile, never its ability to run. The privacy ledger is the
// exception: forgetting it would give the device back the privacy budget it has spent, so it is
// carried across a reset, and an unreadable one is kept and reported, never dropped.
/** @import { Measure } from './measure.js' */
/** @import { Rounds } from './participate.js' */

/** @typedef {{ optedOut: boolean }} Settings */
/** @typedef {{ version: number, manifest: string, onnx: Uint8Array, etag?: string }} Model */
/** @typedef {{ url: string, etag?: string, text: string }} CatalogRecord */

/**
 * Each record by its key.
 * @typedef {object} Records
 * @property {{ schema: number }} meta
 * @property {Settings} settings
 * @property {string} profile  hearth-core's profile document
 * @property {number} profileRev  counts writes of the profile and localU (tabs.js)
 * @property {Float32Array} localU  the local embedding
 * @property {Model} model
 * @property {CatalogRecord} catalog
 * @property {Rounds} rounds
 * @property {string} ledger  hearth-core's privacy ledger (JSON): the rounds this device joined
 * @property {Measure} measure  measurement's tallies and reports not yet sent
 */

export const DB_NAME = 'hearth';
export const SCHEMA = 1;
const STORE = 'kv';

/**
 * Most bytes each record may hold; a profile is bounded by the core's own caps (5,000 events).
 * @type {Record<keyof Records, number>}
 */
export const LIMITS = {
  meta: 1 << 10,
  settings: 1 << 10,
  profile: 4 << 20,
  profileRev: 8,
  localU: 16 << 10,
  model: 32 << 20,
  catalog: 8 << 20,
  rounds: 4 << 20,
  // At most DevicePolicy::RELEASE.max_rounds (100) entries of about 160 characters.
  ledger: 64 << 10,
  // A task of 10,000 campaigns is about 1.3 MB of JSON and its report up to 2.6 MB (4 bits per
  // cell); a few periods and two tasks at most are kept.
  measure: 16 << 20,
};

/**
 * Records kept when unreadable: `get` throws instead of dropping them, and a store reset carries
 * them over as they are.
 * @type {ReadonlySet<keyof Records>}
 */
const KEPT = new Set(['ledger']);

/**
 * What each record must look like to be trusted.
 * @type {Record<keyof Records, (v: any) => boolean>}
 */
const SHAPES = {
  meta: (v) => v?.schema === SCHEMA,
  settings: (v) => typeof v?.optedOut === 'boolean',
  profile: (v) => typeof v === 'string',
  profileRev: (v) => Number.isSafeInteger(v),
  localU: (v) => v instanceof Float32Array,
  model: (v) => typeof v?.manifest === 'string' && v.onnx instanceof Uint8Array && typeof v.version === 'number',
  catalog: (v) => typeof v?.text === 'string' && typeof v.url === 'string',
  // A pending upload says how to send it; one stored by a release before the ledger does not,
  // and is dropped rather than sent unaccounted.
  rounds: (v) => typeof v === 'object' && v !== null && !Array.isArray(v) &&
    (v.pending === undefined || (v.pending.update instanceof Uint8Array && typeof v.pending.contentType === 'string')),
  ledger: (v) => typeof v === 'string',
  // Every period names a task whose document is kept, and a built report is bytes.
  measure: (v) => typeof v?.tasks === 'object' && v.tasks !== null && Array.isArray(v.periods) &&
    (v.task === undefined || ((typeof v.task.json === 'string' || v.task.json === null) && typeof v.task.checkedAt === 'number')) &&
    v.periods.every((/** @type {any} */ p) => Number.isSafeInteger(p?.start) && Number.isSafeInteger(p.periodSecs) &&
      typeof p.taskId === 'string' && typeof v.tasks[p.taskId] === 'string' && typeof p.tally === 'string' &&
      typeof p.sendAt === 'number' && (p.report === undefined || p.report instanceof Uint8Array)),
};

/**
 * @param {unknown} v
 * @returns {number}
 */
const size = (v) =>
  typeof v === 'string' ? v.length * 2 : ArrayBuffer.isView(v) ? v.byteLength
    : v && typeof v === 'object' ? Object.values(v).reduce((n, x) => n + size(x), 0) : 8;

/**
 * @template T
 * @param {IDBRequest<T>} req
 * @returns {Promise<T>}
 */
const promised = (req) => new Promise((resolve, reject) => {
  req.onsuccess = () => resolve(req.result);
  req.onerror = () => reject(req.error);
});

/**
 * @param {IDBTransaction} tx
 * @returns {Promise<void>}
 */
const committed = (tx) => new Promise((resolve, reject) => {
  tx.oncomplete = () => resolve();
  tx.onerror = tx.onabort = () => reject(tx.error ?? new Error('store transaction aborted'));
});

function openDb() {
  const req = indexedDB.open(DB_NAME, SCHEMA);
  req.onupgradeneeded = (e) => {
    if (e.oldVersion !== 0) return; // someone else's older database: checked and reset below
    req.result.createObjectStore(STORE).put({ schema: SCHEMA }, 'meta');
  };
  return promised(req);
}

/**
 * The KEPT records of a store about to be reset, where it has this code's object store.
 * @param {IDBDatabase} db
 * @returns {Promise<Map<keyof Records, unknown>>}
 */
async function keptRecords(db) {
  const kept = new Map();
  if (!db.objectStoreNames.contains(STORE)) return kept;
  const store = db.transaction(STORE).objectStore(STORE);
  for (const key of KEPT) {
    const value = await promised(store.get(key));
    if (value !== undefined) kept.set(key, value);
  }
  return kept;
}

export class Store {
  /** @param {(message: string) => void} warn */
  static async open(warn) {
    /** @type {IDBDatabase | undefined} */
    let db;
    try {
      db = await openDb();
      const stores = [...db.objectStoreNames];
      if (stores.length !== 1 || stores[0] !== STORE) throw new Error(`unexpected object stores [${stores}]`);
      const meta = await promised(db.transaction(STORE).objectStore(STORE).get('meta'));
      if (!SHAPES.meta(meta)) throw new Error(`schema ${JSON.stringify(meta?.schema)}, expected ${SCHEMA}`);
    } catch (e) {
      // Unreadable even as raw records: nothing can be carried over.
      const kept = db && await keptRecords(db).catch(() => undefined);
      db?.close();
      warn(`the stored state could not be used (${e.message ?? e}); starting afresh`);
      await promised(indexedDB.deleteDatabase(DB_NAME));
      db = await openDb();
      if (kept?.size) {
        // As they were, unchecked: an unreadable ledger stays unreadable, and so still counts as spent.
        const tx = db.transaction(STORE, 'readwrite', { durability: 'strict' });
        for (const [key, value] of kept) tx.objectStore(STORE).put(value, key);
        await committed(tx);
      }
    }
    return new Store(db, warn);
  }

  /**
   * @param {IDBDatabase} db
   * @param {(message: string) => void} warn
   */
  constructor(db, warn) {
    this.db = db;
    this.warn = warn;
    // Another tab deleting the database for a reset must not wait on this one.
    db.onversionchange = () => db.close();
  }

  /**
   * The record under `key`, or undefined; a record of the wrong shape is dropped with a warning.
   * @template {keyof Records} K
   * @param {K} key
   * @returns {Promise<Records[K] | undefined>}
   */
  async get(key) {
    const value = await promised(this.db.transaction(STORE).objectStore(STORE).get(key));
    if (value === undefined || SHAPES[key](value)) return value;
    if (KEPT.has(key)) throw new Error(`the stored ${key} is unreadable`);
    this.warn(`stored ${key} was unreadable and has been dropped`);
    await this.delete(key);
    return undefined;
  }

  /**
   * Writes several records in one transaction: all of them or, on any error, none.
   * @param {Partial<Records>} records
   */
  async put(records) {
    for (const [key, value] of /** @type {[keyof Records, unknown][]} */ (Object.entries(records))) {
      if (!SHAPES[key]?.(value)) throw new Error(`refusing to store a malformed ${key}`);
      if (size(value) > LIMITS[key]) throw new Error(`${key} is larger than the ${LIMITS[key]} bytes allowed`);
    }
    const tx = this.db.transaction(STORE, 'readwrite', { durability: 'strict' });
    for (const [key, value] of Object.entries(records)) tx.objectStore(STORE).put(value, key);
    await committed(tx);
  }

  /** @param {...keyof Records} keys */
  async delete(...keys) {
    const tx = this.db.transaction(STORE, 'readwrite');
    for (const key of keys) tx.objectStore(STORE).delete(key);
    await committed(tx);
  }
}
