//! The test harness shared by every integration test: a real OpenLDAP `slapd` on a free loopback port in a
//! temp dir (stopped on drop), an LDIF builder for seeding it, and the CloudShell simulator on 127.0.0.1:0.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

pub const BASE_DN: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "admin-secret";
/// An ordinary service account: unlike the rootdn it is held to the 500-entry size limit, like a real AD.
pub const SERVICE_DN: &str = "cn=svc-sync,ou=service,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "svc-secret";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";

const SLAPD: &str = "/usr/sbin/slapd";
const INSTALL_HINT: &str = "OpenLDAP is not installed: run `apt-get install -y slapd ldap-utils` \
                            (scripts/test does this when run as root)";

/// A free TCP port on loopback (the listener is closed again, so a race is possible but unlikely).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// Writes an LDIF attribute line, base64-encoding values LDIF cannot carry as they are (RFC 2849).
pub fn ldif_line(attr: &str, value: &str) -> String {
    let safe = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ');
    if safe {
        format!("{attr}: {value}\n")
    } else {
        format!("{attr}:: {}\n", base64::engine::general_purpose::STANDARD.encode(value))
    }
}

/// Builds a seed directory: the base, `ou=people`, `ou=groups`, the service account, then users and groups.
#[derive(Clone)]
pub struct Directory {
    ldif: String,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    pub fn new() -> Directory {
        let ldif = format!(
            "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: ou=service,{BASE_DN}\nobjectClass: organizationalUnit\nou: service\n\n\
             dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: svc-sync\nuserPassword: {SERVICE_PASSWORD}\n\n"
        );
        Directory { ldif }
    }

    /// Adds `uid=<uid>,ou=people` and returns its DN.
    pub fn user(&mut self, uid: &str) -> String {
        let dn = format!("uid={},{PEOPLE}", ldap3_dn_escape(uid));
        self.user_at(&dn, uid, uid)
    }

    /// Adds a user at `dn` with the given uid and cn, and returns the DN.
    pub fn user_at(&mut self, dn: &str, uid: &str, cn: &str) -> String {
        self.ldif.push_str(&ldif_line("dn", dn));
        self.ldif.push_str("objectClass: inetOrgPerson\n");
        self.ldif.push_str(&ldif_line("uid", uid));
        self.ldif.push_str(&ldif_line("cn", cn));
        self.ldif.push_str(&ldif_line("sn", cn));
        self.ldif.push_str(&ldif_line("displayName", cn));
        self.ldif.push_str(&ldif_line("mail", &format!("{}@example.org", uid.to_lowercase())));
        self.ldif.push('\n');
        dn.to_string()
    }

    /// Adds a user whose account is disabled the way Active Directory marks it (`userAccountControl` 514)
    /// and returns the DN.
    pub fn disabled_user(&mut self, uid: &str) -> String {
        let start = self.ldif.len();
        let dn = self.user(uid);
        let entry = self.ldif.split_off(start);
        let entry = entry.replacen(
            "objectClass: inetOrgPerson\n",
            "objectClass: inetOrgPerson\nobjectClass: accountControl\n",
            1,
        );
        // The entry ends with a blank line: the flag goes before it.
        self.ldif.push_str(entry.trim_end_matches('\n'));
        self.ldif.push_str("\nuserAccountControl: 514\n\n");
        dn
    }

    /// Adds `uid=<prefix><n>,ou=people` for n in 0..count and returns their DNs.
    pub fn users(&mut self, prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|n| self.user(&format!("{prefix}{n:05}"))).collect()
    }

    /// Adds `cn=<name>,ou=groups` with the given member DNs and returns its DN.
    pub fn group(&mut self, name: &str, members: &[String]) -> String {
        let dn = format!("cn={},{GROUPS}", ldap3_dn_escape(name));
        self.ldif.push_str(&ldif_line("dn", &dn));
        self.ldif.push_str("objectClass: groupOfNames\n");
        self.ldif.push_str(&ldif_line("cn", name));
        if members.is_empty() {
            // groupOfNames needs a member; an empty value is the usual way to say "nobody".
            self.ldif.push_str("member:\n");
        }
        for m in members {
            self.ldif.push_str(&ldif_line("member", m));
        }
        self.ldif.push('\n');
        dn
    }

    /// Appends raw LDIF (one or more entries, each ending with a blank line).
    pub fn raw(&mut self, ldif: &str) {
        self.ldif.push_str(ldif);
    }

    pub fn ldif(&self) -> &str {
        &self.ldif
    }

    /// The same entries, each created and last modified at `at` (a GeneralizedTime, which slapadd keeps), as
    /// in a directory whose entries are older than the day it is read: the benchmark's.
    pub fn stamped(&self, at: &str) -> Directory {
        let mut ldif = String::with_capacity(self.ldif.len() + self.ldif.len() / 4);
        for line in self.ldif.split_inclusive('\n') {
            ldif.push_str(line);
            if line.starts_with("dn:") {
                ldif.push_str(&format!("createTimestamp: {at}\nmodifyTimestamp: {at}\n"));
            }
        }
        Directory { ldif }
    }
}

/// RFC 4514 escaping of an attribute value inside a DN, for the seed data: the library's own.
pub use cloudshell_ldap_sync::ldap::escape_dn_value as ldap3_dn_escape;

/// The directory the leaver and state tests share: `Team` (alice, bob, carol) and `Other` (dave).
pub fn team_and_other() -> Directory {
    let mut d = Directory::new();
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(|u| d.user(u));
    d.group("Team", &[alice, bob, carol]);
    d.group("Other", &[dave]);
    d
}

/// A running slapd seeded from LDIF, in a temp dir, on free loopback ports. Stopped and removed on drop.
pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    /// The ldaps:// port, when started with TLS.
    pub tls_port: Option<u16>,
    /// Started with the `syncprov` overlay (RFC 4533 content sync): kept across restarts.
    syncprov: Syncprov,
}

