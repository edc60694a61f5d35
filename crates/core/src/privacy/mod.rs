//! What protects the visitor once a model delta exists: clipping and CSPRNG noise, the update's
//! wire format, secure aggregation's shares and sealed seeds, the device's own floor and ledger,
//! and the accountant that turns noise into ε.

pub mod accountant;
pub mod discrete;
pub mod ledger;
pub mod noise;
pub mod privatize;
pub mod seal;
pub mod shares;
pub mod wire;
