//! The sink's records decoded straight into Arrow column buffers (`ColumnBuilder`, behind
//! `sinks.clickhouse.decode.DecodedBatch`).
//!
//! A record of the joiner's output topics is a JSON array of objects (events, rejects or log lines). The
//! reference decoder in Python (`sinks.clickhouse.decode.decode_records`, then `encode.arrow_ipc`) builds a
//! dict, a record object and a Python value per field before pyarrow copies them into columns; here the
//! JSON is read once into the columns' buffers. This path takes only the records whose every value has its
//! column's plain type (a string for a text column, a number for a time or a float, a non-negative integer
//! for a counter), with every required field present and no key twice: for those the result is the
//! reference's, value for value (tested). Anything else (not JSON, not an array of objects, a value of
//! another type, a bad schema version, an empty event key) returns -1 from `add` and leaves the builder as
//! it was: the caller decodes that record the reference way, which gives the reason it is dead-lettered.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::join;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Largest integer a float holds exactly: integers beyond it are left to the reference decoder.
const EXACT_INT: u64 = 1 << 53;
/// Largest time DateTime64(3) takes here (year 2299), as `encode._MAX_MS`.
const MAX_MS: i64 = 10_413_791_999_999;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Time,
    UInt,
    Int,
    OptFloat,
}

/// A column's value when its field is missing from an object.
enum Fallback {
    Required,
    Str(String),
    I(i64),
    U(u64),
    Null,
}

enum Column {
    Str {
        offsets: Vec<i64>,
        data: Vec<u8>,
    },
    I64(Vec<i64>),
    U64(Vec<u64>),
    F64 {
        values: Vec<f64>,
        valid: Vec<bool>,
        nulls: usize,
    },
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Str => Column::Str {
                offsets: vec![0],
                data: Vec::new(),
            },
            Kind::Time | Kind::Int => Column::I64(Vec::new()),
            Kind::UInt => Column::U64(Vec::new()),
            Kind::OptFloat => Column::F64 {
                values: Vec::new(),
                valid: Vec::new(),
                nulls: 0,
            },
        }
    }

    fn truncate(&mut self, rows: usize) {
        match self {
            Column::Str { offsets, data } => {
                offsets.truncate(rows + 1);
                data.truncate(offsets[rows] as usize);
            }
            Column::I64(v) => v.truncate(rows),
            Column::U64(v) => v.truncate(rows),
            Column::F64 {
                values,
                valid,
                nulls,
            } => {
                values.truncate(rows);
                valid.truncate(rows);
                *nulls = valid.iter().filter(|v| !**v).count();
            }
        }
    }
}

/// One JSON value of a known field.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    I(i64),
    U(u64),
    F(f64),
    Null,
}

/// A value converted for its column.
enum Cell<'a> {
    Str(Cow<'a, str>),
    I(i64),
    U(u64),
    F(Option<f64>),
}

#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse<T>(why: &str) -> Result<T, Refused> {
    Err(Refused(why.to_string()))
}

/// Epoch seconds -> milliseconds as `encode.to_ms` makes them: Python's `round` (ties to even), 0 for
/// what is not positive, clamped to `MAX_MS`.
fn to_ms(seconds: f64) -> i64 {
    if !seconds.is_finite() || seconds <= 0.0 {
        return 0;
    }
    let ms = (seconds * 1000.0).round_ties_even();
    if ms >= MAX_MS as f64 {
        MAX_MS
    } else {
        ms as i64
    }
}

fn exact_float(s: &Scalar<'_>) -> Option<f64> {
    match *s {
        Scalar::F(v) => Some(v),
        Scalar::I(v) if v.unsigned_abs() <= EXACT_INT => Some(v as f64),
        Scalar::U(v) if v <= EXACT_INT => Some(v as f64),
        _ => None,
    }
}

/// Decodes JSON arrays of objects into the columns of one table. `spec`: per column (name, kind, default),
/// kind one of "str", "time", "uint", "int", "optfloat", default None for a required field (a time's
/// default in ms); `nonempty`: columns whose text must not be empty (an event's key); `version`: the
/// schema-version column and the newest version read.
#[pyclass(module = "eximtrack_core")]
pub struct ColumnBuilder {
    names: HashMap<String, usize>,
    /// the column names as interned Python strings, in column order (`add_objects` reads these attributes)
    attrs: Vec<Py<PyString>>,
    kinds: Vec<Kind>,
    defaults: Vec<Fallback>,
    nonempty: Vec<bool>,
    version: Option<(usize, u64)>,
    columns: Vec<Column>,
    rows: usize,
}

