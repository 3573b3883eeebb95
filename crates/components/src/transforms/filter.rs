//! `filter`: keep events for which `condition` is true. Others are discarded, counted as
//! intentional (`filter`); a condition that errors counts as false and is logged.

use serde::Deserialize;
use sluice_core::Chunk;
use sluice_core::component::{
    BuildError, ConfigIssue, FunctionTransform, GlobalOptions, TransformConfig, TransformContext, TransformOutputs,
};

use super::vrl::{Condition, ConditionConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Required: a VRL boolean expression, or `{ type = "vrl", source = "…" }`.
    pub condition: ConditionConfig,
}

impl TransformConfig for FilterConfig {
    fn concurrent(&self) -> bool {
        true
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        match self.condition.build() {
            Ok(_) => Vec::new(),
            Err(diagnostics) => vec![ConfigIssue::new("condition", format!("VRL does not compile:\n{diagnostics}"))],
        }
    }

    fn build(&self, cx: &TransformContext) -> Result<Box<dyn FunctionTransform>, BuildError> {
        let condition = self.condition.build().map_err(BuildError)?;
        Ok(Box::new(Filter { condition, component_id: cx.id.to_string(), log_limit: Default::default() }))
    }
}

struct Filter {
    condition: Condition,
    component_id: String,
    log_limit: sluice_core::log_limit::LogLimit,
}

impl FunctionTransform for Filter {
    fn transform(&mut self, chunk: Chunk, out: &mut TransformOutputs) {
        let mut errors = 0usize;
        let mut last_error = None;
        for mut event in chunk {
            match self.condition.check(&mut event) {
                Ok(true) => out.default.push(event),
                Ok(false) => out.discard(event, "filter", true),
                Err(err) => {
                    errors += 1;
                    last_error = Some(err);
                    out.discard(event, "filter", true);
                }
            }
        }
        if errors > 0
            && let Some(folded) = self.log_limit.admit()
        {
            tracing::warn!(
                component_id = self.component_id.as_str(),
                similar_since_last_line = folded,
                errors,
                error = last_error.as_deref().unwrap_or_default(),
                "Condition failed on some events; they count as not matching."
            );
        }
    }
}
