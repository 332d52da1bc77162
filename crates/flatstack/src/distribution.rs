//! The plugins of this distribution: one line each, each optional one behind its own Cargo
//! feature. Which of them run is the manifest's business, not this file's.

use flatstack_kernel::KernelBuilder;

/// Adds every plugin compiled into this binary.
pub fn plugins(builder: KernelBuilder) -> KernelBuilder {
    // The core: the life cycle every resource kind shares.
    let b = builder.plugin(flatstack_store::ResourcePlugin);
    #[cfg(feature = "zone")]
    let b = b.plugin(flatstack_plugin_zone::ZonePlugin);
    #[cfg(feature = "cluster")]
    let b = b.plugin(flatstack_plugin_cluster::ClusterPlugin);
    #[cfg(feature = "host")]
    let b = b.plugin(flatstack_plugin_host::HostPlugin);
    #[cfg(feature = "host-simulator")]
    let b = b.plugin(flatstack_plugin_host_simulator::SimulatorPlugin::default());
    #[cfg(feature = "storage")]
    let b = b.plugin(flatstack_plugin_storage::StoragePlugin);
    #[cfg(feature = "storage-simulator")]
    let b = b.plugin(flatstack_plugin_storage_simulator::StorageSimulatorPlugin::default());
    #[cfg(feature = "image")]
    let b = b.plugin(flatstack_plugin_image::ImagePlugin);
    #[cfg(feature = "instance-offering")]
    let b = b.plugin(flatstack_plugin_instance_offering::InstanceOfferingPlugin);
    #[cfg(feature = "l2-network")]
    let b = b.plugin(flatstack_plugin_l2_network::L2NetworkPlugin);
    #[cfg(feature = "l2-vlan")]
    let b = b.plugin(flatstack_plugin_l2_vlan::L2VlanPlugin);
    #[cfg(feature = "l3-network")]
    let b = b.plugin(flatstack_plugin_l3_network::L3NetworkPlugin);
    #[cfg(feature = "vm")]
    let b = b.plugin(flatstack_plugin_vm::VmPlugin);
    #[cfg(feature = "dhcp")]
    let b = b.plugin(flatstack_plugin_dhcp::DhcpPlugin);
    #[cfg(feature = "host-tags")]
    let b = b.plugin(flatstack_plugin_host_tags::HostTagsPlugin);
    #[cfg(feature = "quota")]
    let b = b.plugin(flatstack_plugin_quota::QuotaPlugin);
    #[cfg(feature = "volume")]
    let b = b.plugin(flatstack_plugin_volume::VolumePlugin);
    #[cfg(feature = "fault-injection")]
    let b = b.plugin(flatstack_plugin_fault_injection::FaultInjectionPlugin);
    b
}
