//! Splitting a file's bytes into lines, with the offsets checkpoints need.
//!
//! Every line carries where it starts and where the next one starts (just past its
//! delimiter), in raw file bytes. A last line without its delimiter is held until the
//! delimiter arrives (Vector's behaviour), or until the file is finished for good (deleted,
//! or a complete gzip file), when it is given out as it is. A line longer than
//! `max_line_bytes` is not dropped silently: its first `max_line_bytes` bytes come out as
//! [`Piece::Oversized`] with its whole length, for the dead-letter queue.
//!
//! Delimiters are matched only at offsets that are a multiple of `align` (2 for UTF-16, whose
//! `\n` is two bytes that could otherwise match across two characters).

use bytes::{Bytes, BytesMut};

/// What the splitter gives out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Line {
        /// Offset of the line's first byte.
        start: u64,
        /// Offset just past its delimiter: where reading resumes after it.
        end: u64,
        /// The line without its delimiter.
        text: Bytes,
    },
    Oversized {
        start: u64,
        end: u64,
        /// The first `max_line_bytes` bytes.
        head: Bytes,
        /// The whole line's length (without its delimiter).
        len: u64,
    },
}

impl Piece {
    pub fn end(&self) -> u64 {
        match self {
            Self::Line { end, .. } | Self::Oversized { end, .. } => *end,
        }
    }
}

/// An oversized line being skipped up to its delimiter.
#[derive(Debug)]
struct Skipping {
    start: u64,
    head: Bytes,
    len: u64,
}

/// Splits a stream of bytes into [`Piece`]s.
#[derive(Debug)]
pub struct Splitter {
    delimiter: Vec<u8>,
    align: u64,
    max_line_bytes: usize,
    buf: BytesMut,
    /// File offset of `buf[0]`.
    start: u64,
    /// `buf[..scanned]` holds no delimiter that starts there.
    scanned: usize,
    skipping: Option<Skipping>,
}

impl Splitter {
    pub fn new(delimiter: &[u8], align: usize, max_line_bytes: usize, position: u64) -> Self {
        Self {
            delimiter: if delimiter.is_empty() { b"\n".to_vec() } else { delimiter.to_vec() },
            align: align.max(1) as u64,
            max_line_bytes: max_line_bytes.max(1),
            buf: BytesMut::new(),
            start: position,
            scanned: 0,
            skipping: None,
        }
    }

