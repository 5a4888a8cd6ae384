//! TLS trust as an operator sets it up: a self-signed certificate made the usual way (`openssl req -x509`, so
//! `CA:TRUE`) trusted through `ldap.ca_file` / `cloudshell.ca_file`, and handshake failures told in words.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use cloudshell_ldap_sync::cloudshell::{Client, Error as CsError};
use cloudshell_ldap_sync::group_name::GroupName;
use cloudshell_ldap_sync::ldap::{self, Error, Settings};
use common::{Directory, Sim, Slapd};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A self-signed certificate as `openssl req -x509 -subj /CN=<first name>` makes it: `CA:TRUE`, naming `names`.
/// Returns the certificate and the key, PEM.
fn self_signed_ca(names: &[&str], expired: bool) -> (String, String, Vec<u8>, Vec<u8>) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec(), key.serialize_der())
}

fn team() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    d.group("Team", &[alice]);
    d
}

fn ldaps_url(slapd: &Slapd, host: &str) -> String {
    format!("ldaps://{host}:{}", slapd.tls_port.unwrap())
}

async fn members(s: &Settings) -> Result<Vec<String>, Error> {
    let snap = ldap::snapshot(s, &[GroupName::new("Team")]).await?;
    let group = snap.groups[0].result.as_ref().unwrap_or_else(|e| panic!("{e}"));
    Ok(group.members.iter().map(|m| m.username.to_string()).collect())
}

/// No rustls or webpki name in what the operator reads.
fn assert_in_words(text: &str) {
    for name in ["CaUsedAsEndEntity", "UnknownIssuer", "InvalidContentType", "NotValidForName", "Other(", "corrupt"] {
        assert!(!text.contains(name), "{name} in {text}");
    }
}

#[tokio::test]
async fn a_self_signed_ca_certificate_in_ldap_ca_file_is_trusted_as_that_certificate() {
    let (cert, key, ..) = self_signed_ca(&["localhost"], false);
    let slapd = Slapd::start_tls_with(&team(), &cert, &key);
    let trusted = |url: &str| Settings { ca_file: Some(slapd.ca_file()), ..common::ldap_settings(url) };

    assert_eq!(members(&trusted(&ldaps_url(&slapd, "localhost"))).await.unwrap(), ["alice"], "ldaps");
    let starttls = Settings { starttls: true, ..trusted(&format!("ldap://localhost:{}", slapd.port)) };
    assert_eq!(members(&starttls).await.unwrap(), ["alice"], "StartTLS");

    // Not in ldap.ca_file: refused, and the words say what to put there.
    let err = members(&common::ldap_settings(&ldaps_url(&slapd, "localhost"))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("a CA certificate") && text.contains("put that very certificate in ldap.ca_file"), "{text}");
    assert_in_words(&text);
    assert!(std::error::Error::source(&err).is_some(), "the library's error stays the cause");
}

#[tokio::test]
async fn a_trusted_certificate_for_another_name_is_refused_naming_both_names() {
    let (cert, key, ..) = self_signed_ca(&["localhost"], false);
    let slapd = Slapd::start_tls_with(&team(), &cert, &key);
    let s = Settings {
        ca_file: Some(slapd.ca_file()),
        connect_retries: 3,
        ..common::ldap_settings(&ldaps_url(&slapd, "127.0.0.1"))
    };
    let started = std::time::Instant::now();
    let err = members(&s).await.unwrap_err();
    // Not retried: the same server shows the same certificate (three retries wait 1.2 s between them).
    assert!(started.elapsed() < std::time::Duration::from_millis(1000), "{:?}", started.elapsed());
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("does not name 127.0.0.1 (it names localhost)"), "{text}");
    assert_in_words(&text);
}

#[tokio::test]
async fn an_expired_certificate_in_ldap_ca_file_is_still_refused() {
    let (cert, key, ..) = self_signed_ca(&["localhost"], true);
    let slapd = Slapd::start_tls_with(&team(), &cert, &key);
    let s = Settings { ca_file: Some(slapd.ca_file()), ..common::ldap_settings(&ldaps_url(&slapd, "localhost")) };
    let text = members(&s).await.unwrap_err().to_string();
    assert!(text.contains("it expired on 2021-01-01") && text.contains("renew it"), "{text}");
    assert_in_words(&text);
}

