//! Feature hashing: the Rust hash agrees with the independent Python implementation in
//! crates/core/tests/vectors/hash_vectors.py on every committed vector, feature strings are canonical, and
//! `Slots::encode` pads, normalises and truncates as the graph expects.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use hearth_core::model::features::{FeatureSpec, HASH_NAME, PADDING, Slots, bucket, feature, hash64};
use serde::Deserialize;

/// Written by `python3 crates/core/tests/vectors/hash_vectors.py`; regenerate it rather than editing it.
const VECTORS: &str = include_str!("vectors/hash.json");

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    feature: String,
    /// Decimal strings: these do not fit a JSON double.
    seed: String,
    buckets: u32,
    hash: String,
    bucket: u32,
}

fn vectors() -> Vec<(String, u64, u32, u64, u32)> {
    let file: VectorFile = serde_json::from_str(VECTORS).expect("hash.json parses");
    file.vectors
        .into_iter()
        .map(|v| {
            let seed = v.seed.parse::<u64>().expect("seed is a decimal u64");
            let hash = v.hash.parse::<u64>().expect("hash is a decimal u64");
            (v.feature, seed, v.buckets, hash, v.bucket)
        })
        .collect()
}

fn spec(seed: u64, buckets: u32) -> FeatureSpec {
    FeatureSpec { hash: HASH_NAME.into(), seed, buckets, user_slots: 8, context_slots: 4, ad_slots: 4 }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_vector_matches_hash64_and_bucket() {
    let vectors = vectors();
    let mut mismatches = Vec::new();
    for (feature, seed, buckets, hash, expected_bucket) in &vectors {
        let got_hash = hash64(*seed, feature);
        let got_bucket = bucket(*seed, *buckets, feature);
        if got_hash != *hash || got_bucket != *expected_bucket {
            mismatches.push(format!(
                "{feature:?} seed {seed} buckets {buckets}: hash {got_hash} (want {hash}), \
                 bucket {got_bucket} (want {expected_bucket})"
            ));
        }
        assert_eq!(spec(*seed, *buckets).bucket(feature), got_bucket, "FeatureSpec::bucket agrees");
    }
    assert!(mismatches.is_empty(), "{} of {} vectors differ:\n{}", mismatches.len(), vectors.len(), mismatches.join("\n"));
}

/// The vector file must keep covering what it was written to cover; a regenerated file that
/// silently dropped the unicode or the large seeds would make the test above toothless.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn vectors_cover_seeds_buckets_and_text_kinds() {
    let vectors = vectors();
    assert!(vectors.len() >= 50, "only {} vectors", vectors.len());
    for seed in [0, 1, 0x4845_4152_5448, u64::MAX] {
        for buckets in [2, 1000, 16384, 4_194_304] {
            assert!(vectors.iter().any(|v| v.1 == seed && v.2 == buckets), "no vector for seed {seed:#x} with {buckets} buckets");
        }
    }
    let has = |pred: &dyn Fn(&str) -> bool| vectors.iter().any(|v| pred(&v.0));
    assert!(has(&|f| f.is_empty()), "empty feature");
    assert!(has(&|f| f.contains('é')), "Latin-1 accent");
    assert!(has(&|f| f.contains("日本")), "CJK");
    assert!(has(&|f| f.chars().any(|c| c.len_utf8() == 4)), "4-byte UTF-8 (emoji)");
    assert!(has(&|f| f.len() >= 256), "long feature");
    assert!(has(&|f| f.is_ascii() && !f.is_empty()), "plain ASCII");
    // Hashes above 2^53 are the reason they are strings: make sure some are there.
    assert!(vectors.iter().any(|v| v.3 > 1 << 53));
    for (f, _, buckets, _, b) in &vectors {
        assert!((1..*buckets).contains(b), "vector bucket {b} for {f:?} outside 1..{buckets}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn seed_and_every_byte_matter() {
    let base = hash64(7, "topic:sports");
    assert_ne!(base, hash64(8, "topic:sports"), "seed changes the hash");
    assert_ne!(base, hash64(7, "topic:sport"), "length changes the hash");
    assert_ne!(base, hash64(7, "topic:Sports"), "case changes the hash (canonicalise first)");
    assert_ne!(hash64(0, "é"), hash64(0, "e\u{301}"), "hash is over bytes, not normalised text");
    assert_eq!(base, hash64(7, "topic:sports"), "deterministic");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn buckets_stay_in_range_and_spread() {
    // Two buckets: everything lands in bucket 1, never on padding.
    for i in 0..200 {
        assert_eq!(bucket(3, 2, &format!("kw:{i}")), 1);
    }
    // 16 buckets, 3000 features: every real bucket is used, padding never is.
    let mut counts = [0usize; 16];
    for i in 0..3000 {
        let b = bucket(0x4845_4152_5448, 16, &format!("topic:t{i}"));
        assert!((1..16).contains(&b), "bucket {b}");
        counts[b as usize] += 1;
    }
    assert_eq!(counts[PADDING as usize], 0);
    // 200 per bucket expected; a broken mixer (or modulo on the wrong width) is far off.
    for (b, n) in counts.iter().enumerate().skip(1) {
        assert!((100..300).contains(n), "bucket {b} got {n} of 3000");
    }
    // Largest bucket count the manifest allows.
    let big = 1u32 << 22;
    for i in 0..100 {
        assert!((1..big).contains(&bucket(u64::MAX, big, &format!("ad:{i}"))));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn feature_strings_are_canonical() {
    assert_eq!(feature("topic", "Sports"), "topic:sports");
    assert_eq!(feature("topic", "  sports\t\n"), "topic:sports");
    assert_eq!(feature("kw", " Running Shoes "), "kw:running shoes", "inner spaces kept");
    assert_eq!(feature("topic", "ÉCOLE"), "topic:école", "unicode lower-casing");
    assert_eq!(feature("kw", "日本"), "kw:日本");
    assert_eq!(feature("kw", "\u{3000}東京\u{3000}"), "kw:東京", "unicode whitespace trimmed");
    assert_eq!(feature("hour", "14"), "hour:14");
    // Variants of one value are one feature, hence one bucket.
    let s = spec(11, 4096);
    let variants = ["Sports", "sports", " SPORTS", "sPoRtS  "];
    let buckets: Vec<u32> = variants.iter().map(|v| s.bucket(&feature("topic", v))).collect();
    assert!(buckets.iter().all(|b| *b == buckets[0]), "{buckets:?}");
    // The kind is part of the feature: a topic and a keyword with one value differ.
    assert_ne!(feature("topic", "sports"), feature("kw", "sports"));
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn encode_pads_with_bucket_zero_and_weight_zero() {
    let s = spec(5, 1000);
    let slots = Slots::encode(&s, 6, &[("topic:a", 1.0), ("topic:b", 3.0)]);
    assert_eq!(slots.ids.len(), 6);
    assert_eq!(slots.weights.len(), 6);
    assert_eq!(slots.ids[0], i64::from(s.bucket("topic:a")));
    assert_eq!(slots.ids[1], i64::from(s.bucket("topic:b")));
    assert!(slots.ids[..2].iter().all(|id| *id != i64::from(PADDING)));
    assert_eq!(&slots.ids[2..], &[i64::from(PADDING); 4]);
    assert_eq!(&slots.weights[2..], &[0.0; 4]);
    assert!(close(slots.weights[0], 0.25) && close(slots.weights[1], 0.75), "{:?}", slots.weights);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn encode_normalises_to_unit_abs_sum_keeping_signs() {
    let s = spec(5, 1000);
    let input = [("a:1", 2.0f32), ("a:2", -6.0), ("a:3", 0.5), ("a:4", -1.5)];
    let slots = Slots::encode(&s, 4, &input);
    let abs_sum: f32 = slots.weights.iter().map(|w| w.abs()).sum();
    assert!(close(abs_sum, 1.0), "sum |w| = {abs_sum}");
    let total: f32 = input.iter().map(|(_, w)| w.abs()).sum();
    for ((_, w), got) in input.iter().zip(&slots.weights) {
        assert_eq!(got.signum(), w.signum());
        assert!(close(*got, w / total), "{got} vs {}", w / total);
    }
    // Already-normalised input passes through; scaling the input does not change the output.
    let scaled: Vec<(&str, f32)> = input.iter().map(|(f, w)| (*f, w * 40.0)).collect();
    let again = Slots::encode(&s, 4, &scaled);
    assert_eq!(again.ids, slots.ids);
    for (a, b) in again.weights.iter().zip(&slots.weights) {
        assert!(close(*a, *b));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn encode_truncates_to_the_slot_count() {
    let s = spec(9, 16384);
    let input = [("f:0", 1.0f32), ("f:1", 1.0), ("f:2", 2.0), ("f:3", 100.0), ("f:4", 100.0)];
    let slots = Slots::encode(&s, 3, &input);
    assert_eq!(slots.ids.len(), 3);
    assert_eq!(slots.weights.len(), 3);
    let expected: Vec<i64> = input[..3].iter().map(|(f, _)| i64::from(s.bucket(f))).collect();
    assert_eq!(slots.ids, expected);
    // Normalised over the features that fit, not over the dropped ones.
    assert!(close(slots.weights[0], 0.25) && close(slots.weights[1], 0.25) && close(slots.weights[2], 0.5));
    // No slots at all: nothing encoded.
    let none = Slots::encode(&s, 0, &input);
    assert!(none.ids.is_empty() && none.weights.is_empty());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn all_zero_or_empty_input_is_all_padding() {
    let s = spec(1, 1000);
    let padding = Slots { ids: vec![i64::from(PADDING); 5], weights: vec![0.0; 5] };
    assert_eq!(Slots::encode(&s, 5, &[]), padding);
    assert_eq!(Slots::encode(&s, 5, &[("topic:a", 0.0), ("topic:b", 0.0), ("topic:c", -0.0)]), padding);
    // Zero weights inside the slot range and a non-zero one beyond it: still nothing.
    let beyond = [("a:1", 0.0f32), ("a:2", 0.0), ("a:3", 0.0), ("a:4", 0.0), ("a:5", 0.0), ("a:6", 7.0)];
    assert_eq!(Slots::encode(&s, 5, &beyond), padding);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn encode_uses_the_spec_seed_and_bucket_count() {
    let input = [("topic:sports", 1.0f32), ("kw:tennis", 1.0), ("hour:9", 1.0)];
    let a = Slots::encode(&spec(1, 1 << 20), 3, &input);
    let b = Slots::encode(&spec(2, 1 << 20), 3, &input);
    assert_ne!(a.ids, b.ids, "seed must change the ids");
    for (id, (f, _)) in a.ids.iter().zip(&input) {
        assert_eq!(*id, i64::from(bucket(1, 1 << 20, f)));
    }
    let two = Slots::encode(&spec(1, 2), 3, &input);
    assert_eq!(two.ids, vec![1, 1, 1]);
}
