//! Usernames, normalised once: CloudShell and directories treat `JPorter` and `jporter` as one user, and
//! `josé` typed on a Mac (NFD: `e` and a combining accent) is the `josé` typed elsewhere (NFC: one `é`), so
//! every comparison, set and map key in the daemon goes through this type, and `state.db` keys its rows by
//! [`Username::folded`].
//!
//! The fold is NFC, then Rust's `to_lowercase` (Unicode's default lower-case mapping), then NFC again (lower
//! case can leave a letter and a combining mark that compose). Not Unicode's full case folding: that would
//! also merge names that differ in letters (`straße` and `strasse`, `ς` and `σ`), which a directory keeps as
//! two accounts; and lower-casing is what every earlier version keyed its state by, so a name already in NFC
//! keeps its key. ASCII names fold exactly as before: lower-cased, nothing else.

use arcstr::ArcStr;
use icu_normalizer::ComposingNormalizerBorrowed;

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

/// A username that compares, hashes and orders by its folded form (NFC, lower-cased: see the module's
/// doc) and displays as written. Cheap to clone (shared strings): plans hold one per membership. Two pointers
/// wide: a shared string whose length is kept with its text ([`ArcStr`]), where a shared `str` is two words
/// (16 bytes less in each of the 300,000 names a full read at 100,000 users holds: CloudShell's users, the
/// members, the managed users).
#[derive(Clone)]
pub struct Username {
    original: ArcStr,
    folded: ArcStr,
}

impl Username {
    /// A username, or `None` for an empty or all-blank one.
    pub fn new(name: &str) -> Option<Username> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let folded = fold(name);
        let original = ArcStr::from(name);
        // Most names are already lower case: share one allocation then.
        let folded = if folded == name { original.clone() } else { ArcStr::from(folded) };
        Some(Username { original, folded })
    }

    /// As written in the directory or CloudShell.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The folded form used for comparison (NFC, lower-cased): `state.db`'s key for the user.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

/// The usernames of two reads running side by side (the directory's users and CloudShell's), each held once: a
/// name either read makes is exchanged for the first copy made (by either) when it is written alike. A full read
/// at 100,000 users then holds 100,000 names where it held 200,000 (3 MB). For the reads only: while they run,
/// the table costs about what it saves.
#[derive(Default)]
pub struct SharedNames(std::sync::Mutex<hashbrown::HashTable<Username>>);

impl SharedNames {
    /// The copy of `name` held (written exactly alike: the same folded form too), `name` itself when it is the
    /// first.
    pub fn share(&self, name: &Username) -> Username {
        let hash = |u: &Username| rustc_hash::FxBuildHasher.hash_one(u.as_str());
        // An insert is the table's only change, so a panic elsewhere while it was held leaves it whole.
        let mut table = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = table.entry(hash(name), |held| held.as_str() == name.as_str(), hash);
        held.or_insert_with(|| name.clone()).get().clone()
    }
}

/// Positions in a list of named items, found by folded name: four bytes an item and no copy of the names (the
/// list keeps them). A name held by several items finds the last (one made item by item, [`NameIndex::add`]: the
/// first). FxHash: the names come from this run's reads.
#[derive(Clone, Default)]
pub struct NameIndex(hashbrown::HashTable<u32>);

impl NameIndex {
    fn hash(folded: &str) -> u64 {
        rustc_hash::FxBuildHasher.hash_one(folded)
    }

