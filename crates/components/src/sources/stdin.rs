//! `stdin`: lines from standard input. Finishes at end of input, which starts a graceful
//! shutdown of the whole pipeline once every other source has finished too.
//!
//! Acknowledgements: stdin cannot answer its sender. It still makes one notifier per read so
//! every event is tracked (a copy dropped without an outcome is caught); delivery failures
//! show in the sinks' ledgers and make the process exit code 1.

use std::sync::Arc;

use bytes::BytesMut;
use serde::Deserialize;
use sluice_core::ack::{AckTally, BatchNotifier, EventFinalizer};
use sluice_core::component::{BuildError, SourceConfig, SourceContext, SourceTask};
use tokio::io::AsyncReadExt;

use super::{EventBuilder, count_rejected};
use crate::codecs::{DecodingConfig, FramingConfig};

/// Bytes per read: about 250 events of typical size per chunk, small enough that the stages
/// of a pipeline overlap against a 500-event sink buffer.
const READ_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Field that receives the host name. Default `host`; `""` disables it.
    pub host_key: Option<String>,
    /// Longest line in bytes (legacy; `framing.newline_delimited.max_length` wins). Default 102400.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    #[serde(default)]
    pub decoding: DecodingConfig,
    #[serde(default)]
    pub framing: FramingConfig,
}

fn default_max_length() -> usize {
    102_400
}

impl SourceConfig for StdinConfig {
    fn can_acknowledge(&self) -> bool {
        true
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let framer =
            self.framing.framer(self.decoding.default_stream_framing(), Some(self.max_length)).map_err(BuildError)?;
        let builder = EventBuilder::new(cx.id.clone(), self.decoding.decoder("stdin"), self.host_key.as_deref());
        let SourceContext { mut out, mut shutdown, acknowledgements, globals, .. } = cx;
        Ok(Box::pin(async move {
            let tally = Arc::new(AckTally::default());
            let mut stdin = tokio::io::stdin();
            let mut buf = BytesMut::with_capacity(READ_SIZE);
            let mut frames = Vec::new();
            let mut stats = Default::default();
            let mut skipping = false;
            loop {
                if buf.capacity() - buf.len() < READ_SIZE / 4 {
                    buf.reserve(READ_SIZE);
                }
                let read = tokio::select! {
                    biased;
                    () = shutdown.wait() => break,
                    read = stdin.read_buf(&mut buf) => read,
                };
                let eof = match read {
                    Ok(0) => true,
                    Ok(n) => {
                        out.ledger().received_bytes(n);
                        false
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "Cannot read standard input; stopping the source.");
                        out.ledger().error("read_failed", "receiving");
                        true
                    }
                };
                if skipping {
                    // Drop the rest of an oversized line, up to its delimiter.
                    match memchr::memchr(b'\n', &buf) {
                        Some(at) => {
                            let _ = buf.split_to(at + 1);
                            skipping = false;
                        }
                        None => buf.clear(),
                    }
                }
                framer.split(&mut buf, &mut frames, &mut stats);
                if eof {
                    if !skipping {
                        framer.finish(&mut buf, &mut frames, &mut stats);
                    }
                } else if framer.tail_oversized(&buf) {
                    buf.clear();
                    skipping = true;
                    stats.oversized += 1;
                }
                count_rejected(
                    out.ledger(),
                    std::mem::take(&mut stats.oversized),
                    "oversized",
                    "line longer than max_length",
                );
                if !frames.is_empty() {
                    let finalizer = if acknowledgements {
                        EventFinalizer::new(BatchNotifier::with_tally(tally.clone()))
                    } else {
                        EventFinalizer::default()
                    };
                    let mut chunk = Vec::with_capacity(frames.len());
                    let (failed, error) =
                        builder.decode_all(frames.drain(..), finalizer, Some(&globals.hostname), &[], &mut chunk);
                    count_rejected(out.ledger(), failed, "decode_error", error.as_deref().unwrap_or_default());
                    if out.send(chunk).await.is_err() {
                        break;
                    }
                }
                if eof {
                    break;
                }
            }
            Ok(())
        }))
    }
}
