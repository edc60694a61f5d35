// Hearth's dedicated worker: everything that costs time or touches the profile runs here, off
// the publisher's main thread. It owns the wasm module (hearth-core), the IndexedDB store, the
// model and catalog downloads, ranking (tract on the CPU, or WebGPU) and federated rounds.
// The snippet (../hearth.js) talks to it by messages: {id, method, args} -> {id, result|error}.
import init, { Hearth, WebGpuScorer } from '../pkg/hearth.js';
import { Store } from './store.js';
import { checkCatalog } from './catalog.js';
import { getCached } from './net.js';
import { participate } from './participate.js';

// Catalogs at least this large are scored on the GPU in "auto" mode; below it, tract on the
// CPU is done before a GPU dispatch would be (see target/bench/score.json).
const GPU_MIN_ADS = 4096;

const warn = (message) => postMessage({ warn: message });

let config; // {aggregator, catalog, gpu, gpc}
let store;
let h; // Hearth: model + profile + catalog
let catalog; // {ads, creatives, byId}
let gpu; // WebGpuScorer once started: only when ranking asks for it
let gpuStart; // its start, a Promise of the scorer or undefined without an adapter
let settings = { optedOut: false };

// Neither learning nor uploads with Global Privacy Control or after an opt-out.
const blocked = () => config.gpc || settings.optedOut;

async function loadModel() {
  const cached = await store.get('model');
  const url = new URL('v1/model/manifest.json', config.aggregator).href;
  let manifest;
  try {
    manifest = await getCached(url, cached?.etag, 'text');
  } catch (e) {
    if (!cached) throw e;
    warn(`model check failed (${e.message}); using the stored model`);
  }
  if (manifest === undefined || manifest.body === undefined) return cached; // unchanged or offline
  const version = JSON.parse(manifest.body).model_version;
  if (cached?.version === version) return cached;
  // Published versions never change, so the graph is fetched by version: no mix of two packs.
  const onnx = await getCached(new URL(`v1/models/${version}/model.onnx`, config.aggregator).href, undefined, 'bytes');
  return { version, manifest: manifest.body, onnx: onnx.body, etag: manifest.etag };
}

async function installModel() {
  const model = await loadModel();
  if (h && model.version === h.modelVersion) return;
  if (h) h.setModel(model.onnx, model.manifest);
  else {
    profileRev = (await store.get('profileRev')) ?? 0;
    h = new Hearth(model.onnx, model.manifest, (await store.get('profile')) ?? null);
    await restoreLocalEmbedding();
  }
  await store.put({ model });
  gpu?.load(h);
}

async function installCatalog() {
  const cached = await store.get('catalog');
  const usable = cached?.url === config.catalog ? cached : undefined;
  let fetched;
  try {
    fetched = await getCached(config.catalog, usable?.etag, 'text');
  } catch (e) {
    if (!usable) throw e;
    warn(`catalog check failed (${e.message}); using the stored catalog`);
  }
  if (fetched?.body !== undefined) {
    try {
      catalog = checkCatalog(fetched.body, config.catalog);
      h.setCatalog(catalog.ads);
      await store.put({ catalog: { url: config.catalog, etag: fetched.etag, text: fetched.body } });
      return;
    } catch (e) {
      if (!usable) throw new Error(`invalid catalog: ${e.message}`);
      warn(`invalid catalog refused (${e.message}); keeping the stored one`);
    }
  }
  catalog = checkCatalog(usable.text, config.catalog);
  h.setCatalog(catalog.ads);
}

async function start(cfg) {
  config = cfg;
  if (!config.catalog) throw new Error('the script tag has no data-catalog');
  store = await Store.open(warn);
  await init({ module_or_path: new URL('../pkg/hearth_bg.wasm', import.meta.url) });
  await installModel();
  await installCatalog();
  if (wantsGpu('auto')) gpuScorer(); // started now, so the first ranking need not wait for it
}

// The WebGPU scorer, started on first need: a page whose rankings all run on the CPU never
// opens an adapter, which costs the GPU process time and memory while the page loads.
function gpuScorer() {
  if (config.gpu === 'never' || catalog.ads.length === 0) return Promise.resolve(undefined);
  gpuStart ??= WebGpuScorer.create().then(
    (scorer) => {
      scorer.load(h);
      return (gpu = scorer);
    },
    (e) => warn(`WebGPU unavailable: ${e.message}`),
  );
  return gpuStart;
}

// Tabs of one device share the stored profile, local embedding and settings; `profileRev`
// counts writes of the first two. A tab whose copy is behind reloads it before it uses it, and
// every change happens under a lock on the latest copy and is written back before the lock is
// released, so no tab overwrites another's events or training.
let profileRev = 0;

async function sync() {
  settings = (await store.get('settings')) ?? settings;
  const rev = (await store.get('profileRev')) ?? 0;
  if (rev === profileRev) return;
  h.loadProfile((await store.get('profile')) ?? null);
  await restoreLocalEmbedding();
  profileRev = rev;
}

