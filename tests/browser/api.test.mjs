// The publisher API on a demo page (real aggregator pair, headless Chromium): the command queue a
// page fills before the async snippet has loaded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startAggregator, useBrowser } from './helpers.mjs';
import { openPage } from '../support/browser.mjs';

const env = useBrowser(startAggregator);

test('commands queued before the snippet loads run in order with the API; later ones run at once', async () => {
  const context = await env.browser.newContext();
  // As a page's own script before the snippet: the queue, one command that throws and one that
  // rejects between two that work.
  await context.addInitScript(() => {
    if (window !== window.top) return;
    window.__ran = [];
    window.hearth = window.hearth || [];
    window.hearth.push((h) => window.__ran.push(`first ${h.version}`));
    window.hearth.push(() => { throw new Error('publisher bug'); });
    window.hearth.push(async () => { throw new Error('async publisher bug'); });
    window.hearth.push((h) => { window.__ran.push('last'); window.__ranked = h.ready.then(() => h.rank({ k: 2 })); });
  });
  const page = await openPage(context);
  await page.goto(`${env.server.url}/demo/`);
  const ranked = await page.evaluate(async () => {
    while (Array.isArray(window.hearth)) await new Promise((r) => setTimeout(r, 10));
    return window.__ranked;
  });
  assert.equal(ranked.length, 2, 'a queued command used the API');
  const version = await page.evaluate(() => window.hearth.version);
  assert.deepEqual(await page.evaluate(() => window.__ran), [`first ${version}`, 'last']);
  assert.deepEqual(page.problems.map((p) => p.replace(/\n[\s\S]*/, '')).sort(), [
    'console.error: hearth: a queued command failed: Error: async publisher bug',
    'console.error: hearth: a queued command failed: Error: publisher bug',
  ]);

  // Once loaded, push runs a command before it returns.
  assert.equal(await page.evaluate(() => {
    let ran = false;
    window.hearth.push(() => { ran = true; });
    return ran;
  }), true);
  await context.close();
});
