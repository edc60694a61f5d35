// End to end: the demo news site (www/demo) with the publisher snippet (www/hearth.js), served
// by the real aggregator pair with `make demo`'s configuration (the leader serves the site, the
// helper holds the key devices seal to), in headless Chromium with WebGPU on SwiftShader (and,
// for one test, without WebGPU: no adapter). Screenshots go to target/e2e/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { startAggregator, useBrowser } from './helpers.mjs';
import { launchChromium, openPage } from '../support/browser.mjs';
import { routeDemoHelper, DEMO_HELPER } from '../support/aggregator.mjs';

const env = useBrowser(startAggregator);
const SHOTS = 'target/e2e';
// A report of the demo pack (280,129 parameters): 123 header bytes and 3 bytes per share value.
const REPORT_BYTES = 123 + 3 * 280_129;
const REPORT_TYPE = 'application/vnd.hearth.report';
// The demo pages' data-helper: `make demo`'s helper. The tests' helper listens on a free port
// instead, so this address is answered by it (demoContext).

const catalog = JSON.parse(fs.readFileSync('www/demo/catalog.json', 'utf8'));
const articles = (topic) =>
  fs.readdirSync('www/demo/articles').filter((f) => f.startsWith(`${topic}-`)).map((f) => `/demo/articles/${f}`);
const category = new Map(catalog.ads.map((a) => [a.id, a.category]));

// Opens `path` and waits until the snippet has filled the slots and their frames have drawn the
// ads (data-hearth-rendered; at most 10 s), so that a test's next step never cuts off a frame.
async function visit(page, path, server = env.server.url) {
  await page.goto(`${server}${path}`);
  return page.evaluate(async () => {
    while (!window.hearth) await new Promise((r) => setTimeout(r, 10));
    const status = await window.hearth.ready;
    const drawn = (s) => !s.dataset.hearthAd || s.dataset.hearthRendered === s.dataset.hearthAd;
    for (let i = 0; i < 200 && ![...document.querySelectorAll('[data-hearth-slot]')].every(drawn); i++) await new Promise((r) => setTimeout(r, 50));
    return status;
  });
}

// A browser context whose requests to the demo pages' data-helper reach the tests' helper.
async function demoContext(options) {
  const context = await env.browser.newContext(options);
  await routeDemoHelper(context, env.server.helper);
  return context;
}

// Every request the page and its worker make, as Playwright sees them on the wire.
function recordRequests(context) {
  const seen = [];
  context.on('request', (r) => seen.push(r));
  return seen;
}

const sportsShare = async (page) => {
  const ranked = await page.evaluate(() => hearth.rank({ k: 30 }));
  return ranked.filter((r) => category.get(r.ad_id) === 'sports').length / ranked.length;
};

test('browsing sports moves the ranking; clicks, reloads and erase behave', async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const context = await demoContext({ viewport: { width: 1280, height: 900 } });
  const requests = recordRequests(context);
  const page = await openPage(context);
  const status = await visit(page, '/demo/');
  assert.equal(status.ads, catalog.ads.length);
  assert.ok(status.ads >= 200);
  const before = await sportsShare(page);

  for (const path of articles('sports').slice(0, 5)) await visit(page, path);
  await visit(page, '/demo/');
  // The sports ads were shown and none clicked; a round of local training on that must not
  // turn the ranking away from what was read.
  await page.evaluate(() => hearth.participate());
  const after = await sportsShare(page);
  // The catalog came whole once; every later page revalidated it (304) by its ETag.
  const catalogs = await Promise.all(requests.filter((r) => r.url().endsWith('/v1/catalog.json')).map((r) => r.response()));
  assert.deepEqual(catalogs.map((r) => r.status()), [200, ...Array(catalogs.length - 1).fill(304)]);
  assert.ok(before <= 0.25 && after >= 0.5, `sports share of the top 30: ${before} -> ${after}`);
  const inSlots = await page.$$eval('[data-hearth-slot]', (slots) => slots.map((s) => s.dataset.hearthAd));
  assert.equal(inSlots.length, 2);
  assert.ok(inSlots.every(Boolean), 'both slots hold an ad');
  await page.screenshot({ path: `${SHOTS}/demo.png`, fullPage: true });

  // A click inside the sandboxed ad frame opens the advertiser and is recorded.
  const adId = await page.$eval('[data-hearth-slot="sidebar"]', (s) => s.dataset.hearthAd);
  const popup = page.waitForEvent('popup');
  await page.frameLocator('[data-hearth-slot="sidebar"] iframe').locator('a.ad').click();
  assert.match((await popup).url(), new RegExp(`landing\\.html\\?ad=${adId}$`));
  const lastEvent = async () => JSON.parse(await page.evaluate(() => hearth.exportProfile())).events.at(-1);
  assert.deepEqual([(await lastEvent()).kind, (await lastEvent()).ad_id], ['click', adId]);

  // The frame cannot reach the page: no same-origin, no innerHTML of catalog text.
  const sandbox = await page.$eval('[data-hearth-slot="sidebar"] iframe', (f) => f.getAttribute('sandbox'));
  assert.ok(!sandbox.includes('allow-same-origin'));

  // The profile survives a reload (IndexedDB), and the profile page shows it.
  const events = async () => JSON.parse(await page.evaluate(() => hearth.exportProfile())).events;
  const kept = await events();
  await page.reload();
  await visit(page, '/demo/');
  assert.deepEqual((await events()).slice(0, kept.length), kept);
  assert.ok(kept.some((e) => e.kind === 'page_view' && e.topics.includes('sports')));
  await visit(page, '/demo/profile.html');
  await page.waitForSelector('body[data-ready="true"]');
  assert.ok((await page.$$eval('#interests meter', (r) => r.length)) > 0);
  assert.ok((await page.$$eval('#interests .name', (n) => n.map((e) => e.textContent))).includes('sports'));
  await page.screenshot({ path: `${SHOTS}/profile.png`, fullPage: true });

  // Erase empties it, for good.
  const erasedAt = Date.now();
  await page.click('#erase');
  await page.click('#erase-confirm');
  await page.waitForFunction(() => document.getElementById('count').textContent === '0');
  await visit(page, '/demo/');
  const left = await events();
  assert.ok(left.every((e) => e.ts >= erasedAt && e.kind === 'impression'), JSON.stringify(left));

  // This visitor had enough events to take part in a round. An upload cut off by a navigation
  // after it landed is resent on a later page with the same bytes and answered 409
  // duplicate_nonce: counted once, and no other refusal.
  for (const r of requests.filter((r) => r.url().endsWith('/v1/updates'))) {
    const res = await r.response();
    if (res?.status() === 409) assert.equal((await res.json()).error, 'duplicate_nonce');
  }
  assert.deepEqual(page.problems.filter((p) => !/^HTTP 409 .*\/v1\/updates$/.test(p)), []);
  await context.close();
});

