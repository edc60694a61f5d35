//! A small synthetic dataset in MovieLens layout with planted tastes (every user likes one
//! genre), and options sized for it, shared by the integration tests.

use hearth_core::model::params::Arch;
use hearth_sim::Options;
use std::fmt::Write;
use std::path::{Path, PathBuf};

const GENRES: [&str; 4] = ["Comedy", "Drama", "Horror", "Sci-Fi"];

/// 40 users, 120 movies (a quarter per genre), 30 ratings each over time: 5 stars for the
/// user's genre, 2 otherwise. Tags optional, titles with commas quoted.
pub fn synthetic(dir: &Path, tags: Option<&str>) -> PathBuf {
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

/// Options sized for the synthetic data: a small model, 4 rounds, one DP run at ε 8.
pub fn options(data: PathBuf) -> Options {
    let mut o = Options::new(data);
    o.arch = Arch { buckets: 1024, dim: 8, hidden: 8 };
    o.user_slots = 16;
    o.rounds = 4;
    o.centralized_epochs = 4;
    o.eval_every = 2;
    o.epsilons = vec![8.0];
    o
}

/// A path for one test's files under the integration tests' scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}
