//! The PostgreSQL store (`database = "postgres://…"`): what the SQLite store keeps, in a
//! database any number of replicas of one role share.
//!
//! Replicas coordinate through the database only:
//! - an upload batch locks its round's row (`FOR UPDATE`) first, so batches of all replicas
//!   commit one after another, each seeing the round's true count (a leader's cap of exactly K)
//!   and never joining a round that another replica has ended;
//! - an id is inserted under the primary key, so a report is counted at most once whichever
//!   replicas it reaches;
//! - settling a round takes a transaction-scoped advisory lock on it (`pg_try_advisory_xact_lock`:
//!   one replica settles, the others go on) and then the row lock, which waits for the batches
//!   in flight and holds off later ones until the release commits.
//!
//! Each object keeps one connection and reconnects after an error; a reconnection checks the
//! store identity, so a database dropped and made again by another `init` is never written as if
//! it were the old one. Schema versions are in `store_identity`; [`MIGRATIONS`] run at open,
//! under an advisory lock, and a newer schema is refused.

use super::{
    Batch, Contents, DbError, DbResult, HelperStore, Identity, ModelReader, PartialOf, Release, RoundRow, RoundStore, Settled,
    Settlement, StoreError, Stored, StoredModel, Verdict, f32_bytes, f32_values, role_name, role_named,
};
use crate::config::Role;
use crate::store_health::StoreHealth;
use hearth_core::learning::server::OptimizerState;
use hearth_core::privacy::noise::{ByteSource, OsRandom};
use hearth_core::privacy::seal::KeyPair;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// Tables both kinds of store have.
const IDENTITY_TABLE: &str = "
-- Written once by `init`: which store this is, which role it serves, and its schema version.
CREATE TABLE store_identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store_id BYTEA NOT NULL CHECK (length(store_id) = 16),
    role TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    created_ms BIGINT NOT NULL,
    -- Rewritten by every replica's write probe.
    checked_ms BIGINT NOT NULL
);
";

const ROUNDS_TABLES: &str = "
CREATE TABLE models (
    version BIGINT PRIMARY KEY,
    onnx BYTEA NOT NULL,
    manifest TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    from_round BIGINT
);
CREATE TABLE rounds (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version BIGINT NOT NULL REFERENCES models(version),
    state TEXT NOT NULL CHECK (state IN ('open', 'closed', 'abandoned')),
    opened_ms BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    accepted BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX one_open_round ON rounds (state) WHERE state = 'open';
-- Every accepted upload's id, kept after its round (replays of any round are refused); a
-- leader's sealed seed only until the round ends.
CREATE TABLE updates (
    id BYTEA PRIMARY KEY,
    round_id BIGINT NOT NULL REFERENCES rounds(id),
    seed BYTEA
);
CREATE INDEX updates_by_round ON updates (round_id) WHERE seed IS NOT NULL;
-- Each writer's sum of the open round; dropped when the round ends.
CREATE TABLE partials (
    round_id BIGINT NOT NULL REFERENCES rounds(id),
    writer BIGINT NOT NULL,
    count BIGINT NOT NULL,
    sum BYTEA NOT NULL,
    PRIMARY KEY (round_id, writer)
);
-- Sums and packs are incompressible numbers: stored out of line without a compression attempt.
ALTER TABLE partials ALTER COLUMN sum SET STORAGE EXTERNAL;
ALTER TABLE models ALTER COLUMN onnx SET STORAGE EXTERNAL;
CREATE TABLE optimizer_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    steps BIGINT NOT NULL,
    m BYTEA NOT NULL,
    v BYTEA NOT NULL
);
";

const HELPER_TABLES: &str = "
CREATE TABLE helper_key (
    key_id INTEGER PRIMARY KEY CHECK (key_id BETWEEN 0 AND 255),
    secret BYTEA NOT NULL CHECK (length(secret) = 32)
);
-- A report id is counted in at most one release, ever.
CREATE TABLE reports (
    id BYTEA PRIMARY KEY CHECK (length(id) = 16),
    round_id BIGINT NOT NULL
);
-- What was released for a round: a retry of the same batch gets the same bytes.
CREATE TABLE releases (
    round_id BIGINT PRIMARY KEY,
    batch_digest TEXT NOT NULL,
    share BYTEA NOT NULL,
    released_ms BIGINT NOT NULL
);
";

