//! Storage: one interface, two backends.
//!
//! A role's database is an SQLite file (`database = "/path/hearth.db"`, the default: one
//! process on one machine) or a PostgreSQL database (`database = "postgres://…"`: any number of
//! replicas of the role share it). Both keep the same things with the same guarantees:
//!
//! - [`RoundStore`] (single and leader): the published models, the rounds, every accepted
//!   upload id (kept after its round, so a replay is refused whichever round it names), each
//!   writer's **partial sum** of the open round, the leader's sealed seeds until the round ends,
//!   and the server optimizer's state. An individual update is never stored: a batch of uploads
//!   is added to its writer's partial sum, and the ids and the new partial are written in one
//!   transaction, which commits before any upload of the batch is acknowledged.
//! - [`RoundStore::settle`] closes or abandons a round for exactly one caller: it holds the
//!   round's row locked while it sums the partials, so no upload joins a round being released.
//! - [`ModelReader`]: request handlers' reads (old model versions, whether an id was accepted).
//! - [`HelperStore`]: the helper's key, the ids it counted and one release per round.
//!
//! `sqlite_file` and `postgres` each make (`init`) and open stores, checking the identity
//! `init` wrote, and refuse another role's or a newer schema.

pub mod postgres;
pub mod sqlite;
pub mod sqlite_file;
pub mod sqlite_helper;

use crate::config::Role;
use crate::store_health::StoreHealth;
use hearth_core::learning::server::OptimizerState;
use hearth_core::privacy::seal::{KeyPair, hex};
use serde::Deserialize;
use std::path::PathBuf;

/// Where a role's database is.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file, absolute (resolved when the configuration is loaded).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user[:password]@host[:port]/dbname[?…]`).
    Postgres(String),
}

impl Database {
    /// A `postgres://` or `postgresql://` URL (the scheme in any case) is PostgreSQL; anything
    /// else a file path.
    pub fn parse(s: &str) -> Database {
        let scheme = s.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        if matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            Database::Postgres(s.into())
        } else {
            Database::Sqlite(s.into())
        }
    }

    /// What logs and errors name: the path, or the URL without its password.
    pub fn location(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(url) => postgres::redacted(url),
        }
    }
}

/// Never prints a password (the configuration is logged with `{:?}` in places).
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Database::Postgres(url) => f.debug_tuple("Postgres").field(&postgres::redacted(url)).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Database, D::Error> {
        String::deserialize(d).map(|s| Database::parse(&s))
    }
}

/// A database call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] ::postgres::Error),
    /// The database holds what this build never writes (damage or tampering).
    #[error("{0}")]
    Corrupt(String),
    /// A reconnection found another store (or none) where this one was. The text is what
    /// clients may read (`/healthz`): it names no database; the connection logs which.
    #[error("{0}")]
    Replaced(String),
}

pub type DbResult<T> = Result<T, DbError>;

/// Which store a database is, as `init` wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: [u8; 16],
    pub role: Role,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} ({})", hex(&self.id), role_name(self.role))
    }
}

/// Role names as written in the identity (the same as in the configuration).
const ROLE_NAMES: [(Role, &str); 3] = [(Role::Single, "single"), (Role::Leader, "leader"), (Role::Helper, "helper")];

pub fn role_name(role: Role) -> &'static str {
    ROLE_NAMES.iter().find(|(r, _)| *r == role).map_or("?", |(_, n)| n)
}

pub fn role_named(name: &str) -> Option<Role> {
    ROLE_NAMES.iter().find(|(_, n)| *n == name).map(|(r, _)| *r)
}

/// Why a store cannot be made or served from. `store` is the path, or the URL without password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {store} does not exist; create it with `hearth-aggregator init` (a server never creates its database)")]
    Missing { store: String },
    #[error("database {store} already exists; `hearth-aggregator init` never overwrites a store")]
    Exists { store: String },
    /// A write-ahead log whose database is gone: SQLite would replay it into a new store.
    #[error(
        "{store}-wal is left from a database that is gone; restore the database or move the log away before `hearth-aggregator init`"
    )]
    LeftoverLog { store: String },
    #[error(
        "database {store} is not a Hearth store ({why}); restore the right one, or move this one away and create a store with `hearth-aggregator init`"
    )]
    NotAStore { store: String, why: String },
    #[error("database {store} is a {found} store; this server's role is {expected}")]
    WrongRole { store: String, found: String, expected: &'static str },
    #[error("database {store} is {found}, not the {expected} this server opened")]
    Replaced { store: String, found: Identity, expected: Identity },
    #[error("database {store} has schema version {found}, written by a newer build; this build knows {known}")]
    NewerSchema { store: String, found: i64, known: i64 },
    #[error("database {store} cannot be written by this process ({why}); fix its permissions or the file system")]
    ReadOnly { store: String, why: String },
    #[error("database {store}: {source}")]
    Db { store: String, source: DbError },
    #[error("{store}: {source}")]
    Io { store: String, source: std::io::Error },
    #[error("no random store id: {0}")]
    Random(hearth_core::HearthError),
}

