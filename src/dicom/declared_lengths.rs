//! A pre-check of a data set's declared value lengths, before the full parse.
//!
//! dicom-rs reads a value by first allocating and zero-filling a buffer of the length its header
//! declares, then filling it. One flipped bit in a 40 kB data set (say an `SL` VR read as an
//! unknown VR, PS3.5 7.1.2) misaligns the rest, and the parser then zero-fills gigabytes for a
//! garbage length before it notices the end of the input: seconds of CPU and memory per request,
//! a denial of service in waiting. This walk reads only element headers (PS3.5 7.1, 7.5) the way
//! dicom-rs does and refuses any defined length longer than the bytes left, so every allocation
//! the real parse makes is bounded by the size of what was received.
//!
//! It is deliberately conservative: where it cannot follow the encoding (deflated data sets) it
//! stops and lets the parser decide.

use std::io::Cursor;

use dicom_core::{Tag, VR};
use dicom_encoding::transfer_syntax::{Codec, Endianness, TransferSyntax};
use dicom_object::InMemDicomObject;

/// Implicit VR Little Endian (PS3.5 A.1): the one syntax whose headers carry no VR.
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";

/// Parses a data set encoded in `ts` after checking its declared lengths: the one way tramy
/// parses data sets that come from outside (instances, command sets, query identifiers).
pub fn read_dataset(bytes: &[u8], ts: &TransferSyntax) -> Result<InMemDicomObject, String> {
    // A deflated data set's bytes are not element headers; the inflater bounds itself.
    if !matches!(ts.codec(), Codec::Dataset(_)) {
        check(
            bytes,
            Encoding {
                explicit_vr: ts.uid() != IMPLICIT_VR_LITTLE_ENDIAN,
                big_endian: ts.endianness() == Endianness::Big,
            },
        )?;
    }
    let mut obj = InMemDicomObject::read_dataset_with_ts(Cursor::new(bytes), ts)
        .map_err(|e| e.to_string())?;
    if ts.endianness() == Endianness::Little {
        super::unknown_vr::resolve(&mut obj);
    }
    Ok(obj)
}

/// Which header layout the data set uses.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    /// Explicit VR (every syntax but Implicit VR Little Endian).
    pub explicit_vr: bool,
    /// Big endian (only the retired Explicit VR Big Endian).
    pub big_endian: bool,
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// VRs whose explicit-VR header has a 16-bit length (PS3.5 Table 7.1-2); any other VR, an
/// unknown one included (dicom-rs reads it as UN), has 2 reserved bytes and a 32-bit length.
fn has_short_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// Checks every defined length against the bytes that remain. `Err` names the element, its
/// offset and the lengths, for the refusal the sender sees.
pub fn check(dataset: &[u8], encoding: Encoding) -> Result<(), String> {
    walk(dataset, encoding, false)
}

/// The same check for a File Meta Information group (PS3.10 7.1: explicit VR little endian),
/// stopping where group 0002 ends and the data set, in its own encoding, begins.
pub fn check_file_meta(meta_and_rest: &[u8]) -> Result<(), String> {
    walk(
        meta_and_rest,
        Encoding {
            explicit_vr: true,
            big_endian: false,
        },
        true,
    )
}

