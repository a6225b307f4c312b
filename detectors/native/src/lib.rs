//! pipesentry's native screen (`detectors._native`).
//!
//! Most log events match no rule. The Python engine still pays for decoding,
//! flattening and scanning each one; this module reads raw JSON messages and
//! answers, per message, whether the Python engine could match it. The answer
//! is conservative: "no" only when the Python engine would certainly return no
//! match, otherwise the message goes through the full Python path. For the
//! messages it clears it also reads their event time, so stateful detectors
//! still see time pass. See `detectors/sigma/screen.py` for the Python side.

mod abi;
mod glob;
mod plan;
mod shown;
mod time;
mod walk;

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use std::sync::Mutex;

use abi::PlanIn;
use plan::{FastMap, Plan, ValueCache};
use shown::{Firsts, Value, Values};
use walk::Walk;

create_exception!(
    _native,
    AbiMismatch,
    PyValueError,
    "A screen plan of another ABI version than this build of the extension reads."
);

/// The screen of one route (the rules of one event log source).
#[pyclass(module = "detectors._native", frozen)]
struct Screen {
    plan: Plan,
    /// The display names of shown fields (`plan.shown.names`), as Python strings.
    names: Vec<Py<PyString>>,
    /// Verdicts of repeated values, and the per-atom tables of shown fields, kept across calls
    /// (one scan runs at a time per screen).
    cache: Mutex<(ValueCache, Firsts)>,
}

/// One plan entry, by name (all are required: a plan is complete or refused).
fn entry<'py, T: FromPyObjectOwned<'py>>(plan: &Bound<'py, PyDict>, name: &str) -> PyResult<T> {
    match plan.get_item(name)? {
        Some(value) => value
            .extract::<T>()
            .map_err(|e| PyTypeError::new_err(format!("screen plan entry {name}: {}", e.into()))),
        None => Err(PyTypeError::new_err(format!("screen plan without {name}"))),
    }
}

const ENTRIES: [&str; 15] = [
    "abi_version",
    "fields",
    "keywords",
    "checks",
    "triggers",
    "rest",
    "undecided",
    "programs",
    "untriggered",
    "special",
    "displays",
    "shown",
    "atom_count",
    "cased_fields",
    "strict_depth",
];

