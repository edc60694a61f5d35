//! Federated learning on the device: labelled examples from the profile, local training with a
//! device-only embedding, and one device's part in a round.

pub mod round;
pub mod train;
