//! `gen-demo-pack`: a warm-started model pack for the demo news site. The default architecture
//! and feature spec, trained with hearth-core's own training code on synthetic browsing
//! sessions over the demo catalog, so that a handful of page views visibly moves the ranking.
//!
//! Synthetic readers each have one or two favourite categories; they read ~25 articles over a
//! few days (mostly on their favourites), see two catalog ads per page and click an ad of a
//! favourite category far more often than any other. Their profiles give labelled examples
//! through `train::examples`; the global parameters are trained centrally in small cohorts:
//! `train::train` from zero `local_u` (no reconstruction, since a fresh demo visitor has none)
//! and the cohort's delta applied at learning rate 1, as FedAvg would with one client.

use crate::default_spec;
use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{Event, RawEvent};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use hearth_core::learning::train::{self, Adam, Example, TrainConfig};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::forward;
use hearth_core::model::pack::ModelPack;
use hearth_core::model::pack_dir;
use hearth_core::model::params::DEFAULT_ARCH;
use hearth_core::model::params::{Gaussian, Params};
use hearth_core::model::scorer::Request;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// 2024-03-01T00:00:00Z: where the synthetic sessions start.
const T0: i64 = 1_709_251_200_000;
const MINUTE: i64 = 60_000;

/// Size and schedule of one generation run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub readers: usize,
    pub heldout: usize,
    pub epochs: usize,
    /// Readers pooled into one `train::train` call.
    pub cohort: usize,
    pub batch_size: usize,
    pub lr: f32,
}

impl Default for Options {
    fn default() -> Options {
        Options { seed: 7, readers: 3_000, heldout: 300, epochs: 2, cohort: 50, batch_size: 32, lr: 0.003 }
    }
}

/// What a run produced, with held-out figures.
pub struct Outcome {
    pub params: Params,
    pub auc_initial: f64,
    pub auc_trained: f64,
    pub heldout_examples: usize,
    pub train_examples: usize,
}

/// The demo catalog, grouped for the reader simulation.
pub struct Catalog {
    pub ads: Vec<Ad>,
    categories: Vec<String>,
    /// The `kw:` words of each category's ads, without the prefix, sorted and unique.
    keywords: Vec<Vec<String>>,
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Catalog, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let ads = doc.get("ads").cloned().ok_or_else(|| format!("{}: no `ads`", path.display()))?;
        let ads: Vec<Ad> = serde_json::from_value(ads).map_err(|e| format!("{}: {e}", path.display()))?;
        Catalog::new(ads)
    }

    pub fn new(ads: Vec<Ad>) -> Result<Catalog, String> {
        let mut categories: Vec<String> = Vec::new();
        let mut keywords: Vec<Vec<String>> = Vec::new();
        for ad in &ads {
            let cat = ad.category.clone().ok_or_else(|| format!("ad {:?} has no category", ad.id))?;
            let c = match categories.iter().position(|x| *x == cat) {
                Some(c) => c,
                None => {
                    categories.push(cat);
                    keywords.push(Vec::new());
                    categories.len() - 1
                }
            };
            keywords[c].extend(ad.features.iter().filter_map(|f| f.strip_prefix("kw:")).map(str::to_string));
        }
        for (cat, kws) in categories.iter().zip(&mut keywords) {
            kws.sort();
            kws.dedup();
            if kws.len() < 2 {
                return Err(format!("category {cat:?} has fewer than two kw: features"));
            }
        }
        if categories.len() < 2 {
            return Err("the catalog needs at least two categories".into());
        }
        Ok(Catalog { ads, categories, keywords })
    }

    pub fn category(&self, name: &str) -> Option<usize> {
        self.categories.iter().position(|c| c == name)
    }

    /// Two distinct keywords of category `c`.
    fn two_keywords(&self, c: usize, rng: &mut Gaussian) -> Vec<String> {
        let kws = &self.keywords[c];
        let i = pick(rng, kws.len());
        let mut j = pick(rng, kws.len() - 1);
        if j >= i {
            j += 1;
        }
        vec![kws[i].clone(), kws[j].clone()]
    }
}

