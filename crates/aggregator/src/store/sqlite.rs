//! The SQLite store of a single server or a leader (see `store` for what it keeps). WAL with
//! synchronous=FULL, so a committed transaction survives a killed process (and a power cut);
//! every multi-row change is one transaction. One process writes it (a second would wait on
//! SQLite's lock, not share the work): replicas need PostgreSQL.

use super::sqlite_file::{self, Schema};
use super::{
    Batch, Contents, DbResult, Identity, ModelReader, PartialOf, RoundRow, RoundStore, Settled, Settlement, StoreError, Stored,
    StoredModel, Verdict, f32_bytes, f32_values,
};
use crate::config::Role;
use crate::helper::SealedSeed;
use crate::store_health::StoreHealth;
use crate::sum::Sum;
use hearth_core::learning::server::OptimizerState;
use hearth_core::privacy::shares::Report;
use hearth_core::privacy::wire::Update;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use std::path::Path;

/// 2: the store identity (`sqlite_file`), added on open to a version-1 store.
/// 3: partial sums instead of update bodies (`upgrade_to_partials`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE models (
    version INTEGER PRIMARY KEY,
    onnx BLOB NOT NULL,
    manifest TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    from_round INTEGER
);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    model_version INTEGER NOT NULL REFERENCES models(version),
    state TEXT NOT NULL CHECK (state IN ('open', 'closed', 'abandoned')),
    opened_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    accepted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX one_open_round ON rounds(state) WHERE state = 'open';
-- One row per accepted upload. The id is kept after its round ends, so a replay is refused
-- whichever round it names; a leader's sealed seed only until then.
CREATE TABLE updates (
    nonce BLOB PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    seed BLOB
);
CREATE INDEX updates_by_round ON updates(round_id) WHERE seed IS NOT NULL;
-- Each writer's sum of the open round's uploads; dropped when the round ends.
CREATE TABLE partials (
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    writer INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum BLOB NOT NULL,
    PRIMARY KEY (round_id, writer)
);
CREATE TABLE optimizer_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    steps INTEGER NOT NULL,
    m BLOB NOT NULL,
    v BLOB NOT NULL
);
";

/// The tables of a single server's or leader's store at versions 1 and 2 (update bodies
/// kept until their round ends).
#[cfg(test)]
pub(crate) const ROUNDS_TABLES_V2: &str = "
CREATE TABLE models (
    version INTEGER PRIMARY KEY,
    onnx BLOB NOT NULL,
    manifest TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    from_round INTEGER
);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    model_version INTEGER NOT NULL REFERENCES models(version),
    state TEXT NOT NULL CHECK (state IN ('open', 'closed', 'abandoned')),
    opened_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    accepted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX one_open_round ON rounds(state) WHERE state = 'open';
-- One row per accepted update. The nonce is kept after its round ends (the body is dropped),
-- so a replay is refused whichever round it names.
CREATE TABLE updates (
    nonce BLOB PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    body BLOB
);
CREATE INDEX updates_by_round ON updates(round_id) WHERE body IS NOT NULL;
CREATE TABLE optimizer_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    steps INTEGER NOT NULL,
    m BLOB NOT NULL,
    v BLOB NOT NULL
);
";

/// A single server's or a leader's store.
pub const ROUNDS_SCHEMA: Schema =
    Schema { tables: SCHEMA, version: SCHEMA_VERSION, marker_table: "models", upgrades: &[upgrade_to_partials] };

