//! Developer tasks: generate model packs and demo data, rank fixtures natively, benchmark.
//! `cargo run -p xtask --release -- <task> [args]`.

mod bench;
mod demo;
mod demo_pack;
mod fixture;
mod loadgen;
mod sink;

use hearth_core::model::features::FeatureSpec;
use hearth_core::model::pack::ModelPack;
use hearth_core::model::pack_dir::{self, PackFiles};
use hearth_core::model::params::{DEFAULT_ARCH, Params};
use std::path::{Path, PathBuf};

/// The default pack's feature spec.
pub fn default_spec() -> FeatureSpec {
    FeatureSpec::product(DEFAULT_ARCH.buckets)
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
    pack_dir::write(&out, &onnx, &manifest).map_err(|e| e.to_string())?;
    println!("wrote {} ({} bytes of ONNX)", out.display(), onnx.len());
    Ok(())
}

pub fn load_pack(dir: &Path) -> Result<ModelPack, String> {
    PackFiles::read(dir).map_err(|e| e.to_string())?.load().map_err(|e| format!("{}: {e}", dir.display()))
}
