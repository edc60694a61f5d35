// @ts-check
// Ranking on the GPU (WebGPU) or on the CPU (tract), and which one a call gets.
import { WebGpuScorer } from '../pkg/hearth.js';
/** @import { PageContext } from '../pkg/hearth.js' */
/** @import { Backend } from '../hearth.js' */
/** @import { State } from './state.js' */

// Catalogs at least this large are scored on the GPU in "auto" mode; below it, tract on the
// CPU is done before a GPU dispatch would be (see target/bench/score.json).
const GPU_MIN_ADS = 4096;

/**
 * @param {State} state
 * @param {Backend} [backend]
 */
export const wantsGpu = ({ config, catalog }, backend) =>
  backend === 'webgpu' || (backend !== 'cpu' && config.gpu !== 'never' && catalog.ads.length >= GPU_MIN_ADS);

/**
 * The WebGPU scorer, started on first need: a page whose rankings all run on the CPU never
 * opens an adapter, which costs the GPU process time and memory while the page loads.
 * @param {State} state
 * @returns {Promise<WebGpuScorer | undefined>} undefined without WebGPU or an adapter
 */
export function gpuScorer(state) {
  if (state.config.gpu === 'never' || state.catalog.ads.length === 0) return Promise.resolve(undefined);
  state.gpuStart ??= WebGpuScorer.create().then(
    (scorer) => {
      scorer?.load(state.h);
      return (state.gpu = scorer);
    },
    (e) => {
      state.warn(`WebGPU unavailable: ${e.message}`);
      return undefined;
    },
  );
  return state.gpuStart;
}

/**
 * The GPU scorer this ranking should use, or undefined for tract on the CPU.
 * @param {State} state
 * @param {Backend} [backend]
 */
export async function scorerFor(state, backend) {
  if (!wantsGpu(state, backend)) return undefined;
  const scorer = await gpuScorer(state);
  if (!scorer && backend === 'webgpu') throw new Error('no WebGPU adapter');
  return scorer;
}

/**
 * The logits of the whole catalog, on the backend `backend` leads to.
 * @param {State} state
 * @param {PageContext} context
 * @param {number} now
 * @param {Backend} [backend]
 */
export async function scoreCatalog(state, context, now, backend) {
  const scorer = await scorerFor(state, backend);
  if (!scorer) return { backend: 'cpu', logits: state.h.catalogLogits(context, now) };
  return { backend: 'webgpu', logits: await scorer.logits(state.h.gpuRequest(context, now)) };
}
