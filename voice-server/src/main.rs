//! `voice-server`: parses the command line (or `VOICE_*` env), sets up logging, raises the file
//! descriptor limit, binds and serves until SIGINT/SIGTERM. Everything else is in the library.

use anyhow::Context as _;
use tokio::net::TcpListener;
use voice_server::{init_tracing, serve, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = match Cli::parse_checked(std::env::args_os()) {
        Ok(checked) => checked.context("invalid configuration")?,
        Err(e) => e.exit(),
    };
    init_tracing(cli.log_format);
    let config = cli.into_config().context("invalid configuration")?;
    voice_server::listener::raise_fd_limit(config.max_connections);
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("could not listen on {}", config.addr))?;
    serve(config, listener).await.context("server failed")?;
    Ok(())
}
