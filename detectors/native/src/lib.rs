//! pipesentry's native screen (`detectors._native`).
//!
//! Most log events match no rule. The Python engine still pays for decoding,
//! flattening and scanning each one; this module reads raw JSON messages and
//! answers, per message, whether the Python engine could match it. The answer
//! is conservative: "no" only when the Python engine would certainly return no
//! match, otherwise the message goes through the full Python path. For the
//! messages it clears it also reads their event time, so stateful detectors
//! still see time pass. See `detectors/sigma/screen.py` for the Python side.

mod glob;
mod plan;
mod time;
mod walk;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use std::sync::Mutex;

use plan::{Check, FastMap, FieldPlan, Key, Plan, Special, ValueCache};
use walk::Walk;

type ExactIn = Vec<(String, Vec<u32>, Vec<u32>)>;
type KeyIn = Vec<(String, Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>)>;
type FieldIn = (ExactIn, Vec<u32>, KeyIn);
type CheckIn = (u32, i32, String, bool, Vec<(u8, String)>);
type SpecialIn = (u32, u8, String, String, bool, bool, bool);

fn field_plan(input: FieldIn, key_base: &mut usize, id: u32) -> PyResult<FieldPlan> {
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
    FieldPlan::new(exact, every, keys, base, id)
        .map_err(|e| PyValueError::new_err(format!("automaton: {e}")))
}

/// The screen of one route (the rules of one event log source).
#[pyclass(module = "detectors._native", frozen)]
struct Screen {
    plan: Plan,
    /// Verdicts of repeated values, kept across calls (one scan runs at a time per screen).
    cache: Mutex<ValueCache>,
}

