//! What went wrong reading the YAML into a `Config`: a syntax error, a
//! duplicate key, or a schema error (unknown key, wrong type, missing
//! key). The words are serde's and libyaml's, the key path
//! serde_path_to_error's, the place serde_yaml's; only a duplicate key is
//! placed by saphyr-parser (serde_yaml knows only its mapping).

use serde_path_to_error::Segment;
use serde_yaml::Value;

use super::Config;
use super::error::ConfigError;
use super::lines::Lines;

/// `e` is what deserializing `text` into a `Config` returned.
pub(super) fn read_error(
    text: &str,
    e: serde_path_to_error::Error<serde_yaml::Error>,
) -> ConfigError {
    let tree = match serde_yaml::from_str::<Value>(text) {
        Ok(tree) => tree,
        Err(yaml) => return yaml_level(text, yaml),
    };
    match serde_message(tree, &e) {
        Some(message) => {
            let at = e.inner().location();
            ConfigError::Invalid {
                path: match e.path().to_string() {
                    p if p == "." => "(top level)".into(),
                    p => p,
                },
                message,
                line: at.as_ref().map(|l| l.line()),
                column: at.as_ref().map(|l| l.column()),
            }
        }
        None => ConfigError::Schema(e.into_inner()),
    }
}

/// The text is not a YAML tree serde_yaml can build.
fn yaml_level(text: &str, yaml: serde_yaml::Error) -> ConfigError {
    match Lines::scan(text).ok().and_then(|l| l.duplicate) {
        Some(dup) => ConfigError::Invalid {
            path: dup.path,
            message: format!("duplicate field `{}`", dup.key),
            line: Some(dup.line),
            column: Some(dup.column),
        },
        None => ConfigError::Syntax(yaml),
    }
}

/// serde's own words for `e`, without serde_yaml's path and place.
///
/// serde_yaml writes "<its path>: <message> at <place>" for an error met
/// while reading text, but only "<message>" for one met while reading a
/// `Value`, which has no place. So the tree is read again, until it stops
/// where `e` did, with the message `e` shows. Reading text, serde_yaml
/// gives a plain scalar to a string as it is written; the tree typed it
/// (`ports: 2000` is a number there): where the tree stops at such a
/// scalar, the scalar becomes its text and the tree is read again.
fn serde_message(
    mut tree: Value,
    e: &serde_path_to_error::Error<serde_yaml::Error>,
) -> Option<String> {
    let shown = e.inner().to_string();
    let path = e.path().to_string();
    // Each round turns one scalar into a string: it ends.
    loop {
        let again = serde_path_to_error::deserialize::<_, Config>(tree.clone()).err()?;
        let message = again.inner().to_string();
        if again.inner().location().is_some() {
            return None;
        }
        if again.path().to_string() == path && shown.contains(&message) {
            return Some(message);
        }
        let scalar = node(&mut tree, again.path())?;
        *scalar = Value::String(match scalar {
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return None,
        });
    }
}

/// The node of `tree` at `path`.
fn node<'a>(tree: &'a mut Value, path: &serde_path_to_error::Path) -> Option<&'a mut Value> {
    path.iter().try_fold(tree, |node, segment| match segment {
        Segment::Seq { index } => node.get_mut(*index),
        Segment::Map { key } => node.get_mut(key.as_str()),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
}
