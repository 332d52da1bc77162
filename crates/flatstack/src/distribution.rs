//! The plugins of this distribution: one line each, each optional one behind its own Cargo
//! feature. Which of them run is the manifest's business, not this file's.

use flatstack_kernel::KernelBuilder;

/// Adds every plugin compiled into this binary.
pub fn plugins(builder: KernelBuilder) -> KernelBuilder {
    #[allow(unused_mut)]
    let mut builder = builder;
    builder
}
