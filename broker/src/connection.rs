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
    ConnAck, ConnAckProperties, ConnectReturnCode, DisconnectReasonCode, Packet,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{self, Version};
use crate::delivery_queue;
use crate::fanout::{Inbox, LinkKey};
use crate::framing;
use crate::hooks::Origin;
use crate::identity::Identity;
use crate::inbound::{self, Inbound};
use crate::message::Forwarded;
use crate::retained::RetainRefusal;
use crate::session::{Outbound, SessionState, Will};
use crate::transport::Transport;
use connect::ClientLimits;

pub(crate) use connect::{Accepted, serve};
pub(crate) use registry::ClientRegistry;
use registry::{Mailbox, Revocation};
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
    fn new(transport: Transport, version: Version) -> Self {
        Self { transport, version }
    }

    async fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::with_capacity(packet.size() + 8);
        let written = codec::encode(self.version, packet, &mut out)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string()))?;
        if written {
            self.transport.write_all(&out).await?;
        }
        Ok(())
    }

    /// Closes the connection.
    async fn close(&mut self) {
        self.transport.close().await;
    }

    /// Refuses a CONNECT and closes the connection.
    async fn refuse(&mut self, code: ConnectReturnCode) {
        let ack = ConnAck {
            session_present: false,
            code,
            properties: None,
        };
        let _ = self.send(&Packet::ConnAck(ack)).await;
        self.close().await;
    }
}

struct Session<'a> {
    shared: &'a Shared,
    version: Version,
    key: LinkKey,
    client_id: String,
    identity: Identity,
    peer: SocketAddr,
    listener: crate::listener::Listener,
    will: Option<Will>,
    state: SessionState,
    /// Seconds the session outlives the connection (0: it ends with it).
    expiry: u32,
    limits: ClientLimits,
    /// This connection's topic aliases, both ways.
    aliases: crate::topic_alias::Aliases,
    /// The client id as publishes carry it, for no-local.
    publisher: std::sync::Arc<str>,
    /// Whether the connection runs on a single-threaded runtime, where the subscribers a
    /// publish wakes run only once this connection's task lets them (see `incoming`).
    one_thread: bool,
    /// This connection's delivery queue, once it is running (see `fanout`).
    inbox: Option<Inbox>,
    /// The receiving end of `inbox` once the connection has ended, for a session kept.
    deliveries: Option<delivery_queue::Receiver<Forwarded>>,
    /// Copies of this client's publishes for full patient queues (the pipeline's), delivered
    /// in order as room appears.
    waiting: VecDeque<(Inbox, Forwarded)>,
    /// What the client sent while `waiting` was not empty, handled in order once it is.
    held: VecDeque<Inbound>,
    _permit: OwnedSemaphorePermit,
}

/// What can end or change a connection from outside it.
struct Control<'a> {
    shutdown: &'a CancellationToken,
    revocations: &'a Mailbox,
}

