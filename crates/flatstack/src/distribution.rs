//! The plugins of this distribution: one line each for the in-tree ones, each optional one
//! behind its own Cargo feature, and [`Distribution`], which adds a program's own plugins
//! to them. Which of them run is the manifest's business, not this file's.

use flatstack_kernel::{async_trait, Fault, Kernel, KernelBuilder, Plugin, PluginBuilder};
use std::sync::Arc;

/// Adds every in-tree plugin compiled into this crate.
fn in_tree(builder: KernelBuilder) -> KernelBuilder {
    // The core: the life cycle every resource kind shares.
    let b = builder.plugin(flatstack_store::ResourcePlugin);
    #[cfg(feature = "identity")]
    let b = b.plugin(flatstack_plugin_identity::IdentityPlugin::default());
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
    #[cfg(feature = "l2-openvswitch")]
    let b = b.plugin(flatstack_plugin_l2_openvswitch::OpenvswitchPlugin);
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
    #[cfg(feature = "capacity-report")]
    let b = b.plugin(flatstack_plugin_capacity_report::CapacityReportPlugin::default());
    b
}

/// A Flatstack distribution: every in-tree plugin compiled into this crate, plus the
/// plugins a program adds. [`Distribution::main`] is the whole `flatstack` program — the
/// node (`serve`, `serve --demo`), the client, `inspect`, `openapi` and `bench` — over
/// those plugins, so a program that ships its own plugin out of tree is a `main` of a few
/// lines:
///
/// ```no_run
/// # use flatstack_kernel::{Plugin, PluginBuilder};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {
/// #     fn name(&self) -> &'static str { "mine" }
/// #     fn build(&self, _b: &mut PluginBuilder<'_>) {}
/// # }
/// fn main() -> std::process::ExitCode {
///     flatstack::Distribution::default().plugin(MyPlugin).main()
/// }
/// ```
///
/// An added plugin is one like any other: enabled unless the manifest says otherwise
/// (`plugins = [...]` or `disabled = ["<its name>"]`), configured under `[config]` by the
/// keys it declares, checked at assembly (a name an in-tree plugin already has is refused).
#[derive(Clone, Default)]
pub struct Distribution {
    /// The program's own plugins, in the order added (assembly orders them by name and
    /// requirements, as every plugin).
    added: Vec<Arc<dyn Plugin>>,
}

impl Distribution {
    /// Adds `plugin` to the distribution.
    ///
    /// One instance serves every kernel the program assembles (`bench` and the tests
    /// assemble several in one process): keep a node's state in what
    /// [`Plugin::build`] registers, not in the plugin value.
    pub fn plugin(mut self, plugin: impl Plugin) -> Self {
        self.added.push(Arc::new(plugin));
        self
    }

    /// The names of the plugins added to the in-tree ones.
    pub fn added(&self) -> Vec<&'static str> {
        self.added.iter().map(|p| p.name()).collect()
    }

    /// A kernel builder holding every plugin of the distribution (for a program that
    /// assembles a kernel itself, e.g. in a test; the node does it through
    /// [`Distribution::main`]).
    pub fn kernel_builder(&self) -> KernelBuilder {
        self.added
            .iter()
            .fold(in_tree(KernelBuilder::new()), |b, plugin| {
                b.plugin(Added(plugin.clone()))
            })
    }
}

/// One of the program's plugins, shared by every kernel the program assembles.
struct Added(Arc<dyn Plugin>);

#[async_trait]
impl Plugin for Added {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn description(&self) -> &'static str {
        self.0.description()
    }

    fn requires(&self) -> &'static [&'static str] {
        self.0.requires()
    }

    fn opt_in(&self) -> bool {
        self.0.opt_in()
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        self.0.build(b)
    }

    async fn start(&self, kernel: &Kernel) -> Result<(), Fault> {
        self.0.start(kernel).await
    }

    async fn stop(&self, kernel: &Kernel) {
        self.0.stop(kernel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::assemble;
    use flatstack_header::api::ApiChildExtension;
    use flatstack_kernel::Manifest;

    use flatstack_header::{InventoryList, ListResources};
    use flatstack_kernel::Message;

    /// A plugin named `name` that adds a child collection to `kind`, served by a service
    /// of its own name.
    struct Adds(&'static str, &'static str);

    impl Plugin for Adds {
        fn name(&self) -> &'static str {
            self.0
        }

        fn build(&self, b: &mut PluginBuilder<'_>) {
            b.service(self.0, ())
                .handle::<ListResources, _, _>(|_, _, _| async {
                    Ok(InventoryList {
                        next: None,
                        inventories: Vec::new(),
                        total: 0,
                    })
                });
            b.register(ApiChildExtension::new(
                self.1,
                "extras",
                self.0,
                ListResources::NAME,
            ));
        }
    }

    fn names(distribution: &Distribution, manifest: &str) -> anyhow::Result<Vec<String>> {
        let manifest = Manifest::parse(manifest)?;
        let kernel = assemble(distribution, manifest, None, None)?;
        Ok(kernel.plugins().into_iter().map(|p| p.name).collect())
    }

    #[test]
    fn an_added_plugin_runs_beside_the_in_tree_ones_unless_the_manifest_disables_it() {
        let distribution = Distribution::default().plugin(Adds("extras", "zones"));
        assert_eq!(distribution.added(), ["extras"]);
        let all = names(&distribution, "").expect("assembles");
        assert!(all.iter().any(|n| n == "extras") && all.iter().any(|n| n == "resource"));
        let without = names(&distribution, "disabled = [\"extras\"]").expect("assembles");
        assert!(!without.iter().any(|n| n == "extras"));
        // Assembled again (as `bench` does): the same plugin serves every kernel.
        assert_eq!(names(&distribution, "").expect("assembles"), all);
    }

    #[test]
    fn assembly_names_an_added_plugin_that_clashes_or_extends_no_kind() {
        let error = names(&Distribution::default().plugin(Adds("zone", "zones")), "")
            .expect_err("a second `zone`");
        assert!(format!("{error:#}").contains("zone"), "{error:#}");
        let error = names(
            &Distribution::default().plugin(Adds("extras", "nowhere")),
            "",
        )
        .expect_err("no such kind");
        assert!(
            format!("{error:#}").contains("plugin `extras` adds `extras` to `nowhere`"),
            "{error:#}"
        );
    }
}
