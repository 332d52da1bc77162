//! `flatstack`: the distribution binary.

mod distribution;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flatstack_kernel::{Kernel, Manifest};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "flatstack", version, about = "A pluggable IaaS control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Assemble the distribution and print its plugins, extension points and driver types.
    Inspect {
        /// Runtime manifest (TOML): enabled plugins, configuration, extension order.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn assemble(config: Option<&PathBuf>) -> anyhow::Result<Kernel> {
    let manifest = match config {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default(),
    };
    let kernel = distribution::plugins(Kernel::builder().manifest(manifest))
        .build()
        .context("assembling the distribution")?;
    Ok(kernel)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Inspect { config, json } => {
            let kernel = assemble(config.as_ref())?;
            let report = serde_json::json!({
                "plugins": kernel.plugins(),
                "extension_points": kernel.extensions().describe(),
                "types": kernel.drivers().describe(),
                "services": kernel.bus().services(),
                "config": kernel.config().entries(),
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_text(&kernel);
            }
        }
    }
    Ok(())
}

fn print_text(kernel: &Kernel) {
    println!("Plugins (start order):");
    for p in kernel.plugins() {
        println!("  {:<24} {}", p.name, p.description);
    }
    println!("Extension points:");
    for p in kernel.extensions().describe() {
        let implementors: Vec<&str> = p.implementors.iter().map(|i| i.plugin.as_str()).collect();
        println!(
            "  {:<36} {:<8?} owner={:<12} implementors=[{}]",
            p.name,
            p.semantics,
            p.owner.as_deref().unwrap_or("-"),
            implementors.join(", ")
        );
    }
    println!("Driver types:");
    for (kind, types) in kernel.drivers().describe() {
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        println!("  {:<24} {}", kind, names.join(", "));
    }
    println!("Configuration:");
    for entry in kernel.config().entries() {
        println!("  {:<36} = {} ({:?})", entry.key, entry.value, entry.source);
    }
}
