//! The joiner's rules: parsed Exim lines -> per-recipient delivery events (stream/join.py documents the
//! rules and is the Python interface: `stream.join.Joiner` is `Joiner` here, `MessageState` is this file's).
//!
//! Pure: no faust, Kafka or ClickHouse. It reads the parser's result (parse.rs) directly, keeps each
//! message's rows natively (an insertion-ordered map with Python-dict semantics, as the rules iterate it),
//! and makes the Python records of schemas/records.py (registered once by stream/join.py through
//! `use_records`) only for what it emits. Python's semantics are kept where they show: `str.lower()`
//! (Python's own, for non-ASCII text), `round()` (ties to even), `float()`, `str.isdigit()`, `re`'s `\s`.
//! The states live in the caller's mapping (a dict, or the stream worker's table adapter) as `MessageState`
//! objects; the local-time rule stays in stream/clock.py (`LocalClock.hour_base`, asked once per hour).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use compact_str::CompactString as Str;
use indexmap::IndexMap;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple, PyType};

use crate::parse::{self, py_space, Parsed};
use crate::stable_id_of;

/// Note lines kept per message (a runaway `logwrite` must not flood a message's timeline).
pub const NOTE_CAP: i64 = 256;
/// Lines between two sweeps of finished/idle states …
pub const SWEEP_EVERY: u64 = 4096;
/// … and at least this much event time.
pub const SWEEP_MIN_INTERVAL: f64 = 30.0;
/// `MessageState.to_dict()`: rows as differences from the arrival (1: rows as full events). The key `gone`
/// (removed rows' tombstones, the same form) is written only when there are some: a worker of the code before
/// it reads such a state, ignoring them, and this code reads a state without it.
pub const STATE_FORMAT: i64 = 2;
/// schemas.records.DeliveryEvent's fields, in order (checked when the class is registered).
pub const EVENT_FIELDS: [&str; 40] = [
    "event_id",
    "type",
    "server",
    "msgid",
    "email",
    "sender",
    "user",
    "domain",
    "owner",
    "senderhost",
    "senderip",
    "senderauth",
    "spamscore",
    "sendunixtime",
    "size",
    "subject",
    "message_id",
    "protocol",
    "parent_msgid",
    "recipient",
    "deliveredto",
    "deliveryuser",
    "deliverydomain",
    "deliveryowner",
    "router",
    "transport",
    "host",
    "ip",
    "message",
    "confirmation",
    "tls",
    "queue_time",
    "delivery_time",
    "actionunixtime",
    "attempts",
    "frozen",
    "transport_is_remote",
    "version",
    "is_deleted",
    "schema_version",
];
const ARRIVAL_OFFSET: usize = 4;
/// What the arrival (`<=` and what precedes it) gives every row of its message, in stored order:
/// EVENT_FIELDS[4..19], from `email` to `parent_msgid`.
pub const ARRIVAL_FIELDS: [&str; 15] = {
    let mut fields = [""; 15];
    let mut i = 0;
    while i < fields.len() {
        fields[i] = EVENT_FIELDS[ARRIVAL_OFFSET + i];
        i += 1;
    }
    fields
};
const REJECT_FIELDS: [&str; 8] = [
    "reject_id",
    "server",
    "line",
    "reason",
    "file_id",
    "offset",
    "logunixtime",
    "schema_version",
];
const LOGLINE_FIELDS: [&str; 6] = [
    "line_id",
    "server",
    "msgid",
    "logunixtime",
    "line",
    "schema_version",
];
const OUTPUT_FIELDS: [&str; 3] = ["events", "rejects", "lines"];
/// Joiner.stats, in its order.
pub const STATS: [&str; 15] = [
    "lines",
    "message_lines",
    "rejections",
    "ignored",
    "rejects",
    "events",
    "completed",
    "expired",
    "retry_skips",
    "replayed",
    "open_messages",
    "notes",
    "notes_over_cap",
    "evented",
    "attached",
];
const LINES: usize = 0;
const MESSAGE_LINES: usize = 1;
const REJECTIONS: usize = 2;
const IGNORED: usize = 3;
const REJECTS: usize = 4;
const EVENTS: usize = 5;
const COMPLETED: usize = 6;
const EXPIRED: usize = 7;
const RETRY_SKIPS: usize = 8;
const REPLAYED: usize = 9;
const OPEN_MESSAGES: usize = 10;
const NOTES: usize = 11;
const NOTES_OVER_CAP: usize = 12;
const EVENTED: usize = 13;
const ATTACHED: usize = 14;

const SKIP_KEEPS: [&str; 5] = ["defer", "success", "filtered", "archive", "failure"];
const NO_STATE_KINDS: [&str; 3] = ["queued", "locked", "info"];
const FINAL_TYPES: [&str; 5] = ["success", "filtered", "archive", "failure", "rejected"];
const FILTERED_TARGETS: [&str; 3] = [":blackhole:", "discarded", "/dev/null"];

fn is_final(etype: &str) -> bool {
    FINAL_TYPES.contains(&etype)
}

// ------------------------------------------------------------------------------- Python's string semantics

/// `s.lower()`: ASCII here, anything else by Python itself (its Unicode tables and special cases).
pub fn py_lower<'a>(py: Python<'_>, s: &'a str) -> PyResult<Cow<'a, str>> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Ok(Cow::Owned(s.to_ascii_lowercase()));
        }
        return Ok(Cow::Borrowed(s));
    }
    let lowered = PyString::new(py, s).call_method0(pyo3::intern!(py, "lower"))?;
    Ok(Cow::Owned(lowered.cast::<PyString>()?.to_str()?.to_owned()))
}

fn py_isdigit(py: Python<'_>, c: char) -> PyResult<bool> {
    if c.is_ascii() {
        return Ok(c.is_ascii_digit());
    }
    let mut buf = [0u8; 4];
    PyString::new(py, c.encode_utf8(&mut buf))
        .call_method0(pyo3::intern!(py, "isdigit"))?
        .extract()
}

/// Python's `float(text)`: None for a ValueError.
fn py_float(py: Python<'_>, text: &str) -> PyResult<Option<f64>> {
    match py.get_type::<PyFloat>().call1((text,)) {
        Ok(v) => Ok(Some(v.extract()?)),
        Err(e) if e.is_instance_of::<PyValueError>(py) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The domain of an address, lower-cased ("" without `@`).
fn domain_of(py: Python<'_>, address: &str) -> PyResult<Str> {
    match address.rfind('@') {
        Some(at) => Ok(Str::from(py_lower(py, &address[at + 1..])?.as_ref())),
        None => Ok(Str::default()),
    }
}

/// `0.005s`, `2s`, `1m3s`, `1h2m` (Exim's readconf_printtime) -> seconds.
pub fn seconds(py: Python<'_>, value: &str) -> PyResult<Option<f64>> {
    if value.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0f64;
    let mut num = String::new();
    let number = |py: Python<'_>, num: &str| -> PyResult<Option<f64>> {
        if num.is_ascii() {
            Ok(num.parse::<f64>().ok())
        } else {
            py_float(py, num)
        }
    };
    for ch in value.chars() {
        if ch == '.' || py_isdigit(py, ch)? {
            num.push(ch);
        } else if let Some(unit) = match ch {
            'w' => Some(604800.0),
            'd' => Some(86400.0),
            'h' => Some(3600.0),
            'm' => Some(60.0),
            's' => Some(1.0),
            _ => None,
        } {
            let n = if num.is_empty() {
                0.0
            } else {
                match number(py, &num)? {
                    Some(n) => n,
                    None => return Ok(None),
                }
            };
            total += n * unit;
            num.clear();
        } else {
            return Ok(None);
        }
    }
    if !num.is_empty() {
        match number(py, &num)? {
            Some(n) => total += n,
            None => return Ok(None),
        }
    }
    Ok(Some(total))
}

/// The S= of a line as bytes; 0 when it is not a number the store's UInt64 (and the records' JSON) can hold.
pub fn message_size(py: Python<'_>, value: &str) -> PyResult<u64> {
    if value.is_ascii() {
        if !value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(value.parse().unwrap_or(0));
        }
        return Ok(0);
    }
    // `value.isdigit() and len(value) <= 19`, then `int(value)`, by Python (other Unicode digits)
    let text = PyString::new(py, value);
    let digits: bool = text.call_method0(pyo3::intern!(py, "isdigit"))?.extract()?;
    if digits && value.chars().count() <= 19 {
        return py
            .get_type::<pyo3::types::PyInt>()
            .call1((text,))?
            .extract();
    }
    Ok(0)
}

fn strip_angle(value: &str) -> &str {
    if value.len() >= 2 && value.starts_with('<') && value.ends_with('>') {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

/// Addresses and local parts compare case-insensitively; pipes and paths keep their case.
fn row_key_part<'a>(py: Python<'_>, value: &'a str) -> PyResult<Cow<'a, str>> {
    if value.starts_with('|') || value.starts_with('/') {
        Ok(Cow::Borrowed(value))
    } else {
        py_lower(py, value)
    }
}

/// `for a b "quoted local"@c`: recipients are space-separated, but a quoted local part may contain spaces
/// (Python's `re.findall(r'(?:"(?:[^"\\]|\\.)*"|[^\s"])+', text)`).
pub fn recipient_list(text: &str) -> Vec<&str> {
    let quoted_end = |start: usize| -> Option<usize> {
        let mut it = text[start + 1..].char_indices();
        while let Some((i, c)) = it.next() {
            match c {
                '"' => return Some(start + 1 + i + 1),
                '\\' => match it.next() {
                    Some((_, '\n')) | None => return None,
                    Some(_) => {}
                },
                _ => {}
            }
        }
        None
    };
    let mut out = Vec::new();
    let n = text.len();
    let mut i = 0;
    while i < n {
        let start = i;
        let mut j = i;
        while j < n {
            let c = text[j..].chars().next().unwrap();
            if c == '"' {
                match quoted_end(j) {
                    Some(end) => j = end,
                    None => break,
                }
            } else if py_space(c) {
                break;
            } else {
                j += c.len_utf8();
            }
        }
        if j > start {
            out.push(&text[start..j]);
            i = j;
        } else {
            i += text[i..].chars().next().unwrap().len_utf8();
        }
    }
    out
}

/// The arrival time (epoch seconds) in the first six base-62 digits of an Exim message id (0 if not base 62).
pub fn msgid_time(msgid: &str) -> f64 {
    let mut value: u64 = 0;
    for c in msgid.chars().take(6) {
        let d = match c {
            '0'..='9' => c as u64 - '0' as u64,
            'A'..='Z' => c as u64 - 'A' as u64 + 10,
            'a'..='z' => c as u64 - 'a' as u64 + 36,
            _ => return 0.0,
        };
        value = value * 62 + d;
    }
    value as f64
}

/// `int(round(ts * 1000)) * 8 + rank * 2 + has_arrival` (Python's round: ties to even).
fn version_of(ts: f64, rank: i64, has_arrival: bool) -> i64 {
    ((ts * 1000.0).round_ties_even() as i64) * 8 + rank * 2 + has_arrival as i64
}

// ------------------------------------------------------------------------------------------ native records

/// What the arrival says, as every row of the message carries it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrival {
    pub email: Str,
    pub sender: Str,
    pub user: Str,
    pub domain: Str,
    pub owner: Str,
    pub senderhost: Str,
    pub senderip: Str,
    pub senderauth: Str,
    pub spamscore: Option<f64>,
    pub sendunixtime: f64,
    pub size: u64,
    pub subject: Str,
    pub message_id: Str,
    pub protocol: Str,
    pub parent_msgid: Str,
}

/// An arrival shared by the rows of its message, with its fields as Python objects once an event needed them.
#[derive(Default)]
pub struct ArrivalCell {
    pub v: Arrival,
    // (PyOnceLock: made under the GIL, which the making may release; never a lock held across Python)
    py: PyOnceLock<Vec<Py<PyAny>>>,
}

impl Clone for ArrivalCell {
    fn clone(&self) -> Self {
        ArrivalCell {
            v: self.v.clone(),
            py: PyOnceLock::new(),
        }
    }
}

impl std::fmt::Debug for ArrivalCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.v.fmt(f)
    }
}

