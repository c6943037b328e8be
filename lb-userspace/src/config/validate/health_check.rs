//! A service's `health_check`: keys of its type only, values in range.

use std::time::Duration;

use crate::config::error::invalid;
use crate::config::{CheckType, ConfigError, HealthCheck};

/// Shortest health-check interval.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// `at` is the key path of the `health_check` mapping.
pub(super) fn check(at: &str, hc: &HealthCheck) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    // A key of another check type would be silently ignored: reject it.
    for (name, set, only) in [
        ("path", hc.path.is_some(), CheckType::Http),
        ("expect_status", hc.expect_status.is_some(), CheckType::Http),
        ("expect_body", hc.expect_body.is_some(), CheckType::Http),
        ("send", hc.send.is_some(), CheckType::Udp),
        ("expect", hc.expect.is_some(), CheckType::Udp),
    ] {
        if set && hc.r#type != only {
            return Err(invalid(
                key(name),
                format!("only valid with type {only}, not with type {}", hc.r#type),
            ));
        }
    }
    if let Some(path) = &hc.path {
        if !path.starts_with('/') {
            return Err(invalid(
                key("path"),
                format!("request path {path:?} must start with '/'"),
            ));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                key("path"),
                format!("request path {path:?} must not contain spaces or control characters"),
            ));
        }
    }
    if let Some(status) = hc.expect_status
        && !(100..=599).contains(&status)
    {
        return Err(invalid(
            key("expect_status"),
            format!("HTTP status {status} is not in 100-599"),
        ));
    }
    const BODY: usize = HealthCheck::MAX_HTTP_BODY;
    const DATAGRAM: usize = HealthCheck::MAX_UDP_PAYLOAD;
    for (name, text, max, too_long) in [
        (
            "expect_body",
            &hc.expect_body,
            BODY,
            format!("longer than the {BODY} bytes of the body that are searched"),
        ),
        (
            "send",
            &hc.send,
            DATAGRAM,
            format!("larger than a UDP datagram ({DATAGRAM} bytes)"),
        ),
    ] {
        if let Some(text) = text
            && text.len() > max
        {
            return Err(invalid(
                key(name),
                format!("{} bytes, {too_long}", text.len()),
            ));
        }
    }
    if hc.port == Some(0) {
        return Err(invalid(key("port"), "check port must be 1-65535"));
    }
    if hc.interval < MIN_CHECK_INTERVAL {
        return Err(invalid(
            key("interval"),
            format!(
                "{:?} is below the minimum {MIN_CHECK_INTERVAL:?}",
                hc.interval
            ),
        ));
    }
    if hc.timeout.is_zero() {
        return Err(invalid(key("timeout"), "must be greater than 0"));
    }
    if hc.timeout > hc.interval {
        return Err(invalid(
            key("timeout"),
            format!(
                "{:?} is longer than the interval ({:?})",
                hc.timeout, hc.interval
            ),
        ));
    }
    for (name, n) in [("rise", hc.rise), ("fall", hc.fall)] {
        if n == 0 {
            return Err(invalid(key(name), "must be at least 1"));
        }
    }
    Ok(())
}
