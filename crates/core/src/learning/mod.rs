//! Federated learning: labelled examples from the profile, local training with a
//! device-only embedding, one device's part in a round, and the server step that turns a round's
//! updates into the next model.

pub mod round;
pub mod server;
pub mod train;
