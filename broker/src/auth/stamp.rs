//! What the token says about an applicant, handed to the chat pipeline with the open request.
//!
//! The admin API issues applicant tokens for a channel (`kiosk` for a kiosk's credential,
//! `phone` for the public path) and, from a kiosk with a team, that team. An applicant must not
//! choose them itself: a phone could otherwise claim to be a kiosk, or route itself to any team.
//! So on every open request (`cc/v1/open/{subject}`) the gateway sets the MQTT 5 user
//! properties [`CHANNEL_PROPERTY`] and [`TEAM_PROPERTY`] from the verified token, after removing
//! any a client set, and the pipeline takes them over the payload's `channel` and `topic`.

use schemas::topics::Topic;
use schemas::wire::{CHANNEL_PROPERTY, TEAM_PROPERTY};

use crate::identity::Identity;

/// Sets, on a publish to `topic` by `identity`, the properties the pipeline reads an open
/// request's channel and team from: removed whatever the client sent, then set from the
/// token's claims when it has them. Other topics are left as they are.
pub(crate) fn stamp_open_request(
    identity: &Identity,
    topic: &str,
    user_properties: &mut Vec<(String, String)>,
) {
    if !matches!(Topic::parse(topic), Some(Topic::Open { .. })) {
        return;
    }
    user_properties.retain(|(key, _)| key != CHANNEL_PROPERTY && key != TEAM_PROPERTY);
    if let Some(channel) = identity.token.channel {
        user_properties.push((CHANNEL_PROPERTY.to_owned(), channel.as_str().to_owned()));
    }
    if let Some(team) = &identity.token.team {
        user_properties.push((TEAM_PROPERTY.to_owned(), team.clone()));
    }
}

#[cfg(test)]
mod tests {
    use schemas::wire::Channel;

    use super::*;
    use crate::identity::{Role, TokenDetails};

    fn applicant(channel: Option<Channel>, team: Option<&str>) -> Identity {
        Identity {
            subject: "ap-1".to_owned(),
            username: None,
            role: Role::Applicant,
            anonymous: false,
            expires_at: None,
            issued_at: None,
            token: TokenDetails {
                id: None,
                channel,
                team: team.map(str::to_owned),
            },
        }
    }

    fn forged() -> Vec<(String, String)> {
        vec![
            (CHANNEL_PROPERTY.to_owned(), "kiosk".to_owned()),
            (TEAM_PROPERTY.to_owned(), "other-team".to_owned()),
            ("courtchat-received-at".to_owned(), "1".to_owned()),
        ]
    }

    #[test]
    fn open_requests_carry_the_tokens_channel_and_team_and_nothing_forged() {
        let received = ("courtchat-received-at".to_owned(), "1".to_owned());
        let prop = |key: &str, value: &str| (key.to_owned(), value.to_owned());
        // (identity, topic, properties after stamping)
        let rows = [
            (
                applicant(Some(Channel::Kiosk), Some("licensing")),
                "cc/v1/open/ap-1",
                vec![
                    received.clone(),
                    prop(CHANNEL_PROPERTY, "kiosk"),
                    prop(TEAM_PROPERTY, "licensing"),
                ],
            ),
            (
                applicant(Some(Channel::Phone), None),
                "cc/v1/open/ap-1",
                vec![received.clone(), prop(CHANNEL_PROPERTY, "phone")],
            ),
            // A token without the claims (`courtchat token`): the pipeline reads the payload.
            (
                applicant(None, None),
                "cc/v1/open/ap-1",
                vec![received.clone()],
            ),
            // Other topics are not open requests: left alone.
            (
                applicant(Some(Channel::Phone), None),
                "cc/v1/sessions/s-1/submit/ap-1",
                forged(),
            ),
        ];
        for (identity, topic, expected) in rows {
            let mut properties = forged();
            stamp_open_request(&identity, topic, &mut properties);
            assert_eq!(properties, expected, "{topic} {:?}", identity.token);
        }
    }
}
