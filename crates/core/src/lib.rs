//! hearth-core: the one library the browser module, the aggregator and the simulator share.
//! No I/O: callers hand in bytes and clocks. The one exception is [`model::pack_dir`], which
//! reads and writes a pack directory for the native tools.
//!
//! # Map
//!
//! | group | modules | main types |
//! |---|---|---|
//! | [`model`] | `features`, `params`, `graph`, `onnx_pb`, `tract_import`, `pack`, `pack_dir`, `scorer`, `forward` | [`FeatureSpec`](model::features::FeatureSpec), [`Params`](model::params::Params), [`ModelPack`](model::pack::ModelPack), [`Scorer`](model::scorer::Scorer) |
//! | [`device`] | `event`, `profile`, `catalog`, `rank`, `explain`, `engine` | [`Event`](device::event::Event), [`Profile`](device::profile::Profile), [`Catalog`](device::catalog::Catalog), [`Engine`](device::engine::Engine) |
//! | [`learning`] | `train`, `round`, `server` | [`Example`](learning::train::Example), [`TrainConfig`](learning::train::TrainConfig), [`RoundTask`](learning::round::RoundTask) |
//! | [`privacy`] | `noise`, `privatize`, `wire`, `accountant` | [`Sampler`](privacy::noise::Sampler), [`Update`](privacy::wire::Update), [`Deployment`](privacy::accountant::Deployment) |
//! | [`measure`] | `layout`, `task`, `tally`, `report`, `hpke_dap`, `prepare` | [`TaskParams`](measure::TaskParams), [`Tally`](measure::Tally), [`AggregateShare`](measure::AggregateShare) |
//! | [`error`] | | [`HearthError`], [`UpdateError`] |
//!
//! # Flow
//!
//! ```text
//! manifest.json + model.onnx ─► ModelPack::load ─► Scorer (tract, cut at the ad side)
//!                                                     │
//! page views, ad events ─► Event ─► Profile ──────────┤
//! catalog.json ──────────► Catalog (hashed ad slots) ─┴─► Engine::rank ─► Ranked (+ why)
//!
//! RoundTask ─► round::participate: Engine::examples ─► train (reconstruct local_u, global steps)
//!           ─► privatize::build_update (clip, noise) ─► Update::encode ─► bytes to upload
//!
//! aggregator: Update::decode ─► RoundSum ─► Optimizer::step ─► new Params ─► ModelPack::write ─► next pack
//!
//! ad events ─► measure::Tally (per period) ─► build_report (Prio3 + HPKE, DAP) ─► leader / helper
//!           ─► prepare (proof checked) ─► AggregateShare + each server's noise ─► unshard ─► counts
//! ```
//!
//! Dependencies run one way: `model` needs only `error`; `device` needs `model`; `learning`
//! needs `device` and `model`; `privacy` needs `model` (parameter bounds) and `error`; `measure`
//! needs `privacy` (noise, accountant) and `device` (text bounds).

// hearth-core is the contract the browser module, the aggregator and the simulator share.
#![warn(missing_docs)]

pub mod device;
pub mod error;
pub mod learning;
pub mod measure;
pub mod model;
pub mod privacy;

pub use error::{HearthError, Result, SecAggError, UpdateError};
