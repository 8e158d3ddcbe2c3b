//! The fast path: decides, in one pass over the bytes and without building a JSON tree,
//! whether a body passes its route's rules *as it is* — valid, and needing no
//! sanitizing, stripping or dropping. Such a body (the common case) is forwarded byte
//! for byte. Anything else, or any doubt, answers `false`, and the full check in
//! `mod.rs` decides, with its precise errors and its rewriting.
//!
//! So this pass only has to be sound for `true`: every rule it accepts must be accepted
//! by the full check, and it may refuse to judge whatever it does not need to (an
//! error is never reported from here). The fuzz target `validate` holds it to that.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::format_ok;
use super::schema::{Additional, BodyRules, Kind, ObjectRule, RecordRules, Rule};

/// True when `body` passes `rules` unchanged.
pub(super) fn clean(body: &[u8], rules: &BodyRules) -> bool {
    let RecordRules::Fields(record) = &rules.record else {
        return false;
    };
    // A batch under a deeper pointer than "/key" is left to the full check.
    let batch_key = match &rules.batch_path {
        None => None,
        Some(p) => match p.strip_prefix('/') {
            Some(k) if !k.contains(['/', '~']) => Some(k),
            _ => return false,
        },
    };
    let ctx = Ctx {
        rules,
        record,
        batch_key,
    };
    // UTF-8 checked once for the whole body: parsing from a `str` then skips the
    // check string by string.
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let mut de = serde_json::Deserializer::from_str(text);
    Root(&ctx).deserialize(&mut de).is_ok() && de.end().is_ok()
}

struct Ctx<'a> {
    rules: &'a BodyRules,
    record: &'a ObjectRule,
    batch_key: Option<&'a str>,
}

/// "Not clean": the reason does not matter, the full check will find it.
fn no<T, E: de::Error>() -> Result<T, E> {
    Err(E::custom(""))
}

/// Holds a key and checks it against `max_string`, the way the full check does.
fn key<'de, E: de::Error>(rules: &BodyRules, k: Cow<'de, str>) -> Result<Cow<'de, str>, E> {
    if k.len() > rules.max_string && k.chars().count() > rules.max_string {
        return no();
    }
    Ok(k)
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
struct Root<'a>(&'a Ctx<'a>);

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
            ctx: self.0,
            depth: 0,
        }
        .visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let Some(batch_key) = ctx.batch_key else {
            return Object {
                rules: ctx.rules,
                object: Some(ctx.record),
                depth: 0,
            }
            .visit_map(map);
        };
        // The envelope around a batch: any fields, with the records under one key.
        if ctx.rules.max_depth == 0 {
            return no();
        }
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut found = false;
        while let Some(k) = map.next_key_seed(Key)? {
            let k = key(ctx.rules, k)?;
            if keys.contains(&k) {
                return no();
            }
            if k == batch_key {
                found = true;
                map.next_value_seed(Records { ctx, depth: 1 })?;
            } else {
                map.next_value_seed(Any {
                    rules: ctx.rules,
                    depth: 1,
                })?;
            }
            keys.push(k);
        }
        if found { Ok(()) } else { no() }
    }
}

/// The array of records.
struct Records<'a> {
    ctx: &'a Ctx<'a>,
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
        let rules = self.ctx.rules;
        if self.depth >= rules.max_depth {
            return no();
        }
        let mut n = 0usize;
        while seq
            .next_element_seed(Record {
                rules,
                object: self.ctx.record,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            n += 1;
            if n > rules.max_records {
                return no();
            }
        }
        Ok(())
    }
}

/// One record: an object under the schema's rule.
struct Record<'a> {
    rules: &'a BodyRules,
    object: &'a ObjectRule,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Record<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(Object {
            rules: self.rules,
            object: Some(self.object),
            depth: self.depth,
        })
    }
}

