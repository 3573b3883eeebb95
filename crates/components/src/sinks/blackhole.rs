//! `blackhole`: accepts and forgets events (benchmarks, tests). Resolves them as delivered.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::ack::Outcome;
use sluice_core::component::{BuildError, Sink, SinkConfig, SinkContext, SinkInput};

use super::Pending;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {
    /// Seconds between summary log lines ("Collected events.", also logged at the end); 0
    /// disables them. Default 1 (as Vector).
    #[serde(default = "default_print_interval")]
    pub print_interval_secs: u64,
    /// Most events per second to accept. Default: unlimited.
    pub rate: Option<u64>,
}

fn default_print_interval() -> u64 {
    1
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
            let mut events: u64 = 0;
            // The summary is logged on its timer whether events come or not, and once more at
            // the end, so a short run still reports its total.
            let every = Duration::from_secs(config.print_interval_secs.max(1));
            let mut ticks = tokio::time::interval_at(start + every, every);
            let print = |events: u64| {
                if config.print_interval_secs > 0 {
                    tracing::info!(component_id = &*cx.id, events, "Collected events.");
                }
            };
            loop {
                let mut chunk = tokio::select! {
                    next = input.next() => match next {
                        Some(chunk) => chunk,
                        None => break,
                    },
                    _ = ticks.tick() => {
                        print(events);
                        continue;
                    }
                };
                events += chunk.len() as u64;
                if let Some(rate) = config.rate.filter(|r| *r > 0) {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(events as f64 / rate as f64)).await;
                }
                let mut pending = Pending::default();
                pending.add_chunk(&mut chunk);
                drop(chunk);
                pending.settle(&cx.ledger, Outcome::Delivered);
            }
            print(events);
            Ok(())
        })
    }
}
