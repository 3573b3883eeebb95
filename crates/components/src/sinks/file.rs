//! `file`: events to files named by a template.
//!
//! Confinement: the rendered path must stay inside the configured directory (`base_dir`, or
//! the template's literal directory prefix): no `..` component, no NUL, same root. An event
//! whose path would escape is failed and counted, never written. Each chunk becomes one write
//! per file; events resolve as delivered once the write returns (the data is in the OS).
//! Files idle for `idle_timeout_secs` are closed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::ack::Outcome;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};

use super::template::Template;
use super::{Pending, reject};
use crate::codecs::{EncodingConfig, SinkFraming};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Required: path template, e.g. `/var/log/app/{{ service }}-%Y-%m-%d.log`.
    pub path: String,
    /// Required.
    pub encoding: EncodingConfig,
    /// Default newline-delimited.
    #[serde(default)]
    pub framing: SinkFraming,
    /// `none` (default) or `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// Seconds after which an unused file is closed. Default 30.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Directory every rendered path must stay in. Default: the template's literal directory.
    pub base_dir: Option<PathBuf>,
    /// Accepted for compatibility; paths are formatted in UTC.
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

fn default_idle_timeout() -> u64 {
    30
}

impl FileConfig {
    fn template(&self) -> Result<Template, ConfigIssue> {
        Template::parse(&self.path).map_err(|m| ConfigIssue::new("path", m))
    }

    fn confinement_root(&self, template: &Template) -> PathBuf {
        match &self.base_dir {
            Some(dir) => normalize(dir),
            None => {
                let prefix = template.static_prefix();
                let dir = match prefix.rfind('/') {
                    Some(at) => &prefix[..=at],
                    None => "",
                };
                normalize(Path::new(dir))
            }
        }
    }
}

/// Lexical normalization: `.` removed; `..` kept (and rejected by [`confined`]).
fn normalize(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// The rendered path if it stays inside `root`.
fn confined(root: &Path, rendered: &str) -> Result<PathBuf, String> {
    if rendered.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let path = normalize(Path::new(rendered));
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("path `{rendered}` contains `..`"));
    }
    if path.is_absolute() != root.is_absolute() || !path.starts_with(root) || path == root {
        return Err(format!("path `{rendered}` is outside `{}`", root.display()));
    }
    Ok(path)
}

impl SinkConfig for FileConfig {
    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.framing.delimiter().err());
        match self.template() {
            Err(issue) => issues.push(issue),
            Ok(template) if !template.is_dynamic() => {
                if let Err(m) = confined(&self.confinement_root(&template), &self.path) {
                    issues.push(ConfigIssue::new("path", m));
                }
            }
            Ok(_) => {}
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let template = self.template().map_err(|i| BuildError(i.message))?;
        let delimiter = self.framing.delimiter().map_err(|i| BuildError(i.message))?;
        let root = self.confinement_root(&template);
        Ok(Box::new(FileSink { config: self.clone(), template, root, delimiter, cx }))
    }
}

struct FileSink {
    config: FileConfig,
    template: Template,
    root: PathBuf,
    delimiter: Option<u8>,
    cx: SinkContext,
}

enum Writer {
    Plain(std::fs::File),
    Gzip(Box<GzEncoder<std::fs::File>>),
}

struct OpenFile {
    writer: Writer,
    last_used: Instant,
}

