//! Ranking and classification metrics over the held-out interactions.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub auc: f64,
    pub logloss: f64,
    pub hr10: f64,
    pub ndcg10: f64,
}

/// Area under the ROC curve of `scores` for binary `labels`, ties counted half (Mann-Whitney).
pub fn auc(scores: &[f64], labels: &[f32]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    // Average ranks (1-based) over runs of equal scores.
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| labels[k] > 0.5).count() as f64 * avg;
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&l| l > 0.5).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Mean binary cross-entropy of probabilities `p` (clamped away from 0 and 1).
pub fn logloss(p: &[f64], labels: &[f32]) -> f64 {
    let eps = 1e-7;
    let total: f64 = p
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(eps, 1.0 - eps);
            if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / p.len().max(1) as f64
}

/// Hit and NDCG at 10 of one list whose first score is the held-out positive: its rank is the
/// number of others scoring higher (ties against it count half, so constant scores are not a win).
pub fn hit_ndcg_at_10(scores: &[f64]) -> (f64, f64) {
    let pos = scores[0];
    let higher = scores[1..].iter().filter(|&&s| s > pos).count() as f64;
    let ties = scores[1..].iter().filter(|&&s| s == pos).count() as f64;
    let rank = (higher + ties / 2.0).floor() as usize;
    if rank < 10 { (1.0, 1.0 / (rank as f64 + 2.0).log2()) } else { (0.0, 0.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_ties_half() {
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]), 0.75);
        assert_eq!(auc(&[0.5, 0.5, 0.5], &[1.0, 0.0, 0.0]), 0.5);
        assert_eq!(auc(&[0.9, 0.1], &[1.0, 0.0]), 1.0);
        assert!(auc(&[0.9], &[1.0]).is_nan());
    }

    #[test]
    fn logloss_matches_the_formula() {
        let want = -(0.8f64.ln() + 0.6f64.ln()) / 2.0;
        assert!((logloss(&[0.8, 0.4], &[1.0, 0.0]) - want).abs() < 1e-12);
    }

    #[test]
    fn hit_and_ndcg_follow_the_positive_rank() {
        let mut s = vec![0.0; 100];
        s[0] = 1.0;
        assert_eq!(hit_ndcg_at_10(&s), (1.0, 1.0));
        s[1..4].iter_mut().for_each(|x| *x = 2.0);
        let (h, n) = hit_ndcg_at_10(&s);
        assert_eq!(h, 1.0);
        assert!((n - 1.0 / 5f64.log2()).abs() < 1e-12);
        s[1..20].iter_mut().for_each(|x| *x = 2.0);
        assert_eq!(hit_ndcg_at_10(&s), (0.0, 0.0));
        assert_eq!(hit_ndcg_at_10(&[1.0; 100]), (0.0, 0.0), "all tied: rank 49");
    }
}
