//! The simulator's own connection to the organisation's directory, standing in for the one a real CloudShell
//! has. Deliberately simple and independent of the daemon's `ldap` module: one connection per request,
//! paged subtree searches, direct members only (CloudShell does not expand nested groups).

use std::time::Duration;

use futures_util::StreamExt;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

/// How the simulator reaches the directory.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    pub bind_dn: String,
    pub bind_password: String,
    pub base_dn: String,
    pub user_filter: String,
    pub group_filter: String,
    pub username_attribute: String,
    pub group_name_attribute: String,
    pub member_attribute: String,
    /// The attribute reported as the external user's `Id` (`entryUUID` in OpenLDAP, `objectSid` in AD).
    pub sid_attribute: String,
    pub email_attribute: String,
    pub display_name_attribute: String,
    pub page_size: i32,
    pub danger_skip_tls_verify: bool,
    pub timeout: Duration,
}

impl Settings {
    /// Settings for an OpenLDAP directory laid out the usual way.
    pub fn openldap(url: &str, bind_dn: &str, bind_password: &str, base_dn: &str) -> Settings {
        Settings {
            url: url.to_string(),
            bind_dn: bind_dn.to_string(),
            bind_password: bind_password.to_string(),
            base_dn: base_dn.to_string(),
            user_filter: "(objectClass=inetOrgPerson)".to_string(),
            group_filter: "(objectClass=groupOfNames)".to_string(),
            username_attribute: "uid".to_string(),
            group_name_attribute: "cn".to_string(),
            member_attribute: "member".to_string(),
            sid_attribute: "entryUUID".to_string(),
            email_attribute: "mail".to_string(),
            display_name_attribute: "displayName".to_string(),
            page_size: 500,
            danger_skip_tls_verify: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// An external group as CloudShell lists it.
#[derive(Clone, Debug)]
pub struct ExternalGroup {
    pub name: String,
    pub dn: String,
}

/// An external user as CloudShell lists it.
#[derive(Clone, Debug)]
pub struct ExternalUser {
    pub sid: String,
    pub username: String,
    pub display_name: Option<String>,
    pub dn: String,
    pub email: Option<String>,
}

/// A group's direct membership: the users among its members, and how many member values it has in all.
#[derive(Clone, Debug)]
pub struct DirectMembers {
    pub member_values: usize,
    pub users: Vec<ExternalUser>,
}

pub type Result<T> = std::result::Result<T, String>;

async fn connect(s: &Settings) -> Result<Ldap> {
    let conn_settings = LdapConnSettings::new().set_conn_timeout(s.timeout).set_no_tls_verify(s.danger_skip_tls_verify);
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &s.url)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", s.url))?;
    ldap3::drive!(conn);
    ldap.with_timeout(s.timeout)
        .simple_bind(&s.bind_dn, &s.bind_password)
        .await
        .and_then(|r| r.success())
        .map_err(|e| format!("bind to {} refused: {e}", s.url))?;
    Ok(ldap)
}

async fn paged_search(ldap: &mut Ldap, s: &Settings, filter: &str, attrs: Vec<String>) -> Result<Vec<SearchEntry>> {
    let adapters: Vec<Box<dyn Adapter<_, _>>> =
        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(s.page_size))];
    let mut stream = ldap
        .with_timeout(s.timeout)
        .streaming_search_with(adapters, &s.base_dn, Scope::Subtree, filter, attrs)
        .await
        .map_err(|e| format!("search {filter} failed: {e}"))?;
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await.map_err(|e| format!("search {filter} failed: {e}"))? {
        entries.push(SearchEntry::construct(entry));
    }
    stream.finish().await.success().map_err(|e| format!("search {filter} failed: {e}"))?;
    Ok(entries)
}

fn first(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.first().cloned())
}

fn sid(entry: &SearchEntry, attr: &str) -> Option<String> {
    if let Some(s) = first(entry, attr) {
        return Some(s);
    }
    entry
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .and_then(|bytes| decode_sid(bytes))
}

/// Decodes a binary Windows SID (`objectSid`) into its `S-1-5-21-...` form.
pub fn decode_sid(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 8 {
        return None;
    }
    let revision = bytes[0];
    let count = bytes[1] as usize;
    if bytes.len() != 8 + 4 * count {
        return None;
    }
    let authority = bytes[2..8].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut out = format!("S-{revision}-{authority}");
    for chunk in bytes[8..].chunks_exact(4) {
        let sub = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        out.push_str(&format!("-{sub}"));
    }
    Some(out)
}