impl PartialEq for ArrivalCell {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
    }
}

impl ArrivalCell {
    fn new(v: Arrival) -> Arc<Self> {
        Arc::new(ArrivalCell {
            v,
            py: PyOnceLock::new(),
        })
    }

    /// The 15 fields as Python objects (made once per arrival).
    fn py_values(&self, py: Python<'_>) -> &[Py<PyAny>] {
        self.py.get_or_init(py, || {
            let ev = Event {
                a: Arc::new(self.clone()),
                ..Default::default()
            };
            (0..ARRIVAL_FIELDS.len())
                .map(|n| val_py(py, ev.get(ARRIVAL_OFFSET + n)).unbind())
                .collect()
        })
    }
}

/// The arrival of `a`, to change (a copy if other rows share it).
fn arrival_mut(a: &mut Arc<ArrivalCell>) -> &mut Arrival {
    let cell = Arc::make_mut(a);
    cell.py.take();
    &mut cell.v
}

/// One state of one row: schemas.records.DeliveryEvent, natively.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Str,
    pub etype: Str,
    pub server: Str,
    pub msgid: Str,
    pub a: Arc<ArrivalCell>,
    pub recipient: Str,
    pub deliveredto: Str,
    pub deliveryuser: Str,
    pub deliverydomain: Str,
    pub deliveryowner: Str,
    pub router: Str,
    pub transport: Str,
    pub host: Str,
    pub ip: Str,
    pub message: Str,
    pub confirmation: Str,
    pub tls: Str,
    pub queue_time: Option<f64>,
    pub delivery_time: Option<f64>,
    pub actionunixtime: f64,
    pub attempts: i64,
    pub frozen: i64,
    pub transport_is_remote: i64,
    pub version: i64,
    pub is_deleted: i64,
    pub schema_version: i64,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            event_id: Str::default(),
            etype: Str::default(),
            server: Str::default(),
            msgid: Str::default(),
            a: Arc::default(),
            recipient: Str::default(),
            deliveredto: Str::default(),
            deliveryuser: Str::default(),
            deliverydomain: Str::default(),
            deliveryowner: Str::default(),
            router: Str::default(),
            transport: Str::default(),
            host: Str::default(),
            ip: Str::default(),
            message: Str::default(),
            confirmation: Str::default(),
            tls: Str::default(),
            queue_time: None,
            delivery_time: None,
            actionunixtime: 0.0,
            attempts: 0,
            frozen: 0,
            transport_is_remote: 0,
            version: 0,
            is_deleted: 0,
            schema_version: schema_version(),
        }
    }
}

/// A field's value, read by position in EVENT_FIELDS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    S(&'a str),
    F(f64),
    OF(Option<f64>),
    I(i64),
    U(u64),
}

enum Slot<'a> {
    S(&'a mut Str),
    F(&'a mut f64),
    OF(&'a mut Option<f64>),
    I(&'a mut i64),
    U(&'a mut u64),
}

impl Event {
    pub fn get(&self, i: usize) -> Val<'_> {
        use Val::*;
        let a = &self.a.v;
        match i {
            0 => S(&self.event_id),
            1 => S(&self.etype),
            2 => S(&self.server),
            3 => S(&self.msgid),
            4 => S(&a.email),
            5 => S(&a.sender),
            6 => S(&a.user),
            7 => S(&a.domain),
            8 => S(&a.owner),
            9 => S(&a.senderhost),
            10 => S(&a.senderip),
            11 => S(&a.senderauth),
            12 => OF(a.spamscore),
            13 => F(a.sendunixtime),
            14 => U(a.size),
            15 => S(&a.subject),
            16 => S(&a.message_id),
            17 => S(&a.protocol),
            18 => S(&a.parent_msgid),
            19 => S(&self.recipient),
            20 => S(&self.deliveredto),
            21 => S(&self.deliveryuser),
            22 => S(&self.deliverydomain),
            23 => S(&self.deliveryowner),
            24 => S(&self.router),
            25 => S(&self.transport),
            26 => S(&self.host),
            27 => S(&self.ip),
            28 => S(&self.message),
            29 => S(&self.confirmation),
            30 => S(&self.tls),
            31 => OF(self.queue_time),
            32 => OF(self.delivery_time),
            33 => F(self.actionunixtime),
            34 => I(self.attempts),
            35 => I(self.frozen),
            36 => I(self.transport_is_remote),
            37 => I(self.version),
            38 => I(self.is_deleted),
            _ => I(self.schema_version),
        }
    }

    fn slot(&mut self, i: usize) -> Slot<'_> {
        use Slot::*;
        if (ARRIVAL_OFFSET..ARRIVAL_OFFSET + ARRIVAL_FIELDS.len()).contains(&i) {
            let a = arrival_mut(&mut self.a);
            return match i {
                4 => S(&mut a.email),
                5 => S(&mut a.sender),
                6 => S(&mut a.user),
                7 => S(&mut a.domain),
                8 => S(&mut a.owner),
                9 => S(&mut a.senderhost),
                10 => S(&mut a.senderip),
                11 => S(&mut a.senderauth),
                12 => OF(&mut a.spamscore),
                13 => F(&mut a.sendunixtime),
                14 => U(&mut a.size),
                15 => S(&mut a.subject),
                16 => S(&mut a.message_id),
                17 => S(&mut a.protocol),
                _ => S(&mut a.parent_msgid),
            };
        }
        match i {
            0 => S(&mut self.event_id),
            1 => S(&mut self.etype),
            2 => S(&mut self.server),
            3 => S(&mut self.msgid),
            19 => S(&mut self.recipient),
            20 => S(&mut self.deliveredto),
            21 => S(&mut self.deliveryuser),
            22 => S(&mut self.deliverydomain),
            23 => S(&mut self.deliveryowner),
            24 => S(&mut self.router),
            25 => S(&mut self.transport),
            26 => S(&mut self.host),
            27 => S(&mut self.ip),
            28 => S(&mut self.message),
            29 => S(&mut self.confirmation),
            30 => S(&mut self.tls),
            31 => OF(&mut self.queue_time),
            32 => OF(&mut self.delivery_time),
            33 => F(&mut self.actionunixtime),
            34 => I(&mut self.attempts),
            35 => I(&mut self.frozen),
            36 => I(&mut self.transport_is_remote),
            37 => I(&mut self.version),
            38 => I(&mut self.is_deleted),
            _ => I(&mut self.schema_version),
        }
    }

    /// Set field `i` from a Python value. `strict`: only a value of the field's exact type (a stored
    /// template's value that is not is compared as "different" instead); else what converts.
    fn set_py(&mut self, i: usize, v: &Bound<'_, PyAny>, strict: bool) -> PyResult<bool> {
        let float_ok = |v: &Bound<'_, PyAny>| !strict || v.is_exact_instance_of::<PyFloat>();
        let int_ok =
            |v: &Bound<'_, PyAny>| !strict || v.is_exact_instance_of::<pyo3::types::PyInt>();
        match self.slot(i) {
            Slot::S(s) => match v.cast::<PyString>().ok().and_then(|t| t.to_str().ok()) {
                Some(t) => *s = t.into(),
                None if strict => return Ok(false),
                None => {
                    return Err(PyTypeError::new_err(format!(
                        "{}: not a text",
                        EVENT_FIELDS[i]
                    )))
                }
            },
            Slot::F(f) => {
                if !float_ok(v) {
                    return Ok(false);
                }
                *f = v.extract()?
            }
            Slot::OF(f) => {
                if v.is_none() {
                    *f = None
                } else if !float_ok(v) {
                    return Ok(false);
                } else {
                    *f = Some(v.extract()?)
                }
            }
            Slot::I(n) => {
                if !int_ok(v) {
                    return Ok(false);
                }
                match v.extract() {
                    Ok(x) => *n = x,
                    Err(_) if strict => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            Slot::U(n) => {
                if !int_ok(v) {
                    return Ok(false);
                }
                match v.extract() {
                    Ok(x) => *n = x,
                    Err(_) if strict => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(true)
    }

    /// A message-level change keeps what the row's last attempt said about the delivery.
    fn carry_delivery(&mut self, prev: &Event) {
        self.router.clone_from(&prev.router);
        self.transport.clone_from(&prev.transport);
        self.transport_is_remote = prev.transport_is_remote;
        self.host.clone_from(&prev.host);
        self.ip.clone_from(&prev.ip);
        self.confirmation.clone_from(&prev.confirmation);
        self.tls.clone_from(&prev.tls);
        self.queue_time = prev.queue_time;
        self.delivery_time = prev.delivery_time;
        self.attempts = prev.attempts;
        self.deliverydomain.clone_from(&prev.deliverydomain);
        self.deliveryuser.clone_from(&prev.deliveryuser);
        self.deliveryowner.clone_from(&prev.deliveryowner);
    }
}

fn val_eq(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::S(x), Val::S(y)) => x == y,
        (Val::F(x), Val::F(y)) => x == y,
        (Val::OF(None), Val::OF(None)) => true,
        (Val::OF(Some(x)), Val::OF(Some(y))) => x == y,
        (Val::I(x), Val::I(y)) => x == y,
        (Val::U(x), Val::U(y)) => x == y,
        _ => false,
    }
}

// ------------------------------------------------------------------------------------- Python records

/// A slots dataclass of schemas/records.py, made field by field: allocated by its type and each slot
/// written at its member offset (what its `__init__` would do, without running Python code).
struct RecordClass {
    cls: Py<PyType>,
    offsets: Vec<isize>,
}

impl RecordClass {
    fn new(cls: &Bound<'_, PyType>, names: &[&str]) -> PyResult<Self> {
        let slots: Vec<String> = cls.getattr("__slots__")?.extract()?;
        if slots != names {
            return Err(PyTypeError::new_err(format!(
                "{}: fields {:?}, the compiled joiner knows {:?}",
                cls.name()?,
                slots,
                names
            )));
        }
        let offsets = names
            .iter()
            .map(|name| slot_offset(cls, name))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(RecordClass {
            cls: cls.clone().unbind(),
            offsets,
        })
    }

    /// An instance with `values` (owned references, in field order) in its slots.
    fn make<'py>(
        &self,
        py: Python<'py>,
        values: &mut [*mut ffi::PyObject],
    ) -> PyResult<Bound<'py, PyAny>> {
        debug_assert_eq!(values.len(), self.offsets.len());
        unsafe {
            let tp = self.cls.as_ptr() as *mut ffi::PyTypeObject;
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            let obj = alloc(tp, 0);
            if obj.is_null() {
                for v in values.iter() {
                    ffi::Py_XDECREF(*v);
                }
                return Err(PyErr::fetch(py));
            }
            for (v, off) in values.iter_mut().zip(&self.offsets) {
                *((obj as *mut u8).offset(*off) as *mut *mut ffi::PyObject) = *v;
                *v = std::ptr::null_mut();
            }
            Ok(Bound::from_owned_ptr(py, obj))
        }
    }
}

/// The offset in an instance of `cls` of its object slot `name` (a writable member descriptor of an object
/// slot, as a slots dataclass has one per field): where `RecordClass::make` writes the field and
/// `ColumnBuilder::add_objects` reads it.
pub(crate) fn slot_offset(cls: &Bound<'_, PyType>, name: &str) -> PyResult<isize> {
    let descr = cls.getattr(name)?;
    // SAFETY: checked to be a member descriptor of an object slot before reading it as one
    let member_type = std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type);
    if descr.get_type().as_ptr() != member_type as *mut ffi::PyObject {
        return Err(PyTypeError::new_err(format!("{name}: not a slot")));
    }
    // (pyo3-ffi 0.27 types `d_member` as a PyGetSetDef pointer; CPython's is a PyMemberDef's)
    let member = unsafe {
        &*((*(descr.as_ptr() as *mut ffi::PyMemberDescrObject)).d_member as *const ffi::PyMemberDef)
    };
    if member.type_code != ffi::Py_T_OBJECT_EX || member.flags & ffi::Py_READONLY != 0 {
        return Err(PyTypeError::new_err(format!(
            "{name}: not a writable object slot"
        )));
    }
    Ok(member.offset)
}

struct Records {
    event: RecordClass,
    reject: RecordClass,
    line: RecordClass,
    output: RecordClass,
    ranks: HashMap<String, i64>,
    schema_version: Py<PyAny>,
    schema_version_int: i64,
    names: Vec<Py<PyString>>,
}

static RECORDS: OnceLock<Records> = OnceLock::new();

fn records() -> PyResult<&'static Records> {
    RECORDS.get().ok_or_else(|| {
        PyTypeError::new_err("eximtrack_core.use_records() was not called (stream.join does)")
    })
}

fn schema_version() -> i64 {
    RECORDS.get().map(|r| r.schema_version_int).unwrap_or(1)
}

fn rank(etype: &str) -> PyResult<i64> {
    records()?
        .ranks
        .get(etype)
        .copied()
        .ok_or_else(|| PyKeyError::new_err(etype.to_owned()))
}

/// Registers the record classes of schemas/records.py the joiner makes, and the outcome ranks of versions
/// (`OUTCOME_RANK`): one definition of each, in Python. Called once, by stream/join.py.
#[pyfunction]
pub fn use_records(
    event: &Bound<'_, PyType>,
    reject: &Bound<'_, PyType>,
    line: &Bound<'_, PyType>,
    output: &Bound<'_, PyType>,
    outcome_rank: HashMap<String, i64>,
    schema_version: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if let Some(r) = RECORDS.get() {
        if r.event.cls.bind(event.py()).is(event) {
            return Ok(());
        }
        return Err(PyTypeError::new_err(
            "use_records: other record classes are registered already",
        ));
    }
    let py = event.py();
    let recs = Records {
        event: RecordClass::new(event, &EVENT_FIELDS)?,
        reject: RecordClass::new(reject, &REJECT_FIELDS)?,
        line: RecordClass::new(line, &LOGLINE_FIELDS)?,
        output: RecordClass::new(output, &OUTPUT_FIELDS)?,
        ranks: outcome_rank,
        schema_version: schema_version.clone().unbind(),
        schema_version_int: schema_version.extract()?,
        names: EVENT_FIELDS
            .iter()
            .map(|n| PyString::intern(py, n).unbind())
            .collect(),
    };
    let _ = RECORDS.set(recs);
    Ok(())
}

fn text_ptr(py: Python<'_>, s: &str) -> *mut ffi::PyObject {
    if s.is_empty() {
        pyo3::intern!(py, "").clone().into_ptr()
    } else {
        PyString::new(py, s).into_ptr()
    }
}

/// An event type: the outcomes are interned strings.
fn type_ptr(py: Python<'_>, etype: &str) -> *mut ffi::PyObject {
    let s = match etype {
        "success" => pyo3::intern!(py, "success"),
        "inprogress" => pyo3::intern!(py, "inprogress"),
        "defer" => pyo3::intern!(py, "defer"),
        "failure" => pyo3::intern!(py, "failure"),
        "filtered" => pyo3::intern!(py, "filtered"),
        "archive" => pyo3::intern!(py, "archive"),
        "rejected" => pyo3::intern!(py, "rejected"),
        other => return text_ptr(py, other),
    };
    s.clone().into_ptr()
}

fn val_ptr(py: Python<'_>, v: Val<'_>) -> *mut ffi::PyObject {
    match v {
        Val::S(s) => text_ptr(py, s),
        Val::F(f) => PyFloat::new(py, f).into_ptr(),
        Val::OF(None) => py.None().into_ptr(),
        Val::OF(Some(f)) => PyFloat::new(py, f).into_ptr(),
        Val::I(n) => n.into_pyobject(py).unwrap().into_ptr(),
        Val::U(n) => n.into_pyobject(py).unwrap().into_ptr(),
    }
}

fn val_py<'py>(py: Python<'py>, v: Val<'_>) -> Bound<'py, PyAny> {
    unsafe { Bound::from_owned_ptr(py, val_ptr(py, v)) }
}

/// A native event as a schemas.records.DeliveryEvent. `server` is the joiner's (one Python string for all).
fn event_py<'py>(
    py: Python<'py>,
    ev: &Event,
    server: Option<(&str, &Py<PyString>)>,
    msgid: Option<(&str, &Py<PyString>)>,
) -> PyResult<Bound<'py, PyAny>> {
    let recs = records()?;
    let mut values = [std::ptr::null_mut(); 40];
    let arrival = ev.a.py_values(py);
    for (i, v) in values.iter_mut().enumerate() {
        *v = match (i, server) {
            (ARRIVAL_OFFSET..=18, _) => arrival[i - ARRIVAL_OFFSET].clone_ref(py).into_ptr(),
            (1, _) => type_ptr(py, &ev.etype),
            (2, Some((text, s))) if text == ev.server => s.clone_ref(py).into_ptr(),
            (3, _) if msgid.map(|(m, _)| m == ev.msgid).unwrap_or(false) => {
                msgid.unwrap().1.clone_ref(py).into_ptr()
            }
            (39, _) if ev.schema_version == recs.schema_version_int => {
                recs.schema_version.clone_ref(py).into_ptr()
            }
            _ => val_ptr(py, ev.get(i)),
        };
    }
    recs.event.make(py, &mut values)
}

