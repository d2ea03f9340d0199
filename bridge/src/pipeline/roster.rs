//! Who takes waiting sessions: the staff who may be offered one (their team, capacity and
//! availability), the open sessions each is in, and the sessions waiting in the queue, oldest
//! first. The pipeline keeps it as it keeps the sessions' views: loaded from the database once,
//! then kept current by the decisions themselves (the pipeline writes every participant row,
//! session status and availability), and dropped after a failed batch.
//!
//! [`Roster::next_offer`] is the routing rule, a pure function of this state: the oldest
//! waiting session goes to the least loaded available member of its team with room.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use schemas::db::entities::participant::ParticipantRole;

/// A member of staff who may be offered sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seat {
    /// How they take part in the sessions they are given.
    pub role: ParticipantRole,
    pub team: Option<String>,
    pub capacity: usize,
    pub available: bool,
    /// The open sessions they take part in.
    pub sessions: HashSet<String>,
    /// When they were last given a session, so that equally loaded staff take turns.
    pub last_offered: Option<DateTime<Utc>>,
}

impl Seat {
    pub fn new(
        role: ParticipantRole,
        team: Option<String>,
        capacity: usize,
        available: bool,
    ) -> Self {
        Self {
            role,
            team,
            capacity,
            available,
            sessions: HashSet::new(),
            last_offered: None,
        }
    }

    fn has_room(&self) -> bool {
        self.available && self.sessions.len() < self.capacity
    }
}

/// What the roster knows of staff's settings as stored (team, capacity, active), re-read
/// periodically so that an admin's changes take effect without a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredSeat {
    pub subject: String,
    pub role: ParticipantRole,
    pub team: Option<String>,
    pub capacity: usize,
    pub available: bool,
}

/// Each member of staff's role and team, as last read.
pub(crate) type StaffSettings = HashMap<String, (ParticipantRole, Option<String>)>;

/// `stored` as [`StaffSettings`].
pub(crate) fn settings(stored: &[StoredSeat]) -> StaffSettings {
    stored
        .iter()
        .map(|s| (s.subject.clone(), (s.role, s.team.clone())))
        .collect()
}

/// A member of staff whose seat went or changed while they took part in sessions: the sweep
/// decides whether they may still hold each (`decide::staffing`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Departure {
    pub subject: String,
    /// Their role and team now; `None`: no longer active staff who take part in sessions.
    pub now: Option<(ParticipantRole, Option<String>)>,
    /// Whether their role changed (otherwise their team did, or their seat went).
    pub role_changed: bool,
    /// The open sessions they take part in.
    pub sessions: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Roster {
    seats: HashMap<String, Seat>,
    /// Waiting sessions, oldest first.
    waiting: BTreeSet<(DateTime<Utc>, String)>,
    /// Each waiting session's place in `waiting` and team.
    waiting_index: HashMap<String, (DateTime<Utc>, Option<String>)>,
    /// Seats that went or changed since the sweep last took them.
    departures: Vec<Departure>,
}

impl Roster {
    pub fn seat(&self, subject: &str) -> Option<&Seat> {
        self.seats.get(subject)
    }

    #[cfg(test)]
    pub fn insert_seat(&mut self, subject: String, seat: Seat) {
        self.seats.insert(subject, seat);
    }

    /// Takes staff's stored settings: new staff get a seat, disabled staff lose theirs, and
    /// team and capacity follow the table. Availability stays as decided here, because the
    /// pipeline is its only writer and the table may not show a decision that is not stored
    /// yet.
    pub fn refresh(&mut self, stored: Vec<StoredSeat>) {
        let present: HashSet<&str> = stored.iter().map(|s| s.subject.as_str()).collect();
        self.seats
            .retain(|subject, _| present.contains(subject.as_str()));
        for row in stored {
            match self.seats.get_mut(&row.subject) {
                Some(seat) => {
                    seat.role = row.role;
                    seat.team = row.team;
                    seat.capacity = row.capacity;
                }
                None => {
                    let seat = Seat::new(row.role, row.team, row.capacity, row.available);
                    self.seats.insert(row.subject, seat);
                }
            }
        }
    }

    /// Seats staff who have none yet, changing nothing else: between sweeps, so that whoever
    /// joins or is handed a session is counted, while changes of the seated wait for the sweep,
    /// which decides what they mean ([`Roster::departures`]).
    pub fn seat_newcomers(&mut self, stored: Vec<StoredSeat>) {
        for row in stored {
            self.seats
                .entry(row.subject)
                .or_insert_with(|| Seat::new(row.role, row.team, row.capacity, row.available));
        }
    }

