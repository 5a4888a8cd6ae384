//! A simulator of Quali CloudShell's Admin REST API, faithful to `docs/cloudshell-api.md`.
//!
//! It serves login, users, CloudShell groups and identity management under `/api`, resolves external groups
//! and users from a real LDAP directory through its own simple connection ([`directory`]), and injects faults.
//! Tests drive it through a control endpoint under `/_sim` (state, call log, faults). It is a test and demo
//! tool: it keeps everything in memory and trusts its callers.

mod api;
pub mod directory;
mod json;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use api::MAX_PAGE;
pub use state::{Call, FailRule, FaultRequest, MalformedRule};

/// Everything the simulator is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub admin_username: String,
    pub admin_password: String,
    /// The login domain the administrator must name (CloudShell's default is `Global`).
    pub admin_domain: String,
    /// Local users that exist at start, besides the administrator.
    pub existing_users: Vec<String>,
    /// Groups with more direct members than this are refused on import (400).
    pub group_import_limit: usize,
    /// The `DomainName` given to users imported from the directory.
    pub domain_name: String,
    pub directory: Option<directory::Settings>,
    /// CloudShell groups that exist at start besides `System Administrators`, `Everyone` and `Lab Users`.
    pub groups: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            admin_username: "admin".into(),
            admin_password: "admin".into(),
            admin_domain: "Global".into(),
            existing_users: Vec::new(),
            group_import_limit: 1000,
            domain_name: "EXAMPLE".into(),
            directory: None,
            groups: Vec::new(),
        }
    }
}

fn build(config: Config) -> Arc<api::Sim> {
    let mut world = state::World::new(
        &config.admin_username,
        &config.existing_users,
        config.group_import_limit,
        &config.domain_name,
    );
    for name in &config.groups {
        world.add_group(name);
    }
    Arc::new(api::Sim {
        world: Mutex::new(world),
        admin: api::Admin {
            username: config.admin_username,
            password: config.admin_password,
            domain: config.admin_domain,
        },
        directory: config.directory,
    })
}

/// The simulator's router: one handler that routes by hand, so paths match case-insensitively.
fn router(sim: Arc<api::Sim>) -> axum::Router {
    axum::Router::new().fallback(api::handle).with_state(sim)
}

/// Serves the simulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(build(config))).with_graceful_shutdown(shutdown).await
}

/// A simulator running on a thread of its own (with its own runtime, so that it keeps answering while a
/// test blocks on a child process). It stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The base URL, such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the simulator on `addr` (port 0 picks a free port) on a thread of its own.
pub fn spawn(config: Config, addr: SocketAddr) -> std::io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Bind with std: this may be called from inside another runtime, where `block_on` is not allowed.
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name(format!("cloudshell-sim-{}", addr.port())).spawn(move || {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let served = runtime
            .block_on(async move { serve(tokio::net::TcpListener::from_std(listener)?, config, shutdown).await });
        if let Err(e) = served {
            eprintln!("cloudshell-sim stopped: {e}");
        }
    })?;
    Ok(Running { addr, stop: Some(stop), thread: Some(thread) })
}
