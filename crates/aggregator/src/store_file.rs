//! The database file: made only by `hearth-aggregator init`, and served from only when it is the
//! store `init` made for this role.
//!
//! A server that created its database whenever none was at its path started afresh, silently,
//! on a deleted file, a 0-byte file or a relative path read from another directory: model v1,
//! ε spent 0, every acknowledged update gone. So serving never creates (SQLite is opened without
//! `SQLITE_OPEN_CREATE`), `init` writes a random store id and the role beside the schema and
//! the seed content in one transaction, and every connection checks that identity.

use crate::config::Role;
use crate::store::{self, DbResult};
use crate::store_health::{FileId, StoreHealth};
use hearth_core::privacy::noise::{ByteSource, OsRandom};
use hearth_core::privacy::seal::hex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The last schema version without [`IDENTITY_TABLE`] (builds before `init` existed). A store of
/// that version is migrated on open by adding an identity for the role it is opened as, so
/// existing demo and development stores keep working.
const BEFORE_IDENTITY: i64 = 1;

/// Part of every store's schema from version 2 on.
const IDENTITY_TABLE: &str = "
-- Written once by `init`: which store this is and which role it serves. Checked by every
-- connection, so a server never takes an empty, foreign or other role's file for its own.
CREATE TABLE store_identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store_id BLOB NOT NULL CHECK (length(store_id) = 16),
    role TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    -- Rewritten by the serving process's write probe.
    checked_ms INTEGER NOT NULL
);
";

/// Role names as written in the identity (the same as in the configuration).
const ROLE_NAMES: [(Role, &str); 3] = [(Role::Single, "single"), (Role::Leader, "leader"), (Role::Helper, "helper")];

/// One kind of store's tables and version.
pub struct Schema {
    /// Everything but the identity table.
    pub tables: &'static str,
    pub version: i64,
    /// A table only this kind of store has: tells a version-1 store of another kind apart, since
    /// it carries no role.
    pub marker_table: &'static str,
}

/// Which store a file is, as `init` wrote it.
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {} does not exist; create it with `hearth-aggregator init` (a server never creates its database)", .path.display())]
    Missing { path: PathBuf },
    #[error("database {} already exists; `hearth-aggregator init` never overwrites a store", .path.display())]
    Exists { path: PathBuf },
    /// A write-ahead log whose database is gone: SQLite would replay it into a new store.
    #[error("{}-wal is left from a database that is gone; restore the database or move the log away before `hearth-aggregator init`", .path.display())]
    LeftoverLog { path: PathBuf },
    #[error("database {} is not a Hearth store ({why}); restore the right file, or move this one away and create a store with `hearth-aggregator init`", .path.display())]
    NotAStore { path: PathBuf, why: String },
    #[error("database {} is a {found} store; this server's role is {expected}", .path.display())]
    WrongRole { path: PathBuf, found: String, expected: &'static str },
    #[error("database {} is {found}, not the {expected} this server opened", .path.display())]
    Replaced { path: PathBuf, found: Identity, expected: Identity },
    #[error("database {} has schema version {found}, written by a newer build; this build knows {known}", .path.display())]
    NewerSchema { path: PathBuf, found: i64, known: i64 },
    #[error("database {} cannot be written by this process ({why}); fix its permissions or the file system", .path.display())]
    ReadOnly { path: PathBuf, why: String },
    #[error("database {}: {source}", .path.display())]
    Db { path: PathBuf, source: rusqlite::Error },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no random store id: {0}")]
    Random(hearth_core::HearthError),
}

pub fn role_name(role: Role) -> &'static str {
    ROLE_NAMES.iter().find(|(r, _)| *r == role).map_or("?", |(_, n)| n)
}

/// Creates the store for `role` at `path` (and its directory): the schema, a new identity and
/// what `seed` writes, in one transaction. Refuses a path that exists, whatever its size; on any
/// failure removes what it created.
pub fn create(
    path: &Path,
    role: Role,
    schema: &Schema,
    seed: impl FnOnce(&Connection) -> DbResult<()>,
) -> Result<Identity, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.into(), source })?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(StoreError::Exists { path: path.into() });
    }
    if std::fs::symlink_metadata(sibling(path, "-wal")).is_ok() {
        return Err(StoreError::LeftoverLog { path: path.into() });
    }
    let identity = new_identity(role)?;
    // Claims the path atomically: of two `init`s, one creates and the other refuses.
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(StoreError::Exists { path: path.into() }),
        Err(source) => return Err(StoreError::Io { path: path.into(), source }),
    }
    let written = (|| {
        let mut conn = store::connect(path)?;
        let tx = conn.transaction()?;
        tx.execute_batch(schema.tables)?;
        tx.execute_batch(IDENTITY_TABLE)?;
        insert_identity(&tx, &identity)?;
        seed(&tx)?;
        tx.pragma_update(None, "user_version", schema.version)?;
        tx.commit()
    })();
    if let Err(source) = written {
        for leftover in [path.to_path_buf(), sibling(path, "-wal"), sibling(path, "-shm")] {
            let _ = std::fs::remove_file(leftover);
        }
        return Err(StoreError::Db { path: path.into(), source });
    }
    Ok(identity)
}

