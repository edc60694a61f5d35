//! The model: how features become ids, the parameters and their layout, the ONNX graph Hearth
//! writes and the slim importer that reads it into tract, the pack that ships both (and its directory on disk), the tract
//! scorer cut at the ad side, and the same forward pass in plain Rust.

pub mod features;
pub mod forward;
pub mod graph;
pub mod onnx_pb;
pub mod pack;
pub mod pack_dir;
pub mod params;
pub mod scorer;
pub mod tract_import;
