//! Whether the archive holds instances intact, for a Storage Commitment request (PS3.4 J.3.2):
//! each referenced instance must be filed, visible to the caller (another facility's instance is
//! unknown to it, invariant 20), of the SOP class the caller names, and its object must pass
//! the read-time verification every read gets (invariant 13).

use crate::access::Principal;
use crate::ingest::Archive;
use crate::store::IndexError;

/// What the archive found for one referenced instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Filed, visible, of the named class, and its object verified.
    Intact,
    /// Not filed, or not visible to the caller.
    Unknown,
    /// Filed under another SOP class than the one named.
    ClassMismatch,
    /// Filed, but its object is missing or damaged, or could not be read.
    Unreadable,
}

impl Archive {
    /// Checks each `(SOP class, SOP instance)` of `references`, in order, reading one object at
    /// a time (memory: the largest object, as every read).
    pub async fn check_held(
        &self,
        who: &Principal,
        references: &[(String, String)],
    ) -> Result<Vec<Held>, IndexError> {
        let sops = references.iter().map(|(_, sop)| sop.clone()).collect();
        let found = self.index().visible_instances(who, sops).await?;
        let mut held = Vec::with_capacity(found.len());
        for ((class, _), instance) in references.iter().zip(found) {
            held.push(match instance {
                None => Held::Unknown,
                Some(i) if i.sop_class_uid != *class => Held::ClassMismatch,
                // A failed read is counted, logged and marked by read_instance itself.
                Some(i) => match self.read_instance(&i).await {
                    Ok(_) => Held::Intact,
                    Err(_) => Held::Unreadable,
                },
            });
        }
        Ok(held)
    }
}
