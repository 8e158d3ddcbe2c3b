//! validate: JSON request bodies against a route's rules. Pure: bytes in, a decision
//! out (the body to forward, or a rejection listing every problem).
//!
//! Parsing refuses what a lenient parser would silently accept: duplicate keys (the
//! validator and the app must agree on which value counts), nesting past `max_depth`
//! and strings past `max_string`, all checked while parsing, so a hostile body costs
//! no more than its size.

mod fast;
pub use crate::policy::schema;

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{Detail, ErrorCode, Rejection};
use schema::{Additional, BodyRules, Format, Kind, ObjectRule, RecordRules, Rule};

/// What to forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The body for the app: the original bytes when nothing changed.
    pub body: Option<Vec<u8>>,
    /// Records dropped from a batch (`X-Sitegate-Dropped`).
    pub dropped: usize,
}

const TAG_DEPTH: &str = "sitegate-limit:depth";
const TAG_STRING: &str = "sitegate-limit:string";
const TAG_DUPLICATE: &str = "sitegate-duplicate:";

/// Parses with the structural limits, refusing duplicate keys.
struct Seed<'a> {
    depth: usize,
    rules: &'a BodyRules,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(v).map(|()| Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.string(&v).map(|()| Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.deeper::<A::Error>()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed {
            depth: self.depth + 1,
            rules: self.rules,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.deeper::<A::Error>()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.string::<A::Error>(&key)?;
            let value = map.next_value_seed(Seed {
                depth: self.depth + 1,
                rules: self.rules,
            })?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("{TAG_DUPLICATE}{key}")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

impl Seed<'_> {
    fn deeper<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= self.rules.max_depth {
            return Err(E::custom(TAG_DEPTH));
        }
        Ok(())
    }
    fn string<E: de::Error>(&self, s: &str) -> Result<(), E> {
        // Bytes first: a cheap bound before counting characters.
        if s.len() > self.rules.max_string && s.chars().count() > self.rules.max_string {
            return Err(E::custom(TAG_STRING));
        }
        Ok(())
    }
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

/// Parses `body` within the route's limits.
pub fn parse(body: &[u8], rules: &BodyRules) -> Result<Value, Rejection> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(reject(
            ErrorCode::MalformedJson,
            format!(
                "the request body is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Seed { depth: 0, rules }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| {
        let msg = e.to_string();
        let at = format!("line {} column {}", e.line(), e.column());
        if msg.starts_with(TAG_DEPTH) || msg.starts_with("recursion limit exceeded") {
            reject(
                ErrorCode::ValidationFailed,
                format!(
                    "the body nests deeper than {} levels (at {at})",
                    rules.max_depth
                ),
            )
            .with_details(vec![detail(None, "", "max_depth", "nesting too deep")])
        } else if msg.starts_with(TAG_STRING) {
            reject(
                ErrorCode::ValidationFailed,
                format!(
                    "a string is longer than {} characters (at {at})",
                    rules.max_string
                ),
            )
            .with_details(vec![detail(None, "", "max_string", "string too long")])
        } else if let Some(rest) = msg.strip_prefix(TAG_DUPLICATE) {
            let key = rest.split(" at line").next().unwrap_or("");
            reject(
                ErrorCode::MalformedJson,
                format!("duplicate key `{key}` in an object (at {at})"),
            )
        } else {
            // serde_json's own messages describe the syntax, never quote the input.
            let what = msg.split(" at line").next().unwrap_or("invalid JSON");
            reject(
                ErrorCode::MalformedJson,
                format!("malformed JSON: {what} at {at}"),
            )
        }
    })
}

fn detail(
    record: Option<usize>,
    path: impl fmt::Display,
    rule: &str,
    message: impl Into<String>,
) -> Detail {
    Detail {
        record,
        path: path.to_string(),
        rule: rule.to_string(),
        message: message.into(),
    }
}

/// Where a value sits, as a JSON Pointer built only when a problem is reported (most
/// values have none, and formatting a pointer per field would dominate the check).
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                write!(f, "{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
            }
            Path::Index(parent, i) => write!(f, "{parent}/{i}"),
        }
    }
}

