// End to end: the leader's measurement task changes mid-period (a new catalog or setting is a
// new task id), and the tally a visitor's device counted for the old task is still reported,
// once, for the new one. A helper and a leader (serving the demo) measure with a 45-s period; two
// Chromium visitors read a demo article each (its ads' impressions go into this period's tally,
// for task A); the leader is then restarted on the same port and databases with max_cells 3,
// which is task B, so the pages keep their origin and their workers know nothing of the change.
//
// - The sender does nothing more. At its report's moment, in the next period, its worker asks
//   for task A's key, is told the task is unknown (DAP's unrecognizedTask), fetches the task
//   again, moves the tally to B and sends it there.
// - The counter reads a second article in the same period, its device's last look at the task
//   being older than the SDK's ten minutes (the test ages it): it learns of task B and counts on
//   in the same tally, moved to B, which it later sends to B straight away.
//
// The new leader stores exactly the two reports, refuses none, and the devices keep nothing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnAggregator, routeDemoHelper } from '../support/aggregator.mjs';
import { measureEnv, storedMeasure } from '../support/measurement.mjs';
import { launchChromium, openPage } from '../support/browser.mjs';

// Short, so the reports go within a minute and a half; long enough for the visits and the
// leader's restart to fit in what is left of a period.
const PERIOD = 45;
const SETTINGS = { period_secs: PERIOD, bits: 1, max_cells: 4, min_reports: 10, noise: 4.0 };
// What the visits and the restart take at most (a few seconds each on two loaded cores).
const NEEDED_SECS = 30;
// The demo pages' data-helper (`make demo`'s helper), answered by the test's helper.
const UNRECOGNIZED = 'urn:ietf:params:ppm:dap:error:unrecognizedTask';
// How often the SDK asks the leader for its task (measure.js's CHECK_EVERY_MS).
const CHECK_EVERY_MS = 10 * 60_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowSecs = () => Date.now() / 1000;
const articles = fs.readdirSync('www/demo/articles').filter((f) => f.startsWith('sports-')).map((f) => `/demo/articles/${f}`);

/** @type {{ helper: any, leader: any, dir: string, browser: import('playwright-core').Browser }} */
const env = {};

/**
 * The leader, in the test's directory (its databases outlive it) on `listen`, measuring with
 * `settings`.
 * @param {string} listen  host:port, or 127.0.0.1:0 for any
 * @param {Record<string, number>} settings
 */
const startLeader = (listen, settings) => spawnAggregator('crates/aggregator/demo.toml', (dir) => ({
  ...measureEnv(dir, { ...settings, helper_noise: settings.noise }),
  HEARTH_AGG__LISTEN: JSON.stringify(listen),
  HEARTH_AGG__DATABASE: JSON.stringify(path.join(dir, 'hearth.db')),
  HEARTH_AGG__SECAGG__HELPER_URL: JSON.stringify(`${env.helper.url}/`),
}), { dir: env.dir });

before(async () => {
  env.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-task-change-'));
  env.helper = await spawnAggregator('crates/aggregator/demo-helper.toml', (dir) => measureEnv(dir, SETTINGS));
  env.leader = await startLeader('127.0.0.1:0', SETTINGS);
  env.browser = await launchChromium({ webgpu: false });
});
after(async () => {
  await env.browser?.close();
  await env.leader?.close();
  await env.helper?.close();
  if (env.dir) fs.rmSync(env.dir, { recursive: true, force: true });
});

/** @param {string} leader */
const taskId = async (leader) => (await (await fetch(`${leader}/v1/measure/task`)).json()).task_id;

/**
 * One counter of the leader's /metrics, summed over its labels.
 * @param {string} leader
 * @param {string} name
 */
async function metric(leader, name) {
  const text = await (await fetch(`${leader}/metrics`)).text();
  const lines = text.split('\n').filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return { total: lines.reduce((s, l) => s + Number(l.split(' ').at(-1)), 0), lines };
}

