//! `blackhole`: accepts and forgets events (benchmarks, tests). Resolves them as delivered.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::ack::Outcome;
use sluice_core::component::{BuildError, Sink, SinkConfig, SinkContext, SinkInput};

use super::Pending;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {
    /// Seconds between summary log lines; 0 disables them. Default 0.
    #[serde(default)]
    pub print_interval_secs: u64,
    /// Most events per second to accept. Default: unlimited.
    pub rate: Option<u64>,
}

impl SinkConfig for BlackholeConfig {
    fn input_type(&self) -> sluice_core::component::DataType {
        sluice_core::component::DataType::ANY
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        Ok(Box::new(Blackhole { config: self.clone(), cx }))
    }
}

struct Blackhole {
    config: BlackholeConfig,
    cx: SinkContext,
}

impl Sink for Blackhole {
    fn run(self: Box<Self>, mut input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let Self { config, cx } = *self;
            let start = tokio::time::Instant::now();
            let mut total: u64 = 0;
            let mut last_print = Instant::now();
            while let Some(mut chunk) = input.next().await {
                total += chunk.len() as u64;
                if let Some(rate) = config.rate.filter(|r| *r > 0) {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(total as f64 / rate as f64)).await;
                }
                let mut pending = Pending::default();
                pending.add_chunk(&mut chunk);
                drop(chunk);
                pending.settle(&cx.ledger, Outcome::Delivered);
                if config.print_interval_secs > 0
                    && last_print.elapsed() >= Duration::from_secs(config.print_interval_secs)
                {
                    last_print = Instant::now();
                    tracing::info!(component_id = &*cx.id, events = total, "Blackhole totals.");
                }
            }
            Ok(())
        })
    }
}
