// Browser half of `make bench` (scripts/bench.sh runs the native half first).
// Drives www/bench/ in headless Chromium, measures artifact sizes, merges the
// native records and writes target/bench/score.json, target/bench/train.json and
// target/bench/measure.json (../shared/BENCH_FORMAT.md).
//
//   node scripts/bench.mjs [--cold-runs 5] [--out target/bench/score.json] [--only train|measure]
//
// --only train: only the training and upload-build pages (target/bench/train.json);
// --only measure: only the measurement report page (target/bench/measure.json, with the records
// and the fixture `xtask bench-measure` wrote). The other files are left as they are.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startServer } from '../tests/support/serve.mjs';
import { launchChromium, openPage } from '../tests/support/browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const OUT = path.resolve(ROOT, opt('--out', 'target/bench/score.json'));
const NATIVE = path.resolve(ROOT, 'target/bench/score-native.json');
const COLD_RUNS = Number(opt('--cold-runs', 5));
const TRAIN_NATIVE = path.resolve(ROOT, 'target/bench/train-native.json');
const TRAIN_OUT = path.join(path.dirname(OUT), 'train.json');
const MEASURE_NATIVE = path.resolve(ROOT, 'target/bench/measure-native.json');
const MEASURE_FIXTURE = path.resolve(ROOT, 'target/bench/measure-fixture.json');
const MEASURE_OUT = path.join(path.dirname(OUT), 'measure.json');
const ONLY = opt('--only', 'all');
if (!['all', 'train', 'measure'].includes(ONLY)) throw new Error(`--only ${ONLY}: expected train or measure`);

