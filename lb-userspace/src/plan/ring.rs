//! A service's Maglev ring as the daemon holds it: each entry is a position
//! in the service's backend list, in 2 bytes, not the 4-byte backend id the
//! map holds: 100 services at M = 65 537 take 13 MB instead of 26. The ids
//! are looked up as the ring is read (`get`, `iter`), so what the map gets
//! and what readers see is exactly Maglev's table in backend ids.
//!
//! A service with `NARROW_NONE` (65 535) backends or more (a ring of
//! 1 000 003 entries allows ~100 000) keeps 4-byte positions.

use std::sync::Arc;

use lb_common::NO_BACKEND;

#[derive(Debug, Clone)]
pub struct Ring {
    /// The backend id at each position.
    ids: Arc<[u32]>,
    entries: Entries,
}

#[derive(Debug, Clone)]
enum Entries {
    /// Positions, `NARROW_NONE` for no backend.
    Narrow(Arc<[u16]>),
    /// Positions, `NO_BACKEND` for no backend.
    Wide(Arc<[u32]>),
}

/// No backend, in a narrow ring: never a position, as narrow rings have
/// fewer backends.
const NARROW_NONE: u16 = u16::MAX;

impl Default for Ring {
    /// No entries (a ring not built yet).
    fn default() -> Ring {
        Ring {
            ids: Arc::new([]),
            entries: Entries::Narrow(Arc::new([])),
        }
    }
}

impl Ring {
    /// From Maglev's table (`maglev::build_table`: each entry a position in
    /// `ids`, or `NO_BACKEND`).
    pub fn new(table: &[u32], ids: &[u32]) -> Ring {
        debug_assert!(
            table
                .iter()
                .all(|&p| p == NO_BACKEND || (p as usize) < ids.len())
        );
        let entries = if ids.len() < NARROW_NONE as usize {
            let narrow = |&p: &u32| {
                if p == NO_BACKEND {
                    NARROW_NONE
                } else {
                    p as u16
                }
            };
            Entries::Narrow(table.iter().map(narrow).collect())
        } else {
            Entries::Wide(table.into())
        };
        Ring {
            ids: ids.into(),
            entries,
        }
    }

    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Narrow(e) => e.len(),
            Entries::Wide(e) => e.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend id at entry `i` (or `NO_BACKEND`); panics past the end,
    /// as slice indexing does.
    pub fn get(&self, i: usize) -> u32 {
        match &self.entries {
            Entries::Narrow(e) => self.id(e[i] as u32, e[i] == NARROW_NONE),
            Entries::Wide(e) => self.id(e[i], e[i] == NO_BACKEND),
        }
    }

    fn id(&self, position: u32, none: bool) -> u32 {
        if none {
            NO_BACKEND
        } else {
            self.ids[position as usize]
        }
    }

    /// Every entry's backend id (or `NO_BACKEND`), in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            ids: &self.ids,
            entries: match &self.entries {
                Entries::Narrow(e) => EntriesIter::Narrow(e.iter()),
                Entries::Wide(e) => EntriesIter::Wide(e.iter()),
            },
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        self.iter().any(|e| e == id)
    }

    /// Whether `other` is this very ring (a plan reused it), not a copy.
    pub fn shares(&self, other: &Ring) -> bool {
        let same_entries = match (&self.entries, &other.entries) {
            (Entries::Narrow(a), Entries::Narrow(b)) => Arc::ptr_eq(a, b),
            (Entries::Wide(a), Entries::Wide(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_entries && Arc::ptr_eq(&self.ids, &other.ids)
    }

    /// A ring of these entries (tests that change one).
    #[cfg(test)]
    pub fn from_ids(entries: &[u32]) -> Ring {
        let mut ids: Vec<u32> = entries
            .iter()
            .copied()
            .filter(|&e| e != NO_BACKEND)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let table: Vec<u32> = entries
            .iter()
            .map(|e| ids.binary_search(e).map_or(NO_BACKEND, |p| p as u32))
            .collect();
        Ring::new(&table, &ids)
    }
}

/// Equal when every entry names the same backend (the same ring: no need
/// to compare them).
impl PartialEq for Ring {
    fn eq(&self, other: &Ring) -> bool {
        self.shares(other) || self.iter().eq(other.iter())
    }
}

impl Eq for Ring {}

/// `Ring::iter`.
pub struct Iter<'a> {
    ids: &'a [u32],
    entries: EntriesIter<'a>,
}

enum EntriesIter<'a> {
    Narrow(std::slice::Iter<'a, u16>),
    Wide(std::slice::Iter<'a, u32>),
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let position = match &mut self.entries {
            EntriesIter::Narrow(e) => match *e.next()? {
                NARROW_NONE => return Some(NO_BACKEND),
                p => p as usize,
            },
            EntriesIter::Wide(e) => match *e.next()? {
                NO_BACKEND => return Some(NO_BACKEND),
                p => p as usize,
            },
        };
        Some(self.ids[position])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.entries {
            EntriesIter::Narrow(e) => e.size_hint(),
            EntriesIter::Wide(e) => e.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_and_wide_read_back_the_ids() {
        let table = [2, NO_BACKEND, 0, 1, 0];
        let ids = [70, 80, 90];
        let ring = Ring::new(&table, &ids);
        assert!(matches!(ring.entries, Entries::Narrow(_)));
        let want = [90, NO_BACKEND, 70, 80, 70];
        assert_eq!(ring.iter().collect::<Vec<_>>(), want);
        assert_eq!(ring.iter().len(), 5);
        assert_eq!(ring.get(0), 90);
        assert_eq!(ring.get(1), NO_BACKEND);
        assert!(ring.contains(80) && !ring.contains(60));

        // As many backends as a narrow position can't tell from "none".
        let many: Vec<u32> = (0..NARROW_NONE as u32).map(|i| i + 1000).collect();
        let table = [65_534, NO_BACKEND, 0];
        let wide = Ring::new(&table, &many);
        assert!(matches!(wide.entries, Entries::Wide(_)));
        assert_eq!(wide.iter().collect::<Vec<_>>(), [66_534, NO_BACKEND, 1000]);
        assert_eq!(wide.get(1), NO_BACKEND);
    }

    #[test]
    fn equal_when_the_ids_are_whatever_the_positions() {
        let a = Ring::new(&[0, 1, 0], &[7, 8]);
        let b = Ring::new(&[1, 0, 1], &[8, 7]);
        assert_eq!(a, b);
        assert!(!a.shares(&b) && a.shares(&a.clone()));
        // Same positions, other ids: another ring.
        assert_ne!(a, Ring::new(&[0, 1, 0], &[7, 9]));
        assert_eq!(Ring::from_ids(&[8, NO_BACKEND, 7]).get(0), 8);
    }
}
