// Plain, true words: "why this ad" (www/hearth/explain.js) names what a visitor recognises and no
// internal id, and the demo's profile page (www/demo/profile.*) shows interests as bars, recent
// ads by name, what left the browser at what privacy cost, and asks before it erases. The
// explanation is tested on its own in Node, then end to end on the demo served by the real
// aggregator pair, in Chromium (axe-core checks the profile page in frame.test.mjs).
// Screenshots go to target/e2e/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startAggregator, useBrowser } from './helpers.mjs';
import { openPage } from '../support/browser.mjs';
import { checkCatalog } from '../../www/hearth/catalog.js';
import { advertiserName, whyInWords } from '../../www/hearth/explain.js';
import { routeDemoHelper } from '../support/aggregator.mjs';

const SHOTS = 'target/e2e';
const catalog = checkCatalog(fs.readFileSync('www/demo/catalog.json', 'utf8'), 'http://demo.example/v1/catalog.json');
// What must never reach a visitor: ad ids, campaign slugs, and advertiser slugs that are not
// also a word of the advertiser's name ("arenapass" is ArenaPass; "wayfarer-rail" is no word).
const IDS = new Set(catalog.ads.flatMap((a) => [a.id, a.campaign, a.advertiser]).filter((s) => /[-\d]/.test(s)));
const RAW_KEY = /\b(topic|kw|cat|camp|adv|ad):/;

/** The raw feature keys and id tokens in `text`. */
function ids(text) {
  return [...(text.match(new RegExp(RAW_KEY, 'g')) ?? []), ...text.toLowerCase().split(/[^a-z0-9-]+/).filter((t) => IDS.has(t))];
}

// ---- explain.js on its own ---------------------------------------------------------------------
const travel25 = catalog.byId.get('travel-25'); // Wayfarer Rail: topic:travel, kw:rail, kw:hiking
const click = { kind: 'click', ts: 1, ad_id: 'travel-25', campaign: 'wayfarer-rail-spring', advertiser: 'wayfarer-rail', category: 'travel' };
const clicked = { events: [click], features: { 'ad:travel-25': { w: 2 }, 'camp:wayfarer-rail-spring': { w: 2 }, 'adv:wayfarer-rail': { w: 2 } } };
const sources = (profile, topics = ['travel']) => ({ catalog, context: { topics, keywords: [] }, profile: () => profile });

test('an explanation names the topics read and the advertiser clicked, never an id', () => {
  // What the ranking reported for the "travel, travel-25, wayfarer-rail-spring".
  const why = [
    { feature: 'topic:travel', contribution: 0.5 }, { feature: 'ad:travel-25', contribution: 0.4 },
    { feature: 'camp:wayfarer-rail-spring', contribution: 0.3 }, { feature: 'kw:rail', contribution: 0.2 },
    { feature: 'kw:travel-25', contribution: 0.15 }, { feature: 'kw:2024', contribution: 0.1 },
    { feature: 'topic:food', contribution: -0.3 },
  ];
  const text = whyInWords(why, travel25, sources(clicked));
  assert.equal(text, 'You read about travel and rail on this site. You clicked an ad from Wayfarer Rail.');
  assert.deepEqual(ids(text), []);
  assert.ok(!text.includes(':'));
});

test('only what raised the ad explains it, and only events that happened', () => {
  // A dismissed advertiser (negative weight) is no reason, whatever the sign of its share.
  const dismissed = { events: [{ ...click, kind: 'dismissal' }], features: { 'adv:wayfarer-rail': { w: -2 } } };
  const onlyDismissed = whyInWords([{ feature: 'adv:wayfarer-rail', contribution: 0.4 }], travel25, sources(dismissed));
  assert.equal(onlyDismissed, 'It is about travel, like this page.');
  // A click that has left the bounded event log is not named, but not denied either.
  const evicted = { events: [], features: { 'adv:wayfarer-rail': { w: 2 } } };
  assert.equal(whyInWords([{ feature: 'adv:wayfarer-rail', contribution: 0.4 }], travel25, sources(evicted)),
    'It was chosen for this page and for what you did here before.');
  // A conversion is not called a click.
  const converted = { events: [{ ...click, kind: 'conversion' }], features: { 'cat:travel': { w: 4 } } };
  assert.equal(whyInWords([{ feature: 'cat:travel', contribution: 0.4 }], travel25, sources(converted)),
    'You responded to an offer from Wayfarer Rail.');
  // The profile is read only when a click could explain the ad.
  const untouched = () => assert.fail('profile read for a topic');
  assert.equal(whyInWords([{ feature: 'topic:travel', contribution: 1 }], travel25, { ...sources(null), profile: untouched }),
    'You read about travel on this site.');
});