/// The optimizer state's moment vectors as both backends store them: little-endian f32s.
fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_values(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A published model pack as stored.
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
    /// Uploads the round holds, across every writer.
    pub accepted: u64,
}

/// One upload of a batch: its id, and for a leader the helper's sealed seed (kept until the
/// round ends, since the helper needs it then).
pub struct Item<'a> {
    pub id: &'a [u8; 16],
    pub seed: Option<&'a [u8]>,
}

/// A batch of uploads for `round`, added to `writer`'s partial sum.
pub struct Batch<'a> {
    pub round: u64,
    /// This writer's partial-sum row; a writer that failed a write starts a new one, so a
    /// partial whose commit may or may not have happened is never overwritten.
    pub writer: i64,
    /// Uploads this writer's row holds as far as the writer knows. A row that holds another
    /// number (a database restored or failed over to a copy without the writer's last commits)
    /// is left as it is: the batch is refused with [`Stored::WriterBehind`].
    pub writer_count: u64,
    pub items: &'a [Item<'a>],
    /// A leader's K: the round takes no upload beyond it (a release sums exactly K).
    pub cap: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored, and added to the writer's partial.
    Fresh,
    /// Its id was accepted before (in this round or another): nothing was written for it.
    Duplicate,
    /// The round already holds its cap.
    Full,
}

/// A batch's verdicts: each item is `Full` once the round holds `room` more, else stored by
/// `insert` (which says whether its id was new). Both backends' `accept`.
fn verdicts<E>(items: &[Item], mut room: u64, mut insert: impl FnMut(&Item) -> Result<bool, E>) -> Result<Vec<Verdict>, E> {
    let mut verdicts = Vec::with_capacity(items.len());
    for item in items {
        verdicts.push(if room == 0 {
            Verdict::Full
        } else if insert(item)? {
            room -= 1;
            Verdict::Fresh
        } else {
            Verdict::Duplicate
        });
    }
    Ok(verdicts)
}

#[derive(Debug)]
pub enum Stored {
    /// Committed: one verdict per item, and the uploads the round holds now.
    Batch { verdicts: Vec<Verdict>, accepted: u64 },
    /// The round is no longer open (another replica released or abandoned it): nothing written.
    RoundEnded,
    /// The writer's row does not hold what the writer has added to it: nothing written; the
    /// writer starts a new row.
    WriterBehind,
}

/// The writer's new partial sum for a batch, given the verdicts: `(count, encoded sum)`, or
/// `None` when nothing in the batch is fresh.
pub type PartialOf<'a> = dyn FnMut(&[Verdict]) -> Option<(u64, Vec<u8>)> + 'a;

/// Everything a round's release is computed from, read under its lock.
pub struct Contents {
    pub round: RoundRow,
    /// Rounds released so far (before this one).
    pub released: u64,
    /// Each writer's `(count, encoded sum)`.
    pub partials: Vec<(u64, Vec<u8>)>,
    /// A leader's sealed seeds, by report id.
    pub seeds: Vec<([u8; 16], Vec<u8>)>,
    pub optimizer: Option<OptimizerState>,
}

/// What to do with a locked round.
pub enum Settlement {
    /// Publish `model` (made from the round's mean) and open the next round, if any.
    Release { model: StoredModel, optimizer: Option<OptimizerState>, next_deadline_ms: Option<i64>, now_ms: i64 },
    /// End it with nothing released and open the next.
    Abandon { next_deadline_ms: i64, now_ms: i64 },
    /// Leave it open (a leader whose helper does not answer now).
    Keep,
}

#[derive(Debug)]
pub enum Settled {
    Released {
        next: Option<RoundRow>,
    },
    Abandoned {
        next: RoundRow,
    },
    Kept,
    /// Another replica settled it, or another replica is settling it now.
    Elsewhere,
}

