// @ts-check
// The worker's side of the snippet's messages: {id, method, args} -> {id, result|error}, and
// {warn} for the page's console.
import { adFields } from './catalog.js';
import { applyConsent } from './consent.js';
import { whyInWords } from './explain.js';
import { scoreCatalog, scorerFor } from './gpu.js';
import { count, forget } from './measure.js';
import { installModel } from './model.js';
import { helperConfig, participate, privacy } from './participate.js';
import { may } from './state.js';
import { blocked, changeProfile, sync } from './tabs.js';
/** @import { HearthEvent, HelperConfig, MeasuredKind, PageContext, RankedAd, RoundTask, TakePart } from '../pkg/hearth.js' */
/** @import { Backend, Caps, HearthConsent, RankOptions } from '../hearth.js' */
/** @import { CapSpec, Caps as CoreCaps } from '../pkg/hearth.js' */
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
 * Each ranked ad with its catalog fields, its creative and its explanation in words.
 * @param {State} state
 * @param {RankedAd[]} ranked
 * @param {PageContext} context  the page they were ranked for
 */
const withCreative = (state, ranked, context) => {
  // The stored profile, parsed only if an ad's own features raised it, and then once for all.
  /** @type {import('./explain.js').ProfileFacts | undefined} */
  let facts;
  const profile = () => (facts ??= JSON.parse(state.h.exportProfile()));
  const sources = { catalog: state.catalog, context: { topics: context.topics ?? [], keywords: context.keywords ?? [] }, profile };
  return ranked.map((r) => {
    const ad = catalogAd(state, r.ad_id);
    return { ...r, ...adFields(ad), creative: state.catalog.creatives[r.ad_id], explanation: whyInWords(r.why, ad, sources) };
  });
};

/**
 * Caps as the core reads them. A kind given as text, as in `data-hearth-cap-ad`, names all of
 * its caps: "3/day,2/session", "1/day" (the session is then not capped) or "none".
 * @param {Caps} caps
 * @returns {CoreCaps}
 */
function coreCaps(caps) {
  if (typeof caps !== 'object' || caps === null) throw new Error(`invalid caps ${JSON.stringify(caps)}: expected an object`);
  /** @type {CoreCaps} */
  const out = {};
  for (const kind of /** @type {const} */ (['ad', 'campaign'])) {
    const spec = caps[kind];
    if (spec !== undefined) out[kind] = typeof spec === 'string' ? capText(kind, spec) : spec;
  }
  // Any other field goes on to the core, which refuses it by name.
  return /** @type {CoreCaps} */ ({ ...caps, ...out });
}

/**
 * @param {string} kind
 * @param {string} text
 * @returns {CapSpec | null}
 */
function capText(kind, text) {
  if (text.trim().toLowerCase() === 'none') return null;
  /** @type {CapSpec} */
  const spec = { day: null, session: null };
  for (const part of text.split(',')) {
    const m = /^\s*(\d{1,9})\s*\/\s*(day|session)\s*$/i.exec(part);
    const window = /** @type {'day' | 'session' | undefined} */ (m?.[2].toLowerCase());
    if (!m || !window || Number(m[1]) < 1 || spec[window] !== null) {
      throw new Error(`invalid ${kind} caps ${JSON.stringify(text)} (data-hearth-cap-${kind} or rank's caps.${kind}): ` +
        'expected "N/day", "N/session" or both, comma-separated, with N at least 1, or "none"');
    }
    spec[window] = Number(m[1]);
  }
  return spec;
}

/**
 * Records an event in the profile unless learning is off. An impression with its slot also makes
 * its ad the one last seen there (`lastShown`), in the same write, for the next fill to avoid.
 * @param {State} state
 * @param {HearthEvent} event
 * @param {string} [shownIn]  the slot of an impression
 */
async function recordEvent(state, event, shownIn) {
  await sync(state);
  if (blocked(state) || !may(state, 'learn')) return false;
  await changeProfile(state, () => {
    state.h.record(event);
    if (!shownIn || event.ad_id === undefined) return;
    try {
      state.h.noteShown(shownIn, event.ad_id); // checks the names before it changes anything
    } catch (e) {
      state.warn(`the ad of slot ${JSON.stringify(shownIn)} is not remembered: ${e.message}`);
    }
  });
  return true;
}

