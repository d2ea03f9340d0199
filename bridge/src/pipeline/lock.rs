//! Reply locks: who may answer the applicant right now.
//!
//! A session's lock is a lease: a holder, an expiry, and a fencing epoch that grows with every
//! acquisition. In exclusive mode only the holder's replies are accepted, and each accepted reply
//! is stored with the epoch it was accepted under, so a reply from a holder whose lease had
//! lapsed can never be confused with one from the current holder. The state lives on the session
//! row (so a transfer moves conversation and lock in one update); this module is the pure state
//! machine, with time passed in.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// One session's lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyLock {
    pub holder: Option<String>,
    pub epoch: u64,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What an agent (or, for `Takeover`, a supervisor) asks of the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockRequest<'a> {
    Acquire(&'a str),
    Release(&'a str),
    Renew(&'a str),
    /// A supervisor takes the lock whoever holds it; that they are a supervisor is checked by
    /// the caller.
    Takeover(&'a str),
    /// Time passes: a lapsed lease is freed.
    Expire,
}

/// What changed; each change is persisted, published as lock state and audited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockChange {
    Acquired {
        holder: String,
        epoch: u64,
    },
    Renewed {
        holder: String,
    },
    Released {
        holder: String,
    },
    TakenOver {
        from: Option<String>,
        to: String,
        epoch: u64,
    },
    Expired {
        holder: String,
    },
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("{holder} holds the reply lock")]
    Held { holder: String },
    #[error("the reply lock is not held by the sender")]
    NotHeld,
}

impl ReplyLock {
    /// The holder whose lease has not lapsed at `now`.
    pub fn live_holder(&self, now: DateTime<Utc>) -> Option<&str> {
        match (&self.holder, self.expires_at) {
            (Some(holder), Some(expires)) if now < expires => Some(holder),
            _ => None,
        }
    }

    /// Applies `request` at `now` with leases of `lease`.
    pub fn apply(
        &mut self,
        request: LockRequest<'_>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<LockChange, LockError> {
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let live = self.live_holder(now).map(str::to_owned);
        match request {
            LockRequest::Acquire(agent) => match live {
                Some(holder) if holder == agent => {
                    self.expires_at = Some(until);
                    Ok(LockChange::Renewed { holder })
                }
                Some(holder) => Err(LockError::Held { holder }),
                None => {
                    self.epoch += 1;
                    self.holder = Some(agent.to_owned());
                    self.expires_at = Some(until);
                    Ok(LockChange::Acquired {
                        holder: agent.to_owned(),
                        epoch: self.epoch,
                    })
                }
            },
            LockRequest::Renew(agent) => match live {
                Some(holder) if holder == agent => {
                    self.expires_at = Some(until);
                    Ok(LockChange::Renewed { holder })
                }
                // A lapsed lease cannot be renewed: the agent acquires again, under a new epoch.
                _ => Err(LockError::NotHeld),
            },
            LockRequest::Release(agent) => match &self.holder {
                Some(holder) if holder == agent => {
                    self.holder = None;
                    self.expires_at = None;
                    Ok(LockChange::Released {
                        holder: agent.to_owned(),
                    })
                }
                _ => Err(LockError::NotHeld),
            },
            LockRequest::Takeover(supervisor) => {
                self.epoch += 1;
                let from = self.holder.replace(supervisor.to_owned());
                self.expires_at = Some(until);
                Ok(LockChange::TakenOver {
                    from,
                    to: supervisor.to_owned(),
                    epoch: self.epoch,
                })
            }
            LockRequest::Expire => match (&self.holder, live) {
                (Some(holder), None) => {
                    let holder = holder.clone();
                    self.holder = None;
                    self.expires_at = None;
                    Ok(LockChange::Expired { holder })
                }
                _ => Ok(LockChange::Unchanged),
            },
        }
    }

    /// May `agent` reply at `now` (exclusive mode)? The epoch to store with the reply if so.
    pub fn may_reply(&self, agent: &str, now: DateTime<Utc>) -> Result<u64, LockError> {
        match self.live_holder(now) {
            Some(holder) if holder == agent => Ok(self.epoch),
            Some(holder) => Err(LockError::Held {
                holder: holder.to_owned(),
            }),
            None => Err(LockError::NotHeld),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid timestamp")
    }

    fn held(holder: &str, epoch: u64, until: i64) -> ReplyLock {
        ReplyLock {
            holder: Some(holder.to_owned()),
            epoch,
            expires_at: Some(at(until)),
        }
    }

    #[test]
    fn transitions() {
        use LockRequest::*;
        let free = ReplyLock::default();
        // (state before, request, time, expected result, state after)
        type Row<'a> = (
            ReplyLock,
            LockRequest<'a>,
            i64,
            Result<LockChange, LockError>,
            ReplyLock,
        );
        let rows: Vec<Row> = vec![
            (
                free.clone(),
                Acquire("ann"),
                0,
                Ok(LockChange::Acquired {
                    holder: "ann".into(),
                    epoch: 1,
                }),
                held("ann", 1, 30),
            ),
            (
                held("ann", 1, 30),
                Acquire("bob"),
                10,
                Err(LockError::Held {
                    holder: "ann".into(),
                }),
                held("ann", 1, 30),
            ),
            (
                held("ann", 1, 30),
                Acquire("ann"),
                10,
                Ok(LockChange::Renewed {
                    holder: "ann".into(),
                }),
                held("ann", 1, 40),
            ),
            // A lapsed lease is free for anyone, under a new epoch.
            (
                held("ann", 1, 30),
                Acquire("bob"),
                30,
                Ok(LockChange::Acquired {
                    holder: "bob".into(),
                    epoch: 2,
                }),
                held("bob", 2, 60),
            ),
            (
                held("ann", 1, 30),
                Renew("ann"),
                20,
                Ok(LockChange::Renewed {
                    holder: "ann".into(),
                }),
                held("ann", 1, 50),
            ),
            (
                held("ann", 1, 30),
                Renew("ann"),
                31,
                Err(LockError::NotHeld),
                held("ann", 1, 30),
            ),
            (
                held("ann", 1, 30),
                Renew("bob"),
                5,
                Err(LockError::NotHeld),
                held("ann", 1, 30),
            ),
            (
                held("ann", 1, 30),
                Release("ann"),
                5,
                Ok(LockChange::Released {
                    holder: "ann".into(),
                }),
                ReplyLock {
                    epoch: 1,
                    ..free.clone()
                },
            ),
            (
                held("ann", 1, 30),
                Release("bob"),
                5,
                Err(LockError::NotHeld),
                held("ann", 1, 30),
            ),
            (
                held("ann", 1, 30),
                Takeover("sue"),
                5,
                Ok(LockChange::TakenOver {
                    from: Some("ann".into()),
                    to: "sue".into(),
                    epoch: 2,
                }),
                held("sue", 2, 35),
            ),
            (
                held("ann", 1, 30),
                Expire,
                29,
                Ok(LockChange::Unchanged),
                held("ann", 1, 30),
            ),
            (
                held("ann", 1, 30),
                Expire,
                30,
                Ok(LockChange::Expired {
                    holder: "ann".into(),
                }),
                ReplyLock {
                    epoch: 1,
                    ..free.clone()
                },
            ),
            (
                free.clone(),
                Expire,
                0,
                Ok(LockChange::Unchanged),
                free.clone(),
            ),
        ];
        for (before, request, now, expected, after) in rows {
            let mut lock = before.clone();
            let result = lock.apply(request, at(now), LEASE);
            assert_eq!(result, expected, "{before:?} + {request:?} at {now}");
            assert_eq!(lock, after, "{before:?} + {request:?} at {now}");
        }
    }

    #[test]
    fn only_the_live_holder_may_reply_and_replies_carry_the_epoch() {
        let lock = held("ann", 7, 30);
        assert_eq!(lock.may_reply("ann", at(10)), Ok(7));
        assert_eq!(
            lock.may_reply("bob", at(10)),
            Err(LockError::Held {
                holder: "ann".into()
            })
        );
        assert_eq!(
            lock.may_reply("ann", at(30)),
            Err(LockError::NotHeld),
            "a lapsed lease"
        );
        assert_eq!(
            ReplyLock::default().may_reply("ann", at(0)),
            Err(LockError::NotHeld)
        );
    }

    #[test]
    fn epochs_never_repeat_across_holders() {
        let mut lock = ReplyLock::default();
        let mut epochs = Vec::new();
        let mut now = 0;
        for (n, agent) in ["ann", "bob", "ann", "cat"].iter().enumerate() {
            if let Ok(LockChange::Acquired { epoch, .. }) =
                lock.apply(LockRequest::Acquire(agent), at(now), LEASE)
            {
                epochs.push(epoch);
            }
            // Let the lease lapse before the next agent, and take it over once.
            now += 31;
            if n == 1 {
                if let Ok(LockChange::TakenOver { epoch, .. }) =
                    lock.apply(LockRequest::Takeover("sue"), at(now), LEASE)
                {
                    epochs.push(epoch);
                }
                now += 31;
            }
        }
        assert_eq!(epochs, vec![1, 2, 3, 4, 5]);
    }
}
