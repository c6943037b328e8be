//! `xdplb run` (the daemon in the foreground) and `xdplb check` (its config
//! validated, as `run` would before touching anything).

use std::{path::Path, process::ExitCode};

use xdplb::{
    config::{self, Config, ConfigError},
    dataplane::DataplaneError,
};

/// `run`: exit 2 if the config is invalid (also a limit the kernel will not
/// create a map of), 1 on any other failure.
pub fn run(config: &Path) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(xdplb::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdplb: {e:#}");
            let invalid = e.downcast_ref::<ConfigError>().is_some()
                || matches!(
                    e.downcast_ref::<DataplaneError>(),
                    Some(DataplaneError::MapRefused { .. })
                );
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

/// `check`: the config and the host checks; exit 0 if valid, 2 if not.
pub fn check(path: &Path) -> ExitCode {
    // Load errors name the file already; host checks do not.
    let checked = Config::load(path).map_err(|e| e.to_string()).and_then(|c| {
        config::check_host(&c)
            .map(|()| c)
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    match checked {
        Ok(c) => {
            println!("{}: ok ({} services)", path.display(), c.services.len());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