const methods = {
  /**
   * @param {State} state
   * @param {HearthEvent} event
   */
  async record(state, event) {
    return recordEvent(state, event);
  },
  /**
   * An ad event: into the profile, and counted for measurement by its campaign and its slot, each
   * as far as the visitor's consent allows (Purposes 3 and 7).
   * @param {State} state
   * @param {MeasuredKind} kind
   * @param {string} adId
   * @param {number} ts
   * @param {string} [slot]  the slot it was shown in
   */
  async recordAd(state, kind, adId, ts, slot) {
    const ad = adFields(catalogAd(state, adId));
    const recorded = await recordEvent(state, { kind, ts, ...ad }, kind === 'impression' ? slot : undefined);
    // Measurement failing (the leader unreachable) never fails the event.
    if (!blocked(state) && may(state, 'measure')) await count(state, kind, ad.campaign, slot).catch((e) => state.warn(`measurement: ${e.message}`));
    return recorded;
  },
  /**
   * @param {State} state
   * @param {PageContext} context
   * @param {RankOptions} [options]
   */
  async rank(state, context, { k = 1, explain = 5, diversity, caps, avoid, personalized, backend } = {}) {
    await sync(state);
    if (!may(state, 'personalize')) personalized = false; // no consent to Purpose 4 (consent.js)
    const { h } = state;
    // Absent options stay absent: the module reads `undefined` as a value, not as "default".
    const opts = {
      now_ms: Date.now(), k, explain, ...(diversity !== undefined && { diversity }), ...(caps !== undefined && { caps: coreCaps(caps) }),
      ...(avoid !== undefined && { avoid }), ...(personalized !== undefined && { personalized }),
    };
    // Logits from the GPU carry the profile: a ranking that may not use it runs on the CPU.
    const scorer = personalized === false ? undefined : await scorerFor(state, backend);
    if (!scorer) return withCreative(state, h.rank(context, opts), context);
    return withCreative(state, h.rankScored(context, opts, await scorer.logits(h.gpuRequest(context, opts.now_ms))), context);
  },
  /**
   * The ad last seen in each slot, by slot name (null: none remembered, or no name).
   * @param {State} state
   * @param {(string | undefined)[]} slots
   */
  async lastShown(state, slots) {
    await sync(state);
    return slots.map((slot) => (slot ? state.h.lastShown(slot) ?? null : null));
  },
  /**
   * @param {State} state
   * @param {string} adId
   * @param {PageContext} context
   */
  async why(state, adId, context) {
    // Caps limit what is shown, not what can be explained.
    const options = { now_ms: Date.now(), k: 1, explain: 10, caps: { ad: null, campaign: null }, personalized: may(state, 'personalize') };
    const ranked = state.h.rankCandidates(context, [catalogAd(state, adId)], options);
    return withCreative(state, ranked, context)[0];
  },
  /**
   * Raw logits of the whole catalog on one backend, with the time they took.
   * @param {State} state
   * @param {PageContext} context
   * @param {{ backend?: Backend }} [options]
   */
  async scores(state, context, { backend = 'auto' } = {}) {
    // The logits carry the profile: the page may see them only where it may personalise.
    if (!may(state, 'personalize')) throw new Error('scores() needs consent to personalised advertising (TCF Purposes 1 and 4)');
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
  /**
   * The page's CMP answered (or changed its answer).
   * @param {State} state
   * @param {HearthConsent | null} consent
   */
  async consent(state, consent) {
    await applyConsent(state, consent, true);
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
      consent: state.consent,
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
      h, store, config, warn: state.warn, blocked: () => blocked(state) || !may(state, 'train'), helper: () => helperConfig(state), takePart,
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
  // A consent change switches stores and erases: every call made after it waits until it is done,
  // so that nothing is recorded into the store being left (and lost) or under the old consent.
  /** @type {Promise<unknown>} */
  let consentApplied = Promise.resolve();
  self.onmessage = async ({ data: { id, method, args } }) => {
    try {
      let result;
      if (method === 'init') await (started = start(args[0]));
      else {
        if (!started) throw new Error('the worker was not started');
        const state = await started;
        if (!Object.hasOwn(methods, method)) throw new Error(`unknown method ${method}`);
        const call = /** @type {(state: State, ...args: unknown[]) => Promise<unknown>} */ (methods[/** @type {keyof typeof methods} */ (method)]);
        if (method === 'consent') result = await (consentApplied = consentApplied.catch(() => {}).then(() => call(state, ...args)));
        else {
          await consentApplied.catch(() => {});
          result = await call(state, ...args);
        }
      }
      postMessage({ id, result });
    } catch (e) {
      postMessage({ id, error: e?.message ?? String(e) });
    }
  };
}
