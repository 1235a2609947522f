//! A restricted unpickler: Python's pickle machine, cut down to the opcodes `torch.save`
//! emits (protocols 2 to 5), building an inert value tree.
//!
//! Pickle is a small stack language whose `GLOBAL` + `REDUCE` opcodes import and call any
//! Python function, which is how a malicious checkpoint runs code. Here `GLOBAL` resolves
//! only the allowlisted names of [`super::torch`], and `REDUCE`/`BINPERSID` hand those to
//! its structural interpreters: nothing is ever executed, and any other global
//! (`os.system`, `builtins.eval`, ...) is an error naming it. Opcodes that construct
//! arbitrary objects (`INST`, `OBJ`, `NEWOBJ`, `EXT*`) are refused by name.
//!
//! Every read is bounds-checked, lengths are checked against the bytes that remain before
//! anything is allocated, nesting is capped at [`MAX_DEPTH`] (so dropping a value never
//! recurses deeply), and copying values out of the memo or with `DUP` draws on a budget of
//! [`MAX_COPIED`] units (a value node, or 32 bytes of string payload), so a few kilobytes
//! cannot expand into gigabytes, whether through many nodes or through long strings.

use rustc_hash::FxHashMap;

use super::torch::{self, Global, StorageRef, TensorRef};
use crate::error::{ModelError, Result};

/// Deepest nesting of containers (torch.save needs about 5).
pub const MAX_DEPTH: u32 = 64;
/// What memo reads and `DUP` may copy, in total, in units of [`Item::size`]: one per value
/// node plus one per [`PAYLOAD_UNIT`] bytes of string, bytes or storage-key payload (about
/// 128 MiB of copies at most).
pub const MAX_COPIED: u64 = 1 << 22;
/// Payload bytes that weigh as much as one value node in [`Item::size`].
const PAYLOAD_UNIT: u64 = 32;
/// Values on the stack at once.
const MAX_STACK: usize = 1 << 20;
/// Open `MARK`s at once.
const MAX_MARKS: usize = 1 << 12;
/// Longest `GLOBAL` module or name line.
const MAX_GLOBAL_LINE: usize = 256;

/// An unpickled value. Only data: globals are allowlisted markers, storages and tensors
/// are records to be resolved against the archive.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Key/value pairs in insertion order (dict and OrderedDict alike).
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    /// A short name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// A value with its nesting depth and size, tracked so that limits are O(1) checks.
#[derive(Debug, Clone)]
struct Item {
    v: Value,
    depth: u32,
    /// Nodes, plus the payload bytes they own in [`PAYLOAD_UNIT`]s: roughly the memory a
    /// copy costs. Counting nodes alone let a long string copied through the memo expand
    /// a 14 KB checkpoint into gigabytes (see the `pickle_string_bomb` test).
    size: u64,
}

impl Item {
    fn leaf(v: Value) -> Item {
        let payload = match &v {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Storage(s) => s.key.len(),
            Value::Tensor(t) => t.storage.key.len() + 16 * t.shape.len(),
            _ => 0,
        };
        Item {
            v,
            depth: 1,
            size: 1 + (payload as u64).div_ceil(PAYLOAD_UNIT),
        }
    }
}

/// Unpickles `data` (the whole `data.pkl`) into a value tree.
pub fn load(data: &[u8]) -> Result<Value> {
    let mut m = Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: FxHashMap::default(),
        copied: 0,
    };
    m.run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for errors.
    op_at: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: FxHashMap<u32, Item>,
    copied: u64,
}

/// Opcodes that build arbitrary objects or need machinery we do not have; refused by name.
fn refused_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        b'P' => "PERSID",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'g' => "GET",
        b'p' => "PUT",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        _ => return None,
    })
}

