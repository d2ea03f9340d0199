//! The ACL as a specification: every role against every kind of topic of the protocol.

use super::rules::{covers, overlaps};
use super::*;

/// Column order of the expectation arrays: applicant, agent, supervisor, admin, service,
/// anonymous.
const ROLES: [Role; 6] = Role::ALL;
const T: bool = true;
const F: bool = false;

fn identity(role: Role) -> Identity {
    Identity {
        subject: "me".to_owned(),
        username: Some("me-user".to_owned()),
        role,
        anonymous: role == Role::Anonymous,
        expires_at: None,
        issued_at: None,
        token: crate::identity::TokenDetails::default(),
    }
}

/// "me" belongs to session s1 (as applicant or agent); nobody is a member of s2.
fn chain(rules: Vec<StaticRule>) -> AclChain {
    let memberships = Memberships::default();
    memberships.join("s1", "me", Role::Applicant);
    memberships.join("s1", "other", Role::Agent);
    AclChain::standard(
        &AclConfig {
            rules,
            ..AclConfig::default()
        },
        memberships,
    )
}

#[rustfmt::skip]
const PUBLISH: &[(&str, [bool; 6])] = &[
    //                                        applicant agent supervisor admin service anonymous
    ("cc/v1/sessions/s1/messages",            [F, F, F, F, T, F]),
    ("cc/v1/sessions/s1/notes",               [F, F, F, F, T, F]),
    ("cc/v1/sessions/s1/lock",                [F, F, F, F, T, F]),
    ("cc/v1/sessions/s1/receipts",            [F, F, F, F, T, F]),
    ("cc/v1/sessions/s1/submit/me",           [T, T, T, F, T, F]),
    ("cc/v1/sessions/s1/submit/other",        [F, F, F, F, T, F]),
    // Agents ask to join a session they are not in through its submit topic.
    ("cc/v1/sessions/s2/submit/me",           [F, T, T, F, T, F]),
    ("cc/v1/sessions/s1/typing/me",           [T, T, T, F, T, F]),
    ("cc/v1/sessions/s2/typing/me",           [F, F, T, F, T, F]),
    ("cc/v1/sessions/s1/note-typing/me",      [F, T, T, F, T, F]),
    ("cc/v1/sessions/s1/presence/me",         [T, T, T, F, T, F]),
    ("cc/v1/sessions/s1/presence/other",      [F, F, F, F, T, F]),
    ("cc/v1/open/me",                         [T, F, F, F, T, F]),
    ("cc/v1/open/other",                      [F, F, F, F, T, F]),
    ("cc/v1/clients/me/ack",                  [F, F, F, F, T, F]),
    ("cc/v1/queue",                           [F, F, F, F, T, F]),
    // Staff say whether they take sessions; only the pipeline hands them out.
    ("cc/v1/staff/me/submit",                 [F, T, T, F, T, F]),
    ("cc/v1/staff/other/submit",              [F, F, F, F, T, F]),
    ("cc/v1/staff/me/assignments",            [F, F, F, F, T, F]),
    ("cc/v1/memberships",                     [F, F, F, F, T, F]),
    ("cc/v1/unknown",                         [F, F, F, F, F, F]),
    ("sandbox/anything",                      [F, F, F, F, F, F]),
];

