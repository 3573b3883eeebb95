//! `kubernetes_logs`: container logs from a node's pod log directory
//! (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/*.log`), in the CRI format or
//! Docker's json-file format, with partial lines merged. Enrichment from the API server comes
//! later: the pod's namespace, name and uid and the container's name come from the path.
//!
//! Reading is the shared tail service (`sluice-file-tail`): the same checkpoints,
//! acknowledgements and rotation handling as the `file` source, and many `kubernetes_logs`
//! sources on one node read each file once.
//!
//! Events: `message`, `stream`, `timestamp` (the runtime's), `file`,
//! `kubernetes.{pod_namespace, pod_name, pod_uid, container_name}`,
//! `source_type = "kubernetes_logs"`. A line that is neither CRI nor Docker goes to the
//! source's DLQ (reason `parse_error`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sluice_core::ack::EventFinalizer;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask};
use sluice_core::dead_letter::{DeadLetterReason, Failure};
use sluice_core::event::EventMetadata;
use sluice_core::{Chunk, LogEvent};
use sluice_file_tail::discovery::Globs;
use sluice_file_tail::fingerprint::Strategy;
use sluice_file_tail::lines::Piece;
use sluice_file_tail::multiline::Message;
use sluice_file_tail::tail::{self, Acks, FileRef, ReadOptions, Reader, Registration};
use vrl::value::{KeyString, ObjectMap, Value};

