// The JS API of the built module (www/pkg/hearth.js) in Chromium: shapes and
// types that cross the wasm-bindgen boundary, profile persistence, and errors
// for bad input. Ranking semantics are covered by the core suite.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NOW, hearthPage, useBrowser } from './helpers.mjs';

const env = useBrowser();

async function withPage(fn) {
  const page = await hearthPage(env);
  try {
    return await fn(page);
  } finally {
    assert.deepEqual(page.problems, [], 'no console errors or failed requests');
    await page.closeAll();
  }
}

test('loads the default pack and ranks the demo catalog', () =>
  withPage(async (page) => {
    const r = await page.evaluate((now) => {
      const { Hearth, onnx, manifest, demo } = window.T;
      const h = new Hearth(onnx, manifest);
      const count = h.setCatalog(demo.ads);
      const ranked = h.rank({ topics: ['sports'], slot: 'sidebar', hour: 9 }, { now_ms: now, k: 5, explain: 3 });
      return { version: h.modelVersion, manifestVersion: JSON.parse(manifest).model_version, count, ranked, ids: demo.ads.map((a) => a.id) };
    }, NOW);
    assert.equal(r.version, r.manifestVersion);
    assert.equal(r.count, r.ids.length);
    assert.equal(r.ranked.length, 5);
    assert.equal(new Set(r.ranked.map((x) => x.ad_id)).size, 5, 'no ad twice');
    for (const [i, x] of r.ranked.entries()) {
      assert.ok(r.ids.includes(x.ad_id), `${x.ad_id} is in the catalog`);
      assert.ok(Number.isFinite(x.score));
      assert.ok(Math.abs(x.probability - 1 / (1 + Math.exp(-x.score))) < 1e-6, 'probability = sigmoid(score)');
      if (i > 0) assert.ok(r.ranked[i - 1].score >= x.score, 'sorted by score');
      assert.ok(x.why.length <= 3);
      for (const w of x.why) {
        assert.equal(typeof w.feature, 'string');
        assert.ok(Number.isFinite(w.contribution));
      }
    }
  }));

test('rank, rankCandidates and catalogLogits agree', () =>
  withPage(async (page) => {
    const r = await page.evaluate((now) => {
      const { Hearth, onnx, manifest, workload } = window.T;
      const h = new Hearth(onnx, manifest);
      for (const e of workload.syntheticProfileEvents()) h.record(e);
      const ads = workload.syntheticCatalog(300);
      h.setCatalog(ads);
      const ctx = workload.benchContext();
      return {
        ranked: h.rank(ctx, { now_ms: now, k: 10 }),
        candidates: h.rankCandidates(ctx, ads, { now_ms: now, k: 10 }),
        logits: Array.from(h.catalogLogits(ctx, now)),
        isF32: h.catalogLogits(ctx, now) instanceof Float32Array,
      };
    }, NOW);
    assert.ok(r.isF32, 'catalogLogits is a Float32Array');
    assert.equal(r.logits.length, 300);
    assert.deepEqual(r.candidates, r.ranked);
    const top = [...r.logits].sort((a, b) => b - a).slice(0, 10);
    assert.deepEqual(r.ranked.map((x) => x.score), top, 'rank = top-10 of catalogLogits without caps or diversity');
  }));

test('modelInputs has the shapes and types of the ONNX inputs', () =>
  withPage(async (page) => {
    const m = await page.evaluate((now) => {
      const { Hearth, onnx, manifest, workload } = window.T;
      const h = new Hearth(onnx, manifest);
      h.setCatalog(workload.syntheticCatalog(7));
      const m = h.modelInputs(workload.benchContext(), now);
      const kind = (a) => `${a.constructor.name}:${a.length}`;
      return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, typeof v === 'number' ? v : kind(v)]));
    }, NOW);
    const spec = { U: m.user_slots, C: m.context_slots, A: m.ad_slots, D: m.dim };
    assert.equal(m.n, 7);
    assert.ok(spec.U > 0 && spec.C > 0 && spec.A > 0 && spec.D > 0);
    assert.equal(m.user_ids, `BigInt64Array:${spec.U}`);
    assert.equal(m.user_w, `Float32Array:${spec.U}`);
    assert.equal(m.local_u, `Float32Array:${spec.D}`);
    assert.equal(m.ctx_ids, `BigInt64Array:${spec.C}`);
    assert.equal(m.ctx_w, `Float32Array:${spec.C}`);
    assert.equal(m.ad_ids, `BigInt64Array:${7 * spec.A}`);
    assert.equal(m.ad_w, `Float32Array:${7 * spec.A}`);
  }));

