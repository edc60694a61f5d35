//! The SQLite store: published model packs, rounds, the accepted updates of the open round and
//! the server optimizer's state. WAL with synchronous=FULL, so a committed transaction survives
//! a killed process (and a power cut); every multi-row change is one transaction.

use crate::config::Role;
use crate::store_file::{Identity, Schema, StoreError};
use crate::store_health::StoreHealth;
use hearth_core::learning::server::OptimizerState;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::Path;

/// 2: the store identity (`store_file`), added on open to a version-1 store.
const SCHEMA_VERSION: i64 = 2;

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
pub const ROUNDS_SCHEMA: Schema = Schema { tables: SCHEMA, version: SCHEMA_VERSION, marker_table: "models" };

pub type DbResult<T> = rusqlite::Result<T>;

#[derive(Debug, Clone)]
pub struct StoredModel {
    pub version: u64,
    pub onnx: Vec<u8>,
    pub manifest: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundRow {
    pub id: u64,
    pub model_version: u64,
    pub opened_ms: i64,
    pub deadline_ms: i64,
    pub accepted: u64,
}

/// What closing a round writes, atomically.
pub struct Closing<'a> {
    pub round: u64,
    pub accepted: u64,
    pub model: &'a StoredModel,
    pub optimizer: Option<&'a OptimizerState>,
    pub now_ms: i64,
}

pub struct Store {
    conn: Connection,
}

/// A connection with the pragmas every user of the database needs. Never creates the file: only
/// `store_file::create` does, through `init`.
pub fn connect(path: &Path) -> DbResult<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Updates are ~0.5-1 MB blobs: 64 KiB pages mean far fewer overflow pages to allocate,
    // checksum and copy; measured 2x the accepted uploads/s of 4 KiB pages. Takes effect when
    // the database is created.
    conn.pragma_update(None, "page_size", 65536)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Bodies dropped at round end are overwritten, not left in free pages: a leader's bodies hold
    // sealed seeds, which with the helper's key would unmask every report of the round.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

impl Store {
    /// `init`: creates the store for `role` (single or leader), seeded with its first model.
    pub fn create(path: &Path, role: Role, first: &StoredModel, now_ms: i64) -> Result<Identity, StoreError> {
        crate::store_file::create(path, role, &ROUNDS_SCHEMA, |conn| insert_model(conn, first, None, now_ms))
    }

    /// Opens the store `init` made for `role`; never creates one (see `store_file::open`).
    pub fn open(path: &Path, role: Role) -> Result<(Store, StoreHealth), StoreError> {
        let (conn, health) = crate::store_file::open(path, role, &ROUNDS_SCHEMA)?;
        Ok((Store { conn }, health))
    }

    /// The watchdog's test write.
    pub fn touch(&self) -> DbResult<()> {
        crate::store_file::touch(&self.conn)
    }

    pub fn latest_model(&self) -> DbResult<Option<StoredModel>> {
        latest_model(&self.conn)
    }

