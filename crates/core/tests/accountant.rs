//! The privacy accountant agrees with Google's dp-accounting on every committed setting (central
//! ε from its RdpAccountant, local ε from its PLD accountant, noise multipliers from its
//! calibration), reduces to the plain Gaussian mechanism at q = 1, moves the right way with each
//! parameter, and rejects every invalid parameter with the typed error.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use hearth_core::HearthError;
use hearth_core::privacy::accountant::{
    Deployment, Sampling, epsilon, local_epsilon, noise_for, orders, rdp, report, sampling_rate,
};
use serde::Deserialize;

/// Written by `crates/core/tests/vectors/dp_fixtures.py`; regenerate it rather than editing it.
const VECTORS: &str = include_str!("vectors/accountant.json");

/// Agreement required with dp-accounting, relative.
const TOLERANCE: f64 = 0.01;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixtures {
    generator: String,
    dp_accounting_version: String,
    central: Vec<Central>,
    local: Vec<Local>,
    noise_for: Vec<NoiseFor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Central {
    deployment: Deployment,
    epsilon: f64,
    order: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Local {
    noise_multiplier: f64,
    delta: f64,
    epsilon: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoiseFor {
    target_epsilon: f64,
    population: u64,
    sampling: Sampling,
    rounds: u64,
    delta: f64,
    noise_multiplier: f64,
}

fn fixtures() -> Fixtures {
    serde_json::from_str(VECTORS).expect("accountant.json parses")
}

fn relative(ours: f64, theirs: f64) -> f64 {
    (ours - theirs).abs() / theirs.abs()
}

/// Fails listing every setting off by more than the tolerance; prints the worst error.
fn check_all(what: &str, cases: impl Iterator<Item = (String, f64, f64)>) {
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for (label, ours, theirs) in cases {
        let err = relative(ours, theirs);
        worst = worst.max(err);
        if err > TOLERANCE {
            failures.push(format!("{label}: ours {ours}, dp-accounting {theirs} ({:.3}%)", 100.0 * err));
        }
    }
    println!("{what}: worst relative error {worst:.2e}");
    assert!(failures.is_empty(), "{what}: {} settings differ:\n{}", failures.len(), failures.join("\n"));
}

fn deployment(population: u64, sampling: Sampling, rounds: u64, noise_multiplier: f64, delta: f64) -> Deployment {
    Deployment { population, sampling, rounds, noise_multiplier, delta }
}

fn is_privacy_error<T: std::fmt::Debug>(result: hearth_core::Result<T>) -> bool {
    matches!(result, Err(HearthError::Privacy(_)))
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fixtures_cover_the_intended_range() {
    let f = fixtures();
    assert_eq!(f.generator, "crates/core/tests/vectors/dp_fixtures.py");
    assert!(!f.dp_accounting_version.is_empty());
    assert!(f.central.len() >= 24 && f.local.len() >= 8 && f.noise_for.len() >= 4);
    let eps = || f.central.iter().map(|c| c.epsilon);
    assert!(eps().fold(f64::INFINITY, f64::min) <= 0.5, "no central setting with ε near 0.5");
    assert!(eps().fold(0.0, f64::max) >= 20.0, "no central setting with ε near 20");
    let populations = || f.central.iter().map(|c| c.deployment.population);
    assert!(populations().min() <= Some(1_000) && populations().max() >= Some(10_000_000));
    let rounds = || f.central.iter().map(|c| c.deployment.rounds);
    assert!(rounds().min() == Some(1) && rounds().max() >= Some(10_000));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn central_epsilon_matches_rdp_accountant() {
    let f = fixtures();
    check_all("central ε", f.central.iter().map(|c| (format!("{:?}", c.deployment), epsilon(&c.deployment).unwrap(), c.epsilon)));
    // The optimal order must be theirs or its neighbour in the grid: dp-accounting sums the
    // fractional-order series by magnitude, a slight overestimate that can tip a near-tie.
    let grid: Vec<f64> = orders().collect();
    let index = |a: f64| grid.iter().position(|&o| o == a).expect("an order of the grid");
    for c in &f.central {
        let ours = report(&c.deployment).unwrap().best_order;
        assert!(index(ours).abs_diff(index(c.order)) <= 1, "order {ours}, theirs {} for {:?}", c.order, c.deployment);
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn local_epsilon_matches_pld_accountant() {
    check_all(
        "local ε",
        fixtures().local.iter().map(|l| {
            let label = format!("z {} δ {}", l.noise_multiplier, l.delta);
            (label, local_epsilon(l.noise_multiplier, l.delta).unwrap(), l.epsilon)
        }),
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn noise_for_matches_calibration() {
    check_all(
        "noise_for z",
        fixtures().noise_for.iter().map(|n| {
            let z = noise_for(n.target_epsilon, n.population, n.sampling, n.rounds, n.delta).unwrap();
            // The answer meets the target, and only just.
            let d = deployment(n.population, n.sampling, n.rounds, z, n.delta);
            assert!(epsilon(&d).unwrap() <= n.target_epsilon);
            (format!("target ε {} {:?}", n.target_epsilon, n.sampling), z, n.noise_multiplier)
        }),
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn full_sampling_is_the_plain_gaussian_mechanism() {
    for z in [0.5, 1.0, 3.0] {
        for a in orders() {
            let closed = a / (2.0 * z * z);
            assert_eq!(rdp(1.0, z, a).unwrap(), closed);
            // The series path, just below q = 1, must approach the same value.
            let near = rdp(1.0 - 1e-9, z, a).unwrap();
            assert!(relative(near, closed) < 1e-6, "z {z} α {a}: series {near}, closed form {closed}");
        }
        // ε is the closed form converted and minimised over the orders.
        let (rounds, delta) = (7u64, 1e-6f64);
        let want = orders()
            .map(|a| rounds as f64 * a / (2.0 * z * z) + (-1.0 / a).ln_1p() - (delta.ln() + a.ln()) / (a - 1.0))
            .fold(f64::INFINITY, f64::min);
        let got = epsilon(&deployment(500, Sampling::ClientsPerRound(500), rounds, z, delta)).unwrap();
        assert!(relative(got, want) < 1e-12, "z {z}: {got} vs {want}");
        // The RDP bound can only be looser than the exact analytic Gaussian ε of one release.
        let one = epsilon(&deployment(500, Sampling::Rate(1.0), 1, z, delta)).unwrap();
        assert!(local_epsilon(z, delta).unwrap() < one);
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn epsilon_moves_the_right_way() {
    let base = deployment(100_000, Sampling::Rate(0.01), 1_000, 1.0, 1e-6);
    let eps = |d: &Deployment| epsilon(d).unwrap();
    let e0 = eps(&base);
    for z in [0.6, 0.8, 1.2, 2.0] {
        let e = eps(&Deployment { noise_multiplier: z, ..base.clone() });
        assert!(if z < 1.0 { e > e0 } else { e < e0 }, "z {z}: ε {e} vs {e0}");
    }
    for rounds in [10, 100, 5_000] {
        let e = eps(&Deployment { rounds, ..base.clone() });
        assert!(if rounds < 1_000 { e < e0 } else { e > e0 }, "rounds {rounds}: ε {e} vs {e0}");
    }
    for q in [0.001, 0.005, 0.05, 1.0] {
        let e = eps(&Deployment { sampling: Sampling::Rate(q), ..base.clone() });
        assert!(if q < 0.01 { e < e0 } else { e > e0 }, "q {q}: ε {e} vs {e0}");
    }
    for z in [0.5, 1.0, 2.0] {
        assert!(local_epsilon(z, 1e-6).unwrap() > local_epsilon(z * 1.1, 1e-6).unwrap());
    }
    // Negligible noise bounds nothing: an astronomic or infinite ε, not a hang or NaN.
    let tiny = Deployment { noise_multiplier: 1e-100, ..base.clone() };
    assert!(eps(&tiny) > 1e100);
    assert!(local_epsilon(1e-100, 1e-6).unwrap() > 1e100);
    // The report repeats what it was given and agrees with the functions.
    let r = report(&base).unwrap();
    assert_eq!((r.central_epsilon, r.sampling_rate, r.rounds, r.population), (e0, 0.01, 1_000, 100_000));
    assert_eq!(r.local_epsilon, local_epsilon(1.0, 1e-6).unwrap());
    assert!(orders().any(|a| a == r.best_order));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn invalid_parameters_are_rejected() {
    let good = deployment(1_000, Sampling::ClientsPerRound(10), 100, 1.0, 1e-5);
    assert!(epsilon(&good).is_ok());
    let with = |edit: fn(&mut Deployment)| {
        let mut d = good.clone();
        edit(&mut d);
        d
    };
    let bad = [
        with(|d| d.population = 0),
        with(|d| d.sampling = Sampling::ClientsPerRound(1_001)),
        with(|d| d.sampling = Sampling::ClientsPerRound(0)),
        with(|d| d.sampling = Sampling::Rate(0.0)),
        with(|d| d.sampling = Sampling::Rate(1.5)),
        with(|d| d.sampling = Sampling::Rate(-0.1)),
        with(|d| d.sampling = Sampling::Rate(f64::NAN)),
        with(|d| d.noise_multiplier = 0.0),
        with(|d| d.noise_multiplier = -1.0),
        with(|d| d.noise_multiplier = f64::INFINITY),
        with(|d| d.noise_multiplier = f64::NAN),
        with(|d| d.delta = 0.0),
        with(|d| d.delta = 1.0),
        with(|d| d.delta = f64::NAN),
        with(|d| d.rounds = 0),
    ];
    for d in &bad {
        assert!(is_privacy_error(epsilon(d)), "epsilon accepted {d:?}");
        assert!(is_privacy_error(report(d)), "report accepted {d:?}");
    }
    assert!(is_privacy_error(sampling_rate(0, Sampling::Rate(0.5))));
    for (z, delta) in [(0.0, 1e-5), (f64::NAN, 1e-5), (1.0, 0.0), (1.0, 1.0), (1.0, -1e-5)] {
        assert!(is_privacy_error(local_epsilon(z, delta)), "local_epsilon accepted z {z} δ {delta}");
    }
    for (q, z, a) in [(0.0, 1.0, 2.0), (1.1, 1.0, 2.0), (0.5, 0.0, 2.0), (0.5, 1.0, 1.0), (0.5, 1.0, f64::INFINITY)] {
        assert!(is_privacy_error(rdp(q, z, a)), "rdp accepted q {q} z {z} α {a}");
    }
    let (pop, s) = (1_000, Sampling::ClientsPerRound(10));
    // Not a target: zero, negative, NaN, infinite.
    for target in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(is_privacy_error(noise_for(target, pop, s, 100, 1e-5)), "noise_for accepted target {target}");
    }
    // Unreachable: below what any order can certify at this δ, or met without any real noise.
    assert!(is_privacy_error(noise_for(1e-4, pop, s, 100, 1e-5)));
    assert!(is_privacy_error(noise_for(1e9, pop, s, 100, 1e-5)));
    // Invalid deployments are rejected through noise_for too.
    assert!(is_privacy_error(noise_for(1.0, 0, s, 100, 1e-5)));
    assert!(is_privacy_error(noise_for(1.0, pop, s, 0, 1e-5)));
    assert!(is_privacy_error(noise_for(1.0, pop, s, 100, 2.0)));
}
