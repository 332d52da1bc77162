//! Two small typed registries: shared services the distribution provides (the store, ...)
//! and open lists that plugins contribute to (API resources, ...).

use crate::type_map::TypeIdMap;
use std::any::{Any, TypeId};
use std::sync::Arc;

/// Singletons by type, provided by the distribution before assembly.
#[derive(Default)]
pub(crate) struct Provided(TypeIdMap<Arc<dyn Any + Send + Sync>>);

impl Provided {
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.0.insert(TypeId::of::<T>(), value);
    }

    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.0.get(&TypeId::of::<T>())?.clone().downcast().ok()
    }
}

/// Lists by item type, each item with the plugin that contributed it.
#[derive(Default)]
pub(crate) struct Registered(TypeIdMap<Vec<(&'static str, Box<dyn Any + Send + Sync>)>>);

impl Registered {
    pub fn push<T: Send + Sync + 'static>(&mut self, plugin: &'static str, item: T) {
        self.0
            .entry(TypeId::of::<T>())
            .or_default()
            .push((plugin, Box::new(item)));
    }

    pub fn all<T: Send + Sync + 'static>(&self) -> Vec<(&str, &T)> {
        self.0
            .get(&TypeId::of::<T>())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|(plugin, item)| Some((*plugin, item.downcast_ref::<T>()?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