/// A schemas.records.DeliveryEvent (or anything with its attributes) as a native event.
fn event_from_py(ob: &Bound<'_, PyAny>) -> PyResult<Event> {
    let mut ev = Event::default();
    for (i, name) in EVENT_FIELDS.iter().enumerate() {
        let v = ob.getattr(*name)?;
        ev.set_py(i, &v, false)?;
    }
    Ok(ev)
}

// ------------------------------------------------------------------------------------------ message state

/// What the state holds of the arrival: nothing yet, exactly ARRIVAL_FIELDS (natively), or any other
/// mapping (a state restored with a key more or less): read and written as a Python dict.
#[derive(Debug)]
enum ArrivalSlot {
    Absent,
    Native(Arc<ArrivalCell>),
    Raw(Py<PyAny>),
}

fn arrival_from_py(ob: &Bound<'_, PyAny>) -> ArrivalSlot {
    if ob.is_none() {
        return ArrivalSlot::Absent;
    }
    if let Ok(d) = ob.cast::<PyDict>() {
        if d.len() == ARRIVAL_FIELDS.len() {
            let mut ev = Event::default();
            let mut ok = true;
            for (n, (k, v)) in d.iter().enumerate() {
                let same_key = k
                    .cast::<PyString>()
                    .ok()
                    .and_then(|k| k.to_str().ok().map(|k| k == ARRIVAL_FIELDS[n]))
                    .unwrap_or(false);
                if !same_key || !matches!(ev.set_py(ARRIVAL_OFFSET + n, &v, true), Ok(true)) {
                    ok = false;
                    break;
                }
            }
            if ok {
                return ArrivalSlot::Native(ev.a);
            }
        }
    }
    ArrivalSlot::Raw(ob.clone().unbind())
}

fn arrival_dict<'py>(py: Python<'py>, a: &ArrivalCell) -> PyResult<Bound<'py, PyDict>> {
    let recs = records()?;
    let d = PyDict::new(py);
    for (n, v) in a.py_values(py).iter().enumerate() {
        d.set_item(recs.names[ARRIVAL_OFFSET + n].bind(py), v.bind(py))?;
    }
    Ok(d)
}

/// (recipient, deliveredto) -> a new DeliveryEvent of each event.
fn events_by_key<'py>(
    py: Python<'py>,
    events: &IndexMap<(Str, Str), Event>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for ((r, t), ev) in events {
        d.set_item(
            PyTuple::new(py, [r.as_str(), t.as_str()])?,
            event_py(py, ev, None, None)?,
        )?;
    }
    Ok(d)
}

/// Everything the joiner holds for one message. Bounded: ends on Completed (+grace) or expiry.
#[pyclass(module = "eximtrack_core", name = "MessageState")]
pub struct State {
    msgid: String,
    arrival: ArrivalSlot,
    pre: Option<Py<PyDict>>,
    rows: IndexMap<(Str, Str), Event>,
    /// the tombstone last emitted for each row removed (a placeholder its first result replaced, a deferred
    /// row superseded): a replay re-emits them with the rows, since the first pass's output may be lost;
    /// kept only by a joiner fed replayable positions (`Joiner.replayable`)
    gone: IndexMap<(Str, Str), Event>,
    #[pyo3(get, set)]
    frozen: i64,
    #[pyo3(get, set)]
    completed_at: f64,
    #[pyo3(get, set)]
    last_seen: f64,
    #[pyo3(get, set)]
    hw: i64,
    #[pyo3(get, set)]
    notes: i64,
}

impl State {
    fn empty(msgid: &str) -> Self {
        State {
            msgid: msgid.to_owned(),
            arrival: ArrivalSlot::Absent,
            pre: None,
            rows: IndexMap::new(),
            gone: IndexMap::new(),
            frozen: 0,
            completed_at: 0.0,
            last_seen: 0.0,
            hw: -1,
            notes: 0,
        }
    }

    fn has_arrival(&self) -> bool {
        !matches!(self.arrival, ArrivalSlot::Absent)
    }

