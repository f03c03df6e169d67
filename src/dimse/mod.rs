//! DIMSE adapter (PS3.7, PS3.8): accepts associations on the DICOM port and serves C-ECHO,
//! C-STORE, C-FIND, C-GET, C-MOVE and Storage Commitment as a service class provider, and opens
//! associations of its own to deliver C-MOVE sub-operations, Storage Commitment reports, and
//! instances to DIMSE peers (`peer_scu`).
//!
//! This module speaks the protocol only: storage goes through [`crate::ingest::Archive`], queries
//! through [`crate::store::query`].

pub mod association;
pub mod audit;
pub mod channel;
pub mod commitment;
pub mod echo;
pub mod find;
pub mod message;
pub mod peer_scu;
pub mod retrieve;
pub mod server;
pub mod store;
pub mod store_scu;
pub mod stream;

pub use server::{serve, DimseService};
