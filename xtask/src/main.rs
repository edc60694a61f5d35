//! Developer tasks: generate model packs and demo data, rank fixtures natively, benchmark.
//! `cargo run -p xtask --release -- <task> [args]`.

mod bench;
mod demo;
mod demo_pack;
mod fixture;
mod loadgen;
mod sink;

use hearth_core::model::features::{FeatureSpec, HASH_NAME};
use hearth_core::model::pack::ModelPack;
use hearth_core::model::params::{Arch, Params};
use std::path::{Path, PathBuf};

/// The default pack's shape: a 16k-bucket table of 16-wide embeddings and a 32-unit MLP.
pub const DEFAULT_ARCH: Arch = Arch { buckets: 16_384, dim: 16, hidden: 32 };

pub fn default_spec() -> FeatureSpec {
    FeatureSpec {
        hash: HASH_NAME.into(),
        seed: 0x4845_4152_5448, // "HEARTH"
        buckets: DEFAULT_ARCH.buckets as u32,
        user_slots: 64,
        context_slots: 16,
        ad_slots: 16,
    }
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gen-pack") => gen_pack(&args),
        Some("gen-demo") => demo::run(&args),
        Some("gen-demo-pack") => demo_pack::run(&args),
        Some("rank-fixture") => fixture::rank_fixture(&args),
        Some("bench-native") => bench::native(&args),
        Some("bench-train") => bench::train(&args),
        Some("bench-aggregator") => loadgen::run(&args),
        Some("http-sink") => sink::run(args.get(1).map_or("f32", String::as_str)),
        _ => Err("usage: xtask gen-pack [--out DIR] [--seed N] [--version V] | gen-demo [--out DIR] | gen-demo-pack [--catalog FILE] [--out DIR] [--seed N] | rank-fixture FIXTURE.json [--pack DIR] | bench-native [--out FILE] | bench-train [--out FILE] | bench-aggregator [--out FILE] [--server BIN] [--seconds S]".into()),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}

fn gen_pack(args: &[String]) -> Result<(), String> {
    let out = PathBuf::from(arg(args, "--out").unwrap_or_else(|| "models/default".into()));
    let seed: u64 = arg(args, "--seed").map_or(Ok(7), |s| s.parse()).map_err(|e| format!("--seed: {e}"))?;
    let version: u64 = arg(args, "--version").map_or(Ok(1), |s| s.parse()).map_err(|e| format!("--version: {e}"))?;
    let (onnx, manifest) = ModelPack::write(&Params::init(DEFAULT_ARCH, seed), &default_spec(), version);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("model.onnx"), &onnx).map_err(|e| e.to_string())?;
    std::fs::write(out.join("manifest.json"), manifest + "\n").map_err(|e| e.to_string())?;
    println!("wrote {} ({} bytes of ONNX)", out.display(), onnx.len());
    Ok(())
}

pub fn load_pack(dir: &Path) -> Result<ModelPack, String> {
    let onnx = std::fs::read(dir.join("model.onnx")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).map_err(|e| format!("{}: {e}", dir.display()))?;
    ModelPack::load(&onnx, &manifest).map_err(|e| e.to_string())
}
