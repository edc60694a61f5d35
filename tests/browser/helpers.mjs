// Shared setup for the browser tests: one static server and one Chromium per
// test file, and pages that have the built module (www/pkg) loaded.
import { after, before } from 'node:test';
import { startServer } from '../support/serve.mjs';
import { spawnAggregator, startPair } from '../support/aggregator.mjs';
import { launchChromium, openPage } from '../support/browser.mjs';

export const NOW = 1_750_000_000_000;

// Registers before/after hooks; the returned object is filled in by `before`.
// `start` gives the server: the static one by default, or startAggregator.
export function useBrowser(start = startServer) {
  const env = {};
  before(async () => {
    env.server = await start();
    env.browser = await launchChromium();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.close();
  });
  return env;
}

// A fresh page (own context: no shared storage) on the server's origin with
//   window.T = {Hearth, privacyReport, ledgerSummary, onnx, manifest, workload, demo}
// ready for page.evaluate. The page itself is an empty document supplied by
// Playwright, so nothing but the module runs in it.
export async function hearthPage(env) {
  const context = await env.browser.newContext();
  const page = await openPage(context);
  const blank = `${env.server.url}/__blank__.html`;
  await page.route(blank, (r) => r.fulfill({ contentType: 'text/html', body: '<!doctype html><link rel="icon" href="data:,">' }));
  await page.goto(blank);
  await page.evaluate(async () => {
    const mod = await import('/pkg/hearth.js');
    await mod.default();
    const get = async (url) => {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
      return res;
    };
    window.T = {
      Hearth: mod.Hearth,
      privacyReport: mod.privacyReport,
      ledgerSummary: mod.ledgerSummary,
      onnx: new Uint8Array(await (await get('/models/default/model.onnx')).arrayBuffer()),
      manifest: await (await get('/models/default/manifest.json')).text(),
      workload: await import('/bench/workload.mjs'),
      demo: await (await get('/demo/catalog.json')).json(),
    };
  });
  page.closeAll = () => context.close();
  return page;
}

// The real aggregator with `make demo`'s configuration: the helper (demo-helper.toml) and the
// leader (demo.toml, serving www/ and the demo catalog) that names it, each on a free port. The
// result's `url` is the leader's and `helper` the helper's. `role: 'single'` starts demo.toml as
// one plaintext aggregator instead, with no helper (and no measurement, which needs both).
export async function startAggregator({ role = 'leader' } = {}) {
  if (role === 'single') return spawnAggregator('crates/aggregator/demo.toml', { HEARTH_AGG__ROLE: '"single"', HEARTH_AGG__MEASURE__ENABLED: 'false' });
  return startPair();
}
