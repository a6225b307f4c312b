//! One route's indexes, mirrored from the Python `RuleIndex`, and the per-value scan over them.
//!
//! The scan may report more atoms than the Python engine would (regular expressions and
//! other checks it does not run count as hits), never fewer: the screen is conservative.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use crate::glob;

/// How an indexed atom is confirmed once its key was found.
pub enum Check {
    /// Sigma string equality: kind as `detectors.sigma.text.Kind`, literal (lower-cased unless cased).
    Text {
        kind: u8,
        literal: Vec<u8>,
        cased: bool,
        glob: Vec<glob::Token>,
    },
    /// An RE2 pattern; `dollar`: also try the value without its final newline, as the
    /// Python engine does.
    Regex { regex: Regex, dollar: bool },
    /// Anything the screen does not evaluate: counted as satisfied.
    Assume,
}

impl Check {
    /// The screen's copy of an RE2 regex, or `Assume` when Rust's syntax might read it otherwise.
    pub fn regex(source: &str, dollar: bool) -> Check {
        // RE2 reads "{,n}" as literal text, Rust as a repetition
        if source.contains("{,") {
            return Check::Assume;
        }
        // routes share most of their regexes (the all-rules route has every one): compile each once
        static COMPILED: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
        let mut compiled = COMPILED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if compiled.len() >= 50_000 {
            compiled.clear(); // reloads of edited rules must not grow it forever
        }
        let regex = compiled
            .entry(source.to_owned())
            .or_insert_with(|| RegexBuilder::new(source).size_limit(8 << 20).build().ok());
        match regex {
            Some(regex) => Check::Regex {
                regex: regex.clone(),
                dollar,
            },
            None => Check::Assume,
        }
    }
}

impl Check {
    fn holds(&self, text: &[u8], folded: &[u8]) -> bool {
        match self {
            Check::Assume => true,
            // RE2's \s and \S leave out the vertical tab, Rust's do not: assume on such values
            Check::Regex { regex, dollar } => {
                text.contains(&0x0b)
                    || regex.is_match(text)
                    || (*dollar
                        && text.last() == Some(&b'\n')
                        && regex.is_match(&text[..text.len() - 1]))
            }
            Check::Text {
                kind,
                literal,
                cased,
                glob,
            } => {
                let value = if *cased { text } else { folded };
                match kind {
                    0 => value == literal.as_slice(),
                    1 => value.starts_with(literal),
                    2 => value.ends_with(literal),
                    3 => contains(value, literal),
                    5 => true,
                    // the backtracking glob is O(value x pattern): past a budget, assume (Python's RE2 is linear)
                    _ if value.len().saturating_mul(glob.len()) > GLOB_BUDGET => true,
                    _ => glob::matches(glob, value),
                }
            }
        }
    }
}

const GLOB_BUDGET: usize = 1 << 20;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// FNV-1a: field paths and values are short, and SipHash's setup dominates for them.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

pub struct Key {
    pub text: Vec<u8>,
    pub anywhere: Vec<u32>,
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
    pub verify: Vec<u32>,
}

/// The atoms testing one field (or, for keywords, every string).
pub struct FieldPlan {
    pub exact: FastMap<Vec<u8>, (Vec<u32>, Vec<u32>)>,
    pub every: Vec<u32>,
    pub keys: Vec<Key>,
    pub automaton: Option<AhoCorasick>,
    /// Where this plan's keys start in the route-wide numbering of keys (for [`Hits`]).
    pub key_base: usize,
}

impl FieldPlan {
    pub fn new(
        exact: FastMap<Vec<u8>, (Vec<u32>, Vec<u32>)>,
        every: Vec<u32>,
        keys: Vec<Key>,
        key_base: usize,
    ) -> Result<Self, aho_corasick::BuildError> {
        let automaton = if keys.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(keys.iter().map(|k| k.text.as_slice()))?,
            )
        };
        Ok(FieldPlan {
            exact,
            every,
            keys,
            automaton,
            key_base,
        })
    }
}

