//! DICOM Part 10 framing (PS3.10 7.1): preamble, `DICM`, the File Meta Information group, then the
//! data set.
//!
//! tramy keeps every instance as *the data set bytes exactly as received* behind a File Meta group
//! it writes itself. DIMSE carries no meta group and a STOW-RS or imported file carries the
//! sender's, so the data set bytes are the one thing every path shares: they are what is hashed
//! (re-sending the same instance over any protocol is recognised as a duplicate) and what is
//! returned on retrieval.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::{FileMetaTable, FileMetaTableBuilder};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use sha2::{Digest, Sha256};

use super::declared_lengths::{self, Encoding};
use crate::store::staging::{MemoryHold, SpooledFile};

/// The most a spooled data set may hold outside its Pixel Data (before and after it) for the
/// parse that validates it and extracts attributes and metadata: what ingest reads into memory.
pub const MAX_NON_PIXEL_BYTES: usize = 64 * 1024 * 1024;

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
    /// Media Storage SOP Instance UID from the sender's meta group; empty over DIMSE.
    pub media_storage_sop_instance_uid: String,
    /// The data set bytes, exactly as received; empty when they wait in [`Self::spooled`].
    pub dataset: Bytes,
    /// A large data set's bytes, exactly as received, in a staging file (never read whole into
    /// memory).
    pub spooled: Option<Arc<SpooledFile>>,
    /// The share of the receive memory budget `dataset` holds, given back with the last clone.
    pub memory_hold: Option<Arc<MemoryHold>>,
}

impl ReceivedInstance {
    /// An instance from a DIMSE data set: no meta group, the negotiated transfer syntax.
    pub fn from_dataset(transfer_syntax: &str, dataset: Bytes) -> Self {
        ReceivedInstance {
            transfer_syntax: transfer_syntax.trim_end_matches(['\0', ' ']).to_string(),
            media_storage_sop_class_uid: String::new(),
            media_storage_sop_instance_uid: String::new(),
            dataset,
            spooled: None,
            memory_hold: None,
        }
    }

    /// The same instance, holding `hold` (its share of the receive memory budget) while it lives.
    pub fn holding(mut self, hold: MemoryHold) -> Self {
        self.memory_hold = Some(Arc::new(hold));
        self
    }

    /// An instance whose data set bytes wait in a staging file.
    pub fn from_spooled(
        transfer_syntax: &str,
        media_storage_sop_class_uid: &str,
        file: SpooledFile,
    ) -> Self {
        ReceivedInstance {
            transfer_syntax: transfer_syntax.trim_end_matches(['\0', ' ']).to_string(),
            media_storage_sop_class_uid: media_storage_sop_class_uid.to_string(),
            media_storage_sop_instance_uid: String::new(),
            dataset: Bytes::new(),
            spooled: Some(Arc::new(file)),
            memory_hold: None,
        }
    }