fn walk(dataset: &[u8], encoding: Encoding, meta_only: bool) -> Result<(), String> {
    let u16_at = |at: usize| -> Option<u16> {
        let b = dataset.get(at..at + 2)?;
        Some(if encoding.big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = dataset.get(at..at + 4)?;
        Some(if encoding.big_endian {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    };
    let mut at = 0usize;
    // Inside encapsulated pixel data, items are fragments: opaque bytes, not data sets.
    let mut in_fragments = false;
    // A truncated header ends the walk: the parser reports truncation itself, cheaply.
    while let (Some(group), Some(element)) = (u16_at(at), u16_at(at + 2)) {
        if meta_only && group != 0x0002 {
            return Ok(());
        }
        let tag = Tag(group, element);
        let (length, header, is_container) = if group == 0xFFFE {
            let Some(length) = u32_at(at + 4) else {
                return Ok(());
            };
            // Items of a sequence hold data sets: walk into them. Fragments are skipped.
            (length, 8, tag == ITEM && !in_fragments)
        } else if encoding.explicit_vr {
            let Some(vr) = dataset.get(at + 4..at + 6) else {
                return Ok(());
            };
            let vr = [vr[0], vr[1]];
            let (length, header) = if has_short_length(vr) {
                match u16_at(at + 6) {
                    Some(l) => (u32::from(l), 8),
                    None => return Ok(()),
                }
            } else {
                match u32_at(at + 8) {
                    Some(l) => (l, 12),
                    None => return Ok(()),
                }
            };
            // An undefined-length UN holds implicit VR little endian (PS3.5 6.2.2), but dicom-rs
            // reads it as a sequence in the data set's own encoding (dicom-parser 0.10,
            // `DataSetReader`: "treat other undefined length elements as data set sequences"), so
            // this walk does too: what dicom-rs would allocate for its misread headers is what
            // must be bounded. (pydicom's UN_sequence.dcm, 674 bytes, cost 3.6 GB and 6 s.)
            (length, header, &vr == b"SQ" || length == UNDEFINED)
        } else {
            let Some(length) = u32_at(at + 4) else {
                return Ok(());
            };
            let sequence = crate::dicom::attributes::dictionary_vr(tag) == VR::SQ;
            (length, 8, sequence || length == UNDEFINED)
        };
        let value_start = at + header;
        if tag == SEQUENCE_DELIMITATION {
            in_fragments = false;
        }
        if tag == PIXEL_DATA && length == UNDEFINED {
            in_fragments = true;
        }
        if is_container || length == UNDEFINED || (group == 0xFFFE && tag != ITEM) {
            // Sequence and item headers are followed by their content, delimiters by nothing.
            at = value_start;
            continue;
        }
        let remaining = dataset.len().saturating_sub(value_start);
        if length as usize > remaining {
            return Err(format!(
                "element ({group:04X},{element:04X}) at byte {at} declares a {length}-byte value but only {remaining} bytes follow"
            ));
        }
        at = value_start + length as usize;
    }
    Ok(())
}

/// One element header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The tag.
    pub tag: Tag,
    /// The explicit VR, when the encoding has one and this is not an item or delimiter.
    pub vr: Option<[u8; 2]>,
    /// The declared value length (`0xFFFF_FFFF`: undefined).
    pub length: u32,
    /// Bytes the header takes.
    pub header_len: usize,
}

impl Header {
    /// Whether the value length is undefined (sequences, encapsulated pixel data).
    pub fn undefined_length(&self) -> bool {
        self.length == UNDEFINED
    }

    /// The header bytes with another value length, in the same encoding.
    pub fn with_length(&self, length: u32, encoding: Encoding) -> Vec<u8> {
        let u16b = |v: u16| {
            if encoding.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if encoding.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::with_capacity(12);
        out.extend(u16b(self.tag.0));
        out.extend(u16b(self.tag.1));
        match self.vr {
            Some(vr) if has_short_length(vr) => {
                out.extend(vr);
                out.extend(u16b(length as u16));
            }
            Some(vr) => {
                out.extend(vr);
                out.extend([0, 0]);
                out.extend(u32b(length));
            }
            None => out.extend(u32b(length)),
        }
        out
    }
}

/// Reads the element header at the start of `bytes`; `None` when it is cut short.
pub fn header(bytes: &[u8], encoding: Encoding) -> Option<Header> {
    let u16_at = |at: usize| -> Option<u16> {
        let b = bytes.get(at..at + 2)?;
        Some(if encoding.big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at + 4)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if encoding.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let tag = Tag(u16_at(0)?, u16_at(2)?);
    if tag.0 == 0xFFFE || !encoding.explicit_vr {
        return Some(Header {
            tag,
            vr: None,
            length: u32_at(4)?,
            header_len: 8,
        });
    }
    let vr = bytes.get(4..6)?;
    let vr = [vr[0], vr[1]];
    let (length, header_len) = if has_short_length(vr) {
        (u32::from(u16_at(6)?), 8)
    } else {
        (u32_at(8)?, 12)
    };
    Some(Header {
        tag,
        vr: Some(vr),
        length,
        header_len,
    })
}

/// The offset of the first top-level (not nested) element of group 7FE0 (Pixel Data, Float and
/// Double Float Pixel Data; PS3.5 7.1 orders elements by tag, so it comes last but for
/// trailing padding), when `prefix` reaches it. Sequences, items and encapsulated fragments are
/// followed so that an icon image's Pixel Data inside a sequence is not taken for it. `None`
/// when the prefix ends first or the encoding cannot be followed (an undefined-length `UN`).
pub fn top_level_pixel_data(prefix: &[u8], encoding: Encoding) -> Option<usize> {
    // Ends of the containers we are inside: `Some(end)` for defined lengths, `None` for undefined.
    let mut open: Vec<Option<usize>> = Vec::new();
    let mut in_fragments = false;
    let mut at = 0usize;
    loop {
        while let Some(Some(end)) = open.last() {
            if at < *end {
                break;
            }
            open.pop();
        }
        let h = header(prefix.get(at..)?, encoding)?;
        let value_start = at + h.header_len;
        if h.tag.0 == 0xFFFE {
            at = match h.tag {
                ITEM if in_fragments => value_start.checked_add(h.length as usize)?,
                ITEM => {
                    open.push((!h.undefined_length()).then(|| value_start + h.length as usize));
                    value_start
                }
                SEQUENCE_DELIMITATION if in_fragments => {
                    in_fragments = false;
                    value_start
                }
                _ => {
                    // Item or sequence delimitation: closes an undefined-length container.
                    open.pop();
                    value_start
                }
            };
            continue;
        }
        if open.is_empty() && h.tag.0 == 0x7FE0 {
            return Some(at);
        }
        let sequence = match h.vr {
            Some(vr) => &vr == b"SQ",
            None => crate::dicom::attributes::dictionary_vr(h.tag) == VR::SQ,
        };
        if h.undefined_length() {
            if h.vr == Some(*b"UN") {
                return None;
            }
            if h.tag == PIXEL_DATA {
                in_fragments = true;
            } else {
                open.push(None);
            }
            at = value_start;
        } else if sequence {
            open.push(Some(value_start + h.length as usize));
            at = value_start;
        } else {
            at = value_start.checked_add(h.length as usize)?;
        }
    }
}

/// The tags that end an encapsulated Pixel Data value (PS3.5 A.4).
pub const ITEM_TAG: Tag = ITEM;
/// Sequence Delimitation Item.
pub const SEQUENCE_DELIMITATION_TAG: Tag = SEQUENCE_DELIMITATION;

#[cfg(test)]
mod tests {
    use super::*;

    const EXPLICIT_LE: Encoding = Encoding {
        explicit_vr: true,
        big_endian: false,
    };
    const IMPLICIT_LE: Encoding = Encoding {
        explicit_vr: false,
        big_endian: false,
    };

    fn short(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(tag.0.to_le_bytes());
        out.extend(tag.1.to_le_bytes());
        out.extend(vr);
        out.extend((value.len() as u16).to_le_bytes());
        out.extend(value);
        out
    }

    fn long(tag: (u16, u16), vr: &[u8; 2], length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(tag.0.to_le_bytes());
        out.extend(tag.1.to_le_bytes());
        out.extend(vr);
        out.extend([0, 0]);
        out.extend(length.to_le_bytes());
        out
    }

    fn item(tag: (u16, u16), length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(tag.0.to_le_bytes());
        out.extend(tag.1.to_le_bytes());
        out.extend(length.to_le_bytes());
        out
    }

    #[test]
    fn a_well_formed_data_set_with_sequences_and_fragments_passes() {
        let mut ds = short((0x0008, 0x0060), b"CS", b"CT");
        ds.extend(long((0x0008, 0x1140), b"SQ", UNDEFINED));
        ds.extend(item((0xFFFE, 0xE000), UNDEFINED));
        ds.extend(short((0x0008, 0x1150), b"UI", b"1.2\0"));
        ds.extend(item((0xFFFE, 0xE00D), 0));
        ds.extend(item((0xFFFE, 0xE0DD), 0));
        ds.extend(long((0x7FE0, 0x0010), b"OB", UNDEFINED));
        ds.extend(item((0xFFFE, 0xE000), 0));
        ds.extend(item((0xFFFE, 0xE000), 4));
        ds.extend([0xFF, 0xD8, 0xFF, 0xD9]);
        ds.extend(item((0xFFFE, 0xE0DD), 0));
        assert_eq!(check(&ds, EXPLICIT_LE), Ok(()));
    }

    #[test]
    fn a_length_beyond_the_end_is_refused_with_the_element_named() {
        let mut ds = short((0x0008, 0x0060), b"CS", b"CT");
        ds.extend(long((0x0009, 0x0010), b"OB", 0xFFFF_FFF0));
        ds.extend([0u8; 16]);
        let err = check(&ds, EXPLICIT_LE).unwrap_err();
        assert!(
            err.contains("(0009,0010)") && err.contains("4294967280"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_vr_is_read_with_a_32_bit_length_as_dicom_rs_does() {
        // "RL" is no VR: 2 reserved bytes, then a 32-bit length.
        let mut ds = long((0x0019, 0x105E), b"RL", 4);
        ds.extend([1, 2, 3, 4]);
        assert_eq!(check(&ds, EXPLICIT_LE), Ok(()));
        let ds = long((0x0019, 0x105E), b"RL", 4000);
        assert!(check(&ds, EXPLICIT_LE).is_err());
    }

    #[test]
    fn oversized_lengths_inside_sequence_items_and_fragments_are_found() {
        let mut ds = long((0x0008, 0x1140), b"SQ", UNDEFINED);
        ds.extend(item((0xFFFE, 0xE000), UNDEFINED));
        ds.extend(long((0x0009, 0x1001), b"UN", 1 << 30));
        assert!(check(&ds, EXPLICIT_LE).is_err());
        let mut ds = long((0x7FE0, 0x0010), b"OB", UNDEFINED);
        ds.extend(item((0xFFFE, 0xE000), 1 << 30));
        assert!(check(&ds, EXPLICIT_LE).is_err());
    }

    #[test]
    fn an_undefined_length_un_is_walked_as_dicom_rs_reads_it() {
        // (0008,1115) with VR UN and undefined length, holding an item whose content is implicit
        // VR (PS3.5 6.2.2). dicom-rs reads that content as explicit VR: the element's "VR" is
        // 0xFFFF, an unknown VR with a 32-bit length, which is the next item tag: 0xE000FFFE.
        let mut data = long((0x0008, 0x1115), b"UN", UNDEFINED);
        data.extend(item((0xFFFE, 0xE000), UNDEFINED));
        data.extend([0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend(item((0xFFFE, 0xE000), UNDEFINED));
        data.extend([0u8; 64]);
        let refused = check(&data, EXPLICIT_LE).unwrap_err();
        assert!(
            refused.contains("(0008,1115)") || refused.contains("declares"),
            "{refused}"
        );
    }

    #[test]
    fn implicit_vr_uses_the_dictionary_to_tell_sequences_from_values() {
        // (0008,1140) Referenced Image Sequence, defined length 0; then a value.
        let mut ds = item((0x0008, 0x1140), 0);
        ds.extend(item((0x0008, 0x0060), 2));
        ds.extend(b"CT");
        assert_eq!(check(&ds, IMPLICIT_LE), Ok(()));
        let mut ds = item((0x0008, 0x0060), 200);
        ds.extend(b"CT");
        assert!(check(&ds, IMPLICIT_LE).is_err());
    }

    #[test]
    fn the_file_meta_check_stops_where_group_0002_ends() {
        let mut file = short((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2\0");
        // Implicit VR data set after it: not walked as explicit VR.
        file.extend(item((0x0008, 0x0060), 0x7000_0000));
        assert_eq!(check_file_meta(&file), Ok(()));
        let file = long((0x0002, 0x0001), b"OB", 0x7000_0000);
        assert!(check_file_meta(&file).is_err());
    }

    #[test]
    fn a_truncated_header_is_left_to_the_parser() {
        assert_eq!(check(&[0x08, 0x00, 0x60], EXPLICIT_LE), Ok(()));
    }

    #[test]
    fn top_level_pixel_data_is_found_past_an_icon_image_in_a_sequence() {
        let mut ds = short((0x0008, 0x0060), b"CS", b"CT");
        // Icon Image Sequence (0088,0200), undefined length, whose item holds a Pixel Data.
        ds.extend(long((0x0088, 0x0200), b"SQ", UNDEFINED));
        ds.extend(item((0xFFFE, 0xE000), UNDEFINED));
        ds.extend(long((0x7FE0, 0x0010), b"OB", 4));
        ds.extend([1, 2, 3, 4]);
        ds.extend(item((0xFFFE, 0xE00D), 0));
        ds.extend(item((0xFFFE, 0xE0DD), 0));
        let at = ds.len();
        ds.extend(long((0x7FE0, 0x0010), b"OW", 1 << 30));
        assert_eq!(top_level_pixel_data(&ds, EXPLICIT_LE), Some(at));
        assert_eq!(top_level_pixel_data(&ds[..at], EXPLICIT_LE), None);
        let h = header(&ds[at..], EXPLICIT_LE).unwrap();
        assert_eq!((h.length, h.header_len), (1 << 30, 12));
        assert_eq!(
            header(&h.with_length(8, EXPLICIT_LE), EXPLICIT_LE)
                .unwrap()
                .length,
            8
        );
    }
}
