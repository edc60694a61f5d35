// Browser benchmark page. Modes: ?mode=full (the default), ?mode=cold, ?mode=cold-ort, ?mode=gpu, ?mode=train,
// ?mode=secagg and ?mode=measure;
// the outcome is published on window.__bench = {status: 'running'|'done'|'error', result|error}
// for scripts/bench.mjs (Playwright) and printed on the page for humans.
//
// full: in one page, loads the Hearth wasm module and onnxruntime-web (wasm EP,
//   1 thread, SIMD) on the same models/default/model.onnx, then for each catalog
//   size N times
//     tract-wasm:   hearth.rank(context, {now_ms, k: 10})   (features, model, top-10, all in wasm)
//     ort-web-wasm: session.run(feeds) + top-10 in JS, with feeds = hearth.modelInputs(...)
//                   built once outside the timed loop
//   and checks the ort logits against hearth.catalogLogits.
// cold: from just before importing the module to the first ranking of a 1000-ad
//   catalog: JS + wasm fetch, compile/instantiate, model fetch + load,
//   profile + setCatalog(1000), first rank.
// cold-ort: the same for onnxruntime-web (see coldOrt).
import {
  BENCH_SECAGG, NOW, benchContext, benchTask, benchUntrainedSecAggTask, benchUntrainedTask, syntheticCatalog,
  syntheticLocalEvents, syntheticProfileEvents,
} from './workload.mjs';
import { loadOrt, ortFeeds } from './ort.mjs';

const SIZES = [100, 1000, 10000];
const K = 10;
const out = document.getElementById('out');
const say = (line) => {
  out.textContent += line + '\n';
};

async function fetchPack(dir = '/models/default') {
  const get = async (path) => {
    const res = await fetch(`${dir}/${path}`);
    if (!res.ok) throw new Error(`GET ${dir}/${path}: ${res.status}`);
    return res;
  };
  const [onnx, manifest] = await Promise.all([
    get('model.onnx').then((r) => r.arrayBuffer()).then((b) => new Uint8Array(b)),
    get('manifest.json').then((r) => r.text()),
  ]);
  return { onnx, manifest };
}

// Same percentile rule as xtask/src/bench.rs: nearest rank on the sorted samples.
const percentile = (sorted, p) => sorted[Math.round((sorted.length - 1) * p)];

// Warm-up, then at least 20 samples and about 1 s (at most 2000 samples).
// The warm-up is long (>= 0.5 s) because Chromium compiles wasm with a baseline
// compiler first and tiers hot functions up to TurboFan in the background; a
// short warm-up leaves that compilation inside the measured samples.
async function time(fn) {
  const warm = performance.now();
  for (let i = 0; i < 5 || performance.now() - warm < 500; i++) await fn();
  const samples = [];
  const start = performance.now();
  while (samples.length < 20 || (performance.now() - start < 1000 && samples.length < 2000)) {
    const t = performance.now();
    await fn();
    samples.push(performance.now() - t);
  }
  samples.sort((a, b) => a - b);
  return { p50: percentile(samples, 0.5), p95: percentile(samples, 0.95), samples: samples.length };
}

// Indices of the k largest values, best first (partial selection, O(n k)).
function topK(values, k) {
  const best = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (best.length === k && v <= values[best[k - 1]]) continue;
    let j = Math.min(best.length, k - 1);
    while (j > 0 && values[best[j - 1]] < v) {
      best[j] = best[j - 1];
      j--;
    }
    best[j] = i;
  }
  return best;
}

