//! What protects the visitor once a model delta exists: clipping and CSPRNG noise, the update's
//! wire format, and the accountant that turns noise into ε.

pub mod accountant;
pub mod noise;
pub mod privatize;
pub mod wire;
