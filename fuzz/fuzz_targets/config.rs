//! The config file as `xdplb check` and `xdplb run` read it: YAML text
//! parsed and validated by `Config::from_yaml` (serde_yaml, the key paths
//! of schema errors, the line map of semantic ones, every check that needs
//! no host).
//!
//! Holds: no panic; an error's line is within the text; a valid config
//! written back to YAML reads back equal and valid.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xdplb::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml(text) {
        Ok(config) => {
            let written = serde_yaml::to_string(&config).expect("a config serializes");
            match Config::from_yaml(&written) {
                Ok(again) => assert_eq!(again, config, "round trip through:\n{written}"),
                Err(e) => panic!("a valid config, written back, is refused: {e}\n{written}"),
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            if let Some(line) = e.line() {
                // At most one past the last line (the end of the text).
                let lines = yaml_lines(text) + 1;
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of a {lines}-line text: {message}"
                );
            }
        }
    }
});

/// Lines as YAML counts them: CR, LF, CRLF, NEL, LS and PS each end one.
fn yaml_lines(text: &str) -> usize {
    let breaks = text.replace("\r\n", "\n");
    1 + breaks
        .chars()
        .filter(|c| matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}
