//! Paged KV memory: the cache is cut into blocks of [`KV_BLOCK`] positions that sequences
//! take as they grow and give back when they finish, plus a prefix cache.
//!
//! A full block is named by the hash of its tokens chained with its predecessor's name, so
//! a name stands for the whole prefix up to the block's end. When a sequence fills a block
//! the name is recorded; a later prompt that starts with the same tokens (a shared system
//! prompt, the earlier turns of a chat) takes those blocks as they are instead of
//! recomputing them. Blocks are reference-counted; a named block that nobody uses stays
//! cached until the memory is needed, then the least recently used goes first. Sequences
//! only ever write past their shared prefix, into blocks of their own, so sharing needs no
//! copy-on-write.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

pub use ferrollama_model::KV_BLOCK;

/// The name of a full block: its tokens and everything before them.
pub fn chain_hash(prev: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prev.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone)]
struct Named {
    hash: u64,
    prev: u64,
    tokens: [u32; KV_BLOCK],
}

/// Block accounting for one KV cache.
#[derive(Debug)]
pub struct BlockPool {
    refs: Vec<u32>,
    free: Vec<u32>,
    named: Vec<Option<Named>>,
    by_hash: HashMap<u64, u32>,
    /// Named blocks nobody references, by when they were last released (oldest first).
    idle: BTreeMap<u64, u32>,
    idle_tick: Vec<u64>,
    tick: u64,
}

impl BlockPool {
    pub fn new(n_blocks: usize) -> BlockPool {
        BlockPool {
            refs: vec![0; n_blocks],
            free: (0..n_blocks as u32).rev().collect(),
            named: vec![None; n_blocks],
            by_hash: HashMap::new(),
            idle: BTreeMap::new(),
            idle_tick: vec![0; n_blocks],
            tick: 0,
        }
    }

    pub fn total(&self) -> usize {
        self.refs.len()
    }

    /// Blocks some sequence holds.
    pub fn used(&self) -> usize {
        self.refs.len() - self.free.len() - self.idle.len()
    }

    /// Blocks kept only for the prefix cache (reclaimable).
    pub fn cached(&self) -> usize {
        self.idle.len()
    }

    /// Blocks that can be handed out now (free or reclaimable).
    pub fn available(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// A block for a sequence to write into, if any is left.
    pub fn alloc(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.idle.pop_first()?;
                if let Some(n) = self.named[b as usize].take() {
                    self.by_hash.remove(&n.hash);
                }
                b
            }
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// Gives blocks back (a finished, cancelled or preempted sequence).
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks {
            let r = &mut self.refs[b as usize];
            *r = r.saturating_sub(1);
            if *r == 0 {
                if self.named[b as usize].is_some() {
                    self.tick += 1;
                    self.idle.insert(self.tick, b);
                    self.idle_tick[b as usize] = self.tick;
                } else {
                    self.free.push(b);
                }
            }
        }
    }

    /// Records that `block` holds `tokens` (a full block) after the prefix named `prev`;
    /// returns the block's name. A prefix already cached in another block keeps that one.
    pub fn name(&mut self, block: u32, prev: u64, tokens: &[u32]) -> u64 {
        let hash = chain_hash(prev, tokens);
        if self.named[block as usize].is_none() && !self.by_hash.contains_key(&hash) {
            let mut t = [0u32; KV_BLOCK];
            t.copy_from_slice(&tokens[..KV_BLOCK]);
            self.named[block as usize] = Some(Named {
                hash,
                prev,
                tokens: t,
            });
            self.by_hash.insert(hash, block);
        }
        hash
    }

    /// Takes the cached blocks holding the longest prefix of `tokens` made of full blocks
    /// (at most `max_blocks`), adding a reference to each. Returns the blocks and the name
    /// of the last one (0 when none).
    pub fn lookup(&mut self, tokens: &[u32], max_blocks: usize, out: &mut Vec<u32>) -> u64 {
        self.lookup_from(0, tokens, max_blocks, out)
    }

