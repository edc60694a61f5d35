// IAB TCF v2.2: with a consent management platform (CMP) on the page, the snippet learns, ranks
// on the profile, measures and trains only with the visitor's consent to each purpose, and
// reacts when the visitor changes it. The CMP is a stub that follows the __tcfapi spec (command
// names, callback(tcData, success), eventStatus, purpose.consents, vendor.consents, gdprApplies)
// and keeps the visitor's choice in localStorage, as a CMP keeps its TC string. The demo site
// runs on the real aggregator pair, in headless Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startAggregator, useBrowser } from './helpers.mjs';
import { openPage } from '../support/browser.mjs';
import { routeDemoHelper } from '../support/aggregator.mjs';

const env = useBrowser(startAggregator);
const GVL_ID = 755;

const articles = (topic) =>
  fs.readdirSync('www/demo/articles').filter((f) => f.startsWith(`${topic}-`)).map((f) => `/demo/articles/${f}`);

/**
 * The stub CMP, installed in the top frame before any page script. `window.__cmpDecide(choice)`
 * is the visitor answering its dialog: `{ purposes: [ids], vendors: [ids] }`, or
 * `{ gdprApplies: false }`.
 */
function stubCmp() {
  if (window !== window.top) return;
  const KEY = 'stub-cmp-choice';
  const read = () => JSON.parse(localStorage.getItem(KEY) ?? 'null');
  const ids = (list) => Object.fromEntries((list ?? []).map((id) => [String(id), true]));
  /** @type {Map<number, Function>} */
  const listeners = new Map();
  let nextId = 0;
  const tcData = (listenerId, eventStatus) => {
    const choice = read();
    const gdprApplies = choice?.gdprApplies ?? true;
    return {
      tcString: choice ? 'stub-tc-string' : '', tcfPolicyVersion: 4, cmpId: 1, cmpVersion: 1, gdprApplies,
      eventStatus, cmpStatus: 'loaded', listenerId, isServiceSpecific: true, useNonStandardTexts: false,
      publisherCC: 'DE', purposeOneTreatment: false,
      purpose: { consents: ids(choice?.purposes), legitimateInterests: {} },
      vendor: { consents: ids(choice?.vendors), legitimateInterests: {} },
      specialFeatureOptins: {}, publisher: { consents: {}, legitimateInterests: {}, customPurpose: { consents: {}, legitimateInterests: {} }, restrictions: {} },
    };
  };
  window.__tcfapi = (command, version, callback, parameter) => {
    if (version !== 2) return callback(null, false);
    if (command === 'ping') {
      return callback({ gdprApplies: read()?.gdprApplies ?? true, cmpLoaded: true, cmpStatus: 'loaded', displayStatus: read() ? 'hidden' : 'visible', apiVersion: '2.2', cmpVersion: 1, cmpId: 1, gvlVersion: 1, tcfPolicyVersion: 4 });
    }
    if (command === 'addEventListener') {
      const id = ++nextId;
      listeners.set(id, callback);
      // A stored choice is 'tcloaded'; without one the CMP shows its dialog and waits.
      return callback(tcData(id, read() ? 'tcloaded' : 'cmpuishown'), true);
    }
    if (command === 'removeEventListener') return callback(listeners.delete(parameter));
    callback(null, false);
  };
  window.__cmpDecide = (choice) => {
    localStorage.setItem(KEY, JSON.stringify(choice));
    for (const [id, callback] of listeners) callback(tcData(id, 'useractioncomplete'), true);
  };
  // Frames reach the CMP through the frame named __tcfapiLocator: their calls arrive by
  // postMessage, and each answer goes back the same way.
  addEventListener('message', (e) => {
    const call = e.data?.__tcfapiCall;
    if (!call) return;
    window.__tcfapi(call.command, call.version, (returnValue, success) =>
      e.source.postMessage({ __tcfapiReturn: { returnValue, success, callId: call.callId } }, '*'), call.parameter);
  });
  const locator = () => {
    const frame = document.createElement('iframe');
    frame.name = '__tcfapiLocator';
    frame.style.display = 'none';
    document.body.append(frame);
  };
  if (document.body) locator();
  else addEventListener('DOMContentLoaded', locator);
}

/**
 * A visitor with the stub CMP, its own storage, the demo's data-helper answered by the tests'
 * helper, and every request and console warning recorded. `choice`: stored before the first page.
 * `attributes` are added to the snippet tag of every demo page.
 */
