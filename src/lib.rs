//! tramy: a medical imaging archive. Instances arrive over DIMSE (and, later, DICOMweb), go
//! through one durable ingest path into object storage plus a SQLite index, and are queried and
//! retrieved from there. See `ARCHITECTURE.md` for the data flow and the invariants.

#![warn(missing_docs)]

pub mod access;
pub mod audit;
pub mod auth;
pub mod config;
pub mod conformance;
pub mod dicom;
pub mod dimse;
pub mod facility_keys;
pub mod forward;
pub mod import;
pub mod ingest;
pub mod integrity;
pub mod registry;
pub mod research;
pub mod server;
pub mod store;
pub mod tls;
pub mod triage;
pub mod web;
