// onnxruntime-web as the reference engine: the bench page and the parity test
// both run model.onnx through it, fed with Hearth's own model inputs.

/** ort's wasm build, one thread, SIMD, served under /ort/ (tests/support/serve.mjs). */
export async function loadOrt() {
  const ort = await import('/ort/ort.wasm.min.mjs');
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.simd = true;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = '/ort/';
  return ort;
}

/** The feeds of model.onnx from `hearth.modelInputs(...)`. */
export function ortFeeds(ort, m) {
  const t = (type, data, dims) => new ort.Tensor(type, data, dims);
  return {
    user_ids: t('int64', m.user_ids, [1, m.user_slots]),
    user_w: t('float32', m.user_w, [1, m.user_slots]),
    local_u: t('float32', m.local_u, [1, m.dim]),
    ctx_ids: t('int64', m.ctx_ids, [1, m.context_slots]),
    ctx_w: t('float32', m.ctx_w, [1, m.context_slots]),
    ad_ids: t('int64', m.ad_ids, [m.n, m.ad_slots]),
    ad_w: t('float32', m.ad_w, [m.n, m.ad_slots]),
  };
}