impl OpenFile {
    /// Opens `path` for appending. A plain file whose last record has no `delimiter` was
    /// cut short (a crash or a failed write in the middle of a write): the delimiter is
    /// added first, so the torn record stays a line of its own instead of swallowing the
    /// next one, which may be the same event sent again.
    fn open(path: &Path, compression: Compression, delimiter: Option<u8>) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).read(true).open(path)?;
        if let (Compression::None, Some(delimiter)) = (compression, delimiter) {
            end_torn_record(&mut file, path, delimiter)?;
        }
        let writer = match compression {
            Compression::None => Writer::Plain(file),
            Compression::Gzip => Writer::Gzip(Box::new(GzEncoder::new(file, flate2::Compression::default()))),
        };
        Ok(Self { writer, last_used: Instant::now() })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.last_used = Instant::now();
        match &mut self.writer {
            Writer::Plain(f) => f.write_all(data),
            // A sync flush makes the chunk readable before it counts as delivered.
            Writer::Gzip(g) => g.write_all(data).and_then(|()| g.flush()),
        }
    }

    fn close(self) -> std::io::Result<()> {
        match self.writer {
            Writer::Plain(_) => Ok(()),
            Writer::Gzip(g) => g.finish().map(drop),
        }
    }
}

/// One file's share of a chunk.
struct Group {
    path: PathBuf,
    data: Vec<u8>,
    pending: Pending,
    result: std::io::Result<()>,
}

/// Adds `delimiter` to a non-empty file that does not end with it.
fn end_torn_record(file: &mut std::fs::File, path: &Path, delimiter: u8) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut last = [0u8];
    if len == 0 || (file.read_exact_at(&mut last, len - 1).is_ok() && last[0] == delimiter) {
        return Ok(());
    }
    tracing::warn!(
        path = %path.display(),
        "The file ends in a partial record (a crash or a failed write); ending it before appending."
    );
    file.write_all(&[delimiter])
}

fn write_groups(
    files: &mut HashMap<PathBuf, OpenFile>,
    groups: &mut [Group],
    compression: Compression,
    delimiter: Option<u8>,
    idle: Duration,
) {
    for group in groups.iter_mut() {
        let file = match files.entry(group.path.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                OpenFile::open(&group.path, compression, delimiter).map(|f| e.insert(f))
            }
        };
        group.result = file.and_then(|f| f.write(&group.data));
        if group.result.is_err() {
            // Reopen next time: the handle may be bad (file removed, disk error).
            if let Some(f) = files.remove(&group.path) {
                let _ = f.close();
            }
        }
    }
    close_idle(files, idle);
}

fn close_idle(files: &mut HashMap<PathBuf, OpenFile>, idle: Duration) {
    let stale: Vec<PathBuf> =
        files.iter().filter(|(_, f)| f.last_used.elapsed() >= idle).map(|(p, _)| p.clone()).collect();
    for path in stale {
        if let Some(f) = files.remove(&path)
            && let Err(err) = f.close()
        {
            tracing::error!(path = %path.display(), error = %err, "Cannot finish a compressed file.");
        }
    }
}

