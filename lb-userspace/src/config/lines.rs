//! The line map: where each key path is in the YAML text, found with
//! saphyr-parser since serde_yaml keeps no spans. Semantic errors (found
//! after deserializing) take their line from it, and a duplicate key its
//! place.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScanError};

/// Position (line, column, both 1-based) of every key path in the first
/// document, like `services[1].backends[0].port`, as serde_path_to_error
/// spells paths; sequence items map to where the item starts.
#[derive(Debug, Default)]
pub(super) struct Lines {
    keys: HashMap<String, (usize, usize)>,
    /// First key that appears twice in one mapping.
    pub(super) duplicate: Option<Duplicate>,
}

/// A key seen twice in one mapping: its path, and where it is the second time.
#[derive(Debug)]
pub(super) struct Duplicate {
    pub(super) path: String,
    pub(super) key: String,
    pub(super) line: usize,
    pub(super) column: usize,
}

struct Frame {
    path: String,
    /// A complex (non-scalar) mapping key, which gets no path of its own.
    is_key: bool,
    kind: Kind,
}

enum Kind {
    /// `key`: the key whose value comes next (None: a key comes next).
    Map {
        key: Option<String>,
        seen: HashSet<String>,
    },
    Seq {
        next: usize,
    },
}

impl Lines {
    pub(super) fn scan(text: &str) -> Result<Lines, ScanError> {
        let mut lines = Lines::default();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let (event, span) = event?;
            let pos = (span.start.line(), span.start.col() + 1);
            let starts = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
            match event {
                Event::DocumentEnd => break,
                Event::MappingEnd | Event::SequenceEnd => {
                    if stack.pop().is_some_and(|f| f.is_key) {
                        if let Some(Frame {
                            kind: Kind::Map { key, .. },
                            ..
                        }) = stack.last_mut()
                        {
                            *key = Some("?".into());
                        }
                    } else {
                        value_done(&mut stack);
                    }
                }
                Event::Scalar(..)
                | Event::Alias(_)
                | Event::MappingStart(..)
                | Event::SequenceStart(..) => {
                    // Where this node goes: a key of its mapping, or a value at `path`.
                    let (path, is_key) = match stack.last_mut() {
                        None => (String::new(), false),
                        Some(Frame {
                            path,
                            kind:
                                Kind::Map {
                                    key: key @ None,
                                    seen,
                                },
                            ..
                        }) => match &event {
                            Event::Scalar(k, ..) => {
                                let p = join(path, k);
                                if !seen.insert(k.to_string()) && lines.duplicate.is_none() {
                                    lines.duplicate = Some(Duplicate {
                                        path: p.clone(),
                                        key: k.to_string(),
                                        line: pos.0,
                                        column: pos.1,
                                    });
                                }
                                lines.keys.entry(p).or_insert(pos);
                                *key = Some(k.to_string());
                                continue;
                            }
                            Event::Alias(_) => {
                                *key = Some("?".into());
                                continue;
                            }
                            _ => (join(path, "?"), true),
                        },
                        Some(Frame {
                            path,
                            kind: Kind::Map { key: Some(k), .. },
                            ..
                        }) => (join(path, k), false),
                        Some(Frame {
                            path,
                            kind: Kind::Seq { next },
                            ..
                        }) => (format!("{path}[{next}]"), false),
                    };
                    lines.keys.entry(path.clone()).or_insert(pos);
                    if starts {
                        let kind = if matches!(event, Event::MappingStart(..)) {
                            Kind::Map {
                                key: None,
                                seen: HashSet::new(),
                            }
                        } else {
                            Kind::Seq { next: 0 }
                        };
                        stack.push(Frame { path, is_key, kind });
                    } else {
                        value_done(&mut stack);
                    }
                }
                _ => {}
            }
        }
        Ok(lines)
    }

    /// Position of `path`, or of its nearest ancestor present in the file.
    pub(super) fn find(&self, mut path: &str) -> Option<(usize, usize)> {
        loop {
            if let Some(&pos) = self.keys.get(path) {
                return Some(pos);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value just ended: its mapping now expects a key, its sequence the next item.
fn value_done(stack: &mut [Frame]) {
    match stack.last_mut().map(|f| &mut f.kind) {
        Some(Kind::Map { key, .. }) => *key = None,
        Some(Kind::Seq { next }) => *next += 1,
        None => {}
    }
}