test('a profile survives export and import, and erase forgets it', () =>
  withPage(async (page) => {
    const r = await page.evaluate((now) => {
      const { Hearth, onnx, manifest, demo } = window.T;
      const opts = { now_ms: now, k: 8, explain: 2 };
      const ctx = { topics: ['travel'] };
      const a = new Hearth(onnx, manifest);
      a.record({ kind: 'page_view', ts: now - 5000, topics: ['cooking'], keywords: ['pasta'] });
      a.record({ kind: 'click', ts: now - 1000, ad_id: 'coo-1', advertiser: 'x', category: 'cooking' });
      a.setCatalog(demo.ads);
      const exported = a.exportProfile();
      const b = new Hearth(onnx, manifest, exported);
      b.setCatalog(demo.ads);
      const fresh = new Hearth(onnx, manifest);
      const before = a.rank(ctx, opts);
      a.eraseProfile();
      return { exported, again: b.exportProfile(), sameRank: JSON.stringify(b.rank(ctx, opts)) === JSON.stringify(before), erased: a.exportProfile(), fresh: fresh.exportProfile() };
    }, NOW);
    const doc = JSON.parse(r.exported);
    assert.equal(doc.format, 'hearth-profile');
    assert.equal(doc.events.length, 2);
    assert.ok('topic:cooking' in doc.features && 'kw:pasta' in doc.features);
    assert.equal(r.again, r.exported, 'import then export is the identity');
    assert.ok(r.sameRank, 'an imported profile ranks like the original');
    assert.equal(r.erased, r.fresh, 'erased = empty profile');
    assert.equal(JSON.parse(r.erased).events.length, 0);
  }));

test('an unreadable stored profile is replaced by an empty one, with a warning', () =>
  withPage(async (page) => {
    const warnings = [];
    page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
    const r = await page.evaluate(() => {
      const { Hearth, onnx, manifest } = window.T;
      const docs = ['not json', '{"format":"hearth-profile","version":99}', '[]'];
      return {
        exports: docs.map((d) => new Hearth(onnx, manifest, d).exportProfile()),
        fresh: new Hearth(onnx, manifest).exportProfile(),
      };
    });
    for (const e of r.exports) assert.equal(e, r.fresh);
    await page.waitForTimeout(50); // console events are delivered asynchronously
    assert.equal(warnings.filter((w) => w.includes('profile')).length, 3, warnings.join('\n'));
  }));

test('bad input throws an Error with a message and leaves the instance usable', () =>
  withPage(async (page) => {
    const r = await page.evaluate((now) => {
      const { Hearth, onnx, manifest, demo } = window.T;
      const outcome = (fn) => {
        try {
          fn();
          return 'no error';
        } catch (e) {
          return e instanceof Error && e.message ? 'Error' : `not an Error: ${String(e)}`;
        }
      };
      const tampered = onnx.slice();
      tampered[tampered.length >> 1] ^= 0xff;
      const h = new Hearth(onnx, manifest);
      h.setCatalog(demo.ads);
      const cases = {
        tamperedModel: () => new Hearth(tampered, manifest),
        truncatedModel: () => new Hearth(onnx.subarray(0, 100), manifest),
        manifestNotJson: () => new Hearth(onnx, '{'),
        manifestWrongFormat: () => new Hearth(onnx, JSON.stringify({ ...JSON.parse(manifest), format: 'other' })),
        unknownEventKind: () => h.record({ kind: 'hover', ts: now }),
        eventWithoutTs: () => h.record({ kind: 'page_view', topics: ['x'] }),
        clickWithoutAd: () => h.record({ kind: 'click', ts: now }),
        eventNotObject: () => h.record('page_view'),
        catalogNotArray: () => h.setCatalog({ id: 'a' }),
        adWithoutId: () => h.setCatalog([{ campaign: 'c' }]),
        rankWithoutNow: () => h.rank({}, { k: 3 }),
        rankContextWrongType: () => h.rank({ topics: 'sports' }, { now_ms: now }),
        candidatesNotArray: () => h.rankCandidates({}, 'ads', { now_ms: now }),
        logitsWithoutContext: () => h.catalogLogits(undefined, now),
      };
      const results = Object.fromEntries(Object.entries(cases).map(([k, fn]) => [k, outcome(fn)]));
      return { results, stillRanks: h.rank({}, { now_ms: now, k: 3 }).length, catalog: demo.ads.length };
    }, NOW);
    for (const [name, result] of Object.entries(r.results)) assert.equal(result, 'Error', name);
    assert.equal(r.stillRanks, 3, 'the instance still ranks after the errors');
  }));

