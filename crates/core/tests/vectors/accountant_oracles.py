#!/usr/bin/env python3
"""Writes crates/core/tests/vectors/accountant_oracles.json: reference values for the two-server
accounting of hearth-core's privacy accountant (crates/core/src/privacy/accountant.rs), each
computed here from the paper's formula by a different route than the Rust code takes.

The Rust accountant is independent of this script; crates/core/tests/accountant.rs reads the
JSON and checks the accountant against it.

  published   Zhu & Wang 2019 ("Poisson Subsampled Renyi Differential Privacy", ICML, Thm. 6),
              the general upper bound for integer orders, on a base mechanism with RDP
              eps(a) = a * rho, rho = 1 / (2 z^2): summed term by term with exact integer
              binomials and 60-digit mpmath exponentials (the Rust code sums logarithms), capped
              at the unsampled a * rho, times rounds, converted (Canonne, Kamath & Steinke 2020,
              Prop. 12) and minimised over the same integer orders.
  zcdp        rho-zCDP to (eps, delta): the same conversion minimised over real orders by
              scipy's bounded Brent search on ln(a - 1) after a coarse grid (the Rust code solves
              the stationarity condition instead).
  seen        rounds a device joined, as (noise multiplier, count) runs; sensitivity 2 each, so
              rho = sum 2 / z^2, converted as in zcdp. Also dp-accounting's RdpAccountant on the
              same rounds as GaussianDpEvent(z / 2) (sensitivity 2 at noise z is sensitivity 1 at
              z / 2): zCDP composition on its grid of orders, which can only be looser.
  local       the analytic Gaussian mechanism (Balle & Wang 2018, Thm. 8) with sensitivity 2:
              delta(eps) = Phi(1/z - eps z/2) - e^eps Phi(-1/z - eps z/2), solved for eps with
              50-digit mpmath by bisection.
  fractional  A_alpha of the Poisson-subsampled continuous Gaussian (Mironov, Talwar & Zhang
              2019) at fractional orders by numerical integration with 30-digit mpmath:
              A = E_{x ~ N(0, z^2)}[((1 - q) + q e^((2x - 1)/(2 z^2)))^alpha], rdp = ln A/(alpha-1).
              Also dp-accounting's value at the same order, which sums the magnitudes of an
              alternating series and so overstates.
  outside     deployments outside accountant.json where dp-accounting's epsilon is well above
              the exact one: the exact RDP of one round at each of dp-accounting's orders
              (integer orders by the exact binomial sum, fractional ones by the integral above),
              the exact epsilon over all those orders, and dp-accounting's epsilon.

Run it from the repository root (about two minutes):

  python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting==0.6.0 mpmath scipy
  /tmp/dpvenv/bin/python crates/core/tests/vectors/accountant_oracles.py [output-path]
"""

import json
import math
import os
import sys
from importlib.metadata import version

import mpmath as mp
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant
from scipy.optimize import minimize_scalar

# (q, z, rounds, delta) of the published view.
PUBLISHED = [
    (0.001, 1.0, 1_000, 1e-6),
    (0.01, 1.0, 100, 1e-6),
    (0.01, 0.8, 1_000, 1e-8),
    (0.05, 2.0, 500, 1e-6),
    (0.1, 1.5, 100, 1e-5),
    (0.2, 3.0, 50, 1e-7),
    (0.5, 1.0, 10, 1e-5),
    (1.0, 2.0, 10, 1e-6),
    (0.0001, 0.7, 10_000, 1e-9),
    (0.002, 5.0, 2_000, 1e-9),
    (0.9, 4.0, 20, 1e-5),
    (0.03, 1.2, 3_000, 1e-7),
    (0.005, 10.0, 1, 1e-6),
    (0.3, 0.5, 1, 1e-5),
]

# (rho, delta).
ZCDP = [
    (1e-6, 1e-6),
    (1e-3, 1e-5),
    (0.01, 1e-9),
    (0.1, 1e-6),
    (1.0, 1e-5),
    (10.0, 1e-6),
    (100.0, 1e-8),
    (1e4, 1e-6),
    (0.5, 0.1),
    (3.0, 1e-12),
]

