//! `console`: events to standard output or standard error, one encoded event per frame.
//! Each chunk is one write; events resolve as delivered once written, failed if the write fails.

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::ack::Outcome;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use tokio::io::AsyncWriteExt;

use super::{Pending, reject};
use crate::codecs::{EncodingConfig, SinkFraming};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `stdout` (default) or `stderr`.
    #[serde(default)]
    pub target: ConsoleTarget,
    /// Required.
    pub encoding: EncodingConfig,
    #[serde(default)]
    pub framing: SinkFraming,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleTarget {
    #[default]
    Stdout,
    Stderr,
}

impl SinkConfig for ConsoleConfig {
    fn input_type(&self) -> sluice_core::component::DataType {
        sluice_core::component::DataType::ANY
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.framing.delimiter().err());
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let delimiter = self.framing.delimiter().map_err(|i| BuildError(i.message))?;
        Ok(Box::new(Console { config: self.clone(), delimiter, cx }))
    }
}

struct Console {
    config: ConsoleConfig,
    delimiter: Option<u8>,
    cx: SinkContext,
}

impl Sink for Console {
    fn run(self: Box<Self>, mut input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let Self { config, delimiter, cx } = *self;
            let encoder = config.encoding.build();
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match config.target {
                ConsoleTarget::Stdout => Box::new(tokio::io::stdout()),
                ConsoleTarget::Stderr => Box::new(tokio::io::stderr()),
            };
            let mut buf = Vec::with_capacity(64 * 1024);
            let write_log = sluice_core::log_limit::LogLimit::default();
            while let Some(chunk) = input.next().await {
                buf.clear();
                let mut pending = Pending::default();
                for mut event in chunk {
                    let mark = buf.len();
                    match encoder.encode(&event, &mut buf) {
                        Ok(()) => {
                            buf.extend(delimiter);
                            pending.add(&mut event);
                        }
                        Err(err) => {
                            buf.truncate(mark);
                            reject(&cx.ledger, event, "encode_error", &err.to_string());
                        }
                    }
                }
                let written = match out.write_all(&buf).await {
                    Ok(()) => out.flush().await,
                    Err(err) => Err(err),
                };
                match written {
                    Ok(()) => {
                        cx.ledger.sent_bytes(buf.len());
                        pending.settle(&cx.ledger, Outcome::Delivered);
                    }
                    Err(err) => {
                        cx.ledger.error("write_failed", "sending");
                        if let Some(folded) = write_log.admit() {
                            tracing::error!(
                                component_id = &*cx.id,
                                error = %err,
                                events = pending.events,
                                similar_since_last_line = folded,
                                "Cannot write to the console; events counted as failed."
                            );
                        }
                        pending.settle(&cx.ledger, Outcome::Failed);
                    }
                }
            }
            Ok(())
        })
    }
}
