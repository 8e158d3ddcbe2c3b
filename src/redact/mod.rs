//! The redaction engine: bytes in, bytes and findings out. Pure.
//!
//! One pass over the input finds the detectors' keywords ([`keywords`]); only around a
//! keyword hit does a detector's regex run, in a window bounded by the detector's
//! longest match. Because every match is bounded, the same engine redacts a stream
//! chunk by chunk and gives exactly the whole-buffer result: it holds back only the
//! bytes a match could still start in (see [`Redactor::scan`]).

pub mod detectors;
pub mod keywords;
#[doc(hidden)]
pub mod samples;
pub mod stream;
pub mod unescape;

use std::ops::Range;
use std::sync::Arc;

use regex::bytes::Regex;

use detectors::{BUILTINS, Check, Redact};
use keywords::Keywords;
use unescape::{Escapes, View};

/// Bytes of already-emitted input kept before the scan start, so a regex sees the
/// character before a match (word boundaries) and keywords' look-back.
const CONTEXT: usize = 64;

/// One compiled detector.
#[derive(Debug)]
struct Detector {
    name: Arc<str>,
    regex: Regex,
    lookback: usize,
    max_len: usize,
    redact: Redact,
    check: Check,
    /// See [`detectors::Builtin::terminated`].
    terminated: bool,
    /// The regex has an unbounded repetition: its match may run past `max_len`, so a
    /// search is held to a bounded stretch (see [`Redactor::search`]).
    unbounded: bool,
}

/// True when `regex` can match more than any fixed number of bytes.
fn unbounded(regex: &Regex) -> bool {
    !matches!(longest_match(regex.as_str()), Ok(Some(_)))
}

/// The longest match `pattern` can make, in bytes, read from its syntax; `None` when
/// a repetition is unbounded.
pub fn longest_match(pattern: &str) -> Result<Option<usize>, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    Ok(hir.properties().maximum_len())
}

/// A site-specific detector from `[[redaction.pattern]]`.
#[derive(Debug, Clone)]
pub struct CustomPattern {
    /// Its name.
    pub name: String,
    /// The compiled regex (its whole match is redacted).
    pub regex: Regex,
    /// Longest match in bytes (the pattern's `max_len`, default 256): its window.
    pub max_len: usize,
}

/// What redaction is configured to do.
#[derive(Debug, Clone)]
pub struct RedactionSettings {
    /// Replaces each secret.
    pub replacement: String,
    /// JSON keys whose string values are redacted (at any depth).
    pub json_keys: Vec<String>,
    /// Built-in detectors switched off, by name.
    pub disable: Vec<String>,
    /// Site detectors.
    pub patterns: Vec<CustomPattern>,
    /// Entropy floors set per detector (`[redaction.entropy]`), over the built-in ones.
    pub entropy: Vec<(String, f32)>,
}

impl Default for RedactionSettings {
    fn default() -> Self {
        RedactionSettings {
            replacement: "[REDACTED]".into(),
            json_keys: DEFAULT_JSON_KEYS.iter().map(|s| s.to_string()).collect(),
            disable: Vec::new(),
            patterns: Vec::new(),
            entropy: Vec::new(),
        }
    }
}

/// The JSON keys redacted when the policy names none (DESIGN §2).
pub const DEFAULT_JSON_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "refresh_token",
    "authorization",
    "private_key",
    "client_secret",
    "connection_string",
];

/// The built-in engine with default settings, compiled once: what logs go through
/// before a policy is loaded.
pub fn default_redactor() -> Arc<Redactor> {
    static DEFAULT: std::sync::LazyLock<Arc<Redactor>> = std::sync::LazyLock::new(|| {
        #[allow(clippy::expect_used)]
        let r = Redactor::new(&RedactionSettings::default())
            .expect("invariant: the built-in detectors compile (tested)");
        Arc::new(r)
    });
    DEFAULT.clone()
}

/// A secret found: which detector, and the byte range that is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The detector's name.
    pub detector: Arc<str>,
    /// Bytes replaced (never the secret itself).
    pub range: Range<usize>,
    /// The secret did not end within the detector's window (a private key block
    /// longer than 64 KiB): what follows may still hold part of it, so the body must
    /// not be passed on as if it had been redacted.
    pub cut: bool,
}

