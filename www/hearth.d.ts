// Types of `window.hearth`, the API the Hearth snippet (hearth.js) installs.
// Every method is asynchronous: the work happens in Hearth's worker.

// Events, catalog ads and explanations are the wasm module's own types (www/pkg, built by
// build-wasm.sh); a publisher's project needs both files, and compiles them with no @types.
import type { Ad, CapSpec, Contribution, HearthEvent, Spent } from './pkg/hearth';
export type { Ad, CapSpec, Contribution, EventKind, HearthEvent, MeasuredKind, Spent } from './pkg/hearth';

/**
 * What an ad shows, as plain text in a sandboxed frame. Lengths count UTF-16 code units, as
 * JavaScript's `length` does.
 */
export interface Creative {
  /** At most 80 characters. */
  title: string;
  /** At most 200 characters. */
  body: string;
  /** The call to action, at most 30 characters. */
  cta: string;
  /**
   * http(s) address of the advertiser's page. In a catalog it may be relative to the catalog's
   * own address; a ranked ad carries it resolved.
   */
  url: string;
}

/**
 * The catalog document (`data-catalog`, served by the aggregator at /v1/catalog.json): every ad
 * the device may rank, and what each one shows. The aggregator refuses to serve a document over
 * 8 MiB, with any other field (here or in an ad), or with an ad that has no creative; the device
 * refuses the whole document when one ad or creative breaks the rules below, and keeps the one it
 * stored before, if any.
 */
export interface HearthCatalog {
  /**
   * The ads, at most 50,000. Each `id` is unique. Every string (`id`, `campaign`, `advertiser`,
   * `category`, each feature) is non-empty, at most 128 bytes of UTF-8 and has no control
   * characters. `features` are `kind:value` (`topic:sports`, `kw:marathons`); an ad's identity
   * fields and features together may not exceed the model's ad slots. `campaign` is what
   * per-campaign caps and measurement count by, `advertiser` and `category` what diversity
   * limits count by.
   */
  ads: Ad[];
  /** What each ad shows, by ad id: one for every ad in `ads`. */
  creatives: Record<string, Creative>;
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
  /**
   * Why this ad, in words for the visitor: the topics and keywords they read and the advertisers
   * whose ads they clicked, among the features that raised its score; never an internal id.
   */
  explanation: string;
  creative: Creative;
}

export type Backend = 'auto' | 'cpu' | 'webgpu';

export interface RankOptions {
  /** Slot name; part of the page context. */
  slot?: string;
  k?: number;
  explain?: number;
  /** Impression caps; see Caps. */
  caps?: Caps;
  /**
   * Ads to leave out unless fewer than `k` others remain: fill() passes the ads its slots showed
   * last, so that no slot shows the same ad twice in a row.
   */
  avoid?: string[];
  /**
   * False ranks on the page context alone, as for an empty profile (default true). Dismissals,
   * caps and `avoid` apply either way; such a ranking always runs on the CPU.
   */
  personalized?: boolean;
  diversity?: { slots: number; max_per_advertiser?: number; max_per_category?: number };
  backend?: Backend;
}

/**
 * Caps as text, the form of `data-hearth-cap-ad` and `data-hearth-cap-campaign`: "3/day",
 * "2/session" or both, comma-separated ("3/day,2/session"); a window not named is not capped.
 * "none": no caps of that kind.
 */
export type CapText = string;

/**
 * Most impressions of one ad, and of one campaign (any of its ads), per day (the 24 hours
 * before the ranking) and per session (which ends after 30 minutes without any recorded
 * event). Defaults: ad 3 a day and 2 a session, campaign 6 a day and 4 a session. A kind left
 * out keeps its defaults, `null` removes its caps; in a CapSpec, the same field by field. An ad
 * at a cap is left out unless fewer than `k` ads remain: first the session caps relax, then the
 * day caps. Dismissed ads, and every ad of a campaign dismissed twice, never come back.
 */
export interface Caps {
  ad?: CapSpec | CapText | null;
  campaign?: CapSpec | CapText | null;
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
  /**
   * What the page's IAB TCF v2.2 consent platform (CMP) allows, or null when there is none or it
   * says GDPR does not apply: then only Global Privacy Control and optOut() limit Hearth.
   */
  consent: HearthConsent | null;
  /**
   * Whether this page's ads are drawn, as the ad frames (hearth/frame.html) confirm them:
   * `none` while no ad was given to a slot on this page yet; `pending` until a frame confirms
   * its ad; `ok` once one did; `blocked` when none did within 5 s, or the page's
   * Content-Security-Policy blocked the frame (`frame-src`), which is also warned about once on
   * the console. Only a confirmed ad that was half on screen counts as an impression.
   */
  rendering: 'none' | 'pending' | 'ok' | 'blocked';
}

