//! Developer tasks: generate model packs and demo data, rank fixtures natively, benchmark.
//! `cargo run -p xtask --release -- <task> [args]`; `-- help` lists the tasks, `-- <task> --help` their flags.

mod attack;
mod bench;
mod demo;
mod demo_pack;
mod fixture;
mod loadgen;
mod measure;
mod sink;

use clap::{Parser, Subcommand};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::pack::ModelPack;
use hearth_core::model::pack_dir::{self, PackFiles};
use hearth_core::model::params::{DEFAULT_ARCH, Params};
use std::path::{Path, PathBuf};

/// The default pack's feature spec.
pub fn default_spec() -> FeatureSpec {
    FeatureSpec::product(DEFAULT_ARCH.buckets)
}

/// Developer tasks of the Hearth workspace; run from the repository root (the default paths are
/// relative to it): `cargo run -p xtask --release -- <TASK> [OPTIONS]`.
#[derive(Parser, Debug)]
#[command(name = "xtask", subcommand_value_name = "TASK", subcommand_help_heading = "Tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Writes the default model pack: fresh parameters of the default architecture and feature spec.
    GenPack(GenPack),
    /// Writes the demo news site (catalog, articles, front page, landing page); deterministic.
    GenDemo(demo::Args),
    /// Trains the demo site's warm-started model pack on synthetic browsing sessions.
    GenDemoPack(demo_pack::Args),
    /// Ranks a fixture natively and prints the ranking as JSON (the browser parity test's native side).
    RankFixture(fixture::Args),
    /// Native ranking benchmark at 100, 1,000 and 10,000 ads.
    BenchNative(bench::NativeArgs),
    /// Native local training + update build benchmark, each upload format's build cost and size.
    BenchTrain(bench::TrainArgs),
    /// Upload load generator: plaintext single server, secure-aggregation leader + helper, `xtask http-sink`.
    BenchAggregator(loadgen::Args),
    /// Minimal HTTP server that discards uploads: the bench-aggregator's transport ceiling.
    HttpSink(sink::Args),
    /// Hostile-load generator: slow, idle and download floods beside honest uploads.
    Attack(attack::Args),
    /// Private measurement: report build and size, verify + aggregate per server, beside prio's own.
    BenchMeasure(measure::Args),
}

#[derive(clap::Args, Debug)]
struct GenPack {
    /// Directory the pack is written to.
    #[arg(long, value_name = "DIR", default_value = "models/default")]
    out: PathBuf,
    /// Seed of the initial parameters.
    #[arg(long, value_name = "N", default_value_t = 7)]
    seed: u64,
    /// The pack's model version.
    #[arg(long, value_name = "V", default_value_t = 1)]
    version: u64,
}

