// @ts-check
// Hearth's dedicated worker: everything that costs time or touches the profile runs here, off
// the publisher's main thread. It owns the wasm module (hearth-core), the IndexedDB store, the
// model and catalog downloads (model.js), ranking on the CPU or WebGPU (gpu.js), the profile
// shared with other tabs (tabs.js), federated rounds (participate.js) and measurement's tallies
// and reports (measure.js), all on one state (state.js). The snippet (../hearth.js) talks to it by
// messages (rpc.js).
import init from '../pkg/hearth.js';
import { applyConsent, openStore } from './consent.js';
import { gpuScorer, wantsGpu } from './gpu.js';
import { resume } from './measure.js';
import { installCatalog, openModel } from './model.js';
import { serve, warn } from './rpc.js';
import { createState } from './state.js';

serve(async (config) => {
  if (!config.catalog) throw new Error('the script tag has no data-catalog');
  const store = await openStore(config.consent, warn); // IndexedDB only with consent to storage
  await init({ module_or_path: new URL('../pkg/hearth_bg.wasm', import.meta.url) });
  const sources = { config, store, warn };
  const { h, profileRev } = await openModel(sources);
  const state = createState({ ...sources, h, profileRev, catalog: await installCatalog({ ...sources, h }) });
  // A purpose withdrawn while no page ran Hearth: what it kept goes before anything uses it.
  await applyConsent(state, config.consent, config.consentAnswered);
  if (wantsGpu(state, 'auto')) gpuScorer(state); // started now, so the first ranking need not wait for it
  resume(state).catch((e) => warn(`measurement: ${e.message}`)); // a report due waits for its moment
  return state;
});
