//! Command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sluice: an observability data pipeline that accounts for every event.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Less logging (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How log lines are written: `text` or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "VECTOR_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Colours in text logs: `auto` (when stderr is a terminal), `always` or `never`.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, env = "VECTOR_COLOR")]
    pub color: Color,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline (the default when no command is given).
    Run(RunArgs),
    /// Check config files and report every problem at once.
    Validate(ValidateArgs),
    /// Run the config's unit tests (`[[tests]]`) through its transforms, as `vector test`.
    Test(TestArgs),
    /// Run a VRL program over events (JSON lines, from a file or stdin) and print the results.
    Vrl(VrlArgs),
    /// Print a live sample of the events leaving components (the API must be on).
    Tap(TapArgs),
    /// Watch a running sluice (its API must be on): rates, errors, DLQ, buffers per component.
    Top(TopArgs),
    /// List every component type.
    List,
    /// Inspect and purge the disk dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Inspect sinks' disk buffers.
    #[command(subcommand)]
    Buffer(BufferCommand),
    /// Inspect and edit the file checkpoint store (`data_dir/checkpoints/`).
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
}

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// Every stored position: fingerprint, position, path, source, when it changed.
    List {
        #[command(flatten)]
        place: DlqPlace,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The checkpoint of one file: a path (fingerprinted now, as the default `checksum`
    /// strategy does) or a fingerprint as `list` prints it.
    Show {
        #[command(flatten)]
        place: DlqPlace,
        /// A file path, or `checksum:<hex>` / `dev_inode:<dev>:<inode>`.
        target: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drops positions (those files are read from their start next time). Refused while a
    /// sluice uses the store.
    Forget {
        #[command(flatten)]
        place: DlqPlace,
        /// Fingerprints as `list` prints them.
        fingerprints: Vec<String>,
        /// Every position last read by this source.
        #[arg(long)]
        source: Option<String>,
        /// Every position whose path matches this glob.
        #[arg(long)]
        path: Option<String>,
    },
    /// Adopts Vector's file checkpoints (`DIR/<source_id>/checkpoints.json`), so files
    /// Vector read are not read again. Refused while a sluice uses the store.
    Import {
        #[command(flatten)]
        place: DlqPlace,
        /// Vector's `data_dir`.
        #[arg(long, value_name = "DIR")]
        vector_data_dir: PathBuf,
        /// Only these Vector source ids (default: all).
        #[arg(long)]
        source: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// Per buffer: records and events waiting, bytes, damaged ranges, torn tails. Reads only,
    /// unless `--repair`.
    Check {
        #[command(flatten)]
        place: DlqPlace,
        /// Only this buffer (its `buffer.id`, or its sink's id).
        #[arg(long)]
        id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Move damaged bytes to the owning sink's disk DLQ (reason `buffer_corrupt`) and
        /// rewrite damaged segments with their valid records only. Refused while a sluice
        /// uses the buffer.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Per sink: events, bytes, oldest, newest, counts by reason.
    List {
        #[command(flatten)]
        place: DlqPlace,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print stored events with their failure.
    Show {
        #[command(flatten)]
        place: DlqPlace,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// Only this reason (`permanent`, `retries_exhausted`, ...).
        #[arg(long)]
        reason: Option<String>,
        /// Only events dead-lettered at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events dead-lettered before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// At most this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the stored JSON envelopes, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Send stored events again, to their sink as the config defines it or to another, and
    /// move what was confirmed to the archive.
    Replay(ReplayArgs),
    /// Delete stored events.
    Purge {
        #[command(flatten)]
        place: DlqPlace,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// Only events older than this age (`30m`, `24h`, `7d`).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub place: DlqPlace,
    /// Replay this sink's DLQ (repeat for several). Default: every sink with stored events.
    #[arg(long, value_name = "ID")]
    pub sink: Vec<String>,
    /// Only events dead-lettered for this reason (repeat for several).
    #[arg(long)]
    pub reason: Vec<String>,
    /// Send to this sink of the config instead of the one that dead-lettered the events.
    #[arg(long, value_name = "SINK")]
    pub to: Option<String>,
    /// At most this many events per second (per replayed sink).
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    pub rate: Option<f64>,
    /// A VRL program that repairs each event before it is sent. Events it fails on stay in
    /// the DLQ; events it drops with `abort` count as handled.
    #[arg(long, value_name = "FILE.vrl")]
    pub fix: Option<PathBuf>,
    /// Print the events that would be sent (after --fix) as JSON lines; send and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds in-flight events may take to drain at shutdown.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub graceful_shutdown_limit_secs: u64,
    /// Write the final ledger as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub ledger_json: Option<PathBuf>,
}

/// Where sluice keeps its files: `--data-dir`, or the `data_dir` of `--config`.
#[derive(Debug, Args, Clone)]
pub struct DlqPlace {
    /// The data directory holding `dead_letter/`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Where the config comes from.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// A config file (TOML, YAML or JSON, by extension). Repeat to merge several.
    #[arg(short = 'c', long = "config", value_name = "FILE", env = "SLUICE_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// TOML config files, whatever their extension.
    #[arg(long = "config-toml", value_name = "FILE", env = "VECTOR_CONFIG_TOML", value_delimiter = ',')]
    pub config_toml: Vec<PathBuf>,
    /// YAML config files, whatever their extension.
    #[arg(long = "config-yaml", value_name = "FILE", env = "VECTOR_CONFIG_YAML", value_delimiter = ',')]
    pub config_yaml: Vec<PathBuf>,
    /// JSON config files, whatever their extension.
    #[arg(long = "config-json", value_name = "FILE", env = "VECTOR_CONFIG_JSON", value_delimiter = ',')]
    pub config_json: Vec<PathBuf>,
    /// A directory whose config files are all read and merged, with the namespaced
    /// subfolders `sources/`, `transforms/`, `sinks/` and `tests/` (one component per file,
    /// named by the file).
    #[arg(short = 'C', long = "config-dir", value_name = "DIR", env = "SLUICE_CONFIG_DIR", value_delimiter = ',')]
    pub config_dir: Vec<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Seconds in-flight events may take to drain at shutdown.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub graceful_shutdown_limit_secs: u64,
    /// Write the final ledger as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub ledger_json: Option<PathBuf>,
    /// Worker threads of the async runtime. Default: one per CPU.
    #[arg(short = 't', long, value_name = "N", env = "VECTOR_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Reload the config when one of its files changes (as SIGHUP and `POST /reload` do).
    #[arg(short = 'w', long, env = "VECTOR_WATCH_CONFIG")]
    pub watch_config: bool,
    /// How to notice a change: both look at the files' times and sizes; `recommended` every
    /// second, `poll` every --watch-config-poll-interval-seconds.
    #[arg(long, value_enum, default_value_t = WatchMethod::Recommended, env = "VECTOR_WATCH_CONFIG_METHOD")]
    pub watch_config_method: WatchMethod,
    /// Exit (code 78) before any source starts when a sink's healthcheck fails.
    #[arg(long, env = "VECTOR_REQUIRE_HEALTHY")]
    pub require_healthy: bool,
    /// Seconds between looks with `--watch-config-method poll`.
    #[arg(long, value_name = "SECS", default_value_t = 30, env = "VECTOR_WATCH_CONFIG_POLL_INTERVAL_SECONDS")]
    pub watch_config_poll_interval_seconds: u64,
}

/// `--watch-config-method`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchMethod {
    #[default]
    Recommended,
    Poll,
}

#[derive(Debug, Args, Clone)]
pub struct TapArgs {
    /// Components whose outputs to sample (globs; same as --outputs-of). Default: all.
    #[arg(value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Components (or `id.port`) whose outputs to sample.
    #[arg(long, value_delimiter = ',')]
    pub outputs_of: Vec<String>,
    /// Components whose inputs to sample (what they read).
    #[arg(long, value_delimiter = ',')]
    pub inputs_of: Vec<String>,
    /// The API of the sluice to tap (`api.address`).
    #[arg(short, long, default_value = "http://127.0.0.1:8686")]
    pub url: String,
    /// At most this many events per interval.
    #[arg(short, long, default_value_t = 100)]
    pub limit: u64,
    /// Milliseconds of an interval.
    #[arg(short, long, value_name = "MS", default_value_t = 500)]
    pub interval: u64,
    /// `json`, `yaml` or `logfmt`.
    #[arg(short, long, value_enum, default_value_t = TapFormat::Json)]
    pub format: TapFormat,
    /// Print each event with the component it came from.
    #[arg(short, long)]
    pub meta: bool,
    /// Stop after this many milliseconds. Default: until interrupted.
    #[arg(short, long, value_name = "MS")]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TapFormat {
    Json,
    Yaml,
    Logfmt,
}

#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    /// The API of the sluice to watch (`api.address`).
    #[arg(long, default_value = "http://127.0.0.1:8686")]
    pub url: String,
    /// Milliseconds between samples.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval: u64,
    /// Order of the rows (`s` cycles through them).
    #[arg(long, value_enum, default_value_t = crate::commands::top::SortBy::Graph)]
    pub sort: crate::commands::top::SortBy,
    /// Only components whose id matches (a glob with `*`, else a substring; `/` edits it).
    #[arg(long)]
    pub filter: Option<String>,
    /// Print one sample as JSON and exit (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct VrlArgs {
    /// The program, inline (or use --program).
    #[arg(value_name = "PROGRAM", conflicts_with = "program")]
    pub source: Option<String>,
    /// A file holding the program (a `dlq replay --fix` program, for one).
    #[arg(short = 'p', long, value_name = "FILE")]
    pub program: Option<PathBuf>,
    /// Events, one per line (JSON objects; other lines become `{"message": line}`). Default:
    /// stdin.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print each event after the program, not the value of its last expression.
    #[arg(short = 'o', long)]
    pub print_object: bool,
    /// Print VRL's warnings about the program (to stderr).
    #[arg(long)]
    pub print_warnings: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TestArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Config files to test (same as --config); several are merged into one config.
    #[arg(value_name = "FILE", value_delimiter = ',')]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Config files to check (same as --config).
    #[arg(value_name = "FILE")]
    pub paths: Vec<PathBuf>,
    /// Fail when there are warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Leave out what is about this machine rather than the config (files the config names
    /// that are not here, such as TLS certificates), as Vector's `--no-environment`.
    /// `validate` never connects anywhere either way.
    #[arg(long)]
    pub no_environment: bool,
    /// Vector's switch to skip health checks; `validate` runs none.
    #[arg(long)]
    pub skip_healthchecks: bool,
}
