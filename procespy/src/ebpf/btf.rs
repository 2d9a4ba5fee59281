//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just
//! enough to find the members, arrays and tracepoint prototypes the eBPF
//! programs depend on.
//!
//! One pass records where each type starts; names are compared only when a
//! lookup asks for them. That takes a few milliseconds and about a MiB,
//! where a general parser that builds maps of every type and name took
//! 110 ms and 55 MiB on this kernel (and ten times that in a debug build
//! under emulation). aya parses the BTF once more for attaching tp_btf
//! programs; that parse is aya's own and cheap.
//!
//! Every read is bounds-checked: a truncated or odd file gives an error,
//! never a panic.

use std::fmt;

/// The BTF kinds this reader tells apart (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    DataSec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::DataSec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }

    /// Bytes of kind-specific data after the 12-byte `struct btf_type`.
    fn extra_len(self, vlen: usize) -> usize {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::DataSec | Kind::Enum64 => 12 * vlen,
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            Kind::Ptr
            | Kind::Fwd
            | Kind::Typedef
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::Func
            | Kind::Float
            | Kind::TypeTag => 0,
        }
    }
}

/// Why the BTF could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BtfError(&'static str);

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed BTF: {}", self.0)
    }
}

impl std::error::Error for BtfError {}

const MAGIC: u16 = 0xeb9f;
const TYPE_HEADER: usize = 12;

/// A type id (1-based; 0 is `void`).
pub(crate) type TypeId = u32;

/// One member of a struct or union, with its offset from the start of the
/// outermost type it was looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// The member's type.
    pub(crate) ty: TypeId,
    /// Its offset in bytes.
    pub(crate) offset: u32,
}

/// The kernel's BTF, indexed by type id.
pub(crate) struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Where each type starts in `types`, by id - 1.
    starts: Vec<u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