/// Whether a fixture's database has the `syncprov` overlay, and with a session log or without.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Syncprov {
    Off,
    /// `syncprov-sessionlog 10000`: deletions since a recent cookie can be named.
    SessionLog,
    /// No session log: a read with a cookie is answered with a present phase.
    NoSessionLog,
    /// The session log, and contextCSN written to the database at every write (`syncprov-checkpoint 1 1`),
    /// so that a crash loses none of it.
    SessionLogCheckpointEachWrite,
    /// The session log, and no size limit for the service account (content-sync searches cannot be paged): a
    /// directory of any size read by content sync, as the benchmark's.
    SessionLogUnlimited,
    /// The session log, and `syncprov-reloadhint TRUE`: a cookie slapd can no longer serve (older than every
    /// entry) is answered with e-syncRefreshRequired (4096) rather than a present phase.
    SessionLogReloadHint,
    /// The module loaded and the overlay on no database: the root DSE lists content sync, and a content-sync
    /// search of the base is refused (unavailableCriticalExtension).
    ModuleOnly,
}

/// A private CA and a server certificate for `localhost` and `127.0.0.1`, written as PEM files into `dir`.
/// Returns the CA file's path.
fn write_certificates(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "cloudshell-ldap-sync test CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().expect("generating the CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-signing the CA");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().expect("generating the server key");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).expect("signing the server certificate");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("writing ca.pem");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("writing server.pem");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("writing server.key");
    ca_file
}

impl Slapd {
    /// Seeds a new directory with `seed` (through `slapadd`, before start) and starts slapd.
    pub fn start(seed: &Directory) -> Slapd {
        Slapd::start_with(seed, false, None)
    }

    /// Like [`Slapd::start`], also serving ldaps:// and StartTLS with a certificate from a private CA.
    pub fn start_tls(seed: &Directory) -> Slapd {
        Slapd::start_with(seed, true, None)
    }

    /// Like [`Slapd::start_tls`], with the server certificate and key given (PEM); `ca_file` is that certificate.
    pub fn start_tls_with(seed: &Directory, cert_pem: &str, key_pem: &str) -> Slapd {
        Slapd::start_with(seed, true, Some((cert_pem, key_pem)))
    }

    /// Like [`Slapd::start`], with the `syncprov` overlay on the database (RFC 4533 content sync: a session
    /// log of 10,000 changes, entryCSN and entryUUID indexed), as an OpenLDAP provider is set up.
    pub fn start_with_syncprov(seed: &Directory) -> Slapd {
        Slapd::start_configured(seed, false, None, Syncprov::SessionLog)
    }

    /// Like [`Slapd::start_with_syncprov`], without the session log.
    pub fn start_with_syncprov_no_sessionlog(seed: &Directory) -> Slapd {
        Slapd::start_configured(seed, false, None, Syncprov::NoSessionLog)
    }

    /// Like [`Slapd::start_with_syncprov`], without a size limit for the service account, and with
    /// `modifyTimestamp` indexed (the benchmark's).
    pub fn start_with_syncprov_unlimited(seed: &Directory) -> Slapd {
        Slapd::start_configured(seed, false, None, Syncprov::SessionLogUnlimited)
    }

    /// Like [`Slapd::start_with_syncprov`], answering a cookie it can no longer serve with e-syncRefreshRequired
    /// (`syncprov-reloadhint TRUE`).
    pub fn start_with_syncprov_reload_hint(seed: &Directory) -> Slapd {
        Slapd::start_configured(seed, false, None, Syncprov::SessionLogReloadHint)
    }

    /// With the `syncprov` module loaded and the overlay on no database: the root DSE lists content sync, which
    /// the database holding the base DN refuses.
    pub fn start_with_syncprov_module_only(seed: &Directory) -> Slapd {
        Slapd::start_configured(seed, false, None, Syncprov::ModuleOnly)
    }

    /// Like [`Slapd::start_with_syncprov`], with contextCSN written at every write (`syncprov-checkpoint 1 1`).
    pub fn start_with_syncprov_checkpoint_each_write(seed: &Directory) -> Slapd {
        Slapd::start_configured(seed, false, None, Syncprov::SessionLogCheckpointEachWrite)
    }

    fn start_with(seed: &Directory, tls: bool, own: Option<(&str, &str)>) -> Slapd {
        Slapd::start_configured(seed, tls, own, Syncprov::Off)
    }

    fn start_configured(seed: &Directory, tls: bool, own: Option<(&str, &str)>, syncprov: Syncprov) -> Slapd {
        assert!(Path::new(SLAPD).exists(), "{INSTALL_HINT}");
        let dir = tempfile::Builder::new().prefix("slapd-").tempdir().expect("creating a temp dir for slapd");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("creating slapd's data dir");
        let conf = dir.path().join("slapd.conf");
        std::fs::write(dir.path().join("account-control.schema"), ACCOUNT_CONTROL_SCHEMA).expect("writing a schema");
        let mut conf_text = slapd_conf(dir.path(), syncprov);
        if tls {
            match own {
                Some((cert, key)) => {
                    for (name, pem) in [("ca.pem", cert), ("server.pem", cert), ("server.key", key)] {
                        std::fs::write(dir.path().join(name), pem).expect("writing the certificates");
                    }
                }
                None => {
                    write_certificates(dir.path());
                }
            }
            let d = dir.path().display();
            conf_text = format!(
                "TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\nTLSCertificateKeyFile {d}/server.key\n{conf_text}"
            );
        }
        std::fs::write(&conf, conf_text).expect("writing slapd.conf");
        let seed_file = dir.path().join("seed.ldif");
        std::fs::write(&seed_file, seed.ldif()).expect("writing the seed LDIF");
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&seed_file)
            .output()
            .expect(INSTALL_HINT);
        assert!(out.status.success(), "slapadd failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let tls_port = tls.then(free_port);
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if let Some(p) = tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let child = spawn_slapd(dir.path(), &urls);
        let slapd = Slapd { dir, child: Some(child), port, tls_port, syncprov };
        slapd.wait_until_listening();
        slapd
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("slapd did not listen on {addr} within 15 s; its log:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The ldaps:// URL (started with TLS only).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port.expect("slapd was started with TLS"))
    }

    /// The private CA's certificate (started with TLS only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Applies an LDIF change (`ldapmodify`, as the rootdn).
    pub fn modify(&self, ldif: &str) {
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(INSTALL_HINT);
        // Written from another thread while the output is read: a long LDIF makes ldapmodify write more than a
        // pipe holds before it has read all of it.
        let (mut stdin, text) = (child.stdin.take().expect("stdin is piped"), ldif.to_string());
        let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
        let out = child.wait_with_output().expect("waiting for ldapmodify");
        let written = writer.join().expect("the writer thread");
        // ldapmodify's own error first: one that ends it early also breaks the pipe it reads from. With the end
        // of slapd's log: a connection slapd dropped says why there.
        if !out.status.success() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
            let head: String = ldif.chars().take(2000).collect();
            panic!(
                "ldapmodify failed: {}\n{head}\n--- {}\n--- the end of slapd's log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.liveness(),
                tail.join("\n")
            );
        }
        written.expect("writing to ldapmodify");
    }

