//! Reading netlink replies: message headers and attributes, bounds-checked, no `unsafe`.

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
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

/// Split a buffer into netlink messages. Errors name the offset of the bad header.
pub fn messages(buf: &[u8]) -> Result<Vec<Msg<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            return Err(format!(
                "message at byte {off} claims length {len} of {} left",
                buf.len() - off
            ));
        }
        out.push(Msg {
            ty: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            flags: u16::from_ne_bytes([buf[off + 6], buf[off + 7]]),
            seq: u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes")),
            pid: u32::from_ne_bytes(buf[off + 12..off + 16].try_into().expect("4 bytes")),
            payload: &buf[off + 16..off + len],
        });
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` payload (positive; 0 is an acknowledgement) and the sequence
/// number of the request it answers.
pub fn error_payload(payload: &[u8]) -> Result<(i32, u32), String> {
    if payload.len() < 4 + 16 {
        return Err(format!(
            "error message of {} bytes is shorter than 20",
            payload.len()
        ));
    }
    let code = i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
    let seq = u32::from_ne_bytes(payload[12..16].try_into().expect("4 bytes"));
    Ok((code.wrapping_neg(), seq))
}

/// Attributes (type without the nested/byte-order bits, value) of a TLV area.
pub fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            return Err(format!(
                "attribute at byte {off} claims length {len} of {} left",
                buf.len() - off
            ));
        }
        out.push((ty, &buf[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The first attribute of type `ty`.
pub fn find<'a>(attrs: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
}

/// A NUL-terminated string attribute.
pub fn string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// A big-endian u32 attribute.
pub fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// A big-endian u64 attribute.
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
        assert_eq!(be32(find(&at, 1).unwrap()), Some(0x0102_0304));
        assert_eq!(string(find(&at, 2).unwrap()), "ab");
        assert!(find(&at, 3).is_none());
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
