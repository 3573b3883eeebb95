//! One open file being read: its handle, its identity, and the lines not handed on yet.
//!
//! A watcher reads its open handle, not its path: a file renamed away (rotation) or deleted
//! while open is read to its end all the same. A file that shrank under the read position
//! was truncated (in place, or by `copytruncate`): the watcher gives up on it, and discovery
//! finds the file again as new content.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::fingerprint::{self, Fingerprint};
use crate::lines::{Piece, Splitter};

/// Bytes read from the disk at a time (the turn of a file is at least this much).
pub const BLOCK: usize = 64 * 1024;

enum Handle {
    Plain(File),
    Gzip(Box<flate2::read::MultiGzDecoder<File>>),
}

/// What a turn of reading found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Turn {
    pub pieces: Vec<Piece>,
    /// Bytes read from the file in this turn.
    pub read: usize,
    /// The read found the end of the file.
    pub eof: bool,
    /// The file shrank under the read position.
    pub truncated: bool,
}

pub struct Watcher {
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    pub dev_ino: (u64, u64),
    handle: Option<Handle>,
    splitter: Splitter,
    /// Raw file offset of the next read (plain files; the splitter's position for gzip).
    offset: u64,
    pub is_gzip: bool,
    /// Seen by the last discovery at a matching path.
    pub findable: bool,
    /// Since when it has not been findable.
    pub lost_since: Option<Instant>,
    /// When a read last returned data.
    pub last_data: Instant,
    pub modified: SystemTime,
    /// Nothing more will be read (done, truncated or gone); kept until its acknowledgements
    /// are in.
    pub done: bool,
    pub at_eof: bool,
}