#[pymethods]
impl ColumnBuilder {
    #[new]
    #[pyo3(signature = (spec, nonempty, version))]
    fn new(
        spec: &Bound<'_, PyList>,
        nonempty: Vec<String>,
        version: Option<(String, u64)>,
    ) -> PyResult<ColumnBuilder> {
        let py = spec.py();
        let mut names = HashMap::new();
        let mut attrs = Vec::new();
        let mut kinds = Vec::new();
        let mut defaults = Vec::new();
        for (i, item) in spec.iter().enumerate() {
            let (name, kind, default): (String, String, Bound<'_, PyAny>) = item.extract()?;
            let kind = match kind.as_str() {
                "str" => Kind::Str,
                "time" => Kind::Time,
                "uint" => Kind::UInt,
                "int" => Kind::Int,
                "optfloat" => Kind::OptFloat,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown column kind {other:?}"
                    )))
                }
            };
            let default = if default.is_none() {
                if kind == Kind::OptFloat {
                    Fallback::Null
                } else {
                    Fallback::Required
                }
            } else {
                match kind {
                    Kind::Str => Fallback::Str(default.extract()?),
                    Kind::Time | Kind::Int => Fallback::I(default.extract()?),
                    Kind::UInt => Fallback::U(default.extract()?),
                    Kind::OptFloat => {
                        return Err(PyValueError::new_err("a float column's default is None"));
                    }
                }
            };
            attrs.push(PyString::intern(py, &name).unbind());
            names.insert(name, i);
            kinds.push(kind);
            defaults.push(default);
        }
        let mut must = vec![false; kinds.len()];
        for name in nonempty {
            match names.get(&name) {
                Some(&i) if kinds[i] == Kind::Str => must[i] = true,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "{name:?} is not a text column"
                    )))
                }
            }
        }
        let version = match version {
            None => None,
            Some((name, newest)) => match names.get(&name) {
                Some(&i) if kinds[i] == Kind::UInt => Some((i, newest)),
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "{name:?} is not a counter column"
                    )))
                }
            },
        };
        let columns = kinds.iter().map(|k| Column::new(*k)).collect();
        Ok(ColumnBuilder {
            names,
            attrs,
            kinds,
            defaults,
            nonempty: must,
            version,
            columns,
            rows: 0,
        })
    }

    /// Append the elements of one record (a JSON array of objects): how many, or -1 when the record is
    /// not one this path takes (nothing of it is kept then).
    fn add(&mut self, value: &[u8]) -> i64 {
        let rows = self.rows;
        let mut de = serde_json::Deserializer::from_slice(value);
        let added = de
            .deserialize_seq(Records { builder: self })
            .map_err(|_| ())
            .and_then(|n| de.end().map(|_| n).map_err(|_| ()));
        match added {
            Ok(n) => n as i64,
            Err(()) => {
                for column in &mut self.columns {
                    column.truncate(rows);
                }
                self.rows = rows;
                -1
            }
        }
    }

    /// Append records given as objects with one attribute per column (the record classes of
    /// schemas/records.py, as the joiner makes them for `eximtrack ingest`): how many, or -1 when one of
    /// them holds a value this path does not take (nothing of them is kept then; the caller encodes them
    /// the reference way, `encode.record_batch`'s Python columns). Taken: a `str` for a text column (None
    /// is ""), a `float` or `int` for a time (None is 0), an `int` for a counter, None or a finite `float`
    /// for a float: for those the columns are the reference's, value for value.
    fn add_objects(&mut self, records: &Bound<'_, PyList>) -> i64 {
        let py = records.py();
        let rows = self.rows;
        // the slots of the first record's class, read directly from every record of exactly that class
        let slots_of = records.iter().next().and_then(|first| {
            let cls = first.get_type();
            let offsets = self
                .attrs
                .iter()
                .map(|name| join::slot_offset(&cls, name.bind(py).to_str().ok()?).ok())
                .collect::<Option<Vec<isize>>>()?;
            Some((cls, offsets))
        });
        let mut values: Vec<Bound<'_, PyAny>> = Vec::with_capacity(self.attrs.len());
        for record in records.iter() {
            values.clear();
            let mut ok = true;
            match &slots_of {
                Some((cls, offsets)) if record.get_type().is(cls) => {
                    for off in offsets {
                        // SAFETY: `off` is the offset of an object slot of `record`'s exact class
                        let p = unsafe {
                            *((record.as_ptr() as *mut u8).offset(*off) as *mut *mut ffi::PyObject)
                        };
                        if p.is_null() {
                            ok = false; // an unset slot: the reference raises its AttributeError
                            break;
                        }
                        values.push(unsafe { Bound::from_borrowed_ptr(py, p) });
                    }
                }
                _ => {
                    for name in &self.attrs {
                        match record.getattr(name.bind(py)) {
                            Ok(v) => values.push(v),
                            Err(_) => {
                                ok = false;
                                break;
                            }
                        }
                    }
                }
            }
            let slots = ok.then(|| {
                values
                    .iter()
                    .zip(&self.kinds)
                    .map(|(v, kind)| object_scalar(*kind, v))
                    .collect::<Option<Vec<_>>>()
            });
            let pushed = match slots.flatten() {
                Some(slots) => self.push(slots.into_iter().map(Some).collect()).is_ok(),
                None => false,
            };
            if !pushed {
                for column in &mut self.columns {
                    column.truncate(rows);
                }
                self.rows = rows;
                return -1;
            }
        }
        (self.rows - rows) as i64
    }

    fn __len__(&self) -> usize {
        self.rows
    }

    /// The columns as Arrow buffers, and the builder empty again: (rows, [(validity, offsets, data,
    /// null count) per column]); validity and offsets are None where the type has none or no value is null.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<(usize, Bound<'py, PyList>)> {
        let out = PyList::empty(py);
        for (kind, column) in self.kinds.iter().zip(self.columns.iter_mut()) {
            let (validity, offsets, data, nulls) =
                match std::mem::replace(column, Column::new(*kind)) {
                    Column::Str { offsets, data } => (
                        None,
                        Some(le_bytes(py, &offsets)),
                        PyBytes::new(py, &data),
                        0,
                    ),
                    Column::I64(values) => (None, None, le_bytes(py, &values), 0),
                    Column::U64(values) => (None, None, le_bytes(py, &values), 0),
                    Column::F64 {
                        values,
                        valid,
                        nulls,
                    } => {
                        let validity = (nulls > 0).then(|| {
                            let mut bits = vec![0u8; valid.len().div_ceil(8)];
                            for (i, _) in valid.iter().enumerate().filter(|(_, ok)| **ok) {
                                bits[i / 8] |= 1 << (i % 8);
                            }
                            PyBytes::new(py, &bits)
                        });
                        (validity, None, le_bytes(py, &values), nulls)
                    }
                };
            out.append((validity, offsets, data, nulls).into_pyobject(py)?)?;
        }
        let rows = self.rows;
        self.rows = 0;
        Ok((rows, out))
    }
}

