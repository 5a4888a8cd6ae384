//! The kept model in a stored form, for a one-shot `sync` that keeps it in `state.db` from one run to the next
//! (the daemon keeps it in memory). Two parts:
//! - the **head**: the settings the model was read for, its cookies or marks, and what the server said. Small;
//!   it changes at every read.
//! - the **body**: the entries and their DNs (about 10 MB at a million member values). It changes only when an
//!   entry does.
//!
//! Encoded with postcard, each in a fixed order (entries sorted by UUID, DNs by id), so that an unchanged body
//! encodes to the same bytes and need not be written again. A stored model is checked as it is decoded: every DN
//! id an entry holds must name a kept DN, no DN twice, no entry twice. A body that fails is refused (the run
//! reads in full), never used.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::*;

/// The kept model, encoded ([`Kept::to_stored`], [`Kept::from_stored`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKept {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Head {
    query: Query,
    source: Source,
    page_size: i32,
    served_by: String,
    active_directory: Option<bool>,
    users: SideHead,
    groups: SideHead,
    mark: Option<DateTime<Utc>>,
    behind: Option<(String, String)>,
    dirsync: Option<dirsync::Position>,
    usn: Option<usn::Watermark>,
    /// [`Kept::containers`], sorted by GUID.
    containers: Vec<([u8; 16], Box<str>)>,
    blind: Option<Blind>,
}

#[derive(Serialize, Deserialize)]
struct SideHead {
    cookie: Option<Vec<u8>>,
    latest: Option<DateTime<Utc>>,
    whole: bool,
}

/// [`Kept::blind`]: only these two are ever set there; any other reads back as "not read".
#[derive(Serialize, Deserialize)]
enum Blind {
    MovedBelow(String),
    BackLink(String),
    Other,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    users: Vec<(&'a EntryUuid, &'a User)>,
    groups: Vec<(&'a EntryUuid, &'a Group)>,
    dns: Vec<Option<&'a str>>,
}

#[derive(Deserialize)]
struct Body {
    users: Vec<(EntryUuid, User)>,
    groups: Vec<(EntryUuid, Group)>,
    dns: Vec<Option<Box<str>>>,
}

/// The model's body, in order, borrowing the model: [`Kept::stored_body`]'s bytes, written where they go.
pub struct BodyToStore<'a>(BodyRef<'a>);

impl BodyToStore<'_> {
    /// Encodes the body into `to`: the same bytes each time.
    pub fn write_to(&self, to: &mut dyn std::io::Write) -> std::io::Result<()> {
        encode_into(&self.0, to)
    }
}

/// `value` encoded into `to`, through a buffer: postcard writes a byte at a time, which `to` (a digest, a blob)
/// takes in pieces of 64 KiB. An error writing to `to` is returned as it came (postcard reports any as its
/// buffer being full).
pub(crate) fn encode_into<T: Serialize>(value: &T, to: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut to = FirstError { to, error: None };
    let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, &mut to);
    let encoded = postcard::to_io(value, &mut buffered).map(|_| ()).map_err(std::io::Error::other);
    let done = encoded.and_then(|()| buffered.flush());
    drop(buffered);
    done.map_err(|e| to.error.take().unwrap_or(e))
}

/// A writer keeping the first error of the one it writes to.
struct FirstError<'w> {
    to: &'w mut dyn std::io::Write,
    error: Option<std::io::Error>,
}

impl std::io::Write for FirstError<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.to.write(buf).map_err(|e| std::io::Error::from(self.error.get_or_insert(e).kind()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.to.flush().map_err(|e| std::io::Error::from(self.error.get_or_insert(e).kind()))
    }
}

/// `bytes` decoded whole: bytes left over mean they are not what was encoded.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} bytes left over", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

impl<E> Side<E> {
    fn head(&self) -> SideHead {
        SideHead { cookie: self.cookie.clone(), latest: self.latest, whole: self.whole }
    }

    fn sorted_entries(&self) -> Vec<(&EntryUuid, &E)> {
        let mut all: Vec<(&EntryUuid, &E)> = self.entries.iter().collect();
        all.sort_unstable_by_key(|(uuid, _)| **uuid);
        all
    }
}

/// A part's entries, refused when a UUID comes twice.
fn side<E>(head: SideHead, entries: Vec<(EntryUuid, E)>, part: &str) -> Result<Side<E>, String> {
    let count = entries.len();
    let entries: HashMap<EntryUuid, E> = entries.into_iter().collect();
    if entries.len() != count {
        return Err(format!("the stored {part} hold an entry twice"));
    }
    Ok(Side { cookie: head.cookie, latest: head.latest, whole: head.whole, entries, marks: None, released: false })
}

