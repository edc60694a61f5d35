// Every request Hearth makes: no cookies or other credentials, no Referer (the page's address
// would say what the visitor reads), nothing but what the URL and body carry.
export const PRIVATE = { credentials: 'omit', referrerPolicy: 'no-referrer', cache: 'no-store' };

// GET `url`, revalidating `etag`: {etag} when unchanged (304), else {etag, body} as text or
// bytes. Any other status is an error.
export async function getCached(url, etag, as) {
  const res = await fetch(url, { ...PRIVATE, headers: etag ? { 'If-None-Match': etag } : {} });
  if (res.status === 304 && etag) return { etag };
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const body = as === 'bytes' ? new Uint8Array(await res.arrayBuffer()) : await res.text();
  return { etag: res.headers.get('ETag') ?? undefined, body };
}
