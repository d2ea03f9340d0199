//! How much of a session's record a reader may see: supervisors, admins and current
//! participants all of it; an agent who left, what they could see while a participant, which is
//! everything up to the entry that records their last leaving (a participant may resync the
//! stream from its first entry, so what came before they joined was theirs too; what came after
//! they left was not). Their leaving is read from the stream's `left` entries, since a rejoin
//! replaces the participant row.

use chrono::{DateTime, Utc};
use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::{message, participant, session};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::auth::Caller;

/// How much of a session's record a reader may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Horizon {
    /// All of it: supervisors and admins, and a current participant (who may resync the
    /// whole stream over MQTT).
    Whole,
    /// An agent who left: the entries up to the one that recorded their (last) leaving, at
    /// `at`. While a participant they could resync from the first entry, so everything before
    /// that is theirs to read; nothing after it is.
    Left { seq: i64, at: DateTime<Utc> },
}

impl Horizon {
    pub(crate) fn through_seq(self) -> Option<i64> {
        match self {
            Horizon::Whole => None,
            Horizon::Left { seq, .. } => Some(seq),
        }
    }

    pub(crate) fn clamp(self, seq: i64) -> i64 {
        self.through_seq().map_or(seq, |last| seq.min(last))
    }

    /// Whether something that happened at `when` happened while the reader could see it.
    pub(crate) fn saw(self, when: DateTime<Utc>) -> bool {
        match self {
            Horizon::Whole => true,
            Horizon::Left { at, .. } => when <= at,
        }
    }

    /// What `caller` may see of `session`: `None` if nothing (an agent who never took part).
    pub(crate) async fn of(
        db: &sea_orm::DatabaseConnection,
        caller: &Caller,
        session: &session::Model,
    ) -> Result<Option<Horizon>, sea_orm::DbErr> {
        if caller.role != StaffRole::Agent {
            return Ok(Some(Horizon::Whole));
        }
        let participation = participant::Entity::find()
            .filter(participant::Column::SessionId.eq(&session.id))
            .filter(participant::Column::Subject.eq(&caller.username))
            .one(db)
            .await?;
        // The session's `assigned_agent` stays when they leave, so it is what the participant row
        // says that counts; the assigned agent without a row (a record from before rows) reads it
        // all, as before.
        let Some(participation) = participation else {
            let assigned = session.assigned_agent.as_deref() == Some(caller.username.as_str());
            return Ok(assigned.then_some(Horizon::Whole));
        };
        let Some(left_at) = participation.left_at else {
            return Ok(Some(Horizon::Whole));
        };
        // Their leaving is an entry of the stream (a rejoin replaces the participant row, so the
        // row only says when they last left): the last `left` event naming them.
        let events = message::Entity::find()
            .filter(message::Column::SessionId.eq(&session.id))
            .filter(message::Column::Sender.eq(&caller.username))
            .filter(message::Column::Kind.eq(message::MessageKind::Event))
            .order_by_desc(message::Column::Seq)
            .all(db)
            .await?;
        if let Some(horizon) = last_left(&events, &caller.username) {
            return Ok(Some(horizon));
        }
        // A leaving without its entry (the pipeline always writes one; a record mended by hand
        // might not): what was written before the row says they left.
        let seq = message::Entity::find()
            .filter(message::Column::SessionId.eq(&session.id))
            .filter(message::Column::CreatedAt.lte(left_at))
            .order_by_desc(message::Column::Seq)
            .one(db)
            .await?
            .map_or(0, |entry| entry.seq);
        Ok(Some(Horizon::Left { seq, at: left_at }))
    }
}

/// The horizon of `subject` from their own event entries, newest first: up to the last `left`
/// event naming them.
fn last_left(events: &[message::Model], subject: &str) -> Option<Horizon> {
    events
        .iter()
        .find(|entry| {
            matches!(
                schemas::wire::StreamContent::from_stored(entry.kind, &entry.body),
                Some(schemas::wire::StreamContent::Event {
                    event: schemas::wire::SessionEvent::Left { subject: who },
                }) if who == subject
            )
        })
        .map(|entry| Horizon::Left {
            seq: entry.seq,
            at: entry.created_at,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, sender: &str, event: schemas::wire::SessionEvent) -> message::Model {
        let (kind, body) = schemas::wire::StreamContent::Event { event }.to_stored();
        message::Model {
            id: seq,
            session_id: "s".into(),
            seq,
            client_msg_id: format!("c{seq}"),
            sender: sender.into(),
            kind,
            body,
            created_at: DateTime::from_timestamp(1_800_000_000 + seq, 0).unwrap(),
        }
    }

    #[test]
    fn an_agent_who_left_sees_up_to_their_last_leaving() {
        use schemas::wire::SessionEvent::{Joined, Left};
        let ann = || "ann".to_owned();
        // Newest first, as read: joined at 3, left at 7, joined again at 12, left at 20.
        let events = [
            event(20, "ann", Left { subject: ann() }),
            event(12, "ann", Joined { subject: ann() }),
            event(7, "ann", Left { subject: ann() }),
            event(3, "ann", Joined { subject: ann() }),
        ];
        let horizon = last_left(&events, "ann").unwrap();
        assert_eq!(horizon.through_seq(), Some(20));
        assert_eq!(horizon.clamp(25), 20);
        assert_eq!(horizon.clamp(9), 9);
        let Horizon::Left { at, .. } = horizon else {
            unreachable!()
        };
        assert!(horizon.saw(at) && !horizon.saw(at + chrono::Duration::seconds(1)));
        // Someone else's leaving is not theirs.
        assert_eq!(last_left(&events[1..2], "ann"), None);
        let bob_left = [event(
            9,
            "ann",
            Left {
                subject: "bob".into(),
            },
        )];
        assert_eq!(last_left(&bob_left, "ann"), None);
        assert_eq!(Horizon::Whole.through_seq(), None);
        assert_eq!(Horizon::Whole.clamp(25), 25);
    }
}
