//! A measurement report seen by each aggregator alone: what the leader (or the helper) holds of
//! a browser's count after preparation is uniform in the field and uncorrelated with the count,
//! and the leader cannot open the helper's half; the two halves still add up to the count.

mod common;
use common::correlation;

use hearth_core::measure::hpke_dap::DapKeyPair;
use hearth_core::measure::prepare::{
    AggregateShare, helper_prepare, leader_finish, leader_init, open_input_share, unshard, verify_key,
};
use hearth_core::measure::prio::codec::Decode;
use hearth_core::measure::prio::field::{Field128, FieldElementWithInteger};
use hearth_core::measure::{MeasureError, TaskParams, build_report, dap};
use hearth_core::privacy::noise::{Sampler, SeededRandom};

const REPORTS: usize = 2_000;
/// The 0.999 quantile of χ² with 63 degrees of freedom.
const CHI2_999: f64 = 103.4;

/// 64 equal bins of the field.
fn bin(v: Field128) -> usize {
    (u128::from(v) / (Field128::modulus() / 64 + 1)) as usize
}

fn chi2(values: &[Field128]) -> f64 {
    let mut bins = [0u32; 64];
    for &v in values {
        bins[bin(v)] += 1;
    }
    let expected = values.len() as f64 / 64.0;
    bins.iter().map(|&c| (f64::from(c) - expected).powi(2) / expected).sum()
}

/// The first cell of an aggregate share holding one report's output share.
fn first_cell(share: &AggregateShare) -> Field128 {
    let bytes = share.encode().unwrap();
    Field128::get_decoded(&bytes[..16]).unwrap()
}

#[test]
fn each_aggregator_alone_sees_a_uniform_share_uncorrelated_with_the_count() {
    let collector = DapKeyPair::from_secret(0, &[9; 32]).config();
    let task = TaskParams::new(["campaign".to_string()], [], 2, 86_400, 10, 4, 4.0, 4.0, 1e-9, &collector).unwrap();
    let (leader, helper) = (DapKeyPair::generate(1).unwrap(), DapKeyPair::generate(2).unwrap());
    let id = task.task_id();
    let vk = verify_key(b"the servers' shared secret", &id);
    let mut pick = Sampler::from_source(SeededRandom::new(17));
    let (mut secret, mut leader_view, mut helper_view) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..REPORTS {
        let count = if pick.uniform().unwrap() < 0.5 { 0 } else { 3 };
        let mut measurement = vec![0u128; task.length()];
        measurement[0] = count;
        let bytes = build_report(&task, &measurement, 1_000 + i as u64, &leader.config(), &helper.config()).unwrap();
        let report = dap::Report::get_decoded(&bytes).unwrap();
        let (m, p) = (report.metadata(), report.public_share());
        // The leader's key does not open the helper's half, even with the helper's info string.
        let stolen = open_input_share(&id, &leader, dap::Role::Helper, m, p, report.helper_encrypted_input_share());
        assert!(matches!(stolen, Err(MeasureError::Open(_) | MeasureError::Key(_))));
        let l = open_input_share(&id, &leader, dap::Role::Leader, m, p, report.leader_encrypted_input_share()).unwrap();
        let h = open_input_share(&id, &helper, dap::Role::Helper, m, p, report.helper_encrypted_input_share()).unwrap();
        let (state, to_helper) = leader_init(&task, &vk, m, p, &l).unwrap();
        let (helper_out, to_leader) = helper_prepare(&task, &vk, m, p, &h, &to_helper).unwrap();
        let leader_out = leader_finish(&task, state, &to_leader).unwrap();
        let (mut ls, mut hs) = (AggregateShare::zero(&task), AggregateShare::zero(&task));
        ls.add(&leader_out).unwrap();
        hs.add(&helper_out).unwrap();
        assert_eq!(unshard(&ls, &hs).unwrap()[0], count as i64, "the halves add up to the count");
        secret.push(count as f64);
        leader_view.push(first_cell(&ls));
        helper_view.push(first_cell(&hs));
    }
    for (who, view) in [("leader", &leader_view), ("helper", &helper_view)] {
        let c = chi2(view);
        assert!(c < CHI2_999, "{who}'s view is not uniform: χ² {c}");
        for wanted in [0.0, 3.0] {
            let half: Vec<Field128> = view.iter().zip(&secret).filter(|(_, s)| **s == wanted).map(|(v, _)| *v).collect();
            let c = chi2(&half);
            assert!(c < CHI2_999, "{who}'s view of counts {wanted} is not uniform: χ² {c}");
        }
        let as_f64: Vec<f64> = view.iter().map(|&v| u128::from(v) as f64).collect();
        let r = correlation(&secret, &as_f64);
        assert!(r.abs() < 4.0 / (REPORTS as f64).sqrt(), "{who}'s view correlates with the count: r = {r}");
    }
    // The test can fail: the counts themselves, binned the same way, are far from uniform.
    let unmasked: Vec<Field128> = secret.iter().map(|&s| Field128::from(s as u128)).collect();
    assert!(chi2(&unmasked) > 1000.0);
}
