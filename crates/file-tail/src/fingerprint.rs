//! File identity. A file is known by a fingerprint of its content or of its inode, never by
//! its path, so a renamed file keeps its position and a new file at an old path does not
//! inherit one.
//!
//! `checksum` (the default, as Vector's): CRC-64/ECMA-182 over the bytes up to and including
//! the `lines`-th `\n`, after skipping `ignored_header_bytes`, reading at most `max_bytes`
//! (if the window fills first, the whole window is hashed). A gzip file (magic `1F 8B`) is
//! hashed over its decompressed stream. A file whose first `lines` lines are not complete yet
//! has no fingerprint: it is not read until it has. The value is Vector's
//! `first_lines_checksum`, so Vector's checkpoints can be adopted as they are.
//!
//! `device_and_inode`: `[st_dev, st_ino]`. Inode reuse can make a new file inherit an old
//! position; prefer `checksum`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde::{Deserialize, Serialize};

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);

/// A file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fingerprint {
    /// Vector's `first_lines_checksum`.
    #[serde(rename = "first_lines_checksum", alias = "first_line_checksum")]
    Checksum(u64),
    /// Vector's `dev_inode`.
    #[serde(rename = "dev_inode")]
    DevInode(u64, u64),
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Checksum(sum) => write!(f, "checksum:{sum:016x}"),
            Self::DevInode(dev, ino) => write!(f, "dev_inode:{dev}:{ino}"),
        }
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;
    /// Parses what [`Fingerprint`]'s `Display` writes.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a fingerprint (checksum:<16 hex digits> or dev_inode:<dev>:<inode>)");
        if let Some(hex) = text.strip_prefix("checksum:") {
            return u64::from_str_radix(hex, 16).map(Self::Checksum).map_err(|_| bad());
        }
        let rest = text.strip_prefix("dev_inode:").ok_or_else(bad)?;
        let (dev, ino) = rest.split_once(':').ok_or_else(bad)?;
        Ok(Self::DevInode(dev.parse().map_err(|_| bad())?, ino.parse().map_err(|_| bad())?))
    }
}

/// How files are fingerprinted (`fingerprint.*` of the file source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    Checksum { lines: usize, ignored_header_bytes: u64 },
    DevInode,
}

/// The first two bytes of a gzip stream.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// The fingerprint of the open `file`; `Ok(None)` while it is too small to have one. Reads
/// with positioned reads, so the handle's own offset is left alone.
pub fn fingerprint(file: &File, strategy: Strategy, max_bytes: usize) -> std::io::Result<Option<Fingerprint>> {
    match strategy {
        Strategy::DevInode => {
            let meta = file.metadata()?;
            Ok(Some(Fingerprint::DevInode(meta.dev(), meta.ino())))
        }
        Strategy::Checksum { lines, ignored_header_bytes } => {
            let mut magic = [0u8; 2];
            let n = file.read_at(&mut magic, 0)?;
            if n < 2 {
                return Ok(None);
            }
            let window = max_bytes.max(1);
            if is_gzip(&magic) {
                let mut stream = flate2::read::MultiGzDecoder::new(PositionedReader { file, at: 0 });
                std::io::copy(&mut (&mut stream).take(ignored_header_bytes), &mut std::io::sink())?;
                checksum_of(&mut stream, lines, window)
            } else {
                checksum_of(&mut PositionedReader { file, at: ignored_header_bytes }, lines, window)
            }
        }
    }
}

/// Reads `file` from `at` with `pread`.
struct PositionedReader<'a> {
    file: &'a File,
    at: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

fn checksum_of(stream: &mut impl Read, lines: usize, window: usize) -> std::io::Result<Option<Fingerprint>> {
    let mut data = Vec::with_capacity(window.min(64 * 1024));
    let mut block = [0u8; 4096];
    let mut newlines = 0;
    while data.len() < window {
        let want = block.len().min(window - data.len());
        let n = match stream.read(&mut block[..want]) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            // A gzip file still being written ends mid-stream: not complete yet.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(err),
        };
        for (i, &b) in block[..n].iter().enumerate() {
            if b == b'\n' {
                newlines += 1;
                if newlines >= lines.max(1) {
                    data.extend_from_slice(&block[..=i]);
                    return Ok(Some(Fingerprint::Checksum(CRC64.checksum(&data))));
                }
            }
        }
        data.extend_from_slice(&block[..n]);
    }
    Ok(Some(Fingerprint::Checksum(CRC64.checksum(&data))))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn checksum(content: &[u8], lines: usize, header: u64) -> Option<Fingerprint> {
        let mut file = tempfile::tempfile().unwrap_or_else(|e| panic!("{e}"));
        file.write_all(content).unwrap_or_else(|e| panic!("{e}"));
        fingerprint(&file, Strategy::Checksum { lines, ignored_header_bytes: header }, 102_400)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn checksums_match_vectors_test_vectors() {
        assert_eq!(CRC64.checksum(b"123456789"), 0x6C40_DF5F_0B49_7347);
        assert_eq!(checksum(b"hello world\n", 1, 0), Some(Fingerprint::Checksum(11_908_805_321_237_624_401)));
        let mut long = vec![b'x'; 256];
        long.push(b'\n');
        assert_eq!(checksum(&long, 1, 0), Some(Fingerprint::Checksum(15_160_469_232_879_714_631)));
        assert_eq!(
            checksum(b"hello world\nmore\n", 1, 0),
            checksum(b"hello world\n", 1, 0),
            "only the first line counts"
        );
    }

    #[test]
    fn a_file_without_its_first_whole_lines_has_no_fingerprint_yet() {
        assert_eq!(checksum(b"", 1, 0), None);
        assert_eq!(checksum(b"no newline yet", 1, 0), None);
        assert_eq!(checksum(b"one\n", 2, 0), None);
        assert!(checksum(b"one\ntwo\n", 2, 0).is_some());
        assert_ne!(checksum(b"HEADER--one\n", 1, 8), checksum(b"HEADER--two\n", 1, 8));
        assert_eq!(checksum(b"HEADER--one\n", 1, 8), checksum(b"xxxxxxxxone\n", 1, 8), "the header is skipped");
    }

    #[test]
    fn gzip_files_are_fingerprinted_over_their_content() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello world\nrest\n").unwrap_or_else(|e| panic!("{e}"));
        let data = gz.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checksum(&data, 1, 0), checksum(b"hello world\n", 1, 0));
    }

    #[test]
    fn fingerprints_print_and_parse() {
        for fp in [Fingerprint::Checksum(11_908_805_321_237_624_401), Fingerprint::DevInode(2049, 1_312_356)] {
            assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
        }
    }
}
