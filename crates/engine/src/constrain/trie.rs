//! A model's vocabulary as a byte trie in preorder, built once per model.
//!
//! Preorder with each node's subtree end lets the mask walk be a single loop: a node whose
//! byte is rejected jumps past its whole subtree, and the state of a node's parent is the
//! last state saved at the depth above.

/// One trie node (the root is implicit).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrieNode {
    pub(crate) byte: u8,
    /// Length of the prefix this node spells (1 for the root's children).
    pub(crate) depth: u16,
    /// Index just past this node's subtree.
    pub(crate) end: u32,
    /// Range of `TokenTrie::ids` of tokens spelling exactly this prefix.
    pub(crate) tok_start: u32,
    pub(crate) tok_end: u32,
}

/// The bytes each token decodes to, as a trie.
#[derive(Clone)]
pub struct TokenTrie {
    nodes: Vec<TrieNode>,
    ids: Vec<u32>,
    vocab_size: usize,
    max_depth: usize,
}

impl std::fmt::Debug for TokenTrie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTrie")
            .field("vocab_size", &self.vocab_size)
            .field("nodes", &self.nodes.len())
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

impl TokenTrie {
    /// Builds the trie from `(id, bytes)` pairs. Tokens with no bytes (control tokens) are
    /// left out, so a mask never allows them; so are tokens over 65,535 bytes.
    pub fn new<'a>(tokens: impl IntoIterator<Item = (u32, &'a [u8])>) -> TokenTrie {
        let mut vocab_size = 0;
        let mut toks: Vec<(&[u8], u32)> = Vec::new();
        for (id, bytes) in tokens {
            vocab_size = vocab_size.max(id as usize + 1);
            if !bytes.is_empty() && bytes.len() <= usize::from(u16::MAX) {
                toks.push((bytes, id));
            }
        }
        // Sorted order is the trie's preorder (a prefix sorts before its extensions).
        toks.sort_unstable();
        let mut nodes: Vec<TrieNode> = Vec::new();
        let mut ids = Vec::with_capacity(toks.len());
        // Nodes on the path to the previous token, by depth - 1.
        let mut path: Vec<usize> = Vec::new();
        let mut prev: &[u8] = &[];
        for (bytes, id) in toks {
            let lcp = prev.iter().zip(bytes).take_while(|(a, b)| a == b).count();
            if lcp == bytes.len() && lcp == prev.len() {
                // Same bytes as the previous token: same node (the last one made).
                ids.push(id);
                if let Some(last) = nodes.last_mut() {
                    last.tok_end = ids.len() as u32;
                }
                continue;
            }
            while path.len() > lcp {
                if let Some(j) = path.pop() {
                    nodes[j].end = nodes.len() as u32;
                }
            }
            for (d, &byte) in bytes.iter().enumerate().skip(lcp) {
                path.push(nodes.len());
                nodes.push(TrieNode {
                    byte,
                    depth: (d + 1) as u16,
                    end: 0,
                    tok_start: ids.len() as u32,
                    tok_end: ids.len() as u32,
                });
            }
            ids.push(id);
            if let Some(last) = nodes.last_mut() {
                last.tok_end = ids.len() as u32;
            }
            prev = bytes;
        }
        while let Some(j) = path.pop() {
            nodes[j].end = nodes.len() as u32;
        }
        let max_depth = nodes
            .iter()
            .map(|n| usize::from(n.depth))
            .max()
            .unwrap_or(0);
        TokenTrie {
            nodes,
            ids,
            vocab_size,
            max_depth,
        }
    }

    /// One more than the largest id given (the length a mask should have).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Trie nodes (distinct non-empty token prefixes).
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn nodes(&self) -> &[TrieNode] {
        &self.nodes
    }

    pub(crate) fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Length of the longest token.
    pub(crate) fn max_depth(&self) -> usize {
        self.max_depth
    }
}
