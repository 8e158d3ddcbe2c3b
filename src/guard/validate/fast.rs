//! The fast path: checks a body against its route's rules in one pass over the bytes,
//! without building a JSON tree, and decides what is forwarded:
//!
//! - the body passes as sent (the common case): forwarded byte for byte;
//! - it passes once sanitized (trim, coerce, unknown fields stripped): a second pass
//!   writes the cleaned body straight from the bytes, exactly as the full check would
//!   serialize its tree;
//! - anything else (an invalid record, a batch to drop records from, any doubt): the
//!   full check in `mod.rs` decides, with its precise errors.
//!
//! So this pass only has to be right about what it accepts: every body it passes, the
//! full check passes with the same bytes forwarded. It may leave whatever it likes to
//! the full check, and never reports an error itself. The property test in `tests.rs`
//! and the fuzz target `validate` hold it to that.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use super::format_ok;
use super::schema::{Additional, BodyRules, Kind, ObjectRule, RecordRules, Rule};

/// What the fast path decided.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Valid as sent.
    AsSent,
    /// Valid once cleaned; the cleaned body.
    Cleaned(Vec<u8>),
    /// For the full check to decide.
    Full,
}

/// Checks `body` against `rules`; see the module comment.
pub(super) fn check(body: &[u8], rules: &BodyRules) -> Verdict {
    let RecordRules::Fields(record) = &rules.record else {
        return Verdict::Full;
    };
    // A batch under a deeper pointer than "/key" is left to the full check.
    let batch_key = match &rules.batch_path {
        None => None,
        Some(p) => match p.strip_prefix('/') {
            Some(k) if !k.contains(['/', '~']) => Some(k),
            _ => return Verdict::Full,
        },
    };
    // UTF-8 checked once for the whole body: parsing from a `str` then skips the
    // check string by string.
    let Ok(text) = std::str::from_utf8(body) else {
        return Verdict::Full;
    };
    let run = |out: Option<RefCell<Vec<u8>>>| {
        let st = State {
            rules,
            record,
            batch_key,
            changed: Cell::new(false),
            out,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let ok = Root(&st).deserialize(&mut de).is_ok() && de.end().is_ok();
        (ok, st.changed.get(), st.out)
    };
    match run(None) {
        (false, _, _) => Verdict::Full,
        (true, false, _) => Verdict::AsSent,
        // Valid once cleaned: the same pass again, writing what it cleans.
        (true, true, _) => match run(Some(RefCell::new(Vec::with_capacity(body.len())))) {
            (true, _, Some(out)) => Verdict::Cleaned(out.into_inner()),
            _ => Verdict::Full,
        },
    }
}

/// One pass: the rules, whether anything was cleaned, and (second pass) the output.
struct State<'a> {
    rules: &'a BodyRules,
    record: &'a ObjectRule,
    batch_key: Option<&'a str>,
    changed: Cell<bool>,
    out: Option<RefCell<Vec<u8>>>,
}

impl State<'_> {
    fn raw(&self, bytes: &[u8]) {
        if let Some(out) = &self.out {
            out.borrow_mut().extend_from_slice(bytes);
        }
    }

    /// Writes a value the way the full check serializes its tree.
    fn json<T: serde::Serialize + ?Sized>(&self, v: &T) {
        if let Some(out) = &self.out {
            // Into a Vec, a JSON value cannot fail to serialize.
            let _ = serde_json::to_writer(&mut *out.borrow_mut(), v);
        }
    }

    /// Takes back the comma written before an array element that was not there (an
    /// array's end shows only when the next element is asked for).
    fn unwrite_separator(&self) {
        if let Some(out) = &self.out {
            out.borrow_mut().pop();
        }
    }

    /// Walks an array with `next` (one element read, `None` at the end), writing the
    /// brackets and commas when `write`; returns how many elements there were.
    fn elements<'de, A: SeqAccess<'de>>(
        &self,
        write: bool,
        seq: &mut A,
        mut next: impl FnMut(&mut A) -> Result<Option<()>, A::Error>,
    ) -> Result<usize, A::Error> {
        let write = write && self.out.is_some();
        if write {
            self.raw(b"[");
        }
        let mut n = 0;
        loop {
            // The comma goes before the element; a missing element means the end.
            if write && n > 0 {
                self.raw(b",");
            }
            if next(seq)?.is_none() {
                if write && n > 0 {
                    self.unwrite_separator();
                }
                break;
            }
            n += 1;
        }
        if write {
            self.raw(b"]");
        }
        Ok(n)
    }

    /// A comma before every element but the first.
    fn separator(&self, first: &mut bool) {
        if !std::mem::take(first) {
            self.raw(b",");
        }
    }

    /// An object member's key, after a comma unless it is the first.
    fn key(&self, first: &mut bool, key: &str) {
        self.separator(first);
        self.json(key);
        self.raw(b":");
    }
}

