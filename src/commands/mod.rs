//! One module per subcommand, plus what they share.

mod api_client;
pub mod buffer;
pub mod checkpoints;
pub mod dlq;
pub mod list;
pub mod replay;
pub mod run;
pub mod tap;
pub mod test;
pub mod top;
pub mod validate;
pub mod vrl;

use sluice_runtime::config::{Diagnostic, Format, LoadOptions};

use crate::cli::{Color, ConfigArgs, LogFormat};

/// Exit code for config errors (sysexits' EX_CONFIG, as Vector uses).
pub const EXIT_CONFIG: u8 = 78;

/// Logging to stderr: level from `SLUICE_LOG` (else `VECTOR_LOG`, else -q/-v), text or JSON
/// lines, colours as asked.
pub fn init_logging(quiet: bool, verbose: u8, format: LogFormat, color: Color) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("VECTOR_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// Where the config comes from: the flags, else `VECTOR_CONFIG` / `VECTOR_CONFIG_DIR` (so a
/// Vector deployment's environment works unchanged).
pub fn load_options(args: &ConfigArgs, extra: &[std::path::PathBuf]) -> LoadOptions {
    let mut config_paths = args.config.clone();
    config_paths.extend_from_slice(extra);
    let typed_paths: Vec<_> =
        [(&args.config_toml, Format::Toml), (&args.config_yaml, Format::Yaml), (&args.config_json, Format::Json)]
            .into_iter()
            .flat_map(|(paths, format)| paths.iter().map(move |p| (p.clone(), format)))
            .collect();
    let mut config_dirs = args.config_dir.clone();
    if config_paths.is_empty() && typed_paths.is_empty() && config_dirs.is_empty() {
        let from_env = |name: &str| -> Vec<std::path::PathBuf> {
            std::env::var(name)
                .map(|v| v.split(',').filter(|p| !p.is_empty()).map(Into::into).collect())
                .unwrap_or_default()
        };
        config_paths = from_env("VECTOR_CONFIG");
        config_dirs = from_env("VECTOR_CONFIG_DIR");
    }
    LoadOptions { config_paths, typed_paths, config_dirs, documents: Vec::new() }
}

/// Prints diagnostics (one per paragraph) to stderr.
pub fn report(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}