test('with nothing in its favour, an explanation says only what is so of the page', () => {
  assert.equal(whyInWords([], travel25, sources(clicked)), 'It is about travel, like this page.');
  assert.equal(whyInWords([{ feature: 'topic:food', contribution: -1 }], travel25, sources(clicked, ['food'])),
    'It was chosen for this page, not for your interests.');
  assert.equal(whyInWords([], travel25, sources(clicked, ['food'])), 'It was chosen for this page.');
});

test('advertisers are named as their own ads write it', () => {
  assert.equal(advertiserName(catalog, 'wayfarer-rail'), 'Wayfarer Rail');
  assert.equal(advertiserName(catalog, 'crumb-and-co'), 'Crumb & Co');
  assert.equal(advertiserName(catalog, 'arenapass'), 'ArenaPass');
  assert.equal(advertiserName(catalog, 'not-in-catalog'), 'Not In Catalog'); // else its slug in words
});

// ---- the demo, end to end ----------------------------------------------------------------------
const env = useBrowser(startAggregator);
const articles = (topic) =>
  fs.readdirSync('www/demo/articles').filter((f) => f.startsWith(`${topic}-`)).map((f) => `/demo/articles/${f}`);

// Opens `path` and waits until the snippet has filled the slots.
async function visit(page, path) {
  await page.goto(`${env.server.url}${path}`);
  return page.evaluate(async () => {
    while (!window.hearth?.version) await new Promise((r) => setTimeout(r, 10));
    return window.hearth.ready;
  });
}

// A browser context whose requests to the demo pages' data-helper reach the tests' helper.
async function demoContext() {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
  await routeDemoHelper(context, env.server.helper);
  return context;
}

async function profilePage(page) {
  await visit(page, '/demo/profile.html');
  await page.waitForSelector('body[data-ready="true"]');
  return page.textContent('main');
}

test('after reading travel and clicking a travel ad, why names both, and the profile page says it in words', async (t) => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const context = await demoContext();
  // No round open for this visitor, so the page is shown before any training, whatever the
  // snippet's background attempts.
  await context.route(`${env.server.url}/v1/round`, (route) =>
    route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"no_open_round"}' }));
  const page = await openPage(context);
  for (const path of articles('travel')) await visit(page, path);
  // The top travel ad, clicked (reported as the snippet reports a click in its frame).
  const [top] = (await page.evaluate(() => hearth.rank({ k: 40 }))).filter((a) => a.category === 'travel');
  assert.ok(top, 'a travel ad is ranked');
  assert.equal(await page.evaluate((id) => hearth.click(id, 'sidebar'), top.ad_id), true);

  const why = await page.evaluate((id) => hearth.why(id), top.ad_id);
  const name = advertiserName(catalog, top.advertiser);
  t.diagnostic(`why ${top.ad_id}: ${why.explanation}`);
  assert.match(why.explanation, new RegExp(`You clicked an ad from ${name}\\.`), why.explanation);
  assert.match(why.explanation, /You read about [^.]*\btravel\b/, why.explanation);
  assert.deepEqual(ids(why.explanation), [], why.explanation);
  assert.ok(!why.explanation.includes(':'), why.explanation);
  // The slot's "why this ad" panel shows the worker's words (the renderer's `.r`, www/hearth/frame.html).
  await visit(page, articles('travel')[0]);
  const panel = page.frameLocator('[data-hearth-slot="sidebar"] iframe').locator('.r');
  await panel.filter({ hasText: /\S/ }).waitFor({ state: 'attached' });
  const shown = await panel.textContent();
  assert.match(shown, /^(You read about|You clicked|It )/, shown);
  assert.deepEqual(ids(shown), [], shown);
  // Every ranked ad's explanation is as plain.
  for (const ad of await page.evaluate(() => hearth.rank({ k: 30 }))) {
    assert.deepEqual(ids(ad.explanation), [], ad.explanation);
    assert.ok(!ad.explanation.includes(':'), ad.explanation);
  }

  // The profile page: words and bars, no raw key, no decimal weight.
  const text = await profilePage(page);
  assert.deepEqual(ids(text), []);
  assert.doesNotMatch(text, /\d\.\d{3}/);
  const interests = await page.$$eval('#interests ul.interests li', (items) => items.map((li) => ({
    name: li.querySelector('.name')?.textContent, label: li.querySelector('meter')?.getAttribute('aria-label'),
  })));
  assert.ok(interests.some((i) => i.name === 'travel'), JSON.stringify(interests));
  assert.ok(interests.some((i) => i.name === name), JSON.stringify(interests));
  for (const i of interests) assert.match(i.label, new RegExp(`^${i.name}: (strong|medium|slight) interest$`));
  assert.doesNotMatch(await page.textContent('#interests'), /\d/);
  const rows = await page.$$eval('#ads tbody tr', (trs) => trs.map((tr) => tr.textContent));
  assert.ok(rows.some((r) => r.includes(name) && r.includes(catalog.creatives[top.ad_id].title) && r.includes('You clicked it')), rows.join('\n'));
  assert.match(await page.textContent('#privacy'), /^This browser has not taken part in training: no model update has left it\./);
  await page.screenshot({ path: `${SHOTS}/profile-before.png`, fullPage: true });
  assert.deepEqual(page.problems.filter((p) => !/^HTTP 503 .*\/v1\/round$/.test(p)), []);
  await context.close();
});

