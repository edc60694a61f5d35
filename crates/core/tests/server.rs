//! The server step and the round's running sum, as the aggregator and the simulator run them.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use hearth_core::learning::server::{Optimizer, RoundSum};

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fedavg_moves_by_the_scaled_mean() {
    let mut w = vec![1.0, -2.0];
    assert!(Optimizer::FedAvg { lr: 0.5 }.step(&mut w, &[0.2, 0.4], None).is_none());
    assert_eq!(w, vec![1.1, -1.8]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fedadam_follows_the_update_rule_over_two_steps() {
    let opt = Optimizer::FedAdam { lr: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
    let mut w = vec![0.0f32];
    let s1 = opt.step(&mut w, &[2.0], None).unwrap();
    // m = 0.2, v = 0.04: w = 0.1·0.2/(0.2 + 0.001)
    assert!((f64::from(w[0]) - 0.1 * 0.2 / 0.201).abs() < 1e-6);
    let w1 = f64::from(w[0]);
    let s2 = opt.step(&mut w, &[-1.0], Some(s1)).unwrap();
    let (m, v) = (0.9 * 0.2 - 0.1, 0.99 * 0.04 + 0.01);
    assert!((f64::from(w[0]) - (w1 + 0.1 * m / (f64::sqrt(v) + 1e-3))).abs() < 1e-6);
    assert_eq!(s2.steps, 2);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_server_settings_are_refused() {
    for bad in [
        Optimizer::FedAvg { lr: 0.0 },
        Optimizer::FedAvg { lr: f32::NAN },
        Optimizer::FedAdam { lr: 0.1, beta1: 1.0, beta2: 0.9, tau: 1e-3 },
        Optimizer::FedAdam { lr: 0.1, beta1: 0.9, beta2: 0.9, tau: 0.0 },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    assert!(Optimizer::default().validate().is_ok());
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn partial_sums_merge_into_the_sum_of_all_updates() {
    let updates = [[1.0f32, -2.0], [3.0, 0.5], [0.25, 0.25]];
    let mut whole = RoundSum::new(2);
    updates.iter().for_each(|u| whole.add(u.iter().copied()));
    let (mut a, mut b) = (RoundSum::new(2), RoundSum::new(2));
    a.add(updates[0]);
    b.add(updates[1]);
    b.add(updates[2]);
    a.merge(&b);
    assert_eq!(a, whole);
    assert_eq!(whole.count(), 3);
    assert_eq!(whole.mean(), vec![4.25 / 3.0, -1.25 / 3.0]);
    whole.clear();
    assert_eq!((whole.count(), whole.mean()), (0, vec![0.0, 0.0]));
}
