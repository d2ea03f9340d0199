//! Decisions: what one submission does to its session, as a function of the session's view, the
//! submission and the batch's clock, with no database or broker in reach. A decision updates the
//! view (the pipeline is the session's only writer) and records what must be stored, audited
//! and published in [`Effects`]; the writer and the outbox carry that out after the batch.
//!
//! One module per family of actions: [`entries`] (messages, notes), [`membership`] (join,
//! leave), [`lock`] (the reply lock and its expiry), [`receipts`], [`lifecycle`] (open,
//! transfer, escalate, close, the survey), [`origin`] (an open request's channel and team from
//! the applicant's token), [`routing`] (availability, offers from the queue), [`staffing`] (who
//! may take part in a session, and staff who no longer may), [`abandon`] (closing sessions whose
//! applicant has gone), [`reads`] (what a resync may send back).

pub(crate) mod abandon;
pub(crate) mod departure;
pub(crate) mod entries;
pub(crate) mod lifecycle;
pub(crate) mod lock;
pub(crate) mod membership;
pub(crate) mod origin;
pub(crate) mod reads;
pub(crate) mod receipts;
pub(crate) mod routing;
pub(crate) mod staffing;
pub(crate) mod status;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use schemas::db::entities::{message, participant, session, submission_ack, survey_response};
use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{
    self, Action, MembershipOp, MembershipUpdate, RejectReason, StreamContent, StreamEntry,
};

use super::BridgeConfig;
use super::attendance::Attendance;
use super::disclosure::for_applicant;
use super::outbox::Outbox;
use super::view::{SessionView, Views};
use crate::audit::AuditEntry;
use crate::pipeline::rate::SenderLimits;

/// What deciding a submission came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Stored; the sequence number of the stream entry it left under the sender's id, if any.
    Accepted { seq: Option<u64> },
    /// A read: the entries from `from_seq` to `to_seq` the sender may read (notes for staff),
    /// in a page of at most `max_bytes` bytes of entries (what the sender's budget granted),
    /// answered once the batch's own entries are written.
    Resync {
        from_seq: u64,
        to_seq: u64,
        staff: bool,
        max_bytes: usize,
    },
    /// Refused: nothing was stored.
    Refused(RejectReason, String),
}

pub(crate) fn refuse(reason: RejectReason, message: impl Into<String>) -> Verdict {
    Verdict::Refused(reason, message.into())
}

/// What a decision may consult besides the view: the batch's clock, the configuration, the
/// senders' limits, the staff the batch names and the open sessions' applicants.
pub(crate) struct Context<'a> {
    pub now: DateTime<Utc>,
    pub instant: Instant,
    pub config: &'a BridgeConfig,
    pub limits: &'a SenderLimits,
    /// The staff role of each subject the batch names (joiners, transfer targets): `None` when
    /// the subject is not registered, active staff who may take part in sessions.
    pub staff: &'a HashMap<String, Option<participant::ParticipantRole>>,
    /// The team of each member of staff the batch names who has one.
    pub teams: &'a HashMap<String, String>,
    /// Every open session's applicant (how many sessions each has open).
    pub attendance: &'a Attendance,
    /// Which of the senders the batch names are active supervisors or admins: they may assign,
    /// transfer and close sessions they are not a participant of (the admin API's actions).
    pub overseers: &'a HashSet<String>,
}

impl Context<'_> {
    pub fn staff_role(&self, subject: &str) -> Option<participant::ParticipantRole> {
        self.staff.get(subject).copied().flatten()
    }

    pub fn staff_team(&self, subject: &str) -> Option<&str> {
        self.teams.get(subject).map(String::as_str)
    }
}

/// A participant row to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ParticipantChange {
    /// (Re)joined: any earlier row of the subject is replaced.
    Joined {
        session_id: String,
        subject: String,
        role: participant::ParticipantRole,
        at: DateTime<Utc>,
    },
    Left {
        session_id: String,
        subject: String,
        at: DateTime<Utc>,
    },
}

/// A participant's read horizons to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReceiptWrite {
    pub session_id: String,
    pub subject: String,
    pub delivered_seq: i64,
    pub read_seq: i64,
    /// No row was stored before: insert, not update.
    pub new: bool,
    pub at: DateTime<Utc>,
}