    /// Where the next byte given to [`Splitter::fill`] sits in the file.
    pub fn read_position(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Where the bytes held start: everything before was given out.
    pub fn given_up_to(&self) -> u64 {
        self.start
    }

    /// Bytes held that are not a whole line yet.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Reads up to `max` bytes with `read` (given a zeroed slice to fill) straight into the
    /// buffer; returns what `read` returned.
    pub fn fill(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let len = self.buf.len();
        self.buf.resize(len + max, 0);
        let result = read(&mut self.buf[len..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n.min(max));
        result
    }

    /// Lets go of the read buffer when nothing is held (an idle file keeps no block).
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Appends bytes read elsewhere (a decompressed stream).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole line (or oversized line), if the buffer holds one.
    pub fn next_piece(&mut self) -> Option<Piece> {
        loop {
            let found = self.find();
            if let Some(skipping) = &mut self.skipping {
                match found {
                    Some(at) => {
                        skipping.len += at as u64;
                        let Skipping { start, head, len } = self.skipping.take()?;
                        let end = self.consume(at + self.delimiter.len());
                        return Some(Piece::Oversized { start, end, head, len });
                    }
                    None => {
                        // Keep a partial delimiter that may complete with the next bytes.
                        let keep = (self.delimiter.len() - 1).min(self.buf.len());
                        let drop = self.buf.len() - keep;
                        skipping.len += drop as u64;
                        self.consume(drop);
                        return None;
                    }
                }
            }
            match found {
                Some(at) if at <= self.max_line_bytes => {
                    let start = self.start;
                    let line = self.buf.split_to(at + self.delimiter.len()).freeze();
                    self.start += line.len() as u64;
                    self.scanned = 0;
                    return Some(Piece::Line { start, end: self.start, text: line.slice(..at) });
                }
                Some(_) => {
                    let head = self.buf.split_to(self.max_line_bytes).freeze();
                    self.skipping = Some(Skipping { start: self.start, head, len: self.max_line_bytes as u64 });
                    self.start += self.max_line_bytes as u64;
                    self.scanned = 0;
                }
                None if self.buf.len() > self.max_line_bytes + self.delimiter.len() => {
                    let head = self.buf.split_to(self.max_line_bytes).freeze();
                    self.skipping = Some(Skipping { start: self.start, head, len: self.max_line_bytes as u64 });
                    self.start += self.max_line_bytes as u64;
                    self.scanned = 0;
                }
                None => return None,
            }
        }
    }

    /// The held bytes as a last line, when nothing more can come (the file is gone, or a
    /// complete gzip file ended).
    pub fn finish(&mut self) -> Option<Piece> {
        if let Some(Skipping { start, head, len }) = self.skipping.take() {
            let rest = self.buf.len();
            let end = self.consume(rest);
            return Some(Piece::Oversized { start, end, head, len: len + rest as u64 });
        }
        if self.buf.is_empty() {
            return None;
        }
        let start = self.start;
        let text = self.buf.split().freeze();
        self.start += text.len() as u64;
        self.scanned = 0;
        Some(Piece::Line { start, end: self.start, text })
    }

    fn consume(&mut self, n: usize) -> u64 {
        let _ = self.buf.split_to(n);
        self.start += n as u64;
        self.scanned = 0;
        self.start
    }

    /// The offset in `buf` of the next aligned delimiter.
    fn find(&mut self) -> Option<usize> {
        let d = &self.delimiter;
        let mut from = self.scanned;
        loop {
            let hay = self.buf.get(from..)?;
            let at = if d.len() == 1 { memchr::memchr(d[0], hay) } else { memchr::memmem::find(hay, d) };
            let Some(at) = at.map(|a| a + from) else {
                self.scanned = self.buf.len().saturating_sub(d.len() - 1);
                return None;
            };
            if (self.start + at as u64).is_multiple_of(self.align) {
                return Some(at);
            }
            from = at + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &mut Splitter) -> Vec<Piece> {
        std::iter::from_fn(|| s.next_piece()).collect()
    }

    fn line(start: u64, end: u64, text: &str) -> Piece {
        Piece::Line { start, end, text: Bytes::copy_from_slice(text.as_bytes()) }
    }

    #[test]
    fn lines_carry_their_offsets_and_a_partial_last_line_is_held() {
        let mut s = Splitter::new(b"\n", 1, 100, 0);
        s.push(b"one\ntwo\nthr");
        assert_eq!(pieces(&mut s), vec![line(0, 4, "one"), line(4, 8, "two")]);
        assert_eq!(s.held(), 3);
        s.push(b"ee\n");
        assert_eq!(pieces(&mut s), vec![line(8, 14, "three")]);
        s.push(b"tail");
        assert_eq!(pieces(&mut s), vec![]);
        assert_eq!(s.finish(), Some(line(14, 18, "tail")));
    }

    #[test]
    fn crlf_and_multi_byte_delimiters_split_across_reads() {
        let mut s = Splitter::new(b"\r\n", 1, 100, 10);
        s.push(b"a\r");
        assert_eq!(pieces(&mut s), vec![]);
        s.push(b"\nb\r\n");
        assert_eq!(pieces(&mut s), vec![line(10, 13, "a"), line(13, 16, "b")]);
    }

    #[test]
    fn an_oversized_line_comes_out_with_its_head_and_length() {
        let mut s = Splitter::new(b"\n", 1, 4, 0);
        s.push(b"ok\n0123456789");
        assert_eq!(pieces(&mut s), vec![line(0, 3, "ok")]);
        s.push(b"abc\nnext\n");
        assert_eq!(
            pieces(&mut s),
            vec![
                Piece::Oversized { start: 3, end: 17, head: Bytes::from_static(b"0123"), len: 13 },
                line(17, 22, "next")
            ]
        );
    }

    proptest::proptest! {
        #![proptest_config(sluice_fuzz::config(256))]

        /// However the bytes arrive (any split into reads), the same pieces come out, with
        /// the same offsets, as from one read; and the pieces tile the input exactly.
        #[test]
        fn pieces_do_not_depend_on_how_the_bytes_arrive(
            text in proptest::collection::vec(proptest::prop_oneof![
                4 => proptest::char::range('a', 'e'),
                1 => proptest::strategy::Just('\n'),
                1 => proptest::strategy::Just('\r'),
            ], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..20),
            crlf in proptest::bool::ANY,
            max in 1usize..40,
        ) {
            let bytes: Vec<u8> = text.iter().map(|c| *c as u8).collect();
            let delimiter: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut whole = Splitter::new(delimiter, 1, max, 0);
            whole.push(&bytes);
            let mut expected = pieces(&mut whole);
            expected.extend(whole.finish());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut split = Splitter::new(delimiter, 1, max, 0);
            let mut got = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                split.push(&bytes[at..cut]);
                got.extend(pieces(&mut split));
                at = cut;
            }
            got.extend(split.finish());
            proptest::prop_assert_eq!(&got, &expected);
            let mut offset = 0;
            for piece in &got {
                let start = match piece {
                    Piece::Line { start, .. } | Piece::Oversized { start, .. } => *start,
                };
                proptest::prop_assert_eq!(start, offset, "pieces tile the input");
                offset = piece.end();
            }
            proptest::prop_assert_eq!(offset, bytes.len() as u64);
        }
    }

    #[test]
    fn utf16_delimiters_match_only_on_character_boundaries() {
        // U+0A41 U+4100 then "\n" in UTF-16LE: 41 0a 00 41 0a 00. Bytes "0a 00" first appear
        // at offset 1, across two characters; the real delimiter is at offset 4.
        let mut s = Splitter::new(&[0x0a, 0x00], 2, 100, 0);
        s.push(&[0x41, 0x0a, 0x00, 0x41, 0x0a, 0x00]);
        let got = pieces(&mut s);
        assert_eq!(got, vec![Piece::Line { start: 0, end: 6, text: Bytes::from_static(&[0x41, 0x0a, 0x00, 0x41]) }]);
    }
}
