// @ts-check
// The worker's state, in one object that its modules are handed rather than module-level
// variables they share. It is made only once the model and catalog are in, and every message
// waits for it, so no method can run on a half-started worker.
/** @import { Hearth, HelperConfig, WebGpuScorer } from '../pkg/hearth.js' */
/** @import { Catalog } from './catalog.js' */
/** @import { Active } from './measure.js' */
/** @import { Settings, Store } from './store.js' */

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
 */

/**
 * @typedef {object} State
 * @property {Config} config
 * @property {Store} store
 * @property {(message: string) => void} warn  shown on the page's console
 * @property {Hearth} h  the model, this device's profile and the catalog's ad side
 * @property {Catalog} catalog
 * @property {Settings} settings  as this tab last read them
 * @property {number} profileRev  the revision of the stored profile that `h` holds
 * @property {WebGpuScorer | undefined} gpu  once started and loaded
 * @property {Promise<WebGpuScorer | undefined> | undefined} gpuStart  once asked for
 * @property {Promise<HelperConfig> | undefined} helper  the helper's configuration, fetched once
 *   per page view when a secure round first needs it
 * @property {Promise<Active | null> | undefined} measurement  the measurement task this device
 *   counts for (null: none), checked once per page view when an ad event first needs it
 * @property {ReturnType<typeof setTimeout> | undefined} measureTimer  waits for the next report due
 */

/**
 * @param {Pick<State, 'config' | 'store' | 'warn' | 'h' | 'catalog' | 'profileRev'>} loaded
 * @returns {State}
 */
export const createState = (loaded) =>
  ({
    ...loaded, settings: { optedOut: false }, gpu: undefined, gpuStart: undefined, helper: undefined, measurement: undefined,
    measureTimer: undefined,
  });