/// Schema versions this build knows: `MIGRATIONS[i]` moves a store from version i + 1 to i + 2.
/// Version 1 is what `init` writes today.
const MIGRATIONS: &[Migration] = &[];
type Migration = fn(&mut Transaction, Role) -> Result<(), postgres::Error>;
const SCHEMA_VERSION: i32 = 1 + MIGRATIONS.len() as i32;

/// Advisory lock keys (one 64-bit space per database): `init` and migrations, and settling
/// round `id` (`SETTLE_LOCK + id`).
const SCHEMA_LOCK: i64 = 0x4845_4152_5448_0000;
const SETTLE_LOCK: i64 = 0x4845_4152_5448_0001;

/// How long a connection attempt may take before the call fails (and is retried later).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL with its password (in the user info or a `password=` parameter) replaced.
pub fn redacted(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        // The user info ends at the authority's last `@` (a password may hold a raw `@`).
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i)
            && let Some(colon) = out[rest..at].find(':').map(|i| rest + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(p) = out.find("password=") {
        let end = out[p..].find('&').map_or(out.len(), |i| p + i);
        out.replace_range(p + "password=".len()..end, "***");
    }
    out
}

fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut config = postgres::Config::from_str(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("hearth-aggregator");
    // A server that vanished without closing the connection (a host lost, a network cut) would
    // leave a call waiting forever: TCP keepalives end it within about 25 s. No statement
    // timeout: an upload batch may rightly wait on the round's lock while another replica asks
    // its helper for a release (up to secagg.helper_timeout_ms).
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    // Keepalives only probe an idle connection: a query sent into a partition would wait for
    // TCP's retransmissions (about 15 minutes). Unacknowledged data fails the call after this.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(25));
    }
    config.connect(NoTls)
}

fn store_err(url: &str) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |e| match e.code() {
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => StoreError::Missing { store: redacted(url) },
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION || *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            StoreError::ReadOnly { store: redacted(url), why: e.to_string() }
        }
        _ => StoreError::Db { store: redacted(url), source: DbError::Postgres(e) },
    }
}