    pub fn open_round(&self) -> DbResult<Option<RoundRow>> {
        self.conn
            .query_row("SELECT id, model_version, opened_ms, deadline_ms, accepted FROM rounds WHERE state = 'open'", [], |r| {
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

    /// Rounds whose aggregate was released, i.e. the privacy cost so far.
    pub fn closed_rounds(&self) -> DbResult<u64> {
        self.conn.query_row("SELECT COUNT(*) FROM rounds WHERE state = 'closed'", [], |r| r.get(0))
    }

    pub fn start_round(&mut self, model_version: u64, now_ms: i64, deadline_ms: i64) -> DbResult<RoundRow> {
        start_round(&self.conn, model_version, now_ms, deadline_ms)
    }

    /// Calls `f` with the body of every accepted update of `round`, one at a time.
    pub fn for_each_update(&self, round: u64, mut f: impl FnMut(&[u8])) -> DbResult<u64> {
        let mut stmt = self.conn.prepare("SELECT body FROM updates WHERE round_id = ?1 AND body IS NOT NULL ORDER BY rowid")?;
        let mut rows = stmt.query([round])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            f(row.get_ref(0)?.as_blob()?);
            n += 1;
        }
        Ok(n)
    }

    /// Stores a batch of updates for `round` in one transaction; per item, whether it was new
    /// (false: its nonce was seen before, and nothing was written for it).
    pub fn accept(&mut self, round: u64, items: &[(&[u8; 16], &[u8])]) -> DbResult<Vec<bool>> {
        let tx = self.conn.transaction()?;
        let mut fresh = Vec::with_capacity(items.len());
        {
            let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO updates (nonce, round_id, body) VALUES (?1, ?2, ?3)")?;
            for (nonce, body) in items {
                fresh.push(insert.execute(params![&nonce[..], round, body])? == 1);
            }
            let added = fresh.iter().filter(|&&f| f).count() as u64;
            tx.execute("UPDATE rounds SET accepted = accepted + ?1 WHERE id = ?2 AND state = 'open'", params![added, round])?;
        }
        tx.commit()?;
        Ok(fresh)
    }

    /// Publishes the model a round produced, ends the round and opens the next, atomically.
    pub fn close_round(&mut self, c: &Closing, next_deadline_ms: Option<i64>) -> DbResult<Option<RoundRow>> {
        let tx = self.conn.transaction()?;
        insert_model(&tx, c.model, Some(c.round), c.now_ms)?;
        end_round(&tx, c.round, "closed", c.now_ms)?;
        if let Some(o) = c.optimizer {
            tx.execute(
                "INSERT OR REPLACE INTO optimizer_state (id, steps, m, v) VALUES (1, ?1, ?2, ?3)",
                params![o.steps, f32_bytes(&o.m), f32_bytes(&o.v)],
            )?;
        }
        let next = next_deadline_ms.map(|d| start_round(&tx, c.model.version, c.now_ms, d)).transpose()?;
        tx.commit()?;
        Ok(next)
    }

    /// Drops a round that missed its deadline (nothing is released) and opens the next.
    pub fn abandon_round(&mut self, round: u64, model_version: u64, now_ms: i64, next_deadline_ms: i64) -> DbResult<RoundRow> {
        let tx = self.conn.transaction()?;
        end_round(&tx, round, "abandoned", now_ms)?;
        let next = start_round(&tx, model_version, now_ms, next_deadline_ms)?;
        tx.commit()?;
        Ok(next)
    }

    pub fn optimizer_state(&self) -> DbResult<Option<OptimizerState>> {
        self.conn
            .query_row("SELECT steps, m, v FROM optimizer_state WHERE id = 1", [], |r| {
                Ok(OptimizerState {
                    steps: r.get(0)?,
                    m: f32_values(r.get_ref(1)?.as_blob()?),
                    v: f32_values(r.get_ref(2)?.as_blob()?),
                })
            })
            .optional()
    }
}

/// A published model by version, from any connection.
pub fn model(conn: &Connection, version: u64) -> DbResult<Option<StoredModel>> {
    conn.query_row("SELECT version, onnx, manifest, sha256 FROM models WHERE version = ?1", [version], model_row).optional()
}

fn latest_model(conn: &Connection) -> DbResult<Option<StoredModel>> {
    conn.query_row("SELECT version, onnx, manifest, sha256 FROM models ORDER BY version DESC LIMIT 1", [], model_row).optional()
}

fn model_row(r: &rusqlite::Row) -> DbResult<StoredModel> {
    Ok(StoredModel { version: r.get(0)?, onnx: r.get(1)?, manifest: r.get(2)?, sha256: r.get(3)? })
}

fn insert_model(conn: &Connection, m: &StoredModel, from_round: Option<u64>, now_ms: i64) -> DbResult<()> {
    conn.execute(
        "INSERT INTO models (version, onnx, manifest, sha256, created_ms, from_round) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![m.version, m.onnx, m.manifest, m.sha256, now_ms, from_round],
    )?;
    Ok(())
}

fn start_round(conn: &Connection, model_version: u64, now_ms: i64, deadline_ms: i64) -> DbResult<RoundRow> {
    conn.execute(
        "INSERT INTO rounds (model_version, state, opened_ms, deadline_ms) VALUES (?1, 'open', ?2, ?3)",
        params![model_version, now_ms, deadline_ms],
    )?;
    Ok(RoundRow { id: conn.last_insert_rowid() as u64, model_version, opened_ms: now_ms, deadline_ms, accepted: 0 })
}

/// Ends a round and drops its update bodies; the nonces stay.
fn end_round(conn: &Connection, round: u64, state: &str, now_ms: i64) -> DbResult<()> {
    let changed = conn
        .execute("UPDATE rounds SET state = ?1, ended_ms = ?2 WHERE id = ?3 AND state = 'open'", params![state, now_ms, round])?;
    if changed != 1 {
        return Err(rusqlite::Error::StatementChangedRows(changed));
    }
    conn.execute("UPDATE updates SET body = NULL WHERE round_id = ?1", [round])?;
    Ok(())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_values(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A connection that can only read: request handlers' ([`crate::reader::Reader`]). Under WAL it
/// reads beside the keeper's writes and never blocks them.
pub fn connect_read_only(path: &Path) -> DbResult<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// Whether an upload with this id (an update's nonce or a report id) was ever accepted, in any
/// round: `updates` keeps every accepted id after its round ends.
pub fn was_accepted(conn: &Connection, id: &[u8; 16]) -> DbResult<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM updates WHERE nonce = ?1)", [&id[..]], |r| r.get(0))
}

impl Store {
    /// See [`was_accepted`].
    pub fn was_accepted(&self, id: &[u8; 16]) -> DbResult<bool> {
        was_accepted(&self.conn, id)
    }
}