impl Machine<'_> {
    fn err(&self, what: impl Into<String>) -> ModelError {
        ModelError::Pickle {
            offset: self.op_at,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(self.err(format!("needs {n} bytes, {left} left")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.arr::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    /// A length prefix, checked against the bytes that remain.
    fn len(&mut self, n: u64) -> Result<usize> {
        let left = self.data.len() - self.pos;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| self.err(format!("length {n} runs past the end ({left} bytes left)")))
    }

    fn utf8(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?.to_vec();
        String::from_utf8(b).map_err(|_| self.err("string is not valid UTF-8"))
    }

    fn line(&mut self) -> Result<String> {
        let data = self.data;
        let rest = &data[self.pos..];
        let end = rest
            .iter()
            .take(MAX_GLOBAL_LINE + 1)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("GLOBAL name is not terminated by a newline"))?;
        let s = self.utf8(end)?;
        self.pos += 1; // the newline
        Ok(s)
    }

    fn push(&mut self, it: Item) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err("stack grows beyond its limit"));
        }
        self.stack.push(it);
        Ok(())
    }

    fn push_leaf(&mut self, v: Value) -> Result<()> {
        self.push(Item::leaf(v))
    }

    fn pop(&mut self) -> Result<Item> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&mut self) -> Result<&mut Item> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        let at = self.op_at;
        self.stack.last_mut().ok_or(ModelError::Pickle {
            offset: at,
            what: "stack underflow".into(),
        })
    }

    /// Pops everything above the last MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK to pop to"))?;
        if m > self.stack.len() {
            return Err(self.err("MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    /// Charges `size` copied nodes to the budget.
    fn charge(&mut self, size: u64) -> Result<()> {
        self.copied = self.copied.saturating_add(size);
        if self.copied > MAX_COPIED {
            return Err(self.err(format!(
                "memo and DUP copies exceed {MAX_COPIED} values (a pickle that expands itself)"
            )));
        }
        Ok(())
    }

    /// A container built from `items`, with its depth checked.
    fn container(&self, items: &[Item], make: impl FnOnce() -> Value) -> Result<Item> {
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(self.err(format!("values nested deeper than {MAX_DEPTH}")));
        }
        let size = items.iter().fold(1u64, |acc, i| acc.saturating_add(i.size));
        Ok(Item {
            v: make(),
            depth,
            size,
        })
    }

    fn tuple(&mut self, items: Vec<Item>) -> Result<()> {
        let it = self.container(&items, || Value::Tuple(Vec::new()))?;
        let v = Value::Tuple(items.into_iter().map(|i| i.v).collect());
        self.push(Item { v, ..it })
    }

    /// Adds `items` (values, or key/value pairs flattened) to the list or dict on top.
    fn extend_top(&mut self, items: Vec<Item>, pairs: bool) -> Result<()> {
        if pairs && !items.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of values"));
        }
        let grown = self.container(&items, || Value::None)?;
        let at = self.op_at;
        let top = self.top()?;
        let depth = top.depth.max(grown.depth);
        let bad = |what: String| ModelError::Pickle { offset: at, what };
        match (&mut top.v, pairs) {
            (Value::Dict(d), true) => {
                let mut it = items.into_iter().map(|i| i.v);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            (Value::List(l), false) => l.extend(items.into_iter().map(|i| i.v)),
            (other, _) => {
                let want = if pairs { "dict" } else { "list" };
                return Err(bad(format!(
                    "adding items to a {} (needs a {want})",
                    other.kind()
                )));
            }
        }
        top.depth = depth;
        top.size = top.size.saturating_add(grown.size - 1);
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let it = self.top()?.clone();
        self.charge(it.size)?;
        self.memo.insert(key, it);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let it = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {key} does not exist")))?;
        self.charge(it.size)?;
        self.push(it)
    }

    fn int(&mut self, v: i64) -> Result<()> {
        self.push_leaf(Value::Int(v))
    }

    /// LONG1/LONG4: little-endian two's complement of `n` bytes, up to 8.
    fn long(&mut self, n: usize) -> Result<()> {
        if n > 8 {
            return Err(self.err(format!("integer of {n} bytes does not fit in 64 bits")));
        }
        let b = self.take(n)?;
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(b);
        if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
            a[n..].fill(0xff);
        }
        self.int(i64::from_le_bytes(a))
    }

    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        let g = torch::find_class(module, name)
            .ok_or_else(|| ModelError::PickleGlobal(format!("{module}.{name}")))?;
        self.push_leaf(Value::Global(g))
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            self.op_at = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                return Err(self.err("the pickle ends without STOP"));
            };
            self.pos += 1;
            match op {
                0x80 => {
                    let v = self.u8()?;
                    if !(2..=5).contains(&v) {
                        return Err(self.err(format!("pickle protocol {v} (2 to 5 are read)")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint for buffered readers; the data follows inline.
                    let n = u64::from_le_bytes(self.arr()?);
                    self.len(n)?;
                }
                b'.' => {
                    let it = self.pop()?;
                    return Ok(it.v);
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(self.err("too many open MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                b'}' => self.push_leaf(Value::Dict(Vec::new()))?,
                b']' => self.push_leaf(Value::List(Vec::new()))?,
                b')' => self.push_leaf(Value::Tuple(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_leaf(Value::Dict(Vec::new()))?;
                    self.extend_top(items, true)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_leaf(Value::List(Vec::new()))?;
                    self.extend_top(items, false)?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.tuple(items)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.tuple(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v], true)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, true)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, false)?;
                }
                b'X' => {
                    let n = self.u32()?;
                    let n = self.len(n.into())?;
                    let s = self.utf8(n)?;
                    self.push_leaf(Value::Str(s))?;
                }
                0x8c => {
                    let n = self.u8()?;
                    let s = self.utf8(n.into())?;
                    self.push_leaf(Value::Str(s))?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.arr()?);
                    let n = self.len(n)?;
                    let s = self.utf8(n)?;
                    self.push_leaf(Value::Str(s))?;
                }
                // BINSTRING / SHORT_BINSTRING: Python 2 str, which torch.load decodes as UTF-8.
                b'T' => {
                    let n = i32::from_le_bytes(self.arr()?);
                    let n = u64::try_from(n).map_err(|_| self.err("negative string length"))?;
                    let n = self.len(n)?;
                    let s = self.utf8(n)?;
                    self.push_leaf(Value::Str(s))?;
                }
                b'U' => {
                    let n = self.u8()?;
                    let s = self.utf8(n.into())?;
                    self.push_leaf(Value::Str(s))?;
                }
                b'B' => {
                    let n = self.u32()?;
                    let n = self.len(n.into())?;
                    let b = self.take(n)?.to_vec();
                    self.push_leaf(Value::Bytes(b))?;
                }
                b'C' => {
                    let n = self.u8()?;
                    let b = self.take(n.into())?.to_vec();
                    self.push_leaf(Value::Bytes(b))?;
                }
                0x8e => {
                    let n = u64::from_le_bytes(self.arr()?);
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.push_leaf(Value::Bytes(b))?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.int(v.into())?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.int(v.into())?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arr()?);
                    self.int(v.into())?;
                }
                0x8a => {
                    let n = self.u8()?;
                    self.long(n.into())?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.arr()?);
                    let n = usize::try_from(n).map_err(|_| self.err("negative LONG4 length"))?;
                    self.long(n)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arr()?);
                    self.push_leaf(Value::Float(v))?;
                }
                b'N' => self.push_leaf(Value::None)?,
                0x88 => self.push_leaf(Value::Bool(true))?,
                0x89 => self.push_leaf(Value::Bool(false))?,
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| self.err("memo is full"))?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?.v;
                    let module = self.pop()?.v;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        (m, n) => {
                            return Err(self.err(format!(
                                "STACK_GLOBAL of a {} and a {} (needs two str)",
                                m.kind(),
                                n.kind()
                            )));
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?.v;
                    let storage = torch::persistent_load(pid).map_err(|e| self.err(e))?;
                    self.push_leaf(Value::Storage(storage))?;
                }
                b'R' => {
                    let args = self.pop()?.v;
                    let f = self.pop()?.v;
                    let Value::Global(g) = f else {
                        return Err(self.err(format!("REDUCE calls a {}", f.kind())));
                    };
                    let Value::Tuple(args) = args else {
                        return Err(self.err(format!("REDUCE arguments are a {}", args.kind())));
                    };
                    let v = torch::reduce(g, args).map_err(|e| self.err(e))?;
                    self.push_leaf(v)?;
                }
                b'b' => {
                    // BUILD sets an object's state (`__setstate__`). The only objects here are
                    // dicts (a state_dict's `_metadata`) and tensors; their state is dropped.
                    let _state = self.pop()?;
                    let top = self.top()?;
                    if !matches!(top.v, Value::Dict(_) | Value::Tensor(_)) {
                        let k = top.v.kind();
                        return Err(self.err(format!("BUILD on a {k}")));
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let it = self.top()?.clone();
                    self.charge(it.size)?;
                    self.push(it)?;
                }
                other => {
                    return Err(self.err(match refused_name(other) {
                        Some(name) => format!("opcode {name} is not allowed in a tensor file"),
                        None => format!("unknown opcode 0x{other:02x}"),
                    }));
                }
            }
        }
    }
}