/// Checks a whole body; `Ok` carries what to forward.
pub fn check(body: &[u8], rules: &BodyRules) -> Result<Accepted, Rejection> {
    // Most bodies pass as they are, or once cleaned: decided from the bytes, without a
    // tree. The rest (invalid, or records to drop) get the full check below.
    fast_path(body, rules).map_or_else(|| check_full(body, rules), Ok)
}

/// The fast path's decision alone: `Some` when it accepts the body (and what it would
/// forward), `None` when it leaves the body to the full check. For the tests and fuzz
/// targets that hold it to the full check.
#[doc(hidden)]
pub fn fast_path(body: &[u8], rules: &BodyRules) -> Option<Accepted> {
    match fast::check(body, rules) {
        fast::Verdict::AsSent => Some(Accepted {
            body: None,
            dropped: 0,
        }),
        fast::Verdict::Cleaned(cleaned) => Some(Accepted {
            body: Some(cleaned),
            dropped: 0,
        }),
        fast::Verdict::Full => None,
    }
}

/// The full check alone, without the fast path: builds the JSON tree, reports every
/// problem, sanitizes, strips and drops.
#[doc(hidden)]
pub fn check_full(body: &[u8], rules: &BodyRules) -> Result<Accepted, Rejection> {
    let mut doc = parse(body, rules)?;
    let records = match &rules.batch_path {
        Some(path) => match doc.pointer_mut(path) {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(reject(
                    ErrorCode::ValidationFailed,
                    format!("the body has no array of records at `{path}`"),
                )
                .with_details(vec![detail(
                    None,
                    path,
                    "type",
                    "must be an array of records",
                )]));
            }
        },
        None => match &mut doc {
            Value::Array(items) => items,
            Value::Object(_) => {
                // One record: validate it in place below.
                return check_single(doc, rules);
            }
            _ => {
                return Err(reject(
                    ErrorCode::ValidationFailed,
                    "the body must be a JSON object or an array of objects",
                )
                .with_details(vec![detail(
                    None,
                    "",
                    "type",
                    "must be an object or an array",
                )]));
            }
        },
    };
    if records.len() > rules.max_records {
        return Err(reject(
            ErrorCode::TooManyRecords,
            format!(
                "{} records; this route accepts at most {}",
                records.len(),
                rules.max_records
            ),
        ));
    }
    let total = records.len();
    let mut details = Vec::new();
    let mut changed = false;
    let mut invalid = vec![false; total];
    for (i, record) in records.iter_mut().enumerate() {
        let before = details.len();
        changed |= check_record(record, rules, Some(i), &mut details);
        invalid[i] = details.len() > before;
    }
    let bad = invalid.iter().filter(|b| **b).count();
    if bad == 0 {
        return Ok(Accepted {
            body: changed.then(|| serialize(&doc)),
            dropped: 0,
        });
    }
    if !rules.drop_invalid || bad == total {
        let message = if bad == total && rules.drop_invalid {
            format!("all {total} records are invalid")
        } else {
            format!("{bad} of {total} records are invalid")
        };
        return Err(reject(ErrorCode::ValidationFailed, message).with_details(details));
    }
    // Drop the invalid ones and forward the rest.
    let records = match &rules.batch_path {
        Some(path) => match doc.pointer_mut(path) {
            Some(Value::Array(items)) => items,
            _ => return Err(reject(ErrorCode::Internal, "batch path vanished")),
        },
        None => match &mut doc {
            Value::Array(items) => items,
            _ => return Err(reject(ErrorCode::Internal, "batch vanished")),
        },
    };
    let mut keep = invalid.iter().map(|b| !b);
    records.retain(|_| keep.next().unwrap_or(false));
    Ok(Accepted {
        body: Some(serialize(&doc)),
        dropped: bad,
    })
}

