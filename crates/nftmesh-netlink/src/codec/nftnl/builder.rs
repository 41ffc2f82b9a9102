//! The libnftnl expression builder: expression kinds, their attributes typed by kind and
//! value type, and a builder whose setters can only be handed such an attribute. Part of the
//! fenced `nftnl` module.
#![allow(unsafe_code)]

use super::{cname, cstring};
use crate::codec::bounds::{self, BuildError, Limit};
use nftnl_sys as nft;
use std::ffi::CString;

/// Expression kinds and their attributes, typed so that a setter can only be given an
/// attribute of the expression being built and of the type libnftnl copies for it: a `u32`
/// (or `u64`) attribute gets 4 (8) bytes, a data attribute at most [`bounds::VALUE_MAX`]
/// bytes (libnftnl copies it into a 64-byte field), a string attribute a checked C string
/// (libnftnl `strdup`s it). This table is what the soundness of [`ExprBuilder`] rests on, and
/// what a built expression's size in a rule message ([`Built::encoded_len`]) is counted from: each
/// type says how libnftnl writes it (a `u32` as one attribute, data nested in
/// `NFTA_DATA_VALUE`, the immediate verdict nested twice, `data { verdict { code } }`, with
/// its chain name beside the code).
pub(crate) mod attr {
    use nftnl_sys as nft;
    use std::marker::PhantomData;

    /// An expression kind: its libnftnl name.
    pub(crate) trait Kind {
        /// The name libnftnl looks its operations up by.
        const NAME: &'static std::ffi::CStr;
        /// The same name, for errors.
        const LABEL: &'static str;
    }

    /// A 32-bit attribute of kind `K`.
    pub(crate) struct U32<K>(pub(super) u16, PhantomData<K>);
    /// A 64-bit attribute of kind `K`.
    pub(crate) struct U64<K>(pub(super) u16, PhantomData<K>);
    /// A data attribute (a register value) of kind `K`.
    pub(crate) struct Data<K>(pub(super) u16, PhantomData<K>);
    /// A string attribute of kind `K`.
    pub(crate) struct Str<K>(pub(super) u16, PhantomData<K>);
    /// The verdict code of kind `K` (a 32-bit value libnftnl writes in two nests).
    pub(crate) struct Verdict<K>(pub(super) u16, PhantomData<K>);
    /// The jump target of kind `K` (a string libnftnl writes beside the verdict code).
    pub(crate) struct VerdictChain<K>(pub(super) u16, PhantomData<K>);

    macro_rules! kind {
        ($k:ident, $cname:literal, $name:literal { $($kind:ident $attr:ident = $n:ident),* $(,)? }) => {
            #[doc = concat!("The `", $name, "` expression.")]
            pub(crate) enum $k {}
            impl Kind for $k {
                const NAME: &'static std::ffi::CStr = $cname;
                const LABEL: &'static str = $name;
            }
            $(
                #[doc = concat!("`", stringify!($n), "`.")]
                pub(crate) const $attr: $kind<$k> = $kind(nft::$n as u16, PhantomData);
            )*
        };
    }

