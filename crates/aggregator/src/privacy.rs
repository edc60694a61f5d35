//! The privacy budget of the released models, from hearth-core's accountant.
//!
//! Each device noises its own clipped update with σ = zC, so the sum of a round's n ≥ K updates
//! carries noise of σ√n against a sensitivity of C (adding or removing one device): the
//! released mean is the Gaussian mechanism with noise multiplier z√n ≥ z√K. The accountant is
//! run at z√K, the least noise a released round can have, with devices sampled at rate
//! K / population. Abandoned rounds release nothing and cost nothing.

use crate::config::Config;
use hearth_core::privacy::accountant::{Deployment, Sampling, epsilon, local_epsilon};
use serde::Serialize;

/// Rounds beyond this are never searched for; a budget that allows more is effectively unbounded.
const MAX_ROUNDS: u64 = 1 << 24;

#[derive(Debug, Clone)]
pub struct Budget {
    deployment: Deployment,
    epsilon_budget: f64,
    local_noise_multiplier: f64,
    /// The most rounds whose release keeps ε within budget.
    pub rounds_allowed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyStatus {
    pub epsilon_spent: f64,
    pub epsilon_budget: f64,
    pub delta: f64,
    pub rounds_released: u64,
    pub rounds_allowed: u64,
    /// False once the budget allows no further round.
    pub training: bool,
    pub population: u64,
    pub min_clients: u64,
    pub local_noise_multiplier: f64,
    pub aggregate_noise_multiplier: f64,
    /// ε of one upload seen alone.
    pub local_epsilon: f64,
}

impl Budget {
    pub fn new(config: &Config) -> Result<Budget, hearth_core::HearthError> {
        let k = config.round.min_clients;
        let z = f64::from(config.round.noise_multiplier);
        let deployment = Deployment {
            population: config.privacy.population,
            sampling: Sampling::ClientsPerRound(k),
            rounds: 1,
            noise_multiplier: z * (k as f64).sqrt(),
            delta: config.privacy.delta,
        };
        let mut budget =
            Budget { deployment, epsilon_budget: config.privacy.epsilon_budget, local_noise_multiplier: z, rounds_allowed: 0 };
        budget.epsilon_after(1)?;
        budget.rounds_allowed = budget.search_rounds_allowed()?;
        Ok(budget)
    }

    /// Central ε once `rounds` aggregates have been released.
    pub fn epsilon_after(&self, rounds: u64) -> Result<f64, hearth_core::HearthError> {
        if rounds == 0 {
            return Ok(0.0);
        }
        epsilon(&Deployment { rounds, ..self.deployment.clone() })
    }

    /// ε grows with rounds, so the last affordable round is found by bisection.
    fn search_rounds_allowed(&self) -> Result<u64, hearth_core::HearthError> {
        let fits = |r: u64| self.epsilon_after(r).map(|e| e <= self.epsilon_budget);
        if fits(MAX_ROUNDS)? {
            return Ok(MAX_ROUNDS);
        }
        let (mut lo, mut hi) = (0, MAX_ROUNDS);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid)? { lo = mid } else { hi = mid }
        }
        Ok(lo)
    }

    pub fn status(&self, rounds_released: u64) -> PrivacyStatus {
        let d = &self.deployment;
        PrivacyStatus {
            epsilon_spent: self.epsilon_after(rounds_released).unwrap_or(f64::INFINITY),
            epsilon_budget: self.epsilon_budget,
            delta: d.delta,
            rounds_released,
            rounds_allowed: self.rounds_allowed,
            training: rounds_released < self.rounds_allowed,
            population: d.population,
            min_clients: match d.sampling {
                Sampling::ClientsPerRound(k) => k,
                Sampling::Rate(_) => 0,
            },
            local_noise_multiplier: self.local_noise_multiplier,
            aggregate_noise_multiplier: d.noise_multiplier,
            local_epsilon: local_epsilon(self.local_noise_multiplier, d.delta).unwrap_or(f64::INFINITY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_allowed_is_the_last_round_within_budget() {
        let mut config = Config::default();
        config.privacy.epsilon_budget = 2.0;
        config.privacy.population = 1000;
        config.round.min_clients = 10;
        let b = Budget::new(&config).unwrap();
        assert!(b.rounds_allowed > 0 && b.rounds_allowed < MAX_ROUNDS, "{}", b.rounds_allowed);
        assert!(b.epsilon_after(b.rounds_allowed).unwrap() <= 2.0);
        assert!(b.epsilon_after(b.rounds_allowed + 1).unwrap() > 2.0);
        let s = b.status(b.rounds_allowed);
        assert!(!s.training);
        assert!(b.status(0).training);
        assert_eq!(b.status(0).epsilon_spent, 0.0);
        assert!((s.aggregate_noise_multiplier - 10f64.sqrt()).abs() < 1e-12);
    }
}