/// Version 2 kept every update's body until its round ended; version 3 keeps the open round's
/// sum instead. The open round's bodies become one partial (and a leader's seeds), in the
/// transaction that records version 3, so an upgrade loses no acknowledged upload.
fn upgrade_to_partials(tx: &Transaction, role: Role) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE partials (
            round_id INTEGER NOT NULL REFERENCES rounds(id),
            writer INTEGER NOT NULL,
            count INTEGER NOT NULL,
            sum BLOB NOT NULL,
            PRIMARY KEY (round_id, writer)
        );
        DROP INDEX updates_by_round;",
    )?;
    let bad = |e: String| rusqlite::Error::ToSqlConversionFailure(e.into());
    let mut sum: Option<(u64, Sum)> = None;
    let mut seeds = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT u.nonce, u.body, u.round_id FROM updates u JOIN rounds r ON r.id = u.round_id
             WHERE r.state = 'open' AND u.body IS NOT NULL ORDER BY u.rowid",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (nonce, body, round): (Vec<u8>, Vec<u8>, u64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let upload = match role {
                Role::Leader => Report::decode(&body).map(crate::validate::Upload::Report),
                _ => Update::decode(&body).map(crate::validate::Upload::Plain),
            }
            .map_err(|e| bad(format!("stored update of round {round}: {e}")))?;
            if let crate::validate::Upload::Report(r) = &upload {
                seeds.push((nonce, SealedSeed::stored(r)));
            }
            let params = match &upload {
                crate::validate::Upload::Plain(u) => u.len(),
                crate::validate::Upload::Report(r) => r.share.len(),
            };
            sum.get_or_insert_with(|| (round, Sum::new(role, params))).1.add(&upload);
        }
    }
    tx.execute("UPDATE updates SET body = NULL", [])?;
    tx.execute_batch(
        "ALTER TABLE updates RENAME COLUMN body TO seed;
         CREATE INDEX updates_by_round ON updates(round_id) WHERE seed IS NOT NULL;",
    )?;
    for (nonce, seed) in seeds {
        tx.execute("UPDATE updates SET seed = ?1 WHERE nonce = ?2", params![seed, nonce])?;
    }
    if let Some((round, sum)) = sum {
        tx.execute(
            "INSERT INTO partials (round_id, writer, count, sum) VALUES (?1, 0, ?2, ?3)",
            params![round, sum.count(), sum.encode()],
        )?;
    }
    Ok(())
}

pub struct SqliteRounds {
    conn: Connection,
    role: Role,
}

/// A connection with the pragmas every user of the database needs. Never creates the file: only
/// `sqlite_file::create` does, through `init`.
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Partial sums are ~1-2 MB blobs: 64 KiB pages mean far fewer overflow pages to allocate,
    // checksum and copy (measured 2x the accepted uploads/s of 4 KiB pages when bodies were
    // stored). Takes effect when the database is created.
    conn.pragma_update(None, "page_size", 65536)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Seeds dropped at round end are overwritten, not left in free pages: with the helper's key
    // they would unmask every report of the round.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

impl SqliteRounds {
    /// `init`: creates the store for `role` (single or leader), seeded with its first model.
    pub fn create(path: &Path, role: Role, first: &StoredModel) -> Result<Identity, StoreError> {
        sqlite_file::create(path, role, &ROUNDS_SCHEMA, |conn| insert_model(conn, first, None, crate::aggregate::now_ms()))
    }

    /// Opens the store `init` made for `role`; never creates one (see `sqlite_file::open`).
    pub fn open(path: &Path, role: Role) -> Result<(SqliteRounds, StoreHealth), StoreError> {
        let (conn, health) = sqlite_file::open(path, role, &ROUNDS_SCHEMA)?;
        Ok((SqliteRounds { conn, role }, health))
    }
}

impl RoundStore for SqliteRounds {
    fn touch(&mut self) -> DbResult<()> {
        Ok(sqlite_file::touch(&self.conn)?)
    }

    fn latest_model(&mut self) -> DbResult<Option<StoredModel>> {
        let sql = "SELECT version, onnx, manifest, sha256 FROM models ORDER BY version DESC LIMIT 1";
        Ok(self.conn.query_row(sql, [], model_row).optional()?)
    }

    fn open_round(&mut self) -> DbResult<Option<RoundRow>> {
        Ok(open_round(&self.conn)?)
    }