    fn pre_get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        match &self.pre {
            Some(d) => d.bind(py).get_item(key),
            None => Ok(None),
        }
    }

    fn pre_set(&mut self, py: Python<'_>, key: &str, value: Bound<'_, PyAny>) -> PyResult<()> {
        let d = self.pre.get_or_insert_with(|| PyDict::new(py).unbind());
        d.bind(py).set_item(key, value)
    }

    fn pre_truthy(&self, py: Python<'_>) -> bool {
        self.pre
            .as_ref()
            .map(|d| !d.bind(py).is_empty())
            .unwrap_or(false)
    }

    fn pre_spamscore(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        match self.pre_get(py, "spamscore")? {
            Some(v) => v.extract(),
            None => Ok(None),
        }
    }

    fn pre_user(&self, py: Python<'_>) -> PyResult<Option<Str>> {
        match self.pre_get(py, "user")? {
            Some(v) => Ok(Some(Str::from(v.extract::<&str>()?))),
            None => Ok(None),
        }
    }

    /// The fields the arrival gives an event (`_fill_arrival`): the arrival's, or before it the message
    /// id's time and what preceded it.
    fn fill_arrival(&self, py: Python<'_>, ev: &mut Event) -> PyResult<()> {
        match &self.arrival {
            ArrivalSlot::Native(a) => ev.a = a.clone(),
            ArrivalSlot::Absent => {
                let spamscore = self.pre_spamscore(py)?;
                let user = self.pre_user(py)?;
                let a = arrival_mut(&mut ev.a);
                a.sendunixtime = msgid_time(&self.msgid);
                a.spamscore = spamscore;
                if let Some(user) = user {
                    a.user = user;
                }
            }
            ArrivalSlot::Raw(ob) => {
                let ob = ob.bind(py);
                for (n, name) in ARRIVAL_FIELDS.iter().enumerate() {
                    let v = ob.get_item(*name)?;
                    ev.set_py(ARRIVAL_OFFSET + n, &v, false)?;
                }
            }
        }
        Ok(())
    }

    /// The stored row's defaults: field defaults, the arrival's fields, the msgid (`_row_template`); and
    /// which fields hold a template value of another type than the field's (always stored).
    fn template(&self, py: Python<'_>) -> (Event, [bool; 40]) {
        let mut t = Event {
            msgid: self.msgid.as_str().into(),
            ..Default::default()
        };
        let mut other = [false; 40];
        match &self.arrival {
            ArrivalSlot::Native(a) => t.a = a.clone(),
            ArrivalSlot::Absent => {}
            ArrivalSlot::Raw(ob) => Self::raw_template(ob.bind(py), &mut t, &mut other),
        }
        (t, other)
    }

    fn raw_template(ob: &Bound<'_, PyAny>, t: &mut Event, other: &mut [bool; 40]) {
        let Ok(d) = ob.cast::<PyDict>() else { return };
        for (k, v) in d.iter() {
            let Ok(k) = k.extract::<String>() else {
                continue;
            };
            if let Some(i) = EVENT_FIELDS.iter().position(|n| *n == k) {
                if i < 4 {
                    continue; // event_id, type, server, msgid have no default: not the arrival's to give
                }
                if !matches!(t.set_py(i, &v, true), Ok(true)) {
                    other[i] = true;
                }
            }
        }
    }

    fn to_dict_impl<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let recs = records()?;
        let (t, other) = self.template(py);
        // each row as its difference from the template
        let diffs = |events: &IndexMap<(Str, Str), Event>| -> PyResult<Bound<'py, PyList>> {
            let list = PyList::empty(py);
            for ev in events.values() {
                let row = PyDict::new(py);
                for (i, name) in recs.names.iter().enumerate() {
                    let v = ev.get(i);
                    if i < 3 || other[i] || !val_eq(v, t.get(i)) {
                        row.set_item(name.bind(py), val_py(py, v))?;
                    }
                }
                list.append(row)?;
            }
            Ok(list)
        };
        let rows = diffs(&self.rows)?;
        let out = PyDict::new(py);
        out.set_item("v", STATE_FORMAT)?;
        out.set_item("completed_at", self.completed_at)?;
        out.set_item("last_seen", self.last_seen)?;
        out.set_item("hw", self.hw)?;
        out.set_item("msgid", &self.msgid)?;
        out.set_item("arrival", self.arrival_py(py)?)?;
        out.set_item("pre", self.pre_py(py))?;
        out.set_item("rows", rows)?;
        out.set_item("frozen", self.frozen)?;
        if self.notes != 0 {
            out.set_item("notes", self.notes)?;
        }
        if !self.gone.is_empty() {
            out.set_item("gone", diffs(&self.gone)?)?;
        }
        Ok(out)
    }

    fn arrival_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match &self.arrival {
            ArrivalSlot::Absent => py.None().into_bound(py),
            ArrivalSlot::Native(a) => arrival_dict(py, a)?.into_any(),
            ArrivalSlot::Raw(ob) => ob.bind(py).clone(),
        })
    }

    fn pre_py<'py>(&self, py: Python<'py>) -> Bound<'py, PyDict> {
        match &self.pre {
            Some(d) => d.bind(py).clone(),
            None => PyDict::new(py),
        }
    }

    fn from_dict_impl(py: Python<'_>, data: &Bound<'_, PyDict>) -> PyResult<State> {
        let msgid: String = data
            .get_item("msgid")?
            .ok_or_else(|| PyKeyError::new_err("msgid"))?
            .extract()?;
        let mut st = State::empty(&msgid);
        if let Some(a) = data.get_item("arrival")? {
            st.arrival = arrival_from_py(&a);
        }
        if let Some(pre) = data.get_item("pre")? {
            if pre.is_truthy()? {
                st.pre = Some(pre.cast_into::<PyDict>()?.unbind());
            }
        }
        let format2 = match data.get_item("v")? {
            Some(v) => v.eq(STATE_FORMAT)?,
            None => false,
        };
        let template = if format2 { Some(st.template(py)) } else { None };
        // rows stored as differences from the template (format 2) or whole (format 1), by their keys
        let read_rows = |list: Bound<'_, PyAny>| -> PyResult<IndexMap<(Str, Str), Event>> {
            let mut events = IndexMap::new();
            for d in list.try_iter()? {
                let d = d?;
                let d = d.cast::<PyDict>()?;
                let mut ev = match &template {
                    Some((t, _)) => t.clone(),
                    None => Event::default(),
                };
                let mut required = [false; 4];
                for (k, v) in d.iter() {
                    let k: String = k.extract()?;
                    if let Some(i) = EVENT_FIELDS.iter().position(|n| *n == k) {
                        ev.set_py(i, &v, false)?;
                        if i < 4 {
                            required[i] = true;
                        }
                    }
                }
                if template.is_some() {
                    required[3] = true;
                }
                if let Some(i) = required.iter().position(|r| !r) {
                    return Err(PyTypeError::new_err(format!(
                        "a stored row without {}",
                        EVENT_FIELDS[i]
                    )));
                }
                events.insert((ev.recipient.clone(), ev.deliveredto.clone()), ev);
            }
            Ok(events)
        };
        if let Some(rows) = data.get_item("rows")? {
            st.rows = read_rows(rows)?;
        }
        if let Some(gone) = data.get_item("gone")? {
            st.gone = read_rows(gone)?;
        }
        let num = |key: &str, default: f64| -> PyResult<f64> {
            match data.get_item(key)? {
                Some(v) => v.extract(),
                None => Ok(default),
            }
        };
        st.frozen = match data.get_item("frozen")? {
            Some(v) => v.extract()?,
            None => 0,
        };
        st.completed_at = num("completed_at", 0.0)?;
        st.last_seen = num("last_seen", 0.0)?;
        st.hw = match data.get_item("hw")? {
            Some(v) => v.extract()?,
            None => -1,
        };
        st.notes = match data.get_item("notes")? {
            Some(v) => v.extract()?,
            None => 0,
        };
        Ok(st)
    }
}

/// (orjson.dumps, orjson.loads, orjson.JSONEncodeError, orjson.JSONDecodeError, json.dumps, json.loads)
type Codecs = (
    Py<PyAny>,
    Py<PyAny>,
    Py<PyAny>,
    Py<PyAny>,
    Py<PyAny>,
    Py<PyAny>,
);

static ORJSON: OnceLock<Codecs> = OnceLock::new();

fn codecs(py: Python<'_>) -> PyResult<&'static Codecs> {
    if let Some(c) = ORJSON.get() {
        return Ok(c);
    }
    let orjson = py.import("orjson")?;
    let json = py.import("json")?;
    let c = (
        orjson.getattr("dumps")?.unbind(),
        orjson.getattr("loads")?.unbind(),
        orjson.getattr("JSONEncodeError")?.unbind(),
        orjson.getattr("JSONDecodeError")?.unbind(),
        json.getattr("dumps")?.unbind(),
        json.getattr("loads")?.unbind(),
    );
    let _ = ORJSON.set(c);
    Ok(ORJSON.get().unwrap())
}

#[pymethods]
impl State {
    #[new]
    #[pyo3(signature = (msgid, arrival=None, pre=None, rows=None, frozen=0, completed_at=0.0, last_seen=0.0, hw=-1, notes=0))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        msgid: String,
        arrival: Option<&Bound<'_, PyAny>>,
        pre: Option<&Bound<'_, PyDict>>,
        rows: Option<&Bound<'_, PyDict>>,
        frozen: i64,
        completed_at: f64,
        last_seen: f64,
        hw: i64,
        notes: i64,
    ) -> PyResult<Self> {
        let mut st = State::empty(&msgid);
        if let Some(a) = arrival {
            st.arrival = arrival_from_py(a);
        }
        st.pre = pre.map(|d| d.clone().unbind());
        if let Some(rows) = rows {
            st.set_rows(rows)?;
        }
        st.frozen = frozen;
        st.completed_at = completed_at;
        st.last_seen = last_seen;
        st.hw = hw;
        st.notes = notes;
        Ok(st)
    }

    #[getter]
    fn msgid(&self) -> &str {
        &self.msgid
    }

    #[setter]
    fn set_msgid(&mut self, msgid: String) {
        self.msgid = msgid;
    }

    /// ARRIVAL_FIELDS once the `<=` line (or what precedes it) is known, else None (a new dict each time).
    #[getter]
    fn arrival<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.arrival_py(py)
    }

    #[setter]
    fn set_arrival(&mut self, arrival: &Bound<'_, PyAny>) {
        self.arrival = arrival_from_py(arrival);
    }

    /// Fields seen before `<=` (spam score, sender identification): the state's own dict.
    #[getter]
    fn pre<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyDict> {
        self.pre
            .get_or_insert_with(|| PyDict::new(py).unbind())
            .bind(py)
            .clone()
    }

    #[setter]
    fn set_pre(&mut self, pre: &Bound<'_, PyDict>) {
        self.pre = Some(pre.clone().unbind());
    }

    /// (recipient, deliveredto) -> the row's last DeliveryEvent (a new dict of new events each time).
    #[getter]
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        events_by_key(py, &self.rows)
    }

    /// (recipient, deliveredto) -> the tombstone of a row removed, that a replay emits again (a new dict).
    #[getter]
    fn gone<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        events_by_key(py, &self.gone)
    }

    #[setter]
    fn set_rows(&mut self, rows: &Bound<'_, PyDict>) -> PyResult<()> {
        let mut out = IndexMap::new();
        for (k, v) in rows.iter() {
            let (r, t): (String, String) = k.extract()?;
            out.insert((r.into(), t.into()), event_from_py(&v)?);
        }
        self.rows = out;
        Ok(())
    }

    /// Plain-data form (the stream worker's table value and changelog record). Format 2 stores each row
    /// as its difference from the row template (field defaults, the arrival's fields, the msgid).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.to_dict_impl(py)
    }

    /// `to_dict()` as compact JSON (orjson; the standard library for what orjson refuses: integers beyond
    /// 64 bits, lone surrogates), copied to a bytes object of its exact size.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.to_dict_impl(py)?;
        let c = codecs(py)?;
        match c.0.bind(py).call1((&data,)) {
            Ok(b) => Ok(PyBytes::new(py, b.cast::<PyBytes>()?.as_bytes())),
            Err(e) if e.matches(py, c.2.bind(py))? => {
                let kw = PyDict::new(py);
                kw.set_item("separators", (",", ":"))?;
                let text = c.4.bind(py).call((&data,), Some(&kw))?;
                Ok(PyBytes::new(py, text.extract::<String>()?.as_bytes()))
            }
            Err(e) => Err(e),
        }
    }

    /// A stored state: bytes of `to_bytes()` (or JSON text), or a dict of `to_dict()`.
    #[staticmethod]
    fn from_value(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<State> {
        if let Ok(d) = value.cast::<PyDict>() {
            return State::from_dict_impl(py, d);
        }
        let c = codecs(py)?;
        let data = match c.1.bind(py).call1((value,)) {
            Ok(d) => d,
            Err(e) if e.matches(py, c.3.bind(py))? => c.5.bind(py).call1((value,))?,
            Err(e) => return Err(e),
        };
        State::from_dict_impl(py, data.cast::<PyDict>()?)
    }

    /// Reads format 2 and format 1 (rows as full event dicts, written before format 2 existed).
    #[staticmethod]
    fn from_dict(py: Python<'_>, data: &Bound<'_, PyDict>) -> PyResult<State> {
        State::from_dict_impl(py, data)
    }

    fn __repr__(&self) -> String {
        format!(
            "MessageState(msgid={:?}, rows={}, frozen={}, completed_at={}, last_seen={}, hw={}, notes={})",
            self.msgid,
            self.rows.len(),
            self.frozen,
            self.completed_at,
            self.last_seen,
            self.hw,
            self.notes
        )
    }
}