/**
 * Polls `read` until `done` holds of what it returns, or fails with `what` at `until` (ms).
 * @template T
 * @param {() => Promise<T>} read
 * @param {(value: T) => boolean} done
 * @param {number} until
 * @param {string} what
 */
async function waitFor(read, done, until, what) {
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    assert.ok(Date.now() < until, `${what}; last: ${JSON.stringify(value)}`);
    await sleep(500);
  }
}

/**
 * A visitor: its own browser context, the demo's data-helper answered by the test's helper, and
 * a record of every request (its workers' too) and of every warning.
 */
async function visitor() {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
  await routeDemoHelper(context, env.helper.url);
  /** @type {{ method: string, url: string, status: Promise<number | undefined>, body: Buffer | null }[]} */
  const requests = [];
  context.on('request', (r) => requests.push({
    method: r.method(), url: r.url(), status: r.response().then((res) => res?.status()), body: r.postDataBuffer(),
  }));
  const page = await openPage(context);
  /** @type {string[]} */
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  return { context, page, requests, warnings };
}

/** Opens `path` on the leader and waits until the snippet is ready (its store exists then). */
async function visit(page, path) {
  await page.goto(`${env.leader.url}${path}`);
  await page.evaluate(async () => {
    while (!window.hearth) await new Promise((r) => setTimeout(r, 10));
    await window.hearth.ready;
  });
}

/**
 * Makes the device's last look at the leader's task `ms` older, as that much time would (under
 * the SDK's lock on the record).
 * @param {import('playwright-core').Page} page
 * @param {number} ms
 */
const ageTaskCheck = (page, ms) => page.evaluate((ms) => navigator.locks.request('hearth-measure', () => new Promise((resolve, reject) => {
  const req = indexedDB.open('hearth', 1);
  req.onsuccess = () => {
    const kv = req.result.transaction('kv', 'readwrite').objectStore('kv');
    const get = kv.get('measure');
    get.onsuccess = () => {
      const m = get.result;
      m.task.checkedAt -= ms;
      kv.put(m, 'measure').onsuccess = () => {
        req.result.close();
        resolve(undefined);
      };
    };
  };
  req.onerror = () => reject(req.error);
})), ms);

/** @param {{ tally: string }} p  a period's cells, as `target name kind` -> count */
const cells = (p) => new Map(JSON.parse(p.tally).cells.map((c) => [`${c.target} ${c.name} ${c.kind}`, c.count]));

const isUpload = (r) => r.method === 'PUT' && /\/dap\/tasks\/[^/]+\/reports$/.test(r.url);

