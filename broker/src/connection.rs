//! One client connection: the CONNECT rules, the session the gateway keeps for the client, and
//! the relay between the client and the routing index (`fanout`).
//!
//! Packets are handled in MQTT 5's model (see `codec`), whichever version the client speaks.
//! Everything a client sees of MQTT's delivery guarantees is done here: QoS 1 and 2 deliveries
//! with packet ids, the client's receive maximum and maximum packet size, QoS min(published,
//! granted), no-local, retain-as-published and retain handling, subscription identifiers, topic
//! aliases, message expiry, retained messages, persistent sessions and their expiry, and the
//! will and its delay.
//!
//! This module holds the relay loop and the routing of what a client publishes; its parts live
//! beside it: `connect` (the CONNECT rules, then [`serve`] runs a `Session`), `incoming` (what
//! the client sends: publishes checked and acknowledged, unsubscribes, pings, DISCONNECT),
//! `subscribe`, `delivery` (what goes to the client), `acknowledgements` (the client's answers to
//! it), `finish` (how a connection ends), `will` (wills published after their delay), `presence` (presence kept and `offline`
//! announced), `registry` (live connections by client id) and `shared` (state every connection
//! of a broker shares).

mod acknowledgements;
mod connect;
mod delivery;
mod finish;
mod incoming;
mod presence;
mod registry;
mod shared;
mod subscribe;
mod will;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, ConnectReturnCode, DisconnectReasonCode, Packet, PublishProperties,
};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::auth::{Identity, Role};
use crate::codec::{self, Version};
use crate::fanout::{Inbox, LinkKey};
use crate::framing;
use crate::inbound::{self, Inbound};
use crate::message::{Forwarded, Message};
use crate::session::{self, Outbound, SessionState, Will};
use crate::transport::Transport;
use connect::ClientLimits;

pub(crate) use connect::serve;
pub(crate) use registry::ClientRegistry;
use registry::Revocation;
pub(crate) use shared::Shared;

/// Why a connection ended: decides the will, the DISCONNECT a v5 client is sent, and the log.
#[derive(Debug)]
enum Ending {
    /// The client sent DISCONNECT; `with_will` unless its reason was 0x00 (see `inbound`).
    Clean { with_will: bool },
    /// The network, the keepalive, a protocol error, a takeover or expired credentials ended
    /// it: the will is sent, and an MQTT 5 client is told why when `code` is set.
    Abrupt {
        reason: &'static str,
        code: Option<DisconnectReasonCode>,
    },
    /// The server is shutting down.
    Shutdown,
}

impl Ending {
    fn abrupt(reason: &'static str) -> Self {
        Ending::Abrupt { reason, code: None }
    }

    fn told(reason: &'static str, code: DisconnectReasonCode) -> Self {
        Ending::Abrupt {
            reason,
            code: Some(code),
        }
    }
}

/// A socket and the MQTT version it speaks, for writing packets.
struct Wire {
    transport: Transport,
    version: Version,
}

impl Wire {
    async fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::with_capacity(packet.size() + 8);
        let written = codec::encode(self.version, packet, &mut out)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string()))?;
        if written {
            self.transport.write_all(&out).await?;
        }
        Ok(())
    }

    /// Refuses a CONNECT and closes the connection.
    async fn refuse(&mut self, code: ConnectReturnCode) {
        let ack = ConnAck {
            session_present: false,
            code,
            properties: None,
        };
        let _ = self.send(&Packet::ConnAck(ack)).await;
        self.transport.close().await;
    }
}

struct Session<'a> {
    shared: &'a Shared,
    version: Version,
    key: LinkKey,
    client_id: String,
    identity: Identity,
    peer: SocketAddr,
    listener: crate::Listener,
    will: Option<Will>,
    state: SessionState,
    /// Seconds the session outlives the connection (0: it ends with it).
    expiry: u32,
    limits: ClientLimits,
    /// This connection's topic aliases, both ways.
    aliases: crate::topic_alias::Aliases,
    /// The client id as publishes carry it, for no-local.
    publisher: std::sync::Arc<str>,
    /// This connection's delivery queue, once it is running (see `fanout`).
    inbox: Option<Inbox>,
    /// The receiving end of `inbox` once the connection has ended, for a session kept.
    deliveries: Option<mpsc::Receiver<Forwarded>>,
    /// Copies of this client's publishes for full patient queues (the pipeline's), delivered
    /// in order as room appears.
    waiting: VecDeque<(Inbox, Forwarded)>,
    /// What the client sent while `waiting` was not empty, handled in order once it is.
    held: VecDeque<Inbound>,
    _permit: OwnedSemaphorePermit,
}

/// What can end or change a connection from outside it.
struct Control<'a> {
    kick: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    revocations: &'a mut mpsc::UnboundedReceiver<Revocation>,
}

