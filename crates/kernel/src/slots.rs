//! Typed per-plugin state carried by an extension context: each plugin keys its slot by a
//! type of its own, so no other plugin can read or clobber it, and what its `run` put
//! there its `undo` finds (e.g. the tunnels this create made, and only those).

use crate::type_map::TypeIdMap;
use std::any::{Any, TypeId};
use std::fmt;

/// A value a slot can hold: any `Clone + Send + Sync` type (contexts are cloned).
trait SlotValue: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn SlotValue>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: Any + Clone + Send + Sync> SlotValue for T {
    fn clone_box(&self) -> Box<dyn SlotValue> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// State slots, one per type. In memory, for the length of one operation: an undo after a
/// restart (recovery) finds them empty and works from the plugin's own records.
///
/// ```
/// use flatstack_kernel::Slots;
/// #[derive(Clone, Default)]
/// struct MyTunnels(Vec<String>); // private to the plugin that defines it
///
/// let mut slots = Slots::default();
/// slots.get_or_default::<MyTunnels>().0.push("gre-1".into());
/// assert_eq!(slots.get::<MyTunnels>().unwrap().0, ["gre-1"]);
/// assert_eq!(slots.remove::<MyTunnels>().unwrap().0, ["gre-1"]);
/// assert!(slots.get::<MyTunnels>().is_none());
/// ```
#[derive(Default)]
pub struct Slots(TypeIdMap<Box<dyn SlotValue>>);

impl Slots {
    /// Puts `value` in `T`'s slot; returns what was there.
    pub fn insert<T: Any + Clone + Send + Sync>(&mut self, value: T) -> Option<T> {
        self.0
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.into_any().downcast().ok().map(|b| *b))
    }

    /// What `T`'s slot holds.
    pub fn get<T: Any + Clone + Send + Sync>(&self) -> Option<&T> {
        self.0
            .get(&TypeId::of::<T>())
            .and_then(|v| (**v).as_any().downcast_ref())
    }

    /// `T`'s slot, to change in place.
    pub fn get_mut<T: Any + Clone + Send + Sync>(&mut self) -> Option<&mut T> {
        self.0
            .get_mut(&TypeId::of::<T>())
            .and_then(|v| (**v).as_any_mut().downcast_mut())
    }

    /// `T`'s slot, filled with `T::default()` if empty.
    pub fn get_or_default<T: Any + Clone + Default + Send + Sync>(&mut self) -> &mut T {
        self.0
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .as_any_mut()
            .downcast_mut()
            .expect("a slot holds the type it is keyed by")
    }

    /// Empties `T`'s slot, returning what it held.
    pub fn remove<T: Any + Clone + Send + Sync>(&mut self) -> Option<T> {
        self.0
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.into_any().downcast().ok().map(|b| *b))
    }

    /// How many slots are filled.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Clone for Slots {
    fn clone(&self) -> Self {
        Slots(
            self.0
                .iter()
                .map(|(k, v)| (*k, (**v).clone_box()))
                .collect(),
        )
    }
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slots({} filled)", self.0.len())
    }
}
