// "Your ad profile": what Hearth keeps, from window.hearth (the snippet), in words: interests as
// bars, recent ads by advertiser and title, what left this browser and at what privacy cost,
// with erase (after a confirmation, then what it erased and what it kept), opt-out and export.
// Text only, through textContent. Names come from the catalog the snippet's tag names, read with
// the SDK's own checks (hearth/catalog.js) and words (hearth/explain.js).
import { checkCatalog } from '../hearth/catalog.js';
import { advertiserName, list, termWords } from '../hearth/explain.js';

const $ = (id) => document.getElementById(id);
/**
 * @param {string} tag
 * @param {object} [props]
 * @param {...(Node | string)} children
 */
const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
};
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// The catalog the snippet ranks from, for advertisers' names and ads' titles. Without it the
// page still works: advertisers are named from their ids in words, and titles are left out.
async function loadCatalog() {
  const tag = document.querySelector('script[data-catalog]');
  try {
    const url = new URL(tag.dataset.catalog, location.href);
    const res = await fetch(url, { credentials: 'omit', referrerPolicy: 'no-referrer' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return checkCatalog(await res.text(), url.href);
  } catch (e) {
    console.warn(`profile page: catalog unavailable (${e.message}); showing advertisers without titles`);
    return { ads: [], creatives: {}, byId: new Map() };
  }
}

// ---- interests ---------------------------------------------------------------------------------
// The profile's features (`kind:value`, see hearth.d.ts `Profile.weights`) in groups a person
// recognises. Ad ids and campaigns are left out: their advertiser says the same in words.
const GROUPS = [
  ['topic', 'Topics you read about'],
  ['kw', 'Subjects of the pages you read'],
  ['cat', 'Kinds of ads you clicked or acted on'],
  ['adv', 'Advertisers whose ads you clicked or acted on'],
];
// A weight below this share of the strongest shows as an empty bar: left out.
const FAINT = 0.02;
const strength = (share) => (share >= 2 / 3 ? 'strong' : share >= 1 / 3 ? 'medium' : 'slight');

function interests(weights, catalog) {
  const named = (kind, value) => (kind === 'adv' ? advertiserName(catalog, value) : termWords(catalog, value));
  const split = (feature) => [feature.slice(0, feature.indexOf(':')), feature.slice(feature.indexOf(':') + 1)];
  const strongest = Math.max(0, ...weights.map((w) => w.weight));
  const out = [];
  for (const [kind, title] of GROUPS) {
    const seen = new Set();
    const items = [];
    for (const { feature, weight } of weights) {
      const [k, value] = split(feature);
      const name = k === kind && weight > 0 && weight >= FAINT * strongest ? named(k, value) : null;
      if (!name || seen.has(name)) continue;
      seen.add(name);
      const share = weight / strongest;
      const label = `${name}: ${strength(share)} interest`;
      items.push(el('li', {}, el('span', { className: 'name', textContent: name }),
        el('meter', { min: 0, max: 1, value: share, title: label, ariaLabel: label })));
    }
    if (items.length) out.push(el('h3', { textContent: title }), el('ul', { className: 'interests' }, ...items));
  }
  // Dismissals push an advertiser's or a kind of ads' weight below zero: fewer of those.
  const less = weights
    .filter(({ feature, weight }) => weight < 0 && -weight >= FAINT * strongest && /^(adv|cat):/.test(feature))
    .map(({ feature }) => {
      const [k, value] = split(feature);
      return k === 'adv' ? `ads from ${advertiserName(catalog, value)}` : termWords(catalog, value) && `${termWords(catalog, value)} ads`;
    })
    .filter(Boolean);
  if (less.length) {
    out.push(el('h3', { textContent: 'Less of, because you dismissed their ads' }),
      el('ul', { className: 'less' }, ...[...new Set(less)].map((t) => el('li', { textContent: t }))));
  }
  return out.length ? out : [el('p', { className: 'muted', textContent: 'Nothing yet: Hearth has not learned what you are interested in on this site.' })];
}

// ---- recent ads --------------------------------------------------------------------------------
const HAPPENED = { impression: 'Shown to you', click: 'You clicked it', conversion: 'You acted on it', dismissal: 'You dismissed it' };
const RECENT = 20;

function adName(e, catalog) {
  const advertiser = e.advertiser ?? catalog.byId.get(e.ad_id)?.advertiser;
  const title = catalog.creatives[e.ad_id]?.title;
  if (!advertiser) return title ? `“${title}”` : 'An ad no longer in this site’s catalog';
  return title ? `${advertiserName(catalog, advertiser)}: “${title}”` : `An ad from ${advertiserName(catalog, advertiser)}`;
}

function recentAds(events, catalog) {
  const rows = events.filter((e) => e.ad_id && HAPPENED[e.kind]).slice(-RECENT).reverse().map((e) =>
    el('tr', {}, ...[new Date(e.ts).toLocaleString(), adName(e, catalog), HAPPENED[e.kind]].map((t) => el('td', { textContent: t }))));
  return rows.length ? rows : [el('tr', {}, el('td', { colSpan: 3, className: 'muted', textContent: 'None yet.' }))];
}

// ---- privacy -----------------------------------------------------------------------------------
// "ε" is the differential-privacy measure: the smaller, the less any one browser's data can
// change what a server sees; δ the chance that the bound fails.
const SUPER = { '-': '⁻', 0: '⁰', 1: '¹', 2: '²', 3: '³', 4: '⁴', 5: '⁵', 6: '⁶', 7: '⁷', 8: '⁸', 9: '⁹' };
const power = (n) => String(n).replace(/./g, (c) => SUPER[c] ?? c);
function delta(d) {
  const [mantissa, exp] = d.toExponential().split('e');
  return `δ = ${mantissa === '1' ? '' : `${mantissa}×`}10${power(Number(exp))}`;
}
const epsilon = (e) => `ε = ${e.toFixed(2)}`;

function privacyText(p) {
  if (p.unreadable) {
    return 'Hearth could not read this browser’s record of privacy spent, so it treats the budget as spent: ' +
      'this browser helps train no more model updates.';
  }
  if (p.rounds === 0) {
    return 'This browser has not taken part in training: no model update has left it. ' +
      `If it does, each update has a privacy cost, and it stops at a budget of ε = ${p.epsilon_budget} (${delta(p.delta)}).`;
  }
  const collusion = Number.isFinite(p.collusion_epsilon)
    ? `If the two servers worked together: ${epsilon(p.collusion_epsilon)}.`
    : 'If the two servers worked together, this browser’s own noise would not protect it (ε = ∞).';
  // The ledger counts an update once it is made, before it is sent: what it spends is spent then.
  return `This browser has taken part in ${plural(p.rounds, 'training round')}, with a model update made here${p.rounds === 1 ? '' : ' for each'}. ` +
    'Privacy spent so far against either server alone, or one that fills a round with fake browsers: ' +
    `${epsilon(p.curious_server_epsilon)} of a budget of ${p.epsilon_budget} (${delta(p.delta)}). ${collusion}` +
    (p.may_join ? '' : ' The budget is spent: this browser helps train no more updates.');
}

// ---- the page ----------------------------------------------------------------------------------
function statusText(status) {
  if (status.gpc) {
    return 'Your browser sends Global Privacy Control, so Hearth records nothing here and sends no model update and no count of ads.';
  }
  if (status.optedOut) {
    return 'You opted out: Hearth erased your profile, records nothing here, and sends no model update and no count of ads until you opt back in.';
  }
  // A consent platform's answer (HearthConsent: false for each purpose until it answers).
  const c = status.consent;
  const off = c ? [
    !c.learn && 'records nothing here',
    !c.personalize && 'chooses ads from the page alone',
    !c.train && 'sends no model update',
    !c.measure && 'sends no count of ads',
  ].filter(Boolean) : [];
  if (off.length) return `With this site’s consent settings as they are now, Hearth ${list(off)}.`;
  return 'Hearth is learning: it records the pages you read here and the ads it shows you, and what you do with them.';
}

let catalog;

async function show() {
  const [profile, status, privacy] = await Promise.all([hearth.profile(), hearth.status(), hearth.privacy()]);
  document.body.dataset.learning = status.gpc ? 'gpc' : status.optedOut ? 'opted-out' : status.consent?.learn === false ? 'no-consent' : 'on';
  $('status').textContent = statusText(status);
  $('opt').textContent = status.optedOut ? 'Opt back in' : 'Opt out';
  $('details').textContent = `Model version ${status.modelVersion} · ${status.ads} ads in this site’s catalog · ` +
    `ads ranked on ${status.webgpu ? `the graphics processor (${status.webgpu})` : 'the processor (CPU)'}`;
  $('privacy').textContent = privacyText(privacy);
  $('half-life').textContent = String(Math.round(profile.config.half_life_ms / 86_400_000));
  $('interests').replaceChildren(...interests(profile.weights, catalog));
  const pages = profile.events.filter((e) => e.kind === 'page_view').length;
  $('kept').replaceChildren('Hearth keeps a record of ', el('span', { id: 'count', textContent: String(profile.events.length) }),
    ` events here: ${plural(pages, 'page')} you read and ${profile.events.length - pages} about ads (shown, clicked, dismissed or acted on).`);
  $('ads').tBodies[0].replaceChildren(...recentAds(profile.events, catalog));
  const learned = profile.localEmbedding;
  $('local').textContent = learned.every((v) => v === 0)
    ? 'Nothing yet: when Hearth next trains in this browser, it learns from the ads you clicked among those it showed.'
    : `Training in this browser has learned ${learned.length} numbers that move ads you respond to up and others down. ` +
      'They are kept with your profile and never sent.';
  document.body.dataset.ready = 'true';
}

// What erase (or opt-out) removes, counted before it does (interests as the page lists them);
// null when the profile is empty.
function erasable(profile) {
  const learned = profile.localEmbedding.some((v) => v !== 0);
  if (!profile.events.length && !profile.weights.length && !learned) return null;
  const parts = [plural(profile.events.length, 'event'), plural($('interests').querySelectorAll('ul.interests li').length, 'interest')];
  if (learned) parts.push('what training learned from your clicks');
  return list(parts);
}

async function report(what, before) {
  const privacy = await hearth.privacy();
  const ledger = privacy.unreadable
    ? 'the record of privacy spent'
    : `the record of privacy spent (${privacy.rounds === 0 ? 'empty: this browser has not taken part in training' : plural(privacy.rounds, 'training round')})`;
  const out = $('erased');
  const erased = before ? `Erased: ${before}, and any` : 'Your profile was already empty. Erased: any';
  out.textContent = `${what} ${erased} model update or count of ads not yet sent. ` +
    `Kept: ${ledger}, because that privacy is already spent in published models: erasing cannot take it back, ` +
    'and forgetting it would let this browser spend it again.';
  out.hidden = false;
}

async function main() {
  while (!window.hearth?.version) await new Promise((r) => setTimeout(r, 20)); // the snippet is async
  [catalog] = await Promise.all([loadCatalog(), hearth.ready]);
  const dialog = $('confirm-erase');
  $('erase').onclick = async () => {
    const what = erasable(await hearth.profile());
    $('confirm-what').textContent = what ? `your ${what}` : 'nothing of your profile (it is empty)';
    dialog.returnValue = '';
    dialog.showModal();
  };
  dialog.addEventListener('close', async () => {
    if (dialog.returnValue !== 'erase') return;
    const before = erasable(await hearth.profile());
    await hearth.erase();
    await report('Your profile is erased.', before);
    await show();
  });
  $('opt').onclick = async () => {
    const { optedOut } = await hearth.status();
    if (optedOut) {
      await hearth.optIn();
      $('erased').hidden = true;
    } else {
      const before = erasable(await hearth.profile());
      await hearth.optOut();
      await report('You opted out.', before);
    }
    await show();
  };
  $('export').onclick = async () => {
    const blob = new Blob([await hearth.exportProfile()], { type: 'application/json' });
    const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: 'hearth-profile.json' });
    a.click();
    URL.revokeObjectURL(a.href);
  };
  await show();
}

main().catch((e) => {
  $('status').textContent = `Hearth could not start: ${e.message}`;
});
