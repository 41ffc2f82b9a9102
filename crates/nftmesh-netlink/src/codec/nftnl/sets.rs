//! Set messages: a set's declaration (`NEWSET`, `DELSET`) and its elements (`NEWSETELEM`, as
//! many messages as they need). Part of the fenced `nftnl` module.
#![allow(unsafe_code)]

use super::*;

impl MsgWriter {
    /// A set message naming only table and set (`DELSET`).
    pub fn set_by_name(
        &mut self,
        msg: u16,
        family: u8,
        table: &str,
        name: &str,
        seq: u32,
    ) -> Result<(), BuildError> {
        let (table_c, name_c) = (cname("table", table)?, cname("set", name)?);
        let nlh = self.hdr(msg_type(msg), family, 0, seq);
        // SAFETY: the set is freshly allocated (checked for NULL), given two checked C strings
        // of at most NAME_MAX bytes that outlive the calls (libnftnl copies them) and a u32,
        // serialized behind the header just built (at most 20 + 2 * 260 + 8 bytes, far below
        // SCRATCH_LEN), and freed.
        unsafe {
            let mut rc = 0;
            let s = nft::nftnl_set_alloc();
            if s.is_null() {
                return Err(BuildError::Alloc("a set"));
            }
            rc |= nft::nftnl_set_set_str(s, nft::NFTNL_SET_TABLE as u16, table_c.as_ptr());
            rc |= nft::nftnl_set_set_str(s, nft::NFTNL_SET_NAME as u16, name_c.as_ptr());
            nft::nftnl_set_set_u32(s, nft::NFTNL_SET_FAMILY as u16, u32::from(family));
            if rc != 0 {
                nft::nftnl_set_free(s);
                return Err(BuildError::Alloc("a set attribute"));
            }
            nft::nftnl_set_nlmsg_build_payload(nlh, s);
            nft::nftnl_set_free(s);
        }
        self.commit();
        Ok(())
    }

    /// A `NEWSET` (or `DELSET` by name) message.
    pub fn set(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        table: &str,
        set: &WireSet,
        seq: u32,
    ) -> Result<(), BuildError> {
        let (table_c, name) = (cname("table", table)?, cname("set", &set.name)?);
        bounds::within(Limit::SetKey, set.key_len as usize)?;
        let nlh = self.hdr(msg_type(msg), family, flags, seq);
        // SAFETY: as in `table`: two checked C strings of at most NAME_MAX bytes, integers and
        // 6 bytes of user data (a message of at most 20 + 2 * 260 + 80 bytes).
        unsafe {
            let s = nft::nftnl_set_alloc();
            if s.is_null() {
                return Err(BuildError::Alloc("a set"));
            }
            let rc = fill_set(s, &table_c, &name, family, set);
            if rc != 0 {
                nft::nftnl_set_free(s);
                return Err(BuildError::Alloc("a set attribute"));
            }
            nft::nftnl_set_nlmsg_build_payload(nlh, s);
            nft::nftnl_set_free(s);
        }
        self.commit();
        Ok(())
    }

    /// `NEWSETELEM` messages holding every element of `set` (several when they do not fit in
    /// one). `seq` is advanced once per message; returns the sequence numbers used.
    pub fn set_elements(
        &mut self,
        family: u8,
        table: &str,
        set: &WireSet,
        seq: &mut u32,
    ) -> Result<Vec<u32>, BuildError> {
        self.elements(NFT_MSG_NEWSETELEM, family, table, set, seq)
    }

