//! `file`: lines of files, tailed. Configured like Vector's `file` source.
//!
//! The reading itself is the tail service of `sluice-file-tail` (one per `data_dir`, shared
//! with other file sources and `kubernetes_logs`): files are known by fingerprint, positions
//! live in the one checkpoint store of the `data_dir`, and a position moves only past lines
//! that were acknowledged (delivered, stored durably, or discarded by a rule). Renaming,
//! splitting or merging sources resumes where reading stopped. Vector's checkpoints for this
//! source id (`<data_dir>/<id>/checkpoints.json`) are adopted at start, once.
//!
//! Events: `message`, `file` (`file_key`), `host` (`host_key`), `source_type = "file"`,
//! `timestamp` (read time), and `offset` (`offset_key`, when set). A line longer than
//! `max_line_bytes` goes to the source's DLQ (reason `oversized_line`) with its first bytes,
//! where it was and how long it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use sluice_core::Chunk;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask};
use sluice_core::event::{EventMetadata, LegacyTemplate};
use sluice_file_tail::discovery::Globs;
use sluice_file_tail::fingerprint::Strategy;
use sluice_file_tail::lines::Piece;
use sluice_file_tail::multiline::{Aggregator, Message, Mode, Rules};
use sluice_file_tail::tail::{self, Acks, FileRef, ReadOptions, Reader, Registration};
use vrl::value::Value;

