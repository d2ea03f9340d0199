//! Every route limited per sender: a signed-in caller by their token's subject, anyone else by
//! their client address, each with a token bucket (`limits::Allowance`). Over the limit, a
//! request is answered 429 with `Retry-After` before any route sees it, so that no route, the
//! costly ones (statistics, exports, verification) included, can be called at the speed of the
//! network. Sign-in and applicant tokens keep their own, tighter limits on top.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use limits::Allowance;

use crate::{AdminState, Problem};

/// Who a request counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Sender {
    /// The subject of a valid bearer token.
    Subject(String),
    /// The client address of a request without one: an IPv4 address, or an IPv6 address's
    /// /64 (one host usually holds a whole /64, so single addresses would not limit it).
    Address(IpAddr),
}

impl Sender {
    /// The sender of a request from `peer` that carries `token` (verified by `verify`).
    pub(crate) fn of(
        token: Option<&str>,
        peer: IpAddr,
        verify: impl FnOnce(&str) -> Option<String>,
    ) -> Self {
        match token.and_then(verify) {
            Some(subject) => Self::Subject(subject),
            None => Self::Address(network_of(peer)),
        }
    }
}

fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// The allowances of signed-in callers and of addresses.
pub(crate) struct SenderLimits {
    per_subject: Allowance<String>,
    per_address: Allowance<IpAddr>,
}

impl SenderLimits {
    /// `per_subject` and `per_address` requests a minute, each allowed as a burst.
    pub(crate) fn new(per_subject: NonZeroU32, per_address: NonZeroU32) -> Self {
        Self {
            per_subject: Allowance::per_minute(per_subject),
            per_address: Allowance::per_minute(per_address),
        }
    }

    /// Takes one request from `sender`'s allowance at `now`, or says how long to wait.
    pub(crate) fn take_at(&self, sender: &Sender, now: Instant) -> Result<(), Duration> {
        match sender {
            Sender::Subject(subject) => self.per_subject.take_at(subject, now),
            Sender::Address(address) => self.per_address.take_at(address, now),
        }
    }

    /// Forgets senders whose buckets are full again.
    pub(crate) fn forget_idle(&self) {
        self.per_subject.forget_idle();
        self.per_address.forget_idle();
    }
}

/// The middleware: answers 429 to a sender over their allowance, passes the rest on.
pub(crate) async fn limit(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(peer)| peer.ip());
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let sender = Sender::of(token, peer, |token| {
        state.tokens.verify(token).ok().map(|claims| claims.subject)
    });
    match state.http.senders.take_at(&sender, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => too_many(wait).into_response(),
    }
}

/// The answer to a sender over their allowance.
pub(crate) fn too_many(wait: Duration) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many requests",
    )
    .detail("this sender has made too many requests; wait as Retry-After says")
    .retry_after(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn senders_are_subjects_when_signed_in_and_networks_otherwise() {
        let here: IpAddr = [192, 0, 2, 1].into();
        let v6: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let valid = |token: &str| (token == "good").then(|| "ann".to_owned());
        // (token, peer, sender)
        let rows: &[(Option<&str>, IpAddr, Sender)] = &[
            (Some("good"), here, Sender::Subject("ann".to_owned())),
            (Some("forged"), here, Sender::Address(here)),
            (None, here, Sender::Address(here)),
            (None, v6, Sender::Address("2001:db8:1:2::".parse().unwrap())),
            (None, mapped, Sender::Address(here)),
        ];
        for (token, peer, expected) in rows {
            assert_eq!(
                &Sender::of(*token, *peer, valid),
                expected,
                "{token:?} {peer}"
            );
        }
    }

    #[test]
    fn each_sender_has_its_own_allowance() {
        let limits = SenderLimits::new(nz(2), nz(1));
        let now = Instant::now();
        let ann = Sender::Subject("ann".to_owned());
        let here = Sender::Address([192, 0, 2, 1].into());
        assert!(limits.take_at(&ann, now).is_ok());
        assert!(limits.take_at(&ann, now).is_ok());
        let wait = limits.take_at(&ann, now).expect_err("over the limit");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(limits.take_at(&here, now).is_ok(), "addresses do not share");
        assert!(limits.take_at(&here, now).is_err());
        assert!(
            limits.take_at(&ann, now + Duration::from_secs(30)).is_ok(),
            "the bucket fills again"
        );
    }
}