    /// Whether slapd still runs, for a failed tool's message: run with `-d 0`, slapd logs nothing when it dies,
    /// so a dropped connection is otherwise the same whether slapd closed it or crashed.
    fn liveness(&self) -> String {
        let Some(child) = self.child.as_ref() else { return "slapd was stopped by the test".into() };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        // The state follows the command name in parentheses: Z (or no entry) is a process that has ended.
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        let listening = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1)).is_ok();
        match state {
            Some('Z') | None => format!("slapd (pid {}) has ended: it crashed or was killed", child.id()),
            Some(state) => format!("slapd (pid {}) still runs (state {state}), listening: {listening}", child.id()),
        }
    }

    /// Adds entries (`ldapmodify -a`).
    pub fn add(&self, seed_fragment: &str) {
        let ldif: String = seed_fragment
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| format!("{e}\nchangetype: add\n"))
            .map(|e| {
                // "changetype" must follow the dn line
                let mut lines: Vec<&str> = e.lines().collect();
                let ct = lines.pop().expect("pushed above");
                lines.insert(1, ct);
                lines.join("\n") + "\n\n"
            })
            .collect();
        self.modify(&ldif);
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) slapd: connections are accepted by the kernel, nothing answers.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("slapd is running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
    }

    /// Restarts slapd on the same port with `rules` (slapd.conf `access` lines, such as
    /// `access to dn.base="cn=Hidden,ou=groups,dc=example,dc=org" by * none`) before its own: how an ACL change
    /// hides an entry or an attribute from the service account. The data is kept.
    pub fn restart_with_acl(&mut self, rules: &str) {
        self.kill();
        let conf = self.dir.path().join("slapd.conf");
        let text = slapd_conf(self.dir.path(), self.syncprov);
        let general = "access to attrs=userPassword";
        let text = text.replacen(general, &format!("{rules}\n{general}"), 1);
        std::fs::write(&conf, text).expect("writing slapd.conf");
        self.start_again();
    }

    /// Stops slapd and starts it again on the same port and data with the `syncprov` overlay (session log), as a
    /// failover to a replica that has it would look.
    pub fn restart_with_syncprov(&mut self) {
        self.restart_as(Syncprov::SessionLog);
    }

    /// Stops slapd and starts it again on the same port and data without the `syncprov` overlay: a content-sync
    /// search is then refused (unavailableCriticalExtension), as by a replica without it behind the same URL.
    pub fn restart_without_syncprov(&mut self) {
        self.restart_as(Syncprov::Off);
    }

    fn restart_as(&mut self, syncprov: Syncprov) {
        self.kill();
        self.syncprov = syncprov;
        std::fs::write(self.dir.path().join("slapd.conf"), slapd_conf(self.dir.path(), self.syncprov))
            .expect("writing slapd.conf");
        self.start_again();
    }

    /// Stops slapd cleanly (SIGTERM, waiting for it to exit: it writes its state, such as syncprov's
    /// contextCSN, as a service stop does) and starts it again on the same port and data.
    pub fn restart_clean(&mut self) {
        self.stopped(|_| {});
    }

    /// A copy of slapd's database as it stands, taken while slapd is stopped cleanly (then started again), for
    /// [`Slapd::restore`].
    pub fn back_up(&mut self) -> PathBuf {
        let backup = self.dir.path().join(format!("backup-{}", free_port()));
        self.stopped(|data| copy_files(data, &backup));
        backup
    }

    /// Stops slapd cleanly, puts the database `back_up` copied in place of its own, and starts it again on the same
    /// port: the directory restored from a backup behind the same URL.
    pub fn restore(&mut self, backup: &Path) {
        self.stopped(|data| {
            std::fs::remove_dir_all(data).expect("removing slapd's data");
            copy_files(backup, data);
        });
    }

    /// Stops slapd cleanly, hands `change` its data directory, and starts it again on the same port.
    fn stopped(&mut self, change: impl FnOnce(&Path)) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
            let _ = child.wait();
        }
        change(&self.dir.path().join("data"));
        self.start_again();
    }

    /// Starts slapd, stopped, on its port with the configuration and data in its directory.
    fn start_again(&mut self) {
        self.child = Some(spawn_slapd(self.dir.path(), &format!("ldap://127.0.0.1:{}/", self.port)));
        self.wait_until_listening();
    }

    /// Stops slapd now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies the files of directory `from` into directory `to` (created).
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the copy's directory");
    for file in std::fs::read_dir(from).expect("reading the directory") {
        let file = file.expect("a directory entry");
        std::fs::copy(file.path(), to.join(file.file_name())).expect("copying a file");
    }
}

/// Starts slapd in the foreground on `urls` with the configuration in `dir`, appending to `dir/slapd.log`.
fn spawn_slapd(dir: &Path, urls: &str) -> Child {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("slapd.log")).expect("opening slapd.log");
    Command::new(SLAPD)
        .args(["-d", "0", "-f"])
        .arg(dir.join("slapd.conf"))
        .args(["-h", urls])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the log handle"))
        .stderr(log)
        .spawn()
        .expect(INSTALL_HINT)
}

/// Active Directory's `userAccountControl` (its own OID) on an auxiliary class, so that slapd can hold
/// disabled accounts the way AD marks them (bit 2).
const ACCOUNT_CONTROL_SCHEMA: &str = "\
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.1.1 NAME 'accountControl' AUXILIARY MAY userAccountControl )
";

