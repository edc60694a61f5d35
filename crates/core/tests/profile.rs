//! The interest profile: decay against the closed form, out-of-order events, what each event
//! kind moves, the caps, erase, the stored document and every way a stored one is refused;
//! and the event parser's typed errors.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use hearth_core::HearthError;
use hearth_core::device::catalog::Ad;
use hearth_core::device::event::{AdRef, Event, EventKind, MAX_TERMS, MAX_TEXT};
use hearth_core::device::profile::{
    MAX_DISMISSED_ADS, MAX_DISMISSED_CAMPAIGNS, MAX_EVENTS_CEILING, MAX_FEATURE_NAME, MAX_FEATURES_CEILING, MAX_SLOTS, Profile,
    ProfileConfig, VERSION,
};
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;

fn config(half_life_ms: f64, max_events: usize, max_features: usize) -> ProfileConfig {
    ProfileConfig { half_life_ms, max_events, max_features }
}

fn profile(half_life_ms: f64) -> Profile {
    Profile::new(config(half_life_ms, 1000, 1000)).unwrap()
}

fn page(ts: i64, topics: &[&str], keywords: &[&str]) -> Event {
    Event {
        kind: EventKind::PageView,
        ts,
        topics: topics.iter().map(|s| s.to_string()).collect(),
        keywords: keywords.iter().map(|s| s.to_string()).collect(),
        ad: None,
    }
}

/// An event on ad `id` of the "Spring Sale" campaign (fixed names, so the tests can name the
/// features the event touches).
fn ad_event(kind: EventKind, ts: i64, id: &str) -> Event {
    let ad = Ad {
        id: id.into(),
        campaign: Some("Spring Sale".into()),
        advertiser: Some("Acme Corp".into()),
        category: Some("Shoes".into()),
        features: vec![],
    };
    common::ad_event(kind, ts, &ad)
}

fn weight(p: &Profile, now: i64, name: &str) -> Option<f64> {
    p.weights_at(now).into_iter().find(|(n, _)| *n == name).map(|(_, w)| w)
}

/// 2^(-t / half_life), computed here from the definition.
fn halving(t: i64, half_life_ms: f64) -> f64 {
    0.5f64.powf(t as f64 / half_life_ms)
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{what}: got {got}, want {want}");
}

fn err_of<T: std::fmt::Debug>(r: hearth_core::Result<T>) -> HearthError {
    r.expect_err("must be refused")
}