    fn closed_rounds(&mut self) -> DbResult<u64> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM rounds WHERE state = 'closed'", [], |r| r.get(0))?)
    }

    fn ensure_round(&mut self, model_version: u64, now_ms: i64, deadline_ms: i64) -> DbResult<RoundRow> {
        let tx = self.conn.transaction()?;
        let row = match open_round(&tx)? {
            Some(row) => row,
            None => start_round(&tx, model_version, now_ms, deadline_ms)?,
        };
        tx.commit()?;
        Ok(row)
    }

    fn was_accepted(&mut self, id: &[u8; 16]) -> DbResult<bool> {
        Ok(was_accepted(&self.conn, id)?)
    }

    fn accept(&mut self, batch: &Batch, partial: &mut PartialOf) -> DbResult<Stored> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(round) = open_round(&tx)?.filter(|r| r.id == batch.round) else {
            return Ok(Stored::RoundEnded);
        };
        let held: Option<u64> = tx
            .query_row(
                "SELECT count FROM partials WHERE round_id = ?1 AND writer = ?2",
                params![batch.round, batch.writer],
                |r| r.get(0),
            )
            .optional()?;
        if held.unwrap_or(0) != batch.writer_count {
            return Ok(Stored::WriterBehind);
        }
        let room = batch.cap.map_or(u64::MAX, |k| k.saturating_sub(round.accepted));
        let verdicts = {
            let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO updates (nonce, round_id, seed) VALUES (?1, ?2, ?3)")?;
            super::verdicts(batch.items, room, |item| {
                Ok::<_, rusqlite::Error>(insert.execute(params![&item.id[..], batch.round, item.seed])? == 1)
            })?
        };
        let added = verdicts.iter().filter(|v| **v == Verdict::Fresh).count() as u64;
        if let Some((count, sum)) = partial(&verdicts) {
            tx.execute(
                "INSERT INTO partials (round_id, writer, count, sum) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (round_id, writer) DO UPDATE SET count = excluded.count, sum = excluded.sum",
                params![batch.round, batch.writer, count, sum],
            )?;
        }
        tx.execute("UPDATE rounds SET accepted = accepted + ?1 WHERE id = ?2", params![added, batch.round])?;
        tx.commit()?;
        Ok(Stored::Batch { verdicts, accepted: round.accepted + added })
    }

    fn settle(&mut self, round: u64, decide: &mut dyn FnMut(Contents) -> Settlement) -> DbResult<Settled> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(row) = open_round(&tx)?.filter(|r| r.id == round) else {
            return Ok(Settled::Elsewhere);
        };
        let contents = Contents {
            round: row,
            released: tx.query_row("SELECT COUNT(*) FROM rounds WHERE state = 'closed'", [], |r| r.get(0))?,
            partials: rows(&tx, "SELECT count, sum FROM partials WHERE round_id = ?1", round, |r| Ok((r.get(0)?, r.get(1)?)))?,
            seeds: match self.role {
                Role::Leader => {
                    rows(&tx, "SELECT nonce, seed FROM updates WHERE round_id = ?1 AND seed IS NOT NULL", round, |r| {
                        let id: Vec<u8> = r.get(0)?;
                        Ok((id.try_into().unwrap_or([0; 16]), r.get(1)?))
                    })?
                }
                _ => Vec::new(),
            },
            optimizer: optimizer_state(&tx)?,
        };
        let settled = match decide(contents) {
            Settlement::Keep => return Ok(Settled::Kept),
            Settlement::Release { model, optimizer, next_deadline_ms, now_ms } => {
                insert_model(&tx, &model, Some(round), now_ms)?;
                end_round(&tx, round, "closed", now_ms)?;
                if let Some(o) = optimizer {
                    tx.execute(
                        "INSERT OR REPLACE INTO optimizer_state (id, steps, m, v) VALUES (1, ?1, ?2, ?3)",
                        params![o.steps, f32_bytes(&o.m), f32_bytes(&o.v)],
                    )?;
                }
                let next = next_deadline_ms.map(|d| start_round(&tx, model.version, now_ms, d)).transpose()?;
                Settled::Released { next }
            }
            Settlement::Abandon { next_deadline_ms, now_ms } => {
                end_round(&tx, round, "abandoned", now_ms)?;
                Settled::Abandoned { next: start_round(&tx, row.model_version, now_ms, next_deadline_ms)? }
            }
        };
        tx.commit()?;
        Ok(settled)
    }
}

/// Request handlers' read-only connection. Under WAL it reads beside the writer and never
/// blocks it; it cannot write, whatever a bug asks.
pub struct SqliteReader {
    conn: Connection,
}

impl SqliteReader {
    pub fn open(path: &Path, expected: &Identity) -> Result<SqliteReader, StoreError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .and_then(|c| c.busy_timeout(std::time::Duration::from_secs(10)).map(|()| c))
            .map_err(|e| StoreError::Db { store: path.display().to_string(), source: e.into() })?;
        sqlite_file::check_identity(&conn, expected)?;
        Ok(SqliteReader { conn })
    }
}

impl ModelReader for SqliteReader {
    fn ping(&mut self) -> DbResult<()> {
        Ok(self.conn.query_row("SELECT 1", [], |_| Ok(()))?)
    }

    fn model(&mut self, version: u64) -> DbResult<Option<StoredModel>> {
        let sql = "SELECT version, onnx, manifest, sha256 FROM models WHERE version = ?1";
        Ok(self.conn.query_row(sql, [version], model_row).optional()?)
    }

    fn was_accepted(&mut self, id: &[u8; 16]) -> DbResult<bool> {
        Ok(was_accepted(&self.conn, id)?)
    }
}

fn rows<T>(
    tx: &Transaction,
    sql: &str,
    round: u64,
    f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    tx.prepare(sql)?.query_map([round], f)?.collect()
}