/// slapd.conf for a fixture in `dir`; with `syncprov`, the overlay RFC 4533 content sync needs (its module,
/// the indexes it searches by, a checkpoint and, unless told otherwise, a session log, so that deletions since
/// a recent cookie are sent as such rather than by a present phase).
fn slapd_conf(dir: &Path, syncprov: Syncprov) -> String {
    let mut conf = slapd_conf_base(dir);
    if syncprov != Syncprov::Off {
        conf = conf.replacen("moduleload back_mdb\n", "moduleload back_mdb\nmoduleload syncprov\n", 1);
    }
    if !matches!(syncprov, Syncprov::Off | Syncprov::ModuleOnly) {
        conf.push_str("index entryCSN,entryUUID eq\noverlay syncprov\nsyncprov-checkpoint 100 10\n");
    }
    if syncprov == Syncprov::SessionLogCheckpointEachWrite {
        conf = conf.replacen("syncprov-checkpoint 100 10\n", "syncprov-checkpoint 1 1\n", 1);
    }
    if matches!(
        syncprov,
        Syncprov::SessionLog
            | Syncprov::SessionLogCheckpointEachWrite
            | Syncprov::SessionLogUnlimited
            | Syncprov::SessionLogReloadHint
    ) {
        conf.push_str("syncprov-sessionlog 10000\n");
    }
    if syncprov == Syncprov::SessionLogReloadHint {
        conf.push_str("syncprov-reloadhint TRUE\n");
    }
    if syncprov == Syncprov::SessionLogUnlimited {
        conf.push_str(&format!("limits dn.exact=\"{SERVICE_DN}\" size=unlimited\n"));
        // For `modify_timestamp` change reads (an eq index serves slapd's inequality filters on timestamps).
        conf.push_str("index modifyTimestamp eq\n");
    }
    conf
}

fn slapd_conf_base(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {d}/account-control.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
# Limits like a real Active Directory's: unpaged searches stop at 500 entries, pages above 500 are refused.
sizelimit size.soft=500 size.hard=500 size.pr=500 size.prtotal=unlimited
database mdb
maxsize 2147483648
suffix \"{BASE_DN}\"
rootdn \"{ADMIN_DN}\"
rootpw {ADMIN_PASSWORD}
directory {d}/data
index objectClass,uid,cn,member eq
access to attrs=userPassword by anonymous auth by * none
access to * by users read by anonymous auth
"
    )
}

/// The simulator's directory settings for a slapd fixture, bound as the ordinary service account.
pub fn sim_directory(slapd: &Slapd) -> cloudshell_sim::directory::Settings {
    cloudshell_sim::directory::Settings::openldap(&slapd.url(), SERVICE_DN, SERVICE_PASSWORD, BASE_DN)
}

/// The CloudShell simulator on 127.0.0.1:0, with helpers for its control endpoint.
pub struct Sim {
    pub running: cloudshell_sim::Running,
    http: reqwest::Client,
}

impl Sim {
    /// A simulator whose directory is this Samba DC, as CloudShell's would be (its administrator's password
    /// [`CS_PASSWORD`], the domain ADEXAMPLE, imports of groups up to `group_import_limit` members).
    pub fn for_ad(dc: &SambaDc, group_import_limit: usize) -> Sim {
        Sim::start(cloudshell_sim::Config {
            admin_password: CS_PASSWORD.into(),
            group_import_limit,
            domain_name: "ADEXAMPLE".into(),
            directory: Some(cloudshell_sim::directory::Settings {
                user_filter: "(&(objectCategory=person)(objectClass=user))".into(),
                group_filter: "(objectClass=group)".into(),
                username_attribute: "sAMAccountName".into(),
                sid_attribute: "objectSid".into(),
                danger_skip_tls_verify: true,
                ..cloudshell_sim::directory::Settings::openldap(&dc.ldaps_url(), AD_ADMIN, AD_PASSWORD, AD_BASE)
            }),
            ..Default::default()
        })
    }

    pub fn start(config: cloudshell_sim::Config) -> Sim {
        let running = cloudshell_sim::spawn(config, ([127, 0, 0, 1], 0).into()).expect("starting the simulator");
        Sim { running, http: reqwest::Client::new() }
    }

    /// A simulator resolving its directory from `slapd`, with the given changes to the default config.
    pub fn with_directory(slapd: &Slapd, change: impl FnOnce(&mut cloudshell_sim::Config)) -> Sim {
        let mut config = cloudshell_sim::Config { directory: Some(sim_directory(slapd)), ..Default::default() };
        change(&mut config);
        Sim::start(config)
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}/_sim/{path}", self.url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("calling the simulator's control endpoint");
        let status = response.status();
        let body: Value = response.json().await.expect("the control endpoint answers JSON");
        assert!(status.is_success(), "control {path} answered {status}: {body}");
        body
    }

    /// The calls made to the API so far.
    pub async fn calls(&self) -> Vec<Value> {
        match self.control(reqwest::Method::GET, "calls", None).await {
            Value::Array(calls) => calls,
            other => panic!("calls is not an array: {other}"),
        }
    }

    /// The calls made so far whose method and path match (path compared case-insensitively).
    pub async fn calls_to(&self, method: &str, path: &str) -> Vec<Value> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| c["method"] == method && c["path"].as_str().is_some_and(|p| p.eq_ignore_ascii_case(path)))
            .collect()
    }

    pub async fn clear_calls(&self) {
        self.control(reqwest::Method::DELETE, "calls", None).await;
    }

    /// Whether CloudShell holds `username` as an active user (panics, naming it, when it holds no such user).
    pub async fn is_active(&self, username: &str) -> bool {
        let state = self.state().await;
        let user = state["users"].as_array().expect("users is an array").iter().find(|u| u["Username"] == username);
        user.unwrap_or_else(|| panic!("{username} is not in CloudShell")).get("IsActive") == Some(&Value::Bool(true))
    }

    /// Takes every injected fault away.
    pub async fn clear_faults(&self) {
        self.control(reqwest::Method::DELETE, "faults", None).await;
    }

    pub async fn state(&self) -> Value {
        self.control(reqwest::Method::GET, "state", None).await
    }

    /// The usernames CloudShell holds, in creation order.
    pub async fn usernames(&self) -> Vec<String> {
        self.state().await["users"]
            .as_array()
            .expect("users is an array")
            .iter()
            .map(|u| u["Username"].as_str().expect("Username is a string").to_string())
            .collect()
    }

    pub async fn set_faults(&self, faults: Value) {
        self.control(reqwest::Method::POST, "faults", Some(faults)).await;
    }

    pub async fn add_users(&self, usernames: &[&str]) {
        self.control(reqwest::Method::POST, "users", Some(serde_json::json!({ "usernames": usernames }))).await;
    }

    /// Users as if imported from the directory (`DomainName` set), admins or not, in the named CloudShell groups.
    pub async fn add_directory_users(&self, usernames: &[&str], groups: &[&str], admin: bool) {
        let body =
            serde_json::json!({"usernames": usernames, "domain_name": "EXAMPLE", "groups": groups, "is_admin": admin});
        self.control(reqwest::Method::POST, "users", Some(body)).await;
    }

    /// Local users (`DomainName` null) in the named CloudShell groups.
    pub async fn add_local_users(&self, usernames: &[&str], groups: &[&str]) {
        let body = serde_json::json!({"usernames": usernames, "groups": groups});
        self.control(reqwest::Method::POST, "users", Some(body)).await;
    }

    /// Creates or changes users through `POST /_sim/users` with this body (`usernames` and any of its other
    /// fields: `domain_name`, `is_active`, `recreate`, `omit_fields`, ...); the users as they are now.
    pub async fn change_users(&self, body: Value) -> Value {
        self.control(reqwest::Method::POST, "users", Some(body)).await
    }

    /// Makes the server leave `GroupIds` out of user objects, or put it back.
    pub async fn omit_group_ids(&self, omit: bool) {
        self.control(reqwest::Method::POST, "omit_group_ids", Some(serde_json::json!({ "omit": omit }))).await;
    }

    /// The usernames in a CloudShell group, sorted.
    pub async fn group_members(&self, group: &str) -> Vec<String> {
        let state = self.state().await;
        let id = state["groups"]
            .as_array()
            .expect("groups is an array")
            .iter()
            .find(|g| g["Name"] == group)
            .unwrap_or_else(|| panic!("no CloudShell group {group}"))["Id"]
            .clone();
        let mut names: Vec<String> = state["users"]
            .as_array()
            .expect("users is an array")
            .iter()
            .filter(|u| u["GroupIds"].as_array().is_some_and(|ids| ids.contains(&id)))
            .map(|u| u["Username"].as_str().expect("Username").to_string())
            .collect();
        names.sort();
        names
    }
}