impl Session<'_> {
    async fn run(
        &mut self,
        wire: &mut Wire,
        buf: &mut BytesMut,
        session_present: bool,
        ack_properties: ConnAckProperties,
        control: Control<'_>,
    ) -> Ending {
        let ack = ConnAck {
            session_present,
            code: ConnectReturnCode::Success,
            properties: (wire.version == Version::V5).then_some(ack_properties),
        };
        if wire.send(&Packet::ConnAck(ack)).await.is_err() {
            return Ending::abrupt("write failed");
        }
        tracing::debug!(client_id = %self.client_id, role = %self.identity.role, peer = %self.peer, session_present, "connected");
        self.shared.hooks.connected(&self.identity, self.listener);

        // MQTT §4.4: deliveries whose flow is not over are sent again before anything new.
        if self.resend_inflight(wire).await.is_err() {
            return Ending::abrupt("write failed");
        }
        if self.release_pending(wire).await.is_err() {
            return Ending::abrupt("write failed");
        }

        let patient = self.identity.role == Role::Service;
        let (inbox, mut forwarded) = match self.state.parked.take() {
            // A resumed session takes over the queue the fan-out kept filling while it was away.
            Some(parked) => {
                let mut inbox = parked.inbox;
                if inbox.overflow.is_cancelled() {
                    tracing::warn!(client_id = %self.client_id, "deliveries were dropped while the client was away: its queue was full");
                    inbox.overflow = CancellationToken::new();
                }
                inbox.patient = patient;
                let filters = self.state.subscriptions.keys();
                self.shared
                    .fanout
                    .rekey(parked.key, self.key, filters, &inbox);
                (inbox, parked.deliveries)
            }
            None => {
                // As many as may wait behind the receive maximum: a client further behind
                // than that, either way, is disconnected. Memory is allocated as it fills.
                let capacity = self.shared.config.max_pending_per_client.max(64);
                let (deliveries, forwarded) = mpsc::channel(capacity);
                let inbox = Inbox {
                    deliveries,
                    overflow: CancellationToken::new(),
                    patient,
                };
                for filter in self.state.subscriptions.keys() {
                    self.shared.fanout.add(self.key, filter, &inbox);
                }
                (inbox, forwarded)
            }
        };
        self.inbox = Some(inbox);
        let ending = self.relay(wire, buf, &mut forwarded, control).await;
        self.deliveries = Some(forwarded);
        ending
    }

    /// Handles held packets, in order, while nothing waits for room.
    async fn release_held(&mut self, wire: &mut Wire) -> Option<Ending> {
        while self.waiting.is_empty() {
            let packet = self.held.pop_front()?;
            if let Some(ending) = self.incoming(wire, packet).await {
                return Some(ending);
            }
        }
        None
    }

    async fn relay(
        &mut self,
        wire: &mut Wire,
        buf: &mut BytesMut,
        forwarded: &mut mpsc::Receiver<Forwarded>,
        control: Control<'_>,
    ) -> Ending {
        let Control {
            kick,
            shutdown,
            revocations,
        } = control;
        // MQTT §3.1.2.10: one and a half keepalive periods without a packet end the connection;
        // keepalive 0 turns the mechanism off.
        let keep_alive = self.limits.keep_alive;
        let idle_limit =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut deadline = idle_limit.map(|limit| Instant::now() + limit);
        // The connection ends when its credentials do.
        let expiry = self.identity.expires_at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left
        });
        let max = self.shared.config.max_packet_size;
        let overflow = self
            .inbox
            .as_ref()
            .map(|inbox| inbox.overflow.clone())
            .unwrap_or_default();
        loop {
            // Handle every complete packet already buffered before waiting for more. While one of
            // the client's publishes waits for room in the pipeline's queue, what the client
            // sends next is held, in order, except its acknowledgements of our deliveries and
            // its pings: those keep the deliveries to it flowing meanwhile. Held packets are
            // bounded by the client's own window of unacknowledged publishes (we acknowledge
            // none of them yet), and past `HELD_PACKETS` nothing more is read at all.
            if let Some(ending) = self.drain_some(wire, forwarded).await {
                return ending;
            }
            loop {
                if let Some(ending) = self.release_held(wire).await {
                    return ending;
                }
                if self.held.len() >= HELD_PACKETS {
                    break;
                }
                match framing::decode(wire.version, buf, max) {
                    Ok(Some(packet)) => {
                        if let Some(limit) = idle_limit {
                            deadline = Some(Instant::now() + limit);
                        }
                        let packet = inbound::screen(packet, &mut self.aliases.incoming);
                        let holding = !self.waiting.is_empty() || !self.held.is_empty();
                        if holding && !packet.jumps_queue() {
                            self.held.push_back(packet);
                            continue;
                        }
                        if let Some(ending) = self.incoming(wire, packet).await {
                            return ending;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::debug!(client_id = %self.client_id, error = %err, "undecodable packet");
                        let (reason, code) = inbound::undecodable(&err);
                        return Ending::told(reason, code);
                    }
                }
            }
            let waiting_on = self
                .waiting
                .front()
                .map(|(inbox, _)| inbox.deliveries.clone());
            tokio::select! {
                // In this order: a shutdown also cancels `kick` (its child token), and must not
                // be reported as a takeover.
                biased;
                _ = shutdown.cancelled() => return Ending::Shutdown,
                _ = kick.cancelled() => return Ending::told("taken over", DisconnectReasonCode::SessionTakenOver),
                _ = overflow.cancelled() => {
                    tracing::warn!(client_id = %self.client_id, "its delivery queue is full: too slow a reader; disconnecting");
                    return Ending::told("too many undelivered messages", DisconnectReasonCode::QuotaExceeded);
                }
                Some(revocation) = revocations.recv() => match revocation {
                    Revocation::Session(session) => {
                        if let Err(ending) = self.drop_revoked_filters(&session).await {
                            return ending;
                        }
                    }
                    // A token ended alone (sign-out) ends only the connections made with it.
                    Revocation::Credentials if self.shared.staff_revocations.refuses_identity(&self.identity) => return Ending::told("credentials revoked", DisconnectReasonCode::AdministrativeAction),
                    Revocation::Credentials => {}
                },
                _ = async { sleep_until(expiry.unwrap_or_else(Instant::now)).await }, if expiry.is_some() => {
                    tracing::debug!(client_id = %self.client_id, "credentials expired");
                    return Ending::told("credentials expired", DisconnectReasonCode::MaximumConnectTime);
                }
                _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                    tracing::debug!(client_id = %self.client_id, "keepalive expired");
                    return Ending::told("keepalive expired", DisconnectReasonCode::KeepAliveTimeout);
                }
                room = async { waiting_on.as_ref().expect("guarded").reserve().await }, if waiting_on.is_some() => {
                    if let Some((_, message)) = self.waiting.pop_front()
                        && let Ok(permit) = room
                    {
                        permit.send(message);
                    }
                }
                read = wire.transport.read_more(buf), if self.held.len() < HELD_PACKETS => match read {
                    Ok(0) => return Ending::abrupt("connection closed"),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(client_id = %self.client_id, error = %err, "read failed");
                        return Ending::abrupt("read failed");
                    }
                },
                message = forwarded.recv() => {
                    if let Some(ending) = self.forwarded(wire, message).await {
                        return ending;
                    }
                }
            }
        }
    }

    fn is_v5(&self) -> bool {
        self.version == Version::V5
    }

    /// Hands a message (a publish or the will) to its subscribers, and records it if retained.
    fn route(&mut self, mut message: Outbound) {
        let topic = String::from_utf8_lossy(&message.topic).into_owned();
        let protocol = crate::acl::in_protocol(&topic);
        if let Some(properties) = message.properties.as_mut() {
            session::sanitize_user_properties(properties, protocol);
            if *properties == PublishProperties::default() {
                message.properties = None;
            }
        }
        if message.retain {
            self.shared.retained.update(&topic, message.clone());
        }
        if protocol && is_submission(&topic) {
            let properties = message
                .properties
                .get_or_insert_with(PublishProperties::default);
            // The pipeline counts a submission's wait from here, queueing in the gateway
            // included, to refuse what waited too long instead of deciding it late.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            properties.user_properties.push((
                schemas::wire::RECEIVED_AT_PROPERTY.to_owned(),
                now.to_string(),
            ));
            // An open request's channel and team are the token's, not the applicant's say.
            crate::auth::stamp::stamp_open_request(
                &self.identity,
                &topic,
                &mut properties.user_properties,
            );
        }
        let forwarded = std::sync::Arc::new(Message {
            topic: message.topic,
            payload: message.payload,
            qos: message.qos,
            retain: message.retain,
            publisher: Some(self.publisher.clone()),
            properties: message.properties,
            expires_at: message.expires_at,
        });
        let waiting = self.shared.fanout.publish(self.key, &topic, &forwarded);
        self.waiting.extend(waiting);
    }
}

/// Packets held from a client whose publish waits for room in the pipeline's queue (see
/// `Session::relay`); beyond this the server stops reading from it. Not configuration: the
/// client's own window of unacknowledged publishes already bounds what it can send meanwhile,
/// and TCP's flow control takes over once the server stops reading, so this only caps the
/// memory of a client that sends other packets (pings, subscribes) without end.
const HELD_PACKETS: usize = 1024;

/// Whether `topic` carries something for the chat pipeline to decide (an open request, a
/// submission or a staff submission).
fn is_submission(topic: &str) -> bool {
    use schemas::topics::{SessionTopic, Topic};
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
