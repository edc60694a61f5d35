// @ts-check
// The catalog document: {"ads": [...], "creatives": {id: {title, body, cta, url}}}. hearth-core
// checks the ads (setCatalog); this checks what only the page shows, the creatives. A catalog
// with one bad creative is refused whole, so every visitor ranks the same ads.
/** @import { Ad } from '../pkg/hearth.js' */
/** @import { Creative } from '../hearth.js' */

const TEXT = { title: 80, body: 200, cta: 30 };

/**
 * @typedef {object} Catalog
 * @property {Ad[]} ads
 * @property {Record<string, Creative>} creatives
 * @property {Map<string, Ad>} byId
 */

/**
 * Relative creative URLs are resolved against `base`, the catalog's own address.
 * @param {string} text
 * @param {string} base
 * @returns {Catalog}
 */
export function checkCatalog(text, base) {
  const doc = JSON.parse(text);
  if (!Array.isArray(doc?.ads)) throw new Error('`ads` is not a list');
  if (typeof doc.creatives !== 'object' || doc.creatives === null) throw new Error('`creatives` is not an object');
  /** @type {Map<string, Ad>} */
  const byId = new Map();
  for (const ad of doc.ads) {
    const id = ad?.id;
    const c = Object.hasOwn(doc.creatives, id) ? doc.creatives[id] : undefined;
    if (!c) throw new Error(`ad ${JSON.stringify(id)} has no creative`);
    for (const [field, max] of Object.entries(TEXT)) {
      if (typeof c[field] !== 'string' || c[field].length > max) {
        throw new Error(`ad ${JSON.stringify(id)}: ${field} must be text of at most ${max} characters`);
      }
    }
    let url;
    try {
      url = new URL(c.url, base);
    } catch {
      throw new Error(`ad ${JSON.stringify(id)}: url is not a URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`ad ${JSON.stringify(id)}: url must be http(s)`);
    c.url = url.href;
    byId.set(id, ad);
  }
  return { ads: doc.ads, creatives: doc.creatives, byId };
}

/**
 * What an ad event and a ranked ad say of the ad: the same fields, so a ranking and the events
 * it leads to name an ad alike.
 * @param {Ad} ad
 */
export const adFields = (ad) => ({ ad_id: ad.id, campaign: ad.campaign, advertiser: ad.advertiser, category: ad.category });
