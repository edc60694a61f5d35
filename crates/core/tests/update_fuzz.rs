//! `Update::decode` under hostile input: arbitrary bytes and damaged valid encodings never
//! panic, and whatever it accepts re-encodes to the very same bytes (the format has no slack).
//! Valid updates survive an encode and decode. Native only: proptest does not run in the browser.
#![cfg(not(target_arch = "wasm32"))]

use hearth_core::privacy::wire::{Payload, Update};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

fn cases(n: u32) -> ProptestConfig {
    // No regression files: the tests must not write into the source tree.
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

fn positive() -> impl Strategy<Value = f32> {
    prop_oneof![1e-30f32..1e30, Just(f32::MIN_POSITIVE), Just(f32::MAX)]
}

fn payload() -> impl Strategy<Value = Payload> {
    let finite = any::<f32>().prop_filter("finite", |x| x.is_finite());
    prop_oneof![
        vec(finite, 0..40).prop_map(Payload::F32),
        (positive(), vec(any::<i16>(), 0..40)).prop_map(|(step, values)| Payload::QuantizedI16 { step, values }),
    ]
}

fn valid_update() -> impl Strategy<Value = Update> {
    (any::<u64>(), any::<u64>(), any::<[u8; 16]>(), positive(), prop_oneof![Just(0f32), 0f32..100.0], payload()).prop_map(
        |(model_version, round_id, nonce, clip_norm, noise_multiplier, payload)| Update {
            model_version,
            round_id,
            nonce,
            clip_norm,
            noise_multiplier,
            payload,
        },
    )
}

/// Decoding must not panic; anything accepted is canonical.
fn check(bytes: &[u8]) {
    if let Ok(u) = Update::decode(bytes) {
        assert_eq!(u.encode(), bytes);
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        check(&bytes);
    }

    /// Past the magic and version, so the later checks see arbitrary values.
    #[test]
    fn arbitrary_headers_never_panic(encoding in 0u8..3, rest in vec(any::<u8>(), 0..120)) {
        let bytes = [&b"HRTU"[..], &1u16.to_le_bytes(), &[encoding], &rest].concat();
        check(&bytes);
    }

    #[test]
    fn valid_updates_round_trip(u in valid_update()) {
        prop_assert_eq!(Update::decode(&u.encode()), Ok(u));
    }

    #[test]
    fn damaged_updates_never_panic(
        u in valid_update(),
        flips in vec((any::<Index>(), 1u8..=255), 1..5),
        cut in any::<Index>(),
        insert in vec(any::<u8>(), 0..8),
    ) {
        let bytes = u.encode();
        let mut flipped = bytes.clone();
        for (i, mask) in &flips {
            flipped[i.index(bytes.len())] ^= mask;
        }
        check(&flipped);
        let at = cut.index(bytes.len());
        check(&bytes[..at]);
        check(&[&bytes[..at], &insert, &bytes[at..]].concat());
    }
}