# (runs of (noise multiplier, rounds joined at it), delta).
SEEN = [
    ([(1.0, 1)], 1e-6),
    ([(0.5, 1)], 1e-5),
    ([(2.0, 10)], 1e-6),
    ([(4.0, 100)], 1e-8),
    ([(1.0, 1), (2.0, 1), (3.0, 1)], 1e-5),
    ([(8.0, 1_000)], 1e-9),
    ([(1.5, 5), (3.0, 20)], 1e-7),
    ([(20.0, 1)], 1e-6),
    ([(0.3, 1)], 1e-5),
    ([(6.0, 50)], 1e-6),
    ([(0.8, 1), (0.9, 1), (1.0, 1), (1.1, 1)], 1e-9),
    ([(10.0, 10_000)], 1e-6),
]

# (z, delta) of one upload.
LOCAL = [
    (1.0, 1e-6),
    (0.5, 1e-5),
    (0.8, 1e-6),
    (1.0, 1e-5),
    (1.0, 1e-9),
    (1.5, 1e-7),
    (2.0, 1e-5),
    (3.0, 1e-8),
    (4.0, 1e-6),
    (5.0, 1e-9),
    (10.0, 1e-6),
    (0.3, 1e-5),
]

# (q, z, alpha), fractional alpha, mostly large q where the series alternates.
FRACTIONAL = [
    (0.2, 2.0, 1.5),
    (0.1, 1.0, 1.6),
    (0.3, 3.0, 1.7),
    (0.5, 1.0, 2.5),
    (0.9, 2.0, 1.5),
    (0.5, 2.0, 1.9),
    (0.2, 1.0, 1.8),
    (0.3, 0.8, 3.7),
    (0.7, 0.6, 5.3),
    (0.05, 1.0, 4.5),
    (0.01, 0.7, 7.7),
    (0.4, 1.2, 2.2),
    (0.95, 1.5, 1.3),
]

# (q, z, rounds, delta) where dp-accounting's epsilon is 1% to 16% above the exact one.
OUTSIDE = [
    (0.2, 2.0, 10_000, 1e-5),
    (0.1, 1.0, 10_000, 1e-9),
    (0.3, 3.0, 10_000, 1e-5),
    (0.2, 1.0, 1_000, 1e-5),
    (0.5, 2.0, 10_000, 1e-5),
    (0.5, 3.0, 100, 1e-5),
]


def integer_orders():
    return list(range(2, 257)) + list(range(288, 1025, 32))


def rdp_orders():
    # dp-accounting's DEFAULT_RDP_ORDERS, built the same way.
    return [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]


def conversion(rdp, alpha, delta):
    """Canonne, Kamath & Steinke 2020, Prop. 12, in mpmath."""
    alpha = mp.mpf(alpha)
    return rdp + mp.log((alpha - 1) / alpha) - (mp.log(delta) + mp.log(alpha)) / (alpha - 1)


def zhu_wang(q, rho, alpha):
    """Thm. 6 of Zhu & Wang 2019 for eps(l) = l * rho, term by term."""
    if q == 1:
        return alpha * rho
    q, rho = mp.mpf(q), mp.mpf(rho)
    total = (1 - q) ** (alpha - 1) * (alpha * q - q + 1)
    total += math.comb(alpha, 2) * q**2 * (1 - q) ** (alpha - 2) * mp.exp(2 * rho)
    for l in range(3, alpha + 1):
        total += 3 * math.comb(alpha, l) * (1 - q) ** (alpha - l) * q**l * mp.exp((l - 1) * l * rho)
    return min(mp.log(total) / (alpha - 1), alpha * rho)


def published(q, z, rounds, delta):
    mp.mp.dps = 60
    rho = mp.mpf(1) / (2 * mp.mpf(z) ** 2)
    eps, order = min((conversion(rounds * zhu_wang(q, rho, a), a, delta), a) for a in integer_orders())
    return {"sampling_rate": q, "noise_multiplier": z, "rounds": rounds, "delta": delta,
            "epsilon": float(max(eps, 0)), "order": order}


def zcdp_eps(rho, delta):
    """Minimise the conversion over real alpha > 1, searching u = ln(alpha - 1)."""
    l = -math.log(delta)

    def f(u):
        t = math.exp(u)
        return rho * (1 + t) + u - math.log1p(t) + (l - math.log1p(t)) / t

    grid = [x / 4 for x in range(-160, 161)]
    i = min(range(len(grid)), key=lambda k: f(grid[k]))
    res = minimize_scalar(f, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]), method="bounded",
                          options={"xatol": 1e-12})
    return max(float(res.fun), 0.0), math.exp(res.x) + 1