/// Directory settings for `url`, bound as the ordinary service account, every option at its default.
pub fn ldap_settings(url: &str) -> cloudshell_ldap_sync::ldap::Settings {
    use cloudshell_ldap_sync::ldap;
    ldap::Settings {
        urls: vec![url.to_string()],
        connect_retries: 0,
        starttls: false,
        ca_file: None,
        danger_skip_tls_verify: false,
        bind_dn: SERVICE_DN.to_string(),
        bind_password: secrecy::SecretString::from(SERVICE_PASSWORD),
        base_dn: BASE_DN.to_string(),
        user_filter: "(objectClass=inetOrgPerson)".into(),
        group_filter: "(objectClass=groupOfNames)".into(),
        username_attribute: "uid".into(),
        group_name_attribute: "cn".into(),
        member_attribute: "member".into(),
        display_name_attribute: "displayName".into(),
        email_attribute: "mail".into(),
        page_size: 500,
        timeout: Duration::from_secs(10),
        max_message_bytes: 64 << 20,
        nesting: ldap::Nesting::Recursive,
        include_disabled: false,
        member_range_size: None,
        max_nesting_depth: 10,
        progress_every: cloudshell_ldap_sync::progress::EVERY,
        change_detection: cloudshell_ldap_sync::ldap::ChangeDetection::Off,
    }
}

/// CloudShell client settings for the simulator at `url`. No retries, so that each fault shows as it is.
pub fn cloudshell_settings(url: &str) -> cloudshell_ldap_sync::cloudshell::Settings {
    use cloudshell_ldap_sync::cloudshell;
    cloudshell::Settings {
        url: url.parse().expect("the simulator's URL"),
        username: "admin".into(),
        password: secrecy::SecretString::from("admin"),
        domain: "Global".into(),
        auth_scheme: cloudshell::AuthScheme::Basic,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        retries: 0,
        retry_deadline: Duration::from_secs(30),
        max_requests_per_second: 0.0,
        max_answer_bytes: 16 << 20,
        ca_file: None,
        progress_every: cloudshell_ldap_sync::progress::EVERY,
    }
}

/// A path in the source tree.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A TCP proxy to `target` that forwards faithfully until the server has sent `cut_after` bytes on a
/// connection, then drops that connection: a directory going away in the middle of an answer.
pub struct CutProxy {
    pub port: u16,
    /// Bytes passed from the server to the client so far, over all connections.
    forwarded: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CutProxy {
    pub fn start(target: u16, cut_after: usize) -> CutProxy {
        CutProxy::start_with(target, cut_after, false)
    }

    /// Like [`CutProxy::start`], but after `stall_after` bytes the connection is held open with nothing more
    /// forwarded: a directory that hangs in the middle of an answer.
    pub fn stalling(target: u16, stall_after: usize) -> CutProxy {
        CutProxy::start_with(target, stall_after, true)
    }

    fn start_with(target: u16, cut_after: usize, stall: bool) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let total = forwarded.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let total = total.clone();
                std::thread::spawn(move || {
                    let mut sent = 0usize;
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match std::io::Read::read(&mut s_read, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = n.min(cut_after.saturating_sub(sent));
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                        total.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                        if sent >= cut_after {
                            break;
                        }
                    }
                    if stall {
                        std::thread::sleep(std::time::Duration::from_secs(120));
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                    let _ = s_read.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CutProxy { port, forwarded }
    }

    /// A proxy that never cuts, for counting.
    pub fn counting(target: u16) -> CutProxy {
        CutProxy::start(target, usize::MAX)
    }

    pub fn forwarded(&self) -> usize {
        self.forwarded.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}

/// A server that accepts connections and never answers: a firewall that drops, or a hung directory.
pub struct Silent {
    pub port: u16,
    _listener: TcpListener,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the silent server");
        let port = listener.local_addr().expect("address").port();
        Silent { port, _listener: listener }
    }
}

/// The CloudShell administrator's password the end-to-end tests give the simulator.
pub const CS_PASSWORD: &str = "cs-admin-pass";

/// A temp dir holding the daemon's password files and configuration.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Default for Files {
    fn default() -> Self {
        Self::new()
    }
}

impl Files {
    pub fn new() -> Files {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, secret) in [("ldap-password", SERVICE_PASSWORD), ("cs-password", CS_PASSWORD)] {
            let p = dir.path().join(name);
            std::fs::write(&p, secret).expect("writing a password file");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        }
        Files { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `config.toml` for these groups; `sync_extra` lines go at the end of `[sync]`, `sections` after it.
    pub fn config(&self, ldap_url: &str, cs_url: &str, groups: &[&str], sync_extra: &str, sections: &str) -> PathBuf {
        let d = self.dir.path().display();
        let groups = serde_json::to_string(groups).expect("group names serialise");
        let text = format!(
            r#"[ldap]
url = "{ldap_url}"
bind_dn = "{SERVICE_DN}"
bind_password_file = "{d}/ldap-password"
base_dn = "{BASE_DN}"
timeout = "5s"

[cloudshell]
url = "{cs_url}"
password_file = "{d}/cs-password"
timeout = "10s"

[sync]
groups = {groups}
{sync_extra}
{sections}
"#
        );
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).expect("writing config.toml");
        path
    }
}

/// The daemon binary under test (integration tests only).
pub fn binary() -> &'static str {
    match option_env!("CARGO_BIN_EXE_cloudshell-ldap-sync") {
        Some(path) => path,
        None => panic!("the binary path is only known to integration tests"),
    }
}

/// Runs the binary with `args` and `RUST_LOG=info`.
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).env("RUST_LOG", "info").output().expect("running cloudshell-ldap-sync")
}

