//! Resync: a page of a session's stored stream, for a client that missed entries. An applicant's
//! page holds the applicant's form of each entry (`disclosure`), whatever the row holds.

use schemas::db::entities::message;
use schemas::wire::{self, Resync, StreamEntry};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::PipelineError;
use super::disclosure::for_applicant;
use super::input::stored_content;

/// What a resync asks for, once decided.
pub(crate) struct PageRequest<'a> {
    pub session_id: &'a str,
    pub cmid: &'a str,
    /// Staff read notes; applicants never do, not even through a resync.
    pub staff: bool,
    pub from_seq: u64,
    pub to_seq: u64,
    /// The session's last entry when the request was decided.
    pub last_seq: u64,
    /// Most bytes of entries the sender's budget granted this page (at least one entry is
    /// always sent).
    pub max_bytes: usize,
}

/// Rows read in the first run of a page; each next run reads twice as many.
const FIRST_RUN: usize = 16;

/// How large a page may be.
#[derive(Clone, Copy)]
pub(crate) struct PageLimits {
    pub entries: usize,
    /// Bytes of entries: the configured page size, within the gateway's packet limit.
    pub bytes: usize,
}

impl PageLimits {
    pub fn new(entries: usize, configured_bytes: usize, packet_limit: usize) -> Self {
        // Room left in a packet for the reply's envelope, topic and properties.
        const ENVELOPE: usize = 1024;
        Self {
            entries: entries.max(1),
            bytes: configured_bytes.min(packet_limit.saturating_sub(ENVELOPE)),
        }
    }
}

/// One page of the entries asked for that the requester may read, each with its `prev_seq` on
/// its own topic; at least one entry, so that every page makes progress, and `next_from_seq`
/// when the range goes on.
pub(crate) async fn page(
    txn: &impl ConnectionTrait,
    request: &PageRequest<'_>,
    limits: PageLimits,
) -> Result<Resync, PipelineError> {
    let session_id = request.session_id;
    let from_seq = i64::try_from(request.from_seq).unwrap_or(i64::MAX);
    let to_seq = i64::try_from(request.to_seq).unwrap_or(i64::MAX);
    let in_session = || message::Entity::find().filter(message::Column::SessionId.eq(session_id));
    // The previous entry on each topic before the range.
    let before = |is_note: bool| {
        let kind = if is_note {
            message::Column::Kind.eq(message::MessageKind::Note)
        } else {
            message::Column::Kind.ne(message::MessageKind::Note)
        };
        in_session()
            .filter(message::Column::Seq.lt(from_seq))
            .filter(kind)
            .order_by_desc(message::Column::Seq)
            .one(txn)
    };
    let mut prev_public = before(false).await?.map_or(0, |m| m.seq as u64);
    let mut prev_note = if request.staff {
        before(true).await?.map_or(0, |m| m.seq as u64)
    } else {
        0
    };
    // Read in growing runs rather than a page's worth of rows at once: when the entries are
    // large, the byte limit ends the page after a few of them, and a flood of resyncs must not
    // cost reading (and decoding) rows that are never sent.
    let rows_from = |cursor: i64, limit: u64| {
        let mut query = in_session()
            .filter(message::Column::Seq.gte(cursor))
            .filter(message::Column::Seq.lte(to_seq));
        if !request.staff {
            query = query.filter(message::Column::Kind.ne(message::MessageKind::Note));
        }
        query
            .order_by_asc(message::Column::Seq)
            .limit(limit)
            .all(txn)
    };
    let max_bytes = limits.bytes.min(request.max_bytes);
    let (mut entries, mut used, mut next_from_seq) = (Vec::new(), 0, None);
    let (mut cursor, mut run, mut taken) = (from_seq, FIRST_RUN, 0);
    'page: loop {
        // One row beyond the page's entries, to know whether the range goes on.
        let want = run.min(limits.entries - taken + 1);
        let rows = rows_from(cursor, want as u64).await?;
        let ended = rows.len() < want;
        for row in rows {
            if taken == limits.entries {
                next_from_seq = Some(row.seq as u64);
                break 'page;
            }
            taken += 1;
            cursor = row.seq + 1;
            let is_note = row.kind == message::MessageKind::Note;
            let seq = row.seq as u64;
            let prev = if is_note { prev_note } else { prev_public };
            if let Some(content) = stored_content(&row) {
                let content = if request.staff {
                    content
                } else {
                    for_applicant(content)
                };
                let entry = StreamEntry {
                    v: wire::VERSION,
                    session_id: session_id.to_owned(),
                    seq,
                    prev_seq: prev,
                    at: row.created_at,
                    sender: row.sender,
                    content,
                };
                let size = serde_json::to_vec(&entry).map_or(0, |bytes| bytes.len()) + 1;
                if !entries.is_empty() && used + size > max_bytes {
                    next_from_seq = Some(seq);
                    break 'page;
                }
                used += size;
                entries.push(entry);
            }
            if is_note {
                prev_note = seq;
            } else {
                prev_public = seq;
            }
        }
        if ended {
            break;
        }
        run = (run * 2).min(limits.entries + 1);
    }
    Ok(Resync {
        v: wire::VERSION,
        client_msg_id: request.cmid.to_owned(),
        session_id: session_id.to_owned(),
        entries,
        last_seq: request.last_seq,
        next_from_seq,
    })
}
