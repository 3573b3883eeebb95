//! Vector's `proxy` block, at the top level and on components. What it means for
//! connections (tunnels, absolute form, `NO_PROXY`) is `sluice_net::proxy`'s.

use serde::Deserialize;

use crate::component::ConfigIssue;

/// The `proxy` block (Vector's fields).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Whether proxies are used at all, from here or from the environment. Default true.
    pub enabled: Option<bool>,
    /// Proxy for `http://` destinations. Default: `HTTP_PROXY`.
    pub http: Option<String>,
    /// Proxy for `https://` destinations. Default: `HTTPS_PROXY`.
    pub https: Option<String>,
    /// Hosts reached directly, added to `NO_PROXY`.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// This component's block over the top-level one: its own `enabled`, `http` and `https`
    /// where set, and both `no_proxy` lists.
    pub fn over(&self, global: &ProxyConfig) -> ProxyConfig {
        let mut no_proxy = global.no_proxy.clone();
        no_proxy.extend(self.no_proxy.iter().cloned());
        ProxyConfig {
            enabled: self.enabled.or(global.enabled),
            http: self.http.clone().or_else(|| global.http.clone()),
            https: self.https.clone().or_else(|| global.https.clone()),
            no_proxy,
        }
    }

    /// Problems `validate` can see: proxy URLs that do not parse.
    pub fn check(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (field, value) in [("http", &self.http), ("https", &self.https)] {
            if let Some(value) = value {
                let ok = value
                    .split_once("://")
                    .is_some_and(|(scheme, rest)| scheme == "http" && !rest.trim_matches('/').is_empty());
                if !ok {
                    issues.push(ConfigIssue::new(
                        format!("{prefix}.{field}"),
                        format!("`{value}` is not an `http://host:port` proxy URL"),
                    ));
                }
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_components_block_overrides_the_top_level_one_and_no_proxy_lists_add_up() {
        let global = ProxyConfig {
            enabled: None,
            http: Some("http://global:3128".into()),
            https: Some("http://global:3128".into()),
            no_proxy: vec!["internal".into()],
        };
        let own = ProxyConfig {
            https: Some("http://own:3128".into()),
            no_proxy: vec!["10.0.0.0/8".into()],
            ..ProxyConfig::default()
        };
        let merged = own.over(&global);
        assert_eq!(merged.http.as_deref(), Some("http://global:3128"));
        assert_eq!(merged.https.as_deref(), Some("http://own:3128"));
        assert_eq!(merged.no_proxy, vec!["internal".to_owned(), "10.0.0.0/8".to_owned()]);
        let off = ProxyConfig { enabled: Some(false), ..ProxyConfig::default() }.over(&global);
        assert_eq!(off.enabled, Some(false));
        assert_eq!(ProxyConfig { http: Some("proxy:3128".into()), ..ProxyConfig::default() }.check("proxy").len(), 1);
    }
}
