//! Declaring messages and extension points in one line each: what a header crate (in the
//! tree or out of it) publishes. The macros name only this crate's items, through
//! `$crate`, so a header needs no other import for them.

/// Declares requests and the reply each gets, and, when its type says where it goes, the
/// service that answers it (so that callers [`ask`](crate::Kernel::ask) without naming
/// one):
///
/// ```ignore
/// request!(CreateZone = "zone.create" => Inventory);
/// request!(ReserveCapacity = "host.capacity.reserve" => HostRecord, service HOST_SERVICE);
/// // A read: answered beside the addressed resource's queue (`Message::READS_ONLY`).
/// request!(GetResource = "resource.get" => Inventory, reads);
/// ```
#[macro_export]
macro_rules! request {
    ($ty:ty = $name:literal => $reply:ty, reads) => {
        impl $crate::Message for $ty {
            const NAME: &'static str = $name;
            const READS_ONLY: bool = true;
        }
        impl $crate::Request for $ty {
            type Reply = $reply;
        }
    };
    ($ty:ty = $name:literal => $reply:ty $(, service $service:expr)?) => {
        impl $crate::Message for $ty {
            const NAME: &'static str = $name;
        }
        impl $crate::Request for $ty {
            type Reply = $reply;
        }
        $(
            impl $crate::Addressed for $ty {
                const SERVICE: &'static str = $service;
            }
        )?
    };
}

/// Declares an event (published to every subscriber of its name):
/// `event!(ResourceCreated = "resource.created");`.
#[macro_export]
macro_rules! event {
    ($ty:ty = $name:literal) => {
        impl $crate::Message for $ty {
            const NAME: &'static str = $name;
        }
        impl $crate::Event for $ty {}
    };
}

/// Declares an extension point: its marker type, its stable name, the one sentence
/// introspection shows, its kind (`VetoPoint`, `AsyncVetoPoint`, `DoUndoPoint`,
/// `ObservePoint`, `FilterPoint`) and what its implementors are given:
///
/// ```ignore
/// extension_point!(
///     /// Before a VM's host is chosen.
///     VmCreatePreCheck: VetoPoint, "vm.create.pre-check",
///     "Before anything is reserved; a veto refuses the create.", Input = CreateVm
/// );
/// extension_point!(DeleteCheck: AsyncVetoPoint, "resource.delete-check", "...", Input = ResourceChange);
/// ```
///
/// `AsyncVetoPoint` declares a [`VetoPoint`](crate::VetoPoint) whose implementors may
/// also be asynchronous. `RemoteVetoPoint` (with `, remote = f` after the input, `f`
/// turning the input into the JSON services are shown) declares one that services outside
/// the node may implement too ([`remote`](crate::extension::remote)).
///
/// The doc comments given come first on the marker type; its name and description are
/// added to them, so a point declared without any (out of tree, say) is documented too.
#[macro_export]
macro_rules! extension_point {
    ($(#[$doc:meta])* $name:ident: RemoteVetoPoint, $wire:literal, $description:literal, Input = $input:ty, remote = $to_json:path) => {
        $(#[$doc])*
        #[doc = ""]
        #[doc = concat!("Extension point `", $wire, "`: ", $description)]
        #[doc = ""]
        #[doc = "Services outside the node may implement it too (remote extension points): they are shown what the `remote` function makes of the input."]
        pub struct $name;
        impl $crate::ExtensionPoint for $name {
            const NAME: &'static str = $wire;
            const DESCRIPTION: &'static str = $description;
            const REMOTE: bool = true;
        }
        impl $crate::VetoPoint for $name {
            type Input = $input;
        }
        impl $crate::AsyncVetoPoint for $name {
            fn remote_input(input: &$input) -> Option<$crate::extension::remote::Json> {
                Some($to_json(input))
            }
        }
    };
    ($(#[$doc:meta])* $name:ident: RemoteObservePoint, $wire:literal, $description:literal, Event = $event:ty, remote = $to_json:path) => {
        $(#[$doc])*
        #[doc = ""]
        #[doc = concat!("Extension point `", $wire, "`: ", $description)]
        #[doc = ""]
        #[doc = "Services outside the node may observe it too (remote extension points): they are sent what the `remote` function makes of the event."]
        pub struct $name;
        impl $crate::ExtensionPoint for $name {
            const NAME: &'static str = $wire;
            const DESCRIPTION: &'static str = $description;
            const REMOTE: bool = true;
        }
        impl $crate::ObservePoint for $name {
            type Event = $event;
            fn remote_event(event: &$event) -> Option<$crate::extension::remote::Json> {
                Some($to_json(event))
            }
        }
    };
    ($(#[$doc:meta])* $name:ident: AsyncVetoPoint, $wire:literal, $description:literal, Input = $input:ty) => {
        $crate::extension_point!($(#[$doc])* $name: VetoPoint, $wire, $description, Input = $input);
        impl $crate::AsyncVetoPoint for $name {}
    };
    ($(#[$doc:meta])* $name:ident: $kind:ident, $wire:literal, $description:literal $(, $assoc:ident = $ty:ty)*) => {
        $(#[$doc])*
        #[doc = ""]
        #[doc = concat!("Extension point `", $wire, "`: ", $description)]
        pub struct $name;
        impl $crate::ExtensionPoint for $name {
            const NAME: &'static str = $wire;
            const DESCRIPTION: &'static str = $description;
        }
        impl $crate::$kind for $name {
            $(type $assoc = $ty;)*
        }
    };
}
