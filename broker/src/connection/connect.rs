//! The CONNECT rules: reading the first packet, authentication, the client id, the will, session
//! expiry and takeover; then the connection is handed to its [`Session`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{
    self, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, Packet,
};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::registry::Mailbox;
use super::{Control, Ending, Revocation, Session, Shared, Wire};
use crate::acl;
use crate::auth::{ConnectInfo, Refusal};
use crate::codec::{CodecError, Version};
use crate::denial::DenialKind;
use crate::framing;
use crate::inbound;
use crate::signal::{self, SignalKind};
use crate::topic_alias::{self, Aliases};
use crate::transport::Transport;

/// What the client asked for in CONNECT that outlives the handshake.
pub(super) struct ClientLimits {
    /// The keep alive the connection is held to: the client's, or the server's maximum (MQTT 5,
    /// said in CONNACK).
    pub(super) keep_alive: u16,
    /// Unacknowledged QoS 1 and 2 deliveries the client accepts at once (MQTT 5 receive
    /// maximum).
    pub(super) receive_maximum: usize,
    /// Largest packet the client accepts; larger deliveries are discarded (MQTT 5 §3.1.2.11.4).
    pub(super) max_packet_size: usize,
}

/// A connection whose CONNECT was accepted, with what its session needs to run.
struct Admitted<'a> {
    session: Session<'a>,
    wire: Wire,
    buf: BytesMut,
    session_present: bool,
    /// Taken by the session's start, which sends them in the CONNACK.
    ack_properties: Option<Box<ConnAckProperties>>,
    revocations: Arc<Mailbox>,
    /// Dropped once the session is stored: a takeover waiting on this client id may go on.
    gone: Option<oneshot::Sender<()>>,
}

/// A transport whose handshakes are done, and who is at the other end.
pub(crate) struct Accepted {
    pub transport: Transport,
    pub peer: SocketAddr,
}

/// Serves one accepted transport until it closes. Never panics on input.
///
/// `accepted` comes boxed and is let go once the CONNECT's rules are done with it: what a task
/// is started with stays in it for its whole life (issue 22: memory per connection).
pub(crate) async fn serve(
    accepted: Box<Accepted>,
    listener: crate::listener::Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    // The CONNECT's rules run in a future of their own, freed once they are done: what they
    // hold across their awaits (the CONNECT packet, its properties, the login) would otherwise
    // stay in every connection's task for its whole life (issue 22: memory per connection).
    // The session stays where `admit` put it, on the heap: moving it out into this future
    // would keep it here twice.
    let Some(mut admitted) = Box::pin(admit(accepted, listener, &shared, &shutdown)).await else {
        return;
    };
    let Admitted {
        session,
        wire,
        buf,
        session_present,
        ack_properties,
        revocations,
        gone,
    } = &mut *admitted;
    let (session_present, ack_properties) = (*session_present, ack_properties.take());
    let ending = session
        .run(
            wire,
            buf,
            session_present,
            ack_properties,
            Control {
                shutdown: &shutdown,
                revocations,
            },
        )
        .await;

    // An MQTT 5 client is told why the server closes its connection.
    let told = match &ending {
        Ending::Abrupt {
            code: Some(code),
            reason,
        } => Some((*code, *reason)),
        Ending::Shutdown => Some((DisconnectReasonCode::ServerShuttingDown, "server shutdown")),
        Ending::Abrupt { code: None, .. } | Ending::Clean { .. } => None,
    };
    if let Some((reason_code, reason)) = told {
        let disconnect = disconnect(reason_code, reason, session.limits.max_packet_size);
        let _ = Box::pin(wire.send(&disconnect)).await;
    }
    if let Some(kept) = Box::pin(session.finish(ending)).await {
        kept.arm(&shared, &session.client_id);
    }
    // The session is stored: a waiting takeover may now resume it.
    drop(gone.take());
    Box::pin(wire.close()).await;
}

/// The DISCONNECT that tells an MQTT 5 client why the server ends its connection: with the
/// reason as a reason string, or an empty one when the reason would make the packet larger than
/// the client's maximum packet size (MQTT 5 §3.1.2.11.4, §3.14.2.2.3; found by the session fuzz
/// target). Never without one: rumqttc writes a DISCONNECT with a reason code and no properties
/// with a stray byte after it, and one with empty properties as a normal disconnection.
fn disconnect(reason_code: DisconnectReasonCode, reason: &str, max_packet_size: usize) -> Packet {
    let told = |reason: &str| {
        Packet::Disconnect(Disconnect {
            reason_code,
            properties: Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(reason.to_owned()),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        })
    };
    let with_reason = told(reason);
    if with_reason.size() <= max_packet_size {
        with_reason
    } else {
        told("")
    }
}

