//! What a client decodes is what is matched. A JSON client turns `"\u0041KIA…"` and
//! `eyJ…\/…` into a secret; a log reader (or a browser following a `Location`) turns
//! `%41KIA…` into one. The scan runs over a decoded *view* of the input, and each
//! finding is mapped back to the raw bytes, widened to whole escapes, so a replacement
//! never splits one and the output stays valid JSON.

use memchr::{memchr, memchr2};

/// Which escapes are decoded for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escapes {
    /// JSON string escapes: `\uXXXX` (with surrogate pairs), `\/`, `\"`, `\\`, `\n`...
    pub json: bool,
    /// `%XX` (URLs in log lines and response headers).
    pub percent: bool,
}

impl Escapes {
    /// Bodies and files: JSON escapes.
    pub const BODY: Escapes = Escapes {
        json: true,
        percent: false,
    };
    /// Log lines and header values: JSON escapes and percent-encoding.
    pub const URL: Escapes = Escapes {
        json: true,
        percent: true,
    };
}

/// One decoded escape: `vlen` view bytes standing for `rlen` raw bytes.
#[derive(Debug)]
struct Unit {
    view: usize,
    vlen: usize,
    raw: usize,
    rlen: usize,
}

/// The decoded input and where each escape came from.
#[derive(Debug)]
pub(super) struct View {
    pub(super) bytes: Vec<u8>,
    units: Vec<Unit>,
}

enum Step {
    /// An escape of `rlen` raw bytes decoding to `out[..n]`.
    Unit([u8; 4], usize, usize),
    /// Not an escape: a lone backslash, a lone surrogate, `%` without two hex digits.
    Not,
    /// An escape the input ends inside of; more may follow in a stream.
    Incomplete,
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

fn hex4(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0, |acc, b| Some(acc * 16 + hex(*b)?))
}

/// True while `s` could still grow into `\uXXXX` (every byte present is right).
fn could_be_u(s: &[u8]) -> bool {
    s.len() < 6
        && s.iter().enumerate().all(|(i, b)| match i {
            0 => *b == b'\\',
            1 => *b == b'u',
            _ => hex(*b).is_some(),
        })
}

fn utf8(c: char) -> Step {
    let mut out = [0u8; 4];
    let n = c.encode_utf8(&mut out).len();
    Step::Unit(out, n, 0)
}

fn json_escape(s: &[u8]) -> Step {
    let Some(&kind) = s.get(1) else {
        return Step::Incomplete;
    };
    let simple = match kind {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        b'/' => Some(b'/'),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    };
    if let Some(b) = simple {
        return Step::Unit([b, 0, 0, 0], 1, 2);
    }
    if kind != b'u' {
        return Step::Not;
    }
    let Some(cp) = s.get(2..6).and_then(hex4) else {
        return if could_be_u(s) {
            Step::Incomplete
        } else {
            Step::Not
        };
    };
    let with_len = |step: Step, rlen| match step {
        Step::Unit(out, n, _) => Step::Unit(out, n, rlen),
        other => other,
    };
    match cp {
        0xD800..=0xDBFF => {
            let rest = &s[6..];
            match rest.get(2..6).and_then(hex4) {
                Some(lo @ 0xDC00..=0xDFFF) if rest.starts_with(b"\\u") => {
                    let c = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    char::from_u32(c).map_or(Step::Not, |c| with_len(utf8(c), 12))
                }
                _ if could_be_u(rest) => Step::Incomplete,
                // A lone surrogate decodes to no character: left as it is.
                _ => Step::Not,
            }
        }
        0xDC00..=0xDFFF => Step::Not,
        _ => char::from_u32(cp).map_or(Step::Not, |c| with_len(utf8(c), 6)),
    }
}

fn percent_escape(s: &[u8]) -> Step {
    match (s.get(1).copied().map(hex), s.get(2).copied().map(hex)) {
        (Some(Some(a)), Some(Some(b))) => Step::Unit([(a * 16 + b) as u8, 0, 0, 0], 1, 3),
        (None, _) | (Some(Some(_)), None) => Step::Incomplete,
        _ => Step::Not,
    }
}

