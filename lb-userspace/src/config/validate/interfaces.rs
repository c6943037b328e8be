//! `interfaces`: at least one, valid and distinct names.

use crate::config::ConfigError;
use crate::config::error::invalid;

/// Interface names are at most IFNAMSIZ - 1 bytes.
const MAX_IFNAME: usize = 15;

pub(super) fn check(interfaces: &[String]) -> Result<(), ConfigError> {
    if interfaces.is_empty() {
        return Err(invalid("interfaces", "at least one interface is required"));
    }
    for (i, name) in interfaces.iter().enumerate() {
        let bad = |c: char| c == '/' || c == ':' || c.is_whitespace();
        if name.is_empty()
            || name.len() > MAX_IFNAME
            || name.contains(bad)
            || name == "."
            || name == ".."
        {
            return Err(invalid(
                format!("interfaces[{i}]"),
                format!(
                    "invalid interface name {name:?}: 1-{MAX_IFNAME} characters, no '/', ':' or spaces"
                ),
            ));
        }
        if let Some(j) = interfaces[..i].iter().position(|n| n == name) {
            return Err(invalid(
                format!("interfaces[{i}]"),
                format!("duplicate interface {name:?} (also interfaces[{j}])"),
            ));
        }
    }
    Ok(())
}
