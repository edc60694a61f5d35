// One hearth-aggregator process for the browser tests: `config` with environment `overrides`
// (HEARTH_AGG__SECTION__KEY=value, value read as TOML), on a free port, with a fresh database in
// a directory of its own (created by --init; the measurement database too) that `close()` removes. `overrides` may be a
// function of that directory, for settings that need files of their own. `dir` names a directory
// the caller owns instead, kept at close: a process started again on it (with HEARTH_AGG__LISTEN
// in `overrides` for the same port) finds the databases of the last one. `cargo test` or
// `cargo build -p hearth-aggregator` builds the binary; HEARTH_AGGREGATOR names another.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * @param {string} config  a TOML file
 * @param {Record<string, string> | ((dir: string) => Record<string, string>)} [overrides]
 * @param {{ dir?: string }} [options]
 * @returns {Promise<{ url: string, close: () => Promise<void> }>}
 */
export async function spawnAggregator(config, overrides = {}, { dir: owned } = {}) {
  const bin = process.env.HEARTH_AGGREGATOR ?? 'target/debug/hearth-aggregator';
  const dir = owned ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-agg-'));
  const remove = () => owned === undefined && fs.rmSync(dir, { recursive: true, force: true });
  const child = spawn(bin, ['--config', config, '--init'], {
    env: {
      ...process.env,
      HEARTH_AGG__LISTEN: '"127.0.0.1:0"',
      HEARTH_AGG__DATABASE: JSON.stringify(path.join(dir, 'hearth.db')),
      // Never the demo's target/demo files: every process measures into its own directory.
      HEARTH_AGG__MEASURE__DATABASE: JSON.stringify(path.join(dir, 'measure.db')),
      HEARTH_LOG: 'warn',
      ...(typeof overrides === 'function' ? overrides(dir) : overrides),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let line;
  try {
    line = await new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`${bin} --config ${config} exited with ${code}`)));
      createInterface({ input: child.stdout }).once('line', resolve);
    });
  } catch (e) {
    remove();
    throw e;
  }
  const url = line.trim().split(' ').at(-1);
  return {
    url,
    async close() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      remove();
    },
  };
}

/**
 * The demo's helper (demo-helper.toml) and the leader (demo.toml) that names it, each with its own
 * `overrides` (as `spawnAggregator` takes them). `url` is the leader's, `helper` the helper's.
 * @param {Parameters<typeof spawnAggregator>[1]} [helperOverrides]
 * @param {(dir: string) => Record<string, string>} [leaderOverrides]
 * @returns {Promise<{ url: string, helper: string, close: () => Promise<void> }>}
 */
export async function startPair(helperOverrides = {}, leaderOverrides = () => ({})) {
  const helper = await spawnAggregator('crates/aggregator/demo-helper.toml', helperOverrides);
  try {
    const leader = await spawnAggregator('crates/aggregator/demo.toml', (dir) => ({
      HEARTH_AGG__SECAGG__HELPER_URL: JSON.stringify(`${helper.url}/`),
      ...leaderOverrides(dir),
    }));
    return {
      url: leader.url,
      helper: helper.url,
      async close() {
        await leader.close();
        await helper.close();
      },
    };
  } catch (e) {
    await helper.close();
    throw e;
  }
}

// The demo pages' data-helper (www/demo, xtask's SNIPPET): a fixed address no test listens on.
export const DEMO_HELPER = 'http://127.0.0.1:8001';

// Sends `context`'s requests to the demo pages' helper on to the tests' helper at `helper`.
export async function routeDemoHelper(context, helper) {
  await context.route(`${DEMO_HELPER}/**`, async (route) => {
    const { pathname, search } = new URL(route.request().url());
    await route.fulfill({ response: await route.fetch({ url: `${helper}${pathname}${search}` }) });
  });
}
