//! The Debian package as an operator receives it: `scripts/package` builds it (installing cargo-deb when
//! missing), and this test looks inside with `dpkg-deb` and `lintian`: the files and their modes, the conffile,
//! the units' `ExecStart=`, the maintainer scripts (start nothing, stop on remove, purge the state), the manual
//! page and the completions, and no lintian error. About two minutes warm (a release build). The other tests
//! install, upgrade, remove and purge stand-in packages carrying the repository's maintainer scripts through
//! dpkg, in a root of its own, and run those scripts against a stand-in systemd.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Builds the package once and returns its path.
fn package() -> PathBuf {
    let stdout = run(Command::new("bash").arg(common::repo_path("scripts/package")));
    let last = stdout.lines().last().expect("scripts/package prints the package's path last");
    let path = common::repo_path(last.trim());
    assert!(path.exists(), "{} does not exist", path.display());
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(&format!("cloudshell-ldap-sync_{}_", env!("CARGO_PKG_VERSION"))) && name.ends_with(".deb"),
        "{name}"
    );
    path
}

#[test]
fn the_debian_package_holds_what_an_operator_needs_and_lintian_finds_no_error() {
    let deb = package();

    // Files and modes.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mode_of = |path: &str| -> String {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        line.split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(mode_of("/usr/bin/cloudshell-ldap-sync"), "-rwxr-xr-x");
    assert_eq!(mode_of("/etc/cloudshell-ldap-sync/config.toml"), "-rw-r--r--");
    for path in [
        "/usr/lib/systemd/system/cloudshell-ldap-sync.service",
        "/usr/lib/systemd/system/cloudshell-ldap-sync-oneshot.service",
        "/usr/lib/systemd/system/cloudshell-ldap-sync.timer",
        "/usr/share/man/man1/cloudshell-ldap-sync.1.gz",
        "/usr/share/bash-completion/completions/cloudshell-ldap-sync",
        "/usr/share/zsh/vendor-completions/_cloudshell-ldap-sync",
        "/usr/share/fish/vendor_completions.d/cloudshell-ldap-sync.fish",
        "/usr/share/doc/cloudshell-ldap-sync/README.md",
        "/usr/share/doc/cloudshell-ldap-sync/BENCHMARKS.md",
        "/usr/share/doc/cloudshell-ldap-sync/example.toml",
        "/usr/share/doc/cloudshell-ldap-sync/active-directory.example.toml",
        "/usr/share/doc/cloudshell-ldap-sync/copyright",
        "/usr/share/doc/cloudshell-ldap-sync/changelog.gz",
        "/usr/share/cloudshell-ldap-sync/monitoring/alerts.yml",
        "/usr/share/cloudshell-ldap-sync/monitoring/dashboard.json",
        "/usr/share/cloudshell-ldap-sync/docs/runbook.md",
    ] {
        assert_eq!(mode_of(path), "-rw-r--r--", "{path}");
    }

    // Control fields.
    let fields = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb).args(["Package", "Section", "Depends"]));
    assert!(fields.contains("Package: cloudshell-ldap-sync") && fields.contains("Section: admin"), "{fields}");
    assert!(fields.contains("Depends: ") && fields.contains("libc6"), "computed dependencies: {fields}");

    // The conffile and the maintainer scripts.
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/cloudshell-ldap-sync/config.toml");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("daemon-reload"), "{postinst}");
    // Unchanged, so tests/systemd_real.rs, which runs the repository's script under systemd, proves the package's.
    assert_eq!(postinst, std::fs::read_to_string(common::repo_path("debian/postinst")).unwrap());
    for verb in ["enable", "start"] {
        assert!(!postinst.contains(&format!("systemctl {verb}")), "installing must not {verb} anything:\n{postinst}");
    }
    assert!(std::fs::read_to_string(control.join("prerm")).unwrap().contains("deb-systemd-invoke stop"));
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    assert!(postrm.contains("purge") && postrm.contains("/var/lib/cloudshell-ldap-sync"), "{postrm}");
    // Unchanged, so tests/systemd_real.rs, which purges with the repository's script, proves the package's.
    assert_eq!(postrm, std::fs::read_to_string(common::repo_path("debian/postrm")).unwrap());

    // The files themselves.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let file = |p: &str| -> PathBuf { root.join(p.trim_start_matches('/')) };
    for unit in ["cloudshell-ldap-sync.service", "cloudshell-ldap-sync-oneshot.service"] {
        let text = std::fs::read_to_string(file(&format!("/usr/lib/systemd/system/{unit}"))).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/cloudshell-ldap-sync "), "{unit}");
        let ours = std::fs::read_to_string(common::repo_path(&format!("systemd/{unit}"))).unwrap();
        assert_eq!(text, ours, "the package ships the repository's units unchanged");
    }
    // Unchanged, so tests/systemd_real.rs, which starts the repository's units, proves the package's too.
    let timer = "cloudshell-ldap-sync.timer";
    assert_eq!(
        std::fs::read_to_string(file(&format!("/usr/lib/systemd/system/{timer}"))).unwrap(),
        std::fs::read_to_string(common::repo_path(&format!("systemd/{timer}"))).unwrap()
    );
    assert_eq!(
        std::fs::read(file("/etc/cloudshell-ldap-sync/config.toml")).unwrap(),
        std::fs::read(common::repo_path("config/example.toml")).unwrap()
    );
    // The monitoring as tests/monitoring.rs proves it; the alerts' runbook_url (docs/runbook.md#...) holds beside them.
    for shipped in ["monitoring/alerts.yml", "monitoring/dashboard.json", "docs/runbook.md"] {
        assert_eq!(
            std::fs::read(file(&format!("/usr/share/cloudshell-ldap-sync/{shipped}"))).unwrap(),
            std::fs::read(common::repo_path(shipped)).unwrap(),
            "{shipped}"
        );
    }
    let version = run(Command::new(file("/usr/bin/cloudshell-ldap-sync")).arg("--version"));
    assert!(version.starts_with("cloudshell-ldap-sync "), "{version}");
    let release = common::repo_path("target/release/cloudshell-ldap-sync");
    assert!(file_size(&file("/usr/bin/cloudshell-ldap-sync")) < file_size(&release), "the packaged binary is stripped");
    let man = run(Command::new("gzip").arg("-dc").arg(file("/usr/share/man/man1/cloudshell-ldap-sync.1.gz")));
    for needle in [".SH FILES", ".SH EXIT STATUS", ".SH SIGNALS", "status", "completions"] {
        assert!(man.contains(needle), "the manual page lacks {needle}");
    }
    // Every page the main page names is installed, each with its command's options (tests/commands.rs checks
    // every option of every command in the pages the binary writes).
    let mut named = 0;
    for rest in man.split("cloudshell\\-ldap\\-sync\\-").skip(1) {
        let Some((command, _)) = rest.split_once("(1)") else { continue };
        let command = command.replace("\\-", "-");
        if !command.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        let path = format!("/usr/share/man/man1/cloudshell-ldap-sync-{command}.1.gz");
        assert_eq!(mode_of(&path), "-rw-r--r--", "{path}");
        let page = run(Command::new("gzip").arg("-dc").arg(file(&path)));
        assert!(page.contains(&format!(".TH cloudshell-ldap-sync-{command} 1")), "{path}");
        named += 1;
    }
    assert!(named >= 5, "the main page names a page per command:\n{man}");
    let sync = run(Command::new("gzip").arg("-dc").arg(file("/usr/share/man/man1/cloudshell-ldap-sync-sync.1.gz")));
    for option in ["\\-\\-dry\\-run", "\\-\\-json", "\\-\\-config", "\\-\\-detailed\\-exitcode"] {
        assert!(sync.contains(option), "cloudshell-ldap-sync-sync(1) lacks {option}");
    }
    let bash = std::fs::read_to_string(file("/usr/share/bash-completion/completions/cloudshell-ldap-sync")).unwrap();
    assert!(["sync", "run", "check", "status"].iter().all(|s| bash.contains(s)));
    let generated = run(Command::new(file("/usr/bin/cloudshell-ldap-sync")).args(["completions", "bash"]));
    assert_eq!(bash, generated, "the packaged script is the binary's, with its fix for hyphenated names");

    // lintian: no error (warnings are printed for the record).
    let out = Command::new("lintian").args(["--tag-display-limit", "0", "--info"]).arg(&deb).output();
    let out = out.expect("lintian is not installed: apt-get install -y lintian (scripts/test does this as root)");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{report}{}", String::from_utf8_lossy(&out.stderr));
    // 0: no error; 1: errors found; anything else: lintian itself failed, and proves nothing.
    assert!(matches!(out.status.code(), Some(0 | 1)), "lintian did not run: {:?}", out.status);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert_eq!(out.status.code(), Some(0), "lintian found errors:\n{report}");
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

