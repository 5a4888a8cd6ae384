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
    #[serde(rename = "Email", default)]
    pub email: Option<String>,
    #[serde(rename = "IsActive", default)]
    pub is_active: Option<bool>,
    #[serde(rename = "DomainName", default)]
    pub domain_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ImportAnswer {
    #[serde(rename = "Users", default)]
    pub users: Option<Vec<User>>,
    #[serde(rename = "Errors", default)]
    pub errors: Option<Vec<Value>>,
}
