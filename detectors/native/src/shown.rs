//! The fields an alert shows for a rule the screen decided to match, made as the Python engine
//! makes them (`detectors.sigma.compiled.make_match`): per positive atom of the rule, in rule
//! order, its display name and the first event value satisfying it, pairs equal to an earlier
//! one left out. Python then builds the match from them without flattening the event.
//!
//! "First" is Python's order: a field atom's values in document order (the values of one path),
//! a keyword atom's strings path by path, each path where it was first seen. The walk sees values
//! in document order; the two orders differ only when a path recurs (keys inside lists, dotted
//! keys, sibling keys folded alike), and keyword atoms are then left to Python. Whenever the screen
//! cannot give the exact value (a check it could not run on an earlier value, special atoms other
//! than null and "absent", values of different numeric types to compare) the rule's fields are
//! left to Python (`None`).

use crate::abi::SpecialKind;

/// An event value an alert may show, as Python's decoder makes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A string: its bytes in [`Values::arena`].
    Str(u32, u32),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Null,
}

/// The value the walk is at (strings are read from the text it scans).
#[derive(Clone, Copy, Debug)]
pub enum Scalar {
    Str,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    /// A number whose Python type the walk cannot tell (`-0`: orjson's int 0, serde's -0.0, as
    /// `-0.0` is): a value it satisfies is shown by Python.
    Unsure,
}

/// The shown values of one batch of messages.
#[derive(Default)]
pub struct Values {
    pub arena: String,
    pub values: Vec<Value>,
}

impl Values {
    pub fn text(&self, start: u32, end: u32) -> &str {
        &self.arena[start as usize..end as usize]
    }

    /// Python's `==` between two values, or None where the screen does not tell (numbers of
    /// different types: `True == 1 == 1.0`).
    fn equal(&self, a: Value, b: Value) -> Option<bool> {
        Some(match (a, b) {
            (Value::Str(s1, e1), Value::Str(s2, e2)) => self.text(s1, e1) == self.text(s2, e2),
            (Value::Str(..), _) | (_, Value::Str(..)) => false,
            (Value::Null, other) | (other, Value::Null) => other == Value::Null,
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::UInt(x), Value::UInt(y)) => x == y,
            (Value::Int(x), Value::UInt(y)) | (Value::UInt(y), Value::Int(x)) => {
                i128::from(x) == i128::from(y)
            }
            (Value::Float(x), Value::Float(y)) => x == y,
            (Value::Bool(x), Value::Bool(y)) => x == y,
            _ => return None,
        })
    }
}

/// What the plan says about shown fields.
#[derive(Default)]
pub struct Shown {
    /// Per rule position, its positive atoms in rule order (None: never decided to match).
    pub rules: Vec<Option<Vec<u32>>>,
    /// Per atom, the number of its display name in [`Shown::names`].
    pub display: Vec<u32>,
    /// The display names, each once.
    pub names: Vec<String>,
    /// Atoms some rule shows whose first satisfying value the walk records.
    pub tracked: Vec<bool>,
    /// Keyword atoms (every string of the event).
    pub keyword: Vec<bool>,
    /// Special atoms: their kind and, for `exists`, the wanted presence.
    pub special: Vec<Option<(SpecialKind, bool)>>,
}

impl Shown {
    /// From the plan's `displays` (per atom) and `shown` (per rule position); `keyword_atoms`
    /// and `specials` are the plan's. Errors for ids out of range.
    pub fn new(
        displays: Vec<String>,
        rules: Vec<Option<Vec<u32>>>,
        atom_count: usize,
        keyword_atoms: &[u32],
        specials: &[(u32, SpecialKind, bool)],
    ) -> Result<Shown, String> {
        if displays.len() != atom_count {
            return Err("displays do not fit the atoms".to_owned());
        }
        let mut names: Vec<String> = Vec::new();
        let mut numbers: std::collections::HashMap<String, u32> = Default::default();
        let display = displays
            .into_iter()
            .map(|name| {
                let next = names.len() as u32;
                *numbers.entry(name.clone()).or_insert_with(|| {
                    names.push(name);
                    next
                })
            })
            .collect();
        let mut tracked = vec![false; atom_count];
        for &atom in rules.iter().flatten().flatten() {
            *tracked
                .get_mut(atom as usize)
                .ok_or("atom id out of range")? = true;
        }
        let mut keyword = vec![false; atom_count];
        for &atom in keyword_atoms {
            keyword[atom as usize] = true;
        }
        let mut special = vec![None; atom_count];
        for &(atom, kind, want) in specials {
            special[atom as usize] = Some((kind, want));
            tracked[atom as usize] = false;
        }
        Ok(Shown {
            rules,
            display,
            names,
            tracked,
            keyword,
            special,
        })
    }

    pub fn any(&self) -> bool {
        self.rules.iter().any(Option::is_some)
    }

