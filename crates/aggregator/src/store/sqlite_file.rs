//! The database file: made only by `hearth-aggregator init`, and served from only when it is the
//! store `init` made for this role.
//!
//! A server that created its database whenever none was at its path started afresh, silently,
//! on a deleted file, a 0-byte file or a relative path read from another directory: model v1,
//! ε spent 0, every acknowledged update gone. So serving never creates (SQLite is opened without
//! `SQLITE_OPEN_CREATE`), `init` writes a random store id and the role beside the schema and
//! the seed content in one transaction, and every connection checks that identity.

use super::{Identity, StoreError, role_name, role_named, sqlite};
use crate::config::Role;
use crate::store_health::{FileId, StoreHealth};
use hearth_core::privacy::noise::{ByteSource, OsRandom};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
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

/// One kind of store's tables and version.
pub struct Schema {
    /// Everything but the identity table.
    pub tables: &'static str,
    pub version: i64,
    /// A table only this kind of store has: tells a version-1 store of another kind apart, since
    /// it carries no role.
    pub marker_table: &'static str,
    /// `upgrades[i]` moves a store of version 2 + i to 3 + i, in the transaction that then
    /// records the new version; it is given the role the store was made for.
    pub upgrades: &'static [fn(&Transaction, Role) -> rusqlite::Result<()>],
}

/// The location errors name.
fn loc(path: &Path) -> String {
    path.display().to_string()
}

/// Creates the store for `role` at `path` (and its directory): the schema, a new identity and
/// what `seed` writes, in one transaction. Refuses a path that exists, whatever its size; on any
/// failure removes what it created.
pub fn create(
    path: &Path,
    role: Role,
    schema: &Schema,
    seed: impl FnOnce(&Connection) -> rusqlite::Result<()>,
) -> Result<Identity, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { store: loc(dir), source })?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(StoreError::Exists { store: loc(path) });
    }
    if std::fs::symlink_metadata(sibling(path, "-wal")).is_ok() {
        return Err(StoreError::LeftoverLog { store: loc(path) });
    }
    let identity = new_identity(role)?;
    // Claims the path atomically: of two `init`s, one creates and the other refuses.
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(StoreError::Exists { store: loc(path) }),
        Err(source) => return Err(StoreError::Io { store: loc(path), source }),
    }
    let written = (|| {
        let mut conn = sqlite::connect(path)?;
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
        return Err(StoreError::Db { store: loc(path), source: source.into() });
    }
    Ok(identity)
}

/// Opens the store at `path` for serving as `role`: never creates it, and refuses a missing,
/// empty, foreign, other role's, newer or read-only file. A version-1 store gets its identity
/// here. A test write proves it writable; the health it returns holds the files as opened.
pub fn open(path: &Path, role: Role, schema: &Schema) -> Result<(Connection, StoreHealth), StoreError> {
    let not_a_store = |why: &str| StoreError::NotAStore { store: loc(path), why: why.into() };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::Missing { store: loc(path) }),
        Err(source) => return Err(StoreError::Io { store: loc(path), source }),
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
                StoreError::ReadOnly { store: loc(path), why: e.to_string() }
            }
            _ => StoreError::Io { store: loc(path), source: e },
        });
    }
    let db = |source: rusqlite::Error| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_a_store("not an SQLite database"),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::ReadOnly { store: loc(path), why: source.to_string() }
        }
        _ => StoreError::Db { store: loc(path), source: source.into() },
    };
    let mut conn = sqlite::connect(path).map_err(db)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(db)? {
        return Err(StoreError::ReadOnly { store: loc(path), why: "SQLite can open it only for reading".into() });
    }
    match conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map_err(db)? {
        0 => return Err(not_a_store("it has no store identity: `hearth-aggregator init` did not make it")),
        BEFORE_IDENTITY => add_identity(&mut conn, path, role, schema)?,
        v if v > schema.version => return Err(StoreError::NewerSchema { store: loc(path), found: v, known: schema.version }),
        v if v < BEFORE_IDENTITY => return Err(not_a_store(&format!("unknown schema version {v}"))),
        _ => {}
    }
    let identity = read_identity(&conn)?;
    if identity.role != role {
        return Err(StoreError::WrongRole {
            store: loc(path),
            found: role_name(identity.role).into(),
            expected: role_name(role),
        });
    }
    upgrade(&mut conn, path, &identity, schema)?;
    touch(&conn).map_err(|e| StoreError::ReadOnly { store: loc(path), why: format!("a test write failed: {e}") })?;
    // The log exists now (the test write went through it): both names are watched.
    let files =
        [path.to_path_buf(), sibling(path, "-wal")].into_iter().filter_map(|p| FileId::of(&p).ok().map(|id| (p, id))).collect();
    tracing::info!(store = %identity, "database opened");
    Ok((conn, StoreHealth::new(loc(path), identity, files)))
}

