//! Where an applicant writes from: the channel and team of an open request are the ones the
//! applicant's token was issued for, not the ones the applicant claims.
//!
//! The admin API issues applicant tokens with a `channel` (`kiosk` for a kiosk's credential,
//! `phone` on the public path) and, for a kiosk with a team, a `team`; the gateway copies them
//! onto the open request as user properties (`wire::CHANNEL_PROPERTY`, `wire::TEAM_PROPERTY`),
//! removing any the client set. When the channel is there, the token decides both: the
//! request's own `channel` and `topic` are ignored, and no team property means no team. A
//! token minted without them (`courtchat token`) leaves the request as sent.

use std::str::FromStr;

use schemas::wire::{Channel, OpenSession};

/// `request` as the pipeline decides it, given the channel and team properties the gateway
/// set on it (`None`: not set).
pub(crate) fn as_issued(
    mut request: OpenSession,
    channel: Option<&str>,
    team: Option<&str>,
) -> OpenSession {
    let Some(channel) = channel else {
        return request;
    };
    match Channel::from_str(channel) {
        Ok(channel) => request.channel = channel,
        // Only the gateway sets it, from a verified token: a value it could not have written.
        Err(unknown) => {
            tracing::warn!(%unknown, "an open request's channel property names no channel; the request's channel stands");
        }
    }
    request.topic = team
        .filter(|team| {
            let valid = schemas::wire::check_name("team", team).is_ok();
            if !valid {
                tracing::warn!("an open request's team property is not a name; no team");
            }
            valid
        })
        .map(str::to_owned);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(channel: Channel, topic: Option<&str>) -> OpenSession {
        OpenSession {
            v: 1,
            client_msg_id: "o".to_owned(),
            channel,
            topic: topic.map(str::to_owned),
            first_message: Some("hello".to_owned()),
        }
    }

    /// (request's channel and topic, channel property, team property, decided channel and team)
    type Row = (
        (Channel, Option<&'static str>),
        Option<&'static str>,
        Option<&'static str>,
        (Channel, Option<&'static str>),
    );

    #[test]
    fn the_token_decides_channel_and_team_when_the_gateway_says_them() {
        use Channel::{Kiosk, Phone, Web};
        let rows: [Row; 7] = [
            // A phone claiming to be a kiosk of another team is a phone without a team.
            (
                (Kiosk, Some("other-team")),
                Some("phone"),
                None,
                (Phone, None),
            ),
            // A kiosk's session has the kiosk's team, whatever the request says.
            (
                (Phone, Some("other-team")),
                Some("kiosk"),
                Some("licensing"),
                (Kiosk, Some("licensing")),
            ),
            (
                (Kiosk, None),
                Some("kiosk"),
                Some("licensing"),
                (Kiosk, Some("licensing")),
            ),
            // A kiosk without a team: none.
            (
                (Kiosk, Some("renewals")),
                Some("kiosk"),
                None,
                (Kiosk, None),
            ),
            // A token without the claims: the request as sent.
            ((Web, Some("renewals")), None, None, (Web, Some("renewals"))),
            // A team without a channel is not something the gateway writes: ignored.
            (
                (Web, Some("renewals")),
                None,
                Some("licensing"),
                (Web, Some("renewals")),
            ),
            // Values the gateway could not have written do not open a way in.
            (
                (Phone, Some("renewals")),
                Some("satellite"),
                Some("bad\u{202E}team"),
                (Phone, None),
            ),
        ];
        for ((channel, topic), channel_property, team_property, (want_channel, want_team)) in rows {
            let decided = as_issued(request(channel, topic), channel_property, team_property);
            assert_eq!(
                (decided.channel, decided.topic.as_deref()),
                (want_channel, want_team),
                "{channel:?} {topic:?} / {channel_property:?} {team_property:?}"
            );
            assert_eq!(decided.first_message.as_deref(), Some("hello"));
        }
    }
}
