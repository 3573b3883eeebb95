//! What the `kafka` source and sink share: the connection settings (`bootstrap_servers`,
//! `sasl`, `tls`, `socket_timeout_ms`, `librdkafka_options`) turned into a librdkafka client
//! configuration, checked before start so that a bad setting is a config error with its field,
//! not a stream of connection failures.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;
use sluice_core::component::ConfigIssue;
use sluice_net::TlsConfig;

/// Vector's `sasl` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub enabled: Option<bool>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The connection fields of both kafka components.
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    /// `host:port,host:port`.
    pub bootstrap_servers: String,
    #[serde(default = "default_socket_timeout_ms")]
    pub socket_timeout_ms: u64,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Passed to librdkafka as they are, after (and over) every setting sluice makes.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn default_socket_timeout_ms() -> u64 {
    60_000
}

/// SASL mechanisms librdkafka is built with here (no GSSAPI: no Kerberos library).
const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl Connection {
    fn sasl(&self) -> Option<&SaslConfig> {
        self.sasl.as_ref().filter(|s| s.enabled.unwrap_or(false))
    }

    fn tls_enabled(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.enabled.unwrap_or(true))
    }

    /// What `validate` reports about these settings.
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.bootstrap_servers.split(',').all(|s| s.trim().is_empty()) {
            issues.push(ConfigIssue::new("bootstrap_servers", "no broker address (expected `host:port,host:port`)"));
        }
        for server in self.bootstrap_servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let port = server.rsplit_once(':').map(|(_, port)| port);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                issues.push(ConfigIssue::new(
                    "bootstrap_servers",
                    format!("`{server}` is not `host:port` (Kafka has no default port here; 9092 is usual)"),
                ));
            }
        }
        if let Some(sasl) = self.sasl() {
            match sasl.mechanism.as_deref() {
                None => issues.push(ConfigIssue::new(
                    "sasl.mechanism",
                    "required when sasl is enabled (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
                )),
                Some(m) if !MECHANISMS.contains(&m) => issues.push(ConfigIssue::new(
                    "sasl.mechanism",
                    format!("unknown mechanism `{m}`; expected one of {}", MECHANISMS.join(", ")),
                )),
                Some(_) => {}
            }
            if sasl.mechanism.as_deref() != Some("OAUTHBEARER") {
                for (field, value) in [("sasl.username", &sasl.username), ("sasl.password", &sasl.password)] {
                    if value.is_none() {
                        issues.push(ConfigIssue::new(field, "required when sasl is enabled"));
                    }
                }
            }
        }
        if let Some(tls) = self.tls.as_ref().filter(|_| self.tls_enabled()) {
            issues.extend(tls.check("tls", false));
            if tls.server_name.is_some() {
                issues.push(ConfigIssue::new(
                    "tls.server_name",
                    "not supported by the kafka client: the broker's advertised host name is checked",
                ));
            }
        }
        issues
    }

    /// The librdkafka configuration: connection, security, then `librdkafka_options`.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("socket.timeout.ms", self.socket_timeout_ms.to_string());
        // librdkafka logs through the client's context; sluice counts errors itself.
        config.set("log.connection.close", "false");
        let protocol = match (self.sasl().is_some(), self.tls_enabled()) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(sasl) = self.sasl() {
            if let Some(mechanism) = &sasl.mechanism {
                config.set("sasl.mechanism", mechanism);
            }
            if let Some(username) = &sasl.username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &sasl.password {
                config.set("sasl.password", password);
            }
        }
        if let Some(tls) = self.tls.as_ref().filter(|_| self.tls_enabled()) {
            // A value is a path, or the PEM text itself (as everywhere in sluice).
            let pem_or_path = |config: &mut ClientConfig, value: &str, pem_key: &str, path_key: &str| {
                if value.contains("-----BEGIN") {
                    config.set(pem_key, value);
                } else {
                    config.set(path_key, value);
                }
            };
            if let Some(ca) = &tls.ca_file {
                pem_or_path(&mut config, ca, "ssl.ca.pem", "ssl.ca.location");
            }
            if let Some(crt) = &tls.crt_file {
                pem_or_path(&mut config, crt, "ssl.certificate.pem", "ssl.certificate.location");
            }
            if let Some(key) = &tls.key_file {
                pem_or_path(&mut config, key, "ssl.key.pem", "ssl.key.location");
            }
            if let Some(pass) = &tls.key_pass {
                config.set("ssl.key.password", pass);
            }
            if tls.verify_certificate == Some(false) {
                config.set("enable.ssl.certificate.verification", "false");
            }
            let hostname = tls.verify_hostname.unwrap_or(true) && tls.verify_certificate != Some(false);
            config.set("ssl.endpoint.identification.algorithm", if hostname { "https" } else { "none" });
        }
        for (key, value) in &self.librdkafka_options {
            config.set(key, value);
        }
        config
    }
}