impl Watcher {
    /// Opens `file` (already fingerprinted) to read from `position`. Gzip files are read
    /// through their decompressed stream; `position` then counts decompressed bytes.
    pub fn open(
        path: PathBuf,
        file: File,
        fingerprint: Fingerprint,
        position: u64,
        splitter: (&[u8], usize, usize),
    ) -> std::io::Result<Self> {
        let meta = file.metadata()?;
        let mut magic = [0u8; 2];
        let is_gzip = file.read_at(&mut magic, 0)? == 2 && fingerprint::is_gzip(&magic);
        let (delimiter, align, max_line) = splitter;
        let handle = if is_gzip {
            let mut stream = flate2::read::MultiGzDecoder::new(file);
            std::io::copy(&mut (&mut stream).take(position), &mut std::io::sink())?;
            Handle::Gzip(Box::new(stream))
        } else {
            Handle::Plain(file)
        };
        Ok(Self {
            path,
            fingerprint,
            dev_ino: (meta.dev(), meta.ino()),
            handle: Some(handle),
            splitter: Splitter::new(delimiter, align, max_line, position),
            offset: position,
            is_gzip,
            findable: true,
            lost_since: None,
            last_data: Instant::now(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            done: false,
            at_eof: false,
        })
    }

    /// Where the next read starts (past what the splitter holds).
    pub fn read_position(&self) -> u64 {
        self.splitter.read_position()
    }

    /// Where the lines given out so far end (what the splitter holds comes after).
    pub fn given_up_to(&self) -> u64 {
        self.splitter.given_up_to()
    }

    /// The file's size on disk now, and whether it is still linked (not deleted).
    pub fn stat(&self) -> Option<(u64, bool)> {
        match self.handle.as_ref()? {
            Handle::Plain(file) => file.metadata().ok().map(|m| (m.len(), m.nlink() > 0)),
            Handle::Gzip(stream) => stream.get_ref().metadata().ok().map(|m| (m.len(), m.nlink() > 0)),
        }
    }

    /// Reads up to `quantum` bytes of whole lines (at least one block from the disk when
    /// nothing is held). Plain files are read with positioned reads at the watcher's offset.
    pub fn read_turn(&mut self, quantum: usize) -> std::io::Result<Turn> {
        let mut turn = Turn::default();
        let mut given = 0usize;
        loop {
            while given < quantum {
                match self.splitter.next_piece() {
                    Some(piece) => {
                        given += match &piece {
                            Piece::Line { text, .. } => text.len() + 1,
                            Piece::Oversized { head, .. } => head.len(),
                        };
                        turn.pieces.push(piece);
                    }
                    None => break,
                }
            }
            if given >= quantum || turn.eof {
                return Ok(turn);
            }
            let Some(handle) = self.handle.as_mut() else {
                turn.eof = true;
                return Ok(turn);
            };
            let read = match handle {
                Handle::Plain(file) => match file.metadata() {
                    Ok(meta) if meta.len() < self.offset => {
                        turn.truncated = true;
                        return Ok(turn);
                    }
                    Ok(meta) => {
                        let want = (meta.len() - self.offset).min(BLOCK as u64) as usize;
                        let offset = self.offset;
                        if want == 0 { Ok(0) } else { self.splitter.fill(want, |buf| file.read_at(buf, offset)) }
                    }
                    Err(err) => Err(err),
                },
                Handle::Gzip(stream) => self.splitter.fill(BLOCK, |buf| stream.read(buf)),
            };
            let n = match read {
                Ok(n) => n,
                // The lines already split are whole: they go out; the error comes back on the
                // next turn if it lasts.
                Err(_) if !turn.pieces.is_empty() => return Ok(turn),
                Err(err) => return Err(err),
            };
            self.offset += n as u64;
            turn.read += n;
            if n == 0 {
                turn.eof = true;
                self.at_eof = true;
                self.splitter.release_if_empty();
            } else {
                self.at_eof = false;
                self.last_data = Instant::now();
            }
        }
    }

    /// What is held as a last line: the file is finished for good.
    pub fn finish(&mut self) -> Option<Piece> {
        self.handle = None;
        self.done = true;
        self.splitter.finish()
    }

    /// Stops reading without giving out what is held (truncated files: the held bytes are
    /// gone from the file).
    pub fn close(&mut self) {
        self.handle = None;
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn open(path: &std::path::Path, position: u64) -> Watcher {
        let file = File::open(path).unwrap_or_else(|e| panic!("{e}"));
        Watcher::open(path.to_path_buf(), file, Fingerprint::Checksum(0), position, (b"\n", 1, 1000))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_watcher_reads_whole_lines_and_resumes_where_told() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("a.log");
        std::fs::write(&path, "one\ntwo\nthr").unwrap_or_else(|e| panic!("{e}"));
        let mut w = open(&path, 4);
        let turn = w.read_turn(1 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(turn.pieces.len(), 1);
        assert!(turn.eof);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"ee\n").unwrap_or_else(|e| panic!("{e}"));
        let turn = w.read_turn(1 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(turn.pieces.iter().map(Piece::end).collect::<Vec<_>>(), vec![14]);
    }

    #[test]
    fn truncation_is_noticed() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("a.log");
        std::fs::write(&path, "one\ntwo\n").unwrap_or_else(|e| panic!("{e}"));
        let mut w = open(&path, 0);
        w.read_turn(1 << 20).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, "x\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(w.read_turn(1 << 20).unwrap_or_else(|e| panic!("{e}")).truncated);
    }

    #[test]
    fn lines_split_before_a_truncation_is_noticed_come_out_with_it() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("a.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap_or_else(|e| panic!("{e}"));
        let mut w = open(&path, 0);
        // A small turn: one line out, two held.
        assert_eq!(w.read_turn(4).unwrap_or_else(|e| panic!("{e}")).pieces.len(), 1);
        std::fs::write(&path, "").unwrap_or_else(|e| panic!("{e}"));
        let turn = w.read_turn(1 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert!(turn.truncated);
        assert_eq!(turn.pieces.iter().map(Piece::end).collect::<Vec<_>>(), vec![8, 14], "not lost");
    }

    #[test]
    fn gzip_files_are_read_decompressed_from_a_position() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("a.log.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"one\ntwo\nthree\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, gz.finish().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        let mut w = open(&path, 4);
        assert!(w.is_gzip);
        let turn = w.read_turn(1 << 20).unwrap_or_else(|e| panic!("{e}"));
        let ends: Vec<u64> = turn.pieces.iter().map(Piece::end).collect();
        assert_eq!(ends, vec![8, 14]);
    }
}
