//! The keyword pre-filter: every place where a detector keyword starts, in any ASCII
//! letter case.
//!
//! Why not Aho-Corasick: with 60-odd case-insensitive keywords no literal prefilter
//! applies (their first bytes are most letters), so an automaton walks every byte, and
//! each step waits on the load of the previous state: about 560 MiB/s on this machine
//! whatever the automaton's kind. Here every position is tested on its own — a hash of
//! its three bytes, case-folded, looked up in a 16 KiB table of the keywords' first
//! three bytes — so the CPU runs many tests at once and clean text goes by at about
//! 1.9 GiB/s (`cargo bench --bench redact`). Only a position whose trigram is in the
//! table is compared in full.

/// Bits of the trigram hash: a table of 2^14 bytes = 16 KiB stays in L1 cache beside
/// the input, and with some sixty keywords a trigram outside the set still passes only
/// 0.4 % of the time.
const BITS: u32 = 14;

/// Folds ASCII letters to lower case. It also merges some non-letters (`_` with DEL,
/// `@` with `` ` ``): for a pre-filter that only costs a rare false hit, never a miss.
const FOLD: u64 = 0x2020_2020_2020_2020;

/// The compiled keyword set.
#[derive(Debug, Clone)]
pub struct Keywords {
    /// Hashes of the folded first three bytes of every keyword (for a keyword shorter
    /// than three bytes, of every trigram it can start).
    table: Box<[bool; 1 << BITS]>,
    /// The keywords, lower-cased.
    patterns: Vec<Box<[u8]>>,
    /// Folded first three bytes → the keywords of three bytes or more starting with
    /// them; sorted by trigram.
    groups: Vec<(u32, Vec<usize>)>,
    /// Folded first byte → the keywords shorter than three bytes starting with it.
    short: Box<[Vec<usize>; 256]>,
    /// Whether there are any short keywords (checked at the last positions too).
    has_short: bool,
}

/// Three bytes as the low 24 bits of a word, first byte lowest.
fn trigram(b: [u8; 3]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}

