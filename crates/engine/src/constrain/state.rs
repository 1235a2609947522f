//! Matcher state: a set of parser stacks ("threads"), one per live `anyOf` alternative,
//! and how one byte advances them.
//!
//! A thread is a stack of `Copy` frames plus a small log of keys used by the open objects,
//! so duplicating state (which the token-mask walk does at every trie node) is a couple of
//! memcpys. Threads fork only where a value of a union starts; threads that reach the same
//! state are merged. Every choice is checked against the least nesting its schema needs
//! (`Compiled::md`), so every accepted prefix can still be completed.

use super::lex::{Lex, NumLex, NumOut, StrLex};
use super::schema::{Compiled, Node, NodeId, NumKind, ObjSpec};
use super::{INDENT_PER_LEVEL, MAX_NESTING, MAX_THREADS};

/// Property index meaning "a key not in `properties`".
pub(crate) const ADDITIONAL: u32 = u32::MAX;
/// Log entries for listed properties past the 64 tracked in `Obj::used` carry this bit;
/// hashes of other keys never do. Unlisted keys are remembered by a 64-bit FNV hash of
/// their decoded text: equal keys always collide, so a duplicate is never admitted; a
/// chance collision only refuses a new key's closing quote (the key can still go on).
const LISTED_TAG: u64 = 1 << 63;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArrSt {
    /// After `[`.
    Open,
    /// After an item.
    Value,
    /// After `,`.
    Comma,
}

/// Matching an object key: the listed keys starting with the decoded bytes so far are
/// `keys[lo..hi]`; `hash` identifies keys not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeySt {
    pub(crate) lex: StrLex,
    pub(crate) lo: u32,
    pub(crate) hi: u32,
    pub(crate) pos: u32,
    pub(crate) hash: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjSt {
    /// After `{`.
    Open,
    Key(KeySt),
    /// After a key's closing quote; the property index (or `ADDITIONAL`).
    AfterKey(u32),
    /// After `:`.
    Colon(u32),
    /// After a value.
    Value,
    /// After `,`.
    Comma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Nothing read yet: the top-level value (no whitespace before it).
    Root(NodeId),
    Str {
        lex: StrLex,
        /// Characters so far (a surrogate pair is one).
        len: u32,
        min: u32,
        max: u32,
    },
    Num(NumLex),
    /// Inside `enum`/`const`/keyword text: candidates `texts[lo..hi]` share the first `pos`
    /// bytes; only literals nested at most `budget` deep may be finished.
    Lit {
        set: u32,
        lo: u32,
        hi: u32,
        pos: u32,
        budget: u8,
    },
    Arr {
        items: NodeId,
        min: u32,
        max: u32,
        count: u32,
        st: ArrSt,
    },
    Obj {
        obj: u32,
        st: ObjSt,
        /// Listed properties 0..64 already used (bit i); later ones are in the log.
        used: u64,
        /// Where this object's entries start in `Thread::log`.
        log_start: u32,
        /// Required properties seen.
        req: u32,
    },
}

/// Whitespace read since the last token. The layouts allowed are those of a pretty-printer
/// (see the module docs): nothing, one space, or one newline followed by
/// indentation spaces. Two states and a counter, so a step stays a match on a byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Ws {
    #[default]
    Empty,
    /// One space (nothing more may follow).
    Space,
    /// A newline and this many spaces after it.
    Newline(u16),
}

/// One parse stack.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Thread {
    pub(crate) frames: Vec<Frame>,
    /// Keys used by the open objects (hashes of unlisted keys, tagged indices of listed ones
    /// past 64), truncated when an object closes.
    pub(crate) log: Vec<u64>,
    /// Whitespace just read.
    ws: Ws,
    /// Open arrays/objects.
    pub(crate) depth: u8,
}

impl Clone for Thread {
    fn clone(&self) -> Thread {
        Thread {
            frames: self.frames.clone(),
            log: self.log.clone(),
            ws: self.ws,
            depth: self.depth,
        }
    }

    // Reuses allocations: the mask walk copies state at every trie node.
    fn clone_from(&mut self, o: &Thread) {
        self.frames.clone_from(&o.frames);
        self.log.clone_from(&o.log);
        self.ws = o.ws;
        self.depth = o.depth;
    }
}

/// All live threads. Empty: dead (never happens to a `Matcher`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) threads: Vec<Thread>,
}

impl Clone for State {
    fn clone(&self) -> State {
        State {
            threads: self.threads.clone(),
        }
    }

    fn clone_from(&mut self, o: &State) {
        self.threads.clone_from(&o.threads);
    }
}

