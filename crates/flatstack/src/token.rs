//! How the programs of this crate authenticate to a node: the token named by
//! `FLATSTACK_TOKEN` (or `--token`), else the admin token the node beside them wrote to
//! `<data dir>/admin.token` at its first start.

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use std::path::{Path, PathBuf};

/// The file in a node's data directory holding the admin token it wrote at first start.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The data directory a client on this machine looks in: `FLATSTACK_DATA_DIR`, else the
/// node's default, `flatstack-data` under the current directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("FLATSTACK_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("flatstack-data"))
}

/// The admin token in `data_dir`, if the node wrote one there.
pub fn admin_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// An HTTP client that sends `token` with every request.
pub fn client(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    builder(token)?.build().context("building the HTTP client")
}

/// A client builder that sends `token` with every request (for callers that tune it).
pub fn builder(token: Option<&str>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not valid in an HTTP header")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}
