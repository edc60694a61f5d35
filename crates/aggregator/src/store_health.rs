//! Whether the store a server opened is still its database, and still takes writes.
//!
//! After `rm hearth.db*`, or another file moved onto the path, SQLite keeps writing to the file
//! it has open: every write succeeds, and all of it is gone at the next start. So a watchdog
//! checks that the path (and the write-ahead log's) still names the file opened (device and
//! inode), and now and then makes a tiny write. `/healthz` reads the verdict, and uploads and
//! aggregate calls are refused while it is bad. A lost store never recovers without a restart
//! (the process would be writing to a file no one will read); an unwritable one recovers at the
//! next write that succeeds.

use crate::reason::{Reason, Reject};
use crate::store::{DbError, DbResult, Identity};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a serving process checks that its database's path still names the file it opened.
pub const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often it makes its test write.
pub const WRITE_PROBE_EVERY: Duration = Duration::from_secs(5);
/// How often while the store is unwritable: uploads are refused until a write succeeds, so a
/// database back from a restart is found within this.
pub const UNWRITABLE_PROBE_EVERY: Duration = Duration::from_secs(1);

/// A file as the file system knows it, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId { dev: m.dev(), ino: m.ino() })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The path no longer names the file opened: removed, moved or replaced.
    Lost,
    /// A write failed.
    Unwritable,
}

/// What is wrong with the store, as `/healthz` and refusals say it. The detail names no path (it
/// goes to clients); the ERROR log line does.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
}

impl Problem {
    /// `/healthz`'s `status`.
    pub fn status(&self) -> &'static str {
        match self.kind {
            ProblemKind::Lost => "store_lost",
            ProblemKind::Unwritable => "store_unwritable",
        }
    }

    /// The answer to an upload or aggregate call meanwhile.
    pub fn refusal(&self) -> Reject {
        Reject::new(Reason::StorageUnavailable, format!("{}; nothing can be stored, retry later", self.detail))
    }
}

/// The verdict on one opened store, shared by the watchdog, the writers and `/healthz`.
#[derive(Debug)]
pub struct StoreHealth {
    /// The path, or the URL without its password.
    location: String,
    identity: Identity,
    /// An SQLite database and its write-ahead log, as opened (none for PostgreSQL: its server
    /// owns the files; a replaced database shows as another identity at reconnection).
    files: Vec<(PathBuf, FileId)>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    problem: Option<Problem>,
    next_probe: Instant,
}

impl StoreHealth {
    pub fn new(location: String, identity: Identity, files: Vec<(PathBuf, FileId)>) -> StoreHealth {
        let state = State { problem: None, next_probe: Instant::now() + WRITE_PROBE_EVERY };
        StoreHealth { location, identity, files, state: Mutex::new(state) }
    }

    /// The store opened; a further connection checks that it is this one.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn problem(&self) -> Option<Problem> {
        self.state().problem.clone()
    }

    /// What an upload or aggregate call gets while the store is not healthy.
    pub fn refusal(&self) -> Option<Reject> {
        self.state().problem.as_ref().map(Problem::refusal)
    }

    /// The watchdog's round: the file check, and the test write `probe` when one is due. Cheap
    /// enough for every pass of the round keeper's loop; never called on a request path.
    pub fn watch(&self, probe: impl FnOnce() -> DbResult<()>) {
        self.check_files();
        let due = {
            let mut s = self.state();
            let due = Instant::now() >= s.next_probe && s.problem.as_ref().is_none_or(|p| p.kind != ProblemKind::Lost);
            if due {
                s.next_probe = Instant::now() + WRITE_PROBE_EVERY;
            }
            due
        };
        if due {
            match probe() {
                Ok(()) => self.write_succeeded(),
                Err(e) => self.write_failed(&e),
            }
        }
    }

    /// Marks the store lost if its path, or its log's, no longer names the file opened.
    pub fn check_files(&self) {
        for (i, (path, opened)) in self.files.iter().enumerate() {
            let what = if i == 0 { "the database file" } else { "the database's write-ahead log" };
            match FileId::of(path) {
                Ok(id) if id == *opened => {}
                Ok(_) => self.lose(format!("{what} was replaced while the server was running")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.lose(format!("{what} was removed while the server was running"))
                }
                Err(e) => self.lose(format!("{what} cannot be found: {e}")),
            }
        }
    }

    /// A write to the store failed (an upload batch, a round's close, the probe).
    pub fn write_failed(&self, e: &DbError) {
        if let DbError::Replaced(why) = e {
            return self.lose(why.clone());
        }
        let mut s = self.state();
        s.next_probe = s.next_probe.min(Instant::now() + UNWRITABLE_PROBE_EVERY);
        if s.problem.is_none() {
            tracing::error!(store = %self.location, error = %e, "the database cannot be written: uploads are refused until a write succeeds");
            s.problem = Some(Problem { kind: ProblemKind::Unwritable, detail: "the database cannot be written".into() });
        }
    }

    /// A write went through: a store that was unwritable is healthy again (a lost one never).
    pub fn write_succeeded(&self) {
        let mut s = self.state();
        if s.problem.as_ref().is_some_and(|p| p.kind == ProblemKind::Unwritable) {
            tracing::warn!(store = %self.location, "the database takes writes again");
            s.problem = None;
        }
    }

    /// The database is no longer the one opened (a file removed or replaced; a PostgreSQL
    /// database that answers with another identity): never recovers without a restart.
    pub fn lose(&self, detail: String) {
        let mut s = self.state();
        if s.problem.as_ref().is_none_or(|p| p.kind != ProblemKind::Lost) {
            tracing::error!(
                location = %self.location,
                store = %self.identity,
                "{detail}: what is written now would be lost. Uploads are refused; restore the database and restart"
            );
            s.problem = Some(Problem { kind: ProblemKind::Lost, detail });
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn health(files: Vec<(PathBuf, FileId)>) -> StoreHealth {
        StoreHealth::new("/nowhere/hearth.db".into(), Identity { id: [7; 16], role: Role::Single }, files)
    }

    #[test]
    fn an_unwritable_store_recovers_and_a_lost_one_never_does() {
        let h = health(Vec::new());
        h.write_failed(&rusqlite::Error::InvalidQuery.into());
        assert_eq!(h.problem().map(|p| p.status()), Some("store_unwritable"));
        assert_eq!(h.refusal().map(|r| r.status()), Some(503));
        h.write_succeeded();
        assert_eq!(h.problem(), None);
        h.lose("gone".into());
        h.write_succeeded();
        h.write_failed(&rusqlite::Error::InvalidQuery.into());
        assert_eq!(h.problem().map(|p| p.status()), Some("store_lost"));
    }

    #[test]
    fn a_path_that_names_another_file_is_lost() {
        let dir = std::env::temp_dir().join(format!("hearth-store-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let h = health(vec![(a.clone(), FileId::of(&a).unwrap())]);
        h.check_files();
        assert_eq!(h.problem(), None);
        std::fs::rename(&b, &a).unwrap();
        h.check_files();
        let p = h.problem().unwrap();
        assert_eq!((p.status(), p.detail.contains("replaced")), ("store_lost", true), "{p:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
