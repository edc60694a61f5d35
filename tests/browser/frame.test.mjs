// The ad frame (issue 15, findings 4 and 5): ads are drawn by the hosted renderer
// (www/hearth/frame.html), so a publisher page on another origin renders them under the minimal
// Content-Security-Policy the README gives (no 'unsafe-inline', no hash, no blob: worker); an
// impression is recorded only for an ad the frame confirmed it drew; a page whose policy blocks
// the frame says so once on the console and in status(); and the frame's controls are SVG icons of
// at least 24 x 24 CSS px, with at least 4.5:1 contrast, a visible focus ring, names, and a "why"
// panel a keyboard opens and closes. axe-core checks the frame, an article and the profile page.
// Real Chromium, the real aggregator pair. Screenshots go to target/e2e/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { startAggregator, useBrowser } from './helpers.mjs';
import { openPage } from '../support/browser.mjs';

const env = useBrowser(startAggregator);
const SHOTS = 'target/e2e';
const catalog = JSON.parse(fs.readFileSync('www/demo/catalog.json', 'utf8'));
const AXE = fs.readFileSync('node_modules/axe-core/axe.min.js', 'utf8');
const RENDERER = '/hearth/frame.html';

// The policy the README gives a publisher whose page loads Hearth from the aggregator's origin and
// starts the worker from its own one-line file (data-worker); `frame` and `worker` replace the
// sources of frame-src and of worker-src's first file. The rest (default-src 'none', the page's
// own stylesheet and favicon) is this page's, not Hearth's.
const policy = ({ frame = env.server.url, worker = "'self'" } = {}) => [
  "default-src 'none'",
  `script-src ${env.server.url} 'wasm-unsafe-eval'`,
  `worker-src ${worker} ${env.server.url}`,
  `frame-src ${frame}`,
  `connect-src ${env.server.url} ${env.server.helper}`,
  "style-src 'self'",
  'img-src data:',
].join('; ');

