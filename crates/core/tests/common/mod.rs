//! Small packs and inputs shared by the integration tests.
#![allow(dead_code)]

use hearth_core::features::{FeatureSpec, HASH_NAME, Slots};
use hearth_core::pack::ModelPack;
use hearth_core::params::{Arch, Gaussian, Params};
use hearth_core::scorer::Request;

pub const ARCH: Arch = Arch { buckets: 512, dim: 8, hidden: 12 };

pub fn spec() -> FeatureSpec {
    FeatureSpec { hash: HASH_NAME.into(), seed: 11, buckets: ARCH.buckets as u32, user_slots: 10, context_slots: 4, ad_slots: 6 }
}

pub fn pack_bytes(seed: u64) -> (Vec<u8>, String) {
    ModelPack::write(&Params::init(ARCH, seed), &spec(), 3)
}

pub fn pack(seed: u64) -> ModelPack {
    let (onnx, manifest) = pack_bytes(seed);
    ModelPack::load(&onnx, &manifest).expect("generated pack loads")
}

/// Random padded slots: some real ids, the rest padding, weights of both signs.
pub fn random_slots(rng: &mut Gaussian, slots: usize, buckets: usize) -> Slots {
    let used = 1 + (rng.next_u64() as usize % slots);
    let mut ids = vec![0i64; slots];
    let mut weights = vec![0f32; slots];
    for i in 0..used {
        ids[i] = 1 + (rng.next_u64() % (buckets as u64 - 1)) as i64;
        weights[i] = rng.next() as f32;
    }
    Slots { ids, weights }
}

pub fn random_request(rng: &mut Gaussian) -> Request {
    let s = spec();
    Request {
        user: random_slots(rng, s.user_slots, ARCH.buckets),
        local_u: (0..ARCH.dim).map(|_| 0.3 * rng.next() as f32).collect(),
        context: random_slots(rng, s.context_slots, ARCH.buckets),
    }
}