test('WebGPU and CPU scoring agree on the demo catalog', async () => {
  const context = await demoContext();
  const page = await openPage(context);
  const status = await visit(page, '/demo/articles/' + fs.readdirSync('www/demo/articles')[0]);
  // 240 ads are too few to pay for a GPU dispatch: the page loaded without opening an adapter.
  assert.equal(status.webgpu, null);
  const [cpu, gpu] = await page.evaluate(() => Promise.all([hearth.scores({ backend: 'cpu' }), hearth.scores({ backend: 'webgpu' })]));
  const adapter = (await page.evaluate(() => hearth.status())).webgpu;
  assert.ok(adapter, 'asked for, a WebGPU adapter (SwiftShader) is opened in the worker');
  assert.equal(cpu.backend, 'cpu');
  assert.equal(gpu.backend, 'webgpu');
  assert.equal(gpu.logits.length, catalog.ads.length);
  const diff = Math.max(...cpu.logits.map((x, i) => Math.abs(x - gpu.logits[i])));
  assert.ok(diff <= 1e-4, `max |cpu - webgpu| = ${diff}`);
  console.log(`${catalog.ads.length} ads, adapter ${adapter}: max |cpu - webgpu| = ${diff}`);
  const [rc, rg] = await page.evaluate(() => Promise.all([hearth.rank({ k: 10, backend: 'cpu' }), hearth.rank({ k: 10, backend: 'webgpu' })]));
  assert.deepEqual(rg.map((r) => r.ad_id), rc.map((r) => r.ad_id));
  assert.deepEqual(page.problems, []);
  await context.close();
});

// A catalog of `n` ads: the demo's ads over and over under new ids, each with its creative.
function largeCatalog(n) {
  const doc = { ads: [], creatives: {} };
  for (let i = 0; i < n; i++) {
    const ad = catalog.ads[i % catalog.ads.length];
    const id = `${ad.id}-${Math.floor(i / catalog.ads.length)}`;
    doc.ads.push({ ...ad, id });
    doc.creatives[id] = catalog.creatives[ad.id];
  }
  return doc;
}

test('without a WebGPU adapter, webgpu is refused with a message and auto ranks 4,096 ads on the CPU', async (t) => {
  // Chromium without the WebGPU flags: navigator.gpu is there, but it has no adapter.
  const browser = await launchChromium({ webgpu: false });
  t.after(() => browser.close());
  const context = await browser.newContext();
  // At least GPU_MIN_ADS (www/hearth/gpu.js): "auto" asks for the GPU as soon as the worker starts.
  const large = largeCatalog(4096);
  const body = JSON.stringify(large);
  await context.route('**/v1/catalog.json', (r) => r.fulfill({ contentType: 'application/json', headers: { ETag: '"large"' }, body }));
  const page = await openPage(context);
  await page.goto(`${env.server.url}/demo/`);
  assert.equal(await page.evaluate(async () => String(await navigator.gpu?.requestAdapter())), 'null', 'no WebGPU adapter in this browser');
  // How a call ends: its result or its error message.
  // `fn` is compiled before the first await: the page's CSP lets only the evaluation itself eval.
  const settle = (fn, arg) => page.evaluate(async ([fn, arg]) => {
    const call = (0, eval)(fn);
    while (!window.hearth) await new Promise((r) => setTimeout(r, 10));
    return call(arg).then((result) => ({ result }), (e) => ({ error: e.message }));
  }, [fn.toString(), arg]);

  // The page's own fill ranks in auto mode: on tract, as there is no adapter.
  const ready = await settle(() => hearth.ready);
  assert.equal(ready.error, undefined, 'hearth.ready');
  assert.equal(ready.result.ads, large.ads.length);
  assert.equal(await page.$$eval('[data-hearth-slot]', (s) => s.filter((x) => x.dataset.hearthAd).length), 2, 'both slots hold an ad');

  // Asked for by name, WebGPU is refused with a message saying why.
  for (const call of [(o) => hearth.rank(o), (o) => hearth.scores(o)]) {
    assert.deepEqual(await settle(call, { k: 10, backend: 'webgpu' }), { error: 'no WebGPU adapter' }, call.toString());
  }

  // auto (the default, and by name) falls back to tract: the same ranking as the CPU's.
  const rank = async (options) => {
    const { result, error } = await settle((o) => hearth.rank(o), options);
    assert.equal(error, undefined, `rank(${JSON.stringify(options)})`);
    return result.map((r) => r.ad_id);
  };
  const cpu = await rank({ k: 10, backend: 'cpu' });
  assert.equal(cpu.length, 10);
  assert.deepEqual(await rank({ k: 10 }), cpu);
  assert.deepEqual(await rank({ k: 10, backend: 'auto' }), cpu);
  const scores = (await settle((o) => hearth.scores(o), { backend: 'auto' })).result;
  assert.equal(scores?.backend, 'cpu');
  assert.equal(scores.logits.length, large.ads.length);
  assert.equal((await settle(() => hearth.status())).result.webgpu, null);
  assert.deepEqual(page.problems, []);
  await context.close();
});

