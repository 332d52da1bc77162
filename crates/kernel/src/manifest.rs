//! The runtime manifest (TOML): which plugins run, configuration, extension order.
//!
//! ```toml
//! # Only these plugins of the distribution run (default: all of them).
//! plugins = ["zone", "cluster", "host"]
//! # Or: all but these.
//! disabled = ["billing"]
//! # Opt-in plugins (off unless named, e.g. fault injection) to run beside the others.
//! enabled = ["fault-injection"]
//!
//! [config]
//! bus.request_timeout_ms = 10000
//!
//! # Serve the API over TLS (paths relative to this file; `serve --tls-cert/--tls-key`
//! # take precedence).
//! [tls]
//! cert = "tls/node.pem"
//! key = "tls/node.key"
//!
//! # Overrides where `quota` sits among the implementors of one point.
//! [extensions."vm.create.pre-check".quota]
//! order = -10
//! after = ["audit"]
//! ```

use crate::extension::OrderSpec;
use crate::KernelError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A node's manifest, as parsed; [`Default`] runs every plugin with its defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugins to run; `None` runs every plugin of the distribution.
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
    /// Plugins not to run.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Opt-in plugins ([`crate::Plugin::opt_in`]) to run beside the others: such a plugin
    /// runs only when named here or in `plugins`.
    #[serde(default)]
    pub enabled: Vec<String>,
    /// Values of the plugins' configuration keys ([`crate::ConfigKey`]); dotted tables
    /// are flattened, so `[config.bus] request_timeout_ms = 1` sets `bus.request_timeout_ms`.
    #[serde(default)]
    pub config: toml::Table,
    /// Point name → plugin name → order override.
    #[serde(default)]
    pub extensions: BTreeMap<String, BTreeMap<String, OrderSpec>>,
    /// The node's TLS listener for its API, if any (the kernel only carries it).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf certificate's private key.
    pub key: PathBuf,
}

impl Manifest {
    /// A manifest from TOML text; an unknown top-level key is an error.
    pub fn parse(text: &str) -> Result<Self, KernelError> {
        toml::from_str(text).map_err(|e| KernelError::Manifest(e.to_string()))
    }

    /// The manifest in the file at `path`.
    pub fn load(path: &Path) -> Result<Self, KernelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KernelError::Manifest(format!("cannot read {}: {e}", path.display())))?;
        let mut manifest: Manifest = toml::from_str(&text)
            .map_err(|e| KernelError::Manifest(format!("{}: {e}", path.display())))?;
        // Relative paths name files beside the manifest, wherever the node is started.
        if let (Some(tls), Some(dir)) = (&mut manifest.tls, path.parent()) {
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
        }
        Ok(manifest)
    }
}
