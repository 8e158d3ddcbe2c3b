//! Compiled validation rules: what a field must be, and how it may be cleaned.

use regex::Regex;

/// JSON types a rule may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    String,
    /// Any number.
    Number,
    /// A number without a fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// An object.
    Object,
    /// An array.
    Array,
    /// `null`.
    Null,
}

impl Kind {
    /// Parses a type name from a policy file.
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "string" => Kind::String,
            "number" => Kind::Number,
            "integer" => Kind::Integer,
            "boolean" => Kind::Boolean,
            "object" => Kind::Object,
            "array" => Kind::Array,
            "null" => Kind::Null,
            _ => return None,
        })
    }

    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::Null => "null",
        }
    }
}

/// String formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 3339 / ISO 8601 date and time.
    DateTime,
    /// `YYYY-MM-DD`.
    Date,
    /// An e-mail address (the common shape, not RFC 5322 in full).
    Email,
    /// An RFC 4122 UUID.
    Uuid,
}

impl Format {
    /// Parses a format name from a policy file.
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "date-time" => Format::DateTime,
            "date" => Format::Date,
            "email" => Format::Email,
            "uuid" => Format::Uuid,
            _ => return None,
        })
    }

    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::DateTime => "date-time",
            Format::Date => "date",
            Format::Email => "email",
            Format::Uuid => "uuid",
        }
    }
}

/// What to do with object keys no rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Additional {
    /// Keep them.
    #[default]
    Allow,
    /// Remove them before forwarding.
    Strip,
    /// Refuse the record.
    Reject,
}

/// The rule for one value.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// Allowed types; empty means any.
    pub kinds: Vec<Kind>,
    /// `null` is allowed besides `kinds`.
    pub nullable: bool,
    /// Bounds for numbers.
    pub min: Option<f64>,
    /// Bounds for numbers.
    pub max: Option<f64>,
    /// Bounds for string length (characters).
    pub min_len: Option<usize>,
    /// Bounds for string length (characters).
    pub max_len: Option<usize>,
    /// A regex the whole string must match.
    pub pattern: Option<Regex>,
    /// Allowed values (compared as JSON).
    pub allowed: Option<Vec<serde_json::Value>>,
    /// A string format.
    pub format: Option<Format>,
    /// Trim surrounding white space (when the route sanitizes).
    pub trim: bool,
    /// Turn a numeric string into a number when the rule wants one (when the route
    /// sanitizes).
    pub coerce: bool,
    /// For objects: the rules of their fields.
    pub object: Option<ObjectRule>,
    /// For arrays: the rule of their items.
    pub items: Option<Box<Rule>>,
    /// Bounds for array length.
    pub min_items: Option<usize>,
    /// Bounds for array length.
    pub max_items: Option<usize>,
}

impl Rule {
    /// Whether a value of kind `k` has an accepted type (`integral`: a number without a
    /// fraction). An integer is a number, and a float with no fraction an integer.
    pub fn accepts(&self, k: Kind, integral: bool) -> bool {
        (k == Kind::Null && self.nullable)
            || self.kinds.is_empty()
            || self.kinds.contains(&k)
            || (k == Kind::Integer && self.kinds.contains(&Kind::Number))
            || (k == Kind::Number && integral && self.kinds.contains(&Kind::Integer))
    }

    /// With `sanitize`, whether a numeric string becomes a number under this rule:
    /// `coerce`, a number wanted, and a string not accepted as it is.
    pub fn coerces(&self) -> bool {
        self.coerce
            && self
                .kinds
                .iter()
                .any(|k| matches!(k, Kind::Number | Kind::Integer))
            && !self.kinds.contains(&Kind::String)
    }
}

/// The rules of an object's fields.
#[derive(Debug, Clone, Default)]
pub struct ObjectRule {
    /// Fields that must be present.
    pub required: Vec<String>,
    /// Unknown fields.
    pub additional: Additional,
    /// Each named field's rule, in policy order.
    pub fields: Vec<(String, Rule)>,
    /// `required` as bits over `fields` (the fast path's check), when every required
    /// field has a rule and there are at most 64 fields; `None` otherwise.
    pub required_mask: Option<u64>,
}

impl ObjectRule {
    /// The rule of an object.
    pub fn new(required: Vec<String>, additional: Additional, fields: Vec<(String, Rule)>) -> Self {
        let mask = (fields.len() <= 64)
            .then(|| {
                required.iter().try_fold(0u64, |mask, r| {
                    let i = fields.iter().position(|(k, _)| k == r)?;
                    Some(mask | 1 << i)
                })
            })
            .flatten();
        ObjectRule {
            required,
            additional,
            fields,
            required_mask: mask,
        }
    }

    /// The index of `key`'s rule in `fields`, if any.
    pub fn field_index(&self, key: &str) -> Option<usize> {
        self.fields.iter().position(|(k, _)| k == key)
    }

    /// The rule for `key`, if any.
    pub fn field(&self, key: &str) -> Option<&Rule> {
        self.field_index(key).map(|i| &self.fields[i].1)
    }
}

/// What a record is checked against.
#[derive(Debug, Clone)]
pub enum RecordRules {
    /// sitegate's own rules, from `[schema.NAME]` (these can also sanitize).
    Fields(ObjectRule),
    /// A standard JSON Schema from a route's `schema_file` (checked as is).
    JsonSchema(std::sync::Arc<jsonschema::Validator>),
}

/// How a route treats JSON request bodies.
#[derive(Debug, Clone)]
pub struct BodyRules {
    /// The schema name, or the JSON Schema file's name (for messages).
    pub schema_name: String,
    /// The record rule.
    pub record: RecordRules,
    /// Clean values (trim, coerce) before validating.
    pub sanitize: bool,
    /// Where the records of a batch are (`None`: the body itself, an object or an array).
    pub batch_path: Option<String>,
    /// Drop invalid records instead of refusing the request.
    pub drop_invalid: bool,
    /// Most records in a batch.
    pub max_records: usize,
    /// Deepest nesting anywhere in the body.
    pub max_depth: usize,
    /// Longest string anywhere in the body (characters).
    pub max_string: usize,
}