// ---------------------------------------------------------------------------------------------
// Decay and folding

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn weights_decay_as_powers_of_two() {
    let hl = 2.0 * HOUR as f64;
    let mut p = profile(hl);
    let t0 = 1_700_000_000_000;
    p.record(page(t0, &["Sports"], &["tennis"])).unwrap();
    let topic0 = weight(&p, t0, "topic:sports").expect("topic recorded");
    let kw0 = weight(&p, t0, "kw:tennis").expect("keyword recorded");
    assert!(topic0 > 0.0 && kw0 > 0.0);
    for t in [1, HOUR, 2 * HOUR, 5 * HOUR, 24 * HOUR, 30 * 24 * HOUR] {
        assert_close(weight(&p, t0 + t, "topic:sports").unwrap(), topic0 * halving(t, hl), "topic");
        assert_close(weight(&p, t0 + t, "kw:tennis").unwrap(), kw0 * halving(t, hl), "keyword");
    }
    // One half-life halves it, exactly.
    assert_close(weight(&p, t0 + 2 * HOUR, "topic:sports").unwrap(), topic0 / 2.0, "one half-life");
    // Asking about a time before the last update does not grow the weight.
    assert_close(weight(&p, t0 - HOUR, "topic:sports").unwrap(), topic0, "query before update");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn repeated_events_sum_their_decayed_contributions() {
    let hl = 1000.0;
    let mut p = profile(hl);
    p.record(page(0, &["sports"], &[])).unwrap();
    let d = weight(&p, 0, "topic:sports").unwrap();
    p.record(page(3000, &["SPORTS "], &[])).unwrap();
    p.record(page(3500, &["sports"], &[])).unwrap();
    for now in [3500, 5000, 10_000] {
        let want = d * (halving(now, hl) + halving(now - 3000, hl) + halving(now - 3500, hl));
        assert_close(weight(&p, now, "topic:sports").unwrap(), want, "sum of three");
    }
    assert_eq!(p.feature_count(), 1, "case and spacing variants are one feature");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn out_of_order_events_fold_as_if_in_order() {
    let hl = 500.0;
    let times = [4000, 1000, 2500, 6000, 3000];
    let mut shuffled = profile(hl);
    for t in times {
        shuffled.record(page(t, &["news"], &["election"])).unwrap();
    }
    let mut sorted_times = times;
    sorted_times.sort();
    let mut ordered = profile(hl);
    for t in sorted_times {
        ordered.record(page(t, &["news"], &["election"])).unwrap();
    }
    let mut single = profile(hl);
    single.record(page(0, &["news"], &[])).unwrap();
    let unit = weight(&single, 0, "topic:news").unwrap();
    assert!(unit > 0.0);
    for now in [6000, 7000, 20_000] {
        let want: f64 = times.iter().map(|t| unit * halving(now - t, hl)).sum();
        let a = weight(&shuffled, now, "topic:news").unwrap();
        let b = weight(&ordered, now, "topic:news").unwrap();
        assert_close(a, want, "out of order vs closed form");
        assert_close(b, want, "in order vs closed form");
        assert_close(weight(&shuffled, now, "kw:election").unwrap(), weight(&ordered, now, "kw:election").unwrap(), "kw");
    }
    // The event log keeps arrival order.
    let logged: Vec<i64> = shuffled.events().map(|e| e.ts).collect();
    assert_eq!(logged, times);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_late_event_older_than_everything_counts_decayed() {
    let hl = 1000.0;
    let mut p = profile(hl);
    p.record(page(10_000, &["a"], &[])).unwrap();
    let unit = weight(&p, 10_000, "topic:a").unwrap();
    p.record(page(8000, &["a"], &[])).unwrap();
    assert_close(weight(&p, 10_000, "topic:a").unwrap(), unit * (1.0 + halving(2000, hl)), "late event");
    // A new feature first seen by an old event is anchored at that event's time.
    p.record(page(9000, &["b"], &[])).unwrap();
    assert_close(weight(&p, 10_000, "topic:b").unwrap(), unit * halving(1000, hl), "old first sighting");
}

// ---------------------------------------------------------------------------------------------
// What each kind moves

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn page_views_raise_topics_and_keywords() {
    let mut p = profile(1e9);
    p.record(page(5, &["Sports", "travel"], &["Running Shoes"])).unwrap();
    let names: Vec<&str> = p.weights_at(5).into_iter().map(|(n, _)| n).collect();
    for n in ["topic:sports", "topic:travel", "kw:running shoes"] {
        assert!(weight(&p, 5, n).unwrap() > 0.0, "{n} in {names:?}");
    }
    assert_eq!(p.feature_count(), 3);
}

const AD_FEATURES: [&str; 4] = ["ad:ad-7", "camp:spring sale", "adv:acme corp", "cat:shoes"];

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn clicks_and_conversions_raise_ad_features_dismissals_lower_them() {
    let now = 1_000_000;
    let record = |kind| {
        let mut p = profile(1e9);
        p.record(ad_event(kind, now, "AD-7")).unwrap();
        p
    };
    let click = record(EventKind::Click);
    let conversion = record(EventKind::Conversion);
    let dismissal = record(EventKind::Dismissal);
    for name in AD_FEATURES {
        let c = weight(&click, now, name).unwrap_or_else(|| panic!("click moves {name}"));
        let v = weight(&conversion, now, name).unwrap_or_else(|| panic!("conversion moves {name}"));
        let d = weight(&dismissal, now, name).unwrap_or_else(|| panic!("dismissal moves {name}"));
        assert!(c > 0.0, "click raises {name}: {c}");
        assert!(v > c, "a conversion says more than a click about {name}: {v} vs {c}");
        assert!(d < 0.0, "dismissal lowers {name}: {d}");
    }
    assert_eq!(click.feature_count(), AD_FEATURES.len());

    // On one profile a dismissal pulls a clicked ad back down.
    let mut p = profile(1e9);
    p.record(ad_event(EventKind::Click, now, "ad-7")).unwrap();
    let before = weight(&p, now, "adv:acme corp").unwrap();
    p.record(ad_event(EventKind::Dismissal, now, "ad-7")).unwrap();
    let after = weight(&p, now, "adv:acme corp").unwrap_or(0.0);
    assert!(after < before, "{after} !< {before}");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn ad_events_without_optional_fields_move_only_the_ad_feature() {
    let mut p = profile(1e9);
    let event = Event::from_json(r#"{"kind":"click","ts":7,"ad_id":"Banner 3"}"#).unwrap();
    p.record(event).unwrap();
    let names: Vec<&str> = p.weights_at(7).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["ad:banner 3"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn impressions_move_nothing_but_are_stored() {
    let mut p = profile(1e9);
    p.record(page(1, &["sports"], &[])).unwrap();
    let before = p.weights_at(10).into_iter().map(|(n, w)| (n.to_string(), w)).collect::<Vec<_>>();
    let impression = ad_event(EventKind::Impression, 10, "ad-7");
    p.record(impression.clone()).unwrap();
    p.record(ad_event(EventKind::Impression, 11, "ad-8")).unwrap();
    let after = p.weights_at(10).into_iter().map(|(n, w)| (n.to_string(), w)).collect::<Vec<_>>();
    assert_eq!(before, after);
    assert_eq!(p.feature_count(), 1);
    assert_eq!(p.events().len(), 3);
    assert_eq!(p.events().nth(1), Some(&impression));
    assert_eq!(p.events().last().unwrap().ad.as_ref().unwrap().ad_id, "ad-8");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn record_refuses_invalid_events_and_changes_nothing() {
    let mut p = profile(1e9);
    p.record(page(1, &["sports"], &[])).unwrap();
    let snapshot = p.clone();
    let bad = [
        page(2, &[], &[]),
        page(-1, &["sports"], &[]),
        page(2, &["bad\u{7}topic"], &[]),
        Event { ad: None, ..ad_event(EventKind::Click, 2, "x") },
        Event { topics: vec!["t".into()], ..ad_event(EventKind::Click, 2, "x") },
    ];
    for event in bad {
        let e = err_of(p.record(event.clone()));
        assert!(matches!(e, HearthError::InvalidEvent(_)), "{event:?}: {e:?}");
    }
    let too_many = page(2, &vec!["t"; MAX_TERMS + 1], &[]);
    assert!(matches!(err_of(p.record(too_many)), HearthError::TooLarge { .. }));
    assert_eq!(p, snapshot);
}

// ---------------------------------------------------------------------------------------------
// Caps, erase

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn event_cap_drops_the_oldest_events() {
    let mut p = Profile::new(config(1e9, 3, 100)).unwrap();
    for ts in 1..=5 {
        p.record(page(ts, &[&format!("t{ts}")], &[])).unwrap();
        assert!(p.events().len() <= 3);
    }
    let kept: Vec<i64> = p.events().map(|e| e.ts).collect();
    assert_eq!(kept, [3, 4, 5]);
    // Dropping events from the log does not forget what they taught.
    assert_eq!(p.feature_count(), 5);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn feature_cap_evicts_the_least_recently_updated() {
    let mut p = Profile::new(config(1e9, 100, 2)).unwrap();
    p.record(page(1, &["a"], &[])).unwrap();
    p.record(page(2, &["b"], &[])).unwrap();
    p.record(page(3, &["a"], &[])).unwrap(); // refreshes a: b is now the oldest
    p.record(page(4, &["c"], &[])).unwrap();
    let mut names: Vec<&str> = p.weights_at(4).into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["topic:a", "topic:c"]);
    p.record(page(5, &["d"], &["e"])).unwrap();
    let mut names: Vec<&str> = p.weights_at(5).into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["kw:e", "topic:d"]);
    assert_eq!(p.feature_count(), 2);
    assert_eq!(p.events().len(), 5);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn feature_eviction_among_equally_old_features_is_deterministic() {
    let survivor = |topics: &[&str]| {
        let mut p = Profile::new(config(1e9, 100, 1)).unwrap();
        p.record(page(1, topics, &[])).unwrap();
        assert_eq!(p.feature_count(), 1);
        p.weights_at(1)[0].0.to_string()
    };
    let a = survivor(&["zeta", "alpha", "mu"]);
    assert_eq!(a, survivor(&["alpha", "mu", "zeta"]));
    assert_eq!(a, survivor(&["mu", "zeta", "alpha"]));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn configs_beyond_the_ceilings_are_refused() {
    let e = err_of(Profile::new(config(1e9, MAX_EVENTS_CEILING + 1, 10)));
    assert!(
        matches!(e, HearthError::TooLarge { found, limit, .. } if found == MAX_EVENTS_CEILING + 1 && limit == MAX_EVENTS_CEILING),
        "{e:?}"
    );
    let e = err_of(Profile::new(config(1e9, 10, MAX_FEATURES_CEILING + 1)));
    assert!(matches!(e, HearthError::TooLarge { found, .. } if found == MAX_FEATURES_CEILING + 1), "{e:?}");
    for hl in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(err_of(Profile::new(config(hl, 10, 10))), HearthError::InvalidProfileConfig(_)), "half-life {hl}");
    }
    assert!(Profile::new(config(1.0, MAX_EVENTS_CEILING, MAX_FEATURES_CEILING)).is_ok());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn erase_forgets_everything_but_the_config() {
    let cfg = config(12_345.0, 50, 60);
    let mut p = Profile::new(cfg.clone()).unwrap();
    p.record(page(1, &["sports"], &["tennis"])).unwrap();
    p.record(ad_event(EventKind::Click, 2, "ad-1")).unwrap();
    assert!(p.feature_count() > 0 && p.events().len() == 2);
    p.erase();
    assert_eq!(p.events().len(), 0);
    assert_eq!(p.feature_count(), 0);
    assert!(p.weights_at(2).is_empty());
    assert_eq!(p.config(), &cfg);
    assert_eq!(p, Profile::new(cfg).unwrap());
    // Still usable afterwards.
    p.record(page(3, &["news"], &[])).unwrap();
    assert_eq!(p.feature_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// The stored document

fn busy_profile() -> Profile {
    let mut p = Profile::new(config(7.0 * 86_400_000.0, 20, 30)).unwrap();
    let t = 1_700_000_000_000;
    p.record(page(t, &["Sports", "日本"], &["running shoes", "café"])).unwrap();
    p.record(ad_event(EventKind::Impression, t + 10, "ad-1")).unwrap();
    p.record(ad_event(EventKind::Click, t + 20, "ad-1")).unwrap();
    p.record(ad_event(EventKind::Dismissal, t + 5, "ad-2")).unwrap();
    p.record(ad_event(EventKind::Conversion, t + 99_999, "ad-1")).unwrap();
    p.record(page(t + 3 * HOUR, &["sports"], &["🔥 deals"])).unwrap();
    p
}

fn edited(p: &Profile, edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&p.to_json()).unwrap();
    edit(&mut v);
    v.to_string()
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn export_import_round_trips() {
    let p = busy_profile();
    let json = p.to_json();
    let back = Profile::from_json(&json).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.to_json(), json, "export is stable");
    let now = 1_700_000_000_000 + 5 * HOUR;
    assert_eq!(back.weights_at(now), p.weights_at(now));
    assert_eq!(back.events().collect::<Vec<_>>(), p.events().collect::<Vec<_>>());
    // An empty profile round-trips too.
    let empty = profile(1.0);
    assert_eq!(Profile::from_json(&empty.to_json()).unwrap(), empty);
    // The document says what it is.
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format"], "hearth-profile");
    assert_eq!(v["version"], VERSION);
}

/// Every f64 must come back bit for bit: weights and the half-life are arbitrary doubles.
/// serde_json reads some doubles 1 ULP off unless its `float_roundtrip` feature is on.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn export_import_is_bit_exact() {
    // serde_json's default float parser reads this one back one ULP low.
    let half_life = 9342.341037497497;
    let mut p = Profile::new(config(half_life, 10, 10)).unwrap();
    p.record(page(0, &["a"], &[])).unwrap();
    p.record(page(1234, &["a"], &[])).unwrap();
    let back = Profile::from_json(&p.to_json()).unwrap();
    assert_eq!(back.config().half_life_ms.to_bits(), half_life.to_bits());
    assert_eq!(back, p);
}

/// Terms of the full allowed length, and ones that grow when lower-cased, are valid on input
/// and must therefore survive a save and load of the profile they were recorded into.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn longest_valid_terms_survive_a_round_trip() {
    let mut p = profile(1e9);
    let long = "s".repeat(MAX_TEXT);
    let dotted = "İ".repeat(MAX_TEXT / 2); // 2 bytes each; lower-cases to 3 bytes each
    p.record(page(1, &[&long, &dotted], &[&long])).unwrap();
    let ad = Event {
        kind: EventKind::Click,
        ts: 2,
        topics: vec![],
        keywords: vec![],
        ad: Some(AdRef {
            ad_id: long.clone(),
            campaign: Some(dotted.clone()),
            advertiser: Some(long.clone()),
            category: Some(long.clone()),
        }),
    };
    p.record(ad).unwrap();
    assert_eq!(p.feature_count(), 7);
    let back = Profile::from_json(&p.to_json()).expect("a profile built from valid events loads back");
    assert_eq!(back, p);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn newer_versions_are_refused_not_misread() {
    let p = busy_profile();
    for v in [VERSION + 1, 99, u32::MAX] {
        let e = err_of(Profile::from_json(&edited(&p, |j| j["version"] = json!(v))));
        assert_eq!(e, HearthError::ProfileVersion { found: v, supported: VERSION });
    }
    let e = err_of(Profile::from_json(&edited(&p, |j| j["version"] = json!(1u64 << 40))));
    assert!(matches!(e, HearthError::ProfileVersion { supported: VERSION, .. }), "{e:?}");
    // No version at all cannot be read either.
    let e = err_of(Profile::from_json(&edited(&p, |j| {
        j.as_object_mut().unwrap().remove("version");
    })));
    assert!(matches!(e, HearthError::ProfileVersion { .. } | HearthError::ProfileCorrupt(_)), "{e:?}");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn documents_that_are_not_profiles_are_corrupt() {
    let p = busy_profile();
    let no_format = edited(&p, |j| {
        j.as_object_mut().unwrap().remove("format");
    });
    let other_format = edited(&p, |j| j["format"] = json!("hearth-model-pack"));
    let numeric_format = edited(&p, |j| j["format"] = json!(1));
    let valid = p.to_json();
    let truncated = valid[..valid.len() / 2].to_string();
    let garbage = [
        "",
        "   ",
        "null",
        "[]",
        "{}",
        "42",
        "\"hearth-profile\"",
        "not json at all",
        "{\"format\":",
        &no_format,
        &other_format,
        &numeric_format,
        &truncated,
    ];
    for g in garbage {
        let e = err_of(Profile::from_json(g));
        assert!(matches!(e, HearthError::ProfileCorrupt(_)), "{g:?}: {e:?}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn stored_profiles_over_their_caps_are_too_large() {
    let p = busy_profile();
    let n = p.events().len();
    let e = err_of(Profile::from_json(&edited(&p, |j| j["config"]["max_events"] = json!(n - 1))));
    assert!(matches!(e, HearthError::TooLarge { found, limit, .. } if found == n && limit == n - 1), "{e:?}");
    let f = p.feature_count();
    let e = err_of(Profile::from_json(&edited(&p, |j| j["config"]["max_features"] = json!(f - 2))));
    assert!(matches!(e, HearthError::TooLarge { found, limit, .. } if found == f && limit == f - 2), "{e:?}");
    let e = err_of(Profile::from_json(&edited(&p, |j| j["config"]["max_events"] = json!(MAX_EVENTS_CEILING + 1))));
    assert!(matches!(e, HearthError::TooLarge { .. }), "{e:?}");
    // Exactly at the caps is fine.
    let at_caps = edited(&p, |j| {
        j["config"]["max_events"] = json!(n);
        j["config"]["max_features"] = json!(f);
    });
    assert_eq!(Profile::from_json(&at_caps).unwrap().events().len(), n);
}

/// Replaces the weight of one stored feature with raw JSON text (NaN is not a JSON value, so
/// this edits the text itself, as a damaged store would).
fn with_raw_weight(p: &Profile, raw: &str) -> String {
    const MARK: &str = "__raw_weight__";
    let json = edited(p, |j| {
        let name = j["features"].as_object().unwrap().keys().next().unwrap().clone();
        j["features"][name]["w"] = json!(MARK);
    });
    let quoted = format!("\"{MARK}\"");
    assert_eq!(json.matches(&quoted).count(), 1);
    json.replace(&quoted, raw)
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn damaged_contents_are_corrupt() {
    let p = busy_profile();
    assert!(Profile::from_json(&with_raw_weight(&p, "0.25")).is_ok(), "the edit itself is sound");
    for raw in ["NaN", "nan", "Infinity", "-Infinity", "1e999", "null", "\"1\"", "[]"] {
        let e = err_of(Profile::from_json(&with_raw_weight(&p, raw)));
        assert!(matches!(e, HearthError::ProfileCorrupt(_)), "weight {raw}: {e:?}");
    }
    let first_feature = |j: &mut Value| -> String { j["features"].as_object().unwrap().keys().next().unwrap().clone() };
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "negative feature ts",
            Box::new(move |j: &mut Value| {
                let k = first_feature(j);
                j["features"][k]["ts"] = json!(-5);
            }),
        ),
        (
            "control char in name",
            Box::new(|j: &mut Value| {
                j["features"]["topic:bad\u{1}name"] = json!({"w": 1.0, "ts": 1});
            }),
        ),
        (
            "overlong name",
            Box::new(|j: &mut Value| {
                j["features"][format!("kw:{}", "x".repeat(MAX_FEATURE_NAME))] = json!({"w": 1.0, "ts": 1});
            }),
        ),
        (
            "blank name",
            Box::new(|j: &mut Value| {
                j["features"][" "] = json!({"w": 1.0, "ts": 1});
            }),
        ),
        ("unknown top-level field", Box::new(|j: &mut Value| j["extra"] = json!(true))),
        (
            "unknown weight field",
            Box::new(move |j: &mut Value| {
                let k = first_feature(j);
                j["features"][k]["decay"] = json!(1);
            }),
        ),
        ("half-life zero", Box::new(|j: &mut Value| j["config"]["half_life_ms"] = json!(0.0))),
        ("half-life negative", Box::new(|j: &mut Value| j["config"]["half_life_ms"] = json!(-1.0))),
        ("events not a list", Box::new(|j: &mut Value| j["events"] = json!({}))),
        (
            "click without ad",
            Box::new(|j: &mut Value| {
                j["events"].as_array_mut().unwrap().push(json!({"kind": "click", "ts": 5}));
            }),
        ),
        (
            "unknown event kind",
            Box::new(|j: &mut Value| {
                j["events"].as_array_mut().unwrap().push(json!({"kind": "purchase", "ts": 5, "ad_id": "x"}));
            }),
        ),
        ("negative event ts", Box::new(|j: &mut Value| j["events"][0]["ts"] = json!(-1))),
        (
            "missing features",
            Box::new(|j: &mut Value| {
                j.as_object_mut().unwrap().remove("features");
            }),
        ),
    ];
    for (what, edit) in edits {
        let e = err_of(Profile::from_json(&edited(&p, |j| edit(j))));
        assert!(matches!(e, HearthError::ProfileCorrupt(_)), "{what}: {e:?}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn load_or_reset_keeps_good_profiles_and_explains_dropped_ones() {
    let p = busy_profile();
    let fresh_cfg = config(1000.0, 10, 10);
    let (loaded, reason) = Profile::load_or_reset(&p.to_json(), fresh_cfg.clone()).unwrap();
    assert_eq!(loaded, p, "a good profile keeps its own config and contents");
    assert_eq!(reason, None);

    let fresh = Profile::new(fresh_cfg.clone()).unwrap();
    let (loaded, reason) = Profile::load_or_reset("{broken", fresh_cfg.clone()).unwrap();
    assert_eq!(loaded, fresh);
    assert!(matches!(reason, Some(HearthError::ProfileCorrupt(_))), "{reason:?}");

    let newer = edited(&p, |j| j["version"] = json!(VERSION + 1));
    let (loaded, reason) = Profile::load_or_reset(&newer, fresh_cfg.clone()).unwrap();
    assert_eq!(loaded, fresh);
    assert_eq!(reason, Some(HearthError::ProfileVersion { found: VERSION + 1, supported: VERSION }));

    let too_big = edited(&p, |j| j["config"]["max_events"] = json!(1));
    let (loaded, reason) = Profile::load_or_reset(&too_big, fresh_cfg).unwrap();
    assert_eq!(loaded, fresh);
    assert!(matches!(reason, Some(HearthError::TooLarge { .. })), "{reason:?}");

    // A fresh profile needs a valid config of its own.
    let e = err_of(Profile::load_or_reset("", config(0.0, 1, 1)));
    assert!(matches!(e, HearthError::InvalidProfileConfig(_)), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Dismissals and slots: kept beside the event log, upgraded from version 1

/// An ad event on ad `id` of campaign `campaign`.
fn campaign_event(kind: EventKind, ts: i64, id: &str, campaign: &str) -> Event {
    let ad = Ad { id: id.into(), campaign: Some(campaign.into()), advertiser: None, category: None, features: vec![] };
    common::ad_event(kind, ts, &ad)
}

fn dismissed_ads(p: &Profile) -> Vec<&str> {
    p.dismissed().ads().collect()
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn dismissals_outlive_the_event_log_and_erase_clears_them() {
    let mut p = Profile::new(config(1e9, 3, 100)).unwrap();
    p.record(campaign_event(EventKind::Dismissal, 1, "ad-1", "spring")).unwrap();
    assert!(p.dismissed().campaigns().next().is_none(), "one dismissal does not rule out a campaign");
    p.record(campaign_event(EventKind::Dismissal, 2, "ad-2", "spring")).unwrap();
    p.record(campaign_event(EventKind::Click, 3, "ad-3", "autumn")).unwrap();
    p.record(campaign_event(EventKind::Impression, 4, "ad-4", "winter")).unwrap();
    for ts in 5..20 {
        p.record(page(ts, &["news"], &[])).unwrap();
    }
    assert!(p.events().all(|e| e.kind == EventKind::PageView), "the dismissal events were dropped from the log");
    assert_eq!(dismissed_ads(&p), ["ad-1", "ad-2"]);
    assert_eq!(p.dismissed().campaigns().collect::<Vec<_>>(), ["spring"]);
    let back = Profile::from_json(&p.to_json()).unwrap();
    assert_eq!(back, p, "they are stored with the profile");
    p.note_shown("sidebar", "ad-3").unwrap();
    p.erase();
    assert_eq!(dismissed_ads(&p), Vec::<&str>::new());
    assert_eq!(p.dismissed().campaign_counts().count(), 0);
    assert_eq!(p.last_shown("sidebar"), None);
    assert_eq!(p, Profile::new(config(1e9, 3, 100)).unwrap());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn dismissal_lists_are_bounded_and_drop_the_oldest() {
    let mut p = profile(1e9);
    for i in 0..MAX_DISMISSED_ADS + 5 {
        p.record(campaign_event(
            EventKind::Dismissal,
            i as i64,
            &format!("ad-{i}"),
            &format!("c-{}", i % (MAX_DISMISSED_CAMPAIGNS + 3)),
        ))
        .unwrap();
    }
    let ads = dismissed_ads(&p);
    assert_eq!(ads.len(), MAX_DISMISSED_ADS);
    assert_eq!(ads[0], "ad-5", "the five dismissed first are forgotten");
    assert_eq!(*ads.last().unwrap(), format!("ad-{}", MAX_DISMISSED_ADS + 4));
    assert_eq!(p.dismissed().campaign_counts().count(), MAX_DISMISSED_CAMPAIGNS);
    // Dismissing an ad again makes it the most recent, not a second entry.
    p.record(campaign_event(EventKind::Dismissal, 1 << 40, "ad-5", "c-0")).unwrap();
    assert_eq!(dismissed_ads(&p).iter().filter(|a| **a == "ad-5").count(), 1);
    assert_eq!(*dismissed_ads(&p).last().unwrap(), "ad-5");
    assert_eq!(Profile::from_json(&p.to_json()).unwrap(), p);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn slots_remember_their_last_ad_within_a_bound() {
    let mut p = profile(1e9);
    p.note_shown("sidebar", "ad-1").unwrap();
    p.note_shown("sidebar", "ad-2").unwrap();
    assert_eq!(p.last_shown("sidebar"), Some("ad-2"));
    assert_eq!(p.last_shown("footer"), None);
    for i in 0..MAX_SLOTS {
        p.note_shown(&format!("slot-{i}"), "ad-9").unwrap();
    }
    assert_eq!(p.last_shown("sidebar"), None, "the slot updated longest ago is forgotten");
    assert_eq!(p.last_shown(&format!("slot-{}", MAX_SLOTS - 1)), Some("ad-9"));
    assert_eq!(Profile::from_json(&p.to_json()).unwrap(), p);
    let before = p.clone();
    for (slot, ad) in [("", "ad-1"), ("sidebar", " "), ("side\u{7}bar", "ad-1"), ("sidebar", &"x".repeat(MAX_TEXT + 1))] {
        assert!(matches!(p.note_shown(slot, ad), Err(HearthError::InvalidEvent(_))), "{slot:?} {ad:?}");
    }
    assert_eq!(p, before, "a refused slot changes nothing");
}

/// `p` as version 1 wrote it: no dismissal lists, no slots.
fn as_version_1(p: &Profile) -> String {
    edited(p, |j| {
        let doc = j.as_object_mut().unwrap();
        doc.remove("dismissed");
        doc.remove("last_shown");
        doc["version"] = json!(1);
    })
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn version_1_documents_are_upgraded_with_their_dismissals() {
    let mut p = busy_profile();
    p.record(ad_event(EventKind::Dismissal, 1_700_000_000_000 + 6 * HOUR, "ad-3")).unwrap();
    let v1 = as_version_1(&p);
    let upgraded = Profile::from_json(&v1).unwrap();
    assert_eq!(dismissed_ads(&upgraded), ["ad-2", "ad-3"]);
    assert_eq!(upgraded.dismissed().campaigns().collect::<Vec<_>>(), ["Spring Sale"], "two dismissals in one campaign");
    assert_eq!(upgraded, p, "nothing else changes");
    let v: Value = serde_json::from_str(&upgraded.to_json()).unwrap();
    assert_eq!(v["version"], 2, "it is written back as the current version");
    // Slots noted since version 2 were unknown to version 1: none after the upgrade.
    p.note_shown("sidebar", "ad-1").unwrap();
    assert_eq!(Profile::from_json(&as_version_1(&p)).unwrap().last_shown("sidebar"), None);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn damaged_version_1_and_dismissal_lists_are_refused() {
    let p = busy_profile();
    let v1 = |edit: &dyn Fn(&mut Value)| {
        let mut j: Value = serde_json::from_str(&as_version_1(&p)).unwrap();
        edit(&mut j);
        Profile::from_json(&j.to_string())
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    let corrupt_v1: Vec<(&str, Edit)> = vec![
        ("events missing", Box::new(|j: &mut Value| drop(j.as_object_mut().unwrap().remove("events")))),
        ("events not a list", Box::new(|j: &mut Value| j["events"] = json!("x"))),
        (
            "dismissal without ad",
            Box::new(|j: &mut Value| j["events"].as_array_mut().unwrap().push(json!({"kind": "dismissal", "ts": 1}))),
        ),
        ("unknown field in a v1 document", Box::new(|j: &mut Value| j["extra"] = json!([]))),
        ("v2 fields in a v1 document", Box::new(|j: &mut Value| j["last_shown"] = json!([]))),
    ];
    for (what, edit) in corrupt_v1 {
        let e = err_of(v1(&*edit));
        assert!(matches!(e, HearthError::ProfileCorrupt(_)), "{what}: {e:?}");
    }
    for version in [0, 3] {
        let e = err_of(v1(&|j: &mut Value| j["version"] = json!(version)));
        assert_eq!(e, HearthError::ProfileVersion { found: version, supported: VERSION });
    }
    let corrupt_v2: Vec<(&str, Edit)> = vec![
        ("dismissed missing", Box::new(|j: &mut Value| drop(j.as_object_mut().unwrap().remove("dismissed")))),
        ("last_shown missing", Box::new(|j: &mut Value| drop(j.as_object_mut().unwrap().remove("last_shown")))),
        ("ad listed twice", Box::new(|j: &mut Value| j["dismissed"]["ads"] = json!(["a", "a"]))),
        ("blank ad", Box::new(|j: &mut Value| j["dismissed"]["ads"] = json!([" "]))),
        (
            "campaign with no dismissals",
            Box::new(|j: &mut Value| j["dismissed"]["campaigns"] = json!([{"campaign": "c", "count": 0}])),
        ),
        (
            "campaign listed twice",
            Box::new(|j: &mut Value| {
                j["dismissed"]["campaigns"] = json!([{"campaign": "c", "count": 1}, {"campaign": "c", "count": 2}])
            }),
        ),
        ("negative count", Box::new(|j: &mut Value| j["dismissed"]["campaigns"] = json!([{"campaign": "c", "count": -1}]))),
        (
            "slot listed twice",
            Box::new(|j: &mut Value| j["last_shown"] = json!([{"slot": "s", "ad_id": "a"}, {"slot": "s", "ad_id": "b"}])),
        ),
        ("blank slot ad", Box::new(|j: &mut Value| j["last_shown"] = json!([{"slot": "s", "ad_id": ""}]))),
        ("unknown dismissal field", Box::new(|j: &mut Value| j["dismissed"]["when"] = json!(1))),
    ];
    for (what, edit) in corrupt_v2 {
        let e = err_of(Profile::from_json(&edited(&p, |j| edit(j))));
        assert!(matches!(e, HearthError::ProfileCorrupt(_)), "{what}: {e:?}");
    }
    let many: Vec<String> = (0..=MAX_DISMISSED_ADS).map(|i| format!("ad-{i}")).collect();
    let e = err_of(Profile::from_json(&edited(&p, |j| j["dismissed"]["ads"] = json!(many))));
    assert!(matches!(e, HearthError::TooLarge { found, .. } if found == MAX_DISMISSED_ADS + 1), "{e:?}");
    let slots: Vec<Value> = (0..=MAX_SLOTS).map(|i| json!({"slot": format!("s{i}"), "ad_id": "a"})).collect();
    let e = err_of(Profile::from_json(&edited(&p, |j| j["last_shown"] = json!(slots))));
    assert!(matches!(e, HearthError::TooLarge { found, .. } if found == MAX_SLOTS + 1), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Event::from_json

fn event_err(json: &str) -> HearthError {
    match Event::from_json(json) {
        Ok(e) => panic!("{json} parsed as {e:?}"),
        Err(e) => e,
    }
}

fn is_invalid(json: &str) {
    let e = event_err(json);
    assert!(matches!(e, HearthError::InvalidEvent(_)), "{json}: {e:?}");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn valid_events_parse() {
    let e = Event::from_json(r#"{"kind":"page_view","ts":1700000000123,"topics":["Sports"],"keywords":["tennis"]}"#).unwrap();
    assert_eq!(e, page(1_700_000_000_123, &["Sports"], &["tennis"]));
    let e = Event::from_json(
        r#"{"kind":"click","ts":0,"ad_id":"AD-7","campaign":"Spring Sale","advertiser":"Acme Corp","category":"Shoes"}"#,
    )
    .unwrap();
    assert_eq!(e, ad_event(EventKind::Click, 0, "AD-7"));
    for (kind, k) in [
        ("impression", EventKind::Impression),
        ("click", EventKind::Click),
        ("conversion", EventKind::Conversion),
        ("dismissal", EventKind::Dismissal),
    ] {
        let e = Event::from_json(&format!(r#"{{"kind":"{kind}","ts":5,"ad_id":"a"}}"#)).unwrap();
        assert_eq!((e.kind, e.ts, e.ad.unwrap().ad_id), (k, 5, "a".to_string()));
    }
    // Only keywords is enough for a page view.
    assert!(Event::from_json(r#"{"kind":"page_view","ts":1,"keywords":["x"]}"#).is_ok());
    // What serialises parses back to the same event.
    for ev in [page(3, &["a", "b"], &["c"]), ad_event(EventKind::Dismissal, 9, "z")] {
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(Event::from_json(&json).unwrap(), ev, "{json}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn unknown_kinds_are_typed_errors() {
    for kind in ["purchase", "Click", "PAGE_VIEW", "", "page-view"] {
        let e = event_err(&format!(r#"{{"kind":"{kind}","ts":1,"ad_id":"a"}}"#));
        assert_eq!(e, HearthError::UnknownEventKind(kind.to_string()));
    }
    is_invalid(r#"{"kind":7,"ts":1,"ad_id":"a"}"#);
    is_invalid(r#"{"ts":1,"ad_id":"a"}"#);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn ad_events_need_an_ad_and_page_views_must_not_have_one() {
    for kind in ["click", "impression", "conversion", "dismissal"] {
        is_invalid(&format!(r#"{{"kind":"{kind}","ts":1}}"#));
        is_invalid(&format!(r#"{{"kind":"{kind}","ts":1,"advertiser":"acme"}}"#));
        is_invalid(&format!(r#"{{"kind":"{kind}","ts":1,"ad_id":null}}"#));
        is_invalid(&format!(r#"{{"kind":"{kind}","ts":1,"ad_id":"a","topics":["t"]}}"#));
        is_invalid(&format!(r#"{{"kind":"{kind}","ts":1,"ad_id":"a","keywords":["k"]}}"#));
    }
    is_invalid(r#"{"kind":"page_view","ts":1,"topics":["t"],"ad_id":"a"}"#);
    is_invalid(r#"{"kind":"page_view","ts":1,"topics":["t"],"category":"c"}"#);
    is_invalid(r#"{"kind":"page_view","ts":1}"#);
    is_invalid(r#"{"kind":"page_view","ts":1,"topics":[],"keywords":[]}"#);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn timestamps_are_non_negative_integer_milliseconds() {
    for ts in ["1.5", "-1", "-0.5", "\"1700000000000\"", "null", "true", "1e300", "[1]"] {
        is_invalid(&format!(r#"{{"kind":"click","ts":{ts},"ad_id":"a"}}"#));
    }
    is_invalid(r#"{"kind":"click","ad_id":"a"}"#);
    for ts in [0i64, 1, 1_700_000_000_000, 4_102_444_800_000] {
        let e = Event::from_json(&format!(r#"{{"kind":"click","ts":{ts},"ad_id":"a"}}"#)).unwrap();
        assert_eq!(e.ts, ts);
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn term_lists_are_bounded() {
    let terms = |n: usize| serde_json::to_string(&(0..n).map(|i| format!("t{i}")).collect::<Vec<_>>()).unwrap();
    let ok = Event::from_json(&format!(r#"{{"kind":"page_view","ts":1,"topics":{}}}"#, terms(MAX_TERMS))).unwrap();
    assert_eq!(ok.topics.len(), MAX_TERMS);
    for field in ["topics", "keywords"] {
        let e = event_err(&format!(r#"{{"kind":"page_view","ts":1,"{field}":{}}}"#, terms(MAX_TERMS + 1)));
        assert!(
            matches!(e, HearthError::TooLarge { found, limit, .. } if found == MAX_TERMS + 1 && limit == MAX_TERMS),
            "{field}: {e:?}"
        );
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn texts_are_non_blank_bounded_and_free_of_control_characters() {
    let page_with = |t: &str| format!(r#"{{"kind":"page_view","ts":1,"topics":[{}]}}"#, Value::String(t.into()));
    for bad in ["", "   ", "a\u{0}b", "line\nbreak", "tab\there", "bell\u{7}", "del\u{7f}", "c1\u{85}", &"x".repeat(MAX_TEXT + 1)]
    {
        is_invalid(&page_with(bad));
        is_invalid(&format!(r#"{{"kind":"page_view","ts":1,"keywords":[{}]}}"#, Value::String(bad.into())));
        for field in ["ad_id", "campaign", "advertiser", "category"] {
            let mut ev = json!({"kind": "click", "ts": 1, "ad_id": "ok"});
            ev[field] = Value::String(bad.into());
            is_invalid(&ev.to_string());
        }
    }
    // The limit is in bytes, and exactly the limit is fine.
    assert!(Event::from_json(&page_with(&"x".repeat(MAX_TEXT))).is_ok());
    assert!(Event::from_json(&page_with(&"é".repeat(MAX_TEXT / 2))).is_ok());
    is_invalid(&page_with(&"é".repeat(MAX_TEXT / 2 + 1)));
    assert!(Event::from_json(&page_with("日本 ニュース")).is_ok());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn unknown_fields_and_malformed_json_are_refused() {
    is_invalid(r#"{"kind":"click","ts":1,"ad_id":"a","price":3}"#);
    is_invalid(r#"{"kind":"page_view","ts":1,"topics":["t"],"Topics":["t"]}"#);
    is_invalid(r#"{"kind":"page_view","ts":1,"topics":["t"],"ad":{"ad_id":"a"}}"#);
    is_invalid(r#"{"kind":"page_view","ts":1,"topics":"sports"}"#);
    is_invalid(r#"{"kind":"page_view","ts":1,"topics":[1]}"#);
    for garbage in ["", "null", "[]", "{}", "{\"kind\":\"click\"", "click", "{\"kind\":\"click\",\"ts\":1,\"ad_id\":\"a\"} x"] {
        is_invalid(garbage);
    }
}