fn pick(rng: &mut Gaussian, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

fn chance(rng: &mut Gaussian, p: f64) -> bool {
    rng.uniform() <= p
}

fn page_view(ts: i64, topic: &str, keywords: Vec<String>) -> Event {
    Event::from_raw(RawEvent {
        kind: "page_view".into(),
        ts: ts as f64,
        topics: vec![topic.to_string()],
        keywords,
        ad_id: None,
        campaign: None,
        advertiser: None,
        category: None,
    })
    .expect("valid page view")
}

fn ad_event(kind: &str, ts: i64, ad: &Ad) -> Event {
    Event::from_raw(RawEvent {
        kind: kind.into(),
        ts: ts as f64,
        topics: Vec::new(),
        keywords: Vec::new(),
        ad_id: Some(ad.id.clone()),
        campaign: ad.campaign.clone(),
        advertiser: ad.advertiser.clone(),
        category: ad.category.clone(),
    })
    .expect("valid ad event")
}

/// A profile of `n` page views on `category`, one per hour ending at `end_ms`, each with two
/// of the category's keywords: what a demo visitor builds by reading.
pub fn reading_profile(catalog: &Catalog, category: &str, n: usize, end_ms: i64, seed: u64) -> Result<Profile, String> {
    let c = catalog.category(category).ok_or_else(|| format!("no category {category:?}"))?;
    let mut rng = Gaussian::new(seed);
    let mut profile = Profile::new(ProfileConfig::default()).map_err(|e| e.to_string())?;
    for i in 0..n {
        let ts = end_ms - (n - 1 - i) as i64 * 60 * MINUTE;
        profile.record(page_view(ts, category, catalog.two_keywords(c, &mut rng))).map_err(|e| e.to_string())?;
    }
    Ok(profile)
}

/// One synthetic reader's profile: 1–2 favourite categories, 20–30 pages over about three
/// days (75% on favourites), two random catalog ads per page, clicks with p 0.3 on favourite
/// categories and 0.02 elsewhere, and an occasional dismissal of an uninteresting ad.
fn reader(catalog: &Catalog, rng: &mut Gaussian, start_ms: i64) -> Profile {
    let ncat = catalog.categories.len();
    let first = pick(rng, ncat);
    let mut favourites = vec![first];
    if chance(rng, 0.5) {
        let mut second = pick(rng, ncat - 1);
        if second >= first {
            second += 1;
        }
        favourites.push(second);
    }
    let pages = 20 + pick(rng, 11);
    let mut profile = Profile::new(ProfileConfig::default()).expect("default profile config");
    let mut ts = start_ms;
    for _ in 0..pages {
        ts += 5 * MINUTE + (rng.uniform() * 235.0 * MINUTE as f64) as i64;
        let topic = if chance(rng, 0.75) { favourites[pick(rng, favourites.len())] } else { pick(rng, ncat) };
        let keywords = catalog.two_keywords(topic, rng);
        profile.record(page_view(ts, &catalog.categories[topic], keywords)).expect("record page view");
        for slot in 0..2i64 {
            let ad = &catalog.ads[pick(rng, catalog.ads.len())];
            let shown = ts + (slot + 1) * 1_000;
            profile.record(ad_event("impression", shown, ad)).expect("record impression");
            let liked = ad.category.as_deref().and_then(|c| catalog.category(c)).is_some_and(|c| favourites.contains(&c));
            if chance(rng, if liked { 0.3 } else { 0.02 }) {
                profile.record(ad_event("click", shown + 20_000, ad)).expect("record click");
            } else if !liked && chance(rng, 0.02) {
                profile.record(ad_event("dismissal", shown + 10_000, ad)).expect("record dismissal");
            }
        }
    }
    profile
}

/// Labelled examples of `n` synthetic readers, one vector per reader.
pub fn readers(catalog: &Catalog, spec: &FeatureSpec, n: usize, seed: u64) -> Result<Vec<Vec<Example>>, String> {
    let by_id: HashMap<&str, &Ad> = catalog.ads.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut rng = Gaussian::new(seed);
    (0..n)
        .map(|_| {
            let start = T0 + (rng.uniform() * 7.0 * 1_440.0 * MINUTE as f64) as i64;
            let profile = reader(catalog, &mut rng, start);
            train::examples(&profile, spec, |id| by_id.get(id).copied()).map_err(|e| e.to_string())
        })
        .collect()
}

/// Logit of one example with a zero device embedding, as a fresh visitor is scored.
fn logit(p: &Params, ex: &Example) -> f32 {
    let req = Request { user: ex.user.clone(), local_u: vec![0.0; p.arch.dim], context: ex.context.clone() };
    forward::score(p, &req, &ex.ad)
}

fn model_auc(p: &Params, examples: &[Example]) -> f64 {
    let scores: Vec<f64> = examples.iter().map(|e| f64::from(logit(p, e))).collect();
    let labels: Vec<f32> = examples.iter().map(|e| e.label).collect();
    hearth_sim::metrics::auc(&scores, &labels)
}

/// Trains from `Params::init(DEFAULT_ARCH, seed)` on synthetic readers; `log` gets progress lines.
pub fn train_pack(catalog: &Catalog, opts: &Options, mut log: impl FnMut(String)) -> Result<Outcome, String> {
    let spec = default_spec();
    let mut train_readers = readers(catalog, &spec, opts.readers, opts.seed ^ 0x7261_6e64)?;
    let heldout: Vec<Example> = readers(catalog, &spec, opts.heldout, opts.seed ^ 0x6865_6c64)?.concat();
    let train_examples = train_readers.iter().map(Vec::len).sum();
    let init = Params::init(DEFAULT_ARCH, opts.seed);
    let mut params = init.clone();
    silence_untrained(&mut params, train_readers.iter().flatten());
    let cfg = TrainConfig {
        // A demo visitor has no local embedding yet, so the global model must carry the signal.
        reconstruction_steps: 0,
        epochs: 1,
        batch_size: opts.batch_size,
        global: Adam::with_lr(opts.lr),
        ..TrainConfig::default()
    };
    let zero_u = vec![0.0f32; DEFAULT_ARCH.dim];
    let mut rng = Gaussian::new(opts.seed ^ 0x7368_7566);
    log(format!(
        "{} readers, {train_examples} examples; held out {} readers, {} examples",
        opts.readers,
        opts.heldout,
        heldout.len()
    ));
    for epoch in 1..=opts.epochs {
        shuffle(&mut train_readers, &mut rng);
        let (mut before, mut after, mut cohorts) = (0.0f64, 0.0f64, 0);
        for cohort in train_readers.chunks(opts.cohort.max(1)) {
            let mut examples: Vec<Example> = cohort.concat();
            shuffle(&mut examples, &mut rng);
            let t = train::train(&params, &zero_u, &examples, &cfg).map_err(|e| e.to_string())?;
            params.values.iter_mut().zip(&t.delta).for_each(|(v, d)| *v += d);
            before += f64::from(t.loss_before);
            after += f64::from(t.loss_after);
            cohorts += 1;
        }
        log(format!(
            "epoch {epoch}: cohort loss {:.4} -> {:.4}, held-out AUC {:.4}",
            before / cohorts as f64,
            after / cohorts as f64,
            model_auc(&params, &heldout)
        ));
    }
    Ok(Outcome {
        auc_initial: model_auc(&init, &heldout),
        auc_trained: model_auc(&params, &heldout),
        params,
        heldout_examples: heldout.len(),
        train_examples,
    })
}

/// Zeroes what training on `examples` cannot reach: `w1_ctx` (ad events carry no page, so every
/// example's context is empty) and the embedding rows and ad biases of features no example
/// uses (the hour, the slot, words the synthetic readers never met). Left at their random
/// initial values they would add a random offset per ad, so an empty profile's ranking changed
/// with the hour of day; at zero they add nothing until federated rounds train them.
fn silence_untrained<'a>(params: &mut Params, examples: impl Iterator<Item = &'a Example>) {
    let d = params.arch.dim;
    let mut used = vec![false; params.arch.buckets];
    for ex in examples {
        for slots in [&ex.user, &ex.context, &ex.ad] {
            slots.ids.iter().zip(&slots.weights).filter(|(_, w)| **w != 0.0).for_each(|(id, _)| used[*id as usize] = true);
        }
    }
    let unused: Vec<usize> = (0..used.len()).filter(|r| !used[*r]).collect();
    let emb = params.get_mut("emb");
    unused.iter().for_each(|r| emb[r * d..(r + 1) * d].fill(0.0));
    let bias = params.get_mut("bias");
    unused.iter().for_each(|r| bias[*r] = 0.0);
    params.get_mut("w1_ctx").fill(0.0);
}