// ------------------------------------------------------------------------------------------------ joiner

#[derive(Default)]
struct Out {
    events: Vec<Py<PyAny>>,
    rejects: Vec<Py<PyAny>>,
    lines: Vec<Py<PyAny>>,
    first_msgid: Option<String>,
    msgid_py: Option<Py<PyString>>, // of first_msgid: the events of a line are mostly of one message
}

/// The line being applied: its text for ids (the UTF-8, or "surrogatepass" bytes of a line holding lone
/// surrogates) and as the Python string the records keep.
struct Line<'a, 'py> {
    bytes: &'a [u8],
    obj: &'a Bound<'py, PyString>,
}

/// (msgid, recipient, deliveredto) -> (version, is_deleted, the event) of the latest state (`latest()`).
type Latest = IndexMap<(Str, Str, Str), (i64, i64, Py<PyAny>)>;

/// Joins the lines of one server's main log into delivery events (stream/join.py's `Joiner`).
#[pyclass(module = "eximtrack_core", name = "Joiner", subclass)]
pub struct Joiner {
    server: String,
    server_py: Py<PyString>,
    clock: Py<PyAny>,
    hours: HashMap<String, f64>,
    last_hour: (String, f64),
    accounts: Py<PyAny>,
    domains: HashMap<String, Str>,
    owners: HashMap<String, Str>,
    #[pyo3(get, set)]
    grace: f64,
    #[pyo3(get, set)]
    expiry: f64,
    states: Py<PyAny>,
    states_dict: bool,
    #[pyo3(get, set)]
    watermark: f64,
    since_sweep: u64,
    last_sweep: f64,
    latest: Option<Latest>,
    stats: [i64; 15],
    ignored_by_rule: IndexMap<&'static str, i64>,
    /// fed replayable positions (a line with `seq`: the stream worker): only then can a line be replayed,
    /// so only then do the states keep their removed rows' tombstones (`gone`) for a replay to emit again.
    /// `ingest` never passes `seq`, and keeping them cost its joining ~6 % (session (51))
    replayable: bool,
}

fn snapshot(map: &Bound<'_, PyAny>) -> PyResult<HashMap<String, Str>> {
    let mut out = HashMap::new();
    for item in map.call_method0("items")?.try_iter()? {
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        if let (Ok(k), Ok(v)) = (k.extract::<String>(), v.extract::<String>()) {
            out.insert(k, Str::from(v));
        }
    }
    Ok(out)
}

impl Joiner {
    // accounts (a snapshot of the AccountMap's dicts) -----------------------------------------------------

    fn user_of_domain(&self, py: Python<'_>, domain: &str) -> PyResult<Str> {
        if domain.is_empty() {
            return Ok(Str::default());
        }
        Ok(self
            .domains
            .get(py_lower(py, domain)?.as_ref())
            .cloned()
            .unwrap_or_default())
    }

    fn owner_of(&self, user: &str) -> Str {
        if user.is_empty() {
            return Str::default();
        }
        self.owners.get(user).cloned().unwrap_or_default()
    }

    // the states mapping ---------------------------------------------------------------------------------

