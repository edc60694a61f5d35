// Interop: an independent DAP client, ISRG's TypeScript @divviup/dap 0.9.1 (DAP-09; Prio3 of
// VDAF-08 through @divviup/prio3 0.8), uploads reports that Hearth's leader and helper accept,
// verify and count. Nothing of Hearth's client is used: the task comes from the leader's
// GET /v1/measure/task, and @divviup/dap fetches both servers' HPKE configurations, shards with
// its own Prio3SumVec, seals with its own HPKE (hpke-js) and uploads in DAP's format.
//
// How the counts are checked: a released count is the true count plus both servers' discrete
// Gaussian noise. A second leader and helper run with the same seeded noise
// (HEARTH_TEST_NOISE_SEED: a period's noise is a function of the seed, the server and the
// period), and receive K reports, from the same client, that count nothing: their release of the
// same period is that noise alone. The first pair's counts minus it must equal the true counts
// exactly, in every cell. A report either server dropped, a cell counted twice or a cell
// misplaced would show.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Task } from '@divviup/dap';
import { collect, startMeasurement } from '../support/measurement.mjs';

// An hour's period: the reports' period is the current one and stays open while the test runs.
// The default M = 3 and 16 cells; σ 24 at each server, the least the server accepts for them
// (the devices' ε ceiling, as in crates/aggregator/demo.toml). The check below is exact whatever σ.
const SETTINGS = { period_secs: 3600, bits: 2, max_cells: 16, min_reports: 10, noise: 24.0 };
const SEED = 170_509n;
// K + 2: a batch of more than K, all from the independent client.
const REPORTS = SETTINGS.min_reports + 2;

/** @type {{ main?: Awaited<ReturnType<typeof startMeasurement>>, twin?: Awaited<ReturnType<typeof startMeasurement>> }} */
const env = {};
// One pair after the other, so that `after` stops whatever started if the second fails.
before(async () => {
  env.main = await startMeasurement({ settings: SETTINGS, seed: SEED });
  env.twin = await startMeasurement({ settings: SETTINGS, seed: SEED });
});
after(async () => {
  await Promise.all([env.main?.close(), env.twin?.close()]);
});

/**
 * The leader's task as an @divviup/dap Task: its id (base64url), Prio3SumVec's parameters, both
 * servers' DAP base URLs, and the period as DAP's time precision.
 * @param {{ url: string, helper: string }} servers
 */
async function dapTask(servers) {
  const res = await fetch(`${servers.url}/v1/measure/task`);
  assert.equal(res.status, 200);
  const doc = await res.json();
  const length = (doc.campaigns.length + doc.slots.length) * 4;
  const task = new Task({
    type: 'sumVec',
    id: doc.task_id,
    bits: doc.bits,
    length,
    chunkLength: doc.chunk_length,
    leader: `${servers.url}/dap/`,
    helper: `${servers.helper}/dap/`,
    timePrecisionSeconds: doc.period_secs,
  });
  return { task, doc, length };
}

/**
 * Report `j`'s measurement: between 1 and 16 cells (max_cells) spread over the vector, each
 * 1..M, the rest 0.
 * @param {number} j
 * @param {number} length
 */
function measurement(j, length) {
  const m = new Array(length).fill(0);
  const max = 2 ** SETTINGS.bits - 1;
  for (let c = 0; c <= j % SETTINGS.max_cells; c++) m[(j * 7 + c * 13) % length] = ((j + c) % max) + 1;
  return m;
}

test('@divviup/dap 0.9.1 reports are accepted and counted by Hearth\'s leader and helper', async () => {
  const main = /** @type {NonNullable<typeof env.main>} */ (env.main);
  const twin = /** @type {NonNullable<typeof env.twin>} */ (env.twin);
  const [a, b] = [await dapTask(main), await dapTask(twin)];
  // Both pairs serve the demo's catalog with the same settings: the same cells, in the same order.
  assert.deepEqual([a.doc.campaigns, a.doc.slots], [b.doc.campaigns, b.doc.slots]);
  assert.ok(a.length >= 16, `${a.length} cells`);

  const periodStart = Math.floor(Date.now() / 1000 / SETTINGS.period_secs) * SETTINGS.period_secs;
  const timestamp = new Date(periodStart * 1000);
  const truth = new Array(a.length).fill(0);
  for (let j = 0; j < REPORTS; j++) {
    const m = measurement(j, a.length);
    m.forEach((v, i) => (truth[i] += v));
    // Fetches both HPKE configurations once, shards, seals to each server and PUTs the report;
    // throws DAPError with the leader's problem document if it is refused.
    await a.task.sendMeasurement(m, { timestamp });
  }
  for (let j = 0; j < SETTINGS.min_reports; j++) {
    await b.task.sendMeasurement(new Array(b.length).fill(0), { timestamp });
  }

  const [released, noise] = await Promise.all([collect(main.url, periodStart), collect(twin.url, periodStart)]);
  for (const r of [released, noise]) {
    assert.equal(r.periods.length, 1);
    assert.equal(r.periods[0].start, periodStart);
    assert.equal(r.periods[0].released, true, JSON.stringify(r.periods[0]));
    assert.equal(r.periods[0].cells.length, a.length);
  }
  /** @param {{ periods: { cells: { count: number }[] }[] }} r @returns {number[]} */
  const countsOf = (r) => r.periods[0].cells.map((c) => c.count);
  const [counts, noises] = [countsOf(released), countsOf(noise)];
  // The noise is there (σ = 24 at each server)...
  assert.ok(noises.some((n) => n !== 0), 'the twin release is all zero: no noise was added');
  // ...and it is all that separates the release from the truth.
  assert.deepEqual(counts.map((c, i) => c - noises[i]), truth);
});
