//! Broken configuration files never panic and always get an error naming the file and, where there is one,
//! the key and its line: a corpus of hand-written mistakes, and property tests over arbitrary and mutated text.

use std::path::{Path, PathBuf};

use cloudshell_ldap_sync::config;
use proptest::prelude::*;

fn env(name: &str) -> Option<String> {
    (name == "CORPUS_PW").then(|| "corpus-secret".to_string())
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_corpus")
}

/// Each file and the key its error must name (`None`: a syntax error with no key).
const EXPECTED: &[(&str, Option<&str>)] = &[
    ("empty.toml", Some("ldap")),
    ("not-toml.toml", None),
    ("unclosed-table.toml", None),
    ("unknown-table.toml", Some("sinc")),
    ("unknown-key.toml", Some("base_dm")),
    ("missing-ldap.toml", Some("ldap")),
    ("wrong-type-page-size.toml", None),
    ("negative-page-size.toml", Some("ldap.page_size")),
    ("huge-page-size.toml", None),
    ("bad-ldap-scheme.toml", Some("ldap.url")),
    ("empty-url-list.toml", Some("ldap.url")),
    ("url-list-of-numbers.toml", None),
    ("starttls-on-ldaps.toml", Some("ldap.starttls")),
    ("bad-filter.toml", Some("ldap.user_filter")),
    ("bad-duration.toml", Some("cloudshell.timeout")),
    ("zero-duration.toml", Some("cloudshell.timeout")),
    ("cloudshell-url-with-password.toml", Some("cloudshell.url")),
    ("bad-auth-scheme.toml", Some("cloudshell.auth_scheme")),
    ("nan-rate.toml", Some("cloudshell.max_requests_per_second")),
    ("too-many-retries.toml", Some("cloudshell.retries")),
    ("no-groups.toml", Some("sync.groups")),
    ("blank-group.toml", Some("sync.groups")),
    ("duplicate-groups.toml", Some("sync.groups")),
    ("groups-not-a-list.toml", None),
    ("shrink-over-100.toml", Some("sync.max_shrink_percent")),
    ("five-field-cron.toml", Some("schedule.cron")),
    ("bad-timezone.toml", Some("schedule.timezone")),
    ("bad-listen.toml", Some("monitor.listen")),
    ("bad-log-format.toml", Some("log.format")),
    ("both-password-sources.toml", Some("ldap.bind_password_file")),
    ("unset-password-env.toml", Some("ldap.bind_password_env")),
    ("missing-password-file.toml", Some("ldap.bind_password_file")),
    ("duplicate-key.toml", None),
    ("invalid-utf8.toml", None),
    ("nul-byte.toml", Some("sync.groups")),
];

#[test]
fn every_corpus_file_is_refused_with_a_clear_error() {
    let mut files: Vec<String> =
        std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    files.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "every corpus file has an expectation");

    for (file, key) in EXPECTED {
        let path = corpus().join(file);
        let result = match std::fs::read_to_string(&path) {
            Ok(text) => config::parse(&path, &text, &env),
            Err(_) => config::load(&path), // not UTF-8: the loader's own error
        };
        let err = match result {
            Ok(_) => panic!("{file} was accepted"),
            Err(e) => e,
        };
        let shown = err.to_string();
        assert!(shown.starts_with(&path.display().to_string()), "{file}: {shown}");
        assert!(!err.message.is_empty(), "{file}");
        assert!(!shown.contains("corpus-secret"), "{file} leaks the secret: {shown}");
        if let Some(key) = key {
            assert_eq!(err.key.as_deref(), Some(*key), "{file}: {shown}");
            if !matches!(*file, "empty.toml" | "missing-ldap.toml") {
                assert!(err.line.is_some(), "{file} gives no line: {shown}");
            }
        }
    }
}

const VALID: &str = r#"[ldap]
url = ["ldap://127.0.0.1:389", "ldaps://dc2.example.org"]
bind_dn = "cn=svc,dc=example,dc=org"
bind_password_env = "CORPUS_PW"
base_dn = "dc=example,dc=org"
page_size = 500
timeout = "30s"
nested_groups = true

[cloudshell]
url = "http://127.0.0.1:9000"
password_env = "CORPUS_PW"
auth_scheme = "Bearer"
retries = 3

[sync]
groups = ["Team", "Ops (EU) *"]
max_imports_per_run = 10
max_shrink_percent = 50

[schedule]
cron = "0 */15 * * * *"
timezone = "Europe/Paris"

[monitor]
listen = "127.0.0.1:9464"
"#;

#[test]
fn the_valid_base_of_the_property_tests_parses() {
    config::parse(Path::new("valid.toml"), VALID, &env).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = config::parse(Path::new("fuzz.toml"), &text, &env);
    }

    #[test]
    fn mutated_configs_never_panic_and_errors_name_the_file(
        cut in 0usize..VALID.len(),
        insert in "[\\[\\]\"=,#a-z0-9 \\n\\\\{}.-]{0,12}",
        drop_len in 0usize..20,
    ) {
        let mut text = String::new();
        let cut = (0..=cut).rev().find(|&i| VALID.is_char_boundary(i)).unwrap_or(0);
        let resume = (cut + drop_len..=VALID.len()).find(|&i| VALID.is_char_boundary(i)).unwrap_or(VALID.len());
        text.push_str(&VALID[..cut]);
        text.push_str(&insert);
        text.push_str(&VALID[resume..]);
        if let Err(e) = config::parse(Path::new("mutated.toml"), &text, &env) {
            prop_assert!(e.to_string().starts_with("mutated.toml"), "{}", e);
            prop_assert!(!e.to_string().contains("corpus-secret"));
        }
    }
}
