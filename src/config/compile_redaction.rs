//! Compiling `[redaction]` into the redaction engine.

use std::sync::Arc;

use regex::bytes::Regex;

use super::Source;
use super::diag::Diagnostic;
use super::raw::RawRedaction;
use crate::policy::RedactionPolicy;
use crate::redact::detectors::BUILTINS;
use crate::redact::{CustomPattern, RedactionSettings, Redactor};

/// Longest match a site pattern may declare: the most a stream holds back for it.
const MAX_PATTERN_LEN: usize = 16 * 1024;

pub(super) fn redaction(
    raw: Option<(RawRedaction, &Source)>,
    diags: &mut Vec<Diagnostic>,
) -> RedactionPolicy {
    let mut settings = RedactionSettings::default();
    let (raw, src) = match raw {
        Some((raw, src)) => (raw, Some(src)),
        None => (RawRedaction::default(), None),
    };
    let mut at = |span: std::ops::Range<usize>, msg: String| {
        if let Some(src) = src {
            diags.push(Diagnostic::at(&src.path, &src.text, Some(span), msg));
        }
    };
    if let Some(r) = raw.replacement {
        if r.get_ref().is_empty() {
            at(r.span(), "redaction.replacement must not be empty".into());
        }
        settings.replacement = r.into_inner();
    }
    if let Some(keys) = raw.json_keys {
        settings.json_keys.clear();
        for k in keys {
            if k.get_ref().is_empty() || k.get_ref().contains('"') {
                at(
                    k.span(),
                    "a JSON key must be non-empty and without quotes".into(),
                );
            } else {
                settings.json_keys.push(k.into_inner());
            }
        }
    }
    for (name, floor) in raw.entropy.into_iter().flatten() {
        let has_floor = name.get_ref() == "json-key"
            || BUILTINS
                .iter()
                .any(|b| b.name == name.get_ref() && b.check.entropy().is_some());
        if !has_floor {
            at(
                name.span(),
                "this detector has no entropy floor (see the README's detector table)".into(),
            );
        } else if !(0.0..=8.0).contains(floor.get_ref()) {
            at(
                floor.span(),
                "an entropy floor is in bits per character: 0 to 8".into(),
            );
        } else {
            settings
                .entropy
                .push((name.into_inner(), floor.into_inner()));
        }
    }
    for d in raw.disable.into_iter().flatten() {
        let known = BUILTINS.iter().any(|b| b.name == d.get_ref()) || d.get_ref() == "json-key";
        if known {
            settings.disable.push(d.into_inner());
        } else {
            at(
                d.span(),
                "unknown detector; see the README for the built-in names".into(),
            );
        }
    }
    for p in raw.pattern.into_iter().flatten() {
        let max_len = match p.max_len {
            Some(m) if *m.get_ref() == 0 || *m.get_ref() > MAX_PATTERN_LEN => {
                at(
                    m.span(),
                    format!("max_len must be between 1 and {MAX_PATTERN_LEN}"),
                );
                continue;
            }
            Some(m) => m.into_inner(),
            None => 256,
        };
        if !p
            .name
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            at(
                p.name.span(),
                "a pattern name must be letters, digits, '-' or '_'".into(),
            );
        }
        match Regex::new(p.regex.get_ref()) {
            // An empty match would redact between every byte.
            Ok(re) if re.is_match(b"") => {
                at(p.regex.span(), "the regex matches the empty string".into())
            }
            Ok(regex) => settings.patterns.push(CustomPattern {
                name: p.name.into_inner(),
                regex,
                max_len,
            }),
            // The regex crate's message points into the pattern itself, which is the
            // operator's own text, not a secret.
            Err(e) => at(p.regex.span(), format!("invalid regex: {e}")),
        }
    }
    let mut skip_types: Vec<String> = crate::policy::DEFAULT_SKIP_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect();
    if let Some(list) = raw.skip_content_types {
        skip_types.clear();
        for t in list {
            let v = t.get_ref().trim().to_ascii_lowercase();
            let valid = match v.split_once('/') {
                Some((kind, sub)) => {
                    let token = |s: &str| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                    };
                    token(kind) && (sub == "*" || token(sub))
                }
                None => false,
            };
            if valid {
                skip_types.push(v);
            } else {
                at(
                    t.span(),
                    "a content type is `type/subtype` or `type/*`, without parameters".into(),
                );
            }
        }
    }
    let unknown_charset = match raw.unknown_charset {
        None => crate::policy::UnknownCharset::Refuse,
        Some(v) => match v.get_ref().as_str() {
            "refuse" => crate::policy::UnknownCharset::Refuse,
            "scan" => crate::policy::UnknownCharset::Scan,
            _ => {
                at(
                    v.span(),
                    "unknown_charset is \"refuse\" (502) or \"scan\" (as bytes)".into(),
                );
                crate::policy::UnknownCharset::Refuse
            }
        },
    };
    let redactor = match Redactor::new(&settings) {
        Ok(r) => r,
        Err(e) => {
            if let Some(src) = src {
                diags.push(Diagnostic::file(&src.path, format!("[redaction]: {e}")));
            }
            // Built-ins alone always compile (a unit test holds them to that).
            return RedactionPolicy::default();
        }
    };
    RedactionPolicy {
        responses: raw.responses.unwrap_or(true),
        buffer_limit: raw.buffer_limit.map_or(1 << 20, |s| s.0),
        redactor: Arc::new(redactor),
        skip_types,
        unknown_charset,
    }
}