fn shuffle<T>(items: &mut [T], rng: &mut Gaussian) {
    for j in (1..items.len()).rev() {
        items.swap(j, (rng.next_u64() % (j as u64 + 1)) as usize);
    }
}

/// Share of `category` ads in the top 30 of the whole catalog for `profile`, empty page.
pub fn top30_share(pack: &ModelPack, catalog: &Catalog, profile: Profile, category: &str, now_ms: i64) -> Result<f64, String> {
    let mut engine = Engine::new(pack.clone(), profile).map_err(|e| e.to_string())?;
    engine.set_catalog(catalog.ads.clone()).map_err(|e| e.to_string())?;
    engine_top30_share(&engine, catalog, category, now_ms)
}

/// Share of `category` ads in the top 30 of `engine`'s catalog, empty page.
pub fn engine_top30_share(engine: &Engine, catalog: &Catalog, category: &str, now_ms: i64) -> Result<f64, String> {
    let opts = RankOptions { k: 30, explain: 0, ..RankOptions::at(now_ms) };
    let ranked = engine.rank(&Context::default(), &opts).map_err(|e| e.to_string())?;
    let cat_of: HashMap<&str, Option<&str>> = catalog.ads.iter().map(|a| (a.id.as_str(), a.category.as_deref())).collect();
    let hits = ranked.iter().filter(|r| cat_of[r.ad_id.as_str()] == Some(category)).count();
    Ok(hits as f64 / ranked.len() as f64)
}

