//! The keyword pre-filter: every place where a detector keyword starts, in any ASCII
//! letter case.
//!
//! Why not Aho-Corasick: with some seventy case-insensitive keywords no literal prefilter
//! applies (their first bytes are most letters), so an automaton walks every byte, and
//! each step waits on the load of the previous state: about 560 MiB/s on this machine
//! whatever the automaton's kind. Here every position is tested on its own — a hash of
//! its three bytes, case-folded, looked up in a 16 KiB table of the keywords' first
//! three bytes — so the CPU runs many tests at once and clean text goes by at about
//! 1.7 GiB/s (`cargo bench --bench redact`). Only a position whose trigram is in the
//! table is compared in full.

/// Bits of the trigram hash: a table of 2^14 one-byte slots = 16 KiB stays in L1 cache
/// beside the input; with some seventy keywords a trigram outside the set still passes
/// only about 0.5 % of the time, and then costs one list lookup.
const BITS: u32 = 14;

/// Folds ASCII letters to lower case. It also merges some non-letters (`_` with DEL,
/// `@` with `` ` ``): for a pre-filter that only costs a rare false hit, never a miss.
const FOLD: u64 = 0x2020_2020_2020_2020;

/// The compiled keyword set.
#[derive(Debug, Clone)]
pub struct Keywords {
    /// Hash of a folded trigram → 0 when no keyword starts with a trigram of that hash,
    /// else 1 + the index in `lists` of the keywords that may.
    table: Box<[u8; 1 << BITS]>,
    /// Keyword ids per used slot of `table`.
    lists: Vec<Box<[usize]>>,
    /// The keywords, lower-cased.
    patterns: Vec<Box<[u8]>>,
    /// Per keyword, its first eight bytes as one word test (see [`Head`]).
    heads: Vec<Head>,
    /// Folded first byte → the keywords shorter than three bytes starting with it,
    /// checked again at the last two positions, where no trigram fits.
    short: Box<[Vec<usize>; 256]>,
    /// Whether there are any short keywords.
    has_short: bool,
}

/// A keyword's first (up to) eight bytes, compared with one load: a position's word
/// `w` starts with them, in any letter case, when `(w | fold) & mask == value`. Dense
/// keywords (`xoxp-xoxp-…`, a slot holding seven Slack prefixes) made the byte-wise
/// comparison half of the whole scan.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The bytes, lower-cased, in little-endian order.
    value: u64,
    /// 0x20 at each letter's byte: folds the input's case there and only there, so
    /// the test is exact (`-` and `\r` differ by 0x20 too, and stay apart).
    fold: u64,
    /// 0xFF at each of the keyword's bytes.
    mask: u64,
}

impl Head {
    fn new(p: &[u8]) -> Self {
        let mut head = Head {
            value: 0,
            fold: 0,
            mask: 0,
        };
        for (i, b) in p.iter().take(8).enumerate() {
            head.value |= u64::from(*b) << (8 * i);
            head.mask |= 0xFF << (8 * i);
            if b.is_ascii_lowercase() {
                head.fold |= 0x20 << (8 * i);
            }
        }
        head
    }
}

/// Three bytes as the low 24 bits of a word, first byte lowest.
fn trigram(b: [u8; 3]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}

