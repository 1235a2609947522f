//! A short valid ending for a document in progress ([`super::Matcher::completion`]): what a
//! server appends when `max_tokens` is nearly spent, so the output still parses and
//! validates.
//!
//! Whole values come from `Compiled::shortest` (the shortest valid value of every node at
//! every nesting budget, so recursion cannot run away); the token in progress is finished
//! with the fewest bytes; objects get their missing required keys. Each piece is fed through
//! the real matcher step before the next is chosen, so the result is accepted by
//! construction, and a piece that is not accepted ends the search with `None` rather than
//! a wrong answer.

use super::MAX_NESTING;
use super::lex::{NumSt, push_json_char};
use super::schema::{Compiled, LEN_CAP, NO_LEN, Node, NodeId, ObjSpec, Typed};
use super::state::{ADDITIONAL, ArrSt, Frame, KeySt, ObjSt, State, Thread, is_used};

/// Longest ending we build.
const MAX_COMPLETION: usize = 1 << 20;
/// Names tried for a new key outside `properties` before giving up.
const NAME_TRIES: usize = 64;

/// Which kind of value is the shortest for a typed node.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pick {
    Num,
    Keyword,
    Str(u32),
    Arr,
    Obj,
}

fn capped(v: u64) -> Option<u32> {
    (v <= u64::from(LEN_CAP)).then_some(v as u32)
}

/// The shortest value of a typed node nested at most `b` deep, and its length. Reads the
/// table row `b - 1` (so it also serves to fill row `b`).
pub(crate) fn typed_best(c: &Compiled, t: &Typed, b: u32) -> Option<(Pick, u32)> {
    let mut best: Option<(Pick, u32)> = None;
    let mut offer = |p: Pick, len: Option<u32>| {
        if let Some(l) = len
            && best.is_none_or(|(_, x)| l < x)
        {
            best = Some((p, l));
        }
    };
    if t.number.is_some() {
        offer(Pick::Num, Some(1)); // 0
    }
    if t.boolean || t.null {
        offer(Pick::Keyword, Some(4)); // true, null
    }
    if let Some((lo, _)) = t.string {
        offer(Pick::Str(lo), capped(u64::from(lo) + 2));
    }
    if b >= 1 {
        if let Some(a) = t.array {
            let len = match (a.min, c.shortest(a.items, b - 1)) {
                (0, _) => Some(2),
                (_, NO_LEN) => None,
                (n, l) => capped(2 + u64::from(n) * u64::from(l) + u64::from(n) - 1),
            };
            offer(Pick::Arr, len);
        }
        if let Some(o) = t.object {
            let spec = &c.objects[o as usize];
            let mut total = 1u64; // `{`, then each `"key":value` and its `,` or `}`
            let mut ok = true;
            for (i, p) in spec.props.iter().enumerate().filter(|(_, p)| p.required) {
                let l = c.shortest(p.node, b - 1);
                ok &= l != NO_LEN;
                total += u64::from(spec.key_json_len[i]) + 1 + u64::from(l) + 1;
            }
            let total = if spec.n_required == 0 { 2 } else { total };
            offer(Pick::Obj, if ok { capped(total) } else { None });
        }
    }
    best
}

/// Appends the shortest valid value of `node` nested at most `b` deep.
pub(crate) fn shortest_value(c: &Compiled, node: NodeId, b: u32, out: &mut Vec<u8>) -> bool {
    match &c.nodes[node as usize] {
        Node::Union(_) => c
            .leaves(node)
            .iter()
            .filter(|&&l| c.shortest(l, b) != NO_LEN)
            .min_by_key(|&&l| c.shortest(l, b))
            .is_some_and(|&l| shortest_value(c, l, b, out)),
        Node::Lit { set, .. } => {
            let ls = &c.lits[*set as usize];
            let best = (0..ls.texts.len())
                .filter(|&i| u32::from(ls.nest[i]) <= b)
                .min_by_key(|&i| ls.texts[i].len());
            best.map(|i| out.extend_from_slice(&ls.texts[i])).is_some()
        }
        Node::Typed(t) => {
            let Some((pick, _)) = typed_best(c, t, b) else {
                return false;
            };
            match (pick, t.array, t.object) {
                (Pick::Num, ..) => out.push(b'0'),
                (Pick::Keyword, ..) => {
                    out.extend_from_slice(if t.null { b"null" } else { b"true" })
                }
                (Pick::Str(n), ..) => {
                    out.push(b'"');
                    out.resize(out.len() + n as usize, b'a');
                    out.push(b'"');
                }
                (Pick::Arr, Some(a), _) => {
                    out.push(b'[');
                    for i in 0..a.min {
                        if i > 0 {
                            out.push(b',');
                        }
                        if !shortest_value(c, a.items, b - 1, out) {
                            return false;
                        }
                    }
                    out.push(b']');
                }
                (Pick::Obj, _, Some(o)) => {
                    let spec = &c.objects[o as usize];
                    out.push(b'{');
                    let mut first = true;
                    // Required keys in the order the object wants them.
                    let keys: Vec<usize> = if spec.ordered {
                        spec.order.iter().map(|&i| i as usize).collect()
                    } else {
                        (0..spec.props.len()).collect()
                    };
                    for (i, p) in keys
                        .into_iter()
                        .filter_map(|i| Some((i, spec.props.get(i)?)))
                        .filter(|(_, p)| p.required)
                    {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        push_key(out, &spec.keys[i]);
                        out.push(b':');
                        if !shortest_value(c, p.node, b - 1, out) {
                            return false;
                        }
                    }
                    out.push(b'}');
                }
                _ => return false,
            }
            true
        }
    }
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    for ch in key.chars() {
        push_json_char(out, ch);
    }
    out.push(b'"');
}