/// `init` on PostgreSQL: the role's tables, a new identity and what `seed` writes, in one
/// transaction. The database must exist (operators create databases and grant them); a
/// database that holds a store already, or any table of one, is refused.
pub fn create(
    url: &str,
    role: Role,
    seed: impl FnOnce(&mut Transaction) -> Result<(), postgres::Error>,
) -> Result<Identity, StoreError> {
    let err = store_err(url);
    let mut client = connect(url).map_err(&err)?;
    let mut tx = client.transaction().map_err(&err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(&err)?;
    let taken: Option<String> = tx
        .query_one(
            "SELECT string_agg(table_name, ', ') FROM information_schema.tables
             WHERE table_schema = current_schema()
               AND table_name IN ('store_identity', 'models', 'rounds', 'updates', 'partials', 'optimizer_state',
                                  'helper_key', 'reports', 'releases')",
            &[],
        )
        .map_err(&err)?
        .get(0);
    if let Some(tables) = taken {
        return Err(if tables.contains("store_identity") {
            StoreError::Exists { store: redacted(url) }
        } else {
            StoreError::NotAStore { store: redacted(url), why: format!("it has tables named {tables} but no store identity") }
        });
    }
    let mut id = [0u8; 16];
    OsRandom.fill(&mut id).map_err(StoreError::Random)?;
    let identity = Identity { id, role };
    let now = crate::aggregate::now_ms();
    tx.batch_execute(IDENTITY_TABLE).map_err(&err)?;
    tx.batch_execute(if role == Role::Helper { HELPER_TABLES } else { ROUNDS_TABLES }).map_err(&err)?;
    tx.execute(
        "INSERT INTO store_identity (id, store_id, role, schema_version, created_ms, checked_ms) VALUES (1, $1, $2, $3, $4, $4)",
        &[&&id[..], &role_name(role), &SCHEMA_VERSION, &now],
    )
    .map_err(&err)?;
    seed(&mut tx).map_err(&err)?;
    tx.commit().map_err(&err)?;
    Ok(identity)
}

/// `init`'s seed for a single server or a leader: the first model.
pub fn seed_model(tx: &mut Transaction, first: &StoredModel) -> Result<(), postgres::Error> {
    insert_model(tx, first, None, crate::aggregate::now_ms())
}

/// `init` for a helper: its store and an HPKE key from the OS's CSPRNG.
pub fn create_helper(url: &str) -> Result<Identity, StoreError> {
    let mut secret = [0u8; 32];
    OsRandom.fill(&mut secret).map_err(StoreError::Random)?;
    create(url, Role::Helper, |tx| {
        tx.execute("INSERT INTO helper_key (key_id, secret) VALUES (1, $1)", &[&&secret[..]]).map(drop)
    })
}

/// Connects, checks the identity is `role`'s, runs pending migrations, makes a test write.
fn open(url: &str, role: Role) -> Result<(Client, Identity), StoreError> {
    let err = store_err(url);
    let mut client = connect(url).map_err(&err)?;
    let identity = read_identity(&mut client).map_err(&err)?.ok_or_else(|| StoreError::NotAStore {
        store: redacted(url),
        why: "it has no store identity: create the store with `hearth-aggregator init`".into(),
    })?;
    let (identity, version) = identity;
    if identity.role != role {
        return Err(StoreError::WrongRole {
            store: redacted(url),
            found: role_name(identity.role).into(),
            expected: role_name(role),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { store: redacted(url), found: version.into(), known: SCHEMA_VERSION.into() });
    }
    if version < SCHEMA_VERSION {
        migrate(&mut client, role, url)?;
    }
    touch(&mut client).map_err(|e| StoreError::ReadOnly { store: redacted(url), why: format!("a test write failed: {e}") })?;
    tracing::info!(store = %identity, location = %redacted(url), "database opened");
    Ok((client, identity))
}

/// The identity and schema version, or `None` when the database has no identity table.
fn read_identity(client: &mut Client) -> Result<Option<(Identity, i32)>, postgres::Error> {
    let exists: bool = client.query_one("SELECT to_regclass('store_identity') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(None);
    }
    let Some(row) = client.query_opt("SELECT store_id, role, schema_version FROM store_identity WHERE id = 1", &[])? else {
        return Ok(None);
    };
    let (id, role): (Vec<u8>, String) = (row.get(0), row.get(1));
    Ok(id.try_into().ok().zip(role_named(&role)).map(|(id, role)| (Identity { id, role }, row.get(2))))
}

/// Runs the migrations from the stored version on, one transaction each, under the schema
/// lock (replicas starting together migrate once); refuses a version a newer replica wrote
/// meanwhile.
fn migrate(client: &mut Client, role: Role, url: &str) -> Result<(), StoreError> {
    let err = store_err(url);
    loop {
        let mut tx = client.transaction().map_err(&err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(&err)?;
        let version: i32 = tx.query_one("SELECT schema_version FROM store_identity WHERE id = 1", &[]).map_err(&err)?.get(0);
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { store: redacted(url), found: version.into(), known: SCHEMA_VERSION.into() });
        }
        let Some(step) = usize::try_from(version - 1).ok().and_then(|i| MIGRATIONS.get(i)) else {
            return tx.commit().map_err(&err);
        };
        step(&mut tx, role).map_err(&err)?;
        tx.execute("UPDATE store_identity SET schema_version = $1 WHERE id = 1", &[&(version + 1)]).map_err(&err)?;
        tx.commit().map_err(&err)?;
        tracing::info!("database migrated from schema version {version} to {}", version + 1);
    }
}

fn touch(client: &mut Client) -> Result<(), postgres::Error> {
    client.execute("UPDATE store_identity SET checked_ms = $1 WHERE id = 1", &[&crate::aggregate::now_ms()]).map(drop)
}

/// One connection to a store, made again after it breaks (a PostgreSQL restart, a failover),
/// and checked to be the same store each time.
struct Conn {
    url: String,
    identity: Identity,
    client: Option<Client>,
}

impl Conn {
    fn new(url: &str, identity: Identity, client: Option<Client>) -> Conn {
        Conn { url: url.into(), identity, client }
    }

    fn get(&mut self) -> DbResult<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut client = connect(&self.url)?;
            match read_identity(&mut client)? {
                Some((found, _)) if found == self.identity => {}
                found => {
                    tracing::error!(
                        location = %redacted(&self.url),
                        found = %found.map_or("no Hearth store".into(), |(f, _)| f.to_string()),
                        store = %self.identity,
                        "the database is no longer the store this server opened"
                    );
                    return Err(DbError::Replaced("the database is no longer the store this server opened".into()));
                }
            }
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs `f`; a connection left broken is dropped, so the next call reconnects.
    fn run<T>(&mut self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> DbResult<T> {
        let result = f(self.get()?);
        if result.is_err() && self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        Ok(result?)
    }
}

impl Drop for Conn {
    /// The synchronous client closes its connection on a runtime of its own, which panics when
    /// dropped on an async worker (the request handlers' connection goes with the router when the
    /// server stops): there it is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(client));
        }
    }
}

