//! The helper's measurement store, an SQLite file of its own (`measure.database`): its DAP HPKE
//! key, the tasks the leader provisioned, every report id it counted, each period's aggregate
//! share until it is released, the response of every aggregation job, and each period's one
//! release. Expired periods' aggregates and job responses are deleted ([`MeasureStore::sweep`]).
//! It never holds a report's input share: a job's shares are opened, prepared and
//! added in memory, and only ids and the updated sums are written.

use crate::config::Role;
use crate::store::sqlite_file::{self, Schema};
use crate::store::{DbResult, StoreError};
use hearth_core::measure::hpke_dap::DapKeyPair;
use hearth_core::measure::{TaskParams, dap};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// 2: the first version with the store identity (`sqlite_file`), which every store since has.
const SCHEMA_VERSION: i64 = 2;

/// The table only this kind of store has: it tells the measurement store apart from the secure
/// aggregation helper's, which has the same role in its identity.
const MARKER_TABLE: &str = "dap_key";

const MEASURE_HELPER_SCHEMA: Schema =
    Schema { tables: SCHEMA, version: SCHEMA_VERSION, marker_table: MARKER_TABLE, upgrades: &[] };

const SCHEMA: &str = "
CREATE TABLE dap_key (
    config_id INTEGER PRIMARY KEY CHECK (config_id BETWEEN 0 AND 255),
    secret BLOB NOT NULL CHECK (length(secret) = 32)
);
-- Tasks as the leader provisioned them (TaskParams JSON; the id commits to every parameter),
-- with their period for the sweep of expired periods.
CREATE TABLE tasks (
    task_id BLOB PRIMARY KEY CHECK (length(task_id) = 32),
    params TEXT NOT NULL,
    period_secs INTEGER NOT NULL
);
-- A report id is counted at most once per task, whichever job or period carries it again.
CREATE TABLE reports (
    task_id BLOB NOT NULL REFERENCES tasks (task_id),
    report_id BLOB NOT NULL CHECK (length(report_id) = 16),
    period_start INTEGER NOT NULL,
    PRIMARY KEY (task_id, report_id)
);
CREATE INDEX reports_by_period ON reports (task_id, period_start);
-- The sum of a period's output shares so far; deleted when the period is released or expires.
CREATE TABLE aggregates (
    task_id BLOB NOT NULL REFERENCES tasks (task_id),
    period_start INTEGER NOT NULL,
    share BLOB NOT NULL,
    PRIMARY KEY (task_id, period_start)
);
-- Each job's request digest and response: a retry gets the same bytes. period_start is its
-- reports' latest period: the row is deleted when that period expires.
CREATE TABLE jobs (
    task_id BLOB NOT NULL REFERENCES tasks (task_id),
    job_id BLOB NOT NULL CHECK (length(job_id) = 16),
    period_start INTEGER NOT NULL,
    request_sha256 TEXT NOT NULL,
    response BLOB NOT NULL,
    PRIMARY KEY (task_id, job_id)
);
CREATE INDEX jobs_by_period ON jobs (task_id, period_start);
-- A period's one release: a retry gets the same sealed share, never a fresh noise draw.
CREATE TABLE releases (
    task_id BLOB NOT NULL REFERENCES tasks (task_id),
    period_start INTEGER NOT NULL,
    request_sha256 TEXT NOT NULL,
    response BLOB NOT NULL,
    released_ms INTEGER NOT NULL,
    PRIMARY KEY (task_id, period_start)
);
";

/// A job's or a release's stored answer, and the digest of the request it answered.
pub struct Answered {
    /// SHA-256 of the request, hex.
    pub request_sha256: String,
    pub response: Vec<u8>,
}

/// What one aggregation job writes, in one transaction.
pub struct JobRecord<'a> {
    pub job_id: &'a dap::AggregationJobId,
    /// The latest period of its reports.
    pub period_start: u64,
    pub request_sha256: &'a str,
    /// The reports it counted, with their periods.
    pub counted: &'a [(dap::ReportId, u64)],
    /// Each touched period's new aggregate share (encoded).
    pub aggregates: &'a [(u64, Vec<u8>)],
    pub response: &'a [u8],
}

/// What one sweep deleted.
pub struct Swept {
    pub aggregates: usize,
    pub jobs: usize,
}

pub struct MeasureStore {
    conn: Connection,
}

impl MeasureStore {
    /// `init`: creates the store with `key`, the helper's DAP HPKE key.
    pub fn create(path: &Path, key: &DapKeyPair) -> Result<(), StoreError> {
        let config_id = u8::from(*key.config().id());
        sqlite_file::create(path, Role::Helper, &MEASURE_HELPER_SCHEMA, |conn| {
            conn.execute("INSERT INTO dap_key (config_id, secret) VALUES (?1, ?2)", params![config_id, &key.secret()[..]])
                .map(drop)
        })
        .map(drop)
    }