/// `th` after `piece`, if every byte is accepted (the first surviving `anyOf` branch).
fn after(c: &Compiled, th: &Thread, piece: &[u8]) -> Option<Thread> {
    let mut s = State {
        threads: vec![th.clone()],
    };
    let mut forks = Vec::new();
    for &b in piece {
        if !s.step(c, b, &mut forks) {
            return None;
        }
    }
    s.threads.into_iter().next()
}

impl State {
    /// The shortest ending among the threads.
    pub(crate) fn completion(&self, c: &Compiled) -> Option<Vec<u8>> {
        self.threads
            .iter()
            .filter_map(|t| complete_thread(c, t.clone()))
            .min_by_key(Vec::len)
    }
}

fn complete_thread(c: &Compiled, mut th: Thread) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while !th.is_complete(c) {
        let piece = next_piece(c, &th).filter(|p| !p.is_empty())?;
        th = after(c, &th, &piece)?;
        out.extend_from_slice(&piece);
        if out.len() > MAX_COMPLETION {
            return None;
        }
    }
    Some(out)
}

/// Whether a number or literal frame already holds a whole value (its parent goes next).
fn value_done(c: &Compiled, f: &Frame) -> bool {
    match *f {
        Frame::Num(n) => n.complete(),
        Frame::Lit {
            set,
            lo,
            pos,
            budget,
            ..
        } => {
            let ls = &c.lits[set as usize];
            ls.texts[lo as usize].len() == pos as usize && ls.nest[lo as usize] <= budget
        }
        _ => false,
    }
}

/// The next piece of the ending: what finishes the innermost unfinished frame, or its next
/// required part.
fn next_piece(c: &Compiled, th: &Thread) -> Option<Vec<u8>> {
    let frames = &th.frames;
    let mut k = frames.len().checked_sub(1)?;
    if value_done(c, &frames[k]) {
        k = k.checked_sub(1)?;
    }
    // Values started now sit inside `depth` open containers.
    let budget = MAX_NESTING.checked_sub(u32::from(th.depth))?;
    let value = |node: NodeId| {
        let mut v = Vec::new();
        shortest_value(c, node, budget, &mut v).then_some(v)
    };
    match frames[k] {
        Frame::Root(node) => value(node),
        Frame::Str { lex, len, min, .. } => {
            let mut v = lex.finish_any();
            v.resize(v.len() + min.saturating_sub(len) as usize, b'a');
            v.push(b'"');
            Some(v)
        }
        Frame::Num(n) => Some(if n.st == NumSt::Minus && n.integer {
            b"1".to_vec()
        } else {
            b"0".to_vec()
        }),
        Frame::Lit {
            set,
            lo,
            hi,
            pos,
            budget,
        } => {
            let ls = &c.lits[set as usize];
            (lo..hi)
                .map(|i| i as usize)
                .filter(|&i| ls.nest[i] <= budget)
                .min_by_key(|&i| ls.texts[i].len())
                .and_then(|i| ls.texts[i].get(pos as usize..))
                .map(<[u8]>::to_vec)
        }
        Frame::Arr {
            items,
            min,
            count,
            st,
            ..
        } => match st {
            ArrSt::Open if min == 0 => Some(b"]".to_vec()),
            ArrSt::Open | ArrSt::Comma => value(items),
            ArrSt::Value if count < min => Some(b",".to_vec()),
            ArrSt::Value => Some(b"]".to_vec()),
        },
        Frame::Obj {
            obj,
            st,
            used,
            log_start,
            req,
        } => {
            let spec = &c.objects[obj as usize];
            let ctx = KeyCtx {
                c,
                spec,
                th,
                used,
                log_start,
                req,
                budget,
            };
            match st {
                ObjSt::Open | ObjSt::Value if req == spec.n_required => Some(b"}".to_vec()),
                ObjSt::Value => Some(b",".to_vec()),
                ObjSt::Open | ObjSt::Comma => ctx.new_key(),
                ObjSt::Key(ks) => ctx.finish_key(&ks),
                ObjSt::AfterKey(_) => Some(b":".to_vec()),
                ObjSt::Colon(p) if p == ADDITIONAL => value(spec.additional?),
                ObjSt::Colon(p) => value(spec.props.get(p as usize)?.node),
            }
        }
    }
}

