//! The leader's measurement store, an SQLite file of its own (`measure.database`): its DAP HPKE
//! key and the collector's, every task it served, each report until its period is collected,
//! and each period's one release.
//!
//! A report is kept as the leader's opened input share beside the helper's share, still sealed
//! to the helper: alone, the leader's share is uniformly random. When a period's collection
//! begins, its row in `periods` closes it to uploads, and its reports are split into aggregation
//! jobs whose ids are written before the first is sent: a collection resumed after a crash sends
//! the same jobs again, which the helper answers with the same bytes. The release and the
//! deletion of the period's reports commit together; so do a failed period's record (the helper
//! refused its collection too often) and the deletion of its reports.

use super::release::Release;
use crate::config::Role;
use crate::store::sqlite_file::{self, Schema};
use crate::store::{DbError, DbResult, StoreError};
use crate::store_health::StoreHealth;
use hearth_core::measure::hpke_dap::DapKeyPair;
use hearth_core::measure::prio::codec::{Decode, Encode};
use hearth_core::measure::{TaskParams, dap};
use hearth_core::model::pack::sha256_hex;
use hearth_core::privacy::noise::{ByteSource, OsRandom};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use std::path::Path;

/// 2: the first version with the store identity (`sqlite_file`), which every store since has.
const SCHEMA_VERSION: i64 = 2;

/// The table only this kind of store has: it tells the measurement store apart from the
/// leader's round store, which has the same role in its identity.
const MARKER_TABLE: &str = "dap_keys";

const LEADER_SCHEMA: Schema = Schema { tables: SCHEMA, version: SCHEMA_VERSION, marker_table: MARKER_TABLE, upgrades: &[] };

const SCHEMA: &str = "
-- The leader's key (devices seal its input shares to it) and the collector's (the helper seals
-- its aggregate shares to it).
CREATE TABLE dap_keys (
    purpose TEXT PRIMARY KEY CHECK (purpose IN ('leader', 'collector')),
    config_id INTEGER NOT NULL CHECK (config_id BETWEEN 0 AND 255),
    secret BLOB NOT NULL CHECK (length(secret) = 32)
);
-- Every task served (TaskParams JSON; the id commits to every parameter): a period is
-- collected and shown under the task its reports were sent for.
CREATE TABLE tasks (
    task_id BLOB PRIMARY KEY CHECK (length(task_id) = 32),
    params TEXT NOT NULL
);
-- Reports until their period is collected. A report's time is its period's start.
CREATE TABLE reports (
    report_id BLOB PRIMARY KEY CHECK (length(report_id) = 16),
    task_id BLOB NOT NULL REFERENCES tasks (task_id),
    period_start INTEGER NOT NULL,
    public_share BLOB NOT NULL,
    -- The leader's VDAF input share, opened.
    leader_share BLOB NOT NULL,
    -- The helper's, an encoded HPKE ciphertext only the helper opens.
    helper_share BLOB NOT NULL,
    -- Set when the period's collection begins.
    job_id BLOB CHECK (job_id IS NULL OR length(job_id) = 16)
);
CREATE INDEX reports_by_period ON reports (task_id, period_start, job_id);
-- Reports stored per period until it is released: measure.max_reports_per_period is checked
-- against this in the upload's own transaction (a COUNT over the reports would cost each
-- upload a scan of its period).
CREATE TABLE received (
    task_id BLOB NOT NULL REFERENCES tasks (task_id),
    period_start INTEGER NOT NULL,
    reports INTEGER NOT NULL,
    PRIMARY KEY (task_id, period_start)
);
-- A period from the start of its collection (closed to uploads) to its release. counts is a
-- JSON array in the task's cell order, NULL when the period was withheld (fewer than K) or
-- failed; failed says why the helper's refusals ended its collection. refusals counts the
-- helper's refusals of its collection so far.
CREATE TABLE periods (
    task_id BLOB NOT NULL REFERENCES tasks (task_id),
    period_start INTEGER NOT NULL,
    released INTEGER NOT NULL CHECK (released IN (0, 1)),
    reports INTEGER,
    counts TEXT,
    failed TEXT,
    refusals INTEGER NOT NULL DEFAULT 0,
    released_ms INTEGER,
    PRIMARY KEY (task_id, period_start)
);
";

/// Config id of the leader's DAP key.
const LEADER_CONFIG_ID: u8 = 1;
/// Config id of the collector's key.
const COLLECTOR_CONFIG_ID: u8 = 2;

/// A report as stored at upload.
pub struct StoredReport {
    pub id: dap::ReportId,
    pub period_start: u64,
    pub public_share: Vec<u8>,
    pub leader_share: Vec<u8>,
    /// The encoded `dap::HpkeCiphertext` of the helper's share.
    pub helper_share: Vec<u8>,
}