fn main() {
    let result = match Cli::parse().task {
        Task::GenPack(args) => gen_pack(args),
        Task::GenDemo(args) => demo::run(args),
        Task::GenDemoPack(args) => demo_pack::run(args),
        Task::RankFixture(args) => fixture::rank_fixture(args),
        Task::BenchNative(args) => bench::native(args),
        Task::BenchTrain(args) => bench::train(args),
        Task::BenchAggregator(args) => loadgen::run(args),
        Task::HttpSink(args) => sink::run(args),
        Task::Attack(args) => attack::run(args),
        Task::BenchMeasure(args) => measure::run(args),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}

fn gen_pack(args: GenPack) -> Result<(), String> {
    let GenPack { out, seed, version } = args;
    let (onnx, manifest) = ModelPack::write(&Params::init(DEFAULT_ARCH, seed), &default_spec(), version);
    pack_dir::write(&out, &onnx, &manifest).map_err(|e| e.to_string())?;
    println!("wrote {} ({} bytes of ONNX)", out.display(), onnx.len());
    Ok(())
}

pub fn load_pack(dir: &Path) -> Result<ModelPack, String> {
    PackFiles::read(dir).map_err(|e| e.to_string())?.load().map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every task by its name, and every flag with its default in `--help`.
    #[test]
    fn help_lists_every_task_and_flag() {
        let mut cli = Cli::command();
        let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
        let tasks = [
            "gen-pack",
            "gen-demo",
            "gen-demo-pack",
            "rank-fixture",
            "bench-native",
            "bench-train",
            "bench-aggregator",
            "http-sink",
            "attack",
            "bench-measure",
        ];
        assert_eq!(names, tasks);
        let help = cli.render_help().to_string();
        for task in tasks {
            assert!(help.contains(task), "{help}");
        }
        let flags: &[(&str, &[&str])] = &[
            (
                "gen-pack",
                &["--out <DIR>", "[default: models/default]", "--seed <N>", "[default: 7]", "--version <V>", "[default: 1]"],
            ),
            ("gen-demo", &["--out <DIR>", "[default: www/demo]"]),
            (
                "gen-demo-pack",
                &[
                    "--catalog <FILE>",
                    "[default: www/demo/catalog.json]",
                    "--out <DIR>",
                    "[default: models/demo]",
                    "--seed <N>",
                    "--readers <N>",
                    "[default: 3000]",
                    "--epochs <N>",
                    "--lr <LR>",
                    "[default: 0.003]",
                    "--cohort <N>",
                    "--batch <N>",
                ],
            ),
            ("rank-fixture", &["<FIXTURE.json>", "--pack <DIR>", "[default: models/default]"]),
            ("bench-native", &["--out <FILE>", "[default: target/bench/score-native.json]"]),
            ("bench-train", &["--out <FILE>", "[default: target/bench/train-native.json]"]),
            (
                "bench-aggregator",
                &[
                    "--out <FILE>",
                    "[default: target/bench/aggregator.json]",
                    "--server <BIN>",
                    "[default: target/release/hearth-aggregator]",
                    "--seconds <S>",
                    "[default: 6]",
                    "--min-clients <K>",
                    "[default: 100 10000]",
                ],
            ),
            ("http-sink", &["[ENCODING]", "[default: f32]"]),
            (
                "attack",
                &[
                    "--out <FILE>",
                    "[default: target/bench/attack.json]",
                    "--server <BIN>",
                    "[default: target/release/hearth-aggregator]",
                    "--attack <ATTACK>",
                    "[default: none slow-headers idle-connections slow-bodies download-flood]",
                    "--seconds <S>",
                    "[default: 10]",
                    "--clients <N>",
                    "[default: 8]",
                    "--connections <N>",
                    "--min-clients <K>",
                    "[default: 10]",
                ],
            ),
            (
                "bench-measure",
                &[
                    "--out <FILE>",
                    "[default: target/bench/measure-native.json]",
                    "--fixture <FILE>",
                    "[default: target/bench/measure-fixture.json]",
                    "--campaigns <N>",
                    "[default: 240 5000]",
                ],
            ),
        ];
        for (task, wanted) in flags {
            let help = cli.find_subcommand_mut(task).unwrap().render_help().to_string();
            for w in *wanted {
                assert!(help.contains(w), "{task} --help lacks {w}: {help}");
            }
        }
    }

    /// The command lines the scripts, the parity test and the load generator use.
    #[test]
    fn callers_command_lines_parse() {
        for line in [
            &["xtask", "bench-native", "--out", "target/bench/score-native.json"][..],
            &["xtask", "bench-train", "--out", "target/bench/train-native.json"],
            &["xtask", "bench-aggregator", "--out", "target/bench/aggregator.json"],
            &["xtask", "bench-aggregator", "--min-clients", "10000"],
            &["xtask", "bench-aggregator", "--min-clients", "100,10000", "--seconds", "2"],
            &["xtask", "rank-fixture", "tests/fixtures/rank.json"],
            &["xtask", "gen-pack", "--out", "models/default", "--seed", "7"],
            &["xtask", "gen-demo"],
            &["xtask", "gen-demo-pack"],
            &["xtask", "http-sink", "f32"],
            &["xtask", "http-sink", "quantized"],
            &["xtask", "http-sink"],
            &["xtask", "attack"],
            &["xtask", "attack", "--out", "target/bench/attack.json"],
            &["xtask", "attack", "--attack", "none,download-flood", "--seconds", "2", "--connections", "50"],
            &["xtask", "attack", "--server", "target/debug/hearth-aggregator", "--clients", "2", "--min-clients", "10"],
            &["xtask", "bench-measure", "--out", "target/bench/measure-native.json"],
            &["xtask", "bench-measure", "--campaigns", "240"],
            &["xtask", "bench-measure", "--campaigns", "240,5000", "--fixture", "/tmp/fixture.json"],
        ] {
            Cli::try_parse_from(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
        for bad in [
            &["xtask", "http-sink", "f16"][..],
            &["xtask", "rank-fixture"],
            &["xtask", "bench-aggregator", "--seconds", "0"],
            &["xtask", "bench-aggregator", "--min-clients", "9"],
            &["xtask", "bench-aggregator", "--min-clients", "10001"],
            &["xtask", "attack", "--attack", "slowloris"],
            &["xtask", "attack", "--seconds", "0"],
            &["xtask", "attack", "--clients", "0"],
            &["xtask", "attack", "--min-clients", "9"],
            &["xtask", "bench-measure", "--campaigns", "0"],
            &["xtask", "bench-measure", "--campaigns", "10001"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
