// @ts-check
// "Why this ad" in words a visitor recognises. The ranking says which profile features moved an
// ad's score (`RankedAd.why`: `topic:travel`, `kw:rail`, `adv:wayfarer-rail`, ...; see
// hearth-core's device/profile.rs `touched_features`); this turns those that raised it into
// sentences: the topics and keywords read, and the advertisers whose ads were clicked, by the
// name their own ads use. Internal ids never reach the text: a term that is an ad id, campaign or
// advertiser slug of the catalog, or has a digit in it, is left out.
//
// A plain module (no wasm, no worker globals), so that Node's tests import it as it is.
/** @import { Ad, Contribution, HearthEvent } from '../pkg/hearth.js' */
/** @import { Catalog } from './catalog.js' */

/** At most this many topics and keywords in one sentence. */
const MAX_TERMS = 4;

/**
 * What the profile holds, as `Hearth.exportProfile()` stores it: its events and each feature's
 * weight (undecayed: decay never changes a sign).
 * @typedef {object} ProfileFacts
 * @property {HearthEvent[]} events
 * @property {Record<string, { w: number }>} features
 */

/**
 * What explaining needs besides the ad, read only when a sentence depends on it.
 * @typedef {object} Sources
 * @property {Catalog} catalog
 * @property {{ topics: string[], keywords: string[] }} context  the page the ad is for
 * @property {() => ProfileFacts} profile  called only when an ad's own features (its id, campaign,
 *   advertiser or category) raised it
 */

/** @type {WeakMap<Catalog, { names: Map<string, string>, ids: Set<string> }>} */
const known = new WeakMap();

/**
 * Per catalog, once: each advertiser's name and every id-like string.
 * @param {Catalog} catalog
 */
function catalogWords(catalog) {
  let words = known.get(catalog);
  if (!words) {
    /** @type {Map<string, string>} */
    const names = new Map();
    /** @type {Set<string>} */
    const ids = new Set();
    for (const ad of catalog.ads) {
      for (const id of [ad.id, ad.campaign, ad.advertiser]) if (id) ids.add(id.toLowerCase());
      if (ad.advertiser && !names.has(ad.advertiser)) {
        const name = nameIn(ad.advertiser, catalog.creatives[ad.id]);
        if (name) names.set(ad.advertiser, name);
      }
    }
    words = { names, ids };
    known.set(catalog, words);
  }
  return words;
}

/**
 * The advertiser's name as its own ad writes it ("wayfarer-rail" is "Wayfarer Rail",
 * "crumb-and-co" is "Crumb & Co"), or undefined when its ad does not spell it out.
 * @param {string} slug
 * @param {{ title: string, body: string } | undefined} creative
 */
