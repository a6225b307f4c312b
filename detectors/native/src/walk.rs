//! One pass over a raw JSON message: Sigma field paths as the Python engine flattens them
//! (lower-cased keys joined by dots, list elements under their list's path), each scalar
//! scanned against its field's plan, plus the event-time fields in their exact spelling
//! (`detectors.event` also reads other cases, lists and mixed flat/nested keys: those make the
//! event unsure).
//!
//! Whatever the walk cannot decide the way Python would (keys and scanned values Python 3.11
//! may case-fold otherwise, unusual timestamps, messages Python may reject) makes the event
//! `unsure`: it then goes the Python way. Numbers are parsed exactly (correctly rounded, as
//! orjson does) and read as the text Python gives them (`detectors.sigma.text.as_text`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use std::hash::Hasher;

use crate::plan::{FieldPlan, FxHasher, Hits, Plan, Slot, Tried, ValueCache, Verdict, CACHED_TEXT};
use crate::shown::{Firsts, Scalar};
use crate::time::{self, Read};

const BIG: f64 = 9.2e18;

/// A time field's value, read where it is found (numbers beyond an exact integer go to Python).
fn number_read(value: f64) -> Read {
    if value.abs() < BIG {
        time::number(value)
    } else {
        Read::Unsure
    }
}

pub struct Walk<'p> {
    plan: &'p Plan,
    time_fields: &'p [String],
    max_depth: usize,
    pub hits: Hits,
    pub tried: Tried,
    pub unsure: bool,
    path: String,
    raw: String,
    /// Containers entered; the top-level object is depth 1.
    depth: usize,
    /// Lists entered: nested time lookup does not go through lists.
    lists: usize,
    /// Keys on the raw path that contain a dot (nested time lookup splits on dots).
    dotted: usize,
    pending: Vec<(usize, bool)>,
    flat: Vec<Option<Read>>,
    nested: Vec<Option<Read>>,
    /// Per time field and parent level, times that parent was seen: twice means a duplicated
    /// key, which Python resolves by keeping the last one (unsure).
    parents: Vec<Vec<u32>>,
    number: String,
    folded: Vec<u8>,
    /// What the event holds at the paths special atoms read, and the current key's slot.
    slots: Vec<Slot>,
    slot: Option<usize>,
    /// The scan plan of the current key's path (looked up once per key, not per value).
    field: Option<&'p FieldPlan>,
    /// Strict mode: hashes of the keys of the objects being walked (duplicates are unsure).
    keys: Vec<u64>,
    cache: ValueCache,
    verdicts: Vec<(u32, Verdict)>,
    /// Strict mode with shown fields: hashes of the folded keys of the objects being walked
    /// (sibling keys folded alike make a path recur).
    folded_keys: Vec<u64>,
    /// The first values of the atoms matches show (see [`crate::shown`]), when tracked.
    pub firsts: Firsts,
    /// The kind of the value being scanned.
    scalar: Scalar,
}

/// The Unicode version of the Python whose case folding [`stable_case`] assumes (3.11's):
/// `tests/unit/detectors/sigma/test_screen_abi.py` checks it is `unicodedata.unidata_version`.
pub const PYTHON_UNICODE: &str = "14.0.0";

/// Below this code point (Latin, Greek, Cyrillic, Armenian) lower-casing has been the same in
/// every Unicode version since long before Python 3.11's.
const STABLE_CASE: u32 = 0x0590;

/// Whether Rust's `to_lowercase` folds `text` as Python 3.11's `str.lower` (Unicode 14) does:
/// keys and values alike.
///
/// Rust's tables are newer. Case mappings are never withdrawn, so a later character that Rust
/// leaves as it is, Python leaves too; one that Rust lower-cases may be uncased for Python (55
/// characters with Rust 1.95, e.g. U+A7CB, U+10D50). And a capital sigma lower-cases by its
/// neighbours (final or not), which later characters' casing may change.
fn stable_case(text: &str) -> bool {
    let mut sigma = false;
    let mut later = false;
    for c in text.chars() {
        if (c as u32) < STABLE_CASE {
            sigma |= c == '\u{3a3}';
            continue;
        }
        later = true;
        let mut lower = c.to_lowercase();
        if lower.next() != Some(c) || lower.next().is_some() {
            return false;
        }
    }
    !(sigma && later)
}

