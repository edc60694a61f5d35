//! The helper's SQLite store: its HPKE secret, every report id it ever counted, and the one
//! aggregate share it released per round. It never holds a device's seed or share: a batch is
//! opened, summed and noised in memory, and only ids and the released sum are written.

use hearth_core::privacy::noise::{ByteSource, OsRandom};
use hearth_core::privacy::seal::KeyPair;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

use super::sqlite_file::{self, Schema};
use super::{DbResult, HelperStore, Identity, Release, StoreError};
use crate::config::Role;
use crate::store_health::StoreHealth;

/// 2: the store identity (`sqlite_file`), added on open to a version-1 store.
const SCHEMA_VERSION: i64 = 2;

const HELPER_SCHEMA: Schema = Schema { tables: SCHEMA, version: SCHEMA_VERSION, marker_table: "helper_key", upgrades: &[] };

const SCHEMA: &str = "
CREATE TABLE helper_key (
    key_id INTEGER PRIMARY KEY CHECK (key_id BETWEEN 0 AND 255),
    secret BLOB NOT NULL CHECK (length(secret) = 32)
);
-- A report id is counted in at most one release, ever.
CREATE TABLE reports (
    id BLOB PRIMARY KEY CHECK (length(id) = 16),
    round_id INTEGER NOT NULL
);
-- What was released for a round: a retry of the same batch gets the same bytes (a fresh noise
-- draw per retry would let the leader average the helper's noise away).
CREATE TABLE releases (
    round_id INTEGER PRIMARY KEY,
    batch_digest TEXT NOT NULL,
    share BLOB NOT NULL,
    released_ms INTEGER NOT NULL
);
";

pub struct SqliteHelper {
    conn: Connection,
}

impl SqliteHelper {
    /// `init`: creates the helper's store with its HPKE key, drawn from the OS's CSPRNG.
    pub fn create(path: &Path) -> Result<Identity, StoreError> {
        let mut secret = [0u8; 32];
        OsRandom.fill(&mut secret).map_err(StoreError::Random)?;
        sqlite_file::create(path, Role::Helper, &HELPER_SCHEMA, |conn| {
            conn.execute("INSERT INTO helper_key (key_id, secret) VALUES (1, ?1)", [&secret[..]]).map(drop)
        })
    }

    /// Opens the store `init` made for the helper; never creates one (see `sqlite_file::open`).
    pub fn open(path: &Path) -> Result<(SqliteHelper, StoreHealth), StoreError> {
        let (conn, health) = sqlite_file::open(path, Role::Helper, &HELPER_SCHEMA)?;
        Ok((SqliteHelper { conn }, health))
    }
}

impl HelperStore for SqliteHelper {
    fn touch(&mut self) -> DbResult<()> {
        Ok(sqlite_file::touch(&self.conn)?)
    }

    fn ping(&mut self) -> DbResult<()> {
        Ok(self.conn.query_row("SELECT 1", [], |_| Ok(()))?)
    }

    /// A store without a key is refused: a new key would leave the open round's reports
    /// unopenable.
    fn key(&mut self) -> Result<KeyPair, Box<dyn std::error::Error + Send + Sync>> {
        let stored: Option<(u8, Vec<u8>)> = self
            .conn
            .query_row("SELECT key_id, secret FROM helper_key ORDER BY key_id LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (key_id, secret) = stored.ok_or("the helper's database holds no key; `hearth-aggregator init` makes it")?;
        let secret: [u8; 32] = secret.try_into().map_err(|_| "stored helper key is not 32 bytes")?;
        Ok(KeyPair::from_secret(key_id, &secret))
    }

    fn release(&mut self, round_id: u64) -> DbResult<Option<Release>> {
        Ok(self
            .conn
            .query_row("SELECT batch_digest, share FROM releases WHERE round_id = ?1", [round_id], |r| {
                Ok(Release { batch_digest: r.get(0)?, share: r.get(1)? })
            })
            .optional()?)
    }

    fn seen(&mut self, ids: &[[u8; 16]]) -> DbResult<usize> {
        let mut stmt = self.conn.prepare_cached("SELECT 1 FROM reports WHERE id = ?1")?;
        let mut n = 0;
        for id in ids {
            n += usize::from(stmt.exists([&id[..]])?);
        }
        Ok(n)
    }

    /// One process writes the file, and the helper checks under its lock before recording, so
    /// a conflict here is an error, not another replica's release.
    fn record(&mut self, round_id: u64, ids: &[[u8; 16]], release: &Release, now_ms: i64) -> DbResult<bool> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO reports (id, round_id) VALUES (?1, ?2)")?;
            for id in ids {
                insert.execute(params![&id[..], round_id])?;
            }
        }
        tx.execute(
            "INSERT INTO releases (round_id, batch_digest, share, released_ms) VALUES (?1, ?2, ?3, ?4)",
            params![round_id, release.batch_digest, release.share, now_ms],
        )?;
        tx.commit()?;
        Ok(true)
    }
}