test('a tally counted for the leader\'s old task is reported once for its new one', async () => {
  // Count, and restart the leader, before the period ends: the reports' moments are in the next.
  if (PERIOD - (nowSecs() % PERIOD) < NEEDED_SECS) await sleep((PERIOD - (nowSecs() % PERIOD)) * 1000 + 200);
  const start = Math.floor(nowSecs() / PERIOD) * PERIOD;
  const taskA = await taskId(env.leader.url);

  // Each visitor's article is counted in this period's tally, for task A.
  const [sender, counter] = await Promise.all([visitor(), visitor()]);
  await Promise.all([visit(sender.page, articles[0]), visit(counter.page, articles[1])]);
  const tallied = (v) => waitFor(() => storedMeasure(v.page), (m) => m?.periods.length > 0, Date.now() + 15_000, 'the visit is counted');
  const [sent, counted] = await Promise.all([tallied(sender), tallied(counter)]);
  for (const m of [sent, counted]) assert.deepEqual(m.periods.map((p) => [p.start, p.taskId, p.built]), [[start, taskA, false]]);

  // The leader comes back on the same address and databases, serving task B.
  const listen = new URL(env.leader.url).host;
  await env.leader.close();
  env.leader = undefined;
  env.leader = await startLeader(listen, { ...SETTINGS, max_cells: 3 });
  assert.equal(env.leader.url, `http://${listen}`);
  const taskB = await taskId(env.leader.url);
  assert.notEqual(taskB, taskA, 'max_cells is part of the task');

  // The counter's device looks at the task again on its next page, counts on in the same tally
  // (every cell of the first article kept), and the tally is task B's now.
  await ageTaskCheck(counter.page, CHECK_EVERY_MS);
  await visit(counter.page, articles[2]);
  assert.ok(nowSecs() < start + PERIOD - 3, `the second visit was ready ${nowSecs() - start} s into a ${PERIOD} s period`);
  const moved = await waitFor(() => storedMeasure(counter.page), (m) => m.periods[0]?.taskId !== taskA, Date.now() + 15_000, 'the tally moves to task B');
  assert.deepEqual(moved.periods.map((p) => [p.start, p.taskId, p.sendAt]), [[start, taskB, counted.periods[0].sendAt]]);
  assert.deepEqual(Object.keys(moved.tasks), [taskB]);
  const before = cells(counted.periods[0]);
  const total = (/** @type {Map<string, number>} */ c) => [...c.values()].reduce((a, b) => a + b, 0);
  const recounted = await waitFor(() => storedMeasure(counter.page), (m) => total(cells(m.periods[0])) > total(before), Date.now() + 10_000, 'the second article is counted');
  const after = cells(recounted.periods[0]);
  for (const [cell, n] of before) assert.ok(after.get(cell) >= n, `${cell}: ${n} before the move, ${after.get(cell)} after`);
  // The sender's page did nothing since: it still counts for A.
  assert.deepEqual((await storedMeasure(sender.page)).periods.map((p) => p.taskId), [taskA]);
  assert.ok(Date.now() < sent.periods[0].sendAt - 1000, 'the sender\'s moment is still to come');

  // At their moments both workers send, to task B, and keep nothing.
  const deadline = (start + 2 * PERIOD + 10) * 1000;
  // (What is polled: a worker's measurement requests, to show what it did if it never lands.)
  const landed = (v) => waitFor(
    () => Promise.all(v.requests.filter((r) => /\/dap\/|\/v1\/measure\//.test(r.url)).map(async (r) => `${r.method} ${r.url} ${await r.status}`)),
    (seen) => seen.some((r) => r.startsWith('PUT ') && r.endsWith(' 201')), deadline, 'the report landed',
  );
  const emptied = (v) => waitFor(() => storedMeasure(v.page), (m) => m.periods.length === 0, Date.now() + 5000, 'the sent report is dropped');
  for (const v of [sender, counter]) {
    await landed(v);
    assert.deepEqual((await emptied(v)).tasks, {});
    // One upload, to task B, of the period counted under task A.
    const uploads = v.requests.filter(isUpload);
    assert.deepEqual(uploads.map((r) => r.url), [`${env.leader.url}/dap/tasks/${taskB}/reports`]);
    assert.equal(/** @type {Buffer} */ (uploads[0].body).readBigUInt64BE(16), BigInt(start), 'the report\'s time is its period\'s start');
    assert.deepEqual(v.warnings.filter((w) => /measurement/.test(w)), []);
  }
  // The sender learned of B from the leader's refusal of A's key (DAP: unrecognizedTask), the
  // only failed response it saw; the counter, which knew of B, never asked for A's key.
  const keyA = `${env.leader.url}/dap/hpke_config?task_id=${taskA}`;
  const asked = sender.requests.find((r) => r.url === keyA);
  assert.ok(asked, 'the sender asked for task A\'s key');
  assert.equal(await asked.status, 400);
  assert.equal((await (await fetch(keyA)).json()).type, UNRECOGNIZED);
  assert.deepEqual(sender.page.problems, [`HTTP 400 ${keyA}`]);
  assert.equal(counter.requests.find((r) => r.url === keyA), undefined);
  assert.deepEqual(counter.page.problems, []);

  // The new leader stored exactly the two reports, and refused none.
  assert.equal((await metric(env.leader.url, 'hearth_measure_reports_accepted_total')).total, 2);
  const refused = await metric(env.leader.url, 'hearth_measure_reports_refused_total');
  assert.equal(refused.total, 0, refused.lines.join('\n'));
  for (const v of [sender, counter]) await v.context.close();
});
