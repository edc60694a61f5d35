// @ts-check
// The worker's side of the snippet's messages: {id, method, args} -> {id, result|error}, and
// {warn} for the page's console.
import { adFields } from './catalog.js';
import { scoreCatalog, scorerFor } from './gpu.js';
import { count, forget } from './measure.js';
import { installModel } from './model.js';
import { helperConfig, participate, privacy } from './participate.js';
import { blocked, changeProfile, sync } from './tabs.js';
/** @import { HearthEvent, HelperConfig, MeasuredKind, PageContext, RankedAd, RoundTask, TakePart } from '../pkg/hearth.js' */
/** @import { Backend, RankOptions } from '../hearth.js' */
/** @import { Config, State } from './state.js' */
/** @import { Records } from './store.js' */

/** @param {string} message */
export const warn = (message) => postMessage({ warn: message });

/**
 * @param {State} state
 * @param {string} adId
 */
function catalogAd({ catalog }, adId) {
  const ad = catalog.byId.get(adId);
  if (!ad) throw new Error(`no ad ${JSON.stringify(adId)} in the catalog`);
  return ad;
}

/**
 * @param {State} state
 * @param {RankedAd[]} ranked
 */
const withCreative = (state, ranked) =>
  ranked.map((r) => ({ ...r, ...adFields(catalogAd(state, r.ad_id)), creative: state.catalog.creatives[r.ad_id] }));

const methods = {
  /**
   * @param {State} state
   * @param {HearthEvent} event
   */
  async record(state, event) {
    await sync(state);
    if (blocked(state)) return false;
    await changeProfile(state, () => state.h.record(event));
    return true;
  },
  /**
   * An ad event: into the profile, and counted for measurement by its campaign and its slot.
   * @param {State} state
   * @param {MeasuredKind} kind
   * @param {string} adId
   * @param {number} ts
   * @param {string} [slot]  the slot it was shown in
   */
  async recordAd(state, kind, adId, ts, slot) {
    const ad = adFields(catalogAd(state, adId));
    const recorded = await methods.record(state, { kind, ts, ...ad });
    // Measurement failing (the leader unreachable) never fails the event.
    if (recorded) await count(state, kind, ad.campaign, slot).catch((e) => state.warn(`measurement: ${e.message}`));
    return recorded;
  },
  /**
   * @param {State} state
   * @param {PageContext} context
   * @param {RankOptions} [options]
   */
  async rank(state, context, { k = 1, explain = 5, diversity, caps, backend } = {}) {
    await sync(state);
    const { h } = state;
    // Absent options stay absent: the module reads `undefined` as a value, not as "default".
    const opts = { now_ms: Date.now(), k, explain, ...(diversity !== undefined && { diversity }), ...(caps !== undefined && { caps }) };
    const scorer = await scorerFor(state, backend);
    if (!scorer) return withCreative(state, h.rank(context, opts));
    return withCreative(state, h.rankScored(context, opts, await scorer.logits(h.gpuRequest(context, opts.now_ms))));
  },
  /**
   * @param {State} state
   * @param {string} adId
   * @param {PageContext} context
   */
  async why(state, adId, context) {
    const ranked = state.h.rankCandidates(context, [catalogAd(state, adId)], { now_ms: Date.now(), k: 1, explain: 10 });
    return withCreative(state, ranked)[0];
  },
  /**
   * Raw logits of the whole catalog on one backend, with the time they took.
   * @param {State} state
   * @param {PageContext} context
   * @param {{ backend?: Backend }} [options]
   */
  async scores(state, context, { backend = 'auto' } = {}) {
    const t0 = performance.now();
    const { backend: used, logits } = await scoreCatalog(state, context, Date.now(), backend);
    return { backend: used, logits: Array.from(logits), ms: performance.now() - t0 };
  },
  /** @param {State} state */
  async profile(state) {
    await sync(state);
    const { h } = state;
    const doc = JSON.parse(h.exportProfile());
    return {
      events: doc.events,
      weights: h.weights(Date.now()),
      localEmbedding: Array.from(h.localEmbedding()),
      config: doc.config,
      optedOut: state.settings.optedOut,
      gpc: state.config.gpc,
    };
  },
  /** @param {State} state */
  async exportProfile(state) {
    await sync(state);
    return state.h.exportProfile();
  },
  // Erase and opt-out keep the privacy ledger: it records privacy already spent in released
  // models, which erasing cannot take back, and forgetting it would let the device spend its
  // budget again. It holds no events or pages, only the rounds joined and their noise.
  // Measurement's tallies and unsent reports go with the profile.
  /** @param {State} state */
  async erase(state) {
    await changeProfile(state, () => state.h.eraseProfile());
    await state.store.delete('rounds'); // nothing pending may leave after an erase
    await forget(state);
  },
  /** @param {State} state */
  async optOut(state) {
    state.settings = { optedOut: true };
    await changeProfile(state, () => state.h.eraseProfile(), { settings: state.settings });
    await state.store.delete('rounds');
    await forget(state);
  },
  /** @param {State} state */
  async privacy(state) {
    return privacy(state);
  },
  /** @param {State} state */
  async optIn(state) {
    state.settings = { optedOut: false };
    await state.store.put({ settings: state.settings });
  },
  /** @param {State} state */
  async status(state) {
    await sync(state);
    const { h } = state;
    return {
      optedOut: state.settings.optedOut,
      gpc: state.config.gpc,
      modelVersion: h.modelVersion,
      ads: state.catalog.ads.length,
      webgpu: state.gpu ? state.gpu.adapter : null,
      labelledEvents: h.labelledEvents(),
    };
  },
  /**
   * @param {State} state
   * @param {{ background?: boolean }} [options]
   */
  async participate(state, options) {
    await sync(state);
    const { h, store, config } = state;
    // Training refits the local embedding: under the profile lock, on the latest profile, and
    // stored with it, the ledger and the upload in one write.
    /**
     * @param {RoundTask} task
     * @param {HelperConfig | null} helper
     * @param {string | null} ledger
     * @param {(taken: TakePart) => Partial<Records>} records
     */
    const takePart = (task, helper, ledger, records) =>
      changeProfile(state, () => h.takePart(task, helper, ledger, config.privacyBudget), records);
    const env = {
      h, store, config, warn: state.warn, blocked: () => blocked(state), helper: () => helperConfig(state), takePart,
      refreshModel: () => installModel(state),
    };
    return participate(env, options);
  },
};

/**
 * Answers the snippet's messages: `init` runs `start`, and every other method waits for it, so
 * a failed start is the answer to every later call too.
 * @param {(config: Config) => Promise<State>} start
 */
export function serve(start) {
  /** @type {Promise<State> | undefined} */
  let started;
  self.onmessage = async ({ data: { id, method, args } }) => {
    try {
      let result;
      if (method === 'init') await (started = start(args[0]));
      else {
        if (!started) throw new Error('the worker was not started');
        const state = await started;
        if (!Object.hasOwn(methods, method)) throw new Error(`unknown method ${method}`);
        const call = /** @type {(state: State, ...args: unknown[]) => Promise<unknown>} */ (methods[/** @type {keyof typeof methods} */ (method)]);
        result = await call(state, ...args);
      }
      postMessage({ id, result });
    } catch (e) {
      postMessage({ id, error: e?.message ?? String(e) });
    }
  };
}