/// "Leave it to the full check": the reason does not matter, the full check finds it.
fn no<T, E: de::Error>() -> Result<T, E> {
    Err(E::custom(""))
}

/// The full check's `max_string`, for keys and string values.
fn within<E: de::Error>(rules: &BodyRules, s: &str) -> Result<(), E> {
    if s.len() > rules.max_string && s.chars().count() > rules.max_string {
        return no();
    }
    Ok(())
}

/// A map key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// The body: one record, an array of records, or an object holding them at `batch.path`.
struct Root<'a>(&'a State<'a>);

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a body")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        if self.0.batch_key.is_some() {
            return no();
        }
        Records {
            st: self.0,
            depth: 0,
        }
        .visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let st = self.0;
        let Some(batch_key) = st.batch_key else {
            return Object {
                st,
                object: Some(st.record),
                depth: 0,
                write: true,
            }
            .visit_map(map);
        };
        // The envelope around a batch: any fields, with the records under one key.
        if st.rules.max_depth == 0 {
            return no();
        }
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut first = true;
        st.raw(b"{");
        while let Some(k) = map.next_key_seed(Key)? {
            within::<A::Error>(st.rules, &k)?;
            if keys.contains(&k) {
                return no();
            }
            st.separator(&mut first);
            st.json(&*k);
            st.raw(b":");
            if k == batch_key {
                map.next_value_seed(Records { st, depth: 1 })?;
            } else {
                map.next_value_seed(Any {
                    st,
                    depth: 1,
                    write: true,
                })?;
            }
            keys.push(k);
        }
        st.raw(b"}");
        if keys.iter().any(|k| k == batch_key) {
            Ok(())
        } else {
            no()
        }
    }
}

/// The array of records.
struct Records<'a> {
    st: &'a State<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Records<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let st = self.st;
        if self.depth >= st.rules.max_depth {
            return no();
        }
        let mut n = 0usize;
        st.elements(true, &mut seq, |seq| {
            let record = Record {
                st,
                depth: self.depth + 1,
            };
            let more = seq.next_element_seed(record)?;
            n += usize::from(more.is_some());
            // Past max_records: stop reading; the full check says so.
            if n > st.rules.max_records {
                return no();
            }
            Ok(more)
        })?;
        Ok(())
    }
}

/// One record: an object under the schema's rule.
struct Record<'a> {
    st: &'a State<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Record<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(Object {
            st: self.st,
            object: Some(self.st.record),
            depth: self.depth,
            write: true,
        })
    }
}

/// An object; with `object`, under its field rules, else only the parse limits.
struct Object<'a> {
    st: &'a State<'a>,
    object: Option<&'a ObjectRule>,
    depth: usize,
    write: bool,
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let st = self.st;
        if self.depth >= st.rules.max_depth {
            return no();
        }
        let required = match self.object {
            Some(o) => match o.required_mask {
                Some(mask) => mask,
                None => return no(),
            },
            None => 0,
        };
        let write = self.write && st.out.is_some();
        // Fields with a rule are tracked as bits (duplicates, required); other keys
        // are kept, for duplicates, only when there are some.
        let mut seen = 0u64;
        let mut others: Vec<Cow<'de, str>> = Vec::new();
        let depth = self.depth + 1;
        let mut first = true;
        if write {
            st.raw(b"{");
        }
        while let Some(k) = map.next_key_seed(Key)? {
            within::<A::Error>(st.rules, &k)?;
            let ruled = self
                .object
                .and_then(|o| o.field_index(&k).map(|i| (i, &o.fields[i].1)));
            if let Some((i, rule)) = ruled {
                if seen & 1 << i != 0 {
                    return no();
                }
                seen |= 1 << i;
                if write {
                    st.key(&mut first, &k);
                }
                map.next_value_seed(Field {
                    st,
                    rule,
                    depth,
                    write,
                })?;
                continue;
            }
            if others.contains(&k) {
                return no();
            }
            let keep = match self.object.map_or(Additional::Allow, |o| o.additional) {
                Additional::Allow => true,
                Additional::Strip => {
                    st.changed.set(true);
                    false
                }
                Additional::Reject => return no(),
            };
            if write && keep {
                st.key(&mut first, &k);
            }
            map.next_value_seed(Any {
                st,
                depth,
                write: write && keep,
            })?;
            others.push(k);
        }
        if write {
            st.raw(b"}");
        }
        if seen & required != required {
            return no();
        }
        Ok(())
    }
}

/// A value no rule speaks about: only the parse limits (depth, strings, duplicate
/// keys); written as is when `write`.
struct Any<'a> {
    st: &'a State<'a>,
    depth: usize,
    write: bool,
}

