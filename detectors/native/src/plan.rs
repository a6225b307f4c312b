//! One route's indexes, mirrored from the Python `RuleIndex`, and the per-value scan over them.
//!
//! The scan may report more atoms than the Python engine would (regular expressions and
//! other checks it does not run count as hits), never fewer: the screen is conservative.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use crate::abi::{CheckKind, FieldIn, Op, PlanIn, SpecialKind};
use crate::glob;
use crate::shown::Shown;

/// How an indexed atom is confirmed once its key was found.
pub enum Check {
    /// Sigma string equality: kind as `detectors.sigma.text.Kind`, literal (lower-cased unless cased).
    Text {
        kind: CheckKind,
        literal: Vec<u8>,
        cased: bool,
        glob: Vec<glob::Token>,
    },
    /// An RE2 pattern; `dollar`: also try the value without its final newline, as the
    /// Python engine does.
    Regex { regex: Regex, dollar: bool },
    /// Anything the screen does not evaluate: counted as satisfied.
    Assume,
    /// `|cidr`: an IPv4 network (an address `a` is in it when `a & mask == prefix`), or an IPv6
    /// one (`v6`), decided only on values that cannot be an IPv6 address.
    Cidr { v6: bool, prefix: u32, mask: u32 },
}

impl Check {
    /// The screen's copy of an RE2 regex, or `Assume` when Rust's syntax might read it otherwise.
    pub fn regex(source: &str, dollar: bool) -> Check {
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

/// A check's answer for one value; `Unknown` where the screen cannot tell exactly.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Yes,
    No,
    Unknown,
}

impl Verdict {
    fn of(yes: bool) -> Verdict {
        if yes {
            Verdict::Yes
        } else {
            Verdict::No
        }
    }
}

impl Check {
    /// `ascii`: the value is ASCII; otherwise its characters' case folding is the one Python's
    /// has too, but regexes (RE2's classes are ASCII, Rust's Unicode) and `?` (a character, not
    /// a byte) are left to Python.
    fn holds(&self, text: &[u8], folded: &[u8], ascii: bool) -> Verdict {
        match self {
            Check::Assume => Verdict::Unknown,
            Check::Cidr { v6, prefix, mask } => cidr(text, *v6, *prefix, *mask),
            // RE2's \s and \S leave out the vertical tab, Rust's do not
            Check::Regex { .. } if !ascii || text.contains(&0x0b) => Verdict::Unknown,
            Check::Regex { regex, dollar } => Verdict::of(
                regex.is_match(text)
                    || (*dollar
                        && text.last() == Some(&b'\n')
                        && regex.is_match(&text[..text.len() - 1])),
            ),
            Check::Text {
                kind,
                literal,
                cased,
                glob,
            } => {
                let value = if *cased { text } else { folded };
                match kind {
                    CheckKind::Exact => Verdict::of(value == literal.as_slice()),
                    CheckKind::Prefix => Verdict::of(value.starts_with(literal)),
                    CheckKind::Suffix => Verdict::of(value.ends_with(literal)),
                    CheckKind::Contains => Verdict::of(contains(value, literal)),
                    CheckKind::Any => Verdict::Yes,
                    // the backtracking glob is O(value x pattern): past a budget, let Python's
                    // linear RE2 glob decide
                    CheckKind::Glob
                        if ascii && value.len().saturating_mul(glob.len()) <= GLOB_BUDGET =>
                    {
                        Verdict::of(glob::matches(glob, value))
                    }
                    // a Text check is never of these (see `Check::new`)
                    CheckKind::Glob | CheckKind::Regex | CheckKind::Assume | CheckKind::Cidr => {
                        Verdict::Unknown
                    }
                }
            }
        }
    }
}

const GLOB_BUDGET: usize = 1 << 20;

/// Values up to this many bytes are searched for one-byte keys in one pass, not one `memchr`
/// per key.
const SHORT_VALUE: usize = 64;

/// Longer values are no address for the Python engine (`detectors.sigma.atoms.CidrAtom`).
const CIDR_TEXT: usize = 64;

/// Whether a value is in a `|cidr` network, as `CidrAtom` reads it: a string of at most 64
/// characters that `ipaddress.ip_address(value.strip())` reads as an address of the network's
/// version. Numbers and booleans never read as an IPv4 address (their texts hold one dot at most)
/// nor as IPv6 (no colon). Values Python would strip, non-ASCII ones, and IPv6 candidates for an
/// IPv6 network are left to Python.
fn cidr(text: &[u8], v6: bool, prefix: u32, mask: u32) -> Verdict {
    if !text.is_ascii() || text.iter().any(|&b| b <= b' ') {
        return Verdict::Unknown;
    }
    if text.len() > CIDR_TEXT {
        return Verdict::No;
    }
    let colon = text.contains(&b':');
    if v6 {
        // an address without a colon is IPv4 (version 4) or none
        return if colon { Verdict::Unknown } else { Verdict::No };
    }
    // with a colon it is IPv6 (version 6) or none; otherwise IPv4 or none
    match ipv4(text) {
        Some(address) if !colon => Verdict::of(address & mask == prefix),
        _ => Verdict::No,
    }
}

/// Python's `ipaddress.IPv4Address` of a text: four dot-separated decimal octets of one to three
/// ASCII digits, no leading zero, each at most 255.
fn ipv4(text: &[u8]) -> Option<u32> {
    let mut address: u32 = 0;
    let mut octets = 0;
    for octet in text.split(|&b| b == b'.') {
        octets += 1;
        if octets > 4
            || octet.is_empty()
            || octet.len() > 3
            || !octet.iter().all(u8::is_ascii_digit)
            || (octet.len() > 1 && octet[0] == b'0')
        {
            return None;
        }
        let value = octet
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        if value > 255 {
            return None;
        }
        address = (address << 8) | value;
    }
    (octets == 4).then_some(address)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The word-at-a-time hash rustc uses (FxHash): field paths and values are short, and
/// SipHash's setup dominates for them. Not for keys an attacker picks to collide: the maps it
/// serves are keyed by rule fields and values, or verified on lookup (the value cache).
#[derive(Default)]
pub struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

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
    /// The automaton of the keys of more than one byte (its pattern `i` is key `searched[i]`),
    /// built on the field's first value rather than with the plan: a route holds hundreds of
    /// fields and a short run (`pipesentry eval` of a few events) meets few of them (building
    /// them all was most of a screen's start). `None` inside: it could not be built (the keys'
    /// atoms are then unknown, left to Python).
    automaton: OnceLock<Option<AhoCorasick>>,
    pub searched: Vec<u32>,
    /// The one-byte keys, `(byte, key)`: found with `memchr` (once per value), not reported by the
    /// overlapping search at each of their occurrences (`0` or `:` is in most values).
    pub bytes: Vec<(u8, u32)>,
    /// Where this plan's keys start in the route-wide numbering of keys (for [`Hits`]).
    pub key_base: usize,
    /// Distinguishes the plans of one route in the [`ValueCache`].
    pub id: u32,
    /// The [`Slot`] of this path, when special atoms read it: a key's path is looked up once
    /// for both.
    pub slot: Option<usize>,
    /// False for a path only special atoms read (its values are not scanned).
    pub scanned: bool,
}

impl FieldPlan {
    pub fn new(
        exact: FastMap<Vec<u8>, (Vec<u32>, Vec<u32>)>,
        every: Vec<u32>,
        keys: Vec<Key>,
        key_base: usize,
        id: u32,
    ) -> Self {
        let (mut searched, mut bytes) = (Vec::new(), Vec::new());
        for (index, key) in keys.iter().enumerate() {
            match key.text[..] {
                [byte] => bytes.push((byte, index as u32)),
                _ => searched.push(index as u32),
            }
        }
        FieldPlan {
            exact,
            every,
            keys,
            automaton: OnceLock::new(),
            searched,
            bytes,
            key_base,
            id,
            slot: None,
            scanned: true,
        }
    }

