//! Scored slots and a bounded best-k collector (a min-heap of size k).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A similarity score for a storage slot. Ordered so that *greater is better*: higher score
/// first, and on equal scores the lower slot (inserted earlier), which makes every result
/// list deterministic. Scores compare with `total_cmp` (inputs are checked finite on insert).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub score: f32,
    pub slot: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.slot.cmp(&self.slot))
    }
}

/// Keeps the `k` best [`Scored`] seen; the worst kept one sits on top of a min-heap, so a
/// candidate costs one comparison unless it enters.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        // k comes from a request; cap the up-front reservation, the heap grows if needed.
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(1024) + 1),
        }
    }

    /// Whether `s` would enter (the filter predicate is only asked for such candidates).
    #[inline]
    pub fn would_enter(&self, s: Scored) -> bool {
        if self.heap.len() < self.k {
            return self.k > 0;
        }
        self.heap.peek().is_some_and(|Reverse(worst)| s > *worst)
    }

    #[inline]
    pub fn push(&mut self, s: Scored) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(s));
        } else if self.would_enter(s) {
            self.heap.pop();
            self.heap.push(Reverse(s));
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        // `into_sorted_vec` of Reverse<_> is ascending in Reverse, i.e. best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(s)| s)
            .collect()
    }
}