async function visitor({ choice, attributes } = {}) {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
  await routeDemoHelper(context, env.server.helper);
  if (attributes) {
    const isPage = (url) => url.origin === env.server.url && url.pathname.startsWith('/demo/') && /(\/|\.html)$/.test(url.pathname);
    await context.route(isPage, async (route) => {
      const response = await route.fetch();
      await route.fulfill({ response, body: (await response.text()).replace('src="/hearth.js"', `src="/hearth.js" ${attributes}`) });
    });
  }
  await context.addInitScript(stubCmp);
  // The choice made before the first page; the visitor's later answers replace it.
  if (choice) await context.addInitScript((c) => window === window.top && localStorage.getItem('stub-cmp-choice') === null && localStorage.setItem('stub-cmp-choice', JSON.stringify(c)), choice);
  const requests = [];
  context.on('request', (r) => requests.push(r));
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  return { context, page, requests, warnings };
}

/** Opens `path` and waits until the snippet has filled the slots. */
async function visit(page, path) {
  await page.goto(`${env.server.url}${path}`);
  return page.evaluate(async () => {
    while (!window.hearth || Array.isArray(window.hearth)) await new Promise((r) => setTimeout(r, 10));
    return window.hearth.ready;
  });
}

const events = async (page) => JSON.parse(await page.evaluate(() => hearth.exportProfile())).events;
/** Ad id -> score of the page's ranking, over the whole catalog (`personalized` as rank() takes it). */
const scores = async (page, personalized) =>
  new Map((await page.evaluate((p) => hearth.rank({ k: 200, personalized: p }), personalized)).map((r) => [r.ad_id, r.score]));
