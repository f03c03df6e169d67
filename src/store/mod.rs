//! Where instances live: objects in an [`object_store`] backend ([`objects`]) and their metadata in
//! the SQLite index ([`index`]), queried through [`query`].

pub mod audit;
pub mod changes;
pub mod commitment;
pub mod damage;
pub mod db;
pub mod feedback;
pub mod findings;
pub mod index;
pub mod migrations;
pub mod names;
pub mod objects;
pub mod outbox;
pub mod peers;
pub mod query;
pub mod read_buffers;
pub mod registry;
pub mod research;
pub mod sharing;
pub mod staging;
pub mod stats;
mod times;
mod visibility;
pub mod write_journal;

pub use index::{CommitOutcome, Index, IndexError, IndexLocation, NewInstance, StoredInstance};
pub use migrations::SCHEMA_VERSION;
pub use objects::{ObjectError, ObjectStorage};