/// Reads the CONNECT and applies its rules: authentication, the client id, the will, session
/// expiry and takeover. `None` if the connection was refused or left.
async fn admit<'a>(
    accepted: Box<Accepted>,
    listener: crate::listener::Listener,
    shared: &'a Arc<Shared>,
    shutdown: &CancellationToken,
) -> Option<Box<Admitted<'a>>> {
    let config = &shared.config;
    let Accepted {
        mut transport,
        peer,
    } = *accepted;
    let mut buf = BytesMut::new();
    let first = tokio::select! {
        _ = shutdown.cancelled() => return None,
        first = Box::pin(timeout(config.connect_timeout, read_connect(&mut transport, &mut buf, config.max_packet_size))) => first,
    };
    let (version, connect, will, login) = match first {
        Ok(Ok(Some(connect))) => connect,
        Ok(Ok(None)) => return None,
        Ok(Err(ReadError::Codec(CodecError::UnsupportedVersion(level)))) => {
            tracing::debug!(%peer, level, "unsupported protocol version");
            let mut wire = Wire::new(transport, Version::V4);
            Box::pin(wire.refuse(ConnectReturnCode::RefusedProtocolVersion)).await;
            return None;
        }
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "bad CONNECT");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within the connect timeout");
            return None;
        }
    };
    let mut wire = Wire::new(transport, version);

    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached");
        Box::pin(wire.refuse(ConnectReturnCode::QuotaExceeded)).await;
        return None;
    };

    let key = shared.key();
    let password = login
        .as_ref()
        .map(|login| login.password.as_bytes())
        .filter(|p| !p.is_empty());
    let assigned = connect.client_id.is_empty() && password.is_none() && connect.clean_start;
    let offered_id = if assigned {
        // MQTT 3.1.1 §3.1.3.1 / 5 §3.1.3.1: the server assigns an identifier to a clean-start
        // client that sent none. (With a token, the identifier is the token's subject.)
        format!("auto-{key}")
    } else {
        connect.client_id.clone()
    };
    let info = ConnectInfo {
        client_id: &offered_id,
        username: login
            .as_ref()
            .map(|login| login.username.as_str())
            .filter(|u| !u.is_empty()),
        password,
    };
    let identity = match shared.auth.authenticate(&info) {
        Ok(identity) => identity,
        Err(refusal) => {
            let code = match refusal {
                Refusal::BadCredentials(_) => ConnectReturnCode::BadUserNamePassword,
                Refusal::NotAuthorized(_) => ConnectReturnCode::NotAuthorized,
            };
            let reason = refusal.to_string();
            shared
                .hooks
                .denied(DenialKind::Connect, peer, &offered_id, None, &reason);
            Box::pin(wire.refuse(code)).await;
            return None;
        }
    };
    // The client id is the authenticated subject: an empty offered id takes the token's subject.
    let client_id = identity.subject.clone();
    if let Err(reason) = check_client_id(&client_id, config.max_client_id_len) {
        tracing::debug!(%peer, reason, "client id rejected");
        Box::pin(wire.refuse(ConnectReturnCode::ClientIdentifierNotValid)).await;
        return None;
    }
    // A will topic that is not UTF-8 becomes "" here, which no check lets through.
    let will_topic = will
        .as_ref()
        .map(|will| String::from_utf8(will.topic.to_vec()).unwrap_or_default());
    let authorized = shared
        .acl
        .check_connect(&identity)
        .and_then(|()| match &will_topic {
            // A will is a publish made on the client's behalf later: it is checked now, so that a
            // forbidden will is refused with the CONNECT instead of vanishing at disconnect.
            Some(topic) if !inbound::is_publishable(topic) => {
                Err(format!("will: invalid topic {topic:?}"))
            }
            Some(topic) => shared
                .acl
                .check_publish(&identity, topic)
                .and_then(|()| {
                    let retain = will.as_ref().is_some_and(|will| will.retain);
                    acl::check_retain(&identity, topic, retain)
                })
                .map_err(|reason| format!("will: {reason}")),
            None => Ok(()),
        });
    if let Err(reason) = authorized {
        shared
            .hooks
            .denied(DenialKind::Connect, peer, &client_id, None, &reason);
        Box::pin(wire.refuse(ConnectReturnCode::NotAuthorized)).await;
        return None;
    }
    // A will on a typing or presence topic must be what those carry (usually `offline`); it is
    // relayed in its canonical form.
    let mut will = will;
    if let (Some(topic), Some(will)) = (&will_topic, will.as_mut())
        && let Some(kind) = SignalKind::of(topic)
    {
        match signal::canonical(kind, &will.message, config.signals.max_payload_bytes) {
            Ok(canonical) => will.message = canonical,
            Err(refusal) => {
                tracing::debug!(%peer, refusal = refusal.as_str(), "will refused");
                shared.hooks.signal_refused(&identity, refusal);
                Box::pin(wire.refuse(ConnectReturnCode::PayloadFormatInvalid)).await;
                return None;
            }
        }
    }

    // Session expiry: MQTT 5 says it in CONNECT; a 3.1.1 persistent session never expires by the
    // protocol, so it gets the configured maximum.
    let properties = connect.properties.clone().unwrap_or_default();
    let requested_expiry = match version {
        Version::V5 => properties.session_expiry_interval.unwrap_or(0),
        Version::V4 if connect.clean_start => 0,
        Version::V4 => u32::MAX,
    };
    let max_expiry = u32::try_from(config.max_session_expiry.as_secs()).unwrap_or(u32::MAX - 1);
    let expiry = requested_expiry.min(max_expiry);
    let keep_alive = held_keep_alive(version, connect.keep_alive, config.max_keep_alive_secs);
    let limits = ClientLimits {
        keep_alive,
        receive_maximum: properties
            .receive_maximum
            .map_or(usize::from(u16::MAX), usize::from)
            .max(1),
        max_packet_size: properties
            .max_packet_size
            .map_or(usize::MAX, |max| max as usize),
    };

    let (gone_tx, gone_rx) = oneshot::channel();
    let revocations = Arc::new(Mailbox::default());
    Box::pin(
        shared
            .clients
            .claim(&client_id, key, revocations.clone(), gone_rx),
    )
    .await;
    // A revocation between authenticating and registering found no connection to end.
    if shared.staff_revocations.refuses_identity(&identity) {
        revocations.send(Revocation::Credentials);
    }

    // Only now, after any previous connection with this id has stored its session.
    let resumed = if connect.clean_start {
        if let Some(old) = shared.sessions.discard(&client_id) {
            shared.release(old);
        }
        None
    } else {
        // A will still waiting for its delay is not published: its client is back (MQTT 5
        // §3.1.3.2.2). (A discarded session's goes with it.)
        shared.sessions.resume(&client_id).map(|mut state| {
            state.will = None;
            state
        })
    };
    let session_present = resumed.is_some();

    let publisher = Arc::from(client_id.as_str());
    let session = Session {
        shared,
        version,
        key,
        client_id,
        identity,
        peer,
        listener,
        will: will.map(super::will::kept),
        state: resumed.unwrap_or_default(),
        expiry,
        limits,
        aliases: match version {
            Version::V5 => Aliases {
                incoming: topic_alias::Incoming::new(config.max_topic_aliases),
                outgoing: topic_alias::Outgoing::new(
                    properties
                        .topic_alias_max
                        .unwrap_or(0)
                        .min(config.max_topic_aliases),
                ),
            },
            Version::V4 => Aliases::default(),
        },
        publisher,
        one_thread: tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread,
        inbox: None,
        deliveries: None,
        waiting: VecDeque::new(),
        held: VecDeque::new(),
        _permit: permit,
    };
    let mut ack_properties = ConnAckProperties {
        session_expiry_interval: None,
        receive_max: (config.receive_maximum < u16::MAX).then_some(config.receive_maximum),
        max_qos: None,
        retain_available: None,
        max_packet_size: u32::try_from(config.max_packet_size).ok(),
        assigned_client_identifier: None,
        topic_alias_max: (config.max_topic_aliases > 0).then_some(config.max_topic_aliases),
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: Some(1),
        shared_subscription_available: Some(1),
        server_keep_alive: (keep_alive != connect.keep_alive).then_some(keep_alive),
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    };
    if expiry != requested_expiry {
        ack_properties.session_expiry_interval = Some(expiry);
    }
    if assigned || connect.client_id.is_empty() {
        ack_properties.assigned_client_identifier = Some(session.client_id.clone());
    }
    Some(Box::new(Admitted {
        session,
        wire,
        buf,
        session_present,
        ack_properties: Some(Box::new(ack_properties)),
        revocations,
        gone: Some(gone_tx),
    }))
}