/** The ads whose score the profile moved: this ranking against the page's context alone. */
async function moved(page) {
  const [personal, contextual] = [await scores(page), await scores(page, false)];
  return [...personal].filter(([id, s]) => contextual.has(id) && Math.abs(s - contextual.get(id)) > 1e-6).map(([id]) => id);
}
/** The snippet's IndexedDB records by key, or null when the database was never created. */
const stored = (page) => page.evaluate(async () => {
  if (!(await indexedDB.databases()).some((d) => d.name === 'hearth')) return null;
  const db = await new Promise((resolve, reject) => {
    const req = indexedDB.open('hearth');
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  const store = db.transaction('kv').objectStore('kv');
  const [keys, values] = await Promise.all([store.getAllKeys(), store.getAll()].map((req) => new Promise((r) => { req.onsuccess = () => r(req.result); })));
  db.close();
  return Object.fromEntries(keys.map((k, i) => [k, k === 'profile' ? JSON.parse(values[i]).events.length : k === 'measure' ? values[i].periods.length : 'present']));
});
/** Waits until the page's impressions (recorded when half an ad is on screen) have come in. */
async function settle(page) {
  let before = -1;
  for (;;) {
    const now = (await events(page)).length;
    if (now === before) return;
    before = now;
    await page.waitForTimeout(400);
  }
}
const ALL = { storage: true, learn: true, personalize: true, measure: true, train: true };
const sent = (requests, pattern) => requests.filter((r) => pattern.test(new URL(r.url()).pathname)).map((r) => `${r.method()} ${r.url()}`);
const TRAINING = /^\/v1\/(round|updates)$/;
const MEASUREMENT = /^\/v1\/measure\/|^\/dap\//;

test('consent to every purpose: Hearth learns, ranks on the profile and measures', async () => {
  const v = await visitor({ choice: { purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] } });
  for (const path of articles('sports').slice(0, 3)) assert.deepEqual((await visit(v.page, path)).consent, ALL);
  await settle(v.page);
  assert.ok((await events(v.page)).filter((e) => e.kind === 'page_view').length >= 3, 'page views are recorded');
  await visit(v.page, '/demo/');
  assert.ok((await moved(v.page)).length > 0, 'the profile moves the scores');
  assert.ok(sent(v.requests, MEASUREMENT).length > 0, 'ad events are counted for measurement');
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});

test('purposes 3, 4, 7 and 10 refused: no profile, contextual ranking, no training, no measurement', async () => {
  const v = await visitor({ choice: { purposes: [1, 2] } });
  for (const path of articles('sports').slice(0, 3)) await visit(v.page, path);
  await settle(v.page);
  const status = await visit(v.page, '/demo/');
  assert.deepEqual(await events(v.page), [], 'nothing is learned');
  assert.deepEqual(status.consent, { storage: true, learn: false, personalize: false, measure: false, train: false });
  assert.ok(await v.page.$eval('[data-hearth-slot]', (s) => s.dataset.hearthAd), 'ads are still shown');
  assert.deepEqual(await v.page.evaluate(() => hearth.participate()), { status: 'skipped', reason: 'opted out, Global Privacy Control, or no consent to train' });
  assert.deepEqual(sent(v.requests, TRAINING), [], 'no round is even asked for');
  assert.deepEqual(sent(v.requests, MEASUREMENT), [], 'nothing is measured');
  const records = await stored(v.page);
  assert.equal(records.measure, undefined);
  assert.equal(records.profile ?? 0, 0);
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});

test('Purpose 4 refused: Hearth learns, but ranks on the page alone', async () => {
  const v = await visitor({ choice: { purposes: [1, 2, 3, 7, 10] } });
  for (const path of articles('sports').slice(0, 3)) await visit(v.page, path);
  await settle(v.page);
  const status = await visit(v.page, '/demo/');
  assert.ok((await events(v.page)).filter((e) => e.kind === 'page_view').length >= 3, 'page views are recorded');
  assert.deepEqual(await moved(v.page), [], 'the profile moves no score');
  assert.deepEqual(status.consent, { storage: true, learn: true, personalize: false, measure: true, train: true });
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});

test('before the visitor answers the CMP nothing is recorded or stored; consent given later starts learning', async () => {
  const v = await visitor();
  const statuses = [];
  for (const path of articles('travel').slice(0, 2)) statuses.push(await visit(v.page, path));
  await settle(v.page);
  assert.deepEqual(await events(v.page), []);
  assert.equal(await stored(v.page), null, 'IndexedDB is never opened without Purpose 1');
  for (const status of statuses) assert.deepEqual(status.consent, { storage: false, learn: false, personalize: false, measure: false, train: false });
  assert.ok(await v.page.$eval('[data-hearth-slot]', (s) => s.dataset.hearthAd), 'ads are ranked on the page alone');
  assert.deepEqual(sent(v.requests, TRAINING), []);
  assert.deepEqual(sent(v.requests, MEASUREMENT), []);

  // The visitor accepts in the CMP's dialog: this page view on, Hearth stores and learns.
  const told = v.page.evaluate(() => new Promise((r) => document.addEventListener('hearth:consent', (e) => r(e.detail), { once: true })));
  await v.page.evaluate(() => window.__cmpDecide({ purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }));
  assert.deepEqual(await told, ALL);
  assert.deepEqual((await v.page.evaluate(() => hearth.status())).consent, ALL);
  assert.equal(await v.page.evaluate(() => hearth.page({ topics: ['travel'] })), true);
  await visit(v.page, articles('travel')[2]);
  assert.ok((await events(v.page)).length >= 2, 'events are recorded once consent is given');
  assert.ok((await stored(v.page)).profile >= 2, 'and stored');
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});

test('consent withdrawn mid-session: learning, measurement and training stop at once and what they kept is erased', async () => {
  const v = await visitor({ choice: { purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] } });
  for (const path of articles('food').slice(0, 3)) await visit(v.page, path);
  await settle(v.page);
  assert.ok((await events(v.page)).length >= 3);
  // An ad event is counted for measurement after it is recorded: wait for the tally.
  let before = await stored(v.page);
  for (let i = 0; i < 100 && !before.measure; i++) {
    await v.page.waitForTimeout(100);
    before = await stored(v.page);
  }
  assert.ok(before.profile >= 3 && before.measure >= 1, `stored before: ${JSON.stringify(before)}`);

  await v.page.evaluate(() => window.__cmpDecide({ purposes: [1, 2] }));
  await v.page.evaluate(() => hearth.status()); // the worker has taken the change
  assert.deepEqual(await events(v.page), [], 'the profile is erased');
  const after = await stored(v.page);
  assert.equal(after.profile, 0);
  assert.ok(!after.measure, 'measurement\'s tallies are erased');
  const requestsBefore = v.requests.length;
  assert.equal(await v.page.evaluate(() => hearth.page({ topics: ['food'] })), false);
  const ad = await v.page.$eval('[data-hearth-slot]', (s) => s.dataset.hearthAd);
  assert.equal(await v.page.evaluate((ad) => hearth.click(ad, 'sidebar'), ad), false);
  assert.equal((await v.page.evaluate(() => hearth.participate())).status, 'skipped');
  assert.deepEqual(sent(v.requests.slice(requestsBefore), TRAINING), []);
  assert.deepEqual(sent(v.requests.slice(requestsBefore), MEASUREMENT), []);
  assert.deepEqual(await events(v.page), []);
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});

