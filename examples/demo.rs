//! The demo behind `scripts/demo`: a throwaway slapd seeded with a sample organisation, the CloudShell
//! simulator, and the real `cloudshell-ldap-sync` binary through a dry run, imports, group placement and a leaver.
//! Everything runs on loopback in a temp dir and is removed at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BASE_DN, Directory, GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Sim, Slapd};

const IMPORT_LIMIT: usize = 200;

/// A sample organisation: 320 people, nested teams, odd names, and a group above CloudShell's import limit.
fn organisation() -> Directory {
    let mut d = Directory::new();
    let staff = d.users("emp", 300);
    let porter = d.user_at(&format!("cn=Porter\\, James,{PEOPLE}"), "jporter", "Porter, James");
    let elodie = d.user_at(&format!("cn=Élodie Durand,{PEOPLE}"), "edurand", "Élodie Durand");
    let zoe = d.user_at(&format!("cn=Zoë Ünal,{PEOPLE}"), "zunal", "Zoë Ünal");
    let sre = d.group("SRE", &staff[0..8]);
    let mut platform = staff[8..20].to_vec();
    platform.push(sre);
    let platform = d.group("Platform", &platform);
    let mut engineering = staff[20..50].to_vec();
    engineering.push(platform);
    d.group("Engineering", &engineering);
    let mut ops = staff[50..62].to_vec();
    ops.push(porter.clone());
    d.group("Ops (EU) *", &ops);
    let mut devs = staff[62..80].to_vec();
    devs.extend([elodie, zoe]);
    d.group("Développeurs", &devs);
    let mut all = staff[..250].to_vec();
    all.push(porter);
    d.group("All Staff", &all);
    d.group("Contractors", &[format!("uid=gone,{PEOPLE}")]);
    d
}

fn write_secret(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, secret).expect("writing a secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

fn main() {
    let binary = std::env::args().nth(1).unwrap_or_else(|| "target/debug/cloudshell-ldap-sync".into());
    assert!(Path::new(&binary).exists(), "{binary} not found: build it first (scripts/demo does)");

    println!("== starting a throwaway slapd with a sample organisation (320 people, 8 groups)");
    let slapd = Slapd::start(&organisation());
    println!("   {} (base {BASE_DN}, groups under {GROUPS}, 500-entry size limit)", slapd.url());

    println!("== starting the CloudShell simulator (group import limit {IMPORT_LIMIT})");
    let sim = Sim::with_directory(&slapd, |c| {
        c.admin_password = "demo-admin".into();
        c.group_import_limit = IMPORT_LIMIT;
        // Some people already exist in CloudShell, one of them spelled in another case.
        c.existing_users = vec!["EMP00020".into(), "jporter".into()];
        // CloudShell groups that carry permissions, besides the built-in "Lab Users".
        c.groups = vec!["Engineering".into(), "Ops".into()];
    });
    println!(
        "   {} (existing users: admin, EMP00020, jporter; CloudShell groups: Lab Users, Engineering, Ops)",
        sim.url()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let ldap_pw = write_secret(dir.path(), "ldap-password", SERVICE_PASSWORD);
    let cs_pw = write_secret(dir.path(), "cloudshell-password", "demo-admin");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[ldap]
url = "{ldap}"
bind_dn = "{SERVICE_DN}"
bind_password_file = "{ldap_pw}"
base_dn = "{BASE_DN}"

[cloudshell]
url = "{cs}"
password_file = "{cs_pw}"

[sync]
groups = ["Engineering", "Ops (EU) *", "Développeurs", "All Staff", "Contractors", "Interns"]
max_imports_per_run = 1000
remove_from_groups = true

# People who leave every configured group are deactivated (after one complete run), never deleted.
[sync.leavers]
action = "deactivate"

# Every effective member (nested teams included) is placed in these CloudShell groups.
[[sync.mapping]]
directory_group = "Engineering"
cloudshell_groups = ["Lab Users", "Engineering"]

[[sync.mapping]]
directory_group = "Ops (EU) *"
cloudshell_groups = ["Lab Users", "Ops"]

[monitor]
state_directory = "{state}"
"#,
            state = dir.path().join("state").display(),
            ldap = slapd.url(),
            cs = sim.url(),
            ldap_pw = ldap_pw.display(),
            cs_pw = cs_pw.display(),
        ),
    )
    .expect("writing the config");
    println!("== config: {}\n{}", config.display(), std::fs::read_to_string(&config).unwrap_or_default());

    let run = |title: &str, args: &[&str]| {
        println!("== cloudshell-ldap-sync {title}");
        let out = Command::new(&binary)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .output()
            .expect("running cloudshell-ldap-sync");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            println!("   (warnings on stderr)");
            for line in stderr.lines().take(12) {
                println!("   | {line}");
            }
        }
        println!("   exit code {}\n", out.status.code().unwrap_or(-1));
    };
    run("sync --dry-run: the plan, nothing written", &["sync", "--dry-run"]);
    run("sync: imports group by group, falls back where CloudShell cannot, places members in groups", &["sync"]);
    run("sync again: nothing left to import or place", &["sync"]);
    // The operator fixes the config: without "Interns" the run is complete, and the users it sees are managed.
    let fixed = std::fs::read_to_string(&config).expect("reading the config").replace(", \"Interns\"]", "]");
    std::fs::write(&config, fixed).expect("writing the config");
    run("sync with \"Interns\" removed from the config: a complete run, everyone seen is managed", &["sync"]);
    // emp00055 leaves the company: out of every group they were in.
    for group in ["Ops (EU) *", "All Staff"] {
        slapd.modify(&format!(
            "dn: cn={},{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid=emp00055,{PEOPLE}\n\n",
            common::ldap3_dn_escape(group)
        ));
    }
    run("sync after emp00055 left: out of the CloudShell groups, deactivated (kept in CloudShell)", &["sync"]);
    run("status: how the last run went, as a monitoring check would ask", &["status"]);
    println!(
        "== the first runs exit 3 (partial) on purpose: \"Interns\" does not exist in the directory, so that group\n   \
         fails alone and every other group is complete (\"Contractors\" only lists a deleted account: empty, with a\n   \
         warning); with a failed group nobody can be taken for a leaver. The CloudShell groups hold every effective\n   \
         member of the directory groups mapped to them; jporter existed as a local user, so he is never removed.\n   \
         Stopping slapd and the simulator, removing the temp dir."
    );
}