/// Per-event hit set: an atom is hit when its stamp equals the event's generation.
pub struct Hits {
    stamps: Vec<u32>,
    generation: u32,
    pub list: Vec<u32>,
    /// Keys already handled for the current value (a key can occur several times in it).
    seen_keys: Vec<u32>,
    value: u32,
}

impl Hits {
    pub fn new(atoms: usize, keys: usize) -> Self {
        Hits {
            stamps: vec![0; atoms],
            generation: 0,
            list: Vec::new(),
            seen_keys: vec![0; keys],
            value: 0,
        }
    }

    pub fn reset(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
        self.list.clear();
    }

    fn next_value(&mut self) -> u32 {
        self.value = self.value.wrapping_add(1);
        if self.value == 0 {
            self.seen_keys.iter_mut().for_each(|s| *s = 0);
            self.value = 1;
        }
        self.value
    }

    #[inline]
    pub fn has(&self, atom: u32) -> bool {
        self.stamps[atom as usize] == self.generation
    }

    #[inline]
    fn set(&mut self, atom: u32) {
        let slot = &mut self.stamps[atom as usize];
        if *slot != self.generation {
            *slot = self.generation;
            self.list.push(atom);
        }
    }
}

pub struct Plan {
    pub fields: FastMap<String, FieldPlan>,
    pub keywords: Option<FieldPlan>,
    /// By atom; `None`: decided by its key alone.
    pub checks: Vec<Option<Check>>,
    /// Atom -> positions of the rules whose primary trigger clause holds it.
    pub triggers: Vec<Vec<u32>>,
    /// Position -> the rule's other trigger clauses.
    pub rest: Vec<Vec<Vec<u32>>>,
    /// Atoms the scan can report; an atom of a clause outside it counts as satisfied.
    pub indexed: Vec<bool>,
    /// Some rule is a candidate on every event (no trigger, or a trigger the scan cannot see).
    pub always: bool,
    pub atom_count: usize,
    pub key_count: usize,
}

impl Plan {
    fn check(&self, atom: u32, text: &[u8], folded: &[u8]) -> bool {
        self.checks[atom as usize]
            .as_ref()
            .is_none_or(|c| c.holds(text, folded))
    }

    /// Record the atoms of `field` that a value (ASCII `text`, lower-cased `folded`) satisfies.
    pub fn scan(&self, field: &FieldPlan, text: &[u8], folded: &[u8], hits: &mut Hits) {
        for &atom in &field.every {
            if !hits.has(atom) && self.check(atom, text, folded) {
                hits.set(atom);
            }
        }
        if let Some((plain, verify)) = field.exact.get(folded) {
            for &atom in plain {
                hits.set(atom);
            }
            for &atom in verify {
                if !hits.has(atom) && self.check(atom, text, folded) {
                    hits.set(atom);
                }
            }
        }
        let Some(automaton) = &field.automaton else {
            return;
        };
        let value = hits.next_value();
        for found in automaton.find_overlapping_iter(folded) {
            let index = found.pattern().as_usize();
            let seen = &mut hits.seen_keys[field.key_base + index];
            if *seen == value {
                continue;
            }
            *seen = value;
            let key = &field.keys[index];
            for &atom in &key.anywhere {
                hits.set(atom);
            }
            if !key.prefix.is_empty() && folded.starts_with(&key.text) {
                for &atom in &key.prefix {
                    hits.set(atom);
                }
            }
            if !key.suffix.is_empty() && folded.ends_with(&key.text) {
                for &atom in &key.suffix {
                    hits.set(atom);
                }
            }
            for &atom in &key.verify {
                if !hits.has(atom) && self.check(atom, text, folded) {
                    hits.set(atom);
                }
            }
        }
    }

    /// Whether some rule may match given the hits (its trigger clauses all have a hit).
    pub fn candidate(&self, hits: &Hits) -> bool {
        if self.always {
            return true;
        }
        for &atom in &hits.list {
            for &position in &self.triggers[atom as usize] {
                let satisfied = self.rest[position as usize].iter().all(|clause| {
                    clause
                        .iter()
                        .any(|&a| !self.indexed[a as usize] || hits.has(a))
                });
                if satisfied {
                    return true;
                }
            }
        }
        false
    }
}