/// A root of its own for dpkg (`--root`: the maintainer scripts run unchrooted and see `$DPKG_ROOT`), and
/// stand-in packages made of the repository's maintainer scripts and the configuration as their conffile. Quick:
/// no build.
struct Stage {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Stage {
    fn new() -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        Stage { dir, root }
    }

    /// A stand-in package of this version.
    fn stand_in(&self, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let pkg = self.dir.path().join(format!("pkg-{version}"));
        for d in [pkg.join("DEBIAN"), pkg.join("etc/cloudshell-ldap-sync")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            pkg.join("DEBIAN/control"),
            format!(
                "Package: cloudshell-ldap-sync\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n\
                 Description: the maintainer scripts under test\n"
            ),
        )
        .unwrap();
        std::fs::write(pkg.join("DEBIAN/conffiles"), "/etc/cloudshell-ldap-sync/config.toml\n").unwrap();
        for script in ["postinst", "prerm", "postrm"] {
            let to = pkg.join("DEBIAN").join(script);
            std::fs::copy(common::repo_path(&format!("debian/{script}")), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::copy(common::repo_path("config/example.toml"), pkg.join("etc/cloudshell-ldap-sync/config.toml"))
            .unwrap();
        let deb = self.dir.path().join(format!("stand-in_{version}.deb"));
        run(Command::new("dpkg-deb").args(["--root-owner-group", "-b"]).arg(&pkg).arg(&deb));
        deb
    }

    /// Runs dpkg on the root; its output.
    fn dpkg(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", self.root.display()))
            .args(["--force-script-chrootless", "--force-not-root", "--log=/dev/null"])
            .args(args);
        let out = cmd.output().expect("dpkg");
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{cmd:?}: {all}");
        all
    }

    fn install(&self, deb: &Path) -> String {
        self.dpkg(&["-i", deb.to_str().unwrap()])
    }
}

/// Purges through dpkg itself: dpkg removes the conffile, runs `postrm purge`, then removes the directory if it
/// is empty, warning otherwise.
#[test]
fn purge_removes_the_passwords_and_the_example_ca_files_and_names_what_it_leaves() {
    let stage = Stage::new();
    let deb = stage.stand_in("1.0");
    let etc = stage.root.join("etc/cloudshell-ldap-sync");
    let state = stage.root.join("var/lib/cloudshell-ldap-sync");

    // What the README and the example configurations place there: all of it goes, and dpkg has nothing to say.
    stage.install(&deb);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("status.json"), "{}").unwrap();
    for name in ["ldap-password", "cloudshell-password", "ca.pem", "ad-ca.pem"] {
        std::fs::write(etc.join(name), "x").unwrap();
    }
    let out = stage.dpkg(&["--purge", "cloudshell-ldap-sync"]);
    assert!(!etc.exists() && !state.exists(), "{out}");
    assert!(!out.contains("warning") && !out.contains("purge leaves"), "{out}");

    // Something else: named, and left (before, ca.pem was left with only dpkg's "not empty" warning).
    stage.install(&deb);
    std::fs::write(etc.join("ca.pem"), "x").unwrap();
    std::fs::write(etc.join("notes.txt"), "mine").unwrap();
    let out = stage.dpkg(&["--purge", "cloudshell-ldap-sync"]);
    assert!(out.contains("purge leaves in /etc/cloudshell-ldap-sync") && out.contains("notes.txt"), "{out}");
    assert!(!out.contains("ca.pem"), "{out}");
    assert!(etc.join("notes.txt").exists() && !etc.join("ca.pem").exists() && !etc.join("config.toml").exists());
}

/// The state directory as `DynamicUser=` lays it out (`/var/lib/cloudshell-ldap-sync` a link to
/// `/var/lib/private/cloudshell-ldap-sync`), holding `state.db` with its WAL files, the JSON files it was migrated
/// from and the status file: reinstalling, upgrading and removing keep every byte; purging removes it all.
#[test]
fn remove_and_upgrade_keep_the_state_database_byte_for_byte_and_purge_removes_it() {
    let stage = Stage::new();
    let (old, new) = (stage.stand_in("1.0"), stage.stand_in("1.1"));
    stage.install(&old);
    let private = stage.root.join("var/lib/private/cloudshell-ldap-sync");
    let state = stage.root.join("var/lib/cloudshell-ldap-sync");
    std::fs::create_dir_all(&private).unwrap();
    std::os::unix::fs::symlink("private/cloudshell-ldap-sync", &state).unwrap();
    let files: Vec<(&str, Vec<u8>)> =
        ["state.db", "state.db-wal", "state.db-shm", "users.json.migrated", "groups.json.migrated", "status.json"]
            .into_iter()
            .map(|name| (name, name.bytes().chain(0..=255u8).chain(name.bytes().rev()).collect()))
            .collect();
    for (name, bytes) in &files {
        std::fs::write(private.join(name), bytes).unwrap();
    }
    let kept = |after: &str| {
        for (name, bytes) in &files {
            let now = std::fs::read(state.join(name)).unwrap_or_else(|e| panic!("{name} after {after}: {e}"));
            assert!(now == *bytes, "{name} changed by {after}");
        }
    };

    stage.install(&old);
    kept("reinstalling the same version");
    let out = stage.install(&new);
    assert!(out.contains("1.1"), "{out}");
    kept("upgrading to a newer version");
    stage.dpkg(&["--remove", "cloudshell-ldap-sync"]);
    kept("removing without purging");
    assert!(stage.root.join("etc/cloudshell-ldap-sync/config.toml").exists(), "remove keeps the conffile");

    let out = stage.dpkg(&["--purge", "cloudshell-ldap-sync"]);
    assert!(!private.exists(), "purge leaves {}: {out}", private.display());
    assert!(std::fs::symlink_metadata(&state).is_err(), "purge leaves the link {}: {out}", state.display());
}

/// Installed into another root (`$DPKG_ROOT` set, as `dpkg --root` sets it), the maintainer scripts leave the
/// running system's systemd alone; on the running system they reach it. Run in a private mount namespace whose
/// `/run` says systemd is running, with `systemctl` and `deb-systemd-invoke` stand-ins that log their calls.
/// Root is needed (scripts/test runs as root in CI).
#[test]
fn maintainer_scripts_leave_the_running_systemd_alone_when_installing_into_another_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (bin, log) = (dir.path().join("bin"), dir.path().join("calls"));
    std::fs::create_dir(&bin).unwrap();
    for tool in ["systemctl", "deb-systemd-invoke"] {
        std::fs::write(bin.join(tool), format!("#!/bin/sh\necho \"{tool} $*\" >> '{}'\n", log.display())).unwrap();
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let scripts = |dpkg_root: Option<&Path>| -> String {
        std::fs::write(&log, "").unwrap();
        // An upgrade's configure, a remove's prerm and postrm (never a purge: on the running system it would
        // remove this host's state directory).
        let script = "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && \
                      sh \"$1/postinst\" configure 0.9 && sh \"$1/prerm\" remove && sh \"$1/postrm\" remove";
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(common::repo_path("debian"))
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));
        match dpkg_root {
            Some(root) => cmd.env("DPKG_ROOT", root),
            None => cmd.env_remove("DPKG_ROOT"),
        };
        let out = cmd.output().expect("unshare (util-linux) runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("unshare:") && !stderr.contains("mount:"),
            "this test mounts in a private mount namespace and needs root (scripts/test runs as root in CI): {stderr}"
        );
        assert!(out.status.success(), "{cmd:?}: {stderr}");
        std::fs::read_to_string(&log).unwrap()
    };
    let live = scripts(None);
    for call in ["systemctl daemon-reload", "deb-systemd-invoke try-restart", "deb-systemd-invoke stop"] {
        assert!(live.contains(call), "on the running system the scripts call {call}:\n{live}");
    }
    let other_root = dir.path().join("root");
    assert_eq!(scripts(Some(&other_root)), "", "into another root the scripts call nothing on the running system");
}
