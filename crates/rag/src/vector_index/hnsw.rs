//! A hierarchical navigable small-world graph (Malkov & Yashunin, "Efficient and robust
//! approximate nearest neighbor search using HNSW graphs", 2016/2018) over the index's slots.
//!
//! The graph stores only links; vectors stay in the index's row-major `(slots, dim)` array
//! and are passed in as a [`Rows`] view. Similarity is the dot product of L2-normalized rows
//! (cosine), larger is closer. Layout follows hnswlib: layer 0 is one flat `u32` array with
//! `1 + m0` entries per slot (a count, then neighbours), upper layers are per-slot vectors,
//! empty for the ~94% of slots (at m = 16) that live only on layer 0.
//!
//! Choices, with the paper's names: neighbours are chosen by the heuristic of Algorithm 4
//! (without `keepPrunedConnections`), `m0 = 2·m` on layer 0, levels drawn with
//! `mL = 1/ln(m)` from a seeded generator, so a graph is a pure function of the seed and the
//! insertion order. Deleted slots stay in the graph as waypoints (as in hnswlib's
//! `markDelete`); searches skip them in results, and the index rebuilds the graph when they
//! pile up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::topk::Scored;

/// Highest level a slot may get (the level distribution makes > 16 astronomically rare at
/// any m ≥ 2; the cap only bounds the per-slot upper-link allocation).
const MAX_LEVEL: usize = 16;

/// The row-major vectors the graph links, `(slots, dim)`, L2-normalized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub data: &'a [f32],
    pub dim: usize,
}

impl Rows<'_> {
    #[inline]
    pub fn row(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.dim;
        &self.data[s..s + self.dim]
    }

    #[inline]
    pub fn sim(&self, q: &[f32], slot: u32) -> f32 {
        ferrollama_tensor::dot_f32(q, self.row(slot))
    }
}

/// Visited marks for one search: a bitset over slots (12.5 KB at 100K slots, cleared by
/// allocation, which is cheaper than the dot products of even one search).
struct Visited(Vec<u64>);

impl Visited {
    fn new(n: usize) -> Self {
        Visited(vec![0; n.div_ceil(64)])
    }

    /// Marks `slot`; true if it was not marked before.
    #[inline]
    fn insert(&mut self, slot: u32) -> bool {
        let (w, b) = (slot as usize / 64, slot as usize % 64);
        match self.0.get_mut(w) {
            Some(word) => {
                let fresh = *word & (1 << b) == 0;
                *word |= 1 << b;
                fresh
            }
            None => false,
        }
    }
}

/// The graph. Slots are added in order 0, 1, 2, ... by [`Hnsw::insert`].
#[derive(Debug, Clone)]
pub(crate) struct Hnsw {
    m: usize,
    m0: usize,
    ef_construction: usize,
    ml: f64,
    rng: u64,
    /// Level of each slot.
    levels: Vec<u8>,
    /// Layer 0: `(slots, 1 + m0)`, entry 0 the neighbour count.
    links0: Vec<u32>,
    /// Layers 1..=level of each slot, each `1 + m` entries (count first).
    upper: Vec<Vec<u32>>,
    entry: Option<u32>,
    max_level: usize,
}

impl Hnsw {
    pub fn new(m: usize, ef_construction: usize, seed: u64) -> Self {
        let m = m.max(2);
        Hnsw {
            m,
            m0: 2 * m,
            ef_construction: ef_construction.max(m),
            ml: 1.0 / (m as f64).ln(),
            rng: seed,
            levels: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            max_level: 0,
        }
    }

