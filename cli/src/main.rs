//! `lancefleet`: the one binary of LanceFleet, one subcommand per role.

mod standalone;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lancefleet_common::config::{Override, StandaloneConfig};
use lancefleet_common::telemetry::init_logging;

/// LanceFleet: a distributed query cluster for vector and full-text search over Lance tables.
#[derive(Debug, Parser)]
#[command(name = "lancefleet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every role in one process, serving the LanceDB REST API over a local directory
    /// (or an s3://, az://, gs:// root).
    Standalone(StandaloneArgs),
}

/// Flags of `lancefleet standalone`. Each overrides the config file and the environment.
#[derive(Debug, clap::Args)]
struct StandaloneArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "LANCEFLEET_CONFIG")]
    config: Option<PathBuf>,
    /// Storage root: a directory, or s3://bucket/prefix, az://container/prefix, gs://bucket/prefix
    /// [config: storage.root, default ./lancefleet-data].
    #[arg(long)]
    data_dir: Option<String>,
    /// Address of the REST API [config: rest.listen, default 127.0.0.1:8080].
    #[arg(long)]
    rest_listen: Option<String>,
    /// Log filter such as `info` or `lancefleet=debug` [config: log.level].
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json [config: log.format].
    #[arg(long)]
    log_format: Option<String>,
}

impl StandaloneArgs {
    fn overrides(&self) -> Vec<Override> {
        let flags = [
            ("storage.root", &self.data_dir),
            ("rest.listen", &self.rest_listen),
            ("log.level", &self.log_level),
            ("log.format", &self.log_format),
        ];
        flags.into_iter().filter_map(|(key, value)| value.clone().map(|value| (key, value))).collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Standalone(args) => {
            let config = match StandaloneConfig::load(args.config.as_deref(), &args.overrides()) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("lancefleet: {error}");
                    return ExitCode::from(2);
                }
            };
            if let Err(error) = init_logging(&config.log) {
                eprintln!("lancefleet: cannot set up logging: {error}");
                return ExitCode::from(2);
            }
            run(standalone::run(config))
        }
    }
}

/// Runs a role on a multi-threaded runtime and turns its outcome into an exit code.
fn run<E: std::fmt::Display>(role: impl std::future::Future<Output = Result<(), E>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lancefleet: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "lancefleet stopped with an error");
            ExitCode::FAILURE
        }
    }
}
