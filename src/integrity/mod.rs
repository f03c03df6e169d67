//! Archive integrity: an acknowledged instance is never lost and never served as something it
//! is not.
//!
//! - [`read`]: every read of a stored object checks, as the bytes arrive, that its data set still
//!   has the SHA-256 recorded at ingest and that it holds the instance asked for; a missing or
//!   damaged object is refused, counted, logged and marked in the index (`store::damage`).
//! - [`commitment`]: whether referenced instances are held intact (Storage Commitment).
//! - [`scrub`]: `tramy verify` reads the archive at a bounded rate and reports damaged and
//!   missing instances (dcm4chee's "checksum verification").
//! - [`reindex`]: objects are self-describing Part 10 files, so an object without index rows (a
//!   crash between object write and commit, an index restored from an older backup, a lost WAL)
//!   is indexed again, never deleted; `tramy reindex` rebuilds a whole index from the objects.

pub mod commitment;
pub mod read;
pub mod reindex;
pub mod scrub;

pub use read::ReadError;
