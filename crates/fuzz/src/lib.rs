//! Helpers of sluice's property-based fuzz tests, on stable Rust with `proptest`.
//!
//! Every fuzz target runs in the normal test run with a fixed number of cases. The long mode
//! runs more: `SLUICE_FUZZ_CASES=N` sets every target's case count (`scripts/fuzz-long` sets
//! it so that each target runs for about ten minutes). Inputs that once failed are kept as
//! named regression tests next to their target (the corpus), not in proptest's files.
//!
//! The property is always the same: no panic, no hang, and every input ends as events, a
//! dead letter with a reason, or a clear error.

use proptest::prelude::*;

/// The number of cases for a target whose normal count is `normal`: `SLUICE_FUZZ_CASES`
/// when set (the long mode).
pub fn cases(normal: u32) -> u32 {
    std::env::var("SLUICE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).filter(|n| *n > 0).unwrap_or(normal)
}

/// A proptest config with [`cases`] and no failure files (failures become named tests).
pub fn config(normal: u32) -> ProptestConfig {
    ProptestConfig { cases: cases(normal), failure_persistence: None, ..ProptestConfig::default() }
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    /// Removes `len` bytes at the position.
    Remove(usize, usize),
    /// Copies `len` bytes from the first position to the second.
    Duplicate(usize, usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        3 => (any::<usize>(), prop_oneof![any::<u8>(), Just(b'"'), Just(b'['), Just(b'='), Just(b'\n'), Just(b'{')])
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        2 => (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Remove(at, len)),
        1 => (any::<usize>(), 1usize..80, any::<usize>()).prop_map(|(from, len, to)| Edit::Duplicate(from, len, to)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(data: &mut Vec<u8>, edit: &Edit) {
    let at = |n: usize, len: usize| if len == 0 { 0 } else { n % (len + 1) };
    match *edit {
        Edit::Flip(n, b) if !data.is_empty() => {
            let i = n % data.len();
            data[i] = b;
        }
        Edit::Flip(..) => {}
        Edit::Insert(n, b) => {
            let i = at(n, data.len());
            data.insert(i, b);
        }
        Edit::Remove(n, len) => {
            let i = at(n, data.len());
            let end = (i + len).min(data.len());
            data.drain(i..end);
        }
        Edit::Duplicate(from, len, to) => {
            let i = at(from, data.len());
            let end = (i + len).min(data.len());
            let copy = data[i..end].to_vec();
            let j = at(to, data.len());
            data.splice(j..j, copy);
        }
        Edit::Truncate(n) => {
            let i = at(n, data.len());
            data.truncate(i);
        }
    }
}

/// One of `seeds`, with 1 to `most` random edits (flips, inserts of the bytes parsers branch
/// on, removals, duplicated ranges, truncation): real inputs, slightly wrong.
pub fn mutated(seeds: Vec<Vec<u8>>, most: usize) -> impl Strategy<Value = Vec<u8>> {
    let count = seeds.len().max(1);
    (0..count, proptest::collection::vec(edit(), 1..most.max(2))).prop_map(move |(pick, edits)| {
        let mut data = seeds.get(pick).cloned().unwrap_or_default();
        for edit in &edits {
            apply(&mut data, edit);
        }
        data
    })
}

/// `input` cut into pieces at `cuts` (positions taken modulo its length, any order): how a
/// network or a file read hands the same bytes over.
pub fn pieces(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in at.into_iter().chain(std::iter::once(input.len())) {
        out.push(input[start..cut].to_vec());
        start = cut;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_put_back_together_are_the_input() {
        let input = b"hello, world";
        let parts = pieces(input, &[5, 3, 40, 5]);
        assert_eq!(parts.concat(), input.to_vec());
        assert_eq!(parts.len(), 4);
    }

    proptest! {
        #[test]
        fn edits_never_panic(data in proptest::collection::vec(any::<u8>(), 0..50), edits in proptest::collection::vec(edit(), 0..20)) {
            let mut data = data;
            for e in &edits {
                apply(&mut data, e);
            }
        }
    }
}