test('trainAndBuildUpdate returns the wire-format update, below no floor, and privacyReport the ε of a deployment', () =>
  withPage(async (page) => {
    const r = await page.evaluate(() => {
      const { Hearth, privacyReport, onnx, manifest, workload } = window.T;
      const h = new Hearth(onnx, manifest);
      h.setCatalog(workload.syntheticCatalog(200));
      for (const e of workload.syntheticLocalEvents(200)) h.record(e);
      const params = JSON.parse(manifest).parameters.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
      const f32 = h.trainAndBuildUpdate(workload.benchTask('f32'));
      const quantized = h.trainAndBuildUpdate(workload.benchTask('quantized'));
      const refusals = [
        { ...workload.benchTask('f32'), model_version: 99 },
        { ...workload.benchTask('f32'), clip_norm: 0 },
        { ...workload.benchTask('f32'), min_events: 1e6 },
        { ...workload.benchTask('f32'), device_id: 'abc' },
        { ...workload.benchTask('f32'), noise_multiplier: 0.5 },
      ].map((task) => {
        try {
          h.trainAndBuildUpdate(task);
          return null;
        } catch (e) {
          return `${e.name}: ${e.message}`;
        }
      });
      const deployment = { population: 100000, sampling: { clients_per_round: 1000 }, rounds: 100, noise_multiplier: 1.0, delta: 1e-6 };
      const report = privacyReport(deployment);
      let badReport = null;
      try {
        privacyReport({ ...deployment, delta: 2 });
      } catch (e) {
        badReport = String(e.message);
      }
      const magic = (b) => String.fromCharCode(...b.slice(0, 4));
      return { params, f32: { type: f32.constructor.name, len: f32.length, magic: magic(f32) }, quantized: { len: quantized.length, magic: magic(quantized) }, refusals, report, badReport };
    });
    assert.equal(r.f32.type, 'Uint8Array');
    assert.equal(r.f32.magic, 'HRTU');
    assert.equal(r.quantized.magic, 'HRTU');
    assert.ok(r.params > 100000, `${r.params} parameters`);
    assert.ok(r.f32.len > 4 * r.params && r.f32.len < 4 * r.params + 100, `f32 upload ${r.f32.len} bytes`);
    assert.ok(r.quantized.len > 2 * r.params && r.quantized.len < 2 * r.params + 100, `quantized upload ${r.quantized.len} bytes`);
    for (const [i, want] of ['model version', 'clip norm', 'needs', 'device_id', 'BelowDeviceFloor: '].entries()) {
      assert.ok(r.refusals[i]?.includes(want), `refusal ${i}: ${r.refusals[i]}`);
    }
    assert.ok(r.report.central_epsilon > 0 && r.report.central_epsilon < 20, JSON.stringify(r.report));
    assert.ok(r.report.local_epsilon > r.report.central_epsilon, 'one upload alone is far less private than the aggregate');
    assert.equal(r.report.sampling_rate, 0.01);
    assert.ok(r.badReport?.includes('δ'), r.badReport);
  }));