fn check_single(mut doc: Value, rules: &BodyRules) -> Result<Accepted, Rejection> {
    let mut details = Vec::new();
    let changed = check_record(&mut doc, rules, None, &mut details);
    if !details.is_empty() {
        let n = details.len();
        return Err(reject(
            ErrorCode::ValidationFailed,
            format!(
                "the record breaks {n} rule{}",
                if n == 1 { "" } else { "s" }
            ),
        )
        .with_details(details));
    }
    Ok(Accepted {
        body: changed.then(|| serialize(&doc)),
        dropped: 0,
    })
}

fn serialize(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Validates (and, when the route sanitizes, cleans) one record; returns whether it
/// changed.
fn check_record(
    record: &mut Value,
    rules: &BodyRules,
    index: Option<usize>,
    out: &mut Vec<Detail>,
) -> bool {
    let rule = match &rules.record {
        RecordRules::Fields(rule) => rule,
        RecordRules::JsonSchema(schema) => {
            // Messages with the offending values masked: a rejected value may be a
            // secret pasted into the wrong field, and error bodies get logged.
            out.extend(schema.iter_errors(record).map(|e| Detail {
                record: index,
                path: e.instance_path().to_string(),
                rule: e.kind().keyword().to_string(),
                message: e.masked().to_string(),
            }));
            return false;
        }
    };
    match record {
        Value::Object(map) => check_object(map, rule, rules.sanitize, Path::Root, index, out),
        _ => {
            out.push(detail(index, "", "type", "must be an object"));
            false
        }
    }
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => Kind::Integer,
        Value::Number(_) => Kind::Number,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

fn kind_ok(rule: &Rule, v: &Value) -> bool {
    rule.accepts(kind_of(v), v.as_f64().is_some_and(|f| f.fract() == 0.0))
}

fn check_value(
    v: &mut Value,
    rule: &Rule,
    sanitize: bool,
    path: Path<'_>,
    record: Option<usize>,
    out: &mut Vec<Detail>,
) -> bool {
    let mut changed = false;
    if sanitize {
        if let (true, Value::String(s)) = (rule.trim, &mut *v) {
            let t = s.trim();
            if t.len() != s.len() {
                *s = t.to_string();
                changed = true;
            }
        }
        if rule.coerces()
            && let Value::String(s) = &*v
            && let Ok(n) = s.trim().parse::<serde_json::Number>()
        {
            *v = Value::Number(n);
            changed = true;
        }
    }
    if !kind_ok(rule, v) {
        let want: Vec<&str> = rule.kinds.iter().map(|k| k.as_str()).collect();
        out.push(detail(
            record,
            path,
            "type",
            format!("must be {}", want.join(" or ")),
        ));
        return changed;
    }
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if let Some(min) = rule.min.filter(|m| f < *m) {
                out.push(detail(record, path, "min", format!("must be >= {min}")));
            }
            if let Some(max) = rule.max.filter(|m| f > *m) {
                out.push(detail(record, path, "max", format!("must be <= {max}")));
            }
        }
        Value::String(s) => {
            let len = s.chars().count();
            if let Some(min) = rule.min_len.filter(|m| len < *m) {
                out.push(detail(
                    record,
                    path,
                    "min_len",
                    format!("must be at least {min} characters"),
                ));
            }
            if let Some(max) = rule.max_len.filter(|m| len > *m) {
                out.push(detail(
                    record,
                    path,
                    "max_len",
                    format!("must be at most {max} characters"),
                ));
            }
            if let Some(re) = rule.pattern.as_ref().filter(|re| !re.is_match(s)) {
                out.push(detail(
                    record,
                    path,
                    "pattern",
                    format!("must match {}", re.as_str()),
                ));
            }
            if let Some(f) = rule.format.filter(|f| !format_ok(*f, s)) {
                out.push(detail(
                    record,
                    path,
                    "format",
                    format!("must be a valid {}", f.as_str()),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(min) = rule.min_items.filter(|m| items.len() < *m) {
                out.push(detail(
                    record,
                    path,
                    "min_items",
                    format!("must have at least {min} items"),
                ));
            }
            if let Some(max) = rule.max_items.filter(|m| items.len() > *m) {
                out.push(detail(
                    record,
                    path,
                    "max_items",
                    format!("must have at most {max} items"),
                ));
            }
            if let Some(item_rule) = &rule.items {
                for (i, item) in items.iter_mut().enumerate() {
                    changed |= check_value(
                        item,
                        item_rule,
                        sanitize,
                        Path::Index(&path, i),
                        record,
                        out,
                    );
                }
            }
        }
        Value::Object(map) => {
            if let Some(obj) = &rule.object {
                changed |= check_object(map, obj, sanitize, path, record, out);
            }
        }
        _ => {}
    }
    if let Some(allowed) = rule.allowed.as_ref().filter(|a| !a.contains(v)) {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        out.push(detail(
            record,
            path,
            "enum",
            format!("must be one of {}", list.join(", ")),
        ));
    }
    changed
}

fn check_object(
    map: &mut Map<String, Value>,
    obj: &ObjectRule,
    sanitize: bool,
    path: Path<'_>,
    record: Option<usize>,
    out: &mut Vec<Detail>,
) -> bool {
    let mut changed = false;
    for key in &obj.required {
        if !map.contains_key(key) {
            out.push(detail(
                record,
                Path::Key(&path, key),
                "required",
                "is required",
            ));
        }
    }
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| obj.field(k).is_none())
        .cloned()
        .collect();
    match obj.additional {
        Additional::Allow => {}
        Additional::Strip => {
            for k in &unknown {
                map.shift_remove(k);
                changed = true;
            }
        }
        Additional::Reject => {
            for k in &unknown {
                out.push(detail(
                    record,
                    Path::Key(&path, k),
                    "additional",
                    "is not an allowed field",
                ));
            }
        }
    }
    for (key, value) in map.iter_mut() {
        if let Some(rule) = obj.field(key) {
            changed |= check_value(value, rule, sanitize, Path::Key(&path, key), record, out);
        }
    }
    changed
}

fn format_ok(f: Format, s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<u32>().ok()).unwrap_or(0);
    let date_ok = |s: &str| {
        let b = s.as_bytes();
        b.len() == 10
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && {
                let (y, m, d) = (num(0..4), num(5..7), num(8..10));
                let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
                let days = [
                    31,
                    if leap { 29 } else { 28 },
                    31,
                    30,
                    31,
                    30,
                    31,
                    31,
                    30,
                    31,
                    30,
                    31,
                ];
                (1..=12).contains(&m) && d >= 1 && d <= days[(m - 1) as usize]
            }
    };
    match f {
        Format::Date => date_ok(s),
        Format::DateTime => {
            // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM), 'T' or ' ' between.
            // `get`, not indexing: byte 10 may fall inside a multi-byte character.
            let date = s.get(..10).filter(|_| s.len() >= 20);
            if !date.is_some_and(date_ok) || !matches!(b[10], b'T' | b't' | b' ') {
                return false;
            }
            if !(digits(11..13)
                && b[13] == b':'
                && digits(14..16)
                && b[16] == b':'
                && digits(17..19))
            {
                return false;
            }
            if num(11..13) > 23 || num(14..16) > 59 || num(17..19) > 60 {
                return false;
            }
            let mut i = 19;
            if b.get(i) == Some(&b'.') {
                i += 1;
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
            match &s[i..] {
                "Z" | "z" => true,
                tz => {
                    let t = tz.as_bytes();
                    t.len() == 6
                        && matches!(t[0], b'+' | b'-')
                        && t[1..3].iter().all(u8::is_ascii_digit)
                        && t[3] == b':'
                        && t[4..6].iter().all(u8::is_ascii_digit)
                }
            }
        }
        Format::Email => {
            let Some((local, domain)) = s.rsplit_once('@') else {
                return false;
            };
            !local.is_empty()
                && local.len() <= 64
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        Format::Uuid => {
            b.len() == 36
                && b.iter().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => *c == b'-',
                    _ => c.is_ascii_hexdigit(),
                })
        }
    }
}

#[cfg(test)]
mod tests;