fn open_round(conn: &Connection) -> rusqlite::Result<Option<RoundRow>> {
    conn.query_row("SELECT id, model_version, opened_ms, deadline_ms, accepted FROM rounds WHERE state = 'open'", [], |r| {
        Ok(RoundRow {
            id: r.get(0)?,
            model_version: r.get(1)?,
            opened_ms: r.get(2)?,
            deadline_ms: r.get(3)?,
            accepted: r.get(4)?,
        })
    })
    .optional()
}

fn optimizer_state(conn: &Connection) -> rusqlite::Result<Option<OptimizerState>> {
    conn.query_row("SELECT steps, m, v FROM optimizer_state WHERE id = 1", [], |r| {
        Ok(OptimizerState { steps: r.get(0)?, m: f32_values(r.get_ref(1)?.as_blob()?), v: f32_values(r.get_ref(2)?.as_blob()?) })
    })
    .optional()
}

fn model_row(r: &rusqlite::Row) -> rusqlite::Result<StoredModel> {
    Ok(StoredModel { version: r.get(0)?, onnx: r.get(1)?, manifest: r.get(2)?, sha256: r.get(3)? })
}

fn insert_model(conn: &Connection, m: &StoredModel, from_round: Option<u64>, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO models (version, onnx, manifest, sha256, created_ms, from_round) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![m.version, m.onnx, m.manifest, m.sha256, now_ms, from_round],
    )?;
    Ok(())
}

fn start_round(conn: &Connection, model_version: u64, now_ms: i64, deadline_ms: i64) -> rusqlite::Result<RoundRow> {
    conn.execute(
        "INSERT INTO rounds (model_version, state, opened_ms, deadline_ms) VALUES (?1, 'open', ?2, ?3)",
        params![model_version, now_ms, deadline_ms],
    )?;
    Ok(RoundRow { id: conn.last_insert_rowid() as u64, model_version, opened_ms: now_ms, deadline_ms, accepted: 0 })
}

/// Ends a round, drops its partial sums and seeds; the ids stay.
fn end_round(conn: &Connection, round: u64, state: &str, now_ms: i64) -> rusqlite::Result<()> {
    let changed = conn
        .execute("UPDATE rounds SET state = ?1, ended_ms = ?2 WHERE id = ?3 AND state = 'open'", params![state, now_ms, round])?;
    if changed != 1 {
        return Err(rusqlite::Error::StatementChangedRows(changed));
    }
    conn.execute("UPDATE updates SET seed = NULL WHERE round_id = ?1 AND seed IS NOT NULL", [round])?;
    conn.execute("DELETE FROM partials WHERE round_id = ?1", [round])?;
    Ok(())
}

