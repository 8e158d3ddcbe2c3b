//! Value types of the policy files: sizes (`10485760` or `"10 MiB"`) and durations
//! (`"250ms"`, `"30s"`, `"5m"`). They parse while the TOML is read, so a bad value is
//! reported with the file, line and column of the value itself.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string like \"10 MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size::Config::new()
                    .parse_size(v.trim())
                    .map(Size)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid size ({e}); write bytes as an integer or a string like \"512 KiB\" or \"10 MiB\""
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"250ms\", \"30s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                // humantime's message quotes the input; a diagnostic must not.
                humantime::parse_duration(v.trim()).map(Dur).map_err(|_| {
                    E::custom("invalid duration; write a string like \"250ms\", \"30s\" or \"5m\"")
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Dur, E> {
                Err(E::custom(
                    "a duration needs a unit: write a string like \"30s\", not a bare number",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct T {
        s: Option<Size>,
        d: Option<Dur>,
    }

    fn parse(src: &str) -> Result<T, toml::de::Error> {
        toml::from_str(src)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse("s = 1024").unwrap().s, Some(Size(1024)));
        assert_eq!(parse("s = \"10 MiB\"").unwrap().s, Some(Size(10 << 20)));
        assert_eq!(parse("s = \"2KiB\"").unwrap().s, Some(Size(2048)));
        assert_eq!(parse("s = \"1 MB\"").unwrap().s, Some(Size(1_000_000)));
        assert!(parse("s = -1").unwrap_err().message().contains("negative"));
        assert!(
            parse("s = \"ten\"")
                .unwrap_err()
                .message()
                .contains("invalid size")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse("d = \"250ms\"").unwrap().d,
            Some(Dur(Duration::from_millis(250)))
        );
        assert_eq!(
            parse("d = \"5m\"").unwrap().d,
            Some(Dur(Duration::from_secs(300)))
        );
        let e = parse("d = 30").unwrap_err();
        assert!(e.message().contains("needs a unit"), "{}", e.message());
        assert_eq!(e.span(), Some(4..6));
        assert!(
            parse("d = \"soon\"")
                .unwrap_err()
                .message()
                .contains("invalid duration")
        );
    }
}