    /// `msg` (`NEWSETELEM` or `DELSETELEM`) messages for every element of `set`, as
    /// [`MsgWriter::set_elements`].
    pub fn elements(
        &mut self,
        msg: u16,
        family: u8,
        table: &str,
        set: &WireSet,
        seq: &mut u32,
    ) -> Result<Vec<u32>, BuildError> {
        if set.elements.is_empty() {
            return Ok(Vec::new());
        }
        let (table_c, name) = (cname("table", table)?, cname("set", &set.name)?);
        bounds::within(Limit::SetKey, set.key_len as usize)?;
        for (key, _) in &set.elements {
            if key.len() != set.key_len as usize {
                return Err(BuildError::KeyLength {
                    len: key.len(),
                    key_len: set.key_len,
                });
            }
        }
        let mut seqs = Vec::new();
        // SAFETY: every key is exactly key_len <= KEY_MAX bytes (checked above), the size of
        // the field libnftnl copies it into. The set owns the elements added to it; the
        // iterator borrows the set and is destroyed before the set is freed. Each message is
        // built in scratch: libnftnl's iterator stops once the element list would pass one
        // attribute's payload, after writing at most one more element of ELEMENT_MAX bytes,
        // so a message is at most ELEMENTS_MESSAGE_MAX <= SCRATCH_LEN bytes.
        unsafe {
            let s = nft::nftnl_set_alloc();
            if s.is_null() {
                return Err(BuildError::Alloc("a set"));
            }
            let mut rc = fill_set(s, &table_c, &name, family, set);
            for (key, end) in &set.elements {
                let e = nft::nftnl_set_elem_alloc();
                if e.is_null() {
                    nft::nftnl_set_free(s);
                    return Err(BuildError::Alloc("a set element"));
                }
                rc |= nft::nftnl_set_elem_set(
                    e,
                    nft::NFTNL_SET_ELEM_KEY as u16,
                    key.as_ptr() as *const c_void,
                    key.len() as u32,
                );
                if *end {
                    nft::nftnl_set_elem_set_u32(
                        e,
                        nft::NFTNL_SET_ELEM_FLAGS as u16,
                        NFT_SET_ELEM_INTERVAL_END,
                    );
                }
                nft::nftnl_set_elem_add(s, e);
            }
            if rc != 0 {
                nft::nftnl_set_free(s);
                return Err(BuildError::Alloc("a set element attribute"));
            }
            let iter = nft::nftnl_set_elems_iter_create(s);
            if iter.is_null() {
                nft::nftnl_set_free(s);
                return Err(BuildError::Alloc("a set element iterator"));
            }
            loop {
                let flags = if msg == NFT_MSG_NEWSETELEM {
                    NLM_F_CREATE
                } else {
                    0
                };
                let nlh = self.hdr(msg_type(msg), family, flags, *seq);
                let more = nft::nftnl_set_elems_nlmsg_build_payload_iter(nlh, iter);
                self.commit();
                seqs.push(*seq);
                *seq += 1;
                if more <= 0 {
                    break;
                }
            }
            nft::nftnl_set_elems_iter_destroy(iter);
            nft::nftnl_set_free(s);
        }
        Ok(seqs)
    }
}

/// Fill a libnftnl set's identity and type.
///
/// # Safety
/// `s` must be a live set from `nftnl_set_alloc`.
unsafe fn fill_set(
    s: *mut nft::nftnl_set,
    table: &CString,
    name: &CString,
    family: u8,
    set: &WireSet,
) -> std::os::raw::c_int {
    let mut rc = 0;
    // SAFETY: guaranteed by the caller; libnftnl copies the strings.
    unsafe {
        rc |= nft::nftnl_set_set_str(s, nft::NFTNL_SET_TABLE as u16, table.as_ptr());
        rc |= nft::nftnl_set_set_str(s, nft::NFTNL_SET_NAME as u16, name.as_ptr());
        nft::nftnl_set_set_u32(s, nft::NFTNL_SET_FAMILY as u16, u32::from(family));
        nft::nftnl_set_set_u32(s, nft::NFTNL_SET_FLAGS as u16, set.flags);
        nft::nftnl_set_set_u32(s, nft::NFTNL_SET_KEY_TYPE as u16, set.key_type);
        nft::nftnl_set_set_u32(s, nft::NFTNL_SET_KEY_LEN as u16, set.key_len);
        nft::nftnl_set_set_u32(s, nft::NFTNL_SET_ID as u16, set.id);
        // The number of elements, as `nft` declares it: the kernel sizes a hash set for them
        // up front instead of growing it element by element.
        if !set.elements.is_empty() {
            let size = u32::try_from(set.elements.len()).unwrap_or(u32::MAX);
            nft::nftnl_set_set_u32(s, nft::NFTNL_SET_DESC_SIZE as u16, size);
        }
        let ud = set_udata(set);
        rc |= nft::nftnl_set_set_data(
            s,
            nft::NFTNL_SET_USERDATA as u16,
            ud.as_ptr() as *const c_void,
            ud.len() as u32,
        );
    }
    rc
}

/// Set userdata as `nft` writes it: the key byte order (TLV type 0, u32: 1 host, 2 big
/// endian), which `nft` needs to print uid, gid and mark keys (host order) correctly.
fn set_udata(set: &WireSet) -> Vec<u8> {
    let host = matches!(set.key_type, TYPE_UID | TYPE_GID | TYPE_MARK)
        && set.flags & NFT_SET_INTERVAL == 0;
    let order: u32 = if host { 1 } else { 2 };
    let mut v = vec![0u8, 4];
    v.extend_from_slice(&order.to_ne_bytes());
    v
}