    /// The keys' automaton (built on first call; `None`: it cannot be built).
    pub fn automaton(&self) -> Option<&AhoCorasick> {
        self.automaton
            .get_or_init(|| {
                let texts = || {
                    self.searched
                        .iter()
                        .map(|&k| self.keys[k as usize].text.as_slice())
                };
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(automaton_kind(texts().map(<[u8]>::len).sum()))
                    .build(texts())
                    .ok()
            })
            .as_ref()
    }
}

/// Key bytes up to which a field's keys are searched with a DFA (a state per key byte at most,
/// so a few MB): an overlapping search then costs one table lookup per byte, where the NFA the
/// builder picks for more than a hundred keys follows failure links. Larger sets keep the NFA.
const DFA_KEY_BYTES: usize = 16 * 1024;

fn automaton_kind(key_bytes: usize) -> Option<AhoCorasickKind> {
    (key_bytes <= DFA_KEY_BYTES).then_some(AhoCorasickKind::DFA)
}

/// Per-event hit set: an atom is hit when its stamp equals the event's generation.
pub struct Hits {
    /// Per atom, `[hit, unknown]` stamps side by side (a program reads both of an atom): the
    /// second marks atoms counted as hits without knowing (a check that could not tell).
    stamps: Vec<[u32; 2]>,
    generation: u32,
    pub list: Vec<u32>,
    /// Keys already handled for the current value (a key can occur several times in it).
    seen_keys: Vec<u32>,
    value: u32,
}

impl Hits {
    pub fn new(atoms: usize, keys: usize) -> Self {
        Hits {
            stamps: vec![[0; 2]; atoms],
            generation: 0,
            list: Vec::new(),
            seen_keys: vec![0; keys],
            value: 0,
        }
    }

    pub fn reset(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.iter_mut().for_each(|s| *s = [0; 2]);
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
        self.stamps[atom as usize][0] == self.generation
    }

    /// Hit, but possibly not really (see [`Verdict::Unknown`]).
    #[inline]
    pub fn unknown(&self, atom: u32) -> bool {
        self.stamps[atom as usize][1] == self.generation
    }

    #[inline]
    pub fn set(&mut self, atom: u32) {
        let slot = &mut self.stamps[atom as usize];
        if slot[0] != self.generation {
            slot[0] = self.generation;
            self.list.push(atom);
        }
        slot[1] = 0;
    }