function commitId() {
  try {
    return execFileSync('git', ['rev-parse', '--verify', '--quiet', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'uncommitted';
  }
}
const commit = commitId();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

// Loads a bench page in a fresh browser context (empty HTTP and code caches)
// and waits for its result. `fixture`, when given, is the page's window.__measureFixture.
async function runPage(browser, url, fixture) {
  const context = await browser.newContext();
  try {
    if (fixture !== undefined) {
      await context.addInitScript((f) => {
        /** @type {any} */ (window).__measureFixture = f;
      }, fixture);
    }
    const page = await openPage(context, url);
    await page.waitForFunction(() => window.__bench && window.__bench.status !== 'running', null, {
      timeout: 10 * 60_000,
      polling: 250,
    });
    const bench = await page.evaluate(() => window.__bench);
    if (bench.status !== 'done') throw new Error(`${url}: ${bench.error}`);
    if (page.problems.length) throw new Error(`${url}:\n${page.problems.join('\n')}`);
    return bench.result;
  } finally {
    await context.close();
  }
}

function sizeRecords(artifact, file) {
  const raw = fs.readFileSync(file);
  const gz = zlib.gzipSync(raw, { level: 9 });
  return [
    { metric: 'size', value: raw.length, unit: 'bytes', artifact, encoding: 'raw' },
    { metric: 'size', value: gz.length, unit: 'bytes', artifact, encoding: 'gzip' },
  ];
}

const records = [];
const server = await startServer();
const browser = await launchChromium();
try {
  console.error(`bench: ${server.url}/bench/ in ${browser.version()}`);
  if (ONLY === 'all') await scoreBench();
  if (ONLY !== 'measure') await trainBench();
  if (ONLY !== 'train') await measureBench();
} finally {
  await browser.close();
  await server.close();
}

async function trainBench() {
  // Training: the browser's trainAndBuildUpdate beside xtask bench-train's native figures.
  const trainRecords = (await runPage(browser, `${server.url}/bench/?mode=train`)).rows.map(({ n, train_update }) => ({
    metric: 'train_update', value: train_update, unit: 'ms', engine: 'wasm', n, commit,
  }));
  // The device's cost of one upload's build, training excluded (takePart against
  // trainAndBuildUpdate, both with training cut to nothing; see www/bench/bench.mjs).
  const share = await runPage(browser, `${server.url}/bench/?mode=secagg`);
  const params = (share.reportBytes - 123) / 3; // Report::encoded_len(params) = 123 + 3·params
  const note = 'no events and no training steps: the build on a zero delta plus the call (native: participate_untrained)';
  trainRecords.push(
    { metric: 'secagg_share', value: share.report.p50, unit: 'ms', engine: 'wasm', params, note, commit },
    { metric: 'secagg_share_no_device_noise', value: share.quiet.p50, unit: 'ms', engine: 'wasm', params, note, commit },
    { metric: 'privatize', value: share.update.p50, unit: 'ms', engine: 'wasm', format: 'f32', params, note, commit },
    { metric: 'participate_untrained', value: share.report.p50, unit: 'ms', engine: 'wasm', format: 'secagg', params, commit },
    { metric: 'participate_untrained', value: share.update.p50, unit: 'ms', engine: 'wasm', format: 'f32', params, commit },
  );
  const wasmTrain = trainRecords.find((r) => r.metric === 'train_update' && r.n === 1000)?.value;
  if (wasmTrain !== undefined) {
    trainRecords.push({ metric: 'secagg_overhead', value: share.report.p50 / wasmTrain, unit: 'ratio', engine: 'wasm', n: 1000, params, commit });
  }
  if (fs.existsSync(TRAIN_NATIVE)) {
    trainRecords.unshift(...JSON.parse(fs.readFileSync(TRAIN_NATIVE, 'utf8')).map((r) => ({ ...r, commit })));
  } else {
    console.error(`bench: ${path.relative(ROOT, TRAIN_NATIVE)} missing; run \`make bench\` for native figures`);
  }
  fs.mkdirSync(path.dirname(TRAIN_OUT), { recursive: true });
  fs.writeFileSync(TRAIN_OUT, JSON.stringify(trainRecords, null, 2) + '\n');
  printTrain(trainRecords);
}

// Private measurement: the report's build in wasm (measureReport) at each task size of
// `xtask bench-measure`'s fixture, beside that run's native and prio-native records.
async function measureBench() {
  if (!fs.existsSync(MEASURE_FIXTURE) || !fs.existsSync(MEASURE_NATIVE)) {
    throw new Error(`${path.relative(ROOT, MEASURE_FIXTURE)} or ${path.relative(ROOT, MEASURE_NATIVE)} missing: run \`cargo run -p xtask --release -- bench-measure\` first`);
  }
  const fixture = JSON.parse(fs.readFileSync(MEASURE_FIXTURE, 'utf8'));
  const { rows } = await runPage(browser, `${server.url}/bench/?mode=measure`, fixture);
  const native = JSON.parse(fs.readFileSync(MEASURE_NATIVE, 'utf8')).map((r) => ({ ...r, commit }));
  const measureRecords = [...native];
  for (const { campaigns, report, check } of rows) {
    const cells = native.find((r) => r.campaigns === campaigns)?.cells;
    measureRecords.push(
      { metric: 'report_build', value: report.p50, unit: 'ms', engine: 'wasm', campaigns, cells, commit },
      { metric: 'report_task_check', value: check.p50, unit: 'ms', engine: 'wasm', campaigns, cells, note: 'measureTask alone: the task document parsed, its id recomputed, the device check; inside every wasm report_build', commit },
    );
  }
  fs.mkdirSync(path.dirname(MEASURE_OUT), { recursive: true });
  fs.writeFileSync(MEASURE_OUT, JSON.stringify(measureRecords, null, 2) + '\n');
  printMeasure(measureRecords);
  console.log(`wrote ${path.relative(ROOT, MEASURE_OUT)} (${measureRecords.length} records, commit ${commit})`);
}

async function scoreBench() {
  const full = await runPage(browser, `${server.url}/bench/?mode=full`);
  if (!full.crossOriginIsolated) console.error('bench: warning: page not cross-origin isolated, timer resolution is 100 us');
  for (const { n, tract, ort, maxAbsDiff } of full.rows) {
    for (const [engine, t] of [['tract-wasm', tract], ['ort-web-wasm', ort]]) {
      records.push({ metric: 'rank_p50', value: t.p50, unit: 'ms', engine, n });
      records.push({ metric: 'rank_p95', value: t.p95, unit: 'ms', engine, n });
    }
    records.push({ metric: 'max_abs_diff', value: maxAbsDiff, unit: 'ratio', engine: 'ort-web-wasm', n });
  }

  // Cold starts alternate between the engines so both see the same machine load.
  const colds = { 'tract-wasm': [], 'ort-web-wasm': [] };
  for (let i = 0; i < COLD_RUNS; i++) {
    colds['tract-wasm'].push(await runPage(browser, `${server.url}/bench/?mode=cold`));
    colds['ort-web-wasm'].push(await runPage(browser, `${server.url}/bench/?mode=cold-ort`));
  }
  const cold = {};
  for (const [engine, runs] of Object.entries(colds)) {
    const value = median(runs.map((c) => c.cold_start));
    records.push({ metric: 'cold_start', value, unit: 'ms', engine });
    const phases = Object.fromEntries(Object.keys(runs[0].phases).map((k) => [k, median(runs.map((c) => c.phases[k]))]));
    cold[engine] = { value, phases };
  }

  // WebGPU vs tract scoring in one page. SwiftShader emulates the GPU on the CPU: label it so.
  const gpu = await runPage(browser, `${server.url}/bench/?mode=gpu`);
  for (const { n, cpu, webgpu, maxAbsDiff } of gpu.rows) {
    const note = `whole-catalog logits; adapter ${gpu.adapter} (software): correctness, not GPU speed`;
    for (const [engine, t] of [['cpu-tract-wasm', cpu], ['webgpu-swiftshader', webgpu]]) {
      records.push({ metric: 'score_p50', value: t.p50, unit: 'ms', engine, n, note });
      records.push({ metric: 'score_p95', value: t.p95, unit: 'ms', engine, n, note });
    }
    records.push({ metric: 'max_abs_diff', value: maxAbsDiff, unit: 'ratio', engine: 'webgpu-swiftshader', n });
  }

  records.push(...sizeRecords('hearth-wasm', path.join(ROOT, 'www/pkg/hearth_bg.wasm')));
  records.push(...sizeRecords('hearth-js', path.join(ROOT, 'www/pkg/hearth.js')));
  if (full.ortWasm.length !== 1) throw new Error(`expected one ort .wasm fetched, got ${JSON.stringify(full.ortWasm)}`);
  const ortWasm = path.join(ROOT, 'node_modules/onnxruntime-web/dist', path.basename(full.ortWasm[0]));
  records.push(...sizeRecords('ort-web-wasm', ortWasm));
  for (const r of records) r.commit = commit;

  // Native records from `xtask bench-native`, stamped with the same commit id.
  if (fs.existsSync(NATIVE)) {
    const native = JSON.parse(fs.readFileSync(NATIVE, 'utf8')).map((r) => ({ ...r, commit }));
    records.unshift(...native);
  } else {
    console.error(`bench: ${path.relative(ROOT, NATIVE)} missing; run \`make bench\` for native figures`);
  }

  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify(records, null, 2) + '\n');
  printTable(records, { engines: cold, coldRuns: COLD_RUNS, ortWasm: path.basename(ortWasm) });
  console.log(`wrote ${path.relative(ROOT, OUT)} (${records.length} records, commit ${commit})`);
}

function printTable(records, cold) {
  const find = (metric, engine, n) => records.find((r) => r.metric === metric && r.engine === engine && r.n === n)?.value;
  const fmt = (v, d = 3) => (v === undefined ? '-' : v.toFixed(d));
  const engines = [...new Set(records.filter((r) => r.metric === 'rank_p50').map((r) => r.engine))];
  const sizes = [...new Set(records.filter((r) => r.n !== undefined).map((r) => r.n))].sort((a, b) => a - b);
  console.log('\nrank latency, ms (p50 / p95)');
  console.log(['engine'.padEnd(20), ...sizes.map((n) => `n=${n}`.padStart(20))].join(''));
  for (const e of engines) {
    const cells = sizes.map((n) => `${fmt(find('rank_p50', e, n))} / ${fmt(find('rank_p95', e, n))}`.padStart(20));
    console.log([e.padEnd(20), ...cells].join(''));
  }
  const diffs = sizes.map((n) => find('max_abs_diff', 'ort-web-wasm', n)).filter((v) => v !== undefined);
  console.log(`\nort vs hearth logits, max |diff|: ${diffs.map((d) => d.toExponential(2)).join(', ')}`);
  for (const [engine, { value, phases }] of Object.entries(cold.engines)) {
    const ph = Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
    console.log(`cold start ${engine} (median of ${cold.coldRuns}): ${value.toFixed(1)} ms (${ph})`);
  }
  console.log('\nwhole-catalog scoring, ms p50 (WebGPU is SwiftShader: correctness, not speed)');
  for (const e of ['cpu-tract-wasm', 'webgpu-swiftshader']) {
    console.log([e.padEnd(20), ...[1000, 10000].map((n) => `n=${n} ${fmt(find('score_p50', e, n))}`.padStart(20))].join(''));
  }
  console.log('\nsizes, bytes (raw / gzip -9)');
  for (const a of ['hearth-wasm', 'hearth-js', 'ort-web-wasm']) {
    const s = (enc) => records.find((r) => r.metric === 'size' && r.artifact === a && r.encoding === enc)?.value;
    console.log(`${a.padEnd(20)}${String(s('raw')).padStart(12)} / ${String(s('gzip')).padStart(10)}${a === 'ort-web-wasm' ? `  (${cold.ortWasm})` : ''}`);
  }
  console.log('');
}

function printTrain(records) {
  console.log('\nlocal training + update build, ms');
  for (const r of records.filter((r) => r.metric === 'train_update')) console.log(`${r.engine.padEnd(8)} n=${String(r.n).padEnd(6)} ${r.value.toFixed(1)}`);
  for (const r of records.filter((r) => r.metric === 'upload_size')) console.log(`upload ${r.format.padEnd(10)} ${r.value} bytes (${r.params} parameters)`);
  console.log('\none upload\'s build, training excluded, ms (p50)');
  for (const engine of ['native', 'wasm']) {
    const v = (metric, format) => records.find((r) => r.metric === metric && r.engine === engine && (!format || r.format === format))?.value;
    const fmt = (x, d = 2) => (x === undefined ? '-' : x.toFixed(d));
    const overhead = v('secagg_overhead');
    console.log(`${engine.padEnd(8)} secagg report ${fmt(v('secagg_share'))} (no device noise ${fmt(v('secagg_share_no_device_noise'))}) | f32 update ${fmt(v('privatize', 'f32'))} | ` +
      `report / train_update at 1,000 events ${overhead === undefined ? '-' : `${(overhead * 100).toFixed(1)}%`}`);
  }
}

function printMeasure(records) {
  const v = (metric, keys) => records.find((r) => r.metric === metric && Object.entries(keys).every(([k, x]) => r[k] === x))?.value;
  const fmt = (x, d = 2) => (x === undefined ? '-' : x.toFixed(d));
  console.log('\nprivate measurement: report build (ms, p50), size (bytes), verify + aggregate (reports/s)');
  for (const campaigns of [...new Set(records.map((r) => r.campaigns))]) {
    const c = { campaigns };
    console.log(`${String(campaigns).padStart(5)} campaigns | build native ${fmt(v('report_build', { ...c, engine: 'native' }))}, ` +
      `wasm ${fmt(v('report_build', { ...c, engine: 'wasm' }))}, prio ${fmt(v('report_build', { ...c, engine: 'prio-native' }))} | ` +
      `size ${v('report_size', { ...c, format: 'dap-report' })} (prio shares ${v('report_size', { ...c, engine: 'prio-native' })}) | ` +
      `leader ${fmt(v('verify_per_s', { ...c, engine: 'native', role: 'leader' }), 0)} (prio ${fmt(v('verify_per_s', { ...c, engine: 'prio-native', role: 'leader' }), 0)}), ` +
      `helper ${fmt(v('verify_per_s', { ...c, engine: 'native', role: 'helper' }), 0)} (prio ${fmt(v('verify_per_s', { ...c, engine: 'prio-native', role: 'helper' }), 0)})`);
  }
}