fn user_attrs(s: &Settings) -> Vec<String> {
    vec![
        s.username_attribute.clone(),
        s.sid_attribute.clone(),
        s.email_attribute.clone(),
        s.display_name_attribute.clone(),
    ]
}

fn to_user(s: &Settings, entry: &SearchEntry) -> Option<ExternalUser> {
    let username = first(entry, &s.username_attribute)?;
    Some(ExternalUser {
        sid: sid(entry, &s.sid_attribute).unwrap_or_else(|| entry.dn.clone()),
        username,
        display_name: first(entry, &s.display_name_attribute),
        dn: entry.dn.clone(),
        email: first(entry, &s.email_attribute),
    })
}

/// Every group under the base DN.
pub async fn list_groups(s: &Settings) -> Result<Vec<ExternalGroup>> {
    let mut ldap = connect(s).await?;
    let entries = paged_search(&mut ldap, s, &s.group_filter, vec![s.group_name_attribute.clone()]).await?;
    let _ = ldap.unbind().await;
    Ok(entries
        .iter()
        .filter_map(|e| first(e, &s.group_name_attribute).map(|name| ExternalGroup { name, dn: e.dn.clone() }))
        .collect())
}

/// A group's direct members that are users; `None` when no group has that name.
pub async fn direct_members(s: &Settings, group: &str) -> Result<Option<DirectMembers>> {
    let mut ldap = connect(s).await?;
    let filter = format!("(&{}({}={}))", s.group_filter, s.group_name_attribute, ldap_escape(group));
    let groups = paged_search(&mut ldap, s, &filter, vec![s.member_attribute.clone()]).await?;
    let Some(group_entry) = groups.first() else {
        let _ = ldap.unbind().await;
        return Ok(None);
    };
    let member_dns: Vec<String> = group_entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(&s.member_attribute))
        .flat_map(|(_, v)| v.iter().cloned())
        .collect();
    // One base-scope read per member, as a directory client without a join would do; up to 32 in flight on
    // the one connection.
    let reads = futures_util::stream::iter(member_dns.iter().cloned())
        .map(|dn| {
            let mut ldap = ldap.clone();
            async move {
                let result = ldap.with_timeout(s.timeout).search(&dn, Scope::Base, &s.user_filter, user_attrs(s)).await;
                (dn, result)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut users = Vec::with_capacity(member_dns.len());
    for (dn, result) in reads {
        let result = result.map_err(|e| format!("reading member {dn} failed: {e}"))?;
        match result.1.rc {
            0 => {}
            32 => continue, // noSuchObject: a dangling member reference
            rc => return Err(format!("reading member {dn} failed with result code {rc}: {}", result.1.text)),
        }
        users.extend(result.0.into_iter().filter_map(|raw| to_user(s, &SearchEntry::construct(raw))));
    }
    // Keep the directory's order stable for callers.
    users.sort_by_cached_key(|u| u.username.to_lowercase());
    let _ = ldap.unbind().await;
    Ok(Some(DirectMembers { member_values: member_dns.len(), users }))
}

/// A user by account name; `None` when the directory has no such user.
pub async fn find_user(s: &Settings, username: &str) -> Result<Option<ExternalUser>> {
    let mut ldap = connect(s).await?;
    let filter = format!("(&{}({}={}))", s.user_filter, s.username_attribute, ldap_escape(username));
    let entries = paged_search(&mut ldap, s, &filter, user_attrs(s)).await?;
    let _ = ldap.unbind().await;
    Ok(entries.iter().find_map(|e| to_user(s, e)))
}

#[cfg(test)]
mod tests {
    use super::decode_sid;

    #[test]
    fn decodes_a_domain_sid() {
        // S-1-5-21-1-2-3-500
        let mut bytes = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1, 2, 3, 500] {
            bytes.extend_from_slice(&sub.to_le_bytes());
        }
        assert_eq!(decode_sid(&bytes).as_deref(), Some("S-1-5-21-1-2-3-500"));
        assert_eq!(decode_sid(&bytes[..10]), None);
    }
}
