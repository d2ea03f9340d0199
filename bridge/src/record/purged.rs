//! Rows whose content retention removed, as the chain recorded it.
//!
//! A purge blanks content in place (`crate::retention`) and, in the same transaction, appends
//! one `retention.purged` entry per session naming every row it changed with the digest the row
//! had (which must be the digest its own entry recorded) and the digest it has now. A row whose
//! digest differs from its entry is therefore *purged by policy* exactly when a later, authentic
//! `retention.purged` entry of its session lists it with both digests; anything else (a row
//! blanked without such an entry, changed after the purge, or changed before it, so that the
//! purge recorded a different "before") is tampering, reported as before. Purging never deletes
//! a row, so a missing row is always tampering.

use std::collections::{HashMap, HashSet};

use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditKey, in_statement_sizes};

use super::key::RecordKey;

/// The action of the entry a purge appends for each session it purged.
pub(crate) const RETENTION_PURGED: &str = "retention.purged";

/// What a `retention.purged` entry says was changed (part of its detail, beside the policy
/// and counts that are for readers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Redactions {
    /// `(seq, digest before, digest after)` of each message row whose content went.
    pub rows: Vec<(i64, String, String)>,
    /// `(digest before, digest after)` of the survey answer, if its comment went.
    pub survey: Option<(String, String)>,
}

/// The authentic `retention.purged` entries of some sessions.
#[derive(Default)]
pub(crate) struct Purges(HashMap<String, Vec<(i64, Redactions)>>);

impl Purges {
    /// The purge entries of `sessions` whose MAC verifies under `key` (each against the link
    /// it claims; the walk of the chain checks that link in its turn, and a break there is
    /// reported whatever was excused here).
    pub(crate) async fn load<C: ConnectionTrait>(
        db: &C,
        key: &AuditKey,
        sessions: &HashSet<&str>,
    ) -> Result<Self, DbErr> {
        let mut purges: HashMap<String, Vec<(i64, Redactions)>> = HashMap::new();
        let sessions: Vec<&str> = sessions.iter().copied().collect();
        for run in in_statement_sizes(&sessions) {
            let entries = audit_event::Entity::find()
                .filter(audit_event::Column::Action.eq(RETENTION_PURGED))
                .filter(audit_event::Column::SessionId.is_in(run.iter().copied()))
                .all(db)
                .await?;
            for entry in entries {
                if !key.authentic(&entry) {
                    continue;
                }
                let (Some(session_id), Ok(redactions)) = (
                    entry.session_id.clone(),
                    serde_json::from_str::<Redactions>(&entry.detail),
                ) else {
                    continue;
                };
                purges
                    .entry(session_id)
                    .or_default()
                    .push((entry.id, redactions));
            }
        }
        Ok(Self(purges))
    }

    /// Whether `record`, recorded by entry `entry` with digest `recorded`, now stored with
    /// digest `stored`, is as a later purge of its session left it.
    pub(crate) fn redacted(
        &self,
        entry: i64,
        record: &RecordKey,
        recorded: &str,
        stored: &str,
    ) -> bool {
        let (session_id, seq) = match record {
            RecordKey::Message { session_id, seq } => (session_id, Some(*seq)),
            RecordKey::Survey { session_id } => (session_id, None),
        };
        let Some(purges) = self.0.get(session_id) else {
            return false;
        };
        purges
            .iter()
            .filter(|(purge, _)| *purge > entry)
            .any(|(_, redactions)| match seq {
                Some(seq) => redactions
                    .rows
                    .iter()
                    .any(|(s, before, after)| *s == seq && before == recorded && after == stored),
                None => redactions
                    .survey
                    .as_ref()
                    .is_some_and(|(before, after)| before == recorded && after == stored),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_later_purge_listing_both_digests_excuses_a_row() {
        let message = |seq| RecordKey::Message {
            session_id: "s".to_owned(),
            seq,
        };
        let survey = RecordKey::Survey {
            session_id: "s".to_owned(),
        };
        let purges = Purges(HashMap::from([(
            "s".to_owned(),
            vec![(
                50,
                Redactions {
                    rows: vec![(3, "b3".to_owned(), "a3".to_owned())],
                    survey: Some(("bs".to_owned(), "as".to_owned())),
                },
            )],
        )]));
        // (the entry that recorded the row, the row, its recorded digest, its stored digest,
        // excused)
        let rows = [
            (10, message(3), "b3", "a3", true),
            (10, message(3), "b3", "tampered", false),
            (10, message(3), "other", "a3", false),
            (10, message(4), "b3", "a3", false),
            (60, message(3), "b3", "a3", false),
            (10, survey.clone(), "bs", "as", true),
            (10, survey, "bs", "x", false),
            (
                10,
                RecordKey::Message {
                    session_id: "t".to_owned(),
                    seq: 3,
                },
                "b3",
                "a3",
                false,
            ),
        ];
        for (entry, record, recorded, stored, excused) in rows {
            assert_eq!(
                purges.redacted(entry, &record, recorded, stored),
                excused,
                "{entry} {record} {recorded} {stored}"
            );
        }
    }
}