impl Dns {
    /// The table of a stored body, refused when a DN comes twice.
    fn stored(texts: Vec<Option<Box<str>>>) -> Result<Dns, String> {
        let mut dns = Dns::default();
        for (id, text) in texts.into_iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| "the stored DNs are too many".to_string())?;
            match text {
                None => {
                    dns.texts.push(None);
                    dns.free.push(id);
                }
                Some(text) => {
                    let text: Arc<str> = Arc::from(text);
                    if dns.ids.insert(text.clone(), id).is_some() {
                        return Err(format!("the stored DNs hold {text:?} twice"));
                    }
                    dns.texts.push(Some(text));
                }
            }
        }
        Ok(dns)
    }

    fn holds(&self, id: Id) -> bool {
        self.texts.get(id.0 as usize).is_some_and(Option::is_some)
    }
}

impl Kept {
    /// The model, encoded for storing (see the module doc).
    pub fn to_stored(&self) -> StoredKept {
        StoredKept { head: self.stored_head(), body: self.stored_body() }
    }

    /// The head of [`Kept::to_stored`] alone: what a read changes when no entry changed.
    pub fn stored_head(&self) -> Vec<u8> {
        let blind = self.blind.as_ref().map(|b| match b {
            NeedsFullRead::MovedBelow { dn } => Blind::MovedBelow(dn.clone()),
            NeedsFullRead::BackLink { dn } => Blind::BackLink(dn.clone()),
            _ => Blind::Other,
        });
        let head = Head {
            query: self.query.clone(),
            source: self.source,
            page_size: self.page_size,
            served_by: self.served_by.clone(),
            active_directory: self.active_directory,
            users: self.users.head(),
            groups: self.groups.head(),
            mark: self.mark,
            behind: self.behind.clone(),
            dirsync: self.dirsync.clone(),
            usn: self.usn.clone(),
            containers: {
                let mut all: Vec<([u8; 16], Box<str>)> =
                    self.containers.iter().map(|(g, k)| (g.0, k.clone())).collect();
                all.sort_unstable();
                all
            },
            blind,
        };
        // Encoding into memory fails only on a type postcard cannot encode, which these are not.
        postcard::to_allocvec(&head).expect("the model's head encodes")
    }