// How many updates the aggregator has accepted so far.
async function acceptedUpdates() {
  const text = await (await fetch(`${env.server.url}/metrics`)).text();
  return Number(/^hearth_updates_accepted_total\{replica="[^"]*"\} (\d+)$/m.exec(text)[1]);
}

// A participation answer saying this device has taken part in the round: now or earlier.
const tookPart = (r) => r.status === 'uploaded' || /already took part/.test(r.reason);

// Browses sports articles until the device has the labelled events a round asks for.
async function browseUntilEligible(page, server = env.server.url) {
  for (const path of [...articles('sports'), ...articles('travel'), ...articles('food')]) {
    const status = await visit(page, path, server);
    if (status.labelledEvents >= 10) return status;
  }
  return visit(page, '/demo/', server);
}

// Serves every demo page with `attributes` added to its snippet tag, as a publisher sets them.
async function withSnippetAttributes(context, attributes) {
  const page = (url) => url.origin === env.server.url && url.pathname.startsWith('/demo/') && /(\/|\.html)$/.test(url.pathname);
  await context.route(page, async (route) => {
    const response = await route.fetch();
    const body = (await response.text()).replace('src="/hearth.js"', `src="/hearth.js" ${attributes}`);
    await route.fulfill({ response, body });
  });
}

// The snippet's stored records, read and written from a page of the same origin without the
// snippet (as any script of the site could). `change(stored, arg)` returns the new value; it runs
// in the page, so it gets `arg` rather than closing over anything.
async function changeRecord(page, key, change, arg) {
  await page.goto(`${env.server.url}/demo/landing.html`);
  await page.evaluate(([key, change, arg]) => new Promise((resolve, reject) => {
    // Compiled here, not in the callback: the page's CSP lets only the evaluation itself eval.
    const apply = (0, eval)(change);
    const req = indexedDB.open('hearth', 1);
    req.onsuccess = () => {
      const tx = req.result.transaction('kv', 'readwrite');
      const store = tx.objectStore('kv');
      store.get(key).onsuccess = (e) => store.put(apply(e.target.result, arg), key);
      tx.oncomplete = () => { req.result.close(); resolve(); };
    };
    req.onerror = () => reject(req.error);
  }), [key, change.toString(), arg]);
}

async function readRecord(page, key) {
  await page.goto(`${env.server.url}/demo/landing.html`);
  return page.evaluate((key) => new Promise((resolve, reject) => {
    const req = indexedDB.open('hearth', 1);
    req.onsuccess = () => {
      const get = req.result.transaction('kv').objectStore('kv').get(key);
      get.onsuccess = () => { req.result.close(); resolve(get.result); };
    };
    req.onerror = () => reject(req.error);
  }), key);
}

// Ten minutes on: the device asks the leader about rounds again rather than trusting what it saw.
const ageRoundCheck = (page) => changeRecord(page, 'rounds', (rounds) => ({ ...rounds, checkedAt: 0 }));

// The leader's next round: its real task, one round on.
async function nextRound(context, server = env.server.url) {
  await context.route(`${server}/v1/round`, async (route) => {
    const task = await (await route.fetch()).json();
    await route.fulfill({ contentType: 'application/json', body: JSON.stringify({ ...task, round_id: task.round_id + 1 }) });
  });
}

test('one participation sends exactly one report through leader and helper, with no cookie, identifier or profile data', async () => {
  const context = await demoContext();
  await context.addCookies([
    { name: 'session', value: 'publisher-secret', url: env.server.url },
    { name: 'session', value: 'helper-secret', url: DEMO_HELPER },
  ]);
  const requests = recordRequests(context);
  const page = await openPage(context);
  const before = await acceptedUpdates();
  await browseUntilEligible(page);
  // The snippet takes part by itself when the page is idle; wait for the aggregator to count it.
  const until = Date.now() + 60_000;
  while ((await acceptedUpdates()) === before && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
  // More page views and an explicit call: still one update this round.
  await visit(page, articles('sports')[0]);
  const again = await page.evaluate(() => hearth.participate());
  assert.equal(again.status, 'skipped');
  assert.match(again.reason, /already took part/);
  assert.equal(await acceptedUpdates(), before + 1, 'the leader counted one report from this device');

  // On the wire: one report. A send cut off by a navigation is resent on the next page with the
  // same bytes (answered 409 duplicate_nonce), so every request carries the same body.
  const uploads = requests.filter((r) => r.url().endsWith('/v1/updates'));
  assert.ok(uploads.length >= 1);
  const upload = uploads[0];
  for (const r of uploads) assert.ok(r.postDataBuffer().equals(upload.postDataBuffer()), 'a second, different update');
  // A send the navigation cut off has no response; the resend on the next page answers for it.
  const statuses = await Promise.all(uploads.map(async (r) => {
    const res = await r.response();
    if (!res) return 'cut off';
    return res.status() === 409 ? `409 ${(await res.json()).error}` : String(res.status());
  }));
  assert.ok(statuses.every((s) => ['202', '409 duplicate_nonce', 'cut off'].includes(s)), statuses.join());
  assert.ok(statuses.some((s) => s !== 'cut off'), statuses.join());

  // The request: no cookie, no referrer, no identifying header, a body of exactly one report:
  // the leader's share and the seed sealed to the helper, none of the plaintext update format.
  const allowed = /^(content-type|content-length|cache-control|pragma|accept|accept-encoding|accept-language|user-agent|origin|host|connection|sec-ch-ua.*|sec-fetch-.*)$/;
  const headers = await upload.allHeaders();
  assert.equal(headers.cookie, undefined);
  assert.equal(headers.referer, undefined);
  assert.deepEqual(Object.keys(headers).filter((h) => !allowed.test(h)), []);
  assert.equal(headers['content-type'], REPORT_TYPE);
  const body = upload.postDataBuffer();
  assert.equal(body.length, REPORT_BYTES);
  const text = body.toString('latin1');
  assert.equal(text.slice(0, 4), 'HRTS');
  assert.ok(!text.includes('HRTU'), 'the plaintext update format');
  const profile = JSON.parse(await page.evaluate(() => hearth.exportProfile()));
  const secrets = new Set(profile.events.flatMap((e) => [e.ad_id, ...(e.topics ?? []), ...(e.keywords ?? [])]).filter(Boolean));
  for (const s of secrets) assert.ok(!text.includes(s), `the report carries ${s}`);

  // The helper's key came from the helper (data-helper), as privately as every request (once per
  // page that got as far as building a report).
  const configs = requests.filter((r) => r.url().includes('/v1/helper_config'));
  assert.ok(configs.length >= 1);
  for (const r of configs) assert.equal(r.url(), `${DEMO_HELPER}/v1/helper_config`);
  const helperHeaders = await configs[0].allHeaders();
  assert.equal(helperHeaders.cookie, undefined);
  assert.equal(helperHeaders.referer, undefined);
  assert.deepEqual(Object.keys(helperHeaders).filter((h) => !allowed.test(h)), []);
  // Nothing else went to either server but downloads everyone makes.
  const posts = requests.filter((r) => r.method() !== 'GET');
  assert.deepEqual(posts.map((r) => r.url()), uploads.map(() => `${env.server.url}/v1/updates`));
  const spent = await page.evaluate(() => hearth.privacy());
  assert.equal(spent.rounds, 1, JSON.stringify(spent));
  await context.close();
});

test('two tabs taking part at once send one update between them', async () => {
  const context = await demoContext();
  const requests = recordRequests(context);
  const [a, b] = [await openPage(context), await openPage(context)];
  const before = await acceptedUpdates();
  await browseUntilEligible(a);
  await visit(b, articles('sports')[1]);
  // Both tabs ask at once, while either page's own idle attempt may hold the lock: each call
  // waits for the other and answers for the device, which takes part once.
  const results = await Promise.all([a, b].map((p) => p.evaluate(() => hearth.participate())));
  for (const r of results) assert.ok(tookPart(r), JSON.stringify(r));
  assert.equal(await acceptedUpdates(), before + 1, JSON.stringify(results));
  const bodies = requests.filter((r) => r.url().endsWith('/v1/updates')).map((r) => r.postDataBuffer());
  assert.ok(bodies.length >= 1 && bodies.every((x) => x.equals(bodies[0])), `${bodies.length} different uploads`);
  await context.close();
});

test('what local training learned survives a reload and goes with an erase', async () => {
  const context = await demoContext();
  const page = await openPage(context);
  // A reader who clicks the sidebar ad on every other article: both labels, so training fits
  // the device's own embedding.
  let labelled = 0;
  for (const [i, path] of [...articles('sports'), ...articles('travel')].entries()) {
    if (labelled >= 10) break;
    await visit(page, path);
    if (i % 2 === 0) await page.evaluate(() => hearth.click(document.querySelector('[data-hearth-slot="sidebar"]').dataset.hearthAd));
    labelled = (await page.evaluate(() => hearth.status())).labelledEvents;
  }
  const result = await page.evaluate(() => hearth.participate());
  assert.ok(tookPart(result), JSON.stringify(result));
  // profile() reads the embedding from the running model, so after a reload it shows what the
  // worker restored from IndexedDB into the model, not merely what is stored.
  const learned = (await page.evaluate(() => hearth.profile())).localEmbedding;
  assert.ok(learned.some((v) => v !== 0), 'training fitted the local embedding');
  await page.reload();
  await visit(page, '/demo/');
  assert.deepEqual((await page.evaluate(() => hearth.profile())).localEmbedding, learned, 'restored after a reload');

  await page.evaluate(() => hearth.erase());
  await page.reload();
  await visit(page, '/demo/');
  assert.ok((await page.evaluate(() => hearth.profile())).localEmbedding.every((v) => v === 0), 'erased with the profile');
  // A background upload cut off by a navigation is resent with the same bytes: 409 duplicate_nonce.
  assert.deepEqual(page.problems.filter((p) => !/^HTTP 409 .*\/v1\/updates$/.test(p)), []);
  await context.close();
});

test('the privacy ledger stops participation at the publisher\'s budget; the profile page shows it, erase keeps it', async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const context = await demoContext({ viewport: { width: 1280, height: 900 } });
  await withSnippetAttributes(context, 'data-privacy-budget="3"');
  const requests = recordRequests(context);
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await browseUntilEligible(page);
  const first = await page.evaluate(() => hearth.participate());
  assert.ok(tookPart(first), JSON.stringify(first));
  // One round against one curious server, protected by the other server's noise 4: ε ≈ 2.42,
  // within 3; a second would make it about 3.54.
  const spent = await page.evaluate(() => hearth.privacy());
  assert.equal(spent.unreadable, false);
  assert.equal(spent.rounds, 1);
  assert.equal(spent.epsilon_budget, 3);
  assert.ok(Math.abs(spent.curious_server_epsilon - 2.42) < 0.01, JSON.stringify(spent));
  assert.ok(spent.collusion_epsilon > spent.curious_server_epsilon, 'the device\'s own noise is smaller than a server\'s');
  assert.equal(spent.may_join, false);

  // The leader's next round: the ledger refuses it before anything is trained or sent.
  const posts = () => requests.filter((r) => r.method() === 'POST').length;
  const sent = posts();
  await ageRoundCheck(page);
  await nextRound(context);
  await visit(page, '/demo/');
  const second = await page.evaluate(() => hearth.participate());
  assert.equal(second.status, 'skipped', JSON.stringify(second));
  assert.match(second.reason, /privacy budget is spent.*over the budget of 3/);
  assert.equal(posts(), sent, 'nothing uploaded past the budget');
  assert.deepEqual(warnings.filter((w) => /privacy|refused/.test(w)), [], 'a spent budget is no fault');

  // The profile page says it in words, and erasing the profile keeps the ledger.
  await visit(page, '/demo/profile.html');
  await page.waitForSelector('body[data-ready="true"]');
  const text = await page.textContent('#privacy');
  assert.match(text, /^This browser has taken part in 1 training round, with a model update made here\. Privacy spent so far against either server alone, or one that fills a round with fake browsers: ε = 2\.42 of a budget of 3 \(δ = 10⁻⁶\)\. If the two servers worked together: ε = \d+\.\d\d\. The budget is spent/);
  await page.screenshot({ path: `${SHOTS}/profile-ledger.png`, fullPage: true });
  await page.click('#erase');
  await page.click('#erase-confirm');
  await page.waitForFunction(() => document.getElementById('count').textContent === '0');
  assert.equal(await page.textContent('#privacy'), text);
  await page.click('#opt');
  await page.waitForFunction(() => document.getElementById('opt').textContent === 'Opt back in');
  assert.equal(await page.textContent('#privacy'), text);
  assert.deepEqual((await page.evaluate(() => hearth.privacy())).rounds, 1);
  await context.close();
});

test('the device takes the helper\'s key only from data-helper, and refuses one it cannot use', async () => {
  const context = await demoContext();
  const requests = recordRequests(context);
  const real = await (await fetch(`${env.server.helper}/v1/helper_config`)).json();
  // A leader that serves a key of its own in the helper's place: the device never asks it.
  const leaderKey = { ...real, hpke: { ...real.hpke, key_id: (real.hpke.key_id + 1) % 256, public_key: '5a'.repeat(32) } };
  await context.route(`${env.server.url}/v1/helper_config`, (r) => r.fulfill({ contentType: 'application/json', body: JSON.stringify(leaderKey) }));
  // What the data-helper address answers, changed below.
  let served;
  await context.route(`${DEMO_HELPER}/v1/helper_config`, (r) => r.fulfill({ contentType: 'application/json', body: JSON.stringify(served) }));
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));

  const refusals = [
    ['another suite', { ...real, hpke: { ...real.hpke, aead: 'AES-128-GCM' } }, /secure aggregation: helper key: unsupported suite/],
    ['a garbage key', { ...real, hpke: { ...real.hpke, public_key: 'not a key' } }, /secure aggregation: helper key: public_key is not 64 hex digits/],
    ['fields this build does not know', { ...real, relayed_by: 'leader' }, /invalid helper configuration: unknown field `relayed_by`/],
    ['less noise than the task declares', { ...real, noise_multiplier: real.noise_multiplier / 2 }, /privacy floor: the task declares helper noise/],
  ];
  served = refusals[0][1];
  await browseUntilEligible(page);
  for (const [what, config, why] of refusals) {
    served = config;
    await visit(page, '/demo/'); // a new page view: the helper's configuration is fetched again
    const result = await page.evaluate(() => hearth.participate());
    assert.equal(result.status, 'refused', `${what}: ${JSON.stringify(result)}`);
    assert.match(result.reason, why, what);
    assert.ok(warnings.some((w) => why.test(w)), `${what}: ${warnings.join('\n')}`);
  }
  // A leader that hands the device a key inside the round task: refused as a task this build
  // does not understand.
  await context.route(`${env.server.url}/v1/round`, async (route) => {
    const task = await (await route.fetch()).json();
    await route.fulfill({ contentType: 'application/json', body: JSON.stringify({ ...task, hpke: leaderKey.hpke }) });
  });
  await visit(page, '/demo/');
  const relayed = await page.evaluate(() => hearth.participate().then((r) => r, (e) => ({ error: e.message })));
  assert.match(relayed.error ?? '', /invalid round task: unknown field `hpke`/);
  await context.unroute(`${env.server.url}/v1/round`);
  assert.deepEqual(requests.filter((r) => r.method() === 'POST').map((r) => r.url()), [], 'nothing was uploaded');
  assert.equal((await page.evaluate(() => hearth.privacy())).rounds, 0, 'a refused round costs nothing');

  // The helper's real configuration: now the device takes part.
  served = real;
  await visit(page, '/demo/');
  assert.ok(tookPart(await page.evaluate(() => hearth.participate())));
  const origins = requests.filter((r) => r.url().endsWith('/v1/helper_config')).map((r) => new URL(r.url()).origin);
  assert.ok(origins.length >= refusals.length + 1);
  assert.deepEqual([...new Set(origins)], [DEMO_HELPER], 'the helper\'s configuration only ever came from data-helper');
  await context.close();
});

