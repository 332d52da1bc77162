//! Client profiles: where a node is and the token to use there, kept by `flatstack login`
//! in `$FLATSTACK_CONFIG` (else `$XDG_CONFIG_HOME/flatstack/profiles.toml`, else
//! `~/.config/flatstack/profiles.toml`), readable by its owner only, and chosen with
//! `--profile` / `$FLATSTACK_PROFILE` or the file's `current`.

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One node and the token to use there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// The node's address, e.g. `https://cloud.example.com`.
    pub endpoint: String,
    /// The session (or API) token.
    pub token: String,
    /// The token's uuid, which `logout` revokes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_uuid: Option<String>,
    /// When the token stops being accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The profiles file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profiles {
    /// The profile used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Each profile by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the profiles file is.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLATSTACK_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("flatstack").join("profiles.toml"))
}

impl Profiles {
    /// The file's profiles; none if there is no file.
    pub fn load() -> anyhow::Result<Profiles> {
        let Some(path) = path() else {
            return Ok(Profiles::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The profile `name` names, or the current one; an error for a name with no profile.
    pub fn chosen(&self, name: Option<&str>) -> anyhow::Result<Option<&Profile>> {
        match name {
            Some(name) => {
                self.profiles.get(name).map(Some).ok_or_else(|| {
                    anyhow!("no profile `{name}` (flatstack login --profile {name})")
                })
            }
            None => Ok(self.current.as_ref().and_then(|c| self.profiles.get(c))),
        }
    }

    /// Writes the file, readable by its owner only.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path().ok_or_else(|| anyhow!("no HOME: set FLATSTACK_CONFIG"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string(self)?;
        let partial = path.with_extension("toml.partial");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        use std::io::Write;
        let mut file = options
            .open(&partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }
}