fn key_hash(key: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key.as_bytes());
    hasher.finish()
}

/// What a key changed in the walk's position, restored when its value is done.
#[derive(Clone, Copy)]
struct Saved<'p> {
    path: usize,
    raw: usize,
    dotted: usize,
    slot: Option<usize>,
    field: Option<&'p FieldPlan>,
}

#[derive(Debug)]
pub struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stop")
    }
}

impl<'p> Walk<'p> {
    pub fn new(
        plan: &'p Plan,
        time_fields: &'p [String],
        max_depth: usize,
        cache: ValueCache,
    ) -> Self {
        Walk {
            plan,
            time_fields,
            max_depth,
            hits: Hits::new(plan.atom_count, plan.key_count),
            tried: Tried::new(plan.rest.len()),
            unsure: false,
            path: String::new(),
            raw: String::new(),
            depth: 0,
            lists: 0,
            dotted: 0,
            pending: Vec::new(),
            flat: vec![None; time_fields.len()],
            nested: vec![None; time_fields.len()],
            parents: time_fields
                .iter()
                .map(|n| vec![0; n.matches('.').count()])
                .collect(),
            number: String::new(),
            folded: Vec::new(),
            slots: vec![Slot::default(); plan.texts.len()],
            slot: None,
            field: None,
            keys: Vec::new(),
            cache,
            verdicts: Vec::new(),
            folded_keys: Vec::new(),
            firsts: Firsts::default(),
            scalar: Scalar::Str,
        }
    }

    /// Record, per event, the first values of the atoms the matches of decided rules show, in
    /// `firsts` (the tables of an earlier call, or new ones).
    pub fn track_shown(&mut self, firsts: Firsts) {
        if self.plan.shown.any() {
            self.firsts = if firsts.fits(self.plan.atom_count) {
                firsts
            } else {
                Firsts::new(self.plan.atom_count, true)
            };
        }
    }

    /// The value cache, the shown fields' tables (for the next call) and the shown values the
    /// batch's decisions name.
    pub fn into_parts(mut self) -> (ValueCache, Firsts, crate::shown::Values) {
        let values = self.firsts.take_values();
        (self.cache, self.firsts, values)
    }

    /// Walk one message; false when it is not one JSON object Python would read the same way.
    pub fn run(&mut self, data: &[u8]) -> bool {
        self.hits.reset();
        self.unsure = false;
        self.path.clear();
        self.raw.clear();
        self.depth = 0;
        self.lists = 0;
        self.dotted = 0;
        self.pending.clear();
        self.flat.iter_mut().for_each(|s| *s = None);
        self.nested.iter_mut().for_each(|s| *s = None);
        self.parents.iter_mut().flatten().for_each(|s| *s = 0);
        self.slots.iter_mut().for_each(Slot::clear);
        self.slot = None;
        self.field = None;
        self.keys.clear();
        self.folded_keys.clear();
        self.firsts.reset();
        let mut reader = serde_json::Deserializer::from_slice(data);
        if (Root { walk: self }).deserialize(&mut reader).is_err() || reader.end().is_err() {
            return false;
        }
        if self.unsure || self.parents.iter().flatten().any(|&n| n > 1) {
            return false;
        }
        self.plan.evaluate_special(&self.slots, &mut self.hits);
        true
    }

    /// Event time from the time fields, in order; `Err` when a value needs Python's parser.
    pub fn time(&self) -> Result<Option<f64>, ()> {
        for i in 0..self.time_fields.len() {
            // a nested value is only ever recorded for a dotted name
            let Some(read) = self.flat[i].or(self.nested[i]) else {
                continue;
            };
            match read {
                Read::At(ts) => return Ok(Some(ts)),
                Read::Not => continue,
                Read::Unsure => return Err(()),
            }
        }
        Ok(None)
    }