/// Client ids in this namespace are reserved for the gateway's own links; clients may not use
/// them, so none can take such a link over.
const INTERNAL_PREFIX: &str = "courtchat.";

/// The keep alive an MQTT 5 client is held to under the server's maximum (`max`, 0: none): its
/// own, or the maximum if it asked for more or for none. MQTT 3.1.1 has no way to be told, so
/// its own applies.
fn held_keep_alive(version: Version, requested: u16, max: u16) -> u16 {
    match version {
        Version::V5 if max > 0 && (requested == 0 || requested > max) => max,
        _ => requested,
    }
}

fn check_client_id(client_id: &str, max_len: usize) -> Result<(), &'static str> {
    if client_id.is_empty() {
        return Err("empty client id with clean session off");
    }
    if client_id.len() > max_len {
        return Err("client id too long");
    }
    if client_id.starts_with(INTERNAL_PREFIX) {
        return Err("client id in the gateway's reserved namespace");
    }
    // Filter characters in a client id would make `%c` rules in the ACL match other clients'
    // topics.
    if client_id
        .chars()
        .any(|c| matches!(c, '+' | '#' | '/' | '$') || c.is_control())
    {
        return Err("client id contains a reserved character");
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

type ConnectPacket = (
    Version,
    v5::Connect,
    Option<v5::LastWill>,
    Option<v5::Login>,
);

/// Reads the CONNECT, choosing the codec by its protocol level; `Ok(None)` if the peer left.
async fn read_connect(
    transport: &mut Transport,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<ConnectPacket>, ReadError> {
    loop {
        if let Some((version, packet)) = framing::decode_connect(buf, max)? {
            return match packet {
                Packet::Connect(connect, will, login) => Ok(Some((version, connect, will, login))),
                _ => Err(CodecError::NotConnect.into()),
            };
        }
        if transport.read_more(buf).await? == 0 {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_under_the_servers_maximum() {
        // (version, asked, maximum) -> held to
        let rows = [
            (Version::V5, 30, 60, 30),
            (Version::V5, 120, 60, 60),
            (Version::V5, 0, 60, 60),
            (Version::V5, 0, 0, 0),
            (Version::V5, 120, 0, 120),
            (Version::V4, 120, 60, 120),
            (Version::V4, 0, 60, 0),
        ];
        for (version, asked, max, held) in rows {
            assert_eq!(
                held_keep_alive(version, asked, max),
                held,
                "{version:?} {asked} {max}"
            );
        }
    }

    #[test]
    fn a_reason_string_only_where_the_client_has_room_for_it() {
        let reason = "topic alias not set on this connection";
        let code = DisconnectReasonCode::ProtocolError;
        let full = disconnect(code, reason, usize::MAX).size();
        // (the client's maximum packet size, the reason string sent)
        let rows = [
            (usize::MAX, reason),
            (full, reason),
            (full - 1, ""),
            (16, ""),
        ];
        for (max, sent) in rows {
            let packet = disconnect(code, reason, max);
            assert!(packet.size() <= max, "{max}");
            // As the client reads it: the reason code survives the encoding.
            let mut bytes = BytesMut::new();
            packet
                .write(&mut bytes, None)
                .expect("a DISCONNECT encodes");
            assert_eq!(bytes.len(), packet.size(), "{max}: no stray bytes");
            let Ok(Packet::Disconnect(read)) = Packet::read(&mut bytes, None) else {
                panic!("{max}: the client cannot read it");
            };
            assert_eq!(read.reason_code, code, "{max}");
            let reason_string = read.properties.and_then(|p| p.reason_string);
            assert_eq!(reason_string.as_deref(), Some(sent), "{max}");
        }
    }

    #[test]
    fn client_ids() {
        let rows: &[(&str, bool)] = &[
            ("kiosk-17", true),
            ("agent.alice@example", true),
            ("", false),
            ("a/b", false),
            ("a+b", false),
            ("a#", false),
            ("$sys", false),
            ("tab\there", false),
            ("courtchat.memberships", false),
        ];
        for (id, ok) in rows {
            assert_eq!(check_client_id(id, 128).is_ok(), *ok, "{id:?}");
        }
        assert!(check_client_id(&"x".repeat(129), 128).is_err());
    }
}