/// Starts `sync --json` on `config` with the simulator's next import call held 1.5 s before it takes effect,
/// and returns once the run has sent it: its reads and plan are done, and nothing after the imports has begun.
/// The caller changes the directory, then awaits the run ([`sync_json`]'s answer).
pub async fn sync_held_at_import(sim: &Sim, config: &Path) -> tokio::task::JoinHandle<(i32, Value, String)> {
    let import = "/api/v1/integrations/IdentityManagement/users";
    sim.clear_calls().await;
    sim.set_faults(
        serde_json::json!({"slow": {"count": 1, "delay_ms": 1500, "method": "POST", "before_processing": true}}),
    )
    .await;
    let run = tokio::task::spawn_blocking({
        let config = config.to_path_buf();
        move || sync_json(&config, &[])
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.calls_to("POST", import).await.is_empty() {
        assert!(Instant::now() < deadline, "the run never sent an import");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run
}

/// `history <user> --json --config <config>`: what it printed, as text.
pub fn history_json(config: &Path, user: &str) -> String {
    let out = cli(&["history", user, "--json", "--config", config.to_str().expect("a UTF-8 path")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sync --json --config <config> <extra>`: the exit code, the report and the logs.
pub fn sync_json(config: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["sync", "--json", "--config", config.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    let out = cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is not one JSON report ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout))
    });
    (out.status.code().expect("exited, not killed"), report, stderr)
}

/// A group's entry in a JSON report.
pub fn report_group<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .expect("groups is an array")
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name} in {report}"))
}

// ------------------------------------------------------------------ Samba AD DC

pub const AD_BASE: &str = "DC=ad,DC=example,DC=org";
pub const AD_ADMIN: &str = "Administrator@ad.example.org";
pub const AD_PASSWORD: &str = "Adm1n-Passw0rd!";
const AD_INSTALL_HINT: &str = "Samba AD DC is not installed: run `apt-get install -y samba samba-ad-dc krb5-user \
                               winbind smbclient` (scripts/test does this when run as root)";
/// Where the running DC's root process id is kept, so that a run killed half-way does not leave the fixed
/// ports taken for the next one.
const AD_PID_FILE: &str = "/tmp/cloudshell-ldap-sync-samba-dc.pid";

/// A real Samba Active Directory domain controller, provisioned in a temp dir and listening on the fixed
/// ports 389/636 of 127.0.0.1 (root needed). Its TLS certificate comes from a private CA (`ca_file`) and names
/// 127.0.0.1. Stopped on drop.
pub struct SambaDc {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn stop_pid(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

impl SambaDc {
    pub fn start() -> SambaDc {
        assert!(
            Path::new("/usr/sbin/samba").exists() && Path::new("/usr/bin/samba-tool").exists(),
            "{AD_INSTALL_HINT}"
        );
        if let Ok(pid) = std::fs::read_to_string(AD_PID_FILE).map(|p| p.trim().parse::<u32>().unwrap_or(0))
            && pid > 0
        {
            stop_pid(pid);
        }
        for port in [389u16, 636] {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
                "port {port} on 127.0.0.1 is taken, and a domain controller needs it: is a system slapd or Samba \
                 running? (`systemctl stop slapd samba-ad-dc`)"
            );
        }
        let dir = tempfile::Builder::new().prefix("samba-dc-").tempdir().expect("temp dir for Samba");
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        write_certificates(&tls);
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tls.join("server.key"), std::fs::Permissions::from_mode(0o600))
                .expect("chmod key");
        }
        let t = tls.display();
        let d = dir.path().display();
        let out = Command::new("samba-tool")
            .args(["domain", "provision", &format!("--targetdir={d}/dc"), "--use-rfc2307", "--realm=AD.EXAMPLE.ORG"])
            .args([
                "--domain=ADEXAMPLE",
                "--server-role=dc",
                "--dns-backend=NONE",
                &format!("--adminpass={AD_PASSWORD}"),
            ])
            .args([
                "--host-name=dc1",
                "--host-ip=127.0.0.1",
                "--option=interfaces=lo",
                "--option=bind interfaces only=yes",
            ])
            .args(["--option=server services=-dns", &format!("--option=log file={d}/samba.%m.log")])
            .args([
                "--option=tls enabled=yes".to_string(),
                format!("--option=tls keyfile={t}/server.key"),
                format!("--option=tls certfile={t}/server.pem"),
                format!("--option=tls cafile={t}/ca.pem"),
            ])
            .output()
            .expect(AD_INSTALL_HINT);
        assert!(
            out.status.success(),
            "samba-tool domain provision failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let child = spawn_samba(dir.path());
        let mut dc = SambaDc { dir, child: Some(child) };
        dc.wait_until_ready();
        dc
    }

    /// Stops the domain controller and starts it again on the same database, as a DC's restart looks to its
    /// clients: every connection ends.
    pub fn restart(&mut self) {
        self.stop();
        // The root process gone, its tasks may hold the ports a moment longer.
        let deadline = Instant::now() + Duration::from_secs(15);
        let taken = || {
            [389u16, 636].iter().any(|&port| {
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
            })
        };
        while taken() {
            assert!(Instant::now() < deadline, "Samba's ports still taken 15 s after it was stopped");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(spawn_samba(self.dir.path()));
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "Samba exited ({status}) before it answered; its log:\n{}",
                    std::fs::read_to_string(self.dir.path().join("samba.log")).unwrap_or_default()
                );
            }
            let ok = Command::new("ldapsearch")
                .args(["-x", "-H", "ldaps://127.0.0.1:636", "-D", AD_ADMIN, "-w", AD_PASSWORD, "-b", "", "-s", "base"])
                .env("LDAPTLS_CACERT", self.ca_file())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "Samba did not answer on ldaps://127.0.0.1:636 within 90 s (ports 389/636 need root); its log:\n{}",
            std::fs::read_to_string(self.dir.path().join("samba.log")).unwrap_or_default()
        );
    }

    pub fn ldaps_url(&self) -> String {
        "ldaps://127.0.0.1:636".to_string()
    }

    pub fn ldap_url(&self) -> String {
        "ldap://127.0.0.1:389".to_string()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds entries with `ldapadd` over ldaps, as the domain administrator.
    pub fn add(&self, ldif: &str) {
        self.ldap_tool("ldapadd", ldif);
    }

    /// Applies changes (LDIF with `changetype:` lines) with `ldapmodify` over ldaps, as the domain administrator.
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ldif);
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        let file = self.dir.path().join(format!("{tool}.ldif"));
        std::fs::write(&file, ldif).expect("writing LDIF");
        let out = Command::new(tool)
            .args(["-x", "-H", "ldaps://127.0.0.1:636", "-D", AD_ADMIN, "-w", AD_PASSWORD, "-f"])
            .arg(&file)
            .env("LDAPTLS_CACERT", self.ca_file())
            .output()
            .expect(INSTALL_HINT);
        assert!(out.status.success(), "{tool} to Samba failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl SambaDc {
    /// Grants the account `sam` List Contents and Read Property on CN=Deleted Objects, as an administrator does
    /// with `dsacls ... /G DOMAIN\\account:LCRP` (`samba-tool dsacl` cannot find that container: it needs Show
    /// Deleted). Written through Samba's own Python bindings to the DC's database, which Samba shares.
    pub fn allow_deleted_objects(&self, sam: &str) {
        const SCRIPT: &str = r#"
import sys, ldb
from samba.samdb import SamDB
from samba.auth import system_session
from samba.param import LoadParm
from samba.ndr import ndr_unpack, ndr_pack
from samba.dcerpc import security
lp = LoadParm(); lp.load(sys.argv[1])
db = SamDB(url=sys.argv[2], session_info=system_session(), lp=lp)
sid = ndr_unpack(security.dom_sid, db.search(db.domain_dn(), expression="(sAMAccountName=%s)" % sys.argv[3], attrs=["objectSid"])[0]["objectSid"][0])
dn = "CN=Deleted Objects," + db.domain_dn()
controls = ["show_deleted:1", "sd_flags:1:4"]
res = db.search(dn, scope=ldb.SCOPE_BASE, attrs=["nTSecurityDescriptor"], controls=controls)
domain = security.dom_sid(db.get_domain_sid())
sddl = ndr_unpack(security.descriptor, res[0]["nTSecurityDescriptor"][0]).as_sddl(domain) + "(A;;LCRP;;;%s)" % sid
m = ldb.Message(); m.dn = ldb.Dn(db, dn)
m["nTSecurityDescriptor"] = ldb.MessageElement(ndr_pack(security.descriptor.from_sddl(sddl, domain)), ldb.FLAG_MOD_REPLACE, "nTSecurityDescriptor")
db.modify(m, controls=controls)
"#;
        let dc = self.dir.path().join("dc");
        let out = Command::new("/usr/bin/python3")
            .args(["-c", SCRIPT])
            .arg(dc.join("etc/smb.conf"))
            .arg(dc.join("private/sam.ldb"))
            .arg(sam)
            .output()
            .expect("/usr/bin/python3 (Samba's Python bindings come with the samba package)");
        assert!(
            out.status.success(),
            "granting {sam} CN=Deleted Objects failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Starts Samba on the provisioned DC in `dir`, its output appended to `dir/samba.log`.
fn spawn_samba(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("samba.log")).expect("samba.log");
    let child = Command::new("/usr/sbin/samba")
        .args(["--foreground", "--no-process-group", "-s"])
        .arg(dir.join("dc/etc/smb.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect(AD_INSTALL_HINT);
    let _ = std::fs::write(AD_PID_FILE, child.id().to_string());
    child
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SambaDc {
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM to the root process stops every Samba task; SIGKILL would leave them running. Our own child
            // stays in /proc until it is waited for, so its end is seen by waiting (stop_pid, which watches /proc,
            // waited its whole deadline here).
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
            let _ = std::fs::remove_file(AD_PID_FILE);
        }
    }
}

/// The shipped Active Directory example (`config/active-directory.example.toml`) pointed at this DC and `sim`,
/// binding as `bind_dn` with the passwords in these files.
pub fn ad_example(dc: &SambaDc, sim: &Sim, bind_dn: &str, ldap_password: &Path, cs_password: &Path) -> String {
    let example = std::fs::read_to_string(repo_path("config/active-directory.example.toml"))
        .expect("the shipped Active Directory example");
    example
        .replace("ldaps://dc1.ad.example.org:636", &dc.ldaps_url())
        .replace("/etc/cloudshell-ldap-sync/ad-ca.pem", &dc.ca_file().display().to_string())
        .replace("CN=svc-cloudshell-sync,OU=Service Accounts,DC=ad,DC=example,DC=org", bind_dn)
        .replace("$CREDENTIALS_DIRECTORY/ldap-password", &ldap_password.display().to_string())
        .replace("$CREDENTIALS_DIRECTORY/cloudshell-password", &cs_password.display().to_string())
        .replace("http://cloudshell.example.com:9000", &sim.url())
}

/// Creates a user who can bind with `password` and holds no right beyond an ordinary user's, as an administrator
/// would (`samba-tool user create`); returns its DN.
pub fn create_ad_account(name: &str, password: &str) -> String {
    let out = Command::new("samba-tool")
        .args(["user", "create", name, password, "-H", "ldap://127.0.0.1"])
        .args(["-U", &format!("Administrator%{AD_PASSWORD}")])
        .output()
        .expect(AD_INSTALL_HINT);
    assert!(out.status.success(), "samba-tool user create: {}", String::from_utf8_lossy(&out.stderr));
    format!("CN={name},CN=Users,{AD_BASE}")
}

/// An Active Directory user entry in LDIF: `userAccountControl` 544 is a normal account that needs no password
/// (the tests never log in as it); 546 is the same, disabled.
pub fn ad_user(cn: &str, sam: &str, disabled: bool) -> (String, String) {
    let dn = format!("CN={},OU=Staff,{AD_BASE}", ldap3_dn_escape(cn));
    let uac = if disabled { 546 } else { 544 };
    let ldif = format!(
        "{}objectClass: user\n{}{}userAccountControl: {uac}\n{}\n",
        ldif_line("dn", &dn),
        ldif_line("sAMAccountName", sam),
        ldif_line("displayName", cn),
        ldif_line("mail", &format!("{}@ad.example.org", sam.to_lowercase())),
    );
    (dn, ldif)
}

/// An Active Directory group entry in LDIF.
pub fn ad_group(name: &str, members: &[String]) -> (String, String) {
    let dn = format!("CN={},OU=Groups,{AD_BASE}", ldap3_dn_escape(name));
    let mut ldif = format!("{}objectClass: group\n{}", ldif_line("dn", &dn), ldif_line("sAMAccountName", name));
    for m in members {
        ldif.push_str(&ldif_line("member", m));
    }
    ldif.push('\n');
    (dn, ldif)
}

/// The end-to-end stack: slapd seeded with a directory, the simulator resolving from it (its administrator's
/// password is [`CS_PASSWORD`]), and a files dir for the daemon's configuration.
pub struct Stack {
    pub slapd: Slapd,
    pub sim: Sim,
    pub files: Files,
}

impl Stack {
    pub fn start(directory: &Directory, change: impl FnOnce(&mut cloudshell_sim::Config)) -> Stack {
        Stack::start_on(Slapd::start(directory), change)
    }

    /// A stack on a slapd already started (with content sync, say).
    pub fn start_on(slapd: Slapd, change: impl FnOnce(&mut cloudshell_sim::Config)) -> Stack {
        let sim = Sim::with_directory(&slapd, |c| {
            c.admin_password = CS_PASSWORD.into();
            change(c);
        });
        Stack { slapd, sim, files: Files::new() }
    }

    /// Adds a person `uid` under `PEOPLE`.
    pub fn add_person(&self, uid: &str) {
        self.slapd
            .add(&format!("dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"));
    }

    /// Adds the people `add` to `group` and takes `delete` out of it, in one modification.
    pub fn change_members(&self, group: &str, add: &[&str], delete: &[&str]) {
        let values = |uids: &[&str]| uids.iter().map(|u| format!("member: uid={u},{PEOPLE}\n")).collect::<String>();
        let mut changes = Vec::new();
        if !add.is_empty() {
            changes.push(format!("add: member\n{}", values(add)));
        }
        if !delete.is_empty() {
            changes.push(format!("delete: member\n{}", values(delete)));
        }
        let ldif = format!("dn: cn={group},{}\nchangetype: modify\n{}", GROUPS, changes.join("-\n"));
        self.slapd.modify(&ldif);
    }
}

/// A test file's environment: the [`Stack`], with that file's own helpers added in an `impl Env` block there.
pub struct Env(pub Stack);

impl std::ops::Deref for Env {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

// ------------------------------------------------------------------ the daemon

/// The daemon as a child process, its stderr (JSON log lines) in a file. Killed on drop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(config: &Path, log: PathBuf, env: &[(&str, &str)]) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary())
            .args(["run", "--log-format", "json", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The events logged so far, in order (a line still being written is left out).
    pub fn events(&self) -> Vec<Value> {
        self.log().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The fields of the events with this message, in order.
    pub fn fields_of(&self, message: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["fields"]["message"] == message).map(|e| e["fields"].clone()).collect()
    }

    /// How many events with this message were logged.
    pub fn count(&self, message: &str) -> usize {
        self.events().iter().filter(|e| e["fields"]["message"] == message).count()
    }

    /// Waits until an event with this message has been logged `times` times.
    pub fn wait_for(&self, message: &str, times: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.count(message) >= times {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{message:?} was not logged {times} times within {within:?}; log:\n{}", self.log());
    }

    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not exit within {within:?}; log:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xorshift64*: a seeded generator, so that a failing randomized test can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// A randomized test's seed: the environment variable `var` when set (to replay a run), else the clock.
pub fn seed(var: &str) -> u64 {
    std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock after 1970").as_nanos()
            as u64
            | 1
    })
}

/// The settings of a bind to the Samba DC as its administrator, reading the users and groups under `base_dn`
/// as the shipped Active Directory example does; nested groups recursive, change reads off.
pub fn ad_settings(dc: &SambaDc, base_dn: &str) -> cloudshell_ldap_sync::ldap::Settings {
    use cloudshell_ldap_sync::ldap;
    ldap::Settings {
        urls: vec![dc.ldaps_url()],
        ca_file: Some(dc.ca_file()),
        bind_dn: AD_ADMIN.to_string(),
        bind_password: secrecy::SecretString::from(AD_PASSWORD),
        base_dn: base_dn.to_string(),
        user_filter: "(&(objectCategory=person)(objectClass=user))".into(),
        group_filter: "(objectClass=group)".into(),
        username_attribute: "sAMAccountName".into(),
        timeout: Duration::from_secs(20),
        ..ldap_settings(&dc.ldaps_url())
    }
}

/// What `f` logged while it ran, as the text format writes it (a level on each line, no time): the events on
/// this thread (the tests run on one).
pub async fn logged<F: std::future::Future>(f: F) -> (F::Output, String) {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = lines.clone();
    let subscriber =
        tracing_subscriber::fmt().with_writer(move || LogSink(sink.clone())).with_ansi(false).without_time().finish();
    let output = {
        let _guard = tracing::subscriber::set_default(subscriber);
        f.await
    };
    let text = String::from_utf8(lines.lock().unwrap().clone()).expect("log lines are UTF-8");
    (output, text)
}

struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
