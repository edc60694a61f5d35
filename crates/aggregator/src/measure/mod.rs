//! Private measurement over DAP-09 with Prio3SumVec (hearth-core's `measure`): per-period counts
//! of impressions, clicks, conversions and dismissals per campaign and per slot, released only
//! as sums of at least K reports with both servers' noise. The leader takes devices' reports and
//! is also the collector; the helper checks every report's proof with it and adds its own noise.
//! `[measure]` in the configuration; `single` has none. Measurement keeps an SQLite file of its
//! own, and runs on one leader replica.
//!
//! # Map
//!
//! | module | role | what |
//! |---|---|---|
//! | [`leader`] | leader | the task, its DAP key, report uploads |
//! | [`leader_store`] | leader | keys, reports until collected, releases |
//! | [`collect`] | leader | the collection thread: aggregation jobs, the helper's share, the release |
//! | [`routes`] | leader | its routes: DAP upload side, task, collector API and page |
//! | [`release`] | leader | one period's outcome |
//! | [`report_page`] | leader | the reports as JSON, CSV and HTML |
//! | [`helper`] | helper | DAP's helper endpoints |
//! | [`helper_store`] | helper | its key, tasks, counted ids, aggregates, releases |
//! | [`problem`] | both | RFC 7807 problem documents of DAP's errors |
//! | [`sizes`] | both | the sizes of an honest report's parts, per task |

pub mod collect;
pub mod helper;
pub mod helper_store;
pub mod leader;
pub mod leader_store;
pub mod problem;
pub mod release;
pub mod report_page;
pub mod routes;
pub mod sizes;