    kind!(Meta, c"meta", "meta" { U32 META_KEY = NFTNL_EXPR_META_KEY, U32 META_DREG = NFTNL_EXPR_META_DREG, U32 META_SREG = NFTNL_EXPR_META_SREG });
    kind!(Ct, c"ct", "ct" { U32 CT_KEY = NFTNL_EXPR_CT_KEY, U32 CT_DREG = NFTNL_EXPR_CT_DREG, U32 CT_SREG = NFTNL_EXPR_CT_SREG });
    kind!(Payload, c"payload", "payload" { U32 PAYLOAD_BASE = NFTNL_EXPR_PAYLOAD_BASE, U32 PAYLOAD_OFFSET = NFTNL_EXPR_PAYLOAD_OFFSET, U32 PAYLOAD_LEN = NFTNL_EXPR_PAYLOAD_LEN, U32 PAYLOAD_DREG = NFTNL_EXPR_PAYLOAD_DREG });
    kind!(Cmp, c"cmp", "cmp" { U32 CMP_SREG = NFTNL_EXPR_CMP_SREG, U32 CMP_OP = NFTNL_EXPR_CMP_OP, Data CMP_DATA = NFTNL_EXPR_CMP_DATA });
    kind!(Range, c"range", "range" { U32 RANGE_SREG = NFTNL_EXPR_RANGE_SREG, U32 RANGE_OP = NFTNL_EXPR_RANGE_OP, Data RANGE_FROM = NFTNL_EXPR_RANGE_FROM_DATA, Data RANGE_TO = NFTNL_EXPR_RANGE_TO_DATA });
    kind!(Bitwise, c"bitwise", "bitwise" { U32 BITWISE_SREG = NFTNL_EXPR_BITWISE_SREG, U32 BITWISE_DREG = NFTNL_EXPR_BITWISE_DREG, U32 BITWISE_LEN = NFTNL_EXPR_BITWISE_LEN, Data BITWISE_MASK = NFTNL_EXPR_BITWISE_MASK, Data BITWISE_XOR = NFTNL_EXPR_BITWISE_XOR });
    kind!(Byteorder, c"byteorder", "byteorder" { U32 BYTEORDER_SREG = NFTNL_EXPR_BYTEORDER_SREG, U32 BYTEORDER_DREG = NFTNL_EXPR_BYTEORDER_DREG, U32 BYTEORDER_OP = NFTNL_EXPR_BYTEORDER_OP, U32 BYTEORDER_LEN = NFTNL_EXPR_BYTEORDER_LEN, U32 BYTEORDER_SIZE = NFTNL_EXPR_BYTEORDER_SIZE });
    kind!(Lookup, c"lookup", "lookup" { U32 LOOKUP_SREG = NFTNL_EXPR_LOOKUP_SREG, Str LOOKUP_SET = NFTNL_EXPR_LOOKUP_SET, U32 LOOKUP_SET_ID = NFTNL_EXPR_LOOKUP_SET_ID, U32 LOOKUP_FLAGS = NFTNL_EXPR_LOOKUP_FLAGS });
    kind!(Immediate, c"immediate", "immediate" { U32 IMM_DREG = NFTNL_EXPR_IMM_DREG, Data IMM_DATA = NFTNL_EXPR_IMM_DATA, Verdict IMM_VERDICT = NFTNL_EXPR_IMM_VERDICT, VerdictChain IMM_CHAIN = NFTNL_EXPR_IMM_CHAIN });
    kind!(Counter, c"counter", "counter" { U64 CTR_PACKETS = NFTNL_EXPR_CTR_PACKETS, U64 CTR_BYTES = NFTNL_EXPR_CTR_BYTES });
    kind!(Log, c"log", "log" { Str LOG_PREFIX = NFTNL_EXPR_LOG_PREFIX });
    kind!(Redir, c"redir", "redir" { U32 REDIR_REG_PROTO_MIN = NFTNL_EXPR_REDIR_REG_PROTO_MIN, U32 REDIR_FLAGS = NFTNL_EXPR_REDIR_FLAGS });
    kind!(Tproxy, c"tproxy", "tproxy" { U32 TPROXY_FAMILY = NFTNL_EXPR_TPROXY_FAMILY, U32 TPROXY_REG_ADDR = NFTNL_EXPR_TPROXY_REG_ADDR, U32 TPROXY_REG_PORT = NFTNL_EXPR_TPROXY_REG_PORT });
    kind!(Nat, c"nat", "nat" { U32 NAT_TYPE = NFTNL_EXPR_NAT_TYPE, U32 NAT_FAMILY = NFTNL_EXPR_NAT_FAMILY, U32 NAT_REG_ADDR_MIN = NFTNL_EXPR_NAT_REG_ADDR_MIN });
    kind!(Socket, c"socket", "socket" { U32 SOCKET_KEY = NFTNL_EXPR_SOCKET_KEY, U32 SOCKET_DREG = NFTNL_EXPR_SOCKET_DREG });
}

/// A libnftnl expression of kind `K` being filled; freed on drop unless added to a rule.
/// It counts the bytes each attribute set will take in the rule message; an attribute set
/// twice is counted twice (libnftnl keeps the last value), so the count never falls short.
pub(crate) struct ExprBuilder<K: attr::Kind> {
    x: *mut nft::nftnl_expr,
    /// The bytes of the data attributes set so far, as libnftnl writes them.
    body: usize,
    _kind: std::marker::PhantomData<K>,
}

impl<K: attr::Kind> ExprBuilder<K> {
    /// A new, empty expression of kind `K`.
    pub(crate) fn new() -> Result<Self, BuildError> {
        // SAFETY: the name is a NUL-terminated constant; libnftnl only looks it up.
        let x = unsafe { nft::nftnl_expr_alloc(K::NAME.as_ptr()) };
        if x.is_null() {
            return Err(BuildError::Unsupported(K::LABEL.to_string()));
        }
        Ok(ExprBuilder {
            x,
            body: 0,
            _kind: std::marker::PhantomData,
        })
    }

    /// Set a 32-bit attribute.
    pub(crate) fn u32(&mut self, a: attr::U32<K>, v: u32) {
        // SAFETY: `x` is a live expression of kind K and `a` one of K's 32-bit attributes
        // (the `attr` table): libnftnl copies 4 bytes from the value passed.
        unsafe { nft::nftnl_expr_set_u32(self.x, a.0, v) }
        self.body += bounds::attr(4);
    }