/// Hashes the trigram held in the top 24 bits of `top` (the other bits zero): a
/// multiply and a shift, since it runs at every byte of every body.
#[inline(always)]
fn hash(top: u64) -> usize {
    (top.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
}

impl Keywords {
    /// Compiles `patterns` (non-empty byte strings; matched ignoring ASCII case). The
    /// pattern id reported by [`Keywords::find`] is the index in this list.
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Self {
        let mut slots: Vec<Vec<usize>> = vec![Vec::new(); 1 << BITS];
        let mut k = Keywords {
            table: Box::new([0; 1 << BITS]),
            lists: Vec::new(),
            patterns: Vec::with_capacity(patterns.len()),
            heads: Vec::with_capacity(patterns.len()),
            short: Box::new(std::array::from_fn(|_| Vec::new())),
            has_short: false,
        };
        for (id, p) in patterns.iter().enumerate() {
            let p = p.as_ref().to_ascii_lowercase();
            assert!(!p.is_empty(), "invariant: keywords are non-empty");
            let fold = |b: u8| b | 0x20;
            // A short keyword starts every trigram that begins with it.
            let mut prefixes = vec![p.iter().take(3).map(|b| fold(*b)).collect::<Vec<u8>>()];
            if p.len() < 3 {
                k.has_short = true;
                k.short[fold(p[0]) as usize].push(id);
            }
            while prefixes[0].len() < 3 {
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
                let slot = &mut slots[hash(u64::from(trigram([pre[0], pre[1], pre[2]])) << 40)];
                if slot.last() != Some(&id) {
                    slot.push(id);
                }
            }
            k.heads.push(Head::new(&p));
            k.patterns.push(p.into_boxed_slice());
        }
        // Slots with the same keywords share a list (all the slots of a short keyword).
        // A slot holds a one-byte list number, so past 254 lists (hundreds of JSON
        // keys) the remaining slots share a 255th, merged list: a longer list only
        // costs more comparisons at its slots, never a miss.
        let mut seen: std::collections::HashMap<Vec<usize>, u8> = Default::default();
        let mut overflow: Vec<usize> = Vec::new();
        let mut overflow_slots = Vec::new();
        for (h, ids) in slots.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            if let Some(list) = seen.get(&ids) {
                k.table[h] = *list;
            } else if k.lists.len() < usize::from(u8::MAX) - 1 {
                k.lists.push(ids.clone().into_boxed_slice());
                k.table[h] = k.lists.len() as u8;
                seen.insert(ids, k.table[h]);
            } else {
                overflow.extend(ids);
                overflow_slots.push(h);
            }
        }
        if !overflow.is_empty() {
            overflow.sort_unstable();
            overflow.dedup();
            k.lists.push(overflow.into_boxed_slice());
            for h in overflow_slots {
                k.table[h] = k.lists.len() as u8;
            }
        }
        k
    }

    /// The keywords, lower-cased, in id order.
    pub fn patterns(&self) -> &[Box<[u8]>] {
        &self.patterns
    }

    /// The longest keyword, in bytes.
    pub fn longest(&self) -> usize {
        self.patterns.iter().map(|p| p.len()).max().unwrap_or(0)
    }

    /// Calls `hit(pattern id, start)` for every occurrence of every keyword that lies
    /// wholly in `hay`, overlapping ones included, in order of start.
    #[inline]
    pub fn find(&self, hay: &[u8], mut hit: impl FnMut(usize, usize)) {
        if self.patterns.is_empty() {
            // Every built-in disabled and no JSON keys: only site patterns run.
            return;
        }
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
                let slot = self.table[hash((w << (40 - 8 * k)) & 0xFFFF_FF00_0000_0000)];
                if slot != 0 {
                    self.confirm(hay, i + k, slot, &mut hit);
                }
            }
            i += 6;
        }
        while i + 3 <= n {
            let t = trigram([hay[i], hay[i + 1], hay[i + 2]]) | 0x20_2020;
            let slot = self.table[hash(u64::from(t) << 40)];
            if slot != 0 {
                self.confirm(hay, i, slot, &mut hit);
            }
            i += 1;
        }
        if self.has_short {
            for at in i..n {
                for &id in &self.short[(hay[at] | 0x20) as usize] {
                    self.compare(hay, at, id, &mut hit);
                }
            }
        }
    }

    /// Compares, in full, the keywords of `slot` at `at`.
    #[cold]
    fn confirm(&self, hay: &[u8], at: usize, slot: u8, hit: &mut impl FnMut(usize, usize)) {
        let ids = &self.lists[usize::from(slot) - 1];
        let Some(word) = hay.get(at..at + 8) else {
            for &id in ids.iter() {
                self.compare(hay, at, id, hit);
            }
            return;
        };
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        for &id in ids.iter() {
            let h = &self.heads[id];
            if (w | h.fold) & h.mask != h.value {
                continue;
            }
            let p = &self.patterns[id];
            if p.len() <= 8
                || hay
                    .get(at + 8..at + p.len())
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(&p[8..]))
            {
                hit(id, at);
            }
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

    fn found<P: AsRef<[u8]>>(patterns: &[P], hay: &[u8]) -> Vec<(usize, usize)> {
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
    fn hundreds_of_keywords_past_the_table_lists_are_all_found() {
        let mut rng = fastrand::Rng::with_seed(5);
        let owned: Vec<String> = (0..700)
            .map(|_| (0..rng.usize(2..7)).map(|_| rng.alphabetic()).collect())
            .collect();
        let patterns: Vec<&str> = owned.iter().map(String::as_str).collect();
        assert!(Keywords::new(&patterns).lists.len() == usize::from(u8::MAX));
        let hay: Vec<u8> = (0..20_000)
            .map(|_| {
                if rng.u8(0..6) == 0 {
                    b' '
                } else {
                    rng.alphabetic() as u8
                }
            })
            .collect();
        let got = found(&patterns, &hay);
        assert!(got.len() > 100);
        assert_eq!(got, naive(&patterns, &hay));
    }

    #[test]
    fn the_word_test_folds_letters_only_and_checks_past_eight_bytes() {
        let patterns = ["xoxp-", "a_b", "-----begin rsa"];
        // `-` and `\r`, `_` and DEL differ by the case bit: they must stay apart.
        let hay = b"XOXP\r..... a\x7fb........ -----BEGIN RSB..... ";
        assert_eq!(found(&patterns, hay), vec![]);
        let hay = b"XoXp-...... A_B.......... -----BEGIN rSa..... ";
        assert_eq!(found(&patterns, hay), vec![(0, 0), (1, 12), (2, 26)]);
    }

    #[test]
    fn a_keyword_cut_by_the_end_of_the_input_is_not_reported() {
        assert_eq!(found(&["secret"], b"my secre"), vec![]);
        assert_eq!(found(&["secret"], b"my secret"), vec![(0, 3)]);
        assert_eq!(found::<&str>(&[], b"my secret"), vec![]);
    }
}
