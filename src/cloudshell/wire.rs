//! CloudShell's JSON shapes as the client reads them. Lenient on purpose: only the fields the daemon uses
//! are required, and unknown fields are ignored, since the reference marks much of the API as undocumented.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct UserList {
    #[serde(rename = "Users")]
    pub users: Vec<User>,
    #[serde(rename = "Cursor", default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    #[serde(rename = "Id", default)]
    pub id: Value,
    #[serde(rename = "Username")]
    pub username: String,
    /// Kept as sent: a missing or non-boolean value is an unknown, never a failed page.
    #[serde(rename = "IsActive", default)]
    pub is_active: Value,
    #[serde(rename = "IsAdmin", default)]
    pub is_admin: Value,
    #[serde(rename = "DomainName", default)]
    pub domain_name: Option<String>,
    /// Integers as documented; anything else in the list is ignored.
    #[serde(rename = "GroupIds", default)]
    pub group_ids: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct ImportAnswer {
    #[serde(rename = "Users", default)]
    pub users: Option<Vec<User>>,
    #[serde(rename = "Errors", default)]
    pub errors: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct GroupList {
    #[serde(rename = "Groups")]
    pub groups: Vec<Group>,
    #[serde(rename = "Cursor", default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Group {
    #[serde(rename = "Id", default)]
    pub id: Value,
    #[serde(rename = "Name")]
    pub name: String,
}

/// The answer to a membership change: `{"Errors": [...]}`.
#[derive(Debug, Deserialize)]
pub struct ErrorsAnswer {
    #[serde(rename = "Errors", default)]
    pub errors: Option<Vec<Value>>,
}

/// A page of a paged list: `{"<Plural>": [...], "Cursor": ...}`.
pub trait Page: serde::de::DeserializeOwned {
    type Item;
    /// The items and the cursor of the next page (`None` on the last).
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for UserList {
    type Item = User;
    fn into_parts(self) -> (Vec<User>, Option<String>) {
        (self.users, self.cursor)
    }
}

impl Page for GroupList {
    type Item = Group;
    fn into_parts(self) -> (Vec<Group>, Option<String>) {
        (self.groups, self.cursor)
    }
}