    /// [`BlockPool::lookup`] for a chain that starts at `seed` instead of 0: keys and values
    /// computed with a LoRA adapter differ from the base model's for the same tokens, so
    /// each adapter names its blocks in its own chain (its seed) and never shares them with
    /// the base or another adapter. With no block found, returns `seed`.
    pub fn lookup_from(
        &mut self,
        seed: u64,
        tokens: &[u32],
        max_blocks: usize,
        out: &mut Vec<u32>,
    ) -> u64 {
        let mut prev = seed;
        for chunk in tokens.chunks_exact(KV_BLOCK).take(max_blocks) {
            let hash = chain_hash(prev, chunk);
            let Some(&b) = self.by_hash.get(&hash) else {
                break;
            };
            // The hash is a name, not a proof: check the block really holds these tokens
            // after the same prefix.
            match &self.named[b as usize] {
                Some(n) if n.prev == prev && n.tokens[..] == *chunk => {}
                _ => break,
            }
            if self.refs[b as usize] == 0 {
                self.idle.remove(&self.idle_tick[b as usize]);
            }
            self.refs[b as usize] += 1;
            out.push(b);
            prev = hash;
        }
        prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(seed: u32, n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| i * 7 + seed).collect()
    }

    #[test]
    fn shared_prefix_blocks_are_found_and_refcounted() {
        let mut p = BlockPool::new(8);
        let t = toks(1, 40);
        let (a, b, c) = (
            p.alloc().expect("a"),
            p.alloc().expect("b"),
            p.alloc().expect("c"),
        );
        let h0 = p.name(a, 0, &t[..16]);
        p.name(b, h0, &t[16..32]);
        assert_eq!(p.used(), 3);
        let mut got = Vec::new();
        p.lookup(&t, 10, &mut got);
        assert_eq!(got, vec![a, b], "two full blocks of the prefix are cached");
        // Another prompt diverging in the second block shares only the first.
        let mut u = t.clone();
        u[20] += 1;
        let mut got2 = Vec::new();
        p.lookup(&u, 10, &mut got2);
        assert_eq!(got2, vec![a]);
        // The first owner finishes: blocks stay referenced by the lookups.
        p.release(&[a, b, c]);
        assert_eq!(p.used(), 2);
        p.release(&got);
        p.release(&got2);
        assert_eq!(p.used(), 0);
        assert_eq!(p.cached(), 2, "named blocks stay cached when idle");
        assert_eq!(p.available(), 8);
    }

    #[test]
    fn idle_cached_blocks_are_reclaimed_oldest_first() {
        let mut p = BlockPool::new(3);
        let t = toks(3, 32);
        let a = p.alloc().expect("a");
        let b = p.alloc().expect("b");
        let h = p.name(a, 0, &t[..16]);
        p.name(b, h, &t[16..32]);
        p.release(&[b]);
        p.release(&[a]);
        // One free block, then the oldest idle (b), then a.
        let x = p.alloc().expect("x");
        assert!(x != a && x != b);
        assert_eq!(p.alloc(), Some(b));
        let mut got = Vec::new();
        p.lookup(&t, 2, &mut got);
        assert_eq!(got, vec![a], "b's prefix was evicted, a's remains");
        assert_eq!(p.alloc(), None, "everything is in use");
    }

    #[test]
    fn adapter_chains_never_share_blocks_with_the_base() {
        let mut p = BlockPool::new(4);
        let t = toks(9, 32);
        let a = p.alloc().expect("a");
        let h = p.name(a, 0, &t[..16]); // the base's block
        let mut got = Vec::new();
        assert_eq!(p.lookup_from(77, &t, 2, &mut got), 77);
        assert!(
            got.is_empty(),
            "an adapter's chain does not find the base's block"
        );
        let b = p.alloc().expect("b");
        let hb = p.name(b, 77, &t[..16]);
        assert_ne!(h, hb);
        let mut got = Vec::new();
        p.lookup_from(77, &t, 2, &mut got);
        assert_eq!(got, vec![b]);
        let mut got = Vec::new();
        p.lookup(&t, 2, &mut got);
        assert_eq!(got, vec![a]);
    }

    #[test]
    fn lookup_respects_max_blocks_and_hash_mismatch() {
        let mut p = BlockPool::new(4);
        let t = toks(5, 32);
        let a = p.alloc().expect("a");
        p.name(a, 0, &t[..16]);
        let mut got = Vec::new();
        p.lookup(&t, 0, &mut got);
        assert!(got.is_empty());
        // A different prefix chain never matches block a.
        let mut got = Vec::new();
        p.lookup(&toks(6, 32), 2, &mut got);
        assert!(got.is_empty());
    }
}
