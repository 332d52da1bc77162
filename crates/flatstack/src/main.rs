//! `flatstack`: the distribution binary — the management node and its command-line client.

mod distribution;
mod node;

use clap::{Parser, Subcommand};
use flatstack_kernel::Kernel;
use node::NodeOptions;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "flatstack", version, about = "A pluggable IaaS control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the management node (HTTP API on --listen, data in --data-dir).
    Serve {
        /// Where the node keeps its SQLite database; created on first start.
        #[arg(long, default_value = "flatstack-data")]
        data_dir: PathBuf,
        /// Address of the HTTP API (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Runtime manifest (TOML): enabled plugins, configuration, extension order.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Assemble the distribution and print its plugins, extension points and driver types.
    Inspect {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI document of the distribution's API.
    Openapi {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            data_dir,
            listen,
            config,
        } => {
            node::serve(NodeOptions {
                data_dir,
                listen,
                manifest: config,
            })
            .await?
        }
        Command::Inspect { config, json } => {
            let kernel = node::assemble(node::load_manifest(config.as_deref())?, None)?;
            if json {
                let report = serde_json::json!({
                    "plugins": kernel.plugins(),
                    "extension_points": kernel.extensions().describe(),
                    "types": kernel.drivers().describe(),
                    "services": kernel.bus().services(),
                    "config": kernel.config().entries(),
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_text(&kernel);
            }
        }
        Command::Openapi { config } => {
            let kernel = node::assemble(node::load_manifest(config.as_deref())?, None)?;
            let doc = flatstack_api::openapi::document(&kernel);
            println!("{}", serde_json::to_string_pretty(&doc)?);
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
