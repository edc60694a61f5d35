// @ts-check
// The model pack and the ad catalog: revalidated by ETag on every start and stored, so a device
// that is offline or gets a broken download keeps ranking with what it had.
import { Hearth } from '../pkg/hearth.js';
import { checkCatalog } from './catalog.js';
import { getCached } from './net.js';
import { restoreLocalEmbedding } from './tabs.js';
/** @import { CatalogRecord, Model } from './store.js' */
/** @import { State } from './state.js' */

/** @typedef {Pick<State, 'config' | 'store' | 'warn'>} Sources */

/**
 * @param {Sources} sources
 * @returns {Promise<Model>}
 */
async function loadModel({ config, store, warn }) {
  const cached = await store.get('model');
  const url = new URL('v1/model/manifest.json', config.aggregator).href;
  let manifest;
  try {
    manifest = await getCached(url, cached?.etag, 'text');
  } catch (e) {
    if (!cached) throw e;
    warn(`model check failed (${e.message}); using the stored model`);
  }
  // Unchanged (only the stored model's ETag gets a 304) or offline.
  if (manifest?.body === undefined) return /** @type {Model} */ (cached);
  /** @type {number} */
  const version = JSON.parse(manifest.body).model_version;
  if (cached?.version === version) return cached;
  // Published versions never change, so the graph is fetched by version: no mix of two packs.
  const onnx = await getCached(new URL(`v1/models/${version}/model.onnx`, config.aggregator).href, undefined, 'bytes');
  // Asked without an ETag, so never a 304: the body is there.
  return { version, manifest: manifest.body, onnx: /** @type {Uint8Array} */ (onnx.body), etag: manifest.etag };
}

/**
 * The model, with this device's stored profile on it, on start.
 * @param {Sources} sources
 * @returns {Promise<Pick<State, 'h' | 'profileRev'>>}
 */
export async function openModel(sources) {
  const { store } = sources;
  const model = await loadModel(sources);
  // The revision is read before the profile: a write between the two makes the next sync reload.
  const profileRev = (await store.get('profileRev')) ?? 0;
  const h = new Hearth(model.onnx, model.manifest, (await store.get('profile')) ?? null);
  await restoreLocalEmbedding({ ...sources, h });
  await store.put({ model });
  return { h, profileRev };
}

/**
 * The current model, when a round is for a newer one; the profile and catalog stay.
 * @param {State} state
 */
export async function installModel(state) {
  const model = await loadModel(state);
  if (model.version === state.h.modelVersion) return;
  state.h.setModel(model.onnx, model.manifest);
  await state.store.put({ model });
  state.gpu?.load(state.h);
}

/**
 * The catalog, checked and with its ad side computed on the model.
 * @param {Sources & Pick<State, 'h'>} state
 */
export async function installCatalog({ config, store, warn, h }) {
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
      const catalog = checkCatalog(fetched.body, config.catalog);
      h.setCatalog(catalog.ads);
      await store.put({ catalog: { url: config.catalog, etag: fetched.etag, text: fetched.body } });
      return catalog;
    } catch (e) {
      if (!usable) throw new Error(`invalid catalog: ${e.message}`);
      warn(`invalid catalog refused (${e.message}); keeping the stored one`);
    }
  }
  const catalog = checkCatalog(/** @type {CatalogRecord} */ (usable).text, config.catalog);
  h.setCatalog(catalog.ads);
  return catalog;
}
