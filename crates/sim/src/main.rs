//! `hearth-sim [OPTIONS]`: every run (popularity, centralized, federated, federated + DP through
//! secure aggregation at each ε, external baselines), one report.
//! `hearth-sim split [--data DIR] [--out DIR] [--seed N]`: writes the train/test split and the
//! sampled candidates as CSV for external baselines.
//! `hearth-sim scale [--devices N]`: times one federated round with N simulated devices.
//! `--help` lists every flag with its default.

use clap::{Args, Parser, Subcommand, ValueEnum};
use hearth_core::learning::server::Optimizer;
use hearth_sim::report::{Run, table};
use hearth_sim::{Options, plot};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

/// The library's defaults, shown by `--help`.
fn defaults() -> Options {
    Options::new(PathBuf::new())
}

/// Hearth federated simulation and quality benchmark on MovieLens-layout data. Without a
/// subcommand: popularity, centralized, federated and federated + DP runs, scored on the same
/// held-out ratings; writes OUT/report.json and two plots and prints the table.
#[derive(Parser, Debug)]
#[command(name = "hearth-sim", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Writes the train/test split and the sampled candidates as CSV to OUT, for external
    /// baselines (scripts/als_baseline.py).
    Split,
    /// Times one federated round with N simulated devices; writes OUT/scale.json.
    Scale {
        /// Simulated devices, all of them in the one round.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        devices: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Flags of every command.
#[derive(Args, Debug)]
struct Common {
    /// Directory in MovieLens layout (ratings.csv, movies.csv, …).
    #[arg(long, global = true, value_name = "DIR", default_value = "../shared/data/movielens-small")]
    data: PathBuf,
    /// Output directory, created if missing.
    #[arg(long, global = true, value_name = "DIR", default_value = "target/sim")]
    out: PathBuf,
    /// Seed of the split, the initial parameters and every noise stream.
    #[arg(long, global = true, value_name = "N", default_value_t = defaults().seed)]
    seed: u64,
}

/// The runs' flags (no subcommand).
#[derive(Args, Debug)]
struct RunArgs {
    /// Federated rounds.
    #[arg(long, value_name = "R", default_value_t = defaults().rounds)]
    rounds: usize,
    /// Devices a round expects; 0 means every device.
    #[arg(long, value_name = "K", default_value_t = defaults().clients_per_round)]
    clients: usize,
    /// Each device's chance of joining a round, by its own coin, in (0, 1] [default: K / N, so
    /// a round expects K devices].
    #[arg(long, value_name = "Q", value_parser = sampling_rate)]
    sampling_rate: Option<f64>,
    /// Epochs of the centralized run.
    #[arg(long, value_name = "E", default_value_t = defaults().centralized_epochs)]
    epochs: usize,
    /// Evaluate the federated runs every N rounds (0 counts as 1).
    #[arg(long, value_name = "N", default_value_t = defaults().eval_every)]
    eval_every: usize,
    /// L2 clipping norm C of the federated runs.
    #[arg(long, value_name = "C", default_value_t = defaults().clip_norm)]
    clip: f32,
    /// ε of the DP runs' published models, comma-separated; empty for none.
    #[arg(long, value_name = "LIST", default_value_t = Epsilons(defaults().epsilons))]
    epsilons: Epsilons,
    /// Noise multiplier of each device's own discrete Gaussian in the DP runs, in units of the
    /// rounded clip: all that protects a device if both servers collude.
    #[arg(long, value_name = "Z", default_value_t = defaults().local_noise)]
    local_noise: f32,
    /// A JSON file of runs from an external baseline (name, auc, logloss, hr10, ndcg10,
    /// wall_s), added to the report as they are; may be repeated.
    #[arg(long, value_name = "FILE")]
    external: Vec<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

/// The federated training's flags, shared by the runs and `scale`.
#[derive(Args, Debug)]
struct ServerArgs {
    /// The server optimizer: federated averaging, or FedAdam with β1 0.9, β2 0.99, τ 0.001.
    #[arg(long, value_enum, default_value_t = Server::Fedadam)]
    server: Server,
    /// The server optimizer's learning rate [default: 1 for fedavg, 0.05 for fedadam].
    #[arg(long, value_name = "L")]
    server_lr: Option<f32>,
    /// Local training epochs on each device.
    #[arg(long, value_name = "E", default_value_t = defaults().train.epochs)]
    local_epochs: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Server {
    Fedavg,
    Fedadam,
}

/// `--epsilons 1,3,8`.
#[derive(Clone, Debug)]
struct Epsilons(Vec<f64>);

impl FromStr for Epsilons {
    type Err = String;
    fn from_str(list: &str) -> Result<Epsilons, String> {
        let parse = |e: &str| e.trim().parse().map_err(|_| format!("{e:?} is not a number"));
        list.split(',').filter(|e| !e.trim().is_empty()).map(parse).collect::<Result<_, _>>().map(Epsilons)
    }
}

impl fmt::Display for Epsilons {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(f64::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// `--sampling-rate`: a probability the device's coin accepts.
fn sampling_rate(s: &str) -> Result<f64, String> {
    let q: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if q > 0.0 && q <= 1.0 { Ok(q) } else { Err(format!("{q} is outside (0, 1]")) }
}

impl RunArgs {
    fn apply(&self, opts: &mut Options) {
        opts.rounds = self.rounds;
        opts.clients_per_round = self.clients;
        opts.sampling_rate = self.sampling_rate;
        opts.centralized_epochs = self.epochs;
        opts.eval_every = self.eval_every.max(1);
        opts.clip_norm = self.clip;
        opts.epsilons = self.epsilons.0.clone();
        opts.local_noise = self.local_noise;
        self.server.apply(opts);
    }
}

impl ServerArgs {
    fn apply(&self, opts: &mut Options) {
        opts.server = match self.server {
            Server::Fedavg => Optimizer::FedAvg { lr: self.server_lr.unwrap_or(1.0) },
            Server::Fedadam => Optimizer::FedAdam { lr: self.server_lr.unwrap_or(0.05), beta1: 0.9, beta2: 0.99, tau: 1e-3 },
        };
        opts.train.epochs = self.local_epochs;
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let Common { data, out, seed } = cli.common;
    let mut opts = Options::new(data);
    opts.seed = seed;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    match cli.command {
        Some(Command::Split) => hearth_sim::write_split(&opts, &out),
        Some(Command::Scale { devices, server }) => {
            server.apply(&mut opts);
            scale(&opts, devices, &out)
        }
        None => runs(opts, cli.run, &out),
    }
}

fn scale(opts: &Options, devices: usize, out: &Path) -> Result<(), String> {
    let (seconds, peak) = hearth_sim::scale(opts, devices)?;
    let threads = rayon::current_num_threads();
    let record = serde_json::json!({"devices": devices, "round_s": seconds, "peak_rss_bytes": peak, "threads": threads, "seed": opts.seed});
    std::fs::write(out.join("scale.json"), serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    println!(
        "one round with {devices} devices: {seconds:.1} s on {threads} threads, peak RSS {:.0} MiB",
        peak as f64 / 1048576.0
    );
    Ok(())
}

fn runs(mut opts: Options, args: RunArgs, out: &Path) -> Result<(), String> {
    args.apply(&mut opts);
    let mut external = Vec::new();
    for file in &args.external {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let runs: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        external.extend(runs.into_iter().map(external_run).collect::<Result<Vec<_>, _>>()?);
    }
    let report = hearth_sim::run(&opts, external)?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(out.join("report.json"), json).map_err(|e| e.to_string())?;
    plot::metrics_vs_round(&report.runs, &out.join("metrics_vs_round.png"))?;
    plot::utility_vs_epsilon(&report.runs, &out.join("utility_vs_epsilon.png"))?;
    print!("{}", table(&report.runs));
    println!("wrote {}/report.json, metrics_vs_round.png, utility_vs_epsilon.png", out.display());
    Ok(())
}

/// A run written by an external baseline script: name and the four metrics.
fn external_run(v: serde_json::Value) -> Result<Run, String> {
    let num = |k: &str| v[k].as_f64().ok_or_else(|| format!("external run lacks {k}: {v}"));
    let name = v["name"].as_str().ok_or("external run lacks a name")?;
    let metrics =
        hearth_sim::metrics::Metrics { auc: num("auc")?, logloss: num("logloss")?, hr10: num("hr10")?, ndcg10: num("ndcg10")? };
    Ok(Run::new(name, metrics, 0, num("wall_s")?, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// No flags: the library's options, so the flags' defaults cannot drift from them.
    #[test]
    fn no_flags_means_the_library_defaults() {
        let cli = Cli::try_parse_from(["hearth-sim"]).unwrap();
        let mut opts = Options::new(PathBuf::new());
        opts.seed = cli.common.seed;
        cli.run.apply(&mut opts);
        assert_eq!(format!("{opts:?}"), format!("{:?}", defaults()));
        assert_eq!(cli.common.data, Path::new("../shared/data/movielens-small"));
    }

    #[test]
    fn flags_after_a_subcommand() {
        let cli = Cli::try_parse_from(["hearth-sim", "scale", "--data", "d", "--devices", "12", "--out", "o"]).unwrap();
        assert_eq!((cli.common.data, cli.common.out), (PathBuf::from("d"), PathBuf::from("o")));
        assert!(matches!(cli.command, Some(Command::Scale { devices: 12, .. })));
        assert!(Cli::try_parse_from(["hearth-sim", "--rounds", "3", "split"]).is_err());
        let cli = Cli::try_parse_from(["hearth-sim", "--epsilons", " 1, 2.5,", "--external", "a", "--external", "b"]).unwrap();
        assert_eq!(cli.run.epsilons.0, [1.0, 2.5]);
        assert_eq!(cli.run.external, [PathBuf::from("a"), PathBuf::from("b")]);
        assert!(Cli::try_parse_from(["hearth-sim", "--epsilons", "1,x"]).is_err());
    }
}
