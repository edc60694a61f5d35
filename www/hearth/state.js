// @ts-check
// The worker's state, in one object that its modules are handed rather than module-level
// variables they share. It is made only once the model and catalog are in, and every message
// waits for it, so no method can run on a half-started worker.
/** @import { HearthConsent } from '../hearth.js' */
/** @import { Hearth, HelperConfig, WebGpuScorer } from '../pkg/hearth.js' */
/** @import { AnyStore } from './consent.js' */
/** @import { Catalog } from './catalog.js' */
/** @import { Active } from './measure.js' */
/** @import { Settings } from './store.js' */

/**
 * What the snippet's script tag asks for, and whether Global Privacy Control is set.
 * @typedef {object} Config
 * @property {string} aggregator  the leader (or single aggregator)
 * @property {string} catalog
 * @property {string | null} helper  the helper's base URL (data-helper), where its key comes from
 * @property {number | undefined} privacyBudget  data-privacy-budget: may only lower the release's ε budget
 * @property {number | undefined} measureBudget  data-measure-budget: may only lower the device's
 *   ε ceiling per measurement period
 * @property {string} gpu
 * @property {boolean} gpc
 * @property {HearthConsent | null} consent  what the page's CMP allowed when the worker started
 * @property {boolean} consentAnswered  whether that was the CMP's answer (else: not answered yet)
 */

/**
 * @typedef {object} State
 * @property {Config} config
 * @property {AnyStore} store  IndexedDB, or memory without consent to storage (consent.js)
 * @property {(message: string) => void} warn  shown on the page's console
 * @property {Hearth} h  the model, this device's profile and the catalog's ad side
 * @property {Catalog} catalog
 * @property {Settings} settings  as this tab last read them
 * @property {HearthConsent | null} consent  what the page's CMP allows now (null: no CMP, or GDPR
 *   does not apply; see `may`)
 * @property {number} profileRev  the revision of the stored profile that `h` holds
 * @property {WebGpuScorer | undefined} gpu  once started and loaded
 * @property {Promise<WebGpuScorer | undefined> | undefined} gpuStart  once asked for
 * @property {Promise<HelperConfig> | undefined} helper  the helper's configuration, fetched once
 *   per page view when a secure round first needs it
 * @property {Promise<Active | null> | undefined} measurement  the measurement task this device
 *   counts for (null: none), checked once per page view when an ad event first needs it
 * @property {ReturnType<typeof setTimeout> | undefined} measureTimer  waits for the next report due
 */

/** @type {Readonly<HearthConsent>} */
const ALL = { storage: true, learn: true, personalize: true, measure: true, train: true };

/**
 * Whether the visitor's consent allows `gate` now: always where no CMP asks (consent.js).
 * @param {Pick<State, 'consent'>} state
 * @param {keyof HearthConsent} gate
 */
export const may = ({ consent }, gate) => (consent ?? ALL)[gate];

/**
 * @param {Pick<State, 'config' | 'store' | 'warn' | 'h' | 'catalog' | 'profileRev'>} loaded
 * @returns {State}
 */
export const createState = (loaded) =>
  ({
    ...loaded, settings: { optedOut: false }, consent: loaded.config.consent, gpu: undefined, gpuStart: undefined, helper: undefined,
    measurement: undefined, measureTimer: undefined,
  });