/// Everything a batch's decisions change, in the order they were decided.
#[derive(Default)]
pub(crate) struct Effects {
    /// Sessions opened in this batch, with their applicant's participant row (inserted first:
    /// every other row refers to its session).
    pub opened: Vec<(session::ActiveModel, participant::ActiveModel)>,
    pub participants: Vec<ParticipantChange>,
    pub entries: Vec<message::ActiveModel>,
    /// Each touched session's new last sequence number.
    pub last_seqs: HashMap<String, i64>,
    /// Sessions whose row changed beyond `last_seq` (status, team, agent, lock, closing); their
    /// state is taken from the views by [`Effects::seal`] for the writer.
    pub changed: BTreeSet<String>,
    /// The changed sessions' state as the batch left it.
    pub states: Vec<(String, SessionState)>,
    pub receipts: Vec<ReceiptWrite>,
    pub surveys: Vec<survey_response::ActiveModel>,
    /// Acknowledgements kept for submissions that leave no stream entry.
    pub kept_acks: Vec<submission_ack::ActiveModel>,
    pub audit: Vec<AuditEntry>,
    /// Staff whose availability changed, and to what.
    pub availability: Vec<(String, bool)>,
    /// Sessions closed in this batch: their views leave the cache once it commits.
    pub closed: Vec<String>,
    pub outbox: Outbox,
}

/// The columns of a session row that decisions change (besides `last_seq`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionState {
    pub status: session::SessionStatus,
    pub team: Option<String>,
    pub assigned_agent: Option<String>,
    pub lock: crate::pipeline::lock::ReplyLock,
    pub closed_at: Option<DateTime<Utc>>,
}

impl Effects {
    /// The sessions this batch opened, with their applicant.
    pub fn opened_sessions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.opened
            .iter()
            .filter_map(|(row, _)| match (&row.id, &row.applicant) {
                (sea_orm::ActiveValue::Set(id), sea_orm::ActiveValue::Set(applicant)) => {
                    Some((id.as_str(), applicant.as_str()))
                }
                _ => None,
            })
    }

    /// Whether there is nothing to store (only answers to publish).
    pub fn writes_nothing(&self) -> bool {
        self.opened.is_empty()
            && self.participants.is_empty()
            && self.entries.is_empty()
            && self.last_seqs.is_empty()
            && self.changed.is_empty()
            && self.states.is_empty()
            && self.receipts.is_empty()
            && self.surveys.is_empty()
            && self.kept_acks.is_empty()
            && self.audit.is_empty()
            && self.availability.is_empty()
            && self.closed.is_empty()
    }

    /// Takes the state of every changed session from `views`, once the batch is decided, so
    /// that it can be written while the views move on with the next batch.
    pub fn seal(&mut self, views: &Views) {
        for session_id in std::mem::take(&mut self.changed) {
            if let Some(view) = views.get(&session_id) {
                let state = SessionState {
                    status: view.status,
                    team: view.team.clone(),
                    assigned_agent: view.assigned_agent.clone(),
                    lock: view.lock.clone(),
                    closed_at: view.closed_at,
                };
                self.states.push((session_id, state));
            }
        }
    }
    /// Gives `content` the session's next sequence number and records it: its row, its audit
    /// entry (with the row's digest, so the chain covers what was said) and its stream entry.
    /// Returns the sequence number.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        view: &mut SessionView,
        now: DateTime<Utc>,
        session_id: &str,
        sender: &str,
        client_msg_id: &str,
        content: StreamContent,
        lock_epoch: Option<u64>,
    ) -> u64 {
        let is_note = matches!(content, StreamContent::Note { .. });
        let seq = view.last_seq + 1;
        view.last_seq = seq;
        // Each topic's entries name their predecessor on that topic.
        let prev_seq = if is_note {
            std::mem::replace(&mut view.last_note_seq, seq)
        } else {
            std::mem::replace(&mut view.last_public_seq, seq)
        };
        let (kind, body) = content.to_stored();
        let digest = crate::record::MessageRecord {
            session_id,
            seq,
            sender,
            kind,
            body: &body,
            client_msg_id,
            created_at: &now,
        }
        .digest();
        self.entries.push(message::ActiveModel {
            session_id: sea_orm::Set(session_id.to_owned()),
            seq: sea_orm::Set(seq),
            client_msg_id: sea_orm::Set(client_msg_id.to_owned()),
            sender: sea_orm::Set(sender.to_owned()),
            kind: sea_orm::Set(kind),
            body: sea_orm::Set(body),
            created_at: sea_orm::Set(now),
            ..Default::default()
        });
        self.last_seqs.insert(session_id.to_owned(), seq);
        let event = match &content {
            StreamContent::Event { event } => serde_json::to_value(event).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        self.audit.push(AuditEntry {
            actor: sender.to_owned(),
            action: audit_action(&content),
            session_id: Some(session_id.to_owned()),
            detail: serde_json::json!({
                "seq": seq,
                "client_msg_id": client_msg_id,
                "lock_epoch": lock_epoch,
                "event": event,
                "digest": digest,
            }),
        });
        // `messages` is what the applicant reads: it carries the applicant's form of the entry.
        let content = if is_note {
            content
        } else {
            for_applicant(content)
        };
        let entry = StreamEntry {
            v: wire::VERSION,
            session_id: session_id.to_owned(),
            seq: seq as u64,
            prev_seq: prev_seq as u64,
            at: now,
            sender: sender.to_owned(),
            content,
        };
        let topic = Topic::Session {
            session: session_id,
            kind: if is_note {
                SessionTopic::Notes
            } else {
                SessionTopic::Messages
            },
            subject: None,
        };
        self.outbox.entry(topic.to_string(), &entry);
        seq as u64
    }

    /// Tells the gateway's authorizer about a membership change.
    pub fn membership(
        &mut self,
        session_id: &str,
        subject: &str,
        role: participant::ParticipantRole,
        op: MembershipOp,
    ) {
        self.outbox.memberships.push(MembershipUpdate {
            v: wire::VERSION,
            session_id: session_id.to_owned(),
            subject: subject.to_owned(),
            role: role.into(),
            op,
        });
    }
}

