//! `flatstack`: the distribution binary — the management node and its command-line client,
//! over every in-tree plugin compiled in (see `distribution.rs`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    flatstack::Distribution::default().main()
}