trait LeBytes: Copy {
    const SIZE: usize;
    fn put(self, out: &mut [u8]);
}

impl LeBytes for i64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
}

impl LeBytes for u64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
}

impl LeBytes for f64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
}

fn le_bytes<'py, T: LeBytes>(py: Python<'py>, values: &[T]) -> Bound<'py, PyBytes> {
    PyBytes::new_with(py, values.len() * T::SIZE, |buf| {
        for (chunk, v) in buf.chunks_exact_mut(T::SIZE).zip(values) {
            v.put(chunk);
        }
        Ok(())
    })
    .expect("allocating the column's bytes")
}

impl ColumnBuilder {
    /// One object's fields, checked and converted, appended as a row.
    fn push(&mut self, slots: Vec<Option<Scalar<'_>>>) -> Result<(), Refused> {
        let mut cells = Vec::with_capacity(slots.len());
        for (i, slot) in slots.into_iter().enumerate() {
            let cell = match (self.kinds[i], slot) {
                (Kind::Str, Some(Scalar::Str(s))) => Cell::Str(s),
                (Kind::Time, Some(s)) => match exact_float(&s) {
                    Some(v) => Cell::I(to_ms(v)),
                    None => return refuse("a time that is not a number"),
                },
                (Kind::UInt, Some(Scalar::U(v))) => Cell::U(v),
                (Kind::UInt, Some(Scalar::I(v))) if v >= 0 => Cell::U(v as u64),
                (Kind::Int, Some(Scalar::I(v))) => Cell::I(v),
                (Kind::Int, Some(Scalar::U(v))) if v <= i64::MAX as u64 => Cell::I(v as i64),
                (Kind::OptFloat, Some(Scalar::Null)) => Cell::F(None),
                (Kind::OptFloat, Some(s)) => match exact_float(&s) {
                    Some(v) => Cell::F(Some(v)),
                    None => return refuse("a float that is not a number"),
                },
                (_, Some(_)) => return refuse("a value of another type than its column's"),
                (_, None) => match &self.defaults[i] {
                    Fallback::Required => return refuse("a required field is missing"),
                    Fallback::Str(s) => Cell::Str(Cow::Owned(s.clone())),
                    Fallback::I(v) => Cell::I(*v),
                    Fallback::U(v) => Cell::U(*v),
                    Fallback::Null => Cell::F(None),
                },
            };
            if self.nonempty[i] && matches!(&cell, Cell::Str(s) if s.is_empty()) {
                return refuse("an empty key field");
            }
            cells.push(cell);
        }
        if let Some((i, newest)) = self.version {
            if matches!(cells[i], Cell::U(v) if v > newest) {
                return refuse("a newer schema version");
            }
        }
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            match (column, cell) {
                (Column::Str { offsets, data }, Cell::Str(s)) => {
                    data.extend_from_slice(s.as_bytes());
                    offsets.push(data.len() as i64);
                }
                (Column::I64(v), Cell::I(x)) => v.push(x),
                (Column::U64(v), Cell::U(x)) => v.push(x),
                (
                    Column::F64 {
                        values,
                        valid,
                        nulls,
                    },
                    Cell::F(x),
                ) => {
                    values.push(x.unwrap_or(0.0));
                    valid.push(x.is_some());
                    if x.is_none() {
                        *nulls += 1;
                    }
                }
                _ => unreachable!("a cell is made for its column's kind"),
            }
        }
        self.rows += 1;
        Ok(())
    }
}