#[pymethods]
impl Screen {
    /// Build from the plan `detectors.sigma.screen.export_plan` makes of a route's index (the
    /// keyword arguments of `detectors.sigma.screen_abi.Plan`). Its version is checked first:
    /// [`AbiMismatch`] names both.
    #[new]
    #[pyo3(signature = (**plan))]
    fn new(py: Python<'_>, plan: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let empty = PyDict::new(py);
        let plan = plan.unwrap_or(&empty);
        let version = match plan.get_item("abi_version")? {
            Some(value) => Some(
                value
                    .extract::<i64>()
                    .map_err(|_| AbiMismatch::new_err(abi::version_error(None)))?,
            ),
            None => None,
        };
        if version != Some(i64::from(abi::ABI_VERSION)) {
            return Err(AbiMismatch::new_err(abi::version_error(version)));
        }
        for key in plan.keys() {
            let key: String = key.extract()?;
            if !ENTRIES.contains(&key.as_str()) {
                return Err(PyTypeError::new_err(format!(
                    "screen plan entry {key} is unknown"
                )));
            }
        }
        let input = PlanIn {
            fields: entry(plan, "fields")?,
            keywords: entry(plan, "keywords")?,
            checks: entry(plan, "checks")?,
            triggers: entry(plan, "triggers")?,
            rest: entry(plan, "rest")?,
            undecided: entry(plan, "undecided")?,
            programs: entry(plan, "programs")?,
            untriggered: entry(plan, "untriggered")?,
            special: entry(plan, "special")?,
            displays: entry(plan, "displays")?,
            shown: entry(plan, "shown")?,
            atom_count: entry(plan, "atom_count")?,
            cased_fields: entry(plan, "cased_fields")?,
            strict_depth: entry(plan, "strict_depth")?,
        };
        let plan = Plan::from_input(input).map_err(PyValueError::new_err)?;
        let names = plan
            .shown
            .names
            .iter()
            .map(|name| PyString::intern(py, name).unbind())
            .collect();
        Ok(Screen {
            plan,
            names,
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
        let (outcomes, _) = self.outcomes(
            py,
            &owned,
            time_fields.as_deref(),
            max_bytes,
            max_depth,
            false,
        );
        let (picked, latest, _) = runs(outcomes, |position| {
            fallbacks.get_item(position)?.extract::<i64>()
        })?;
        Ok((picked, latest))
    }

    /// Like [`Screen::scan`], and each picked message's rules decided: a third list, by picked
    /// position, of None (the walk could not read the message as Python would: Python evaluates
    /// every rule) or `(matched, undecided)`, the positions of the route's rules that match and
    /// of those Python must evaluate (ascending; every other rule does not match). A message
    /// whose rules all decide to no match is cleared, unless its event time needs Python.
    #[pyo3(signature = (values, fallbacks, time_fields, max_bytes, max_depth))]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        fallbacks: &Bound<'py, PyList>,
        time_fields: Option<Vec<String>>,
        max_bytes: usize,
        max_depth: usize,
    ) -> PyResult<PyDecided<'py>> {
        if time_fields.is_some() && fallbacks.len() != values.len() {
            return Err(PyValueError::new_err(
                "fallbacks and values differ in length",
            ));
        }
        let owned: Vec<Option<Bound<'_, PyBytes>>> = values
            .iter()
            .map(|v| v.cast_into::<PyBytes>().ok())
            .collect();
        let (outcomes, values) = self.outcomes(
            py,
            &owned,
            time_fields.as_deref(),
            max_bytes,
            max_depth,
            true,
        );
        let (picked, latest, decisions) = runs(outcomes, |position| {
            fallbacks.get_item(position)?.extract::<i64>()
        })?;
        Ok((picked, latest, self.decisions(py, decisions, &values)?))
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
        let (outcomes, _) = self.outcomes(
            py,
            &owned,
            time_fields.as_deref(),
            max_bytes,
            max_depth,
            false,
        );
        let timestamp = intern!(py, "timestamp");
        let (picked, latest, _) = runs(outcomes, |position| {
            records
                .get_item(position)?
                .getattr(timestamp)?
                .extract::<i64>()
        })?;
        Ok((picked, latest))
    }

    /// [`Screen::decide`] over Kafka records, as [`Screen::scan_records`] reads them.
    #[pyo3(signature = (records, time_fields, max_bytes, max_depth))]
    fn decide_records<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyList>,
        time_fields: Option<Vec<String>>,
        max_bytes: usize,
        max_depth: usize,
    ) -> PyResult<PyDecided<'py>> {
        let value = intern!(py, "value");
        let owned: Vec<Option<Bound<'_, PyBytes>>> = records
            .iter()
            .map(|record| record.getattr(value).ok()?.cast_into::<PyBytes>().ok())
            .collect();
        let (outcomes, values) = self.outcomes(
            py,
            &owned,
            time_fields.as_deref(),
            max_bytes,
            max_depth,
            true,
        );
        let timestamp = intern!(py, "timestamp");
        let (picked, latest, decisions) = runs(outcomes, |position| {
            records
                .get_item(position)?
                .getattr(timestamp)?
                .extract::<i64>()
        })?;
        Ok((picked, latest, self.decisions(py, decisions, &values)?))
    }
}

/// The rules of one message: (matched, undecided) rule positions, and per matched rule the
/// (display name, value) numbers of the fields its match shows (None: Python makes them).
type Decision = (Vec<u32>, Vec<u32>, Vec<Option<Vec<(u32, u32)>>>);

/// Picked positions, the latest event time of each cleared run, and each picked message's
/// decision (None: not decided).
type Decided = (Vec<usize>, Vec<f64>, Vec<Option<Decision>>);

/// [`Decided`] as Python receives it: each decision a tuple `(matched, undecided, shown)`, where
/// `shown` holds, per matched rule, the tuple of the `(display name, value)` pairs its match
/// shows, or None.
type PyDecided<'py> = (Vec<usize>, Vec<f64>, Bound<'py, PyList>);

/// What the screen made of one message.
enum Outcome {
    /// Python must decode it and evaluate the rules the decision leaves undecided (all of
    /// them without a decision).
    Picked(Option<Decision>),
    /// No rule can match; its event time, if it was read (NaN: not needed).
    Cleared(f64),
    /// No rule can match, and it has no event time field: its record's timestamp counts.
    ClearedAtFallback,
}

