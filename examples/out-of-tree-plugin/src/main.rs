//! `flatstack-vxlan`: the whole `flatstack` program — node, client, `inspect`, `openapi`,
//! `bench` — with every in-tree plugin and the VXLAN plugin of this crate.

fn main() -> std::process::ExitCode {
    flatstack::Distribution::default()
        .plugin(flatstack_vxlan::VxlanPlugin)
        .main()
}