function nameIn(slug, creative) {
  if (!creative) return undefined;
  const words = slug.toLowerCase().split(/[-_\s]+/).filter(Boolean)
    .map((w) => (w === 'and' ? '(?:and|&)' : w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  if (!words.length) return undefined;
  const found = new RegExp(`(?<![\\p{L}\\p{N}])${words.join('[\\s-]*')}(?![\\p{L}\\p{N}])`, 'iu')
    .exec(`${creative.title}\n${creative.body}`);
  return found?.[0];
}

/**
 * The advertiser's name for a visitor: as its ads write it, else its slug in words.
 * @param {Catalog} catalog
 * @param {string} slug
 */
export function advertiserName(catalog, slug) {
  return catalogWords(catalog).names.get(slug)
    ?? slug.split(/[-_\s]+/).filter(Boolean).map((w) => w[0].toUpperCase() + w.slice(1)).join(' ');
}

/**
 * A topic or keyword as words ("city-breaks": "city breaks"), or null when it looks like an id.
 * @param {Catalog} catalog
 * @param {string} term
 */
export function termWords(catalog, term) {
  const t = term.trim().toLowerCase();
  if (!t || /\d/.test(t) || catalogWords(catalog).ids.has(t)) return null;
  return t.replace(/[-_]+/g, ' ');
}

/**
 * "a", "a and b", "a, b and c".
 * @param {string[]} items
 */
export function list(items) {
  return items.length < 2 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

/**
 * The ad's own fields each identity feature names (hearth-core's `ad_feature_names`).
 * @type {Record<string, 'ad_id' | 'campaign' | 'advertiser' | 'category'>}
 */
const AD_FIELD = { ad: 'ad_id', camp: 'campaign', adv: 'advertiser', cat: 'category' };

/**
 * Plain words for why `ad` was ranked: only the features that raised its score explain it.
 * @param {Contribution[]} why  the ranking's contributions, strongest first
 * @param {Ad} ad  the catalog's entry
 * @param {Sources} sources
 * @returns {string}
 */
export function whyInWords(why, ad, { catalog, context, profile }) {
  /** @type {string[]} */
  const terms = [];
  /** @type {{ field: 'ad_id' | 'campaign' | 'advertiser' | 'category', value: string, feature: string }[]} */
  const responses = [];
  for (const { feature, contribution } of why) {
    if (!(contribution > 0)) continue;
    const colon = feature.indexOf(':');
    const kind = feature.slice(0, colon);
    const value = feature.slice(colon + 1);
    if (kind === 'topic' || kind === 'kw') {
      const words = termWords(catalog, value);
      if (words && !terms.includes(words)) terms.push(words);
    } else if (Object.hasOwn(AD_FIELD, kind)) {
      responses.push({ field: AD_FIELD[kind], value, feature });
    }
  }
  /** @type {string[]} */
  const sentences = [];
  if (terms.length) sentences.push(`You read about ${list(terms.slice(0, MAX_TERMS))} on this site.`);
  const facts = responses.length ? profile() : undefined;
  // A dismissal's negative weight may happen to raise an ad: that is no reason to give.
  const raisedBy = facts ? responses.filter(({ feature }) => (facts.features[feature]?.w ?? 0) > 0) : [];
  if (facts) sentences.push(...clicked(raisedBy, catalog, facts.events));
  if (sentences.length) return sentences.join(' ');
  // What raised it are terms that look like ids, or clicks no longer in the bounded event log.
  if (raisedBy.length || why.some((w) => w.contribution > 0 && /^(topic|kw):/.test(w.feature))) {
    return 'It was chosen for this page and for what you did here before.';
  }
  // Nothing in the profile raised it: say what it was chosen for, and only if that is so.
  const onPage = new Set([...context.topics.map((t) => `topic:${t}`), ...context.keywords.map((k) => `kw:${k}`)]
    .map((f) => f.trim().toLowerCase()));
  const shared = (ad.features ?? []).map((f) => f.trim().toLowerCase()).filter((f) => onPage.has(f))
    .map((f) => termWords(catalog, f.slice(f.indexOf(':') + 1))).filter((w) => w !== null);
  if (shared.length) return `It is about ${list([...new Set(shared)].slice(0, MAX_TERMS))}, like this page.`;
  // With no contribution at all the profile may be empty, or the caller asked for none.
  return why.length ? 'It was chosen for this page, not for your interests.' : 'It was chosen for this page.';
}

/**
 * Sentences for the ad features that raised the score, from the events that put them in the
 * profile: a feature with a positive weight got there by a click or a conversion (dismissals
 * lower it, impressions leave it).
 * @param {{ field: 'ad_id' | 'campaign' | 'advertiser' | 'category', value: string }[]} raisedBy
 * @param {Catalog} catalog
 * @param {HearthEvent[]} events
 */
function clicked(raisedBy, catalog, events) {
  /** @type {Map<string, Set<string>>} */
  const byKind = new Map([['click', new Set()], ['conversion', new Set()]]);
  for (const { field, value } of raisedBy) {
    for (const e of events) {
      // Feature values are trimmed and lower-cased (hearth-core's `feature`); event fields as given.
      if (e.advertiser && e[field]?.trim().toLowerCase() === value) byKind.get(e.kind)?.add(advertiserName(catalog, e.advertiser));
    }
  }
  const clicks = [...(byKind.get('click') ?? [])];
  const conversions = [...(byKind.get('conversion') ?? [])].filter((n) => !clicks.includes(n));
  /** @type {string[]} */
  const out = [];
  if (clicks.length) out.push(`You clicked ${clicks.length === 1 ? 'an ad' : 'ads'} from ${list(clicks)}.`);
  if (conversions.length) out.push(`You responded to an offer from ${list(conversions)}.`);
  return out;
}