/// A single server's or a leader's PostgreSQL store, as one replica's round keeper uses it.
pub struct PgRounds {
    conn: Conn,
    role: Role,
}

impl PgRounds {
    pub fn open(url: &str, role: Role) -> Result<(PgRounds, StoreHealth), StoreError> {
        let (client, identity) = open(url, role)?;
        let health = StoreHealth::new(redacted(url), identity.clone(), Vec::new());
        Ok((PgRounds { conn: Conn::new(url, identity, Some(client)), role }, health))
    }
}

fn round_row(r: &postgres::Row) -> RoundRow {
    RoundRow {
        id: r.get::<_, i64>(0) as u64,
        model_version: r.get::<_, i64>(1) as u64,
        opened_ms: r.get(2),
        deadline_ms: r.get(3),
        accepted: r.get::<_, i64>(4) as u64,
    }
}

const ROUND_COLUMNS: &str = "id, model_version, opened_ms, deadline_ms, accepted";

fn model_row(r: &postgres::Row) -> StoredModel {
    StoredModel { version: r.get::<_, i64>(0) as u64, onnx: r.get(1), manifest: r.get(2), sha256: r.get(3) }
}

fn insert_model(tx: &mut Transaction, m: &StoredModel, from_round: Option<u64>, now_ms: i64) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO models (version, onnx, manifest, sha256, created_ms, from_round) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&(m.version as i64), &m.onnx, &m.manifest, &m.sha256, &now_ms, &from_round.map(|r| r as i64)],
    )
    .map(drop)
}

fn start_round(tx: &mut Transaction, model_version: u64, now_ms: i64, deadline_ms: i64) -> Result<RoundRow, postgres::Error> {
    let row = tx.query_one(
        &format!("INSERT INTO rounds (model_version, state, opened_ms, deadline_ms) VALUES ($1, 'open', $2, $3) RETURNING {ROUND_COLUMNS}"),
        &[&(model_version as i64), &now_ms, &deadline_ms],
    )?;
    Ok(round_row(&row))
}

/// Ends a round, drops its partial sums and seeds; the ids stay.
fn end_round(tx: &mut Transaction, round: i64, state: &str, now_ms: i64) -> Result<(), postgres::Error> {
    tx.execute("UPDATE rounds SET state = $1, ended_ms = $2 WHERE id = $3", &[&state, &now_ms, &round])?;
    tx.execute("UPDATE updates SET seed = NULL WHERE round_id = $1 AND seed IS NOT NULL", &[&round])?;
    tx.execute("DELETE FROM partials WHERE round_id = $1", &[&round])?;
    Ok(())
}