    /// The index of `len` items, `name(n)` the name of item `n` (`None`: not found by any name).
    pub fn new<'a>(len: usize, name: impl Fn(usize) -> Option<&'a Username>) -> NameIndex {
        let hash = |name: &Username| NameIndex::hash(name.folded());
        let mut index = hashbrown::HashTable::with_capacity(len);
        for n in 0..len {
            let Some(username) = name(n) else { continue };
            let held = |&m: &u32| name(m as usize) == Some(username);
            match index.entry(hash(username), held, |&m| name(m as usize).map_or(0, hash)) {
                hashbrown::hash_table::Entry::Occupied(mut at) => *at.get_mut() = n as u32,
                hashbrown::hash_table::Entry::Vacant(slot) => {
                    slot.insert(n as u32);
                }
            }
        }
        NameIndex(index)
    }

    /// Adds item `n`, whose name `name(n)` no item in the index holds yet (`name` as for [`NameIndex::new`]).
    pub fn add<'a>(&mut self, n: usize, name: impl Fn(usize) -> Option<&'a Username>) {
        let hash = |name: &Username| NameIndex::hash(name.folded());
        let Some(username) = name(n) else { return };
        self.0.insert_unique(hash(username), n as u32, |&m| name(m as usize).map_or(0, hash));
    }

    /// The position of the item named `folded` (a folded name), `name` as given to [`NameIndex::new`].
    pub fn find<'a>(&self, folded: &str, name: impl Fn(usize) -> Option<&'a Username>) -> Option<usize> {
        let n =
            self.0.find(NameIndex::hash(folded), |&n| name(n as usize).is_some_and(|name| name.folded() == folded))?;
        Some(*n as usize)
    }
}

/// The folded form of a name ([`Username::folded`] for a trimmed, non-blank one); also how `protect` patterns
/// and the names they are matched against are taken, so that they match as usernames compare.
pub fn fold(name: &str) -> String {
    if name.is_ascii() {
        // The common case, and the one that must never change: ASCII is already NFC.
        return name.to_ascii_lowercase();
    }
    const NFC: ComposingNormalizerBorrowed<'static> = ComposingNormalizerBorrowed::new_nfc();
    let lower = NFC.normalize(name).to_lowercase();
    match NFC.normalize(&lower) {
        std::borrow::Cow::Borrowed(_) => lower,
        std::borrow::Cow::Owned(composed) => composed,
    }
}

impl PartialEq for Username {
    fn eq(&self, other: &Username) -> bool {
        self.folded == other.folded
    }
}

impl Eq for Username {}

impl Hash for Username {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.folded.hash(state);
    }
}

impl PartialOrd for Username {
    fn partial_cmp(&self, other: &Username) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Username {
    fn cmp(&self, other: &Username) -> Ordering {
        self.folded.cmp(&other.folded)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.original)
    }
}

/// Written as it was written in (the report's failures, `users.json`).
impl serde::Serialize for Username {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.original)
    }
}

/// Read as [`Username::new`] reads it; a blank name is an error.
impl<'de> serde::Deserialize<'de> for Username {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Username, D::Error> {
        let text = String::deserialize(deserializer)?;
        Username::new(&text).ok_or_else(|| serde::de::Error::custom("a blank username"))
    }
}

#[cfg(test)]
mod tests {
    use super::{SharedNames, Username};
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    fn u(s: &str) -> Username {
        Username::new(s).unwrap()
    }

    #[test]
    fn a_name_is_two_pointers_wide_and_one_text_when_already_folded() {
        assert_eq!((size_of::<Username>(), size_of::<Option<Username>>()), (16, 16));
        let lower = u("jporter");
        assert_eq!(lower.as_str().as_ptr(), lower.folded().as_ptr(), "one text");
        let mixed = u("JPorter");
        assert_eq!((mixed.as_str(), mixed.folded()), ("JPorter", "jporter"));
    }

    #[test]
    fn shared_names_hand_out_the_first_copy_of_a_name_written_alike() {
        let names = SharedNames::default();
        let first = u("JPorter");
        let text = |name: &Username| (name.as_str().as_ptr(), name.folded().as_ptr());
        assert_eq!(text(&names.share(&first)), text(&first), "the first is held");
        let again = names.share(&u("JPorter"));
        assert_eq!(text(&again), text(&first), "a later copy is exchanged for it");
        // Written otherwise: the same user, but with its own text (it displays as written).
        let lower = names.share(&u("jporter"));
        assert_eq!((lower.as_str(), lower == first), ("jporter", true));
        assert_ne!(text(&lower).0, text(&first).0);
        let other = u("alice");
        assert_eq!(text(&names.share(&other)), text(&other));
        assert_eq!(text(&names.share(&u("jporter"))), text(&lower));
    }

