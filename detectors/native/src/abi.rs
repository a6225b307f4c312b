//! The plan format shared with `detectors/sigma/screen_abi.py`, which owns it: every enum here
//! mirrors one there (same member names and codes) and the extension exports its copy
//! (`ABI_VERSION`, `ABI`, `LIMITS`) so that `tests/unit/detectors/sigma/test_screen_abi.py` compares them both
//! ways. A plan of another version is refused before anything of it is read.

/// Version of the plan format (`screen_abi.ABI_VERSION`).
pub const ABI_VERSION: u32 = 4;

/// An enum of the plan format: each member with its Python name and integer code.
macro_rules! abi_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal as $py:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every member: Python name, member, code.
            pub const MEMBERS: &'static [(&'static str, $name, i64)] = &[$(($py, $name::$variant, $code)),+];

            /// The member of a code, or an error naming the enum and the code.
            pub fn from_code(code: i64) -> Result<Self, String> {
                match code {
                    $($code => Ok($name::$variant),)+
                    _ => Err(format!(concat!("unknown ", stringify!($name), " code {}"), code)),
                }
            }

            #[allow(dead_code)] // used by the tests and the constants' export
            pub fn code(self) -> i64 {
                match self {
                    $($name::$variant => $code),+
                }
            }
        }
    };
}

abi_enum! {
    /// Operations of a condition program (postfix).
    Op {
        /// Push the truth of atom `arg`.
        Atom = 0 as "ATOM",
        /// Push `arg != 0`.
        Const = 1 as "CONST",
        /// Negate the top.
        Not = 2 as "NOT",
        /// Replace the top `arg` values by their conjunction.
        And = 3 as "AND",
        /// Replace the top `arg` values by their disjunction.
        Or = 4 as "OR",
    }
}

abi_enum! {
    /// How an indexed atom is confirmed: a text kind (`detectors.sigma.text.Kind`), an RE2
    /// regex, a network, or assumed satisfied.
    CheckKind {
        Exact = 0 as "EXACT",
        Prefix = 1 as "PREFIX",
        Suffix = 2 as "SUFFIX",
        Contains = 3 as "CONTAINS",
        Glob = 4 as "GLOB",
        Any = 5 as "ANY",
        Regex = -1 as "REGEX",
        Assume = -2 as "ASSUME",
        /// `|cidr`: an IPv4 network (`prefix/mask`, as integers) or, flagged, an IPv6 one.
        Cidr = -3 as "CIDR",
    }
}

abi_enum! {
    /// Atoms tested on the whole event.
    SpecialKind {
        Null = 0 as "NULL",
        Exists = 1 as "EXISTS",
        FieldRef = 2 as "FIELD_REF",
    }
}

abi_enum! {
    /// Pieces of a glob pattern.
    GlobPart {
        Literal = 0 as "LITERAL",
        Star = 1 as "STAR",
        One = 2 as "ONE",
    }
}

/// Every enum of the format by its Python class name, as (member name, code) pairs.
pub fn enums() -> Vec<(&'static str, Vec<(&'static str, i64)>)> {
    fn members<T: Copy>(all: &[(&'static str, T, i64)]) -> Vec<(&'static str, i64)> {
        all.iter().map(|&(name, _, code)| (name, code)).collect()
    }
    vec![
        ("Op", members(Op::MEMBERS)),
        ("CheckKind", members(CheckKind::MEMBERS)),
        ("SpecialKind", members(SpecialKind::MEMBERS)),
        ("GlobPart", members(GlobPart::MEMBERS)),
    ]
}

/// A field's exact keys: (folded value, atoms it decides, atoms to check).
pub type ExactIn = (String, Vec<u32>, Vec<u32>);
/// A substring key: (text, anywhere, prefix, suffix, verify atoms).
pub type KeyIn = (String, Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);
/// `screen_abi.FieldPlan`.
pub type FieldIn = (Vec<ExactIn>, Vec<u32>, Vec<KeyIn>);
/// `screen_abi.Check`: (atom, kind, literal or regex, flag, glob parts).
pub type CheckIn = (u32, i64, String, bool, Vec<(i64, String)>);
/// `screen_abi.Special`: (atom, kind, field, other field, starts, ends, want).
pub type SpecialIn = (u32, i64, String, String, bool, bool, bool);

/// `screen_abi.Plan` without its version (checked first, by the caller).
pub struct PlanIn {
    pub fields: Vec<(String, FieldIn)>,
    pub keywords: Option<FieldIn>,
    pub checks: Vec<CheckIn>,
    pub triggers: Vec<(u32, Vec<u32>)>,
    pub rest: Vec<Vec<Vec<u32>>>,
    /// Rule positions Python evaluates on every event (`screen_abi.Plan.undecided`).
    pub undecided: Vec<u32>,
    pub programs: Vec<Option<Vec<(i64, u32)>>>,
    pub untriggered: Vec<u32>,
    pub special: Vec<SpecialIn>,
    /// Per atom, the name a match shows it under (`screen_abi.Plan.displays`).
    pub displays: Vec<String>,
    /// Per rule position, its positive atoms in rule order, or None (`screen_abi.Plan.shown`).
    pub shown: Vec<Option<Vec<u32>>>,
    pub atom_count: usize,
    /// Keys compared as spelled (`screen_abi.Plan.cased_fields`).
    pub cased_fields: bool,
    pub strict_depth: usize,
}

/// The refusal of a plan of another version, naming both.
pub fn version_error(theirs: Option<i64>) -> String {
    match theirs {
        Some(version) => format!(
            "screen plan of ABI version {version}, but this build of detectors._native reads version \
             {ABI_VERSION}: rebuild the extension (detectors/native) from the same source as detectors/sigma"
        ),
        None => format!(
            "screen plan without an ABI version, but this build of detectors._native reads version \
             {ABI_VERSION}: rebuild the extension (detectors/native) from the same source as detectors/sigma"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for (name, members) in enums() {
            let mut codes: Vec<i64> = members.iter().map(|m| m.1).collect();
            codes.sort_unstable();
            codes.dedup();
            assert_eq!(codes.len(), members.len(), "{name}");
        }
        for &(_, op, code) in Op::MEMBERS {
            assert_eq!(Op::from_code(code), Ok(op));
            assert_eq!(op.code(), code);
        }
        for &(_, kind, code) in CheckKind::MEMBERS {
            assert_eq!(CheckKind::from_code(code), Ok(kind));
        }
        assert_eq!(Op::from_code(5), Err("unknown Op code 5".to_owned()));
        assert!(CheckKind::from_code(-4).is_err() && GlobPart::from_code(3).is_err());
        assert!(SpecialKind::from_code(-1).is_err());
    }

    #[test]
    fn the_refusal_names_both_versions() {
        let message = version_error(Some(7));
        assert!(
            message.contains("version 7") && message.contains(&format!("version {ABI_VERSION}"))
        );
        assert!(version_error(None).contains("without an ABI version"));
    }
}