fn was_accepted(conn: &Connection, id: &[u8; 16]) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM updates WHERE nonce = ?1)", [&id[..]], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite_file::tests::version_1;
    use hearth_core::privacy::noise::Sampler;
    use hearth_core::privacy::privatize::build_update;
    use hearth_core::privacy::wire::Encoding;

    #[test]
    fn an_open_round_of_a_version_1_store_becomes_one_partial_holding_every_update() {
        let dir = std::env::temp_dir().join(format!("hearth-store-upgrade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hearth.db");
        version_1(&path, ROUNDS_TABLES_V2);
        let conn = Connection::open(&path).unwrap();
        conn.execute("INSERT INTO models VALUES (1, x'00', '{}', 'ab', 0, NULL)", []).unwrap();
        conn.execute(
            "INSERT INTO rounds (id, model_version, state, opened_ms, deadline_ms, accepted) VALUES (1, 1, 'closed', 0, 9, 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO rounds (id, model_version, state, opened_ms, deadline_ms, accepted) VALUES (2, 1, 'open', 0, 9, 3)",
            [],
        )
        .unwrap();
        conn.execute("INSERT INTO updates (nonce, round_id, body) VALUES (x'00000000000000000000000000000001', 1, NULL)", [])
            .unwrap();
        let mut expected = vec![0f64; 5];
        let mut nonces = Vec::new();
        for i in 0..3 {
            let delta: Vec<f32> = (0..5).map(|j| (i * 5 + j) as f32 * 0.01).collect();
            let (u, _) = build_update(delta, 1, 2, 1.0, 0.0, Encoding::F32, &mut Sampler::os()).unwrap();
            u.iter_values().zip(&mut expected).for_each(|(v, e)| *e += f64::from(v));
            conn.execute("INSERT INTO updates (nonce, round_id, body) VALUES (?1, 2, ?2)", params![&u.nonce[..], u.encode()])
                .unwrap();
            nonces.push(u.nonce);
        }
        drop(conn);

        let (mut store, _) = SqliteRounds::open(&path, Role::Single).unwrap();
        let version: i64 = store.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.open_round().unwrap().map(|r| (r.id, r.accepted)), Some((2, 3)));
        // Every id stays (replays are still refused), no body does.
        assert!(nonces.iter().all(|n| store.was_accepted(n).unwrap()));
        let seeds: i64 = store.conn.query_row("SELECT COUNT(*) FROM updates WHERE seed IS NOT NULL", [], |r| r.get(0)).unwrap();
        assert_eq!(seeds, 0);
        let mut decided = None;
        store
            .settle(2, &mut |c| {
                decided = Some((c.released, c.partials.clone()));
                Settlement::Keep
            })
            .unwrap();
        let (released, partials) = decided.unwrap();
        assert_eq!((released, partials.len(), partials[0].0), (1, 1, 3));
        let Sum::Plain(sum) = Sum::decode(Role::Single, 5, 3, &partials[0].1).unwrap() else { unreachable!() };
        assert_eq!(sum.sums(), expected.as_slice());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_leader_store_of_version_1_keeps_its_open_rounds_shares_as_one_partial_and_its_seeds() {
        use hearth_core::privacy::seal::{HelperKey, KeyPair};
        use hearth_core::privacy::shares::{Binding, SecAggTask, ShareSum, build_report};

        let dir = std::env::temp_dir().join(format!("hearth-store-upgrade-leader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hearth.db");
        version_1(&path, ROUNDS_TABLES_V2);
        let conn = Connection::open(&path).unwrap();
        conn.execute("INSERT INTO models VALUES (1, x'00', '{}', 'ab', 0, NULL)", []).unwrap();
        conn.execute(
            "INSERT INTO rounds (id, model_version, state, opened_ms, deadline_ms, accepted) VALUES (1, 1, 'closed', 0, 9, 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO rounds (id, model_version, state, opened_ms, deadline_ms, accepted) VALUES (2, 1, 'open', 0, 9, 3)",
            [],
        )
        .unwrap();
        // The ended round's report: its id stays, it has no body and gets no seed.
        let ended = [1u8; 16];
        conn.execute("INSERT INTO updates (nonce, round_id, body) VALUES (?1, 1, NULL)", [&ended[..]]).unwrap();
        let key = HelperKey::from_config(&KeyPair::from_secret(1, &[7; 32]).config()).unwrap();
        let secagg = SecAggTask { clients: 3, leader_noise: 2.0, helper_noise: 2.0 };
        let params = 40;
        let binding = Binding { round_id: 2, model_version: 1, params: params as u64, clip_norm: 1.0, local_noise: 0.0, secagg };
        let mut expected = ShareSum::new(params);
        let mut reports = Vec::new();
        for i in 0..3 {
            let delta: Vec<f32> = (0..params).map(|j| ((i * params + j) % 7) as f32 * 0.01 - 0.03).collect();
            let report = build_report(delta, &binding, &key, &mut Sampler::os()).unwrap().report;
            expected.add(report.share.iter().copied());
            conn.execute(
                "INSERT INTO updates (nonce, round_id, body) VALUES (?1, 2, ?2)",
                params![&report.report_id[..], report.encode()],
            )
            .unwrap();
            reports.push(report);
        }
        drop(conn);

        let (mut store, _) = SqliteRounds::open(&path, Role::Leader).unwrap();
        let version: i64 = store.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.open_round().unwrap().map(|r| (r.id, r.accepted)), Some((2, 3)));
        assert!(store.was_accepted(&ended).unwrap());
        // Each report's seed is what the keeper stores for a report it accepts today, in the
        // column the release reads it from.
        for report in &reports {
            assert!(store.was_accepted(&report.report_id).unwrap());
            let seed: Vec<u8> =
                store.conn.query_row("SELECT seed FROM updates WHERE nonce = ?1", [&report.report_id[..]], |r| r.get(0)).unwrap();
            assert_eq!(seed, SealedSeed::stored(report));
        }
        let seeded: i64 = store.conn.query_row("SELECT COUNT(*) FROM updates WHERE seed IS NOT NULL", [], |r| r.get(0)).unwrap();
        assert_eq!(seeded, 3, "only the open round's reports keep a seed");
        let mut decided = None;
        store
            .settle(2, &mut |c| {
                decided = Some((c.partials.clone(), c.seeds.len()));
                Settlement::Keep
            })
            .unwrap();
        let (partials, seeds) = decided.unwrap();
        assert_eq!((partials.len(), partials[0].0, seeds), (1, 3, 3));
        let Sum::Shares(sum) = Sum::decode(Role::Leader, params, 3, &partials[0].1).unwrap() else { unreachable!() };
        assert_eq!((sum.count(), sum.values()), (expected.count(), expected.values()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
