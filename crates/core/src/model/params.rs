//! Model parameters: one flat f32 vector with a named layout, so that a model update is a plain
//! vector difference and every shell agrees on which coordinate is which.

use crate::error::{HearthError, Result};
use serde::{Deserialize, Serialize};

/// 16M parameters (64 MiB of f32): far above any pack meant for a browser, far below what
/// would exhaust a wasm32 address space. Packs and updates both stop here.
pub const MAX_PARAMS: usize = 1 << 24;

/// The default pack's shape (`models/default`, the simulator's model): a 16k-bucket table of
/// 16-wide embeddings and a 32-unit MLP.
pub const DEFAULT_ARCH: Arch = Arch { buckets: 16_384, dim: 16, hidden: 32 };

/// The starter architecture's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Arch {
    /// Rows of the embedding and bias tables (the feature spec's `buckets`, padding row included).
    pub buckets: usize,
    /// Embedding width d: of `emb` rows, pooled vectors and `local_u`.
    pub dim: usize,
    /// Hidden units h of the MLP.
    pub hidden: usize,
}

/// One named tensor of the flat parameter vector; the manifest lists them and the ONNX
/// initializers carry the same names and shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// One of [`NAMES`].
    pub name: String,
    /// Dimensions, row-major (`emb` is `[buckets, dim]`).
    pub shape: Vec<usize>,
    /// Start of this tensor in the flat parameter vector.
    pub offset: usize,
}

impl ParamSpec {
    /// Number of values: the product of `shape`.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tensor names, in flat-vector order. `emb` is the hashed embedding table shared by profile,
/// context and ad features; `bias` a per-bucket linear term for ad features; `w1_*`/`b1` the
/// MLP's first layer split by which side feeds it; `w2`/`b2` its output layer.
pub const NAMES: [&str; 8] = ["emb", "bias", "w1_ad", "w1_user", "w1_ctx", "b1", "w2", "b2"];

impl Arch {
    /// The tensors of this architecture in [`NAMES`] order, packed back to back from offset 0.
    pub fn layout(&self) -> Vec<ParamSpec> {
        let Arch { buckets: b, dim: d, hidden: h } = *self;
        let shapes = [vec![b, d], vec![b, 1], vec![d, h], vec![d, h], vec![d, h], vec![h], vec![h, 1], vec![1]];
        let mut offset = 0;
        NAMES
            .iter()
            .zip(shapes)
            .map(|(name, shape)| {
                let spec = ParamSpec { name: name.to_string(), shape, offset };
                offset += spec.len();
                spec
            })
            .collect()
    }

    /// Width of the cached ad-side row: pooled ad embedding, its first-layer projection, its bias.
    pub fn ad_side_width(&self) -> usize {
        self.dim + self.hidden + 1
    }
}

/// A model's parameters: the architecture, its layout and the flat values. Built by
/// [`Params::new`] or [`Params::init`], so `values` matches `layout` and is finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The sizes the layout derives from.
    pub arch: Arch,
    /// `arch.layout()`: where each named tensor lies in `values`.
    pub layout: Vec<ParamSpec>,
    /// All parameters in layout order; a model update is a difference of two of these.
    pub values: Vec<f32>,
}

impl Params {
    /// Wraps `values` in `arch`'s layout; `Shape` if the length is not the layout's total,
    /// `NonFinite` (naming the tensor) on a NaN or infinity.
    pub fn new(arch: Arch, values: Vec<f32>) -> Result<Params> {
        let layout = arch.layout();
        let expected = layout.last().map_or(0, |p| p.offset + p.len());
        if values.len() != expected {
            return Err(HearthError::Shape { name: "parameters".into(), expected: vec![expected], found: vec![values.len()] });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            let spec = layout.iter().rev().find(|p| p.offset <= index).expect("offset 0 exists");
            return Err(HearthError::NonFinite { name: spec.name.clone(), index: index - spec.offset });
        }
        Ok(Params { arch, layout, values })
    }

    /// Seeded initial parameters. Embeddings are drawn with a scale that makes a shared feature
    /// (a sports page and a sports ad) score visibly before any training; dense layers use
    /// He-style scales; the output bias starts at a low base rate.
    pub fn init(arch: Arch, seed: u64) -> Params {
        let mut rng = Gaussian::new(seed);
        let layout = arch.layout();
        let mut values = Vec::with_capacity(layout.iter().map(ParamSpec::len).sum());
        for spec in &layout {
            let (mean, std) = match spec.name.as_str() {
                "emb" => (0.0, 0.5),
                "w1_ad" | "w1_user" | "w1_ctx" => (0.0, (2.0 / (3 * arch.dim) as f64).sqrt()),
                "w2" => (0.0, (1.0 / arch.hidden as f64).sqrt()),
                "b2" => (-2.0, 0.0),
                _ => (0.0, 0.0),
            };
            values.extend((0..spec.len()).map(|_| (mean + std * rng.normal()) as f32));
        }
        Params { arch, layout, values }
    }

    /// Where tensor `name` (one of [`NAMES`]) lies in the flat vector.
    pub fn spec(&self, name: &str) -> &ParamSpec {
        self.layout.iter().find(|p| p.name == name).expect("name from NAMES")
    }

    /// Tensor `name`'s values, row-major.
    ///
    /// # Panics
    /// If `name` is not one of [`NAMES`].
    pub fn get(&self, name: &str) -> &[f32] {
        let spec = self.spec(name);
        &self.values[spec.offset..spec.offset + spec.len()]
    }

    /// Tensor `name`'s values, mutable.
    ///
    /// # Panics
    /// If `name` is not one of [`NAMES`].
    pub fn get_mut(&mut self, name: &str) -> &mut [f32] {
        let (offset, len) = {
            let spec = self.spec(name);
            (spec.offset, spec.len())
        };
        &mut self.values[offset..offset + len]
    }
}

/// Deterministic normal draws (splitmix64 + Box–Muller) for reproducible initial packs.
/// Not for privacy noise: that needs a cryptographically secure source.
pub struct Gaussian {
    state: u64,
}

impl Gaussian {
    /// A generator whose draws are fixed by `seed`.
    pub fn new(seed: u64) -> Gaussian {
        Gaussian { state: seed }
    }

    /// The next splitmix64 output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
