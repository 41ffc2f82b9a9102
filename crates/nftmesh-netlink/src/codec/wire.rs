//! Reading netlink replies: message headers and attributes, bounds-checked, no `unsafe`.
//! The layouts are named in [`field`] (as smoltcp's `wire` modules name theirs); every
//! attribute area is read through one reader, [`Attrs`].

/// Where each field of the netlink structures read here lies (`linux/netlink.h`).
pub mod field {
    use std::ops::Range;

    /// `struct nlmsghdr`: total length (header included).
    pub const NLMSG_LEN: Range<usize> = 0..4;
    /// `struct nlmsghdr`: message type.
    pub const NLMSG_TYPE: Range<usize> = 4..6;
    /// `struct nlmsghdr`: flags (`NLM_F_*`).
    pub const NLMSG_FLAGS: Range<usize> = 6..8;
    /// `struct nlmsghdr`: sequence number.
    pub const NLMSG_SEQ: Range<usize> = 8..12;
    /// `struct nlmsghdr`: sender's port id.
    pub const NLMSG_PID: Range<usize> = 12..16;
    /// The size of `struct nlmsghdr`.
    pub const NLMSG_HDRLEN: usize = 16;

    /// `struct nlmsgerr`: the negated errno (0 for an acknowledgement).
    pub const NLMSGERR_ERROR: Range<usize> = 0..4;
    /// `struct nlmsgerr`: the sequence number inside the echoed request header.
    pub const NLMSGERR_SEQ: Range<usize> = 4 + NLMSG_SEQ.start..4 + NLMSG_SEQ.end;
    /// The size of `struct nlmsgerr` (errno and the echoed header).
    pub const NLMSGERR_LEN: usize = 4 + NLMSG_HDRLEN;

    /// `struct nlattr`: length (header included).
    pub const NLA_LEN: Range<usize> = 0..2;
    /// `struct nlattr`: type, with the nested and byte-order bits.
    pub const NLA_TYPE: Range<usize> = 2..4;
    /// The size of `struct nlattr`.
    pub const NLA_HDRLEN: usize = 4;
    /// The type bits of `nla_type` (without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`).
    pub const NLA_TYPE_MASK: u16 = 0x3fff;

    /// `struct rtmsg` (a route): destination prefix length.
    pub const RTM_DST_LEN: usize = 1;
    /// `struct rtmsg`: routing table (when under 256; else in `RTA_TABLE`).
    pub const RTM_TABLE: usize = 4;
    /// `struct rtmsg`: route type (`RTN_*`).
    pub const RTM_TYPE: usize = 7;
    /// The size of `struct rtmsg`, and of `struct fib_rule_hdr` (a routing rule).
    pub const RTMSG_LEN: usize = 12;
    /// `struct ifaddrmsg`: address family.
    pub const IFA_FAMILY: usize = 0;
    /// `struct ifaddrmsg`: interface index.
    pub const IFA_INDEX: Range<usize> = 4..8;
    /// The size of `struct ifaddrmsg`.
    pub const IFADDRMSG_LEN: usize = 8;

    /// Messages and attributes start on 4-byte boundaries.
    pub const fn align(len: usize) -> usize {
        (len + 3) & !3
    }
}

use field::*;

fn u16_at(buf: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_ne_bytes([buf[r.start], buf[r.start + 1]])
}

/// The host-endian u32 at `r` of `buf` (which holds it).
pub(crate) fn u32_at(buf: &[u8], r: std::ops::Range<usize>) -> u32 {
    u32::from_ne_bytes([
        buf[r.start],
        buf[r.start + 1],
        buf[r.start + 2],
        buf[r.start + 3],
    ])
}

/// One netlink message of a reply buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`: in a notification, the netlink port id of the socket whose request
    /// caused it.
    pub pid: u32,
    /// Everything after the header.
    pub payload: &'a [u8],
}