    fn key(&mut self, key: &str) -> Saved<'p> {
        let saved = Saved {
            path: self.path.len(),
            raw: self.raw.len(),
            dotted: self.dotted,
            slot: self.slot,
            field: self.field,
        };
        if !self.path.is_empty() {
            self.path.push('.');
        }
        if self.plan.cased_fields {
            self.path.push_str(key);
        } else if key.is_ascii() {
            let start = self.path.len();
            self.path.push_str(key);
            self.path[start..].make_ascii_lowercase();
        } else {
            self.path.push_str(&key.to_lowercase());
        }
        self.pending.clear();
        if self.firsts.active && (self.lists > 0 || key.contains('.')) {
            self.firsts.reorder = true; // a path that may recur: strings out of Python's order
        }
        let found = self.plan.fields.get(self.path.as_str());
        self.field = found.filter(|field| field.scanned);
        self.slot = found.and_then(|field| field.slot);
        if let Some(slot) = self.slot {
            self.slots[slot].present = true;
        }
        if self.time_fields.is_empty() {
            return saved;
        }
        if self.time_elsewhere(key) {
            self.unsure = true;
        }
        if self.lists > 0 {
            return saved;
        }
        if self.depth == 1 {
            for (i, name) in self.time_fields.iter().enumerate() {
                if name == key {
                    self.pending.push((i, true));
                }
            }
        }
        if !self.raw.is_empty() {
            self.raw.push('.');
        }
        self.raw.push_str(key);
        if key.contains('.') {
            self.dotted += 1;
        }
        if self.dotted == 0 {
            for (i, name) in self.time_fields.iter().enumerate() {
                if self.depth >= 2 && *name == self.raw {
                    self.pending.push((i, false));
                } else if name.len() > self.raw.len()
                    && name.starts_with(self.raw.as_str())
                    && name.as_bytes()[self.raw.len()] == b'.'
                {
                    self.parents[i][self.depth - 1] += 1;
                }
            }
        }
        saved
    }

    /// True when the key leads (case-insensitively, as `detectors.event.get` reads names) to a
    /// time field by a way this walk does not read itself: another case, through a list, or
    /// through a dotted key below the top level. Python then reads the time.
    fn time_elsewhere(&self, key: &str) -> bool {
        let path = self.path.as_bytes();
        for name in self.time_fields {
            let name = name.as_bytes();
            let related = if name.len() == path.len() {
                name.eq_ignore_ascii_case(path)
            } else {
                name.len() > path.len()
                    && name[path.len()] == b'.'
                    && name[..path.len()].eq_ignore_ascii_case(path)
            };
            if !related {
                continue;
            }
            let key = key.as_bytes();
            let exact = self.lists == 0
                && if self.depth == 1 {
                    name.starts_with(key) && (name.len() == key.len() || name[key.len()] == b'.')
                } else {
                    let raw = self.raw.as_bytes();
                    self.dotted == 0
                        && !key.contains(&b'.')
                        && name.len() > raw.len() + key.len()
                        && name.starts_with(raw)
                        && name[raw.len()] == b'.'
                        && name[raw.len() + 1..].starts_with(key)
                        && (name.len() == raw.len() + 1 + key.len()
                            || name[raw.len() + 1 + key.len()] == b'.')
                };
            if !exact {
                return true;
            }
        }
        false
    }

    fn unkey(&mut self, saved: Saved<'p>) {
        self.dotted = saved.dotted;
        self.path.truncate(saved.path);
        self.raw.truncate(saved.raw);
        self.slot = saved.slot;
        self.field = saved.field;
        self.pending.clear();
    }

    /// A non-null value at the current key (its text when it has one Python reads the same way).
    fn seen(&mut self, text: Option<&str>) {
        let Some(slot) = self.slot else { return };
        let state = &mut self.slots[slot];
        state.non_null = true;
        if self.plan.texts[slot] {
            match text {
                Some(text) if text.is_ascii() => {
                    state.texts.push(text.as_bytes().to_ascii_lowercase())
                }
                _ => state.unsure = true,
            }
        }
    }

    fn stamp(&mut self, value: Option<Read>) {
        for &(i, flat) in &self.pending {
            if flat {
                self.flat[i] = value;
            } else {
                self.nested[i] = value;
            }
        }
        self.pending.clear();
    }

    fn enter<E: de::Error>(&mut self, list: bool) -> Result<(), E> {
        if !self.pending.is_empty() {
            // an object is not a time; a list is read by its first non-null element (Python's)
            self.stamp(Some(if list { Read::Unsure } else { Read::Not }));
        }
        self.depth += 1;
        if list {
            self.lists += 1;
        }
        if self.depth > self.max_depth {
            return Err(E::custom(Stop)); // Python rejects it: let Python say so
        }
        if self.plan.strict && self.depth > self.plan.strict_depth {
            self.unsure = true;
            return Err(E::custom(Stop));
        }
        Ok(())
    }

    fn text<E: de::Error>(&mut self, text: &str, string: bool) -> Result<(), E> {
        let plan = self.plan;
        let field = self.field;
        let keyword = if string { plan.keywords.as_ref() } else { None };
        if field.is_none() && keyword.is_none() {
            return Ok(());
        }
        let bytes = text.as_bytes();
        let short = bytes.len() <= CACHED_TEXT;
        let shown = self.firsts.active;
        let scalar = self.scalar;
        if shown {
            self.firsts.next_value();
        }
        // Some(ascii) once the text is folded: only on a cache miss (an entry's text folded before)
        let mut folded_ascii: Option<bool> = None;
        for plan_of_value in [field, keyword].into_iter().flatten() {
            let cached = short && self.cache.worth(plan_of_value.id);
            let hash = if cached {
                ValueCache::hash(plan_of_value.id, bytes)
            } else {
                0
            };
            if cached {
                if let Some(verdicts) = self.cache.get(hash, plan_of_value.id, bytes) {
                    verdicts.iter().for_each(|&(a, v)| self.hits.record(a, v));
                    if shown {
                        for &(a, v) in verdicts {
                            self.firsts.note(
                                a,
                                v == Verdict::Yes,
                                text,
                                scalar,
                                &plan.shown.tracked,
                            );
                        }
                    }
                    continue;
                }
            }
            let ascii = match folded_ascii {
                Some(ascii) => ascii,
                None => *folded_ascii.insert(self.fold(text)?),
            };
            let mut verdicts = std::mem::take(&mut self.verdicts);
            plan.verdicts(
                plan_of_value,
                bytes,
                &self.folded,
                ascii,
                &mut self.hits,
                &mut verdicts,
            );
            verdicts.iter().for_each(|&(a, v)| self.hits.record(a, v));
            if shown {
                for &(a, v) in &verdicts {
                    self.firsts
                        .note(a, v == Verdict::Yes, text, scalar, &plan.shown.tracked);
                }
            }
            if cached {
                self.cache.insert(hash, plan_of_value.id, bytes, &verdicts);
            }
            self.verdicts = verdicts;
        }
        Ok(())
    }

    /// Lower-case `text` into `self.folded` as Python does; returns whether it is ASCII.
    /// Characters whose case folding may differ between Unicode versions stop the walk.
    fn fold<E: de::Error>(&mut self, text: &str) -> Result<bool, E> {
        let ascii = text.is_ascii();
        self.folded.clear();
        if ascii {
            self.folded.extend_from_slice(text.as_bytes());
            self.folded.make_ascii_lowercase();
        } else if stable_case(text) {
            self.folded
                .extend_from_slice(text.to_lowercase().as_bytes());
        } else {
            self.unsure = true; // case folding that may differ between Unicode versions
            return Err(E::custom(Stop));
        }
        Ok(ascii)
    }

    fn integer<E: de::Error>(
        &mut self,
        value: impl fmt::Display + Copy,
        as_float: f64,
    ) -> Result<(), E> {
        if !self.pending.is_empty() {
            self.stamp(Some(number_read(as_float)));
        }
        let scanned = self.field.is_some();
        if scanned || self.slot.is_some() {
            use fmt::Write;
            let mut number = std::mem::take(&mut self.number);
            number.clear();
            let result = if write!(number, "{value}").is_err() {
                self.unsure = true; // no text for it: never compare a partial one
                Err(E::custom(Stop))
            } else {
                self.seen(Some(&number));
                if scanned {
                    self.text(&number, false)
                } else {
                    Ok(())
                }
            };
            self.number = number;
            return result;
        }
        Ok(())
    }
}

