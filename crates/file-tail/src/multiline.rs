//! Multiline messages: consecutive lines joined into one event (Vector's `multiline`).
//!
//! A line matching `start_pattern` opens a message when none is open; lines that match
//! nothing open are messages of their own. While a message is open, `condition_pattern` and
//! `mode` decide:
//! - `continue_through`: a matching line joins; the first line that does not match closes the
//!   message and is handled anew;
//! - `continue_past`: a matching line joins; the first line that does not match joins too and
//!   closes it;
//! - `halt_before`: a line that does not match joins; a matching one closes the message and
//!   is handled anew;
//! - `halt_with`: a line that does not match joins; a matching one joins and closes it.
//!
//! An open message is given out `timeout_ms` after its last line if nothing closes it. Lines
//! are joined with `\n`. A message spans from its first line's start to its last line's end,
//! which is what checkpoints use: an open message holds its file's position at its start.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;

/// `multiline.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ContinueThrough,
    ContinuePast,
    HaltBefore,
    HaltWith,
}

/// Compiled `multiline` settings.
#[derive(Debug, Clone)]
pub struct Rules {
    pub start: Regex,
    pub condition: Regex,
    pub mode: Mode,
    pub timeout: Duration,
}

/// One message: its text and the file range it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: u64,
    pub end: u64,
    pub text: Bytes,
}

#[derive(Debug)]
struct Open {
    start: u64,
    end: u64,
    text: BytesMut,
    last_line: Instant,
}

/// The message being assembled for one file.
#[derive(Debug, Default)]
pub struct Aggregator {
    open: Option<Open>,
}

impl Aggregator {
    /// Where this file's position must stay while a message is open (its start).
    pub fn held_from(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.start)
    }

    /// Adds one line; pushes every message it completes onto `out`.
    pub fn push(&mut self, rules: &Rules, line: Message, now: Instant, out: &mut Vec<Message>) {
        let Some(open) = self.open.as_mut() else {
            self.start_or_emit(rules, line, now, out);
            return;
        };
        let matched = rules.condition.is_match(&line.text);
        let (join, close, again) = match rules.mode {
            Mode::ContinueThrough => (matched, !matched, !matched),
            Mode::ContinuePast => (true, !matched, false),
            Mode::HaltBefore => (!matched, matched, matched),
            Mode::HaltWith => (true, matched, false),
        };
        if join {
            open.text.extend_from_slice(b"\n");
            open.text.extend_from_slice(&line.text);
            open.end = line.end;
            open.last_line = now;
        }
        if close && let Some(done) = self.take() {
            out.push(done);
        }
        if again {
            self.start_or_emit(rules, line, now, out);
        }
    }

    fn start_or_emit(&mut self, rules: &Rules, line: Message, now: Instant, out: &mut Vec<Message>) {
        if rules.start.is_match(&line.text) {
            self.open =
                Some(Open { start: line.start, end: line.end, text: BytesMut::from(&line.text[..]), last_line: now });
        } else {
            out.push(line);
        }
    }

    /// The open message, if its last line is older than the timeout.
    pub fn expire(&mut self, rules: &Rules, now: Instant) -> Option<Message> {
        if self.open.as_ref().is_some_and(|o| now.duration_since(o.last_line) >= rules.timeout) {
            return self.take();
        }
        None
    }

    /// The open message, whatever its age (the file is finished).
    pub fn take(&mut self) -> Option<Message> {
        self.open.take().map(|o| Message { start: o.start, end: o.end, text: o.text.freeze() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(start: &str, condition: &str, mode: Mode) -> Rules {
        Rules {
            start: Regex::new(start).unwrap_or_else(|e| panic!("{e}")),
            condition: Regex::new(condition).unwrap_or_else(|e| panic!("{e}")),
            mode,
            timeout: Duration::from_millis(1000),
        }
    }

    fn run(rules: &Rules, lines: &[&str]) -> (Vec<String>, Option<u64>) {
        let mut agg = Aggregator::default();
        let mut out = Vec::new();
        let now = Instant::now();
        let mut at = 0u64;
        for l in lines {
            let end = at + l.len() as u64 + 1;
            agg.push(rules, Message { start: at, end, text: Bytes::copy_from_slice(l.as_bytes()) }, now, &mut out);
            at = end;
        }
        let held = agg.held_from();
        (out.iter().map(|m| String::from_utf8_lossy(&m.text).into_owned()).collect(), held)
    }

    #[test]
    fn continue_through_joins_a_stack_trace() {
        let r = rules(r"^[^\s]", r"^[\s]+", Mode::ContinueThrough);
        let (out, held) = run(&r, &["Exception in main", "  at a()", "  at b()", "next", "  at c()", "last"]);
        assert_eq!(out, vec!["Exception in main\n  at a()\n  at b()", "next\n  at c()"]);
        assert_eq!(held, Some(50), "`last` is open: the position stays at its start");
    }

    #[test]
    fn continue_past_joins_the_line_after_the_last_match() {
        let r = rules(r"\\$", r"\\$", Mode::ContinuePast);
        let (out, _) = run(&r, &["a \\", "b \\", "c", "d"]);
        assert_eq!(out, vec!["a \\\nb \\\nc", "d"]);
    }

    #[test]
    fn halt_before_and_halt_with() {
        let r = rules(r"^BEGIN", r"^BEGIN", Mode::HaltBefore);
        let (out, held) = run(&r, &["BEGIN 1", "x", "BEGIN 2", "y"]);
        assert_eq!(out, vec!["BEGIN 1\nx"]);
        assert!(held.is_some());
        let r = rules(r"^START", r"END$", Mode::HaltWith);
        let (out, held) = run(&r, &["START", "x", "y END", "alone"]);
        assert_eq!(out, vec!["START\nx\ny END", "alone"]);
        assert_eq!(held, None);
    }

    #[test]
    fn an_open_message_expires_after_its_timeout() {
        let r = rules(r"^[^\s]", r"^[\s]+", Mode::ContinueThrough);
        let mut agg = Aggregator::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        agg.push(&r, Message { start: 0, end: 4, text: Bytes::from_static(b"abc") }, t0, &mut out);
        assert!(agg.expire(&r, t0 + Duration::from_millis(999)).is_none());
        let m = agg.expire(&r, t0 + Duration::from_millis(1000));
        assert_eq!(m.map(|m| (m.start, m.end)), Some((0, 4)));
    }
}
