//! `route`: send each event to every route whose condition matches (`<id>.<route>`), and
//! events that match none to `<id>._unmatched`. An event that matches several routes is
//! cloned; each extra copy counts as received once more in the ledger.

use serde::Deserialize;
use sluice_core::Chunk;
use sluice_core::component::{
    BuildError, ConfigIssue, FunctionTransform, GlobalOptions, OutputSpec, TransformConfig, TransformContext,
    TransformOutputs,
};

use super::vrl::{Condition, ConditionConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Required: route name → condition, in order.
    pub route: serde_json::Map<String, serde_json::Value>,
    /// Send unmatched events to `<id>._unmatched`. Default true; false discards them
    /// (counted as `unmatched`).
    #[serde(default = "crate::default_true")]
    pub reroute_unmatched: bool,
}

const RESERVED: [&str; 2] = ["_unmatched", "_default"];

impl RouteConfig {
    fn conditions(&self) -> Result<Vec<(String, ConditionConfig)>, ConfigIssue> {
        self.route
            .iter()
            .map(|(name, value)| {
                if RESERVED.contains(&name.as_str()) {
                    return Err(ConfigIssue::new(format!("route.{name}"), "this route name is reserved"));
                }
                serde_json::from_value::<ConditionConfig>(value.clone()).map(|c| (name.clone(), c)).map_err(|_| {
                    ConfigIssue::new(
                        format!("route.{name}"),
                        "expected a VRL condition string, { type = \"vrl\", source = \"…\" }, or { type = \"is_log\" } (is_metric, is_trace)",
                    )
                })
            })
            .collect()
    }
}

impl TransformConfig for RouteConfig {
    fn concurrent(&self) -> bool {
        true
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        let mut outputs: Vec<OutputSpec> = self.route.keys().map(OutputSpec::named_logs).collect();
        if self.reroute_unmatched {
            outputs.push(OutputSpec::named_logs("_unmatched"));
        }
        outputs
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        match self.conditions() {
            Err(issue) => vec![issue],
            Ok(conditions) => {
                let mut issues: Vec<ConfigIssue> = conditions
                    .iter()
                    .filter_map(|(name, c)| {
                        c.build()
                            .err()
                            .map(|d| ConfigIssue::new(format!("route.{name}"), format!("VRL does not compile:\n{d}")))
                    })
                    .collect();
                if conditions.is_empty() {
                    issues.push(ConfigIssue::new("route", "at least one route is required"));
                }
                issues
            }
        }
    }

    fn build(&self, cx: &TransformContext) -> Result<Box<dyn FunctionTransform>, BuildError> {
        let conditions = self
            .conditions()
            .map_err(|issue| BuildError(issue.message))?
            .into_iter()
            .map(|(_, c)| c.build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(BuildError)?;
        Ok(Box::new(Route {
            conditions,
            reroute_unmatched: self.reroute_unmatched,
            component_id: cx.id.to_string(),
            log_limit: Default::default(),
        }))
    }
}

struct Route {
    conditions: Vec<Condition>,
    reroute_unmatched: bool,
    component_id: String,
    log_limit: sluice_core::log_limit::LogLimit,
}

impl FunctionTransform for Route {
    fn transform(&mut self, chunk: Chunk, out: &mut TransformOutputs) {
        let mut errors = 0usize;
        let mut matched = Vec::with_capacity(self.conditions.len());
        for mut event in chunk {
            matched.clear();
            for (i, condition) in self.conditions.iter_mut().enumerate() {
                match condition.check(&mut event) {
                    Ok(true) => matched.push(i),
                    Ok(false) => {}
                    Err(_) => errors += 1,
                }
            }
            match matched.split_last() {
                Some((&last, rest)) => {
                    for &i in rest {
                        out.named[i].push(event.clone());
                    }
                    out.named[last].push(event);
                }
                None if self.reroute_unmatched => out.named[self.conditions.len()].push(event),
                None => out.discard(event, "unmatched", true),
            }
        }
        if errors > 0
            && let Some(folded) = self.log_limit.admit()
        {
            tracing::warn!(
                component_id = self.component_id.as_str(),
                similar_since_last_line = folded,
                errors,
                "Route conditions failed on some events."
            );
        }
    }
}
