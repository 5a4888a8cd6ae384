//! `cloudshell-sim`: runs the CloudShell Admin API simulator until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cloudshell_sim::{Config, directory};

/// A simulator of Quali CloudShell's Admin REST API, backed by a real LDAP directory.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The administrator's username.
    #[arg(long, default_value = "admin")]
    admin_username: String,
    /// A file holding the administrator's password (default password: admin).
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
    /// The login domain.
    #[arg(long, default_value = "Global")]
    admin_domain: String,
    /// A local user that exists at start (repeatable).
    #[arg(long = "existing-user")]
    existing_users: Vec<String>,
    /// A file of local users that exist at start, one username a line.
    #[arg(long)]
    existing_users_file: Option<PathBuf>,
    /// CloudShell groups to create at start (repeatable), besides System Administrators, Everyone and Lab Users.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Groups with more direct members than this are refused on import.
    #[arg(long, default_value_t = 1000)]
    group_import_limit: usize,
    /// The DomainName of users imported from the directory.
    #[arg(long, default_value = "EXAMPLE")]
    domain_name: String,
    /// The directory's URL (ldap:// or ldaps://); without it identity-management calls answer 500.
    #[arg(long)]
    ldap_url: Option<String>,
    #[arg(long, default_value = "")]
    ldap_bind_dn: String,
    /// A file holding the bind password.
    #[arg(long)]
    ldap_bind_password_file: Option<PathBuf>,
    #[arg(long, default_value = "")]
    ldap_base_dn: String,
    #[arg(long, default_value = "(objectClass=inetOrgPerson)")]
    ldap_user_filter: String,
    #[arg(long, default_value = "(objectClass=groupOfNames)")]
    ldap_group_filter: String,
    #[arg(long, default_value = "uid")]
    ldap_username_attribute: String,
    #[arg(long, default_value = "cn")]
    ldap_group_name_attribute: String,
    #[arg(long, default_value = "member")]
    ldap_member_attribute: String,
    /// The attribute reported as the external user's Id (objectSid in Active Directory).
    #[arg(long, default_value = "entryUUID")]
    ldap_sid_attribute: String,
    #[arg(long, default_value_t = 500)]
    ldap_page_size: i32,
    /// Accept any certificate from the directory (test directories only).
    #[arg(long)]
    ldap_danger_skip_tls_verify: bool,
}

fn read_secret(path: &Option<PathBuf>, default: &str) -> anyhow::Result<String> {
    match path {
        None => Ok(default.to_string()),
        Some(p) => Ok(std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let directory = match &args.ldap_url {
        None => None,
        Some(url) => Some(directory::Settings {
            user_filter: args.ldap_user_filter.clone(),
            group_filter: args.ldap_group_filter.clone(),
            username_attribute: args.ldap_username_attribute.clone(),
            group_name_attribute: args.ldap_group_name_attribute.clone(),
            member_attribute: args.ldap_member_attribute.clone(),
            sid_attribute: args.ldap_sid_attribute.clone(),
            page_size: args.ldap_page_size,
            danger_skip_tls_verify: args.ldap_danger_skip_tls_verify,
            timeout: Duration::from_secs(30),
            ..directory::Settings::openldap(
                url,
                &args.ldap_bind_dn,
                &read_secret(&args.ldap_bind_password_file, "")?,
                &args.ldap_base_dn,
            )
        }),
    };
    let mut existing_users = args.existing_users.clone();
    if let Some(file) = &args.existing_users_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        existing_users.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string));
    }
    let config = Config {
        admin_username: args.admin_username.clone(),
        admin_password: read_secret(&args.admin_password_file, "admin")?,
        admin_domain: args.admin_domain.clone(),
        existing_users,
        group_import_limit: args.group_import_limit,
        domain_name: args.domain_name.clone(),
        directory,
        groups: args.groups.clone(),
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler succeeds on Unix");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    cloudshell_sim::serve(listener, config, shutdown).await?;
    Ok(())
}