    /// The body of [`Kept::to_stored`] alone.
    pub fn stored_body(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.body_to_store().0).expect("the model's body encodes")
    }

    /// The body of [`Kept::to_stored`], to encode as it is written ([`BodyToStore::write_to`]).
    pub fn body_to_store(&self) -> BodyToStore<'_> {
        BodyToStore(BodyRef {
            users: self.users.sorted_entries(),
            groups: self.groups.sorted_entries(),
            dns: self.dns.texts.iter().map(Option::as_deref).collect(),
        })
    }

    /// The model [`Kept::to_stored`] encoded, or why it cannot be used: not decodable, or an entry naming a DN
    /// the body does not hold.
    pub fn from_stored(stored: &StoredKept) -> Result<Kept, String> {
        Kept::from_stored_parts(&stored.head, &stored.body)
    }

    /// [`Kept::from_stored`], from the head and the body apart.
    pub fn from_stored_parts(head: &[u8], body: &[u8]) -> Result<Kept, String> {
        let head: Head = decode(head).map_err(|e| format!("the stored model's head: {e}"))?;
        let body: Body = decode(body).map_err(|e| format!("the stored model's body: {e}"))?;
        let dns = Dns::stored(body.dns)?;
        let users = side(head.users, body.users, "users")?;
        let groups = side(head.groups, body.groups, "groups")?;
        let user_ids = users.entries.values().map(|u| u.dn);
        let group_ids = groups.entries.values().flat_map(|g| g.members.iter().flatten().copied().chain([g.dn]));
        if let Some(id) = user_ids.chain(group_ids).find(|id| !dns.holds(*id)) {
            return Err(format!("the stored model names DN {} it does not hold", id.0));
        }
        let blind = head.blind.map(|b| match b {
            Blind::MovedBelow(dn) => NeedsFullRead::MovedBelow { dn },
            Blind::BackLink(dn) => NeedsFullRead::BackLink { dn },
            Blind::Other => NeedsFullRead::NotRead,
        });
        Ok(Kept {
            query: head.query,
            source: head.source,
            page_size: head.page_size,
            served_by: head.served_by,
            active_directory: head.active_directory,
            users,
            groups,
            dns,
            mark: head.mark,
            behind: head.behind,
            dirsync: head.dirsync,
            usn: head.usn,
            containers: head.containers.into_iter().map(|(g, k)| (Guid(g), k)).collect(),
            blind,
            last: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deletes, group, kept, members, udn};
    use super::*;

    /// An error writing the encoding comes back as the writer gave it, not as postcard's "buffer full". The
    /// control: a writer taking it all gets postcard's bytes.
    #[test]
    fn an_error_writing_an_encoding_is_returned_as_it_came() {
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = encode_into(&vec![7u8; 100_000], &mut Full).unwrap_err();
        assert_eq!((e.kind(), e.to_string()), (std::io::ErrorKind::StorageFull, "disk full".to_string()));
        let mut all = Vec::new();
        encode_into(&vec![7u8; 100_000], &mut all).unwrap();
        assert_eq!(all, postcard::to_allocvec(&vec![7u8; 100_000]).unwrap());
    }
    use crate::ldap::model::tests::settings;

    #[test]
    fn a_stored_model_reads_back_as_the_same_model_and_encodes_to_the_same_bytes() {
        let mut k = kept();
        // A freed DN place, a DirSync cookie, a read the model cannot follow: all of it comes back.
        k.apply(Part::Groups, &deletes("g2", vec![group(12, "Other", &["cn=gone,ou=groups,dc=x"])], &[]));
        k.apply(Part::Groups, &deletes("g3", vec![], &[12]));
        let server = "CN=NTDS Settings,CN=DC1,CN=Servers,CN=Site,CN=Sites,CN=Configuration,DC=x".to_string();
        k.dirsync = Some(dirsync::Position { server, invocation: [9; 16], cookie: vec![1, 2, 3] });
        k.blind = Some(NeedsFullRead::MovedBelow { dn: "ou=a,dc=x".into() });
        let stored = k.to_stored();
        let back = Kept::from_stored(&stored).expect("decodes");
        assert_eq!(back.to_stored(), stored, "an unchanged model encodes to the same bytes");
        assert_eq!(back.blind, k.blind, "what the model cannot follow is still not followed");
        let (mut back, s) = (back, settings(Nesting::Recursive));
        (back.blind, k.blind) = (None, None);
        assert_eq!(members(&back, &s, "team").unwrap(), members(&k, &s, "team").unwrap());
        assert_eq!((back.cookie(Part::Users), back.dirsync.as_ref()), (Some(&b"u1"[..]), k.dirsync.as_ref()));
        assert_eq!(back.dns.len(), k.dns.len());
        assert_eq!(back.dns.free, k.dns.free, "the freed place is free again");
        // The restored model takes changes as the kept one does.
        back.apply(Part::Users, &deletes("u2", vec![], &[2]));
        assert_eq!(members(&back, &s, "team").unwrap(), ["alice"]);
        assert!(back.dns.ids.contains_key(udn("alice").as_str()));
    }

    #[test]
    fn a_damaged_or_foreign_stored_model_is_refused_never_read() {
        let stored = kept().to_stored();
        let cut = StoredKept { body: stored.body[..stored.body.len() / 2].to_vec(), ..stored.clone() };
        assert!(Kept::from_stored(&cut).unwrap_err().contains("body"), "a body cut short");
        let swapped = StoredKept { head: stored.body.clone(), body: stored.head.clone() };
        assert!(Kept::from_stored(&swapped).is_err(), "head and body swapped");
        // A body whose entries name a DN it does not hold (the DN table emptied).
        let mut k = kept();
        k.dns.texts.iter_mut().for_each(|t| *t = None);
        let err = Kept::from_stored(&k.to_stored()).unwrap_err();
        assert!(err.contains("names DN"), "{err}");
        // The same DN twice.
        let mut k = kept();
        let first = k.dns.texts[0].clone();
        k.dns.texts.push(first);
        let err = Kept::from_stored(&k.to_stored()).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        // The control: the model as stored decodes.
        assert!(Kept::from_stored(&stored).is_ok());
    }
}

#[cfg(test)]
mod golden {
    use super::super::tests::kept;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The stored form's layout, pinned: a change to it (a field added, moved or retyped in the head or the
    /// body) must bump the model format in `sync::changes::stored::PROGRAM`, or a model stored by the same
    /// version before the change would be read wrongly. Bump it, then pin the new bytes here.
    #[test]
    fn the_stored_layout_is_pinned() {
        let mut kept = kept();
        // A DirSync position, for its layout too (model format 5).
        let position = super::dirsync::Position { server: "CN=dc".into(), invocation: [3; 16], cookie: vec![4, 5] };
        kept.dirsync = Some(position);
        let stored = kept.to_stored();
        let head = concat!(
            "0e6f753d67726f7570732c64633d780e6f753d67726f7570732c64633d7814286f626a656374436c6173733d70657273",
            "6f6e291a286f626a656374436c6173733d67726f75704f664e616d6573290375696402636e066d656d626572000b636e",
            "3d7376632c64633d7800e8070b6c6461703a2f2f74657374010001027531000101026731000100000105434e3d646303",
            "030303030303030303030303030303020405000000",
        );
        let body = concat!(
            "02010101010101010101010101010101010001000105616c696365000202020202020202020202020202020201010001",
            "03626f6200020a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0301045465616d010200020b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "0b020105496e6e65720101010401227569643d616c6963652c6f753d70656f706c652c6f753d67726f7570732c64633d",
            "7801207569643d626f622c6f753d70656f706c652c6f753d67726f7570732c64633d780117636e3d496e6e65722c6f75",
            "3d67726f7570732c64633d780116636e3d5465616d2c6f753d67726f7570732c64633d78",
        );
        assert_eq!((hex(&stored.head), hex(&stored.body)), (head.to_string(), body.to_string()));
    }
}