/// (empty-profile share, share after five page views on `category`) of the top 30.
pub fn shares(pack: &ModelPack, catalog: &Catalog, category: &str) -> Result<(f64, f64), String> {
    let now = T0 + 30 * 1_440 * MINUTE;
    let empty = Profile::new(ProfileConfig::default()).map_err(|e| e.to_string())?;
    let reading = reading_profile(catalog, category, 5, now - MINUTE, 11)?;
    Ok((top30_share(pack, catalog, empty, category, now)?, top30_share(pack, catalog, reading, category, now)?))
}

/// `gen-demo-pack`'s flags; the defaults are `Options::default()`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The demo catalog the synthetic readers see.
    #[arg(long, value_name = "FILE", default_value = "www/demo/catalog.json")]
    catalog: PathBuf,
    /// Directory the pack is written to.
    #[arg(long, value_name = "DIR", default_value = "models/demo")]
    out: PathBuf,
    /// Seed of the initial parameters and the synthetic sessions.
    #[arg(long, value_name = "N", default_value_t = Options::default().seed)]
    seed: u64,
    /// Synthetic readers trained on.
    #[arg(long, value_name = "N", default_value_t = Options::default().readers)]
    readers: usize,
    /// Passes over the readers.
    #[arg(long, value_name = "N", default_value_t = Options::default().epochs)]
    epochs: usize,
    /// Adam learning rate of the global parameters.
    #[arg(long, value_name = "LR", default_value_t = Options::default().lr)]
    lr: f32,
    /// Readers pooled into one training call.
    #[arg(long, value_name = "N", default_value_t = Options::default().cohort)]
    cohort: usize,
    /// Minibatch size.
    #[arg(long, value_name = "N", default_value_t = Options::default().batch_size)]
    batch: usize,
}