/// Opens the store at `path` for serving as `role`: never creates it, and refuses a missing,
/// empty, foreign, other role's, newer or read-only file. A version-1 store gets its identity
/// here. A test write proves it writable; the health it returns holds the files as opened.
pub fn open(path: &Path, role: Role, schema: &Schema) -> Result<(Connection, StoreHealth), StoreError> {
    let not_a_store = |why: &str| StoreError::NotAStore { path: path.into(), why: why.into() };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::Missing { path: path.into() }),
        Err(source) => return Err(StoreError::Io { path: path.into(), source }),
    };
    if !meta.is_file() {
        return Err(not_a_store("not a regular file"));
    }
    if meta.len() == 0 {
        return Err(not_a_store("an empty file; `init` never leaves one"));
    }
    if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
        return Err(match e.kind() {
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
                StoreError::ReadOnly { path: path.into(), why: e.to_string() }
            }
            _ => StoreError::Io { path: path.into(), source: e },
        });
    }
    let db = |source: rusqlite::Error| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_a_store("not an SQLite database"),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::ReadOnly { path: path.into(), why: source.to_string() }
        }
        _ => StoreError::Db { path: path.into(), source },
    };
    let mut conn = store::connect(path).map_err(db)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(db)? {
        return Err(StoreError::ReadOnly { path: path.into(), why: "SQLite can open it only for reading".into() });
    }
    match conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map_err(db)? {
        0 => return Err(not_a_store("it has no store identity: `hearth-aggregator init` did not make it")),
        BEFORE_IDENTITY => add_identity(&mut conn, path, role, schema)?,
        v if v == schema.version => {}
        v if v > schema.version => return Err(StoreError::NewerSchema { path: path.into(), found: v, known: schema.version }),
        v => return Err(not_a_store(&format!("unknown schema version {v}"))),
    }
    let identity = read_identity(&conn)?;
    if identity.role != role {
        return Err(StoreError::WrongRole {
            path: path.into(),
            found: role_name(identity.role).into(),
            expected: role_name(role),
        });
    }
    touch(&conn).map_err(|e| StoreError::ReadOnly { path: path.into(), why: format!("a test write failed: {e}") })?;
    // The log exists now (the test write went through it): both names are watched.
    let files =
        [path.to_path_buf(), sibling(path, "-wal")].into_iter().filter_map(|p| FileId::of(&p).ok().map(|id| (p, id))).collect();
    tracing::info!(store = %identity, "database opened");
    Ok((conn, StoreHealth::new(path.into(), identity, files)))
}

