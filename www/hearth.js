// @ts-check
// Hearth publisher snippet: on-device ad personalization in one script tag.
//
//   <script async crossorigin="anonymous" src="https://cdn.example/hearth/hearth.js"
//           data-aggregator="https://agg.example/" data-helper="https://helper.example/"
//           data-catalog="https://agg.example/v1/catalog.json"></script>
//   <meta name="hearth:topics" content="sports">      (optional: what this page is about)
//   <meta name="hearth:keywords" content="marathon,trail">
//   <div data-hearth-slot="sidebar"></div>
//
// This file stays on the main thread and stays small: it renders chosen ads into their slots
// and reports what the visitor does with them. The model, the profile, ranking, training and
// uploads live in a dedicated worker (hearth/worker.js), started lazily when the page is idle.
// Nothing here reads or writes cookies, and catalog text reaches the page only as textContent
// inside a sandboxed iframe.
/** @import { HearthApi, HearthCommand, HearthConsent, MeasuredKind, RankedAd, Status } from './hearth' */
(() => {
  'use strict';
  // Before the snippet loads, a page may queue commands: window.hearth = window.hearth || [];
  // hearth.push((h) => ...). Anything else already there is this snippet, included twice.
  // (An element with id="hearth" is also window.hearth, by named access: not a reason to stop.)
  const queued = /** @type {unknown} */ (window.hearth);
  if (queued && !Array.isArray(queued) && !(queued instanceof Element)) return;

  const script = /** @type {HTMLScriptElement | null} */ (document.currentScript);
  /** @param {string} name */
  const attr = (name) => script?.getAttribute(`data-${name}`);
  const catalog = attr('catalog');
  const helper = attr('helper');
  const budget = attr('privacy-budget');
  const measureBudget = attr('measure-budget');
  const config = {
    aggregator: new URL(attr('aggregator') ?? '/', location.href).href,
    catalog: catalog && new URL(catalog, location.href).href,
    // The helper of secure aggregation: the device takes its key from there, never from the
    // aggregator (the leader). Without it the device refuses secure rounds.
    helper: helper ? new URL(helper, location.href).href : null,
    // An ε budget lower than the SDK's own; anything that is not a positive number is refused
    // by the worker (it never falls back to the higher default).
    privacyBudget: budget == null ? undefined : Number(budget),
    // The same for measurement: an ε ceiling per period lower than the device's own.
    measureBudget: measureBudget == null ? undefined : Number(measureBudget),
    // "auto" uses WebGPU when an adapter exists and the catalog is large enough to pay for it.
    gpu: attr('gpu') ?? 'auto',
  };
  const base = new URL('.', script?.src ?? location.href);
  const gpc = 'globalPrivacyControl' in navigator && navigator.globalPrivacyControl === true;

  // ---- worker RPC ---------------------------------------------------------------------------
  /** @type {Worker | undefined} */
  let worker;
  /** @type {Error | undefined} */
  let failed; // set when the worker could not start: every call rejects with it
  let seq = 0;
  /** @type {Map<number, { resolve: (result: any) => void, reject: (error: Error) => void }>} */
  const calls = new Map();
  function start() {
    if (worker || failed) return worker;
    const url = new URL('hearth/worker.js', base);
    const hosted = attr('worker');
    // A worker must come from the page's origin. A snippet on a CDN starts it from `data-worker`,
    // a one-line file on the publisher's origin (`import "<cdn>/hearth/worker.js";`); without
    // one, from a blob with the same import, so the page's policy must allow `worker-src blob:`,
    // which lets any script on the page start a worker of its own making. The modules a worker
    // imports are checked against the page's worker-src too, and the CDN serves them with CORS.
    const blob = !hosted && url.origin !== location.origin;
    // What the page's worker-src must allow, for the message below.
    const needs = [...new Set([blob ? 'blob:' : "'self'", url.origin === location.origin ? "'self'" : url.origin])].join(' ');
    const src = hosted
      ? new URL(hosted, location.href)
      : blob ? URL.createObjectURL(new Blob([`import ${JSON.stringify(url.href)};`], { type: 'text/javascript' })) : url;
    /** @param {string} why */
    const fail = (why) => {
      failed = new Error(`could not start the worker from ${hosted ? `${src} (data-worker)` : url.href}: ${why}`);
      worker?.terminate();
      for (const c of calls.values()) c.reject(failed);
      calls.clear();
    };
    try {
      worker = new Worker(src, { type: 'module', name: 'hearth' });
    } catch (e) {
      // Thrown at once for a data-worker on another origin.
      fail(e.message);
      return worker;
    }
    worker.onmessage = ({ data }) => {
      if (data.warn) return console.warn(`hearth: ${data.warn}`);
      const call = calls.get(data.id);
      calls.delete(data.id);
      if (data.error) call?.reject(new Error(data.error));
      else call?.resolve(data.result);
    };
    worker.onerror = (e) => {
      // An error thrown in a running worker carries a message; one that could not be loaded
      // (blocked, missing, no CORS) fires a bare event and will never answer.
      if (e.message) return console.warn(`hearth: worker error: ${e.message}`);
      const instead = blob ? `, or data-worker and worker-src 'self' ${url.origin}` : '';
      fail(`blocked by the page's Content-Security-Policy (it needs worker-src ${needs}${instead}), or a file is missing or served without CORS`);
    };
    call('init', { ...config, gpc, consent, consentAnswered }).catch(() => {}); // every later call reports the same error
    return worker;
  }
  /**
   * @param {string} method
   * @param {...unknown} args
   * @returns {Promise<any>}
   */
  function call(method, ...args) {
    const started = start();
    if (!started || failed) return Promise.reject(failed);
    return new Promise((resolve, reject) => {
      const id = ++seq;
      calls.set(id, { resolve, reject });
      started.postMessage({ id, method, args });
    });
  }

  // ---- the page ------------------------------------------------------------------------------
  /** @param {string} name */
  const meta = (name) =>
    (/** @type {HTMLMetaElement | null} */ (document.querySelector(`meta[name="hearth:${name}"]`))?.content ?? '')
      .split(',').map((s) => s.trim()).filter(Boolean);
  /** @type {{ topics: string[], keywords: string[] }} */
  let page = { topics: [], keywords: [] };
  /** @param {string | undefined} slot */
  const context = (slot) => ({ ...page, slot, hour: new Date().getHours() });

  // ---- rendering -------------------------------------------------------------------------------
  // Each ad is drawn by Hearth's hosted renderer (hearth/frame.html, beside the worker's modules):
  // a document with no inline script or style, so a page's Content-Security-Policy needs only
  // `frame-src` for it. The ad arrives by postMessage; the frame writes it as text and confirms.
  const FRAME = new URL('hearth/frame.html', base).href;
  // How long the first frame may take to confirm its ad before the page is told ads do not render.
  const RENDER_WAIT_MS = 5_000;
  /** @type {Status['rendering']} */
  let rendering = 'none';
  /** @param {string} why */
  function notRendering(why) {
    if (rendering !== 'pending') return; // confirmed already, or said already
    rendering = 'blocked';
    console.warn(`hearth: ads are not rendering in this page: ${why}`);
  }
  // A page whose policy blocks the frame says so at once, by the directive that did it.
  document.addEventListener('securitypolicyviolation', (e) => {
    if (e.disposition === 'enforce' && e.effectiveDirective === 'frame-src' && e.blockedURI && FRAME.startsWith(e.blockedURI)) {
      notRendering(`the page's Content-Security-Policy blocks ${FRAME} (frame-src ${base.origin} is needed)`);
    }
  });

  /** @type {Map<Element, { frame: HTMLIFrameElement, loaded: Promise<unknown>, ad?: RankedAd, rendered?: string, seen?: boolean, visible?: boolean }>} */
  const shown = new Map(); // slot element -> its frame, its ad, the ad the frame confirmed, ...
  // Dismissals the worker could not record (learning is off) are honoured on this page only;
  // the core leaves recorded ones out of every later ranking.
  /** @type {Set<string>} */
  const dismissed = new Set();


  /**
   * @param {HTMLElement} slot
   * @param {RankedAd} ad
   */
  function render(slot, ad) {
    let state = shown.get(slot);
    if (!state) {
      const frame = document.createElement('iframe');
      // No allow-same-origin: the frame is its own opaque origin, away from the page and its
      // cookies. Popups may open the advertiser's page, outside the sandbox.
      frame.setAttribute('sandbox', 'allow-scripts allow-popups allow-popups-to-escape-sandbox');
      frame.setAttribute('title', 'Advertisement');
      frame.referrerPolicy = 'no-referrer'; // the renderer's host never learns which page showed an ad
      frame.src = FRAME;
      state = { frame, loaded: new Promise((r) => frame.addEventListener('load', r, { once: true })) };
      shown.set(slot, state);
      slot.replaceChildren(frame);
      visibility.observe(slot);
      if (rendering === 'none') {
        rendering = 'pending';
        setTimeout(() => notRendering(`no ad frame confirmed its ad within ${RENDER_WAIT_MS / 1000} s (does the page's Content-Security-Policy allow frame-src ${base.origin}?)`), RENDER_WAIT_MS);
      }
    }
    if (state.ad?.ad_id === ad.ad_id) return; // unchanged: no new impression
    Object.assign(state, { ad, seen: false });
    slot.dataset.hearthAd = ad.ad_id;
    state.loaded.then(() => {
      const { title, body, cta, url } = ad.creative;
      // '*': the sandboxed frame's origin is opaque, so no origin can name it; it is this frame's
      // window that receives it.
      state.frame.contentWindow?.postMessage({ ad: { ad_id: ad.ad_id, title, body, cta, url, why: ad.explanation } }, '*');
    });
  }

  // An ad event carries only the ad's id and its slot: the worker adds the rest from its catalog
  // (adFields in hearth/catalog.js), as this classic script cannot import that module.
  /** @param {MeasuredKind} kind */
  const adEvent = (kind) =>
    /**
     * @param {string} adId
     * @param {string} [slot]  the `data-hearth-slot` it was shown in, for measurement
     * @returns {Promise<boolean>}
     */
    (adId, slot) => call('recordAd', kind, adId, Date.now(), slot);
  /** @param {Element} slot */
  const slotName = (slot) => slot.getAttribute('data-hearth-slot') ?? undefined;
  /**
   * @param {MeasuredKind} kind
   * @param {RankedAd} ad
   * @param {Element} slot
   */
  const report = (kind, ad, slot) => adEvent(kind)(ad.ad_id, slotName(slot)).catch((e) => console.warn(`hearth: ${e.message}`));

  // An impression counts once the frame confirmed it drew the ad and half of it has been on screen:
  // a frame the page's policy blocked stays blank, and a blank box is no impression.
  /** @param {Element} slot */
  function seen(slot) {
    const state = shown.get(slot);
    if (!state?.ad || state.seen || !state.visible || state.rendered !== state.ad.ad_id) return;
    state.seen = true;
    report('impression', state.ad, slot);
  }
  const visibility = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const state = shown.get(e.target);
      if (state) state.visible = e.isIntersecting;
      if (e.isIntersecting) seen(e.target);
    }
  }, { threshold: 0.5 });

  addEventListener('message', (e) => {
    for (const [slot, state] of shown) {
      if (e.source !== state.frame.contentWindow || !state.ad) continue;
      const what = e.data?.hearth;
      if (what === 'rendered') {
        // A confirmation of an ad this slot no longer shows changes nothing.
        if (e.data.ad_id !== state.ad.ad_id) continue;
        state.rendered = state.ad.ad_id;
        slot.setAttribute('data-hearth-rendered', state.ad.ad_id); // beside data-hearth-ad: chosen, and drawn
        rendering = 'ok';
        seen(slot);
        continue; // the frame drew it: no visitor action, no hearth:* event
      }
      // A visitor's action on an ad the slot has replaced meanwhile counts for neither ad.
      if (e.data.ad_id !== state.ad.ad_id) continue;
      if (what === 'click') report('click', state.ad, slot);
      if (what === 'dismissal') {
        const adId = state.ad.ad_id;
        report('dismissal', state.ad, slot).then((recorded) => {
          if (!recorded) dismissed.add(adId);
          return fill(/** @type {HTMLElement} */ (slot)); // this slot only: the others keep the ads the visitor is looking at
        }).catch((err) => console.warn(`hearth: ${err.message}`));
      }
      slot.dispatchEvent(new CustomEvent('hearth:' + what, { bubbles: true, detail: { ad_id: state.ad.ad_id } }));
    }
  });

  const slots = () => [.../** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll('[data-hearth-slot]'))];

  /**
   * A slot's caps as its attributes give them (`data-hearth-cap-ad="3/day,2/session"`, `"none"`,
   * read by the worker); a missing attribute keeps the defaults.
   * @param {HTMLElement} slot
   */
  const slotCaps = ({ dataset: { hearthCapAd: ad, hearthCapCampaign: campaign } }) =>
    ({ ...(ad !== undefined && { ad }), ...(campaign !== undefined && { campaign }) });

  // Slots with the same caps share one ranking. Each slot takes the best ad whose advertiser is
  // not on the page yet, in the worker's order: ads within every rule first, then the ads last
  // seen in these slots (the worker remembers them with their impressions), then capped ads.
  // With `only`, that slot alone is filled again (after a dismissal) and the others keep theirs.
  /** @param {HTMLElement} [only] */
  async function fill(only) {
    const all = slots();
    const targets = only ? all.filter((s) => s === only) : all;
    if (!targets.length) return [];
    /** @type {(string | null)[]} */
    const last = await call('lastShown', all.map(slotName));
    const avoid = [...new Set(last.filter((id) => id !== null))];
    // One more than the slots, so that the last of them still has an ad to avoid its own last one.
    const k = all.length + 1 + dismissed.size;
    /** @type {Map<string, Promise<RankedAd[]>>} */
    const rankings = new Map();
    /** @type {Set<string>} */
    const adsOnPage = new Set();
    /** @type {Set<string>} */
    const advertisersOnPage = new Set();
    for (const slot of all) {
      const kept = targets.includes(slot) ? undefined : shown.get(slot)?.ad;
      if (kept) adsOnPage.add(kept.ad_id);
      if (kept?.advertiser !== undefined) advertisersOnPage.add(kept.advertiser);
    }
    /** @type {(RankedAd | undefined)[]} */
    const chosen = [];
    for (const slot of targets) {
      const caps = slotCaps(slot);
      const key = JSON.stringify(caps);
      if (!rankings.has(key)) {
        const options = { k, avoid, caps, diversity: { slots: k, max_per_advertiser: 1 } };
        rankings.set(key, call('rank', context(slot.dataset.hearthSlot), options));
      }
      const free = (await rankings.get(key) ?? []).filter((a) =>
        !dismissed.has(a.ad_id) && !adsOnPage.has(a.ad_id) && !(a.advertiser !== undefined && advertisersOnPage.has(a.advertiser)));
      const ad = free[0];
      chosen.push(ad);
      if (ad) adsOnPage.add(ad.ad_id);
      if (ad?.advertiser !== undefined) advertisersOnPage.add(ad.advertiser);
    }
    // Each frame in a task of its own: a page with many slots never gets one long task.
    for (const [i, slot] of targets.entries()) {
      if (i > 0) await new Promise((r) => setTimeout(r));
      const ad = chosen[i];
      if (ad) render(slot, ad);
    }
    return chosen.filter((a) => a !== undefined);
  }

  // ---- consent (IAB TCF v2.2) -------------------------------------------------------------------
  // With a consent management platform (CMP) on the page, the worker does only what the visitor
  // consented to (HearthConsent in hearth.d.ts); without one, or where it says GDPR does not apply,
  // only Global Privacy Control and optOut() limit it. The CMP's stub must be on the page before
  // this script runs: Hearth looks for the CMP once, when it starts.
  /**
   * The part of a TCF v2.2 TCData that Hearth reads.
   * @typedef {{ gdprApplies?: boolean, eventStatus?: string, purpose?: { consents?: Record<string, boolean> }, vendor?: { consents?: Record<string, boolean> } }} TCData
   * @typedef {(command: string, version: number, callback: (tcData: TCData | null, success: boolean) => void) => void} TcfApi
   */
  /**
   * The page's CMP: its `__tcfapi`, or in a frame without one, calls posted to the ancestor that
   * holds the CMP's `__tcfapiLocator` frame, as the TCF spec has frames reach it.
   * @returns {TcfApi | undefined}
   */
  function findCmp() {
    const direct = /** @type {{ __tcfapi?: unknown }} */ (/** @type {unknown} */ (window)).__tcfapi;
    if (typeof direct === 'function') return /** @type {TcfApi} */ (direct);
    /** @param {Window} w  an ancestor, maybe of another origin: only its child frames' names are readable */
    const hasLocator = (w) => {
      try {
        return Boolean(/** @type {Record<string, unknown>} */ (/** @type {unknown} */ (w.frames)).__tcfapiLocator);
      } catch {
        return false;
      }
    };
    /** @type {Window} */
    let cmp = window;
    while (!hasLocator(cmp)) {
      if (cmp === window.top) return undefined;
      cmp = cmp.parent;
    }
    /** @type {Map<string, Parameters<TcfApi>[2]>} */
    const callbacks = new Map();
    addEventListener('message', (e) => {
      let data = e.data;
      try {
        if (typeof data === 'string') data = JSON.parse(data); // the spec allows calls and answers as JSON text
      } catch {
        return;
      }
      const answer = data?.__tcfapiReturn;
      if (e.source === cmp && answer) callbacks.get(answer.callId)?.(answer.returnValue, answer.success);
    });
    let calls = 0;
    return (command, version, callback) => {
      const callId = `hearth-${++calls}`;
      callbacks.set(callId, callback); // kept: an event listener is answered again on every change
      cmp.postMessage({ __tcfapiCall: { command, version, callId } }, '*');
    };
  }
  const tcfapi = findCmp();
  const vendor = attr('tcf-vendor');
  if (vendor != null && !/^[1-9][0-9]*$/.test(vendor)) {
    console.warn(`hearth: data-tcf-vendor=${JSON.stringify(vendor)} is not a Global Vendor List id (a positive integer): Hearth acts as if its vendor had no consent`);
  }
  /** @type {HearthConsent} */
  const NONE = { storage: false, learn: false, personalize: false, measure: false, train: false };
  /** @type {HearthConsent | null} the worker's gates; null: not gated by a CMP */
  let consent = tcfapi ? NONE : null; // until the CMP answers, nothing
  let consentAnswered = false; // a refusal erases what was stored; "not answered yet" does not
  /**
   * What a CMP's answer allows: each purpose's consent, and the vendor's when data-tcf-vendor
   * names one (legitimate interest is not enough for any of them).
   * @param {TCData} tc
   * @returns {HearthConsent | null}
   */
  function gates(tc) {
    if (tc.gdprApplies === false) return null;
    const vendorAgrees = vendor == null || tc.vendor?.consents?.[vendor] === true;
    /** @param {number} purpose */
    const agreed = (purpose) => vendorAgrees && tc.purpose?.consents?.[purpose] === true;
    const storage = agreed(1);
    return { storage, learn: storage && agreed(3), personalize: storage && agreed(4), measure: storage && agreed(7), train: storage && agreed(3) && agreed(10) };
  }
  if (tcfapi) {
    tcfapi('addEventListener', 2, (tc, success) => {
      if (!success || !tc) return console.warn('hearth: the CMP did not answer addEventListener; nothing is recorded');
      // 'cmpuishown' asks the visitor: the answer is the next 'useractioncomplete'.
      if (tc.gdprApplies !== false && tc.eventStatus !== 'tcloaded' && tc.eventStatus !== 'useractioncomplete') return;
      consent = gates(tc);
      consentAnswered = true;
      // A worker not started yet takes it at init.
      if (worker) call('consent', consent).catch((e) => console.warn(`hearth: ${e.message}`));
      document.dispatchEvent(new CustomEvent('hearth:consent', { bubbles: true, detail: consent }));
    });
  }

  // ---- public API ------------------------------------------------------------------------------
  /** @type {{ resolve: (status: Status) => void, reject: (error: Error) => void }} */
  let ready;
  /** @type {Promise<Status>} */
  const whenReady = new Promise((resolve, reject) => { ready = { resolve, reject }; });
  whenReady.catch(() => {}); // a page that never awaits it sees the warning below, not an error
  /**
   * A command's error, thrown or rejected, is the page's: reported, and the next command runs.
   * @param {HearthCommand} command
   */
  function run(command) {
    /** @param {unknown} e */
    const report = (e) => console.error('hearth: a queued command failed:', e);
    try {
      if (typeof command !== 'function') throw new TypeError(`hearth.push takes functions, not ${typeof command}`);
      const result = /** @type {unknown} */ (command(api));
      if (result instanceof Promise) result.catch(report);
    } catch (e) {
      report(e);
    }
  }
  /** @type {HearthApi} */
  const api = {
    version: '0.1.0',
    ready: whenReady,
    push: (...commands) => commands.forEach(run),
    /** Records what this page is about and makes it the context of the slots. */
    page({ topics = [], keywords = [] } = {}) {
      page = { topics, keywords };
      return call('record', { kind: 'page_view', ts: Date.now(), topics, keywords });
    },
    record: (event) => call('record', event),
    impression: adEvent('impression'),
    click: adEvent('click'),
    conversion: adEvent('conversion'),
    dismiss: adEvent('dismissal'),
    rank: (options = {}) => call('rank', context(options.slot), options),
    fill: () => fill(),
    why: (adId, slot) => call('why', adId, context(slot)),
    profile: () => call('profile'),
    exportProfile: () => call('exportProfile'),
    erase: () => call('erase'),
    optOut: () => call('optOut'),
    optIn: () => call('optIn'),
    status: () => call('status').then((status) => ({ ...status, rendering })),
    participate: () => call('participate', { background: false }),
    privacy: () => call('privacy'),
    scores: (options = {}) => call('scores', context(options.slot), options),
  };
  window.hearth = api;
  if (Array.isArray(queued)) queued.forEach(run);

  // ---- start when the page is idle -----------------------------------------------------------
  /**
   * @param {() => void} fn
   * @param {number} timeout
   */
  const idle = (fn, timeout) =>
    'requestIdleCallback' in window ? requestIdleCallback(fn, { timeout }) : setTimeout(fn, 1);
  async function boot() {
    const status = await api.status();
    const topics = meta('topics');
    if (topics.length) await api.page({ topics, keywords: meta('keywords') });
    await fill();
    document.dispatchEvent(new CustomEvent('hearth:ready', { bubbles: true, detail: status }));
    // Federated participation: at most one attempt per page view, when the page is idle;
    // the worker decides whether this device takes part in the current round.
    idle(() => call('participate', { background: true }).catch((e) => console.warn(`hearth: ${e.message}`)), 10_000);
    return status;
  }
  const go = () => idle(() => boot().then(ready.resolve, (e) => {
    console.warn(`hearth: ${e.message}`);
    ready.reject(e);
  }), 2_000);
  if (document.readyState === 'complete') go();
  else addEventListener('load', go, { once: true });
})();