/// Split a buffer into netlink messages. Errors name the offset of the bad header.
pub fn messages(buf: &[u8]) -> Result<Vec<Msg<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let m = &buf[off..];
        let len = u32_at(m, NLMSG_LEN) as usize;
        if len < NLMSG_HDRLEN || len > m.len() {
            return Err(format!(
                "message at byte {off} claims length {len} of {} left",
                m.len()
            ));
        }
        out.push(Msg {
            ty: u16_at(m, NLMSG_TYPE),
            flags: u16_at(m, NLMSG_FLAGS),
            seq: u32_at(m, NLMSG_SEQ),
            pid: u32_at(m, NLMSG_PID),
            payload: &m[NLMSG_HDRLEN..len],
        });
        off += align(len);
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` payload (positive; 0 is an acknowledgement) and the sequence
/// number of the request it answers.
pub fn error_payload(payload: &[u8]) -> Result<(i32, u32), String> {
    if payload.len() < NLMSGERR_LEN {
        return Err(format!(
            "error message of {} bytes is shorter than {NLMSGERR_LEN}",
            payload.len()
        ));
    }
    let code = u32_at(payload, NLMSGERR_ERROR) as i32;
    Ok((code.wrapping_neg(), u32_at(payload, NLMSGERR_SEQ)))
}

/// The attributes of one area, in order (type without the nested and byte-order bits,
/// value): the one attribute reader of this crate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs<'a>(Vec<(u16, &'a [u8])>);

impl<'a> Attrs<'a> {
    /// The value of the first attribute of type `ty`.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.0.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
    }

    /// The first `ty` as a NUL-terminated string.
    pub fn string(&self, ty: u16) -> Option<String> {
        self.get(ty).map(string)
    }

    /// The first `ty` as a big-endian u32 (`None` if absent or short).
    pub fn be32(&self, ty: u16) -> Option<u32> {
        self.get(ty).and_then(be32)
    }

    /// The first `ty` as a host-endian u32, as rtnetlink writes its numbers (`None` if absent
    /// or short).
    pub fn ne32(&self, ty: u16) -> Option<u32> {
        let v = self.get(ty)?.get(..4)?;
        Some(u32_at(v, 0..4))
    }

    /// The first `ty` as a big-endian u64 (`None` if absent or short).
    pub fn be64(&self, ty: u16) -> Option<u64> {
        self.get(ty).and_then(be64)
    }
}

impl<'a> IntoIterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    type IntoIter = std::vec::IntoIter<(u16, &'a [u8])>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Read the attributes of an area. Errors name the offset of the bad attribute.
pub fn attrs(buf: &[u8]) -> Result<Attrs<'_>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLA_HDRLEN <= buf.len() {
        let a = &buf[off..];
        let len = usize::from(u16_at(a, NLA_LEN));
        if len < NLA_HDRLEN || len > a.len() {
            return Err(format!(
                "attribute at byte {off} claims length {len} of {} left",
                a.len()
            ));
        }
        out.push((u16_at(a, NLA_TYPE) & NLA_TYPE_MASK, &a[NLA_HDRLEN..len]));
        off += align(len);
    }
    Ok(Attrs(out))
}

/// A NUL-terminated string value.
pub fn string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// A big-endian u32 value.
pub fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// A big-endian u64 value.
pub fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn splits_messages_and_rejects_truncation() {
        let mut buf = msg(2, 7, &[1, 2, 3]);
        buf.extend(msg(3, 8, &[]));
        let m = messages(&buf).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].ty, m[0].seq, m[0].payload), (2, 7, &[1u8, 2, 3][..]));
        assert_eq!((m[1].ty, m[1].seq), (3, 8));
        let e = messages(&buf[..18]).unwrap_err();
        assert!(e.contains("byte 0"), "{e}");
    }

    #[test]
    fn parses_attributes_and_bounds() {
        let mut a = Vec::new();
        a.extend_from_slice(&8u16.to_ne_bytes());
        a.extend_from_slice(&(1u16 | 0x8000).to_ne_bytes());
        a.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        a.extend_from_slice(&7u16.to_ne_bytes());
        a.extend_from_slice(&2u16.to_ne_bytes());
        a.extend_from_slice(b"ab\0\0");
        let at = attrs(&a).unwrap();
        assert_eq!(at.be32(1), Some(0x0102_0304));
        assert_eq!(at.string(2).as_deref(), Some("ab"));
        assert!(at.get(3).is_none());
        assert_eq!(at.into_iter().map(|(t, _)| t).collect::<Vec<_>>(), [1, 2]);
        let mut bad = a.clone();
        bad[8] = 200;
        assert!(attrs(&bad).unwrap_err().contains("byte 8"));
    }

    #[test]
    fn error_payload_reads_errno_and_seq() {
        let mut p = (-libc::ENOENT).to_ne_bytes().to_vec();
        p.extend_from_slice(&msg(6, 42, &[])[..16]);
        assert_eq!(error_payload(&p).unwrap(), (libc::ENOENT, 42));
        assert!(error_payload(&p[..10]).is_err());
    }
}

/// Test helpers shared by the modules that parse netlink bytes.
#[cfg(test)]
pub(crate) mod testing {
    /// One attribute as the kernel writes it: length, type, value, padding to 4 bytes.
    pub fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut out = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(v);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    /// Pseudo-random byte strings of every length below `max` (a fixed sequence per `seed`).
    pub fn garbage(seed: u32, max: usize) -> impl Iterator<Item = Vec<u8>> {
        let mut s = seed;
        (0..max).map(move |len| {
            (0..len)
                .map(|_| {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (s >> 16) as u8
                })
                .collect()
        })
    }
}