/// Positions to decode, and the latest event time of each run of cleared messages around them.
fn runs(outcomes: Vec<Outcome>, fallback_ms: impl Fn(usize) -> PyResult<i64>) -> PyResult<Decided> {
    let mut picked = Vec::new();
    let mut decisions = Vec::new();
    let mut latest = vec![f64::NAN];
    for (position, outcome) in outcomes.into_iter().enumerate() {
        let ts = match outcome {
            Outcome::Picked(decision) => {
                picked.push(position);
                decisions.push(decision);
                latest.push(f64::NAN);
                continue;
            }
            Outcome::Cleared(ts) => ts,
            Outcome::ClearedAtFallback => fallback_ms(position)? as f64 / 1000.0,
        };
        let last = latest.last_mut().expect("one run at least");
        if last.is_nan() || ts > *last {
            *last = ts;
        }
    }
    Ok((picked, latest, decisions))
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
        decide: bool,
    ) -> (Vec<Outcome>, Values) {
        let messages: Vec<Option<&[u8]>> = owned
            .iter()
            .map(|b| b.as_ref().map(|b| b.as_bytes()))
            .collect();
        py.detach(|| self.screen(&messages, time_fields, max_bytes, max_depth, decide))
    }

    fn screen(
        &self,
        messages: &[Option<&[u8]>],
        time_fields: Option<&[String]>,
        max_bytes: usize,
        max_depth: usize,
        decide: bool,
    ) -> (Vec<Outcome>, Values) {
        if self.plan.always && !decide {
            // some rule may match whatever a message holds: reading the messages cannot clear one
            let outcomes = messages.iter().map(|_| Outcome::Picked(None)).collect();
            return (outcomes, Values::default());
        }
        let timed = time_fields.is_some();
        let time_fields = time_fields.unwrap_or_default();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut walk = Walk::new(
            &self.plan,
            time_fields,
            max_depth,
            std::mem::take(&mut cache.0),
        );
        if decide {
            walk.track_shown(std::mem::take(&mut cache.1));
        }
        let (mut matched, mut undecided) = (Vec::new(), Vec::new());
        let outcomes = messages
            .iter()
            .map(|message| {
                let read = match message {
                    Some(data) => data.len() <= max_bytes && walk.run(data),
                    None => false,
                };
                if !read {
                    return Outcome::Picked(None);
                }
                let decision = if decide {
                    let Walk {
                        hits,
                        tried,
                        firsts,
                        ..
                    } = &mut walk;
                    self.plan.decide(hits, tried, &mut matched, &mut undecided);
                    if !matched.is_empty() || !undecided.is_empty() {
                        let present = |atom| (!hits.unknown(atom)).then(|| hits.has(atom));
                        let shown = matched
                            .iter()
                            .map(|&position| {
                                firsts
                                    .active
                                    .then(|| self.plan.shown.fields(position, present, firsts))
                                    .flatten()
                            })
                            .collect();
                        return Outcome::Picked(Some((matched.clone(), undecided.clone(), shown)));
                    }
                    Some((Vec::new(), Vec::new(), Vec::new()))
                } else if self.plan.candidate(&walk.hits, &mut walk.tried) {
                    return Outcome::Picked(None);
                } else {
                    None
                };
                if !timed {
                    return Outcome::Cleared(f64::NAN);
                }
                match walk.time() {
                    Ok(Some(ts)) => Outcome::Cleared(ts),
                    Ok(None) => Outcome::ClearedAtFallback,
                    // no rule matches, but the event time needs Python's parser
                    Err(()) => Outcome::Picked(decision),
                }
            })
            .collect();
        let (values, firsts, values_shown) = walk.into_parts();
        *cache = (values, firsts);
        (outcomes, values_shown)
    }

    /// The decisions as Python receives them (see [`PyDecided`]); a value shown by several
    /// matches of a message is one Python object.
    fn decisions<'py>(
        &self,
        py: Python<'py>,
        decisions: Vec<Option<Decision>>,
        values: &Values,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut made: Vec<Option<Bound<'py, PyAny>>> = vec![None; values.values.len()];
        let out = PyList::empty(py);
        // messages of a batch are often decided alike (no match, or the same rules that show no
        // value): one Python decision for them all (Python only reads decisions). A decision
        // showing a value is the only one with it (values are numbered per message).
        let mut alike: FastMap<Decision, Bound<'py, PyTuple>> = FastMap::default();
        for decision in decisions {
            let Some(decision) = decision else {
                out.append(py.None())?;
                continue;
            };
            let shared = decision.2.iter().flatten().all(Vec::is_empty);
            if shared {
                if let Some(same) = alike.get(&decision) {
                    out.append(same)?;
                    continue;
                }
            }
            let (matched, undecided, shown) = &decision;
            let fields = PyList::empty(py);
            let mut tuples: Made<'py, Vec<(u32, u32)>> = Vec::new();
            let mut made_pairs: Made<'py, (u32, u32)> = Vec::new();
            for pairs in shown {
                let Some(pairs) = pairs.as_ref() else {
                    fields.append(py.None())?;
                    continue;
                };
                // matches of one message often show the same fields: one tuple for them all
                if let Some((_, same)) = tuples.iter().find(|(other, _)| other == pairs) {
                    fields.append(same)?;
                    continue;
                }
                let mut items = Vec::with_capacity(pairs.len());
                for &(name, value) in pairs {
                    if let Some((_, same)) =
                        made_pairs.iter().find(|(pair, _)| *pair == (name, value))
                    {
                        items.push(same.clone());
                        continue;
                    }
                    let slot = &mut made[value as usize];
                    let object = match slot {
                        Some(object) => object.clone(),
                        None => slot
                            .insert(value_object(py, values, values.values[value as usize])?)
                            .clone(),
                    };
                    let display = self.names[name as usize].bind(py).clone().into_any();
                    let pair = PyTuple::new(py, [display, object])?;
                    made_pairs.push(((name, value), pair.clone()));
                    items.push(pair);
                }
                let tuple = PyTuple::new(py, items)?;
                fields.append(&tuple)?;
                tuples.push((pairs.clone(), tuple));
            }
            let made_decision = PyTuple::new(
                py,
                [
                    PyList::new(py, matched)?.into_any(),
                    PyList::new(py, undecided)?.into_any(),
                    fields.into_any(),
                ],
            )?;
            out.append(&made_decision)?;
            if shared {
                alike.insert(decision, made_decision);
            }
        }
        Ok(out)
    }
}