    /// Each seated member of staff's role and team, as their seat has them.
    pub fn settings(&self) -> StaffSettings {
        self.seats
            .iter()
            .map(|(subject, seat)| (subject.clone(), (seat.role, seat.team.clone())))
            .collect()
    }

    /// The staff who, between `known` (their role and team when last read) and `stored` (now),
    /// lost their seat or changed role or team while taking part in sessions.
    pub fn departures(&self, known: &StaffSettings, stored: &[StoredSeat]) -> Vec<Departure> {
        let now: HashMap<&str, &StoredSeat> =
            stored.iter().map(|s| (s.subject.as_str(), s)).collect();
        let mut departures: Vec<Departure> = known
            .iter()
            .filter_map(|(subject, (role, team))| {
                let sessions = self.seats.get(subject).map(|seat| sorted(&seat.sessions))?;
                let departure = match now.get(subject.as_str()) {
                    None => Departure {
                        subject: subject.clone(),
                        now: None,
                        role_changed: false,
                        sessions,
                    },
                    Some(seat) if seat.role != *role || seat.team != *team => Departure {
                        subject: subject.clone(),
                        now: Some((seat.role, seat.team.clone())),
                        role_changed: seat.role != *role,
                        sessions,
                    },
                    Some(_) => return None,
                };
                (!departure.sessions.is_empty()).then_some(departure)
            })
            .collect();
        departures.sort_by(|a, b| a.subject.cmp(&b.subject));
        departures
    }

    /// Takes the departures recorded since the last call (members without a seat, found when
    /// the roster was read from the database).
    pub fn take_departures(&mut self) -> Vec<Departure> {
        std::mem::take(&mut self.departures)
    }

    /// Records that `subject`, who has no seat (no longer active staff), still takes part in
    /// `session_id` as the roster is read from the database: a departure the pipeline did not
    /// see happen (it was not running, or its roster was dropped).
    pub fn seatless(&mut self, session_id: &str, subject: &str) {
        if self.seats.contains_key(subject) {
            return;
        }
        match self
            .departures
            .iter_mut()
            .find(|d| d.subject == subject && d.now.is_none())
        {
            Some(departure) => departure.sessions.push(session_id.to_owned()),
            None => self.departures.push(Departure {
                subject: subject.to_owned(),
                now: None,
                role_changed: false,
                sessions: vec![session_id.to_owned()],
            }),
        }
    }

    /// Sets `subject`'s availability; false when they have no seat (not active staff).
    pub fn set_available(&mut self, subject: &str, available: bool) -> bool {
        match self.seats.get_mut(subject) {
            Some(seat) => {
                seat.available = available;
                true
            }
            None => false,
        }
    }

    pub fn joined(&mut self, session_id: &str, subject: &str) {
        if let Some(seat) = self.seats.get_mut(subject) {
            seat.sessions.insert(session_id.to_owned());
        }
    }

    pub fn left(&mut self, session_id: &str, subject: &str) {
        if let Some(seat) = self.seats.get_mut(subject) {
            seat.sessions.remove(session_id);
        }
    }

    /// The session ended: it counts against nobody any more.
    pub fn closed(&mut self, session_id: &str) {
        self.unqueue(session_id);
        for seat in self.seats.values_mut() {
            seat.sessions.remove(session_id);
        }
    }

    /// The session waits for an agent of `team` (any agent when none), since `since`; a session
    /// already waiting keeps its place.
    pub fn enqueue(&mut self, session_id: &str, team: Option<String>, since: DateTime<Utc>) {
        if self.waiting_index.contains_key(session_id) {
            return;
        }
        self.waiting.insert((since, session_id.to_owned()));
        self.waiting_index
            .insert(session_id.to_owned(), (since, team));
    }