#[pymethods]
impl Screen {
    /// Build from the plan `detectors.sigma.screen.export_plan` makes of a route's index.
    #[new]
    #[allow(clippy::type_complexity, clippy::too_many_arguments)] // keyword arguments from Python
    fn new(
        fields: Vec<(String, FieldIn)>,
        keywords: Option<FieldIn>,
        checks: Vec<CheckIn>,
        triggers: Vec<(u32, Vec<u32>)>,
        rest: Vec<Vec<Vec<u32>>>,
        always: bool,
        programs: Vec<Option<Vec<(u8, u32)>>>,
        untriggered: Vec<u32>,
        special: Vec<SpecialIn>,
        atom_count: usize,
    ) -> PyResult<Self> {
        let mut key_base = 0usize;
        let mut field_map = FastMap::default();
        let mut indexed = vec![false; atom_count];
        let range = |atom: u32| -> PyResult<usize> {
            if (atom as usize) < atom_count {
                Ok(atom as usize)
            } else {
                Err(PyValueError::new_err("atom id out of range"))
            }
        };
        let mark = |fp: &FieldPlan, indexed: &mut Vec<bool>| -> PyResult<()> {
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
        let keywords = match keywords {
            Some(input) => {
                let fp = field_plan(input, &mut key_base, keyword_id)?;
                mark(&fp, &mut indexed)?;
                Some(fp)
            }
            None => None,
        };
        let mut check_map: Vec<Option<Check>> = (0..atom_count).map(|_| None).collect();
        for (atom, kind, literal, cased, parts) in checks {
            let check = if kind == -1 {
                Check::regex(&literal, cased)
            } else if kind < 0 {
                Check::Assume
            } else {
                Check::Text {
                    kind: kind as u8,
                    literal: literal.into_bytes(),
                    cased,
                    glob: glob::tokens(&parts),
                }
            };
            check_map[range(atom)?] = Some(check);
        }
        for &atom in rest.iter().flatten().flatten() {
            range(atom)?;
        }
        let mut trigger_table = vec![Vec::new(); atom_count];
        for (atom, positions) in triggers {
            if positions.iter().any(|&p| p as usize >= rest.len()) {
                return Err(PyValueError::new_err("rule position out of range"));
            }
            trigger_table[range(atom)?] = positions;
        }
        for &(op, arg) in programs.iter().flatten().flatten() {
            if op == 0 {
                range(arg)?;
            }
        }
        let fits =
            |p: &u32| (*p as usize) < rest.len() && (always || programs[*p as usize].is_some());
        if programs.len() != rest.len() || !untriggered.iter().all(fits) {
            return Err(PyValueError::new_err("programs do not fit the rules"));
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
            let reference = kind == 2;
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
        let strict = programs.iter().any(Option::is_some) || !specials.is_empty();
        let plan = Plan {
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
            always,
            programs,
            untriggered,
            special: specials,
            slots,
            texts,
            strict,
            atom_count,
            key_count: key_base,
        };
        Ok(Screen {
            plan,
            cache: Mutex::default(),
        })
    }

    /// Screen raw messages: returns the positions that must take the Python path (they may
    /// match, or the screen cannot tell) and, per run of cleared messages before, between and
    /// after them, the latest event time of the run (NaN for an empty run, or when
    /// `time_fields` is None: time is not needed).
    ///
    /// A cleared message without a readable time field (every message, when `time_fields` is
    /// empty) counts at its `fallbacks` entry (milliseconds), as the Python path would.
    #[pyo3(signature = (values, fallbacks, time_fields, max_bytes, max_depth))]
    fn scan(
        &self,
        py: Python<'_>,
        values: &Bound<'_, PyList>,
        fallbacks: &Bound<'_, PyList>,
        time_fields: Option<Vec<String>>,
        max_bytes: usize,
        max_depth: usize,
    ) -> PyResult<(Vec<usize>, Vec<f64>)> {
        if time_fields.is_some() && fallbacks.len() != values.len() {
            return Err(PyValueError::new_err(
                "fallbacks and values differ in length",
            ));
        }
        let owned: Vec<Option<Bound<'_, PyBytes>>> = values
            .iter()
            .map(|v| v.cast_into::<PyBytes>().ok())
            .collect();
        let outcomes = self.outcomes(py, &owned, time_fields.as_deref(), max_bytes, max_depth);
        runs(&outcomes, |position| {
            fallbacks.get_item(position)?.extract::<i64>()
        })
    }

    /// Like [`Screen::scan`] over Kafka records (objects with `value` and `timestamp`, in
    /// milliseconds), read here: no lists are built for the call.
    #[pyo3(signature = (records, time_fields, max_bytes, max_depth))]
    fn scan_records(
        &self,
        py: Python<'_>,
        records: &Bound<'_, PyList>,
        time_fields: Option<Vec<String>>,
        max_bytes: usize,
        max_depth: usize,
    ) -> PyResult<(Vec<usize>, Vec<f64>)> {
        let value = intern!(py, "value");
        let owned: Vec<Option<Bound<'_, PyBytes>>> = records
            .iter()
            .map(|record| record.getattr(value).ok()?.cast_into::<PyBytes>().ok())
            .collect();
        let outcomes = self.outcomes(py, &owned, time_fields.as_deref(), max_bytes, max_depth);
        let timestamp = intern!(py, "timestamp");
        runs(&outcomes, |position| {
            records
                .get_item(position)?
                .getattr(timestamp)?
                .extract::<i64>()
        })
    }
}

/// What the screen made of one message.
enum Outcome {
    /// Python must decode and evaluate it.
    Picked,
    /// No rule can match; its event time, if it was read (NaN: not needed).
    Cleared(f64),
    /// No rule can match, and it has no event time field: its record's timestamp counts.
    ClearedAtFallback,
}

/// Positions to decode, and the latest event time of each run of cleared messages around them.
fn runs(
    outcomes: &[Outcome],
    fallback_ms: impl Fn(usize) -> PyResult<i64>,
) -> PyResult<(Vec<usize>, Vec<f64>)> {
    let mut picked = Vec::new();
    let mut latest = vec![f64::NAN];
    for (position, outcome) in outcomes.iter().enumerate() {
        let ts = match outcome {
            Outcome::Picked => {
                picked.push(position);
                latest.push(f64::NAN);
                continue;
            }
            Outcome::Cleared(ts) => *ts,
            Outcome::ClearedAtFallback => fallback_ms(position)? as f64 / 1000.0,
        };
        let last = latest.last_mut().expect("one run at least");
        if last.is_nan() || ts > *last {
            *last = ts;
        }
    }
    Ok((picked, latest))
}

impl Screen {
    /// Screen the messages without the GIL (bytes are immutable, and `owned` holds them).
    fn outcomes(
        &self,
        py: Python<'_>,
        owned: &[Option<Bound<'_, PyBytes>>],
        time_fields: Option<&[String]>,
        max_bytes: usize,
        max_depth: usize,
    ) -> Vec<Outcome> {
        let messages: Vec<Option<&[u8]>> = owned
            .iter()
            .map(|b| b.as_ref().map(|b| b.as_bytes()))
            .collect();
        py.detach(|| self.screen(&messages, time_fields, max_bytes, max_depth))
    }

    fn screen(
        &self,
        messages: &[Option<&[u8]>],
        time_fields: Option<&[String]>,
        max_bytes: usize,
        max_depth: usize,
    ) -> Vec<Outcome> {
        if self.plan.always {
            // some rule may match whatever a message holds: reading the messages cannot clear one
            return messages.iter().map(|_| Outcome::Picked).collect();
        }
        let timed = time_fields.is_some();
        let time_fields = time_fields.unwrap_or_default();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut walk = Walk::new(
            &self.plan,
            time_fields,
            max_depth,
            std::mem::take(&mut *cache),
        );
        let outcomes = messages
            .iter()
            .map(|message| {
                let cleared = match message {
                    Some(data) => {
                        data.len() <= max_bytes
                            && walk.run(data)
                            && !self.plan.candidate(&walk.hits, &mut walk.tried)
                    }
                    None => false,
                };
                match (cleared, timed) {
                    (false, _) => Outcome::Picked,
                    (true, false) => Outcome::Cleared(f64::NAN),
                    (true, true) => match walk.time() {
                        Ok(Some(ts)) => Outcome::Cleared(ts),
                        Ok(None) => Outcome::ClearedAtFallback,
                        Err(()) => Outcome::Picked,
                    },
                }
            })
            .collect();
        *cache = walk.into_cache();
        outcomes
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Screen>()?;
    Ok(())
}