/// Checks a configuration by creating a client from it without connecting: librdkafka names
/// the option it refuses.
pub fn probe<C: rdkafka::config::FromClientConfig>(config: &ClientConfig) -> Result<(), ConfigIssue> {
    C::from_config(config).map(drop).map_err(|e| {
        let message = e.to_string();
        let field =
            if message.contains("ssl") || message.contains("certificate") { "tls" } else { "librdkafka_options" };
        ConfigIssue::new(field, format!("librdkafka refuses the configuration: {message}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(toml: &str) -> Connection {
        let value: serde_json::Value = serde_json::from_str(toml).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn security_protocol_follows_sasl_and_tls() {
        let cases = [
            (r#"{"bootstrap_servers":"a:1"}"#, "plaintext"),
            (r#"{"bootstrap_servers":"a:1","tls":{"enabled":true}}"#, "ssl"),
            (r#"{"bootstrap_servers":"a:1","tls":{}}"#, "ssl"),
            (r#"{"bootstrap_servers":"a:1","tls":{"enabled":false}}"#, "plaintext"),
            (
                r#"{"bootstrap_servers":"a:1","sasl":{"enabled":true,"mechanism":"PLAIN","username":"u","password":"p"}}"#,
                "sasl_plaintext",
            ),
            (
                r#"{"bootstrap_servers":"a:1","tls":{"enabled":true},"sasl":{"enabled":true,"mechanism":"PLAIN","username":"u","password":"p"}}"#,
                "sasl_ssl",
            ),
        ];
        for (json, protocol) in cases {
            let config = connection(json).client_config();
            assert_eq!(config.get("security.protocol"), Some(protocol), "{json}");
        }
    }

    #[test]
    fn librdkafka_options_win_over_settings() {
        let c = connection(r#"{"bootstrap_servers":"a:1","librdkafka_options":{"socket.timeout.ms":"5"}}"#);
        assert_eq!(c.client_config().get("socket.timeout.ms"), Some("5"));
    }

    #[test]
    fn bad_addresses_and_sasl_are_config_errors() {
        let c = connection(r#"{"bootstrap_servers":"kafka","sasl":{"enabled":true,"mechanism":"GSSAPI"}}"#);
        let fields: Vec<String> = c.check().into_iter().map(|i| i.path).collect();
        assert_eq!(fields, ["bootstrap_servers", "sasl.mechanism", "sasl.username", "sasl.password"]);
    }

    #[test]
    fn pem_text_and_paths_go_to_their_own_options() {
        let c = connection(
            r#"{"bootstrap_servers":"a:1","tls":{"ca_file":"-----BEGIN CERTIFICATE-----\nx","crt_file":"/c.pem","verify_hostname":false}}"#,
        );
        let config = c.client_config();
        assert!(config.get("ssl.ca.pem").is_some());
        assert_eq!(config.get("ssl.certificate.location"), Some("/c.pem"));
        assert_eq!(config.get("ssl.endpoint.identification.algorithm"), Some("none"));
    }
}