impl View {
    /// The decoded view of `hay`, or `None` when it holds no escape (the raw bytes are
    /// then the view). With `eof` false an escape cut by the end of the input is left
    /// out of the view, so nothing after its start is decided before it is complete.
    pub(super) fn new(hay: &[u8], esc: Escapes, eof: bool) -> Option<View> {
        let next = |from: usize| -> Option<usize> {
            let rest = &hay[from..];
            match (esc.json, esc.percent) {
                (true, true) => memchr2(b'\\', b'%', rest),
                (true, false) => memchr(b'\\', rest),
                (false, true) => memchr(b'%', rest),
                (false, false) => None,
            }
            .map(|i| from + i)
        };
        let mut at = next(0)?;
        let mut view: Option<View> = None;
        let mut literal = 0;
        let mut end = hay.len();
        loop {
            let s = &hay[at..];
            let step = if s[0] == b'\\' {
                json_escape(s)
            } else {
                percent_escape(s)
            };
            let after = match step {
                Step::Unit(out, n, rlen) => {
                    let v = view.get_or_insert_with(|| View {
                        bytes: Vec::with_capacity(hay.len()),
                        units: Vec::new(),
                    });
                    v.bytes.extend_from_slice(&hay[literal..at]);
                    v.units.push(Unit {
                        view: v.bytes.len(),
                        vlen: n,
                        raw: at,
                        rlen,
                    });
                    v.bytes.extend_from_slice(&out[..n]);
                    literal = at + rlen;
                    at + rlen
                }
                Step::Incomplete if !eof => {
                    end = at;
                    break;
                }
                Step::Incomplete | Step::Not => at + 1,
            };
            match (after < hay.len()).then(|| next(after)).flatten() {
                Some(i) => at = i,
                None => break,
            }
        }
        if view.is_none() && end < hay.len() {
            // Only an unfinished escape: the view is the bytes before it.
            view = Some(View {
                bytes: Vec::with_capacity(end),
                units: Vec::new(),
            });
        }
        let mut v = view?;
        v.bytes.extend_from_slice(&hay[literal..end]);
        Some(v)
    }

    /// The raw offset of view offset `v`. Inside an escape, a start rounds down to the
    /// escape's first byte and an end (`end`) up past its last.
    pub(super) fn to_raw(&self, v: usize, end: bool) -> usize {
        let i = self.units.partition_point(|u| u.view <= v);
        let Some(u) = i.checked_sub(1).map(|i| &self.units[i]) else {
            return v;
        };
        if v < u.view + u.vlen {
            if v > u.view && end {
                u.raw + u.rlen
            } else {
                u.raw
            }
        } else {
            u.raw + u.rlen + (v - u.view - u.vlen)
        }
    }

    /// The view offset of raw offset `r` (inside an escape: just after it).
    pub(super) fn to_view(&self, r: usize) -> usize {
        let i = self.units.partition_point(|u| u.raw <= r);
        let Some(u) = i.checked_sub(1).map(|i| &self.units[i]) else {
            return r;
        };
        if r == u.raw {
            u.view
        } else if r < u.raw + u.rlen {
            u.view + u.vlen
        } else {
            u.view + u.vlen + (r - u.raw - u.rlen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(s: &str, esc: Escapes, eof: bool) -> String {
        View::new(s.as_bytes(), esc, eof)
            .map(|v| String::from_utf8(v.bytes).unwrap())
            .unwrap_or_else(|| s.to_string())
    }

    #[test]
    fn json_and_percent_escapes_decode_as_a_client_would() {
        let b = Escapes::BODY;
        assert_eq!(view(r"\u0041KIA", b, true), "AKIA");
        assert_eq!(view(r"eyJ\/x\\u0041", b, true), r"eyJ/x\u0041");
        assert_eq!(view(r"\ud83d\ude00!", b, true), "\u{1F600}!");
        assert_eq!(view(r#"a=\"b\"\n"#, b, true), "a=\"b\"\n");
        // Not escapes: left as they are.
        assert_eq!(view(r"\ud83d x \q \u12", b, true), r"\ud83d x \q \u12");
        assert_eq!(view("100%41", b, true), "100%41");
        assert_eq!(view("100%41%2f%zz%", Escapes::URL, true), "100A/%zz%");
    }

    #[test]
    fn an_escape_cut_by_the_end_of_a_chunk_is_left_for_the_next() {
        let b = Escapes::BODY;
        for cut in [
            r"ab\",
            r"ab\u",
            r"ab\u00",
            r"ab\ud83d",
            r"ab\ud83d\u",
            r"ab\ud83d\ude0",
        ] {
            assert_eq!(view(cut, b, false), "ab", "{cut}");
        }
        assert_eq!(view("ab%4", Escapes::URL, false), "ab");
        // At the end of the input they are what they are.
        assert_eq!(view(r"ab\u00", b, true), r"ab\u00");
    }

    #[test]
    fn offsets_map_back_to_whole_escapes() {
        let raw = r"x\u0041KIA\u00e9y";
        let v = View::new(raw.as_bytes(), Escapes::BODY, true).unwrap();
        assert_eq!(String::from_utf8(v.bytes.clone()).unwrap(), "xAKIA\u{e9}y");
        // "AKIA" in the view is raw 1..10.
        assert_eq!((v.to_raw(1, false), v.to_raw(5, true)), (1, 10));
        // Half of the two-byte é rounds out to the whole escape.
        assert_eq!((v.to_raw(6, false), v.to_raw(6, true)), (10, 16));
        assert_eq!(v.to_raw(7, true), 16);
        assert_eq!(v.to_raw(8, true), raw.len());
        assert_eq!(v.to_view(10), 5);
        assert_eq!(v.to_view(12), 7);
        assert_eq!(v.to_view(raw.len()), 8);
    }
}
