//! `voice-server`: parses the command line (or `VOICE_*` env), sets up logging, binds and serves
//! until SIGINT/SIGTERM. Everything else is in the library.

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;
use voice_server::{init_tracing, serve, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let config = cli.into_config().context("invalid configuration")?;
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("could not listen on {}", config.addr))?;
    serve(config, listener).await.context("server failed")?;
    Ok(())
}