#[rustfmt::skip]
const SUBSCRIBE: &[(&str, [bool; 6])] = &[
    //                                        applicant agent supervisor admin service anonymous
    ("cc/v1/sessions/s1/messages",            [T, T, T, F, T, F]),
    ("cc/v1/sessions/s2/messages",            [F, F, T, F, T, F]),
    ("cc/v1/sessions/s1/notes",               [F, T, T, F, T, F]),
    ("cc/v1/sessions/s1/lock",                [F, T, T, F, T, F]),
    ("cc/v1/sessions/s1/receipts",            [T, T, T, F, T, F]),
    ("cc/v1/sessions/s2/receipts",            [F, F, T, F, T, F]),
    ("cc/v1/sessions/s1/submit/+",            [F, F, F, F, T, F]),
    ("cc/v1/sessions/s1/submit/me",           [F, F, F, F, T, F]),
    ("cc/v1/sessions/s1/typing/+",            [T, T, T, F, T, F]),
    ("cc/v1/sessions/s1/note-typing/+",       [F, T, T, F, T, F]),
    ("cc/v1/sessions/s1/presence/+",          [T, T, T, F, T, F]),
    ("cc/v1/sessions/s2/presence/+",          [F, F, T, F, T, F]),
    // Wildcards are allowed only where every topic they reach is allowed.
    ("cc/v1/sessions/s1/+",                   [F, T, T, F, T, F]),
    ("cc/v1/sessions/s1/#",                   [F, F, F, F, T, F]),
    ("cc/v1/sessions/+/messages",             [F, F, T, F, T, F]),
    ("cc/v1/sessions/+/submit/+",             [F, F, F, F, T, F]),
    ("cc/v1/clients/me/ack",                  [T, T, T, T, T, F]),
    ("cc/v1/clients/other/ack",               [F, F, F, F, T, F]),
    ("cc/v1/clients/+/ack",                   [F, F, F, F, T, F]),
    ("cc/v1/open/+",                          [F, F, F, F, T, F]),
    ("cc/v1/queue",                           [F, T, T, F, T, F]),
    ("cc/v1/staff/me/assignments",            [F, T, T, F, T, F]),
    ("cc/v1/staff/other/assignments",         [F, F, T, F, T, F]),
    ("cc/v1/staff/+/assignments",             [F, F, T, F, T, F]),
    ("cc/v1/staff/me/submit",                 [F, F, F, F, T, F]),
    ("cc/v1/staff/me/+",                      [F, F, F, F, T, F]),
    ("cc/v1/memberships",                     [F, F, F, F, T, F]),
    ("cc/#",                                  [F, F, F, F, T, F]),
    ("#",                                     [F, F, F, F, T, F]),
    ("+/v1/queue",                            [F, T, T, F, T, F]),
    ("cc/v1/nonsense/#",                      [F, F, F, F, F, F]),
    ("sandbox/#",                             [F, F, F, F, F, F]),
];