impl Sink for FileSink {
    fn run(self: Box<Self>, mut input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let Self { config, template, root, delimiter, cx } = *self;
            let encoder = config.encoding.build();
            let idle = Duration::from_secs(config.idle_timeout_secs);
            let static_path = (!template.is_dynamic()).then(|| normalize(Path::new(&config.path)));
            let mut files: HashMap<PathBuf, OpenFile> = HashMap::new();
            let write_log = sluice_core::log_limit::LogLimit::default();
            let mut ticker = tokio::time::interval(idle.max(Duration::from_secs(1)));
            loop {
                let chunk = tokio::select! {
                    chunk = input.next() => match chunk {
                        Some(chunk) => chunk,
                        None => break,
                    },
                    _ = ticker.tick() => {
                        let (back, ()) = blocking(files, move |f| close_idle(f, idle)).await;
                        files = back;
                        continue;
                    }
                };
                let mut groups: Vec<Group> = Vec::new();
                for mut event in chunk {
                    let path = match &static_path {
                        Some(p) => Ok(p.clone()),
                        None => template.render(&event).and_then(|r| confined(&root, &r)),
                    };
                    let path = match path {
                        Ok(path) => path,
                        Err(err) => {
                            reject(&cx.ledger, event, "path_rejected", &err);
                            continue;
                        }
                    };
                    let at = match groups.iter().position(|g| g.path == path) {
                        Some(at) => at,
                        None => {
                            groups.push(Group { path, data: Vec::new(), pending: Pending::default(), result: Ok(()) });
                            groups.len() - 1
                        }
                    };
                    let group = &mut groups[at];
                    let mark = group.data.len();
                    match encoder.encode(&event, &mut group.data) {
                        Ok(()) => {
                            group.data.extend(delimiter);
                            group.pending.add(&mut event);
                        }
                        Err(err) => {
                            group.data.truncate(mark);
                            reject(&cx.ledger, event, "encode_error", &err.to_string());
                        }
                    }
                }
                let compression = config.compression;
                let (back, groups) = blocking(files, move |f| {
                    write_groups(f, &mut groups, compression, delimiter, idle);
                    groups
                })
                .await;
                files = back;
                for group in groups {
                    match group.result {
                        Ok(()) => {
                            cx.ledger.sent_bytes(group.data.len());
                            group.pending.settle(&cx.ledger, Outcome::Delivered);
                        }
                        Err(err) => {
                            cx.ledger.error("write_failed", "sending");
                            if let Some(folded) = write_log.admit() {
                                tracing::error!(
                                    component_id = &*cx.id,
                                    path = %group.path.display(),
                                    error = %err,
                                    events = group.pending.events,
                                    similar_since_last_line = folded,
                                    "Cannot write to file; events counted as failed."
                                );
                            }
                            group.pending.settle(&cx.ledger, Outcome::Failed);
                        }
                    }
                }
            }
            let (_, ()) = blocking(files, |f| {
                for (path, file) in f.drain() {
                    if let Err(err) = file.close() {
                        tracing::error!(path = %path.display(), error = %err, "Cannot finish a compressed file.");
                    }
                }
            })
            .await;
            Ok(())
        })
    }
}

/// Runs blocking file work off the async threads, moving the open files in and out.
async fn blocking<T: Send + 'static>(
    mut files: HashMap<PathBuf, OpenFile>,
    work: impl FnOnce(&mut HashMap<PathBuf, OpenFile>) -> T + Send + 'static,
) -> (HashMap<PathBuf, OpenFile>, T) {
    match tokio::task::spawn_blocking(move || {
        let out = work(&mut files);
        (files, out)
    })
    .await
    {
        Ok(result) => result,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_record_is_ended_before_appending() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("out.log");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":").unwrap_or_else(|e| panic!("{e}"));
        let mut file = OpenFile::open(&path, Compression::None, Some(b'\n')).unwrap_or_else(|e| panic!("{e}"));
        file.write(b"{\"a\":2}\n").unwrap_or_else(|e| panic!("{e}"));
        drop(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, "{\"a\":1}\n{\"a\":\n{\"a\":2}\n", "the appended record is a line of its own");
        // A whole file, or an empty one, is left as it is.
        let mut file = OpenFile::open(&path, Compression::None, Some(b'\n')).unwrap_or_else(|e| panic!("{e}"));
        file.write(b"x\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), format!("{text}x\n"));
        let empty = dir.path().join("empty.log");
        drop(OpenFile::open(&empty, Compression::None, Some(b'\n')).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(std::fs::metadata(&empty).map(|m| m.len()).unwrap_or(9), 0);
    }

    #[test]
    fn rendered_paths_cannot_escape() {
        let root = Path::new("/data/out");
        assert!(confined(root, "/data/out/app.log").is_ok());
        assert!(confined(root, "/data/out/../../etc/passwd").is_err());
        assert!(confined(root, "/data/outside.log").is_err());
        assert!(confined(root, "/data/out/a\0b").is_err());
        assert!(confined(root, "/data/out//etc/passwd").is_ok(), "stays under the root");
        assert!(confined(Path::new(""), "/etc/passwd.log").is_err(), "relative root, absolute path");
        assert!(confined(Path::new(""), "app.log").is_ok());
    }
}
