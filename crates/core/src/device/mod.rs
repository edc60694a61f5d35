//! What runs for one visitor: events, the profile they fold into, the catalog of candidate ads,
//! ranking with caps and diversity, explanations, and the engine that holds them together.

pub mod catalog;
pub mod engine;
pub mod event;
pub mod explain;
pub mod profile;
pub mod rank;
