//! L2 clipping and Gaussian noise for model updates.
//!
//! Randomness comes from the operating system's CSPRNG through `getrandom` (in the browser,
//! `crypto.getRandomValues`): noise that an observer of the upload could predict would protect
//! nothing. The sampler is generic over its byte source only so that tests can replay a fixed
//! stream; the product constructs it with [`Sampler::os`].

use crate::error::{Result, UpdateError};

/// L2 norm, accumulated in f64 so that millions of f32 squares do not lose precision.
pub fn l2_norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

/// Scales `delta` down so that its L2 norm is at most `c` (finite, positive; `delta` finite) and
/// returns the norm it had before. A vector already within `c`, zero included, is left untouched.
pub fn clip(delta: &mut [f32], c: f32) -> f64 {
    let norm = l2_norm(delta);
    if norm > f64::from(c) {
        // Rounding each scaled coordinate to f32 can grow it by a relative 2^-24; shrinking the
        // factor by 2^-22 keeps the stored vector at or below `c` regardless.
        let scale = f64::from(c) / norm * (1.0 - f64::powi(2.0, -22));
        for x in delta.iter_mut() {
            *x = (f64::from(*x) * scale) as f32;
        }
    }
    norm
}

/// Where a [`Sampler`] gets its random bytes.
pub trait ByteSource {
    /// Fills all of `buf` with random bytes, or fails ([`OsRandom`] with [`UpdateError::Random`]);
    /// the failure propagates, so no update is built on it.
    fn fill(&mut self, buf: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG: `getrandom`, i.e. `crypto.getRandomValues` in the browser.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl ByteSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        getrandom::fill(buf).map_err(|e| UpdateError::Random(e).into())
    }
}

/// A reproducible stream: ChaCha20 from a 64-bit seed. Never the product's noise (an observer
/// who knew the seed would know the noise); the simulator uses it so runs repeat, and tests so
/// they can compute the exact noise a server added.
#[derive(Debug, Clone)]
pub struct SeededRandom(rand_chacha::ChaCha20Rng);

impl SeededRandom {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        use rand_chacha::rand_core::SeedableRng;
        SeededRandom(rand_chacha::ChaCha20Rng::seed_from_u64(seed))
    }
}

impl ByteSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        use rand_chacha::rand_core::Rng;
        self.0.fill_bytes(buf);
        Ok(())
    }
}

/// Words fetched per call to the byte source: one call per 128 normals keeps the per-draw cost
/// of `crypto.getRandomValues` (a JS boundary crossing) negligible.
const BATCH: usize = 256;

/// Uniform and standard normal draws from a [`ByteSource`].
pub struct Sampler<S> {
    source: S,
    words: [u64; BATCH],
    next: usize,
    /// Marsaglia's polar method yields normals in pairs; the second waits here.
    spare: Option<f64>,
}

impl Sampler<OsRandom> {
    /// The sampler the product uses.
    pub fn os() -> Self {
        Self::from_source(OsRandom)
    }
}

impl<S: ByteSource> Sampler<S> {
    /// A sampler over `source`. Bytes for uniform and normal draws are fetched when first needed,
    /// 2 KiB at a time.
    pub fn from_source(source: S) -> Self {
        Self { source, words: [0; BATCH], next: BATCH, spare: None }
    }

    /// Bytes straight from the source (nonces).
    pub fn fill_bytes(&mut self, buf: &mut [u8]) -> Result<()> {
        self.source.fill(buf)
    }

    fn word(&mut self) -> Result<u64> {
        if self.next == BATCH {
            let mut bytes = [0u8; BATCH * 8];
            self.source.fill(&mut bytes)?;
            for (w, b) in self.words.iter_mut().zip(bytes.chunks_exact(8)) {
                *w = u64::from_le_bytes(b.try_into().expect("chunks of 8"));
            }
            self.next = 0;
        }
        self.next += 1;
        Ok(self.words[self.next - 1])
    }

    /// Uniform on [0, 1) with 53 random bits: every value is a multiple of 2^-53, each equally
    /// likely, so `uniform() < p` holds with probability exactly `p` rounded down to that grid.
    pub fn uniform(&mut self) -> Result<f64> {
        Ok((self.word()? >> 11) as f64 * f64::powi(2.0, -53))
    }

    /// A standard normal draw (Marsaglia's polar method).
    pub fn normal(&mut self) -> Result<f64> {
        if let Some(z) = self.spare.take() {
            return Ok(z);
        }
        loop {
            // A point uniform in the square [-1, 1)², kept if it falls inside the unit disc
            // (probability π/4); its angle and radius then give two independent normals.
            let u = 2.0 * self.uniform()? - 1.0;
            let v = 2.0 * self.uniform()? - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * f);
                return Ok(u * f);
            }
        }
    }
}

/// Adds independent N(0, std²) noise to every coordinate. `std` must be finite and non-negative.
/// Sums beyond the f32 range saturate (post-processing) so that the result stays finite.
pub fn add_noise<S: ByteSource>(delta: &mut [f32], std: f64, rng: &mut Sampler<S>) -> Result<()> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(UpdateError::NoiseStd(std).into());
    }
    let max = f64::from(f32::MAX);
    for x in delta.iter_mut() {
        *x = (f64::from(*x) + std * rng.normal()?).clamp(-max, max) as f32;
    }
    Ok(())
}