    /// The length of the data set bytes.
    pub fn dataset_len(&self) -> u64 {
        match &self.spooled {
            Some(f) => f.len(),
            None => self.dataset.len() as u64,
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
            media_storage_sop_instance_uid: meta.media_storage_sop_instance_uid().to_string(),
            dataset: file.slice(start..),
            spooled: None,
            memory_hold: None,
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
        if let Some(file) = &self.spooled {
            return self.parse_spooled(file, ts);
        }
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
        match &self.spooled {
            Some(f) => f.sha256(),
            None => Sha256::digest(&self.dataset).into(),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> Part10Error {
        Part10Error::BadDataSet {
            transfer_syntax: self.transfer_syntax.clone(),
            reason: reason.into(),
        }
    }

    /// Parses a spooled data set without reading its Pixel Data: the elements before and after
    /// it are read, the Pixel Data's declared lengths (and fragment items) are checked against
    /// the file, and the parse sees a stand-in value that keeps its VR and bulk-data nature, so
    /// attributes and metadata come out as from the whole data set.
    fn parse_spooled(
        &self,
        file: &SpooledFile,
        ts: &dicom_encoding::TransferSyntax,
    ) -> Result<InMemDicomObject, Part10Error> {
        let io = |e: std::io::Error| self.bad(format!("staging file: {e}"));
        let len = file.len();
        let encoding = Encoding {
            explicit_vr: ts.uid() != "1.2.840.10008.1.2",
            big_endian: ts.endianness() == dicom_encoding::transfer_syntax::Endianness::Big,
        };
        let deflated = matches!(
            ts.codec(),
            dicom_encoding::transfer_syntax::Codec::Dataset(_)
        );
        // Find the top-level Pixel Data in a prefix that doubles up to the cap.
        let mut prefix_len = (1024 * 1024).min(len as usize);
        let (prefix, pixel_at) = loop {
            let prefix = file.read_at(0, prefix_len).map_err(io)?;
            let found = if deflated {
                None
            } else {
                declared_lengths::top_level_pixel_data(&prefix, encoding)
            };
            match found {
                Some(at) => break (prefix, at),
                None if prefix_len as u64 >= len => {
                    return declared_lengths::read_dataset(&prefix, ts).map_err(|r| self.bad(r))
                }
                None if prefix_len >= MAX_NON_PIXEL_BYTES => {
                    return Err(self.bad(format!(
                        "no Pixel Data within the first {} MB; larger values are not accepted \
                         outside Pixel Data",
                        MAX_NON_PIXEL_BYTES / (1024 * 1024)
                    )))
                }
                None => prefix_len = (prefix_len * 2).min(MAX_NON_PIXEL_BYTES).min(len as usize),
            }
        };
        let cut = |r: &str| self.bad(format!("Pixel Data {r}"));
        let header = declared_lengths::header(&prefix[pixel_at..], encoding)
            .ok_or_else(|| cut("header is cut short"))?;
        let value_at = (pixel_at + header.header_len) as u64;
        let mut parse_input = prefix[..pixel_at].to_vec();
        let end = if header.undefined_length() {
            // Encapsulated: an empty Basic Offset Table and no fragments stand in for it.
            parse_input.extend(header.with_length(u32::MAX, encoding));
            parse_input.extend(item_header(declared_lengths::ITEM_TAG, 0, encoding));
            parse_input.extend(item_header(
                declared_lengths::SEQUENCE_DELIMITATION_TAG,
                0,
                encoding,
            ));
            self.fragments_end(file, value_at, encoding)?
        } else {
            let end = value_at + u64::from(header.length);
            if end > len {
                return Err(cut(&format!(
                    "declares a {}-byte value but only {} bytes follow",
                    header.length,
                    len - value_at
                )));
            }
            // Its first bytes (at most 4 kB) keep it bulk data in the metadata, as the whole would.
            let keep = header.length.min(4096) & !1;
            parse_input.extend(header.with_length(keep, encoding));
            parse_input.extend(file.read_at(value_at, keep as usize).map_err(io)?);
            end
        };
        if len - end > MAX_NON_PIXEL_BYTES as u64 {
            return Err(self.bad("more than 64 MB of elements follow Pixel Data"));
        }
        parse_input.extend(file.read_at(end, (len - end) as usize).map_err(io)?);
        declared_lengths::read_dataset(&parse_input, ts).map_err(|r| self.bad(r))
    }

    /// Walks the fragment items of encapsulated Pixel Data in the file (PS3.5 A.4), checking each
    /// length; returns the offset after its Sequence Delimitation Item.
    fn fragments_end(
        &self,
        file: &SpooledFile,
        mut at: u64,
        encoding: Encoding,
    ) -> Result<u64, Part10Error> {
        loop {
            let bytes = file
                .read_at(at, 8)
                .map_err(|e| self.bad(format!("staging file: {e}")))?;
            let h = declared_lengths::header(&bytes, encoding)
                .ok_or_else(|| self.bad("encapsulated Pixel Data ends without a delimiter"))?;
            at += 8;
            if h.tag == declared_lengths::SEQUENCE_DELIMITATION_TAG {
                return Ok(at);
            }
            if h.tag != declared_lengths::ITEM_TAG || h.undefined_length() {
                return Err(self.bad(format!(
                    "encapsulated Pixel Data holds ({:04X},{:04X}) where a fragment item belongs",
                    h.tag.0, h.tag.1
                )));
            }
            at += u64::from(h.length);
            if at > file.len() {
                return Err(self.bad(format!(
                    "a Pixel Data fragment declares {} bytes beyond the end of the data set",
                    at - file.len()
                )));
            }
        }
    }

    /// The start of the Part 10 file tramy stores: preamble, `DICM` and its own meta group. The
    /// data set bytes as received follow it.
    pub fn file_header(
        &self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        source_ae_title: Option<&str>,
    ) -> Result<Vec<u8>, Part10Error> {
        StoredFileHeader {
            transfer_syntax_uid: &self.transfer_syntax,
            sop_class_uid,
            sop_instance_uid,
            source: source_ae_title.unwrap_or_default(),
        }
        .encode()
    }

    /// The whole Part 10 file tramy stores: [`Self::file_header`], then the data set bytes (of an
    /// instance held in memory).
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

/// What the File Meta group tramy writes before a stored data set says (PS3.10 7.1): known from
/// the data set, or, over DIMSE, from the C-STORE command and the presentation context before
/// the data set arrives, which lets a large one be uploaded while it arrives.
#[derive(Debug, Clone, Copy)]
pub struct StoredFileHeader<'a> {
    /// The transfer syntax the data set is encoded in.
    pub transfer_syntax_uid: &'a str,
    /// Media Storage SOP Class UID: the data set's SOP Class UID.
    pub sop_class_uid: &'a str,
    /// Media Storage SOP Instance UID: the data set's SOP Instance UID.
    pub sop_instance_uid: &'a str,
    /// Who sent it (a calling AE title, `DICOMWEB`): written as Source Application Entity Title
    /// when it is a valid AE title (at most 16 characters, PS3.5 6.2), else left out.
    pub source: &'a str,
}

impl StoredFileHeader<'_> {
    /// Preamble, `DICM` and the meta group, ready to precede the data set bytes.
    pub fn encode(&self) -> Result<Vec<u8>, Part10Error> {
        let mut builder = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(self.sop_class_uid)
            .media_storage_sop_instance_uid(self.sop_instance_uid)
            .transfer_syntax(self.transfer_syntax_uid.trim_end_matches(['\0', ' ']))
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
        let ae = self.source;
        if !ae.is_empty() && ae.len() <= 16 && !ae.contains(':') {
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
}

/// An item or delimiter header (always 8 bytes, PS3.5 7.5).
fn item_header(tag: dicom_core::Tag, length: u32, encoding: Encoding) -> Vec<u8> {
    declared_lengths::Header {
        tag,
        vr: None,
        length,
        header_len: 8,
    }
    .with_length(length, encoding)
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

    /// A staging area that spools every data set past 16 bytes.
    fn spooling_everything(dir: &std::path::Path) -> crate::store::staging::Staging {
        use crate::store::staging::{Staging, StagingLimits};
        let limits = StagingLimits {
            spool_above: 16,
            memory_budget: 1 << 20,
            max_instance: 1 << 30,
        };
        Staging::open(dir, limits).unwrap()
    }

    /// Every committed sample with its path.
    fn samples() -> Vec<(std::path::PathBuf, ReceivedInstance)> {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dicom-samples");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "dcm") {
                let bytes = Bytes::from(std::fs::read(&path).unwrap());
                found.push((path, ReceivedInstance::from_part10(bytes).unwrap()));
            }
        }
        found
    }

    /// `dataset` through a staging file, as a spooled instance of `like`'s transfer syntax and
    /// SOP class.
    async fn spooled(
        staging: &crate::store::staging::Staging,
        dataset: &[u8],
        like: &ReceivedInstance,
        media_storage_sop_class_uid: &str,
    ) -> ReceivedInstance {
        use crate::store::staging::Received;
        let mut spool = staging.spool(None);
        spool.push(dataset).await.unwrap();
        let Received::Spooled(file) = spool.finish().await.unwrap() else {
            panic!("not spooled")
        };
        ReceivedInstance::from_spooled(&like.transfer_syntax, media_storage_sop_class_uid, file)
    }

    /// A spooled data set parses to the same attributes and metadata as the same bytes in memory,
    /// for every sample (native and encapsulated Pixel Data, both byte orders, implicit VR).
    #[tokio::test]
    async fn a_spooled_data_set_parses_as_the_same_bytes_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let staging = spooling_everything(dir.path());
        let mut seen = 0;
        for (path, memory) in samples() {
            let spooled = spooled(
                &staging,
                &memory.dataset,
                &memory,
                &memory.media_storage_sop_class_uid,
            )
            .await;
            let json = |r: &ReceivedInstance| {
                crate::dicom::json::metadata_json(&r.parse().unwrap()).unwrap()
            };
            assert_eq!(json(&spooled), json(&memory), "{}", path.display());
            assert_eq!(spooled.sha256(), memory.sha256());
            seen += 1;
        }
        assert!(seen >= 8);
    }

    #[tokio::test]
    async fn a_spooled_pixel_data_longer_than_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let staging = spooling_everything(dir.path());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dicom-samples/ct_small_explicit_le.dcm");
        let memory =
            ReceivedInstance::from_part10(Bytes::from(std::fs::read(path).unwrap())).unwrap();
        let cut = &memory.dataset[..memory.dataset.len() - 1000];
        let spooled = spooled(&staging, cut, &memory, "").await;
        let err = spooled.parse().unwrap_err().to_string();
        assert!(err.contains("Pixel Data declares"), "{err}");
    }

    /// Damaged spooled data sets (bytes flipped, seeded) are refused or parsed, never a panic.
    #[tokio::test]
    async fn damaged_spooled_data_sets_are_refused_or_parsed_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let staging = spooling_everything(dir.path());
        let mut seed: u64 = 7;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for (_, memory) in samples() {
            for _ in 0..40 {
                let mut damaged = memory.dataset.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = next() % damaged.len();
                    damaged[at] ^= 1 << (next() % 8);
                }
                let _ = spooled(&staging, &damaged, &memory, "").await.parse();
            }
        }
    }
}
