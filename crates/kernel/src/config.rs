//! Configuration keys: declared by plugins with a default and a validator, set in the
//! manifest's `[config]` table, validated once at assembly, read typed at run time.

use crate::KernelError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A typed configuration key, usually a `pub const` next to the code that reads it, made
/// with [`ConfigKey::new`] and declared in `build` (`b.config(&KEY)`):
///
/// ```
/// # use flatstack_kernel::ConfigKey;
/// pub const UDP_PORT: ConfigKey<u16> = ConfigKey::new("vxlan.udp_port", "VXLAN's UDP port.", || 4789)
///     .with_validator(|port| if *port == 0 { Err("must not be 0".into()) } else { Ok(()) });
/// ```
#[non_exhaustive]
pub struct ConfigKey<T> {
    /// Dotted and unique in the distribution, prefixed with the plugin's name:
    /// `vxlan.udp_port` is set in the manifest's `[config]` as `vxlan.udp_port = 8472`.
    pub name: &'static str,
    /// One sentence for introspection (`flatstack inspect`).
    pub description: &'static str,
    /// The value when the manifest does not set it.
    pub default: fn() -> T,
    /// Checks a value at assembly; an `Err` names what is wrong with it.
    pub validate: fn(&T) -> Result<(), String>,
}

fn always_valid<T>(_: &T) -> Result<(), String> {
    Ok(())
}

impl<T> ConfigKey<T> {
    /// A key that accepts any value of its type.
    pub const fn new(name: &'static str, description: &'static str, default: fn() -> T) -> Self {
        ConfigKey {
            name,
            description,
            default,
            validate: always_valid::<T>,
        }
    }

    /// Adds a validator; an `Err` names what is wrong with the value.
    pub const fn with_validator(mut self, validate: fn(&T) -> Result<(), String>) -> Self {
        self.validate = validate;
        self
    }
}

type ParseFn = dyn Fn(Value) -> Result<Arc<dyn Any + Send + Sync>, String> + Send + Sync;

/// A key as the registry keeps it, without its type.
pub(crate) struct DeclaredKey {
    pub plugin: String,
    pub description: &'static str,
    default: Value,
    /// Decodes and validates a JSON value into the key's type.
    parse: Box<ParseFn>,
}

/// Collects declarations while plugins build.
#[derive(Default)]
pub(crate) struct ConfigBuilder {
    keys: BTreeMap<&'static str, DeclaredKey>,
}

impl ConfigBuilder {
    pub fn declare<T>(&mut self, plugin: &str, key: &ConfigKey<T>) -> Result<(), KernelError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        if let Some(existing) = self.keys.get(key.name) {
            return Err(KernelError::DuplicateConfigKey {
                key: key.name.to_owned(),
                first: existing.plugin.clone(),
                second: plugin.to_owned(),
            });
        }
        let default = (key.default)()
            .serialize(serde_json::value::Serializer)
            .map_err(|e| KernelError::InvalidConfig {
                key: key.name.to_owned(),
                reason: e.to_string(),
            })?;
        let validate = key.validate;
        self.keys.insert(
            key.name,
            DeclaredKey {
                plugin: plugin.to_owned(),
                description: key.description,
                default,
                parse: Box::new(move |value| {
                    let typed: T = serde_json::from_value(value).map_err(|e| e.to_string())?;
                    validate(&typed)?;
                    Ok(Arc::new(typed) as Arc<dyn Any + Send + Sync>)
                }),
            },
        );
        Ok(())
    }

    /// Applies the manifest's `[config]` table; dotted TOML tables are flattened, so
    /// `[config.bus] request_timeout_ms = 1` sets `bus.request_timeout_ms`.
    pub fn finish(self, overrides: &toml::Table) -> Result<Config, KernelError> {
        let mut set = BTreeMap::new();
        flatten(&self.keys, "", overrides, &mut set)?;
        let mut values = BTreeMap::new();
        for (name, key) in self.keys {
            let (value, source) = match set.remove(name) {
                Some(value) => (value, Source::Manifest),
                None => (key.default.clone(), Source::Default),
            };
            let typed =
                (key.parse)(value.clone()).map_err(|reason| KernelError::InvalidConfig {
                    key: name.to_owned(),
                    reason,
                })?;
            values.insert(
                name,
                ResolvedKey {
                    value,
                    source,
                    typed,
                    plugin: key.plugin,
                    description: key.description,
                },
            );
        }
        Ok(Config { values })
    }
}

fn flatten(
    keys: &BTreeMap<&'static str, DeclaredKey>,
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, Value>,
) -> Result<(), KernelError> {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if keys.contains_key(path.as_str()) {
            let json = serde_json::to_value(value).map_err(|e| KernelError::InvalidConfig {
                key: path.clone(),
                reason: e.to_string(),
            })?;
            out.insert(path, json);
        } else if let toml::Value::Table(inner) = value {
            flatten(keys, &path, inner, out)?;
        } else {
            return Err(KernelError::Manifest(format!(
                "unknown configuration key `{path}`"
            )));
        }
    }
    Ok(())
}

/// Where a configuration value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The key's default: the manifest does not set it.
    Default,
    /// The manifest's `[config]`.
    Manifest,
}

struct ResolvedKey {
    value: Value,
    source: Source,
    typed: Arc<dyn Any + Send + Sync>,
    plugin: String,
    description: &'static str,
}

/// The validated configuration of a kernel.
pub struct Config {
    values: BTreeMap<&'static str, ResolvedKey>,
}

/// One key as introspection shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigEntry {
    /// The key's name, e.g. `bus.request_timeout_ms`.
    pub key: String,
    /// Its value in force, as JSON.
    pub value: Value,
    /// Whether the value is the default or the manifest's.
    pub source: Source,
    /// The plugin that declared the key.
    pub plugin: String,
    /// The key's description.
    pub description: String,
}

impl Config {
    /// The value of `key`. A key that no loaded plugin declared yields its default.
    pub fn get<T: Clone + 'static>(&self, key: &ConfigKey<T>) -> T {
        self.values
            .get(key.name)
            .and_then(|k| k.typed.downcast_ref::<T>())
            .cloned()
            .unwrap_or_else(key.default)
    }

    /// Every declared key with its value, by name.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        self.values
            .iter()
            .map(|(key, k)| ConfigEntry {
                key: (*key).to_owned(),
                value: k.value.clone(),
                source: k.source,
                plugin: k.plugin.clone(),
                description: k.description.to_owned(),
            })
            .collect()
    }
}
