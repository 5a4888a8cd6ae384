//! The benchmark behind `scripts/bench`: 100,000 users and 1,000 groups in slapd (bulk-loaded, 500-entry
//! limit), the CloudShell simulator, and the release binary in three scenarios (steady state, churn, cold),
//! each against the floor measured in the same run on the same data: paged `ldapsearch` of users and of
//! groups, and `curl` paging CloudShell's user list at 250 a page. Prints a Markdown table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BASE_DN, CS_PASSWORD, Directory, Files, GROUPS, SERVICE_DN, SERVICE_PASSWORD, Sim, Slapd};
use serde_json::Value;

struct Scale {
    users: usize,
    groups: usize,
    churn_users: usize,
    churn_groups: usize,
}

/// Group `i`'s direct user count: 20 to 2,000, most groups small, a few large.
fn group_size(i: usize, groups: usize) -> usize {
    let x = i as f64 / (groups.max(2) - 1) as f64;
    20 + (1980.0 * x * x * x) as usize
}

/// The directory, the usernames of everyone, and of the churn users.
fn generate(scale: &Scale) -> (Directory, Vec<String>, Vec<String>) {
    let mut d = Directory::new();
    let users: Vec<String> = (0..scale.users).map(|n| format!("u{n:06}")).collect();
    let dns: Vec<String> = users.iter().map(|u| d.user(u)).collect();
    let churn: Vec<String> = (0..scale.churn_users).map(|n| format!("new{n:05}")).collect();
    let churn_dns: Vec<String> = churn.iter().map(|u| d.user(u)).collect();
    let per_churn_group = scale.churn_users / scale.churn_groups.max(1);
    let mut offset = 0usize;
    for i in 0..scale.groups {
        let size = group_size(i, scale.groups);
        let mut members: Vec<String> = (0..size).map(|k| dns[(offset + k) % dns.len()].clone()).collect();
        offset += size;
        if i < scale.churn_groups {
            members.extend(churn_dns[i * per_churn_group..(i + 1) * per_churn_group].iter().cloned());
        }
        // Some nesting: every 20th group holds the one before it, and a three-level chain at 500..502.
        if i % 20 == 0 && i > 0 || i == 501 || i == 502 {
            members.push(format!("cn=g{:04},{GROUPS}", i - 1));
        }
        d.group(&format!("g{i:04}"), &members);
    }
    let mut everyone = users;
    everyone.extend(churn.iter().cloned());
    (d, everyone, churn)
}

