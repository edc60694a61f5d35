//! Where a server's own noise comes from: the OS CSPRNG. A debug build (what `cargo test`
//! runs) also accepts `HEARTH_TEST_NOISE_SEED`, a seed from which the noise of every release is
//! derived, so a test can compute the exact noise each server added; a release build refuses
//! to start with it set (see [`check_environment`]), so no deployment can run on predictable
//! noise.

use hearth_core::privacy::noise::{ByteSource, OsRandom, Sampler, SeededRandom};

/// The variable a test build reads the noise seed from.
pub const TEST_SEED_VARIABLE: &str = "HEARTH_TEST_NOISE_SEED";

/// Which server draws, so the two servers' seeded noises differ.
#[derive(Debug, Clone, Copy)]
pub enum Drawer {
    Leader = 0,
    Helper = 1,
}

pub enum NoiseSource {
    Os(OsRandom),
    Seeded(Box<SeededRandom>),
}

impl ByteSource for NoiseSource {
    fn fill(&mut self, buf: &mut [u8]) -> hearth_core::Result<()> {
        match self {
            NoiseSource::Os(s) => s.fill(buf),
            NoiseSource::Seeded(s) => s.fill(buf),
        }
    }
}

/// The seed of `drawer`'s noise for `round` under test seed `seed`: what a test recomputes.
pub fn release_seed(seed: u64, drawer: Drawer, round: u64) -> u64 {
    seed ^ (round << 1) ^ drawer as u64
}

/// The sampler for one release's noise.
pub fn sampler(drawer: Drawer, round: u64) -> Sampler<NoiseSource> {
    match test_seed() {
        Some(seed) if cfg!(debug_assertions) => {
            Sampler::from_source(NoiseSource::Seeded(Box::new(SeededRandom::new(release_seed(seed, drawer, round)))))
        }
        _ => Sampler::from_source(NoiseSource::Os(OsRandom)),
    }
}

/// Refuses a release build started with a test noise seed.
pub fn check_environment() -> Result<(), String> {
    match test_seed() {
        Some(_) if !cfg!(debug_assertions) => {
            Err(format!("{TEST_SEED_VARIABLE} is set: only a test build draws seeded noise; unset it"))
        }
        _ => Ok(()),
    }
}

fn test_seed() -> Option<u64> {
    std::env::var(TEST_SEED_VARIABLE).ok().and_then(|s| s.parse().ok())
}