impl Session<'_> {
    async fn run(
        &mut self,
        wire: &mut Wire,
        buf: &mut BytesMut,
        session_present: bool,
        ack_properties: Option<Box<ConnAckProperties>>,
        control: Control<'_>,
    ) -> Ending {
        // Everything before the relay runs in a future of its own, freed once it is done, so
        // that its packets and locals do not stay in the connection's task.
        let forwarded = match Box::pin(self.start(wire, session_present, ack_properties)).await {
            Ok(forwarded) => forwarded,
            Err(ending) => return ending,
        };
        let ending = self.relay(wire, buf, &forwarded, control).await;
        self.deliveries = Some(forwarded);
        ending
    }

    /// The CONNACK, deliveries left unacknowledged by a resumed session sent again, and this
    /// connection's delivery queue (a resumed session's, or a new one) registered with the
    /// routing index.
    async fn start(
        &mut self,
        wire: &mut Wire,
        session_present: bool,
        ack_properties: Option<Box<ConnAckProperties>>,
    ) -> Result<delivery_queue::Receiver<Forwarded>, Ending> {
        let ack = ConnAck {
            session_present,
            code: ConnectReturnCode::Success,
            properties: ack_properties
                .filter(|_| wire.version == Version::V5)
                .map(|properties| *properties),
        };
        if Box::pin(wire.send(&Packet::ConnAck(ack))).await.is_err() {
            return Err(Ending::abrupt("write failed"));
        }
        tracing::debug!(client_id = %self.client_id, role = %self.identity.role, peer = %self.peer, session_present, "connected");
        let policy = self.shared.hooks.connected(&self.identity, self.listener);

        // MQTT §4.4: deliveries whose flow is not over are sent again before anything new.
        if Box::pin(self.resend_inflight(wire)).await.is_err() {
            return Err(Ending::abrupt("write failed"));
        }
        if Box::pin(self.release_pending(wire)).await.is_err() {
            return Err(Ending::abrupt("write failed"));
        }

        let patient = policy.patient_queue;
        let (inbox, forwarded) = match self.state.parked.take() {
            // A resumed session takes over the queue the fan-out kept filling while it was away.
            Some(parked) => {
                let mut inbox = parked.inbox;
                if inbox.deliveries.take_overflow() {
                    tracing::warn!(client_id = %self.client_id, "deliveries were dropped while the client was away: its queue was full");
                }
                inbox.patient = patient;
                let filters = self.state.subscriptions.filters();
                self.shared
                    .fanout
                    .rekey(parked.key, self.key, filters, &inbox);
                (inbox, parked.deliveries)
            }
            None => {
                // As many as may wait behind the receive maximum: a client further behind
                // than that, either way, is disconnected. Memory is allocated as it fills.
                let capacity = self.shared.config.max_pending_per_client.max(64);
                let (deliveries, forwarded) = delivery_queue::channel(capacity);
                let inbox = Inbox {
                    deliveries,
                    patient,
                };
                for filter in self.state.subscriptions.filters() {
                    self.shared.fanout.add(self.key, filter, &inbox);
                }
                (inbox, forwarded)
            }
        };
        self.inbox = Some(inbox);
        Ok(forwarded)
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
        forwarded: &delivery_queue::Receiver<Forwarded>,
        control: Control<'_>,
    ) -> Ending {
        let Control {
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
        // One timer for both ends a clock can put to the connection, kept across the loop's
        // turns and moved only when it goes off: every packet moves the keepalive deadline,
        // and a timer made again each turn cost two trips through tokio's timer wheel per
        // packet and delivery (issue 22: CPU per delivery). It stays in the connection's task
        // while it is idle, as the loop's other futures do (issue 22: memory per connection).
        let alarm = |deadline: Option<Instant>| match (expiry, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let armed = alarm(deadline);
        let timer = tokio::time::sleep_until(armed.unwrap_or_else(Instant::now));
        tokio::pin!(timer);
        // Kept across turns for the same reason: made again each turn, its waiter joined and
        // left the token's list under a lock every time.
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        loop {
            // Handle every complete packet already buffered before waiting for more (in a
            // future of its own, freed in between: see `start`).
            if let Some(ending) =
                Box::pin(self.handle_buffered(wire, buf, forwarded, idle_limit, &mut deadline))
                    .await
            {
                return ending;
            }
            let waiting_on = self
                .waiting
                .front()
                .map(|(inbox, _)| inbox.deliveries.clone());
            tokio::select! {
                biased;
                () = &mut stopped => return Ending::Shutdown,
                _ = revocations.taken_over() => return if shutdown.is_cancelled() {
                    Ending::Shutdown
                } else {
                    Ending::told("taken over", DisconnectReasonCode::SessionTakenOver)
                },
                _ = forwarded.overflowed() => {
                    tracing::warn!(client_id = %self.client_id, "its delivery queue is full: too slow a reader; disconnecting");
                    return Ending::told("too many undelivered messages", DisconnectReasonCode::QuotaExceeded);
                }
                revocation = revocations.next() => match revocation {
                    Revocation::Session(session) => {
                        if let Err(ending) = Box::pin(self.drop_revoked_filters(&session)).await {
                            return ending;
                        }
                    }
                    // A token ended alone (sign-out) ends only the connections made with it.
                    Revocation::Credentials if self.shared.staff_revocations.refuses_identity(&self.identity) => return Ending::told("credentials revoked", DisconnectReasonCode::AdministrativeAction),
                    Revocation::Credentials => {}
                },
                () = &mut timer, if armed.is_some() => {
                    let now = Instant::now();
                    if expiry.is_some_and(|at| at <= now) {
                        tracing::debug!(client_id = %self.client_id, "credentials expired");
                        return Ending::told("credentials expired", DisconnectReasonCode::MaximumConnectTime);
                    }
                    if deadline.is_some_and(|at| at <= now) {
                        tracing::debug!(client_id = %self.client_id, "keepalive expired");
                        return Ending::told("keepalive expired", DisconnectReasonCode::KeepAliveTimeout);
                    }
                    // Packets came since it was set: on to the deadline they moved.
                    if let Some(at) = alarm(deadline) {
                        timer.as_mut().reset(at);
                    }
                }
                // Boxed when polled: only a connection whose publish waits for the pipeline's
                // queue has this future at all.
                room = async { Box::pin(waiting_on.as_ref().expect("guarded").reserve()).await }, if waiting_on.is_some() => {
                    if let Some((_, message)) = self.waiting.pop_front()
                        && let Ok(permit) = room
                    {
                        permit.send(message);
                    }
                }
                read = std::future::poll_fn(|cx| wire.transport.poll_read_more(cx, buf)), if self.held.len() < HELD_PACKETS => match read {
                    Ok(0) => return Ending::abrupt("connection closed"),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(client_id = %self.client_id, error = %err, "read failed");
                        return Ending::abrupt("read failed");
                    }
                },
                message = forwarded.recv() => {
                    if let Some(ending) = Box::pin(self.forwarded(wire, message)).await {
                        return ending;
                    }
                }
            }
        }
    }

    /// Handles what is buffered: deliveries waiting (a fair share), held packets, and every
    /// complete packet the client sent. While one of the client's publishes waits for room in
    /// the pipeline's queue, what the client sends next is held, in order, except its
    /// acknowledgements of our deliveries and its pings: those keep the deliveries to it flowing
    /// meanwhile. Held packets are bounded by the client's own window of unacknowledged
    /// publishes (we acknowledge none of them yet), and past `HELD_PACKETS` nothing more is read
    /// at all.
    async fn handle_buffered(
        &mut self,
        wire: &mut Wire,
        buf: &mut BytesMut,
        forwarded: &delivery_queue::Receiver<Forwarded>,
        idle_limit: Option<Duration>,
        deadline: &mut Option<Instant>,
    ) -> Option<Ending> {
        let max = self.shared.config.max_packet_size;
        if let Some(ending) = self.drain_some(wire, forwarded).await {
            return Some(ending);
        }
        loop {
            if let Some(ending) = self.release_held(wire).await {
                return Some(ending);
            }
            if self.held.len() >= HELD_PACKETS {
                break;
            }
            match framing::decode(wire.version, buf, max) {
                Ok(Some(packet)) => {
                    if let Some(limit) = idle_limit {
                        *deadline = Some(Instant::now() + limit);
                    }
                    let packet = inbound::screen(packet, &mut self.aliases.incoming);
                    let holding = !self.waiting.is_empty() || !self.held.is_empty();
                    if holding && !packet.jumps_queue() {
                        self.held.push_back(packet);
                        continue;
                    }
                    if let Some(ending) = self.incoming(wire, packet).await {
                        return Some(ending);
                    }
                }
                Ok(None) => {
                    // Every whole packet is out: an empty buffer is let go, so an idle
                    // connection holds none (the transport allocates one to read into).
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    break;
                }
                Err(err) => {
                    tracing::debug!(client_id = %self.client_id, error = %err, "undecodable packet");
                    let (reason, code) = inbound::undecodable(&err);
                    return Some(Ending::told(reason, code));
                }
            }
        }
        None
    }

    fn is_v5(&self) -> bool {
        self.version == Version::V5
    }

    /// Hands a message (a publish or the will) to the publish hooks, then, unless one consumed
    /// it, to its subscribers, and records it if retained (see `Shared::route`); copies for
    /// patient queues that are full wait in `waiting`.
    fn route(&mut self, message: Outbound, origin: Origin) -> Result<(), RetainRefusal> {
        let waiting = self.shared.route(
            &self.identity,
            Some(&self.publisher),
            self.key,
            message,
            origin,
        )?;
        self.waiting.extend(waiting);
        Ok(())
    }
}

/// Packets held from a client whose publish waits for room in the pipeline's queue (see
/// `Session::relay`); beyond this the server stops reading from it. Not configuration: the
/// client's own window of unacknowledged publishes already bounds what it can send meanwhile,
/// and TCP's flow control takes over once the server stops reading, so this only caps the
/// memory of a client that sends other packets (pings, subscribes) without end.
const HELD_PACKETS: usize = 1024;
