// Private measurement for the browser tests: a leader and a helper with `[measure]` on (the demo
// configuration otherwise, so the leader serves the demo site), and browsers simulated in Node by
// the built browser module (www/pkg, loaded with initSync): the same bindings the SDK's worker
// calls, building real DAP reports from tallies the test chooses.
import fs from 'node:fs';
import path from 'node:path';
import { initSync, measureRecord, measureReport, measureTask } from '../../www/pkg/hearth.js';
import { startPair } from './aggregator.mjs';

/** The collector's bearer token for POST /v1/measure/collect. */
export const ADMIN_TOKEN = 'measurement-test-admin-token';

/**
 * `[measure]` of one server, as environment overrides.
 * @param {string} dir  the server's own directory
 * @param {Record<string, string | number | boolean>} settings
 */
export const measureEnv = (dir, settings) => Object.fromEntries(
  Object.entries({ enabled: true, database: path.join(dir, 'measure.db'), ...settings })
    .map(([key, value]) => [`HEARTH_AGG__MEASURE__${key.toUpperCase()}`, JSON.stringify(value)]),
);

/**
 * A helper and the leader that names it, both measuring with `settings` (period_secs, bits,
 * max_cells, min_reports, noise: each server's σ), and `seed` as HEARTH_TEST_NOISE_SEED when
 * given (test builds only): the noise of a period is then a function of the seed and the period.
 * @param {{ settings: Record<string, number>, seed?: bigint }} options
 * @returns {Promise<{ url: string, helper: string, close: () => Promise<void> }>}
 */
export async function startMeasurement({ settings, seed }) {
  const noiseSeed = seed === undefined ? {} : { HEARTH_TEST_NOISE_SEED: String(seed) };
  return startPair((dir) => ({ ...measureEnv(dir, settings), ...noiseSeed }), (dir) => ({
    ...measureEnv(dir, { ...settings, helper_noise: settings.noise, admin_token: ADMIN_TOKEN }),
    ...noiseSeed,
  }));
}

let loaded = false;

/** The browser module's measurement bindings, loaded into this process on first use. */
export function browserModule() {
  if (!loaded) {
    initSync({ module: fs.readFileSync('www/pkg/hearth_bg.wasm') });
    loaded = true;
  }
  return { measureRecord, measureReport, measureTask };
}

/**
 * @param {string} url
 * @param {RequestInit} [init]
 */
async function ok(url, init) {
  const res = await fetch(url, init);
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: HTTP ${res.status} ${await res.text()}`);
  return res;
}

/**
 * Browsers simulated in Node against the leader at `leader` (and its helper at `helper`): each
 * builds its report with the SDK's own bindings and uploads it as the SDK does.
 * @param {string} leader
 * @param {string} helper
 */
export async function simulatedBrowsers(leader, helper) {
  browserModule();
  const taskJson = await (await ok(`${leader}/v1/measure/task`)).text();
  const task = measureTask(taskJson);
  const config = async (/** @type {string} */ base) =>
    new Uint8Array(await (await ok(`${base}/dap/hpke_config?task_id=${task.taskId}`)).arrayBuffer());
  const [leaderConfigs, helperConfigs] = await Promise.all([config(leader), config(helper)]);
  return {
    task,
    /** The task document as served, and its parameters. */
    taskJson,
    params: JSON.parse(taskJson),
    /** Each server's HPKE configuration list, as served. */
    leaderConfigs,
    helperConfigs,
    /**
     * One browser's report of the period starting at `periodStart` (seconds), from its ad events
     * (at least one) in the order they happened.
     * @param {number} periodStart
     * @param {{ kind: import('../../www/pkg/hearth.js').MeasuredKind, campaign?: string, slot?: string }[]} events
     */
    report(periodStart, events) {
      const tally = events.reduce((t, e) => measureRecord(t, periodStart, e.kind, e.campaign, e.slot), /** @type {string | null} */ (null));
      if (tally === null) throw new Error('a tally starts with an event');
      return measureReport(taskJson, tally, leaderConfigs, helperConfigs);
    },
    /** @param {Uint8Array} report */
    upload: (report) => ok(`${leader}/dap/tasks/${task.taskId}/reports`, {
      method: 'PUT', headers: { 'Content-Type': 'application/dap-report' }, body: report,
    }),
  };
}

/**
 * Collects the period starting at `periodStart` now (the collector's forced collection) and
 * returns its release as the collector's JSON.
 * @param {string} leader
 * @param {number} periodStart
 */
export async function collect(leader, periodStart) {
  const res = await ok(`${leader}/v1/measure/collect?period=${periodStart}`, {
    method: 'POST', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return res.json();
}

/**
 * The stored measurement record of `page`'s origin, read in the page as any script of the site
 * could (each period's report bytes replaced by `built`).
 * @param {import('playwright-core').Page} page
 */
export const storedMeasure = (page) => page.evaluate(() => new Promise((resolve, reject) => {
  const req = indexedDB.open('hearth', 1);
  req.onsuccess = () => {
    const get = req.result.transaction('kv').objectStore('kv').get('measure');
    get.onsuccess = () => {
      req.result.close();
      resolve(get.result && { ...get.result, periods: get.result.periods.map(({ report, ...p }) => ({ ...p, built: !!report })) });
    };
  };
  req.onerror = () => reject(req.error);
}));