    /// Opens the store `init` made; never creates one, and refuses the secure aggregation
    /// helper's store (same role, no [`MARKER_TABLE`]).
    pub fn open(path: &Path) -> Result<MeasureStore, StoreError> {
        let (conn, _) = sqlite_file::open(path, Role::Helper, &MEASURE_HELPER_SCHEMA)?;
        let marker = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1";
        let db = |source: rusqlite::Error| StoreError::Db { store: path.display().to_string(), source: source.into() };
        if conn.query_row(marker, [MARKER_TABLE], |_| Ok(())).optional().map_err(db)?.is_none() {
            return Err(StoreError::NotAStore {
                store: path.display().to_string(),
                why: "it is the helper's secure aggregation store, not its measurement store".into(),
            });
        }
        Ok(MeasureStore { conn })
    }

    /// The DAP HPKE key; a store without one is refused (a new key would leave every sealed
    /// share unopenable).
    pub fn key(&self) -> Result<DapKeyPair, String> {
        let stored: Option<(u8, Vec<u8>)> = self
            .conn
            .query_row("SELECT config_id, secret FROM dap_key ORDER BY config_id LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| e.to_string())?;
        let (config_id, secret) = stored.ok_or("the measurement database holds no DAP key; `hearth-aggregator init` makes it")?;
        let secret: [u8; 32] = secret.try_into().map_err(|_| "the stored DAP key is not 32 bytes")?;
        Ok(DapKeyPair::from_secret(config_id, &secret))
    }

    pub fn task(&self, task_id: &dap::TaskId) -> DbResult<Option<TaskParams>> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT params FROM tasks WHERE task_id = ?1", [&task_id.as_ref()[..]], |r| r.get(0))
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| crate::store::DbError::Corrupt(format!("stored task {task_id}: {e}"))))
            .transpose()
    }

    /// Stores a task; `false` when it was there already (its id commits to its parameters).
    pub fn provision(&mut self, task_id: &dap::TaskId, params: &TaskParams) -> DbResult<bool> {
        let json = serde_json::to_string(params).expect("task parameters serialise");
        let n = self.conn.execute(
            "INSERT INTO tasks (task_id, params, period_secs) VALUES (?1, ?2, ?3) ON CONFLICT (task_id) DO NOTHING",
            params![&task_id.as_ref()[..], json, params.period_secs],
        )?;
        Ok(n == 1)
    }

    pub fn job(&self, task_id: &dap::TaskId, job_id: &dap::AggregationJobId) -> DbResult<Option<Answered>> {
        Ok(self
            .conn
            .query_row(
                "SELECT request_sha256, response FROM jobs WHERE task_id = ?1 AND job_id = ?2",
                params![&task_id.as_ref()[..], &job_id.as_ref()[..]],
                |r| Ok(Answered { request_sha256: r.get(0)?, response: r.get(1)? }),
            )
            .optional()?)
    }

    /// Whether report `id` was counted in an earlier job of the task.
    pub fn counted(&self, task_id: &dap::TaskId, id: &dap::ReportId) -> DbResult<bool> {
        let mut stmt = self.conn.prepare_cached("SELECT 1 FROM reports WHERE task_id = ?1 AND report_id = ?2")?;
        Ok(stmt.exists(params![&task_id.as_ref()[..], &id.as_ref()[..]])?)
    }

    /// The period's release, if it was released.
    pub fn release(&self, task_id: &dap::TaskId, period: u64) -> DbResult<Option<Answered>> {
        Ok(self
            .conn
            .query_row(
                "SELECT request_sha256, response FROM releases WHERE task_id = ?1 AND period_start = ?2",
                params![&task_id.as_ref()[..], period],
                |r| Ok(Answered { request_sha256: r.get(0)?, response: r.get(1)? }),
            )
            .optional()?)
    }

    /// The period's aggregate share so far (encoded), if any report of it was counted.
    pub fn aggregate(&self, task_id: &dap::TaskId, period: u64) -> DbResult<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT share FROM aggregates WHERE task_id = ?1 AND period_start = ?2",
                params![&task_id.as_ref()[..], period],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The ids counted for the period.
    pub fn batch(&self, task_id: &dap::TaskId, period: u64) -> DbResult<Vec<dap::ReportId>> {
        let mut stmt = self.conn.prepare_cached("SELECT report_id FROM reports WHERE task_id = ?1 AND period_start = ?2")?;
        let rows = stmt.query_map(params![&task_id.as_ref()[..], period], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|id| {
            let id = id?;
            dap::ReportId::try_from(&id[..])
                .map_err(|_| crate::store::DbError::Corrupt(format!("a stored report id of {} bytes", id.len())))
        })
        .collect()
    }

    /// A job's counted ids, the periods' new aggregate shares and its response, in one
    /// transaction: a job is counted whole or not at all. A report id counted before, or a job
    /// id used before, fails the transaction (primary keys), so a race can never count twice.
    pub fn record_job(&mut self, task_id: &dap::TaskId, job: &JobRecord) -> DbResult<()> {
        let task = &task_id.as_ref()[..];
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO reports (task_id, report_id, period_start) VALUES (?1, ?2, ?3)")?;
            for (id, period) in job.counted {
                insert.execute(params![task, &id.as_ref()[..], period])?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO aggregates (task_id, period_start, share) VALUES (?1, ?2, ?3)
                 ON CONFLICT (task_id, period_start) DO UPDATE SET share = excluded.share",
            )?;
            for (period, share) in job.aggregates {
                upsert.execute(params![task, period, share])?;
            }
        }
        tx.execute(
            "INSERT INTO jobs (task_id, job_id, period_start, request_sha256, response) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![task, &job.job_id.as_ref()[..], job.period_start, job.request_sha256, job.response],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes, for each task, the aggregates and job responses of the periods that start at
    /// or before `last_expired(period_secs)` (`None`: none of its periods has expired), in one
    /// transaction. Counted ids and releases stay.
    pub fn sweep(&mut self, last_expired: impl Fn(u64) -> Option<u64>) -> DbResult<Swept> {
        let tx = self.conn.transaction()?;
        let tasks: Vec<(Vec<u8>, u64)> = {
            let mut stmt = tx.prepare_cached("SELECT task_id, period_secs FROM tasks")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        };
        let mut swept = Swept { aggregates: 0, jobs: 0 };
        for (task, period_secs) in tasks {
            let Some(last) = last_expired(period_secs) else { continue };
            swept.aggregates +=
                tx.execute("DELETE FROM aggregates WHERE task_id = ?1 AND period_start <= ?2", params![task, last])?;
            swept.jobs += tx.execute("DELETE FROM jobs WHERE task_id = ?1 AND period_start <= ?2", params![task, last])?;
        }
        tx.commit()?;
        Ok(swept)
    }

    /// Records the period's release and deletes its un-noised aggregate share, in one
    /// transaction.
    pub fn record_release(&mut self, task_id: &dap::TaskId, period: u64, release: &Answered, now_ms: i64) -> DbResult<()> {
        let task = &task_id.as_ref()[..];
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO releases (task_id, period_start, request_sha256, response, released_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![task, period, release.request_sha256, release.response, now_ms],
        )?;
        tx.execute("DELETE FROM aggregates WHERE task_id = ?1 AND period_start = ?2", params![task, period])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-measure-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_key_survives_a_reopen_and_the_secagg_store_is_refused() {
        let dir = scratch("key");
        let key = DapKeyPair::generate(7).unwrap();
        MeasureStore::create(&dir.join("measure.db"), &key).unwrap();
        let store = MeasureStore::open(&dir.join("measure.db")).unwrap();
        assert_eq!(store.key().unwrap().config(), key.config());
        crate::store::sqlite_helper::SqliteHelper::create(&dir.join("secagg.db")).unwrap();
        assert!(matches!(MeasureStore::open(&dir.join("secagg.db")), Err(StoreError::NotAStore { .. })));
        assert!(matches!(MeasureStore::open(&dir.join("none.db")), Err(StoreError::Missing { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_job_is_recorded_whole_or_not_at_all() {
        let dir = scratch("job");
        let path = dir.join("measure.db");
        MeasureStore::create(&path, &DapKeyPair::generate(1).unwrap()).unwrap();
        let mut store = MeasureStore::open(&path).unwrap();
        let task = dap::TaskId::from([1; 32]);
        store
            .conn
            .execute("INSERT INTO tasks (task_id, params, period_secs) VALUES (?1, '{}', 60)", [&task.as_ref()[..]])
            .unwrap();
        let (a, b) = (dap::ReportId::from([1; 16]), dap::ReportId::from([2; 16]));
        let (one, two) = (dap::AggregationJobId::from([1; 16]), dap::AggregationJobId::from([2; 16]));
        let aggregates = [(60, vec![1])];
        let job = |job_id, counted| JobRecord {
            job_id,
            period_start: 60,
            request_sha256: "digest",
            counted,
            aggregates: &aggregates,
            response: b"ok",
        };
        let (first, second) = ([(a, 60)], [(b, 60), (a, 60)]);
        store.record_job(&task, &job(&one, &first)).unwrap();
        // `a` again beside a fresh `b`: the whole job is refused, `b` is not counted.
        assert!(store.record_job(&task, &job(&two, &second)).is_err());
        assert!(store.counted(&task, &a).unwrap());
        assert!(!store.counted(&task, &b).unwrap());
        assert!(store.job(&task, &two).unwrap().is_none());
        assert_eq!(store.job(&task, &one).unwrap().unwrap().response, b"ok");
        assert_eq!(store.aggregate(&task, 60).unwrap(), Some(vec![1]));
        assert_eq!(store.batch(&task, 60).unwrap(), vec![a]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