test('a purpose withdrawn on a page without Hearth: the next page view erases what it kept before using it', async () => {
  const v = await visitor({ choice: { purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] } });
  for (const path of articles('health').slice(0, 2)) await visit(v.page, path);
  await settle(v.page);
  assert.ok((await stored(v.page)).profile >= 2);
  // The visitor changes their choice elsewhere on the site: Purpose 3 withdrawn, 4 kept.
  await v.page.evaluate(() => localStorage.setItem('stub-cmp-choice', JSON.stringify({ purposes: [1, 2, 4] })));
  await visit(v.page, '/demo/');
  assert.deepEqual(await events(v.page), []);
  assert.equal((await stored(v.page)).profile, 0);
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});

test('storage (Purpose 1) refused on a later page view: what an earlier consent stored is deleted, not just left unused', async () => {
  const v = await visitor({ choice: { purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] } });
  for (const path of articles('health').slice(0, 2)) await visit(v.page, path);
  await settle(v.page);
  assert.ok((await stored(v.page)).profile >= 2);
  // Every purpose refused elsewhere on the site: this page view's worker keeps to memory, and
  // the profile stored under the earlier consent goes (it used to stay in IndexedDB).
  await v.page.evaluate(() => localStorage.setItem('stub-cmp-choice', JSON.stringify({ purposes: [] })));
  await visit(v.page, '/demo/');
  const after = await stored(v.page);
  assert.equal(after.profile, undefined, JSON.stringify(after));
  assert.equal(after.localU, undefined, JSON.stringify(after));
  assert.equal(after.measure, undefined, JSON.stringify(after));
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});

test('data-tcf-vendor: purposes alone are not enough without the vendor\'s consent; gdprApplies false is not gated', async () => {
  const tag = `data-tcf-vendor="${GVL_ID}"`;
  const refused = await visitor({ choice: { purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], vendors: [1] }, attributes: tag });
  assert.deepEqual((await visit(refused.page, articles('tech')[0])).consent, { storage: false, learn: false, personalize: false, measure: false, train: false });
  assert.deepEqual(await events(refused.page), []);
  assert.equal(await stored(refused.page), null);
  await refused.context.close();

  const agreed = await visitor({ choice: { purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], vendors: [GVL_ID] }, attributes: tag });
  assert.deepEqual((await visit(agreed.page, articles('tech')[0])).consent, ALL);
  assert.ok((await events(agreed.page)).length >= 1);
  await agreed.context.close();

  const outside = await visitor({ choice: { gdprApplies: false } });
  assert.equal((await visit(outside.page, articles('tech')[0])).consent, null);
  assert.ok((await events(outside.page)).length >= 1);
  assert.deepEqual(outside.warnings, []);
  await outside.context.close();
});

test('in a frame, the snippet reaches the page\'s CMP through __tcfapiLocator', async () => {
  const v = await visitor({ choice: { purposes: [1, 2] } });
  const article = articles('home')[0];
  await v.context.route(`${env.server.url}/framed.html`, (route) => route.fulfill({
    contentType: 'text/html',
    body: `<!doctype html><title>Framed</title><link rel="icon" href="data:,"><iframe src="${article}" width="1200" height="850"></iframe>`,
  }));
  await v.page.goto(`${env.server.url}/framed.html`);
  let frame;
  while (!(frame = v.page.frames().find((f) => f.url().endsWith(article)))) await v.page.waitForTimeout(50);
  const status = await frame.evaluate(async () => {
    while (!window.hearth || Array.isArray(window.hearth)) await new Promise((r) => setTimeout(r, 10));
    return window.hearth.ready;
  });
  assert.deepEqual(status.consent, { storage: true, learn: false, personalize: false, measure: false, train: false });
  assert.equal(await frame.evaluate(() => window.__tcfapi), undefined, 'the frame has no __tcfapi of its own');
  assert.deepEqual(JSON.parse(await frame.evaluate(() => hearth.exportProfile())).events, []);

  const told = frame.evaluate(() => new Promise((r) => document.addEventListener('hearth:consent', (e) => r(e.detail), { once: true })));
  await v.page.evaluate(() => window.__cmpDecide({ purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }));
  assert.deepEqual(await told, ALL);
  assert.equal(await frame.evaluate(() => hearth.page({ topics: ['home'] })), true);
  assert.deepEqual(v.page.problems, []);
  await v.context.close();
});