/// Hashes the trigram in the top 24 bits of `top` (the other bits zero): a multiply and
/// a shift, since it runs at every byte of every body.
#[inline(always)]
fn hash(top: u64) -> usize {
    (top.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
}

impl Keywords {
    /// Compiles `patterns` (non-empty byte strings; matched ignoring ASCII case). The
    /// pattern id reported by [`Keywords::find`] is the index in this list.
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Self {
        let mut k = Keywords {
            table: Box::new([false; 1 << BITS]),
            patterns: Vec::with_capacity(patterns.len()),
            groups: Vec::new(),
            short: Box::new(std::array::from_fn(|_| Vec::new())),
            has_short: false,
        };
        for (id, p) in patterns.iter().enumerate() {
            let p = p.as_ref().to_ascii_lowercase();
            assert!(!p.is_empty(), "invariant: keywords are non-empty");
            let fold = |b: u8| b | 0x20;
            if p.len() < 3 {
                k.short[fold(p[0]) as usize].push(id);
            } else {
                let t = trigram([fold(p[0]), fold(p[1]), fold(p[2])]);
                match k.groups.binary_search_by_key(&t, |g| g.0) {
                    Ok(g) => k.groups[g].1.push(id),
                    Err(g) => k.groups.insert(g, (t, vec![id])),
                }
            }
            // A short keyword starts a trigram whose missing bytes are anything.
            let mut prefixes = vec![p.iter().take(3).map(|b| fold(*b)).collect::<Vec<u8>>()];
            while prefixes[0].len() < 3 {
                k.has_short = true;
                prefixes = prefixes
                    .iter()
                    .flat_map(|pre| {
                        (0..=255u8).filter(|b| *b & 0x20 != 0).map(move |b| {
                            let mut next = pre.clone();
                            next.push(b);
                            next
                        })
                    })
                    .collect();
            }
            for pre in prefixes {
                k.table[hash(u64::from(trigram([pre[0], pre[1], pre[2]])) << 40)] = true;
            }
            k.patterns.push(p.into_boxed_slice());
        }
        k
    }

    /// The longest keyword, in bytes.
    pub fn longest(&self) -> usize {
        self.patterns.iter().map(|p| p.len()).max().unwrap_or(0)
    }

    /// Calls `hit(pattern id, start)` for every occurrence of every keyword that lies
    /// wholly in `hay`, overlapping ones included, in order of start.
    #[inline]
    pub fn find(&self, hay: &[u8], mut hit: impl FnMut(usize, usize)) {
        let n = hay.len();
        let mut i = 0;
        // Eight bytes at a time hold the trigrams of six positions.
        while i + 8 <= n {
            let mut word = [0u8; 8];
            word.copy_from_slice(&hay[i..i + 8]);
            let w = u64::from_le_bytes(word) | FOLD;
            for k in 0..6 {
                // Bytes k..k+3 to the top (the ones after them fall off), the ones
                // before them cleared.
                if self.table[hash((w << (40 - 8 * k)) & 0xFFFF_FF00_0000_0000)] {
                    let t = (w >> (8 * k)) as u32 & 0xFF_FFFF;
                    self.confirm(hay, i + k, t, &mut hit);
                }
            }
            i += 6;
        }
        while i + 3 <= n {
            let t = trigram([hay[i], hay[i + 1], hay[i + 2]]) | 0x20_2020;
            if self.table[hash(u64::from(t) << 40)] {
                self.confirm(hay, i, t, &mut hit);
            }
            i += 1;
        }
        if self.has_short {
            for at in i..n {
                self.confirm_short(hay, at, &mut hit);
            }
        }
    }

    /// Compares, in full, the keywords that may start at `at`, whose folded trigram is
    /// `t`.
    #[cold]
    fn confirm(&self, hay: &[u8], at: usize, t: u32, hit: &mut impl FnMut(usize, usize)) {
        if self.has_short {
            self.confirm_short(hay, at, hit);
        }
        if let Ok(g) = self.groups.binary_search_by_key(&t, |g| g.0) {
            for &id in &self.groups[g].1 {
                self.compare(hay, at, id, hit);
            }
        }
    }

    fn confirm_short(&self, hay: &[u8], at: usize, hit: &mut impl FnMut(usize, usize)) {
        for &id in &self.short[(hay[at] | 0x20) as usize] {
            self.compare(hay, at, id, hit);
        }
    }

    #[inline]
    fn compare(&self, hay: &[u8], at: usize, id: usize, hit: &mut impl FnMut(usize, usize)) {
        let p = &self.patterns[id];
        if hay
            .get(at..at + p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
        {
            hit(id, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (pattern, start) pair, found naively.
    fn naive(patterns: &[&str], hay: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for at in 0..hay.len() {
            for (id, p) in patterns.iter().enumerate() {
                if hay
                    .get(at..at + p.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
                {
                    out.push((id, at));
                }
            }
        }
        out
    }

    fn found(patterns: &[&str], hay: &[u8]) -> Vec<(usize, usize)> {
        let k = Keywords::new(patterns);
        let mut out = Vec::new();
        k.find(hay, |id, at| out.push((id, at)));
        out
    }

    #[test]
    fn finds_every_occurrence_in_any_case_overlapping_included() {
        let patterns = ["sk-", "sk-ant-", "secret", "\"token", "ab", "://"];
        let hay = b"x SK-ANT-abc secretSecret \"TOKEN\" postgres://u sk-ab";
        let got = found(&patterns, hay);
        assert_eq!(got, naive(&patterns, hay));
        // The two keywords that start at the same byte are both reported.
        assert!(got.contains(&(0, 2)) && got.contains(&(1, 2)));
        // A two-byte keyword is found at the very end too.
        assert!(got.contains(&(4, hay.len() - 2)));
    }

    #[test]
    fn agrees_with_a_naive_search_on_random_input() {
        let patterns = [
            "akia",
            "ghp_",
            "password",
            "pwd",
            "\"api_key",
            "-----begin",
            ":aa",
            "eyj",
            "x_",
        ];
        let alphabet = b"akiAKIghp_PASSWORDpwd\"api_key-----BEGIN:eyjJx _\x7f@`";
        let mut rng = fastrand::Rng::with_seed(11);
        for len in 0..300 {
            let hay: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            assert_eq!(found(&patterns, &hay), naive(&patterns, &hay), "{hay:?}");
        }
    }

    #[test]
    fn a_keyword_cut_by_the_end_of_the_input_is_not_reported() {
        assert_eq!(found(&["secret"], b"my secre"), vec![]);
        assert_eq!(found(&["secret"], b"my secret"), vec![(0, 3)]);
    }
}
