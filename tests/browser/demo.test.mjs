// The demo page (www/demo), served by the aggregator in demo mode as `make demo`
// does, works end to end in Chromium with the aggregator's current model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startAggregator, useBrowser } from './helpers.mjs';
import { openPage } from '../../scripts/browser.mjs';

const env = useBrowser(startAggregator);

test('the demo ranks the sample catalog and reacts to the visitor', async () => {
  const context = await env.browser.newContext();
  const page = await openPage(context, `${env.server.url}/`);
  assert.match(page.url(), /\/demo\/$/, '/ redirects to the demo');
  await page.waitForSelector('#status[data-ready="true"]', { timeout: 60_000 });
  const ids = () => page.$$eval('#ranked li', (lis) => lis.map((li) => li.dataset.adId));
  assert.equal((await ids()).length, 5);
  assert.ok((await page.$$eval('#features tbody tr', (rows) => rows.length)) > 0, 'sample profile is shown');

  // Dismissing the top ad records a dismissal and reranks.
  const top = (await ids())[0];
  await page.click('#ranked li:first-child button:nth-of-type(2)');
  const profile = JSON.parse(await page.textContent('#export'));
  assert.equal(profile.events.at(-1).kind, 'dismissal');
  assert.equal(profile.events.at(-1).ad_id, top);

  // The profile persists across a reload, and erase empties it.
  await page.reload();
  await page.waitForSelector('#status[data-ready="true"]');
  assert.equal(JSON.parse(await page.textContent('#export')).events.at(-1).ad_id, top);
  await page.click('#erase');
  assert.equal(JSON.parse(await page.textContent('#export')).events.length, 0);
  assert.equal(await page.$$eval('#features tbody tr', (rows) => rows.length), 0);
  assert.equal((await ids()).length, 5, 'still ranks with an empty profile');

  assert.deepEqual(page.problems, []);
  await context.close();
});
