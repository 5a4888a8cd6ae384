//! The benchmark behind `scripts/bench`: directories bulk-loaded into slapd (500-entry limit), the CloudShell
//! simulator, and the release binary, each measurement against the floor measured in the same run on the same
//! data: paged `ldapsearch` of users and of groups, and `curl` paging CloudShell's user list at 250 a page.
//! Profiles (arguments; all three by default):
//! - `nested`: 100,000 users, 1,000 groups of 20-2,000 members (x³: 515,000 memberships) with some nesting;
//!   steady state, churn and cold;
//! - `flat`: 100,000 users, 1,000 groups of 20-2,000 members spread evenly (about 1.03 million memberships), no
//!   nesting; steady state, best of 3;
//! - `scale`: the flat shape at 10,000, 100,000 and 300,000 users (groups and memberships in proportion);
//!   steady state, best of 3 each, written as a table and a plot (`docs/bench-scale.svg`).
//!
//! Every measured run keeps its state in a state directory (`[monitor] state_directory`, as the shipped units'
//! `StateDirectory=`), with the shipped defaults (`[sync.leavers] action = "report"`: every member is a managed
//! user, recorded in `state.db`). The flat and scale profiles also measure that state: the first run (which
//! creates `state.db` and writes every managed user), the steady runs' `state_ms` against runs without a state
//! directory (alternating), the size of `state.db`, and at 100,000 users the first run after `users.json`.
//!
//! Prints Markdown tables.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BASE_DN, CS_PASSWORD, Directory, Files, GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Sim, Slapd};
use serde_json::Value;

struct Scale {
    users: usize,
    groups: usize,
    churn_users: usize,
    churn_groups: usize,
    /// Group sizes are `20 + 1980·x^exponent` for x from 0 to 1: 3 gives most groups small (515 members on
    /// average), 0.96 spreads them evenly (1,030 on average).
    exponent: f64,
    /// Every 20th group holds the one before it, and a three-level chain at g0500 ⊃ g0501 ⊃ g0502.
    nesting: bool,
}

