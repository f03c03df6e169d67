//! Re-encoding between the native (uncompressed) transfer syntaxes, which changes only how
//! elements are written, never pixel values. Used on retrieval when the receiver did not accept
//! the syntax an instance was stored in. Compressed syntaxes need pixel codecs and are not
//! converted here.

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::part10::Part10Error;

/// Implicit VR LE, Explicit VR LE, Explicit VR BE (retired, still sent by old devices).
pub const NATIVE_TRANSFER_SYNTAXES: [&str; 3] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
];

/// Whether `ts` is a native (uncompressed, not deflated) transfer syntax.
pub fn is_native(ts: &str) -> bool {
    NATIVE_TRANSFER_SYNTAXES.contains(&ts)
}

/// Re-encodes a data set from one native transfer syntax to another.
pub fn transcode_native(dataset: &[u8], from: &str, to: &str) -> Result<Vec<u8>, Part10Error> {
    let lookup = |uid: &str| {
        TransferSyntaxRegistry
            .get(uid)
            .filter(|_| is_native(uid))
            .ok_or_else(|| Part10Error::UnsupportedTransferSyntax(uid.to_string()))
    };
    let (from_ts, to_ts) = (lookup(from)?, lookup(to)?);
    let obj = super::declared_lengths::read_dataset(dataset, from_ts).map_err(|reason| {
        Part10Error::BadDataSet {
            transfer_syntax: from.to_string(),
            reason,
        }
    })?;
    let mut out = Vec::with_capacity(dataset.len());
    obj.write_dataset_with_ts(&mut out, to_ts)
        .map_err(|e| Part10Error::BadDataSet {
            transfer_syntax: to.to_string(),
            reason: e.to_string(),
        })?;
    Ok(out)
}