/// An integral float's exact decimal digits (Rust's fixed-precision formatting is exact).
#[derive(Clone, Copy)]
struct Exact(f64);

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.0}", self.0)
    }
}

/// Python's `repr` of a finite float: the shortest digits that read back as the same float
/// (see [`shortest`]), laid out as Python does: positional when the decimal point falls between
/// 4 places before the first digit and 16 after it, else `d.ddde-XX`.
#[derive(Clone, Copy)]
struct PyRepr(f64);

impl fmt::Display for PyRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (digits, exponent) = shortest(self.0.abs()).ok_or(fmt::Error)?;
        let digits = digits.as_str();
        let (first, rest) = digits.split_at(1);
        let point = exponent + 1; // digits before the decimal point
        if self.0.is_sign_negative() {
            f.write_str("-")?;
        }
        if !(-4 < point && point <= 16) {
            f.write_str(first)?;
            if !rest.is_empty() {
                write!(f, ".{rest}")?;
            }
            let sign = if exponent < 0 { '-' } else { '+' };
            return write!(f, "e{sign}{:02}", exponent.unsigned_abs());
        }
        if point <= 0 {
            f.write_str("0.")?;
            for _ in 0..point.unsigned_abs() {
                f.write_str("0")?;
            }
            return f.write_str(digits);
        }
        let point = point as usize;
        if point >= digits.len() {
            f.write_str(digits)?;
            for _ in digits.len()..point {
                f.write_str("0")?;
            }
            return f.write_str(".0");
        }
        write!(f, "{}.{}", &digits[..point], &digits[point..])
    }
}