test('an unreadable privacy ledger counts as spent, with a warning, never as empty', async () => {
  const context = await demoContext();
  const requests = recordRequests(context);
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await visit(page, '/demo/');
  // Not even text, then text that is no ledger: the store's shape check and hearth-core's parser.
  await changeRecord(page, 'ledger', () => ({ not: 'a ledger' }));
  await browseUntilEligible(page);
  for (const bad of [null, '{"entries": "none"}']) {
    if (bad) await changeRecord(page, 'ledger', (_, text) => text, bad);
    await visit(page, '/demo/');
    const result = await page.evaluate(() => hearth.participate());
    assert.deepEqual(result, { status: 'skipped', reason: 'privacy ledger unreadable: treated as spent' });
    assert.ok(warnings.some((w) => /privacy ledger is unreadable|stored ledger is unreadable/.test(w) && /taking part in no more rounds/.test(w)), warnings.join('\n'));
    assert.deepEqual(await page.evaluate(() => hearth.privacy()), { unreadable: true, may_join: false });
    warnings.length = 0;
  }
  assert.equal(await readRecord(page, 'ledger'), '{"entries": "none"}', 'kept as it was, not dropped');
  assert.deepEqual(requests.filter((r) => r.method() === 'POST').map((r) => r.url()), [], 'nothing was uploaded');

  // A store reset (here an unreadable schema record) starts afresh but carries the ledger over.
  await changeRecord(page, 'meta', () => ({ schema: 'broken' }));
  await visit(page, '/demo/profile.html');
  assert.ok(warnings.some((w) => /starting afresh/.test(w)), warnings.join('\n'));
  await page.waitForSelector('body[data-ready="true"]');
  assert.match(await page.textContent('#privacy'), /could not read this browser’s record of privacy spent/);
  assert.equal(await readRecord(page, 'ledger'), '{"entries": "none"}');
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('a single plaintext aggregator gets nothing: one upload would spend more than the device\'s budget', async (t) => {
  // The plaintext path, kept as the benchmark baseline: the server reads each update whole, so
  // only the device's own noise (z = 1) protects it, and one upload costs ε ≈ 11.7 against it.
  const single = await startAggregator({ role: 'single' });
  t.after(() => single.close());
  const context = await env.browser.newContext();
  const requests = recordRequests(context);
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await browseUntilEligible(page, single.url);
  const result = await page.evaluate(() => hearth.participate());
  assert.equal(result.status, 'skipped', JSON.stringify(result));
  const eps = Number(/privacy budget is spent: .*ε against one curious server ([\d.]+), over the budget of 8/.exec(result.reason)?.[1]);
  assert.ok(eps > 8 && eps < 14, result.reason);
  // Below the device's floor (less noise than z = 1 on a plaintext upload): refused, with a warning.
  await context.route(`${single.url}/v1/round`, async (route) => {
    const task = await (await route.fetch()).json();
    await route.fulfill({ contentType: 'application/json', body: JSON.stringify({ ...task, noise_multiplier: 0.5 }) });
  });
  await visit(page, '/demo/', single.url);
  const floor = await page.evaluate(() => hearth.participate());
  assert.equal(floor.status, 'refused', JSON.stringify(floor));
  assert.match(floor.reason, /privacy floor: a plaintext upload with noise multiplier 0.5/);
  assert.ok(warnings.some((w) => /refused: .*privacy floor/.test(w)), warnings.join('\n'));
  assert.deepEqual(requests.filter((r) => r.method() === 'POST').map((r) => r.url()), [], 'nothing was uploaded');
  assert.ok(requests.every((r) => !r.url().includes('/v1/helper_config')), 'a plaintext round needs no helper');
  const metrics = await (await fetch(`${single.url}/metrics`)).text();
  assert.match(metrics, /^hearth_updates_accepted_total\{replica="[^"]*"\} 0$/m);
  await context.close();
});

test('with Global Privacy Control set, nothing is learned and nothing is uploaded', async () => {
  const context = await demoContext();
  await context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }));
  const requests = recordRequests(context);
  const page = await openPage(context);
  for (const path of articles('sports').slice(0, 4)) {
    const status = await visit(page, path);
    assert.equal(status.gpc, true);
  }
  const result = await page.evaluate(() => hearth.participate());
  assert.equal(result.status, 'skipped');
  assert.equal(JSON.parse(await page.evaluate(() => hearth.exportProfile())).events.length, 0);
  assert.equal(requests.filter((r) => r.method() === 'POST').length, 0);
  assert.ok(requests.every((r) => !r.url().includes('/v1/round')), 'not even the round task is fetched');
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('no long task on the main thread comes from Hearth', async () => {
  const context = await demoContext();
  await context.addInitScript(() => {
    window.__long = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        window.__long.push({
          type: e.entryType,
          start: e.startTime,
          duration: e.duration,
          scripts: (e.scripts ?? []).map((s) => ({ url: s.sourceURL, invoker: s.invoker, duration: s.duration })),
        });
      }
    }).observe({ type: 'long-animation-frame', buffered: true });
  });
  const page = await openPage(context);
  await visit(page, '/demo/');
  await visit(page, articles('tech')[0]);
  await page.frameLocator('[data-hearth-slot="sidebar"] iframe').locator('.x').click();
  await page.evaluate(() => hearth.fill());
  await page.evaluate(() => new Promise((r) => setTimeout(r, 500)));
  const frames = await page.evaluate(() => window.__long);
  // A long frame is Hearth's when Hearth's own scripts ran for more than 50 ms of it (a page
  // load frame that also evaluated the snippet for a few ms is the page's).
  const hearthMs = (f) => f.scripts.filter((s) => /\/hearth(\.js|\/)/.test(s.url)).reduce((t, s) => t + s.duration, 0);
  const ours = frames.filter((f) => hearthMs(f) > 50);
  assert.deepEqual(ours, [], 'long animation frames caused by Hearth');
  console.log(`long animation frames: ${frames.length}; Hearth's script time in them, ms: ${frames.map(hearthMs).join(', ') || 'none'}`);
  await context.close();
});