// A publisher on an origin of its own, serving every response (the page, its stylesheet and the
// worker file) with `csp`, as a server configured for it does.
async function publisher(t, csp, { worker = true } = {}) {
  const agg = env.server.url;
  const files = {
    '/article.html': ['text/html', `<!doctype html><html lang="en"><title>Publisher</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/site.css">
<meta name="hearth:topics" content="cycling">
<script async src="${agg}/hearth.js" ${worker ? 'data-worker="/hearth-worker.js" ' : ''}data-aggregator="${agg}/" data-helper="${env.server.helper}/" data-catalog="${agg}/v1/catalog.json"></script>
<main><h1>Cycling</h1><div data-hearth-slot="sidebar"></div></main>`],
    '/site.css': ['text/css', '[data-hearth-slot]{width:300px;height:250px}[data-hearth-slot] iframe{border:0;width:100%;height:100%}'],
    // The one line a publisher hosts so that worker-src needs no `blob:`.
    '/hearth-worker.js': ['text/javascript', `import ${JSON.stringify(`${agg}/hearth/worker.js`)};\n`],
  };
  const server = http.createServer((req, res) => {
    const file = files[req.url];
    if (!file) return res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': file[0], 'Content-Security-Policy': csp }).end(file[1]);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close() && server.closeAllConnections());
  const url = `http://127.0.0.1:${server.address().port}/article.html`;
  assert.notEqual(new URL(url).origin, new URL(agg).origin);
  return url;
}

// What `fn` (run in the page, maybe async) returns once it is truthy, polled every 100 ms; after a
// minute, whatever it returns then, for the assertion that follows to report.
const until = (page, fn) => page.evaluate(async (source) => {
  // Compiled before the first await: the page's CSP lets only the evaluation itself eval.
  const f = (0, eval)(source);
  for (const end = Date.now() + 60_000; ;) {
    const value = await f();
    if (value || Date.now() > end) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
}, fn.toString());
const ready = (page) => page.evaluate(async () => {
  while (!window.hearth?.ready) await new Promise((r) => setTimeout(r, 10));
  return window.hearth.ready.then((result) => ({ result }), (e) => ({ error: e.message }));
});
const impressions = async (page) =>
  JSON.parse(await page.evaluate(() => hearth.exportProfile())).events.filter((e) => e.kind === 'impression');
const rendererOf = (page) => page.frames().find((f) => f.url().endsWith(RENDERER));

test('under the minimal CSP a publisher page on another origin draws ads and counts them', async (t) => {
  const url = await publisher(t, policy());
  const context = await env.browser.newContext();
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await page.goto(url);
  const { result: status, error } = await ready(page);
  assert.equal(error, undefined);
  assert.equal(status.ads, catalog.ads.length);
  assert.equal(await until(page, () => hearth.status().then((s) => s.rendering === 'ok' && s.rendering)), 'ok');
  // The frame is the hosted renderer, sandboxed as before, and shows the slot's ad as text.
  const adId = await page.$eval('[data-hearth-slot]', (s) => s.dataset.hearthAd);
  const frame = await page.$eval('[data-hearth-slot] iframe', (f) => ({ src: f.src, sandbox: f.getAttribute('sandbox'), srcdoc: f.srcdoc }));
  assert.deepEqual(frame, { src: `${env.server.url}${RENDERER}`, sandbox: 'allow-scripts allow-popups allow-popups-to-escape-sandbox', srcdoc: '' });
  const renderer = rendererOf(page);
  assert.equal(await renderer.$eval('.t', (e) => e.textContent), catalog.creatives[adId].title);
  assert.equal(await renderer.$eval('.c', (e) => e.textContent), catalog.creatives[adId].cta);
  assert.equal(await page.$eval('[data-hearth-slot]', (s) => s.dataset.hearthRendered), adId);
  // Half on screen and drawn: one impression, of that ad.
  await until(page, () => hearth.exportProfile().then((p) => JSON.parse(p).events.some((e) => e.kind === 'impression')));
  assert.deepEqual((await impressions(page)).map((e) => e.ad_id), [adId]);
  // Nothing was refused: the console would say "Refused to ..." for each violation.
  assert.deepEqual(page.problems, []);
  assert.deepEqual(warnings, []);
  await context.close();
});

test('a page whose CSP blocks the frame records no impression and says why, once', async (t) => {
  // The worker from a blob this time (no data-worker), which the policy allows.
  const url = await publisher(t, policy({ frame: "'none'", worker: 'blob:' }), { worker: false });
  const context = await env.browser.newContext();
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await page.goto(url);
  const { result: status, error } = await ready(page);
  assert.equal(error, undefined, 'the worker runs; only the frame is blocked');
  assert.equal(status.ads, catalog.ads.length);
  assert.deepEqual(await page.$eval('[data-hearth-slot]', (s) => [!!s.dataset.hearthAd, s.dataset.hearthRendered]), [true, undefined],
    'an ad was chosen for the slot, and never drawn');
  assert.equal(await until(page, () => hearth.status().then((s) => s.rendering !== 'pending' && String(s.rendering))), 'blocked');
  // The slot is on screen, so the old code counted its blank frame at once; a round trip to the
  // worker after that has every event it was sent.
  assert.ok(await page.$eval('[data-hearth-slot]', (s) => s.getBoundingClientRect().top < innerHeight));
  assert.deepEqual(await impressions(page), []);
  const said = warnings.filter((w) => w.startsWith('hearth: '));
  assert.equal(said.length, 1, said.join('\n'));
  assert.match(said[0], /^hearth: ads are not rendering in this page: .*frame-src http:\/\/127\.0\.0\.1:\d+/);
  assert.deepEqual(page.problems.filter((p) => !/violates the following Content Security Policy directive: "frame-src 'none'"/.test(p)), []);
  console.log(said[0]);
  await context.close();
});

test('a renderer that never confirms (here: never loads) is reported after 5 s, and counts nothing', async () => {
  const context = await env.browser.newContext();
  await context.route(`${env.server.url}${RENDERER}`, (r) => r.abort());
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await page.goto(`${env.server.url}/demo/articles/autos-leasing.html`);
  assert.equal((await ready(page)).error, undefined);
  assert.equal(await until(page, () => hearth.status().then((s) => s.rendering !== 'pending' && String(s.rendering))), 'blocked');
  assert.deepEqual(await impressions(page), []);
  assert.deepEqual(warnings.filter((w) => w.startsWith('hearth: ')), [
    `hearth: ads are not rendering in this page: no ad frame confirmed its ad within 5 s (does the page's Content-Security-Policy allow frame-src ${env.server.url}?)`,
  ]);
  await context.close();
});

test('without data-worker, a policy without worker-src blob: gets a clear error in ready and status()', async (t) => {
  const url = await publisher(t, policy(), { worker: false });
  const context = await env.browser.newContext();
  const page = await openPage(context);
  const warnings = [];
  page.on('console', (m) => m.type() === 'warning' && warnings.push(m.text()));
  await page.goto(url);
  const { error } = await ready(page);
  assert.match(error, /^could not start the worker from .*\/hearth\/worker\.js: .*worker-src blob: http:\/\/127\.0\.0\.1:\d+, or data-worker and worker-src 'self' http:/);
  const status = await page.evaluate(() => hearth.status().then(() => 'resolved', (e) => e.message));
  assert.equal(status, error);
  assert.deepEqual(warnings.filter((w) => w.startsWith('hearth: ')), [`hearth: ${error}`]);
  await context.close();
});

// WCAG 2.x contrast of two computed colours (`rgb(...)`/`rgba(...)`, opaque).
function contrast(a, b) {
  const lum = (css) => {
    const [r, g, bl] = css.match(/[\d.]+/g).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

// Violations axe-core rates serious or critical in `target` (a page or a frame), frames left out
// (each is checked on its own).
async function axe(target) {
  await target.evaluate(AXE);
  const { violations } = await target.evaluate(() => axe.run(document, { iframes: false, resultTypes: ['violations'] }));
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

test('the ad controls are SVG, large enough, legible, named and keyboard-operable; axe finds nothing serious', async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await openPage(context);
  await page.goto(`${env.server.url}/demo/articles/autos-leasing.html`);
  assert.equal((await ready(page)).error, undefined);
  await until(page, () => hearth.status().then((s) => s.rendering === 'ok'));
  await page.screenshot({ path: `${SHOTS}/article.png`, fullPage: true });
  const slot = page.locator('[data-hearth-slot="sidebar"]');
  await slot.scrollIntoViewIfNeeded();
  const frame = await (await slot.locator('iframe').elementHandle()).contentFrame();
  assert.ok(frame.url().endsWith(RENDERER));
  assert.equal(await frame.$eval('html', (e) => e.lang), 'en');

  // Each control: its box, its name, whether it holds text, and its colours against the first
  // opaque background behind it.
  const measured = await frame.$$eval('.s .l, .s button', (els) => els.map((e) => {
    let bg = e;
    while (bg && getComputedStyle(bg).backgroundColor.replace(/\s/g, '').match(/^rgba\(.*,0\)$|^transparent$/)) bg = bg.parentElement;
    const box = e.getBoundingClientRect();
    return {
      what: e.className,
      name: e.getAttribute('aria-label') ?? e.textContent.trim(),
      text: e.tagName === 'BUTTON' && e.querySelector('svg') ? e.textContent.trim() : null,
      svg: !!e.querySelector('svg'),
      width: box.width,
      height: box.height,
      color: getComputedStyle(e).color,
      background: getComputedStyle(bg ?? document.body).backgroundColor,
    };
  }));
  const by = Object.fromEntries(measured.map((m) => [m.what, m]));
  assert.deepEqual(Object.keys(by).sort(), ['i', 'l', 'x']);
  for (const icon of [by.i, by.x]) {
    assert.ok(icon.svg && icon.text === '', `${icon.what}: an SVG icon, no font glyph`);
    assert.ok(icon.width >= 24 && icon.height >= 24, `${icon.what}: ${icon.width} x ${icon.height} CSS px`);
  }
  assert.equal(by.i.name, 'Why this ad?');
  assert.equal(by.x.name, 'Not interested in this ad');
  for (const m of measured) {
    const ratio = contrast(m.color, m.background);
    console.log(`${m.what}: ${m.width} x ${m.height} px, contrast ${ratio.toFixed(2)}:1 (${m.color} on ${m.background})`);
    assert.ok(ratio >= 4.5, `${m.what}: contrast ${ratio.toFixed(2)}:1`);
  }
  assert.deepEqual(await axe(frame), [], 'the ad frame');

  // Keyboard: from the ad to ⓘ, which shows a focus ring; Enter opens the panel and moves focus
  // into it; Escape closes it and gives focus back to ⓘ.
  await frame.locator('a.ad').focus();
  await page.keyboard.press('Tab');
  const ring = await frame.$eval('.i', (e) => ({
    focused: e.matches(':focus-visible'),
    outline: `${getComputedStyle(e).outlineStyle} ${getComputedStyle(e).outlineWidth}`,
  }));
  assert.deepEqual(ring, { focused: true, outline: 'solid 2px' });
  const opened = page.evaluate(() => new Promise((r) => document.addEventListener('hearth:why', () => r(true), { once: true })));
  await page.keyboard.press('Enter');
  assert.equal(await opened, true, 'the page hears that the panel was opened');
  const open = await frame.evaluate(() => ({
    hidden: document.querySelector('.w').hidden,
    expanded: document.querySelector('.i').getAttribute('aria-expanded'),
    focus: document.activeElement?.id,
    text: document.querySelector('.w').textContent.replace(/\s+/g, ' ').trim(),
  }));
  assert.deepEqual({ ...open, text: undefined }, { hidden: false, expanded: 'true', focus: 'why', text: undefined });
  assert.match(open.text, /Your reading history stays on this device\./);
  assert.doesNotMatch(open.text, /Nothing about you left this device/);
  const closeNow = await frame.$eval('.w .close', (e) => {
    const box = e.getBoundingClientRect();
    return { width: box.width, height: box.height, color: getComputedStyle(e).color, background: getComputedStyle(e).backgroundColor };
  });
  assert.ok(closeNow.width >= 24 && closeNow.height >= 24, `Close: ${closeNow.width} x ${closeNow.height}`);
  assert.ok(contrast(closeNow.color, closeNow.background) >= 4.5, `Close: ${JSON.stringify(closeNow)}`);
  assert.deepEqual(await axe(frame), [], 'the ad frame, its panel open');
  await slot.screenshot({ path: `${SHOTS}/why.png` });
  await page.keyboard.press('Escape');
  assert.deepEqual(await frame.evaluate(() => ({
    hidden: document.querySelector('.w').hidden,
    expanded: document.querySelector('.i').getAttribute('aria-expanded'),
    focus: document.activeElement?.className,
  })), { hidden: true, expanded: 'false', focus: 'i' });

  assert.deepEqual(await axe(page), [], 'the article page');
  await page.goto(`${env.server.url}/demo/profile.html`);
  assert.equal((await ready(page)).error, undefined);
  assert.deepEqual(await axe(page), [], 'the profile page');
  await context.close();
});
