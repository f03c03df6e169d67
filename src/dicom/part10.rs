//! DICOM Part 10 framing (PS3.10 7.1): preamble, `DICM`, the File Meta Information group, then the
//! data set.
//!
//! tramy keeps every instance as *the data set bytes exactly as received* behind a File Meta group
//! it writes itself. DIMSE carries no meta group and a STOW-RS or imported file carries the
//! sender's, so the data set bytes are the one thing every path shares: they are what is hashed
//! (re-sending the same instance over any protocol is recognised as a duplicate) and what is
//! returned on retrieval.

use std::io::Cursor;

use bytes::Bytes;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::{FileMetaTable, FileMetaTableBuilder};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use sha2::{Digest, Sha256};

/// Implementation Class UID written into the meta groups tramy creates (PS3.7 D.3.3.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1452.1";
/// Implementation Version Name written alongside it.
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("TRAMY_", env!("CARGO_PKG_VERSION"));

/// Why bytes are not a usable DICOM instance.
#[derive(Debug, thiserror::Error)]
pub enum Part10Error {
    /// Too short or without the `DICM` prefix.
    #[error("not a DICOM Part 10 file: no 'DICM' prefix after the 128-byte preamble (PS3.10 7.1)")]
    NotPart10,
    /// The File Meta Information group does not parse.
    #[error("the File Meta Information group cannot be read: {0}")]
    BadMeta(String),
    /// The transfer syntax is unknown to dicom-rs, or it cannot read data sets in it.
    #[error("transfer syntax {0} is not supported by this server")]
    UnsupportedTransferSyntax(String),
    /// The data set does not parse in its transfer syntax (truncated, corrupt, or encoded in another
    /// transfer syntax than the one declared or negotiated).
    #[error("the data set cannot be decoded as {transfer_syntax}: {reason}")]
    BadDataSet {
        /// The transfer syntax it was read with.
        transfer_syntax: String,
        /// What the parser said.
        reason: String,
    },
}

/// Media Storage Directory Storage (DICOMDIR).
pub const MEDIA_STORAGE_DIRECTORY_SOP_CLASS: &str = "1.2.840.10008.1.3.10";

/// One instance as received: its transfer syntax and its data set bytes, untouched.
#[derive(Debug, Clone)]
pub struct ReceivedInstance {
    /// Transfer Syntax UID the data set is encoded in.
    pub transfer_syntax: String,
    /// Media Storage SOP Class UID from the sender's meta group; empty over DIMSE.
    pub media_storage_sop_class_uid: String,
    /// The data set bytes, exactly as received.
    pub dataset: Bytes,
}

impl ReceivedInstance {
    /// An instance from a DIMSE data set: no meta group, the negotiated transfer syntax.
    pub fn from_dataset(transfer_syntax: &str, dataset: Bytes) -> Self {
        ReceivedInstance {
            transfer_syntax: transfer_syntax.trim_end_matches(['\0', ' ']).to_string(),
            media_storage_sop_class_uid: String::new(),
            dataset,
        }
    }

    /// Splits a Part 10 file into its transfer syntax and data set bytes.
    pub fn from_part10(file: Bytes) -> Result<Self, Part10Error> {
        if file.len() < 132 || &file[128..132] != b"DICM" {
            return Err(Part10Error::NotPart10);
        }
        super::declared_lengths::check_file_meta(&file[132..]).map_err(Part10Error::BadMeta)?;
        let mut cursor = Cursor::new(&file[128..]);
        let meta = FileMetaTable::from_reader(&mut cursor)
            .map_err(|e| Part10Error::BadMeta(e.to_string()))?;
        let start = 128 + cursor.position() as usize;
        Ok(ReceivedInstance {
            transfer_syntax: meta.transfer_syntax().to_string(),
            media_storage_sop_class_uid: meta.media_storage_sop_class_uid().to_string(),
            dataset: file.slice(start..),
        })
    }

    /// Whether this is a DICOMDIR (Media Storage Directory, PS3.10 8.6), an index of a medium
    /// rather than an instance.
    pub fn is_media_directory(&self) -> bool {
        self.media_storage_sop_class_uid == MEDIA_STORAGE_DIRECTORY_SOP_CLASS
    }

    /// Parses the whole data set, failing on truncation or an encoding that does not match the
    /// transfer syntax.
    pub fn parse(&self) -> Result<InMemDicomObject, Part10Error> {
        let ts = TransferSyntaxRegistry
            .get(&self.transfer_syntax)
            .filter(|ts| ts.can_decode_dataset())
            .ok_or_else(|| Part10Error::UnsupportedTransferSyntax(self.transfer_syntax.clone()))?;
        if self.dataset.is_empty() {
            return Err(Part10Error::BadDataSet {
                transfer_syntax: self.transfer_syntax.clone(),
                reason: "the data set is empty".into(),
            });
        }
        super::declared_lengths::read_dataset(&self.dataset, ts).map_err(|reason| {
            Part10Error::BadDataSet {
                transfer_syntax: self.transfer_syntax.clone(),
                reason,
            }
        })
    }

    /// SHA-256 of the data set bytes: the instance's identity for duplicate detection and receipts.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.dataset).into()
    }

    /// The start of the Part 10 file tramy stores: preamble, `DICM` and its own meta group. The
    /// data set bytes as received follow it.
    pub fn file_header(
        &self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        source_ae_title: Option<&str>,
    ) -> Result<Vec<u8>, Part10Error> {
        let mut builder = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class_uid)
            .media_storage_sop_instance_uid(sop_instance_uid)
            .transfer_syntax(self.transfer_syntax.as_str())
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
        if let Some(ae) = source_ae_title.filter(|ae| !ae.is_empty()) {
            builder = builder.source_application_entity_title(ae);
        }
        let meta = builder
            .build()
            .map_err(|e| Part10Error::BadMeta(e.to_string()))?;
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&[0u8; 128]);
        out.extend_from_slice(b"DICM");
        meta.write(&mut out)
            .map_err(|e| Part10Error::BadMeta(e.to_string()))?;
        Ok(out)
    }

    /// The whole Part 10 file tramy stores: [`Self::file_header`], then the data set bytes.
    pub fn to_part10(
        &self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        source_ae_title: Option<&str>,
    ) -> Result<Vec<u8>, Part10Error> {
        let mut out = self.file_header(sop_class_uid, sop_instance_uid, source_ae_title)?;
        out.extend_from_slice(&self.dataset);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_dicom_bytes_are_refused() {
        let err = ReceivedInstance::from_part10(Bytes::from_static(b"hello")).unwrap_err();
        assert!(matches!(err, Part10Error::NotPart10));
    }

    #[test]
    fn part10_round_trip_keeps_dataset_bytes() {
        let ds = Bytes::from_static(b"\x08\x00\x16\x00\x04\x00\x00\x001.2\0");
        let inst = ReceivedInstance::from_dataset("1.2.840.10008.1.2", ds.clone());
        let file = inst.to_part10("1.2", "1.2.3", Some("MOD")).unwrap();
        let back = ReceivedInstance::from_part10(Bytes::from(file)).unwrap();
        assert_eq!(back.dataset, ds);
        assert_eq!(back.transfer_syntax, "1.2.840.10008.1.2");
    }

    #[test]
    fn unknown_transfer_syntax_is_refused() {
        let inst = ReceivedInstance::from_dataset("1.2.3.4.5", Bytes::from_static(b"xx"));
        assert!(matches!(
            inst.parse(),
            Err(Part10Error::UnsupportedTransferSyntax(_))
        ));
    }
}