/// The identity of the store `conn` is connected to.
pub fn read_identity(conn: &Connection) -> Result<Identity, StoreError> {
    let path = PathBuf::from(conn.path().unwrap_or_default());
    let db = |source| StoreError::Db { path: path.clone(), source };
    let has_table = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_identity'", [], |_| Ok(()))
        .optional()
        .map_err(db)?
        .is_some();
    let row: Option<(Vec<u8>, String)> = if has_table {
        conn.query_row("SELECT store_id, role FROM store_identity WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db)?
    } else {
        None
    };
    let (id, name) = row.ok_or_else(|| StoreError::NotAStore { path: path.clone(), why: "it has no store identity".into() })?;
    let id =
        id.try_into().map_err(|_| StoreError::NotAStore { path: path.clone(), why: "its store id is not 16 bytes".into() })?;
    let role = ROLE_NAMES.iter().find(|(_, n)| *n == name).map(|(r, _)| *r).ok_or_else(|| StoreError::WrongRole {
        path: path.clone(),
        found: name.clone(),
        expected: "single, leader or helper",
    })?;
    Ok(Identity { id, role })
}

/// Whether `conn` reaches the very store this server opened (`expected`, from
/// [`StoreHealth::identity`]): for every further connection a process opens to its database.
pub fn check_identity(conn: &Connection, expected: &Identity) -> Result<(), StoreError> {
    let found = read_identity(conn)?;
    if found == *expected {
        Ok(())
    } else {
        Err(StoreError::Replaced { path: conn.path().unwrap_or_default().into(), found, expected: expected.clone() })
    }
}

/// The write probe: one tiny write that must reach the disk.
pub fn touch(conn: &Connection) -> DbResult<()> {
    match conn.execute("UPDATE store_identity SET checked_ms = ?1 WHERE id = 1", [crate::aggregate::now_ms()])? {
        1 => Ok(()),
        n => Err(rusqlite::Error::StatementChangedRows(n)),
    }
}

/// Version 1 → 2: the identity, for the role the store is opened as (version 1 recorded none).
fn add_identity(conn: &mut Connection, path: &Path, role: Role, schema: &Schema) -> Result<(), StoreError> {
    let db = |source| StoreError::Db { path: path.into(), source };
    let tx = conn.transaction().map_err(db)?;
    let marker = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1";
    if tx.query_row(marker, [schema.marker_table], |_| Ok(())).optional().map_err(db)?.is_none() {
        return Err(StoreError::WrongRole {
            path: path.into(),
            found: format!("version-{BEFORE_IDENTITY} store without the `{}` table, i.e. another role's", schema.marker_table),
            expected: role_name(role),
        });
    }
    let identity = new_identity(role)?;
    tx.execute_batch(IDENTITY_TABLE).map_err(db)?;
    insert_identity(&tx, &identity).map_err(db)?;
    tx.pragma_update(None, "user_version", schema.version).map_err(db)?;
    tx.commit().map_err(db)?;
    tracing::info!(store = %identity, "database of schema version {BEFORE_IDENTITY} given its store identity");
    Ok(())
}

fn new_identity(role: Role) -> Result<Identity, StoreError> {
    let mut id = [0u8; 16];
    OsRandom.fill(&mut id).map_err(StoreError::Random)?;
    Ok(Identity { id, role })
}

fn insert_identity(conn: &Connection, identity: &Identity) -> DbResult<()> {
    let now = crate::aggregate::now_ms();
    conn.execute(
        "INSERT INTO store_identity (id, store_id, role, created_ms, checked_ms) VALUES (1, ?1, ?2, ?3, ?3)",
        params![&identity.id[..], role_name(identity.role), now],
    )?;
    Ok(())
}

/// SQLite's companion file of `path` (`-wal`, `-shm`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ROUNDS_SCHEMA;

    /// A store as builds before the identity wrote it: version 1, its kind's tables only.
    fn version_1(path: &Path, tables: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(tables).unwrap();
        conn.pragma_update(None, "user_version", BEFORE_IDENTITY).unwrap();
    }

    #[test]
    fn a_version_1_store_is_given_an_identity_for_its_role_and_another_kind_is_refused() {
        let dir = std::env::temp_dir().join(format!("hearth-store-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (rounds, helper) = (dir.join("rounds.db"), dir.join("helper.db"));
        version_1(&rounds, ROUNDS_SCHEMA.tables);
        version_1(&helper, "CREATE TABLE helper_key (key_id INTEGER PRIMARY KEY, secret BLOB NOT NULL);");

        let refused = open(&helper, Role::Leader, &ROUNDS_SCHEMA).map(drop);
        assert!(matches!(refused, Err(StoreError::WrongRole { .. })), "{refused:?}");
        let (conn, health) = open(&rounds, Role::Leader, &ROUNDS_SCHEMA).unwrap();
        assert_eq!(health.identity().role, Role::Leader);
        assert_eq!(conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).unwrap(), ROUNDS_SCHEMA.version);
        check_identity(&conn, health.identity()).unwrap();
        drop(conn);
        // Migrated once: the identity stays, and binds the store to the role it was opened as.
        let (_, again) = open(&rounds, Role::Leader, &ROUNDS_SCHEMA).unwrap();
        assert_eq!(again.identity(), health.identity());
        let refused = open(&rounds, Role::Single, &ROUNDS_SCHEMA).map(drop);
        assert!(matches!(refused, Err(StoreError::WrongRole { .. })), "{refused:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_store_is_told_apart_by_its_id() {
        let dir = std::env::temp_dir().join(format!("hearth-store-file-id-{}", std::process::id()));
        let (a, b) = (dir.join("a.db"), dir.join("b.db"));
        let seed = |_: &Connection| Ok(());
        let first = create(&a, Role::Single, &ROUNDS_SCHEMA, seed).unwrap();
        create(&b, Role::Single, &ROUNDS_SCHEMA, seed).unwrap();
        assert!(matches!(create(&a, Role::Single, &ROUNDS_SCHEMA, seed), Err(StoreError::Exists { .. })));
        let other = store::connect(&b).unwrap();
        assert!(matches!(check_identity(&other, &first), Err(StoreError::Replaced { .. })));
        check_identity(&store::connect(&a).unwrap(), &first).unwrap();
        // The database removed, its log left: SQLite would replay the log into a new store.
        std::fs::remove_file(&a).unwrap();
        std::fs::write(sibling(&a, "-wal"), "frames of the old store").unwrap();
        assert!(matches!(create(&a, Role::Single, &ROUNDS_SCHEMA, seed), Err(StoreError::LeftoverLog { .. })));
        assert!(!a.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