/**
 * What Hearth may do under the consent a TCF v2.2 CMP (`__tcfapi`) reports, purpose by purpose.
 * Each needs the purpose's consent (legitimate interest is never used) and, when the snippet tag
 * has `data-tcf-vendor="<GVL id>"`, that vendor's consent too. Until the CMP answers, every field
 * is false.
 */
export interface HearthConsent {
  /**
   * Purpose 1 (store and/or access information on a device): Hearth's IndexedDB store is opened
   * at all. Without it the worker keeps everything in memory for this page view only.
   */
  storage: boolean;
  /** Purposes 1 and 3 (create profiles for personalised advertising): events go into the profile. */
  learn: boolean;
  /** Purposes 1 and 4 (use profiles to select personalised advertising): otherwise ads are ranked on the page's context alone. */
  personalize: boolean;
  /** Purposes 1 and 7 (measure advertising performance): ad events are counted for private measurement reports. */
  measure: boolean;
  /**
   * Purposes 1, 3 and 10 (develop and improve services): local training on the profile and
   * federated uploads of what it learned.
   */
  train: boolean;
}

export interface Profile {
  events: HearthEvent[];
  /**
   * Decayed feature weights now, strongest first (by magnitude). A feature is `kind:value`:
   * `topic:` and `kw:` from pages read; `ad:`, `camp:`, `adv:` and `cat:` (the ad's id, campaign,
   * advertiser and category) from ad clicks and conversions (raising) and dismissals (lowering,
   * down to below zero).
   */
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

/**
 * A function a page queues before the snippet has loaded (`window.hearth = window.hearth || [];
 * hearth.push(fn)`): run with the API once it is installed, in the order queued; after that,
 * `push` runs it at once. One that throws (or rejects) is reported on the console and the rest
 * still run.
 */
export type HearthCommand = (hearth: HearthApi) => void;

export interface HearthApi {
  readonly version: string;
  /** Runs each command now, in order; one that throws or rejects is reported on the console. */
  push(...commands: HearthCommand[]): void;
  /** Resolves once the model and catalog are loaded and the slots are filled. */
  readonly ready: Promise<Status>;
  /** Records a page view and makes its topics and keywords the context of the slots. */
  page(page?: { topics?: string[]; keywords?: string[] }): Promise<boolean>;
  /**
   * Records any event; resolves false when learning is off (opt-out, GPC, or no consent to
   * Purposes 1 and 3 where a CMP asks: see HearthConsent). Measurement counts only the ad events
   * below.
   */
  record(event: HearthEvent): Promise<boolean>;
  /**
   * The ad events, for ads a page renders itself (the snippet reports those it renders). Each
   * goes into the profile and, when the aggregator serves a measurement task, into this period's
   * private count for the ad's campaign and for `slot` (the `data-hearth-slot` name). Resolve
   * false when learning is off (as for record()). Nothing is counted after an opt-out or with
   * GPC, nor, where a CMP asks, without consent to Purposes 1 and 7.
   */
  impression(adId: string, slot?: string): Promise<boolean>;
  click(adId: string, slot?: string): Promise<boolean>;
  conversion(adId: string, slot?: string): Promise<boolean>;
  dismiss(adId: string, slot?: string): Promise<boolean>;
  rank(options?: RankOptions): Promise<RankedAd[]>;
  /** Ranks again and re-renders every `[data-hearth-slot]`. */
  fill(): Promise<RankedAd[]>;
  why(adId: string, slot?: string): Promise<RankedAd | undefined>;
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

/** `detail` of the ad events, dispatched on the slot element and bubbling to the document. */
export interface HearthAdDetail {
  /** The ad's catalog id. */
  ad_id: string;
}

/** The `hearth:*` events: `addEventListener('hearth:click', (e) => e.detail.ad_id)`. */
export interface HearthEventMap {
  /** On the document, once the slots are filled; `detail` is the status at start. */
  'hearth:ready': CustomEvent<Status>;
  /** The visitor clicked the ad in a slot. */
  'hearth:click': CustomEvent<HearthAdDetail>;
  /** The visitor chose "Not interested" on the ad in a slot. */
  'hearth:dismissal': CustomEvent<HearthAdDetail>;
  /** The visitor opened "Why this ad?" in a slot. */
  'hearth:why': CustomEvent<HearthAdDetail>;
  /** On the document, each time the CMP reports the visitor's consent (stored or just given). */
  'hearth:consent': CustomEvent<HearthConsent | null>;
}

declare global {
  interface Window {
    /**
     * The API once the snippet has run; until then undefined, or the commands a page queued
     * (HearthCommand).
     */
    hearth: HearthApi | HearthCommand[] | undefined;
  }
  interface WindowEventMap extends HearthEventMap {}
  interface DocumentEventMap extends HearthEventMap {}
  interface HTMLElementEventMap extends HearthEventMap {}
}
