// The benchmark workload: synthetic catalogs, profile and page context.
// Mirrors xtask/src/bench.rs (synthetic_ad, synthetic_profile, synthetic_events,
// bench_task, BENCH_SECAGG, bench_secagg_task, bench_untrained_task, bench_context, NOW) exactly, so browser and native figures rank the same data. Change both
// together.

export const NOW = 1_750_000_000_000;

export const CATEGORIES = [
  'sports', 'finance', 'travel', 'cooking', 'tech', 'music',
  'fashion', 'health', 'autos', 'games', 'home', 'books',
];

/** Ad `i` of the synthetic catalog. */
export function syntheticAd(i) {
  const cat = CATEGORIES[i % CATEGORIES.length];
  return {
    id: `ad${i}`,
    campaign: `camp${i % 50}`,
    advertiser: `adv${i % 100}`,
    category: cat,
    features: [`topic:${cat}`, `kw:w${i % 97}`, `kw:w${(i * 7) % 89}`],
  };
}

export function syntheticCatalog(n) {
  return Array.from({ length: n }, (_, i) => syntheticAd(i));
}

/** Fifty page views over the categories, sports most often, one a minute up to NOW. */
export function syntheticProfileEvents() {
  return Array.from({ length: 50 }, (_, i) => ({
    kind: 'page_view',
    ts: NOW - 60_000 * (50 - i),
    topics: [i % 3 === 0 ? 'sports' : CATEGORIES[i % CATEGORIES.length]],
    keywords: [`w${i % 97}`],
  }));
}

/** `n` local events: impressions over the first 200 ads, one a minute up to NOW, every fifth
 * event a click on the ad just shown. */
export function syntheticLocalEvents(n) {
  return Array.from({ length: n }, (_, i) => {
    const click = i % 5 === 4;
    const shown = click ? i - 1 : i;
    const ad = syntheticAd((shown * 7) % 200);
    const ts = click ? NOW - 60_000 * (n - i + 1) + 1_000 : NOW - 60_000 * (n - i);
    return { kind: click ? 'click' : 'impression', ts, ad_id: ad.id, campaign: ad.campaign, advertiser: ad.advertiser, category: ad.category };
  });
}

/** The round the training benchmark runs (xtask bench_task): default training, C = 1, z = 1. */
export const benchTask = (encoding) => ({ round_id: 1, model_version: 1, clip_norm: 1, noise_multiplier: 1, encoding });

/** The secure round of the share benchmark (xtask BENCH_SECAGG): K = 100, both servers at z = 4. */
export const BENCH_SECAGG = { clients: 100, leader_noise: 4, helper_noise: 4 };

/** benchTask as a leader announces it (xtask bench_secagg_task): the device's own noise z = 1. */
export const benchSecAggTask = () => ({ ...benchTask('f32'), secagg: BENCH_SECAGG });

/** benchTask with training cut to nothing (xtask bench_untrained_task): no reconstruction steps,
 * no epochs, no minimum of events; what is left is the upload's build and its bookkeeping. */
export const benchUntrainedTask = () => ({ ...benchTask('f32'), min_events: 0, train: { reconstruction_steps: 0, epochs: 0 } });

/** benchUntrainedTask as a leader announces it (xtask bench_untrained_secagg_task). */
export const benchUntrainedSecAggTask = () => ({ ...benchUntrainedTask(), secagg: BENCH_SECAGG });

export const benchContext = () => ({ topics: ['sports'], keywords: [], slot: 'sidebar', hour: 14 });
