//! Decoders under hostile input: events, stored profiles, manifests and model packs, fed
//! arbitrary text and bytes and damaged copies of valid documents, never panic, refuse what is
//! invalid with an error, and whatever they do accept is internally consistent. Valid profiles
//! survive a save and load. Native only: proptest does not run in the browser.
#![cfg(not(target_arch = "wasm32"))]

use hearth_core::HearthError;
use hearth_core::device::event::{AdRef, Event, EventKind, check_text};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::model::features::{FeatureSpec, HASH_NAME};
use hearth_core::model::pack::{FORMAT, FORMAT_VERSION, Manifest, ModelPack, sha256_hex};
use hearth_core::model::params::{Arch, Params};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::LazyLock;

fn cases(n: u32) -> ProptestConfig {
    // No regression files: the tests must not write into the source tree.
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Generators of valid inputs

/// A term `check_text` accepts: ASCII up to the full length, or mixed scripts (accents, CJK,
/// emoji, letters that grow when lower-cased).
fn term() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9][a-zA-Z0-9 _.:-]{0,127}", "[a-zA-ZéÉİȺß日本語🔥 \u{3000}]{1,30}",]
        .prop_filter("valid term", |s| check_text(s).is_ok())
}

fn ts() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..100_000, 1_600_000_000_000i64..1_800_000_000_000, Just(9_000_000_000_000_000)]
}

fn page_view() -> impl Strategy<Value = Event> {
    (ts(), vec(term(), 0..4), vec(term(), 0..4))
        .prop_filter("a page view needs a term", |(_, t, k)| !t.is_empty() || !k.is_empty())
        .prop_map(|(ts, topics, keywords)| Event { kind: EventKind::PageView, ts, topics, keywords, ad: None })
}

fn ad_event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        Just(EventKind::Impression),
        Just(EventKind::Click),
        Just(EventKind::Conversion),
        Just(EventKind::Dismissal),
    ];
    (kind, ts(), term(), proptest::option::of(term()), proptest::option::of(term()), proptest::option::of(term())).prop_map(
        |(kind, ts, ad_id, campaign, advertiser, category)| Event {
            kind,
            ts,
            topics: vec![],
            keywords: vec![],
            ad: Some(AdRef { ad_id, campaign, advertiser, category }),
        },
    )
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![page_view(), ad_event()]
}

fn profile_config() -> impl Strategy<Value = ProfileConfig> {
    (prop_oneof![1.0f64..10_000.0, 1e6f64..1e11], 0usize..25, 0usize..25)
        .prop_map(|(half_life_ms, max_events, max_features)| ProfileConfig { half_life_ms, max_events, max_features })
}

fn build_profile(config: ProfileConfig, events: &[Event]) -> Profile {
    let mut p = Profile::new(config).expect("generated config is valid");
    for e in events {
        p.record(e.clone()).expect("generated event is valid");
    }
    p
}

fn valid_profile() -> impl Strategy<Value = Profile> {
    (profile_config(), vec(event(), 0..20)).prop_map(|(c, events)| build_profile(c, &events))
}

// ---------------------------------------------------------------------------------------------
// Damage

/// Some bytes xor-ed with a non-zero mask: every flip changes the input.
fn flips() -> impl Strategy<Value = Vec<(Index, u8)>> {
    vec((any::<Index>(), 1u8..=255), 1..5)
}

