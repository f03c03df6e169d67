//! DIMSE adapter (PS3.7, PS3.8): accepts associations on the DICOM port and serves C-ECHO,
//! C-STORE, C-FIND, C-GET and C-MOVE as a service class provider, and opens associations of its
//! own to deliver C-MOVE sub-operations.
//!
//! This module speaks the protocol only: storage goes through [`crate::ingest::Archive`], queries
//! through [`crate::store::query`].

pub mod association;
pub mod audit;
pub mod channel;
pub mod echo;
pub mod find;
pub mod message;
pub mod retrieve;
pub mod server;
pub mod store;
pub mod store_scu;
pub mod stream;

pub use server::{serve, DimseService};