/// A short text on the stack (a float's digits): no allocation per number.
struct Digits {
    bytes: [u8; 32],
    len: usize,
}

impl Digits {
    fn new() -> Self {
        Digits {
            bytes: [0; 32],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // only ASCII is ever written
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for Digits {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The shortest decimal digits that read back as `value` (positive, finite) and the exponent of
/// the first one, as Python's `repr` (David Gay's `dtoa`, mode 0) picks them. Rust's `{:e}`
/// gives the same digits but where two candidates are exactly as near: Python takes the even
/// last digit (602363986346939.25 is `602363986346939.2`), Rust the upper one.
fn shortest(value: f64) -> Option<(Digits, i32)> {
    use fmt::Write;
    let mut scientific = Digits::new();
    write!(scientific, "{value:e}").ok()?;
    let (mantissa, exponent) = scientific.as_str().split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let mut digits = Digits::new();
    for part in mantissa.split('.') {
        digits.write_str(part).ok()?;
    }
    let candidate: u64 = digits.as_str().parse().ok()?;
    let scale = exponent - digits.len as i32; // of one more digit than the candidate has
    if candidate % 2 == 1 {
        for other in [candidate - 1, candidate + 1] {
            // a neighbour ending in 0 has fewer digits: it would have been the shortest
            if other % 10 == 0 || !exactly(value, candidate.min(other) * 10 + 5, scale) {
                continue;
            }
            if format!("{other}e{}", scale + 1).parse::<f64>().ok() == Some(value) {
                let mut even = Digits::new();
                write!(even, "{other}").ok()?;
                return Some((even, exponent));
            }
        }
    }
    Some((digits, exponent))
}

/// Whether `value` is exactly `digits * 10^scale` (a tie between two shortest candidates).
fn exactly(value: f64, digits: u64, scale: i32) -> bool {
    if scale >= 0 {
        return false; // an integer: the value is a fraction here
    }
    let places = scale.unsigned_abs();
    // digits / 10^places is a double only if 5^places divides it (digits < 10^19 < 5^28)
    let Some(fives) = 5u64.checked_pow(places) else {
        return false;
    };
    if !digits.is_multiple_of(fives) {
        return false;
    }
    let odd = digits / fives;
    let as_float = odd as f64;
    as_float as u64 == odd && as_float / 2f64.powi(places as i32) == value
}

struct Root<'a, 'p> {
    walk: &'a mut Walk<'p>,
}

impl<'de> DeserializeSeed<'de> for Root<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(RootVisitor { walk: self.walk })
    }
}

struct RootVisitor<'a, 'p> {
    walk: &'a mut Walk<'p>,
}

impl<'de> Visitor<'de> for RootVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Node { walk: self.walk }.visit_map(map)
    }
}