use super::tailing::{BuildEvents, Lines, Outbox, forward};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Required: globs of the files to read (`**` allowed).
    pub include: Vec<String>,
    /// Globs left out of `include`. Default none.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where files without a checkpoint, present at startup, start: `beginning` (default) or
    /// `end`. Files that appear later always start at their beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Ignore stored positions (they are still written). Default false.
    pub ignore_checkpoints: Option<bool>,
    /// Files whose last change is older than this many seconds start at their end.
    #[serde(alias = "ignore_older")]
    pub ignore_older_secs: Option<u64>,
    #[serde(default, alias = "fingerprinting")]
    pub fingerprint: FingerprintConfig,
    /// Milliseconds between looks for new files (and between checkpoint writes). Default 1000.
    #[serde(default = "default_cooldown_ms", alias = "glob_minimum_cooldown")]
    pub glob_minimum_cooldown_ms: u64,
    /// Longest line in bytes; longer lines go to the DLQ. Default 102400.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Bytes one file gives before the next file's turn (at least 64 KiB). Default 2048.
    #[serde(default = "default_max_read_bytes")]
    pub max_read_bytes: usize,
    /// Read the oldest file to its end before newer ones. Default false.
    #[serde(default)]
    pub oldest_first: bool,
    /// Delete a file this many seconds after it was read to its end and every line of it was
    /// acknowledged. Default never.
    #[serde(alias = "remove_after")]
    pub remove_after_secs: Option<u64>,
    /// Seconds a file renamed out of every glob is still read. Default effectively forever.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait_secs: u64,
    /// Default `"\n"`.
    #[serde(default = "default_delimiter")]
    pub line_delimiter: String,
    /// Field for the file's path. Default `file`; `""` disables it.
    pub file_key: Option<String>,
    /// Field for the host name. Default `host`; `""` disables it.
    pub host_key: Option<String>,
    /// Field for the line's byte offset. Default none.
    pub offset_key: Option<String>,
    /// Where checkpoints live. Default the global `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Accepted for compatibility (missing files are never an error here).
    #[serde(default)]
    pub ignore_not_found: bool,
    pub multiline: Option<MultilineConfig>,
    /// Deprecated (Vector): `true` is `read_from = "beginning"`, `false` is `"end"`.
    pub start_at_beginning: Option<bool>,
    /// Deprecated (Vector): a line matching this regex starts a message; others join the one
    /// before (`multiline` with `mode = "halt_before"`). With `multi_line_timeout` (ms,
    /// default 1000).
    pub message_start_indicator: Option<String>,
    pub multi_line_timeout: Option<u64>,
    #[serde(default)]
    pub encoding: Option<FileEncoding>,
    /// Accepted for compatibility (no per-file metrics yet).
    pub internal_metrics: Option<FileInternalMetrics>,
    /// sluice: adopt Vector's checkpoints for this source id
    /// (`<data_dir>/<id>/checkpoints.json`) at start, once. Default true.
    #[serde(default = "crate::default_true")]
    pub import_vector_checkpoints: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FingerprintStrategy {
    #[default]
    Checksum,
    DeviceAndInode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// `checksum` (default) or `device_and_inode`.
    #[serde(default)]
    pub strategy: FingerprintStrategy,
    /// Lines hashed for `checksum`. Default 1.
    #[serde(default = "default_lines")]
    pub lines: usize,
    /// Bytes skipped before hashing. Default 0.
    #[serde(default)]
    pub ignored_header_bytes: u64,
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self { strategy: FingerprintStrategy::Checksum, lines: 1, ignored_header_bytes: 0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    pub start_pattern: String,
    pub condition_pattern: String,
    pub mode: MultilineMode,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilineMode {
    ContinueThrough,
    ContinuePast,
    HaltBefore,
    HaltWith,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEncoding {
    /// e.g. `utf-16le`, `utf-16be`, `latin1`.
    pub charset: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInternalMetrics {
    #[serde(default)]
    pub include_file_tag: bool,
}

fn default_cooldown_ms() -> u64 {
    1000
}
fn default_max_line_bytes() -> usize {
    102_400
}
pub(crate) fn default_max_read_bytes() -> usize {
    2048
}
pub(crate) fn default_rotate_wait() -> u64 {
    u64::MAX / 2
}
fn default_delimiter() -> String {
    "\n".to_owned()
}
pub(crate) fn default_lines() -> usize {
    1
}

impl MultilineConfig {
    pub fn rules(&self) -> Result<Rules, String> {
        let compile = |field: &str, p: &str| {
            regex::bytes::Regex::new(p).map_err(|e| format!("multiline.{field}: not a valid regular expression: {e}"))
        };
        Ok(Rules {
            start: compile("start_pattern", &self.start_pattern)?,
            condition: compile("condition_pattern", &self.condition_pattern)?,
            mode: match self.mode {
                MultilineMode::ContinueThrough => Mode::ContinueThrough,
                MultilineMode::ContinuePast => Mode::ContinuePast,
                MultilineMode::HaltBefore => Mode::HaltBefore,
                MultilineMode::HaltWith => Mode::HaltWith,
            },
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

/// The charset's encoding, the delimiter in it, and the delimiter alignment.
pub fn charset(
    label: Option<&str>,
    delimiter: &str,
) -> Result<(Option<&'static encoding_rs::Encoding>, Vec<u8>, usize), String> {
    let Some(label) = label else { return Ok((None, delimiter.as_bytes().to_vec(), 1)) };
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
        format!("encoding.charset: unknown charset `{label}` (e.g. utf-8, utf-16le, utf-16be, latin1)")
    })?;
    if encoding == encoding_rs::UTF_8 {
        return Ok((None, delimiter.as_bytes().to_vec(), 1));
    }
    let utf16 = |be: bool| -> Vec<u8> {
        delimiter.encode_utf16().flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() }).collect()
    };
    Ok(if encoding == encoding_rs::UTF_16LE {
        (Some(encoding), utf16(false), 2)
    } else if encoding == encoding_rs::UTF_16BE {
        (Some(encoding), utf16(true), 2)
    } else {
        let (bytes, _, _) = encoding.encode(delimiter);
        (Some(encoding), bytes.into_owned(), 1)
    })
}

/// A field key as given (`.file` and `file` are the same); `None` when disabled.
pub fn field_key(key: Option<&str>, default: &str) -> Option<String> {
    match key {
        Some("") => None,
        Some(key) => Some(key.trim_start_matches('.').to_owned()),
        None => Some(default.to_owned()),
    }
}

impl FileSourceConfig {
    /// `multiline`, or the deprecated `message_start_indicator` as its equivalent.
    fn multiline_rules(&self) -> Result<Option<Rules>, String> {
        if let Some(multiline) = &self.multiline {
            return multiline.rules().map(Some);
        }
        let Some(indicator) = &self.message_start_indicator else { return Ok(None) };
        // A line that does not start a message joins the one before it.
        let legacy = MultilineConfig {
            start_pattern: indicator.clone(),
            condition_pattern: indicator.clone(),
            mode: MultilineMode::HaltBefore,
            timeout_ms: self.multi_line_timeout.unwrap_or(1000),
        };
        legacy.rules().map(Some).map_err(|e| e.replace("multiline.start_pattern", "message_start_indicator"))
    }

    fn read_from(&self) -> ReadFrom {
        match self.start_at_beginning {
            Some(true) => ReadFrom::Beginning,
            Some(false) => ReadFrom::End,
            None => self.read_from,
        }
    }

    fn read_options(&self) -> Result<ReadOptions, String> {
        let (charset, line_delimiter, align) =
            charset(self.encoding.as_ref().map(|e| e.charset.as_str()), &self.line_delimiter)?;
        Ok(ReadOptions {
            fingerprint: match self.fingerprint.strategy {
                FingerprintStrategy::Checksum => Strategy::Checksum {
                    lines: self.fingerprint.lines.max(1),
                    ignored_header_bytes: self.fingerprint.ignored_header_bytes,
                },
                FingerprintStrategy::DeviceAndInode => Strategy::DevInode,
            },
            max_line_bytes: self.max_line_bytes,
            line_delimiter,
            align,
            charset,
            read_from_end: self.read_from() == ReadFrom::End,
            ignore_older: self.ignore_older_secs.map(Duration::from_secs),
            max_read_bytes: self.max_read_bytes,
            oldest_first: self.oldest_first,
            glob_cooldown: Duration::from_millis(self.glob_minimum_cooldown_ms.max(1)),
            rotate_wait: Duration::from_secs(self.rotate_wait_secs.min(u64::MAX / 2)),
            remove_after: self.remove_after_secs.map(Duration::from_secs),
            ignore_checkpoints: self.ignore_checkpoints.unwrap_or(false),
        })
    }
}

impl SourceConfig for FileSourceConfig {
    fn can_acknowledge(&self) -> bool {
        true
    }

    fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    fn warnings(&self) -> Vec<ConfigIssue> {
        let mut warnings = Vec::new();
        if self.start_at_beginning.is_some() {
            warnings.push(ConfigIssue::new("start_at_beginning", "deprecated: use `read_from` (`beginning` or `end`)"));
        }
        if self.message_start_indicator.is_some() {
            warnings.push(ConfigIssue::new(
                "message_start_indicator",
                "deprecated: use `multiline` (this one is `mode = \"halt_before\"` with the indicator as both patterns)",
            ));
        }
        warnings
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.include.is_empty() {
            issues.push(ConfigIssue::new("include", "at least one glob is required"));
        }
        if let Err(err) = Globs::new(&self.include, &self.exclude) {
            issues.push(ConfigIssue::new("include", err));
        }
        if let Err(err) = self.multiline_rules() {
            let field = if self.multiline.is_some() { "multiline" } else { "message_start_indicator" };
            issues.push(ConfigIssue::new(field, err));
        }
        if self.multiline.is_some() && self.message_start_indicator.is_some() {
            issues.push(ConfigIssue::new(
                "message_start_indicator",
                "set either `multiline` or the deprecated `message_start_indicator`, not both",
            ));
        }
        if let Err(err) = self.read_options() {
            issues.push(ConfigIssue::new("encoding.charset", err));
        }
        if self.line_delimiter.is_empty() {
            issues.push(ConfigIssue::new("line_delimiter", "must not be empty"));
        }
        issues
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let options = self.read_options().map_err(BuildError)?;
        let globs = Globs::new(&self.include, &self.exclude).map_err(BuildError)?;
        let rules = self.multiline_rules().map_err(BuildError)?;
        let (outbox, rx) = Outbox::new(cx.id.clone());
        let host_key = field_key(self.host_key.as_deref(), sluice_core::event::fields::host());
        let reader = FileReader { outbox, rules, open: HashMap::new() };
        let events = FileEvents {
            id: cx.id.clone(),
            file_key: field_key(self.file_key.as_deref(), "file"),
            offset_key: self
                .offset_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(|k| k.trim_start_matches('.').to_owned()),
            host: host_key.map(|key| (key, cx.globals.hostname.clone())),
        };
        let data_dir = self.data_dir.clone().unwrap_or_else(|| cx.globals.data_dir.clone());
        let registration = Registration {
            source_id: cx.id.to_string(),
            globs,
            options,
            acknowledgements: cx.acknowledgements,
            reader: Box::new(reader),
        };
        let prepare = vector_import(&data_dir, &cx.id, self.import_vector_checkpoints);
        let subscription = tail::subscribe(&data_dir, registration, prepare).map_err(|e| BuildError(e.to_string()))?;
        Ok(Box::pin(forward(cx, subscription, rx, Box::new(events))))
    }
}

/// Adopts Vector's checkpoints of source `id` from `<data_dir>/<id>/` once (when on).
pub fn vector_import(data_dir: &Path, id: &str, enabled: bool) -> tail::Prepare {
    let dir = data_dir.join(id);
    let id = id.to_owned();
    Box::new(move |store| {
        if !enabled {
            return;
        }
        match sluice_file_tail::vector::read_source(&dir, &id) {
            Ok(Some(found)) if !store.imported(&found.import) => {
                let n = found.checkpoints.len();
                let adopted = found.checkpoints.into_iter().filter(|c| store.adopt(c.clone())).count();
                store.record_import(found.import);
                tracing::info!(
                    source = id.as_str(),
                    file = %found.file.display(),
                    entries = n,
                    adopted,
                    skipped = found.skipped,
                    "Adopted Vector's file checkpoints for this source; its files resume where Vector stopped."
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(
                source = id.as_str(),
                error = err.as_str(),
                "Cannot read Vector's checkpoints; they are not adopted."
            ),
        }
    })
}

/// The `file` source on the tail service's thread: lines to messages (joined when
/// multiline), handed to the source's task.
struct FileReader {
    outbox: Outbox,
    rules: Option<Rules>,
    /// Multiline messages being assembled, per file (with its path).
    open: HashMap<u64, (PathBuf, Aggregator)>,
}

/// The `file` source's events, built in its task: `message`, `file`, `host`, `source_type`,
/// `timestamp`, and `offset` when asked for.
struct FileEvents {
    id: Arc<str>,
    file_key: Option<String>,
    offset_key: Option<String>,
    host: Option<(String, Bytes)>,
}

impl BuildEvents for FileEvents {
    fn build(&mut self, lines: Lines, out: &mut Chunk) {
        let Lines { path, messages, finalizer, .. } = lines;
        let metadata = EventMetadata::new(&self.id, chrono::Utc::now());
        let host_key = sluice_core::event::fields::host();
        let default_host = self.host.as_ref().filter(|(key, _)| key == host_key).map(|(_, h)| h);
        let mut template = LegacyTemplate::new("file", default_host, metadata);
        if let Some((key, host)) = self.host.as_ref().filter(|(key, _)| key != host_key) {
            template.set_field(key, Value::Bytes(host.clone()));
        }
        if let Some(key) = &self.file_key {
            template.set_field(key, Value::Bytes(path));
        }
        template.set_finalizer(finalizer);
        for m in messages {
            let mut event = template.event(m.text);
            if let Some(key) = &self.offset_key {
                event.insert(key, Value::from(m.start as i64));
            }
            out.push(event);
        }
        // The template's own copy never became an event.
        template.set_finalizer(Default::default());
    }
}

impl Reader for FileReader {
    fn has_room(&mut self) -> bool {
        self.outbox.has_room()
    }

    fn pieces(&mut self, file: FileRef<'_>, pieces: Vec<Piece>, acks: &mut Acks<'_>) {
        let now = Instant::now();
        let mut messages = Vec::with_capacity(pieces.len());
        let mut end = 0;
        for piece in pieces {
            end = piece.end();
            match piece {
                Piece::Line { start, end, text } => {
                    let line = Message { start, end, text };
                    match &self.rules {
                        None => messages.push(line),
                        Some(rules) => {
                            let (_, agg) = self
                                .open
                                .entry(file.id)
                                .or_insert_with(|| (file.path.to_path_buf(), Aggregator::default()));
                            agg.push(rules, line, now, &mut messages);
                        }
                    }
                }
                oversized @ Piece::Oversized { .. } => {
                    // What came before goes first, then the line to the DLQ. An open multiline
                    // message holds the position at its start.
                    let held = self.held(file.id);
                    let start = match &oversized {
                        Piece::Oversized { start, .. } => *start,
                        Piece::Line { start, .. } => *start,
                    };
                    self.outbox.hand_over(
                        file.id,
                        file.path,
                        (std::mem::take(&mut messages), Vec::new()),
                        held.unwrap_or(start),
                        acks,
                    );
                    let finalizer = acks.finalizer(file.id, held.unwrap_or(oversized.end()));
                    self.outbox.oversized(file.path, &oversized, finalizer);
                }
            }
        }
        let held = self.held(file.id);
        self.outbox.hand_over(file.id, file.path, (messages, Vec::new()), held.unwrap_or(end), acks);
    }

    fn file_done(&mut self, file: FileRef<'_>, acks: &mut Acks<'_>) {
        if let Some(message) = self.open.remove(&file.id).and_then(|(_, mut agg)| agg.take()) {
            let end = message.end;
            self.outbox.hand_over(file.id, file.path, (vec![message], Vec::new()), end, acks);
        }
        self.outbox.flush();
    }

    fn end_of_pass(&mut self, now: Instant, acks: &mut Acks<'_>) {
        if let Some(rules) = &self.rules {
            let expired: Vec<(u64, PathBuf, Message)> = self
                .open
                .iter_mut()
                .filter_map(|(id, (path, agg))| agg.expire(rules, now).map(|m| (*id, path.clone(), m)))
                .collect();
            for (id, path, message) in expired {
                let end = message.end;
                self.outbox.hand_over(id, &path, (vec![message], Vec::new()), end, acks);
            }
        }
        self.outbox.flush();
    }
}

impl FileReader {
    /// Where an open multiline message of `file` starts.
    fn held(&self, file: u64) -> Option<u64> {
        self.open.get(&file).and_then(|(_, agg)| agg.held_from())
    }
}
