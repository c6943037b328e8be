//! What every client command shares: where the daemon's admin API is, its
//! token, and how a failure is reported.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;
use xdplb::client::{self, Client, ClientError, Settings};

/// Where the daemon's admin API is, and its token.
#[derive(Args)]
pub struct AdminArgs {
    /// The daemon's admin address [default: admin.listen of --config, else
    /// 127.0.0.1:9100].
    #[arg(long, value_name = "ADDR:PORT", value_parser = client::parse_admin)]
    admin: Option<String>,
    /// The daemon's config file: only admin.listen and admin.token_file are
    /// read from it.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// File holding the bearer token for changes [default: admin.token_file
    /// of --config].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// A client of the daemon; `changes`: it sends the token (read now).
    pub fn client(&self, changes: bool) -> Result<Client, ClientError> {
        let settings = Settings::resolve(
            self.admin.as_deref(),
            self.config.as_deref(),
            self.token_file.as_deref(),
        )?;
        let token = if changes { settings.token()? } else { None };
        Ok(Client::new(&settings.admin, token))
    }
}

/// Exit code of a client command; errors on one line.
pub fn exit(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdplb: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