    pub fn record(&mut self, atom: u32, verdict: Verdict) {
        match verdict {
            Verdict::Yes => self.set(atom),
            Verdict::No => {}
            Verdict::Unknown if self.has(atom) && !self.unknown(atom) => {}
            Verdict::Unknown => {
                self.set(atom);
                self.stamps[atom as usize][1] = self.generation;
            }
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
    /// Position -> the rule's other trigger clauses (those the screen can see: a clause with an
    /// atom it never reports is always satisfied, so it is left out).
    pub rest: Vec<Vec<Vec<u32>>>,
    /// Some rule is a candidate on every event (no trigger, or a trigger the screen cannot
    /// evaluate exactly): `undecided` is not empty.
    pub always: bool,
    /// Positions of the rules Python evaluates on every event: without a trigger and without a
    /// program, or triggered by an atom the screen never reports.
    pub undecided: Vec<u32>,
    /// Per rule position, its condition as a postfix program when the screen can evaluate every
    /// atom of it (a candidate whose program is false is dropped).
    pub programs: Vec<Option<Vec<(Op, u32)>>>,
    /// Positions of the rules without a trigger that have a program: it runs on every event.
    pub untriggered: Vec<u32>,
    /// Atoms tested on the whole event (null, exists, field reference), from the paths seen.
    pub special: Vec<Special>,
    /// Field paths the special atoms read, numbered (their per-event state is a [`Slot`]); the
    /// walk reads a path's number from its entry in `fields` ([`FieldPlan::slot`]).
    pub slots: FastMap<String, usize>,
    /// Slots whose value texts are kept (field references).
    pub texts: Vec<bool>,
    /// Exact answers are needed (programs, special atoms): duplicated keys and nesting deeper
    /// than the Python flattening goes make an event unsure.
    pub strict: bool,
    /// Nesting beyond which a strict screen calls an event unsure (`screen_abi.STRICT_DEPTH`).
    pub strict_depth: usize,
    /// Keys are compared as spelled, not lower-cased (`rules.field_names: sensitive`): the
    /// plan's field paths are the rules' spellings.
    pub cased_fields: bool,
    pub atom_count: usize,
    pub key_count: usize,
    /// What the matches of the rules decided to match show.
    pub shown: Shown,
}

pub struct Special {
    pub atom: u32,
    pub kind: SpecialKind,
    pub slot: usize,
    pub other: usize,
    pub starts: bool,
    pub ends: bool,
    pub want: bool,
}

/// What an event holds at one path the special atoms read.
#[derive(Default, Clone)]
pub struct Slot {
    pub present: bool,
    pub non_null: bool,
    pub texts: Vec<Vec<u8>>,
    pub unsure: bool,
}

impl Slot {
    pub fn clear(&mut self) {
        self.present = false;
        self.non_null = false;
        self.texts.clear();
        self.unsure = false;
    }
}

/// Per field plan and value text, the verdicts of [`Plan::verdicts`] (log values repeat a lot:
/// paths, users, hosts). Bounded: emptied when full, as the Python engine's value cache is.
///
/// A value is kept on its second sighting: `seen` holds the hashes of values seen once
/// (direct-mapped, overwritten on a clash), so values that never repeat (ids, random tokens,
/// times) cost no allocation nor a later clearing, and cannot push repeated ones out.
///
/// A field plan whose values seldom repeat is not looked up at all for a while (see
/// [`Worth`]): its lookups would cost more than the scans they save.
#[derive(Default)]
pub struct ValueCache {
    entries: FastMap<u64, CachedValue>,
    seen: Vec<u64>,
    /// By field plan id.
    worth: Vec<Worth>,
}

/// What the lookups of one field plan's values saved over a window of [`WINDOW`] lookups, in
/// bytes of scanning: a hit saves the scan of its value and a call (counted as [`CALL_BYTES`]),
/// a miss costs about a call (hashing, a probe, the seen-once filter). A window that saved less
/// than it cost turns the lookups off for [`RESTING`] values of the plan, then another window
/// tells again.
#[derive(Default, Clone, Copy)]
struct Worth {
    lookups: u32,
    saved: u32,
    cost: u32,
    /// Values still to pass by the cache.
    resting: u32,
}

const WINDOW: u32 = 1024;
const RESTING: u32 = 16 * WINDOW;
const CALL_BYTES: u32 = 12;
/// Field plan ids are below a route's field count (a path only special atoms read has none).
const MAX_PLAN_ID: usize = 1 << 20;

/// Slots of [`ValueCache`]'s seen-once filter (a power of two).
const SEEN_SLOTS: usize = 4096;

/// (field plan id, value text, verdicts): the text is compared, hash collisions are misses.
type CachedValue = (u32, Box<[u8]>, Box<[(u32, Verdict)]>);

/// Longer values are not cached (they seldom repeat).
pub const CACHED_TEXT: usize = 160;
const CACHE_ENTRIES: usize = 8192;

impl ValueCache {
    /// The key of a value of field plan `id` ([`ValueCache::get`] and [`ValueCache::insert`]
    /// take it: a miss then an insert hash the value once).
    pub fn hash(id: u32, text: &[u8]) -> u64 {
        let mut hasher = FxHasher::default();
        hasher.write(&id.to_le_bytes());
        hasher.write(text);
        hasher.finish()
    }

    /// Whether to look up (and keep) this value of field plan `id`: false while its values are
    /// resting (the caller scans the value as on a miss).
    #[inline]
    pub fn worth(&mut self, id: u32) -> bool {
        match self.worth.get_mut(id as usize) {
            Some(worth) if worth.resting > 0 => {
                worth.resting -= 1;
                false
            }
            _ => true,
        }
    }

    /// The verdicts kept for a value (after [`ValueCache::worth`] said yes).
    pub fn get(&mut self, hash: u64, id: u32, text: &[u8]) -> Option<&[(u32, Verdict)]> {
        let found = if self.entries.is_empty() {
            None
        } else {
            self.entries
                .get(&hash)
                .filter(|(owner, stored, _)| *owner == id && **stored == *text)
                .map(|(_, _, verdicts)| &**verdicts)
        };
        count(&mut self.worth, id, found.is_some(), text.len());
        found
    }

    pub fn insert(&mut self, hash: u64, id: u32, text: &[u8], verdicts: &[(u32, Verdict)]) {
        if self.seen.is_empty() {
            self.seen = vec![0; SEEN_SLOTS];
        }
        let slot = &mut self.seen[(hash ^ (hash >> 32)) as usize & (SEEN_SLOTS - 1)];
        if *slot != hash {
            *slot = hash; // first sighting (or a clash): remembered, not kept
            return;
        }
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.clear();
        }
        self.entries
            .insert(hash, (id, text.into(), verdicts.into()));
    }
}

/// A lookup of field plan `id` in its [`Worth`] (`len`: the value's bytes).
fn count(worth: &mut Vec<Worth>, id: u32, hit: bool, len: usize) {
    let at = id as usize;
    if at >= worth.len() {
        if at > MAX_PLAN_ID {
            return; // not a route's field plan: no table for it
        }
        worth.resize(at + 1, Worth::default());
    }
    let worth = &mut worth[at];
    worth.lookups += 1;
    if hit {
        worth.saved += CALL_BYTES + len as u32; // len <= CACHED_TEXT: no overflow in a window
    } else {
        worth.cost += CALL_BYTES;
    }
    if worth.lookups >= WINDOW {
        let resting = if worth.saved < worth.cost { RESTING } else { 0 };
        *worth = Worth {
            resting,
            ..Worth::default()
        };
    }
}

/// Rule positions already considered as candidates of the current event.
pub struct Tried {
    stamps: Vec<u32>,
    generation: u32,
    /// The condition programs' evaluation stack, kept between events.
    stack: Vec<Tri>,
}

impl Tried {
    pub fn new(rules: usize) -> Self {
        Tried {
            stamps: vec![0; rules],
            stack: Vec::new(),
            generation: 0,
        }
    }

    fn next(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
    }

    fn first(&mut self, position: u32) -> bool {
        let slot = &mut self.stamps[position as usize];
        let first = *slot != self.generation;
        *slot = self.generation;
        first
    }
}

/// Three-valued logic for conditions over atoms some of which are unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tri {
    F,
    T,
    U,
}

impl Plan {
    fn check(&self, atom: u32, text: &[u8], folded: &[u8], ascii: bool) -> Verdict {
        self.checks[atom as usize]
            .as_ref()
            .map_or(Verdict::Yes, |c| c.holds(text, folded, ascii))
    }

