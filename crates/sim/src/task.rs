//! The recommendation task on the product's terms: each user is a device, each movie an ad.
//!
//! A movie's ad features are its genres, its most used tags and the words of its title; its
//! category is its first genre. A device's events are, in time order, one impression per rated
//! movie and a click right after it when the rating is at least 4, so the product's own labelling
//! (train::examples) turns them into positives and negatives. The most recent `test_fraction` of
//! each user's ratings is held out; each held-out positive is ranked against 99 movies the user
//! never rated (sampled with the seed).

use crate::data::{Dataset, Rating};
use hearth_core::device::catalog::{Ad, Catalog};
use hearth_core::device::event::{AdRef, Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::learning::train::{self, Example};
use hearth_core::model::features::{FeatureSpec, feature};
use hearth_core::model::params::Gaussian;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

/// A rating at or above this is a click.
pub const CLICK_RATING: f32 = 4.0;
/// Sampled non-interacted movies per held-out positive.
pub const NEGATIVES: usize = 99;
const MAX_TAGS: usize = 4;
const MAX_TITLE_WORDS: usize = 5;

/// One simulated device: its on-device state and its held-out interactions.
pub struct Device {
    pub user: u32,
    pub profile: Profile,
    /// The product's training examples from the device's own events (they depend on the events
    /// and the feature spec only, so they are built once).
    pub examples: Vec<Example>,
    /// Held-out (catalog index, label) pairs.
    pub test: Vec<(usize, f32)>,
    /// Per held-out positive: its catalog index first, then NEGATIVES sampled ones.
    pub candidates: Vec<Vec<usize>>,
    /// When the device ranks the held-out items: just after its last training event.
    pub now_ms: i64,
    /// The training ratings as (catalog index, label): the popularity baseline and external
    /// baselines read them.
    pub train: Vec<(usize, f32)>,
}

pub struct Task {
    /// The movies as ads, validated and hashed once.
    pub catalog: Catalog,
    pub devices: Vec<Device>,
    pub train_ratings: usize,
    pub test_ratings: usize,
}

/// The ad for a movie: id `m<movieId>`, category = first genre, features within `ad_slots`.
pub fn movie_ad(id: u32, title: &str, genres: &[String], tags: &[String], ad_slots: usize) -> Ad {
    let category = genres.first().cloned();
    // ad:<id> and cat:<genre> take two of the ad's slots.
    let room = ad_slots.saturating_sub(1 + usize::from(category.is_some()));
    let words = title_words(title);
    let mut features: Vec<String> = Vec::new();
    let candidates = genres
        .iter()
        .map(|g| feature("genre", g))
        .chain(tags.iter().filter(|t| t.len() <= 64 && !t.contains(char::is_control)).take(MAX_TAGS).map(|t| feature("tag", t)))
        .chain(words.iter().take(MAX_TITLE_WORDS).map(|w| feature("word", w)));
    for f in candidates {
        if features.len() < room && !features.contains(&f) {
            features.push(f);
        }
    }
    Ad { id: format!("m{id}"), campaign: None, advertiser: None, category, features }
}

/// Lower-case words of three or more letters, without the trailing "(1995)".
fn title_words(title: &str) -> Vec<String> {
    let title = title.trim();
    let title = match title.rfind('(') {
        Some(i) if title.ends_with(')') => &title[..i],
        _ => title,
    };
    let stop = ["the", "and", "for", "with", "from", "les", "des"];
    title
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 3 && !stop.contains(&w.as_str()))
        .collect()
}

fn ad_event(kind: EventKind, ts: i64, ad: &Ad) -> Event {
    let r = AdRef {
        ad_id: ad.id.clone(),
        campaign: ad.campaign.clone(),
        advertiser: ad.advertiser.clone(),
        category: ad.category.clone(),
    };
    Event { kind, ts, topics: vec![], keywords: vec![], ad: Some(r) }
}

impl Task {
    pub fn build(data: &Dataset, spec: &FeatureSpec, test_fraction: f64, seed: u64) -> Result<Task, String> {
        let none = Vec::new();
        let ads: Vec<Ad> = data
            .movies
            .iter()
            .map(|m| movie_ad(m.id, &m.title, &m.genres, data.tags.get(&m.id).unwrap_or(&none), spec.ad_slots))
            .collect();
        let index: HashMap<u32, usize> = data.movies.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        let mut by_user: HashMap<u32, Vec<Rating>> = HashMap::new();
        for r in &data.ratings {
            if index.contains_key(&r.movie) {
                by_user.entry(r.user).or_default().push(*r);
            }
        }
        let mut users: Vec<(u32, Vec<Rating>)> = by_user.into_iter().filter(|(_, r)| r.len() >= 2).collect();
        users.sort_by_key(|(u, _)| *u);
        let by_id: HashMap<&str, &Ad> = ads.iter().map(|a| (a.id.as_str(), a)).collect();
        let devices = users
            .into_par_iter()
            .map(|(user, mut ratings)| {
                ratings.sort_by_key(|r| (r.ts, r.movie));
                let n_test = ((ratings.len() as f64 * test_fraction).round() as usize).clamp(1, ratings.len() - 1);
                let (train_part, test_part) = ratings.split_at(ratings.len() - n_test);
                let mut profile =
                    Profile::new(ProfileConfig { max_events: 20_000, max_features: 2_000, ..ProfileConfig::default() })
                        .map_err(|e| e.to_string())?;
                for r in train_part {
                    let ad = &ads[index[&r.movie]];
                    profile.record(ad_event(EventKind::Impression, r.ts * 1000, ad)).map_err(|e| e.to_string())?;
                    if r.rating >= CLICK_RATING {
                        profile.record(ad_event(EventKind::Click, r.ts * 1000 + 1000, ad)).map_err(|e| e.to_string())?;
                    }
                }
                let examples = train::examples(&profile, spec, |id| by_id.get(id).copied()).map_err(|e| e.to_string())?;
                let labelled = |part: &[Rating]| -> Vec<(usize, f32)> {
                    part.iter().map(|r| (index[&r.movie], f32::from(u8::from(r.rating >= CLICK_RATING)))).collect()
                };
                let test = labelled(test_part);
                let seen: HashSet<usize> = ratings.iter().map(|r| index[&r.movie]).collect();
                let mut unseen: Vec<usize> = (0..ads.len()).filter(|i| !seen.contains(i)).collect();
                let mut rng = Gaussian::new(seed ^ (u64::from(user) << 20));
                let candidates = test
                    .iter()
                    .filter(|(_, label)| *label > 0.0)
                    .map(|&(pos, _)| {
                        // A partial Fisher-Yates shuffle: NEGATIVES distinct unseen movies.
                        let k = NEGATIVES.min(unseen.len());
                        for j in 0..k {
                            let pick = j + (rng.next_u64() % (unseen.len() - j) as u64) as usize;
                            unseen.swap(j, pick);
                        }
                        std::iter::once(pos).chain(unseen[..k].iter().copied()).collect()
                    })
                    .collect();
                let now_ms = train_part.last().map_or(0, |r| r.ts * 1000 + 2000);
                Ok(Device { user, profile, examples, test, candidates, now_ms, train: labelled(train_part) })
            })
            .collect::<Result<Vec<Device>, String>>()?;
        let test_ratings = devices.iter().map(|d| d.test.len()).sum();
        let train_ratings = devices.iter().map(|d| d.train.len()).sum();
        let catalog = Catalog::new(ads, spec).map_err(|e| e.to_string())?;
        Ok(Task { catalog, devices, train_ratings, test_ratings })
    }
}
