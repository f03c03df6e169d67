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
    let mut obj = super::declared_lengths::read_dataset(dataset, from_ts).map_err(|reason| {
        Part10Error::BadDataSet {
            transfer_syntax: from.to_string(),
            reason,
        }
    })?;
    if from_ts.endianness() != to_ts.endianness() {
        super::codecs::whole_32_bit_values(&mut obj, from == NATIVE_TRANSFER_SYNTAXES[2]);
    }
    let mut out = Vec::with_capacity(dataset.len());
    obj.write_dataset_with_ts(&mut out, to_ts)
        .map_err(|e| Part10Error::BadDataSet {
            transfer_syntax: to.to_string(),
            reason: e.to_string(),
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_two_bit_pixels_keep_their_values_from_big_to_little_endian() {
        // Explicit VR Big Endian: Bits Allocated = 32, Pixel Data (OW) = two 32-bit values.
        let mut dataset = vec![0x00, 0x28, 0x01, 0x00, b'U', b'S', 0x00, 0x02, 0x00, 0x20];
        dataset.extend_from_slice(&[0x7F, 0xE0, 0x00, 0x10, b'O', b'W', 0, 0, 0, 0, 0, 8]);
        dataset.extend_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x0A, 0x0B, 0x0C, 0x0D]);
        let le = transcode_native(
            &dataset,
            NATIVE_TRANSFER_SYNTAXES[2],
            NATIVE_TRANSFER_SYNTAXES[1],
        )
        .unwrap();
        assert_eq!(
            le[le.len() - 8..],
            [0x04, 0x03, 0x02, 0x01, 0x0D, 0x0C, 0x0B, 0x0A],
            "each 32-bit value is byte-swapped whole, not as two 16-bit words"
        );
        let be = transcode_native(
            &le,
            NATIVE_TRANSFER_SYNTAXES[1],
            NATIVE_TRANSFER_SYNTAXES[2],
        )
        .unwrap();
        assert_eq!(be[be.len() - 8..], dataset[dataset.len() - 8..], "and back");
    }
}
