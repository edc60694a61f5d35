// Compiled by tests/browser/types.test.mjs with `tsc --strict`: how a publisher's TypeScript
// uses window.hearth. Each @ts-expect-error line must be an error, so the types are checked
// both ways.
import type { RankedAd, Status, Participation } from '../../www/hearth';

export async function publisher(): Promise<void> {
  const status: Status = await window.hearth.ready;
  const gpu: string | null = status.webgpu;
  await window.hearth.page({ topics: ['sports'], keywords: ['marathon'] });
  const ads: RankedAd[] = await window.hearth.rank({ slot: 'sidebar', k: 2, backend: 'auto' });
  const first: string = ads[0].creative.title + ads[0].why.map((w) => w.feature).join();
  await window.hearth.click(ads[0].ad_id);
  await window.hearth.record({ kind: 'conversion', ts: Date.now(), ad_id: ads[0].ad_id });
  const p: Participation = await window.hearth.participate();
  const done: boolean = p.status === 'uploaded';
  const weights = (await window.hearth.profile()).weights.map((w) => w.weight * 2);
  const privacy = await window.hearth.privacy();
  const spent: string = privacy.unreadable ? 'unknown' : `ε ${privacy.curious_server_epsilon} of ${privacy.epsilon_budget}`;
  await window.hearth.optOut();
  console.log(gpu, first, done, weights, spent);

  // @ts-expect-error: not an event kind
  await window.hearth.record({ kind: 'purchase', ts: 1 });
  // @ts-expect-error: backends are auto, cpu or webgpu
  await window.hearth.rank({ backend: 'webgl' });
  // @ts-expect-error: ts is required
  await window.hearth.record({ kind: 'click' });
  // @ts-expect-error: profile() is a promise
  window.hearth.profile().weights;
  // @ts-expect-error: an unreadable ledger has no ε to show
  (await window.hearth.privacy()).curious_server_epsilon;
}