// The embedding local training fitted (what the device learned from its clicks), as stored; one
// the model cannot take (another width after a model change) is dropped and training refits it.
async function restoreLocalEmbedding() {
  const stored = await store.get('localU');
  if (!stored) return;
  try {
    h.setLocalEmbedding(stored);
  } catch (e) {
    warn(`stored local embedding dropped: ${e.message}`);
    await store.delete('localU');
  }
}

function changeProfile(change, extra = {}) {
  return navigator.locks.request('hearth-profile', async () => {
    await sync();
    const result = change();
    await store.put({ profile: h.exportProfile(), localU: h.localEmbedding(), profileRev: profileRev + 1, ...extra });
    profileRev += 1;
    return result;
  });
}

const wantsGpu = (backend) =>
  backend === 'webgpu' || (backend !== 'cpu' && config.gpu !== 'never' && catalog.ads.length >= GPU_MIN_ADS);

// The GPU scorer this ranking should use, or undefined for tract on the CPU.
async function scorerFor(backend) {
  if (!wantsGpu(backend)) return undefined;
  const scorer = await gpuScorer();
  if (!scorer && backend === 'webgpu') throw new Error('no WebGPU adapter');
  return scorer;
}

async function scoreCatalog(context, now, backend) {
  const scorer = await scorerFor(backend);
  if (!scorer) return { backend: 'cpu', logits: h.catalogLogits(context, now) };
  return { backend: 'webgpu', logits: await scorer.logits(h.gpuRequest(context, now)) };
}

function withCreative(ranked) {
  return ranked.map((r) => {
    const { campaign, advertiser, category } = catalog.byId.get(r.ad_id);
    return { ...r, campaign, advertiser, category, creative: catalog.creatives[r.ad_id] };
  });
}

const methods = {
  async record(event) {
    await sync();
    if (blocked()) return false;
    await changeProfile(() => h.record(event));
    return true;
  },
  async recordAd(kind, adId, ts) {
    const ad = catalog.byId.get(adId);
    if (!ad) throw new Error(`no ad ${JSON.stringify(adId)} in the catalog`);
    return methods.record({ kind, ts, ad_id: ad.id, campaign: ad.campaign, advertiser: ad.advertiser, category: ad.category });
  },
  async rank(context, { k = 1, explain = 5, diversity, caps, backend } = {}) {
    await sync();
    // Absent options stay absent: the module reads `undefined` as a value, not as "default".
    const opts = Object.fromEntries(Object.entries({ now_ms: Date.now(), k, explain, diversity, caps }).filter(([, v]) => v !== undefined));
    const scorer = await scorerFor(backend);
    if (!scorer) return withCreative(h.rank(context, opts));
    return withCreative(h.rankScored(context, opts, await scorer.logits(h.gpuRequest(context, opts.now_ms))));
  },
  async why(adId, context) {
    const ad = catalog.byId.get(adId);
    if (!ad) throw new Error(`no ad ${JSON.stringify(adId)} in the catalog`);
    return withCreative(h.rankCandidates(context, [ad], { now_ms: Date.now(), k: 1, explain: 10 }))[0];
  },
  // Raw logits of the whole catalog on one backend, with the time they took.
  async scores(context, { backend = 'auto' } = {}) {
    const t0 = performance.now();
    const { backend: used, logits } = await scoreCatalog(context, Date.now(), backend);
    return { backend: used, logits: Array.from(logits), ms: performance.now() - t0 };
  },
  async profile() {
    await sync();
    const doc = JSON.parse(h.exportProfile());
    return {
      events: doc.events,
      weights: h.weights(Date.now()),
      localEmbedding: Array.from(h.localEmbedding()),
      config: doc.config,
      optedOut: settings.optedOut,
      gpc: config.gpc,
    };
  },
  async exportProfile() {
    await sync();
    return h.exportProfile();
  },
  async erase() {
    await changeProfile(() => h.eraseProfile());
    await store.delete('rounds'); // nothing pending may leave after an erase
  },
  async optOut() {
    settings = { optedOut: true };
    await changeProfile(() => h.eraseProfile(), { settings });
    await store.delete('rounds');
  },
  async optIn() {
    settings = { optedOut: false };
    await store.put({ settings });
  },
  async status() {
    await sync();
    return {
      optedOut: settings.optedOut,
      gpc: config.gpc,
      modelVersion: h.modelVersion,
      ads: catalog.ads.length,
      webgpu: gpu ? gpu.adapter : null,
      labelledEvents: h.labelledEvents(),
    };
  },
  async participate(options) {
    await sync();
    // Training refits the local embedding: under the profile lock, on the latest profile, and
    // stored with it.
    const train = (task) => changeProfile(() => h.trainAndBuildUpdate(task));
    return participate({ h, store, config, warn, blocked, train, refreshModel: installModel }, options);
  },
};

let started;
self.onmessage = async ({ data: { id, method, args } }) => {
  try {
    let result;
    if (method === 'init') result = await (started = start(...args));
    else {
      await started;
      if (!Object.hasOwn(methods, method)) throw new Error(`unknown method ${method}`);
      result = await methods[method](...args);
    }
    postMessage({ id, result });
  } catch (e) {
    postMessage({ id, error: e?.message ?? String(e) });
  }
};