/// The identity of the store `conn` is connected to.
pub fn read_identity(conn: &Connection) -> Result<Identity, StoreError> {
    let path = PathBuf::from(conn.path().unwrap_or_default());
    let db = |source: rusqlite::Error| StoreError::Db { store: loc(&path), source: source.into() };
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
    let (id, name) = row.ok_or_else(|| StoreError::NotAStore { store: loc(&path), why: "it has no store identity".into() })?;
    let id =
        id.try_into().map_err(|_| StoreError::NotAStore { store: loc(&path), why: "its store id is not 16 bytes".into() })?;
    let role = role_named(&name).ok_or_else(|| StoreError::WrongRole {
        store: loc(&path),
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
        Err(StoreError::Replaced { store: conn.path().unwrap_or_default().into(), found, expected: expected.clone() })
    }
}

/// The write probe: one tiny write that must reach the disk.
pub fn touch(conn: &Connection) -> rusqlite::Result<()> {
    match conn.execute("UPDATE store_identity SET checked_ms = ?1 WHERE id = 1", [crate::aggregate::now_ms()])? {
        1 => Ok(()),
        n => Err(rusqlite::Error::StatementChangedRows(n)),
    }
}

/// Runs the schema's upgrades from the store's version to this build's, each in a transaction
/// of its own with the version it reaches.
fn upgrade(conn: &mut Connection, path: &Path, identity: &Identity, schema: &Schema) -> Result<(), StoreError> {
    let db = |source: rusqlite::Error| StoreError::Db { store: loc(path), source: source.into() };
    loop {
        let version = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map_err(db)?;
        if version >= schema.version {
            return Ok(());
        }
        let step = usize::try_from(version - BEFORE_IDENTITY - 1).ok().and_then(|i| schema.upgrades.get(i)).ok_or_else(|| {
            StoreError::NotAStore { store: loc(path), why: format!("no upgrade from schema version {version}") }
        })?;
        let tx = conn.transaction().map_err(db)?;
        step(&tx, identity.role).map_err(db)?;
        tx.pragma_update(None, "user_version", version + 1).map_err(db)?;
        tx.commit().map_err(db)?;
        tracing::info!(store = %identity, "database upgraded from schema version {version} to {}", version + 1);
    }
}

/// Version 1 → 2: the identity, for the role the store is opened as (version 1 recorded none).
fn add_identity(conn: &mut Connection, path: &Path, role: Role, schema: &Schema) -> Result<(), StoreError> {
    let db = |source: rusqlite::Error| StoreError::Db { store: loc(path), source: source.into() };
    let tx = conn.transaction().map_err(db)?;
    let marker = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1";
    if tx.query_row(marker, [schema.marker_table], |_| Ok(())).optional().map_err(db)?.is_none() {
        return Err(StoreError::WrongRole {
            store: loc(path),
            found: format!("version-{BEFORE_IDENTITY} store without the `{}` table, i.e. another role's", schema.marker_table),
            expected: role_name(role),
        });
    }
    let identity = new_identity(role)?;
    tx.execute_batch(IDENTITY_TABLE).map_err(db)?;
    insert_identity(&tx, &identity).map_err(db)?;
    tx.pragma_update(None, "user_version", BEFORE_IDENTITY + 1).map_err(db)?;
    tx.commit().map_err(db)?;
    tracing::info!(store = %identity, "database of schema version {BEFORE_IDENTITY} given its store identity");
    Ok(())
}

fn new_identity(role: Role) -> Result<Identity, StoreError> {
    let mut id = [0u8; 16];
    OsRandom.fill(&mut id).map_err(StoreError::Random)?;
    Ok(Identity { id, role })
}

fn insert_identity(conn: &Connection, identity: &Identity) -> rusqlite::Result<()> {
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
pub(crate) mod tests {
    use super::*;
    use crate::store::sqlite::ROUNDS_SCHEMA;

    /// A store as builds before the identity wrote it: version 1, its kind's tables only.
    pub(crate) fn version_1(path: &Path, tables: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(tables).unwrap();
        conn.pragma_update(None, "user_version", BEFORE_IDENTITY).unwrap();
    }

    #[test]
    fn a_version_1_store_is_given_an_identity_for_its_role_and_another_kind_is_refused() {
        let dir = std::env::temp_dir().join(format!("hearth-store-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (rounds, helper) = (dir.join("rounds.db"), dir.join("helper.db"));
        version_1(&rounds, crate::store::sqlite::ROUNDS_TABLES_V2);
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
        let other = sqlite::connect(&b).unwrap();
        assert!(matches!(check_identity(&other, &first), Err(StoreError::Replaced { .. })));
        check_identity(&sqlite::connect(&a).unwrap(), &first).unwrap();
        // The database removed, its log left: SQLite would replay the log into a new store.
        std::fs::remove_file(&a).unwrap();
        std::fs::write(sibling(&a, "-wal"), "frames of the old store").unwrap();
        assert!(matches!(create(&a, Role::Single, &ROUNDS_SCHEMA, seed), Err(StoreError::LeftoverLog { .. })));
        assert!(!a.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