/// What an entry is, for the audit trail: `message.accepted`, `note.accepted`, or the session
/// event (`session.joined`, `session.transferred`, `session.closed`, ...).
fn audit_action(content: &StreamContent) -> String {
    match content {
        StreamContent::Message { .. } => "message.accepted".to_owned(),
        StreamContent::Note { .. } => "note.accepted".to_owned(),
        StreamContent::Event { event } => format!("session.{}", event.name()),
    }
}

/// Decides a submission to an existing session. `views` holds the session's view if it exists
/// (loaded by the batch).
pub(crate) fn submission(
    views: &mut Views,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    sender: &str,
    cmid: &str,
    action: Action,
) -> Verdict {
    let Some(view) = views.get_mut(session_id) else {
        return refuse(RejectReason::UnknownSession, "no such session");
    };
    // After closing, only the applicant's survey answer (and reading) is taken.
    if view.status == session::SessionStatus::Closed
        && !matches!(action, Action::Survey { .. } | Action::Resync { .. })
    {
        return refuse(RejectReason::SessionClosed, "the session is closed");
    }
    let role = view.members.get(sender).copied();
    // Supervisors and admins assign, transfer and close from outside a session, and read it
    // (the gateway lets supervisors follow every session's topics; a resync is how they catch
    // up on what came before).
    let overseer = role.is_none()
        && ctx.overseers.contains(sender)
        && matches!(
            action,
            Action::Transfer { .. } | Action::Close { .. } | Action::Resync { .. }
        );
    if role.is_none() && !overseer && !matches!(action, Action::Join) {
        return refuse(
            RejectReason::NotAllowed,
            "you are not a participant of this session",
        );
    }
    let staff = is_staff(role) || overseer;
    let s = Subject {
        session_id,
        sender,
        cmid,
        role,
        overseer,
    };
    match action {
        Action::Resync { from_seq, to_seq } => {
            let last = view.last_seq as u64;
            let to_seq = to_seq.unwrap_or(last).min(last);
            reads::resync(ctx, sender, from_seq, to_seq, staff)
        }
        Action::Message { body } => entries::message(view, ctx, fx, &s, body),
        Action::Note { body } => entries::note(view, ctx, fx, &s, body),
        Action::Join => membership::join(view, ctx, fx, &s),
        Action::Leave => departure::leave(view, ctx, fx, &s),
        Action::Lock { op } => lock::request(view, ctx, fx, &s, op),
        Action::Receipt {
            delivered_seq,
            read_seq,
        } => receipts::receipt(view, ctx, fx, &s, delivered_seq, read_seq),
        Action::Transfer { to_agent, to_team } => {
            lifecycle::transfer(view, ctx, fx, &s, to_agent, to_team)
        }
        Action::Escalate { reason } => lifecycle::escalate(view, ctx, fx, &s, reason),
        Action::Close { reason } => lifecycle::close(view, ctx, fx, &s, reason),
        Action::Survey { rating, comment } => lifecycle::survey(view, ctx, fx, &s, rating, comment),
    }
}

