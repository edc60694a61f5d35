// The catalog document: {"ads": [...], "creatives": {id: {title, body, cta, url}}}. hearth-core
// checks the ads (setCatalog); this checks what only the page shows, the creatives. A catalog
// with one bad creative is refused whole, so every visitor ranks the same ads.
const TEXT = { title: 80, body: 200, cta: 30 };

// Relative creative URLs are resolved against `base`, the catalog's own address.
export function checkCatalog(text, base) {
  const doc = JSON.parse(text);
  if (!Array.isArray(doc?.ads)) throw new Error('`ads` is not a list');
  if (typeof doc.creatives !== 'object' || doc.creatives === null) throw new Error('`creatives` is not an object');
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