#[test]
fn acl_matrix() {
    let chain = chain(Vec::new());
    let mut wrong = Vec::new();
    for (action, rows) in [("publish", PUBLISH), ("subscribe", SUBSCRIBE)] {
        for (topic, expected) in rows {
            for (role, expected) in ROLES.iter().zip(expected) {
                let who = identity(*role);
                let got = match action {
                    "publish" => chain.check_publish(&who, topic),
                    _ => chain.check_subscribe(&who, topic),
                };
                if got.is_ok() != *expected {
                    wrong.push(format!(
                        "{role} {action} {topic}: expected {expected}, got {got:?}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn membership_changes_take_effect_at_once() {
    let memberships = Memberships::default();
    let chain = AclChain::standard(&AclConfig::default(), memberships.clone());
    let agent = identity(Role::Agent);
    assert!(
        chain
            .check_subscribe(&agent, "cc/v1/sessions/s9/messages")
            .is_err()
    );
    memberships.join("s9", "me", Role::Agent);
    assert!(
        chain
            .check_subscribe(&agent, "cc/v1/sessions/s9/messages")
            .is_ok()
    );
    memberships.leave("s9", "me");
    assert!(
        chain
            .check_subscribe(&agent, "cc/v1/sessions/s9/messages")
            .is_err()
    );
}

fn rule(
    role: Option<Role>,
    client: Option<&str>,
    username: Option<&str>,
    access: Access,
    topic: &str,
    effect: Effect,
) -> StaticRule {
    StaticRule {
        role,
        client: client.map(str::to_owned),
        username: username.map(str::to_owned),
        access,
        topic: topic.to_owned(),
        effect,
    }
}

#[test]
fn static_rules_add_to_the_protocol_but_cannot_open_it() {
    let chain = chain(vec![
        rule(
            Some(Role::Applicant),
            None,
            None,
            Access::Readwrite,
            "sandbox/%c/#",
            Effect::Allow,
        ),
        rule(
            None,
            None,
            Some("me-user"),
            Access::Write,
            "devices/%u/status",
            Effect::Allow,
        ),
        // Attempts to open protocol topics: ignored, the protocol rules are final there.
        rule(
            None,
            Some("me"),
            None,
            Access::Write,
            "cc/v1/sessions/s1/messages",
            Effect::Allow,
        ),
        rule(
            Some(Role::Applicant),
            None,
            None,
            Access::Read,
            "cc/v1/sessions/s1/notes",
            Effect::Allow,
        ),
        // Denials restrict anyone, also inside the protocol.
        rule(
            Some(Role::Agent),
            None,
            None,
            Access::Read,
            "cc/v1/sessions/s1/notes",
            Effect::Deny,
        ),
        rule(
            Some(Role::Anonymous),
            None,
            None,
            Access::Readwrite,
            "public/#",
            Effect::Allow,
        ),
    ]);
    let applicant = identity(Role::Applicant);
    assert!(chain.check_publish(&applicant, "sandbox/me/x").is_ok());
    assert!(chain.check_subscribe(&applicant, "sandbox/me/#").is_ok());
    assert!(
        chain.check_subscribe(&applicant, "sandbox/+/#").is_err(),
        "%c must not widen to other clients"
    );
    assert!(chain.check_publish(&applicant, "sandbox/other/x").is_err());
    assert!(
        chain
            .check_publish(&applicant, "devices/me-user/status")
            .is_ok()
    );
    assert!(
        chain
            .check_subscribe(&applicant, "devices/me-user/status")
            .is_err(),
        "write-only rule"
    );
    assert!(
        chain
            .check_publish(&applicant, "cc/v1/sessions/s1/messages")
            .is_err()
    );
    assert!(
        chain
            .check_subscribe(&applicant, "cc/v1/sessions/s1/notes")
            .is_err()
    );

    let agent = identity(Role::Agent);
    assert!(
        chain
            .check_subscribe(&agent, "cc/v1/sessions/s1/notes")
            .is_err()
    );
    assert!(
        chain
            .check_subscribe(&agent, "cc/v1/sessions/s1/+")
            .is_err(),
        "a denial covers overlapping filters"
    );
    assert!(
        chain
            .check_subscribe(&agent, "cc/v1/sessions/s1/messages")
            .is_ok()
    );

    let anonymous = identity(Role::Anonymous);
    assert!(chain.check_publish(&anonymous, "public/board").is_ok());
    assert!(chain.check_subscribe(&anonymous, "#").is_err());
    assert!(chain.check_publish(&anonymous, "cc/v1/open/me").is_err());
}

#[test]
fn static_rules_need_one_selector_and_a_valid_filter() {
    assert!(
        rule(
            Some(Role::Agent),
            None,
            None,
            Access::Read,
            "a/#",
            Effect::Allow
        )
        .validate()
        .is_ok()
    );
    assert!(
        rule(None, None, None, Access::Read, "a/#", Effect::Allow)
            .validate()
            .is_err()
    );
    assert!(
        rule(
            Some(Role::Agent),
            Some("c"),
            None,
            Access::Read,
            "a/#",
            Effect::Allow
        )
        .validate()
        .is_err()
    );
    assert!(
        rule(
            Some(Role::Agent),
            None,
            None,
            Access::Read,
            "a/#/b",
            Effect::Allow
        )
        .validate()
        .is_err()
    );
}

#[test]
fn filter_relations() {
    let covers_rows: &[(&str, &str, bool)] = &[
        ("a/#", "a/b/c", true),
        ("a/#", "a/#", true),
        ("a/+", "a/b", true),
        ("a/+", "a/+", true),
        ("a/+", "a/#", false),
        ("a/b", "a/+", false),
        ("a/+/c", "a/b/c", true),
        ("a", "a/b", false),
    ];
    for (pattern, filter, expected) in covers_rows {
        assert_eq!(
            covers(pattern, filter),
            *expected,
            "covers({pattern}, {filter})"
        );
    }
    let overlap_rows: &[(&str, &str, bool)] = &[
        ("a/b", "a/+", true),
        ("a/b", "#", true),
        ("a/b", "c/#", false),
        ("a/+/c", "a/b/+", true),
        ("a/b", "a/b/c", false),
    ];
    for (pattern, filter, expected) in overlap_rows {
        assert_eq!(
            overlaps(pattern, filter),
            *expected,
            "overlaps({pattern}, {filter})"
        );
    }
}

#[test]
fn only_the_service_retains_under_cc() {
    // (role, topic, retain) -> allowed
    let rows = [
        (Role::Service, "cc/v1/sessions/s1/lock", true, true),
        (
            Role::Applicant,
            "cc/v1/sessions/s1/presence/me",
            true,
            false,
        ),
        (Role::Agent, "cc/v1/sessions/s1/typing/me", true, false),
        (Role::Supervisor, "cc/v1/queue", true, false),
        (
            Role::Applicant,
            "cc/v1/sessions/s1/presence/me",
            false,
            true,
        ),
        (Role::Applicant, "sandbox/me", true, true),
        (Role::Agent, "kiosks/k1/state", true, true),
    ];
    for (role, topic, retain, allowed) in rows {
        assert_eq!(
            check_retain(&identity(role), topic, retain).is_ok(),
            allowed,
            "{role} {topic} retain={retain}"
        );
    }
}

/// Wildcard filters are granted when some topic they match is readable (as Mosquitto grants
/// them); each delivery is then checked on its topic, so the protocol and denied topics stay
/// closed.
#[test]
fn a_wildcard_filter_is_granted_where_some_topic_is_readable() {
    let chain = chain(vec![
        rule(
            Some(Role::Anonymous),
            None,
            None,
            Access::Readwrite,
            "#",
            Effect::Allow,
        ),
        rule(
            Some(Role::Anonymous),
            None,
            None,
            Access::Read,
            "test/nosubscribe",
            Effect::Deny,
        ),
        rule(
            Some(Role::Applicant),
            None,
            None,
            Access::Read,
            "sensors/+/temp",
            Effect::Allow,
        ),
        rule(
            Some(Role::Agent),
            None,
            None,
            Access::Read,
            "closed/#",
            Effect::Deny,
        ),
    ]);
    let anonymous = identity(Role::Anonymous);
    let applicant = identity(Role::Applicant);
    let agent = identity(Role::Agent);
    #[rustfmt::skip]
    let filters: &[(&Identity, &str, bool)] = &[
        (&anonymous, "#", T),
        (&anonymous, "+/+", T),
        (&anonymous, "test/#", T),
        // Exactly the denied topic, or a filter that only matches denied topics.
        (&anonymous, "test/nosubscribe", F),
        (&anonymous, "test/nosubscribe/#", T),
        // The protocol's own filters stay decided by the protocol rules.
        (&anonymous, "cc/#", F),
        (&anonymous, "cc/v1/sessions/+/messages", F),
        (&applicant, "#", T),
        (&applicant, "sensors/#", T),
        (&applicant, "other/#", F),
        (&applicant, "cc/v1/sessions/+/notes", F),
        (&agent, "#", F),
        (&agent, "closed/+", F),
    ];
    for (who, filter, granted) in filters {
        assert_eq!(
            chain.check_filter(who, filter).is_ok(),
            *granted,
            "{} {filter}",
            who.role
        );
    }
    // What flows through `#` is checked topic by topic.
    #[rustfmt::skip]
    let deliveries: &[(&Identity, &str, bool)] = &[
        (&anonymous, "fromb/qos 1", T),
        (&anonymous, "test/nosubscribe", F),
        (&anonymous, "cc/v1/sessions/s1/messages", F),
        (&applicant, "sensors/hall/temp", T),
        (&applicant, "sensors/hall/humidity", F),
        (&applicant, "cc/v1/sessions/s1/notes", F),
    ];
    for (who, topic, readable) in deliveries {
        assert_eq!(
            chain.check_subscribe(who, topic).is_ok(),
            *readable,
            "{} {topic}",
            who.role
        );
    }
}
