// @ts-check
// Hearth's ad renderer: the script of frame.html, the document inside each ad's sandboxed iframe
// (opaque origin: no access to the page, its storage or cookies). The snippet (../hearth.js)
// posts the ad; it is written here as text only, and the frame answers `rendered` once it is in
// the document, so the snippet counts an impression only for an ad that was drawn. Messages are taken
// from the parent window alone, and sent to it alone.
/**
 * @template {Element} E
 * @param {string} selector
 * @param {new () => E} type
 * @returns {E}
 */
function $(selector, type) {
  const found = document.querySelector(selector);
  if (!(found instanceof type)) throw new Error(`frame.html has no ${selector}`);
  return found;
}
const ad = $('.ad', HTMLAnchorElement);
const info = $('.i', HTMLButtonElement);
const panel = $('.w', HTMLElement);
/**
 * @param {string} type
 * @param {string} [adId]
 */
const send = (type, adId = shown) => parent.postMessage({ hearth: type, ad_id: adId }, '*');
/** @type {string | undefined} the ad on screen: every message names it, so the page never credits
 * a click or a dismissal to an ad that replaced this one meanwhile */
let shown;

addEventListener('message', (e) => {
  if (e.source !== parent || !e.data?.ad || typeof e.data.ad !== 'object') return;
  const { ad_id, title, body, cta, url, why } = e.data.ad;
  $('.t', HTMLElement).textContent = title;
  $('.b', HTMLElement).textContent = body;
  $('.c', HTMLElement).textContent = cta;
  if (/^https?:/i.test(url)) ad.href = url;
  else ad.removeAttribute('href');
  $('.r', HTMLElement).textContent = why;
  shown = ad_id;
  // Not after an animation frame: Chromium draws no frames in a cross-origin frame out of view,
  // and a slot below the fold must not look blocked. The stylesheet has loaded (a deferred
  // script runs after it).
  send('rendered', ad_id);
});

/** @param {boolean} open */
function showWhy(open) {
  panel.hidden = !open;
  info.setAttribute('aria-expanded', String(open));
  // Focus follows the panel: into it when it opens, back to the button that opened it after.
  (open ? panel : info).focus();
}
ad.addEventListener('click', () => send('click'));
$('.x', HTMLButtonElement).addEventListener('click', () => send('dismissal'));
info.addEventListener('click', () => {
  showWhy(true);
  send('why');
});
$('.close', HTMLButtonElement).addEventListener('click', () => showWhy(false));
panel.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') showWhy(false);
});