    fn state_get<'py>(
        &self,
        py: Python<'py>,
        msgid: &Bound<'py, PyString>,
    ) -> PyResult<Option<Bound<'py, State>>> {
        let states = self.states.bind(py);
        let hit = if self.states_dict {
            // SAFETY of the cast: checked to be exactly a dict when set
            unsafe { states.cast_unchecked::<PyDict>() }.get_item(msgid)?
        } else {
            let v = states.call_method1(pyo3::intern!(py, "get"), (msgid,))?;
            if v.is_none() {
                None
            } else {
                Some(v)
            }
        };
        match hit {
            None => Ok(None),
            Some(v) => Ok(Some(v.cast_into::<State>()?)),
        }
    }

    fn state_set(
        &self,
        py: Python<'_>,
        msgid: &Bound<'_, PyString>,
        st: &Bound<'_, State>,
    ) -> PyResult<()> {
        let states = self.states.bind(py);
        if self.states_dict {
            unsafe { states.cast_unchecked::<PyDict>() }.set_item(msgid, st)
        } else {
            states.set_item(msgid, st)
        }
    }

    fn state_del(&self, py: Python<'_>, msgid: &Bound<'_, PyAny>) -> PyResult<()> {
        let states = self.states.bind(py);
        if self.states_dict {
            unsafe { states.cast_unchecked::<PyDict>() }.del_item(msgid)
        } else {
            states.del_item(msgid)
        }
    }

    fn state_contains(&self, py: Python<'_>, msgid: &Bound<'_, PyString>) -> PyResult<bool> {
        let states = self.states.bind(py);
        if self.states_dict {
            unsafe { states.cast_unchecked::<PyDict>() }.contains(msgid)
        } else {
            states.contains(msgid)
        }
    }

    // time ----------------------------------------------------------------------------------------------

    /// Epoch seconds of a line's date and time: the hour's base from stream/clock.py (once per hour key),
    /// plus the minutes and seconds. Err(reason) for a date the clock refuses.
    fn epoch(&mut self, py: Python<'_>, p: &Parsed<'_>) -> PyResult<Result<f64, String>> {
        let time = p.time;
        let mut key = String::with_capacity(20);
        key.push_str(p.date);
        key.push_str(&time[..2]);
        if let Some(z) = p.zone {
            key.push_str(z);
        }
        let base = match if self.last_hour.0 == key {
            Some(&self.last_hour.1)
        } else {
            self.hours.get(&key)
        } {
            Some(b) => *b,
            None => {
                let got = self
                    .clock
                    .bind(py)
                    .call_method1(pyo3::intern!(py, "hour_base"), (p.date, time, p.zone));
                let base: f64 = match got {
                    Ok(b) => b.extract()?,
                    Err(e)
                        if e.is_instance_of::<PyValueError>(py)
                            || e.is_instance_of::<PyKeyError>(py) =>
                    {
                        return Ok(Err(e.value(py).str()?.to_str()?.to_owned()));
                    }
                    Err(e) => return Err(e),
                };
                if self.hours.len() > 4096 {
                    self.hours.clear();
                }
                self.hours.insert(key.clone(), base);
                base
            }
        };
        if self.last_hour.0 != key {
            self.last_hour = (key, base);
        }
        // the parser checked these digits
        let b = time.as_bytes();
        let two = |i: usize| ((b[i] - b'0') as i64) * 10 + (b[i + 1] - b'0') as i64;
        let whole = two(3) * 60 + two(6);
        if time.len() > 8 {
            let frac: f64 = format!("0{}", &time[8..])
                .parse()
                .map_err(|_| PyValueError::new_err("time"))?;
            Ok(Ok(base + (whole as f64 + frac)))
        } else {
            Ok(Ok(base + whole as f64))
        }
    }

    // output ----------------------------------------------------------------------------------------------

    fn emit(&mut self, py: Python<'_>, out: &mut Out, ev: &Event) -> PyResult<()> {
        if out.first_msgid.is_none() {
            out.first_msgid = Some(ev.msgid.to_string());
            out.msgid_py = Some(PyString::new(py, &ev.msgid).unbind());
        }
        let msgid = out.first_msgid.as_deref().zip(out.msgid_py.as_ref());
        let obj = event_py(py, ev, Some((&self.server, &self.server_py)), msgid)?.unbind();
        if let Some(latest) = &mut self.latest {
            let key = (
                ev.msgid.clone(),
                ev.recipient.clone(),
                ev.deliveredto.clone(),
            );
            match latest.get_mut(&key) {
                Some(prev) => {
                    if ev.version >= prev.0 {
                        *prev = (ev.version, ev.is_deleted, obj.clone_ref(py));
                    }
                }
                None => {
                    latest.insert(key, (ev.version, ev.is_deleted, obj.clone_ref(py)));
                }
            }
        }
        out.events.push(obj);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        py: Python<'_>,
        out: &mut Out,
        line: &Line<'_, '_>,
        reason: &str,
        file_id: &Bound<'_, PyAny>,
        offset: &Bound<'_, PyAny>,
        ts: f64,
    ) -> PyResult<()> {
        self.stats[REJECTS] += 1;
        let recs = records()?;
        let id = stable_id_of(&[self.server.as_bytes(), b"reject", line.bytes]);
        let mut values = [
            PyString::new(py, &id).into_ptr(),
            self.server_py.clone_ref(py).into_ptr(),
            line.obj.clone().into_ptr(),
            PyString::new(py, reason).into_ptr(),
            file_id.clone().into_ptr(),
            offset.clone().into_ptr(),
            PyFloat::new(py, ts).into_ptr(),
            recs.schema_version.clone_ref(py).into_ptr(),
        ];
        out.rejects
            .push(recs.reject.make(py, &mut values)?.unbind());
        Ok(())
    }

    fn event_id(
        &self,
        msgid: &str,
        rcpt: &str,
        deliveredto: &str,
        etype: &str,
        line: &[u8],
    ) -> Str {
        Str::from(stable_id_of(&[
            self.server.as_bytes(),
            msgid.as_bytes(),
            rcpt.as_bytes(),
            deliveredto.as_bytes(),
            etype.as_bytes(),
            line,
        ]))
    }

    /// A new state of row (rcpt, deliveredto) caused by `line`, with the arrival's fields; the caller sets
    /// what the line says about the delivery (`_new_event`).
    #[allow(clippy::too_many_arguments)]
    fn new_event(
        &self,
        py: Python<'_>,
        st: &State,
        etype: &str,
        rcpt: &str,
        deliveredto: &str,
        ts: f64,
        line: &[u8],
        delivery: Option<Event>,
    ) -> PyResult<Event> {
        let mut ev = delivery.unwrap_or_default();
        ev.event_id = self.event_id(&st.msgid, rcpt, deliveredto, etype, line);
        ev.etype = etype.into();
        ev.server = self.server.as_str().into();
        ev.msgid = st.msgid.as_str().into();
        ev.recipient = rcpt.into();
        ev.deliveredto = deliveredto.into();
        ev.actionunixtime = ts;
        ev.frozen = st.frozen;
        ev.version = version_of(ts, rank(etype)?, st.has_arrival());
        st.fill_arrival(py, &mut ev)?;
        if !rcpt.is_empty() && ev.deliverydomain.is_empty() {
            ev.deliverydomain = domain_of(py, rcpt)?;
            ev.deliveryuser = self.user_of_domain(py, &ev.deliverydomain)?;
            ev.deliveryowner = self.owner_of(&ev.deliveryuser);
        }
        Ok(ev)
    }

    fn copy_with_arrival(&self, py: Python<'_>, st: &State, prev: &Event) -> PyResult<Event> {
        let mut ev = prev.clone();
        st.fill_arrival(py, &mut ev)?;
        Ok(ev)
    }

    // the rules -------------------------------------------------------------------------------------------

    /// A note line of `msgid`: true to keep it as a raw line of the message (`_note`).
    fn note(
        &mut self,
        py: Python<'_>,
        msgid: &Bound<'_, PyString>,
        seq: Option<i64>,
    ) -> PyResult<bool> {
        self.stats[NOTES] += 1;
        let Some(st) = self.state_get(py, msgid)? else {
            return Ok(true);
        };
        {
            let mut s = st.borrow_mut();
            if let Some(seq) = seq {
                if seq <= s.hw {
                    drop(s);
                    // written back (once per record): the replayed record's changelog may never have
                    // reached Kafka, while the local copy of the state already holds it
                    self.state_set(py, msgid, &st)?;
                    return Ok(true);
                }
            }
            if s.notes >= NOTE_CAP {
                self.stats[NOTES_OVER_CAP] += 1;
                return Ok(false);
            }
            s.notes += 1;
            if let Some(seq) = seq {
                s.hw = seq;
            }
        }
        self.state_set(py, msgid, &st)?;
        Ok(true)
    }

    fn apply(
        &mut self,
        py: Python<'_>,
        p: &Parsed<'_>,
        ts: f64,
        line: &Line<'_, '_>,
        out: &mut Out,
        seq: Option<i64>,
    ) -> PyResult<()> {
        let kind = p.kind;
        let msgid = PyString::new(py, p.msgid);
        // the line's events and log line are of this message: they share its Python string
        out.first_msgid = Some(p.msgid.to_owned());
        out.msgid_py = Some(msgid.clone().unbind());
        let st = match self.state_get(py, &msgid)? {
            None => Bound::new(py, State::empty(p.msgid))?,
            Some(st) => {
                if let Some(seq) = seq {
                    if seq <= st.borrow().hw {
                        self.stats[REPLAYED] += 1;
                        {
                            // the tombstones of rows it no longer holds first (the first pass's may be
                            // in the lost output too), then the rows
                            let s = st.borrow();
                            for (key, tomb) in &s.gone {
                                if !s.rows.contains_key(key) {
                                    self.emit(py, out, tomb)?;
                                }
                            }
                            for ev in s.rows.values() {
                                self.emit(py, out, ev)?;
                            }
                        }
                        // written back too (once per record: the table's write-back cache): the state's
                        // changelog from the first pass may never have reached Kafka (a worker crash, a lost
                        // send), while the worker's local copy already holds it; a worker rebuilding this
                        // partition from the changelog later must find it
                        self.state_set(py, &msgid, &st)?;
                        return Ok(());
                    }
                }
                st
            }
        };
        {
            let mut guard = st.borrow_mut();
            let s = &mut *guard;
            s.last_seen = ts;
            if let Some(seq) = seq {
                s.hw = seq;
            }
            match kind {
                "arrival" => self.arrival(py, s, p, ts, line.bytes, out)?,
                "delivery" | "defer" | "failure" => self.result(py, s, p, ts, line.bytes, out)?,
                "completed" => {
                    if s.completed_at == 0.0 {
                        self.stats[COMPLETED] += 1;
                    }
                    s.completed_at = ts;
                }
                "removed" | "cancelled" => {
                    self.fail_open_rows(py, s, ts, line.bytes, p.body, out, "failure")?
                }
                // nothing to say before the arrival is known
                "recipients_ignored" if !s.rows.is_empty() => {
                    self.fail_open_rows(py, s, ts, line.bytes, p.body, out, "filtered")?;
                }
                "error_ignored" => self.error_ignored(py, s, p, ts, line.bytes, out)?,
                "frozen" if s.frozen == 0 => {
                    s.frozen = 1;
                    self.reemit_open(py, s, ts, line.bytes, p.body, out)?;
                }
                "unfrozen" if s.frozen != 0 => {
                    s.frozen = 0;
                    self.reemit_open(py, s, ts, line.bytes, p.body, out)?;
                }
                "spam" => {
                    if let Some(score) = p.fields.get("score") {
                        if let Some(v) = py_float(py, score)? {
                            s.pre_set(py, "spamscore", PyFloat::new(py, v).into_any())?;
                        }
                    }
                    self.late_arrival_detail(py, s, out)?;
                }
                "identification" => {
                    let user = p.fields.get("U").map(|u| u.as_ref()).unwrap_or("");
                    if !user.is_empty() {
                        s.pre_set(py, "user", PyString::new(py, user).into_any())?;
                        self.late_arrival_detail(py, s, out)?;
                    }
                }
                _ => {}
            }
        }
        if NO_STATE_KINDS.contains(&kind) && self.state_contains(py, &msgid)? {
            // queued, locked, info: kept as log lines of the message, no state change, so no write-back (a
            // table write is a changelog record); replaying such a line is harmless
            return Ok(());
        }
        let keep = {
            let s = st.borrow();
            !s.rows.is_empty() || s.has_arrival() || s.pre_truthy(py) || s.completed_at != 0.0
        };
        if keep {
            self.state_set(py, &msgid, &st)?; // write back (a changelog write for the worker's table)
        } else if self.state_contains(py, &msgid)? {
            // a line that says nothing about a message: do not keep an empty state for it
            self.state_del(py, msgid.as_any())?;
        }
        Ok(())
    }

    fn arrival_fields(
        &self,
        py: Python<'_>,
        st: &State,
        p: &Parsed<'_>,
        ts: f64,
    ) -> PyResult<Arrival> {
        let f = &p.fields;
        let get = |k: &str| f.get(k).map(|v| v.as_ref()).unwrap_or("");
        let mut email: &str = &p.address;
        if email == "<>" {
            email = "";
        }
        if email.matches('"').count() == 2 && email.starts_with('"') && email.ends_with('"') {
            email = email.trim_matches('"');
        }
        let protocol = get("P");
        let auth = get("A");
        let (mut sender, mut senderauth, mut user) =
            (Str::default(), Str::default(), Str::default());
        if !auth.is_empty() {
            let mut parts = auth.split(':');
            senderauth = parts.next().unwrap_or("").into();
            sender = parts.next().unwrap_or("").into();
            if sender.contains('@') {
                user = self.user_of_domain(py, &domain_of(py, &sender)?)?;
                if user.is_empty() {
                    user.clone_from(&sender);
                }
            } else {
                user.clone_from(&sender);
            }
        } else if protocol.starts_with("local") {
            senderauth = "localuser".into();
            sender = get("U").into();
            user.clone_from(&sender);
        }
        if let Some(u) = st.pre_user(py)? {
            user = u;
        }
        let senderhost = match get("Hname") {
            "" => get("Hhelo"),
            h => h,
        };
        let size = match f.get("S") {
            Some(s) => message_size(py, s)?,
            None => 0,
        };
        let message_id = match get("id") {
            "" => get("id*"),
            m => m,
        };
        Ok(Arrival {
            email: email.into(),
            sender,
            domain: domain_of(py, email)?,
            owner: self.owner_of(&user),
            user,
            senderhost: senderhost.into(),
            senderip: get("Hip").into(),
            senderauth,
            spamscore: st.pre_spamscore(py)?,
            sendunixtime: ts,
            size,
            subject: get("T").into(),
            message_id: message_id.into(),
            protocol: protocol.into(),
            parent_msgid: if email.is_empty() {
                get("R").into()
            } else {
                Str::default()
            },
        })
    }

    fn reemit_all(&mut self, py: Python<'_>, st: &mut State, out: &mut Out) -> PyResult<()> {
        let keys: Vec<(Str, Str)> = st.rows.keys().cloned().collect();
        for key in keys {
            let prev = &st.rows[&key];
            let mut ev = self.copy_with_arrival(py, st, prev)?;
            ev.version = prev.version + 1;
            self.emit(py, out, &ev)?;
            st.rows.insert(key, ev);
        }
        Ok(())
    }

    fn arrival(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        p: &Parsed<'_>,
        ts: f64,
        line: &[u8],
        out: &mut Out,
    ) -> PyResult<()> {
        st.arrival = ArrivalSlot::Native(ArrivalCell::new(self.arrival_fields(py, st, p, ts)?));
        let mut recipients: Vec<Str> = Vec::new();
        let for_list = p.fields.get("for").map(|v| v.as_ref()).unwrap_or("");
        for rcpt in recipient_list(for_list) {
            let key = py_lower(py, rcpt)?.as_ref().into();
            if !recipients.contains(&key) {
                recipients.push(key);
            }
        }
        // rows that came before the arrival (cutthrough `>>`, a frozen mark …) now learn the arrival
        self.reemit_all(py, st, out)?;
        let targets: Vec<Str> = if !recipients.is_empty() {
            recipients
                .into_iter()
                .filter(|r| !st.rows.keys().any(|(k, _)| k == r))
                .collect()
        } else if st.rows.is_empty() {
            vec![Str::default()]
        } else {
            vec![]
        };
        for rcpt in targets {
            let ev = self.new_event(py, st, "inprogress", &rcpt, "", ts, line, None)?;
            self.emit(py, out, &ev)?;
            st.rows.insert((rcpt, Str::default()), ev);
        }
        Ok(())
    }

    /// A detail that usually precedes `<=` came after it: apply it and re-emit the rows.
    fn late_arrival_detail(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        out: &mut Out,
    ) -> PyResult<()> {
        let spam = st.pre_get(py, "spamscore")?;
        let user = st.pre_get(py, "user")?;
        match &mut st.arrival {
            ArrivalSlot::Absent => return Ok(()),
            ArrivalSlot::Native(a) => {
                let a = arrival_mut(a);
                if let Some(s) = &spam {
                    a.spamscore = s.extract()?;
                }
                if let Some(u) = &user {
                    a.user = Str::from(u.extract::<&str>()?);
                    a.owner = self.owner_of(&a.user);
                }
            }
            ArrivalSlot::Raw(ob) => {
                let ob = ob.bind(py);
                if let Some(s) = &spam {
                    ob.set_item("spamscore", s)?;
                }
                if let Some(u) = &user {
                    ob.set_item("user", u)?;
                    ob.set_item("owner", self.owner_of(&u.extract::<String>()?).as_str())?;
                }
            }
        }
        self.reemit_all(py, st, out)
    }

    fn result(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        p: &Parsed<'_>,
        ts: f64,
        line: &[u8],
        out: &mut Out,
    ) -> PyResult<()> {
        let address: &str = &p.address;
        if address.starts_with('>') {
            return Ok(()); // a filter's autoreply is logged as a delivery; it is not one
        }
        let f = &p.fields;
        let get = |k: &str| f.get(k).map(|v| v.as_ref()).unwrap_or("");
        let original: &str = &p.original;
        let rcpt = py_lower(
            py,
            if original.is_empty() {
                address
            } else {
                original
            },
        )?
        .as_ref()
        .into();
        let deliveredto = row_key_part(py, address)?.as_ref().into();
        let router = get("R");
        let transport = get("T");
        let kind = p.kind;
        let mut message: &str = &p.message;
        let etype = if kind == "delivery" {
            let t = if FILTERED_TARGETS.contains(&address) || transport == "**bypassed**" {
                "filtered"
            } else if router.contains("archive") || transport.contains("archive") {
                "archive"
            } else {
                "success"
            };
            if !get("C").is_empty() {
                message = get("C");
            }
            t
        } else if kind == "defer" {
            "defer"
        } else {
            "failure"
        };
        let key = (rcpt, deliveredto);
        // (type, attempts, version) of the row's last state
        let mut prev = st.rows.get(&key).map(|p| {
            (
                SKIP_KEEPS.contains(&p.etype.as_str()),
                p.attempts,
                p.version,
            )
        });
        if prev.is_none() && kind == "delivery" && !key.1.is_empty() && !key.1.contains('@') {
            prev = self
                .supersede_full_address_row(py, st, &key.0, &key.1, ts, out)?
                .map(|p| {
                    (
                        SKIP_KEEPS.contains(&p.etype.as_str()),
                        p.attempts,
                        p.version,
                    )
                });
        }
        let skip = kind == "defer" && message.contains("retry time not reached");
        if skip {
            if let Some(prev) = &prev {
                if prev.0 {
                    self.stats[RETRY_SKIPS] += 1;
                    return Ok(());
                }
            }
        }
        self.tombstone_placeholders(py, st, &key.0, ts, out)?;
        let mut dom = domain_of(py, address)?;
        if dom.is_empty() {
            dom = domain_of(py, &key.0)?;
        }
        let user = self.user_of_domain(py, &dom)?;
        let delivery = Event {
            router: router.into(),
            transport: transport.into(),
            transport_is_remote: transport.contains("remote") as i64,
            host: get("Hname").into(),
            ip: get("Hip").into(),
            message: message.into(),
            confirmation: get("C").into(),
            tls: get("X").into(),
            queue_time: match f.get("QT") {
                Some(v) => seconds(py, v)?,
                None => None,
            },
            delivery_time: match f.get("DT") {
                Some(v) => seconds(py, v)?,
                None => None,
            },
            deliveryowner: self.owner_of(&user),
            deliverydomain: dom,
            deliveryuser: user,
            attempts: prev.map(|p| p.1).unwrap_or(0) + if skip { 0 } else { 1 },
            ..Default::default()
        };
        let mut ev = self.new_event(py, st, etype, &key.0, &key.1, ts, line, Some(delivery))?;
        if let Some((_, _, version)) = prev {
            if ev.version <= version {
                ev.version = version + 1;
            }
        }
        self.emit(py, out, &ev)?;
        st.rows.insert(key, ev);
        Ok(())
    }

    /// `=> bob <bob@dom>` after `== bob@dom …`: the deferred row keyed by the full address is this
    /// recipient's; it is tombstoned and the delivery carries on its attempts.
    fn supersede_full_address_row(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        rcpt: &str,
        local: &str,
        ts: f64,
        out: &mut Out,
    ) -> PyResult<Option<Event>> {
        let mut found = None;
        for (key, row) in &st.rows {
            if key.0 != rcpt || row.etype != "defer" {
                continue;
            }
            match key.1.rfind('@') {
                Some(at) if at > 0 && &key.1[..at] == local => {
                    found = Some(key.clone());
                    break;
                }
                _ => continue,
            }
        }
        match found {
            Some(key) => Ok(Some(self.remove_row(
                py,
                st,
                &key,
                ts,
                "superseded",
                out,
            )?)),
            None => Ok(None),
        }
    }

    /// Drop row `key` and emit its tombstone (`is_deleted`, a version above the row's); returns the row.
    fn remove_row(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        key: &(Str, Str),
        ts: f64,
        why: &str,
        out: &mut Out,
    ) -> PyResult<Event> {
        let row = st.rows.shift_remove(key).expect("the row exists");
        let mut tomb = self.copy_with_arrival(py, st, &row)?;
        tomb.event_id = Str::from(stable_id_of(&[
            self.server.as_bytes(),
            st.msgid.as_bytes(),
            key.0.as_bytes(),
            key.1.as_bytes(),
            why.as_bytes(),
        ]));
        tomb.is_deleted = 1;
        tomb.version = (row.version + 1).max(version_of(ts, rank(&row.etype)?, st.has_arrival()));
        tomb.actionunixtime = ts;
        self.emit(py, out, &tomb)?;
        if self.replayable {
            st.gone.insert(key.clone(), tomb);
        }
        Ok(row)
    }

    fn tombstone_placeholders(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        rcpt: &str,
        ts: f64,
        out: &mut Out,
    ) -> PyResult<()> {
        for key in [
            (rcpt.into(), Str::default()),
            (Str::default(), Str::default()),
        ] {
            if st
                .rows
                .get(&key)
                .map(|ph| ph.etype == "inprogress")
                .unwrap_or(false)
            {
                self.remove_row(py, st, &key, ts, "tombstone", out)?;
            }
        }
        Ok(())
    }

    /// Every row without a final outcome gets `etype` (a message-level row if the message has none).
    #[allow(clippy::too_many_arguments)]
    fn fail_open_rows(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        ts: f64,
        line: &[u8],
        text: &str,
        out: &mut Out,
        etype: &str,
    ) -> PyResult<()> {
        if st.rows.is_empty() {
            let mut ev = self.new_event(py, st, etype, "", "", ts, line, None)?;
            ev.message = text.into();
            self.emit(py, out, &ev)?;
            st.rows.insert((Str::default(), Str::default()), ev);
            return Ok(());
        }
        let open: Vec<(Str, Str)> = st
            .rows
            .iter()
            .filter(|(_, ev)| !is_final(&ev.etype))
            .map(|(k, _)| k.clone())
            .collect();
        for key in open {
            self.replace_row(py, st, key, etype, ts, line, text, out)?;
        }
        Ok(())
    }

    /// Row `key` gets a new state `etype` caused by `line`, keeping what its last attempt said about the
    /// delivery, with `text` as its message.
    #[allow(clippy::too_many_arguments)]
    fn replace_row(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        key: (Str, Str),
        etype: &str,
        ts: f64,
        line: &[u8],
        text: &str,
        out: &mut Out,
    ) -> PyResult<()> {
        let prev = &st.rows[&key];
        let mut ev = self.new_event(py, st, etype, &key.0, &key.1, ts, line, None)?;
        ev.carry_delivery(prev);
        ev.message = text.into();
        ev.version = ev.version.max(prev.version + 1);
        self.emit(py, out, &ev)?;
        st.rows.insert(key, ev);
        Ok(())
    }

    fn error_ignored(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        p: &Parsed<'_>,
        ts: f64,
        line: &[u8],
        out: &mut Out,
    ) -> PyResult<()> {
        let addr: Str = py_lower(py, &p.address)?.as_ref().into();
        let keys: Vec<(Str, Str)> = st
            .rows
            .iter()
            .filter(|(k, ev)| !is_final(&ev.etype) && (addr == k.0 || addr == k.1))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.replace_row(py, st, key, "failure", ts, line, &p.message, out)?;
        }
        Ok(())
    }

    fn reemit_open(
        &mut self,
        py: Python<'_>,
        st: &mut State,
        ts: f64,
        line: &[u8],
        text: &str,
        out: &mut Out,
    ) -> PyResult<()> {
        let keys: Vec<((Str, Str), Str)> = st
            .rows
            .iter()
            .filter(|(_, ev)| !is_final(&ev.etype))
            .map(|(k, ev)| (k.clone(), ev.etype.clone()))
            .collect();
        for (key, etype) in keys {
            self.replace_row(py, st, key, &etype, ts, line, text, out)?;
        }
        Ok(())
    }

    fn rejection(
        &mut self,
        py: Python<'_>,
        p: &Parsed<'_>,
        ts: f64,
        line: &Line<'_, '_>,
        out: &mut Out,
    ) -> PyResult<()> {
        let f = &p.fields;
        let get = |k: &str| f.get(k).map(|v| v.as_ref()).unwrap_or("");
        let msgid = if p.msgid.is_empty() {
            let id = stable_id_of(&[self.server.as_bytes(), line.bytes]);
            format!("rej-{}", &id[..16])
        } else {
            p.msgid.into()
        };
        let msgid_py = PyString::new(py, p.msgid);
        let st = if p.msgid.is_empty() {
            None
        } else {
            self.state_get(py, &msgid_py)?
        };
        let rcpt: Str = py_lower(py, &p.address)?.as_ref().into();
        let email: Str = strip_angle(get("F")).into();
        let auth = get("A");
        let mut ev = Event {
            event_id: self.event_id(&msgid, &rcpt, "", "rejected", line.bytes),
            etype: "rejected".into(),
            server: self.server.as_str().into(),
            msgid: msgid.into(),
            deliverydomain: domain_of(py, &rcpt)?,
            recipient: rcpt,
            router: "reject".into(),
            transport: "**rejected**".into(),
            message: p.message.as_ref().into(),
            actionunixtime: ts,
            attempts: 1,
            ..Default::default()
        };
        let a = arrival_mut(&mut ev.a);
        a.domain = domain_of(py, &email)?;
        a.email = email;
        a.sender = if auth.contains(':') {
            auth.split(':').nth(1).unwrap_or("").into()
        } else {
            Str::default()
        };
        a.senderhost = match get("Hname") {
            "" => get("Hhelo"),
            h => h,
        }
        .into();
        a.senderip = get("Hip").into();
        a.senderauth = if auth.is_empty() {
            Str::default()
        } else {
            auth.split(':').next().unwrap_or("").into()
        };
        a.sendunixtime = ts;
        a.size = message_size(py, get("S"))?;
        let local = get("U");
        if auth.is_empty() && !local.is_empty() {
            // a local submission (outside SMTP): the user who ran it
            a.senderauth = "localuser".into();
            a.sender = local.into();
            a.user = local.into();
        }
        if !a.sender.is_empty() && a.sender.contains('@') {
            let u = self.user_of_domain(py, &domain_of(py, &a.sender)?)?;
            a.user = if u.is_empty() { a.sender.clone() } else { u };
        }
        a.owner = self.owner_of(&a.user);
        ev.deliveryuser = self.user_of_domain(py, &ev.deliverydomain)?;
        ev.deliveryowner = self.owner_of(&ev.deliveryuser);
        if let Some(st) = st {
            arrival_mut(&mut ev.a).spamscore = st.borrow().pre_spamscore(py)?;
            self.state_del(py, msgid_py.as_any())?; // a message rejected after DATA never gets an id again
        }
        ev.version = version_of(ts, rank("rejected")?, false);
        self.emit(py, out, &ev)
    }

    fn sweep_impl(&mut self, py: Python<'_>, now: f64) -> PyResult<usize> {
        self.since_sweep = 0;
        self.last_sweep = now;
        let mut done = Vec::new();
        let mut idle = Vec::new();
        let states = self.states.bind(py).clone();
        let items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = if self.states_dict {
            unsafe { states.cast_unchecked::<PyDict>() }
                .iter()
                .collect()
        } else {
            let mut v = Vec::new();
            for item in states.call_method0("items")?.try_iter()? {
                v.push(item?.extract()?);
            }
            v
        };
        for (k, v) in items {
            let (completed_at, last_seen): (f64, f64) = match v.cast::<State>() {
                Ok(s) => {
                    let s = s.borrow();
                    (s.completed_at, s.last_seen)
                }
                Err(_) => (
                    v.getattr("completed_at")?.extract()?,
                    v.getattr("last_seen")?.extract()?,
                ),
            };
            if completed_at != 0.0 && completed_at + self.grace <= now {
                done.push(k);
            } else if last_seen + self.expiry <= now {
                idle.push(k);
            }
        }
        for k in done.iter().chain(idle.iter()) {
            self.state_del(py, k)?;
        }
        self.stats[EXPIRED] += idle.len() as i64;
        self.stats[OPEN_MESSAGES] = states.len()? as i64;
        Ok(done.len() + idle.len())
    }
}

