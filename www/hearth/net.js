// @ts-check
// Every request Hearth makes: no cookies or other credentials, no Referer (the page's address
// would say what the visitor reads), nothing but what the URL and body carry.
/** @type {RequestInit} */
export const PRIVATE = { credentials: 'omit', referrerPolicy: 'no-referrer', cache: 'no-store' };

/** @typedef {{ text: string, bytes: Uint8Array }} Bodies */

/**
 * GET `url`, revalidating `etag`: {etag} when unchanged (304), else {etag, body} as text or
 * bytes. Any other status is an error.
 * @template {keyof Bodies} As
 * @param {string} url
 * @param {string | undefined} etag
 * @param {As} as
 * @returns {Promise<{ etag?: string, body?: Bodies[As] }>}
 */
export async function getCached(url, etag, as) {
  const res = await fetch(url, { ...PRIVATE, headers: etag ? { 'If-None-Match': etag } : {} });
  if (res.status === 304 && etag) return { etag };
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const body = /** @type {Bodies[As]} */ (as === 'bytes' ? new Uint8Array(await res.arrayBuffer()) : await res.text());
  return { etag: res.headers.get('ETag') ?? undefined, body };
}
