//! hearth-core: the one library the browser module, the aggregator and the simulator share.
//! No I/O: callers hand in bytes and clocks.

pub mod accountant;
pub mod catalog;
pub mod engine;
pub mod error;
pub mod event;
pub mod explain;
pub mod features;
pub mod forward;
pub mod graph;
pub mod noise;
pub mod onnx_pb;
pub mod pack;
pub mod params;
pub mod profile;
pub mod rank;
pub mod round;
pub mod scorer;
pub mod tract_import;
pub mod train;
pub mod update;

pub use error::{HearthError, Result, UpdateError};