/// Tuples made for one message, by what they hold (fields, or one (display, value) pair).
type Made<'py, K> = Vec<(K, Bound<'py, PyTuple>)>;

/// A shown value as the Python object the decoder makes of it.
fn value_object<'py>(
    py: Python<'py>,
    values: &Values,
    value: Value,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Str(start, end) => PyString::new(py, values.text(start, end)).into_any(),
        Value::Int(v) => v.into_pyobject(py)?.into_any(),
        Value::UInt(v) => v.into_pyobject(py)?.into_any(),
        Value::Float(v) => v.into_pyobject(py)?.into_any(),
        Value::Bool(v) => pyo3::types::PyBool::new(py, v).to_owned().into_any(),
        Value::Null => py.None().into_bound(py),
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Screen>()?;
    m.add("AbiMismatch", py.get_type::<AbiMismatch>())?;
    m.add("ABI_VERSION", abi::ABI_VERSION)?;
    // the enums of the plan format, {class name: {member name: code}}, and the limits mirrored
    // from Python: compared with `detectors.sigma.screen_abi` by tests/unit/detectors/sigma/test_screen_abi.py
    let enums = PyDict::new(py);
    for (name, members) in abi::enums() {
        let table = PyDict::new(py);
        for (member, code) in members {
            table.set_item(member, code)?;
        }
        enums.set_item(name, table)?;
    }
    m.add("ABI", enums)?;
    let limits = PyDict::new(py);
    limits.set_item("EPOCH_MS_THRESHOLD", time::EPOCH_MS_THRESHOLD)?;
    limits.set_item("MAX_TS", time::MAX_TS)?;
    limits.set_item("PYTHON_UNICODE", walk::PYTHON_UNICODE)?;
    m.add("LIMITS", limits)?;
    Ok(())
}
