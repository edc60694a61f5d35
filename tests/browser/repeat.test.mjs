// End to end on the demo site (www/demo, served by the real aggregator pair as `make demo` runs
// it) in headless Chromium: "Not interested" sticks across page views, the default frequency caps
// hold, no slot shows the same ad on two page views in a row, and a slot's own cap attribute
// (data-hearth-cap-ad) is obeyed. The viewport is tall enough for both slots of an article to be
// on screen, so that every ad drawn is also seen and counted as an impression.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startAggregator, useBrowser } from './helpers.mjs';
import { openPage } from '../support/browser.mjs';

const env = useBrowser(startAggregator);
const VIEWPORT = { width: 1280, height: 4000 };
const catalog = JSON.parse(fs.readFileSync('www/demo/catalog.json', 'utf8'));
const campaignOf = new Map(catalog.ads.map((a) => [a.id, a.campaign]));
const sports = fs.readdirSync('www/demo/articles').filter((f) => f.startsWith('sports-')).map((f) => `/demo/articles/${f}`);
// The defaults the core applies when a page sets no caps (rank.rs AD_CAPS, CAMPAIGN_CAPS).
const CAPS = { ad: { day: 3, session: 2 }, campaign: { day: 6, session: 4 } };

const profileEvents = async (page) => JSON.parse(await page.evaluate(() => hearth.exportProfile())).events;

/**
 * Opens `path` and waits until every slot shows an ad that has been seen since (its impression
 * recorded). Returns the ad of each slot, by slot name, and when the view began.
 */
async function view(page, path) {
  const since = Date.now();
  await page.goto(`${env.server.url}${path}`);
  await page.evaluate(async () => {
    while (!window.hearth?.ready) await new Promise((r) => setTimeout(r, 10));
    return window.hearth.ready;
  });
  const ads = await page.evaluate(async (since) => {
    for (;;) {
      const slots = [...document.querySelectorAll('[data-hearth-slot]')].map((s) => [s.dataset.hearthSlot, s.dataset.hearthAd]);
      const events = JSON.parse(await window.hearth.exportProfile()).events;
      const seen = (ad) => events.some((e) => e.kind === 'impression' && e.ad_id === ad && e.ts >= since);
      if (slots.length && slots.every(([, ad]) => ad && seen(ad))) return Object.fromEntries(slots);
      await new Promise((r) => setTimeout(r, 100));
    }
  }, since);
  return { ads, since };
}

/** Impressions per key (`ad_id` or `campaign`) among `events`. */
function counts(events, key) {
  const out = new Map();
  for (const e of events.filter((e) => e.kind === 'impression')) out.set(e[key], (out.get(e[key]) ?? 0) + 1);
  return out;
}

