// Compiled by tests/browser/types.test.mjs with `tsc --strict`, in a directory of its own that
// holds only this file, hearth.d.ts and pkg/hearth.d.ts (as a publisher would copy them): how a
// publisher's TypeScript uses window.hearth. Each @ts-expect-error line must be an error, so the
// types are checked both ways.
import type { HearthApi, HearthCatalog, HearthCommand, HearthConsent, Participation, RankedAd, Status } from './hearth';

// The command queue: the snippet may not have loaded yet, and TypeScript makes the page say so.
window.hearth = window.hearth || [];
window.hearth.push((h) => {
  h.rank({ slot: 'sidebar', k: 2 }).then((ads) => console.log(ads.map((a) => a.creative.title)));
});
const queued: HearthCommand = async (h) => console.log((await h.status()).ads);
window.hearth.push(queued);

// Typed events, on the document and on a slot.
document.addEventListener('hearth:ready', (e) => console.log(e.detail.modelVersion));
document.addEventListener('hearth:consent', (e) => console.log(e.detail?.personalize ?? 'not gated'));
document.querySelector<HTMLElement>('[data-hearth-slot]')?.addEventListener('hearth:click', (e) => console.log(e.detail.ad_id.length));

// The catalog format, as an ad server would write it.
const catalog: HearthCatalog = {
  ads: [{ id: 'sports-01', campaign: 'spring', advertiser: 'stridewell', category: 'sports', features: ['topic:sports'] }],
  creatives: { 'sports-01': { title: 'Shoes', body: 'For trails.', cta: 'Shop', url: '/landing.html' } },
};

export async function publisher(hearth: HearthApi): Promise<void> {
  const status: Status = await hearth.ready;
  const gpu: string | null = status.webgpu;
  const consent: HearthConsent | null = status.consent;
  await hearth.page({ topics: ['sports'], keywords: ['marathon'] });
  const ads: RankedAd[] = await hearth.rank({ slot: 'sidebar', k: 2, backend: 'auto' });
  const first: string = ads[0].creative.title + ads[0].why.map((w) => w.feature).join();
  await hearth.click(ads[0].ad_id);
  await hearth.record({ kind: 'conversion', ts: Date.now(), ad_id: ads[0].ad_id });
  const p: Participation = await hearth.participate();
  const done: boolean = p.status === 'uploaded';
  const weights = (await hearth.profile()).weights.map((w) => w.weight * 2);
  const privacy = await hearth.privacy();
  const spent: string = privacy.unreadable ? 'unknown' : `ε ${privacy.curious_server_epsilon} of ${privacy.epsilon_budget}`;
  await hearth.optOut();
  console.log(gpu, consent?.train, first, done, weights, spent, catalog.ads.length);

  // @ts-expect-error: the snippet may not have loaded: window.hearth may be a queue or undefined
  await window.hearth.ready;
  // @ts-expect-error: a queued command takes the API, not an event
  window.hearth?.push((e: Event) => e.preventDefault());
  // @ts-expect-error: hearth:click carries an ad id, not a status
  document.addEventListener('hearth:click', (e) => e.detail.modelVersion);
  // @ts-expect-error: a catalog ad needs an id
  const noId: HearthCatalog = { ads: [{ campaign: 'x' }], creatives: {} };
  // @ts-expect-error: a creative needs a call to action
  const noCta: HearthCatalog = { ads: [], creatives: { a: { title: 't', body: 'b', url: '/' } } };
  // @ts-expect-error: not an event kind
  await hearth.record({ kind: 'purchase', ts: 1 });
  // @ts-expect-error: backends are auto, cpu or webgpu
  await hearth.rank({ backend: 'webgl' });
  // @ts-expect-error: ts is required
  await hearth.record({ kind: 'click' });
  // @ts-expect-error: profile() is a promise
  hearth.profile().weights;
  // @ts-expect-error: an unreadable ledger has no ε to show
  (await hearth.privacy()).curious_server_epsilon;
  console.log(noId, noCta);
}
