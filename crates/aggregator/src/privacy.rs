//! The privacy the released models and the servers' views give, per observer, from hearth-core's
//! accountant. Every figure names who looks and which neighbouring datasets it cannot tell apart.
//!
//! - **Anyone who sees the published models** (add or remove one device): each device joins a
//!   round by its own coin at rate q (`round.sampling_rate`), so the release of a round is a
//!   Poisson-subsampled mechanism; composed over the released rounds. A single server's release
//!   carries the K devices' Gaussian noise, z√K in units of C; a leader's carries both servers'
//!   discrete Gaussians, of which only the smaller is counted (the other only adds noise, and
//!   either server might add less than it declares).
//! - **One curious server, or a Sybil filling a round** (replace one device's data): the server
//!   sees each upload arrive, so sampling hides nothing; what protects a device is the other
//!   server's noise (a single server: the device's own). Per round the device joins; it composes
//!   over those rounds, which each device's ledger counts and caps.
//! - **Both servers colluding**: only the device's own noise, per round joined.
//!
//! Abandoned rounds release nothing and cost nothing.

use crate::config::{Config, Role};
use hearth_core::privacy::accountant::{published_epsilon, rounds_within, seen_epsilon};
use serde::Serialize;

/// Rounds beyond this are never searched for; a budget that allows more is effectively unbounded.
const MAX_ROUNDS: u64 = 1 << 24;

#[derive(Debug, Clone)]
pub struct Budget {
    role: Role,
    delta: f64,
    sampling_rate: f64,
    min_clients: u64,
    epsilon_budget: f64,
    /// z of the published release, in units of the sensitivity.
    published_noise: f64,
    /// z protecting one device from one curious server, per round.
    curious_noise: f64,
    /// z protecting it from both servers together.
    collusion_noise: f64,
    /// The most rounds whose release keeps the published-model ε within budget.
    pub rounds_allowed: u64,
}

/// One observer's ε.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threat {
    /// Who looks.
    pub observer: &'static str,
    /// The neighbouring datasets it cannot tell apart.
    pub neighbours: &'static str,
    /// What the ε covers: all released rounds, or each round one device joins.
    pub per: &'static str,
    pub epsilon: f64,
    /// The noise multiplier that protects against this observer, in units of the sensitivity.
    pub noise_multiplier: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyStatus {
    pub role: &'static str,
    /// ε of the published models so far (the first threat's).
    pub epsilon_spent: f64,
    pub epsilon_budget: f64,
    pub delta: f64,
    pub rounds_released: u64,
    pub rounds_allowed: u64,
    /// False once the budget allows no further round.
    pub training: bool,
    pub min_clients: u64,
    pub sampling_rate: f64,
    pub threats: Vec<Threat>,
}

impl Budget {
    /// The budget of a `single` server or a leader whose helper adds `helper_noise`.
    pub fn new(config: &Config, helper_noise: Option<f32>) -> Result<Budget, hearth_core::HearthError> {
        let r = &config.round;
        let local = f64::from(r.noise_multiplier);
        let (published_noise, curious_noise) = match helper_noise {
            None => (local * (r.min_clients as f64).sqrt(), local),
            // Counting one server's noise for the published models, the smaller: a server that
            // adds less than it declares must not make the figure false.
            Some(h) => {
                let least = f64::from(config.secagg.noise_multiplier).min(f64::from(h));
                (least, least)
            }
        };
        let mut budget = Budget {
            role: config.role,
            delta: config.privacy.delta,
            sampling_rate: r.sampling_rate,
            min_clients: r.min_clients,
            epsilon_budget: config.privacy.epsilon_budget,
            published_noise,
            curious_noise,
            collusion_noise: local,
            rounds_allowed: 0,
        };
        budget.epsilon_after(1)?;
        budget.rounds_allowed = rounds_within(budget.epsilon_budget, MAX_ROUNDS, |n| budget.epsilon_after(n))?;
        Ok(budget)
    }

    /// Published-model ε once `rounds` aggregates have been released.
    pub fn epsilon_after(&self, rounds: u64) -> Result<f64, hearth_core::HearthError> {
        published_epsilon(self.sampling_rate, self.published_noise, rounds, self.delta)
    }

    pub fn status(&self, rounds_released: u64) -> PrivacyStatus {
        let epsilon_spent = self.epsilon_after(rounds_released).unwrap_or(f64::INFINITY);
        let per_round = |z: f64| seen_epsilon(&[z], self.delta).unwrap_or(f64::INFINITY);
        let curious = match self.role {
            Role::Single => "the server (it reads each upload), or a Sybil filling a round",
            _ => "one curious server (leader or helper), or a Sybil filling a round",
        };
        PrivacyStatus {
            role: match self.role {
                Role::Single => "single",
                Role::Leader => "leader",
                Role::Helper => "helper",
            },
            epsilon_spent,
            epsilon_budget: self.epsilon_budget,
            delta: self.delta,
            rounds_released,
            rounds_allowed: self.rounds_allowed,
            training: rounds_released < self.rounds_allowed,
            min_clients: self.min_clients,
            sampling_rate: self.sampling_rate,
            threats: vec![
                Threat {
                    observer: "anyone who sees the published models",
                    neighbours: "add or remove one device",
                    per: "all released rounds, amplified by each device's own sampling coin",
                    epsilon: epsilon_spent,
                    noise_multiplier: self.published_noise,
                },
                Threat {
                    observer: curious,
                    neighbours: "replace one device's data",
                    per: "each round a device joins; composes over them (each device's ledger caps it)",
                    epsilon: per_round(self.curious_noise),
                    noise_multiplier: self.curious_noise,
                },
                Threat {
                    observer: "both servers colluding",
                    neighbours: "replace one device's data",
                    per: "each round a device joins; only the device's own noise protects it",
                    epsilon: per_round(self.collusion_noise),
                    noise_multiplier: self.collusion_noise,
                },
            ],
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
        config.round.sampling_rate = 0.01;
        config.round.min_clients = 10;
        let b = Budget::new(&config, None).unwrap();
        assert!(b.rounds_allowed > 0 && b.rounds_allowed < MAX_ROUNDS, "{}", b.rounds_allowed);
        assert!(b.epsilon_after(b.rounds_allowed).unwrap() <= 2.0);
        assert!(b.epsilon_after(b.rounds_allowed + 1).unwrap() > 2.0);
        let s = b.status(b.rounds_allowed);
        assert!(!s.training);
        assert!(b.status(0).training);
        assert_eq!(b.status(0).epsilon_spent, 0.0);
        assert!((s.threats[0].noise_multiplier - 10f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn the_default_settings_do_not_saturate_the_search() {
        let b = Budget::new(&Config::default(), None).unwrap();
        assert!(b.rounds_allowed < MAX_ROUNDS, "{}", b.rounds_allowed);
    }

    #[test]
    fn a_leader_counts_the_other_server_against_a_curious_one() {
        let mut config = Config { role: Role::Leader, ..Config::default() };
        config.secagg.noise_multiplier = 8.0;
        config.round.noise_multiplier = 0.0;
        let s = Budget::new(&config, Some(5.0)).unwrap().status(3);
        assert_eq!(s.threats[0].noise_multiplier, 5.0);
        assert_eq!(s.threats[1].noise_multiplier, 5.0);
        assert_eq!(s.threats[1].epsilon, seen_epsilon(&[5.0], config.privacy.delta).unwrap());
        assert_eq!(s.threats[2].epsilon, f64::INFINITY, "no local noise: nothing against collusion");
    }
}
