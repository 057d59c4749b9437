//! Weighted choice among a rule's backends in O(1), from one random sample.
//!
//! Weights are expanded once, when the table is compiled, into an alias table (Vose's method,
//! in integer arithmetic): a pick reads one column and flips one biased coin, whatever the
//! number of backends and however uneven the weights (a 0.01% canary costs the same as 50/50).

/// A compiled weighted split over `n` choices.
#[derive(Debug, Clone)]
pub struct Split {
    /// Per column: the probability, scaled to 2^32, of keeping the column's own index.
    keep: Box<[u64]>,
    /// Per column: the index chosen when the coin says "not this one".
    alias: Box<[u32]>,
}

const ONE: u64 = 1 << 32;

impl Split {
    /// Builds the split; `None` when no weight is positive (the spec's "500 for all-zero").
    pub fn new(weights: &[u32]) -> Option<Split> {
        let n = weights.len();
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        if total == 0 {
            return None;
        }
        // Each column holds `total` units; choice i owns w_i * n units in all.
        let mut units: Vec<u128> = weights.iter().map(|&w| u128::from(w) * n as u128).collect();
        let mut keep = vec![ONE; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| units[i] < total);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            // Column s keeps its own units and is topped up from l.
            keep[s] = ((units[s] << 32) / total) as u64;
            alias[s] = l as u32;
            units[l] -= total - units[s];
            if units[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is full up to rounding.
        for i in small.into_iter().chain(large) {
            keep[i] = ONE;
        }
        Some(Split {
            keep: keep.into_boxed_slice(),
            alias: alias.into_boxed_slice(),
        })
    }

    /// The chosen index for a uniformly random `sample`.
    #[inline]
    pub fn pick(&self, sample: u64) -> usize {
        let n = self.keep.len() as u64;
        let column = (((sample >> 32) * n) >> 32) as usize;
        let coin = sample & (ONE - 1);
        if coin < self.keep[column] {
            column
        } else {
            self.alias[column] as usize
        }
    }

    /// The exact probability of each choice, as the table encodes it.
    pub fn probabilities(&self) -> Vec<f64> {
        let n = self.keep.len();
        let mut p = vec![0.0; n];
        for column in 0..n {
            let keep = self.keep[column] as f64 / ONE as f64;
            p[column] += keep / n as f64;
            p[self.alias[column] as usize] += (1.0 - keep) / n as f64;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn all_zero_is_none() {
        assert!(Split::new(&[0, 0]).is_none());
        assert!(Split::new(&[]).is_none());
    }

    #[test]
    fn zero_weight_is_never_picked() {
        let split = Split::new(&[0, 5, 0]).unwrap();
        for s in [0, u64::MAX, 1 << 63, 12345, u64::MAX / 3] {
            assert_eq!(split.pick(s), 1);
        }
    }

    #[test]
    fn ninety_ten_counts_over_a_grid_of_samples() {
        let split = Split::new(&[90, 10]).unwrap();
        let steps = 100_000u64;
        let canary = (0..steps)
            .filter(|i| split.pick(i.wrapping_mul(u64::MAX / steps)) == 1)
            .count();
        assert!((9_900..=10_100).contains(&canary), "{canary}");
    }

    proptest! {
        #[test]
        fn table_encodes_the_weights_exactly(weights in proptest::collection::vec(0u32..=1_000_000, 1..12)) {
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            prop_assume!(total > 0);
            let split = Split::new(&weights).unwrap();
            for (i, p) in split.probabilities().into_iter().enumerate() {
                let want = f64::from(weights[i]) / total as f64;
                prop_assert!((p - want).abs() < 1e-8, "choice {i}: {p} vs {want}");
            }
        }

        #[test]
        fn picks_only_positive_weights(weights in proptest::collection::vec(0u32..=10, 1..8), sample: u64) {
            if let Some(split) = Split::new(&weights) {
                prop_assert!(weights[split.pick(sample)] > 0);
            }
        }
    }
}
