// End to end: private measurement (DAP + Prio3) on the demo site. A leader (serving the demo)
// and a helper measure with a one-minute period: M = 1 per cell, at most 4 cells per browser,
// K = 10, σ = 4 at each server (ε ≈ 3.06 per period against one aggregator, within the device's
// ceiling of 4). In one period, six Chromium visitors read articles and see, click, dismiss and
// convert ads through the publisher snippet, whose worker then reports each of them by itself at
// a random moment of the next period; twenty-four more browsers are simulated in Node by the same
// module (www/pkg) with tallies the test chooses. Three more visitors check what must not be
// counted: one with Global Privacy Control, one that opts out, one whose page lowers the ε ceiling
// below the task's. The collector then closes the period, and every released count is checked
// against the true count the test computes from what it drove. Screenshot: target/e2e/reports.png.
//
// How the counts are checked. A released count is the true count plus both servers' discrete
// Gaussian noise, so the test runs a second leader and helper with the same seeded noise
// (HEARTH_TEST_NOISE_SEED: a period's noise is a function of the seed and the period) and gives
// them only reports that count nothing: their release of the same period is that noise alone.
// The counts minus it must equal the true counts exactly. The stated 99% intervals (per cell, and
// for a whole period's table at once) are checked as intervals must be: with 264 cells, a correct
// per-cell interval misses about 2.7 of them per run, so the test allows the misses each interval
// makes up to a number exceeded by chance less than once in a million runs, and checks that the
// noise has the stated standard deviation.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { launchChromium, openPage } from '../support/browser.mjs';
import { browserModule, collect, simulatedBrowsers, startMeasurement, storedMeasure } from '../support/measurement.mjs';
import { routeDemoHelper, DEMO_HELPER } from '../support/aggregator.mjs';

const PERIOD = 60;
const SETTINGS = { period_secs: PERIOD, bits: 1, max_cells: 4, min_reports: 10, noise: 4.0 };
// Any seed: it makes the noise reproducible between the two server pairs, not small.
const SEED = 170_017n;
// Browsing must end inside the period it starts in; it takes about half this on two cores.
const BROWSE_SECS = 45;
// The demo pages' data-helper (`make demo`'s helper), answered by the test's helper.
const SHOTS = 'target/e2e';
// z of a two-sided 99% normal interval.
const Z99 = 2.5758293035489004;
const SIMULATED = 24;
const TOPICS = ['sports', 'travel', 'food', 'tech', 'finance', 'autos'];