fn flipped(bytes: &[u8], flips: &[(Index, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (i, mask) in flips {
        out[i.index(bytes.len())] ^= mask;
    }
    out
}

/// A strict prefix.
fn truncated(bytes: &[u8], at: &Index) -> Vec<u8> {
    bytes[..at.index(bytes.len())].to_vec()
}

/// A range replaced by arbitrary bytes.
fn spliced(bytes: &[u8], at: &Index, cut: usize, insert: &[u8]) -> Vec<u8> {
    let start = at.index(bytes.len());
    let end = (start + cut).min(bytes.len());
    let mut out = bytes[..start].to_vec();
    out.extend_from_slice(insert);
    out.extend_from_slice(&bytes[end..]);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Each decoder answers with its own error kinds only.
fn event_error(e: &HearthError) -> bool {
    matches!(e, HearthError::InvalidEvent(_) | HearthError::UnknownEventKind(_) | HearthError::TooLarge { .. })
}

fn profile_error(e: &HearthError) -> bool {
    matches!(e, HearthError::ProfileCorrupt(_) | HearthError::ProfileVersion { .. } | HearthError::TooLarge { .. })
}

fn pack_error(e: &HearthError) -> bool {
    matches!(
        e,
        HearthError::Manifest(_)
            | HearthError::HashMismatch { .. }
            | HearthError::OnnxDecode(_)
            | HearthError::Graph(_)
            | HearthError::Shape { .. }
            | HearthError::NonFinite { .. }
    )
}

/// Decodes an event, checking whatever comes back.
fn decode_event(s: &str) -> Option<Event> {
    match Event::from_json(s) {
        Ok(e) => {
            check_accepted_event(&e);
            Some(e)
        }
        Err(e) => {
            assert!(event_error(&e), "event decoder answered {e:?}");
            None
        }
    }
}

/// Decodes a stored profile, checking whatever comes back.
fn decode_profile(s: &str) -> Option<Profile> {
    match Profile::from_json(s) {
        Ok(p) => {
            check_accepted_profile(&p);
            Some(p)
        }
        Err(e) => {
            assert!(profile_error(&e), "profile decoder answered {e:?}");
            None
        }
    }
}

/// JSON-shaped soup from the event vocabulary, to get past the outermost syntax checks.
fn event_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just(","),
        Just(":"),
        Just("\"kind\""),
        Just("\"ts\""),
        Just("\"ad_id\""),
        Just("\"topics\""),
        Just("\"keywords\""),
        Just("\"campaign\""),
        Just("\"advertiser\""),
        Just("\"category\""),
        Just("\"extra\""),
        Just("\"click\""),
        Just("\"page_view\""),
        Just("\"impression\""),
        Just("\"dismissal\""),
        Just("\"conversion\""),
        Just("\"sports\""),
        Just("\"\""),
        Just("\" \""),
        Just("\"a\\u0000b\""),
        Just("0"),
        Just("-1"),
        Just("1.5"),
        Just("1e20"),
        Just("9007199254740993"),
        Just("null"),
        Just("true"),
    ];
    vec(token, 0..24).prop_map(|t| t.concat())
}

/// What every accepted event must satisfy.
fn check_accepted_event(e: &Event) {
    assert_eq!(e.validate(), Ok(()), "accepted event is invalid: {e:?}");
    let json = serde_json::to_string(e).unwrap();
    assert_eq!(Event::from_json(&json).as_ref(), Ok(e), "accepted event does not round-trip: {json}");
}

/// Two JSON documents with the same structure, strings and integers, and floats equal to a
/// few units in the last place. serde_json, built without its `float_roundtrip` feature (as the
/// workspace has it), may read a float back 1-2 ULP off; see `profile.rs`,
/// `export_import_is_bit_exact`.
fn same_document(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= 1e-15 * x.abs().max(y.abs()) { Ok(()) } else { Err(format!("{path}: {x} vs {y}")) }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().try_for_each(|(i, (x, y))| same_document(x, y, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => x.iter().try_for_each(|(k, v)| match y.get(k) {
            Some(w) => same_document(v, w, &format!("{path}.{k}")),
            None => Err(format!("{path}.{k} missing")),
        }),
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}

/// A profile read back from `p`'s export: the same events, features and caps, and (up to
/// the parser's float rounding) the same weights.
fn assert_same_profile(p: &Profile, q: &Profile) {
    assert_eq!(p.config().max_events, q.config().max_events);
    assert_eq!(p.config().max_features, q.config().max_features);
    assert!(p.events().eq(q.events()), "events differ");
    assert_eq!(p.feature_count(), q.feature_count());
    let (a, b) = (p.to_json(), q.to_json());
    let (a, b): (Value, Value) = (serde_json::from_str(&a).unwrap(), serde_json::from_str(&b).unwrap());
    if let Err(e) = same_document(&a, &b, "$") {
        panic!("profile changed on a round trip: {e}");
    }
}

/// What every accepted profile must satisfy.
fn check_accepted_profile(p: &Profile) {
    assert!(p.events().len() <= p.config().max_events);
    assert!(p.feature_count() <= p.config().max_features);
    let back = Profile::from_json(&p.to_json()).expect("an accepted profile loads again");
    assert_same_profile(p, &back);
}

// ---------------------------------------------------------------------------------------------
// Events

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn valid_events_round_trip(e in event()) {
        check_accepted_event(&e);
    }

    #[test]
    fn event_decoder_refuses_arbitrary_text(s in any::<String>()) {
        prop_assert!(decode_event(&s).is_none());
    }

    #[test]
    fn event_decoder_survives_arbitrary_bytes(b in vec(any::<u8>(), 0..200)) {
        // Arbitrary bytes are not an event (a valid one needs at least `{"kind":…,"ts":…}`
        // in order, which random bytes essentially never spell).
        prop_assert!(decode_event(&text(&b)).is_none());
    }

    #[test]
    fn event_decoder_survives_json_soup(s in event_soup()) {
        decode_event(&s);
    }

    #[test]
    fn truncated_events_are_refused(e in event(), at in any::<Index>()) {
        let json = serde_json::to_string(&e).unwrap();
        let cut = text(&truncated(json.as_bytes(), &at));
        let err = Event::from_json(&cut).expect_err("a strict prefix of an event is not an event");
        prop_assert!(matches!(err, HearthError::InvalidEvent(_)), "{err:?}");
    }

    #[test]
    fn flipped_events_never_panic(e in event(), f in flips()) {
        let json = serde_json::to_string(&e).unwrap();
        decode_event(&text(&flipped(json.as_bytes(), &f)));
    }
}

// ---------------------------------------------------------------------------------------------
// Profiles

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn valid_profiles_round_trip(p in valid_profile()) {
        check_accepted_profile(&p);
        let (loaded, reason) = Profile::load_or_reset(&p.to_json(), ProfileConfig::default()).unwrap();
        prop_assert_eq!(reason, None);
        assert_same_profile(&p, &loaded);
    }

    #[test]
    fn folding_does_not_depend_on_arrival_order(
        events in vec(event(), 1..15).prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle())),
        half_life_ms in 1e3f64..1e10,
    ) {
        let config = ProfileConfig { half_life_ms, max_events: 100, max_features: 1000 };
        let (events, shuffled) = events;
        let a = build_profile(config.clone(), &events);
        let b = build_profile(config, &shuffled);
        let now = events.iter().map(|e| e.ts).max().unwrap();
        let wa: HashMap<&str, f64> = a.weights_at(now).into_iter().collect();
        let wb: HashMap<&str, f64> = b.weights_at(now).into_iter().collect();
        prop_assert_eq!(a.feature_count(), b.feature_count());
        // Contributions of +/-4 at most per event: rounding is relative to that scale.
        let tol = 1e-9 * (4 * events.len()) as f64;
        for name in wa.keys().chain(wb.keys()) {
            let (x, y) = (wa.get(name).copied().unwrap_or(0.0), wb.get(name).copied().unwrap_or(0.0));
            prop_assert!((x - y).abs() <= tol, "{}: {} vs {}", name, x, y);
        }
    }

    #[test]
    fn profile_decoder_refuses_arbitrary_text(s in any::<String>()) {
        let err = Profile::from_json(&s).expect_err("random text is not a profile");
        prop_assert!(matches!(err, HearthError::ProfileCorrupt(_)), "{err:?}");
    }

    #[test]
    fn profile_decoder_refuses_arbitrary_bytes(b in vec(any::<u8>(), 0..300)) {
        prop_assert!(decode_profile(&text(&b)).is_none());
    }

    #[test]
    fn truncated_profiles_are_refused(p in valid_profile(), at in any::<Index>()) {
        let json = p.to_json();
        prop_assert!(decode_profile(&text(&truncated(json.as_bytes(), &at))).is_none());
        let (fresh, reason) = Profile::load_or_reset(&text(&truncated(json.as_bytes(), &at)), p.config().clone()).unwrap();
        prop_assert_eq!(fresh, Profile::new(p.config().clone()).unwrap());
        prop_assert!(reason.is_some());
    }

    #[test]
    fn damaged_profiles_never_panic(p in valid_profile(), f in flips(), at in any::<Index>(), cut in 0usize..8, insert in vec(any::<u8>(), 0..8)) {
        let json = p.to_json();
        for damaged in [flipped(json.as_bytes(), &f), spliced(json.as_bytes(), &at, cut, &insert)] {
            decode_profile(&text(&damaged));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests and packs

const ARCH: Arch = Arch { buckets: 64, dim: 4, hidden: 4 };

struct Pack {
    params: Params,
    onnx: Vec<u8>,
    manifest: String,
}

static PACK: LazyLock<Pack> = LazyLock::new(|| {
    let params = Params::init(ARCH, 77);
    let spec = FeatureSpec { hash: HASH_NAME.into(), seed: 5, buckets: 64, user_slots: 4, context_slots: 3, ad_slots: 2 };
    let (onnx, manifest) = ModelPack::write(&params, &spec, 1);
    let pack = ModelPack::load(&onnx, &manifest).expect("the pristine pack loads");
    assert_eq!(pack.params, params);
    Pack { params, onnx, manifest }
});

/// The pristine manifest, declaring `onnx`'s hash so the decoder, not the hash check, judges it.
fn manifest_for(onnx: &[u8]) -> String {
    let mut m: Value = serde_json::from_str(&PACK.manifest).unwrap();
    m["onnx_sha256"] = Value::String(sha256_hex(onnx));
    m.to_string()
}

/// What every accepted pack must satisfy.
fn check_accepted_pack(pack: &ModelPack) {
    assert_eq!(pack.params.arch, ARCH);
    assert_eq!(pack.params.values.len(), PACK.params.values.len());
    assert!(pack.params.values.iter().all(|v| v.is_finite()));
    assert_eq!(pack.params.layout, ARCH.layout());
}

/// Loads damaged ONNX under a manifest that declares its hash: any refusal must come from
/// decoding and checking the model, never from the hash.
fn load_rehashed(onnx: &[u8]) -> Result<ModelPack, HearthError> {
    let result = ModelPack::load(onnx, &manifest_for(onnx));
    if let Err(e) = &result {
        assert!(pack_error(e), "pack loader answered {e:?}");
        assert!(!matches!(e, HearthError::HashMismatch { .. } | HearthError::Manifest(_)), "{e:?}");
    }
    result
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn manifest_decoder_refuses_arbitrary_text(s in any::<String>()) {
        let err = Manifest::from_json(&s).expect_err("random text is not a manifest");
        prop_assert!(matches!(err, HearthError::Manifest(_)), "{err:?}");
        let loaded = ModelPack::load(&PACK.onnx, &s).map(|_| ());
        prop_assert!(matches!(&loaded, Err(HearthError::Manifest(_))), "{:?}", loaded);
    }

    #[test]
    fn truncated_manifests_are_refused(at in any::<Index>()) {
        let cut = text(&truncated(PACK.manifest.as_bytes(), &at));
        prop_assert!(matches!(Manifest::from_json(&cut), Err(HearthError::Manifest(_))));
        prop_assert!(ModelPack::load(&PACK.onnx, &cut).is_err());
    }

    #[test]
    fn damaged_manifests_never_panic(f in flips(), at in any::<Index>(), cut in 0usize..8, insert in vec(any::<u8>(), 0..8)) {
        let original = Manifest::from_json(&PACK.manifest).unwrap();
        for damaged in [flipped(PACK.manifest.as_bytes(), &f), spliced(PACK.manifest.as_bytes(), &at, cut, &insert)] {
            let damaged = text(&damaged);
            if let Ok(m) = Manifest::from_json(&damaged) {
                // Accepted: it is a well-formed manifest that re-reads as itself.
                prop_assert_eq!(&m.format, FORMAT);
                prop_assert_eq!(m.format_version, FORMAT_VERSION);
                prop_assert_eq!(&m.parameters, &m.arch().layout());
                let again = serde_json::to_string(&m).unwrap();
                prop_assert_eq!(Manifest::from_json(&again), Ok(m.clone()));
            }
            let loaded = ModelPack::load(&PACK.onnx, &damaged);
            if let Err(e) = &loaded {
                prop_assert!(pack_error(e), "{:?}", e);
            }
            if let Ok(pack) = loaded {
                // Whatever edit passed, the shapes and the hash still hold: the same parameters.
                prop_assert_eq!(&pack.params, &PACK.params);
                prop_assert_eq!(pack.manifest.arch(), original.arch());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_not_a_model(b in vec(any::<u8>(), 0..512)) {
        // Under the pristine manifest the hash check refuses them ...
        let err = ModelPack::load(&b, &PACK.manifest).expect_err("random bytes are not the pack's model");
        prop_assert!(matches!(err, HearthError::HashMismatch { .. }), "{err:?}");
        // ... and under a manifest declaring their hash, the decoder does.
        prop_assert!(load_rehashed(&b).is_err());
    }

    #[test]
    fn truncated_models_are_refused_or_intact(at in any::<Index>()) {
        let cut = truncated(&PACK.onnx, &at);
        let under_old_hash = ModelPack::load(&cut, &PACK.manifest).map(|_| ());
        prop_assert!(matches!(under_old_hash, Err(HearthError::HashMismatch { .. })), "{:?}", under_old_hash);
        // A cut can only decode if it falls between top-level fields after the graph, which
        // leaves every parameter intact.
        if let Ok(pack) = load_rehashed(&cut) {
            prop_assert_eq!(&pack.params, &PACK.params);
        }
    }

    #[test]
    fn flipped_models_never_panic(f in flips()) {
        let bad = flipped(&PACK.onnx, &f);
        let under_old_hash = ModelPack::load(&bad, &PACK.manifest).map(|_| ());
        prop_assert!(matches!(under_old_hash, Err(HearthError::HashMismatch { .. })), "{:?}", under_old_hash);
        if let Ok(pack) = load_rehashed(&bad) {
            check_accepted_pack(&pack);
        }
    }

    #[test]
    fn spliced_models_never_panic(at in any::<Index>(), cut in 0usize..16, insert in vec(any::<u8>(), 0..16)) {
        let bad = spliced(&PACK.onnx, &at, cut, &insert);
        if let Ok(pack) = load_rehashed(&bad) {
            check_accepted_pack(&pack);
        }
    }
}

/// The damage above must reach past the protobuf layer, into the checks on the graph and the
/// parameters; otherwise the properties would only be testing prost.
#[test]
fn damage_reaches_the_graph_checks() {
    let onnx = &PACK.onnx;
    let mut kinds = std::collections::HashSet::new();
    // Every third byte, inverted: enough to hit tags, lengths, dims and names.
    for i in (0..onnx.len()).step_by(3) {
        let mut bad = onnx.clone();
        bad[i] ^= 0xff;
        match load_rehashed(&bad) {
            Ok(pack) => check_accepted_pack(&pack),
            Err(e) => {
                kinds.insert(std::mem::discriminant(&e));
            }
        }
    }
    let decode = std::mem::discriminant(&HearthError::OnnxDecode(String::new()));
    let graph = std::mem::discriminant(&HearthError::Graph(String::new()));
    let shape = std::mem::discriminant(&HearthError::Shape { name: String::new(), expected: vec![], found: vec![] });
    for (what, d) in [("OnnxDecode", decode), ("Graph", graph), ("Shape", shape)] {
        assert!(kinds.contains(&d), "no single-byte flip produced a {what} error");
    }
}