test('after a training round the profile page lists the update and its privacy cost; erase asks, then reports', async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const context = await demoContext();
  const page = await openPage(context);
  // Browse until the device has the labelled events a round asks for. A page's impressions are
  // recorded once its ads have rendered, after `ready`: wait (at most 5 s) for them to count.
  for (const path of [...articles('travel'), ...articles('food'), ...articles('sports')]) {
    const { labelledEvents } = await visit(page, path);
    const counted = await page.evaluate(async (before) => {
      for (let i = 0; i < 100; i++) {
        const now = (await hearth.status()).labelledEvents;
        if (now > before) return now;
        await new Promise((r) => setTimeout(r, 50));
      }
      return before;
    }, labelledEvents);
    if (counted >= 10) break;
  }
  // Taken part now, or already when the page was idle (the snippet's background attempt).
  const result = await page.evaluate(() => hearth.participate());
  assert.ok(result.status === 'uploaded' || /already took part/.test(result.reason), JSON.stringify(result));
  const spent = await page.evaluate(() => hearth.privacy());

  await profilePage(page);
  const privacy = await page.textContent('#privacy');
  assert.ok(privacy.startsWith('This browser has taken part in 1 training round, with a model update made here. ' +
    'Privacy spent so far against either server alone, or one that fills a round with fake browsers: ' +
    `ε = ${spent.curious_server_epsilon.toFixed(2)} of a budget of ${spent.epsilon_budget} (δ = 10⁻⁶).`), privacy);
  await page.screenshot({ path: `${SHOTS}/profile-after-training.png`, fullPage: true });

  // Erase asks first; Escape (or "Keep my profile") keeps everything.
  const count = await page.textContent('#count');
  assert.notEqual(count, '0');
  const shown = await page.$$eval('#interests li', (items) => items.length);
  await page.click('#erase');
  await page.waitForSelector('#confirm-erase[open]');
  assert.match(await page.textContent('#confirm-what'), new RegExp(`^your ${count} events(, | and )${shown} interests`));
  await page.keyboard.press('Escape');
  await page.waitForSelector('#confirm-erase:not([open])', { state: 'hidden' });
  assert.equal(await page.textContent('#count'), count);
  assert.equal(await page.isHidden('#erased'), true);
  // Confirmed from the keyboard: focus starts on "Keep my profile", Tab moves to "Erase".
  await page.click('#erase');
  await page.waitForSelector('#confirm-erase[open]');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Keep my profile');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'erase-confirm');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('count')?.textContent === '0');
  const erased = await page.textContent('#erased');
  assert.match(erased, new RegExp(`^Your profile is erased\\. Erased: ${count} events(, | and )${shown} interests( and what training learned from your clicks)?, and any model update or count of ads not yet sent\\. Kept: the record of privacy spent \\(1 training round\\), because`), erased);
  assert.equal(await page.textContent('#privacy'), privacy, 'the ledger stays');

  // Opted out, with a profile again: the page says so, and what it erased.
  await visit(page, articles('travel')[0]);
  await profilePage(page);
  await page.click('#opt');
  await page.waitForSelector('body[data-learning="opted-out"]');
  assert.match(await page.textContent('#status'), /^You opted out: Hearth erased your profile, records nothing here, and sends no model update/);
  assert.match(await page.textContent('#erased'), /^You opted out\. Erased: /);
  await page.screenshot({ path: `${SHOTS}/opted-out.png`, fullPage: true });
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('with Global Privacy Control the profile page says that nothing is recorded or sent', async () => {
  const context = await demoContext();
  await context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }));
  const page = await openPage(context);
  await profilePage(page);
  assert.match(await page.textContent('#status'), /^Your browser sends Global Privacy Control, so Hearth records nothing here and sends no model update/);
  assert.equal(await page.getAttribute('body', 'data-learning'), 'gpc');
  await context.close();
});
