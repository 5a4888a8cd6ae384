//! Reading only what changed in the directory since an earlier read: the protocol side of each method, each
//! returning what the server said in a neutral shape (entries changed, entries gone, the watermark to keep),
//! never applying it. Applying changes to the kept directory model, and deciding when a full read is due,
//! belong to the caller.
//!
//! - [`syncrepl`]: RFC 4533 content synchronisation (refreshOnly), OpenLDAP's `syncprov` overlay.
//! - [`dirsync`]: Active Directory's DirSync control (Samba AD too), with incremental member values.

pub mod dirsync;
pub mod kept;
pub mod syncrepl;
