//! Where the daemon is and where its token is: `--admin` and
//! `--token-file` first, then the `admin` section of `--config`, then the
//! defaults.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ClientError;
use crate::token::read_token_file;

/// `--admin` when neither it nor a config says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";

/// Checks `--admin`: `IP:PORT` (`[v6]:PORT`) or `HOST:PORT`; returns it as
/// it goes in a URL.
pub fn parse_admin(s: &str) -> Result<String, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr.to_string());
    }
    let bad = || format!("{s:?} is not ADDR:PORT (e.g. 127.0.0.1:9100)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// The daemon's admin address and its token file, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub admin: String,
    pub token_file: Option<PathBuf>,
}

/// The part of a config file the client needs. Other keys are ignored and
/// nothing is validated: `status` must work with any file the daemon took,
/// whatever this binary's version thinks of the rest.
#[derive(Deserialize, Default)]
struct ConfigAdmin {
    #[serde(default)]
    admin: Option<AdminSection>,
}

#[derive(Deserialize, Default)]
struct AdminSection {
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    token_file: Option<PathBuf>,
}

impl Settings {
    /// `admin` is an already checked `--admin` (see [`parse_admin`]).
    pub fn resolve(
        admin: Option<&str>,
        config: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Settings, ClientError> {
        let section = match config {
            Some(path) => read_admin_section(path)?,
            None => AdminSection::default(),
        };
        let admin = match (admin, section.listen) {
            (Some(a), _) => a.to_string(),
            // A daemon listening on all addresses is reached on loopback.
            (None, Some(mut listen)) => {
                if listen.ip().is_unspecified() {
                    listen.set_ip(match listen {
                        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                    });
                }
                listen.to_string()
            }
            (None, None) => DEFAULT_ADMIN.to_string(),
        };
        let token_file = token_file.map(Path::to_path_buf).or(section.token_file);
        Ok(Settings { admin, token_file })
    }

    /// Reads the token file, if there is one. Only commands that change
    /// something need it: `status` works for users who cannot read the
    /// token.
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        Ok(self
            .token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?)
    }
}

fn read_admin_section(path: &Path) -> Result<AdminSection, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Usage(format!("cannot read config {}: {e}", path.display())))?;
    // An empty file is an empty mapping (all defaults).
    if text.trim().is_empty() {
        return Ok(AdminSection::default());
    }
    let parsed: ConfigAdmin = serde_yaml::from_str(&text).map_err(|e| {
        ClientError::Usage(format!(
            "{}: cannot read admin.listen / admin.token_file: {e}",
            path.display()
        ))
    })?;
    Ok(parsed.admin.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses() {
        assert_eq!(parse_admin("127.0.0.1:9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(parse_admin("[::1]:9100").unwrap(), "[::1]:9100");
        assert_eq!(parse_admin("lb1.example:9100").unwrap(), "lb1.example:9100");
        for bad in ["127.0.0.1", "::1:9100x", ":9100", "host:99999", "a/b:1"] {
            assert!(parse_admin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_from_a_config_that_only_the_admin_section_matters_in() {
        let dir = std::env::temp_dir().join(format!("xdplb-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "  s3cret\n").unwrap();
        let config = dir.join("c.yaml");
        std::fs::write(
            &config,
            format!(
                "interfaces: [eth0]\nfuture_key: 1\nadmin:\n  listen: 127.0.0.1:9200\n  token_file: {}\n",
                token.display()
            ),
        )
        .unwrap();
        let s = Settings::resolve(None, Some(&config), None).unwrap();
        assert_eq!(s.admin, "127.0.0.1:9200");
        assert_eq!(s.token().unwrap().as_deref(), Some("s3cret"));
        let s = Settings::resolve(Some("127.0.0.1:1"), None, None).unwrap();
        assert_eq!(
            s,
            Settings {
                admin: "127.0.0.1:1".into(),
                token_file: None
            }
        );
        assert_eq!(s.token().unwrap(), None);
        assert_eq!(
            Settings::resolve(None, None, None).unwrap().admin,
            DEFAULT_ADMIN
        );
        std::fs::write(&token, "\n").unwrap();
        let e = Settings::resolve(None, Some(&config), None)
            .unwrap()
            .token()
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("is empty"), "{e}");
        std::fs::write(&config, "admin: { listen: \"0.0.0.0:9300\" }\n").unwrap();
        let s = Settings::resolve(None, Some(&config), None).unwrap();
        assert_eq!(s.admin, "127.0.0.1:9300");
        std::fs::write(&config, "admin: { listen: \"[::]:9300\" }\n").unwrap();
        let s = Settings::resolve(None, Some(&config), None).unwrap();
        assert_eq!(s.admin, "[::1]:9300");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