// An X25519 public key (RFC 7748, section 6.1): devices seal to it; nothing here opens it.
const HELPER = {
  hpke: {
    key_id: 1, kem: 'DHKEM(X25519, HKDF-SHA256)', kdf: 'HKDF-SHA256', aead: 'ChaCha20Poly1305',
    public_key: '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  },
  noise_multiplier: 4,
  min_clients: 10,
};

test('takePart: the floor, the coin, the ledger and its budget; ledgerSummary adds the ledger up', () =>
  withPage(async (page) => {
    const r = await page.evaluate((helper) => {
      const { Hearth, ledgerSummary, onnx, manifest, workload } = window.T;
      const h = new Hearth(onnx, manifest);
      h.setCatalog(workload.syntheticCatalog(200));
      for (const e of workload.syntheticLocalEvents(200)) h.record(e);
      const params = JSON.parse(manifest).parameters.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
      // A secure round whose servers add noise 4 each, the device none of its own.
      const secure = (round_id, extra = {}) =>
        ({ ...workload.benchTask('f32'), round_id, noise_multiplier: 0, secagg: { clients: 10, leader_noise: 4, helper_noise: 4 }, ...extra });
      const outcome = (fn) => {
        try {
          return fn();
        } catch (e) {
          return { name: e.name, message: e.message };
        }
      };
      const first = h.takePart(secure(1), helper, null);
      const second = h.takePart(secure(2), helper, first.ledger);
      // The coin of a round is flipped once: a round it sat out stays sat out.
      const rare = secure(3, { sampling_rate: 1e-12 });
      const sitOut = h.takePart(rare, helper, null);
      const asked = h.takePart({ ...rare, sampling_rate: 1 }, helper, sitOut.ledger);
      return {
        params,
        first: { ...first, upload: undefined, len: first.upload.length, magic: String.fromCharCode(...first.upload.slice(0, 4)) },
        ledger: JSON.parse(second.ledger),
        one: ledgerSummary(first.ledger),
        two: ledgerSummary(second.ledger),
        none: ledgerSummary(null),
        lowered: ledgerSummary(first.ledger, 3),
        raised: ledgerSummary(first.ledger, 100),
        badBudgets: [0, -1, NaN, Infinity].map((b) => outcome(() => ledgerSummary(null, b)).message),
        overBudget: outcome(() => h.takePart(secure(2), helper, first.ledger, 3)),
        plaintext: outcome(() => h.takePart(workload.benchTask('f32'), null, null)),
        belowFloor: outcome(() => h.takePart({ ...workload.benchTask('f32'), noise_multiplier: 0.5 }, null, null)),
        noHelper: outcome(() => h.takePart(secure(4), null, null)),
        weakServer: outcome(() => h.takePart(secure(4, { secagg: { clients: 10, leader_noise: 2, helper_noise: 4 } }), helper, null)),
        otherSuite: outcome(() => h.takePart(secure(4), { ...helper, hpke: { ...helper.hpke, kem: 'DHKEM(P-256, HKDF-SHA256)' } }, null)),
        unknownField: outcome(() => h.takePart(secure(4), { ...helper, relay: true }, null)),
        unreadable: outcome(() => h.takePart(secure(4), helper, 'not json')),
        unreadableSummary: outcome(() => ledgerSummary('{"entries":[{"round_id":1}]}')),
        sitOut: sitOut.status,
        asked: asked.status,
        coin: JSON.parse(asked.ledger).coin,
      };
    }, HELPER);
    assert.equal(r.first.status, 'joined');
    assert.equal(r.first.contentType, 'application/vnd.hearth.report');
    assert.equal(r.first.magic, 'HRTS');
    assert.equal(r.first.len, 123 + 3 * r.params, 'a report: header and 3-byte shares');
    assert.deepEqual(r.ledger.entries.map((e) => [e.round_id, e.secure, e.curious_server_noise, e.collusion_noise]), [[1, true, 4, 0], [2, true, 4, 0]]);
    assert.deepEqual(r.none, { rounds: 0, curious_server_epsilon: 0, collusion_epsilon: 0, epsilon_budget: 8, delta: 1e-6, max_rounds: 100, may_join: true });
    assert.equal(r.one.rounds, 1);
    // Replace-one, ρ = 2/z² per round at z = 4, as zCDP: ε ≈ 2.42 for one round, 3.54 for two.
    assert.ok(Math.abs(r.one.curious_server_epsilon - 2.42) < 0.01, String(r.one.curious_server_epsilon));
    assert.ok(Math.abs(r.two.curious_server_epsilon - 3.54) < 0.01, String(r.two.curious_server_epsilon));
    assert.equal(r.one.collusion_epsilon, Infinity, 'no noise of its own: nothing protects the device from colluding servers');
    assert.equal(r.lowered.epsilon_budget, 3);
    assert.equal(r.lowered.may_join, false);
    assert.equal(r.raised.epsilon_budget, 8, 'a publisher cannot raise the budget');
    for (const m of r.badBudgets) assert.match(m, /invalid privacy budget/);
    assert.equal(r.overBudget.name, 'DeviceBudgetSpent', JSON.stringify(r.overBudget));
    assert.match(r.overBudget.message, /over the budget of 3/);
    // A plaintext upload at z = 1 costs ε ≈ 11.7 against the server that reads it: over 8.
    assert.equal(r.plaintext.name, 'DeviceBudgetSpent', JSON.stringify(r.plaintext));
    for (const k of ['belowFloor', 'noHelper', 'weakServer']) assert.equal(r[k].name, 'BelowDeviceFloor', `${k}: ${JSON.stringify(r[k])}`);
    for (const k of ['otherSuite', 'unknownField']) assert.equal(r[k].name, 'SecAgg', `${k}: ${JSON.stringify(r[k])}`);
    assert.equal(r.unreadable.name, 'LedgerUnreadable');
    assert.equal(r.unreadableSummary.name, 'LedgerUnreadable');
    assert.deepEqual([r.sitOut, r.asked], ['not_sampled', 'not_sampled']);
    assert.deepEqual(r.coin, { round_id: 3, heads: false });
  }));
