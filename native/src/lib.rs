//! eximtrack's compiled core, as the Python module `eximtrack_core`: the Exim main-log parser (parse.rs)
//! behind `stream.parse.parse_line`, the joiner's rules (join.rs: `Joiner` and `MessageState`, behind
//! `stream.join`, which is their Python interface), the records' ids (`stable_id`, behind
//! `stream.join.stable_id`), the arrival time of a message id (`msgid_time`, behind stream.clock) and the
//! sink's decoder of the joiner's JSON records into Arrow columns (columns.rs: `ColumnBuilder`, behind
//! `sinks.clickhouse.decode`). This file only turns the parser's results into Python objects and registers
//! the module.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

pub mod columns;
pub mod join;
pub mod parse;

use parse::{Parsed, S};

/// What one line says (stream/parse.py documents the kinds). Read-only; unused attributes are "" (None for
/// `zone`), `fields` a new dict.
#[pyclass(module = "eximtrack_core", frozen, get_all, freelist = 128)]
pub struct ParsedLine {
    kind: Py<PyString>,
    date: Py<PyString>,
    time: Py<PyString>,
    zone: Option<Py<PyString>>,
    pid: Py<PyString>,
    msgid: Py<PyString>,
    flag: Py<PyString>,
    body: Py<PyString>,
    fields: Py<PyDict>,
    address: Py<PyString>,
    original: Py<PyString>,
    parents: Py<PyString>,
    message: Py<PyString>,
    rule: Py<PyString>,
    reason: Py<PyString>,
}

#[pymethods]
impl ParsedLine {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ParsedLine({:?}, msgid={:?}, flag={:?}, fields={})",
            self.kind.bind(py).to_string(),
            self.msgid.bind(py).to_string(),
            self.flag.bind(py).to_string(),
            self.fields
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()
        )
    }
}

fn text(py: Python<'_>, s: &str, empty: &Bound<'_, PyString>) -> Py<PyString> {
    if s.is_empty() {
        empty.clone().unbind()
    } else {
        PyString::new(py, s).unbind()
    }
}

fn static_text(py: Python<'_>, s: &'static str) -> Py<PyString> {
    PyString::intern(py, s).unbind()
}

fn to_python(py: Python<'_>, p: &Parsed<'_>) -> PyResult<ParsedLine> {
    let empty = pyo3::intern!(py, "");
    let fields = PyDict::new(py);
    for (k, v) in &p.fields.0 {
        let key: &S<'_> = k;
        fields.set_item(PyString::intern(py, key), text(py, v, empty))?;
    }
    Ok(ParsedLine {
        kind: static_text(py, p.kind),
        date: text(py, p.date, empty),
        time: text(py, p.time, empty),
        zone: p.zone.map(|z| PyString::new(py, z).unbind()),
        pid: text(py, p.pid, empty),
        msgid: text(py, p.msgid, empty),
        flag: text(py, p.flag, empty),
        body: text(py, p.body, empty),
        fields: fields.unbind(),
        address: text(py, &p.address, empty),
        original: text(py, &p.original, empty),
        parents: text(py, &p.parents, empty),
        message: text(py, &p.message, empty),
        rule: static_text(py, p.rule),
        reason: static_text(py, p.reason),
    })
}

/// Parse one main-log line (without its newline). Never raises: what it cannot read is `unparsed`.
#[pyfunction]
fn parse_line(py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<ParsedLine> {
    let lossy;
    let text = match text.to_str() {
        Ok(text) => text,
        // lone surrogates (no decoder of eximtrack makes them): each becomes U+FFFD, one code point as well
        Err(_) => {
            lossy = text.to_string_lossy();
            &lossy
        }
    };
    // a parser bug must not lose the line or stop the worker: it becomes a reject with the reason
    match std::panic::catch_unwind(|| parse::parse_line(text)) {
        Ok(parsed) => to_python(py, &parsed),
        Err(_) => to_python(
            py,
            &parse::Parsed {
                kind: "unparsed",
                reason: "parser error: panic",
                ..Default::default()
            },
        ),
    }
}

/// An Exim message id: `tttttt-pppppp-ff` (<= 4.96) or `tttttt-ppppppppppp-ffff` (4.97+).
#[pyfunction]
fn is_msgid(token: &str) -> bool {
    parse::is_msgid(token)
}

/// `"a \"b\" c"` -> `a "b" c` (Exim's C-style quoting of T=, C=, DN=).
#[pyfunction]
fn unquote(value: &str) -> String {
    parse::unquote(value).into_owned()
}

const ID_BYTES: usize = 10;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The id of a record: BLAKE2b with a 10-byte digest of the parts' UTF-8 joined by U+001F, as lowercase hex
/// (Python's `hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=10)
/// .hexdigest()`: the ids stored before it moved here stay the same). Lone surrogates, which no decoder of
/// eximtrack makes, are encoded as "surrogatepass" does.
/// The id of `parts` (bytes), as `stable_id` makes it of the parts' text.
pub fn stable_id_of(parts: &[&[u8]]) -> String {
    // blake2b_simd: the same BLAKE2b, vectorised where the CPU allows (ids are ~a fifth of a line's cost)
    let mut state = blake2b_simd::Params::new().hash_length(ID_BYTES).to_state();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            state.update(b"\x1f");
        }
        state.update(part);
    }
    let digest = state.finalize();
    let mut hex = String::with_capacity(2 * ID_BYTES);
    for &byte in digest.as_bytes() {
        hex.push(HEX[(byte >> 4) as usize] as char);
        hex.push(HEX[(byte & 15) as usize] as char);
    }
    hex
}

#[pyfunction]
#[pyo3(signature = (*parts))]
fn stable_id(parts: &Bound<'_, PyTuple>) -> PyResult<String> {
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(parts.len());
    for part in parts.iter() {
        let text = part.cast::<PyString>()?;
        match text.to_str() {
            Ok(s) => owned.push(s.as_bytes().to_vec()),
            Err(_) => {
                let raw = text.call_method1("encode", ("utf-8", "surrogatepass"))?;
                owned.push(raw.cast::<PyBytes>()?.as_bytes().to_vec());
            }
        }
    }
    let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
    Ok(stable_id_of(&refs))
}

/// Arrival time (epoch seconds) encoded in the first six base-62 digits of an Exim message id (0.0 when
/// they are not base 62).
#[pyfunction]
fn msgid_time(msgid: &str) -> f64 {
    join::msgid_time(msgid)
}

#[pymodule]
fn eximtrack_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ParsedLine>()?;
    m.add_function(wrap_pyfunction!(parse_line, m)?)?;
    m.add_function(wrap_pyfunction!(is_msgid, m)?)?;
    m.add_function(wrap_pyfunction!(unquote, m)?)?;
    m.add_function(wrap_pyfunction!(stable_id, m)?)?;
    m.add_function(wrap_pyfunction!(msgid_time, m)?)?;
    m.add_function(wrap_pyfunction!(join::use_records, m)?)?;
    m.add_class::<columns::ColumnBuilder>()?;
    m.add_class::<join::Joiner>()?;
    m.add_class::<join::State>()?;
    m.add("NOTE_CAP", join::NOTE_CAP)?;
    m.add("STATE_FORMAT", join::STATE_FORMAT)?;
    m.add("SWEEP_EVERY", join::SWEEP_EVERY)?;
    m.add("SWEEP_MIN_INTERVAL", join::SWEEP_MIN_INTERVAL)?;
    m.add(
        "ARRIVAL_FIELDS",
        PyTuple::new(m.py(), join::ARRIVAL_FIELDS)?,
    )?;
    Ok(())
}
