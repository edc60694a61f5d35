// @ts-check
// Hearth publisher snippet: on-device ad personalization in one script tag.
//
//   <script async src="https://cdn.example/hearth/hearth.js"
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
/** @import { HearthApi, MeasuredKind, RankedAd, Status } from './hearth' */
(() => {
  'use strict';
  if (window.hearth?.version) return; // included twice

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
    if (worker) return worker;
    const url = new URL('hearth/worker.js', base);
    // A worker must come from the page's origin; a snippet on a CDN starts one that imports it
    // (its files must then be served with CORS).
    const src = url.origin === location.origin
      ? url
      : URL.createObjectURL(new Blob([`import ${JSON.stringify(url.href)};`], { type: 'text/javascript' }));
    worker = new Worker(src, { type: 'module', name: 'hearth' });
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
      failed = new Error(`could not start the worker from ${url.href}`);
      worker?.terminate();
      for (const c of calls.values()) c.reject(failed);
      calls.clear();
    };
    call('init', { ...config, gpc }).catch(() => {}); // every later call reports the same error
    return worker;
  }
  /**
   * @param {string} method
   * @param {...unknown} args
   * @returns {Promise<any>}
   */
  function call(method, ...args) {
    const started = start();
    if (failed) return Promise.reject(failed);
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
  // The frame's own fixed renderer; the ad arrives by postMessage and is written as text.
  const FRAME = `<!doctype html><meta charset="utf-8"><style>
body{margin:0;font:14px/1.35 system-ui,sans-serif;color:#1d1d1f;background:#fbfaf7}
a.ad{display:block;height:100vh;box-sizing:border-box;padding:10px 12px;color:inherit;text-decoration:none;border:1px solid #ddd8cc;border-radius:6px}
.t{font-weight:600;font-size:15px;margin:0 40px 4px 0}.b{margin:0 0 8px;color:#444}.c{display:inline-block;padding:3px 10px;border-radius:4px;background:#2f5d50;color:#fff}
.s{position:absolute;top:6px;right:8px;font-size:11px;color:#777}.s button{font:inherit;border:0;background:none;color:#777;cursor:pointer;padding:0 2px}
.w{position:absolute;inset:0;background:#fff;padding:10px 12px;overflow:auto;font-size:12px}.w[hidden]{display:none}
</style><a class="ad" target="_blank" rel="noopener noreferrer"><p class="t"></p><p class="b"></p><span class="c"></span></a>
<span class="s">Ad <button class="i" title="Why this ad?">ⓘ</button><button class="x" title="Not interested">×</button></span>
<div class="w" hidden><p><b>Why this ad?</b></p><p class="r"></p><p>Chosen in your browser from what you read here. Nothing about you left this device. <button class="close">Close</button></p></div>
<script>
const $ = (s) => document.querySelector(s);
const send = (type) => parent.postMessage({ hearth: type }, '*');
addEventListener('message', (e) => {
  if (e.source !== parent || !e.data || !e.data.ad) return;
  const { title, body, cta, url, why } = e.data.ad;
  $('.t').textContent = title; $('.b').textContent = body; $('.c').textContent = cta;
  if (/^https?:/i.test(url)) $('.ad').href = url;
  $('.r').textContent = why;
});
$('.ad').addEventListener('click', () => send('click'));
$('.x').addEventListener('click', () => send('dismissal'));
$('.i').addEventListener('click', () => { $('.w').hidden = false; send('why'); });
$('.close').addEventListener('click', () => { $('.w').hidden = true; });
<\/script>`;

  /** @type {Map<Element, { frame: HTMLIFrameElement, loaded: Promise<unknown>, ad?: RankedAd, seen?: boolean, visible?: boolean }>} */
  const shown = new Map(); // slot element -> {ad, frame, seen}
  /** @type {Set<string>} */
  const dismissed = new Set();

  /** @param {RankedAd} ad */
  function whyText(ad) {
    const up = ad.why.filter((w) => w.contribution > 0).map((w) => w.feature.replace(/^[a-z]+:/, ''));
    return up.length ? `Related to what you have read: ${up.join(', ')}.` : 'Matches the topic of this page.';
  }

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
      frame.srcdoc = FRAME;
      state = { frame, loaded: new Promise((r) => frame.addEventListener('load', r, { once: true })) };
      shown.set(slot, state);
      slot.replaceChildren(frame);
      visibility.observe(slot);
    }
    if (state.ad?.ad_id === ad.ad_id) return; // unchanged: no new impression
    Object.assign(state, { ad, seen: false });
    slot.dataset.hearthAd = ad.ad_id;
    state.loaded.then(() => {
      const { title, body, cta, url } = ad.creative;
      state.frame.contentWindow?.postMessage({ ad: { title, body, cta, url, why: whyText(ad) } }, '*');
      if (state.visible) seen(slot);
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

  // An impression counts once half the ad has been on screen.
  /** @param {Element} slot */
  function seen(slot) {
    const state = shown.get(slot);
    if (!state?.ad || state.seen) return;
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
      if (what === 'click') report('click', state.ad, slot);
      if (what === 'dismissal') {
        dismissed.add(state.ad.ad_id);
        report('dismissal', state.ad, slot).then(() => fill());
      }
      slot.dispatchEvent(new CustomEvent('hearth:' + what, { bubbles: true, detail: { ad_id: state.ad.ad_id } }));
    }
  });

  const slots = () => [.../** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll('[data-hearth-slot]'))];

  // One ranking for all slots, so two slots never show the same advertiser.
  async function fill() {
    const all = slots();
    if (!all.length) return [];
    /** @type {RankedAd[]} */
    const ranked = await call('rank', context(all[0].dataset.hearthSlot), {
      k: all.length + dismissed.size,
      diversity: { slots: all.length + dismissed.size, max_per_advertiser: 1 },
    });
    const ads = ranked.filter((a) => !dismissed.has(a.ad_id));
    // Each frame in a task of its own: a page with many slots never gets one long task.
    for (const [i, slot] of all.entries()) {
      if (i > 0) await new Promise((r) => setTimeout(r));
      if (ads[i]) render(slot, ads[i]);
    }
    return ads.slice(0, all.length);
  }

  // ---- public API ------------------------------------------------------------------------------
  /** @type {{ resolve: (status: Status) => void, reject: (error: Error) => void }} */
  let ready;
  /** @type {Promise<Status>} */
  const whenReady = new Promise((resolve, reject) => { ready = { resolve, reject }; });
  whenReady.catch(() => {}); // a page that never awaits it sees the warning below, not an error
  /** @type {HearthApi} */
  const api = {
    version: '0.1.0',
    ready: whenReady,
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
    fill,
    why: (adId, slot) => call('why', adId, context(slot)),
    profile: () => call('profile'),
    exportProfile: () => call('exportProfile'),
    erase: () => call('erase'),
    optOut: () => call('optOut'),
    optIn: () => call('optIn'),
    status: () => call('status'),
    participate: () => call('participate', { background: false }),
    privacy: () => call('privacy'),
    scores: (options = {}) => call('scores', context(options.slot), options),
  };
  window.hearth = api;

  // ---- start when the page is idle -----------------------------------------------------------
  /**
   * @param {() => void} fn
   * @param {number} timeout
   */
  const idle = (fn, timeout) =>
    'requestIdleCallback' in window ? requestIdleCallback(fn, { timeout }) : setTimeout(fn, 1);
  async function boot() {
    const status = await call('status');
    const topics = meta('topics');
    if (topics.length) await api.page({ topics, keywords: meta('keywords') });
    await fill();
    document.dispatchEvent(new CustomEvent('hearth:ready', { detail: status }));
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