impl StoredReport {
    pub fn metadata(&self) -> dap::ReportMetadata {
        dap::ReportMetadata::new(self.id, dap::Time::from_seconds_since_epoch(self.period_start))
    }

    /// The helper's share as it travels in an aggregation job.
    pub fn report_share(&self) -> DbResult<dap::ReportShare> {
        let sealed = dap::HpkeCiphertext::get_decoded(&self.helper_share)
            .map_err(|e| DbError::Corrupt(format!("the stored helper share of report {}: {e}", self.id)))?;
        Ok(dap::ReportShare::new(self.metadata(), self.public_share.clone(), sealed))
    }
}

/// Why an upload was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum NotStored {
    /// A report with this id is held already.
    Replayed,
    /// Its period's collection has begun.
    PeriodClosed,
    /// Its period holds `measure.max_reports_per_period` reports already.
    PeriodFull,
}

pub struct LeaderStore {
    conn: Connection,
}

impl LeaderStore {
    /// `init`: creates the store with a fresh leader key and collector key.
    pub fn create(path: &Path) -> Result<(), StoreError> {
        let key = |config_id| {
            let mut secret = [0u8; 32];
            OsRandom.fill(&mut secret).map_err(StoreError::Random)?;
            Ok::<_, StoreError>((config_id, secret))
        };
        let keys = [("leader", key(LEADER_CONFIG_ID)?), ("collector", key(COLLECTOR_CONFIG_ID)?)];
        sqlite_file::create(path, Role::Leader, &LEADER_SCHEMA, |conn| {
            for (purpose, (config_id, secret)) in &keys {
                conn.execute(
                    "INSERT INTO dap_keys (purpose, config_id, secret) VALUES (?1, ?2, ?3)",
                    params![purpose, config_id, &secret[..]],
                )?;
            }
            Ok(())
        })
        .map(drop)
    }

    /// Opens the store `init` made; never creates one, and refuses the leader's round store
    /// (same role, no [`MARKER_TABLE`]).
    pub fn open(path: &Path) -> Result<(LeaderStore, StoreHealth), StoreError> {
        let (conn, health) = sqlite_file::open(path, Role::Leader, &LEADER_SCHEMA)?;
        let marker = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1";
        let db = |source: rusqlite::Error| StoreError::Db { store: path.display().to_string(), source: source.into() };
        if conn.query_row(marker, [MARKER_TABLE], |_| Ok(())).optional().map_err(db)?.is_none() {
            return Err(StoreError::NotAStore {
                store: path.display().to_string(),
                why: "it is the leader's round store, not its measurement store".into(),
            });
        }
        Ok((LeaderStore { conn }, health))
    }