use super::file::{ReadFrom, vector_import};
use super::tailing::{BuildEvents, Lines, Meta, Outbox, forward};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLogsConfig {
    /// sluice: the pod log directory. Default `/var/log/pods`.
    #[serde(default = "default_root")]
    pub pod_logs_root: PathBuf,
    /// Globs (under the root) of files to read. Default `["**/*"]`.
    #[serde(default = "default_include")]
    pub include_paths_glob_patterns: Vec<String>,
    /// Globs left out. Default `["**/*.gz", "**/*.tmp"]`.
    #[serde(default = "default_exclude")]
    pub exclude_paths_glob_patterns: Vec<String>,
    /// Merge partial lines (CRI `P`, Docker lines without `\n`). Default true.
    #[serde(default = "crate::default_true")]
    pub auto_partial_merge: bool,
    /// Default 2048 (each file's turn is at least 64 KiB).
    #[serde(default = "super::file::default_max_read_bytes")]
    pub max_read_bytes: usize,
    /// Default 32768; longer lines go to the DLQ.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Milliseconds between looks for new files. Default 60000.
    #[serde(default = "default_cooldown")]
    pub glob_minimum_cooldown_ms: u64,
    /// Lines hashed to fingerprint a file. Default 1.
    #[serde(default = "super::file::default_lines")]
    pub fingerprint_lines: usize,
    /// Default true.
    #[serde(default = "crate::default_true")]
    pub oldest_first: bool,
    #[serde(default)]
    pub read_from: ReadFrom,
    pub ignore_older_secs: Option<u64>,
    #[serde(default = "super::file::default_rotate_wait")]
    pub rotate_wait_secs: u64,
    /// Where checkpoints live. Default the global `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Field names of the pod fields (Vector's). Defaults `.kubernetes.pod_name` and so on.
    #[serde(default)]
    pub pod_annotation_fields: PodFields,
    /// A field for the time sluice read the line. Default none.
    pub ingestion_timestamp_field: Option<String>,
    /// sluice: adopt Vector's checkpoints for this source id at start. Default true.
    #[serde(default = "crate::default_true")]
    pub import_vector_checkpoints: bool,
    /// Accepted for Vector configs; these need the Kubernetes API, which sluice does not read
    /// yet: a warning says so at start.
    pub self_node_name: Option<String>,
    pub extra_label_selector: Option<String>,
    pub extra_field_selector: Option<String>,
    pub extra_namespace_label_selector: Option<String>,
    pub kube_config_file: Option<PathBuf>,
    pub use_apiserver_cache: Option<bool>,
    pub namespace_annotation_fields: Option<serde_json::Value>,
    pub node_annotation_fields: Option<serde_json::Value>,
    pub delay_deletion_ms: Option<u64>,
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodFields {
    #[serde(default = "pod_namespace")]
    pub pod_namespace: String,
    #[serde(default = "pod_name")]
    pub pod_name: String,
    #[serde(default = "pod_uid")]
    pub pod_uid: String,
    #[serde(default = "container_name")]
    pub container_name: String,
    /// API fields: accepted, not filled yet (they need the Kubernetes API).
    pub container_id: Option<String>,
    pub container_image: Option<String>,
    pub container_image_id: Option<String>,
    pub pod_annotations: Option<String>,
    pub pod_ip: Option<String>,
    pub pod_ips: Option<String>,
    pub pod_labels: Option<String>,
    pub pod_node_name: Option<String>,
    pub pod_owner: Option<String>,
}

impl PodFields {
    fn api_fields_set(&self) -> bool {
        [
            &self.container_id,
            &self.container_image,
            &self.container_image_id,
            &self.pod_annotations,
            &self.pod_ip,
            &self.pod_ips,
            &self.pod_labels,
            &self.pod_node_name,
            &self.pod_owner,
        ]
        .iter()
        .any(|f| f.is_some())
    }
}

impl Default for PodFields {
    fn default() -> Self {
        Self {
            pod_namespace: pod_namespace(),
            pod_name: pod_name(),
            pod_uid: pod_uid(),
            container_name: container_name(),
            container_id: None,
            container_image: None,
            container_image_id: None,
            pod_annotations: None,
            pod_ip: None,
            pod_ips: None,
            pod_labels: None,
            pod_node_name: None,
            pod_owner: None,
        }
    }
}

fn pod_namespace() -> String {
    ".kubernetes.pod_namespace".into()
}
fn pod_name() -> String {
    ".kubernetes.pod_name".into()
}
fn pod_uid() -> String {
    ".kubernetes.pod_uid".into()
}
fn container_name() -> String {
    ".kubernetes.container_name".into()
}
fn default_root() -> PathBuf {
    PathBuf::from("/var/log/pods")
}
fn default_include() -> Vec<String> {
    vec!["**/*".into()]
}
fn default_exclude() -> Vec<String> {
    vec!["**/*.gz".into(), "**/*.tmp".into()]
}
fn default_max_line_bytes() -> usize {
    32_768
}
fn default_cooldown() -> u64 {
    60_000
}

impl KubernetesLogsConfig {
    /// Globs rooted at `pod_logs_root`, limited to `<pod>/<container>/` files.
    fn globs(&self) -> Result<Globs, String> {
        let root = self.pod_logs_root.display().to_string();
        let rooted = |p: &String| {
            let p = p.trim_start_matches('/');
            format!("{root}/{p}")
        };
        let include: Vec<String> = self.include_paths_glob_patterns.iter().map(rooted).collect();
        let mut exclude: Vec<String> = self.exclude_paths_glob_patterns.iter().map(rooted).collect();
        // Only files two levels down: `<namespace>_<pod>_<uid>/<container>/<n>.log`.
        exclude.push(format!("{root}/*"));
        exclude.push(format!("{root}/*/*"));
        Globs::new(&include, &exclude)
    }

    fn api_fields_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let fields: [(&'static str, bool); 9] = [
            ("self_node_name", self.self_node_name.is_some()),
            ("extra_label_selector", self.extra_label_selector.is_some()),
            ("extra_field_selector", self.extra_field_selector.is_some()),
            ("extra_namespace_label_selector", self.extra_namespace_label_selector.is_some()),
            ("kube_config_file", self.kube_config_file.is_some()),
            ("use_apiserver_cache", self.use_apiserver_cache.is_some()),
            ("namespace_annotation_fields", self.namespace_annotation_fields.is_some()),
            ("node_annotation_fields", self.node_annotation_fields.is_some()),
            ("pod_annotation_fields (API fields)", self.pod_annotation_fields.api_fields_set()),
        ];
        for (name, on) in fields {
            if on {
                set.push(name);
            }
        }
        set
    }
}

impl SourceConfig for KubernetesLogsConfig {
    fn can_acknowledge(&self) -> bool {
        true
    }

    fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    fn warnings(&self) -> Vec<ConfigIssue> {
        self.api_fields_set()
            .into_iter()
            .map(|field| {
                ConfigIssue::new(
                    field.split(' ').next().unwrap_or(field),
                    "needs the Kubernetes API, which sluice does not read yet: accepted, not applied (no selection, no enrichment beyond the pod log path)",
                )
            })
            .collect()
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        match self.globs() {
            Ok(_) => Vec::new(),
            Err(err) => vec![ConfigIssue::new("include_paths_glob_patterns", err)],
        }
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let globs = self.globs().map_err(BuildError)?;
        let options = ReadOptions {
            fingerprint: Strategy::Checksum { lines: self.fingerprint_lines.max(1), ignored_header_bytes: 0 },
            max_line_bytes: self.max_line_bytes,
            line_delimiter: b"\n".to_vec(),
            align: 1,
            charset: None,
            read_from_end: self.read_from == ReadFrom::End,
            ignore_older: self.ignore_older_secs.map(Duration::from_secs),
            max_read_bytes: self.max_read_bytes,
            oldest_first: self.oldest_first,
            glob_cooldown: Duration::from_millis(self.glob_minimum_cooldown_ms.max(1)),
            rotate_wait: Duration::from_secs(self.rotate_wait_secs.min(u64::MAX / 2)),
            remove_after: None,
            ignore_checkpoints: false,
        };
        let (outbox, rx) = Outbox::new(cx.id.clone());
        let fields = &self.pod_annotation_fields;
        let key = |k: &str| k.trim_start_matches('.').to_owned();
        let reader = KubeReader {
            outbox,
            merge: self.auto_partial_merge,
            max_line_bytes: self.max_line_bytes,
            files: HashMap::new(),
        };
        let events = KubeEvents {
            id: cx.id.clone(),
            keys: [
                key(&fields.pod_namespace),
                key(&fields.pod_name),
                key(&fields.pod_uid),
                key(&fields.container_name),
            ],
            ingestion_key: self.ingestion_timestamp_field.as_deref().map(key),
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

/// One parsed container log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub time: Option<DateTime<Utc>>,
    pub stream: Bytes,
    /// More of the same line follows in the next record.
    pub partial: bool,
    pub content: Bytes,
}

/// Parses a CRI line (`<RFC 3339 time> <stream> <P|F> <content>`) or a Docker json-file line
/// (`{"log":"…","stream":"…","time":"…"}`, partial when `log` does not end with `\n`).
pub fn parse(line: &Bytes) -> Option<Record> {
    if line.first() == Some(&b'{') {
        #[derive(Deserialize)]
        struct Docker {
            log: String,
            stream: Option<String>,
            time: Option<DateTime<Utc>>,
        }
        let docker: Docker = serde_json::from_slice(line).ok()?;
        let partial = !docker.log.ends_with('\n');
        let content = docker.log.strip_suffix('\n').unwrap_or(&docker.log);
        let content = content.strip_suffix('\r').unwrap_or(content);
        return Some(Record {
            time: docker.time,
            stream: Bytes::from(docker.stream.unwrap_or_else(|| "stdout".into())),
            partial,
            content: Bytes::copy_from_slice(content.as_bytes()),
        });
    }
    // `<time> <stream> <tag> <content>`; content may be empty (and its space missing).
    let space = |from: usize| memchr::memchr(b' ', line.get(from..)?).map(|at| from + at);
    let first = space(0)?;
    let second = space(first + 1)?;
    let third = space(second + 1).unwrap_or(line.len());
    let time = std::str::from_utf8(&line[..first]).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    let partial = match &line[second + 1..third] {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = line.slice((third + 1).min(line.len())..);
    Some(Record { time: Some(time), stream: line.slice(first + 1..second), partial, content })
}

/// How long a partial line waits for its continuation before it goes on as it is (a runtime
/// that died mid-line, a Docker record cut without its newline): never held forever.
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// A line still being assembled from partial records, for one stream of one file.
struct Partial {
    start: u64,
    time: Option<DateTime<Utc>>,
    content: BytesMut,
    /// When its first record was read.
    since: Instant,
}

/// Per file: partial lines per stream, and where the last line seen ends.
struct KubeFile {
    path: PathBuf,
    partial: HashMap<Bytes, Partial>,
    last_end: u64,
}

impl KubeFile {
    fn held_from(&self) -> Option<u64> {
        self.partial.values().map(|p| p.start).min()
    }
}

/// `<namespace>_<pod>_<uid>/<container>/` of a pod log path.
pub fn pod_of(path: &Path) -> Option<[String; 4]> {
    let container = path.parent()?;
    let pod_dir = container.parent()?;
    let container = container.file_name()?.to_str()?;
    let mut parts = pod_dir.file_name()?.to_str()?.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    Some([namespace.to_owned(), pod.to_owned(), uid.to_owned(), container.to_owned()])
}

/// `kubernetes_logs` on the tail service's thread: container log lines parsed, partial lines
/// merged, handed to the source's task with their stream and time.
struct KubeReader {
    outbox: Outbox,
    merge: bool,
    /// A merged line is handed on once it reaches this.
    max_line_bytes: usize,
    files: HashMap<u64, KubeFile>,
}

impl KubeReader {
    fn file(&mut self, file: FileRef<'_>) -> &mut KubeFile {
        self.files.entry(file.id).or_insert_with(|| KubeFile {
            path: file.path.to_path_buf(),
            partial: HashMap::new(),
            last_end: 0,
        })
    }

    /// Hands over what was gathered, with the position it may move to.
    fn hand_over(
        &mut self,
        file: FileRef<'_>,
        gathered: &mut (Vec<Message>, Vec<Meta>),
        end: u64,
        acks: &mut Acks<'_>,
    ) {
        self.outbox.hand_over(file.id, file.path, std::mem::take(gathered), end, acks);
    }
}

/// The source's events, built in its task: `message`, `stream`, `timestamp`, `file`,
/// `kubernetes.*` (from the path), `source_type`.
struct KubeEvents {
    id: Arc<str>,
    /// Field paths of pod_namespace, pod_name, pod_uid, container_name.
    keys: [String; 4],
    ingestion_key: Option<String>,
}

impl BuildEvents for KubeEvents {
    fn build(&mut self, lines: Lines, out: &mut Chunk) {
        let Lines { path, messages, meta, finalizer } = lines;
        let now = Utc::now();
        let mut template = LogEvent::from_value(Value::Object(ObjectMap::new()), EventMetadata::new(&self.id, now));
        let (message_key, timestamp_key) =
            (sluice_core::event::fields::message(), sluice_core::event::fields::timestamp());
        for key in [message_key, "stream", timestamp_key] {
            template.insert(key, Value::Null);
        }
        template.insert(sluice_core::event::fields::source_type(), Value::from("kubernetes_logs"));
        let pod = pod_of(Path::new(&*String::from_utf8_lossy(&path))).unwrap_or_default();
        template.insert("file", Value::Bytes(path));
        if let Some(key) = &self.ingestion_key {
            insert_path(&mut template, key, Value::Timestamp(now));
        }
        for (key, value) in self.keys.iter().zip(pod) {
            insert_path(&mut template, key, Value::from(value));
        }
        template.set_finalizer(finalizer);
        for (message, meta) in messages.into_iter().zip(meta) {
            let mut event = template.clone();
            if let Value::Object(map) = event.value_mut() {
                let mut set = |key: &str, value: Value| {
                    if let Some(slot) = map.get_mut(key) {
                        *slot = value;
                    }
                };
                set(message_key, Value::Bytes(message.text));
                set("stream", Value::Bytes(meta.stream));
                set(timestamp_key, Value::Timestamp(meta.time.unwrap_or(now)));
            }
            out.push(event);
        }
        // The template's own copy never became an event.
        template.set_finalizer(EventFinalizer::default());
    }
}

/// Sets a dotted field path (`kubernetes.pod_name`), creating objects on the way.
fn insert_path(event: &mut LogEvent, path: &str, value: Value) {
    let Value::Object(root) = event.value_mut() else { return };
    let mut parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let Some(last) = parts.pop() else { return };
    let mut node = root;
    for part in parts {
        let entry = node.entry(KeyString::from(part)).or_insert_with(|| Value::Object(ObjectMap::new()));
        if !matches!(entry, Value::Object(_)) {
            *entry = Value::Object(ObjectMap::new());
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
    node.insert(KeyString::from(last), value);
}

impl Reader for KubeReader {
    fn has_room(&mut self) -> bool {
        self.outbox.has_room()
    }

    fn pieces(&mut self, file: FileRef<'_>, pieces: Vec<Piece>, acks: &mut Acks<'_>) {
        let merge = self.merge;
        let max_line_bytes = self.max_line_bytes;
        let mut gathered = (Vec::with_capacity(pieces.len()), Vec::with_capacity(pieces.len()));
        let mut end = 0;
        for piece in pieces {
            end = piece.end();
            let (start, line_end, text) = match piece {
                Piece::Line { start, end, text } => (start, end, text),
                oversized @ Piece::Oversized { .. } => {
                    let held = self.file(file).held_from();
                    let start = match &oversized {
                        Piece::Oversized { start, .. } | Piece::Line { start, .. } => *start,
                    };
                    self.hand_over(file, &mut gathered, held.unwrap_or(start), acks);
                    let finalizer = acks.finalizer(file.id, held.unwrap_or(oversized.end()));
                    self.outbox.oversized(file.path, &oversized, finalizer);
                    continue;
                }
            };
            self.file(file).last_end = line_end;
            let Some(record) = parse(&text) else {
                let held = self.file(file).held_from();
                self.hand_over(file, &mut gathered, held.unwrap_or(start), acks);
                let finalizer = acks.finalizer(file.id, held.unwrap_or(line_end));
                let failure = Failure::now(
                    DeadLetterReason::ParseError,
                    "neither a CRI nor a Docker json-file log line".to_owned(),
                    None,
                );
                self.outbox.dead_letter(file.path, start, text, failure, finalizer);
                continue;
            };
            let kube = self.file(file);
            if merge && record.partial {
                let entry = kube.partial.entry(record.stream.clone()).or_insert_with(|| Partial {
                    start,
                    time: record.time,
                    content: BytesMut::new(),
                    since: Instant::now(),
                });
                entry.content.extend_from_slice(&record.content);
                if entry.content.len() < max_line_bytes {
                    continue;
                }
                // Longer than a line may be: it goes on as it is, the rest as another line.
                if let Some(p) = kube.partial.remove(&record.stream) {
                    gathered.0.push(Message { start: p.start, end: line_end, text: p.content.freeze() });
                    gathered.1.push(Meta { stream: record.stream, time: p.time });
                }
                continue;
            }
            let (first, time, content) = match kube.partial.remove(&record.stream) {
                Some(mut partial) if merge => {
                    partial.content.extend_from_slice(&record.content);
                    (partial.start, partial.time, partial.content.freeze())
                }
                _ => (start, record.time, record.content),
            };
            gathered.0.push(Message { start: first, end: line_end, text: content });
            gathered.1.push(Meta { stream: record.stream, time });
        }
        let held = self.files.get(&file.id).and_then(KubeFile::held_from);
        self.hand_over(file, &mut gathered, held.unwrap_or(end), acks);
    }

    fn file_done(&mut self, file: FileRef<'_>, acks: &mut Acks<'_>) {
        if let Some(mut kube) = self.files.remove(&file.id) {
            let mut gathered = (Vec::new(), Vec::new());
            for (stream, p) in kube.partial.drain() {
                gathered.0.push(Message { start: p.start, end: kube.last_end, text: p.content.freeze() });
                gathered.1.push(Meta { stream, time: p.time });
            }
            self.hand_over(file, &mut gathered, kube.last_end, acks);
        }
        self.outbox.flush();
    }

    fn end_of_pass(&mut self, now: Instant, acks: &mut Acks<'_>) {
        for (id, kube) in &mut self.files {
            let expired: Vec<Bytes> = kube
                .partial
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.since) >= PARTIAL_TIMEOUT)
                .map(|(stream, _)| stream.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            let mut gathered = (Vec::new(), Vec::new());
            for stream in expired {
                if let Some(p) = kube.partial.remove(&stream) {
                    gathered.0.push(Message { start: p.start, end: kube.last_end, text: p.content.freeze() });
                    gathered.1.push(Meta { stream, time: p.time });
                }
            }
            let end = kube.held_from().unwrap_or(kube.last_end);
            self.outbox.hand_over(*id, &kube.path, gathered, end, acks);
        }
        self.outbox.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_parse_with_their_tag() {
        let line = Bytes::from_static(b"2016-10-06T00:17:09.669794202Z stdout P part one ");
        let r = parse(&line).unwrap_or_else(|| panic!("cri"));
        assert!(r.partial);
        assert_eq!((&r.stream[..], &r.content[..]), (&b"stdout"[..], &b"part one "[..]));
        assert_eq!(r.time.map(|t| t.timestamp_subsec_nanos()), Some(669_794_202));
        let r = parse(&Bytes::from_static(b"2016-10-06T00:17:10Z stderr F")).unwrap_or_else(|| panic!("empty"));
        assert_eq!((r.partial, r.content.len()), (false, 0));
        assert!(parse(&Bytes::from_static(b"not a log line")).is_none());
    }

    #[test]
    fn docker_lines_are_partial_without_their_newline() {
        let r = parse(&Bytes::from_static(br#"{"log":"half","stream":"stderr","time":"2019-04-09T12:00:00Z"}"#))
            .unwrap_or_else(|| panic!("docker"));
        assert!(r.partial);
        let r = parse(&Bytes::from_static(br#"{"log":"whole\n","stream":"stdout","time":"2019-04-09T12:00:00Z"}"#))
            .unwrap_or_else(|| panic!("docker"));
        assert_eq!((r.partial, &r.content[..]), (false, &b"whole"[..]));
    }

    #[test]
    fn pod_fields_come_from_the_path() {
        let path = Path::new(
            "/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0f1e2d3c-aaaa-bbbb-cccc-111122223333/coredns/0.log",
        );
        assert_eq!(
            pod_of(path),
            Some([
                "kube-system".to_owned(),
                "coredns-5d78c9869d-abcde".to_owned(),
                "0f1e2d3c-aaaa-bbbb-cccc-111122223333".to_owned(),
                "coredns".to_owned()
            ])
        );
    }
}