    /// Slots linked so far.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// splitmix64: small, seeded, and good enough for level draws.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_level(&mut self) -> usize {
        // u in (0, 1]: 53 random bits, shifted off zero so ln(u) is finite.
        let u = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * self.ml) as usize).min(MAX_LEVEL)
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 { self.m0 } else { self.m }
    }

    fn links(&self, slot: u32, layer: usize) -> &[u32] {
        let list = if layer == 0 {
            let s = slot as usize * (1 + self.m0);
            &self.links0[s..s + 1 + self.m0]
        } else {
            let s = (layer - 1) * (1 + self.m);
            match self.upper.get(slot as usize) {
                Some(u) if u.len() >= s + 1 + self.m => &u[s..s + 1 + self.m],
                _ => return &[],
            }
        };
        &list[1..1 + list[0] as usize]
    }

    fn set_links(&mut self, slot: u32, layer: usize, neighbours: &[u32]) {
        let (list, cap) = if layer == 0 {
            let s = slot as usize * (1 + self.m0);
            (&mut self.links0[s..s + 1 + self.m0], self.m0)
        } else {
            let s = (layer - 1) * (1 + self.m);
            let m = self.m;
            match self.upper.get_mut(slot as usize) {
                Some(u) if u.len() >= s + 1 + m => (&mut u[s..s + 1 + m], m),
                _ => return,
            }
        };
        let n = neighbours.len().min(cap);
        list[0] = n as u32;
        list[1..1 + n].copy_from_slice(&neighbours[..n]);
    }

    /// Links slot `slot` (must equal [`Hnsw::len`]) into the graph; its vector is
    /// `rows.row(slot)`.
    pub fn insert(&mut self, rows: Rows<'_>, slot: u32) {
        debug_assert_eq!(slot as usize, self.levels.len());
        let level = self.random_level();
        self.levels.push(level as u8);
        self.links0.resize(self.links0.len() + 1 + self.m0, 0);
        self.upper.push(vec![0; level * (1 + self.m)]);

        let Some(mut ep) = self.entry else {
            self.entry = Some(slot);
            self.max_level = level;
            return;
        };
        let q = rows.row(slot);
        // Greedy descent through the layers above the new slot's level.
        for layer in (level + 1..=self.max_level).rev() {
            ep = self.greedy(rows, q, ep, layer);
        }
        let mut eps = vec![Scored {
            score: rows.sim(q, ep),
            slot: ep,
        }];
        for layer in (0..=level.min(self.max_level)).rev() {
            let found = self.search_layer(rows, q, &eps, self.ef_construction, layer, &|_| true);
            let chosen = self.select(rows, &found, self.m);
            self.set_links(slot, layer, &chosen);
            for &n in &chosen {
                self.connect(rows, n, slot, layer);
            }
            eps = found;
        }
        if level > self.max_level {
            self.entry = Some(slot);
            self.max_level = level;
        }
    }

    /// Adds `new` to `n`'s links on `layer`, re-pruning with the heuristic when full.
    fn connect(&mut self, rows: Rows<'_>, n: u32, new: u32, layer: usize) {
        let cap = self.max_links(layer);
        let mut list: Vec<u32> = self.links(n, layer).to_vec();
        if list.contains(&new) {
            return;
        }
        list.push(new);
        if list.len() > cap {
            let base = rows.row(n);
            let mut scored: Vec<Scored> = list
                .iter()
                .map(|&s| Scored {
                    score: rows.sim(base, s),
                    slot: s,
                })
                .collect();
            scored.sort_unstable_by(|a, b| b.cmp(a));
            list = self.select(rows, &scored, cap);
        }
        self.set_links(n, layer, &list);
    }

    /// Algorithm 4 (heuristic): from candidates sorted best first, keep one only if it is
    /// closer to the base than to every neighbour already kept, which spreads links across
    /// directions (clusters) instead of spending them all on the nearest clump.
    fn select(&self, rows: Rows<'_>, sorted: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let row = rows.row(c.slot);
            if kept.iter().all(|&r| rows.sim(row, r) <= c.score) {
                kept.push(c.slot);
            }
        }
        kept
    }

    /// Hill-climbs on one layer from `ep` to a local best for `q`.
    fn greedy(&self, rows: Rows<'_>, q: &[f32], mut ep: u32, layer: usize) -> u32 {
        let mut best = rows.sim(q, ep);
        loop {
            let mut moved = false;
            for &n in self.links(ep, layer) {
                let s = rows.sim(q, n);
                if s > best {
                    best = s;
                    ep = n;
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    /// Algorithm 2: beam search of width `ef` on one layer. Returns up to `ef` slots that
    /// pass `accept`, best first. Slots that fail `accept` (deleted, filtered out) are still
    /// walked through, so a filter does not cut the graph apart; while fewer than `ef`
    /// accepted slots are found the beam keeps widening (hnswlib's filtered search).
    fn search_layer(
        &self,
        rows: Rows<'_>,
        q: &[f32],
        eps: &[Scored],
        ef: usize,
        layer: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let mut visited = Visited::new(self.len());
        // Best-first frontier, and the accepted results with the worst on top.
        let mut frontier: BinaryHeap<Scored> = BinaryHeap::new();
        let mut found: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &e in eps {
            if visited.insert(e.slot) {
                frontier.push(e);
                if accept(e.slot) {
                    found.push(Reverse(e));
                }
            }
        }
        while found.len() > ef {
            found.pop();
        }
        while let Some(c) = frontier.pop() {
            if found.len() >= ef && found.peek().is_some_and(|Reverse(w)| c < *w) {
                break;
            }
            for &n in self.links(c.slot, layer) {
                if !visited.insert(n) {
                    continue;
                }
                let s = Scored {
                    score: rows.sim(q, n),
                    slot: n,
                };
                let worst = found.peek().map(|Reverse(w)| *w);
                if found.len() < ef || worst.is_some_and(|w| s > w) {
                    frontier.push(s);
                    if accept(n) {
                        found.push(Reverse(s));
                        if found.len() > ef {
                            found.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Scored> = found.into_iter().map(|Reverse(s)| s).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// The `k` best accepted slots for `q` (best first), searching layer 0 with a beam of
    /// `max(ef, k)`. May return fewer than `k` when few slots pass `accept`; the caller
    /// falls back to an exact scan then.
    pub fn search(
        &self,
        rows: Rows<'_>,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        for layer in (1..=self.max_level).rev() {
            ep = self.greedy(rows, q, ep, layer);
        }
        let eps = [Scored {
            score: rows.sim(q, ep),
            slot: ep,
        }];
        let mut out = self.search_layer(rows, q, &eps, ef.max(k), 0, accept);
        out.truncate(k);
        out
    }
}