/// Choosing and spelling an object key.
struct KeyCtx<'a> {
    c: &'a Compiled,
    spec: &'a ObjSpec,
    th: &'a Thread,
    used: u64,
    log_start: u32,
    req: u32,
    /// Nesting budget of the value that follows.
    budget: u32,
}

impl KeyCtx<'_> {
    /// Whether required keys are still missing (then a new key should be one of them:
    /// any other would only lengthen the ending).
    fn missing(&self) -> bool {
        self.req < self.spec.n_required
    }

    /// Listed keys in `range` that may be written.
    fn listed(
        &self,
        range: std::ops::Range<u32>,
        only_required: bool,
    ) -> impl Iterator<Item = usize> + '_ {
        range.map(|i| i as usize).filter(move |&i| {
            self.spec.usable(i, self.th.depth, self.req)
                && !is_used(&self.th.log, self.used, self.log_start, i)
                && (!only_required || self.spec.props[i].required)
        })
    }

    fn additional_ok(&self) -> bool {
        self.spec.additional_ok(self.c, self.th.depth)
    }

    /// Bytes of the value after key `i` (or after an unlisted key).
    fn value_len(&self, i: Option<usize>) -> u64 {
        let node = match i {
            Some(i) => self.spec.props[i].node,
            None => match self.spec.additional {
                Some(n) => n,
                None => return u64::MAX,
            },
        };
        match self.c.shortest(node, self.budget) {
            NO_LEN => u64::MAX,
            l => u64::from(l),
        }
    }

    /// The cheapest accepted candidate (key text and the value it leads to).
    fn best(&self, cands: impl Iterator<Item = (Vec<u8>, Option<usize>)>) -> Option<Vec<u8>> {
        cands
            .filter(|(piece, _)| {
                after(self.c, self.th, piece).is_some_and(|t| {
                    matches!(
                        t.frames.last(),
                        Some(Frame::Obj {
                            st: ObjSt::AfterKey(_),
                            ..
                        })
                    )
                })
            })
            .min_by_key(|(piece, i)| (piece.len() as u64).saturating_add(self.value_len(*i)))
            .map(|(piece, _)| piece)
    }

    /// Names for a key outside `properties`: "", "a" ... "z", "aa" ...
    fn names() -> impl Iterator<Item = Vec<u8>> {
        (0..NAME_TRIES).map(|mut n| {
            let mut name = Vec::new();
            while n > 0 {
                n -= 1;
                name.push(b'a' + (n % 26) as u8);
                n /= 26;
            }
            name
        })
    }

    /// A whole new key, after `{` or `,`.
    fn new_key(&self) -> Option<Vec<u8>> {
        let listed = self
            .listed(0..self.spec.keys.len() as u32, self.missing())
            .map(|i| {
                let mut v = Vec::new();
                push_key(&mut v, &self.spec.keys[i]);
                (v, Some(i))
            });
        let extra = (!self.missing() && self.additional_ok())
            .then(|| {
                Self::names().map(|n| {
                    let mut v = vec![b'"'];
                    v.extend_from_slice(&n);
                    v.push(b'"');
                    (v, None)
                })
            })
            .into_iter()
            .flatten();
        self.best(listed.chain(extra))
    }

    /// The rest of a key in progress, closing quote included.
    fn finish_key(&self, ks: &KeySt) -> Option<Vec<u8>> {
        let pos = ks.pos as usize;
        let listed = self.listed(ks.lo..ks.hi, false).filter_map(|i| {
            let key = &self.spec.keys[i];
            let mut v = Vec::new();
            let rest = if ks.lex.pending_raw() > 0 {
                // The raw character in progress: its remaining bytes, as they are.
                let end = pos + ks.lex.pending_raw();
                v.extend_from_slice(key.as_bytes().get(pos..end)?);
                key.get(end..)?
            } else if !ks.lex.at_boundary() {
                // An escape in progress: make it spell the key's next character.
                let ch = key.get(pos..)?.chars().next()?;
                v.extend(ks.lex.finish_escape_as(ch));
                key.get(pos + ch.len_utf8()..)?
            } else {
                key.get(pos..)?
            };
            for ch in rest.chars() {
                push_json_char(&mut v, ch);
            }
            v.push(b'"');
            Some((v, Some(i)))
        });
        let extra = self
            .additional_ok()
            .then(|| {
                let head = ks.lex.finish_any();
                Self::names().map(move |n| {
                    let mut v = head.clone();
                    v.extend_from_slice(&n);
                    v.push(b'"');
                    (v, None)
                })
            })
            .into_iter()
            .flatten();
        self.best(listed.chain(extra))
    }
}
