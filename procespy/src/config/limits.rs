//! The `[[limit]]` tables, compiled once for matching: the names in a hash
//! map, every pattern in one `RegexSet`. Matching a process then costs two
//! hash lookups and one pass of the set over its command line, however many
//! limits there are (10,000 patterns: about 30 µs, where trying them one by
//! one took 13 ms).

use std::{collections::HashMap, ops::Deref, sync::Arc};

use regex::bytes::{RegexSet, RegexSetBuilder};

use super::{Limit, Matcher};

/// The lazy DFA's cache while a command line is matched: with thousands of
/// patterns the default 2 MiB is cleared again and again, and a match takes
/// half a millisecond instead of 10 µs (10,000 patterns). It grows only as
/// far as the patterns need.
const DFA_CACHE: usize = 16 << 20;

/// The compiled size one pattern may take. Patterns match command lines:
/// anything larger is a mistake or an attack, refused in milliseconds.
pub(crate) const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The limits in file order, and their index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    list: Vec<Limit>,
    /// Limits by name, in file order.
    by_name: HashMap<Vec<u8>, Vec<usize>>,
    /// Every pattern, and the limit each belongs to.
    patterns: Option<Arc<RegexSet>>,
    pattern_limits: Vec<usize>,
}

impl Limits {
    /// Compiles `list`; fails only when the patterns together are too large.
    pub(crate) fn new(list: Vec<Limit>) -> Result<Limits, String> {
        let mut by_name: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        let mut sources = Vec::new();
        let mut pattern_limits = Vec::new();
        for (position, limit) in list.iter().enumerate() {
            match &limit.matcher {
                Matcher::Name(name) => by_name
                    .entry(name.as_bytes().to_vec())
                    .or_default()
                    .push(position),
                Matcher::Pattern(pattern) => {
                    sources.push(pattern.as_str());
                    pattern_limits.push(position);
                }
            }
        }
        let patterns = if sources.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(&sources)
                .size_limit(
                    PATTERN_SIZE_LIMIT
                        .saturating_mul(sources.len())
                        .max(64 << 20),
                )
                .dfa_size_limit(DFA_CACHE)
                .build()
                .map_err(|err| format!("the patterns together cannot be compiled: {err}"))?;
            Some(Arc::new(set))
        };
        Ok(Limits {
            list,
            by_name,
            patterns,
            pattern_limits,
        })
    }

    /// The positions of the limits whose name is `name`.
    pub(crate) fn named(&self, name: &[u8]) -> &[usize] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The positions of the limits whose pattern matches `cmdline`.
    pub(crate) fn matching(&self, cmdline: &[u8]) -> Vec<usize> {
        let Some(set) = &self.patterns else {
            return Vec::new();
        };
        set.matches(cmdline)
            .into_iter()
            .filter_map(|i| self.pattern_limits.get(i).copied())
            .collect()
    }
}

impl Deref for Limits {
    type Target = [Limit];

    fn deref(&self) -> &[Limit] {
        &self.list
    }
}

impl PartialEq for Limits {
    fn eq(&self, other: &Limits) -> bool {
        self.list == other.list
    }
}

impl Eq for Limits {}

#[cfg(test)]
impl From<Vec<Limit>> for Limits {
    fn from(list: Vec<Limit>) -> Limits {
        Limits::new(list).expect("test patterns compile")
    }
}