enum Step {
    Dead,
    Ok,
    /// Accepted and some frame closed (so threads may have merged).
    Popped,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn fnv(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

/// Keys of literal sets and objects, as bytes.
trait Bytes {
    fn bytes(&self) -> &[u8];
}

impl Bytes for Box<[u8]> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Bytes for Box<str> {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// `keys[lo..hi]` share their first `pos` bytes; the ones whose next byte is `b`.
fn narrow<K: Bytes>(keys: &[K], lo: u32, hi: u32, pos: u32, b: u8) -> (u32, u32) {
    let r = &keys[lo as usize..hi as usize];
    let p = pos as usize;
    let below = |k: &K, strict: bool| {
        let k = k.bytes();
        k.len() <= p || if strict { k[p] < b } else { k[p] <= b }
    };
    let a = r.partition_point(|k| below(k, true));
    let z = r.partition_point(|k| below(k, false));
    (lo + a as u32, lo + z as u32)
}

impl Thread {
    fn push(&mut self, f: Frame) {
        if matches!(f, Frame::Arr { .. } | Frame::Obj { .. }) {
            self.depth += 1;
        }
        self.frames.push(f);
    }

    fn pop(&mut self) {
        match self.frames.pop() {
            Some(Frame::Obj { log_start, .. }) => {
                self.log.truncate(log_start as usize);
                self.depth -= 1;
            }
            Some(Frame::Arr { .. }) => self.depth -= 1,
            _ => {}
        }
    }

    fn set_top(&mut self, f: Frame) {
        if let Some(t) = self.frames.last_mut() {
            *t = f;
        }
    }

    /// Reads whitespace byte `b` between tokens: a single space, or (when `newline_ok`) one
    /// newline and at most `INDENT_PER_LEVEL` spaces per open container. No tabs or CRs, no
    /// blank lines, no spaces before a newline.
    fn take_ws(&mut self, b: u8, newline_ok: bool) -> Step {
        let indent = INDENT_PER_LEVEL * u16::from(self.depth);
        self.ws = match (self.ws, b) {
            (Ws::Empty, b' ') => Ws::Space,
            (Ws::Empty, b'\n') if newline_ok => Ws::Newline(0),
            (Ws::Newline(n), b' ') if n < indent => Ws::Newline(n + 1),
            _ => return Step::Dead,
        };
        Step::Ok
    }

    pub(crate) fn is_complete(&self, c: &Compiled) -> bool {
        match self.frames.as_slice() {
            [] => true,
            [Frame::Num(n)] => n.complete(),
            [
                Frame::Lit {
                    set,
                    lo,
                    pos,
                    budget,
                    ..
                },
            ] => {
                let ls = &c.lits[*set as usize];
                ls.texts[*lo as usize].len() == *pos as usize && ls.nest[*lo as usize] <= *budget
            }
            _ => false,
        }
    }
}

/// Whether some literal in `lo..hi` is nested at most `budget` deep.
fn lit_viable(c: &Compiled, set: u32, lo: u32, hi: u32, budget: u8) -> bool {
    let ls = &c.lits[set as usize];
    lo < hi
        && (ls.max_nest <= budget
            || ls.nest[lo as usize..hi as usize]
                .iter()
                .any(|&n| n <= budget))
}

fn lit_start(c: &Compiled, set: u32, b: u8, depth: u8) -> Option<Frame> {
    let budget = (MAX_NESTING as u8).saturating_sub(depth);
    let (lo, hi) = narrow(
        &c.lits[set as usize].texts,
        0,
        c.lits[set as usize].texts.len() as u32,
        0,
        b,
    );
    lit_viable(c, set, lo, hi, budget).then_some(Frame::Lit {
        set,
        lo,
        hi,
        pos: 1,
        budget,
    })
}

/// The frame a value of `leaf` (a non-union node) is in after its first byte `b`, at
/// `depth` open containers, if `b` can start one that can be finished.
fn leaf_frame(c: &Compiled, leaf: NodeId, b: u8, depth: u8, log_len: usize) -> Option<Frame> {
    let t = match &c.nodes[leaf as usize] {
        Node::Typed(t) => t,
        Node::Lit { set, .. } => return lit_start(c, *set, b, depth),
        Node::Union(_) => return None,
    };
    let room = |md: u8| u32::from(depth) + u32::from(md) <= MAX_NESTING;
    match b {
        b'{' => {
            let o = t.object.filter(|&o| room(c.objects[o as usize].md))?;
            Some(Frame::Obj {
                obj: o,
                st: ObjSt::Open,
                used: 0,
                log_start: log_len as u32,
                req: 0,
            })
        }
        b'[' => {
            let a = t.array.filter(|a| room(a.md))?;
            Some(Frame::Arr {
                items: a.items,
                min: a.min,
                max: a.max,
                count: 0,
                st: ArrSt::Open,
            })
        }
        b'"' => {
            let (min, max) = t.string?;
            Some(Frame::Str {
                lex: StrLex::new(),
                len: 0,
                min,
                max,
            })
        }
        b'-' | b'0'..=b'9' => Some(Frame::Num(NumLex::start(b, t.number? == NumKind::Integer)?)),
        b't' | b'f' | b'n' => lit_start(c, t.kw_set()?, b, depth),
        _ => None,
    }
}

/// Starts a value of `node` with byte `b` on `th`; extra `anyOf` branches go to `forks`.
fn start_value(
    c: &Compiled,
    node: NodeId,
    b: u8,
    th: &mut Thread,
    forks: &mut Vec<Thread>,
) -> Step {
    let log_len = th.log.len();
    let mut first = None;
    for &leaf in c.live(node) {
        let Some(f) = leaf_frame(c, leaf, b, th.depth, log_len) else {
            continue;
        };
        if first.is_none() {
            first = Some(f);
        } else {
            let mut t = th.clone();
            t.push(f);
            forks.push(t);
        }
    }
    match first {
        Some(f) => {
            th.push(f);
            Step::Ok
        }
        None => Step::Dead,
    }
}

impl ObjSpec {
    /// Whether listed key `i` may come next, at `depth`, after `req` required keys.
    pub(crate) fn usable(&self, i: usize, depth: u8, req: u32) -> bool {
        u32::from(depth) + u32::from(self.props[i].md) <= MAX_NESTING
            && (!self.ordered || self.order.get(req as usize) == Some(&(i as u32)))
    }

    pub(crate) fn additional_ok(&self, c: &Compiled, depth: u8) -> bool {
        self.additional.is_some_and(|n| c.fits(depth, n))
    }
}

/// Whether listed property `i` was used in the object whose log starts at `log_start`.
pub(crate) fn is_used(log: &[u64], used: u64, log_start: u32, i: usize) -> bool {
    if i < 64 {
        used & (1 << i) != 0
    } else {
        log[log_start as usize..].contains(&(LISTED_TAG | i as u64))
    }
}

/// Whether another key can be added: an unused usable listed one, or any other.
fn can_add_key(
    c: &Compiled,
    spec: &ObjSpec,
    th: &Thread,
    (used, log_start, req): (u64, u32, u32),
) -> bool {
    spec.additional_ok(c, th.depth)
        || (0..spec.props.len())
            .any(|i| spec.usable(i, th.depth, req) && !is_used(&th.log, used, log_start, i))
}

/// Advances one thread by one byte.
fn step_thread(c: &Compiled, th: &mut Thread, b: u8, forks: &mut Vec<Thread>) -> Step {
    let ws = is_ws(b);
    // Whitespace before `b`: it may come before a closing bracket, never before a `,`.
    let after_ws = th.ws != Ws::Empty;
    if !ws {
        th.ws = Ws::Empty;
    }
    let mut popped = false;
    loop {
        let Some(&top) = th.frames.last() else {
            return Step::Dead;
        };
        let out = match top {
            Frame::Root(node) => {
                th.frames.pop();
                start_value(c, node, b, th, forks)
            }
            Frame::Str {
                mut lex,
                mut len,
                min,
                max,
            } => match lex.step(b) {
                Lex::Reject => Step::Dead,
                Lex::Quote if len >= min => {
                    th.pop();
                    Step::Popped
                }
                Lex::Quote => Step::Dead,
                r => {
                    if matches!(r, Lex::Raw { start: true } | Lex::EscStart) {
                        len += 1;
                        if len > max {
                            return Step::Dead;
                        }
                    }
                    th.set_top(Frame::Str { lex, len, min, max });
                    Step::Ok
                }
            },
            Frame::Num(mut n) => match n.step(b) {
                NumOut::Next => {
                    th.set_top(Frame::Num(n));
                    Step::Ok
                }
                NumOut::End => {
                    th.pop();
                    popped = true;
                    continue;
                }
                NumOut::Reject => Step::Dead,
            },
            Frame::Lit {
                set,
                lo,
                hi,
                pos,
                budget,
            } => {
                let ls = &c.lits[set as usize];
                let (a, z) = narrow(&ls.texts, lo, hi, pos, b);
                if lit_viable(c, set, a, z, budget) {
                    th.set_top(Frame::Lit {
                        set,
                        lo: a,
                        hi: z,
                        pos: pos + 1,
                        budget,
                    });
                    Step::Ok
                } else if ls.texts[lo as usize].len() == pos as usize
                    && ls.nest[lo as usize] <= budget
                {
                    // The literal is complete and `b` belongs to the parent.
                    th.pop();
                    popped = true;
                    continue;
                } else {
                    Step::Dead
                }
            }
            Frame::Arr { st, min, count, .. } if ws => {
                // After an item only `]` may follow whitespace, so only where `]` is allowed
                // (or it would be a dead end).
                if st == ArrSt::Value && count < min {
                    Step::Dead
                } else {
                    th.take_ws(b, true)
                }
            }
            Frame::Arr {
                items,
                min,
                max,
                count,
                st,
            } => {
                let item_ok = count < max && c.fits(th.depth, items);
                let arr = |count, st| Frame::Arr {
                    items,
                    min,
                    max,
                    count,
                    st,
                };
                match (st, b) {
                    (ArrSt::Open, b']') if min == 0 => {
                        th.pop();
                        Step::Popped
                    }
                    (ArrSt::Value, b']') if count >= min => {
                        th.pop();
                        Step::Popped
                    }
                    (ArrSt::Value, b',') if item_ok && !after_ws => {
                        th.set_top(arr(count, ArrSt::Comma));
                        Step::Ok
                    }
                    (ArrSt::Open | ArrSt::Comma, _) if item_ok => {
                        th.set_top(arr(count + 1, ArrSt::Value));
                        start_value(c, items, b, th, forks)
                    }
                    _ => Step::Dead,
                }
            }
            Frame::Obj { obj, st, req, .. } if ws && !matches!(st, ObjSt::Key(_)) => match st {
                // Nothing between a key and `:`; at most one space after `:`.
                ObjSt::AfterKey(_) => Step::Dead,
                ObjSt::Colon(_) => th.take_ws(b, false),
                // After a value only `}` may follow whitespace (see arrays above).
                ObjSt::Value if req != c.objects[obj as usize].n_required => Step::Dead,
                _ => th.take_ws(b, true),
            },
            Frame::Obj {
                obj,
                st,
                used,
                log_start,
                req,
            } => {
                let spec = &c.objects[obj as usize];
                let frame = |st, used, req| Frame::Obj {
                    obj,
                    st,
                    used,
                    log_start,
                    req,
                };
                let new_key = || {
                    ObjSt::Key(KeySt {
                        lex: StrLex::new(),
                        lo: 0,
                        hi: spec.keys.len() as u32,
                        pos: 0,
                        hash: FNV_OFFSET,
                    })
                };
                match (st, b) {
                    (ObjSt::Open | ObjSt::Value, b'}') if req == spec.n_required => {
                        th.pop();
                        Step::Popped
                    }
                    (ObjSt::Open, b'"') if can_add_key(c, spec, th, (used, log_start, req)) => {
                        th.set_top(frame(new_key(), used, req));
                        Step::Ok
                    }
                    (ObjSt::Comma, b'"') => {
                        th.set_top(frame(new_key(), used, req));
                        Step::Ok
                    }
                    (ObjSt::Value, b',')
                        if !after_ws && can_add_key(c, spec, th, (used, log_start, req)) =>
                    {
                        th.set_top(frame(ObjSt::Comma, used, req));
                        Step::Ok
                    }
                    (ObjSt::AfterKey(p), b':') => {
                        th.set_top(frame(ObjSt::Colon(p), used, req));
                        Step::Ok
                    }
                    (ObjSt::Colon(p), _) => {
                        th.set_top(frame(ObjSt::Value, used, req));
                        let node = if p == ADDITIONAL {
                            spec.additional.unwrap_or(super::schema::ANY)
                        } else {
                            spec.props[p as usize].node
                        };
                        start_value(c, node, b, th, forks)
                    }
                    (ObjSt::Key(k), _) => key_step(c, spec, th, k, b, (obj, used, log_start, req)),
                    _ => Step::Dead,
                }
            }
        };
        return match out {
            Step::Ok if popped => Step::Popped,
            o => o,
        };
    }
}

/// One byte of an object key.
fn key_step(
    c: &Compiled,
    spec: &ObjSpec,
    th: &mut Thread,
    mut k: KeySt,
    b: u8,
    (obj, mut used, log_start, mut req): (u32, u64, u32, u32),
) -> Step {
    let depth = th.depth;
    let addl = spec.additional_ok(c, depth);
    // Some unused, usable listed key in range that also passes `more`.
    let viable = |k: &KeySt, th: &Thread, more: &dyn Fn(&str) -> bool| {
        (k.lo..k.hi).any(|i| {
            let i = i as usize;
            spec.usable(i, depth, req)
                && !is_used(&th.log, used, log_start, i)
                && more(&spec.keys[i])
        })
    };
    let feed = |k: &mut KeySt, bytes: &[u8]| {
        for &x in bytes {
            k.hash = fnv(k.hash, x);
            (k.lo, k.hi) = narrow(&spec.keys, k.lo, k.hi, k.pos, x);
            k.pos += 1;
        }
    };
    let ok = match k.lex.step(b) {
        Lex::Reject => false,
        Lex::Quote => {
            let exact = k.lo < k.hi && spec.keys[k.lo as usize].len() == k.pos as usize;
            let prop = if exact {
                let i = k.lo as usize;
                if !spec.usable(i, depth, req) || is_used(&th.log, used, log_start, i) {
                    return Step::Dead;
                }
                if i < 64 {
                    used |= 1 << i;
                } else {
                    th.log.push(LISTED_TAG | i as u64);
                }
                if spec.props[i].required {
                    req += 1;
                }
                i as u32
            } else {
                let h = k.hash & !LISTED_TAG;
                if !addl || th.log[log_start as usize..].contains(&h) {
                    return Step::Dead;
                }
                th.log.push(h);
                ADDITIONAL
            };
            th.set_top(Frame::Obj {
                obj,
                st: ObjSt::AfterKey(prop),
                used,
                log_start,
                req,
            });
            return Step::Ok;
        }
        Lex::Raw { .. } => {
            feed(&mut k, &[b]);
            addl || viable(&k, th, &|_| true)
        }
        Lex::Char(ch) => {
            feed(&mut k, ch.encode_utf8(&mut [0; 4]).as_bytes());
            addl || viable(&k, th, &|_| true)
        }
        Lex::EscStart | Lex::EscMore => {
            let pos = k.pos as usize;
            addl || viable(&k, th, &|key: &str| {
                key.get(pos..)
                    .and_then(|s| s.chars().next())
                    .is_some_and(|ch| k.lex.escape_could_be(ch))
            })
        }
    };
    if !ok {
        return Step::Dead;
    }
    th.set_top(Frame::Obj {
        obj,
        st: ObjSt::Key(k),
        used,
        log_start,
        req,
    });
    Step::Ok
}

impl State {
    pub(crate) fn start(root: NodeId) -> State {
        State {
            threads: vec![Thread {
                frames: vec![Frame::Root(root)],
                log: Vec::new(),
                ws: Ws::Empty,
                depth: 0,
            }],
        }
    }

    /// Advances every thread by `b`; false (and garbage state) if none survives.
    pub(crate) fn step(&mut self, c: &Compiled, b: u8, forks: &mut Vec<Thread>) -> bool {
        forks.clear();
        let mut merge = false;
        let mut i = 0;
        while i < self.threads.len() {
            match step_thread(c, &mut self.threads[i], b, forks) {
                Step::Dead => {
                    self.threads.swap_remove(i);
                }
                Step::Ok => i += 1,
                Step::Popped => {
                    merge = true;
                    i += 1;
                }
            }
        }
        if !forks.is_empty() {
            merge = true;
            self.threads.append(forks);
        }
        if merge && self.threads.len() > 1 {
            let mut i = 1;
            while i < self.threads.len() {
                if self.threads[..i].contains(&self.threads[i]) {
                    self.threads.remove(i);
                } else {
                    i += 1;
                }
            }
            self.threads.truncate(MAX_THREADS);
        }
        !self.threads.is_empty()
    }

    pub(crate) fn is_complete(&self, c: &Compiled) -> bool {
        self.threads.iter().any(|t| t.is_complete(c))
    }

    pub(crate) fn can_continue(&self, c: &Compiled) -> bool {
        let mut forks = Vec::new();
        self.threads.iter().any(|t| match t.frames.as_slice() {
            [] => false,
            // Only a top-level number or literal may be complete and still extendable.
            [Frame::Num(_) | Frame::Lit { .. }] => (0..=255u8).any(|b| {
                let mut s = State {
                    threads: vec![t.clone()],
                };
                s.step(c, b, &mut forks)
            }),
            _ => true,
        })
    }

    pub(crate) fn n_threads(&self) -> usize {
        self.threads.len()
    }
}