/// Who submitted, where, under which id, in which role.
pub(crate) struct Subject<'a> {
    pub session_id: &'a str,
    pub sender: &'a str,
    pub cmid: &'a str,
    pub role: Option<participant::ParticipantRole>,
    /// A supervisor or admin acting on a session they are not a participant of.
    pub overseer: bool,
}

fn is_staff(role: Option<participant::ParticipantRole>) -> bool {
    matches!(
        role,
        Some(participant::ParticipantRole::Agent | participant::ParticipantRole::Supervisor)
    )
}

#[cfg(test)]
pub(crate) mod testing {
    //! A session and a context for deciding without a database.

    use super::*;

    pub fn config() -> BridgeConfig {
        BridgeConfig::default()
    }

    pub fn limits() -> SenderLimits {
        SenderLimits::new(&config())
    }

    pub fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid time")
    }

    /// What a [`Context`] borrows, owned, for tests that decide outside [`decide`].
    pub struct Fixture {
        pub config: BridgeConfig,
        pub limits: SenderLimits,
        pub staff: HashMap<String, Option<participant::ParticipantRole>>,
        pub teams: HashMap<String, String>,
        pub overseers: HashSet<String>,
        pub attendance: Attendance,
    }

    impl Fixture {
        pub fn new(staff: HashMap<String, Option<participant::ParticipantRole>>) -> Self {
            Self {
                config: config(),
                limits: limits(),
                staff,
                teams: HashMap::new(),
                overseers: HashSet::new(),
                attendance: Attendance::default(),
            }
        }

        /// The context of a batch at `now` (seconds after a fixed instant).
        pub fn at(&mut self, now: i64) -> Context<'_> {
            Context {
                now: at(now),
                instant: Instant::now(),
                config: &self.config,
                limits: &self.limits,
                staff: &self.staff,
                teams: &self.teams,
                overseers: &self.overseers,
                attendance: &self.attendance,
            }
        }
    }

    /// An active session `s-1` of applicant `kiosk` with the given staff as members.
    pub fn views(staff: &[(&str, participant::ParticipantRole)]) -> Views {
        let mut view = SessionView::opened("kiosk", "kiosk".to_owned(), None);
        view.last_seq = 1;
        view.last_public_seq = 1;
        for (subject, role) in staff {
            view.members.insert((*subject).to_owned(), *role);
        }
        if !staff.is_empty() {
            view.status = session::SessionStatus::Active;
        }
        let mut views = Views::default();
        views.insert("s-1".to_owned(), view);
        views
    }

    /// Decides `action` from `sender` at `now` (seconds after a fixed instant).
    pub fn decide(
        views: &mut Views,
        staff: &HashMap<String, Option<participant::ParticipantRole>>,
        sender: &str,
        cmid: &str,
        action: Action,
        now: i64,
    ) -> (Verdict, Effects) {
        let config = config();
        let limits = limits();
        let overseers = staff
            .iter()
            .filter(|(_, role)| *role == &Some(participant::ParticipantRole::Supervisor))
            .map(|(subject, _)| subject.clone())
            .collect();
        let (teams, attendance) = (HashMap::new(), Attendance::default());
        let mut ctx = Context {
            now: at(now),
            instant: Instant::now(),
            config: &config,
            limits: &limits,
            staff,
            teams: &teams,
            overseers: &overseers,
            attendance: &attendance,
        };
        let mut fx = Effects::default();
        let verdict = submission(views, &mut ctx, &mut fx, "s-1", sender, cmid, action);
        (verdict, fx)
    }
}
