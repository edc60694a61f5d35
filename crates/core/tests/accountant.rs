//! The privacy accountant agrees with its oracles on every committed setting and moves the right
//! way with each parameter, and rejects every invalid parameter with the typed error.
//!
//! Two fixture files, each written by a Python script beside it (never run by the tests):
//! - `vectors/accountant.json` (`dp_fixtures.py`): Google's dp-accounting on the continuous
//!   accountant: central ε from its RdpAccountant, local ε from its PLD accountant (at z/2, the
//!   sensitivity-2 upload), noise multipliers from its calibration.
//! - `vectors/accountant_oracles.json` (`accountant_oracles.py`): independent computations from
//!   the papers' formulas for the two-server accounting: Zhu & Wang's bound with exact binomials
//!   and mpmath, the zCDP conversion by scipy's Brent search, the analytic Gaussian with
//!   sensitivity 2 in 50-digit mpmath, and A_α of the sampled Gaussian by numerical integration,
//!   with dp-accounting beside them where it has the mechanism.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use hearth_core::HearthError;
use hearth_core::privacy::accountant::{
    Deployment, Sampling, epsilon, gaussian_rho, local_epsilon, noise_for, orders, published_epsilon, rdp, report, rounds_within,
    sampling_rate, seen_epsilon, subsampled_rdp, zcdp_epsilon,
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

/// Fails listing every setting off by more than `tolerance` from `oracle`; prints and returns the
/// worst relative error. Fails on no settings too, so that an emptied fixture cannot pass.
fn check_within(what: &str, oracle: &str, tolerance: f64, cases: impl Iterator<Item = (String, f64, f64)>) -> f64 {
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    let mut count = 0;
    for (label, ours, theirs) in cases {
        count += 1;
        let err = relative(ours, theirs);
        worst = worst.max(err);
        if err.is_nan() || err > tolerance {
            failures.push(format!("{label}: ours {ours}, {oracle} {theirs} ({err:.3e})"));
        }
    }
    println!("{what}: worst relative error {worst:.2e} over {count} settings");
    assert!(count > 0, "{what}: no settings");
    assert!(failures.is_empty(), "{what}: {} settings differ:\n{}", failures.len(), failures.join("\n"));
    worst
}

/// `check_within` dp-accounting to 1%.
fn check_all(what: &str, cases: impl Iterator<Item = (String, f64, f64)>) {
    check_within(what, "dp-accounting", TOLERANCE, cases);
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

/// The PLD accountant was given GaussianDpEvent(z/2): replace-one neighbours, sensitivity 2.
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
        // local_epsilon has sensitivity 2, which at noise z is sensitivity 1 at z/2.
        let one = epsilon(&deployment(500, Sampling::Rate(1.0), 1, z / 2.0, delta)).unwrap();
        assert!(local_epsilon(z, delta).unwrap() < one);
        // Sensitivity 2 costs more than the sensitivity-1 release at the same z.
        let same_z = epsilon(&deployment(500, Sampling::Rate(1.0), 1, z, delta)).unwrap();
        assert!(local_epsilon(z, delta).unwrap() > same_z, "z {z}");
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

/// Written by `crates/core/tests/vectors/accountant_oracles.py`; regenerate it rather than editing it.
const ORACLES: &str = include_str!("vectors/accountant_oracles.json");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Oracles {
    generator: String,
    dp_accounting_version: String,
    mpmath_version: String,
    scipy_version: String,
    published: Vec<Published>,
    zcdp: Vec<Zcdp>,
    seen: Vec<Seen>,
    local: Vec<Local>,
    fractional: Vec<Fractional>,
    outside: Vec<Outside>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Published {
    sampling_rate: f64,
    noise_multiplier: f64,
    rounds: u64,
    delta: f64,
    epsilon: f64,
    order: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Zcdp {
    rho: f64,
    delta: f64,
    epsilon: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seen {
    /// (noise multiplier, rounds joined at it).
    runs: Vec<(f64, usize)>,
    delta: f64,
    epsilon: f64,
    order: f64,
    dp_accounting_epsilon: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fractional {
    sampling_rate: f64,
    noise_multiplier: f64,
    order: f64,
    rdp: f64,
    dp_accounting_rdp: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outside {
    sampling_rate: f64,
    noise_multiplier: f64,
    rounds: u64,
    delta: f64,
    orders: Vec<f64>,
    /// Exact RDP of one round at each of `orders`.
    rdp: Vec<f64>,
    epsilon: f64,
    order: f64,
    dp_accounting_epsilon: f64,
    dp_accounting_order: f64,
}

fn oracles() -> Oracles {
    serde_json::from_str(ORACLES).expect("accountant_oracles.json parses")
}

impl Seen {
    fn noise_multipliers(&self) -> Vec<f64> {
        self.runs.iter().flat_map(|&(z, count)| std::iter::repeat_n(z, count)).collect()
    }
}

/// The (ε, δ) conversion at one order, as `epsilon` applies it.
fn conversion(rdp: f64, a: f64, delta: f64) -> f64 {
    rdp + (-1.0 / a).ln_1p() - (delta.ln() + a.ln()) / (a - 1.0)
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn oracles_cover_the_intended_range() {
    let o = oracles();
    assert_eq!(o.generator, "crates/core/tests/vectors/accountant_oracles.py");
    assert!(!o.dp_accounting_version.is_empty() && !o.mpmath_version.is_empty() && !o.scipy_version.is_empty());
    assert!(o.published.len() >= 10 && o.zcdp.len() >= 10 && o.seen.len() >= 10 && o.local.len() >= 10);
    assert!(o.fractional.len() >= 10 && o.outside.len() >= 4);
    let published = || o.published.iter().map(|p| p.epsilon);
    assert!(published().fold(f64::INFINITY, f64::min) <= 0.2 && published().fold(0.0, f64::max) >= 10.0);
    // Sampled and unsampled, one round and thousands, orders low and beyond 256.
    assert!(o.published.iter().any(|p| p.sampling_rate == 1.0) && o.published.iter().any(|p| p.sampling_rate <= 1e-3));
    assert!(o.published.iter().any(|p| p.rounds == 1) && o.published.iter().any(|p| p.rounds >= 10_000));
    assert!(o.published.iter().any(|p| p.order > 256) && o.published.iter().any(|p| p.order <= 4));
    // Mixed noise in one history, and long histories.
    assert!(o.seen.iter().any(|s| s.runs.len() > 1) && o.seen.iter().any(|s| s.noise_multipliers().len() >= 1_000));
    assert!(o.local.iter().any(|l| l.noise_multiplier == 1.0 && l.delta == 1e-6));
    assert!(o.fractional.iter().all(|f| f.order.fract() != 0.0));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn published_epsilon_matches_zhu_wang_oracle() {
    // The oracle sums the same bound term by term with exact binomials in 60-digit arithmetic;
    // what is left is the Rust code's floating-point rounding.
    let worst = check_within(
        "published ε",
        "Zhu & Wang oracle",
        1e-12,
        oracles().published.iter().map(|p| {
            let label = format!("q {} z {} rounds {} δ {}", p.sampling_rate, p.noise_multiplier, p.rounds, p.delta);
            (label, published_epsilon(p.sampling_rate, p.noise_multiplier, p.rounds, p.delta).unwrap(), p.epsilon)
        }),
    );
    assert!(worst < 1e-12);
    // Per order too, at the order that won.
    for p in &oracles().published {
        let rho = gaussian_rho(1.0, p.noise_multiplier).unwrap();
        let rdp = subsampled_rdp(p.sampling_rate, rho, p.order).unwrap();
        let eps = conversion(p.rounds as f64 * rdp, f64::from(p.order), p.delta).max(0.0);
        assert!(relative(eps, p.epsilon) < 1e-12, "order {}: {eps} vs {}", p.order, p.epsilon);
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn zcdp_epsilon_matches_brent_minimisation() {
    check_within(
        "zCDP ε",
        "scipy",
        1e-12,
        oracles().zcdp.iter().map(|z| (format!("ρ {} δ {}", z.rho, z.delta), zcdp_epsilon(z.rho, z.delta).unwrap(), z.epsilon)),
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn seen_epsilon_matches_zcdp_oracle_and_dp_accounting() {
    let o = oracles();
    check_within(
        "seen ε",
        "scipy",
        1e-12,
        o.seen
            .iter()
            .map(|s| (format!("{:?} δ {}", s.runs, s.delta), seen_epsilon(&s.noise_multipliers(), s.delta).unwrap(), s.epsilon)),
    );
    // dp-accounting composes the same Rényi curves, α·Σ 2/z², but converts only on its grid of
    // orders: the continuous minimum can only be lower, and the grid is fine enough that it is
    // not much lower.
    let worst = check_within(
        "seen ε vs dp-accounting",
        "dp-accounting",
        0.01,
        o.seen.iter().map(|s| {
            let ours = seen_epsilon(&s.noise_multipliers(), s.delta).unwrap();
            assert!(
                ours <= s.dp_accounting_epsilon,
                "{:?}: ours {ours} above dp-accounting's {}",
                s.runs,
                s.dp_accounting_epsilon
            );
            (format!("{:?} δ {}", s.runs, s.delta), ours, s.dp_accounting_epsilon)
        }),
    );
    // Some setting must fall between the grid's orders, or this comparison shows nothing.
    assert!(worst > 1e-6, "the continuous minimum never beat the grid");
    assert!(o.seen.iter().any(|s| s.order.fract() != 0.0 && (10.0 * s.order).fract() != 0.0));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn local_epsilon_matches_analytic_gaussian_oracle() {
    let o = oracles();
    check_within(
        "local ε (sensitivity 2)",
        "mpmath",
        1e-10,
        o.local.iter().map(|l| {
            (format!("z {} δ {}", l.noise_multiplier, l.delta), local_epsilon(l.noise_multiplier, l.delta).unwrap(), l.epsilon)
        }),
    );
    // The headline figure: one upload at z = 1 is ε ≈ 11.0 at δ = 1e-6, not the 4.89 that
    // sensitivity 1 gave.
    let e = local_epsilon(1.0, 1e-6).unwrap();
    assert!((e - 11.0).abs() < 0.05, "z 1 δ 1e-6: {e}");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fractional_orders_match_numerical_integral() {
    let o = oracles();
    check_within(
        "fractional-order RDP",
        "numerical integral",
        1e-9,
        o.fractional.iter().map(|f| {
            let label = format!("q {} z {} α {}", f.sampling_rate, f.noise_multiplier, f.order);
            (label, rdp(f.sampling_rate, f.noise_multiplier, f.order).unwrap(), f.rdp)
        }),
    );
    // dp-accounting adds the magnitudes of the alternating series: never below the integral,
    // and well above it somewhere among these settings.
    let mut worst = 0.0f64;
    for f in &o.fractional {
        assert!(f.dp_accounting_rdp >= f.rdp * (1.0 - 1e-12), "dp-accounting below the integral at {}", f.order);
        worst = worst.max(f.dp_accounting_rdp / f.rdp - 1.0);
    }
    assert!(worst > 0.1, "dp-accounting's overstatement is gone ({worst:.3}): update the module doc");
}

/// Outside the committed deployments of `accountant.json` dp-accounting's ε can be well above
/// Hearth's: at large q and many rounds a low fractional order wins, where dp-accounting's
/// magnitude sum overstates A_α. Hearth's RDP matches the exact integral at every order it keeps
/// there. Both drop the orders whose series does not settle within 1000 terms (the lowest ones
/// at these settings), so both can be above the exact ε over the whole grid: conservative, and
/// measured here.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn outside_the_fixtures_hearth_is_exact_where_dp_accounting_overstates() {
    let o = oracles();
    let mut largest_gap = 0.0f64;
    for x in &o.outside {
        assert_eq!(x.orders, orders().collect::<Vec<_>>());
        let ours: Vec<f64> = x.orders.iter().map(|&a| rdp(x.sampling_rate, x.noise_multiplier, a).unwrap()).collect();
        check_within(
            &format!("RDP per order at q {} z {}", x.sampling_rate, x.noise_multiplier),
            "exact",
            1e-9,
            x.orders
                .iter()
                .zip(&ours)
                .zip(&x.rdp)
                .filter(|((_, r), _)| r.is_finite())
                .map(|((a, &r), &e)| (format!("α {a}"), r, e)),
        );
        // The ε is the exact RDP's over the orders Hearth keeps.
        let d = deployment(1_000_000, Sampling::Rate(x.sampling_rate), x.rounds, x.noise_multiplier, x.delta);
        let (eps, order) = (epsilon(&d).unwrap(), report(&d).unwrap().best_order);
        let want = x
            .orders
            .iter()
            .zip(&ours)
            .zip(&x.rdp)
            .filter(|((_, r), _)| r.is_finite())
            .map(|((&a, _), &e)| conversion(x.rounds as f64 * e, a, x.delta))
            .fold(f64::INFINITY, f64::min);
        assert!(relative(eps, want) < 1e-9, "{:?}: ε {eps}, exact over kept orders {want}", d);
        // Never below the truth, never above dp-accounting.
        assert!(eps >= x.epsilon * (1.0 - 1e-9) && eps <= x.dp_accounting_epsilon, "{d:?}: {eps}");
        println!(
            "q {} z {} rounds {} δ {}: Hearth {eps:.4} (α {order}), exact over all orders {:.4} (α {}), dp-accounting {:.4} (α {})",
            x.sampling_rate,
            x.noise_multiplier,
            x.rounds,
            x.delta,
            x.epsilon,
            x.order,
            x.dp_accounting_epsilon,
            x.dp_accounting_order
        );
        largest_gap = largest_gap.max(1.0 - eps / x.dp_accounting_epsilon);
    }
    // The module doc quotes this gap.
    assert!(
        largest_gap > 0.1 && largest_gap < 0.2,
        "Hearth below dp-accounting by up to {largest_gap:.3}: update the module doc"
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn published_epsilon_moves_the_right_way() {
    let (q, z, delta) = (0.01, 1.0, 1e-6);
    let eps = |q, z, rounds| published_epsilon(q, z, rounds, delta).unwrap();
    assert_eq!(eps(q, z, 0), 0.0);
    let mut last = 0.0;
    for rounds in [1, 2, 10, 100, 1_000, 10_000] {
        let e = eps(q, z, rounds);
        assert!(e > last, "rounds {rounds}: {e} after {last}");
        last = e;
    }
    let mut last = f64::INFINITY;
    for z in [0.5, 0.8, 1.0, 2.0, 5.0] {
        let e = eps(q, z, 100);
        assert!(e < last, "z {z}: {e} after {last}");
        last = e;
    }
    let mut last = 0.0;
    for q in [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.99, 1.0] {
        let e = eps(q, z, 100);
        assert!(e > last, "q {q}: {e} after {last}");
        last = e;
    }
    // Without sampling the bound is zCDP composition converted on the integer orders, which the
    // continuous conversion can only improve on.
    let full = eps(1.0, 2.0, 10);
    let rho = 10.0 * gaussian_rho(1.0, 2.0).unwrap();
    let zcdp = zcdp_epsilon(rho, delta).unwrap();
    assert!(zcdp <= full && relative(full, zcdp) < 0.01, "{full} vs {zcdp}");
    // Negligible noise bounds nothing.
    assert!(eps(q, 1e-200, 1) == f64::INFINITY);
}

/// Zhu & Wang's general bound holds for any base mechanism, so for the continuous Gaussian
/// (whose exact sampled RDP Hearth also computes) it can only be looser, and it never exceeds the
/// unsampled αρ.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn subsampled_rdp_is_between_the_exact_gaussian_and_no_sampling() {
    for q in [1e-4, 0.01, 0.1, 0.5, 0.9] {
        for z in [0.5, 1.0, 3.0] {
            let rho = gaussian_rho(1.0, z).unwrap();
            for a in [2u32, 3, 5, 10, 32, 100, 256] {
                let bound = subsampled_rdp(q, rho, a).unwrap();
                let exact = rdp(q, z, f64::from(a)).unwrap();
                assert!(bound >= exact * (1.0 - 1e-12), "q {q} z {z} α {a}: {bound} below exact {exact}");
                assert!(bound <= f64::from(a) * rho, "q {q} z {z} α {a}: {bound} above αρ");
            }
            // At order 2 the bound is the exact value: no term is tripled. (1e-9, not 1e-12: the
            // two sum different terms, and wasm32's libm rounds exp and ln differently.)
            assert!(relative(subsampled_rdp(q, rho, 2).unwrap(), rdp(q, z, 2.0).unwrap()) < 1e-9);
        }
    }
    assert_eq!(subsampled_rdp(1.0, 0.3, 7).unwrap(), 7.0 * 0.3);
    assert_eq!(subsampled_rdp(0.5, 0.0, 7).unwrap(), 0.0);
    assert_eq!(subsampled_rdp(0.5, f64::INFINITY, 7).unwrap(), f64::INFINITY);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn zcdp_epsilon_is_the_continuous_minimum() {
    for rho in [1e-8, 1e-4, 0.01, 0.3, 1.0, 7.0, 100.0, 1e6] {
        for delta in [0.5, 1e-3, 1e-6, 1e-12] {
            let eps = zcdp_epsilon(rho, delta).unwrap();
            // A fine geometric grid of α − 1 from 1e-6 to 1e9: no grid point beats the answer,
            // and the best one comes close.
            let grid_min = (0..=15_000)
                .map(|i| 1e-6 * 10f64.powf(f64::from(i) / 1_000.0))
                .map(|t| conversion(rho * (1.0 + t), 1.0 + t, delta))
                .fold(f64::INFINITY, f64::min)
                .max(0.0);
            assert!(eps <= grid_min * (1.0 + 1e-12) + 1e-15, "ρ {rho} δ {delta}: {eps} above the grid's {grid_min}");
            assert!(grid_min - eps <= 1e-5 * grid_min + 1e-15, "ρ {rho} δ {delta}: {eps} far below the grid's {grid_min}");
            // And it never beats the grid of Rényi orders by more than the grid's coarseness.
            let on_orders = orders().map(|a| conversion(rho * a, a, delta)).fold(f64::INFINITY, f64::min).max(0.0);
            assert!(eps <= on_orders, "ρ {rho} δ {delta}");
        }
    }
    assert_eq!(zcdp_epsilon(0.0, 1e-6).unwrap(), 0.0);
    assert_eq!(zcdp_epsilon(f64::INFINITY, 1e-6).unwrap(), f64::INFINITY);
    // The familiar ρ + 2√(ρ ln(1/δ)) (Bun & Steinke 2016) is looser.
    let (rho, delta) = (0.5f64, 1e-6f64);
    assert!(zcdp_epsilon(rho, delta).unwrap() < rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn seen_epsilon_composes_zcdp_with_sensitivity_2() {
    for z in [0.3, 1.0, 2.5, 10.0] {
        let one = seen_epsilon(&[z], 1e-6).unwrap();
        assert_eq!(one, zcdp_epsilon(gaussian_rho(2.0, z).unwrap(), 1e-6).unwrap());
        assert!(relative(gaussian_rho(2.0, z).unwrap(), 2.0 / (z * z)) < 1e-15);
        // Sensitivity 2 at z is sensitivity 1 at z/2.
        assert!(relative(gaussian_rho(2.0, z).unwrap(), gaussian_rho(1.0, z / 2.0).unwrap()) < 1e-15);
        // Ten rounds at z cost what one round at z/√10 does, and more than one round.
        let ten = seen_epsilon(&[z; 10], 1e-6).unwrap();
        assert!(relative(ten, seen_epsilon(&[z / 10f64.sqrt()], 1e-6).unwrap()) < 1e-12);
        assert!(ten > one);
        // The order of the rounds does not matter.
        assert_eq!(seen_epsilon(&[z, 2.0 * z], 1e-6).unwrap(), seen_epsilon(&[2.0 * z, z], 1e-6).unwrap());
    }
    assert_eq!(seen_epsilon(&[], 1e-6).unwrap(), 0.0);
    // No noise at all (colluding servers, no local noise): nothing is bounded.
    assert_eq!(seen_epsilon(&[1.0, 0.0, 1.0], 1e-6).unwrap(), f64::INFINITY);
    assert_eq!(seen_epsilon(&[1e-200], 1e-6).unwrap(), f64::INFINITY);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rounds_within_returns_the_last_affordable_round() {
    let (q, z, delta) = (0.01, 1.0, 1e-6);
    for budget in [2.0, 4.0, 8.0] {
        let r = rounds_within(budget, 100_000, |r| published_epsilon(q, z, r, delta)).unwrap();
        assert!(r > 0 && r < 100_000, "budget {budget}: {r}");
        assert!(published_epsilon(q, z, r, delta).unwrap() <= budget);
        assert!(published_epsilon(q, z, r + 1, delta).unwrap() > budget, "budget {budget}: round {} fits too", r + 1);
        let seen = rounds_within(budget, 1_000, |r| seen_epsilon(&vec![5.0; r as usize], delta)).unwrap();
        assert!(seen_epsilon(&vec![5.0; seen as usize], delta).unwrap() <= budget);
        assert!(seen_epsilon(&vec![5.0; seen as usize + 1], delta).unwrap() > budget);
    }
    // A step function: every boundary, including both ends.
    for last in 0..=20u64 {
        assert_eq!(rounds_within(1.0, 20, |r| Ok(if r <= last { 0.0 } else { 2.0 })).unwrap(), last);
    }
    assert_eq!(rounds_within(0.0, 7, |_| Ok(0.0)).unwrap(), 7);
    assert_eq!(rounds_within(f64::INFINITY, 7, |r| Ok(r as f64)).unwrap(), 7);
    assert!(is_privacy_error(rounds_within(1.0, 7, |_| Ok(2.0))));
    assert!(is_privacy_error(rounds_within(1.0, 7, |_| Ok(f64::NAN))));
    assert!(is_privacy_error(rounds_within(1.0, 7, |r| if r > 3 { published_epsilon(0.0, 1.0, r, 1e-6) } else { Ok(0.0) })));
    for budget in [-1.0, f64::NAN] {
        assert!(is_privacy_error(rounds_within(budget, 7, |_| Ok(0.0))), "budget {budget}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn invalid_two_server_parameters_are_rejected() {
    for (s, z) in [(0.0, 1.0), (-1.0, 1.0), (f64::NAN, 1.0), (f64::INFINITY, 1.0), (1.0, 0.0), (1.0, -1.0), (1.0, f64::NAN)] {
        assert!(is_privacy_error(gaussian_rho(s, z)), "gaussian_rho accepted Δ {s} z {z}");
    }
    for (rho, delta) in [(-1.0, 1e-6), (f64::NAN, 1e-6), (1.0, 0.0), (1.0, 1.0), (1.0, f64::NAN)] {
        assert!(is_privacy_error(zcdp_epsilon(rho, delta)), "zcdp_epsilon accepted ρ {rho} δ {delta}");
    }
    for (q, rho, a) in
        [(0.0, 1.0, 2), (1.5, 1.0, 2), (f64::NAN, 1.0, 2), (0.5, -1.0, 2), (0.5, f64::NAN, 2), (0.5, 1.0, 1), (0.5, 1.0, 0)]
    {
        assert!(is_privacy_error(subsampled_rdp(q, rho, a)), "subsampled_rdp accepted q {q} ρ {rho} α {a}");
    }
    for (q, z, delta) in [(0.0, 1.0, 1e-6), (1.1, 1.0, 1e-6), (0.5, 0.0, 1e-6), (0.5, f64::INFINITY, 1e-6), (0.5, 1.0, 0.0)] {
        // Rejected even for zero rounds, which would otherwise cost nothing.
        for rounds in [0, 10] {
            assert!(is_privacy_error(published_epsilon(q, z, rounds, delta)), "published_epsilon accepted q {q} z {z} δ {delta}");
        }
    }
    for (zs, delta) in
        [(vec![1.0, -1.0], 1e-6), (vec![f64::NAN], 1e-6), (vec![f64::INFINITY], 1e-6), (vec![], 0.0), (vec![1.0], 1.5)]
    {
        assert!(is_privacy_error(seen_epsilon(&zs, delta)), "seen_epsilon accepted {zs:?} δ {delta}");
    }
}
