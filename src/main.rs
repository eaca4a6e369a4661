//! The `nsn-lane1` command-line entry point.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nsn_lane1::sidecar::server::ReferenceSidecar;
use nsn_lane1::sidecar::store::BlobStore;
use tracing_subscriber::EnvFilter;

/// The Lane 1 executor of a Neural Sovereign Network node.
#[derive(Debug, Parser)]
#[command(name = "nsn-lane1", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference sidecar: built-in CPU models over a content-addressed store.
    Sidecar(SidecarArgs),
}

#[derive(Debug, clap::Args)]
struct SidecarArgs {
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Keep blobs in this directory as well as in memory.
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
    /// Put a file into the store before serving (repeatable); its CID is printed.
    #[arg(long = "preload", value_name = "FILE")]
    preload: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("NSN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Sidecar(args) => runtime.block_on(sidecar(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sidecar(args: SidecarArgs) -> Result<(), Box<dyn std::error::Error>> {
    let store = match &args.store_dir {
        Some(dir) => BlobStore::with_dir(dir)?,
        None => BlobStore::in_memory(),
    };
    for path in &args.preload {
        let cid = store.put_file(path)?;
        println!("{cid}  {}", path.display());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "reference sidecar listening");
    let shutdown = async {
        // If the signal handler cannot be installed, serve until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    };
    ReferenceSidecar::new(store)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
