#!/usr/bin/env python3
"""Writes crates/core/tests/vectors/accountant.json: reference values for hearth-core's privacy
accountant (crates/core/src/accountant.rs), computed by Google's dp-accounting.

The Rust accountant is an independent implementation; the test crates/core/tests/accountant.rs
checks it against every value written here to 1% relative.

  central    RdpAccountant (default orders, add-or-remove-one) on `rounds` self-composed
             PoissonSampledDpEvent(q, GaussianDpEvent(z)); epsilon and the optimal order.
  local      PLDAccountant (value_discretization_interval 1e-4) on one GaussianDpEvent(z / 2): a
             near-exact epsilon of a single upload, to check the analytic Gaussian mechanism.
             An upload is seen on its own, so neighbours are replace-one: two possible
             histories of the device differ by up to twice the clip norm, sensitivity 2, which
             at noise multiplier z is sensitivity 1 at z / 2.
  noise_for  the smallest z meeting a target epsilon: dp-accounting's calibrate_dp_mechanism
             (Brent's method on the RdpAccountant's epsilon, tolerance 1e-7).

Generated with dp-accounting 0.6.0 (recorded in the JSON). Run it from the repository root:

  python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting==0.6.0
  /tmp/dpvenv/bin/python crates/core/tests/vectors/dp_fixtures.py [output-path]
"""

import json
import os
import sys
from importlib.metadata import version

from dp_accounting import dp_event, mechanism_calibration
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

# (population, sampling, rounds, noise multiplier, delta); sampling is ("clients_per_round", n)
# or ("rate", q). Chosen so that epsilon spans about 0.5 to 20.
CENTRAL = [
    (1_000, ("clients_per_round", 10), 100, 1.0, 1e-5),
    (1_000, ("clients_per_round", 50), 1, 0.5, 1e-5),
    (1_000, ("clients_per_round", 100), 50, 1.5, 1e-6),
    (1_000, ("rate", 0.2), 200, 2.0, 1e-5),
    (1_000, ("rate", 1.0), 1, 1.0, 1e-5),
    (1_000, ("rate", 1.0), 10, 5.0, 1e-6),
    (10_000, ("clients_per_round", 100), 1_000, 1.1, 1e-6),
    (10_000, ("clients_per_round", 500), 10, 0.7, 1e-5),
    (10_000, ("rate", 0.001), 10_000, 0.8, 1e-7),
    (10_000, ("rate", 0.05), 500, 3.0, 1e-8),
    (100_000, ("clients_per_round", 1_000), 10_000, 1.0, 1e-6),
    (100_000, ("clients_per_round", 100), 5_000, 0.6, 1e-7),
    (100_000, ("rate", 0.0001), 10_000, 0.5, 1e-9),
    (100_000, ("rate", 0.01), 2_000, 4.0, 1e-9),
    (100_000, ("clients_per_round", 10_000), 100, 2.5, 1e-6),
    (1_000_000, ("clients_per_round", 1_000), 10_000, 0.9, 1e-8),
    (1_000_000, ("clients_per_round", 100), 1_000, 0.5, 1e-9),
    (1_000_000, ("rate", 0.01), 1_000, 1.2, 1e-9),
    (1_000_000, ("rate", 0.1), 50, 5.0, 1e-7),
    (1_000_000, ("clients_per_round", 50_000), 3_000, 1.5, 1e-8),
    (10_000_000, ("clients_per_round", 1_000), 10_000, 0.6, 1e-9),
    (10_000_000, ("clients_per_round", 10_000), 2_000, 0.8, 1e-9),
    (10_000_000, ("rate", 0.0005), 10_000, 1.6, 1e-9),
    (10_000_000, ("rate", 0.3), 20, 1.0, 1e-5),
    (10_000_000, ("clients_per_round", 100_000), 10_000, 3.5, 1e-9),
    (50_000, ("rate", 0.02), 800, 0.55, 1e-6),
    (5_000, ("clients_per_round", 250), 2_000, 1.3, 1e-5),
    (2_000_000, ("rate", 0.004), 5_000, 0.75, 1e-7),
]

# (noise multiplier, delta) of one upload.
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
    (5.0, 1e-5),
]

# (target epsilon, population, sampling, rounds, delta).
NOISE_FOR = [
    (1.0, 1_000_000, ("clients_per_round", 1_000), 1_000, 1e-8),
    (2.0, 100_000, ("rate", 0.01), 5_000, 1e-7),
    (4.0, 10_000, ("clients_per_round", 100), 10_000, 1e-6),
    (8.0, 1_000, ("rate", 0.1), 200, 1e-5),
    (0.5, 10_000_000, ("clients_per_round", 10_000), 1_000, 1e-9),
    (3.0, 1_000, ("rate", 1.0), 5, 1e-5),
]


def rate(population, sampling):
    kind, value = sampling
    return value / population if kind == "clients_per_round" else value


def sampled_gaussian(q, z, rounds):
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), rounds
    )


def deployment(population, sampling, rounds, z, delta):
    return {
        "population": population,
        "sampling": {sampling[0]: sampling[1]},
        "rounds": rounds,
        "noise_multiplier": z,
        "delta": delta,
    }


def central(population, sampling, rounds, z, delta):
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(sampled_gaussian(rate(population, sampling), z, rounds))
    eps, order = accountant.get_epsilon_and_optimal_order(delta)
    return {
        "deployment": deployment(population, sampling, rounds, z, delta),
        "epsilon": float(eps),
        "order": float(order),
    }


def local(z, delta):
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    # Sensitivity 2 (replace-one) at noise z is sensitivity 1 at noise z / 2.
    accountant.compose(dp_event.GaussianDpEvent(z / 2))
    return {"noise_multiplier": z, "delta": delta, "epsilon": float(accountant.get_epsilon(delta))}


def noise_for(target, population, sampling, rounds, delta):
    q = rate(population, sampling)
    z = mechanism_calibration.calibrate_dp_mechanism(
        rdp_privacy_accountant.RdpAccountant,
        lambda z: sampled_gaussian(q, z, rounds),
        target,
        delta,
        bracket_interval=mechanism_calibration.LowerEndpointAndGuess(0.0, 1.0),
        tol=1e-7,
    )
    return {
        "target_epsilon": target,
        "population": population,
        "sampling": {sampling[0]: sampling[1]},
        "rounds": rounds,
        "delta": delta,
        "noise_multiplier": float(z),
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "accountant.json")
    data = {
        "generator": "crates/core/tests/vectors/dp_fixtures.py",
        "dp_accounting_version": version("dp-accounting"),
        "central": [central(*c) for c in CENTRAL],
        "local": [local(*c) for c in LOCAL],
        "noise_for": [noise_for(*c) for c in NOISE_FOR],
    }
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    for c in data["central"]:
        print(f"central {c['epsilon']:9.4f} order {c['order']:6.1f}  {c['deployment']}")
    for c in data["local"]:
        print(f"local   {c['epsilon']:9.4f}  z={c['noise_multiplier']} delta={c['delta']}")
    for c in data["noise_for"]:
        print(f"noise   z={c['noise_multiplier']:.6f}  target={c['target_epsilon']}")


if __name__ == "__main__":
    main()