#[tokio::test]
async fn ldaps_to_a_plain_ldap_port_says_so() {
    let slapd = Slapd::start(&team());
    let url = format!("ldaps://127.0.0.1:{}", slapd.port);
    let text = members(&common::ldap_settings(&url)).await.unwrap_err().to_string();
    assert!(
        text.contains(&format!("the server at {url} did not answer with TLS"))
            && text
                .contains("is it an ldap:// port? use ldap:// (with ldap.starttls = true) or the server's ldaps port"),
        "{text}"
    );
    assert_in_words(&text);
}

/// A TLS front for the simulator on 127.0.0.1 with the given certificate: CloudShell behind https.
async fn tls_front(sim: &Sim, cert_der: Vec<u8>, key_der: Vec<u8>) -> u16 {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert_der)], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = sim.url().trim_start_matches("http://").trim_end_matches('/').to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn write_pem(dir: &tempfile::TempDir, pem: &str) -> PathBuf {
    let path = dir.path().join("cloudshell.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn cloudshell_ca_file_trusts_a_self_signed_certificate() {
    let sim =
        Sim::start(cloudshell_sim::Config { existing_users: vec!["alice".into(), "bob".into()], ..Default::default() });
    let (pem, _, cert_der, key_der) = self_signed_ca(&["localhost"], false);
    let port = tls_front(&sim, cert_der, key_der).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://localhost:{port}");
    let trusted = cloudshell_ldap_sync::cloudshell::Settings {
        ca_file: Some(write_pem(&dir, &pem)),
        ..common::cloudshell_settings(&url)
    };
    let mut users: Vec<String> = Client::new(trusted.clone())
        .unwrap()
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|u| u.username)
        .map(|u| u.to_string())
        .collect();
    users.sort();
    assert!(users.contains(&"alice".to_string()) && users.contains(&"bob".to_string()), "{users:?}");

    // Without it: refused, in words naming the key to set.
    let err = Client::new(common::cloudshell_settings(&url)).unwrap().list_users().await.unwrap_err();
    assert!(matches!(err, CsError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("put that very certificate in cloudshell.ca_file"), "{text}");
    assert_in_words(&text);

    // Another name: refused, naming both.
    let other = cloudshell_ldap_sync::cloudshell::Settings {
        url: format!("https://127.0.0.1:{port}").parse().unwrap(),
        ..trusted.clone()
    };
    let text = Client::new(other).unwrap().list_users().await.unwrap_err().to_string();
    assert!(text.contains("does not name 127.0.0.1 (it names localhost)"), "{text}");

    // https:// to the plain http port.
    let plain = cloudshell_ldap_sync::cloudshell::Settings {
        url: sim.url().replace("http://", "https://").parse().unwrap(),
        ..trusted.clone()
    };
    let text = Client::new(plain).unwrap().list_users().await.unwrap_err().to_string();
    assert!(text.contains("did not answer with TLS: is it an http:// port?"), "{text}");
    assert_in_words(&text);

    // A file that is not PEM: named.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "hello").unwrap();
    let err = Client::new(cloudshell_ldap_sync::cloudshell::Settings { ca_file: Some(bad), ..trusted }).err().unwrap();
    assert!(err.to_string().contains("cloudshell.ca_file") && err.to_string().contains("bad.pem"), "{err}");
}

/// The operator's view: `check` against CloudShell behind a self-signed certificate not in
/// `cloudshell.ca_file` says what to do, and no library logs a line of its own (reqwest's platform verifier
/// logged an ERROR line naming its enums).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_what_to_do_about_an_untrusted_cloudshell_certificate_without_library_log_lines() {
    let slapd = Slapd::start(&team());
    let sim = Sim::start(cloudshell_sim::Config::default());
    let (_, _, cert_der, key_der) = self_signed_ca(&["localhost"], false);
    let port = tls_front(&sim, cert_der, key_der).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[ldap]\nurl = \"{}\"\nbind_dn = \"{}\"\nbind_password_env = \"LDAP_PW\"\nbase_dn = \"{}\"\n\n\
             [cloudshell]\nurl = \"https://localhost:{port}\"\npassword_env = \"CS_PW\"\n\n[sync]\ngroups = [\"Team\"]\n",
            slapd.url(),
            common::SERVICE_DN,
            common::BASE_DN
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(common::binary())
        .args(["check", "-c"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("LDAP_PW", common::SERVICE_PASSWORD)
        .env("CS_PW", "admin")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("put that very certificate in cloudshell.ca_file"), "{stdout}");
    assert_in_words(&stdout);
    assert!(!stderr.contains("rustls"), "{stderr}");
}
