//! A seeded CSPRNG (ChaCha20) as the noise source, so a simulation is reproducible from its seed
//! while its noise is as strong as the product's. One stream per (round, device).

use hearth_core::privacy::noise::ByteSource;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub struct Seeded(ChaCha20Rng);

impl Seeded {
    pub fn new(seed: u64, round: u64, device: u64) -> Seeded {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&round.to_le_bytes());
        key[16..24].copy_from_slice(&device.to_le_bytes());
        key[24..].copy_from_slice(b"hearthsm");
        Seeded(ChaCha20Rng::from_seed(key))
    }
}

impl ByteSource for Seeded {
    fn fill(&mut self, buf: &mut [u8]) -> hearth_core::Result<()> {
        self.0.fill_bytes(buf);
        Ok(())
    }
}