/// Group `i`'s direct user count: 20 to 2,000.
fn group_size(i: usize, scale: &Scale) -> usize {
    let x = i as f64 / (scale.groups.max(2) - 1) as f64;
    20 + (1980.0 * x.powf(scale.exponent)) as usize
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
        let size = group_size(i, scale);
        let mut members: Vec<String> = (0..size).map(|k| dns[(offset + k) % dns.len()].clone()).collect();
        offset += size;
        if i < scale.churn_groups {
            members.extend(churn_dns[i * per_churn_group..(i + 1) * per_churn_group].iter().cloned());
        }
        // Some nesting: every 20th group holds the one before it, and a three-level chain at 500..502.
        if scale.nesting && (i % 20 == 0 && i > 0 || i == 501 || i == 502) {
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
    /// Wall time of the process, start-up and exit included.
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

/// The floor on one directory and one CloudShell, median of 3 each.
struct Floor {
    users: f64,
    groups: f64,
    curl: f64,
    curl_wall: f64,
    pages: usize,
}

impl Floor {
    fn measure(slapd: &Slapd, sim: &Sim, dir: &Path) -> Floor {
        let users =
            median((0..3).map(|_| timed(&mut ldapsearch(slapd, "(objectClass=inetOrgPerson)", &["uid"]))).collect());
        let groups = median(
            (0..3).map(|_| timed(&mut ldapsearch(slapd, "(objectClass=groupOfNames)", &["cn", "member"]))).collect(),
        );
        let curls: Vec<(f64, f64, usize)> = (0..3).map(|_| curl_pages(sim, dir)).collect();
        Floor {
            users,
            groups,
            curl: median(curls.iter().map(|c| c.0).collect()),
            curl_wall: median(curls.iter().map(|c| c.1).collect()),
            pages: curls[0].2,
        }
    }

    fn total(&self) -> f64 {
        self.users + self.groups + self.curl
    }

    fn print_rows(&self) {
        println!("| floor: ldapsearch users (paged 500) | {:.2} | | | | |", self.users);
        println!("| floor: ldapsearch groups + members (paged 500) | {:.2} | | | | |", self.groups);
        println!(
            "| floor: curl, {} pages of 250 (curl's own time; {:.2} s with process start-up) | {:.2} | | | | |",
            self.pages, self.curl_wall, self.curl
        );
        println!("| **floor total** | **{:.2}** | 1.00 | | | |", self.total());
    }
}

const TABLE_HEAD: &str = "| measurement | time (s) | ratio to floor | peak RSS (MB) | import calls (group / user) | simulator busy (s) |\n| --- | ---: | ---: | ---: | ---: | ---: |";

fn secs(r: &Run) -> f64 {
    r.report["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0
}

fn calls(r: &Run, k: &str) -> u64 {
    r.report["api_calls"][k].as_u64().unwrap_or(0)
}

fn print_run(name: &str, r: &Run, floor: f64) {
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

/// A directory in a fresh slapd, and everyone's usernames.
struct Loaded {
    slapd: Slapd,
    everyone: Vec<String>,
    churn: Vec<String>,
    group_names: Vec<String>,
    memberships: usize,
}

fn load(scale: &Scale) -> Loaded {
    eprintln!("generating {} users and {} groups", scale.users + scale.churn_users, scale.groups);
    let (directory, everyone, churn) = generate(scale);
    // Entries a year old, as most of an ops directory's are (a `modify_timestamp` read's window holds the few
    // changed lately, not every entry just loaded).
    let directory = directory.stamped("20251201000000Z");
    let memberships = directory.ldif().matches("\nmember: ").count();
    let started = Instant::now();
    // With content sync (and no size limit for the service account, as those searches cannot be paged), for
    // the daemon's change reads; the one-shot runs and the floor do not use it.
    let slapd = Slapd::start_with_syncprov_unlimited(&directory);
    drop(directory);
    eprintln!("slapadd + start: {:.1} s ({memberships} memberships)", started.elapsed().as_secs_f64());
    let group_names = (0..scale.groups).map(|i| format!("g{i:04}")).collect();
    Loaded { slapd, everyone, churn, group_names, memberships }
}

/// A new, empty state directory `name` (mode 0700, as systemd's `StateDirectoryMode=` in the shipped units).
fn new_state_dir(files: &Files, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = files.path(name);
    std::fs::create_dir_all(&dir).expect("a state directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
    dir
}

/// Writes the configuration for this directory and simulator: every group, the shipped defaults, and the state
/// directory `state` (none: no state kept, the way the benchmark ran before issue 24). Every run on it reads
/// in full (`full_sync_every = "0s"`): what the profiles measure against the floor is the full read (a one-shot
/// run with a state directory otherwise reads only what changed; the `oneshot` profile measures that).
fn config_for(files: &Files, loaded: &Loaded, sim: &Sim, extra: &str, state: Option<&Path>) -> PathBuf {
    let extra = format!("full_sync_every = \"0s\"\n{extra}");
    let extra = extra.as_str();
    let names: Vec<&str> = loaded.group_names.iter().map(String::as_str).collect();
    let sections = match state {
        Some(dir) => format!("[monitor]\nstate_directory = {:?}\n", dir.display().to_string()),
        None => String::new(),
    };
    files.config(&loaded.slapd.url(), &sim.url(), &names, extra, &sections)
}

/// One `sync --json` run with the steady runs' settings.
async fn steady_run(binary: &str, files: &Files, loaded: &Loaded, sim: &Sim, state: Option<&Path>) -> Run {
    let config = config_for(files, loaded, sim, "max_imports_per_run = 10000000\n", state);
    let run = run_sync(binary, &config, sim).await;
    assert_eq!(run.report["result"], "ok", "a steady run failed: {}", run.report);
    run
}

fn by_time(runs: &mut [Run]) {
    runs.sort_by(|a, b| secs(a).partial_cmp(&secs(b)).expect("numbers"));
}

/// The size in bytes of `state.db` and of its write-ahead log (`state.db-wal`, 0 when there is none).
fn db_size(state: &Path) -> (u64, u64) {
    let size = |name: &str| std::fs::metadata(state.join(name)).map(|m| m.len()).unwrap_or(0);
    (size("state.db"), size("state.db-wal"))
}

/// `after_reads_ms` in seconds: the plan, the steps after the imports (the leaver step with a state
/// directory), and the report.
fn after_reads(r: &Run) -> f64 {
    r.report["after_reads_ms"].as_f64().unwrap_or(0.0) / 1000.0
}

fn state_ms(r: &Run) -> f64 {
    r.report["state_ms"].as_f64().unwrap_or(0.0)
}

/// The directory of `scale` loaded into a slapd, the simulator resolving from it (every user already in
/// CloudShell), and the floor measured on them.
fn prepared(scale: &Scale, bench_dir: &Path) -> (Loaded, Sim, Floor) {
    let loaded = load(scale);
    let sim = sim_for(&loaded.slapd, loaded.everyone.clone());
    eprintln!("measuring the floor");
    let floor = Floor::measure(&loaded.slapd, &sim, bench_dir);
    (loaded, sim, floor)
}

/// The profile of the first benchmark: nesting, x³ sizes, steady state (median of 3), churn and cold.
async fn nested(binary: &str, files: &Files, bench_dir: &Path) {
    let scale =
        Scale { users: 100_000, groups: 1_000, churn_users: 1_000, churn_groups: 50, exponent: 3.0, nesting: true };
    let (loaded, steady_sim, floor) = prepared(&scale, bench_dir);
    // The daemon has been running: its state directory holds everyone (the first run creates it, unmeasured).
    let state = new_state_dir(files, "state-nested");
    eprintln!("first run (creates state.db)");
    let first = steady_run(binary, files, &loaded, &steady_sim, Some(&state)).await;
    eprintln!("steady state");
    let mut steady = Vec::new();
    for _ in 0..3 {
        steady.push(steady_run(binary, files, &loaded, &steady_sim, Some(&state)).await);
    }
    by_time(&mut steady);
    let steady = steady.remove(1);
    if std::env::var_os("BENCH_HOLD").is_some() {
        // For profiling: keep slapd and the simulator up until a line is read.
        let config = config_for(files, &loaded, &steady_sim, "", Some(&state));
        eprintln!("holding: config {}; press Enter to go on", config.display());
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    }
    drop(steady_sim);
    let config_for =
        |sim: &Sim, state: &Path| config_for(files, &loaded, sim, "max_imports_per_run = 1000000\n", Some(state));

    eprintln!("churn");
    let existing = loaded.everyone.iter().filter(|u| !loaded.churn.contains(u)).cloned().collect();
    let churn_sim = sim_for(&loaded.slapd, existing);
    let churn_run = run_sync(binary, &config_for(&churn_sim, &state), &churn_sim).await;
    drop(churn_sim);

    // A new installation: CloudShell holds only admin, and the state directory is new.
    eprintln!("cold");
    let cold_state = new_state_dir(files, "state-nested-cold");
    let cold_sim = sim_for(&loaded.slapd, Vec::new());
    let cold_run = run_sync(binary, &config_for(&cold_sim, &cold_state), &cold_sim).await;
    let cold_users = cold_sim.state().await["users"].as_array().map(Vec::len).unwrap_or(0);
    drop(cold_sim);

    println!(
        "### nested: {} users, {} groups, {} memberships\n",
        scale.users + scale.churn_users,
        scale.groups,
        loaded.memberships
    );
    println!("{TABLE_HEAD}");
    floor.print_rows();
    for (name, r) in [("steady state (median of 3)", &steady), ("churn", &churn_run), ("cold", &cold_run)] {
        print_run(name, r, floor.total());
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
        "- state (ms spent in state.db, opening it included): first run {:.0} ({} managed users written), steady {:.0} ({:.1} % of its cycle), churn {:.0}, cold {:.0} (a new state directory)",
        state_ms(&first),
        first.report["leavers"]["managed"],
        state_ms(&steady),
        100.0 * state_ms(&steady) / (secs(&steady) * 1000.0),
        state_ms(&churn_run),
        state_ms(&cold_run)
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
        "- cold: {cold_total:.2} s = directory {cold_dir:.2} s + simulator busy {:.2} s + client overhead {overhead:.2} s ({:.1} %); CloudShell ends with {cold_users} users\n",
        cold_run.sim_busy_ms / 1000.0,
        100.0 * overhead / cold_total
    );
}

/// One flat directory of `users` (groups in proportion): the floor and the best of 3 steady runs.
struct FlatResult {
    users: usize,
    groups: usize,
    memberships: usize,
    floor: Floor,
    best: Run,
    /// The highest peak RSS of the three runs.
    rss_mb: f64,
    /// The first run, which created `state.db` and wrote every managed user.
    first: Run,
    /// The three steady runs' `state_ms`, in the order of their cycle times (fastest first).
    steady_state_ms: Vec<f64>,
    /// The three steady runs' `state_ms` as a share of their cycle, the highest.
    worst_share: f64,
    /// The best of 3 steady runs without a state directory (alternating with those with one).
    stateless: Run,
    /// The highest peak RSS of the three runs without a state directory.
    stateless_rss_mb: f64,
    /// `state.db` and `state.db-wal` in bytes after the first run and after the steady runs.
    size_first: (u64, u64),
    size_steady: (u64, u64),
    /// At 100,000 users: the first run after a `users.json` (and `groups.json`) holding the same state.
    migration: Option<Migration>,
    /// The daemon (`run`) on the same state directory.
    daemon: DaemonRuns,
}

/// The daemon's runs, as its `run finished` events report them: the run at start (which reads `state.db`),
/// then three on SIGUSR1 (which take the managed users the daemon kept in memory); and its peak RSS.
struct DaemonRuns {
    start: Value,
    steady: Vec<Value>,
    /// A run after one group entry changed (a member added who is in another group already): a change read
    /// that resolves and plans.
    one: Value,
    /// A run after 1 % of the users were added to the directory, each a member of one of ten groups (new
    /// hires): a change read in the daemon, with their imports.
    changed: Value,
    /// CloudShell's import calls in the 1 % run, in seconds (from the daemon's own latency metric).
    changed_imports_s: f64,
    rss_mb: f64,
    /// The process's peak RSS (MB) after the run at start, the three steady runs, the one-entry run and the
    /// 1 % run: where the peak was reached.
    peaks: Vec<f64>,
}

impl DaemonRuns {
    fn ms(event: &Value, field: &str) -> f64 {
        event[field].as_f64().unwrap_or(0.0)
    }

    /// The steady runs ordered by their cycle, fastest first.
    fn by_time(&self) -> Vec<&Value> {
        let mut runs: Vec<&Value> = self.steady.iter().collect();
        runs.sort_by(|a, b| Self::ms(a, "duration_ms").total_cmp(&Self::ms(b, "duration_ms")));
        runs
    }
}

/// Starts the daemon (`run`) on `config`; its log (stderr: one JSON object a line), line by line.
fn spawn_daemon(
    binary: &str,
    config: &Path,
) -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStderr>>) {
    use std::io::BufRead;
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the daemon");
    let lines = std::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    (child, lines)
}

/// The seconds the daemon listening on `listen` has spent in CloudShell's import calls so far (the sums of its
/// `api_request_duration_seconds` for `import_group` and `import_user`).
fn import_seconds(listen: &str) -> f64 {
    let out = Command::new("curl").args(["-sf", &format!("http://{listen}/metrics")]).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| {
            l.starts_with("cloudshell_ldap_sync_api_request_duration_seconds_sum")
                && (l.contains("call=\"import_group\"") || l.contains("call=\"import_user\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts `run` on `state` (schedule: once a year, a run at start), waits for that run, then asks for three
/// more with SIGUSR1, one at a time, and stops it.
fn daemon_runs(binary: &str, files: &Files, loaded: &Loaded, sim: &Sim, state: &Path) -> DaemonRuns {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let sections = format!(
        "[monitor]\nstate_directory = {:?}\nlisten = {listen:?}\n[schedule]\ncron = \"0 0 0 1 1 *\"\n[log]\nformat = \"json\"\n",
        state.display().to_string()
    );
    let names: Vec<&str> = loaded.group_names.iter().map(String::as_str).collect();
    let config = files.config(&loaded.slapd.url(), &sim.url(), &names, "max_imports_per_run = 10000000\n", &sections);
    // `BENCH_CHANGE_DETECTION=modify_timestamp`: the daemon reads changes by modifyTimestamp (default: "auto",
    // content sync, which this slapd offers).
    // By modifyTimestamp (the default margin): one unrelated change today, so that the latest timestamp is
    // today's and the year-old entries are outside the margin, as in a directory in use.
    if let Ok(method) = std::env::var("BENCH_CHANGE_DETECTION") {
        eprintln!("the daemon with ldap.change_detection = {method:?}");
        let text = std::fs::read_to_string(&config).expect("the config");
        let line = format!("[ldap]\nchange_detection = {method:?}\n");
        std::fs::write(&config, text.replacen("[ldap]\n", &line, 1)).expect("the config");
        let someone = &loaded.everyone[0];
        loaded.slapd.modify(&format!(
            "dn: uid={someone},{PEOPLE}\nchangetype: modify\nreplace: description\ndescription: moved desk\n"
        ));
    }
    let (mut child, mut lines) = spawn_daemon(binary, &config);
    let pid = child.id();
    let mut finished = || -> Value {
        for line in lines.by_ref() {
            let line = line.expect("the daemon's output");
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                eprintln!("daemon: {line}");
                continue;
            };
            if event["level"] == "ERROR" {
                eprintln!("daemon: {line}");
            }
            if event["fields"]["message"] == "run finished" {
                assert_eq!(event["fields"]["result"], "ok", "a daemon run failed: {line}");
                return event["fields"].clone();
            }
        }
        panic!("the daemon ended before its run finished");
    };
    let hwm = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    };
    let start = finished();
    let mut peaks = vec![hwm()];
    let mut steady = Vec::new();
    for _ in 0..3 {
        Command::new("kill").args(["-USR1", &pid.to_string()]).status().expect("kill");
        steady.push(finished());
    }
    peaks.push(hwm());
    // One group gains a member who is in another group already: a change read that resolves and plans, and
    // imports nobody.
    loaded.slapd.modify(&format!(
        "dn: cn={},{GROUPS}\nchangetype: modify\nadd: member\nmember: uid={},{PEOPLE}\n",
        loaded.group_names[0],
        loaded.everyone[loaded.everyone.len() - 1]
    ));
    Command::new("kill").args(["-USR1", &pid.to_string()]).status().expect("kill");
    let one = finished();
    peaks.push(hwm());
    add_new_hires(loaded, "hire");
    let imports_before = import_seconds(&listen);
    Command::new("kill").args(["-USR1", &pid.to_string()]).status().expect("kill");
    let changed = finished();
    let changed_imports_s = import_seconds(&listen) - imports_before;
    let rss_mb = hwm();
    peaks.push(rss_mb);
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    let _ = child.wait();
    DaemonRuns { start, steady, one, changed, changed_imports_s, rss_mb, peaks }
}

/// The watch at 100,000 users (issue 27): a daemon with `[schedule] watch = true`, `watch_delay = "500ms"` and
/// g0000 mapped to the CloudShell group `Lab Users`. First a minute with nothing happening (the daemon's CPU
/// time over it, from /proc), then 100 times, one after the other: a new user added to g0000 by ldapmodify, and
/// the time from just before that ldapmodify to the `run finished` event of the run the change started, which
/// has imported the user and placed it in `Lab Users`.
async fn watch(binary: &str, files: &Files) {
    let scale =
        Scale { users: 100_000, groups: 1_000, churn_users: 0, churn_groups: 0, exponent: 0.96, nesting: false };
    let loaded = load(&scale);
    let sim = sim_for(&loaded.slapd, loaded.everyone.clone());
    let state = new_state_dir(files, "state-watch");
    let sections = format!(
        "[monitor]\nstate_directory = {:?}\n[schedule]\ncron = \"0 0 0 1 1 *\"\nwatch = true\nwatch_delay = \"500ms\"\n\
         [log]\nformat = \"json\"\n[[sync.mapping]]\ndirectory_group = \"g0000\"\ncloudshell_groups = [\"Lab Users\"]\n",
        state.display().to_string()
    );
    let names: Vec<&str> = loaded.group_names.iter().map(String::as_str).collect();
    let config = files.config(&loaded.slapd.url(), &sim.url(), &names, "max_imports_per_run = 10000000\n", &sections);
    let (mut child, mut lines) = spawn_daemon(binary, &config);
    let pid = child.id();
    // The next event with one of these messages: its message and its fields.
    let mut until = |messages: &[&str]| -> (String, Value) {
        for line in lines.by_ref() {
            let line = line.expect("the daemon's output");
            let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
            if event["level"] == "ERROR" {
                eprintln!("daemon: {line}");
            }
            let message = event["fields"]["message"].as_str().unwrap_or_default();
            if messages.contains(&message) {
                return (message.to_string(), event["fields"].clone());
            }
        }
        panic!("the daemon ended before {messages:?}");
    };
    // The run at start and the watch's start, in either order.
    let first = until(&["run finished", "watching the directory"]).0;
    until(&[if first == "run finished" { "watching the directory" } else { "run finished" }]);
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 =
            fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
        ticks / 100.0
    };
    eprintln!("a minute with nothing happening");
    let (before, idle_from) = (cpu(), Instant::now());
    std::thread::sleep(std::time::Duration::from_secs(60));
    let idle_for = idle_from.elapsed().as_secs_f64();
    let idle = (cpu() - before) / idle_for;
    eprintln!("100 changes, one after the other");
    let mut latencies = Vec::new();
    let mut cycles = Vec::new();
    for n in 0..100 {
        let uid = format!("watch{n:03}");
        let ldif = format!(
            "dn: uid={uid},{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\n\
             dn: cn=g0000,{GROUPS}\nchangetype: modify\nadd: member\nmember: uid={uid},{PEOPLE}\n\n"
        );
        let started = Instant::now();
        loaded.slapd.modify(&ldif);
        let run = loop {
            let (_, run) = until(&["run finished"]);
            if run["added_to_groups"].as_u64() >= Some(1) {
                break run;
            }
        };
        assert_eq!(run["result"], "ok", "{run}");
        assert_eq!(run["trigger"], "watch", "{run}");
        latencies.push(started.elapsed().as_secs_f64());
        cycles.push(run["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0);
    }
    let storm = storm(&loaded, lines, pid);
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    let _ = child.wait();
    let placed = sim.group_members("Lab Users").await;
    assert!((0..100).all(|n| placed.contains(&format!("watch{n:03}"))), "every new user placed");
    latencies.sort_by(f64::total_cmp);
    cycles.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    println!("### watch: 100,000 users, 1,000 groups, watch_delay 500ms\n");
    println!("| measure | p50 | p90 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, v) in [("ldapmodify to the user imported and placed (s)", &latencies), ("the run's cycle (s)", &cycles)]
    {
        println!("| {label} | {:.3} | {:.3} | {:.3} | {:.3} |", at(v, 0.5), at(v, 0.9), at(v, 0.99), at(v, 1.0));
    }
    println!(
        "\n- the watching daemon with nothing happening: {:.2} % of one core over {:.0} s",
        idle * 100.0,
        idle_for
    );
    println!(
        "- a storm of {STORM} modifications ({STREAMS} ldapmodify at once, {:.1} s): {} runs started by the watch until it \
         settled, the last finished {:.1} s after the storm; the daemon's resident memory at most {:.0} MB during it \
         (sampled every 0.1 s), its peak {:.0} MB before it and {:.0} MB after\n",
        storm.took, storm.runs, storm.settled, storm.rss, storm.peak_before, storm.peak_after
    );
}

/// How many modifications the watch profile's storm makes, and in how many ldapmodify processes at once.
const STORM: usize = 100_000;
const STREAMS: usize = 8;

/// What the storm did to a watching daemon.
struct Storm {
    /// How long the ldapmodify of the whole storm took (s).
    took: f64,
    /// Runs the watch started, from the storm's start until no event came for 15 s.
    runs: usize,
    /// From the storm's end to the last of those runs' end (s).
    settled: f64,
    /// The daemon's VmHWM before the storm and after it, and the most VmRSS seen during it (MB).
    peak_before: f64,
    peak_after: f64,
    rss: f64,
}

/// [`STORM`] modifications of users' `description`, from [`STREAMS`] ldapmodify processes, while the daemon
/// (process `pid`, its log `lines`) watches: each is announced, and they must make a bounded number of runs
/// with bounded memory (issue 27: 100,000 in a minute).
fn storm(loaded: &Loaded, lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>, pid: u32) -> Storm {
    let memory = |field: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = status.lines().find_map(|l| l.strip_prefix(field)).map(|v| v.trim().trim_end_matches("kB").trim());
        kb.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
    };
    let hwm = || memory("VmHWM:");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // In STREAMS ldapmodify processes at once: one alone makes a few hundred modifications a second.
    let ldifs: Vec<String> = (0..STREAMS)
        .map(|stream| {
            (stream..STORM)
                .step_by(STREAMS)
                .map(|n| {
                    let uid = &loaded.everyone[n % loaded.everyone.len()];
                    format!(
                        "dn: uid={uid},{PEOPLE}\nchangetype: modify\nreplace: description\ndescription: storm {n}\n\n"
                    )
                })
                .collect()
        })
        .collect();
    eprintln!("a storm of {STORM} modifications");
    let (peak_before, mut rss) = (hwm(), memory("VmRSS:"));
    let (mut runs, mut last_end) = (0usize, None::<Instant>);
    let mut read = |line: String| {
        let Ok(event) = serde_json::from_str::<Value>(&line) else { return };
        match event["fields"]["message"].as_str() {
            Some("run triggered") if event["fields"]["trigger"] == "watch" => runs += 1,
            Some("run finished") => last_end = Some(Instant::now()),
            _ => {}
        }
    };
    let began = Instant::now();
    let ended = std::thread::scope(|scope| {
        let modify: Vec<_> = ldifs.iter().map(|ldif| scope.spawn(|| loaded.slapd.modify(ldif))).collect();
        while !modify.iter().all(|m| m.is_finished()) {
            if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                read(line);
            }
            rss = rss.max(memory("VmRSS:"));
        }
        modify.into_iter().for_each(|m| m.join().expect("the storm's ldapmodify"));
        Instant::now()
    });
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(15)) {
        read(line);
        rss = rss.max(memory("VmRSS:"));
    }
    let settled = last_end.map_or(0.0, |t| t.saturating_duration_since(ended).as_secs_f64());
    Storm { took: ended.duration_since(began).as_secs_f64(), runs, settled, peak_before, peak_after: hwm(), rss }
}

/// Adds 1 % of the directory's users as new entries (`hire00000`...), each a member of one of the first ten
/// groups.
fn add_new_hires(loaded: &Loaded, prefix: &str) {
    let count = loaded.everyone.len() / 100;
    let mut users = String::new();
    let mut groups = vec![String::new(); 10];
    for n in 0..count {
        let uid = format!("{prefix}{n:05}");
        users.push_str(&format!(
            "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\n"
        ));
        groups[n % 10].push_str(&format!("member: uid={uid},{PEOPLE}\n"));
    }
    loaded.slapd.add(&users);
    let modify: String = groups
        .iter()
        .enumerate()
        .map(|(i, members)| {
            format!("dn: cn={},{GROUPS}\nchangetype: modify\nadd: member\n{members}\n", loaded.group_names[i])
        })
        .collect();
    loaded.slapd.modify(&modify);
}

/// The first run in a state directory holding `users.json` and `groups.json` (written from the same state as
/// the steady runs'): it migrates them into a new `state.db`.
struct Migration {
    users_json: u64,
    run: Run,
    size: (u64, u64),
}

async fn flat(binary: &str, files: &Files, bench_dir: &Path, users: usize) -> FlatResult {
    let groups = users / 100;
    let scale = Scale { users, groups, churn_users: 0, churn_groups: 0, exponent: 0.96, nesting: false };
    let (loaded, sim, floor) = prepared(&scale, bench_dir);
    let state = new_state_dir(files, &format!("state-{users}"));
    eprintln!("first run (creates state.db)");
    let first = steady_run(binary, files, &loaded, &sim, Some(&state)).await;
    let size_first = db_size(&state);
    eprintln!("steady state, 3 runs with the state directory and 3 without, alternating");
    let (mut runs, mut stateless) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        runs.push(steady_run(binary, files, &loaded, &sim, Some(&state)).await);
        stateless.push(steady_run(binary, files, &loaded, &sim, None).await);
    }
    by_time(&mut runs);
    by_time(&mut stateless);
    let size_steady = db_size(&state);
    eprintln!("the daemon: a run at start, then 3 on SIGUSR1");
    let daemon = tokio::task::block_in_place(|| daemon_runs(binary, files, &loaded, &sim, &state));
    let migration = if users == 100_000 { Some(migration(binary, files, &loaded, &sim, &state).await) } else { None };
    if std::env::var_os("BENCH_HOLD").is_some() {
        // For profiling: keep slapd and the simulator up until a line is read.
        eprintln!("holding: config {}; press Enter to go on", files.path("config.toml").display());
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    }
    let rss_mb = runs.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let steady_state_ms = runs.iter().map(state_ms).collect();
    let worst_share = runs.iter().map(|r| state_ms(r) / (secs(r) * 1000.0)).fold(0.0, f64::max);
    let best = runs.into_iter().next().expect("three runs");
    let stateless_rss_mb = stateless.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let stateless = stateless.into_iter().next().expect("three runs");
    FlatResult {
        users,
        groups,
        memberships: loaded.memberships,
        floor,
        best,
        rss_mb,
        first,
        steady_state_ms,
        worst_share,
        stateless,
        stateless_rss_mb,
        size_first,
        size_steady,
        migration,
        daemon,
    }
}

/// Writes the state of `state` as the JSON files of earlier versions into a new state directory, and runs once
/// there: the run migrates them into a new `state.db`.
async fn migration(binary: &str, files: &Files, loaded: &Loaded, sim: &Sim, state: &Path) -> Migration {
    use cloudshell_ldap_sync::state;
    let (managed, counts) = {
        let db = state::db::Database::open_read_only(state).expect("state.db opens").expect("state.db exists");
        (db.load_managed().expect("the managed users"), db.load_counts().expect("the counts"))
    };
    let dir = new_state_dir(files, "state-migrated");
    state::save_managed(&dir, &managed).expect("writing users.json");
    state::save(&dir, &counts).expect("writing groups.json");
    let users_json = std::fs::metadata(dir.join("users.json")).map(|m| m.len()).unwrap_or(0);
    eprintln!("migration: users.json of {} managed users ({users_json} bytes)", managed.users.len());
    let run = steady_run(binary, files, loaded, sim, Some(&dir)).await;
    assert!(dir.join("users.json.migrated").exists(), "the run migrated users.json");
    let size = db_size(&dir);
    Migration { users_json, run, size }
}

fn print_flat(r: &FlatResult) {
    println!("### flat: {} users, {} groups, {} memberships, no nesting\n", r.users, r.groups, r.memberships);
    println!("{TABLE_HEAD}");
    r.floor.print_rows();
    print_run("steady state (best of 3)", &r.best, r.floor.total());
    let dir = r.best.report["directory_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    println!();
    println!(
        "- directory read {dir:.2} s; highest peak RSS of the 3 runs {:.1} MB; result {}; writes {}",
        r.rss_mb, r.best.report["result"], r.best.writes
    );
    let after = r.best.report["after_reads_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    println!(
        "- plan and report (everything after the reads) {after:.3} s = {:.1} % of the cycle",
        100.0 * after / secs(&r.best)
    );
    println!(
        "- per membership {:.2} µs, per user {:.2} µs (the whole cycle divided)\n",
        secs(&r.best) * 1e6 / r.memberships as f64,
        secs(&r.best) * 1e6 / r.users as f64
    );
    print_state(&[r]);
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The state database's table: its size, the first run's and the steady runs' time in it, and the steady run
/// with and without a state directory.
fn print_state(results: &[&FlatResult]) {
    println!("#### state.db\n");
    println!(
        "| users | managed | state.db after the first run (MB, + -wal) | after the steady runs | first run: state_ms / cycle (s) | steady: state_ms (3 runs) | share of the cycle (best / highest) | steady cycle with state / without (s) | plan and report with / without (s) | peak RSS with / without (MB) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in results {
        let ms: Vec<String> = r.steady_state_ms.iter().map(|m| format!("{m:.0}")).collect();
        println!(
            "| {} | {} | {:.1} + {:.1} | {:.1} + {:.1} | {:.0} / {:.2} | {} | {:.1} % / {:.1} % | {:.2} / {:.2} | {:.3} / {:.3} | {:.1} / {:.1} |",
            r.users,
            r.first.report["leavers"]["managed"],
            mb(r.size_first.0),
            mb(r.size_first.1),
            mb(r.size_steady.0),
            mb(r.size_steady.1),
            state_ms(&r.first),
            secs(&r.first),
            ms.join(" / "),
            100.0 * state_ms(&r.best) / (secs(&r.best) * 1000.0),
            100.0 * r.worst_share,
            secs(&r.best),
            secs(&r.stateless),
            after_reads(&r.best),
            after_reads(&r.stateless),
            r.rss_mb,
            r.stateless_rss_mb
        );
    }
    println!(
        "\nThe daemon (`run`) on the same state directory: the run at start reads `state.db`; the three on SIGUSR1 take \
         the managed users it kept in memory.\n"
    );
    println!(
        "| users | run at start: state_ms / cycle (s) | steady: state_ms (3 runs) | share of the cycle (best / highest) | steady cycle (s, best) | its read, directory (s), CloudShell users | plan and report (s, best) | peak RSS (MB) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in results {
        let d = &r.daemon;
        let runs = d.by_time();
        let ms: Vec<String> = runs.iter().map(|e| format!("{:.0}", DaemonRuns::ms(e, "state_ms"))).collect();
        let share = |e: &Value| 100.0 * DaemonRuns::ms(e, "state_ms") / DaemonRuns::ms(e, "duration_ms").max(1.0);
        let highest = runs.iter().map(|e| share(e)).fold(0.0, f64::max);
        println!(
            "| {} | {:.0} / {:.2} | {} | {:.1} % / {:.1} % | {:.2} | {}, {:.3}, users {} | {:.3} | {:.1} |",
            r.users,
            DaemonRuns::ms(&d.start, "state_ms"),
            DaemonRuns::ms(&d.start, "duration_ms") / 1000.0,
            ms.join(" / "),
            share(runs[0]),
            highest,
            DaemonRuns::ms(runs[0], "duration_ms") / 1000.0,
            runs[0]["read"].as_str().unwrap_or("?"),
            DaemonRuns::ms(runs[0], "directory_ms") / 1000.0,
            runs[0]["cloudshell_users"].as_str().unwrap_or("?"),
            DaemonRuns::ms(runs[0], "after_reads_ms") / 1000.0,
            d.rss_mb
        );
        println!(
            "\n- the daemon's run at start (ldap.change_detection {}): read {}, directory {:.2} s (a full read, and the model built)",
            std::env::var("BENCH_CHANGE_DETECTION").unwrap_or_else(|_| "\"auto\"".into()),
            d.start["read"].as_str().unwrap_or("?"),
            DaemonRuns::ms(&d.start, "directory_ms") / 1000.0
        );
        let peaks: Vec<String> = d.peaks.iter().map(|p| format!("{p:.1}")).collect();
        println!(
            "- the daemon's peak RSS after the run at start, the steady runs, the one-entry run, the 1 % run: {} MB",
            peaks.join(" / ")
        );
        let steady_ms: Vec<String> =
            d.steady.iter().map(|e| format!("{:.0}", DaemonRuns::ms(e, "duration_ms"))).collect();
        println!("- the steady runs' cycles: {} ms", steady_ms.join(" / "));
        let o = &d.one;
        println!(
            "- the daemon after one group gained a member (who is in another group already): read {}, cycle {:.3} s, directory {:.3} s, plan and report {:.3} s, result {}",
            o["read"].as_str().unwrap_or("?"),
            DaemonRuns::ms(o, "duration_ms") / 1000.0,
            DaemonRuns::ms(o, "directory_ms") / 1000.0,
            DaemonRuns::ms(o, "after_reads_ms") / 1000.0,
            o["result"]
        );
        let c = &d.changed;
        println!(
            "- the daemon after 1 % of the users were added (new hires in ten groups): read {}, CloudShell users {} ({} read one by one), cycle {:.2} s, directory {:.3} s, plan and report {:.3} s (the imports in it: {:.3} s of import calls; the cycle without them {:.3} s), {} imported by {} group imports and {} user imports, result {}",
            c["read"].as_str().unwrap_or("?"),
            c["cloudshell_users"].as_str().unwrap_or("?"),
            c["cloudshell_lookups"],
            DaemonRuns::ms(c, "duration_ms") / 1000.0,
            DaemonRuns::ms(c, "directory_ms") / 1000.0,
            DaemonRuns::ms(c, "after_reads_ms") / 1000.0,
            d.changed_imports_s,
            DaemonRuns::ms(c, "duration_ms") / 1000.0 - d.changed_imports_s,
            c["imported"],
            c["import_group_calls"],
            c["import_user_calls"],
            c["result"]
        );
    }
    for r in results {
        if let Some(m) = &r.migration {
            println!(
                "\n- migration at {} users: users.json {:.1} MB; the first run's state_ms {:.0} (cycle {:.2} s); state.db then {:.1} + {:.1} MB",
                r.users,
                mb(m.users_json),
                state_ms(&m.run),
                secs(&m.run),
                mb(m.size.0),
                mb(m.size.1)
            );
        }
    }
    println!();
}

/// One-shot runs that read only what changed (issue 26): the flat directory at 100,000 users, in a new state
/// directory with the shipped defaults (`change_detection = "auto"`: content sync; `full_sync_every = "6h"`).
/// First a run that reads in full, builds the model and stores it in `state.db`; then three runs with nothing
/// changed; one after a group gained a member who is in another group already; one after 1 % of the users
/// were added to ten groups (new hires); then two more with nothing changed; a full read once `full_sync_every`
/// has passed (the stored model's full read set back seven hours), which verifies the stored model rather than
/// reading it whole again, and a run after it; then a run with `full_sync_every = "0s"` on another state directory,
/// for the full read without a model. Each against the floor measured in the same run.
async fn oneshot(binary: &str, files: &Files, bench_dir: &Path) {
    let scale =
        Scale { users: 100_000, groups: 1_000, churn_users: 0, churn_groups: 0, exponent: 0.96, nesting: false };
    let (loaded, sim, floor) = prepared(&scale, bench_dir);
    // The second run in its state directory: the first creates state.db.
    let full_state = new_state_dir(files, "state-full");
    steady_run(binary, files, &loaded, &sim, Some(&full_state)).await;
    let full = steady_run(binary, files, &loaded, &sim, Some(&full_state)).await;
    let state = new_state_dir(files, "state-oneshot");
    let names: Vec<&str> = loaded.group_names.iter().map(String::as_str).collect();
    let sections = format!("[monitor]\nstate_directory = {:?}\n", state.display().to_string());
    let config = files.config(&loaded.slapd.url(), &sim.url(), &names, "max_imports_per_run = 10000000\n", &sections);
    let mut runs: Vec<(String, Run, (u64, u64))> = Vec::new();
    let mut step = |name: &str, run: Run| {
        assert_eq!(run.report["result"], "ok", "a one-shot run failed: {}", run.report);
        runs.push((name.to_string(), run, db_size(&state)));
    };
    eprintln!("one-shot runs reading what changed");
    step("first: full read, model built and stored", run_sync(binary, &config, &sim).await);
    for n in 1..=3 {
        step(&format!("nothing changed ({n})"), run_sync(binary, &config, &sim).await);
    }
    loaded.slapd.modify(&format!(
        "dn: cn={},{GROUPS}\nchangetype: modify\nadd: member\nmember: uid={},{PEOPLE}\n",
        loaded.group_names[1],
        loaded.everyone[loaded.everyone.len() - 2]
    ));
    step("one group gained a member", run_sync(binary, &config, &sim).await);
    add_new_hires(&loaded, "late");
    step("1 % added (new hires in ten groups)", run_sync(binary, &config, &sim).await);
    step("nothing changed, after the 1 % run", run_sync(binary, &config, &sim).await);
    step("nothing changed, after that", run_sync(binary, &config, &sim).await);
    // Six hours on: `full_sync_every` has passed since the stored model's full read (set back seven hours).
    full_read_back(&state, Duration::from_secs(7 * 3600));
    step("full read, `full_sync_every` passed: the stored model verified", run_sync(binary, &config, &sim).await);
    step("nothing changed, after the verified full read", run_sync(binary, &config, &sim).await);
    if std::env::var_os("BENCH_HOLD").is_some() {
        // For profiling: keep slapd and the simulator up until a line is read.
        eprintln!("holding: config {}; press Enter to go on", config.display());
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    }
    let f = floor.total();
    println!(
        "### oneshot: one-shot runs reading only what changed, 100,000 users, {} memberships\n",
        loaded.memberships
    );
    println!("{TABLE_HEAD}");
    floor.print_rows();
    print_run("one-shot full read, no model (`full_sync_every = \"0s\"`, the second run)", &full, f);
    println!();
    println!(
        "| run | read | cycle (s) | wall (s) | ratio to the floor | directory (s) | state_ms | plan and report (s) | CloudShell users | writes | peak RSS (MB) | state.db + -wal (MB) |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |");
    for (name, r, size) in &runs {
        let read = &r.report["read"];
        println!(
            "| {name} | {}{} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.3} | {} | {} | {:.1} | {:.1} + {:.1} |",
            read["mode"].as_str().unwrap_or("?"),
            read["model"].as_str().map(|m| format!(", model {m}")).unwrap_or_default(),
            secs(r),
            r.wall,
            secs(r) / f,
            r.report["directory_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            state_ms(r),
            after_reads(r),
            read["cloudshell_users"].as_str().unwrap_or("?"),
            r.writes,
            r.rss_mb,
            mb(size.0),
            mb(size.1)
        );
    }
    println!();
}

/// Sets the stored model's full read back by `ago`, as if it had been made that long before.
fn full_read_back(state: &Path, ago: Duration) {
    let db = rusqlite::Connection::open(state.join("state.db")).expect("state.db");
    let at = humantime::format_rfc3339_millis(std::time::SystemTime::now() - ago).to_string();
    let set = db.execute("UPDATE kept_model SET full_read_at = ?1", [&at]).expect("the stored model's time");
    assert_eq!(set, 1, "a stored model");
}

/// The second read before acting (`sync::confirm`): the flat shape at 100,000 users with a state directory and
/// `[sync.leavers] action = "deactivate"`, read in full every run and by change reads (the one-shot default):
/// a run with nothing to do, then a run in which 10 users who left one group are deactivated (its second read
/// timed by the report's `second_read_ms`), then one with nothing to do again.
async fn confirm(binary: &str, files: &Files, bench_dir: &Path) {
    let scale =
        Scale { users: 100_000, groups: 1_000, churn_users: 0, churn_groups: 0, exponent: 0.96, nesting: false };
    let (loaded, sim, floor) = prepared(&scale, bench_dir);
    let names: Vec<&str> = loaded.group_names.iter().map(String::as_str).collect();
    let mut rows: Vec<(String, Run)> = Vec::new();
    for (read, extra) in [("full every run", "full_sync_every = \"0s\"\n"), ("change reads", "")] {
        let state = new_state_dir(files, &format!("state-confirm-{}", rows.len()));
        let sections = format!(
            "[sync.leavers]\naction = \"deactivate\"\n\n[monitor]\nstate_directory = {:?}\n",
            state.display().to_string()
        );
        let keys = format!("max_imports_per_run = 10000000\n{extra}");
        let config = files.config(&loaded.slapd.url(), &sim.url(), &names, &keys, &sections);
        // Ten hires in the first group, managed from the first run on.
        let prefix = format!("leaver{}x", rows.len());
        let hires: Vec<String> = (0..10).map(|n| format!("uid={prefix}{n},{PEOPLE}")).collect();
        let entries: String = (0..10)
            .map(|n| {
                format!("dn: uid={prefix}{n},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {prefix}{n}\ncn: x\nsn: x\n\n")
            })
            .collect();
        loaded.slapd.add(&entries);
        let group = &loaded.group_names[0];
        let members: String = hires.iter().map(|dn| format!("member: {dn}\n")).collect();
        loaded.slapd.modify(&format!("dn: cn={group},{GROUPS}\nchangetype: modify\nadd: member\n{members}\n"));
        let mut step = |name: &str, run: Run| {
            assert_eq!(run.report["result"], "ok", "a run failed: {}", run.report);
            rows.push((format!("{read}: {name}"), run));
        };
        run_sync(binary, &config, &sim).await;
        step("nothing to do", run_sync(binary, &config, &sim).await);
        loaded.slapd.modify(&format!("dn: cn={group},{GROUPS}\nchangetype: modify\ndelete: member\n{members}\n"));
        let run = run_sync(binary, &config, &sim).await;
        let deactivated = run.report["leavers"]["deactivated"].as_array().map_or(0, Vec::len);
        assert_eq!(deactivated, 10, "the ten leavers are deactivated: {}", run.report["leavers"]);
        step("10 leavers deactivated", run);
        step("nothing to do again", run_sync(binary, &config, &sim).await);
    }
    let f = floor.total();
    println!("### confirm: the second read before deactivating, 100,000 users, {} memberships\n", loaded.memberships);
    println!("{TABLE_HEAD}");
    floor.print_rows();
    println!();
    println!(
        "| run | read | cycle (s) | wall (s) | ratio to the floor | directory (s) | second read (s) | peak RSS (MB) |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, r) in &rows {
        let second = r.report["second_read_ms"].as_f64().map_or("-".to_string(), |ms| format!("{:.3}", ms / 1000.0));
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {second} | {:.1} |",
            r.report["read"]["mode"].as_str().unwrap_or("?"),
            secs(r),
            r.wall,
            secs(r) / f,
            r.report["directory_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            r.rss_mb
        );
    }
    println!();
}

/// Active Directory (issue 26): a Samba AD domain controller (`common::SambaDc`: root, the fixed ports 389 and
/// 636) loaded over ldaps with `BENCH_AD_USERS` users (default 5,000) in groups of the flat shape (one group per
/// 100 users, 20 to `users / 50` members each, spread evenly), the simulator resolving from it, and one-shot
/// `sync --json` runs with the shipped Active Directory example's settings and a state directory, read three
/// ways: DirSync (the domain administrator, who holds the replication right), `uSNChanged` (an account without
/// that right, granted List Contents and Read Property on CN=Deleted Objects: `auto` falls back to it), and in
/// full at every run (`change_detection = "off"`). For each way, in its own state directory: the first run (a full
/// read, and the model built), three runs with nothing changed, one after a group gained a member, one after 1 %
/// of the users were added to ten groups. No floor: `ldapsearch` against Samba pages differently from this
/// program, so the full reads are the reference.
async fn ad(binary: &str, files: &Files) {
    use common::{AD_ADMIN, AD_BASE, AD_PASSWORD, SambaDc, ad_group, ad_user};
    let users: usize = std::env::var("BENCH_AD_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let groups = (users / 100).max(10);
    let started = Instant::now();
    let dc = SambaDc::start();
    eprintln!("Samba AD DC provisioned and started in {:.1} s", started.elapsed().as_secs_f64());
    let loading = Instant::now();
    let mut ldif = format!(
        "dn: OU=Staff,{AD_BASE}\nobjectClass: organizationalUnit\n\ndn: OU=Groups,{AD_BASE}\nobjectClass: organizationalUnit\n\n"
    );
    let dns: Vec<String> = (0..users)
        .map(|n| {
            let (dn, entry) = ad_user(&format!("u{n:06}"), &format!("u{n:06}"), false);
            ldif.push_str(&entry);
            dn
        })
        .collect();
    let (mut memberships, mut names) = (0, Vec::new());
    for g in 0..groups {
        let x = g as f64 / (groups - 1).max(1) as f64;
        let size = (20.0 + (users as f64 / 50.0 - 20.0).max(0.0) * x) as usize;
        let members: Vec<String> = (0..size).map(|k| dns[(g * 37 + k * 7) % users].clone()).collect();
        let mut members = members;
        members.sort();
        members.dedup();
        memberships += members.len();
        let name = format!("g{g:04}");
        ldif.push_str(&ad_group(&name, &members).1);
        names.push(name);
    }
    dc.add(&ldif);
    eprintln!(
        "loaded {users} users, {groups} groups, {memberships} memberships in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let reader = "benchusn";
    common::create_ad_account(reader, "Bench-Usn-Passw0rd!");
    dc.allow_deleted_objects(reader);
    let sim = Sim::for_ad(&dc, 100_000);
    std::fs::write(files.path("cs-password"), CS_PASSWORD).unwrap();
    let groups_line = format!("{names:?}\nmax_imports_per_run = 10000000");
    let config = |way: &str, bind: &str, password: &str, detection: &str| {
        let secret = files.path(&format!("ad-password-{way}"));
        std::fs::write(&secret, password).unwrap();
        let text = common::ad_example(&dc, &sim, bind, &secret, &files.path("cs-password"))
            .replace("change_detection = \"auto\"", &format!("change_detection = {detection:?}"))
            .replace("[\"CloudShell Users\", \"Lab Admins\"]", &groups_line)
            + &format!("\n[monitor]\nstate_directory = {:?}\n", new_state_dir(files, &format!("state-ad-{way}")));
        let path = files.path(&format!("ad-{way}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let ways = [
        ("dirsync", config("dirsync", AD_ADMIN, AD_PASSWORD, "auto")),
        ("usn", config("usn", &format!("{reader}@ad.example.org"), "Bench-Usn-Passw0rd!", "auto")),
        ("full", config("full", AD_ADMIN, AD_PASSWORD, "off")),
    ];
    let mut rows: Vec<(String, String, Run)> = Vec::new();
    for (hires, (way, path)) in ways.iter().enumerate() {
        eprintln!("AD one-shot runs: {way}");
        let mut step = |name: &str, run: Run| {
            assert_eq!(run.report["result"], "ok", "an AD run failed ({way}, {name}): {}", run.report);
            rows.push((way.to_string(), name.to_string(), run));
        };
        let first = if *way == "full" { "first: full read" } else { "first: full read, and the model built" };
        step(first, run_sync(binary, path, &sim).await);
        for n in 1..=3 {
            step(&format!("nothing changed ({n})"), run_sync(binary, path, &sim).await);
        }
        let member = &dns[users - 1 - hires];
        dc.modify(&format!("dn: CN=g0001,OU=Groups,{AD_BASE}\nchangetype: modify\nadd: member\nmember: {member}\n\n"));
        step("one group gained a member", run_sync(binary, path, &sim).await);
        let (mut added, mut adds) = (String::new(), String::new());
        for n in 0..users / 100 {
            let (dn, entry) = ad_user(&format!("h{way}{n:05}"), &format!("h{way}{n:05}"), false);
            added.push_str(&entry);
            let group = &names[n % 10];
            adds.push_str(&format!(
                "dn: CN={group},OU=Groups,{AD_BASE}\nchangetype: modify\nadd: member\nmember: {dn}\n\n"
            ));
        }
        dc.add(&added);
        dc.modify(&adds);
        step("1 % added (new hires in ten groups)", run_sync(binary, path, &sim).await);
    }
    println!("### ad: Samba AD, {users} users, {groups} groups, {memberships} memberships, one-shot runs\n");
    println!(
        "| read by | run | read | cycle (s) | wall (s) | directory (s) | state_ms | plan and report (s) | writes | peak RSS (MB) |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (way, name, r) in &rows {
        println!(
            "| {way} | {name} | {} {} | {:.3} | {:.3} | {:.3} | {:.0} | {:.3} | {} | {:.1} |",
            r.report["read"]["mode"].as_str().unwrap_or("?"),
            r.report["read"]["method"].as_str().unwrap_or(""),
            secs(r),
            r.wall,
            r.report["directory_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            state_ms(r),
            after_reads(r),
            r.writes,
            r.rss_mb
        );
    }
    println!();
}

/// The scale series as an SVG: cycle time and floor (left axis, s) and peak RSS (right axis, MB) against
/// memberships.
fn plot(results: &[&FlatResult]) -> String {
    let (w, h, m) = (640.0, 360.0, 60.0);
    let max_x = results.iter().map(|r| r.memberships).max().unwrap_or(1) as f64;
    let max_t = results.iter().map(|r| secs(&r.best).max(r.floor.total())).fold(0.0, f64::max) * 1.1;
    let max_m = results.iter().map(|r| r.rss_mb).fold(0.0, f64::max) * 1.1;
    let x = |v: f64| m + v / max_x * (w - 2.0 * m);
    let y = |v: f64, max: f64| h - m + -(v / max) * (h - 2.0 * m);
    let line = |points: Vec<(f64, f64)>, color: &str, dash: &str| {
        let path: Vec<String> = points.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let dots: String = points
            .iter()
            .map(|(a, b)| format!("<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3\" fill=\"{color}\"/>"))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>{dots}",
            path.join(" ")
        )
    };
    let cycle =
        line(results.iter().map(|r| (x(r.memberships as f64), y(secs(&r.best), max_t))).collect(), "#1f77b4", "");
    let floor =
        line(results.iter().map(|r| (x(r.memberships as f64), y(r.floor.total(), max_t))).collect(), "#1f77b4", "5,4");
    let rss = line(results.iter().map(|r| (x(r.memberships as f64), y(r.rss_mb, max_m))).collect(), "#d62728", "");
    let mut ticks = String::new();
    for r in results {
        let px = x(r.memberships as f64);
        ticks.push_str(&format!(
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{:.2}M</text>",
            h - m + 16.0,
            r.memberships as f64 / 1e6
        ));
    }
    for k in 0..=4 {
        let (t, mb) = (max_t * k as f64 / 4.0, max_m * k as f64 / 4.0);
        ticks.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{t:.1}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#d62728\">{mb:.0}</text>",
            m - 6.0,
            y(t, max_t) + 4.0,
            w - m + 6.0,
            y(mb, max_m) + 4.0
        ));
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
<text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">steady cycle against size (flat directory, best of 3)</text>\
<line x1=\"{m}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{:.1}\" stroke=\"black\"/>\
<line x1=\"{:.1}\" y1=\"{m}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#d62728\"/>\
{ticks}{floor}{cycle}{rss}\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\">memberships</text>\
<text x=\"16\" y=\"{:.1}\" font-size=\"12\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">seconds: cycle (solid), floor (dashed)</text>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#d62728\" transform=\"rotate(90 {:.1} {:.1})\" text-anchor=\"middle\">peak RSS (MB)</text>\
</svg>\n",
        w / 2.0,
        h - m,
        w - m,
        h - m,
        h - m,
        w - m,
        w - m,
        h - m,
        w / 2.0,
        h - 20.0,
        h / 2.0,
        h / 2.0,
        w - 16.0,
        h / 2.0,
        w - 16.0,
        h / 2.0
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args.get(1).cloned().unwrap_or_else(|| "target/release/cloudshell-ldap-sync".into());
    let mut profiles: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    if profiles.is_empty() {
        profiles = vec!["nested", "flat", "scale"];
    }
    let files = Files::new();
    let bench_dir: PathBuf = files.path("bench");
    std::fs::create_dir_all(&bench_dir).expect("bench dir");
    let mut flat_100k: Option<FlatResult> = None;
    for profile in profiles {
        match profile {
            "nested" => nested(&binary, &files, &bench_dir).await,
            "flat" => {
                let r = flat(&binary, &files, &bench_dir, 100_000).await;
                print_flat(&r);
                flat_100k = Some(r);
            }
            "scale" => {
                let small = flat(&binary, &files, &bench_dir, 10_000).await;
                let middle = match flat_100k.take() {
                    Some(r) => r,
                    None => flat(&binary, &files, &bench_dir, 100_000).await,
                };
                let large = flat(&binary, &files, &bench_dir, 300_000).await;
                let results = [&small, &middle, &large];
                println!("### scale: the flat shape at three sizes (steady state, best of 3 each)\n");
                println!(
                    "| users | groups | memberships | floor (s) | cycle (s) | ratio | peak RSS (MB) | plan and report (s) | µs per membership | µs per user |"
                );
                println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
                for r in results {
                    let t = secs(&r.best);
                    println!(
                        "| {} | {} | {} | {:.2} | {t:.2} | {:.2} | {:.1} | {:.3} | {:.2} | {:.2} |",
                        r.users,
                        r.groups,
                        r.memberships,
                        r.floor.total(),
                        t / r.floor.total(),
                        r.rss_mb,
                        r.best.report["after_reads_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                        t * 1e6 / r.memberships as f64,
                        t * 1e6 / r.users as f64
                    );
                }
                println!();
                print_state(&results);
                let svg = plot(&results);
                let path = Path::new("docs/bench-scale.svg");
                match std::fs::write(path, svg) {
                    Ok(()) => println!("\nplot: {}\n", path.display()),
                    Err(e) => eprintln!("cannot write {}: {e}", path.display()),
                }
            }
            "watch" => watch(&binary, &files).await,
            "oneshot" => oneshot(&binary, &files, &bench_dir).await,
            "confirm" => confirm(&binary, &files, &bench_dir).await,
            "ad" => ad(&binary, &files).await,
            other => panic!("unknown profile {other:?}: nested, flat, scale, watch, oneshot, confirm or ad"),
        }
    }
}