pub fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    let catalog = Catalog::load(&args.catalog)?;
    let (out, seed) = (args.out, args.seed);
    let opts = Options {
        seed,
        readers: args.readers,
        epochs: args.epochs,
        lr: args.lr,
        cohort: args.cohort,
        batch_size: args.batch,
        ..Options::default()
    };
    let outcome = train_pack(&catalog, &opts, |line| println!("{line}"))?;
    println!(
        "held-out AUC ({} examples): initial {:.4}, trained {:.4}",
        outcome.heldout_examples, outcome.auc_initial, outcome.auc_trained
    );
    let (onnx, manifest) = ModelPack::write(&outcome.params, &default_spec(), 1);
    let trained = ModelPack::load(&onnx, &manifest).map_err(|e| e.to_string())?;
    let (o, m) = ModelPack::write(&Params::init(DEFAULT_ARCH, seed), &default_spec(), 1);
    let initial = ModelPack::load(&o, &m).map_err(|e| e.to_string())?;
    for category in ["sports", "food"] {
        let (e0, r0) = shares(&initial, &catalog, category)?;
        let (e1, r1) = shares(&trained, &catalog, category)?;
        println!(
            "{category} share of the top 30: empty profile {e0:.2} -> {e1:.2}, after 5 {category} page views {r0:.2} -> {r1:.2} (initial -> trained)"
        );
    }
    pack_dir::write(&out, &onnx, &manifest).map_err(|e| e.to_string())?;
    println!(
        "wrote {} ({} bytes of ONNX, trained on {} examples) in {:.1}s",
        out.display(),
        onnx.len(),
        outcome.train_examples,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/demo/catalog.json")).expect("demo catalog")
    }

    #[test]
    fn warm_started_pack_follows_reading() {
        let catalog = catalog();
        // Small enough for a debug build; the shipped pack uses `Options::default()`.
        let opts = Options { readers: 800, heldout: 150, epochs: 2, cohort: 50, batch_size: 64, lr: 0.005, ..Options::default() };
        let outcome = train_pack(&catalog, &opts, |line| eprintln!("{line}")).unwrap();
        eprintln!("held-out AUC: initial {:.4}, trained {:.4}", outcome.auc_initial, outcome.auc_trained);
        assert!(outcome.auc_trained > 0.7, "held-out AUC {}", outcome.auc_trained);
        assert!(outcome.auc_trained > outcome.auc_initial);

        // Through the pack format, as the demo loads it.
        let (onnx, manifest) = ModelPack::write(&outcome.params, &default_spec(), 1);
        let pack = ModelPack::load(&onnx, &manifest).expect("pack loads");
        for category in ["sports", "food"] {
            let (empty, reading) = shares(&pack, &catalog, category).unwrap();
            eprintln!("{category}: top-30 share {empty:.2} with an empty profile, {reading:.2} after 5 page views");
            assert!(empty <= 0.25, "{category} empty-profile share {empty}");
            assert!(reading >= 0.5, "{category} share after reading {reading}");
        }
    }

    /// The page's hour and slot, which nothing trained, leave the ranking as it is without them.
    #[test]
    fn shipped_demo_pack_ranks_alike_at_every_hour_and_slot() {
        let pack = crate::load_pack(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo")).unwrap();
        let catalog = catalog();
        let now = T0 + 30 * 1_440 * MINUTE;
        for profile in [Profile::new(ProfileConfig::default()).unwrap(), reading_profile(&catalog, "sports", 5, now, 3).unwrap()]
        {
            let mut engine = Engine::new(pack.clone(), profile).unwrap();
            engine.set_catalog(catalog.ads.clone()).unwrap();
            let opts = RankOptions { k: 30, explain: 0, ..RankOptions::at(now) };
            let top = |context: &Context| engine.rank(context, &opts).unwrap().into_iter().map(|r| r.ad_id).collect::<Vec<_>>();
            let plain = top(&Context::default());
            for hour in 0..24 {
                for slot in [None, Some("sidebar"), Some("in-article")] {
                    let context = Context { hour: Some(hour), slot: slot.map(str::to_string), ..Context::default() };
                    assert_eq!(top(&context), plain, "hour {hour}, slot {slot:?}");
                }
            }
        }
    }

    #[test]
    fn shipped_demo_pack_follows_reading() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo");
        let pack = crate::load_pack(&dir).expect("models/demo loads; run `xtask gen-demo-pack`");
        assert_eq!(pack.manifest.model_version, 1);
        assert_eq!(pack.manifest.features, default_spec());
        let catalog = catalog();
        for category in ["sports", "food"] {
            let (empty, reading) = shares(&pack, &catalog, category).unwrap();
            eprintln!("models/demo {category}: top-30 share {empty:.2} empty, {reading:.2} after 5 page views");
            assert!(empty <= 0.25, "{category} empty-profile share {empty}");
            assert!(reading >= 0.5, "{category} share after reading {reading}");
        }
    }
}
