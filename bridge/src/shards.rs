//! Where a document lives: one database, or one of N shards chosen by a hash of its name (the
//! same hash as `collab.shard_hash` of the PL/Proxy functions in `sql/plproxy`, so the bridge and
//! SQL applications going through the proxy agree on every document's home). Each shard has its
//! own pool, write lanes and LISTEN connection; an unsharded bridge may also send HTTP reads to
//! a read replica (`--replica-url`).

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

use crate::pgconn::PgTarget;

/// One database that owns a share of the documents.
pub struct Shard {
    /// Writes, WebSocket sync and catch-ups.
    pub pool: Pool,
    /// HTTP reads, when a replica is configured (else they use `pool`).
    pub replica: Option<Pool>,
    /// The shard's LISTEN connection.
    pub listener: PgTarget,
}

pub struct Shards {
    shards: Vec<Shard>,
}

/// The shard hash of a document name: the first four bytes of SHA-256 of its UTF-8 bytes, as a
/// signed big-endian integer. `collab.shard_hash(doc)` in `sql/plproxy/proxy.sql` computes the
/// same in SQL; PL/Proxy's `RUN ON` then takes its lowest bits, as [`shard_of`] does.
pub fn shard_hash(doc: &str) -> i32 {
    let d = Sha256::digest(doc.as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The shard (0..n, n a power of two) that owns `doc`: PL/Proxy's `hash & (n - 1)`.
pub fn shard_of(doc: &str, n: usize) -> usize {
    (shard_hash(doc) as u32 as usize) & (n.max(1) - 1)
}

impl Shards {
    /// `shards` in the order of the proxy's partitions (p0, p1, ...). PL/Proxy needs a power of
    /// two; so does the bridge, so that both pick the same shard.
    pub fn new(shards: Vec<Shard>) -> Result<Shards, String> {
        if shards.is_empty() || !shards.len().is_power_of_two() {
            return Err(format!(
                "the number of shards must be a power of two (as in PL/Proxy), got {}",
                shards.len()
            ));
        }
        Ok(Shards { shards })
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn index_of(&self, doc: &str) -> usize {
        shard_of(doc, self.shards.len())
    }

    pub fn of(&self, doc: &str) -> &Shard {
        &self.shards[self.index_of(doc)]
    }

    /// The pool of the shard that owns `doc`.
    pub fn pool_for(&self, doc: &str) -> &Pool {
        &self.of(doc).pool
    }

    /// Where HTTP reads of `doc` go: its shard's replica if there is one (and whether it is).
    pub fn read_pool_for(&self, doc: &str) -> (&Pool, bool) {
        let s = self.of(doc);
        match &s.replica {
            Some(r) => (r, true),
            None => (&s.pool, false),
        }
    }

    pub fn all(&self) -> &[Shard] {
        &self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_prefix_and_shards_take_its_low_bits() {
        // SELECT ('x' || left(encode(sha256(convert_to('hello', 'UTF8')), 'hex'), 8))::bit(32)::int4
        // = x'2cf24dba' = 754077114 (checked against PostgreSQL in bridge/tests/shards.rs too).
        assert_eq!(shard_hash("hello"), 0x2cf2_4dba);
        assert_eq!(shard_of("hello", 2), 0);
        assert_eq!(shard_of("hello", 1), 0);
        for doc in ["a", "team/notes", "é"] {
            assert!(shard_of(doc, 4) < 4);
            assert_eq!(
                shard_of(doc, 8) & 3,
                shard_of(doc, 4),
                "doubling splits shards"
            );
        }
    }
}