    pub fn unqueue(&mut self, session_id: &str) {
        if let Some((since, _)) = self.waiting_index.remove(session_id) {
            self.waiting.remove(&(since, session_id.to_owned()));
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether anybody could take a session now (a quick test before [`Roster::next_offer`]).
    pub fn anyone_free(&self) -> bool {
        !self.waiting.is_empty() && self.seats.values().any(Seat::has_room)
    }

    /// The next offer to make: the oldest waiting session that somebody can take, and the one
    /// who takes it: available, with room, of the session's team (any team when it names
    /// none), least loaded, then the one who waited longest since their last offer, then by
    /// name (so that the choice never depends on a map's order).
    pub fn next_offer(&self) -> Option<(String, String)> {
        if !self.anyone_free() {
            return None;
        }
        for (_, session_id) in &self.waiting {
            let team = self
                .waiting_index
                .get(session_id)
                .and_then(|(_, t)| t.as_ref());
            let chosen = self
                .seats
                .iter()
                .filter(|(_, seat)| seat.has_room())
                .filter(|(_, seat)| team.is_none() || seat.team.as_ref() == team)
                .min_by(|(a_name, a), (b_name, b)| {
                    (a.sessions.len(), a.last_offered, a_name.as_str()).cmp(&(
                        b.sessions.len(),
                        b.last_offered,
                        b_name.as_str(),
                    ))
                });
            if let Some((subject, _)) = chosen {
                return Some((session_id.clone(), subject.clone()));
            }
        }
        None
    }

    /// How many seats are available, and how many of those are in at least one open session.
    pub fn staffing(&self) -> (usize, usize) {
        let available = self.seats.values().filter(|seat| seat.available);
        let (mut free, mut busy) = (0, 0);
        for seat in available {
            if seat.sessions.is_empty() {
                free += 1;
            } else {
                busy += 1;
            }
        }
        (free + busy, busy)
    }

    /// Since when the session has been waiting, if it is.
    pub fn waiting_since(&self, session_id: &str) -> Option<DateTime<Utc>> {
        self.waiting_index.get(session_id).map(|(since, _)| *since)
    }

    /// Records an offer made: the session stops waiting and counts against `subject`.
    pub fn offered(&mut self, session_id: &str, subject: &str, at: DateTime<Utc>) {
        self.unqueue(session_id);
        self.joined(session_id, subject);
        if let Some(seat) = self.seats.get_mut(subject) {
            seat.last_offered = Some(at);
        }
    }
}

/// A seat's sessions in a stable order.
fn sorted(sessions: &HashSet<String>) -> Vec<String> {
    let mut sessions: Vec<String> = sessions.iter().cloned().collect();
    sessions.sort();
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn roster(seats: &[(&str, Option<&str>, usize, bool)]) -> Roster {
        let mut roster = Roster::default();
        for (name, team, capacity, available) in seats {
            let team = team.map(str::to_owned);
            let seat = Seat::new(ParticipantRole::Agent, team, *capacity, *available);
            roster.insert_seat((*name).to_owned(), seat);
        }
        roster
    }

    /// Makes every offer there is, in order.
    fn route(roster: &mut Roster) -> Vec<(String, String)> {
        let mut offers = Vec::new();
        while let Some((session, agent)) = roster.next_offer() {
            roster.offered(&session, &agent, at(100 + offers.len() as i64));
            offers.push((session, agent));
        }
        offers
    }

    fn pairs(offers: &[(String, String)]) -> Vec<(&str, &str)> {
        offers
            .iter()
            .map(|(s, a)| (s.as_str(), a.as_str()))
            .collect()
    }

    #[test]
    fn the_oldest_session_goes_to_the_least_loaded_and_equals_take_turns() {
        let mut roster = roster(&[("ann", None, 3, true), ("bob", None, 3, true)]);
        roster.joined("s-old", "ann");
        roster.enqueue("s-2", None, at(2));
        roster.enqueue("s-1", None, at(1));
        roster.enqueue("s-3", None, at(3));
        let offers = route(&mut roster);
        // bob had none, so he gets the oldest; then both have one and ann was offered nothing
        // here yet, so she comes first; then bob, now the less loaded.
        assert_eq!(
            pairs(&offers),
            [("s-1", "bob"), ("s-2", "ann"), ("s-3", "bob")]
        );
        assert_eq!(roster.waiting(), 0);
    }

    #[test]
    fn nobody_away_or_full_or_of_another_team_is_offered_anything() {
        let mut roster = roster(&[
            ("away", Some("renewals"), 3, false),
            ("full", Some("renewals"), 1, true),
            ("other", Some("fines"), 3, true),
        ]);
        roster.joined("s-busy", "full");
        roster.enqueue("s-1", Some("renewals".to_owned()), at(1));
        assert_eq!(roster.next_offer(), None);
        // A session for no team in particular goes to anyone with room.
        roster.enqueue("s-2", None, at(2));
        assert_eq!(pairs(&route(&mut roster)), [("s-2", "other")]);
        // Room appears when the full agent's session closes; the waiting one is offered then.
        roster.closed("s-busy");
        assert_eq!(pairs(&route(&mut roster)), [("s-1", "full")]);
    }

    #[test]
    fn availability_and_stored_settings_change_who_is_offered() {
        let mut roster = roster(&[("ann", None, 1, false)]);
        roster.enqueue("s-1", None, at(1));
        assert!(!roster.anyone_free());
        assert!(roster.set_available("ann", true));
        assert!(!roster.set_available("nobody", true));
        assert!(roster.anyone_free());
        // Re-read from the table: ann's capacity drops to 0 and a new agent appears; ann's
        // availability is the roster's, not the table's.
        roster.refresh(vec![
            StoredSeat {
                subject: "ann".into(),
                role: ParticipantRole::Agent,
                team: None,
                capacity: 0,
                available: false,
            },
            StoredSeat {
                subject: "cat".into(),
                role: ParticipantRole::Agent,
                team: None,
                capacity: 2,
                available: true,
            },
        ]);
        assert!(roster.seat("ann").unwrap().available);
        assert_eq!(pairs(&route(&mut roster)), [("s-1", "cat")]);
        // Disabled staff (no longer in the table) lose their seat.
        roster.refresh(Vec::new());
        assert!(roster.seat("cat").is_none());
    }

    #[test]
    fn staff_who_lose_their_seat_or_change_while_in_sessions_depart() {
        let mut roster = roster(&[
            ("ann", Some("fines"), 2, true),
            ("bob", Some("fines"), 2, true),
            ("cat", Some("fines"), 2, true),
            ("dan", Some("fines"), 2, true),
        ]);
        for (session, agent) in [
            ("s-1", "ann"),
            ("s-2", "bob"),
            ("s-3", "cat"),
            ("s-4", "cat"),
        ] {
            roster.joined(session, agent);
        }
        let stored = |subject: &str, role, team: Option<&str>, capacity| StoredSeat {
            subject: subject.into(),
            role,
            team: team.map(str::to_owned),
            capacity,
            available: true,
        };
        let agent = |name| stored(name, ParticipantRole::Agent, Some("fines"), 2);
        let known = settings(&[agent("ann"), agent("bob"), agent("cat"), agent("dan")]);
        // ann is disabled (gone from the table); bob moves team; cat becomes a supervisor;
        // dan, in no session, moves team; a capacity change is no departure.
        let now = vec![
            stored("bob", ParticipantRole::Agent, Some("renewals"), 2),
            stored("cat", ParticipantRole::Supervisor, Some("fines"), 1),
            stored("dan", ParticipantRole::Agent, Some("renewals"), 2),
        ];
        let departures = roster.departures(&known, &now);
        let summary: Vec<(&str, Option<ParticipantRole>, bool, Vec<&str>)> = departures
            .iter()
            .map(|d| {
                (
                    d.subject.as_str(),
                    d.now.as_ref().map(|(role, _)| *role),
                    d.role_changed,
                    d.sessions.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("ann", None, false, vec!["s-1"]),
                ("bob", Some(ParticipantRole::Agent), false, vec!["s-2"]),
                (
                    "cat",
                    Some(ParticipantRole::Supervisor),
                    true,
                    vec!["s-3", "s-4"]
                ),
            ]
        );
        // Between sweeps only newcomers are seated; changes wait for the sweep.
        roster.seat_newcomers(vec![stored("eve", ParticipantRole::Agent, None, 1)]);
        assert!(roster.seat("eve").is_some() && roster.seat("ann").is_some());
        roster.refresh(now);
        assert!(
            roster.seat("ann").is_none(),
            "a disabled member loses the seat"
        );
        assert_eq!(roster.departures(&settings(&[]), &[]), []);
        // Read from the database: a participant with no seat is a departure too.
        roster.seatless("s-9", "zed");
        roster.seatless("s-8", "zed");
        roster.seatless("s-7", "bob");
        let departures = roster.take_departures();
        assert_eq!(departures.len(), 1);
        assert_eq!(departures[0].sessions, ["s-9", "s-8"]);
        assert!(roster.take_departures().is_empty(), "taken once");
    }

    #[test]
    fn a_session_waits_once_and_leaves_the_queue_when_taken_by_hand() {
        let mut roster = roster(&[]);
        roster.enqueue("s-1", None, at(5));
        roster.enqueue("s-1", None, at(9));
        assert_eq!(roster.waiting(), 1);
        roster.unqueue("s-1");
        assert_eq!(roster.waiting(), 0);
    }
}
