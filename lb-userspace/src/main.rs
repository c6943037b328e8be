//! `xdplb`: the command line. Exit codes: 0 ok, 1 runtime failure,
//! 2 usage or invalid config.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xdplb::config::Config;

#[derive(Parser)]
#[command(name = "xdplb", version, about = "XDP layer-4 load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (needs root).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 if valid, 2 if not.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XDPLB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { config } => {
            // Load errors name the file already; host checks do not.
            let checked = Config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    xdplb::config::check_host(&c)
                        .map(|()| c)
                        .map_err(|e| format!("{}: {e}", config.display()))
                });
            match checked {
                Ok(c) => {
                    println!("{}: ok ({} services)", config.display(), c.services.len());
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(xdplb::daemon::run(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xdplb: {e:#}");
                    let invalid = e.downcast_ref::<xdplb::config::ConfigError>().is_some();
                    ExitCode::from(if invalid { 2 } else { 1 })
                }
            }
        }
    }
}