test('a dismissed ad never comes back, nor a campaign dismissed twice', async () => {
  const context = await env.browser.newContext({ viewport: VIEWPORT });
  const page = await openPage(context);
  const { ads } = await view(page, sports[0]);
  const dismissed = ads['in-article'];
  await page.frameLocator('[data-hearth-slot="in-article"] iframe').locator('button.x').click();
  // Recorded, and the slot refilled with another ad.
  await page.waitForFunction(async (ad) => {
    const events = JSON.parse(await window.hearth.exportProfile()).events;
    return events.some((e) => e.kind === 'dismissal' && e.ad_id === ad) &&
      document.querySelector('[data-hearth-slot="in-article"]').dataset.hearthAd !== ad;
  }, dismissed, { polling: 100, timeout: 60_000 });
  // Only the dismissed slot changed: the visitor keeps looking at the other ads.
  const now = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('[data-hearth-slot]')].map((s) => [s.dataset.hearthSlot, s.dataset.hearthAd])));
  for (const [slot, ad] of Object.entries(ads)) if (slot !== 'in-article') assert.equal(now[slot], ad, `slot ${slot} changed after a dismissal in another`);

  // Eight more page views on the same topic, where it ranked first.
  const shown = [];
  for (let i = 0; i < 8; i++) shown.push(...Object.values((await view(page, sports[(i + 1) % sports.length])).ads));
  assert.ok(!shown.includes(dismissed), `${dismissed} came back: ${shown}`);
  const all = await page.evaluate((k) => hearth.rank({ k }), catalog.ads.length);
  assert.ok(!all.some((r) => r.ad_id === dismissed), 'nothing ranks it, however many ads are asked for');
  assert.equal(all.length, catalog.ads.length - 1);

  // A second dismissal in its campaign, through the API: the whole campaign is gone.
  const campaign = campaignOf.get(dismissed);
  const sibling = catalog.ads.find((a) => a.campaign === campaign && a.id !== dismissed).id;
  assert.equal(await page.evaluate((ad) => hearth.dismiss(ad, 'sidebar'), sibling), true);
  const left = await page.evaluate((k) => hearth.rank({ k }), catalog.ads.length);
  assert.deepEqual(left.filter((r) => campaignOf.get(r.ad_id) === campaign), []);
  assert.equal(left.length, catalog.ads.length - catalog.ads.filter((a) => a.campaign === campaign).length);
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('over twelve page views no slot repeats its ad and no ad or campaign passes its caps', async () => {
  const context = await env.browser.newContext({ viewport: VIEWPORT });
  const page = await openPage(context);
  const views = [];
  // The same six articles twice: the same topic keeps the same ads on top.
  for (let i = 0; i < 12; i++) views.push((await view(page, sports[i % sports.length])).ads);
  for (const slot of ['in-article', 'sidebar']) {
    const row = views.map((v) => v[slot]);
    for (let i = 1; i < row.length; i++) assert.notEqual(row[i], row[i - 1], `${slot} showed ${row[i]} twice in a row: ${row}`);
  }
  for (const v of views) assert.notEqual(v['in-article'], v.sidebar);
  // Twelve page views a few seconds apart are one session, within one day: the session caps bind.
  const events = await profileEvents(page);
  for (const [ad, n] of counts(events, 'ad_id')) assert.ok(n <= CAPS.ad.session, `${ad}: ${n} impressions`);
  for (const [campaign, n] of counts(events, 'campaign')) assert.ok(n <= CAPS.campaign.session, `${campaign}: ${n} impressions`);
  assert.equal(events.filter((e) => e.kind === 'impression').length, 24, 'two ads seen on every page view');
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('a slot with data-hearth-cap-ad="1/day" shows each ad once; an unreadable cap says why', async () => {
  const context = await env.browser.newContext({ viewport: VIEWPORT });
  /** @type {string} */
  let cap = '1/day';
  await context.route((url) => url.origin === env.server.url && url.pathname.startsWith('/demo/articles/'), async (route) => {
    const response = await route.fetch();
    const body = (await response.text()).replace('data-hearth-slot="in-article"', `data-hearth-slot="in-article" data-hearth-cap-ad="${cap}"`);
    await route.fulfill({ response, body });
  });
  const page = await openPage(context);
  const views = [];
  for (let i = 0; i < 10; i++) views.push(await view(page, sports[i % sports.length]));
  const events = await profileEvents(page);
  for (const { ads, since } of views) {
    const ad = ads['in-article'];
    const before = events.filter((e) => e.kind === 'impression' && e.ad_id === ad && e.ts < since);
    assert.deepEqual(before, [], `${ad} was seen before it filled the capped slot`);
  }
  // The sidebar keeps the default caps: an ad may be seen there twice.
  for (const [ad, n] of counts(events, 'ad_id')) assert.ok(n <= CAPS.ad.session, `${ad}: ${n} impressions`);

  cap = '3/week';
  await page.goto(`${env.server.url}${sports[0]}`);
  const error = await page.evaluate(async () => {
    while (!window.hearth?.ready) await new Promise((r) => setTimeout(r, 10));
    return window.hearth.ready.then(() => null, (e) => e.message);
  });
  assert.match(error, /invalid ad caps "3\/week" \(data-hearth-cap-ad/);
  await context.close();
});