/// A Python value as the scalar the reference encoder reads it as, for a column of `kind`; None where the
/// reference would convert it another way than `push` does (it then encodes the whole batch).
fn object_scalar<'a>(kind: Kind, v: &'a Bound<'_, PyAny>) -> Option<Scalar<'a>> {
    if v.is_none() {
        return match kind {
            Kind::Str => Some(Scalar::Str(Cow::Borrowed(""))), // encode._str(None)
            Kind::Time => Some(Scalar::F(0.0)), // encode.to_ms(None) == to_ms(0.0) == 0
            Kind::OptFloat => Some(Scalar::Null),
            Kind::UInt | Kind::Int => None,
        };
    }
    if let Ok(s) = v.cast_exact::<PyString>() {
        return s.to_str().ok().map(|s| Scalar::Str(Cow::Borrowed(s)));
    }
    if let Ok(f) = v.cast_exact::<PyFloat>() {
        let f = f.value();
        // the reference makes a float column's infinity or NaN a null: left to it
        return (kind != Kind::OptFloat || f.is_finite()).then_some(Scalar::F(f));
    }
    if v.is_exact_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() {
        if let Ok(n) = v.extract::<i64>() {
            return Some(Scalar::I(n));
        }
        return v.extract::<u64>().ok().map(Scalar::U);
    }
    None
}

/// The record: a JSON array of objects.
struct Records<'b> {
    builder: &'b mut ColumnBuilder,
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while seq
            .next_element_seed(Element {
                builder: &mut *self.builder,
            })?
            .is_some()
        {
            n += 1;
        }
        Ok(n)
    }
}

struct Element<'b> {
    builder: &'b mut ColumnBuilder,
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut slots: Vec<Option<Scalar<'de>>> = Vec::new();
        slots.resize_with(self.builder.kinds.len(), || None);
        while let Some(key) = map.next_key_seed(Key {
            names: &self.builder.names,
        })? {
            match key {
                Some(i) => {
                    if slots[i].is_some() {
                        return Err(de::Error::custom("a key twice"));
                    }
                    slots[i] = Some(map.next_value_seed(ScalarSeed)?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?; // unknown fields are ignored, as the reference does
                }
            }
        }
        self.builder.push(slots).map_err(de::Error::custom)
    }
}

/// A key -> its column, or None for a field the table does not have.
struct Key<'n> {
    names: &'n HashMap<String, usize>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<usize>, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.names.get(v).copied())
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Scalar<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or null")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::I(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::U(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::F(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    // booleans, arrays and objects: the default visit_* refuse them (the reference decoder takes the record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_ms_rounds_ties_to_even_and_clamps() {
        assert_eq!(to_ms(0.0005), 0); // 0.5 ms -> 0 (ties to even)
        assert_eq!(to_ms(0.0015), 2);
        assert_eq!(to_ms(-1.0), 0);
        assert_eq!(to_ms(f64::NAN), 0);
        assert_eq!(to_ms(1e12), MAX_MS);
        assert_eq!(to_ms(1_700_000_000.123), 1_700_000_000_123);
    }
}