    /// The (display name, value) pairs of a rule decided to match, or None: Python makes them.
    /// `present(atom)`: the atom is hit, surely (special atoms are decided exactly or unknown).
    pub fn fields(
        &self,
        position: u32,
        present: impl Fn(u32) -> Option<bool>,
        firsts: &mut Firsts,
    ) -> Option<Vec<(u32, u32)>> {
        let atoms = self.rules.get(position as usize)?.as_ref()?;
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(atoms.len());
        for &atom in atoms {
            let value = match self.special[atom as usize] {
                Some((kind, want)) => {
                    if !present(atom)? {
                        continue; // false: not shown (Python's MISS)
                    }
                    match (kind, want) {
                        (SpecialKind::Null, _) => firsts.push(Value::Null),
                        (SpecialKind::Exists, false) => firsts.push(Value::Bool(false)),
                        _ => return None, // the field's first value, maybe an object: Python's
                    }
                }
                None => {
                    if !self.tracked[atom as usize] {
                        return None;
                    }
                    let (yes, unknown, value) = firsts.first(atom);
                    if yes == NONE && unknown == NONE {
                        continue; // no value satisfies it
                    }
                    if unknown < yes || (self.keyword[atom as usize] && firsts.reorder) {
                        return None;
                    }
                    value
                }
            };
            let display = self.display[atom as usize];
            let mut seen = false;
            for &(d, v) in &out {
                if d == display
                    && (v == value
                        || firsts.values.equal(
                            firsts.values.values[v as usize],
                            firsts.values.values[value as usize],
                        )?)
                {
                    seen = true;
                    break;
                }
            }
            if !seen {
                out.push((display, value));
            }
        }
        firsts.keep();
        Some(out)
    }
}

const NONE: u32 = u32::MAX;

/// Per event, the first value (in the walk's order) each tracked atom was found on, and the
/// first on which its check could not tell; the values are kept for the whole batch.
#[derive(Default)]
pub struct Firsts {
    pub active: bool,
    stamps: Vec<u32>,
    generation: u32,
    yes: Vec<u32>,
    unknown: Vec<u32>,
    value: Vec<u32>,
    /// The number of the value being scanned, and its index in `values` once stored.
    seq: u32,
    current: u32,
    /// Some path recurs (the walk's order of strings may not be Python's keyword order).
    pub reorder: bool,
    pub values: Values,
    /// `values` and its arena up to here belong to decisions made (the rest is one event's).
    kept: (usize, usize),
}

impl Firsts {
    pub fn new(atoms: usize, active: bool) -> Self {
        Firsts {
            active,
            stamps: vec![0; if active { atoms } else { 0 }],
            yes: vec![NONE; if active { atoms } else { 0 }],
            unknown: vec![NONE; if active { atoms } else { 0 }],
            value: vec![NONE; if active { atoms } else { 0 }],
            ..Default::default()
        }
    }

    /// Whether these tables serve a plan of `atoms` atoms (they are kept between calls).
    pub fn fits(&self, atoms: usize) -> bool {
        self.active && self.stamps.len() == atoms
    }

    /// The values the decisions of the calls so far name; the tables stay for the next call.
    pub fn take_values(&mut self) -> Values {
        self.kept = (0, 0);
        std::mem::take(&mut self.values)
    }

    /// A new event: what the last one stored without a decision keeping it is dropped.
    pub fn reset(&mut self) {
        self.reorder = false;
        if !self.active {
            return;
        }
        self.values.values.truncate(self.kept.0);
        self.values.arena.truncate(self.kept.1);
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
        self.seq = 0;
    }

    /// The event's values so far stay (a decision names them).
    fn keep(&mut self) {
        self.kept = (self.values.values.len(), self.values.arena.len());
    }

    fn push(&mut self, value: Value) -> u32 {
        self.values.values.push(value);
        (self.values.values.len() - 1) as u32
    }

    /// The next value of the event is scanned.
    #[inline]
    pub fn next_value(&mut self) {
        self.seq += 1;
        self.current = NONE;
    }

    /// An atom's verdict on the current value (`text`: the value's text, `scalar`: its kind).
    #[inline]
    pub fn note(&mut self, atom: u32, yes: bool, text: &str, scalar: Scalar, tracked: &[bool]) {
        let a = atom as usize;
        let yes = yes && !matches!(scalar, Scalar::Unsure);
        if !tracked[a] {
            return;
        }
        if self.stamps[a] != self.generation {
            self.stamps[a] = self.generation;
            self.yes[a] = NONE;
            self.unknown[a] = NONE;
        }
        if !yes {
            if self.unknown[a] == NONE {
                self.unknown[a] = self.seq;
            }
            return;
        }
        if self.yes[a] != NONE {
            return;
        }
        self.yes[a] = self.seq;
        if self.current == NONE {
            let value = match scalar {
                Scalar::Str => {
                    let start = self.values.arena.len() as u32;
                    self.values.arena.push_str(text);
                    Value::Str(start, self.values.arena.len() as u32)
                }
                Scalar::Int(v) => Value::Int(v),
                Scalar::UInt(v) => Value::UInt(v),
                Scalar::Float(v) => Value::Float(v),
                Scalar::Bool(v) => Value::Bool(v),
                Scalar::Unsure => return, // not a yes (see above)
            };
            self.current = self.push(value);
        }
        self.value[a] = self.current;
    }