impl RoundStore for PgRounds {
    fn touch(&mut self) -> DbResult<()> {
        self.conn.run(touch)
    }

    fn latest_model(&mut self) -> DbResult<Option<StoredModel>> {
        self.conn.run(|c| {
            Ok(c.query_opt("SELECT version, onnx, manifest, sha256 FROM models ORDER BY version DESC LIMIT 1", &[])?
                .map(|r| model_row(&r)))
        })
    }

    fn open_round(&mut self) -> DbResult<Option<RoundRow>> {
        self.conn.run(|c| {
            Ok(c.query_opt(&format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE state = 'open'"), &[])?.map(|r| round_row(&r)))
        })
    }

    fn closed_rounds(&mut self) -> DbResult<u64> {
        self.conn.run(|c| Ok(c.query_one("SELECT count(*) FROM rounds WHERE state = 'closed'", &[])?.get::<_, i64>(0) as u64))
    }

    fn ensure_round(&mut self, model_version: u64, now_ms: i64, deadline_ms: i64) -> DbResult<RoundRow> {
        self.conn.run(|c| {
            // Of replicas racing here, the unique index on the open round lets one insert.
            let inserted = c.query_opt(
                &format!(
                    "INSERT INTO rounds (model_version, state, opened_ms, deadline_ms) VALUES ($1, 'open', $2, $3)
                     ON CONFLICT DO NOTHING RETURNING {ROUND_COLUMNS}"
                ),
                &[&(model_version as i64), &now_ms, &deadline_ms],
            )?;
            match inserted {
                Some(r) => Ok(round_row(&r)),
                None => Ok(round_row(&c.query_one(&format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE state = 'open'"), &[])?)),
            }
        })
    }

    fn was_accepted(&mut self, id: &[u8; 16]) -> DbResult<bool> {
        self.conn.run(|c| Ok(c.query_one("SELECT EXISTS (SELECT 1 FROM updates WHERE id = $1)", &[&&id[..]])?.get(0)))
    }

    fn accept(&mut self, batch: &Batch, partial: &mut PartialOf) -> DbResult<Stored> {
        self.conn.run(|c| {
            let mut tx = c.transaction()?;
            let round = batch.round as i64;
            let locked = tx.query_opt(
                &format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE id = $1 AND state = 'open' FOR UPDATE"),
                &[&round],
            )?;
            let Some(row) = locked.map(|r| round_row(&r)) else {
                return Ok(Stored::RoundEnded);
            };
            let held =
                tx.query_opt("SELECT count FROM partials WHERE round_id = $1 AND writer = $2", &[&round, &batch.writer])?;
            if held.map_or(0, |r| r.get::<_, i64>(0) as u64) != batch.writer_count {
                return Ok(Stored::WriterBehind);
            }
            let room = batch.cap.map_or(u64::MAX, |k| k.saturating_sub(row.accepted));
            let insert =
                tx.prepare("INSERT INTO updates (id, round_id, seed) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")?;
            let verdicts =
                super::verdicts(batch.items, room, |item| Ok(tx.execute(&insert, &[&&item.id[..], &round, &item.seed])? == 1))?;
            let added = verdicts.iter().filter(|v| **v == Verdict::Fresh).count() as i64;
            if let Some((count, sum)) = partial(&verdicts) {
                tx.execute(
                    "INSERT INTO partials (round_id, writer, count, sum) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (round_id, writer) DO UPDATE SET count = excluded.count, sum = excluded.sum",
                    &[&round, &batch.writer, &(count as i64), &sum],
                )?;
            }
            if added > 0 {
                tx.execute("UPDATE rounds SET accepted = accepted + $1 WHERE id = $2", &[&added, &round])?;
            }
            tx.commit()?;
            Ok(Stored::Batch { verdicts, accepted: row.accepted + added as u64 })
        })
    }

    fn settle(&mut self, round: u64, decide: &mut dyn FnMut(Contents) -> Settlement) -> DbResult<Settled> {
        let leader = self.role == Role::Leader;
        self.conn.run(|c| {
            let mut tx = c.transaction()?;
            let id = round as i64;
            let mine: bool = tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SETTLE_LOCK.wrapping_add(id)])?.get(0);
            if !mine {
                return Ok(Settled::Elsewhere);
            }
            let locked =
                tx.query_opt(&format!("SELECT {ROUND_COLUMNS} FROM rounds WHERE id = $1 AND state = 'open' FOR UPDATE"), &[&id])?;
            let Some(row) = locked.map(|r| round_row(&r)) else {
                return Ok(Settled::Elsewhere);
            };
            let partials = tx
                .query("SELECT count, sum FROM partials WHERE round_id = $1", &[&id])?
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect();
            let seeds = if leader {
                tx.query("SELECT id, seed FROM updates WHERE round_id = $1 AND seed IS NOT NULL", &[&id])?
                    .iter()
                    .map(|r| (r.get::<_, Vec<u8>>(0).try_into().unwrap_or([0; 16]), r.get(1)))
                    .collect()
            } else {
                Vec::new()
            };
            let optimizer = tx.query_opt("SELECT steps, m, v FROM optimizer_state WHERE id = 1", &[])?.map(|r| OptimizerState {
                steps: r.get::<_, i64>(0) as u64,
                m: f32_values(r.get(1)),
                v: f32_values(r.get(2)),
            });
            let released = tx.query_one("SELECT count(*) FROM rounds WHERE state = 'closed'", &[])?.get::<_, i64>(0) as u64;
            let settled = match decide(Contents { round: row, released, partials, seeds, optimizer }) {
                Settlement::Keep => return Ok(Settled::Kept),
                Settlement::Release { model, optimizer, next_deadline_ms, now_ms } => {
                    insert_model(&mut tx, &model, Some(round), now_ms)?;
                    end_round(&mut tx, id, "closed", now_ms)?;
                    if let Some(o) = optimizer {
                        tx.execute(
                            "INSERT INTO optimizer_state (id, steps, m, v) VALUES (1, $1, $2, $3)
                             ON CONFLICT (id) DO UPDATE SET steps = excluded.steps, m = excluded.m, v = excluded.v",
                            &[&(o.steps as i64), &f32_bytes(&o.m), &f32_bytes(&o.v)],
                        )?;
                    }
                    let next = next_deadline_ms.map(|d| start_round(&mut tx, model.version, now_ms, d)).transpose()?;
                    Settled::Released { next }
                }
                Settlement::Abandon { next_deadline_ms, now_ms } => {
                    end_round(&mut tx, id, "abandoned", now_ms)?;
                    Settled::Abandoned { next: start_round(&mut tx, row.model_version, now_ms, next_deadline_ms)? }
                }
            };
            tx.commit()?;
            Ok(settled)
        })
    }
}

/// Request handlers' connection.
pub struct PgReader {
    conn: Conn,
}

impl PgReader {
    pub fn open(url: &str, expected: &Identity) -> Result<PgReader, StoreError> {
        let mut conn = Conn::new(url, expected.clone(), None);
        conn.get().map_err(|e| match e {
            DbError::Replaced(why) => StoreError::NotAStore { store: redacted(url), why },
            e => StoreError::Db { store: redacted(url), source: e },
        })?;
        Ok(PgReader { conn })
    }
}

impl ModelReader for PgReader {
    fn ping(&mut self) -> DbResult<()> {
        self.conn.run(|c| c.simple_query("SELECT 1").map(drop))
    }

    fn model(&mut self, version: u64) -> DbResult<Option<StoredModel>> {
        self.conn.run(|c| {
            Ok(c.query_opt("SELECT version, onnx, manifest, sha256 FROM models WHERE version = $1", &[&(version as i64)])?
                .map(|r| model_row(&r)))
        })
    }

    fn was_accepted(&mut self, id: &[u8; 16]) -> DbResult<bool> {
        self.conn.run(|c| Ok(c.query_one("SELECT EXISTS (SELECT 1 FROM updates WHERE id = $1)", &[&&id[..]])?.get(0)))
    }
}

/// The helper's PostgreSQL store, shared by its replicas.
pub struct PgHelper {
    conn: Conn,
}

impl PgHelper {
    pub fn open(url: &str) -> Result<(PgHelper, StoreHealth), StoreError> {
        let (client, identity) = open(url, Role::Helper)?;
        let health = StoreHealth::new(redacted(url), identity.clone(), Vec::new());
        Ok((PgHelper { conn: Conn::new(url, identity, Some(client)) }, health))
    }
}

impl HelperStore for PgHelper {
    fn touch(&mut self) -> DbResult<()> {
        self.conn.run(touch)
    }

    fn ping(&mut self) -> DbResult<()> {
        self.conn.run(|c| c.simple_query("SELECT 1").map(drop))
    }

    fn key(&mut self) -> Result<KeyPair, Box<dyn std::error::Error + Send + Sync>> {
        let row = self.conn.run(|c| c.query_opt("SELECT key_id, secret FROM helper_key ORDER BY key_id LIMIT 1", &[]))?;
        let row = row.ok_or("the helper's database holds no key; `hearth-aggregator init` makes it")?;
        let key_id: i32 = row.get(0);
        let secret: [u8; 32] = row.get::<_, Vec<u8>>(1).try_into().map_err(|_| "stored helper key is not 32 bytes")?;
        Ok(KeyPair::from_secret(u8::try_from(key_id)?, &secret))
    }

    fn release(&mut self, round_id: u64) -> DbResult<Option<Release>> {
        self.conn.run(|c| {
            Ok(c.query_opt("SELECT batch_digest, share FROM releases WHERE round_id = $1", &[&(round_id as i64)])?
                .map(|r| Release { batch_digest: r.get(0), share: r.get(1) }))
        })
    }

    fn seen(&mut self, ids: &[[u8; 16]]) -> DbResult<usize> {
        let ids: Vec<&[u8]> = ids.iter().map(|id| &id[..]).collect();
        self.conn.run(|c| Ok(c.query_one("SELECT count(*) FROM reports WHERE id = ANY($1)", &[&ids])?.get::<_, i64>(0) as usize))
    }

    fn record(&mut self, round_id: u64, ids: &[[u8; 16]], release: &Release, now_ms: i64) -> DbResult<bool> {
        // In one order, so two batches sharing ids wait on each other instead of deadlocking.
        let mut ids: Vec<&[u8]> = ids.iter().map(|id| &id[..]).collect();
        ids.sort_unstable();
        let round = round_id as i64;
        let result = self.conn.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO releases (round_id, batch_digest, share, released_ms) VALUES ($1, $2, $3, $4)",
                &[&round, &release.batch_digest, &release.share, &now_ms],
            )?;
            tx.execute("INSERT INTO reports (id, round_id) SELECT unnest($1::bytea[]), $2", &[&ids, &round])?;
            tx.commit()
        });
        match result {
            Ok(()) => Ok(true),
            // Another replica released this round, or counted one of these ids, first.
            Err(DbError::Postgres(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redacted("postgres://hearth:s3cret@db:5432/leader"), "postgres://hearth:***@db:5432/leader");
        assert_eq!(
            redacted("postgres://hearth@db/leader?password=s3cret&sslmode=disable"),
            "postgres://hearth@db/leader?password=***&sslmode=disable"
        );
        assert_eq!(redacted("postgresql://db/leader"), "postgresql://db/leader");
        assert_eq!(redacted("postgres://hearth:p@ss@db/leader"), "postgres://hearth:***@db/leader");
        assert_eq!(redacted("postgres://hearth@db/a@b"), "postgres://hearth@db/a@b");
    }
}