    /// The atoms of `field` a value satisfies (or may: `Unknown`), whatever was hit before:
    /// the answer depends on the value alone, so it can be cached.
    pub fn verdicts(
        &self,
        field: &FieldPlan,
        text: &[u8],
        folded: &[u8],
        ascii: bool,
        hits: &mut Hits,
        out: &mut Vec<(u32, Verdict)>,
    ) {
        out.clear();
        let mut push = |atom: u32, verdict: Verdict| {
            if verdict != Verdict::No {
                out.push((atom, verdict));
            }
        };
        for &atom in &field.every {
            push(atom, self.check(atom, text, folded, ascii));
        }
        if let Some((plain, verify)) = field.exact.get(folded) {
            for &atom in plain {
                push(atom, Verdict::Yes);
            }
            for &atom in verify {
                push(atom, self.check(atom, text, folded, ascii));
            }
        }
        if !field.bytes.is_empty() {
            // a short value's bytes are gathered in one pass; `memchr` pays on longer ones
            let present = (folded.len() <= SHORT_VALUE && field.bytes.len() > 1).then(|| {
                let mut set = [0u64; 4];
                for &b in folded {
                    set[usize::from(b >> 6)] |= 1 << (b & 63);
                }
                set
            });
            for &(byte, index) in &field.bytes {
                let found = match &present {
                    Some(set) => set[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0,
                    None => memchr::memchr(byte, folded).is_some(),
                };
                if found {
                    self.key_verdicts(&field.keys[index as usize], text, folded, ascii, &mut push);
                }
            }
        }
        if field.searched.is_empty() {
            return;
        }
        let Some(automaton) = field.automaton() else {
            // no automaton (too large to build): whether a key occurs is not known here
            for &index in &field.searched {
                let key = &field.keys[index as usize];
                for &atom in key
                    .anywhere
                    .iter()
                    .chain(&key.prefix)
                    .chain(&key.suffix)
                    .chain(&key.verify)
                {
                    push(atom, Verdict::Unknown);
                }
            }
            return;
        };
        let value = hits.next_value();
        for found in automaton.find_overlapping_iter(folded) {
            let index = field.searched[found.pattern().as_usize()] as usize;
            let seen = &mut hits.seen_keys[field.key_base + index];
            if *seen == value {
                continue;
            }
            *seen = value;
            self.key_verdicts(&field.keys[index], text, folded, ascii, &mut push);
        }
    }

    /// The verdicts of the atoms of one key found in a value (`folded`).
    fn key_verdicts(
        &self,
        key: &Key,
        text: &[u8],
        folded: &[u8],
        ascii: bool,
        push: &mut impl FnMut(u32, Verdict),
    ) {
        for &atom in &key.anywhere {
            push(atom, Verdict::Yes);
        }
        if !key.prefix.is_empty() && folded.starts_with(&key.text) {
            for &atom in &key.prefix {
                push(atom, Verdict::Yes);
            }
        }
        if !key.suffix.is_empty() && folded.ends_with(&key.text) {
            for &atom in &key.suffix {
                push(atom, Verdict::Yes);
            }
        }
        for &atom in &key.verify {
            push(atom, self.check(atom, text, folded, ascii));
        }
    }

    /// Record the special atoms' verdicts from the slots of one event.
    pub fn evaluate_special(&self, slots: &[Slot], hits: &mut Hits) {
        for special in &self.special {
            let slot = &slots[special.slot];
            let verdict = match special.kind {
                // Python: the field is absent, or every value of it is null
                SpecialKind::Null => Verdict::of(!slot.non_null),
                SpecialKind::Exists => Verdict::of(slot.present == special.want),
                SpecialKind::FieldRef => {
                    let other = &slots[special.other];
                    if slot.unsure || other.unsure {
                        Verdict::Unknown
                    } else {
                        Verdict::of(slot.texts.iter().any(|value| {
                            other.texts.iter().any(|reference| {
                                match (special.starts, special.ends) {
                                    (true, true) => contains(value, reference),
                                    (true, false) => value.starts_with(reference),
                                    (false, true) => value.ends_with(reference),
                                    (false, false) => value == reference,
                                }
                            })
                        }))
                    }
                }
            };
            hits.record(special.atom, verdict);
        }
    }

    /// A rule's condition program over the hits, three-valued: an atom hit only maybe
    /// ([`Hits::unknown`]) is unknown, an atom not hit is false (the hits hold every atom a
    /// program names that is true: programs are made of atoms the screen evaluates exactly).
    fn program_value(program: &[(Op, u32)], hits: &Hits, stack: &mut Vec<Tri>) -> Tri {
        stack.clear();
        for &(op, arg) in program {
            let value = match op {
                Op::Atom if hits.unknown(arg) => Tri::U,
                Op::Atom => {
                    if hits.has(arg) {
                        Tri::T
                    } else {
                        Tri::F
                    }
                }
                Op::Const => {
                    if arg != 0 {
                        Tri::T
                    } else {
                        Tri::F
                    }
                }
                Op::Not => match stack.pop() {
                    Some(Tri::T) => Tri::F,
                    Some(Tri::F) => Tri::T,
                    _ => Tri::U,
                },
                Op::And | Op::Or => {
                    let start = stack.len().saturating_sub(arg as usize);
                    let (decisive, other) = if op == Op::And {
                        (Tri::F, Tri::T)
                    } else {
                        (Tri::T, Tri::F)
                    };
                    let children = &stack[start..];
                    let value = if children.contains(&decisive) {
                        decisive
                    } else if children.contains(&Tri::U) {
                        Tri::U
                    } else {
                        other
                    };
                    stack.truncate(start);
                    value
                }
            };
            stack.push(value);
        }
        // an empty or malformed program decides nothing
        if stack.len() == 1 {
            stack[0]
        } else {
            Tri::U
        }
    }

    /// Whether some rule may match given the hits: its trigger clauses all have a hit and its
    /// program (if any) is not false; or a rule without a trigger may match.
    pub fn candidate(&self, hits: &Hits, tried: &mut Tried) -> bool {
        if self.always {
            return true;
        }
        let mut stack = std::mem::take(&mut tried.stack);
        let found = self.any_candidate(hits, tried, &mut stack);
        tried.stack = stack;
        found
    }

    fn any_candidate(&self, hits: &Hits, tried: &mut Tried, stack: &mut Vec<Tri>) -> bool {
        let may_match =
            |position: u32, stack: &mut Vec<Tri>| match &self.programs[position as usize] {
                Some(program) => Self::program_value(program, hits, stack) != Tri::F,
                None => true,
            };
        if self.untriggered.iter().any(|&p| may_match(p, stack)) {
            return true;
        }
        tried.next();
        for &atom in &hits.list {
            for &position in &self.triggers[atom as usize] {
                if !tried.first(position) {
                    continue;
                }
                let satisfied = self.rest[position as usize]
                    .iter()
                    .all(|clause| clause.iter().any(|&a| hits.has(a)));
                if satisfied && may_match(position, stack) {
                    return true;
                }
            }
        }
        false
    }

    /// The rules of one event, decided: the positions of those that match (`matched`) and of
    /// those the screen cannot decide (`undecided`: Python evaluates them), both ascending.
    /// Every other rule does not match. Both empty: the event is cleared.
    pub fn decide(
        &self,
        hits: &Hits,
        tried: &mut Tried,
        matched: &mut Vec<u32>,
        undecided: &mut Vec<u32>,
    ) {
        matched.clear();
        undecided.clear();
        let mut stack = std::mem::take(&mut tried.stack);
        tried.next();
        for &position in &self.undecided {
            if tried.first(position) {
                undecided.push(position);
            }
        }
        let mut judge =
            |position: u32, stack: &mut Vec<Tri>| match &self.programs[position as usize] {
                Some(program) => match Self::program_value(program, hits, stack) {
                    Tri::T => matched.push(position),
                    Tri::F => {}
                    Tri::U => undecided.push(position),
                },
                None => undecided.push(position),
            };
        for &position in &self.untriggered {
            if tried.first(position) {
                judge(position, &mut stack);
            }
        }
        for &atom in &hits.list {
            for &position in &self.triggers[atom as usize] {
                if !tried.first(position) {
                    continue;
                }
                // a clause without a hit has no true atom: the rule cannot match
                let satisfied = self.rest[position as usize]
                    .iter()
                    .all(|clause| clause.iter().any(|&a| hits.has(a)));
                if satisfied {
                    judge(position, &mut stack);
                }
            }
        }
        tried.stack = stack;
        matched.sort_unstable();
        undecided.sort_unstable();
    }
}

impl Check {
    /// An atom's check from the plan (`screen_abi.Check`).
    fn new(
        kind: CheckKind,
        literal: String,
        flag: bool,
        glob: &[(i64, String)],
    ) -> Result<Check, String> {
        Ok(match kind {
            CheckKind::Regex => Check::regex(&literal, flag),
            CheckKind::Assume => Check::Assume,
            CheckKind::Cidr => {
                let network = if flag {
                    Some((0, 0))
                } else {
                    literal
                        .split_once('/')
                        .and_then(|(p, m)| Some((p.parse().ok()?, m.parse().ok()?)))
                };
                let Some((prefix, mask)) = network else {
                    return Err(format!("cidr network {literal:?} is not prefix/mask"));
                };
                Check::Cidr {
                    v6: flag,
                    prefix,
                    mask,
                }
            }
            _ => Check::Text {
                kind,
                literal: literal.into_bytes(),
                cased: flag,
                glob: glob::tokens(glob)?,
            },
        })
    }
}

fn field_plan(input: FieldIn, key_base: &mut usize, id: u32) -> Result<FieldPlan, String> {
    let (exact_in, every, keys_in) = input;
    let mut exact = FastMap::default();
    for (key, plain, verify) in exact_in {
        exact.insert(key.into_bytes(), (plain, verify));
    }
    let keys: Vec<Key> = keys_in
        .into_iter()
        .map(|(text, anywhere, prefix, suffix, verify)| Key {
            text: text.into_bytes(),
            anywhere,
            prefix,
            suffix,
            verify,
        })
        .collect();
    let base = *key_base;
    *key_base += keys.len();
    Ok(FieldPlan::new(exact, every, keys, base, id))
}

impl Plan {
    /// The plan of one route from the format `detectors.sigma.screen.export_plan` makes (its
    /// version already checked); an error for ids out of range and codes of no known member.
    pub fn from_input(input: PlanIn) -> Result<Plan, String> {
        let PlanIn {
            fields,
            keywords,
            checks,
            triggers,
            rest,
            undecided,
            programs,
            untriggered,
            special,
            displays,
            shown,
            atom_count,
            cased_fields,
            strict_depth,
        } = input;
        let mut key_base = 0usize;
        let mut field_map = FastMap::default();
        let mut indexed = vec![false; atom_count];
        let range = |atom: u32| -> Result<usize, String> {
            if (atom as usize) < atom_count {
                Ok(atom as usize)
            } else {
                Err("atom id out of range".to_owned())
            }
        };
        let mark = |fp: &FieldPlan, indexed: &mut Vec<bool>| -> Result<(), String> {
            let atoms = fp
                .every
                .iter()
                .chain(
                    fp.exact
                        .values()
                        .flat_map(|(a, b)| a.iter().chain(b.iter())),
                )
                .chain(fp.keys.iter().flat_map(|k| {
                    k.anywhere
                        .iter()
                        .chain(&k.prefix)
                        .chain(&k.suffix)
                        .chain(&k.verify)
                }));
            for &atom in atoms {
                indexed[range(atom)?] = true;
            }
            Ok(())
        };
        let keyword_id = fields.len() as u32;
        for (id, (path, input)) in fields.into_iter().enumerate() {
            let fp = field_plan(input, &mut key_base, id as u32)?;
            mark(&fp, &mut indexed)?;
            field_map.insert(path, fp);
        }
        let mut keyword_atoms = Vec::new();
        let keywords = match keywords {
            Some(input) => {
                let fp = field_plan(input, &mut key_base, keyword_id)?;
                mark(&fp, &mut indexed)?;
                let mut only = vec![false; atom_count];
                mark(&fp, &mut only)?;
                keyword_atoms.extend((0..atom_count as u32).filter(|&a| only[a as usize]));
                Some(fp)
            }
            None => None,
        };
        let mut check_map: Vec<Option<Check>> = (0..atom_count).map(|_| None).collect();
        for (atom, kind, literal, flag, parts) in checks {
            let check = Check::new(CheckKind::from_code(kind)?, literal, flag, &parts)?;
            check_map[range(atom)?] = Some(check);
        }
        for &atom in rest.iter().flatten().flatten() {
            range(atom)?;
        }
        let mut trigger_table = vec![Vec::new(); atom_count];
        for (atom, positions) in triggers {
            if positions.iter().any(|&p| p as usize >= rest.len()) {
                return Err("rule position out of range".to_owned());
            }
            trigger_table[range(atom)?] = positions;
        }
        let mut typed_programs = Vec::with_capacity(programs.len());
        for program in programs {
            typed_programs.push(match program {
                Some(instructions) => {
                    let mut typed = Vec::with_capacity(instructions.len());
                    for (code, arg) in instructions {
                        let op = Op::from_code(code)?;
                        if op == Op::Atom {
                            range(arg)?;
                        }
                        typed.push((op, arg));
                    }
                    Some(typed)
                }
                None => None,
            });
        }
        let programs = typed_programs;
        let fits = |p: &u32| (*p as usize) < rest.len() && programs[*p as usize].is_some();
        if programs.len() != rest.len() || !untriggered.iter().all(fits) {
            return Err("programs do not fit the rules".to_owned());
        }
        if undecided.iter().any(|&p| p as usize >= rest.len()) {
            return Err("rule position out of range".to_owned());
        }
        let mut slots: FastMap<String, usize> = FastMap::default();
        let mut texts: Vec<bool> = Vec::new();
        let mut slot_of = |path: String, keep_texts: bool| -> usize {
            let next = slots.len();
            let slot = *slots.entry(path).or_insert(next);
            if slot == texts.len() {
                texts.push(false);
            }
            texts[slot] |= keep_texts;
            slot
        };
        let mut specials = Vec::new();
        for (atom, kind, field, other, starts, ends, want) in special {
            indexed[range(atom)?] = true;
            let kind = SpecialKind::from_code(kind)?;
            let reference = kind == SpecialKind::FieldRef;
            let slot = slot_of(field, reference);
            let other = if reference {
                slot_of(other, true)
            } else {
                slot
            };
            specials.push(Special {
                atom,
                kind,
                slot,
                other,
                starts,
                ends,
                want,
            });
        }
        for (path, &slot) in &slots {
            field_map
                .entry(path.clone())
                .or_insert_with(|| FieldPlan {
                    scanned: false,
                    ..FieldPlan::new(FastMap::default(), Vec::new(), Vec::new(), 0, u32::MAX)
                })
                .slot = Some(slot);
        }
        let strict = programs.iter().any(Option::is_some) || !specials.is_empty();
        if shown.len() != rest.len() {
            return Err("shown fields do not fit the rules".to_owned());
        }
        let special_kinds: Vec<(u32, SpecialKind, bool)> =
            specials.iter().map(|s| (s.atom, s.kind, s.want)).collect();
        let shown = Shown::new(displays, shown, atom_count, &keyword_atoms, &special_kinds)?;
        Ok(Plan {
            fields: field_map,
            keywords,
            checks: check_map,
            triggers: trigger_table,
            rest: rest
                .into_iter()
                .map(|clauses| {
                    clauses
                        .into_iter()
                        .filter(|clause| clause.iter().all(|&a| indexed[a as usize]))
                        .collect()
                })
                .collect(),
            always: !undecided.is_empty(),
            undecided,
            programs,
            untriggered,
            special: specials,
            slots,
            texts,
            strict,
            strict_depth,
            cased_fields,
            atom_count,
            key_count: key_base,
            shown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::Walk;

    const ATOM: i64 = 0;
    const NOT: i64 = 2;
    const AND: i64 = 3;
    const OR: i64 = 4;

    /// One rule, `a: x and not b: y` (atoms 0 and 1), triggered by atom 0.
    fn input() -> PlanIn {
        PlanIn {
            fields: vec![
                (
                    "a".into(),
                    (vec![("x".into(), vec![0], vec![])], vec![], vec![]),
                ),
                (
                    "b".into(),
                    (vec![("y".into(), vec![1], vec![])], vec![], vec![]),
                ),
            ],
            keywords: None,
            checks: vec![],
            triggers: vec![(0, vec![0])],
            rest: vec![vec![]],
            undecided: vec![],
            programs: vec![Some(vec![(ATOM, 0), (ATOM, 1), (NOT, 0), (AND, 2)])],
            untriggered: vec![],
            special: vec![],
            displays: vec!["a".into(), "b".into()],
            shown: vec![Some(vec![0])],
            atom_count: 2,
            cased_fields: false,
            strict_depth: 30,
        }
    }

    /// Whether the event may match (None: the walk could not read it as Python would).
    fn candidate(plan: &Plan, message: &str) -> Option<bool> {
        let mut walk = Walk::new(plan, &[], 64, ValueCache::default());
        if !walk.run(message.as_bytes()) {
            return None;
        }
        let Walk { hits, tried, .. } = &mut walk;
        Some(plan.candidate(hits, tried))
    }

    #[test]
    fn a_fields_automaton_is_built_on_its_first_value_only() {
        // `a|contains: ev or b|contains: zz` (atoms 0 and 1), each field with a key automaton
        let mut plan_in = input();
        plan_in.fields = vec![
            (
                "a".into(),
                (
                    vec![],
                    vec![],
                    vec![("ev".into(), vec![0], vec![], vec![], vec![])],
                ),
            ),
            (
                "b".into(),
                (
                    vec![],
                    vec![],
                    vec![("zz".into(), vec![1], vec![], vec![], vec![])],
                ),
            ),
        ];
        plan_in.triggers = vec![(0, vec![0]), (1, vec![0])];
        plan_in.programs = vec![Some(vec![(ATOM, 0), (ATOM, 1), (OR, 2)])];
        let plan = Plan::from_input(plan_in).expect("plan");
        let built = |field: &str| plan.fields[field].automaton.get().is_some();
        assert!(!built("a") && !built("b"));
        assert_eq!(candidate(&plan, r#"{"a": "the evil one"}"#), Some(true));
        assert!(built("a") && !built("b"));
        assert_eq!(candidate(&plan, r#"{"a": "x", "b": "fizz"}"#), Some(true));
        assert!(built("b"));
        assert_eq!(candidate(&plan, r#"{"a": "x", "b": "y"}"#), Some(false));
    }

    #[test]
    fn the_value_cache_keeps_a_value_on_its_second_sighting() {
        let mut cache = ValueCache::default();
        let verdicts = [(3, Verdict::Yes)];
        let once = ValueCache::hash(1, b"once");
        cache.insert(once, 1, b"once", &verdicts);
        assert!(cache.get(once, 1, b"once").is_none());
        cache.insert(once, 1, b"once", &verdicts);
        assert_eq!(cache.get(once, 1, b"once"), Some(&verdicts[..]));
        assert!(cache
            .get(ValueCache::hash(2, b"once"), 2, b"once")
            .is_none());
        assert!(cache
            .get(ValueCache::hash(1, b"other"), 1, b"other")
            .is_none());
        // an entry answers for its own plan and text only, whatever the hash
        assert!(cache.get(once, 2, b"once").is_none());
        assert!(cache.get(once, 1, b"other").is_none());
    }

    #[test]
    fn a_plan_whose_values_seldom_repeat_rests_from_the_cache_for_a_while() {
        let mut cache = ValueCache::default();
        let verdicts = [(3, Verdict::Yes)];
        // plan 1: unique values, one repeated short one in nine (saves less than the misses cost)
        // plan 2: one value over and over
        let looked = |cache: &mut ValueCache, id: u32, text: &[u8]| {
            if !cache.worth(id) {
                return false;
            }
            let hash = ValueCache::hash(id, text);
            if cache.get(hash, id, text).is_none() {
                cache.insert(hash, id, text, &verdicts);
            }
            true
        };
        for n in 0..WINDOW {
            let text = if n % 9 == 0 {
                "synthetic".to_owned()
            } else {
                format!("{n:020x}")
            };
            assert!(looked(&mut cache, 1, text.as_bytes()));
            assert!(looked(&mut cache, 2, b"C:\\Windows\\System32\\svchost.exe"));
        }
        for _ in 0..RESTING {
            assert!(!looked(&mut cache, 1, b"synthetic"));
        }
        assert!(looked(&mut cache, 1, b"synthetic")); // a new window tells again
        assert!(looked(&mut cache, 2, b"C:\\Windows\\System32\\svchost.exe"));
        assert!(cache.worth.len() == 3 && cache.worth[2].resting == 0);
    }

    #[test]
    fn ids_positions_and_codes_out_of_range_are_refused() {
        let mut bad = input();
        bad.triggers = vec![(2, vec![0])];
        assert_eq!(
            Plan::from_input(bad).err().as_deref(),
            Some("atom id out of range")
        );
        let mut bad = input();
        bad.triggers = vec![(0, vec![1])];
        assert_eq!(
            Plan::from_input(bad).err().as_deref(),
            Some("rule position out of range")
        );
        let mut bad = input();
        bad.programs = vec![Some(vec![(ATOM, 9)])];
        assert_eq!(
            Plan::from_input(bad).err().as_deref(),
            Some("atom id out of range")
        );
        let mut bad = input();
        bad.programs = vec![];
        assert_eq!(
            Plan::from_input(bad).err().as_deref(),
            Some("programs do not fit the rules")
        );
        let mut bad = input();
        bad.untriggered = vec![0];
        bad.programs = vec![None];
        assert!(Plan::from_input(bad).is_err()); // an untriggered rule needs its program
        let mut bad = input();
        bad.checks = vec![(0, 6, "x".into(), false, vec![])];
        assert_eq!(
            Plan::from_input(bad).err().as_deref(),
            Some("unknown CheckKind code 6")
        );
        let mut bad = input();
        bad.special = vec![(1, 3, "b".into(), String::new(), false, false, false)];
        assert_eq!(
            Plan::from_input(bad).err().as_deref(),
            Some("unknown SpecialKind code 3")
        );
        assert!(Plan::from_input(input()).is_ok());
    }

    #[test]
    fn a_candidate_whose_program_is_false_is_dropped() {
        let plan = Plan::from_input(input()).expect("plan");
        assert!(plan.strict);
        assert_eq!(candidate(&plan, r#"{"a": "X", "b": "z"}"#), Some(true));
        assert_eq!(candidate(&plan, r#"{"a": "x", "b": "Y"}"#), Some(false));
        assert_eq!(candidate(&plan, r#"{"a": "z"}"#), Some(false));
        // strict: a duplicated key is resolved by Python (the last one wins), not here
        assert_eq!(candidate(&plan, r#"{"a": "x", "a": "z"}"#), None);
    }

    /// The event's (matched, undecided) rule positions (None: the walk could not read it).
    fn decision(plan: &Plan, message: &str) -> Option<(Vec<u32>, Vec<u32>)> {
        let mut walk = Walk::new(plan, &[], 64, ValueCache::default());
        if !walk.run(message.as_bytes()) {
            return None;
        }
        let (mut matched, mut undecided) = (vec![9], vec![9]); // cleared by `decide`
        let Walk { hits, tried, .. } = &mut walk;
        plan.decide(hits, tried, &mut matched, &mut undecided);
        Some((matched, undecided))
    }

    #[test]
    fn decisions_name_the_matching_rules_and_leave_unknowns_to_python() {
        let plan = Plan::from_input(input()).expect("plan");
        assert_eq!(
            decision(&plan, r#"{"a": "X", "b": "z"}"#),
            Some((vec![0], vec![]))
        );
        assert_eq!(
            decision(&plan, r#"{"a": "x", "b": "Y"}"#),
            Some((vec![], vec![]))
        );
        assert_eq!(decision(&plan, r#"{"b": "z"}"#), Some((vec![], vec![])));
        // "b: y" assumed (a check the screen cannot run): the program is unknown
        let mut assumed = input();
        assumed.fields[1].1 .0 = vec![("y".into(), vec![], vec![1])]; // the key, then the check
        assumed.checks = vec![(1, CheckKind::Assume.code(), String::new(), false, vec![])];
        let plan = Plan::from_input(assumed).expect("plan");
        assert_eq!(
            decision(&plan, r#"{"a": "x", "b": "y"}"#),
            Some((vec![], vec![0]))
        );
        assert_eq!(
            decision(&plan, r#"{"a": "x", "b": "z"}"#),
            Some((vec![0], vec![]))
        );
        assert_eq!(
            decision(&plan, r#"{"a": "z", "b": "y"}"#),
            Some((vec![], vec![]))
        ); // not triggered
           // without a program a triggered rule is undecided; rules Python evaluates on every event
           // are undecided whatever the event holds (once each)
        let mut open = input();
        open.programs = vec![None];
        open.undecided = vec![0];
        let plan = Plan::from_input(open).expect("plan");
        assert!(plan.always);
        assert_eq!(decision(&plan, r#"{"a": "x"}"#), Some((vec![], vec![0])));
        assert_eq!(decision(&plan, r#"{"c": 1}"#), Some((vec![], vec![0])));
        // an untriggered rule's program decides it on every event
        let untriggered = PlanIn {
            programs: vec![Some(vec![(ATOM, 0), (NOT, 0)])],
            special: vec![(
                0,
                SpecialKind::Exists.code(),
                "a".into(),
                String::new(),
                false,
                false,
                true,
            )],
            displays: vec!["a".into()],
            atom_count: 1,
            ..clone_input(&plan_input_untriggered())
        };
        let plan = Plan::from_input(untriggered).expect("plan");
        assert_eq!(decision(&plan, r#"{"b": 1}"#), Some((vec![0], vec![])));
        assert_eq!(decision(&plan, r#"{"a": 1}"#), Some((vec![], vec![])));
        let mut bad = input();
        bad.undecided = vec![3];
        assert_eq!(
            Plan::from_input(bad).err().as_deref(),
            Some("rule position out of range")
        );
    }

    #[test]
    fn without_a_program_the_trigger_clauses_decide() {
        let mut input = input();
        input.programs = vec![None];
        input.rest = vec![vec![vec![1]]]; // "and b: y" as a second trigger clause
        let plan = Plan::from_input(input).expect("plan");
        assert!(!plan.strict);
        assert_eq!(candidate(&plan, r#"{"a": "x", "b": "y"}"#), Some(true));
        assert_eq!(candidate(&plan, r#"{"a": "x", "b": "z"}"#), Some(false));
        // not strict: both values of a duplicated key are seen
        assert_eq!(
            candidate(&plan, r#"{"a": "z", "a": "x", "b": "y"}"#),
            Some(true)
        );
    }

    #[test]
    fn one_byte_keys_are_found_as_the_search_finds_longer_ones() {
        // keys: (text, anywhere, prefix, suffix, verify); one-byte keys skip the automaton
        let keys = vec![
            ("0".into(), vec![0], vec![], vec![], vec![]),
            (":".into(), vec![], vec![1], vec![2], vec![]),
            ("0a".into(), vec![3], vec![], vec![], vec![]),
            ("a".into(), vec![], vec![4], vec![5], vec![]),
            ("a0a".into(), vec![], vec![6], vec![7], vec![]),
        ];
        let mut input = input();
        input.fields = vec![("a".into(), (vec![], vec![], keys))];
        input.triggers = vec![];
        input.rest = vec![];
        input.programs = vec![];
        input.atom_count = 8;
        input.displays = vec![String::new(); 8];
        input.shown = vec![];
        let plan = Plan::from_input(input).expect("plan");
        let field = &plan.fields["a"];
        assert_eq!(field.bytes.len(), 3);
        assert_eq!(field.searched, vec![2, 4]);
        let mut hits = Hits::new(plan.atom_count, plan.key_count);
        let mut out = Vec::new();
        for (text, want) in [
            ("a0a0a", vec![0, 3, 4, 5, 6, 7]),
            (":0a:", vec![0, 1, 2, 3]),
            ("b:b", vec![]),
            ("xyz", vec![]),
            ("", vec![]),
            ("a", vec![4, 5]),
            // past SHORT_VALUE bytes, one `memchr` per one-byte key
            (&format!(":{}0a", "x".repeat(SHORT_VALUE)), vec![0, 1, 3, 5]),
            (&format!("{}b", "x".repeat(SHORT_VALUE)), vec![]),
        ] {
            plan.verdicts(
                field,
                text.as_bytes(),
                text.as_bytes(),
                true,
                &mut hits,
                &mut out,
            );
            let mut got: Vec<u32> = out
                .iter()
                .map(|&(atom, verdict)| {
                    assert!(verdict == Verdict::Yes, "{text:?}");
                    atom
                })
                .collect();
            got.sort_unstable();
            got.dedup();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn checks_confirm_what_keys_found() {
        let mut input = input();
        input.fields[0].1 .0 = vec![];
        input.fields[0].1 .1 = vec![0]; // atom 0 checked on every value of "a"
        input.programs = vec![None];
        for (kind, literal, glob, hit, miss) in [
            (CheckKind::Prefix, "ab", vec![], "ABc", "cab"),
            (CheckKind::Suffix, "bc", vec![], "aBC", "bca"),
            (CheckKind::Contains, "b", vec![], "abc", "ac"),
            (CheckKind::Exact, "abc", vec![], "ABC", "abcd"),
            (
                CheckKind::Glob,
                "",
                vec![
                    (0, "a".to_owned()),
                    (1, "*".to_owned()),
                    (2, "?".to_owned()),
                ],
                "abc",
                "a",
            ),
            (CheckKind::Regex, "^a+b$", vec![], "aab\n", "ba"),
        ] {
            let mut input = PlanIn {
                ..clone_input(&input)
            };
            input.checks = vec![(
                0,
                kind.code(),
                literal.into(),
                kind == CheckKind::Regex,
                glob,
            )];
            let plan = Plan::from_input(input).expect("plan");
            assert_eq!(
                candidate(&plan, &format!(r#"{{"a": {hit:?}}}"#)),
                Some(true),
                "{kind:?}"
            );
            assert_eq!(
                candidate(&plan, &format!(r#"{{"a": {miss:?}}}"#)),
                Some(false),
                "{kind:?}"
            );
        }
        // an assumed check always counts
        let mut assumed = clone_input(&input);
        assumed.checks = vec![(0, CheckKind::Assume.code(), String::new(), false, vec![])];
        let plan = Plan::from_input(assumed).expect("plan");
        assert_eq!(candidate(&plan, r#"{"a": "anything"}"#), Some(true));
    }

    #[test]
    fn networks_are_read_as_pythons_ipaddress_reads_them() {
        let ten = |t: &str| cidr(t.as_bytes(), false, 10 << 24, 0xff00_0000);
        assert_eq!(ten("10.1.2.3"), Verdict::Yes);
        assert_eq!(ten("11.1.2.3"), Verdict::No);
        for no in [
            "010.1.2.3",
            "10.1.2",
            "10.1.2.3.4",
            "10.1.2.256",
            "10..2.3",
            "10.1.2.3/8",
            "",
            "x",
            "::ffff:10.1.2.3",
            "10.1.2.3%x",
            "1000.1.2.3",
            "+10.1.2.3",
            "10.1.2.-3",
        ] {
            assert_eq!(ten(no), Verdict::No, "{no}");
        }
        // stripped by Python, or not ASCII: Python decides
        for unknown in [
            " 10.1.2.3",
            "10.1.2.3\n",
            "10.1.2.3\u{a0}",
            "\u{661}0.1.2.3",
        ] {
            assert_eq!(ten(unknown), Verdict::Unknown, "{unknown:?}");
        }
        assert_eq!(ten(&"1".repeat(65)), Verdict::No);
        let v6 = |t: &str| cidr(t.as_bytes(), true, 0, 0);
        assert_eq!(v6("10.1.2.3"), Verdict::No);
        assert_eq!(v6("fe80::1"), Verdict::Unknown);
        assert_eq!(ipv4(b"255.255.255.255"), Some(u32::MAX));
        assert_eq!(ipv4(b"0.0.0.0"), Some(0));
        assert!(Check::new(CheckKind::Cidr, "1/x".into(), false, &[]).is_err());
    }

    fn clone_input(input: &PlanIn) -> PlanIn {
        PlanIn {
            fields: input.fields.clone(),
            keywords: input.keywords.clone(),
            checks: input.checks.clone(),
            triggers: input.triggers.clone(),
            rest: input.rest.clone(),
            undecided: input.undecided.clone(),
            programs: input.programs.clone(),
            untriggered: input.untriggered.clone(),
            special: input.special.clone(),
            displays: input.displays.clone(),
            shown: input.shown.clone(),
            atom_count: input.atom_count,
            cased_fields: input.cased_fields,
            strict_depth: input.strict_depth,
        }
    }

    #[test]
    fn special_atoms_and_unknowns_in_programs() {
        // rule: "a is null or b exists", untriggered (runs on every event)
        let input = PlanIn {
            fields: vec![],
            keywords: None,
            checks: vec![],
            triggers: vec![],
            rest: vec![vec![]],
            undecided: vec![],
            programs: vec![Some(vec![(ATOM, 0), (ATOM, 1), (OR, 2)])],
            untriggered: vec![0],
            special: vec![
                (
                    0,
                    SpecialKind::Null.code(),
                    "a".into(),
                    String::new(),
                    false,
                    false,
                    false,
                ),
                (
                    1,
                    SpecialKind::Exists.code(),
                    "b".into(),
                    String::new(),
                    false,
                    false,
                    true,
                ),
            ],
            displays: vec!["a".into(), "b".into()],
            shown: vec![Some(vec![0, 1])],
            atom_count: 2,
            cased_fields: false,
            strict_depth: 30,
        };
        let plan = Plan::from_input(input).expect("plan");
        assert_eq!(candidate(&plan, r#"{"a": 1}"#), Some(false));
        assert_eq!(candidate(&plan, r#"{"a": null}"#), Some(true));
        assert_eq!(candidate(&plan, r#"{"x": 1}"#), Some(true));
        assert_eq!(candidate(&plan, r#"{"a": [null, 2], "c": 1}"#), Some(false));
        assert_eq!(candidate(&plan, r#"{"a": 1, "B": {"c": 2}}"#), Some(true));
        // a field reference between values the walk cannot fold is unknown: kept
        let reference = PlanIn {
            programs: vec![Some(vec![(ATOM, 0)])],
            special: vec![(
                0,
                SpecialKind::FieldRef.code(),
                "a".into(),
                "b".into(),
                false,
                false,
                false,
            )],
            displays: vec!["a".into()],
            atom_count: 1,
            ..clone_input(&plan_input_untriggered())
        };
        let plan = Plan::from_input(reference).expect("plan");
        assert_eq!(candidate(&plan, r#"{"a": "X", "b": "x"}"#), Some(true));
        assert_eq!(candidate(&plan, r#"{"a": "x", "b": "y"}"#), Some(false));
        assert_eq!(candidate(&plan, r#"{"a": "é", "b": "y"}"#), Some(true));
    }

    fn plan_input_untriggered() -> PlanIn {
        PlanIn {
            fields: vec![],
            keywords: None,
            checks: vec![],
            triggers: vec![],
            rest: vec![vec![]],
            undecided: vec![],
            programs: vec![None],
            untriggered: vec![0],
            special: vec![],
            displays: vec![],
            shown: vec![None],
            atom_count: 0,
            cased_fields: false,
            strict_depth: 30,
        }
    }
}
