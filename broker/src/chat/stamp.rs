//! The submission stamp: what the gateway adds to everything the chat pipeline is to decide
//! (an open request, a submission, a staff submission) before it is routed there.
//!
//! Every such publish gets the time the gateway received it (`RECEIVED_AT_PROPERTY`, Unix
//! milliseconds): the pipeline counts a submission's wait from there, queueing in the gateway
//! included, to refuse what waited too long instead of deciding it late.
//!
//! An open request also carries what the token says about the applicant. The admin API issues
//! applicant tokens for a channel (`kiosk` for a kiosk's credential, `phone` for the public
//! path) and, from a kiosk with a team, that team. An applicant must not choose them itself: a
//! phone could otherwise claim to be a kiosk, or route itself to any team. So on every open
//! request (`cc/v1/open/{subject}`) the gateway sets the MQTT 5 user properties
//! [`CHANNEL_PROPERTY`] and [`TEAM_PROPERTY`] from the verified token, after removing any a
//! client set, and the pipeline takes them over the payload's `channel` and `topic`. (Under
//! `cc/` the gateway removes a client's user properties before any hook runs; the removal here
//! holds whatever comes before.)

use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{CHANNEL_PROPERTY, RECEIVED_AT_PROPERTY, TEAM_PROPERTY};

use crate::acl::in_protocol;
use crate::hooks::{Hook, Publish, Routing};
use crate::identity::Identity;

/// Stamps what the pipeline decides with its arrival time, and open requests with the token's
/// channel and team. Publishes and wills alike: a will on a submission topic is a submission.
pub struct SubmissionStamp;

impl Hook for SubmissionStamp {
    fn on_publish(&self, publish: &mut Publish<'_>) -> Routing {
        if !in_protocol(publish.topic) || !is_submission(publish.topic) {
            return Routing::Route;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let (publisher, topic) = (publish.publisher, publish.topic);
        let properties = publish.user_properties_mut();
        properties.push((RECEIVED_AT_PROPERTY.to_owned(), now.to_string()));
        stamp_open_request(publisher, topic, properties);
        Routing::Route
    }
}

/// Whether `topic` carries something for the chat pipeline to decide (an open request, a
/// submission or a staff submission).
fn is_submission(topic: &str) -> bool {
    matches!(
        Topic::parse(topic),
        Some(
            Topic::Open { .. }
                | Topic::StaffSubmit { .. }
                | Topic::Session {
                    kind: SessionTopic::Submit,
                    ..
                }
        )
    )
}

/// Sets, on a publish to `topic` by `identity`, the properties the pipeline reads an open
/// request's channel and team from: removed whatever the client sent, then set from the
/// token's claims when it has them. Other topics are left as they are.
fn stamp_open_request(
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

    #[test]
    fn the_hook_stamps_what_the_pipeline_decides_and_nothing_else() {
        let identity = applicant(Some(Channel::Kiosk), Some("licensing"));
        // (topic, the keys of the user properties after the hook)
        let rows: [(&str, &[&str]); 6] = [
            (
                "cc/v1/open/ap-1",
                &[RECEIVED_AT_PROPERTY, CHANNEL_PROPERTY, TEAM_PROPERTY],
            ),
            ("cc/v1/sessions/s-1/submit/ap-1", &[RECEIVED_AT_PROPERTY]),
            ("cc/v1/staff/agent-1/submit", &[RECEIVED_AT_PROPERTY]),
            ("cc/v1/sessions/s-1/messages", &[]),
            ("cc/v1/memberships", &[]),
            ("sensors/open/ap-1", &[]),
        ];
        for (topic, keys) in rows {
            let mut properties = None;
            let mut publish = Publish::new(
                &identity,
                topic,
                b"{}",
                1,
                false,
                crate::hooks::Origin::Client,
                &mut properties,
            );
            assert_eq!(SubmissionStamp.on_publish(&mut publish), Routing::Route);
            let stamped: Vec<&str> = publish
                .user_properties()
                .iter()
                .map(|(key, _)| key.as_str())
                .collect();
            assert_eq!(stamped, keys, "{topic}");
        }
    }
}
