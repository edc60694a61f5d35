// Demo page: the sample catalog (catalog.json) ranked for a profile kept in
// localStorage. Read articles, click or dismiss ads, and watch the ranking and
// the profile change. `make demo` builds www/pkg and serves this page.
import init, { Hearth } from '/pkg/hearth.js';

const STORE = 'hearth-profile';
// sample-profile.json was written at this instant (the fixtures' clock); its
// events are shifted so they happened just as long before "now".
const SAMPLE_NOW = 1_750_000_000_000;
const $ = (id) => document.getElementById(id);

const fetchOk = async (url) => {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return res;
};

let hearth;
let catalog; // {ads, creatives}
let halfLifeMs = 14 * 86_400_000;

function save() {
  const doc = hearth.exportProfile();
  localStorage.setItem(STORE, doc);
  return JSON.parse(doc);
}

async function loadSample() {
  const { events } = await (await fetchOk('./sample-profile.json')).json();
  const shift = Date.now() - SAMPLE_NOW;
  hearth.eraseProfile();
  for (const e of events) hearth.record({ ...e, ts: e.ts + shift });
}

function context() {
  return { topics: [$('topic').value], keywords: [], slot: $('slot').value, hour: new Date().getHours() };
}

function adEvent(kind, ad) {
  hearth.record({ kind, ts: Date.now(), ad_id: ad.id, campaign: ad.campaign, advertiser: ad.advertiser, category: ad.category });
  render();
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, attrs);
  e.append(...children);
  return e;
}

function render() {
  const now = Date.now();
  const ranked = hearth.rank(context(), {
    now_ms: now,
    k: 5,
    explain: 3,
    diversity: { slots: 5, max_per_advertiser: 1 },
  });
  const byId = new Map(catalog.ads.map((a) => [a.id, a]));
  $('ranked').replaceChildren(
    ...ranked.map((r) => {
      const ad = byId.get(r.ad_id);
      const creative = catalog.creatives[r.ad_id] ?? { title: r.ad_id };
      const why = r.why.map((w) =>
        el('span', { className: w.contribution >= 0 ? 'up' : 'down' }, `${w.feature} ${w.contribution >= 0 ? '+' : ''}${w.contribution.toFixed(3)}`),
      );
      const li = el(
        'li',
        {},
        el('div', { className: 'ad-title' }, creative.title),
        el('div', { className: 'muted' }, `${ad.advertiser} · ${ad.category} · p(click) ${(100 * r.probability).toFixed(1)}% · logit ${r.score.toFixed(3)}`),
        el('div', { className: 'why' }, 'why: ', ...why),
        el('button', { onclick: () => adEvent('click', ad) }, 'click'),
        el('button', { onclick: () => adEvent('dismissal', ad) }, 'not interested'),
      );
      li.dataset.adId = r.ad_id;
      return li;
    }),
  );

  const profile = save();
  const rows = Object.entries(profile.features)
    .map(([name, { w, ts }]) => [name, w * 2 ** (-(now - ts) / halfLifeMs)])
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]))
    .slice(0, 15);
  $('features').tBodies[0].replaceChildren(
    ...rows.map(([name, w]) => el('tr', {}, el('td', {}, name), el('td', {}, w.toFixed(3)))),
  );
  $('export').textContent = JSON.stringify(profile, null, 2);
}

async function main() {
  await init();
  const [onnx, manifest, cat] = await Promise.all([
    // The aggregator's current model (make demo serves this page from the aggregator).
    fetchOk('/v1/model/model.onnx').then((r) => r.arrayBuffer()),
    fetchOk('/v1/model/manifest.json').then((r) => r.text()),
    fetchOk('./catalog.json').then((r) => r.json()),
  ]);
  catalog = cat;
  const stored = localStorage.getItem(STORE);
  hearth = new Hearth(new Uint8Array(onnx), manifest, stored);
  if (!stored) await loadSample();
  halfLifeMs = JSON.parse(hearth.exportProfile()).config.half_life_ms;
  hearth.setCatalog(catalog.ads);

  const topics = [...new Set(catalog.ads.map((a) => a.category))];
  $('topic').replaceChildren(...topics.map((t) => el('option', { value: t }, t)));
  $('topic').onchange = $('slot').onchange = render;
  $('read').onclick = () => {
    hearth.record({ kind: 'page_view', ts: Date.now(), topics: [$('topic').value] });
    render();
  };
  $('erase').onclick = () => {
    hearth.eraseProfile();
    render();
  };
  $('sample').onclick = async () => {
    await loadSample();
    render();
  };
  $('model').textContent = `model version ${hearth.modelVersion} · ${catalog.ads.length} ads in the catalog`;
  render();
  $('status').textContent = 'ready';
  $('status').dataset.ready = 'true';
}

main().catch((e) => {
  $('status').textContent = `error: ${e.message ?? e}`;
  $('status').className = 'error';
  console.error(e);
});
