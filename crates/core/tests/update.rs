//! The update wire format and the private pipeline: exact byte layout, round trips, every
//! malformed input refused with its typed error, clipping before noise, unbiased quantization
//! within the conditional-rounding bound, noise of the promised size, fresh nonces.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use hearth_core::model::params::Gaussian;
use hearth_core::model::params::MAX_PARAMS;
use hearth_core::privacy::noise::{ByteSource, Sampler, l2_norm};
use hearth_core::privacy::privatize::{MAX_ROUNDING_DRAWS, build_update, grid_step, rounding_bound};
use hearth_core::privacy::wire::{Encoding, F32_HEADER_LEN, FORMAT_VERSION, Payload, QUANTIZED_HEADER_LEN, Update};
use hearth_core::{HearthError, UpdateError};

fn sample(payload: Payload) -> Update {
    Update {
        model_version: 0x0102_0304_0506_0708,
        round_id: 42,
        nonce: *b"0123456789abcdef",
        clip_norm: 1.5,
        noise_multiplier: 0.75,
        payload,
    }
}

fn f32_update() -> Update {
    sample(Payload::F32(vec![0.5, -1.25, 0.0, 3.0e-8, -7.0]))
}

fn quantized_update() -> Update {
    sample(Payload::QuantizedI16 { step: 0.25, values: vec![1, -2, i16::MAX, i16::MIN, 0, 300] })
}