    /// The leader's key and the collector's; a store without them is refused (new keys would
    /// leave every stored and in-flight share unopenable).
    pub fn keys(&self) -> Result<(DapKeyPair, DapKeyPair), String> {
        let key = |purpose: &str| {
            let stored: Option<(u8, Vec<u8>)> = self
                .conn
                .query_row("SELECT config_id, secret FROM dap_keys WHERE purpose = ?1", [purpose], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(|e| e.to_string())?;
            let (config_id, secret) = stored
                .ok_or_else(|| format!("the measurement database holds no {purpose} key; `hearth-aggregator init` makes it"))?;
            let secret: [u8; 32] = secret.try_into().map_err(|_| format!("the stored {purpose} key is not 32 bytes"))?;
            Ok::<_, String>(DapKeyPair::from_secret(config_id, &secret))
        };
        Ok((key("leader")?, key("collector")?))
    }

    /// The write probe of the store's watchdog.
    pub fn touch(&self) -> DbResult<()> {
        Ok(sqlite_file::touch(&self.conn)?)
    }

    /// Records a task served (kept when it was there already).
    pub fn record_task(&self, task_id: &dap::TaskId, task: &TaskParams) -> DbResult<()> {
        let json = serde_json::to_string(task).expect("task parameters serialise");
        self.conn.execute(
            "INSERT INTO tasks (task_id, params) VALUES (?1, ?2) ON CONFLICT (task_id) DO NOTHING",
            params![&task_id.as_ref()[..], json],
        )?;
        Ok(())
    }

    pub fn task(&self, task_id: &dap::TaskId) -> DbResult<Option<TaskParams>> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT params FROM tasks WHERE task_id = ?1", [&task_id.as_ref()[..]], |r| r.get(0))
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| DbError::Corrupt(format!("stored task {task_id}: {e}")))).transpose()
    }

    /// Stores a report unless its id is held already, its period's collection has begun or its
    /// period holds `max_reports` reports: the count is read and raised in the transaction that
    /// stores the report, so concurrent uploads cannot overshoot it.
    pub fn insert_report(
        &mut self,
        task_id: &dap::TaskId,
        report: &StoredReport,
        max_reports: u64,
    ) -> DbResult<Result<(), NotStored>> {
        let task = &task_id.as_ref()[..];
        let tx = self.conn.transaction()?;
        let closed = tx.query_row(
            "SELECT 1 FROM periods WHERE task_id = ?1 AND period_start = ?2",
            params![task, report.period_start],
            |_| Ok(()),
        );
        if closed.optional()?.is_some() {
            return Ok(Err(NotStored::PeriodClosed));
        }
        let received: Option<u64> = tx
            .query_row(
                "SELECT reports FROM received WHERE task_id = ?1 AND period_start = ?2",
                params![task, report.period_start],
                |r| r.get(0),
            )
            .optional()?;
        if received.is_some_and(|n| n >= max_reports) {
            return Ok(Err(NotStored::PeriodFull));
        }
        let inserted = tx.execute(
            "INSERT INTO reports (report_id, task_id, period_start, public_share, leader_share, helper_share)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &report.id.as_ref()[..],
                task,
                report.period_start,
                report.public_share,
                report.leader_share,
                report.helper_share
            ],
        );
        match inserted {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => return Ok(Err(NotStored::Replayed)),
            other => other?,
        };
        tx.execute(
            "INSERT INTO received (task_id, period_start, reports) VALUES (?1, ?2, 1)
             ON CONFLICT (task_id, period_start) DO UPDATE SET reports = reports + 1",
            params![task, report.period_start],
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// The (task, period) pairs that hold reports or whose collection has begun, unreleased.
    pub fn open_periods(&self) -> DbResult<Vec<(dap::TaskId, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT task_id, period_start FROM reports
             UNION SELECT task_id, period_start FROM periods WHERE released = 0
             ORDER BY period_start",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u64>(1)?)))?;
        rows.map(|row| {
            let (task, period) = row?;
            Ok((task_id_of(&task)?, period))
        })
        .collect()
    }

    /// The period's release, if it was released.
    pub fn release(&self, task_id: &dap::TaskId, period: u64) -> DbResult<Option<Release>> {
        let row: Option<(u64, Option<String>, Option<String>)> = self
            .conn
            .query_row(
                "SELECT reports, counts, failed FROM periods WHERE task_id = ?1 AND period_start = ?2 AND released = 1",
                params![&task_id.as_ref()[..], period],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(reports, counts, failed)| release_of(period, reports, counts, failed)).transpose()
    }

    /// Every release of the task, oldest period first.
    pub fn releases(&self, task_id: &dap::TaskId) -> DbResult<Vec<Release>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT period_start, reports, counts, failed FROM periods WHERE task_id = ?1 AND released = 1
             ORDER BY period_start",
        )?;
        let rows =
            stmt.query_map([&task_id.as_ref()[..]], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?, r.get(2)?, r.get(3)?)))?;
        rows.map(|row| {
            let (period, reports, counts, failed) = row?;
            release_of(period, reports, counts, failed)
        })
        .collect()
    }

    /// Begins the period's collection: closes it to uploads (kept when begun already).
    pub fn begin(&self, task_id: &dap::TaskId, period: u64) -> DbResult<()> {
        self.conn.execute(
            "INSERT INTO periods (task_id, period_start, released) VALUES (?1, ?2, 0) ON CONFLICT DO NOTHING",
            params![&task_id.as_ref()[..], period],
        )?;
        Ok(())
    }

    /// Counts one more refusal by the helper of the period's collection (begun): the count so far.
    pub fn refused(&self, task_id: &dap::TaskId, period: u64) -> DbResult<u32> {
        Ok(self.conn.query_row(
            "UPDATE periods SET refusals = refusals + 1 WHERE task_id = ?1 AND period_start = ?2 RETURNING refusals",
            params![&task_id.as_ref()[..], period],
            |r| r.get(0),
        )?)
    }

    /// Whether the period's collection has begun and it is not released yet.
    pub fn release_begun(&self, task_id: &dap::TaskId, period: u64) -> DbResult<bool> {
        let mut stmt =
            self.conn.prepare_cached("SELECT 1 FROM periods WHERE task_id = ?1 AND period_start = ?2 AND released = 0")?;
        Ok(stmt.exists(params![&task_id.as_ref()[..], period])?)
    }

    /// Reports the period holds.
    pub fn count(&self, task_id: &dap::TaskId, period: u64) -> DbResult<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM reports WHERE task_id = ?1 AND period_start = ?2",
            params![&task_id.as_ref()[..], period],
            |r| r.get(0),
        )?)
    }

    /// Puts the period's reports without a job into new jobs of at most `job_size`, in one
    /// transaction; then every job of the period, in id order. A job's id is a hash of its
    /// period and its first report's id: unique among the task's jobs, since a report id is held
    /// once per period.
    pub fn jobs(&mut self, task_id: &dap::TaskId, period: u64, job_size: usize) -> DbResult<Vec<dap::AggregationJobId>> {
        let task = &task_id.as_ref()[..];
        let tx = self.conn.transaction()?;
        let unassigned: Vec<Vec<u8>> = {
            let mut stmt = tx.prepare_cached(
                "SELECT report_id FROM reports WHERE task_id = ?1 AND period_start = ?2 AND job_id IS NULL ORDER BY report_id",
            )?;
            stmt.query_map(params![task, period], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        {
            let mut assign = tx.prepare_cached("UPDATE reports SET job_id = ?1 WHERE report_id = ?2")?;
            for chunk in unassigned.chunks(job_size.max(1)) {
                let digest = sha256_hex(&[&period.to_be_bytes()[..], &chunk[0]].concat());
                let job = u128::from_str_radix(&digest[..32], 16).expect("SHA-256 hex digits").to_be_bytes();
                for id in chunk {
                    assign.execute(params![&job[..], id])?;
                }
            }
        }
        tx.commit()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT job_id FROM reports WHERE task_id = ?1 AND period_start = ?2 AND job_id IS NOT NULL ORDER BY job_id",
        )?;
        let rows = stmt.query_map(params![task, period], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|job| {
            let job = job?;
            dap::AggregationJobId::try_from(&job[..])
                .map_err(|_| DbError::Corrupt(format!("a stored job id of {} bytes", job.len())))
        })
        .collect()
    }

    /// A job's reports, in report id order (a resent job is the same request, byte for byte).
    pub fn job_reports(&self, job: &dap::AggregationJobId) -> DbResult<Vec<StoredReport>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT report_id, period_start, public_share, leader_share, helper_share FROM reports WHERE job_id = ?1
             ORDER BY report_id",
        )?;
        let rows =
            stmt.query_map([&job.as_ref()[..]], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
        rows.map(|row| {
            let (id, period_start, public_share, leader_share, helper_share) = row?;
            let id = dap::ReportId::try_from(&id[..])
                .map_err(|_| DbError::Corrupt(format!("a stored report id of {} bytes", id.len())))?;
            Ok(StoredReport { id, period_start, public_share, leader_share, helper_share })
        })
        .collect()
    }

    /// Records the period's release (or its failure) and deletes its reports, in one
    /// transaction; a period is released once (a second call keeps the first release).
    pub fn record_release(&mut self, task_id: &dap::TaskId, release: &Release, now_ms: i64) -> DbResult<()> {
        let task = &task_id.as_ref()[..];
        let counts = release.counts.as_ref().map(|c| serde_json::to_string(c).expect("counts serialise"));
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO periods (task_id, period_start, released, reports, counts, failed, released_ms)
             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)
             ON CONFLICT (task_id, period_start) DO UPDATE SET released = 1, reports = excluded.reports,
                 counts = excluded.counts, failed = excluded.failed, released_ms = excluded.released_ms
             WHERE periods.released = 0",
            params![task, release.period_start, release.reports, counts, release.failed, now_ms],
        )?;
        tx.execute("DELETE FROM reports WHERE task_id = ?1 AND period_start = ?2", params![task, release.period_start])?;
        tx.execute("DELETE FROM received WHERE task_id = ?1 AND period_start = ?2", params![task, release.period_start])?;
        tx.commit()?;
        Ok(())
    }
}

fn task_id_of(bytes: &[u8]) -> DbResult<dap::TaskId> {
    dap::TaskId::try_from(bytes).map_err(|_| DbError::Corrupt(format!("a stored task id of {} bytes", bytes.len())))
}

fn release_of(period_start: u64, reports: u64, counts: Option<String>, failed: Option<String>) -> DbResult<Release> {
    let counts = counts
        .map(|c| {
            serde_json::from_str(&c).map_err(|e| DbError::Corrupt(format!("the stored counts of period {period_start}: {e}")))
        })
        .transpose()?;
    Ok(Release { period_start, reports, counts, failed })
}

/// The encoded ciphertext of the helper's share, as stored.
pub fn encode_sealed(ct: &dap::HpkeCiphertext) -> Vec<u8> {
    ct.get_encoded().expect("an HPKE ciphertext encodes")
}