test('no open round: participation is skipped, with nothing to warn about', async () => {
  const context = await demoContext();
  const warnings = [];
  for (const [status, error] of [[503, 'no_open_round'], [410, 'privacy_budget_spent']]) {
    // Routed before the page loads, so the page's own idle attempt sees it too.
    await context.route('**/v1/round', (r) => r.fulfill({ status, contentType: 'application/json', body: JSON.stringify({ error }) }));
    const page = await openPage(context);
    page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
    await visit(page, articles('tech')[0]);
    assert.deepEqual(await page.evaluate(() => hearth.participate()), { status: 'skipped', reason: `no open round (${error})` });
    assert.deepEqual(page.problems.filter((p) => !p.startsWith(`HTTP ${status} `)), []);
    await page.close();
    await context.unroute('**/v1/round');
  }
  assert.deepEqual(warnings, []);
  await context.close();
});

test('a publisher page on another origin runs the snippet served by the aggregator', async (t) => {
  // The publisher: its own origin (another port), a page with one script tag pointing at the
  // aggregator, which serves the snippet, its worker, the module and the API.
  const agg = env.server.url;
  const html = `<!doctype html><title>Publisher</title><link rel="icon" href="data:,">
<meta name="hearth:topics" content="cycling">
<script async crossorigin="anonymous" src="${agg}/hearth.js" data-aggregator="${agg}/" data-helper="${env.server.helper}/" data-catalog="${agg}/v1/catalog.json"></script>
<div data-hearth-slot="sidebar" style="width:300px;height:250px"></div>`;
  const publisher = http.createServer((req, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end(html));
  await new Promise((resolve) => publisher.listen(0, '127.0.0.1', resolve));
  t.after(() => publisher.close() && publisher.closeAllConnections());
  const url = `http://127.0.0.1:${publisher.address().port}/article.html`;
  assert.notEqual(new URL(url).origin, new URL(agg).origin);
  const context = await demoContext();
  const page = await openPage(context, url);
  // How a call ends: its result or its error, or that it did not end within 30 s.
  const settle = (fn) => page.evaluate(async (fn) => {
    while (!window.hearth) await new Promise((r) => setTimeout(r, 10));
    const call = (0, eval)(fn)();
    const late = new Promise((r) => setTimeout(() => r({ error: 'no answer within 30 s' }), 30_000));
    return Promise.race([call.then((result) => ({ result }), (e) => ({ error: e.message })), late]);
  }, fn.toString());
  const { result: status } = await settle(() => hearth.ready);
  assert.equal(status?.ads, catalog.ads.length);
  assert.ok(await page.$eval('[data-hearth-slot]', (s) => s.dataset.hearthAd), 'the slot holds an ad');
  const events = JSON.parse(await page.evaluate(() => hearth.exportProfile())).events;
  assert.ok(events.some((e) => e.kind === 'page_view' && e.topics.includes('cycling')));
  assert.deepEqual(page.problems, []);

  // A worker that cannot be loaded (blocked here; a CDN without CORS does the same): ready and
  // every later call fail with a message instead of waiting for ever.
  await context.route(`${agg}/hearth/worker.js`, (r) => r.abort());
  await page.reload();
  assert.match((await settle(() => hearth.ready)).error, /could not start the worker from .*\/hearth\/worker\.js/);
  assert.match((await settle(() => hearth.status())).error, /could not start the worker/);
  await context.close();
});

test('a foreign or corrupted store is reset with a warning, never a crash', async () => {
  const context = await demoContext();
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await page.goto(`${env.server.url}/demo/landing.html`);
  await page.evaluate(() => new Promise((resolve, reject) => {
    const req = indexedDB.open('hearth', 7);
    req.onupgradeneeded = () => req.result.createObjectStore('someone-else').put('x', 'y');
    req.onsuccess = () => { req.result.close(); resolve(); };
    req.onerror = () => reject(req.error);
  }));
  const status = await visit(page, articles('finance')[0]);
  assert.equal(status.ads, catalog.ads.length);
  assert.ok(warnings.some((w) => /starting afresh/.test(w)), warnings.join('\n'));

  // A profile record that is not a profile (written from a page without the snippet): dropped,
  // the page still fills its slots.
  await changeRecord(page, 'profile', () => ({ not: 'a profile' }));
  await visit(page, articles('finance')[1]);
  assert.ok(warnings.some((w) => /stored profile was unreadable/.test(w)), warnings.join('\n'));
  assert.equal((await page.$$eval('[data-hearth-slot]', (s) => s.filter((x) => x.dataset.hearthAd).length)), 2);

  // A local embedding the model cannot take (another width, a NaN): dropped with a warning,
  // the device keeps its profile and starts again from zeros.
  const width = (await page.evaluate(() => hearth.profile())).localEmbedding.length;
  for (const [bad, why] of [[[1, 2, 3], /local_u.*shape \[3\], expected \[/], [[...Array(width - 1).fill(0.5), NaN], /local_u.*non-finite/]]) {
    const kept = (await page.evaluate(() => hearth.profile())).events;
    assert.ok(kept.length > 0);
    await changeRecord(page, 'localU', (_, values) => new Float32Array(values), bad);
    const status = await visit(page, articles('finance')[2]);
    assert.equal(status.ads, catalog.ads.length);
    assert.ok(warnings.some((w) => /stored local embedding dropped/.test(w) && why.test(w)), warnings.join('\n'));
    const profile = await page.evaluate(() => hearth.profile());
    assert.deepEqual(profile.events.slice(0, kept.length), kept, 'the profile was kept');
    assert.ok(profile.localEmbedding.every((v) => v === 0));
    warnings.length = 0;
  }
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('a malformed catalog is refused whole and the stored one kept', async () => {
  const context = await demoContext();
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await visit(page, '/demo/');
  const bad = structuredClone(catalog);
  bad.creatives[bad.ads[0].id].url = 'javascript:alert(1)';
  bad.ads.push({ id: 'extra-1', category: 'sports' });
  await context.route('**/v1/catalog.json', (r) => r.fulfill({ contentType: 'application/json', headers: { ETag: '"bad"' }, body: JSON.stringify(bad) }));
  const status = await visit(page, '/demo/');
  assert.equal(status.ads, catalog.ads.length, 'the stored catalog is still used');
  assert.ok(warnings.some((w) => /invalid catalog refused .*url must be http/.test(w)), warnings.join('\n'));
  assert.equal(await page.$$eval('[data-hearth-slot]', (s) => s.filter((x) => x.dataset.hearthAd).length), 2);
  await context.close();
});

test('two tabs share one profile without losing each other\'s events', async () => {
  const context = await demoContext();
  const [a, b] = [await openPage(context), await openPage(context)];
  await visit(a, '/demo/');
  await visit(b, '/demo/');
  // Both tabs are loaded; now each records in turn.
  await visit(a, articles('food')[0]);
  await b.evaluate(() => hearth.record({ kind: 'page_view', ts: Date.now(), topics: ['tab-b'] }));
  await a.evaluate(() => hearth.record({ kind: 'page_view', ts: Date.now(), topics: ['tab-a'] }));
  await b.evaluate(() => hearth.optOut());
  assert.equal((await a.evaluate(() => hearth.status())).optedOut, true, 'an opt-out holds in every tab');
  assert.equal(await a.evaluate(() => hearth.record({ kind: 'page_view', ts: Date.now(), topics: ['late'] })), false);
  await a.evaluate(() => hearth.optIn());
  await Promise.all([
    a.evaluate(() => hearth.record({ kind: 'page_view', ts: Date.now(), topics: ['a2'] })),
    b.evaluate(() => hearth.record({ kind: 'page_view', ts: Date.now(), topics: ['b2'] })),
  ]);
  const topics = async (page) =>
    JSON.parse(await page.evaluate(() => hearth.exportProfile())).events.flatMap((e) => e.topics ?? []).sort();
  assert.deepEqual(await topics(a), ['a2', 'b2']);
  assert.deepEqual(await topics(b), ['a2', 'b2']);
  await context.close();
});