fn std_dev(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    (v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// The header is exactly the listed fields at the documented offsets, and nothing else.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn header_layout_is_exact() {
    assert_eq!((F32_HEADER_LEN, QUANTIZED_HEADER_LEN), (4 + 2 + 1 + 8 + 8 + 16 + 4 + 4 + 4, 55));
    for (u, code, header, width) in [(f32_update(), 0u8, 51, 4), (quantized_update(), 1, 55, 2)] {
        let b = u.encode();
        let n = u.values().len();
        assert_eq!(b.len(), header + width * n);
        assert_eq!(&b[0..4], b"HRTU");
        assert_eq!(b[4..6], 1u16.to_le_bytes());
        assert_eq!(b[6], code);
        assert_eq!(b[7..15], u.model_version.to_le_bytes());
        assert_eq!(b[15..23], 42u64.to_le_bytes());
        assert_eq!(&b[23..39], b"0123456789abcdef");
        assert_eq!(b[39..43], (n as u32).to_le_bytes());
        assert_eq!(b[43..47], 1.5f32.to_le_bytes());
        assert_eq!(b[47..51], 0.75f32.to_le_bytes());
        match &u.payload {
            Payload::F32(v) => assert_eq!(b[51..55], v[0].to_le_bytes()),
            Payload::QuantizedI16 { step, values } => {
                assert_eq!(b[51..55], step.to_le_bytes());
                assert_eq!(b[55..57], values[0].to_le_bytes());
            }
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn both_encodings_round_trip() {
    for u in [
        f32_update(),
        quantized_update(),
        sample(Payload::F32(vec![])),
        sample(Payload::QuantizedI16 { step: 2.0, values: vec![] }),
    ] {
        assert_eq!(Update::decode(&u.encode()), Ok(u));
    }
    assert_eq!(quantized_update().values(), [0.25, -0.5, 8191.75, -8192.0, 0.0, 75.0]);
}

fn patched(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at..at + with.len()].copy_from_slice(with);
    out
}

fn update_error(bytes: &[u8]) -> UpdateError {
    match Update::decode(bytes) {
        Err(HearthError::Update(e)) => e,
        other => panic!("expected an update error, got {other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn malformed_updates_are_refused_with_typed_errors() {
    use UpdateError::*;
    let f = f32_update().encode();
    let q = quantized_update().encode();

    assert_eq!(update_error(&[]), Truncated { needed: 4, found: 0 });
    assert_eq!(update_error(&f[..50]), Truncated { needed: 51, found: 50 });
    assert_eq!(update_error(&q[..53]), Truncated { needed: 55, found: 53 });
    assert_eq!(update_error(&patched(&f, 0, b"HRTV")), BadMagic(*b"HRTV"));
    for v in [0u16, 2, u16::MAX] {
        assert_eq!(update_error(&patched(&f, 4, &v.to_le_bytes())), UnknownVersion { found: v, supported: FORMAT_VERSION });
    }
    for e in [2u8, 255] {
        assert_eq!(update_error(&patched(&q, 6, &[e])), UnknownEncoding(e));
    }
    for count in [MAX_PARAMS as u32 + 1, u32::MAX] {
        assert_eq!(
            Update::decode(&patched(&f, 39, &count.to_le_bytes())),
            Err(HearthError::TooLarge { what: "update parameters", found: count as usize, limit: MAX_PARAMS })
        );
    }
    // Payload one value short, one byte short, one byte over, and a count that disagrees.
    for (bytes, expected) in [
        (&f[..f.len() - 4], f.len()),
        (&f[..f.len() - 1], f.len()),
        (&[&f[..], &[0]].concat()[..], f.len()),
        (&q[..q.len() - 1], q.len()),
        (&[&q[..], &[0, 0]].concat()[..], q.len()),
    ] {
        assert_eq!(update_error(bytes), LengthMismatch { expected, found: bytes.len() });
    }
    assert_eq!(update_error(&patched(&f, 39, &6u32.to_le_bytes())), LengthMismatch { expected: 51 + 24, found: f.len() });

    for bad in [0.0f32, -0.0, -1.5, f32::NAN, f32::INFINITY] {
        assert!(matches!(update_error(&patched(&f, 43, &bad.to_le_bytes())), ClipNorm(_)), "C = {bad}");
        assert!(matches!(update_error(&patched(&q, 51, &bad.to_le_bytes())), Step(_)), "γ = {bad}");
    }
    for bad in [-0.5f32, f32::NAN, f32::NEG_INFINITY, f32::INFINITY] {
        assert!(matches!(update_error(&patched(&f, 47, &bad.to_le_bytes())), NoiseMultiplier(_)), "z = {bad}");
    }
    assert!(Update::decode(&patched(&f, 47, &0f32.to_le_bytes())).is_ok(), "z = 0 is valid");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(
            Update::decode(&patched(&f, 51 + 4 * 3, &bad.to_le_bytes())),
            Err(HearthError::NonFinite { name: "update payload".into(), index: 3 })
        );
    }
}

/// Replays a fixed stream so that rounding draws can be forced.
struct Seeded {
    zeros: usize,
    rng: Gaussian,
}

impl ByteSource for Seeded {
    fn fill(&mut self, buf: &mut [u8]) -> hearth_core::Result<()> {
        for b in buf {
            *b = if self.zeros > 0 { 0 } else { self.rng.next_u64() as u8 };
            self.zeros = self.zeros.saturating_sub(1);
        }
        Ok(())
    }
}

fn seeded(zeros: usize, seed: u64) -> Sampler<Seeded> {
    Sampler::from_source(Seeded { zeros, rng: Gaussian::new(seed) })
}

fn random_delta(seed: u64, len: usize, scale: f64) -> Vec<f32> {
    let mut g = Gaussian::new(seed);
    (0..len).map(|_| (g.normal() * scale) as f32).collect()
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn build_clips_before_noise() {
    let c = 1.5f32;
    for (seed, scale) in [(1, 10.0), (2, 1e-3), (3, 1e6)] {
        let delta = random_delta(seed, 5000, scale);
        let norm = l2_norm(&delta);
        for z in [0.0f32, 0.9] {
            let (u, s) = build_update(delta.clone(), 9, 4, c, z, Encoding::F32, &mut Sampler::os()).unwrap();
            assert_eq!(s.pre_clip_norm, norm);
            assert!(s.clipped_norm <= f64::from(c) && s.clipped_norm >= norm.min(f64::from(c)) * (1.0 - 1e-5));
            assert_eq!(s.noise_std, f64::from(z) * f64::from(c));
            if z == 0.0 {
                assert_eq!(l2_norm(&u.values()), s.clipped_norm);
            }

            let (u, s) = build_update(delta.clone(), 9, 4, c, z, Encoding::QuantizedI16, &mut Sampler::os()).unwrap();
            let Payload::QuantizedI16 { step, .. } = u.payload else { panic!("quantized") };
            assert_eq!(step, grid_step(c, z).unwrap());
            let gamma = f64::from(step);
            let bound = rounding_bound(f64::from(c) / gamma, delta.len()) * gamma;
            assert!(s.clipped_norm <= bound, "{} > C̃·γ = {bound}", s.clipped_norm);
            let zc = f64::from(z) * f64::from(c);
            assert!(s.noise_std >= zc && s.noise_std <= zc * 1.01);
            if z == 0.0 {
                assert!((l2_norm(&u.values()) - s.clipped_norm).abs() <= 1e-6 * s.clipped_norm);
            }
            assert_eq!((u.model_version, u.round_id, u.clip_norm, u.noise_multiplier), (9, 4, c, z));
            assert_eq!(Update::decode(&u.encode()), Ok(u));
        }
    }
}

/// Many stochastic roundings of one vector average to the vector, each rounding to a neighbour.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn quantization_is_unbiased() {
    const RUNS: usize = 3000;
    let c = 1.0f32;
    let gamma = f64::from(grid_step(c, 0.0).unwrap());
    let fractions = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99];
    let delta: Vec<f32> = (0..28).map(|i| ((i as f64 * 37.0 - 500.0 + fractions[i % 7]) * gamma) as f32).collect();
    assert!(l2_norm(&delta) < f64::from(c));
    let grid: Vec<f64> = delta.iter().map(|&x| f64::from(x) / gamma).collect();
    let mut sums = vec![0.0; delta.len()];
    let mut rng = Sampler::os();
    for _ in 0..RUNS {
        let (u, s) = build_update(delta.clone(), 1, 1, c, 0.0, Encoding::QuantizedI16, &mut rng).unwrap();
        assert_eq!(s.rounding_retries, 0);
        let Payload::QuantizedI16 { values, .. } = u.payload else { panic!("quantized") };
        for ((sum, &q), &t) in sums.iter_mut().zip(&values).zip(&grid) {
            assert!(f64::from(q) == t.floor() || f64::from(q) == t.ceil(), "{q} is not a neighbour of {t}");
            *sum += f64::from(q);
        }
    }
    // A rounding has variance at most 1/4 grid units²: 5 standard errors of the mean.
    let tol = 5.0 * 0.5 / (RUNS as f64).sqrt();
    for (sum, t) in sums.iter().zip(&grid) {
        let mean = sum / RUNS as f64;
        assert!((mean - t).abs() < tol, "mean {mean}, value {t}");
    }
}

/// A norm at C makes some roundings exceed C̃: they are re-drawn, and what is kept stays within it.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rounding_over_the_bound_is_redrawn() {
    let (c, d) = (1.0f32, 10_000);
    let bound = rounding_bound(f64::from(c) / f64::from(grid_step(c, 0.0).unwrap()), d);
    let mut retries = 0;
    for seed in 0..60 {
        let delta = random_delta(seed, d, 1.0);
        let (u, s) = build_update(delta, 1, 1, c, 0.0, Encoding::QuantizedI16, &mut seeded(0, seed)).unwrap();
        let Payload::QuantizedI16 { values, .. } = u.payload else { panic!("quantized") };
        assert!(values.iter().map(|&q| f64::from(q).powi(2)).sum::<f64>().sqrt() <= bound);
        retries += s.rounding_retries;
    }
    assert!(retries > 0, "no rounding exceeded the bound in 60 builds");

    // A source that always rounds up exceeds it every time: after the last draw the rounding is
    // toward zero, which never grows the norm.
    let d = 512;
    let zeros = MAX_ROUNDING_DRAWS as usize * d * 8;
    let (u, s) = build_update(vec![1.0; d], 1, 1, c, 0.0, Encoding::QuantizedI16, &mut seeded(zeros, 1)).unwrap();
    assert_eq!(s.rounding_retries, MAX_ROUNDING_DRAWS);
    let Payload::QuantizedI16 { step, values } = u.payload else { panic!("quantized") };
    let t = f64::from(c) / (d as f64).sqrt() / f64::from(step);
    assert!(values.iter().all(|&q| f64::from(q) == t.floor()), "{} vs {t}", values[0]);
}

/// Empirical noise standard deviation of the upload is z·C (quantized: z·C̃·γ, within 1% of it).
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn build_noise_has_std_z_times_c() {
    let (c, z) = (2.0f32, 0.8f32);
    let zc = f64::from(c) * f64::from(z);
    for encoding in [Encoding::F32, Encoding::QuantizedI16] {
        let (u, s) = build_update(vec![0.0; 200_000], 1, 1, c, z, encoding, &mut Sampler::os()).unwrap();
        assert!((s.noise_std / zc - 1.0).abs() < 0.01, "{encoding:?}: noise std {}", s.noise_std);
        let std = std_dev(&u.values());
        assert!((std / zc - 1.0).abs() < 0.02, "{encoding:?}: empirical std {std}, z·C = {zc}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn nonces_are_fresh_and_sizes_match_the_default_model() {
    const D: usize = 262_657;
    let mut rng = Sampler::os();
    let delta = random_delta(5, D, 0.01);
    let (a, _) = build_update(delta.clone(), 1, 1, 1.0, 1.0, Encoding::F32, &mut rng).unwrap();
    let (b, _) = build_update(delta, 1, 1, 1.0, 1.0, Encoding::QuantizedI16, &mut rng).unwrap();
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.nonce, [0; 16]);
    assert_eq!(a.encode().len(), 1_050_679);
    assert_eq!(b.encode().len(), 525_369);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn build_refuses_bad_inputs() {
    let build = |delta: Vec<f32>, c, z| build_update(delta, 1, 1, c, z, Encoding::F32, &mut Sampler::os());
    assert!(matches!(build(vec![1.0], 0.0, 1.0), Err(HearthError::Update(UpdateError::ClipNorm(_)))));
    assert!(matches!(build(vec![1.0], f32::NAN, 1.0), Err(HearthError::Update(UpdateError::ClipNorm(_)))));
    assert!(matches!(build(vec![1.0], 1.0, -1.0), Err(HearthError::Update(UpdateError::NoiseMultiplier(_)))));
    assert_eq!(build(vec![0.0, f32::NAN], 1.0, 1.0), Err(HearthError::NonFinite { name: "model delta".into(), index: 1 }));
    assert_eq!(
        build(vec![0.0; MAX_PARAMS + 1], 1.0, 1.0),
        Err(HearthError::TooLarge { what: "update parameters", found: MAX_PARAMS + 1, limit: MAX_PARAMS })
    );
}