    /// (first yes, first unknown, value of the first yes), numbers of values (NONE: none).
    fn first(&self, atom: u32) -> (u32, u32, u32) {
        let a = atom as usize;
        if self.stamps[a] != self.generation {
            return (NONE, NONE, NONE);
        }
        (self.yes[a], self.unknown[a], self.value[a])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_is_pythons_or_unknown() {
        let mut values = Values::default();
        values.arena.push_str("abab");
        let (a, b, c) = (Value::Str(0, 2), Value::Str(2, 4), Value::Str(0, 1));
        assert_eq!(values.equal(a, b), Some(true));
        assert_eq!(values.equal(a, c), Some(false));
        assert_eq!(values.equal(a, Value::Null), Some(false));
        assert_eq!(values.equal(Value::Null, Value::Null), Some(true));
        assert_eq!(values.equal(Value::Null, Value::Bool(false)), Some(false));
        assert_eq!(values.equal(Value::Int(1), Value::UInt(1)), Some(true));
        assert_eq!(
            values.equal(Value::Int(-1), Value::UInt(u64::MAX)),
            Some(false)
        );
        assert_eq!(
            values.equal(Value::Float(1.5), Value::Float(1.5)),
            Some(true)
        );
        assert_eq!(values.equal(Value::Bool(true), Value::Int(1)), None);
        assert_eq!(values.equal(Value::Float(1.0), Value::Int(1)), None);
    }

    #[test]
    fn the_first_value_counts_and_an_earlier_unknown_leaves_it_to_python() {
        let specials = [
            (3, SpecialKind::Null, false),
            (4, SpecialKind::Exists, true),
        ];
        let shown = Shown::new(
            vec!["a".into(), "a".into(), "".into(), "n".into(), "e".into()],
            vec![Some(vec![0, 1, 3]), Some(vec![2]), Some(vec![4]), None],
            5,
            &[2],
            &specials,
        )
        .expect("shown");
        assert_eq!(shown.names, vec!["a", "", "n", "e"]);
        let mut firsts = Firsts::new(5, true);
        firsts.reset();
        firsts.next_value();
        firsts.note(0, true, "x", Scalar::Str, &shown.tracked);
        firsts.note(1, true, "x", Scalar::Str, &shown.tracked);
        firsts.next_value();
        firsts.note(0, true, "y", Scalar::Str, &shown.tracked);
        firsts.note(2, false, "y", Scalar::Str, &shown.tracked);
        firsts.next_value();
        firsts.note(2, true, "z", Scalar::Str, &shown.tracked);
        firsts.next_value();
        firsts.note(1, true, "0", Scalar::Unsure, &shown.tracked); // after its first: no matter
        let null_is_hit = |atom| Some(atom == 3);
        // atoms 0 and 1 show the same pair once; the null atom shows None
        assert_eq!(
            shown.fields(0, null_is_hit, &mut firsts),
            Some(vec![(0, 0), (2, 2)]) // value 1 is "z", atom 2's
        );
        assert_eq!(firsts.values.values[2], Value::Null);
        assert_eq!(shown.fields(1, null_is_hit, &mut firsts), None); // "y" may satisfy atom 2
        assert_eq!(shown.fields(2, |_| Some(true), &mut firsts), None); // exists: Python's
        assert_eq!(shown.fields(2, |_| Some(false), &mut firsts), Some(vec![]));
        assert_eq!(shown.fields(3, null_is_hit, &mut firsts), None);
        // what a decision keeps stays; the next event starts afresh
        firsts.reset();
        assert_eq!(firsts.values.text(0, 2), "xz");
        assert_eq!(firsts.first(0), (NONE, NONE, NONE));
        firsts.next_value();
        firsts.note(1, true, "w", Scalar::Str, &shown.tracked);
        firsts.reset();
        assert_eq!(firsts.values.arena, "xz");
    }

    #[test]
    fn keyword_atoms_are_left_to_python_when_paths_recur() {
        let shown = Shown::new(vec!["".into()], vec![Some(vec![0])], 1, &[0], &[]).expect("shown");
        let mut firsts = Firsts::new(1, true);
        firsts.reset();
        firsts.next_value();
        firsts.note(0, true, "k", Scalar::Str, &shown.tracked);
        assert!(shown.fields(0, |_| Some(true), &mut firsts).is_some());
        firsts.reorder = true;
        assert!(shown.fields(0, |_| Some(true), &mut firsts).is_none());
    }
}
