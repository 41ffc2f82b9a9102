//! Reading tables back from the kernel into the model ([`Connection::dump_ruleset`]).

use crate::codec::objects;
use crate::connection::Connection;
use crate::error::NetlinkError;
use nftmesh_model::ruleset::{Family, Ruleset};

impl Connection {
    /// Read the given tables back from the kernel into the model (tables that do not exist are
    /// left out): chains with their hooks, named sets with their elements, and every rule
    /// decoded through `codec::decode` and `codec::raise` (the inverse of [`crate::Transaction::plan`]'s
    /// encoding). Rules come back in [`nftmesh_model::canonical::canonical_rule`] form; an expression the
    /// model cannot express is [`NetlinkError::Unsupported`], naming it and its rule.
    pub fn dump_ruleset(&mut self, tables: &[(Family, String)]) -> Result<Ruleset, NetlinkError> {
        let live = self.tables()?;
        let mut out = Ruleset::default();
        for (family, name) in tables {
            if !live.iter().any(|l| l.family == *family && &l.name == name) {
                continue;
            }
            let during = "dumping the ruleset";
            let bad = |what: String| NetlinkError::Malformed { during, what };
            let mut parts = objects::TableParts::default();
            for ls in self.sets(*family, name)? {
                let els = self.set_elements(*family, name, &ls.name)?;
                parts.sets.push((ls, els));
            }
            parts.chains = self.chains(*family, name)?;
            for area in self.rule_areas(*family, name, during)? {
                parts.rules.push(objects::rule_of(&area).map_err(bad)?);
            }
            out.tables
                .push(objects::assemble(*family, name, parts, during)?);
        }
        // Hash sets list their elements in no particular order.
        Ok(nftmesh_model::canonical::canonical_ruleset(&out))
    }
}