async function full() {
  const { default: init, Hearth } = await import('/pkg/hearth.js');
  await init();
  const pack = await fetchPack();
  const ort = await loadOrt();
  // ort gets its own copy: the model bytes are handed to its wasm heap.
  const session = await ort.InferenceSession.create(pack.onnx.slice(), {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
  const hearth = new Hearth(pack.onnx, pack.manifest);
  for (const e of syntheticProfileEvents()) hearth.record(e);
  const context = benchContext();

  const rows = [];
  for (const n of SIZES) {
    if (hearth.setCatalog(syntheticCatalog(n)) !== n) throw new Error(`setCatalog(${n}) did not take ${n} ads`);
    const tract = await time(() => hearth.rank(context, { now_ms: NOW, k: K }));

    const inputs = hearth.modelInputs(context, NOW);
    if (inputs.n !== n) throw new Error(`modelInputs.n = ${inputs.n}, expected ${n}`);
    const feeds = ortFeeds(ort, inputs);
    const ortRank = async () => topK((await session.run(feeds)).logits.data, K);
    const ortT = await time(ortRank);

    // Parity: same logits, and the same top-10 set as the plain top-k of hearth's logits.
    const reference = hearth.catalogLogits(context, NOW);
    const logits = (await session.run(feeds)).logits.data;
    if (logits.length !== n || reference.length !== n) throw new Error(`logit count: ort ${logits.length}, hearth ${reference.length}, n ${n}`);
    let maxAbsDiff = 0;
    for (let i = 0; i < n; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(logits[i] - reference[i]));
    rows.push({ n, tract, ort: ortT, maxAbsDiff });
    say(`n=${n}: tract-wasm p50 ${tract.p50.toFixed(3)} ms p95 ${tract.p95.toFixed(3)} ms | ` +
      `ort-web-wasm p50 ${ortT.p50.toFixed(3)} ms p95 ${ortT.p95.toFixed(3)} ms | max |Δlogit| ${maxAbsDiff.toExponential(2)}`);
  }
  await session.release();
  return { rows, ortWasm: wasmFilesUnder('/ort/'), crossOriginIsolated };
}

// Which .wasm files this page actually fetched under a path prefix.
function wasmFilesUnder(prefix) {
  return performance
    .getEntriesByType('resource')
    .map((e) => new URL(e.name).pathname)
    .filter((p) => p.startsWith(prefix) && p.endsWith('.wasm'));
}

async function cold() {
  const catalog = syntheticCatalog(1000); // built outside the timed span
  const events = syntheticProfileEvents();
  const t0 = performance.now();
  const { default: init, Hearth } = await import('/pkg/hearth.js');
  await init();
  const t1 = performance.now();
  const pack = await fetchPack();
  const hearth = new Hearth(pack.onnx, pack.manifest);
  const t2 = performance.now();
  for (const e of events) hearth.record(e);
  hearth.setCatalog(catalog);
  const t3 = performance.now();
  const ranked = hearth.rank(benchContext(), { now_ms: NOW, k: K });
  const t4 = performance.now();
  if (ranked.length !== K) throw new Error(`first rank returned ${ranked.length} ads`);
  const phases = { module: t1 - t0, model: t2 - t1, catalog: t3 - t2, first_rank: t4 - t3 };
  say(`cold start ${(t4 - t0).toFixed(1)} ms: ` + Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', '));
  return { cold_start: t4 - t0, phases, crossOriginIsolated };
}

// The same span for onnxruntime-web: ort module fetch + instantiate, session from the same
// model.onnx, first inference of the 1000-ad batch and its top-10. Its inputs come from the
// Hearth module, loaded and computed before the timed span.
async function coldOrt() {
  const { default: init, Hearth } = await import('/pkg/hearth.js');
  await init();
  const pack = await fetchPack();
  const hearth = new Hearth(pack.onnx, pack.manifest);
  for (const e of syntheticProfileEvents()) hearth.record(e);
  hearth.setCatalog(syntheticCatalog(1000));
  const inputs = hearth.modelInputs(benchContext(), NOW);
  const t0 = performance.now();
  const ort = await loadOrt();
  const t1 = performance.now();
  const onnx = new Uint8Array(await (await fetch('/models/default/model.onnx')).arrayBuffer());
  const session = await ort.InferenceSession.create(onnx, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const t2 = performance.now();
  const best = topK((await session.run(ortFeeds(ort, inputs))).logits.data, K);
  const t3 = performance.now();
  if (best.length !== K) throw new Error(`first ort ranking returned ${best.length} ads`);
  const phases = { module: t1 - t0, model: t2 - t1, first_rank: t3 - t2 };
  say(`ort cold start ${(t3 - t0).toFixed(1)} ms: ` + Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', '));
  return { cold_start: t3 - t0, phases, crossOriginIsolated };
}

// train: one local training + update build (trainAndBuildUpdate) at 100, 1,000 and 10,000
// local events, each run on a fresh Hearth whose profile holds exactly those events.
async function train() {
  const { default: init, Hearth } = await import('/pkg/hearth.js');
  await init();
  const pack = await fetchPack();
  const catalog = syntheticCatalog(200);
  const rows = [];
  for (const n of [100, 1000, 10000]) {
    const events = syntheticLocalEvents(n);
    const profile = JSON.stringify({
      format: 'hearth-profile', version: 1,
      config: { half_life_ms: 14 * 86_400_000, max_events: Math.max(n, 5000), max_features: 1000 },
      events: [], features: {},
    });
    const samples = [];
    for (let run = 0; run < (n >= 10000 ? 3 : 7); run++) {
      const hearth = new Hearth(pack.onnx, pack.manifest, profile);
      for (const e of events) hearth.record(e);
      hearth.setCatalog(catalog);
      const kept = JSON.parse(hearth.exportProfile()).events.length;
      if (kept !== n) throw new Error(`profile kept ${kept} of ${n} events`);
      const t = performance.now();
      const bytes = hearth.trainAndBuildUpdate(benchTask('f32'));
      samples.push(performance.now() - t);
      if (!(bytes.length > 0)) throw new Error('empty upload');
      hearth.free();
    }
    samples.sort((a, b) => a - b);
    rows.push({ n, train_update: samples[Math.floor((samples.length - 1) / 2)] });
    say(`train + update, ${n} events: ${rows.at(-1).train_update.toFixed(1)} ms`);
  }
  return { rows };
}

// secagg: the device's cost of building one upload, training excluded, for a secure-aggregation
// report (takePart: clip, quantize, the device's discrete Gaussian, the leader's share, the seed
// sealed to the helper, encode) and for today's f32 update (trainAndBuildUpdate). The module
// has no export that builds an upload from a given delta, so both run on a Hearth with no
// events under a task with no training steps: what is timed is the build on a zero delta (its
// cost does not depend on the values) plus the call's own bookkeeping, which `xtask
// bench-train` measures natively both ways (participate_untrained against secagg_share). The
// helper's configuration carries a fresh X25519 key from WebCrypto, as a helper would serve.
async function secagg() {
  const { default: init, Hearth } = await import('/pkg/hearth.js');
  await init();
  const pack = await fetchPack();
  const helper = await benchHelperConfig();
  const hearth = new Hearth(pack.onnx, pack.manifest);
  hearth.setCatalog(syntheticCatalog(200));
  const reportTask = benchUntrainedSecAggTask();
  const updateTask = benchUntrainedTask();
  // The same round without the device's own noise (a leader's devices may add none).
  const quietTask = { ...reportTask, noise_multiplier: 0 };
  const takePart = (task = reportTask) => {
    // A fresh ledger every time: the budget check runs, and no round is ever spent.
    const taken = hearth.takePart(task, helper, null, null);
    if (taken.status !== 'joined' || !taken.upload) throw new Error(`takePart: ${taken.status}`);
    return taken;
  };
  const first = takePart();
  if (first.contentType !== 'application/vnd.hearth.report') throw new Error(`takePart uploads ${first.contentType}`);
  const reportBytes = first.upload.length;
  const updateBytes = hearth.trainAndBuildUpdate(updateTask).length;
  const report = await time(() => takePart());
  const quiet = await time(() => takePart(quietTask));
  const update = await time(() => hearth.trainAndBuildUpdate(updateTask));
  say(`secagg report (takePart, no training): p50 ${report.p50.toFixed(2)} ms, ${reportBytes} bytes; ` +
    `without the device's noise ${quiet.p50.toFixed(2)} ms | ` +
    `f32 update (trainAndBuildUpdate, no training): p50 ${update.p50.toFixed(2)} ms, ${updateBytes} bytes`);
  return { report, quiet, update, reportBytes, updateBytes };
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

// What a helper of BENCH_SECAGG serves (HelperConfig), for a fresh X25519 key.
async function benchHelperConfig() {
  const pair = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']));
  const publicKey = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  return {
    hpke: { key_id: 1, kem: 'DHKEM(X25519, HKDF-SHA256)', kdf: 'HKDF-SHA256', aead: 'ChaCha20Poly1305', public_key: hex(publicKey) },
    noise_multiplier: BENCH_SECAGG.helper_noise,
    min_clients: BENCH_SECAGG.clients,
  };
}

// measure: a private-measurement report, built in wasm as the SDK's worker builds it
// (`measureReport`: the task document checked and its id recomputed, the tally's measurement,
// Prio3SumVec shard, HPKE to the leader and to the helper, DAP encoding), at each task size of
// the fixture `xtask bench-measure` wrote (tasks, tally and both servers' HPKE configuration
// lists, the same the native figures used), which scripts/bench.mjs puts in
// window.__measureFixture before the page loads. The task check alone (`measureTask`) is timed
// too: it is part of every report's build here and not of the native figure.
async function measure() {
  const fixture = /** @type {any} */ (window).__measureFixture;
  if (!fixture) throw new Error('no measurement fixture (scripts/bench.mjs passes the one xtask bench-measure writes)');
  const { default: init, measureReport, measureTask } = await import('/pkg/hearth.js');
  await init();
  const unhex = (/** @type {string} */ s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
  const rows = [];
  for (const { campaigns, task, report_size, leader_configs, helper_configs } of fixture.rows) {
    const [leader, helper] = [unhex(leader_configs), unhex(helper_configs)];
    const build = () => measureReport(task, fixture.tally, leader, helper, null);
    const bytes = build().length;
    if (bytes !== report_size) throw new Error(`${campaigns} campaigns: a ${bytes}-byte report, natively ${report_size}`);
    const report = await time(build);
    const check = await time(() => measureTask(task, null));
    rows.push({ campaigns, report, check, bytes });
    say(`${campaigns} campaigns: measureReport p50 ${report.p50.toFixed(2)} ms (of which the task check ${check.p50.toFixed(2)} ms), ${bytes} bytes`);
  }
  return { rows };
}

// gpu: whole-catalog logits, WebGPU (wgpu + WGSL, ad side resident on the GPU) against tract on
// the CPU, in the same page, at 1,000 and 10,000 ads. Headless Chromium's adapter is SwiftShader,
// a CPU emulation of a GPU: these figures check the path, they say nothing of a real GPU's speed.
async function gpu() {
  const { default: init, Hearth, WebGpuScorer } = await import('/pkg/hearth.js');
  await init();
  const pack = await fetchPack();
  const scorer = await WebGpuScorer.create();
  if (!scorer) throw new Error('no WebGPU adapter');
  const hearth = new Hearth(pack.onnx, pack.manifest);
  for (const e of syntheticProfileEvents()) hearth.record(e);
  const context = benchContext();
  const rows = [];
  for (const n of [1000, 10000]) {
    hearth.setCatalog(syntheticCatalog(n));
    scorer.load(hearth);
    const cpu = await time(() => hearth.catalogLogits(context, NOW));
    const webgpu = await time(() => scorer.logits(hearth.gpuRequest(context, NOW)));
    const [a, b] = [hearth.catalogLogits(context, NOW), await scorer.logits(hearth.gpuRequest(context, NOW))];
    if (a.length !== n || b.length !== n) throw new Error(`logit count: cpu ${a.length}, webgpu ${b.length}, n ${n}`);
    let maxAbsDiff = 0;
    for (let i = 0; i < n; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(a[i] - b[i]));
    rows.push({ n, cpu, webgpu, maxAbsDiff });
    say(`n=${n}: cpu (tract-wasm) p50 ${cpu.p50.toFixed(3)} ms | webgpu (${scorer.adapter}) p50 ${webgpu.p50.toFixed(3)} ms | max |Δlogit| ${maxAbsDiff.toExponential(2)}`);
  }
  return { rows, adapter: scorer.adapter };
}

window.__bench = { status: 'running' };
const mode = new URLSearchParams(location.search).get('mode') ?? 'full';
say(`mode=${mode} crossOriginIsolated=${crossOriginIsolated}`);
try {
  const result = await ({ cold, 'cold-ort': coldOrt, full, gpu, measure, secagg, train }[mode] ?? full)();
  window.__bench = { status: 'done', result };
  say('done');
} catch (e) {
  window.__bench = { status: 'error', error: String(e?.stack ?? e) };
  say(`ERROR: ${e?.stack ?? e}`);
}
