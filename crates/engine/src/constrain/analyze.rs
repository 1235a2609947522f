//! After a graph is built: unions are flattened to their non-union leaves, `enum` values
//! failing the keywords next to them are dropped, and every node gets `md`, the least
//! nesting any valid value needs (`INF` when none exists, the least fixpoint so that
//! recursion without a base case is unsatisfiable). The matcher only takes choices whose
//! `md` fits under [`MAX_NESTING`], which is what rules out dead ends: an optional property
//! whose schema is unsatisfiable is simply never offered.

use super::complete::typed_best;
use super::error::ConstraintError;
use super::schema::{ArrSpec, Compiled, INF, LitSet, NO_LEN, Node, NodeId, ObjSpec, Typed};
use super::validate::validate_node;
use super::{MAX_NESTING, MAX_SCHEMA_NODES};

/// Finishes a built graph: flattens unions, filters literal sets, computes `md`.
pub(crate) fn analyze(
    nodes: Vec<Node>,
    objects: Vec<ObjSpec>,
    lits: Vec<LitSet>,
    root: NodeId,
) -> Result<Compiled, ConstraintError> {
    let n = nodes.len();
    // Hostile unions (long chains of `anyOf`) make flattening quadratic: bound the work.
    let mut work = 0usize;
    let too_large = ConstraintError::TooLarge {
        limit: MAX_SCHEMA_NODES,
    };
    // Leaves: the non-union nodes reachable through union edges.
    let mut leaf_pool = Vec::new();
    let mut leaves = Vec::with_capacity(n);
    let mut stamp = vec![u32::MAX; n];
    let mut stack = Vec::new();
    for (id, node) in nodes.iter().enumerate() {
        let start = leaf_pool.len() as u32;
        if !matches!(node, Node::Union(_)) {
            leaf_pool.push(id as NodeId);
        } else {
            stack.clear();
            stack.push(id as NodeId);
            stamp[id] = id as u32;
            while let Some(x) = stack.pop() {
                work += 1;
                if work > 100 * MAX_SCHEMA_NODES {
                    return Err(too_large);
                }
                match &nodes[x as usize] {
                    Node::Union(alts) => {
                        for &a in alts {
                            if stamp[a as usize] != id as u32 {
                                stamp[a as usize] = id as u32;
                                stack.push(a);
                            }
                        }
                    }
                    _ => leaf_pool.push(x),
                }
            }
        }
        leaves.push((start, leaf_pool.len() as u32));
    }
    let mut c = Compiled {
        nodes,
        objects,
        lits,
        md: vec![INF; n],
        leaves,
        live: Vec::new(),
        leaf_pool,
        shortest: Vec::new(),
        root,
        prefix: Box::default(),
        suffix: Box::default(),
    };
    filter_literals(&mut c);
    compute_md(&mut c);
    compute_shortest(&mut c);
    // Live leaves (appended to the pool): the ones some value satisfies.
    let mut live = Vec::with_capacity(n);
    for id in 0..n {
        let start = c.leaf_pool.len() as u32;
        let (a, b) = c.leaves[id];
        for i in a..b {
            let l = c.leaf_pool[i as usize];
            if c.md[l as usize] != INF {
                c.leaf_pool.push(l);
            }
        }
        live.push((start, c.leaf_pool.len() as u32));
    }
    c.live = live;
    Ok(c)
}

/// Drops `enum`/`const` values that fail the keywords next to them.
fn filter_literals(c: &mut Compiled) {
    let mut keep: Vec<(u32, Vec<bool>)> = Vec::new();
    for node in &c.nodes {
        if let Node::Lit { set, base } = node {
            let ls = &c.lits[*set as usize];
            let k = ls
                .values
                .iter()
                .map(|v| validate_node(c, v, *base, 0, 0).is_ok())
                .collect();
            keep.push((*set, k));
        }
    }
    for (set, k) in keep {
        let ls = &mut c.lits[set as usize];
        retain_mask(&mut ls.texts, &k);
        retain_mask(&mut ls.nest, &k);
        retain_mask(&mut ls.values, &k);
    }
    for ls in &mut c.lits {
        ls.max_nest = ls.nest.iter().copied().max().unwrap_or(0);
    }
}

fn retain_mask<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    v.retain(|_| k.next().copied().unwrap_or(false));
}

