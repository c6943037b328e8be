//! `admin`: the API changes the data plane, so an address others can reach
//! needs a token.

use crate::config::error::invalid;
use crate::config::{Admin, ConfigError};

/// `admin.listen` on a non-loopback address (any address, a LAN one)
/// without `admin.token_file` would let anyone who reaches it drain,
/// reweight and reload: refused.
pub(super) fn check(admin: &Admin) -> Result<(), ConfigError> {
    let ip = admin.listen.ip().to_canonical();
    if ip.is_loopback() || admin.token_file.is_some() {
        return Ok(());
    }
    Err(invalid(
        "admin.listen",
        format!(
            "{} is reachable from other hosts and admin.token_file is not set: anyone who \
             reaches it could change backends and reload; set admin.token_file (a file holding \
             one long random line, e.g. `openssl rand -hex 32`), or listen on loopback \
             (127.0.0.1:{})",
            admin.listen,
            admin.listen.port()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn load(admin: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(&format!(
            "interfaces: [eth0]\nsnat: {{ ipv4: 198.18.1.1 }}\nadmin: {admin}\nservices: []\n"
        ))
    }

    #[test]
    fn a_reachable_admin_address_needs_a_token() {
        for ok in [
            "{ listen: 127.0.0.1:9100 }",
            "{ listen: 127.0.0.2:9100 }",
            "{ listen: \"[::1]:9100\" }",
            "{ listen: \"[::ffff:127.0.0.1]:9100\" }",
            "{ listen: 0.0.0.0:9100, token_file: /etc/xdplb/token }",
            "{ listen: \"[2001:db8::1]:9100\", token_file: /etc/xdplb/token }",
        ] {
            load(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for refused in [
            "{ listen: 0.0.0.0:9100 }",
            "{ listen: \"[::]:9100\" }",
            "{ listen: 198.18.0.1:9100 }",
            "{ listen: \"[::ffff:198.18.0.1]:9100\" }",
        ] {
            let e = load(refused).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, ConfigError::Invalid { ref path, line: Some(3), .. } if path == "admin.listen"),
                "{refused}: {e:?}"
            );
            for part in [
                "admin.token_file is not set",
                "set admin.token_file",
                "127.0.0.1:9100",
            ] {
                assert!(text.contains(part), "{refused}: {text}");
            }
        }
    }
}
