//! The one long-lived database connection request handlers share: the model cache loads old
//! model versions through it, the upload handler looks up whether an upload that names an ended
//! round was accepted, and `/readyz` checks the database answers.
//!
//! Opening a connection per request cost a file descriptor and a page cache each, without bound:
//! a download flood left 354 SQLite handles open. One connection bounds both; its reads run one
//! at a time, on tokio's blocking threads, never on the async workers. An SQLite one is opened
//! read-only (it cannot write, whatever a bug asks, and under WAL it reads beside the round
//! keeper's writes without blocking them).

use crate::reason::{Reason, Reject};
use crate::store::{self, Database, DbResult, ModelReader, StoreError};
use crate::store_health::StoreHealth;
use std::sync::Arc;
use tokio::sync::Mutex;

pub struct Reader {
    conn: Arc<Mutex<Box<dyn ModelReader>>>,
}

impl Reader {
    /// Connects to the store `health` describes and checks it is that very store.
    pub fn open(db: &Database, health: &StoreHealth) -> Result<Reader, StoreError> {
        Ok(Reader { conn: Arc::new(Mutex::new(store::open_reader(db, health)?)) })
    }

    /// Runs `read` on the connection once the reads queued before it are done; a database error
    /// is logged and answered as `storage_unavailable`.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut dyn ModelReader) -> DbResult<T> + Send + 'static,
    ) -> Result<T, Reject> {
        let mut conn = self.conn.clone().lock_owned().await;
        match tokio::task::spawn_blocking(move || read(conn.as_mut())).await {
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