def seen(runs, delta):
    rho = sum(count * 2 / z**2 for z, count in runs)
    eps, order = zcdp_eps(rho, delta)
    accountant = rdp_privacy_accountant.RdpAccountant()
    for z, count in runs:
        accountant.compose(dp_event.GaussianDpEvent(z / 2), count)
    return {"runs": [list(r) for r in runs], "delta": delta, "epsilon": eps, "order": order,
            "dp_accounting_epsilon": float(accountant.get_epsilon(delta))}


def local(z, delta):
    mp.mp.dps = 50
    z, d = mp.mpf(z), mp.mpf(delta)
    phi = lambda x: mp.erfc(-x / mp.sqrt(2)) / 2
    gap = lambda e: phi(1 / z - e * z / 2) - mp.exp(e) * phi(-1 / z - e * z / 2) - d
    hi = mp.mpf(1)
    while gap(hi) > 0:
        hi *= 2
    lo = mp.mpf(0)
    # gap falls as eps grows; 200 halvings leave the bracket far below float precision.
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) > 0 else (lo, mid)
    eps = hi
    return {"noise_multiplier": float(z), "delta": delta, "epsilon": float(eps)}


def integral_log_a(q, z, alpha):
    mp.mp.dps = 30
    q, z, alpha = mp.mpf(q), mp.mpf(z), mp.mpf(alpha)
    f = lambda x: mp.npdf(x, 0, z) * ((1 - q) + q * mp.exp((2 * x - 1) / (2 * z * z))) ** alpha
    # Break points where the integrand changes shape: the crossing z0 of the two weighted
    # densities, and the peak of the e^(alpha x / z^2)-tilted density near x = alpha.
    z0 = z * z * mp.log(1 / q - 1) + mp.mpf(1) / 2
    points = sorted({-12 * z, mp.mpf(0), z0, alpha, alpha + 12 * z})
    return mp.log(mp.quad(f, [-mp.inf] + points + [mp.inf]))


def binomial_log_a(q, z, alpha):
    mp.mp.dps = 30
    q, z = mp.mpf(q), mp.mpf(z)
    return mp.log(mp.fsum(math.comb(alpha, k) * (1 - q) ** (alpha - k) * q**k * mp.exp(mp.mpf(k * k - k) / (2 * z * z))
                          for k in range(alpha + 1)))


def dp_accounting_rdp(q, z, alpha):
    return float(rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, z, [alpha])[0])


def fractional(q, z, alpha):
    return {"sampling_rate": q, "noise_multiplier": z, "order": alpha,
            "rdp": float(integral_log_a(q, z, alpha) / (alpha - 1)),
            "dp_accounting_rdp": dp_accounting_rdp(q, z, alpha)}


def outside(q, z, rounds, delta):
    orders = rdp_orders()
    rdp = [(binomial_log_a(q, z, int(a)) if float(a).is_integer() else integral_log_a(q, z, a)) / (a - 1) for a in orders]
    eps, order = min((conversion(rounds * v, a, delta), a) for a, v in zip(orders, rdp))
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), rounds))
    theirs, their_order = accountant.get_epsilon_and_optimal_order(delta)
    return {"sampling_rate": q, "noise_multiplier": z, "rounds": rounds, "delta": delta,
            "orders": orders, "rdp": [float(v) for v in rdp],
            "epsilon": float(max(eps, 0)), "order": float(order),
            "dp_accounting_epsilon": float(theirs), "dp_accounting_order": float(their_order)}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "accountant_oracles.json")
    data = {
        "generator": "crates/core/tests/vectors/accountant_oracles.py",
        "dp_accounting_version": version("dp-accounting"),
        "mpmath_version": version("mpmath"),
        "scipy_version": version("scipy"),
        "published": [published(*c) for c in PUBLISHED],
        "zcdp": [{"rho": r, "delta": d, "epsilon": zcdp_eps(r, d)[0]} for r, d in ZCDP],
        "seen": [seen(*c) for c in SEEN],
        "local": [local(*c) for c in LOCAL],
        "fractional": [fractional(*c) for c in FRACTIONAL],
        "outside": [outside(*c) for c in OUTSIDE],
    }
    with open(out, "w") as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write("\n")
    for key in ("published", "zcdp", "seen", "local", "fractional", "outside"):
        for c in data[key]:
            print(key, {k: v for k, v in c.items() if k not in ("orders", "rdp")})


if __name__ == "__main__":
    main()
