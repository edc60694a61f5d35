//! The server's side of a round, in the core so that the aggregator and the simulator run the
//! same arithmetic: the running sum of a round's updates and the step its mean takes.

use crate::error::{HearthError, Result};
use crate::learning::train::MAX_LR;
use serde::{Deserialize, Serialize};

/// The server step applied to the mean update Δ̄ when a round closes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// w += lr · Δ̄ (lr = 1 is plain federated averaging).
    FedAvg {
        /// Server learning rate; > 0 and at most [`MAX_LR`].
        lr: f32,
    },
    /// Reddi et al. 2021: m = β1 m + (1−β1) Δ̄, v = β2 v + (1−β2) Δ̄², w += lr · m / (√v + τ).
    FedAdam {
        /// Server learning rate; > 0 and at most [`MAX_LR`].
        lr: f32,
        /// Decay of the first moment m, in [0, 1).
        beta1: f32,
        /// Decay of the second moment v, in [0, 1).
        beta2: f32,
        /// Adaptivity floor τ added to √v, bounding the step where v is small; finite and > 0.
        tau: f32,
    },
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::FedAvg { lr: 1.0 }
    }
}

/// FedAdam's moments, kept between rounds with the model they produced.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Server steps taken with these moments.
    pub steps: u64,
    /// First moment, one per parameter.
    pub m: Vec<f32>,
    /// Second moment, one per parameter.
    pub v: Vec<f32>,
}

impl Optimizer {
    /// `InvalidTraining` unless lr is in (0, [`MAX_LR`]], FedAdam's τ finite and > 0 and the betas
    /// in [0, 1).
    pub fn validate(&self) -> Result<()> {
        let rate = |x: f32| x > 0.0 && x <= MAX_LR;
        let positive = |x: f32| x.is_finite() && x > 0.0;
        let unit = |x: f32| (0.0..1.0).contains(&x);
        let bad = |m: String| Err(HearthError::InvalidTraining(m));
        match *self {
            Optimizer::FedAvg { lr } if !rate(lr) => bad(format!("server lr = {lr} must be in (0, {MAX_LR}]")),
            Optimizer::FedAdam { lr, beta1, beta2, tau } if !(rate(lr) && unit(beta1) && unit(beta2) && positive(tau)) => {
                bad(format!("fed_adam needs lr in (0, {MAX_LR}], beta1 and beta2 in [0, 1), tau > 0"))
            }
            _ => Ok(()),
        }
    }

    /// Applies one server step to `params` in place; returns FedAdam's new moments (None for
    /// FedAvg). `state` is the previous step's, or None before the first.
    ///
    /// # Panics
    /// If `mean` and `params` differ in length: both come from the same model.
    pub fn step(self, params: &mut [f32], mean: &[f64], state: Option<OptimizerState>) -> Option<OptimizerState> {
        assert_eq!(params.len(), mean.len(), "mean update and model differ in size");
        match self {
            Optimizer::FedAvg { lr } => {
                for (w, d) in params.iter_mut().zip(mean) {
                    *w = (f64::from(*w) + f64::from(lr) * d) as f32;
                }
                None
            }
            Optimizer::FedAdam { lr, beta1, beta2, tau } => {
                let mut s = state.filter(|s| s.m.len() == params.len()).unwrap_or_else(|| OptimizerState {
                    steps: 0,
                    m: vec![0.0; params.len()],
                    v: vec![0.0; params.len()],
                });
                let (lr, b1, b2, tau) = (f64::from(lr), f64::from(beta1), f64::from(beta2), f64::from(tau));
                for (((w, d), m), v) in params.iter_mut().zip(mean).zip(&mut s.m).zip(&mut s.v) {
                    let m_new = b1 * f64::from(*m) + (1.0 - b1) * d;
                    let v_new = b2 * f64::from(*v) + (1.0 - b2) * d * d;
                    *w = (f64::from(*w) + lr * m_new / (v_new.sqrt() + tau)) as f32;
                    *m = m_new as f32;
                    *v = v_new as f32;
                }
                s.steps += 1;
                Some(s)
            }
        }
    }
}

/// The running sum of a round's updates: one f64 per parameter whatever the number of
/// updates, so f32 uploads add up without losing precision. Partial sums (one per worker or
/// replica) merge into one.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSum {
    sum: Vec<f64>,
    count: u64,
}

impl RoundSum {
    /// An empty sum over a model of `params` parameters.
    pub fn new(params: usize) -> RoundSum {
        RoundSum { sum: vec![0.0; params], count: 0 }
    }

    /// Adds one update's values (as many as the model has parameters).
    pub fn add(&mut self, values: impl IntoIterator<Item = f32>) {
        self.sum.iter_mut().zip(values).for_each(|(s, v)| *s += f64::from(v));
        self.count += 1;
    }

    /// A partial sum as stored: `count` updates whose values add up to `sum`.
    pub fn from_parts(sum: Vec<f64>, count: u64) -> RoundSum {
        RoundSum { sum, count }
    }

    /// The sum itself, one value per parameter.
    pub fn sums(&self) -> &[f64] {
        &self.sum
    }

    /// Adds another partial sum of the same round.
    pub fn merge(&mut self, other: &RoundSum) {
        self.sum.iter_mut().zip(&other.sum).for_each(|(s, o)| *s += o);
        self.count += other.count;
    }

    /// Updates added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean update Δ̄ (zeros before the first update).
    pub fn mean(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    /// Empties the sum for the next round.
    pub fn clear(&mut self) {
        self.sum.iter_mut().for_each(|s| *s = 0.0);
        self.count = 0;
    }
}