/// A single server's or a leader's store.
pub trait RoundStore: Send {
    /// The watchdog's test write.
    fn touch(&mut self) -> DbResult<()>;
    fn latest_model(&mut self) -> DbResult<Option<StoredModel>>;
    fn open_round(&mut self) -> DbResult<Option<RoundRow>>;
    /// Rounds whose aggregate was released, i.e. the privacy cost so far.
    fn closed_rounds(&mut self) -> DbResult<u64>;
    /// The open round; if none is open, opens one on `model_version` (one of several replicas
    /// racing to do so wins; the others get its round).
    fn ensure_round(&mut self, model_version: u64, now_ms: i64, deadline_ms: i64) -> DbResult<RoundRow>;
    /// Whether an upload with this id was ever accepted, in any round.
    fn was_accepted(&mut self, id: &[u8; 16]) -> DbResult<bool>;
    /// Stores a batch in one transaction: its fresh ids (and seeds), the writer's new partial
    /// from `partial`, and the round's count.
    fn accept(&mut self, batch: &Batch, partial: &mut PartialOf) -> DbResult<Stored>;
    /// Locks `round` (if it is open and no one else holds it), reads its [`Contents`], and
    /// writes what `decide` returns in the same transaction.
    fn settle(&mut self, round: u64, decide: &mut dyn FnMut(Contents) -> Settlement) -> DbResult<Settled>;
}

/// Request handlers' reads, on a connection of their own.
pub trait ModelReader: Send {
    /// A query that reads nothing: whether the database answers (readiness).
    fn ping(&mut self) -> DbResult<()>;
    fn model(&mut self, version: u64) -> DbResult<Option<StoredModel>>;
    fn was_accepted(&mut self, id: &[u8; 16]) -> DbResult<bool>;
}

/// A release as the helper stored it.
pub struct Release {
    pub batch_digest: String,
    pub share: Vec<u8>,
}

/// The helper's store.
pub trait HelperStore: Send {
    fn touch(&mut self) -> DbResult<()>;
    /// A query that reads nothing: whether the database answers (readiness).
    fn ping(&mut self) -> DbResult<()>;
    /// The helper's key pair, made by `init`.
    fn key(&mut self) -> Result<KeyPair, Box<dyn std::error::Error + Send + Sync>>;
    fn release(&mut self, round_id: u64) -> DbResult<Option<Release>>;
    /// How many of `ids` were counted before.
    fn seen(&mut self, ids: &[[u8; 16]]) -> DbResult<usize>;
    /// Records the batch's ids and the release atomically; `false` (nothing written) when
    /// another replica recorded this round or one of these ids first.
    fn record(&mut self, round_id: u64, ids: &[[u8; 16]], release: &Release, now_ms: i64) -> DbResult<bool>;
}

/// `init` for a single server or a leader: the store, seeded with its first model.
pub fn create_rounds(db: &Database, role: Role, first: &StoredModel) -> Result<Identity, StoreError> {
    match db {
        Database::Sqlite(path) => sqlite::SqliteRounds::create(path, role, first),
        Database::Postgres(url) => postgres::create(url, role, |tx| postgres::seed_model(tx, first)),
    }
}

/// Opens a single server's or a leader's store (never creating one).
pub fn open_rounds(db: &Database, role: Role) -> Result<(Box<dyn RoundStore>, StoreHealth), StoreError> {
    match db {
        Database::Sqlite(path) => {
            let (store, health) = sqlite::SqliteRounds::open(path, role)?;
            Ok((Box::new(store), health))
        }
        Database::Postgres(url) => {
            let (store, health) = postgres::PgRounds::open(url, role)?;
            Ok((Box::new(store), health))
        }
    }
}

/// Request handlers' connection to the store `health` describes.
pub fn open_reader(db: &Database, health: &StoreHealth) -> Result<Box<dyn ModelReader>, StoreError> {
    match db {
        Database::Sqlite(path) => Ok(Box::new(sqlite::SqliteReader::open(path, health.identity())?)),
        Database::Postgres(url) => Ok(Box::new(postgres::PgReader::open(url, health.identity())?)),
    }
}

/// `init` for a helper: its store, with an HPKE key drawn from the OS's CSPRNG.
pub fn create_helper(db: &Database) -> Result<Identity, StoreError> {
    match db {
        Database::Sqlite(path) => sqlite_helper::SqliteHelper::create(path),
        Database::Postgres(url) => postgres::create_helper(url),
    }
}

pub fn open_helper(db: &Database) -> Result<(Box<dyn HelperStore>, StoreHealth), StoreError> {
    match db {
        Database::Sqlite(path) => {
            let (store, health) = sqlite_helper::SqliteHelper::open(path)?;
            Ok((Box::new(store), health))
        }
        Database::Postgres(url) => {
            let (store, health) = postgres::PgHelper::open(url)?;
            Ok((Box::new(store), health))
        }
    }
}
