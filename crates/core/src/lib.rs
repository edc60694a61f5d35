//! hearth-core: the one library the browser module, the aggregator and the simulator share.
//! No I/O: callers hand in bytes and clocks.

pub mod catalog;
pub mod engine;
pub mod error;
pub mod event;
pub mod features;
pub mod graph;
pub mod onnx_pb;
pub mod pack;
pub mod params;
pub mod profile;
pub mod rank;
pub mod reference;
pub mod scorer;
pub mod tract_import;

pub use error::{HearthError, Result};