impl<'de> DeserializeSeed<'de> for Any<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Any<'_> {
    fn put(&self, v: &Value) {
        if self.write {
            self.st.json(v);
        }
    }
}

impl<'de> Visitor<'de> for Any<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.put(&Value::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.put(&Value::from(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.put(&Value::from(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.put(&Number::from_f64(v).map_or(Value::Null, Value::Number));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.put(&Value::Null);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        within(self.st.rules, v)?;
        if self.write {
            self.st.json(v);
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let st = self.st;
        if self.depth >= st.rules.max_depth {
            return no();
        }
        st.elements(self.write, &mut seq, |seq| {
            seq.next_element_seed(Any {
                st,
                depth: self.depth + 1,
                write: self.write,
            })
        })?;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Object {
            st: self.st,
            object: None,
            depth: self.depth,
            write: self.write,
        }
        .visit_map(map)
    }
}

/// A value under a field rule, cleaned (when the route sanitizes) and checked the way
/// the full check does it.
struct Field<'a> {
    st: &'a State<'a>,
    rule: &'a Rule,
    depth: usize,
    write: bool,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Field<'_> {
    /// The type rule, for a value of kind `k`.
    fn kind<E: de::Error>(&self, k: Kind, integral: bool) -> Result<(), E> {
        if self.rule.accepts(k, integral) {
            Ok(())
        } else {
            no()
        }
    }

    /// Enum, then the value written.
    fn finish<E: de::Error>(&self, v: &Value) -> Result<(), E> {
        if let Some(list) = &self.rule.allowed
            && !list.contains(v)
        {
            return no();
        }
        if self.write {
            self.st.json(v);
        }
        Ok(())
    }

    /// A number, from the input or coerced from a string.
    fn number<E: de::Error>(&self, n: Number) -> Result<(), E> {
        let f = n.as_f64().unwrap_or(0.0);
        if n.is_i64() || n.is_u64() {
            self.kind::<E>(Kind::Integer, true)?;
        } else {
            self.kind::<E>(Kind::Number, f.fract() == 0.0)?;
        }
        let r = self.rule;
        if r.min.is_some_and(|m| f < m) || r.max.is_some_and(|m| f > m) {
            return no();
        }
        self.finish(&Value::Number(n))
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.kind(Kind::Boolean, false)?;
        self.finish(&Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(Number::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(Number::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match Number::from_f64(v) {
            Some(n) => self.number(n),
            None => no(),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.kind(Kind::Null, false)?;
        self.finish(&Value::Null)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let r = self.rule;
        let st = self.st;
        within(st.rules, s)?;
        // Sanitizing, as the full check does it: trim, then a numeric string where
        // the rule wants a number becomes that number.
        let mut s = s;
        if st.rules.sanitize {
            if r.trim && s.trim().len() != s.len() {
                s = s.trim();
                st.changed.set(true);
            }
            if r.coerces()
                && let Ok(n) = s.trim().parse::<Number>()
            {
                st.changed.set(true);
                return self.number(n);
            }
        }
        self.kind(Kind::String, false)?;
        // Characters are counted only when the byte length cannot decide: a string
        // has at most as many characters as bytes, and at least a quarter as many.
        let bytes = s.len();
        let undecided = r.max_len.is_some_and(|m| bytes > m)
            || r.min_len.is_some_and(|m| bytes < m.saturating_mul(4));
        if undecided {
            let len = s.chars().count();
            if r.min_len.is_some_and(|m| len < m) || r.max_len.is_some_and(|m| len > m) {
                return no();
            }
        }
        if r.pattern.as_ref().is_some_and(|re| !re.is_match(s))
            || r.format.is_some_and(|f| !format_ok(f, s))
        {
            return no();
        }
        if let Some(list) = &r.allowed
            && !list.iter().any(|a| a.as_str() == Some(s))
        {
            return no();
        }
        if self.write {
            st.json(s);
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let r = self.rule;
        let st = self.st;
        self.kind::<A::Error>(Kind::Array, false)?;
        // An enum of arrays is rare; the full check compares whole values.
        if r.allowed.is_some() || self.depth >= st.rules.max_depth {
            return no();
        }
        let n = st.elements(self.write, &mut seq, |seq| match &r.items {
            Some(item) => seq.next_element_seed(Field {
                st,
                rule: item,
                depth: self.depth + 1,
                write: self.write,
            }),
            None => seq.next_element_seed(Any {
                st,
                depth: self.depth + 1,
                write: self.write,
            }),
        })?;
        if r.min_items.is_some_and(|m| n < m) || r.max_items.is_some_and(|m| n > m) {
            return no();
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.kind::<A::Error>(Kind::Object, false)?;
        if self.rule.allowed.is_some() {
            return no();
        }
        Object {
            st: self.st,
            object: self.rule.object.as_ref(),
            depth: self.depth,
            write: self.write,
        }
        .visit_map(map)
    }
}