#[pymethods]
impl Joiner {
    #[new]
    #[pyo3(signature = (server, clock, accounts, grace, expiry, keep_latest, states))]
    fn py_new(
        server: &Bound<'_, PyString>,
        clock: &Bound<'_, PyAny>,
        accounts: &Bound<'_, PyAny>,
        grace: f64,
        expiry: f64,
        keep_latest: bool,
        states: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let mut j = Joiner {
            server: server.to_str()?.to_owned(),
            server_py: server.clone().unbind(),
            clock: clock.clone().unbind(),
            hours: HashMap::new(),
            last_hour: (String::new(), 0.0),
            accounts: accounts.clone().unbind(),
            domains: HashMap::new(),
            owners: HashMap::new(),
            grace,
            expiry,
            states: states.clone().unbind(),
            states_dict: states.is_exact_instance_of::<PyDict>(),
            watermark: 0.0,
            since_sweep: 0,
            last_sweep: 0.0,
            latest: if keep_latest {
                Some(IndexMap::new())
            } else {
                None
            },
            stats: [0; 15],
            ignored_by_rule: IndexMap::new(),
            replayable: false,
        };
        j.set_accounts(accounts)?;
        Ok(j)
    }

    /// Parse and apply one line. `seq` is the line's position in a replayable source (the Kafka offset in
    /// the stream app): a line whose message state has already applied it (seq <= state.hw) changes
    /// nothing and re-emits the message's current rows and its removed rows' tombstones instead, so a
    /// replay after a crash is harmless.
    #[pyo3(signature = (line, file_id=None, offset=None, seq=None))]
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        line: &Bound<'py, PyString>,
        file_id: Option<&Bound<'py, PyAny>>,
        offset: Option<&Bound<'py, PyAny>>,
        seq: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lossy;
        let raw;
        let (text, bytes): (&str, &[u8]) = match line.to_str() {
            Ok(t) => (t, t.as_bytes()),
            Err(_) => {
                // lone surrogates: parsed with each one as U+FFFD (as stream.parse does), ids of the
                // "surrogatepass" bytes (as stable_id makes them)
                lossy = line.to_string_lossy().into_owned();
                raw = line
                    .call_method1("encode", ("utf-8", "surrogatepass"))?
                    .cast_into::<PyBytes>()?;
                (lossy.as_str(), raw.as_bytes())
            }
        };
        let empty = pyo3::intern!(py, "").clone().into_any();
        let file_id = file_id.cloned().unwrap_or(empty);
        let offset = match offset {
            Some(o) => o.clone(),
            None => (-1i64).into_pyobject(py)?.into_any(),
        };
        let ln = Line { bytes, obj: line };
        let mut out = Out::default();
        self.process_parsed(py, text, &ln, &file_id, &offset, seq, &mut out)?;
        let recs = records()?;
        let mut values = [
            PyList::new(py, out.events)?.into_ptr(),
            PyList::new(py, out.rejects)?.into_ptr(),
            PyList::new(py, out.lines)?.into_ptr(),
        ];
        recs.output.make(py, &mut values)
    }

    /// End the states of messages completed more than `grace` ago and of those idle beyond `expiry`.
    fn sweep(&mut self, py: Python<'_>, now: f64) -> PyResult<usize> {
        self.sweep_impl(py, now)
    }

    #[getter]
    fn open_messages(&self, py: Python<'_>) -> PyResult<usize> {
        self.states.bind(py).len()
    }

    /// {(msgid, recipient, deliveredto): DeliveryEvent} as the latest-state table shows it.
    fn latest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Some(latest) = &self.latest else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "Joiner(keep_latest=False) does not fold events",
            ));
        };
        let d = PyDict::new(py);
        for ((m, r, t), (_, deleted, ev)) in latest {
            if *deleted == 0 {
                d.set_item((m.as_str(), r.as_str(), t.as_str()), ev.bind(py))?;
            }
        }
        Ok(d)
    }

    /// Counters of the lines and states (a new dict each time).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, n) in STATS.iter().zip(self.stats) {
            d.set_item(*name, n)?;
        }
        Ok(d)
    }

    /// Lines ignored, by the parser's rule that ignored them (a new dict each time).
    #[getter]
    fn ignored_by_rule<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (rule, n) in &self.ignored_by_rule {
            d.set_item(*rule, *n)?;
        }
        Ok(d)
    }

    #[getter]
    fn server(&self, py: Python<'_>) -> Py<PyString> {
        self.server_py.clone_ref(py)
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Py<PyAny> {
        self.clock.clone_ref(py)
    }

    #[getter]
    fn states(&self, py: Python<'_>) -> Py<PyAny> {
        self.states.clone_ref(py)
    }

    #[setter]
    fn set_states(&mut self, states: &Bound<'_, PyAny>) {
        self.states_dict = states.is_exact_instance_of::<PyDict>();
        self.states = states.clone().unbind();
    }

    /// The server's AccountMap. Setting it takes a snapshot of its `domains` and `owners`, which the rules
    /// read without calling Python.
    #[getter]
    fn accounts(&self, py: Python<'_>) -> Py<PyAny> {
        self.accounts.clone_ref(py)
    }

    #[setter]
    fn set_accounts(&mut self, accounts: &Bound<'_, PyAny>) -> PyResult<()> {
        self.domains = snapshot(&accounts.getattr("domains")?)?;
        self.owners = snapshot(&accounts.getattr("owners")?)?;
        self.accounts = accounts.clone().unbind();
        Ok(())
    }
}

