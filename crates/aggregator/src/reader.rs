//! The one long-lived, read-only database connection request handlers share: the model cache
//! loads old model versions through it, and the upload handler looks up whether an upload that
//! names an ended round was accepted.
//!
//! Opening a connection per request cost a file descriptor and a page cache each, without bound:
//! a download flood left 354 SQLite handles open. One connection bounds both; its reads run one
//! at a time, on tokio's blocking threads, never on the async workers. It cannot write, whatever
//! a bug asks, and under WAL it reads beside the round keeper's writes without blocking them.

use crate::reason::{Reason, Reject};
use crate::store::{self, DbResult};
use crate::store_file::{self, StoreError};
use crate::store_health::StoreHealth;
use rusqlite::Connection;
use std::sync::Arc;
use tokio::sync::Mutex;

pub struct Reader {
    conn: Arc<Mutex<Connection>>,
}

impl Reader {
    /// Connects to the store `health` describes, read-only, and checks it is that very store.
    pub fn open(health: &StoreHealth) -> Result<Reader, StoreError> {
        let path = health.path();
        let conn = store::connect_read_only(path).map_err(|source| StoreError::Db { path: path.into(), source })?;
        store_file::check_identity(&conn, health.identity())?;
        Ok(Reader { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `read` on the connection once the reads queued before it are done; a database error
    /// is logged and answered as `storage_unavailable`.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    ) -> Result<T, Reject> {
        let conn = self.conn.clone().lock_owned().await;
        match tokio::task::spawn_blocking(move || read(&conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the database failed");
                Err(unavailable())
            }
            Err(_) => Err(unavailable()),
        }
    }
}

fn unavailable() -> Reject {
    Reject::new(Reason::StorageUnavailable, "the database could not be read; retry later")
}