    /// Set a 64-bit attribute.
    pub(crate) fn u64(&mut self, a: attr::U64<K>, v: u64) {
        // SAFETY: as in `u32`, with one of K's 64-bit attributes: 8 bytes are copied.
        unsafe { nft::nftnl_expr_set_u64(self.x, a.0, v) }
        self.body += bounds::attr(8);
    }

    /// Set the verdict code: written as `data { verdict { code } }`.
    pub(crate) fn verdict(&mut self, a: attr::Verdict<K>, code: u32) {
        // SAFETY: as in `u32`: `a` is K's verdict code, a 32-bit attribute (4 bytes copied).
        unsafe { nft::nftnl_expr_set_u32(self.x, a.0, code) }
        self.body += 4 + 4 + bounds::attr(4);
    }

    /// Set the jump target chain `s` (checked as [`bounds::name`]), written beside the code.
    pub(crate) fn verdict_chain(
        &mut self,
        a: attr::VerdictChain<K>,
        what: &'static str,
        s: &str,
    ) -> Result<(), BuildError> {
        let c = cname(what, s)?;
        // SAFETY: `a` is K's jump target, a string attribute libnftnl `strdup`s: `c` is a
        // NUL-terminated string alive for the call.
        let rc = unsafe { nft::nftnl_expr_set_str(self.x, a.0, c.as_ptr()) };
        if rc != 0 {
            return Err(BuildError::Alloc("an expression string"));
        }
        self.body += bounds::strz(s.len());
        Ok(())
    }

    /// Set a data attribute; refused over [`bounds::VALUE_MAX`] bytes.
    pub(crate) fn data(&mut self, a: attr::Data<K>, d: &[u8]) -> Result<(), BuildError> {
        bounds::within(Limit::Value { expr: K::LABEL }, d.len())?;
        // SAFETY: `a` is one of K's data attributes, which libnftnl copies into a 64-byte
        // field: `d` has at most VALUE_MAX = 16 bytes (checked above) and is read, not kept.
        let rc = unsafe { nft::nftnl_expr_set(self.x, a.0, d.as_ptr().cast(), d.len() as u32) };
        if rc != 0 {
            return Err(BuildError::Alloc("an expression value"));
        }
        // The value nested in `NFTA_DATA_VALUE`.
        self.body += 4 + bounds::attr(d.len());
        Ok(())
    }

    /// Set a string attribute holding the name `s` of `what` (checked as [`bounds::name`]).
    pub(crate) fn name(
        &mut self,
        a: attr::Str<K>,
        what: &'static str,
        s: &str,
    ) -> Result<(), BuildError> {
        let c = cname(what, s)?;
        self.set_str(a, &c)
    }

    /// Set a string attribute holding `s` within `limit`.
    pub(crate) fn string(
        &mut self,
        a: attr::Str<K>,
        what: &'static str,
        s: &str,
        limit: Limit,
    ) -> Result<(), BuildError> {
        let c = cstring(what, s, limit)?;
        self.set_str(a, &c)
    }

    fn set_str(&mut self, a: attr::Str<K>, c: &CString) -> Result<(), BuildError> {
        // SAFETY: `a` is one of K's string attributes, which libnftnl `strdup`s: `c` is a
        // NUL-terminated string alive for the call.
        let rc = unsafe { nft::nftnl_expr_set_str(self.x, a.0, c.as_ptr()) };
        if rc != 0 {
            return Err(BuildError::Alloc("an expression string"));
        }
        self.body += bounds::attr(c.as_bytes_with_nul().len());
        Ok(())
    }

    /// The expression, kind erased, for [`MsgWriter::rule`](super::MsgWriter::rule).
    pub(crate) fn finish(self) -> Built {
        let x = self.x;
        // The list element, the name and the data nest around the attributes.
        let len = 4 + bounds::strz(K::NAME.to_bytes().len()) + 4 + self.body;
        std::mem::forget(self);
        Built { x, len }
    }
}

impl<K: attr::Kind> Drop for ExprBuilder<K> {
    fn drop(&mut self) {
        // SAFETY: `x` is a live expression this builder owns (not yet handed to a rule).
        unsafe { nft::nftnl_expr_free(self.x) }
    }
}

/// A finished libnftnl expression, owned until a rule takes it; freed on drop otherwise.
pub(crate) struct Built {
    x: *mut nft::nftnl_expr,
    /// The bytes it takes in a rule message, counted by its builder.
    len: usize,
}

impl Built {
    /// The bytes this expression takes in a rule's expression list (list element, name,
    /// data), as counted while it was built: never less than libnftnl writes.
    pub(crate) fn encoded_len(&self) -> usize {
        self.len
    }

    pub(super) fn into_raw(self) -> *mut nft::nftnl_expr {
        let x = self.x;
        std::mem::forget(self);
        x
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        // SAFETY: a live expression owned by this value alone.
        unsafe { nft::nftnl_expr_free(self.x) }
    }
}
