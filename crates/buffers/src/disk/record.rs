//! The record format of the disk buffer (version 1). Every record is one chunk of events:
//!
//! ```text
//! offset  size  field
//!      0     4  payload length N (u32 LE)
//!      4     4  CRC-32 (IEEE) of bytes 8 .. 20+N (u32 LE)
//!      8     1  format version (1)
//!      9     1  flags (0)
//!     10     2  events in the payload (u16 LE)
//!     12     8  record id (u64 LE), consecutive within a buffer
//!     20     N  payload (sluice_core::codec chunk encoding)
//! ```

/// Header bytes before the payload.
pub const HEADER: usize = 20;

/// Why a valid record whose id does not exceed the one before it is damage: ids only grow
/// along a log, so it is a stale copy (a duplicated block), not a record to deliver again.
pub const ID_OUT_OF_ORDER: &str = "a record whose id does not follow the one before it";
/// The format this code writes.
pub const VERSION: u8 = 1;
/// Largest payload accepted when reading (a length beyond it is corruption).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Appends one record to `out`.
pub fn encode(out: &mut Vec<u8>, id: u64, events: u16, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub id: u64,
    pub events: u16,
    pub payload: &'a [u8],
}

/// What is at the start of `data`.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole, valid record of `len` bytes.
    Record(Record<'a>, usize),
    /// The bytes end inside a record (still being written, or a torn tail).
    Incomplete,
    /// Not a valid record here.
    Invalid(&'static str),
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&data[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Parses the record at the start of `data`.
pub fn parse(data: &[u8]) -> Parsed<'_> {
    if data.len() < HEADER {
        return Parsed::Incomplete;
    }
    let len = u32_at(data, 0) as usize;
    if len > MAX_PAYLOAD {
        return Parsed::Invalid("length out of range");
    }
    if data[8] != VERSION {
        return Parsed::Invalid("unknown format version");
    }
    if data.len() < HEADER + len {
        return Parsed::Incomplete;
    }
    if crc32fast::hash(&data[8..HEADER + len]) != u32_at(data, 4) {
        return Parsed::Invalid("checksum mismatch");
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&data[12..20]);
    let events = u16::from_le_bytes([data[10], data[11]]);
    Parsed::Record(Record { id: u64::from_le_bytes(id), events, payload: &data[HEADER..HEADER + len] }, HEADER + len)
}

/// What a record's header says, unchecked (its checksum covers the payload too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u64,
    pub events: u16,
    /// The whole record's length.
    pub len: usize,
}

/// Reads the header at the start of `data`: `None` when it is short, of another version, or
/// claims an impossible length.
pub fn parse_header(data: &[u8]) -> Option<Header> {
    if data.len() < HEADER || data[8] != VERSION {
        return None;
    }
    let len = u32_at(data, 0) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&data[12..20]);
    Some(Header { id: u64::from_le_bytes(id), events: u16::from_le_bytes([data[10], data[11]]), len: HEADER + len })
}

/// The whole length a record starting with `data` claims, once its length field is there.
pub fn declared_len(data: &[u8]) -> Option<usize> {
    (data.len() >= 4).then(|| HEADER + u32_at(data, 0) as usize)
}

/// After invalid bytes at the start of `data`, the offset of the next valid record whose id is
/// at least `min_id`, if any.
pub fn resync(data: &[u8], min_id: u64) -> Option<usize> {
    (1..data.len()).find(|&at| matches!(parse(&data[at..]), Parsed::Record(r, _) if r.id >= min_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 3, b"abc");
        encode(&mut buf, 8, 1, b"defg");
        let Parsed::Record(first, len) = parse(&buf) else { panic!("first") };
        assert_eq!((first.id, first.events, first.payload), (7, 3, &b"abc"[..]));
        let Parsed::Record(second, _) = parse(&buf[len..]) else { panic!("second") };
        assert_eq!(second.id, 8);
        assert_eq!(parse(&buf[..len - 1]), Parsed::Incomplete);
        let mut bad = buf.clone();
        bad[HEADER + 1] ^= 1;
        assert_eq!(parse(&bad), Parsed::Invalid("checksum mismatch"));
        assert_eq!(resync(&bad, 8), Some(len));
    }
}
