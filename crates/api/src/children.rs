//! Child collections, `/v1/{kind}/{uuid}/{child}`: those a kind's owner declares in its
//! [`ApiResource`], and those other plugins add to it ([`ApiChildExtension`]), checked
//! together at assembly ([`check`]).

use flatstack_header::api::{ApiActionExtension, ApiChildExtension};
use flatstack_header::ApiResource;
use flatstack_kernel::Kernel;
use std::collections::BTreeMap;

/// One child collection of a kind, whoever declared it.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    /// The URL segment under one resource.
    pub path: &'static str,
    /// The service that answers its messages.
    pub service: &'static str,
    pub list: &'static str,
    pub create: Option<&'static str>,
    /// The schema of its rows, if declared.
    pub inventory: Option<fn() -> flatstack_kernel::schemars::Schema>,
    /// Served by another plugin than the kind's owner: the parent is looked up first.
    pub added: bool,
    /// The plugin that declared it.
    pub plugin: String,
}

/// Segments that are not children: `/v1/{kind}/{uuid}/actions` is a route of its own.
const RESERVED: &[&str] = &["actions"];

/// Why the API a distribution's plugins declare cannot be served; assembly stops on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Two plugins serve the same kind.
    #[error("resource kind `{kind}` is served twice: by `{first}` and by `{second}`")]
    DuplicateKind {
        /// The kind's `path`.
        kind: String,
        /// The plugins that registered it.
        first: String,
        /// The plugins that registered it.
        second: String,
    },
    /// A child collection on a kind no enabled plugin serves.
    #[error(
        "plugin `{plugin}` adds `{child}` to `{kind}`, a resource kind no enabled plugin serves"
    )]
    UnknownKind {
        /// The plugin that added the child.
        plugin: String,
        /// The kind it names.
        kind: String,
        /// The child's segment.
        child: String,
    },
    /// Two child collections of one kind with one segment.
    #[error("`/v1/{kind}/{{uuid}}/{child}` is declared twice: by `{first}` and by `{second}`")]
    DuplicateChild {
        /// The parent kind.
        kind: String,
        /// The segment.
        child: String,
        /// The plugins that declared it.
        first: String,
        /// The plugins that declared it.
        second: String,
    },
    /// A kind, an action or a child collection served by a service no plugin registers.
    #[error("plugin `{plugin}` serves {what} of `{kind}` with service `{service}`, which no enabled plugin registers")]
    UnknownService {
        /// The plugin that declared it.
        plugin: String,
        /// The kind's `path`.
        kind: String,
        /// What it declared: `the create`, `action `start``, `child `ip-ranges``.
        what: String,
        /// The service it names.
        service: String,
    },
    /// A kind's create, an action or a child collection whose message its service does not
    /// answer.
    #[error("plugin `{plugin}` declares {what} of `{kind}` as message `{message}`, which service `{service}` does not answer")]
    UnknownMessage {
        /// The plugin that declared it.
        plugin: String,
        /// The kind's `path`.
        kind: String,
        /// What it declared: `the create`, `action `start``, `child `ip-ranges``.
        what: String,
        /// The service it names.
        service: String,
        /// The message it names.
        message: String,
    },
    /// An action on a kind no enabled plugin serves.
    #[error("plugin `{plugin}` adds action `{action}` to `{kind}`, a resource kind no enabled plugin serves")]
    ActionOnUnknownKind {
        /// The plugin that added the action.
        plugin: String,
        /// The kind it names.
        kind: String,
        /// The action's name.
        action: String,
    },
    /// Two actions of one kind with one name.
    #[error("action `{action}` of `{kind}` is declared twice: by `{first}` and by `{second}`")]
    DuplicateAction {
        /// The kind's `path`.
        kind: String,
        /// The action's name.
        action: String,
        /// The plugins that declared it.
        first: String,
        /// The plugins that declared it.
        second: String,
    },
    /// A child whose segment cannot be one.
    #[error("plugin `{plugin}` declares child `{child}` of `{kind}`: {reason}")]
    InvalidChild {
        /// The plugin that declared it.
        plugin: String,
        /// The parent kind.
        kind: String,
        /// The segment.
        child: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The registered resources by path, and the child collections of each kind by path.
pub(crate) struct Catalogue {
    pub resources: BTreeMap<&'static str, (String, ApiResource)>,
    pub children: BTreeMap<&'static str, Vec<Child>>,
}

impl Catalogue {
    /// Everything `kernel`'s plugins declare, and what is inconsistent in it (left out:
    /// the first of two declarations stays).
    pub fn new(kernel: &Kernel) -> (Catalogue, Vec<CheckError>) {
        let mut errors = Vec::new();
        let mut resources: BTreeMap<&'static str, (String, ApiResource)> = BTreeMap::new();
        let mut children: BTreeMap<&'static str, Vec<Child>> = BTreeMap::new();
        for (plugin, r) in kernel.registered::<ApiResource>() {
            if let Some((first, _)) = resources.get(r.path) {
                errors.push(CheckError::DuplicateKind {
                    kind: r.path.to_owned(),
                    first: first.clone(),
                    second: plugin.to_owned(),
                });
                continue;
            }
            resources.insert(r.path, (plugin.to_owned(), r.clone()));
        }
        let services = Services::of(kernel);
        check_messages(&services, kernel, &resources, &mut errors);
        let own = resources.values().flat_map(|(plugin, r)| {
            r.children.iter().map(move |c| {
                let child = Child {
                    path: c.path,
                    service: r.service,
                    list: c.list,
                    create: Some(c.create),
                    inventory: c.inventory,
                    added: false,
                    plugin: plugin.clone(),
                };
                (r.path, child)
            })
        });
        let added = kernel
            .registered::<ApiChildExtension>()
            .into_iter()
            .map(|(plugin, e)| {
                let child = Child {
                    path: e.child,
                    service: e.service,
                    list: e.list,
                    create: e.create,
                    inventory: e.inventory,
                    added: true,
                    plugin: plugin.to_owned(),
                };
                (e.path, child)
            });
        let mut all: Vec<(&'static str, Child)> = own.collect();
        all.extend(added);
        for (kind, child) in all {
            let invalid = |reason| CheckError::InvalidChild {
                plugin: child.plugin.clone(),
                kind: kind.to_owned(),
                child: child.path.to_owned(),
                reason,
            };
            if !resources.contains_key(kind) {
                errors.push(CheckError::UnknownKind {
                    plugin: child.plugin,
                    kind: kind.to_owned(),
                    child: child.path.to_owned(),
                });
                continue;
            }
            let kebab = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
            if RESERVED.contains(&child.path) {
                errors.push(invalid("the segment is reserved"));
                continue;
            }
            if child.path.is_empty() || !child.path.chars().all(kebab) {
                errors.push(invalid("a segment is kebab-case (a-z, 0-9, -)"));
                continue;
            }
            let siblings = children.entry(kind).or_default();
            if let Some(first) = siblings.iter().find(|c| c.path == child.path) {
                errors.push(CheckError::DuplicateChild {
                    kind: kind.to_owned(),
                    child: child.path.to_owned(),
                    first: first.plugin.clone(),
                    second: child.plugin,
                });
                continue;
            }
            let what = format!("child `{}`", child.path);
            let messages = std::iter::once(child.list).chain(child.create);
            let unanswered = messages.filter_map(|message| {
                services.answers(&child.plugin, kind, what.clone(), child.service, message)
            });
            errors.extend(unanswered);
            siblings.push(child);
        }
        let catalogue = Catalogue {
            resources,
            children,
        };
        (catalogue, errors)
    }

    /// The child `child` of kind `kind`.
    pub fn child(&self, kind: &str, child: &str) -> Option<&Child> {
        self.children.get(kind)?.iter().find(|c| c.path == child)
    }
}

/// The services of a kernel with the messages each answers.
struct Services(BTreeMap<String, Vec<&'static str>>);

impl Services {
    fn of(kernel: &Kernel) -> Services {
        let services = kernel.bus().services().into_iter();
        Services(services.map(|s| (s.id, s.messages)).collect())
    }

    /// Why `service` cannot answer `message` (declared by `plugin` as `what` of `kind`).
    fn answers(
        &self,
        plugin: &str,
        kind: &str,
        what: String,
        service: &str,
        message: &str,
    ) -> Option<CheckError> {
        match self.0.get(service) {
            None => Some(CheckError::UnknownService {
                plugin: plugin.to_owned(),
                kind: kind.to_owned(),
                what,
                service: service.to_owned(),
            }),
            Some(messages) if !messages.contains(&message) => Some(CheckError::UnknownMessage {
                plugin: plugin.to_owned(),
                kind: kind.to_owned(),
                what,
                service: service.to_owned(),
                message: message.to_owned(),
            }),
            Some(_) => None,
        }
    }
}

/// Checks that every kind's create and every action (its owner's or another plugin's) is a
/// message its service answers, and that a kind's actions have distinct names.
fn check_messages(
    services: &Services,
    kernel: &Kernel,
    resources: &BTreeMap<&'static str, (String, ApiResource)>,
    errors: &mut Vec<CheckError>,
) {
    let check = |plugin: &str, kind: &str, what: String, service: &str, message: &str| {
        services.answers(plugin, kind, what, service, message)
    };
    // Each kind's actions by name, with the plugin that declared each.
    let mut actions: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
    for (plugin, r) in resources.values() {
        errors.extend(check(
            plugin,
            r.path,
            "the create".into(),
            r.service,
            r.create,
        ));
        for a in r.actions {
            let what = format!("action `{}`", a.name);
            errors.extend(check(plugin, r.path, what, r.service, a.message));
            actions
                .entry(r.path)
                .or_default()
                .push((a.name, plugin.clone()));
        }
    }
    for (plugin, e) in kernel.registered::<ApiActionExtension>() {
        let what = format!("action `{}`", e.action.name);
        errors.extend(check(plugin, e.path, what, e.service, e.action.message));
        if !resources.contains_key(e.path) {
            errors.push(CheckError::ActionOnUnknownKind {
                plugin: plugin.to_owned(),
                kind: e.path.to_owned(),
                action: e.action.name.to_owned(),
            });
            continue;
        }
        actions
            .entry(e.path)
            .or_default()
            .push((e.action.name, plugin.to_owned()));
    }
    for (kind, declared) in actions {
        for (i, (name, second)) in declared.iter().enumerate() {
            if let Some((_, first)) = declared[..i].iter().find(|(n, _)| n == name) {
                errors.push(CheckError::DuplicateAction {
                    kind: kind.to_owned(),
                    action: (*name).to_owned(),
                    first: first.clone(),
                    second: second.clone(),
                });
            }
        }
    }
}

/// Checks what `kernel`'s plugins declare for the API: every kind served once, by a service
/// that answers its create; every action a message its service answers, on a kind that is
/// served, with a name no other action of the kind has; every child collection on a kind
/// that is served, with a segment no other child of the kind has, whose messages its
/// service answers. A
/// distribution calls it right after assembly, so a plugin that gets it wrong stops the
/// node at start (and `inspect`, `openapi`) with an error naming it.
pub fn check(kernel: &Kernel) -> Result<(), CheckError> {
    match Catalogue::new(kernel).1.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
