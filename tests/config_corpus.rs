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

/// Each file, the key its error must name (`None`: a syntax error with no key), and words its message must hold.
const EXPECTED: &[(&str, Option<&str>, &str)] = &[
    ("empty.toml", Some("ldap"), "the [ldap] table is missing: add it, with url, bind_dn"),
    ("not-toml.toml", None, "expected `=`"),
    ("unclosed-table.toml", None, "unclosed table"),
    ("unknown-table.toml", Some("sinc"), "not a table of the configuration; did you mean sync?"),
    ("unknown-key.toml", Some("ldap.base_dm"), "not a key of [ldap]; did you mean base_dn?"),
    ("typo-suggests-a-key.toml", Some("sync.max_import_per_run"), "did you mean max_imports_per_run?"),
    ("missing-ldap.toml", Some("ldap"), "the [ldap] table is missing"),
    ("missing-ldap-url.toml", Some("ldap.url"), "missing from [ldap]: add a line such as url = \"ldaps://"),
    ("sync-only-by-subtable.toml", Some("sync.groups"), "missing from [sync]"),
    ("wrong-type-page-size.toml", Some("ldap.page_size"), "expected an integer, got the string \"big\""),
    (
        "quoted-integer.toml",
        Some("sync.max_imports_per_run"),
        "key sync.max_imports_per_run: expected an integer, got the string \"1000\" (write it without quotes)",
    ),
    ("negative-page-size.toml", Some("ldap.page_size"), "must be between 1 and"),
    ("huge-page-size.toml", Some("ldap.page_size"), "got 99999999999999999999, which is out of range"),
    ("bad-ldap-scheme.toml", Some("ldap.url"), "scheme must be ldap:// or ldaps://, got https://"),
    (
        "ldap-url-without-scheme.toml",
        Some("ldap.url"),
        "\"dc1.example.org:389\" has no scheme: write it as \"ldap://dc1.example.org:389\", or \
         \"ldaps://dc1.example.org:636\" for TLS",
    ),
    (
        "cloudshell-url-without-scheme.toml",
        Some("cloudshell.url"),
        "has no scheme: write it as \"http://cloudshell.example.org:9000\", or \"https://cloudshell.example.org\"",
    ),
    ("empty-url-list.toml", Some("ldap.url"), "lists no URL"),
    ("url-list-of-numbers.toml", Some("ldap.url"), "expected a URL such as \"ldaps://dc1.example.org:636\", or a list"),
    ("starttls-on-ldaps.toml", Some("ldap.starttls"), "ldaps:// is TLS already"),
    ("bad-filter.toml", Some("ldap.user_filter"), "is not an LDAP filter"),
    ("bad-duration.toml", Some("cloudshell.timeout"), "is not a duration"),
    ("zero-duration.toml", Some("cloudshell.timeout"), "longer than zero"),
    ("cloudshell-url-with-password.toml", Some("cloudshell.url"), "must not carry credentials"),
    ("bad-auth-scheme.toml", Some("cloudshell.auth_scheme"), "must be \"Basic\" or \"Bearer\""),
    ("nan-rate.toml", Some("cloudshell.max_requests_per_second"), "got NaN"),
    ("too-many-retries.toml", Some("cloudshell.retries"), "must be between 0 and 20"),
    ("no-groups.toml", Some("sync.groups"), "lists no group"),
    ("blank-group.toml", Some("sync.groups"), "empty group name"),
    ("duplicate-groups.toml", Some("sync.groups"), "twice"),
    ("groups-not-a-list.toml", Some("sync.groups"), "expected a list in brackets, like [\"a\", \"b\"], got the string"),
    (
        "group-not-a-string.toml",
        Some("sync.groups"),
        "item 2 of the list: expected a string in quotes, got the integer 7",
    ),
    ("shrink-over-100.toml", Some("sync.max_shrink_percent"), "between 0 and 100"),
    ("five-field-cron.toml", Some("schedule.cron"), "seconds first"),
    ("bad-timezone.toml", Some("schedule.timezone"), "IANA time zone"),
    ("bad-listen.toml", Some("monitor.listen"), "not an address"),
    ("bad-history-retention.toml", Some("monitor.history_retention"), "\"0s\" keeps every row"),
    ("bad-grace-period.toml", Some("sync.leavers.grace_period"), "\"a week\" is not a duration like \"0s\""),
    ("bad-log-format.toml", Some("log.format"), "\"text\" or \"json\""),
    ("both-password-sources.toml", Some("ldap.bind_password_file"), "not both"),
    ("unset-password-env.toml", Some("ldap.bind_password_env"), "is not set"),
    ("missing-password-file.toml", Some("ldap.bind_password_file"), "cannot read /nonexistent/pw"),
    ("duplicate-key.toml", None, "duplicate key"),
    ("invalid-utf8.toml", None, "valid UTF-8"),
    ("nul-byte.toml", Some("sync.groups"), "control character"),
];

#[test]
fn every_corpus_file_is_refused_with_a_clear_error() {
    let mut files: Vec<String> =
        std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    files.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(f, _, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "every corpus file has an expectation");

    for (file, key, words) in EXPECTED {
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
        assert!(shown.contains(words), "{file}: {shown}");
        assert!(!shown.contains("corpus-secret"), "{file} leaks the secret: {shown}");
        // serde's own wording (`invalid type: ... expected i64`, the list of every key) never reaches the operator.
        assert!(!shown.contains("invalid type") && !shown.contains("expected one of"), "{file}: {shown}");
        if let Some(key) = key {
            assert_eq!(err.key.as_deref(), Some(*key), "{file}: {shown}");
            // A missing table has no line to point at, rather than a made-up 1:1.
            let missing_table = matches!(*file, "empty.toml" | "missing-ldap.toml");
            assert_eq!(err.line.is_some(), !missing_table, "{file}: {shown}");
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
history_retention = "400d"
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
