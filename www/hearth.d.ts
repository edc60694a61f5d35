// Types of `window.hearth`, the API the Hearth snippet (hearth.js) installs.
// Every method is asynchronous: the work happens in Hearth's worker.

// Events and explanations are the wasm module's own types (www/pkg, built by build-wasm.sh).
import type { Cap, Contribution, HearthEvent, Spent } from './pkg/hearth';
export type { Cap, Contribution, EventKind, HearthEvent, MeasuredKind, Spent } from './pkg/hearth';

export interface Creative {
  title: string;
  body: string;
  cta: string;
  /** http(s) address of the advertiser's page. */
  url: string;
}

export interface RankedAd {
  ad_id: string;
  campaign?: string;
  advertiser?: string;
  category?: string;
  /** Logit. */
  score: number;
  /** Predicted click probability. */
  probability: number;
  /** Why this ad: the profile features that moved its score most. */
  why: Contribution[];
  creative: Creative;
}

export type Backend = 'auto' | 'cpu' | 'webgpu';

export interface RankOptions {
  /** Slot name; part of the page context. */
  slot?: string;
  k?: number;
  explain?: number;
  caps?: { per_ad?: Cap; per_campaign?: Cap };
  diversity?: { slots: number; max_per_advertiser?: number; max_per_category?: number };
  backend?: Backend;
}

export interface Status {
  optedOut: boolean;
  /** Global Privacy Control was set: nothing is learned and nothing is uploaded. */
  gpc: boolean;
  modelVersion: number;
  ads: number;
  /**
   * The WebGPU adapter ranking runs on, or null while it runs on the CPU only. The adapter is
   * opened on first need: in `auto` mode for catalogs large enough to pay for it, or when a
   * call asks for `backend: 'webgpu'`.
   */
  webgpu: string | null;
  labelledEvents: number;
}

export interface Profile {
  events: HearthEvent[];
  /** Decayed feature weights now, strongest first. */
  weights: { feature: string; weight: number }[];
  /**
   * What local training learned from this device's clicks and impressions: the model's
   * per-device user embedding (zeros until then). Stored with the profile, never uploaded.
   */
  localEmbedding: number[];
  config: { half_life_ms: number; max_events: number; max_features: number };
  optedOut: boolean;
  gpc: boolean;
}

export interface Participation {
  /**
   * `skipped`: nothing to do now (no open round, not enough events, already taken part, not
   * sampled for this round, the privacy budget spent, ...); `refused`: the round asked for less
   * protection than this SDK allows, or its helper key is unusable, or the aggregator refused
   * the upload (each also warned about on the console).
   */
  status: 'uploaded' | 'skipped' | 'refused';
  reason: string;
}

/**
 * What this browser's privacy ledger adds up to: the rounds it helped train and the privacy they
 * spent. The ledger outlives erase() and optOut(): it records privacy already spent in released
 * models, which erasing cannot take back, and forgetting it would let the browser spend its
 * budget again. It holds no events or pages. A ledger that cannot be read counts as spent
 * (`unreadable`), never as empty.
 */
export type Privacy = (Spent & { unreadable: false }) | { unreadable: true; may_join: false };

export interface Scores {
  backend: 'cpu' | 'webgpu';
  /** One logit per catalog ad, in catalog order. */
  logits: number[];
  ms: number;
}

export interface HearthApi {
  readonly version: string;
  /** Resolves once the model and catalog are loaded and the slots are filled. */
  readonly ready: Promise<Status>;
  /** Records a page view and makes its topics and keywords the context of the slots. */
  page(page?: { topics?: string[]; keywords?: string[] }): Promise<boolean>;
  /**
   * Records any event; resolves false when learning is off (opt-out or GPC). Measurement counts
   * only the ad events below.
   */
  record(event: HearthEvent): Promise<boolean>;
  /**
   * The ad events, for ads a page renders itself (the snippet reports those it renders). Each
   * goes into the profile and, when the aggregator serves a measurement task, into this period's
   * private count for the ad's campaign and for `slot` (the `data-hearth-slot` name). Resolve
   * false when learning is off (opt-out or GPC): then nothing is counted either.
   */
  impression(adId: string, slot?: string): Promise<boolean>;
  click(adId: string, slot?: string): Promise<boolean>;
  conversion(adId: string, slot?: string): Promise<boolean>;
  dismiss(adId: string, slot?: string): Promise<boolean>;
  rank(options?: RankOptions): Promise<RankedAd[]>;
  /** Ranks again and re-renders every `[data-hearth-slot]`. */
  fill(): Promise<RankedAd[]>;
  why(adId: string, slot?: string): Promise<RankedAd>;
  profile(): Promise<Profile>;
  /** The whole stored profile as a JSON document. */
  exportProfile(): Promise<string>;
  /** Erases the profile and measurement's counts not yet reported; the privacy ledger stays (see Privacy). */
  erase(): Promise<void>;
  /**
   * Erases the profile and measurement's counts, and stops learning, measurement and uploads
   * until optIn(); the privacy ledger stays.
   */
  optOut(): Promise<void>;
  optIn(): Promise<void>;
  status(): Promise<Status>;
  /**
   * Takes part in the current federated round now, if this device may. When another tab is
   * taking part, waits for it to finish and then answers for this device.
   */
  participate(): Promise<Participation>;
  /** The privacy this browser has spent helping train the model. */
  privacy(): Promise<Privacy>;
  /** Raw catalog logits on one backend (diagnostics and benchmarks). */
  scores(options?: { slot?: string; backend?: Backend }): Promise<Scores>;
}

declare global {
  interface Window {
    hearth: HearthApi;
  }
}