const articles = (topic) =>
  fs.readdirSync('www/demo/articles').filter((f) => f.startsWith(`${topic}-`)).map((f) => `/demo/articles/${f}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowSecs = () => Date.now() / 1000;

/** @type {{ main: any, twin: any, browser: import('playwright-core').Browser }} */
const env = {};
before(async () => {
  env.main = await startMeasurement({ settings: SETTINGS, seed: SEED });
  env.twin = await startMeasurement({ settings: SETTINGS, seed: SEED });
  env.browser = await launchChromium();
});
after(async () => {
  await env.browser?.close();
  await env.main?.close();
  await env.twin?.close();
});

/**
 * What a forgotten measurement record still holds besides the start of the last period counted
 * (kept so that an erase cannot make room for a second report that day): nothing, as keys.
 * @param {any} record
 */
const forgotten = (record) => {
  if (record === undefined) return [];
  assert.equal(typeof record.lastCounted, 'number');
  return [...record.periods, ...Object.keys(record.tasks)];
};

// ---- what the device counts, as the tally's rules say (hearth_core::measure::tally) ---------

const cellKey = (target, name, kind) => `${target}\t${name}\t${kind}`;

/**
 * One browser's report as a map cell -> count: each event counts for its campaign and then its
 * slot; the cells kept are the first `max_cells` recorded that the task knows, each at most M.
 * @param {{ kind: string, campaign?: string, slot?: string }[]} events  in the order recorded
 * @param {{ campaigns: string[], slots: string[], bits: number, max_cells: number }} task
 */
function counted(events, task) {
  const known = new Set([...task.campaigns.map((c) => `campaign\t${c}`), ...task.slots.map((s) => `slot\t${s}`)]);
  /** @type {Map<string, number>} */
  const cells = new Map(); // insertion order: first recorded
  for (const e of events) {
    for (const [target, name] of [['campaign', e.campaign], ['slot', e.slot]]) {
      if (!name) continue;
      const key = cellKey(target, name, e.kind);
      cells.set(key, (cells.get(key) ?? 0) + 1);
    }
  }
  const kept = [...cells].filter(([key]) => known.has(key.slice(0, key.lastIndexOf('\t')))).slice(0, task.max_cells);
  return new Map(kept.map(([key, n]) => [key, Math.min(n, 2 ** task.bits - 1)]));
}

/** @param {Map<string, number>[]} reports */
function summed(reports) {
  const total = new Map();
  for (const r of reports) for (const [key, n] of r) total.set(key, (total.get(key) ?? 0) + n);
  return total;
}

/**
 * A small seeded generator (mulberry32), so the simulated browsers do the same every run.
 * @param {number} seed
 */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * A simulated browser's ad events: mostly the first few campaigns (so their counts rise well
 * above the noise), with repeats (capped at M), more cells than a report keeps, and names the
 * task does not count.
 * @param {() => number} rand
 * @param {string[]} campaigns
 */
function simulatedEvents(rand, campaigns) {
  const pick = (list) => list[Math.floor(rand() * list.length)];
  const kinds = ['impression', 'impression', 'impression', 'click', 'click', 'conversion', 'dismissal'];
  const names = [...campaigns.slice(0, 6), 'no-such-campaign'];
  const slots = ['in-article', 'sidebar', 'no-such-slot', undefined];
  return Array.from({ length: 1 + Math.floor(rand() * 8) }, () => ({ kind: pick(kinds), campaign: pick(names), slot: pick(slots) }));
}

/**
 * The smallest k such that more than k of n independent events of probability p happen with
 * probability below `alarm`.
 */
function binomialBound(n, p, alarm) {
  let pmf = (1 - p) ** n;
  let cdf = pmf;
  for (let k = 0; k < n; k++) {
    if (1 - cdf < alarm) return k;
    pmf *= ((n - k) / (k + 1)) * (p / (1 - p));
    cdf += pmf;
  }
  return n;
}

// ---- visitors ---------------------------------------------------------------------------------

/**
 * A visitor: its own browser context (its own storage), with cookies for both servers (which
 * no measurement request may carry), the demo's data-helper answered by the test's helper, and a
 * record of every request and of every ad event the snippet hands its worker (with its slot).
 * @param {{ gpc?: boolean, attributes?: string }} [options]
 */
async function visitor({ gpc = false, attributes } = {}) {
  const { main } = env;
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addCookies([
    { name: 'session', value: 'publisher-secret', url: main.url },
    { name: 'session', value: 'helper-secret', url: DEMO_HELPER },
  ]);
  await routeDemoHelper(context, main.helper);
  if (attributes) {
    // As a publisher would set them on its snippet tag.
    const isPage = (url) => url.origin === main.url && url.pathname.startsWith('/demo/') && /(\/|\.html)$/.test(url.pathname);
    await context.route(isPage, async (route) => {
      const response = await route.fetch();
      const body = (await response.text()).replace('src="/hearth.js"', `src="/hearth.js" ${attributes}`);
      await route.fulfill({ response, body });
    });
  }
  if (gpc) await context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }));
  const adEvents = [];
  await context.exposeFunction('__adEvent', (args) => adEvents.push(args));
  await context.addInitScript(() => {
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (message, ...rest) {
      if (message?.method === 'recordAd') window.__adEvent(message.args);
      return post.call(this, message, ...rest);
    };
  });
  const requests = [];
  context.on('request', (r) => requests.push({ request: r, at: Date.now() }));
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  return { context, page, requests, adEvents, warnings };
}

/** Opens `path` on the leader and waits until the snippet has filled the slots. */
async function visit(page, path) {
  await page.goto(`${env.main.url}${path}`);
  return page.evaluate(async () => {
    while (!window.hearth) await new Promise((r) => setTimeout(r, 10));
    return window.hearth.ready;
  });
}

const profileEvents = async (page) => JSON.parse(await page.evaluate(() => hearth.exportProfile())).events;

/** Waits until the page's impressions (recorded when half an ad is on screen) have come in. */
async function settle(page) {
  let before = -1;
  for (;;) {
    const now = (await profileEvents(page)).length;
    if (now === before) return;
    before = now;
    await sleep(400);
  }
}

const slotFrame = (page, slot) => page.frameLocator(`[data-hearth-slot="${slot}"] iframe`);
const adIn = (page, slot) => page.$eval(`[data-hearth-slot="${slot}"]`, (s) => s.dataset.hearthAd);

/**
 * The i-th measured visitor: two articles of one topic, and on the first one a click in the ad
 * frame, a dismissal in the ad frame, or a conversion the page reports.
 * @param {number} i
 */
async function measuredVisitor(i) {
  const v = await visitor();
  const [first, second] = articles(TOPICS[i]);
  await visit(v.page, first);
  await settle(v.page);
  if (i % 3 === 0) {
    const popup = v.page.waitForEvent('popup');
    await slotFrame(v.page, 'sidebar').locator('a.ad').click();
    await (await popup).close();
  } else if (i % 3 === 1) {
    await slotFrame(v.page, 'in-article').locator('.x').click();
  } else {
    const ad = await adIn(v.page, 'sidebar');
    await v.page.evaluate((ad) => hearth.conversion(ad, 'sidebar'), ad);
  }
  await settle(v.page);
  await visit(v.page, second);
  await settle(v.page);
  return v;
}

/**
 * The visitor's ad events of the period starting at `start`, in the order its profile recorded
 * them (the order its tally counted them), each with the slot the snippet named for it.
 */
async function eventsOf(v, start) {
  const slots = new Map(v.adEvents.map(([kind, adId, ts, slot]) => [`${kind}|${adId}|${ts}`, slot]));
  return (await profileEvents(v.page))
    .filter((e) => e.kind !== 'page_view' && e.ts >= start * 1000 && e.ts < (start + PERIOD) * 1000)
    .map((e) => {
      const key = `${e.kind}|${e.ad_id}|${e.ts}`;
      assert.ok(slots.has(key), `profile event ${key} was not handed to the worker by the snippet`);
      return { kind: e.kind, ad_id: e.ad_id, campaign: e.campaign, slot: slots.get(key) };
    });
}

const isUpload = (r) => r.method() === 'PUT' && /\/dap\/tasks\/[^/]+\/reports$/.test(r.url());
const isMeasurement = (r) => /\/v1\/measure\/|\/dap\//.test(r.url());

/** Runs `jobs` at most `width` at a time, in order. */
async function pool(jobs, width) {
  const results = [];
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]();
    }
  }));
  return results;
}

// ---- the test -----------------------------------------------------------------------------------

test('a period of demo visitors is counted privately: every released count is the true count plus the stated noise', async () => {
  const { main, twin } = env;
  fs.mkdirSync(SHOTS, { recursive: true });
  // Start at a period boundary unless enough of the current period is left.
  if (PERIOD - (nowSecs() % PERIOD) < BROWSE_SECS) await sleep((PERIOD - (nowSecs() % PERIOD)) * 1000 + 200);
  const start = Math.floor(nowSecs() / PERIOD) * PERIOD;

  // The simulated browsers report at once (the leader takes a report any time from the start of
  // its period to the end of the next); the twin servers get reports that count nothing.
  const simulated = (async () => {
    const sim = await simulatedBrowsers(main.url, main.helper);
    const rand = random(17);
    const events = Array.from({ length: SIMULATED }, () => simulatedEvents(rand, sim.params.campaigns));
    for (const e of events) assert.equal((await sim.upload(sim.report(start, e))).status, 201);
    const zero = await simulatedBrowsers(twin.url, twin.helper);
    for (let i = 0; i < SETTINGS.min_reports; i++) {
      const nothing = [{ kind: 'impression', campaign: 'no-such-campaign', slot: 'no-such-slot' }];
      assert.equal((await zero.upload(zero.report(start, nothing))).status, 201);
    }
    return { params: sim.params, taskId: sim.task.taskId, events };
  })();
  simulated.catch(() => {}); // awaited below, after the browsers

  // What must not be counted, browsing beside the measured visitors.
  const gpc = async () => {
    const v = await visitor({ gpc: true });
    assert.equal((await visit(v.page, articles('health')[0])).gpc, true);
    await settle(v.page);
    return v;
  };
  const optedOut = async () => {
    const v = await visitor();
    await visit(v.page, articles('health')[1]);
    let record;
    for (const until = Date.now() + 10_000; !record?.periods.length; await sleep(200)) {
      assert.ok(Date.now() < until, 'a visitor that saw ads has a tally');
      record = await storedMeasure(v.page);
    }
    await v.page.evaluate(() => hearth.optOut());
    assert.deepEqual(forgotten(await storedMeasure(v.page)), [], 'opting out deletes the tally');
    assert.equal(await v.page.evaluate(() => hearth.impression(document.querySelector('[data-hearth-slot]').dataset.hearthAd, 'sidebar')), false);
    return { ...v, sendAt: record.periods[0].sendAt };
  };
  const lowCeiling = async () => {
    const v = await visitor({ attributes: 'data-measure-budget="2"' });
    await visit(v.page, articles('health')[2]);
    await settle(v.page);
    return v;
  };
  const browsers = await pool([...TOPICS.map((_, i) => () => measuredVisitor(i)), gpc, optedOut, lowCeiling], 3);
  const measured = browsers.slice(0, TOPICS.length);
  const [gpcVisitor, optOutVisitor, ceilingVisitor] = browsers.slice(TOPICS.length);
  const sim = await simulated;
  assert.ok(nowSecs() < start + PERIOD - 2, `browsing took until ${nowSecs() - start} s into a ${PERIOD} s period`);
  console.log(`browsing done ${Math.round(nowSecs() - start)} s into the period`);

  // Each measured visitor's worker sends its report at a random moment of the next period, by
  // itself: the pages stay open, untouched, until all six have landed.
  const landed = async (v) => {
    for (const { request } of v.requests.filter((r) => isUpload(r.request))) {
      if ((await request.response())?.status() === 201) return true;
    }
    return false;
  };
  const deadline = (start + 2 * PERIOD + 15) * 1000;
  while (!(await Promise.all(measured.map(landed))).every(Boolean)) {
    assert.ok(Date.now() < deadline, 'every measured visitor reported within the next period');
    await sleep(1000);
  }
  // The opted-out visitor's moment has passed too: nothing went.
  if (Date.now() < optOutVisitor.sendAt + 2000) await sleep(optOutVisitor.sendAt + 2000 - Date.now());
  console.log(`reports landed; collecting ${Math.round(nowSecs() - start)} s after the period started`);

  // The truth, from what the test drove.
  const task = sim.params;
  const browserEvents = await Promise.all(measured.map((v) => eventsOf(v, start)));
  for (const [i, events] of browserEvents.entries()) assert.ok(events.length > 0, `visitor ${i} saw no ad`);
  const truth = summed([...browserEvents, ...sim.events].map((events) => counted(events, task)));

  // The collector closes the period at both pairs.
  await collect(main.url, start);
  const zero = await collect(twin.url, start);
  const reports = await (await fetch(`${main.url}/v1/measure/reports`)).json();
  const period = reports.periods.find((p) => p.start === start);
  assert.ok(period?.released, JSON.stringify(period));
  const noise = zero.periods.find((p) => p.start === start);
  assert.ok(noise?.released, JSON.stringify(noise));
  assert.equal(period.cells.length, (task.campaigns.length + task.slots.length) * 4);
  assert.deepEqual(noise.cells.map((c) => cellKey(c.target, c.name, c.kind)), period.cells.map((c) => cellKey(c.target, c.name, c.kind)));
  for (const key of truth.keys()) assert.ok(period.cells.some((c) => cellKey(c.target, c.name, c.kind) === key), key);

  // Exactly the true counts, once the seeded noise is taken off.
  const rows = period.cells.map((c, i) => ({ key: cellKey(c.target, c.name, c.kind), count: c.count, noise: noise.cells[i].count }));
  const wrong = rows.filter((r) => r.count - r.noise !== (truth.get(r.key) ?? 0));
  assert.deepEqual(wrong.map((r) => `${r.key}: ${r.count} - ${r.noise} != ${truth.get(r.key) ?? 0}`), []);
  assert.ok([...truth.values()].some((n) => n >= 10), 'some counts stand well above the noise');

  // The noise has the stated standard deviation (an estimate from n cells is within 25% with
  // overwhelming probability), and the stated 99% interval holds as one should.
  const sd = reports.noise_std;
  assert.ok(Math.abs(sd - Math.hypot(SETTINGS.noise, SETTINGS.noise)) < 1e-9);
  const n = rows.length;
  const observed = Math.sqrt(rows.reduce((s, r) => s + r.noise ** 2, 0) / n);
  assert.ok(Math.abs(observed / sd - 1) < 0.25, `noise sd ${observed}, stated ${sd}`);
  // The stated intervals hold as intervals must. The counts equal truth + noise exactly (above),
  // so a count outside an interval is a noise draw beyond it: the per-cell 99% interval misses
  // about 2.7 of 264 cells per run, the whole-table 99% interval any cell in 1% of runs. The test
  // allows the misses each makes up to a number exceeded by chance less than once in a million
  // runs (a discrete count leaves an interval slightly more often than a continuous one: ×1.1).
  for (const [what, half, p] of [
    ['the per-cell 99% interval', Z99 * sd, 0.011],
    ['the whole-table 99% interval', reports.ci99_all_cells_half_width, 0.011 / n],
  ]) {
    const misses = rows.filter((r) => Math.abs(r.count - (truth.get(r.key) ?? 0)) > half);
    const allowed = binomialBound(n, p, 1e-6);
    assert.ok(misses.length <= allowed, `${misses.length} of ${n} counts outside ${what} ±${half.toFixed(2)}: ${misses.map((r) => r.key).join(', ')}`);
    console.log(`${n} cells, ${truth.size} counted: all exact under the noise; ${misses.length} outside ${what} ±${half.toFixed(2)} (at most ${allowed} allowed)`);
  }
  assert.ok(reports.ci99_all_cells_half_width > Z99 * sd, 'the whole-table interval is the wider');

  // The reports page shows every count of the period.
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await openPage(context, `${main.url}/reports/`);
  const shown = await page.evaluate(() => {
    const out = [];
    for (let el = document.getElementById('periods'); el; el = el.nextElementSibling) {
      if (el.tagName !== 'TABLE') continue;
      const target = el.caption.textContent.startsWith('Campaigns') ? 'campaign' : 'slot';
      for (const tr of el.tBodies[0].rows) {
        const [imp, click, , conversion, dismissal] = [...tr.cells].slice(1).map((td) => td.firstChild.textContent);
        const name = tr.cells[0].textContent;
        out.push(...[['impression', imp], ['click', click], ['conversion', conversion], ['dismissal', dismissal]]
          .map(([kind, count]) => [`${target}\t${name}\t${kind}`, Number(count)]));
      }
    }
    return out;
  });
  assert.deepEqual(new Map(shown), new Map(rows.map((r) => [r.key, r.count])));
  await page.screenshot({ path: `${SHOTS}/reports.png`, fullPage: true });
  assert.deepEqual(page.problems, []);
  await context.close();

  // Each upload: one report, in the next period, to the task the device computed, with no
  // cookie, referrer or other identifying header, and nothing of the visitor's in clear.
  const allowedHeaders = /^(content-type|content-length|cache-control|pragma|accept|accept-encoding|accept-language|user-agent|origin|host|connection|sec-ch-ua.*|sec-fetch-.*)$/;
  const served = (await (await fetch(`${main.url}/v1/measure/task`)).json()).task_id;
  assert.equal(served, sim.taskId);
  for (const [i, v] of measured.entries()) {
    const uploads = v.requests.filter((r) => isUpload(r.request));
    assert.equal(uploads.length, 1, `visitor ${i}: ${uploads.length} uploads`);
    const { request, at } = uploads[0];
    assert.equal(request.url(), `${main.url}/dap/tasks/${served}/reports`);
    assert.ok(at >= (start + PERIOD) * 1000 && at < (start + 2 * PERIOD) * 1000, `visitor ${i} sent ${at / 1000 - start} s after the period started`);
    const headers = await request.allHeaders();
    assert.equal(headers.cookie, undefined);
    assert.equal(headers.referer, undefined);
    assert.deepEqual(Object.keys(headers).filter((h) => !allowedHeaders.test(h)), []);
    assert.equal(headers['content-type'], 'application/dap-report');
    const body = request.postDataBuffer();
    assert.equal(body.readBigUInt64BE(16), BigInt(start), 'the report\'s time is its period\'s start');
    const text = body.toString('latin1');
    for (const e of browserEvents[i]) for (const s of [e.ad_id, e.campaign, e.slot]) assert.ok(!s || !text.includes(s), `the report carries ${s}`);
    // The keys: the leader's from the leader, the helper's only from data-helper.
    const configs = v.requests.filter((r) => r.request.url().includes('/dap/hpke_config'));
    assert.deepEqual(new Set(configs.map((r) => new URL(r.request.url()).origin)), new Set([main.url, DEMO_HELPER]));
    for (const { request: r } of configs) assert.equal((await r.allHeaders()).cookie, undefined);
    assert.deepEqual(v.page.problems, [], `visitor ${i}`);
  }

  // GPC: nothing counted, nothing asked or sent.
  assert.deepEqual(gpcVisitor.requests.filter((r) => isMeasurement(r.request)).map((r) => r.request.url()), []);
  assert.equal(await storedMeasure(gpcVisitor.page), undefined);
  // Opted out: its tally went with the opt-out, and at its moment nothing was sent.
  assert.deepEqual(optOutVisitor.requests.filter((r) => r.request.method() !== 'GET').map((r) => r.request.url()), []);
  assert.deepEqual(forgotten(await storedMeasure(optOutVisitor.page)), []);
  // A page that lowers the ceiling below the task's ε: refused with a warning, nothing counted.
  assert.ok(ceilingVisitor.warnings.some((w) => /measurement task refused: .*exceeds this device's ceiling of 2/.test(w)), ceilingVisitor.warnings.join('\n'));
  assert.deepEqual((await storedMeasure(ceilingVisitor.page))?.periods, []);
  assert.deepEqual(ceilingVisitor.requests.filter((r) => r.request.url().includes('/dap/')).map((r) => r.request.url()), []);
  for (const v of browsers) await v.context.close();
});

test('the device refuses a task it cannot trust, and keys or tallies it cannot use, with a reason', async () => {
  const { main } = env;
  const { measureRecord, measureReport, measureTask } = browserModule();
  const sim = await simulatedBrowsers(main.url, main.helper);
  const refusal = (fn) => {
    try {
      fn();
    } catch (e) {
      return e.message;
    }
    assert.fail(`accepted: ${fn}`);
  };
  const served = JSON.parse(sim.taskJson);
  const tally = measureRecord(null, 0, 'click', served.campaigns[0], 'sidebar');
  const report = (task, budget, helper = sim.helperConfigs) => () => measureReport(task, tally, sim.leaderConfigs, helper, budget);

  // The id is recomputed: parameters that are not the task the leader names are refused, at
  // the check and again when the report is built.
  const other = JSON.stringify({ ...served, min_reports: served.min_reports + 1 });
  for (const fn of [() => measureTask(other), report(other)]) {
    assert.match(refusal(fn), new RegExp(`names its measurement task ${served.task_id}, but its parameters are task `));
  }
  assert.match(refusal(() => measureTask(JSON.stringify({ ...served, extra: 1 }))), /invalid measurement task: unknown field `extra`/);
  assert.match(refusal(() => measureTask(JSON.stringify({ ...served, task_id: undefined }))), /invalid measurement task: no task_id/);
  // ε ≈ 3.06 against one aggregator: within the device's 4 and any higher page budget (which
  // cannot raise it), refused under a page's 2; a budget that is not a positive number is refused.
  assert.equal(measureTask(sim.taskJson, 100).taskId, served.task_id);
  assert.match(refusal(() => measureTask(sim.taskJson, 2)), /ε 3\.\d+ per period against one curious aggregator exceeds this device's ceiling of 2$/);
  assert.match(refusal(report(sim.taskJson, 2)), /exceeds this device's ceiling of 2$/);
  for (const bad of [0, -1, NaN, Infinity]) assert.match(refusal(() => measureTask(sim.taskJson, bad)), /invalid privacy budget/);

  // A helper offering only another suite (P-256: KEM 0x0010), or bytes that are no list.
  const p256 = Uint8Array.from([0, 41, 7, 0x00, 0x10, 0x00, 0x01, 0x00, 0x03, 0, 32, ...Array(32).fill(9)]);
  assert.match(refusal(report(sim.taskJson, undefined, p256)), /the helper offers no HPKE configuration this device can seal to/);
  assert.match(refusal(report(sim.taskJson, undefined, Uint8Array.of(0, 9, 1))), /the helper's HPKE configuration list: /);

  // A tally is one period's, of the four counted kinds.
  assert.match(refusal(() => measureRecord(tally, 60, 'click', 'c', 's')), /the stored tally is of the period starting at 0, not 60/);
  assert.match(refusal(() => measureRecord(null, 0, 'page_view', 'c', 's')), /"page_view" is not an event kind measurement counts/);
  assert.match(refusal(() => measureRecord(null, 1.5, 'click', 'c', 's')), /period start 1\.5 is not a whole number of seconds/);
  assert.match(refusal(() => measureRecord('{"cells": []}', 0, 'click', 'c', 's')), /invalid stored tally: missing field `period_start`/);
});
