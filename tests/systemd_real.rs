//! The shipped units started by a real systemd: systemd boots as PID 1 of a private PID + mount namespace,
//! with a unit path of its own (the shipped units, stand-ins for the standard targets, journald) and private
//! tmpfs over `/tmp`, `/var/tmp`, `/var/lib`, `/var/log` and `/run`, so that nothing it starts touches the
//! host. The binary and the configuration are installed where the units expect them (an overlay on
//! `/usr/bin`, a bind mount on `/etc/cloudshell-ldap-sync`), the passwords handed over as credentials, as the
//! README says. slapd and the simulator run on the host; the namespace shares its network. Needs root, like
//! the Samba suite.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Directory, Env, Stack};
use serde_json::{Value, json};

const IMPORT: &str = "/api/v1/integrations/IdentityManagement/users";
const DAEMON: &str = "cloudshell-ldap-sync.service";
const ONESHOT: &str = "cloudshell-ldap-sync-oneshot.service";
const TIMER: &str = "cloudshell-ldap-sync.timer";

/// The standard units the shipped ones (and systemd's default dependencies) name, as empty stand-ins: the
/// real ones would start `systemd-tmpfiles-setup` and friends, which empty the host's `/tmp`.
const STAND_INS: &[&str] = &[
    "sysinit.target",
    "basic.target",
    "sockets.target",
    "paths.target",
    "timers.target",
    "slices.target",
    "local-fs.target",
    "local-fs-pre.target",
    "remote-fs.target",
    "swap.target",
    "network.target",
    "network-pre.target",
    "network-online.target",
    "nss-lookup.target",
    "nss-user-lookup.target",
    "time-set.target",
    "time-sync.target",
    "multi-user.target",
    "shutdown.target",
    "emergency.target",
    "rescue.target",
];

/// `Team`: alice, bob.
fn directory() -> Directory {
    let mut d = Directory::new();
    let alice = d.user("alice");
    let bob = d.user("bob");
    d.group("Team", &[alice, bob]);
    d
}

/// A systemd booted in its own namespaces. SIGKILLed (with everything in it) on drop, pass or fail.
struct Systemd {
    /// PID 1 of the namespace, as the host sees it.
    pid: u32,
    unshare: std::process::Child,
    root: PathBuf,
    /// Where `root` is inside the namespace (its own path may lie under a tmpfs there).
    staged: PathBuf,
}

impl Systemd {
    /// Boots systemd over `root` (holding `units/`, `bin/` and `etc/cloudshell-ldap-sync/`), and waits until its
    /// own target is reached.
    fn boot(root: &Path) -> Systemd {
        // The tmpfs mounts below hide whatever lies under them, the checkout included when it sits in /tmp (as a
        // fresh clone may): `root` is bind-mounted on a staging tmpfs first, and used from there.
        let stage = if root.starts_with("/mnt") { "/srv" } else { "/mnt" };
        let script = format!(
            r#"set -e
mount --make-rprivate /
mount -t tmpfs tmpfs {stage}
mkdir {stage}/root
mount --bind {root} {stage}/root
R={stage}/root
for d in /tmp /var/tmp /var/lib /var/log /run; do mount -t tmpfs tmpfs "$d"; done
mount -t overlay overlay -o lowerdir=$R/bin:/usr/bin /usr/bin
mount --bind $R/etc/cloudshell-ldap-sync /etc/cloudshell-ldap-sync 2>/dev/null || {{
  mount -t overlay overlay -o lowerdir=$R/etc-skeleton:/etc /etc
  mount --bind $R/etc/cloudshell-ldap-sync /etc/cloudshell-ldap-sync
}}
mount --make-rshared /
export SYSTEMD_UNIT_PATH=$R/units
exec /lib/systemd/systemd --system --unit=cls-test.target
"#,
            root = root.display()
        );
        std::fs::write(root.join("boot.sh"), script).unwrap();
        let log = std::fs::File::create(root.join("systemd.log")).unwrap();
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--mount-proc", "sh"])
            .arg(root.join("boot.sh"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux)");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) =
                std::fs::read_to_string(&children).ok().and_then(|c| c.split_whitespace().next()?.parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "unshare started no child");
            std::thread::sleep(Duration::from_millis(20));
        };
        let systemd = Systemd { pid, unshare, root: root.to_path_buf(), staged: Path::new(stage).join("root") };
        systemd.wait("the boot target", Duration::from_secs(30), || {
            systemd.ctl(&["is-active", "cls-test.target"]).status.success()
        });
        systemd
    }