    #[test]
    fn compares_case_insensitively_and_displays_as_written() {
        assert_eq!(u("JPorter"), u("jporter"));
        assert_eq!(u("ÉLODIE"), u("élodie"), "Unicode-aware");
        assert_ne!(u("jporter"), u("jporter2"));
        let set: HashSet<Username> = [u("JPorter"), u("jporter"), u("JPORTER")].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!(u("JPorter").to_string(), "JPorter");
        assert!(u("alice") < u("Bob"));
    }

    /// `josé` as one precomposed `é` (NFC) and as `e` with a combining acute accent (NFD).
    const JOSE_NFC: &str = "jos\u{e9}";
    const JOSE_NFD: &str = "jose\u{301}";

    #[test]
    fn names_that_differ_only_in_normalisation_are_one_user_displayed_as_written() {
        let (nfc, nfd) = (u(JOSE_NFC), u(JOSE_NFD));
        assert_ne!(JOSE_NFC, JOSE_NFD, "two byte sequences");
        assert_eq!(nfc, nfd);
        assert_eq!(nfc.cmp(&nfd), std::cmp::Ordering::Equal);
        assert_eq!(nfc.folded(), nfd.folded());
        assert_eq!(nfd.folded(), JOSE_NFC, "the key is NFC");
        let build = std::collections::hash_map::RandomState::new();
        assert_eq!(build.hash_one(&nfc), build.hash_one(&nfd));
        let set: HashSet<Username> = [u(JOSE_NFC), u(JOSE_NFD), u("JOSE\u{301}"), u("JOS\u{c9}")].into_iter().collect();
        assert_eq!(set.len(), 1, "normalisation and case together");
        assert_eq!(nfd.as_str(), JOSE_NFD, "shown and sent to CloudShell as written");
        assert_ne!(u(JOSE_NFC), u("jose"), "an accent is not case");
    }

    #[test]
    fn ascii_names_fold_as_before_and_the_fold_is_stable() {
        for name in ["JPorter", "alice", "Bob.Smith-2", "svc_BACKUP", "a@B.example", "x~Y{}"] {
            assert_eq!(u(name).folded(), name.to_lowercase(), "{name}");
        }
        // Lower-casing can leave a letter and a combining mark that compose (J with caron has no capital
        // precomposed form, its small one has): the key is NFC all the same, and folding it again changes
        // nothing.
        for name in
            ["J\u{30c}", "\u{130}stanbul", "ÉLODIE", JOSE_NFD, "Σ\u{391}Σ", "stra\u{df}e", "\u{212b}ngstr\u{f6}m"]
        {
            let once = u(name);
            assert_eq!(u(once.folded()).folded(), once.folded(), "{name:?}");
        }
        assert_eq!(u("J\u{30c}"), u("\u{1f0}"));
        assert_eq!(u("\u{212b}"), u("\u{e5}"), "the Angstrom sign is its letter");
        assert_ne!(u("stra\u{df}e"), u("strasse"), "lower-casing, not full case folding: two accounts");
    }

    #[test]
    fn serialises_as_written_and_reads_back_refusing_blank_names() {
        assert_eq!(serde_json::to_string(&u("JPorter")).unwrap(), r#""JPorter""#);
        let read: Username = serde_json::from_str(r#""JPorter""#).unwrap();
        assert_eq!((read.as_str(), read.folded()), ("JPorter", "jporter"));
        assert!(serde_json::from_str::<Username>(r#"" ""#).is_err());
    }

    #[test]
    fn refuses_blank_names() {
        assert!(Username::new("").is_none());
        assert!(Username::new("   ").is_none());
        assert_eq!(u(" x ").as_str(), "x");
    }
}