/// A candidate during a scan: the whole match (for overlaps) and what it replaces.
struct Candidate {
    span: Range<usize>,
    replace: Range<usize>,
    detector: usize,
    cut: bool,
}

/// A detector's keyword hits during a scan, merged into one search window.
#[derive(Clone, Copy)]
enum Window {
    /// No hit yet.
    Idle,
    /// Hits whose windows overlap: search `start..end` once.
    Open(usize, usize),
    /// A hit whose window runs past the input (a stream's next chunk may complete
    /// it): this detector decides nothing more in this call.
    Pending,
}

/// The compiled engine.
#[derive(Debug)]
pub struct Redactor {
    detectors: Vec<Detector>,
    keywords: Keywords,
    /// Keyword pattern id → the detectors that own it.
    owners: Vec<Vec<usize>>,
    /// Detectors without keywords: their regex scans everything.
    full_scan: Vec<usize>,
    replacement: Vec<u8>,
    /// Bytes at the end of the input that are always held back in streaming mode.
    tail: usize,
}

/// A regex the policy supplied did not compile.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(String);

impl Redactor {
    /// The keyword pre-filter this engine runs (the fuzz checks compare it with a
    /// naive search).
    pub fn keywords(&self) -> &Keywords {
        &self.keywords
    }

    /// Compiles the built-ins (minus `disable`), the JSON-key detector and the site
    /// patterns.
    pub fn new(settings: &RedactionSettings) -> Result<Self, BuildError> {
        let mut detectors = Vec::new();
        let mut keyword_list: Vec<(String, usize)> = Vec::new();
        let mut full_scan = Vec::new();
        for b in BUILTINS
            .iter()
            .filter(|b| !settings.disable.iter().any(|d| d == b.name))
        {
            // ASCII mode: secrets are ASCII, and Unicode classes (`\b`, `\s`, `(?i)`)
            // would make each automaton many times larger and slower.
            let pattern = format!("(?-u){}", b.regex);
            let regex = Regex::new(&pattern).map_err(|e| BuildError(format!("{}: {e}", b.name)))?;
            let max_len = match b.max_len {
                0 => longest_match(&pattern)
                    .map_err(|e| BuildError(format!("{}: {e}", b.name)))?
                    .ok_or_else(|| BuildError(format!("{}: unbounded repetition", b.name)))?,
                declared => declared,
            };
            for k in b.keywords {
                keyword_list.push((k.to_string(), detectors.len()));
            }
            let check = settings
                .entropy
                .iter()
                .find(|(name, _)| name == b.name)
                .map_or(b.check, |(_, floor)| b.check.with_entropy(*floor));
            detectors.push(Detector {
                name: Arc::from(b.name),
                unbounded: unbounded(&regex),
                regex,
                lookback: b.lookback,
                max_len,
                redact: b.redact,
                check,
                terminated: b.terminated,
            });
        }
        if !settings.json_keys.is_empty() && !settings.disable.iter().any(|d| d == "json-key") {
            let alternatives: Vec<String> = settings
                .json_keys
                .iter()
                .map(|k| regex::escape(k))
                .collect();
            // Plain JSON, and JSON escaped inside a JSON string (a config echoed by a
            // debug endpoint): `"token": "v"` and `\"token\": \"v\"`.
            let pattern = format!(
                r#"(?-u)(?i)\\?"(?:{})\\?"[ \t\r\n]{{0,16}}:[ \t\r\n]{{0,16}}(?:\\"([^"\\]+)\\"|"((?:[^"\\]|\\.)+)")"#,
                alternatives.join("|")
            );
            let regex = Regex::new(&pattern).map_err(|e| BuildError(format!("json-key: {e}")))?;
            // A value of up to 4 KiB, escaped (twice the bytes), and its key.
            let max_len = 4096 * 2 + 256;
            for k in &settings.json_keys {
                keyword_list.push((format!("\"{k}"), detectors.len()));
            }
            let floor = settings
                .entropy
                .iter()
                .find(|(name, _)| name == "json-key")
                .map_or(1.5, |(_, f)| *f);
            detectors.push(Detector {
                name: Arc::from("json-key"),
                regex,
                // The escaped form starts with the backslash before the keyword's quote.
                lookback: 1,
                max_len,
                redact: Redact::Group,
                // Shape-aware like the assignments: `"secret": "AWS::SecretsManager"`
                // names a thing, `"token": "end of stream"` is prose.
                check: Check::Assignment(floor),
                terminated: false,
                unbounded: true,
            });
        }
        for p in &settings.patterns {
            full_scan.push(detectors.len());
            detectors.push(Detector {
                name: Arc::from(p.name.as_str()),
                regex: p.regex.clone(),
                lookback: 0,
                max_len: p.max_len,
                redact: Redact::Match,
                check: Check::None,
                terminated: false,
                unbounded: unbounded(&p.regex),
            });
        }
        // One automaton for every keyword; detectors sharing a keyword share the id.
        let mut patterns: Vec<String> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        for (k, d) in keyword_list {
            let lower = k.to_ascii_lowercase();
            match patterns.iter().position(|p| *p == lower) {
                Some(i) => owners[i].push(d),
                None => {
                    patterns.push(lower);
                    owners.push(vec![d]);
                }
            }
        }
        let keywords = Keywords::new(&patterns);
        let longest_keyword = keywords.longest();
        let max_lookback = detectors.iter().map(|d| d.lookback).max().unwrap_or(0);
        let max_custom = full_scan
            .iter()
            .map(|i| detectors[*i].max_len + 1)
            .max()
            .unwrap_or(0);
        Ok(Redactor {
            detectors,
            keywords,
            owners,
            full_scan,
            replacement: settings.replacement.as_bytes().to_vec(),
            tail: (longest_keyword + max_lookback).max(max_custom),
        })
    }