impl Joiner {
    #[allow(clippy::too_many_arguments)]
    fn process_parsed(
        &mut self,
        py: Python<'_>,
        text: &str,
        line: &Line<'_, '_>,
        file_id: &Bound<'_, PyAny>,
        offset: &Bound<'_, PyAny>,
        seq: Option<i64>,
        out: &mut Out,
    ) -> PyResult<()> {
        self.stats[LINES] += 1;
        self.replayable |= seq.is_some();
        // a parser bug must not lose the line or stop the worker: it becomes a reject with the reason
        let p = match std::panic::catch_unwind(|| parse::parse_line(text)) {
            Ok(p) => p,
            Err(_) => Parsed {
                kind: "unparsed",
                reason: "parser error: panic",
                ..Default::default()
            },
        };
        let kind = p.kind;
        if kind == "ignored" {
            self.stats[IGNORED] += 1;
            *self.ignored_by_rule.entry(p.rule).or_insert(0) += 1;
            return Ok(());
        }
        if kind == "unparsed" {
            return self.reject(py, out, line, p.reason, file_id, offset, 0.0);
        }
        let ts = match self.epoch(py, &p)? {
            Ok(ts) => ts,
            Err(why) => {
                return self.reject(
                    py,
                    out,
                    line,
                    &format!("invalid timestamp: {why}"),
                    file_id,
                    offset,
                    0.0,
                );
            }
        };
        if ts > self.watermark {
            self.watermark = ts;
        }
        let mut keep = true;
        if kind == "rejection" {
            self.stats[REJECTIONS] += 1;
            self.rejection(py, &p, ts, line, out)?;
        } else if kind == "note" {
            self.stats[MESSAGE_LINES] += 1;
            keep = self.note(py, &PyString::new(py, p.msgid), seq)?;
        } else {
            self.stats[MESSAGE_LINES] += 1;
            self.apply(py, &p, ts, line, out, seq)?;
        }
        if keep && (!p.msgid.is_empty() || kind == "rejection") {
            let recs = records()?;
            let msgid = if !p.msgid.is_empty() {
                p.msgid.to_owned()
            } else {
                out.first_msgid.clone().unwrap_or_default()
            };
            let id = stable_id_of(&[self.server.as_bytes(), line.bytes]);
            let msgid_ptr = match (&out.first_msgid, &out.msgid_py) {
                (Some(m), Some(m_py)) if *m == msgid => m_py.clone_ref(py).into_ptr(),
                _ => PyString::new(py, &msgid).into_ptr(),
            };
            let mut values = [
                PyString::new(py, &id).into_ptr(),
                self.server_py.clone_ref(py).into_ptr(),
                msgid_ptr,
                PyFloat::new(py, ts).into_ptr(),
                line.obj.clone().into_ptr(),
                recs.schema_version.clone_ref(py).into_ptr(),
            ];
            out.lines.push(recs.line.make(py, &mut values)?.unbind());
        }
        if !out.events.is_empty() {
            self.stats[EVENTED] += 1;
        } else if !out.lines.is_empty() {
            self.stats[ATTACHED] += 1;
        }
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY && self.watermark - self.last_sweep >= SWEEP_MIN_INTERVAL
        {
            let now = self.watermark;
            self.sweep_impl(py, now)?;
        }
        self.stats[EVENTS] += out.events.len() as i64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_split_like_python_re() {
        assert_eq!(recipient_list("a@b c@d"), vec!["a@b", "c@d"]);
        assert_eq!(recipient_list("\"x y\"@d z"), vec!["\"x y\"@d", "z"]);
        assert_eq!(recipient_list("\"unclosed a@b"), vec!["unclosed", "a@b"]);
        assert_eq!(recipient_list("a\u{1f}b"), vec!["a", "b"]);
        assert_eq!(recipient_list("\"a\\\"b\"@c"), vec!["\"a\\\"b\"@c"]);
        assert_eq!(recipient_list("\"a\\\n\"@c"), vec!["a\\", "@c"]);
        assert!(recipient_list("  ").is_empty());
    }

    #[test]
    fn versions_round_half_to_even() {
        assert_eq!(version_of(0.0005, 0, false), 0);
        assert_eq!(version_of(0.0015, 2, true), 2 * 8 + 5);
        assert_eq!(version_of(1700000000.25, 1, false), 1700000000250 * 8 + 2);
    }

    #[test]
    fn msgid_times_read_base62() {
        assert_eq!(msgid_time("000001-000000-00"), 1.0);
        assert_eq!(msgid_time("00000z"), 61.0);
        assert_eq!(msgid_time("0000-_"), 0.0);
        assert_eq!(msgid_time("10"), 62.0);
    }

    #[test]
    fn strip_angle_needs_both() {
        assert_eq!(strip_angle("<a@b>"), "a@b");
        assert_eq!(strip_angle("<a@b"), "<a@b");
        assert_eq!(strip_angle("<>"), "");
        assert_eq!(strip_angle(">"), ">");
    }

    fn with_python(f: impl FnOnce(Python<'_>)) {
        Python::initialize();
        Python::attach(f);
    }

    #[test]
    fn seconds_read_exims_printed_times() {
        with_python(|py| {
            let s = |v: &str| seconds(py, v).unwrap();
            assert_eq!(s(""), None);
            assert_eq!(s("0.005s"), Some(0.005));
            assert_eq!(s("1m3s"), Some(63.0));
            assert_eq!(s("1h2m"), Some(3720.0));
            assert_eq!(s("2"), Some(2.0));
            assert_eq!(s("1w"), Some(604800.0));
            assert_eq!(s("m"), Some(0.0));
            assert_eq!(s("1.2.3s"), None);
            assert_eq!(s("3x"), None);
            assert_eq!(s("\u{661}s"), Some(1.0)); // an Arabic-Indic one: float() reads it
            assert_eq!(s("\u{b2}s"), None); // a superscript two: a digit to isdigit(), not to float()
        });
    }

    #[test]
    fn sizes_are_what_python_reads() {
        with_python(|py| {
            let m = |v: &str| message_size(py, v).unwrap();
            assert_eq!(m("1234"), 1234);
            assert_eq!(m(""), 0);
            assert_eq!(m("-1"), 0);
            assert_eq!(m("9999999999999999999"), 9999999999999999999);
            assert_eq!(m("99999999999999999999"), 0);
            assert_eq!(m("\u{661}\u{662}"), 12);
        });
    }

    #[test]
    fn lower_is_pythons() {
        with_python(|py| {
            assert_eq!(py_lower(py, "Bob@Example.COM").unwrap(), "bob@example.com");
            assert_eq!(py_lower(py, "\u{130}X").unwrap(), "i\u{307}x");
            assert_eq!(py_lower(py, "ΣΑΣ").unwrap(), "σας");
        });
    }
}