/// An object; with `object`, under its field rules, else only the parse limits.
struct Object<'a> {
    rules: &'a BodyRules,
    object: Option<&'a ObjectRule>,
    depth: usize,
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= self.rules.max_depth {
            return no();
        }
        let required = match self.object {
            Some(o) => match o.required_mask {
                Some(mask) => mask,
                None => return no(),
            },
            None => 0,
        };
        // Fields with a rule are tracked as bits (duplicates, required); other keys
        // are kept, for duplicates, only when there are some.
        let mut seen = 0u64;
        let mut others: Vec<Cow<'de, str>> = Vec::new();
        let depth = self.depth + 1;
        while let Some(k) = map.next_key_seed(Key)? {
            let k = key(self.rules, k)?;
            let ruled = self
                .object
                .and_then(|o| o.field_index(&k).map(|i| (i, &o.fields[i].1)));
            match ruled {
                Some((i, rule)) => {
                    if seen & 1 << i != 0 {
                        return no();
                    }
                    seen |= 1 << i;
                    map.next_value_seed(Field {
                        rules: self.rules,
                        rule,
                        depth,
                    })?;
                }
                None => {
                    if self
                        .object
                        .is_some_and(|o| o.additional != Additional::Allow)
                        || others.contains(&k)
                    {
                        return no();
                    }
                    map.next_value_seed(Any {
                        rules: self.rules,
                        depth,
                    })?;
                    others.push(k);
                }
            }
        }
        if seen & required != required {
            return no();
        }
        Ok(())
    }
}

/// A value no rule speaks about: only the parse limits (depth, strings, duplicate keys).
struct Any<'a> {
    rules: &'a BodyRules,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Any<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Any<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        key(self.rules, Cow::Borrowed(v)).map(drop)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.rules.max_depth {
            return no();
        }
        while seq
            .next_element_seed(Any {
                rules: self.rules,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Object {
            rules: self.rules,
            object: None,
            depth: self.depth,
        }
        .visit_map(map)
    }
}

/// A value under a field rule: accepted only if the full check would accept it as is.
struct Field<'a> {
    rules: &'a BodyRules,
    rule: &'a Rule,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Field<'_> {
    /// The full check's type rule (`kind_ok`), for a value of kind `k`.
    fn kind<E: de::Error>(&self, k: Kind, integral: bool) -> Result<(), E> {
        let r = self.rule;
        let ok = (k == Kind::Null && r.nullable)
            || r.kinds.is_empty()
            || r.kinds.contains(&k)
            || (k == Kind::Integer && r.kinds.contains(&Kind::Number))
            || (k == Kind::Number && integral && r.kinds.contains(&Kind::Integer));
        if ok { Ok(()) } else { no() }
    }

    fn allowed<E: de::Error>(&self, v: impl FnOnce() -> Value) -> Result<(), E> {
        match &self.rule.allowed {
            Some(list) if !list.contains(&v()) => no(),
            _ => Ok(()),
        }
    }

    fn number<E: de::Error>(&self, f: f64, v: impl FnOnce() -> Value) -> Result<(), E> {
        let r = self.rule;
        if r.min.is_some_and(|m| f < m) || r.max.is_some_and(|m| f > m) {
            return no();
        }
        self.allowed(v)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.kind(Kind::Boolean, false)?;
        self.allowed(|| Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.kind(Kind::Integer, true)?;
        self.number(v as f64, || Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.kind(Kind::Integer, true)?;
        self.number(v as f64, || Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.kind(Kind::Number, v.fract() == 0.0)?;
        self.number(v, || {
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.kind(Kind::Null, false)?;
        self.allowed(|| Value::Null)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let r = self.rule;
        key(self.rules, Cow::Borrowed(s))?;
        // A string the full check would trim or turn into a number is not "as is".
        if self.rules.sanitize && r.trim && s.trim().len() != s.len() {
            return no();
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
        match &r.allowed {
            Some(list) if !list.iter().any(|a| a.as_str() == Some(s)) => no(),
            _ => Ok(()),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let r = self.rule;
        self.kind::<A::Error>(Kind::Array, false)?;
        // An enum of arrays is rare; the full check compares whole values.
        if r.allowed.is_some() || self.depth >= self.rules.max_depth {
            return no();
        }
        let mut n = 0usize;
        loop {
            let more = match &r.items {
                Some(item) => seq.next_element_seed(Field {
                    rules: self.rules,
                    rule: item,
                    depth: self.depth + 1,
                })?,
                None => seq.next_element_seed(Any {
                    rules: self.rules,
                    depth: self.depth + 1,
                })?,
            };
            if more.is_none() {
                break;
            }
            n += 1;
        }
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
            rules: self.rules,
            object: self.rule.object.as_ref(),
            depth: self.depth,
        }
        .visit_map(map)
    }
}
