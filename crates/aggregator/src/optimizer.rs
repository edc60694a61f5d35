//! The server step: the mean of a round's updates moves the global parameters.

use crate::config::Optimizer;
use crate::store::OptimizerState;

/// Applies one server step to `params` in place; returns FedAdam's new moments (None for
/// FedAvg). `state` is the previous step's, or None before the first.
pub fn step(opt: Optimizer, params: &mut [f32], mean: &[f64], state: Option<OptimizerState>) -> Option<OptimizerState> {
    assert_eq!(params.len(), mean.len(), "mean update and model differ in size");
    match opt {
        Optimizer::FedAvg { lr } => {
            for (w, d) in params.iter_mut().zip(mean) {
                *w = (f64::from(*w) + f64::from(lr) * d) as f32;
            }
            None
        }
        Optimizer::FedAdam { lr, beta1, beta2, tau } => {
            let mut s = state
                .filter(|s| s.m.len() == params.len())
                .unwrap_or_else(|| OptimizerState { steps: 0, m: vec![0.0; params.len()], v: vec![0.0; params.len()] });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_moves_by_the_scaled_mean() {
        let mut w = vec![1.0, -2.0];
        assert!(step(Optimizer::FedAvg { lr: 0.5 }, &mut w, &[0.2, 0.4], None).is_none());
        assert_eq!(w, vec![1.1, -1.8]);
    }

    #[test]
    fn fedadam_follows_the_update_rule_over_two_steps() {
        let opt = Optimizer::FedAdam { lr: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
        let mut w = vec![0.0f32];
        let s1 = step(opt, &mut w, &[2.0], None).unwrap();
        // m = 0.2, v = 0.04: w = 0.1·0.2/(0.2 + 0.001)
        assert!((f64::from(w[0]) - 0.1 * 0.2 / 0.201).abs() < 1e-6);
        let w1 = f64::from(w[0]);
        let s2 = step(opt, &mut w, &[-1.0], Some(s1)).unwrap();
        let (m, v) = (0.9 * 0.2 - 0.1, 0.99 * 0.04 + 0.01);
        assert!((f64::from(w[0]) - (w1 + 0.1 * m / (f64::sqrt(v) + 1e-3))).abs() < 1e-6);
        assert_eq!(s2.steps, 2);
    }
}
