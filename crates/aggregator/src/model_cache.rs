//! Published model versions, as `/v1/models/{version}/…` serves them.
//!
//! Each request used to open a database connection and copy the 1.1 MB pack out of SQLite into
//! a response of its own: 4,000 clients that asked and never read took memory from 325 MB to
//! 3.59 GB. A published version never changes, so every response now shares one immutable copy
//! (`Bytes`): the current version's is the keeper's snapshot; older ones are loaded through the
//! one read-only connection ([`Reader`]), one miss at a time, and kept in a small
//! least-recently-used cache.
//!
//! An old version stays in memory while it is cached or while a response still sends it (a
//! client that never reads holds it), so evicting it alone would not bound memory: the next
//! miss would load a second copy for the next such client. At most `model_cache_versions` old
//! versions are ever in memory, cached or still being sent: a miss evicts the least recently
//! used version no response is sending; when every one is being sent it is answered 503 `busy`.
//! Download memory is then at most `model_cache_versions` + 1 packs (+ the previous current
//! one while responses still send it), whatever the clients do.

use crate::aggregate::{PublishedModel, Snapshot};
use crate::reader::Reader;
use crate::reason::{Reason, Reject};
use axum::body::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::watch;

pub struct ModelCache {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    reader: Arc<Reader>,
    /// Old versions in memory at most.
    capacity: usize,
    held: Mutex<Held>,
    /// Held while a miss is loaded: misses load one at a time, and a request that waited here
    /// finds what the load before it brought.
    loading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    /// Kept warm, the most recently used last.
    recent: VecDeque<Arc<PublishedModel>>,
    /// Every old version in memory: cached, or evicted while a response still sends it.
    alive: HashMap<u64, Weak<PublishedModel>>,
}

impl ModelCache {
    /// A cache of `capacity` old versions (`model_cache_versions`, which the configuration holds
    /// to at least one: an old version is only ever served from memory).
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, reader: Arc<Reader>, capacity: usize) -> ModelCache {
        ModelCache { snapshot, reader, capacity, held: Mutex::default(), loading: tokio::sync::Mutex::new(()) }
    }

    /// Published version `version`; `None` if it was never published.
    pub async fn get(&self, version: u64) -> Result<Option<Arc<PublishedModel>>, Reject> {
        let current = self.snapshot.borrow().model.clone();
        if version == current.version {
            return Ok(Some(current));
        }
        // The current version is the latest: nothing newer exists, no lookup needed.
        if version > current.version {
            return Ok(None);
        }
        if let Some(m) = self.find(version) {
            return Ok(Some(m));
        }
        let _one_at_a_time = self.loading.lock().await;
        if let Some(m) = self.find(version) {
            return Ok(Some(m));
        }
        self.make_room()?;
        let Some(stored) = self.reader.run(move |db| db.model(version)).await? else {
            return Ok(None);
        };
        let model = Arc::new(PublishedModel::from(stored));
        self.held().keep(model.clone());
        Ok(Some(model))
    }

    fn find(&self, version: u64) -> Option<Arc<PublishedModel>> {
        self.held().find(version)
    }

    fn make_room(&self) -> Result<(), Reject> {
        self.held().make_room(self.capacity).map_err(|()| {
            Reject::new(Reason::Busy, "every model version the server keeps in memory is being sent; retry shortly")
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Held {
    /// A version in memory, marked most recently used.
    fn find(&mut self, version: u64) -> Option<Arc<PublishedModel>> {
        let model = self.alive.get(&version)?.upgrade()?;
        self.recent.retain(|m| m.version != version);
        self.recent.push_back(model.clone());
        Some(model)
    }

    /// Evicts until one more version fits in `capacity`, least recently used first, never one
    /// being sent; `Err` when every version in memory is being sent.
    fn make_room(&mut self, capacity: usize) -> Result<(), ()> {
        self.alive.retain(|_, m| m.strong_count() > 0);
        while self.alive.len() >= capacity {
            // Only `recent` holds an unused version: evicting it frees it.
            let at = self.recent.iter().position(|m| Arc::strong_count(m) == 1).ok_or(())?;
            if let Some(evicted) = self.recent.remove(at) {
                self.alive.remove(&evicted.version);
            }
        }
        Ok(())
    }

    fn keep(&mut self, model: Arc<PublishedModel>) {
        self.alive.insert(model.version, Arc::downgrade(&model));
        self.recent.push_back(model);
    }
}

/// A response body of `model`'s ONNX bytes that counts as sending it until it is dropped
/// (written out, or its connection closed).
pub fn onnx_body(model: &Arc<PublishedModel>) -> Bytes {
    Bytes::from_owner(Sending(model.clone()))
}

struct Sending(Arc<PublishedModel>);

impl AsRef<[u8]> for Sending {
    fn as_ref(&self) -> &[u8] {
        &self.0.onnx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(version: u64) -> Arc<PublishedModel> {
        let bytes = Bytes::from(vec![version as u8; 4]);
        Arc::new(PublishedModel { version, onnx: bytes.clone(), manifest: bytes, etag: format!("v{version}") })
    }

    #[test]
    fn eviction_takes_the_least_recently_used_version_no_response_is_sending() {
        let mut held = Held::default();
        for v in [1, 2] {
            held.make_room(2).unwrap();
            held.keep(model(v));
        }
        // 1 is used again, so 2 is the least recently used.
        assert!(held.find(1).is_some());
        held.make_room(2).unwrap();
        assert_eq!(held.recent.iter().map(|m| m.version).collect::<Vec<_>>(), [1]);
        held.keep(model(3));

        // A response still sends 1: 3 goes instead, and 1 is found again without a load.
        let sending = onnx_body(&held.find(1).unwrap());
        held.make_room(2).unwrap();
        held.keep(model(4));
        assert!(held.find(3).is_none());
        assert_eq!(&sending[..], [1; 4]);

        // Evicted while sent, a version is still found, and still counts against the capacity.
        let sending_4 = onnx_body(&held.find(4).unwrap());
        assert_eq!(held.make_room(2), Err(()), "both versions in memory are being sent");
        held.recent.clear();
        assert!(held.find(1).is_some() && held.find(4).is_some());
        held.recent.clear();
        drop((sending, sending_4));
        held.make_room(2).unwrap();
        assert!(held.alive.is_empty());
    }
}
