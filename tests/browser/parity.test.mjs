// The browser module against two other implementations of the same model:
// the native build (xtask rank-fixture) and onnxruntime-web on model.onnx.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { NOW, hearthPage, useBrowser } from './helpers.mjs';

const env = useBrowser();
const ROOT = new URL('../../', import.meta.url).pathname;
const FIXTURE = 'tests/fixtures/rank.json';

test('the browser ranks the fixture exactly as the native build does', async () => {
  // Debug build: test.sh has just built the workspace's dependencies in that profile.
  const native = JSON.parse(
    execFileSync('cargo', ['run', '-q', '-p', 'xtask', '--', 'rank-fixture', FIXTURE], { cwd: ROOT, encoding: 'utf8' }),
  );
  const fixture = JSON.parse(fs.readFileSync(ROOT + FIXTURE, 'utf8'));
  const page = await hearthPage(env);
  const browser = await page.evaluate((f) => {
    const { Hearth, onnx, manifest } = window.T;
    const h = new Hearth(onnx, manifest);
    for (const e of f.events) h.record(e);
    return h.rankCandidates(f.context, f.ads, f.options);
  }, fixture);
  await page.closeAll();

  assert.ok(native.length > 0);
  assert.deepEqual(browser.map((r) => r.ad_id), native.map((r) => r.ad_id), 'same ads in the same order');
  const close = (a, b, what) => assert.ok(Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
  for (const [i, n] of native.entries()) {
    const b = browser[i];
    close(b.score, n.score, `${n.ad_id} score`);
    close(b.probability, n.probability, `${n.ad_id} probability`);
    assert.deepEqual(b.why.map((w) => w.feature), n.why.map((w) => w.feature), `${n.ad_id} why`);
    for (const [j, w] of n.why.entries()) close(b.why[j].contribution, w.contribution, `${n.ad_id} ${w.feature}`);
  }
});

test('onnxruntime-web computes the same logits from modelInputs', async () => {
  const page = await hearthPage(env);
  const r = await page.evaluate(async (now) => {
    const { Hearth, onnx, manifest, workload } = window.T;
    const { loadOrt, ortFeeds } = await import('/bench/ort.mjs');
    const ort = await loadOrt();
    const session = await ort.InferenceSession.create(onnx.slice(), { executionProviders: ['wasm'] });
    const h = new Hearth(onnx, manifest);
    for (const e of workload.syntheticProfileEvents()) h.record(e);
    const diffs = [];
    for (const n of [1, 257]) {
      h.setCatalog(workload.syntheticCatalog(n));
      const m = h.modelInputs(workload.benchContext(), now);
      const out = await session.run(ortFeeds(ort, m));
      const ref = h.catalogLogits(workload.benchContext(), now);
      const got = out.logits.data;
      if (got.length !== n || ref.length !== n) return { error: `lengths ${got.length} ${ref.length} for n=${n}` };
      diffs.push(Math.max(...Array.from(got, (v, i) => Math.abs(v - ref[i]))));
    }
    return { diffs };
  }, NOW);
  await page.closeAll();
  assert.equal(r.error, undefined, r.error);
  for (const d of r.diffs) assert.ok(d < 1e-4, `max |ort - hearth| = ${d}`);
});
