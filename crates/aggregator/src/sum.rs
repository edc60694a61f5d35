//! A round's sum: what one writer adds its uploads to, and how a partial sum is stored.
//!
//! A single server sums plaintext updates in f64 (stored as 8 little-endian bytes per
//! parameter); a leader sums its shares mod 2^B (4 bytes per parameter). The round's sum is the
//! merge of every writer's partial, so replicas never share memory, only rows.

use crate::config::Role;
use crate::validate::Upload;
use hearth_core::learning::server::RoundSum;
use hearth_core::privacy::shares::ShareSum;

#[derive(Debug, Clone)]
pub enum Sum {
    /// A single server's plaintext updates.
    Plain(RoundSum),
    /// A leader's shares mod 2^B.
    Shares(ShareSum),
}

impl Sum {
    /// An empty sum of `params` values for `role`'s uploads.
    pub fn new(role: Role, params: usize) -> Sum {
        match role {
            Role::Leader => Sum::Shares(ShareSum::new(params)),
            _ => Sum::Plain(RoundSum::new(params)),
        }
    }

    pub fn count(&self) -> u64 {
        match self {
            Sum::Plain(s) => s.count(),
            Sum::Shares(s) => s.count(),
        }
    }

    pub fn add(&mut self, upload: &Upload) {
        match (self, upload) {
            (Sum::Plain(s), Upload::Plain(u)) => s.add(u.iter_values()),
            (Sum::Shares(s), Upload::Report(r)) => s.add(r.share.iter().copied()),
            // The HTTP layer decodes only the format of this server's role.
            _ => unreachable!("an upload of another role's format reached the keeper"),
        }
    }

    /// Adds another writer's partial of the same round.
    pub fn merge(&mut self, other: &Sum) {
        match (self, other) {
            (Sum::Plain(s), Sum::Plain(o)) => s.merge(o),
            (Sum::Shares(s), Sum::Shares(o)) => s.merge(o),
            _ => unreachable!("partials of one store are of one role"),
        }
    }

    /// The stored form of the sum's values (the count is stored beside it).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Sum::Plain(s) => s.sums().iter().flat_map(|v| v.to_le_bytes()).collect(),
            Sum::Shares(s) => s.values().iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Reads a stored partial; `Err` when its size does not fit `params` values.
    pub fn decode(role: Role, params: usize, count: u64, bytes: &[u8]) -> Result<Sum, String> {
        let width = match role {
            Role::Leader => 4,
            _ => 8,
        };
        if bytes.len() != params * width {
            return Err(format!("a partial sum of {} bytes for {params} parameters", bytes.len()));
        }
        Ok(match role {
            Role::Leader => Sum::Shares(ShareSum::from_parts(
                bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
                count,
            )),
            _ => Sum::Plain(RoundSum::from_parts(
                bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
                count,
            )),
        })
    }
}