    /// The names of the active detectors.
    pub fn detector_names(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| &*d.name)
    }

    /// The longest stretch of input a stream may hold back.
    pub fn max_window(&self) -> usize {
        self.detectors
            .iter()
            .map(|d| d.lookback + d.max_len + 1)
            .max()
            .unwrap_or(0)
            + CONTEXT
    }

    /// Redacts a whole buffer. Returns `None` when nothing was found (the input is
    /// then to be used as it is), else the redacted bytes and the findings.
    pub fn redact(&self, input: &[u8]) -> Option<(Vec<u8>, Vec<Finding>)> {
        self.redact_with(input, Escapes::BODY)
    }

    /// [`Redactor::redact`], matching through the escapes `esc` (log lines and header
    /// values take percent-encoding too).
    pub fn redact_with(&self, input: &[u8], esc: Escapes) -> Option<(Vec<u8>, Vec<Finding>)> {
        let (found, _) = self.scan_with(input, 0, true, esc);
        if found.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(input.len());
        let end = self.apply(input, 0, input.len(), &found, &mut out);
        debug_assert_eq!(end, input.len());
        Some((out, found))
    }

    /// Writes `hay[from..to]` to `out` with `found` (sorted, within the range)
    /// replaced; returns `to`.
    fn apply(
        &self,
        hay: &[u8],
        from: usize,
        to: usize,
        found: &[Finding],
        out: &mut Vec<u8>,
    ) -> usize {
        let mut at = from;
        for f in found {
            out.extend_from_slice(&hay[at..f.range.start]);
            out.extend_from_slice(&self.replacement);
            at = f.range.end;
        }
        out.extend_from_slice(&hay[at..to]);
        to
    }

    /// Finds the secrets in `hay[from..]` (bytes before `from` are context: already
    /// decided and emitted). With `eof` false, more input may follow; the returned
    /// `safe` offset is where the output is final: no secret can start before it
    /// whose bytes are not all here, and every finding before it is returned. With
    /// `eof` true, `safe` is the end.
    ///
    /// Matching sees JSON string escapes decoded (what a JSON client reads); offsets
    /// are the raw input's, widened to whole escapes.
    pub fn scan(&self, hay: &[u8], from: usize, eof: bool) -> (Vec<Finding>, usize) {
        self.scan_with(hay, from, eof, Escapes::BODY)
    }

    /// [`Redactor::scan`] through the escapes `esc`.
    pub fn scan_with(
        &self,
        hay: &[u8],
        from: usize,
        eof: bool,
        esc: Escapes,
    ) -> (Vec<Finding>, usize) {
        let Some(view) = View::new(hay, esc, eof) else {
            return self.scan_decoded(hay, from, eof);
        };
        let (found, safe) = self.scan_decoded(&view.bytes, view.to_view(from), eof);
        let mut last = from;
        let found = found
            .into_iter()
            .filter_map(|f| {
                let start = view.to_raw(f.range.start, false).max(last);
                let end = view.to_raw(f.range.end, true);
                (start < end).then(|| {
                    last = end;
                    Finding {
                        range: start..end,
                        ..f
                    }
                })
            })
            .collect();
        (found, view.to_raw(safe, false).max(from))
    }

    /// The scan over bytes as they are matched.
    fn scan_decoded(&self, hay: &[u8], from: usize, eof: bool) -> (Vec<Finding>, usize) {
        let len = hay.len();
        let mut safe = if eof {
            len
        } else {
            len.saturating_sub(self.tail).max(from)
        };
        let mut candidates: Vec<Candidate> = Vec::new();
        // Each detector's hits are merged into windows that are searched once, so the
        // cost is the bytes searched, however densely a keyword repeats (`eyJeyJ...`
        // searched per hit cost each hit a whole window: quadratic).
        let mut windows: Vec<Window> = Vec::new();
        self.keywords.find(&hay[from..], |keyword, start| {
            let s = from + start;
            if windows.is_empty() {
                windows = vec![Window::Idle; self.detectors.len()];
            }
            for &d in &self.owners[keyword] {
                let det = &self.detectors[d];
                let (lo, hi) = (s.saturating_sub(det.lookback), s + det.max_len + 1);
                match windows[d] {
                    Window::Pending => {}
                    open if !eof && hi > len => {
                        // Its match could still grow: hold from where it could start.
                        if let Window::Open(a, b) = open {
                            self.search(hay, d, a, b, from, &mut candidates);
                        }
                        windows[d] = Window::Pending;
                        safe = safe.min(lo.max(from));
                    }
                    Window::Open(a, b) if lo < b => windows[d] = Window::Open(a, hi.min(len)),
                    Window::Open(a, b) => {
                        self.search(hay, d, a, b, from, &mut candidates);
                        windows[d] = Window::Open(lo, hi.min(len));
                    }
                    Window::Idle => windows[d] = Window::Open(lo, hi.min(len)),
                }
            }
        });
        for (d, w) in windows.iter().enumerate() {
            if let Window::Open(a, b) = *w {
                self.search(hay, d, a, b, from, &mut candidates);
            }
        }
        for &d in &self.full_scan {
            let det = &self.detectors[d];
            let mut at = from;
            while let Some(caps) = det.regex.captures_at(hay, at) {
                let Some(m) = caps.get(0) else { break };
                if !eof && m.start() + det.max_len + 1 > len {
                    safe = safe.min(m.start());
                    break;
                }
                candidates.push(Candidate {
                    span: m.range(),
                    replace: m.range(),
                    detector: d,
                    cut: false,
                });
                at = if m.end() > m.start() {
                    m.end()
                } else {
                    m.end() + 1
                };
                if at > len {
                    break;
                }
            }
        }
        // Leftmost first, longest on ties, then the more specific detector (listed
        // first); overlaps lose.
        candidates.sort_by(|a, b| {
            a.span
                .start
                .cmp(&b.span.start)
                .then(b.span.end.cmp(&a.span.end))
                .then(a.detector.cmp(&b.detector))
        });
        let mut found: Vec<Finding> = Vec::new();
        let mut last_end = from;
        let mut last_start = from;
        for c in candidates {
            if c.span.start < last_end {
                // Overlapping the secret before it. One that runs on past it (a JWT
                // longer than an assignment's value window) makes the replacement grow
                // to cover it: both say the bytes are a secret.
                if let Some(prev) = found.last_mut()
                    && c.replace.start <= prev.range.end
                    && c.replace.end > prev.range.end
                {
                    if c.span.end > safe {
                        // Final only with the next chunk: decide the pair then.
                        safe = last_start;
                        found.pop();
                        break;
                    }
                    prev.range.end = c.replace.end;
                    prev.cut |= c.cut;
                    last_end = last_end.max(c.span.end);
                }
                continue;
            }
            if c.span.start >= safe {
                break;
            }
            if c.span.end > safe {
                // Final only once everything up to its end is: emit up to its start.
                safe = c.span.start;
                break;
            }
            last_end = c.span.end;
            last_start = c.span.start;
            found.push(Finding {
                detector: self.detectors[c.detector].name.clone(),
                range: c.replace,
                cut: c.cut,
            });
        }
        (found, safe)
    }

    /// Runs detector `d` over `hay[at..end]` (bytes before `at` are context), keeping
    /// the matches that start at or after `from`. A match the check refuses is
    /// searched past by one byte only, since another may start inside it (its value
    /// may be the next assignment); an accepted one is skipped whole.
    fn search(
        &self,
        hay: &[u8],
        d: usize,
        mut at: usize,
        end: usize,
        from: usize,
        out: &mut Vec<Candidate>,
    ) {
        let det = &self.detectors[d];
        // A pattern with an unbounded run (`pypi-…[A-Za-z0-9_-]{50,}`) is searched in
        // a bounded stretch past `at`: twice its longest match, doubled after a miss.
        // Merged windows can be long (a keyword repeated for a megabyte), and its match
        // would otherwise run to the window's end on every call: 1 MiB of
        // `pypi-AgEIcHlwaS5vcmc` cost 1.7 s. A match found in the stretch is the one the
        // whole window gives, as every match but a clipped one ends within `max_len`
        // of its start. A bounded pattern's match ends there anyway: its search needs
        // no limit (and a limit would rescan the stretch after each miss).
        let first_reach = if det.unbounded {
            det.max_len.saturating_mul(2).saturating_add(1)
        } else {
            usize::MAX
        };
        let mut reach = first_reach;
        while at < end {
            let limit = end.min(at.saturating_add(reach));
            let Some(caps) = det.regex.captures_at(&hay[..limit], at) else {
                if limit == end {
                    return;
                }
                // None starts within `max_len` of `at`: it would have ended here. The
                // next stretch is twice as long, so a run without a match is scanned
                // about once, not twice.
                at = limit - det.max_len;
                reach = reach.saturating_mul(2);
                continue;
            };
            reach = first_reach;
            let Some(m) = caps.get(0) else { return };
            if limit < end && m.start() + det.max_len >= limit {
                // It may run on past the limit: look again from its start.
                at = m.start();
                continue;
            }
            if m.start() < from {
                // Decided by an earlier call (a stream's previous chunk).
                at = from.max(m.start() + 1);
                continue;
            }
            let replace = match det.redact {
                Redact::Match => Some(m.range()),
                // The first group that took part (a pattern may have alternatives).
                Redact::Group => caps.iter().skip(1).flatten().next().map(|g| g.range()),
            };
            match replace {
                Some(mut replace) if detectors::passes(det.check, hay, &m.range(), &replace) => {
                    let mut span = m.range();
                    let mut cut = det.terminated && caps.get(caps.len() - 1).is_none();
                    // Longer than the window (a run that goes on): cut at the window,
                    // so a stream never holds more than that for it.
                    if span.len() > det.max_len {
                        span.end = span.start + det.max_len;
                        replace.end = replace.end.min(span.end);
                        cut = true;
                    }
                    at = span.end.max(span.start + 1);
                    out.push(Candidate {
                        span,
                        replace,
                        detector: d,
                        cut,
                    });
                }
                _ => at = m.start() + 1,
            }
        }
    }
}

/// Marks a line an operator has decided is fine: `redact --check` and `verify` do not
/// report it (`# sitegate:allow` in a TOML file).
pub const ALLOW_MARKER: &[u8] = b"sitegate:allow";

/// Where the secrets in `text` are, as (line, column, detector), 1-based, leaving out
/// lines that carry [`ALLOW_MARKER`].
pub fn locate(redactor: &Redactor, text: &[u8]) -> Vec<(usize, usize, Arc<str>)> {
    let Some((_, found)) = redactor.redact(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in found {
        let line_start = text[..f.range.start]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = text[f.range.start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |i| f.range.start + i);
        let line = &text[line_start..line_end];
        if memchr::memmem::find(line, ALLOW_MARKER).is_some() {
            continue;
        }
        let number = 1 + memchr::memchr_iter(b'\n', &text[..line_start]).count();
        out.push((number, f.range.start - line_start + 1, f.detector));
    }
    out
}

#[cfg(test)]
mod tests;
