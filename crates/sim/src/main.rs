//! `hearth-sim [--data DIR] [--out DIR] [--seed N] [--rounds R] [--clients K] [--epochs E]
//!  [--eval-every N] [--clip C] [--server fedavg|fedadam] [--server-lr L] [--local-epochs E]
//!  [--epsilons 1,3,8]
//!  [--external FILE]...`: every run, one report.
//! `hearth-sim split [--data DIR] [--out DIR] [--seed N]`: writes the train/test split and the
//! sampled candidates as CSV for external baselines.
//! `hearth-sim scale [--devices N]`: times one federated round with N simulated devices.

use hearth_core::learning::server::Optimizer;
use hearth_sim::report::{Run, table};
use hearth_sim::{Options, plot};
use std::path::PathBuf;
use std::process::ExitCode;

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

fn parsed<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> Result<T, String> {
    arg(args, flag).map_or(Ok(default), |v| v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let data = PathBuf::from(arg(args, "--data").unwrap_or_else(|| "../shared/data/movielens-small".into()));
    let out = PathBuf::from(arg(args, "--out").unwrap_or_else(|| "target/sim".into()));
    let mut opts = Options::new(data);
    opts.seed = parsed(args, "--seed", opts.seed)?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    if args.first().map(String::as_str) == Some("split") {
        return hearth_sim::write_split(&opts, &out);
    }
    opts.rounds = parsed(args, "--rounds", opts.rounds)?;
    opts.clients_per_round = parsed(args, "--clients", opts.clients_per_round)?;
    opts.centralized_epochs = parsed(args, "--epochs", opts.centralized_epochs)?;
    opts.eval_every = parsed(args, "--eval-every", opts.eval_every)?.max(1);
    opts.clip_norm = parsed(args, "--clip", opts.clip_norm)?;
    opts.server = match (arg(args, "--server").as_deref(), opts.server) {
        (None, server) => server,
        (Some("fedavg"), _) => Optimizer::FedAvg { lr: parsed(args, "--server-lr", 1.0)? },
        (Some("fedadam"), _) => Optimizer::FedAdam { lr: parsed(args, "--server-lr", 0.05)?, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
        (Some(other), _) => return Err(format!("--server: {other:?} is not fedavg or fedadam")),
    };
    opts.train.epochs = parsed(args, "--local-epochs", opts.train.epochs)?;
    if let Some(list) = arg(args, "--epsilons") {
        opts.epsilons = list
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.trim().parse().map_err(|_| format!("--epsilons: {e:?}")))
            .collect::<Result<_, _>>()?;
    }
    if args.first().map(String::as_str) == Some("scale") {
        let devices = parsed(args, "--devices", 10_000usize)?;
        let (seconds, peak) = hearth_sim::scale(&opts, devices)?;
        let record = serde_json::json!({"devices": devices, "round_s": seconds, "peak_rss_bytes": peak, "threads": rayon::current_num_threads(), "seed": opts.seed});
        std::fs::write(out.join("scale.json"), serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        println!(
            "one round with {devices} devices: {seconds:.1} s on {} threads, peak RSS {:.0} MiB",
            rayon::current_num_threads(),
            peak as f64 / 1048576.0
        );
        return Ok(());
    }
    let mut external = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a == "--external" {
            let file = args.get(i + 1).ok_or("--external needs a file")?;
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let runs: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
            external.extend(runs.into_iter().map(external_run).collect::<Result<Vec<_>, _>>()?);
        }
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