impl<'a> Btf<'a> {
    /// Indexes `data`, the contents of a BTF file (little-endian).
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let header = |at| u32_at(data, at).ok_or(BtfError("the header is cut short"));
        let magic = data
            .get(..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError("the file is empty"))?;
        if magic != MAGIC {
            return Err(BtfError("not little-endian BTF (bad magic)"));
        }
        let header_len = header(4)? as usize;
        let section = |off: u32, len: u32| {
            let start = header_len.checked_add(off as usize)?;
            data.get(start..start.checked_add(len as usize)?)
        };
        let types =
            section(header(8)?, header(12)?).ok_or(BtfError("the type section is cut short"))?;
        let strings =
            section(header(16)?, header(20)?).ok_or(BtfError("the string section is cut short"))?;
        let mut starts = Vec::with_capacity(types.len() / 24);
        let mut at = 0usize;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or(BtfError("a type is cut short"))?;
            let kind = Kind::from_raw((info >> 24) & 0x1f).ok_or(BtfError("unknown type kind"))?;
            let vlen = (info & 0xffff) as usize;
            starts.push(u32::try_from(at).map_err(|_| BtfError("the type section is too large"))?);
            at = at
                .checked_add(TYPE_HEADER + kind.extra_len(vlen))
                .ok_or(BtfError("a type is too long"))?;
        }
        if at != types.len() {
            return Err(BtfError("the last type is cut short"));
        }
        Ok(Btf {
            types,
            strings,
            starts,
        })
    }

    fn start(&self, id: TypeId) -> Option<usize> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.starts.get(index).map(|&at| at as usize)
    }

    fn word(&self, id: TypeId, index: usize) -> Option<u32> {
        u32_at(
            self.types,
            self.start(id)?.checked_add(index.checked_mul(4)?)?,
        )
    }

    fn info(&self, id: TypeId) -> Option<(Kind, usize, bool)> {
        let info = self.word(id, 1)?;
        let kind = Kind::from_raw((info >> 24) & 0x1f)?;
        Some((kind, (info & 0xffff) as usize, info >> 31 == 1))
    }

    fn string(&self, offset: u32) -> Option<&'a [u8]> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..end])
    }

    /// The kind of type `id`.
    pub(crate) fn kind(&self, id: TypeId) -> Option<Kind> {
        self.info(id).map(|(kind, ..)| kind)
    }

    /// The name of type `id` (empty for anonymous types).
    pub(crate) fn name(&self, id: TypeId) -> Option<&'a [u8]> {
        self.string(self.word(id, 0)?)
    }

    /// The first type of `kind` named `name`.
    pub(crate) fn find(&self, kind: Kind, name: &str) -> Option<TypeId> {
        (1..=self.starts.len() as u32)
            .find(|&id| self.kind(id) == Some(kind) && self.name(id) == Some(name.as_bytes()))
    }

    /// Follows typedefs and qualifiers to the type they stand for.
    pub(crate) fn resolve(&self, mut id: TypeId) -> Option<TypeId> {
        for _ in 0..32 {
            match self.kind(id)? {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = self.word(id, 2)?;
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// The size in bytes of a struct, union, int, enum or float (after
    /// [`Btf::resolve`]), or of an array.
    pub(crate) fn size(&self, id: TypeId) -> Option<u32> {
        let id = self.resolve(id)?;
        match self.kind(id)? {
            Kind::Struct | Kind::Union | Kind::Int | Kind::Enum | Kind::Enum64 | Kind::Float => {
                self.word(id, 2)
            }
            Kind::Ptr => Some(8),
            Kind::Array => {
                let (element, count) = self.array(id)?;
                self.size(element)?.checked_mul(count)
            }
            _ => None,
        }
    }

    /// An array's element type and length.
    pub(crate) fn array(&self, id: TypeId) -> Option<(TypeId, u32)> {
        let id = self.resolve(id)?;
        if self.kind(id)? != Kind::Array {
            return None;
        }
        Some((self.word(id, 3)?, self.word(id, 5)?))
    }

    /// The member `name` of struct or union `id`, looked for also inside
    /// anonymous struct and union members (as C lets one name them).
    /// Bit fields are not returned.
    pub(crate) fn member(&self, id: TypeId, name: &str) -> Option<Member> {
        self.member_at(id, name.as_bytes(), 0, 0)
    }

    fn member_at(&self, id: TypeId, name: &[u8], base: u32, depth: u32) -> Option<Member> {
        let id = self.resolve(id)?;
        let (kind, vlen, bitfields) = self.info(id)?;
        if !matches!(kind, Kind::Struct | Kind::Union) || depth > 8 {
            return None;
        }
        let mut anonymous = Vec::new();
        for index in 0..vlen {
            let word = 3 + index * 3;
            let member_name = self.string(self.word(id, word)?)?;
            let ty = self.word(id, word + 1)?;
            let raw = self.word(id, word + 2)?;
            let (bits, bit_size) = if bitfields {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            if bit_size != 0 || bits % 8 != 0 {
                continue; // a bit field: not addressable
            }
            let offset = base.checked_add(bits / 8)?;
            if member_name == name {
                return Some(Member { ty, offset });
            }
            if member_name.is_empty() {
                anonymous.push((ty, offset));
            }
        }
        anonymous
            .into_iter()
            .find_map(|(ty, offset)| self.member_at(ty, name, offset, depth + 1))
    }

    /// The number of arguments of tracepoint `event` as BPF programs see it
    /// (the `btf_trace_EVENT` prototype, without its leading context
    /// pointer), or `None` when the kernel has no such tracepoint.
    pub(crate) fn tracepoint_args(&self, event: &str) -> Option<usize> {
        let typedef = self.find(Kind::Typedef, &format!("btf_trace_{event}"))?;
        let pointer = self.word(typedef, 2)?;
        if self.kind(pointer)? != Kind::Ptr {
            return None;
        }
        let proto = self.word(pointer, 2)?;
        let (kind, vlen, _) = self.info(proto)?;
        (kind == Kind::FuncProto).then(|| vlen.saturating_sub(1))
    }
}

/// Builds BTF files for tests: the layouts of kernels this machine does not run.
#[cfg(test)]
pub(crate) mod build {
    use super::{MAGIC, TypeId};

    /// A BTF file under construction.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next: TypeId,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next: 1,
            }
        }

        fn string(&mut self, text: &str) -> u32 {
            if text.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(text.as_bytes());
            self.strings.push(0);
            at
        }

        fn push(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            size_or_type: u32,
            extra: &[u32],
        ) -> TypeId {
            let name = self.string(name);
            // `kind` may carry kind_flag as its bit 7 (bit 31 of `info`).
            for word in [name, (kind << 24) | vlen, size_or_type]
                .iter()
                .chain(extra)
            {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next += 1;
            self.next - 1
        }

        pub(crate) fn int(&mut self, name: &str, size: u32) -> TypeId {
            self.push(name, 1, 0, size, &[size * 8])
        }

        pub(crate) fn ptr(&mut self, to: TypeId) -> TypeId {
            self.push("", 2, 0, to, &[])
        }

        pub(crate) fn array(&mut self, element: TypeId, index: TypeId, count: u32) -> TypeId {
            self.push("", 3, 0, 0, &[element, index, count])
        }

        /// A struct whose members are (name, type, byte offset).
        pub(crate) fn structure(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, TypeId, u32)],
        ) -> TypeId {
            let mut extra = Vec::new();
            for &(member, ty, offset) in members {
                extra.extend([self.string(member), ty, offset * 8]);
            }
            self.push(name, 4, members.len() as u32, size, &extra)
        }

        /// A struct with one bit field `name` (4 bits at byte `offset`).
        pub(crate) fn with_bitfield(&mut self, name: &str, ty: TypeId, offset: u32) -> TypeId {
            let member = self.string(name);
            // kind_flag set: member offsets carry a bit-field size.
            self.push(
                "bits",
                4 | 0x80,
                1,
                8,
                &[member, ty, (4 << 24) | (offset * 8)],
            )
        }

        pub(crate) fn typedef(&mut self, name: &str, to: TypeId) -> TypeId {
            self.push(name, 8, 0, to, &[])
        }

        pub(crate) fn func_proto(&mut self, params: &[TypeId]) -> TypeId {
            let extra: Vec<u32> = params.iter().flat_map(|&ty| [0, ty]).collect();
            self.push("", 13, params.len() as u32, 0, &extra)
        }

        /// `btf_trace_EVENT`: a typedef of a pointer to a prototype with a
        /// context pointer and `args`.
        pub(crate) fn tracepoint(&mut self, event: &str, args: &[TypeId]) {
            let void_ptr = self.ptr(0);
            let params: Vec<TypeId> = std::iter::once(void_ptr)
                .chain(args.iter().copied())
                .collect();
            let proto = self.func_proto(&params);
            let pointer = self.ptr(proto);
            self.typedef(&format!("btf_trace_{event}"), pointer);
        }

        pub(crate) fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let type_len = self.types.len() as u32;
            for word in [24, 0, type_len, type_len, self.strings.len() as u32] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{build::Builder, *};

    #[test]
    fn members_are_found_inside_anonymous_structs_and_bit_fields_skipped() {
        let mut b = Builder::new();
        let long = b.int("long", 8);
        let inner = b.structure("", 16, &[("a", long, 0), ("wanted", long, 8)]);
        let bits = b.with_bitfield("flag", long, 0);
        let outer = b.structure(
            "outer",
            64,
            &[("first", long, 0), ("", inner, 16), ("b", bits, 40)],
        );
        let data = b.finish();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.find(Kind::Struct, "outer"), Some(outer));
        assert_eq!(
            btf.member(outer, "wanted"),
            Some(Member {
                ty: long,
                offset: 24
            })
        );
        assert_eq!(btf.member(outer, "first").map(|m| m.offset), Some(0));
        assert_eq!(btf.member(bits, "flag"), None);
        assert_eq!(btf.member(outer, "missing"), None);
        assert_eq!(btf.size(outer), Some(64));
    }

    #[test]
    fn typedefs_arrays_and_tracepoint_prototypes() {
        let mut b = Builder::new();
        let long = b.int("long", 8);
        let int = b.int("int", 4);
        let alias = b.typedef("alias_t", long);
        let array = b.array(alias, int, 4);
        let task = b.structure("task_struct", 8, &[]);
        let task_ptr = b.ptr(task);
        b.tracepoint("sched_process_exit", &[task_ptr, int]);
        b.tracepoint("sched_process_fork", &[task_ptr, task_ptr]);
        let data = b.finish();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.resolve(alias), Some(long));
        assert_eq!(btf.array(array), Some((alias, 4)));
        assert_eq!(btf.size(array), Some(32));
        assert_eq!(btf.tracepoint_args("sched_process_exit"), Some(2));
        assert_eq!(btf.tracepoint_args("sched_process_fork"), Some(2));
        assert_eq!(btf.tracepoint_args("rss_stat"), None);
    }

    #[test]
    fn cut_or_foreign_files_are_errors_not_panics() {
        let mut b = Builder::new();
        let long = b.int("long", 8);
        b.structure("s", 8, &[("x", long, 0)]);
        let data = b.finish();
        for len in 0..data.len() {
            let _ = Btf::parse(&data[..len]);
        }
        assert!(Btf::parse(&data[..30]).is_err());
        let mut big_endian = data.clone();
        big_endian.swap(0, 1);
        assert!(Btf::parse(&big_endian).is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    #[test]
    fn this_kernels_btf_is_read() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("skipped: this kernel has no /sys/kernel/btf/vmlinux");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let task = btf.find(Kind::Struct, "task_struct").unwrap();
        let pid = btf.member(task, "pid").unwrap();
        let tgid = btf.member(task, "tgid").unwrap();
        assert_eq!(tgid.offset, pid.offset + 4);
        assert!(btf.tracepoint_args("rss_stat").is_some());
    }
}
