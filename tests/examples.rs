//! The example configs under `config/examples/` validate (with their TLS files made here).

mod common;

use common::Case;
use sluice_net::test_pki::TestPki;

#[test]
fn the_incident_pipeline_example_validates_without_errors() {
    let case = Case::new();
    let pki = TestPki::new(case.dir.path(), "example");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/examples/incident.toml")).unwrap_or_else(|e| panic!("{e}"));
    let text = text
        .replace("/etc/sluice/tls/server.pem", &pki.server_crt.display().to_string())
        .replace("/etc/sluice/tls/server.key", &pki.server_key.display().to_string())
        .replace("/var/lib/sluice", &case.path("data").display().to_string());
    let config = case.path("incident.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let output =
        common::sluice().arg("validate").arg("--deny-warnings").arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("0 errors, 0 warnings"), "{text}");
}

#[test]
fn the_deployment_guides_configs_validate_without_warnings() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy");
    for role in ["agent", "aggregator"] {
        // Each kustomization's ConfigMap is made from files beside it.
        let kustomization = std::fs::read_to_string(root.join(role).join("kustomization.yaml"))
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        for line in kustomization.lines().filter_map(|l| l.trim().strip_prefix("- sluice.toml=")) {
            assert!(root.join(role).join(line).exists(), "{role}/kustomization.yaml names {line}");
        }
        for config in ["vector.toml", "kafka.toml"] {
            let case = Case::new();
            let text = std::fs::read_to_string(root.join(role).join(config)).unwrap_or_else(|e| panic!("{e}"));
            let path = case.path(config);
            std::fs::write(&path, text.replace("/var/lib/sluice", &case.path("data").display().to_string()))
                .unwrap_or_else(|e| panic!("{e}"));
            let output = common::sluice()
                .env("ELASTICSEARCH_PASSWORD", "secret")
                .arg("validate")
                .arg("--deny-warnings")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(output.status.success(), "{role}/{config}: {text}");
            assert!(text.contains("0 errors, 0 warnings"), "{role}/{config}: {text}");
        }
    }
}