fn add1(md: u8) -> u8 {
    if u32::from(md) + 1 > MAX_NESTING {
        INF
    } else {
        md + 1
    }
}

/// Least fixpoint of "least nesting of a valid value". Each container adds one level, so
/// after round `k` every node whose answer is at most `k` is final: at most
/// `MAX_NESTING + 2` rounds.
fn compute_md(c: &mut Compiled) {
    for _round in 0..=MAX_NESTING + 2 {
        let mut changed = false;
        for id in 0..c.nodes.len() {
            let new = match &c.nodes[id] {
                Node::Union(_) => c
                    .leaves(id as NodeId)
                    .iter()
                    .map(|&l| c.md[l as usize])
                    .min()
                    .unwrap_or(INF),
                Node::Lit { set, .. } => c.lits[*set as usize]
                    .nest
                    .iter()
                    .copied()
                    .min()
                    .unwrap_or(INF),
                Node::Typed(t) => {
                    let scalar = t.null
                        || t.boolean
                        || t.number.is_some()
                        || t.string.is_some_and(|(lo, hi)| lo <= hi);
                    let arr = t.array.map_or(INF, |a| array_md(c, &a));
                    let obj = t
                        .object
                        .map_or(INF, |o| object_md(c, &c.objects[o as usize]));
                    if scalar { 0 } else { arr.min(obj) }
                }
            };
            if new < c.md[id] {
                c.md[id] = new;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Cache branch results for the matcher.
    for id in 0..c.nodes.len() {
        let arr_md = match &c.nodes[id] {
            Node::Typed(Typed { array: Some(a), .. }) => array_md(c, a),
            _ => continue,
        };
        if let Node::Typed(Typed { array: Some(a), .. }) = &mut c.nodes[id] {
            a.md = arr_md;
        }
    }
    for o in 0..c.objects.len() {
        let md = object_md(c, &c.objects[o]);
        let prop_md: Vec<u8> = c.objects[o]
            .props
            .iter()
            .map(|p| c.md[p.node as usize])
            .collect();
        let spec = &mut c.objects[o];
        spec.md = md;
        for (p, m) in spec.props.iter_mut().zip(prop_md) {
            p.md = m;
        }
    }
}

fn array_md(c: &Compiled, a: &ArrSpec) -> u8 {
    if a.min > a.max {
        INF
    } else if a.min == 0 {
        add1(0)
    } else {
        match c.md[a.items as usize] {
            INF => INF,
            m => add1(m),
        }
    }
}

fn object_md(c: &Compiled, o: &ObjSpec) -> u8 {
    let mut worst = 0;
    for p in o.props.iter().filter(|p| p.required) {
        worst = worst.max(c.md[p.node as usize]);
    }
    if worst == INF { INF } else { add1(worst) }
}

/// The shortest-value tables. A container's value at budget `b` is built from its
/// children's at `b - 1`, so rows are filled in order of `b` with no fixpoint iteration;
/// unions take the best of their leaves in the same row.
fn compute_shortest(c: &mut Compiled) {
    for o in &mut c.objects {
        o.key_json_len = o
            .keys
            .iter()
            .map(|k| serde_json::to_string(&**k).map_or(u32::MAX, |s| s.len() as u32))
            .collect();
    }
    let n = c.nodes.len();
    let w = MAX_NESTING as usize + 1;
    c.shortest = vec![NO_LEN; n * w];
    for b in 0..w {
        for id in 0..n {
            let len = match &c.nodes[id] {
                Node::Union(_) => continue,
                Node::Lit { set, .. } => {
                    let ls = &c.lits[*set as usize];
                    (0..ls.texts.len())
                        .filter(|&i| usize::from(ls.nest[i]) <= b)
                        .map(|i| ls.texts[i].len() as u32)
                        .min()
                        .unwrap_or(NO_LEN)
                }
                Node::Typed(t) => typed_best(c, t, b as u32).map_or(NO_LEN, |(_, len)| len),
            };
            c.shortest[id * w + b] = len;
        }
        for id in 0..n {
            if matches!(c.nodes[id], Node::Union(_)) {
                let best = c
                    .leaves(id as NodeId)
                    .iter()
                    .map(|&l| c.shortest[l as usize * w + b])
                    .min()
                    .unwrap_or(NO_LEN);
                c.shortest[id * w + b] = best;
            }
        }
    }
}