/// Wall time of a command, in seconds; panics with its stderr when it fails.
fn timed(cmd: &mut Command) -> f64 {
    let started = Instant::now();
    let out = cmd.output().expect("running a floor command");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn ldapsearch(slapd: &Slapd, filter: &str, attrs: &[&str]) -> Command {
    let mut c = Command::new("ldapsearch");
    c.args(["-x", "-LLL", "-H", &slapd.url(), "-D", SERVICE_DN, "-w", SERVICE_PASSWORD, "-b", BASE_DN])
        .args(["-E", "pr=500/noprompt", filter])
        .args(attrs)
        .stdout(std::process::Stdio::null());
    c
}

/// Pages CloudShell's user list with curl, 250 a page. Returns (sum of curl's own request times, wall time
/// including curl's start-up, pages).
fn curl_pages(sim: &Sim, dir: &Path) -> (f64, f64, usize) {
    let started = Instant::now();
    let login = Command::new("curl")
        .args(["-s", "-X", "PUT", "-H", "Content-Type: application/json", "--data"])
        .arg(format!(r#"{{"Username":"admin","Password":"{CS_PASSWORD}","Domain":"Global"}}"#))
        .arg(format!("{}/Api/Auth/Login", sim.url()))
        .output()
        .expect("curl is installed (scripts/bench installs it)");
    let token: String = serde_json::from_slice(&login.stdout).expect("a token");
    let page_file = dir.join("page.json");
    let (mut total, mut pages, mut cursor) = (0.0, 0usize, None::<String>);
    loop {
        let mut url = format!("{}/api/v1/users?paginationProperties.limit=250", sim.url());
        if let Some(c) = &cursor {
            url.push_str(&format!(
                "&paginationProperties.cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ));
        }
        let out = Command::new("curl")
            .args(["-s", "-o"])
            .arg(&page_file)
            .args(["-w", "%{time_total}", "-H", &format!("Authorization: Basic {token}"), &url])
            .output()
            .expect("running curl");
        total += String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().expect("curl's time_total");
        pages += 1;
        let page: Value = serde_json::from_slice(&std::fs::read(&page_file).expect("the page")).expect("a JSON page");
        match page["Cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    (total, started.elapsed().as_secs_f64(), pages)
}

struct Run {
    report: Value,
    wall: f64,
    rss_mb: f64,
    sim_busy_ms: f64,
    writes: usize,
}

/// Runs `sync --json` under `/usr/bin/time -v`.
async fn run_sync(binary: &str, config: &Path, sim: &Sim) -> Run {
    sim.clear_calls().await;
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary)
        .args(["sync", "--json", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("/usr/bin/time is installed (scripts/bench installs it)");
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    let rss_kb: f64 = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.parse().ok())
        .expect("time -v reports the peak RSS");
    let state = sim.state().await;
    let writes = sim.calls().await.iter().filter(|c| c["method"] == "POST").count();
    Run { report, wall, rss_mb: rss_kb / 1024.0, sim_busy_ms: state["busy_ms"].as_f64().unwrap_or(0.0), writes }
}

fn sim_for(slapd: &Slapd, existing: Vec<String>) -> Sim {
    Sim::with_directory(slapd, |c| {
        c.admin_password = CS_PASSWORD.into();
        c.existing_users = existing;
        c.group_import_limit = 2000;
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args.get(1).cloned().unwrap_or_else(|| "target/release/cloudshell-ldap-sync".into());
    let users: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let groups: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let scale = Scale { users, groups, churn_users: 1_000, churn_groups: 50 };

    eprintln!("generating {} users and {} groups", scale.users + scale.churn_users, scale.groups);
    let (directory, everyone, churn) = generate(&scale);
    let group_names: Vec<String> = (0..scale.groups).map(|i| format!("g{i:04}")).collect();
    let names: Vec<&str> = group_names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let slapd = Slapd::start(&directory);
    drop(directory);
    eprintln!("slapadd + start: {:.1} s", started.elapsed().as_secs_f64());
    let files = Files::new();
    let bench_dir: PathBuf = files.path("bench");
    std::fs::create_dir_all(&bench_dir).expect("bench dir");

    // Steady state: everyone exists.
    let steady_sim = sim_for(&slapd, everyone.clone());
    eprintln!("measuring the floor");
    let users_floor =
        median((0..3).map(|_| timed(&mut ldapsearch(&slapd, "(objectClass=inetOrgPerson)", &["uid"]))).collect());
    let groups_floor = median(
        (0..3).map(|_| timed(&mut ldapsearch(&slapd, "(objectClass=groupOfNames)", &["cn", "member"]))).collect(),
    );
    let curls: Vec<(f64, f64, usize)> = (0..3).map(|_| curl_pages(&steady_sim, &bench_dir)).collect();
    let curl_floor = median(curls.iter().map(|c| c.0).collect());
    let curl_wall = median(curls.iter().map(|c| c.1).collect());
    let pages = curls[0].2;
    let floor = users_floor + groups_floor + curl_floor;

    let config_for = |sim: &Sim| files.config(&slapd.url(), &sim.url(), &names, "max_imports_per_run = 1000000\n", "");
    eprintln!("steady state");
    let config = config_for(&steady_sim);
    let mut steady: Vec<Run> = Vec::new();
    for _ in 0..3 {
        steady.push(run_sync(&binary, &config, &steady_sim).await);
    }
    steady.sort_by(|a, b| {
        a.report["duration_ms"].as_f64().partial_cmp(&b.report["duration_ms"].as_f64()).expect("numbers")
    });
    let steady = steady.remove(1);
    drop(steady_sim);

    eprintln!("churn");
    let churn_sim = sim_for(&slapd, everyone.iter().filter(|u| !churn.contains(u)).cloned().collect());
    let churn_run = run_sync(&binary, &config_for(&churn_sim), &churn_sim).await;
    drop(churn_sim);

    eprintln!("cold");
    let cold_sim = sim_for(&slapd, Vec::new());
    let cold_run = run_sync(&binary, &config_for(&cold_sim), &cold_sim).await;
    let cold_users = cold_sim.state().await["users"].as_array().map(Vec::len).unwrap_or(0);
    drop(cold_sim);

    let secs = |r: &Run| r.report["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let calls = |r: &Run, k: &str| r.report["api_calls"][k].as_u64().unwrap_or(0);
    println!(
        "| measurement | time (s) | ratio to floor | peak RSS (MB) | import calls (group / user) | simulator busy (s) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!("| floor: ldapsearch users (paged 500) | {users_floor:.2} | | | | |");
    println!("| floor: ldapsearch groups + members (paged 500) | {groups_floor:.2} | | | | |");
    println!(
        "| floor: curl, {pages} pages of 250 (curl's own time; {curl_wall:.2} s with process start-up) | {curl_floor:.2} | | | | |"
    );
    println!("| **floor total** | **{floor:.2}** | 1.00 | | | |");
    for (name, r) in [("steady state (median of 3)", &steady), ("churn", &churn_run), ("cold", &cold_run)] {
        println!(
            "| {name} | {:.2} (wall {:.2}) | {:.2} | {:.1} | {} / {} | {:.2} |",
            secs(r),
            r.wall,
            secs(r) / floor,
            r.rss_mb,
            calls(r, "import_group"),
            calls(r, "import_user"),
            r.sim_busy_ms / 1000.0
        );
    }
    let cold_total = secs(&cold_run);
    let cold_dir = cold_run.report["directory_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let overhead = cold_total - cold_dir - cold_run.sim_busy_ms / 1000.0;
    println!();
    println!(
        "- steady: directory read {:.2} s, {} user pages; result {}; writes {}",
        steady.report["directory_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        calls(&steady, "list_users"),
        steady.report["result"],
        steady.writes
    );
    println!(
        "- churn: {} group imports for {} affected groups, {} user imports, {} writes in all; imported {}",
        calls(&churn_run, "import_group"),
        scale.churn_groups,
        calls(&churn_run, "import_user"),
        churn_run.writes,
        churn_run.report["totals"]["imported"]
    );
    println!(
        "- cold: {cold_total:.2} s = directory {cold_dir:.2} s + simulator busy {:.2} s + client overhead {overhead:.2} s ({:.1} %); CloudShell ends with {cold_users} users",
        cold_run.sim_busy_ms / 1000.0,
        100.0 * overhead / cold_total
    );
    let _ = Duration::ZERO;
}
