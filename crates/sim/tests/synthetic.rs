//! The whole simulation on the shared synthetic dataset (tests/common): checks the loader, that
//! personalization is learned, that the report has every run, and that a seed reproduces it
//! exactly.

mod common;

use common::{options, scratch, synthetic};
use hearth_sim::data::Dataset;
use hearth_sim::run;

#[test]
fn loader_reads_quoted_titles_and_optional_tags() {
    let base = scratch("sim-loader");
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
    let data = synthetic(&scratch("sim-synthetic"), None);
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
    // Its ε names its observer; one curious server sees every round a device joined (here all
    // of them, q = 1), and without local noise colluding servers see everything.
    assert_eq!(dp.threat, Some("published models"));
    let noise = dp.noise.as_ref().unwrap();
    assert!(noise.published_epsilon <= 8.0 && noise.published_epsilon > 7.99, "{noise:?}");
    assert!(dp.curious_server_epsilon.unwrap() > 8.0, "{dp:?}");
    assert_eq!(dp.collusion_epsilon, Some(f64::INFINITY));
    assert_eq!((noise.rounds_joined_mean, noise.rounds_joined_max), (4.0, 4));
    let participation = dp.participation.as_ref().unwrap();
    assert_eq!((participation.sampling_rate, &participation.per_round[..]), (1.0, &[40; 4][..]));
    assert_eq!(by("federated").history.iter().map(|p| p.round).collect::<Vec<_>>(), [0, 2, 4]);

    // Both plots render as PNG files.
    let out = scratch("sim-plots");
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
