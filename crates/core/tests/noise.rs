//! Clipping and the CSPRNG Gaussian sampler: clipped norms never exceed C, and the noise has the
//! moments and tails of a normal with the requested standard deviation.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use hearth_core::UpdateError;
use hearth_core::model::params::Gaussian;
use hearth_core::privacy::noise::{ByteSource, Sampler, add_noise, clip, l2_norm};
use hearth_core::{HearthError, Result};

/// A replayable byte stream (SplitMix64), for tests only.
struct Seeded(Gaussian);

impl ByteSource for Seeded {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&self.0.next_u64().to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

struct Broken;

impl ByteSource for Broken {
    fn fill(&mut self, _: &mut [u8]) -> Result<()> {
        Err(UpdateError::Random(getrandom::Error::UNSUPPORTED).into())
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn clip_never_leaves_a_norm_above_c() {
    let mut rng = Gaussian::new(7);
    for case in 0..600 {
        let len = 1 + (rng.next_u64() % 3000) as usize;
        // Magnitudes from 1e-30 to 1e30, so norms fall far below and far above every C.
        let scale = 10f64.powf(rng.uniform() * 60.0 - 30.0);
        let original: Vec<f32> = (0..len).map(|_| (rng.normal() * scale) as f32).collect();
        for c in [1e-6f32, 0.01, 1.0, 3.7, 1e4, 1e20] {
            let mut v = original.clone();
            let before = clip(&mut v, c);
            let after = l2_norm(&v);
            assert_eq!(before, l2_norm(&original), "case {case}");
            assert!(after <= f64::from(c), "case {case}: {after} > {c}");
            if before <= f64::from(c) {
                assert_eq!(v, original, "case {case}: a vector within C is untouched");
            } else {
                assert!(after >= f64::from(c) * (1.0 - 1e-5), "case {case}: clipped to {after}, C = {c}");
            }
        }
    }
    let mut zero = vec![0f32; 100];
    assert_eq!(clip(&mut zero, 1.0), 0.0);
    assert!(zero.iter().all(|&x| x == 0.0));
}

/// n draws from the product's sampler: mean, variance and tail mass match N(0, 1).
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn os_sampler_is_standard_normal() {
    const N: usize = 1_000_000;
    let mut s = Sampler::os();
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    let mut beyond = [0usize; 3];
    for _ in 0..N {
        let x = s.normal().unwrap();
        sum += x;
        sum_sq += x * x;
        for (k, count) in beyond.iter_mut().enumerate() {
            *count += usize::from(x.abs() > (k + 1) as f64);
        }
    }
    let n = N as f64;
    let mean = sum / n;
    let var = sum_sq / n - mean * mean;
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 0.01, "variance {var}");
    // P(|X| > k) for k = 1, 2, 3; tolerance 5 binomial standard errors.
    for (k, p) in [0.317_310_5, 0.045_500_3, 0.002_699_8].into_iter().enumerate() {
        let freq = beyond[k] as f64 / n;
        let tol = 5.0 * (p * (1.0 - p) / n).sqrt();
        assert!((freq - p).abs() < tol, "P(|X| > {}) = {freq}, expected {p} ± {tol}", k + 1);
    }
}

/// The acceptance criterion: noise added with multiplier z at clip norm C has empirical
/// standard deviation within 2% of z·C.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn add_noise_has_std_z_times_c() {
    let (z, c) = (1.1, 0.25);
    let base: Vec<f32> = (0..200_000).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut v = base.clone();
    add_noise(&mut v, z * c, &mut Sampler::os()).unwrap();
    let noise: Vec<f64> = v.iter().zip(&base).map(|(a, b)| f64::from(*a) - f64::from(*b)).collect();
    assert!(noise.iter().all(|&e| e != 0.0), "every coordinate gets noise");
    let n = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / n;
    let std = (noise.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!((std / (z * c) - 1.0).abs() < 0.02, "std {std}, z·C = {}", z * c);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fresh_os_samplers_differ_and_seeded_ones_replay() {
    fn draw<S: ByteSource>(s: &mut Sampler<S>) -> Vec<f64> {
        (0..64).map(|_| s.normal().unwrap()).collect()
    }
    assert_ne!(draw(&mut Sampler::os()), draw(&mut Sampler::os()));
    let seeded = |seed| Sampler::from_source(Seeded(Gaussian::new(seed)));
    assert_eq!(draw(&mut seeded(3)), draw(&mut seeded(3)));
    assert_ne!(draw(&mut seeded(3)), draw(&mut seeded(4)));

    let mut s = seeded(5);
    for _ in 0..10_000 {
        let u = s.uniform().unwrap();
        assert!((0.0..1.0).contains(&u));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn errors_are_typed() {
    let random_failed = HearthError::Update(UpdateError::Random(getrandom::Error::UNSUPPORTED));
    assert_eq!(Sampler::from_source(Broken).normal(), Err(random_failed.clone()));
    assert_eq!(add_noise(&mut [1.0], 1.0, &mut Sampler::from_source(Broken)), Err(random_failed));
    for std in [-1.0, f64::NAN, f64::INFINITY] {
        let e = add_noise(&mut [1.0], std, &mut Sampler::os()).unwrap_err();
        assert!(matches!(e, HearthError::Update(UpdateError::NoiseStd(_))), "{e}");
    }
    // Noise that would overflow f32 saturates instead of producing infinities.
    let mut big = vec![f32::MAX; 100];
    add_noise(&mut big, 1e300, &mut Sampler::os()).unwrap();
    assert!(big.iter().all(|x| x.is_finite()));
}
