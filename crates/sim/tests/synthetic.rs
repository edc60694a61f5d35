//! The whole simulation on a small synthetic dataset in MovieLens layout with planted tastes:
//! every user likes one genre. Checks the loader, that personalization is learned, that the
//! report has every run, and that a seed reproduces it exactly.

use hearth_core::model::params::Arch;
use hearth_sim::data::Dataset;
use hearth_sim::{Options, run};
use std::fmt::Write;
use std::path::{Path, PathBuf};

const GENRES: [&str; 4] = ["Comedy", "Drama", "Horror", "Sci-Fi"];

/// 40 users, 120 movies (a quarter per genre), 30 ratings each over time: 5 stars for the
/// user's genre, 2 otherwise. Tags optional, titles with commas quoted.
fn synthetic(dir: &Path, tags: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut movies = "movieId,title,genres\n".to_string();
    for m in 1..=120 {
        let g = GENRES[m % 4];
        let _ = writeln!(movies, "{m},\"Film {m}, The Sequel ({})\",{g}|Extra{}", 1990 + m % 30, m % 3);
    }
    let mut ratings = "userId,movieId,rating,timestamp\n".to_string();
    for u in 1..=40u64 {
        let liked = (u % 4) as usize;
        for i in 0..30u64 {
            let m = 1 + (u * 7 + i * 13) % 120;
            let rating = if m as usize % 4 == liked { 5.0 } else { 2.0 };
            let _ = writeln!(ratings, "{u},{m},{rating},{}", 1_000_000_000 + u * 100_000 + i * 600);
        }
    }
    std::fs::write(dir.join("movies.csv"), movies).unwrap();
    std::fs::write(dir.join("ratings.csv"), ratings).unwrap();
    if let Some(t) = tags {
        std::fs::write(dir.join("tags.csv"), t).unwrap();
    }
    dir.into()
}

fn options(data: PathBuf) -> Options {
    let mut o = Options::new(data);
    o.arch = Arch { buckets: 1024, dim: 8, hidden: 8 };
    o.user_slots = 16;
    o.rounds = 4;
    o.centralized_epochs = 4;
    o.eval_every = 2;
    o.epsilons = vec![8.0];
    o
}

#[test]
fn loader_reads_quoted_titles_and_optional_tags() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-loader");
    let none = Dataset::load(&synthetic(&base.join("none"), None)).unwrap();
    let empty = Dataset::load(&synthetic(&base.join("empty"), Some(""))).unwrap();
    let tagged = Dataset::load(&synthetic(
        &base.join("tagged"),
        Some("userId,movieId,tag,timestamp\n1,5,Funny,1\n2,5,funny,2\n3,5,dark,3\n"),
    ))
    .unwrap();
    assert_eq!((none.movies.len(), none.ratings.len()), (120, 1200));
    assert_eq!(none.movies[0].title, "Film 1, The Sequel (1991)");
    assert_eq!(none.movies[0].genres, vec!["drama", "extra1"]);
    assert!(none.tags.is_empty() && empty.tags.is_empty());
    assert_eq!(tagged.tags[&5], vec!["funny", "dark"]);
    assert!(Dataset::load(&base.join("missing")).is_err());
}

#[test]
fn the_simulation_learns_planted_tastes_and_is_reproducible() {
    let data = synthetic(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-synthetic"), None);
    let opts = options(data);
    let report = run(&opts, Vec::new()).unwrap();
    let names: Vec<&str> = report.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["popularity", "centralized", "federated", "dp-eps-8"]);
    let by = |n: &str| report.runs.iter().find(|r| r.name == n).unwrap();
    for r in &report.runs {
        assert!(r.auc.is_finite() && r.logloss.is_finite() && (0.0..=1.0).contains(&r.hr10), "{}: {r:?}", r.name);
    }
    // Every movie is liked by a quarter of its raters: popularity cannot tell users apart,
    // a personal model can.
    assert!(by("popularity").auc < 0.6, "{:?}", by("popularity"));
    assert!(by("centralized").auc > 0.8, "{:?}", by("centralized"));
    assert!(by("federated").auc > 0.8, "{:?}", by("federated"));
    eprintln!("{}", hearth_sim::report::table(&report.runs));
    let dp = by("dp-eps-8");
    assert_eq!(dp.epsilon, Some(8.0));
    assert!((dp.delta.unwrap() - 1.0 / 40f64.powf(1.1)).abs() < 1e-15);
    assert_eq!(by("federated").history.iter().map(|p| p.round).collect::<Vec<_>>(), [0, 2, 4]);

    // Both plots render as PNG files.
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-plots");
    std::fs::create_dir_all(&out).unwrap();
    hearth_sim::plot::metrics_vs_round(&report.runs, &out.join("rounds.png")).unwrap();
    hearth_sim::plot::utility_vs_epsilon(&report.runs, &out.join("epsilon.png")).unwrap();
    for f in ["rounds.png", "epsilon.png"] {
        let bytes = std::fs::read(out.join(f)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{f}: {} bytes", bytes.len());
    }

    let again = run(&opts, Vec::new()).unwrap();
    for (a, b) in report.runs.iter().zip(&again.runs) {
        assert_eq!((a.auc, a.logloss, a.hr10, a.ndcg10), (b.auc, b.logloss, b.hr10, b.ndcg10), "{} differs between runs", a.name);
    }
}