    /// The path inside the namespace of `path`, a file under the root.
    fn inner(&self, path: &Path) -> PathBuf {
        self.staged.join(path.strip_prefix(&self.root).expect("a path under the root"))
    }

    /// Runs `cmd` inside the namespace.
    fn inside(&self, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "--"])
            .args(cmd)
            .output()
            .expect("nsenter (util-linux)")
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = vec!["systemctl", "--no-pager"];
        cmd.extend_from_slice(args);
        self.inside(&cmd)
    }

    /// `systemctl ARGS`, which must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "systemctl {args:?}: {}\n{}", text(&out), self.journal(""));
        text(&out)
    }

    fn show(&self, unit: &str, property: &str) -> String {
        self.ok(&["show", "-p", property, "--value", unit]).trim().to_string()
    }

    /// The journal, of one unit (or all with "").
    fn journal(&self, unit: &str) -> String {
        let mut cmd = vec!["journalctl", "--no-pager", "-o", "cat"];
        if !unit.is_empty() {
            cmd.extend(["-u", unit]);
        }
        let out = self.inside(&cmd);
        let boot = std::fs::read_to_string(self.root.join("systemd.log")).unwrap_or_default();
        format!("{}\n--- systemd's own output ---\n{boot}", text(&out))
    }

    fn wait(&self, what: &str, within: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(Instant::now() < deadline, "{what} not within {within:?}\n{}", self.journal(""));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The host's pid of the process that is `pid` inside the namespace: the one in the same PID namespace as
    /// our PID 1 whose `NSpid` ends with it (other namespaces on the machine have their own pid `pid`).
    fn host_pid(&self, pid: &str) -> String {
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
        let ours = ns(&self.pid.to_string()).expect("our PID 1's namespace");
        let found = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).find_map(|e| {
            let host = e.file_name().to_string_lossy().to_string();
            let status = std::fs::read_to_string(format!("/proc/{host}/status")).ok()?;
            let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
            let inner = nspid.split_whitespace().last()?;
            (inner == pid && ns(&host).as_ref() == Some(&ours)).then_some(host)
        });
        found.unwrap_or_else(|| panic!("no process {pid} in our namespace\n{}", self.journal("")))
    }

    /// Waits for `needle` to appear `times` times in the unit's journal.
    fn wait_log(&self, unit: &str, needle: &str, times: usize, within: Duration) {
        self.wait(&format!("{times} × {needle:?}"), within, || self.journal(unit).matches(needle).count() >= times);
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // SIGTERM would make PID 1 re-execute; SIGKILL ends the namespace and everything in it.
        let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        let _ = self.unshare.wait();
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The unit path: the shipped units, the stand-ins, journald's units, our boot target and `drop_ins`.
fn unit_path(root: &Path, drop_ins: &[(&str, &str)]) {
    let units = root.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for unit in [DAEMON, ONESHOT, TIMER] {
        std::fs::copy(common::repo_path(&format!("systemd/{unit}")), units.join(unit)).unwrap();
    }
    for target in STAND_INS {
        std::fs::write(units.join(target), "[Unit]\nDescription=stand-in\n").unwrap();
    }
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("systemd-journald") || name == "system.slice" || name == "-.slice" {
            std::fs::copy(entry.path(), units.join(&name)).unwrap();
        }
    }
    std::fs::write(
        units.join("cls-test.target"),
        "[Unit]\nDescription=the test's boot target\nWants=systemd-journald.service\nAfter=systemd-journald.service\n",
    )
    .unwrap();
    for (unit, text) in drop_ins {
        let dir = units.join(format!("{unit}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("test.conf"), text).unwrap();
    }
}

/// Installs the binary and the configuration as the README says: config 0644, passwords root-only 0600.
fn install(root: &Path, env: &Env, groups: &[&str], port: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cloudshell-ldap-sync"), bin.join("cloudshell-ldap-sync")).unwrap();
    mode(&bin.join("cloudshell-ldap-sync"), 0o755);
    // Where the bind mount lands when the host has no /etc/cloudshell-ldap-sync: an overlay adds it.
    std::fs::create_dir_all(root.join("etc-skeleton/cloudshell-ldap-sync")).unwrap();
    let etc = root.join("etc/cloudshell-ldap-sync");
    std::fs::create_dir_all(&etc).unwrap();
    for p in [root.to_path_buf(), bin, root.join("etc"), etc.clone(), root.join("etc-skeleton")] {
        mode(&p, 0o755);
    }
    for (name, secret) in [("ldap-password", common::SERVICE_PASSWORD), ("cloudshell-password", common::CS_PASSWORD)] {
        std::fs::write(etc.join(name), secret).unwrap();
        mode(&etc.join(name), 0o600);
    }
    let config = etc.join("config.toml");
    write_config(&config, env, groups, port);
    config
}

/// The suite's usual configuration (`Files::config`), with the passwords read from the service's credentials,
/// no retries, a schedule that never fires by itself, the monitoring endpoint on `port`, and the state directory
/// named as the installed configuration names it.
fn write_config(path: &Path, env: &Env, groups: &[&str], port: u16) {
    use std::os::unix::fs::PermissionsExt;
    let sections = format!(
        "[schedule]\ncron = \"0 0 0 1 1 *\"\nrun_on_start = true\n\n[monitor]\nlisten = \"127.0.0.1:{port}\"\n\
         state_directory = \"/var/lib/cloudshell-ldap-sync\"\n"
    );
    let usual = env.files.config(&env.slapd.url(), &env.sim.url(), groups, "", &sections);
    let dir = env.files.dir.path().display();
    let text = std::fs::read_to_string(usual)
        .unwrap()
        .replace(&format!("{dir}/ldap-password"), "$CREDENTIALS_DIRECTORY/ldap-password")
        .replace(&format!("{dir}/cs-password"), "$CREDENTIALS_DIRECTORY/cloudshell-password")
        .replace("timeout = \"10s\"", "timeout = \"10s\"\nretries = 0");
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this suite boots systemd in namespaces: run it as root (scripts/test does, in CI)");
    assert!(Path::new("/lib/systemd/systemd").exists(), "no systemd: apt-get install -y systemd");
    assert!(Path::new("/mnt").is_dir() && Path::new("/srv").is_dir(), "/mnt and /srv: the staging mount points");
}

#[tokio::test]
async fn the_shipped_units_start_reload_run_stop_and_restart_under_a_real_systemd() {
    require_root();
    // The boot must leave the host's /tmp alone.
    let canary = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let env = Env(Stack::start(&directory(), |_| {}));
    let root_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = root_dir.path();
    let port = common::free_port();
    let config = install(root, &env, &["Team"], port);
    // A short watchdog and restart delay, so that a stalled daemon is seen restarted within seconds.
    unit_path(root, &[(DAEMON, "[Service]\nWatchdogSec=3s\nRestartSec=1s\nTimeoutAbortSec=5s\n")]);
    let systemd = Systemd::boot(root);

    // Start: READY (systemctl start returns once notified), the first run imports, the status file and line.
    systemd.ok(&["start", DAEMON]);
    systemd.wait_log(DAEMON, "run finished", 1, Duration::from_secs(30));
    assert_eq!(env.sim.usernames().await, ["admin", "alice", "bob"], "{}", systemd.journal(DAEMON));
    let status = systemd.inside(&["cat", "/var/lib/cloudshell-ldap-sync/status.json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&status)));
    assert_eq!(status["last_run"]["result"], "ok", "{status}");
    // `status` by hand: root reads the state directory; a monitoring user cannot (DynamicUser= keeps it under
    // /var/lib/private, root's alone), and is told so rather than "no run has finished yet".
    let status_as = |user: Option<&str>| {
        let mut cmd = vec![];
        if let Some(id) = user {
            cmd.extend(["setpriv", "--reuid", id, "--regid", id, "--clear-groups"]);
        }
        cmd.extend(["/usr/bin/cloudshell-ldap-sync", "status", "--config", "/etc/cloudshell-ldap-sync/config.toml"]);
        systemd.inside(&cmd)
    };
    let by_root = status_as(None);
    assert_eq!(by_root.status.code(), Some(0), "{}", text(&by_root));
    assert!(text(&by_root).contains("state: OK"), "{}", text(&by_root));
    let by_nobody = status_as(Some("65534"));
    assert_eq!(by_nobody.status.code(), Some(2), "{}", text(&by_nobody));
    assert!(
        text(&by_nobody).contains("Permission denied") && text(&by_nobody).contains("root alone"),
        "{}",
        text(&by_nobody)
    );
    // `check` by hand as root, with the state directory named as the installed configuration names it: the
    // service's own (through DynamicUser='s link into /var/lib/private), which it finds safe.
    let check = systemd.inside(&[
        "env",
        "CREDENTIALS_DIRECTORY=/etc/cloudshell-ldap-sync",
        "/usr/bin/cloudshell-ldap-sync",
        "check",
        "--config",
        "/etc/cloudshell-ldap-sync/config.toml",
    ]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(text(&check).contains("state directory /var/lib/cloudshell-ldap-sync: ok (mode 700)"), "{}", text(&check));
    systemd.wait("the STATUS line", Duration::from_secs(10), || {
        text(&systemd.ctl(&["status", DAEMON])).contains("Status: \"last run ok: 2 imported, 0 failed")
    });
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.unwrap();
    assert_eq!(health.json::<Value>().await.unwrap()["last_result"], "ok");

    // Reload: a good file is taken, a broken one refused with the reason, and the daemon keeps running.
    systemd.ok(&["reload", DAEMON]);
    systemd.wait_log(DAEMON, "configuration reloaded", 1, Duration::from_secs(10));
    std::fs::write(&config, "[ldap\nbroken").unwrap();
    systemd.ok(&["reload", DAEMON]);
    systemd.wait_log(
        DAEMON,
        "configuration reload failed, keeping the previous configuration",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(systemd.show(DAEMON, "ActiveState"), "active");
    // Each line carries its priority: the failure is an error in the journal, the runs are not.
    let errors = systemd.inside(&["journalctl", "--no-pager", "-o", "cat", "-p", "err", "-u", DAEMON]);
    let errors = text(&errors);
    assert!(errors.contains("ERROR") && errors.contains("configuration reload failed"), "{errors}");
    assert!(!errors.contains("run finished") && !errors.contains("<3>"), "{errors}");
    write_config(&config, &env, &["Team"], port);

    // SIGUSR1 runs now.
    systemd.ok(&["kill", "-s", "SIGUSR1", DAEMON]);
    systemd.wait_log(DAEMON, "run finished", 2, Duration::from_secs(30));
    assert!(systemd.journal(DAEMON).contains("run triggered trigger=\"signal\""));

    // The watchdog: a daemon frozen (as a stalled loop would be) stops pinging, and is killed and restarted.
    let first = systemd.show(DAEMON, "MainPID");
    let host_pid = systemd.host_pid(&first);
    Command::new("kill").args(["-STOP", &host_pid]).status().unwrap();
    systemd.wait("a restart after the watchdog", Duration::from_secs(30), || {
        systemd.show(DAEMON, "NRestarts") == "1" && systemd.show(DAEMON, "ActiveState") == "active"
    });
    assert_ne!(systemd.show(DAEMON, "MainPID"), first);
    assert!(systemd.journal(DAEMON).contains("Watchdog timeout"), "{}", systemd.journal(DAEMON));
    systemd.wait_log(DAEMON, "run finished", 3, Duration::from_secs(30));

    // The package's postinst: a first install leaves the running daemon alone; an upgrade (`configure` with the
    // old version) restarts it, so that the new binary is the one running, and it runs at start as usual.
    let postinst = std::fs::read_to_string(common::repo_path("debian/postinst")).unwrap();
    if Path::new("/usr/sbin/policy-rc.d").exists() {
        // A container's policy refusing every service action (this machine's) is not a site's: inside the
        // namespace only, a policy that allows them.
        let allow = root.join("policy-rc.d");
        std::fs::write(&allow, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&allow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let allow = systemd.inner(&allow);
        let out = systemd.inside(&["mount", "--bind", allow.to_str().unwrap(), "/usr/sbin/policy-rc.d"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let configure = |old: Option<&str>| {
        let mut cmd = vec!["sh", "-c", postinst.as_str(), "postinst", "configure"];
        cmd.extend(old);
        let out = systemd.inside(&cmd);
        assert!(out.status.success(), "postinst: {}", text(&out));
    };
    let before = systemd.show(DAEMON, "MainPID");
    configure(None);
    assert_eq!(systemd.show(DAEMON, "MainPID"), before, "a first install restarts nothing");
    configure(Some("0.0.1"));
    systemd.wait("the restart after an upgrade", Duration::from_secs(30), || {
        systemd.show(DAEMON, "ActiveState") == "active" && systemd.show(DAEMON, "MainPID") != before
    });
    systemd.wait_log(DAEMON, "run finished", 4, Duration::from_secs(30));

    // Stop during a slow import: the call finishes, the unit ends cleanly, well within TimeoutStopSec.
    env.slapd.add(&format!(
        "dn: uid=newhire,{}\nobjectClass: inetOrgPerson\nuid: newhire\ncn: newhire\nsn: newhire\n",
        common::PEOPLE
    ));
    env.slapd.modify(&format!(
        "dn: cn=Team,{}\nchangetype: modify\nadd: member\nmember: uid=newhire,{}\n",
        common::GROUPS,
        common::PEOPLE
    ));
    env.sim.set_faults(json!({"slow": {"count": 1, "delay_ms": 3000, "method": "POST"}})).await;
    systemd.ok(&["kill", "-s", "SIGUSR1", DAEMON]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.sim.calls_to("POST", IMPORT).await.iter().any(|c| c["state"] == "in_flight") {
        assert!(Instant::now() < deadline, "no import in flight\n{}", systemd.journal(DAEMON));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Meanwhile a `sync` typed by hand as root, as the README shows it (the installed configuration, the passwords
    // from beside it): refused, for the daemon's run holds the locks. (Before, it locked a file of its own in
    // /tmp, which the daemon's private /tmp never sees, and both ran.) The configuration names the service's state
    // directory, so the first lock met is the state directory's; the one on the configuration's directory is
    // held too (tests/daemon.rs).
    let by_hand = systemd.inside(&[
        "env",
        "CREDENTIALS_DIRECTORY=/etc/cloudshell-ldap-sync",
        "/usr/bin/cloudshell-ldap-sync",
        "sync",
        "--config",
        "/etc/cloudshell-ldap-sync/config.toml",
    ]);
    assert_eq!(by_hand.status.code(), Some(5), "{}", text(&by_hand));
    assert!(text(&by_hand).contains("holds the lock on /var/lib/cloudshell-ldap-sync/run.lock;"), "{}", text(&by_hand));
    let stopping = Instant::now();
    systemd.ok(&["stop", DAEMON]);
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(30), "the stop took {took:?}");
    assert_eq!(systemd.show(DAEMON, "Result"), "success");
    let imports = env.sim.calls_to("POST", IMPORT).await;
    let last = imports.last().unwrap();
    assert_eq!((last["state"].as_str(), last["status"].as_u64()), (Some("done"), Some(200)), "{imports:?}");
    assert!(env.sim.usernames().await.contains(&"newhire".to_string()));
    assert!(systemd.journal(DAEMON).contains("daemon stopped"));

    // The timer is accepted; the oneshot unit runs a cycle (exit 0), and a partial run (exit 3) fails it.
    systemd.ok(&["start", TIMER]);
    assert!(systemd.ok(&["list-timers", "--all"]).contains(TIMER));
    systemd.ok(&["start", ONESHOT]);
    assert_eq!(systemd.show(ONESHOT, "Result"), "success");
    assert!(systemd.journal(ONESHOT).contains("run finished result=\"ok\""), "{}", systemd.journal(ONESHOT));
    write_config(&config, &env, &["Team", "Nope"], port);
    let partial = systemd.ctl(&["start", ONESHOT]);
    assert!(!partial.status.success(), "a partial run fails the oneshot unit");
    assert_eq!(systemd.show(ONESHOT, "Result"), "exit-code");
    assert_eq!(systemd.show(ONESHOT, "ExecMainStatus"), "3");

    // Purging the package: the state directory and the password files go; dpkg removes the configuration itself.
    // The enablement links the script also removes are in the host's /etc/systemd/system: a tmpfs stands in.
    if Path::new("/etc/systemd/system").is_dir() {
        let out = systemd.inside(&["mount", "-t", "tmpfs", "tmpfs", "/etc/systemd/system"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let etc = root.join("etc/cloudshell-ldap-sync");
    std::fs::write(etc.join("ca.pem"), "the CA the example configuration names").unwrap();
    let postrm = std::fs::read_to_string(common::repo_path("debian/postrm")).unwrap();
    let out = systemd.inside(&["sh", "-c", postrm.as_str(), "postrm", "purge"]);
    assert!(out.status.success(), "postrm: {}", text(&out));
    assert!(!etc.join("ca.pem").exists(), "purge removes the CA file the example names");
    assert!(!text(&out).contains("purge leaves"), "nothing else was there: {}", text(&out));
    assert!(!etc.join("ldap-password").exists(), "a secret outlived the purge");
    assert!(!etc.join("cloudshell-password").exists(), "a secret outlived the purge");
    assert!(etc.join("config.toml").exists(), "the configuration is dpkg's to remove");
    assert!(!systemd.inside(&["test", "-e", "/var/lib/private/cloudshell-ldap-sync"]).status.success());

    drop(systemd);
    assert!(canary.path().exists(), "the host's /tmp was left alone");
}
