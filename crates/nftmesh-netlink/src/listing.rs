//! Live listings: the tables, chains, sets and set elements the kernel holds, each read with
//! a dump request that names its table.

use crate::codec::numbers::{family_number, family_of};
use crate::codec::objects::{self, Elements, LiveChain, LiveSet, LiveTable};
use crate::codec::sys::*;
use crate::codec::wire;
use crate::connection::Connection;
use crate::error::{NetlinkError, Object};
use crate::socket::str_attr;
use nftmesh_model::ruleset::Family;

impl Connection {
    /// Every table, of every owner, with its flags and owning socket ([`LiveTable::owner`]).
    pub fn tables(&mut self) -> Result<Vec<LiveTable>, NetlinkError> {
        let during = "listing tables";
        let mut out = Vec::new();
        for m in self.socket.dump(NFT_MSG_GETTABLE, NFPROTO_UNSPEC, during)? {
            let at =
                wire::attrs(&m[1..]).map_err(|what| NetlinkError::Malformed { during, what })?;
            let Some(family) = family_of(m[0]) else {
                continue;
            };
            out.push(LiveTable {
                family,
                name: at.string(NFTA_TABLE_NAME).unwrap_or_default(),
                handle: at.be64(NFTA_TABLE_HANDLE).unwrap_or(0),
                flags: at.be32(NFTA_TABLE_FLAGS).unwrap_or(0),
                owner: at.be32(NFTA_TABLE_OWNER),
            });
        }
        Ok(out)
    }

    /// The attribute areas of the objects a dump of `msg` lists for one table (`table_attr`
    /// is the attribute holding the table's name, the first of every nf_tables object). The
    /// request names the table, which spares reading other tables' rules.
    fn table_objects(
        &mut self,
        msg: u16,
        family: Family,
        table: &str,
        table_attr: u16,
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        // The request names the table: the kernel then sends only that table's rules (seen
        // here), but chain dumps ignore it, so the check below stays for every kind.
        let mut filter = Vec::new();
        let label = || Object::Table {
            table: format!("{} {table}", family.keyword()),
        };
        str_attr(&mut filter, table_attr, "table", table, label)?;
        let mut out = Vec::new();
        for m in self
            .socket
            .dump_with(msg, family_number(family), &filter, during)?
        {
            let at =
                wire::attrs(&m[1..]).map_err(|what| NetlinkError::Malformed { during, what })?;
            if at.string(table_attr).as_deref() == Some(table) {
                out.push(m[1..].to_vec());
            }
        }
        Ok(out)
    }

    /// The attribute areas of one table's rules, as the kernel dumps them.
    pub(crate) fn rule_areas(
        &mut self,
        family: Family,
        table: &str,
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.table_objects(NFT_MSG_GETRULE, family, table, NFTA_RULE_TABLE, during)
    }

    /// The chains of one table.
    pub fn chains(&mut self, family: Family, table: &str) -> Result<Vec<LiveChain>, NetlinkError> {
        let during = "listing chains";
        self.table_objects(NFT_MSG_GETCHAIN, family, table, NFTA_CHAIN_TABLE, during)?
            .iter()
            .map(|area| {
                objects::chain_of(area, table)
                    .map_err(|what| NetlinkError::Malformed { during, what })
            })
            .collect()
    }

    /// The sets (named and anonymous) of one table.
    pub fn sets(&mut self, family: Family, table: &str) -> Result<Vec<LiveSet>, NetlinkError> {
        let during = "listing sets";
        self.table_objects(NFT_MSG_GETSET, family, table, NFTA_SET_TABLE, during)?
            .iter()
            .map(|area| {
                objects::set_of(area, table)
                    .map_err(|what| NetlinkError::Malformed { during, what })
            })
            .collect()
    }

    /// The elements of one set.
    pub(crate) fn set_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Elements, NetlinkError> {
        let during = "listing set elements";
        let mut extra = Vec::new();
        let label = || Object::Set {
            table: format!("{} {table}", family.keyword()),
            set: set.to_string(),
        };
        str_attr(&mut extra, NFTA_SET_ELEM_LIST_TABLE, "table", table, label)?;
        str_attr(&mut extra, NFTA_SET_ELEM_LIST_SET, "set", set, label)?;
        let mut out = Vec::new();
        for m in self
            .socket
            .dump_with(NFT_MSG_GETSETELEM, family_number(family), &extra, during)?
        {
            let els = objects::elements_of(&m[1..])
                .map_err(|what| NetlinkError::Malformed { during, what })?;
            out.extend(els);
        }
        Ok(out)
    }
}