struct Node<'a, 'p> {
    walk: &'a mut Walk<'p>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if !self.walk.pending.is_empty() {
            self.walk.stamp(None);
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if !self.walk.pending.is_empty() {
            self.walk.stamp(Some(Read::Not));
        }
        let text = if v { "true" } else { "false" };
        self.walk.scalar = Scalar::Bool(v);
        self.walk.seen(Some(text));
        self.walk.text(text, false)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.walk.scalar = Scalar::Int(v);
        self.walk.integer(v, v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.walk.scalar = Scalar::UInt(v);
        self.walk.integer(v, v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let walk = self.walk;
        // `-0` is orjson's int 0 and `-0.0` a float: serde_json reads both as -0.0
        walk.scalar = if v == 0.0 && v.is_sign_negative() {
            Scalar::Unsure
        } else {
            Scalar::Float(v)
        };
        // serde_json's `float_roundtrip` parses exactly (correctly rounded), as orjson does
        if v.is_finite() && v.fract() == 0.0 {
            // Python's text of an integral float is `str(int(value))`: its exact digits
            return if v.abs() < BIG {
                walk.integer(v as i64, v)
            } else {
                walk.integer(Exact(v), v)
            };
        }
        if v.is_finite() {
            return walk.integer(PyRepr(v), v); // a fraction: Python's text is its `repr`
        }
        if !walk.pending.is_empty() {
            walk.stamp(Some(number_read(v)));
        }
        walk.seen(None);
        if walk.field.is_some() {
            walk.unsure = true; // not a JSON number orjson reads
            return Err(E::custom(Stop));
        }
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.visit_str(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let walk = self.walk;
        if !walk.pending.is_empty() {
            walk.stamp(Some(time::string(v)));
        }
        walk.seen(Some(v));
        walk.scalar = Scalar::Str;
        walk.text(v, true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let walk = self.walk;
        walk.enter::<A::Error>(true)?;
        while seq.next_element_seed(Node { walk: &mut *walk })?.is_some() {}
        walk.depth -= 1;
        walk.lists -= 1;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.walk;
        if let Some(slot) = walk.slot {
            walk.slots[slot].non_null = true; // an object: a non-null value without text
        }
        walk.enter::<A::Error>(false)?;
        let strict = walk.plan.strict;
        // keys matter for fields and special atoms, not for keywords (any string value)
        let paths = !walk.plan.fields.is_empty() || !walk.plan.slots.is_empty();
        let start = walk.keys.len();
        let folded_start = walk.folded_keys.len();
        // sibling keys folded alike recur a path: only strict screens decide (and show) matches
        let folds = strict && walk.firsts.active && !walk.plan.cased_fields;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let mut hash = 0;
            if strict {
                // Python keeps the last of duplicated keys; exact answers cannot be given
                hash = key_hash(&key);
                if walk.keys[start..].contains(&hash) {
                    walk.unsure = true;
                    return Err(de::Error::custom(Stop));
                }
                walk.keys.push(hash);
            }
            if paths && !key.is_ascii() && !stable_case(&key) {
                walk.unsure = true; // Python may fold this key otherwise (see `stable_case`)
                return Err(de::Error::custom(Stop));
            }
            let saved = walk.key(&key);
            if folds {
                let name = &walk.path[if saved.path == 0 { 0 } else { saved.path + 1 }..];
                let folded = if name == key { hash } else { key_hash(name) };
                if walk.folded_keys[folded_start..].contains(&folded) {
                    walk.firsts.reorder = true;
                }
                walk.folded_keys.push(folded);
            }
            map.next_value_seed(Node { walk: &mut *walk })?;
            walk.unkey(saved);
        }
        walk.keys.truncate(start);
        walk.folded_keys.truncate(folded_start);
        walk.depth -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::FastMap;

    /// A plan with one field whose exact value is atom 0.
    fn plan(field: &str, value: &str) -> Plan {
        let mut exact = FastMap::default();
        exact.insert(value.as_bytes().to_vec(), (vec![0], vec![]));
        let mut fields = FastMap::default();
        fields.insert(
            field.to_owned(),
            FieldPlan::new(exact, vec![], vec![], 0, 0),
        );
        Plan {
            fields,
            keywords: None,
            checks: vec![None],
            triggers: vec![vec![0]],
            rest: vec![vec![]],
            always: false,
            undecided: vec![],
            programs: vec![None],
            untriggered: vec![],
            special: vec![],
            slots: FastMap::default(),
            texts: vec![],
            strict: false,
            strict_depth: 30,
            cased_fields: false,
            atom_count: 1,
            key_count: 0,
            shown: Default::default(),
        }
    }

    /// Whether the walk reads the message and finds the field's value (None: it is unsure).
    fn finds(plan: &Plan, message: &str) -> Option<bool> {
        let mut walk = Walk::new(plan, &[], 64, ValueCache::default());
        walk.run(message.as_bytes()).then(|| walk.hits.has(0))
    }

    #[test]
    fn floats_are_parsed_exactly_and_integral_ones_read_as_python_reads_them() {
        for (number, text) in [
            ("4.4102019666278236e+18", "4410201966627823616"),
            ("9007199254740993.0", "9007199254740992"),
            ("9.2e18", "9200000000000000000"),
            ("1e23", "99999999999999991611392"),
            ("1e22", "10000000000000000000000"),
            ("-1.1805916207174113e21", "-1180591620717411303424"),
            ("18446744073709551616", "18446744073709551616"),
            ("-0.0", "0"),
            ("1e-400", "0"),
        ] {
            let plan = plan("n", text);
            assert_eq!(
                finds(&plan, &format!("{{\"n\": {number}}}")),
                Some(true),
                "{number}"
            );
        }
        for (number, text) in [
            ("1.5", "1.5"),
            ("-0.25", "-0.25"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("-1.5e-7", "-1.5e-07"),
            ("1234567890123456.5", "1234567890123456.5"),
            ("0.1e1", "1"),
            ("5e-324", "5e-324"),
            ("2.2250738585072014e-308", "2.2250738585072014e-308"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("602363986346939.2", "602363986346939.2"), // a tie: Python's even digit
            ("602363986346939.25", "602363986346939.2"),
            ("0.5", "0.5"),
        ] {
            let plan = plan("n", text);
            assert_eq!(
                finds(&plan, &format!("{{\"n\": {number}}}")),
                Some(true),
                "{number}"
            );
        }
        assert_eq!(PyRepr(1e16).to_string(), "1e+16");
        assert_eq!(PyRepr(1.5e300).to_string(), "1.5e+300");
        assert_eq!(PyRepr(123.0).to_string(), "123.0");
    }

    #[test]
    fn exact_text_of_huge_integral_floats() {
        assert_eq!(
            Exact(f64::MAX).to_string(),
            "179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368"
        );
    }

    #[test]
    fn keys_are_folded_only_where_python_folds_them_alike() {
        assert_eq!(
            finds(&plan("üx.σοφία", "v"), r#"{"ÜX": {"ΣΟΦΊΑ": "v"}}"#),
            Some(true)
        );
        // U+A7CB: uncased in Python 3.11's Unicode 14, lower-cased to U+0264 by Rust
        assert_eq!(
            finds(&plan("\u{264}x", "v"), "{\"\u{a7cb}x\": \"v\"}"),
            None
        );
        assert_eq!(
            finds(&plan("a", "v"), "{\"\u{10d50}\": 1, \"a\": \"v\"}"),
            None
        );
        assert_eq!(
            finds(&plan("日本.ü", "v"), r#"{"日本": {"Ü": "v"}}"#),
            Some(true)
        );
        assert!(stable_case("Ünïcode σοφία ΑΣ") && stable_case("日本 ﬀ"));
        // Rust lower-cases these (U+212A to "k", as Python does): left to Python all the same
        assert!(!stable_case("\u{a7cb}") && !stable_case("\u{1c89}") && !stable_case("\u{212a}"));
        // a final sigma by Rust's casing of a later letter (U+A7CD), not by Python's
        assert!(!stable_case("ΑΣ\u{a7cd}") && stable_case("ας\u{a7cd}"));
    }

    /// The event time the walk reads (Err: unsure, Python decides; None in the outer option:
    /// the message itself is left to Python).
    fn time_of(message: &str, fields: &[&str]) -> Option<Result<Option<f64>, ()>> {
        let plan = plan("unused", "v");
        let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        let mut walk = Walk::new(&plan, &fields, 64, ValueCache::default());
        walk.run(message.as_bytes()).then(|| walk.time())
    }

    #[test]
    fn paths_are_lower_cased_dotted_and_lists_are_transparent() {
        let nested = plan("a.b.c", "x");
        assert_eq!(finds(&nested, r#"{"A": {"b": {"C": "X"}}}"#), Some(true));
        assert_eq!(
            finds(&nested, r#"{"a": [{"b": [[{"c": "x"}]]}]}"#),
            Some(true)
        );
        assert_eq!(finds(&nested, r#"{"a.b": {"c": "x"}}"#), Some(true)); // a flat dotted key
        assert_eq!(
            finds(&nested, r#"{"a": {"b": "x", "c": "x"}}"#),
            Some(false)
        );
        let scalar = plan("n", "true");
        assert_eq!(finds(&scalar, r#"{"n": [false, true]}"#), Some(true));
        assert_eq!(finds(&scalar, r#"{"m": {"n": true}}"#), Some(false));
    }

    #[test]
    fn cased_fields_keep_keys_as_spelled() {
        let mut nested = plan("A.b.C", "x");
        nested.cased_fields = true;
        assert_eq!(finds(&nested, r#"{"A": {"b": {"C": "x"}}}"#), Some(true));
        assert_eq!(finds(&nested, r#"{"A.b": {"C": "x"}}"#), Some(true)); // a flat dotted key
        assert_eq!(finds(&nested, r#"{"a": {"b": {"c": "x"}}}"#), Some(false));
        assert_eq!(finds(&nested, r#"{"A": {"B": {"C": "x"}}}"#), Some(false));
        let mut unicode = plan("Ünï", "x");
        unicode.cased_fields = true;
        assert_eq!(finds(&unicode, r#"{"Ünï": "x"}"#), Some(true));
        assert_eq!(finds(&unicode, r#"{"ünï": "x"}"#), Some(false));
    }

    #[test]
    fn messages_python_would_reject_or_read_otherwise_are_left_to_it() {
        let plan = plan("a", "x");
        for message in [
            "",
            "[]",
            r#""a""#,
            r#"{"a": "x"} trailing"#,
            r#"{"a": "x",}"#,
            "{\"a\": \"\\ud800\"}", // a lone surrogate
            r#"{"a": NaN}"#,
        ] {
            assert_eq!(finds(&plan, message), None, "{message}");
        }
        let deep = format!("{}1{}", r#"{"a":"#.repeat(70), "}".repeat(70));
        assert_eq!(finds(&plan, &deep), None); // past max_depth: Python rejects it
    }

    #[test]
    fn strict_screens_stop_at_the_depth_they_are_given() {
        let mut strict = plan("a", "x");
        strict.strict = true;
        strict.strict_depth = 3;
        assert_eq!(
            finds(&strict, r#"{"b": {"c": {"d": 1}}, "a": "x"}"#),
            Some(true)
        );
        assert_eq!(
            finds(&strict, r#"{"b": {"c": {"d": {"e": 1}}}, "a": "x"}"#),
            None
        );
        strict.strict = false;
        assert_eq!(
            finds(&strict, r#"{"b": {"c": {"d": {"e": 1}}}, "a": "x"}"#),
            Some(true)
        );
    }

    #[test]
    fn event_time_from_the_first_time_field_present() {
        let fields = ["@timestamp", "event.created", "ts"];
        assert_eq!(
            time_of(
                r#"{"ts": 1704067200, "@timestamp": "2024-01-01T00:00:01Z"}"#,
                &fields
            ),
            Some(Ok(Some(1_704_067_201.0)))
        );
        assert_eq!(
            time_of(r#"{"event": {"created": 1704067200000}, "ts": 5}"#, &fields),
            Some(Ok(Some(1_704_067_200.0)))
        );
        assert_eq!(
            time_of(r#"{"event.created": 7}"#, &fields),
            Some(Ok(Some(7.0)))
        );
        assert_eq!(time_of(r#"{"x": 1}"#, &fields), Some(Ok(None)));
        // not a time for Python either: the next field counts
        assert_eq!(
            time_of(r#"{"@timestamp": true, "ts": 9}"#, &fields),
            Some(Ok(Some(9.0)))
        );
        assert_eq!(
            time_of(r#"{"@timestamp": {"a": 1}, "ts": 9}"#, &fields),
            Some(Ok(Some(9.0)))
        );
        // a time field in another case or inside a list is read by Python's event model
        // (detectors/event.py folds case and walks lists): such an event goes to Python
        assert_eq!(time_of(r#"{"TS": 9}"#, &fields), None);
        assert_eq!(time_of(r#"{"event": [{"created": 9}]}"#, &fields), None);
        // shapes only Python's parser reads, and duplicated parents, go to Python
        assert_eq!(time_of(r#"{"ts": "Jan 1 2024"}"#, &fields), Some(Err(())));
        assert_eq!(
            time_of(r#"{"event": {"created": 1}, "event": {"x": 2}}"#, &fields),
            None
        );
    }
}
