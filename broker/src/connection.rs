//! One client connection: MQTT 3.1.1 framing, the session rules the gateway enforces itself, and
//! the relay between the client and its router link.
//!
//! This is the interim gateway (see the README's "MQTT support today"): MQTT 3.1.1 only, no
//! authentication yet, subscriptions granted at QoS 0. What it does, it does as the
//! specification says; what it does not do, it refuses with a reason code rather than pretending.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS, valid_filter, valid_topic};
use rumqttd::Notification;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::acl::{AclChain, DeniedPublish};
use crate::auth::{AuthChain, ConnectInfo, Identity, Refusal};
use crate::config::BrokerConfig;
use crate::hooks::{Denial, HookSet};
use crate::router::{Command, LinkKey, RouterFeeder};
use crate::transport::Transport;

/// State shared by every connection of one broker.
pub(crate) struct Shared {
    pub config: BrokerConfig,
    pub router: RouterFeeder,
    pub slots: Arc<Semaphore>,
    pub clients: ClientRegistry,
    pub auth: AuthChain,
    pub acl: AclChain,
    pub hooks: HookSet,
    next_key: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: BrokerConfig,
        router: RouterFeeder,
        auth: AuthChain,
        acl: AclChain,
        hooks: Vec<Arc<dyn crate::hooks::Hook>>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_connections));
        Self {
            config,
            router,
            slots,
            clients: ClientRegistry::default(),
            auth,
            acl,
            hooks: HookSet::new(hooks),
            next_key: AtomicU64::new(1),
        }
    }
}

/// Live connections by client id, so that a second CONNECT with the same id takes over
/// (MQTT 3.1.1 §3.1.4: the server disconnects the existing client).
#[derive(Default)]
pub(crate) struct ClientRegistry {
    live: Mutex<HashMap<String, Registered>>,
}

struct Registered {
    key: LinkKey,
    kick: CancellationToken,
    /// Sessions the client has just lost access to.
    revocations: mpsc::UnboundedSender<String>,
    /// Resolves (with an error) once the old connection has detached from the router.
    gone: oneshot::Receiver<()>,
}

impl ClientRegistry {
    /// Registers `client_id` for `key`, first closing any connection that holds it.
    async fn claim(
        &self,
        client_id: &str,
        key: LinkKey,
        kick: CancellationToken,
        revocations: mpsc::UnboundedSender<String>,
        gone: oneshot::Receiver<()>,
    ) {
        let registered = Registered {
            key,
            kick,
            revocations,
            gone,
        };
        let previous = self.lock().insert(client_id.to_owned(), registered);
        if let Some(previous) = previous {
            tracing::info!(client_id, "client id taken over by a new connection");
            previous.kick.cancel();
            // The old connection detaches promptly once kicked; the bound only guards against a
            // wedged task holding the id forever.
            let _ = timeout(Duration::from_secs(5), previous.gone).await;
        }
    }

    /// Tells the connection of `subject`, if any, that it no longer belongs to `session`.
    pub(crate) fn revoke(&self, subject: &str, session: &str) {
        if let Some(registered) = self.lock().get(subject) {
            // Fails only if the connection is ending, which revokes everything anyway.
            let _ = registered.revocations.send(session.to_owned());
        }
    }

    fn release(&self, client_id: &str, key: LinkKey) {
        let mut live = self.lock();
        if live.get(client_id).is_some_and(|r| r.key == key) {
            live.remove(client_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registered>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a connection ended; decides whether the will is published.
#[derive(Debug)]
enum Ending {
    /// The client sent DISCONNECT: the will is discarded.
    Clean,
    /// The network, the keepalive, a protocol error or a takeover ended it: the will is sent.
    Abrupt(&'static str),
    /// The server is shutting down.
    Shutdown,
}

/// Serves one accepted transport until it closes. Never panics on input.
pub(crate) async fn serve(
    mut transport: Transport,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    mut buf: BytesMut,
) {
    let config = &shared.config;
    let first_packet = tokio::select! {
        _ = shutdown.cancelled() => return,
        first = timeout(config.connect_timeout, read_packet(&mut transport, &mut buf, config.max_packet_size)) => first,
    };
    let connect = match first_packet {
        Ok(Ok(Some(Packet::Connect(connect)))) => connect,
        Ok(Ok(Some(other))) => {
            tracing::debug!(%peer, packet = ?packet_name(&other), "first packet was not CONNECT");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(ReadError::UnsupportedVersion(level))) => {
            tracing::debug!(%peer, level, "unsupported protocol version");
            refuse_unsupported_version(&mut transport, level).await;
            return;
        }
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "bad CONNECT");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within the connect timeout");
            return;
        }
    };

    let Some(permit) = shared.slots.clone().try_acquire_owned().ok() else {
        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached");
        refuse(&mut transport, ConnectReturnCode::ServiceUnavailable).await;
        return;
    };

    let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
    let password = connect
        .login
        .as_ref()
        .map(|login| login.password.as_bytes())
        .filter(|p| !p.is_empty());
    let offered_id = if connect.client_id.is_empty() && connect.clean_session && password.is_none()
    {
        // MQTT 3.1.1 §3.1.3.1: the server assigns an identifier to a clean-session client that
        // sent none. (With a token, the identifier is the token's subject.)
        format!("auto-{key}")
    } else {
        connect.client_id.clone()
    };
    let info = ConnectInfo {
        client_id: &offered_id,
        username: connect
            .login
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
            shared.hooks.denied(Denial::Connect {
                client_id: offered_id.clone(),
                reason: refusal.to_string(),
            });
            refuse(&mut transport, code).await;
            return;
        }
    };
    // The client id is the authenticated subject: an empty offered id takes the token's subject.
    let client_id = identity.subject.clone();
    if let Err(reason) = check_client_id(&client_id, config.max_client_id_len) {
        tracing::debug!(%peer, reason, "client id rejected");
        refuse(&mut transport, ConnectReturnCode::BadClientId).await;
        return;
    }
    let will_topic = connect.last_will.as_ref().map(|will| will.topic.as_str());
    let authorized = shared
        .acl
        .check_connect(&identity)
        .and_then(|()| match will_topic {
            // A will is a publish made on the client's behalf later: it is checked now, so that a
            // forbidden will is refused with the CONNECT instead of vanishing at disconnect.
            Some(topic) => shared
                .acl
                .check_publish(&identity, topic)
                .map_err(|reason| format!("will: {reason}")),
            None => Ok(()),
        });
    if let Err(reason) = authorized {
        shared.hooks.denied(Denial::Connect { client_id, reason });
        refuse(&mut transport, ConnectReturnCode::NotAuthorized).await;
        return;
    }

    let kick = shutdown.child_token();
    let (gone_tx, gone_rx) = oneshot::channel();
    let (revoke_tx, mut revocations) = mpsc::unbounded_channel();
    shared
        .clients
        .claim(&client_id, key, kick.clone(), revoke_tx, gone_rx)
        .await;

    let mut session = Session {
        shared: &shared,
        key,
        client_id,
        identity,
        peer,
        will: connect.last_will.clone(),
        qos2_pending: HashSet::new(),
        filters: Vec::new(),
        _permit: permit,
    };
    let ending = session
        .run(
            &mut transport,
            &mut buf,
            &connect,
            Control {
                kick: &kick,
                shutdown: &shutdown,
                revocations: &mut revocations,
            },
        )
        .await;
    session.finish(ending).await;
    // The router has been told to drop the link; a waiting takeover may now attach.
    drop(gone_tx);
    transport.close().await;
}

struct Session<'a> {
    shared: &'a Shared,
    key: LinkKey,
    client_id: String,
    identity: Identity,
    peer: SocketAddr,
    will: Option<mqttbytes::v4::LastWill>,
    /// QoS 2 packet ids received and forwarded but not yet released (PUBREL), so that a
    /// retransmitted PUBLISH is not forwarded twice.
    qos2_pending: HashSet<u16>,
    /// Filters this connection holds in the router, to re-check when access is revoked.
    filters: Vec<String>,
    _permit: OwnedSemaphorePermit,
}

impl Session<'_> {
    async fn run(
        &mut self,
        transport: &mut Transport,
        buf: &mut BytesMut,
        connect: &mqttbytes::v4::Connect,
        control: Control<'_>,
    ) -> Ending {
        let (attach_tx, attach_rx) = oneshot::channel();
        let attach = Command::Attach {
            key: self.key,
            client_id: self.client_id.clone(),
            clean_session: connect.clean_session,
            reply: attach_tx,
        };
        let attached = match self.shared.router.send(attach).await {
            Ok(()) => attach_rx.await,
            Err(_) => return self.refuse_unavailable(transport).await,
        };
        let attached = match attached {
            Ok(Ok(attached)) => attached,
            Ok(Err(err)) => {
                tracing::warn!(client_id = %self.client_id, error = %err, "router refused the link");
                return self.refuse_unavailable(transport).await;
            }
            Err(_) => return self.refuse_unavailable(transport).await,
        };

        let ack = ConnAck::new(
            ConnectReturnCode::Success,
            attached.session_present && !connect.clean_session,
        );
        if write(transport, Packet::ConnAck(ack)).await.is_err() {
            return Ending::Abrupt("write failed");
        }
        tracing::debug!(client_id = %self.client_id, role = %self.identity.role, peer = %self.peer, "connected");
        self.shared.hooks.connected(&self.identity);

        let (notifications, mut forwarded) = mpsc::channel(64);
        let forwarder = tokio::spawn(forward_notifications(attached.rx, notifications));
        let ending = self
            .relay(transport, buf, connect.keep_alive, &mut forwarded, control)
            .await;
        forwarder.abort();
        ending
    }

    async fn refuse_unavailable(&self, transport: &mut Transport) -> Ending {
        refuse(transport, ConnectReturnCode::ServiceUnavailable).await;
        Ending::Clean
    }

    async fn relay(
        &mut self,
        transport: &mut Transport,
        buf: &mut BytesMut,
        keep_alive: u16,
        forwarded: &mut mpsc::Receiver<Forwarded>,
        control: Control<'_>,
    ) -> Ending {
        let Control {
            kick,
            shutdown,
            revocations,
        } = control;
        // MQTT 3.1.1 §3.1.2.10: one and a half keepalive periods without a packet end the
        // connection; keepalive 0 turns the mechanism off.
        let idle_limit =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut deadline = idle_limit.map(|limit| Instant::now() + limit);
        let max = self.shared.config.max_packet_size;
        // The connection ends when its credentials do.
        let expiry = self.identity.expires_at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left
        });
        loop {
            // Handle every complete packet already buffered before waiting for more.
            loop {
                match decode(buf, max) {
                    Ok(Some(packet)) => {
                        if let Some(limit) = idle_limit {
                            deadline = Some(Instant::now() + limit);
                        }
                        match self.incoming(transport, packet).await {
                            Ok(None) => {}
                            Ok(Some(ending)) => return ending,
                            Err(ending) => return ending,
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::debug!(client_id = %self.client_id, error = %err, "protocol error");
                        return Ending::Abrupt("protocol error");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ending::Shutdown,
                _ = kick.cancelled() => return Ending::Abrupt("taken over"),
                Some(session) = revocations.recv() => {
                    if let Err(ending) = self.drop_revoked_filters(&session).await {
                        return ending;
                    }
                }
                _ = async { sleep_until(expiry.unwrap_or_else(Instant::now)).await }, if expiry.is_some() => {
                    tracing::debug!(client_id = %self.client_id, "credentials expired");
                    return Ending::Abrupt("credentials expired");
                }
                _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                    tracing::debug!(client_id = %self.client_id, "keepalive expired");
                    return Ending::Abrupt("keepalive expired");
                }
                read = transport.read_more(buf) => match read {
                    Ok(0) => return Ending::Abrupt("connection closed"),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(client_id = %self.client_id, error = %err, "read failed");
                        return Ending::Abrupt("read failed");
                    }
                },
                message = forwarded.recv() => match message {
                    Some(Forwarded::Publish { topic, payload, retain }) => {
                        let Ok(topic) = String::from_utf8(topic.to_vec()) else { continue };
                        // Access may have been revoked while this message was queued: every
                        // delivery is checked, not only the subscription.
                        if self.shared.acl.check_subscribe(&self.identity, &topic).is_err() {
                            continue;
                        }
                        let mut publish = Publish::from_bytes(topic, QoS::AtMostOnce, payload);
                        publish.retain = retain;
                        if write(transport, Packet::Publish(publish)).await.is_err() {
                            return Ending::Abrupt("write failed");
                        }
                    }
                    Some(Forwarded::Disconnected) | None => return Ending::Abrupt("router closed the link"),
                },
            }
        }
    }

    /// Handles one packet from the client. `Ok(Some(_))` ends the connection as requested,
    /// `Err(_)` ends it because of a failure.
    async fn incoming(
        &mut self,
        transport: &mut Transport,
        packet: Packet,
    ) -> Result<Option<Ending>, Ending> {
        let reply = match packet {
            Packet::Publish(publish) => {
                if !valid_topic(&publish.topic) || publish.topic.starts_with('$') {
                    // A wildcard or reserved topic name is a protocol violation (§4.7.1).
                    tracing::debug!(client_id = %self.client_id, topic = %publish.topic, "invalid publish topic");
                    return Err(Ending::Abrupt("invalid topic"));
                }
                let permitted = match self
                    .shared
                    .acl
                    .check_publish(&self.identity, &publish.topic)
                {
                    Ok(()) => true,
                    Err(reason) => {
                        self.shared.hooks.denied(Denial::Publish {
                            subject: self.identity.subject.clone(),
                            topic: publish.topic.clone(),
                            reason,
                        });
                        // MQTT 3.1.1 has no negative PUBACK: the configured policy decides.
                        if self.shared.config.acl.denied_publish == DeniedPublish::Disconnect {
                            return Err(Ending::Abrupt("publish denied"));
                        }
                        false
                    }
                };
                let forward = permitted
                    && match publish.qos {
                        QoS::ExactlyOnce => self.qos2_pending.insert(publish.pkid),
                        _ => true,
                    };
                if forward {
                    self.shared.hooks.message(&self.identity, &publish.topic);
                }
                if forward {
                    self.to_router(Command::Publish {
                        key: self.key,
                        topic: Bytes::from(publish.topic.into_bytes()),
                        payload: publish.payload,
                        retain: publish.retain,
                    })
                    .await?;
                }
                match publish.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(publish.pkid))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(publish.pkid))),
                }
            }
            Packet::PubRel(pubrel) => {
                self.qos2_pending.remove(&pubrel.pkid);
                Some(Packet::PubComp(PubComp::new(pubrel.pkid)))
            }
            Packet::Subscribe(subscribe) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut accepted = Vec::new();
                for filter in subscribe.filters {
                    // `$` filters (including shared subscriptions) are refused: rumqttd
                    // disconnects links that subscribe to them, and its shared-subscription
                    // bookkeeping has a known crash path.
                    if !valid_filter(&filter.path) || filter.path.starts_with('$') {
                        codes.push(SubscribeReasonCode::Failure);
                        continue;
                    }
                    match self
                        .shared
                        .acl
                        .check_subscribe(&self.identity, &filter.path)
                    {
                        Ok(()) => {
                            codes.push(SubscribeReasonCode::Success(QoS::AtMostOnce));
                            accepted.push(filter.path);
                        }
                        Err(reason) => {
                            self.shared.hooks.denied(Denial::Subscribe {
                                subject: self.identity.subject.clone(),
                                filter: filter.path,
                                reason,
                            });
                            codes.push(SubscribeReasonCode::Failure);
                        }
                    }
                }
                self.filters.extend(accepted.iter().cloned());
                if !accepted.is_empty() {
                    self.to_router(Command::Subscribe {
                        key: self.key,
                        filters: accepted,
                    })
                    .await?;
                }
                Some(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.filters
                    .retain(|held| !unsubscribe.topics.contains(held));
                for filter in unsubscribe.topics {
                    self.to_router(Command::Unsubscribe {
                        key: self.key,
                        filter,
                    })
                    .await?;
                }
                Some(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            }
            Packet::PingReq => Some(Packet::PingResp),
            Packet::Disconnect => return Ok(Some(Ending::Clean)),
            // Subscriptions are granted at QoS 0, so no PUBACK/PUBREC/PUBCOMP is expected from
            // the client; a stray one is harmless and ignored.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => None,
            other => {
                tracing::debug!(client_id = %self.client_id, packet = packet_name(&other), "unexpected packet");
                return Err(Ending::Abrupt("unexpected packet"));
            }
        };
        if let Some(reply) = reply
            && write(transport, reply).await.is_err()
        {
            return Err(Ending::Abrupt("write failed"));
        }
        Ok(None)
    }

    /// Removes, in the router, every filter this client may no longer hold after losing access to
    /// `session`. Deliveries already queued are caught by the per-message check in `relay`.
    async fn drop_revoked_filters(&mut self, session: &str) -> Result<(), Ending> {
        let (kept, revoked): (Vec<String>, Vec<String>) = std::mem::take(&mut self.filters)
            .into_iter()
            .partition(|filter| {
                self.shared
                    .acl
                    .check_subscribe(&self.identity, filter)
                    .is_ok()
            });
        self.filters = kept;
        for filter in revoked {
            tracing::info!(client_id = %self.client_id, session, filter, "subscription revoked");
            self.to_router(Command::Unsubscribe {
                key: self.key,
                filter,
            })
            .await?;
        }
        Ok(())
    }

    async fn to_router(&self, command: Command) -> Result<(), Ending> {
        self.shared
            .router
            .send(command)
            .await
            .map_err(|_| Ending::Shutdown)
    }

    /// Publishes the will if the ending calls for it, then detaches from the router.
    async fn finish(&mut self, ending: Ending) {
        let reason = match &ending {
            Ending::Clean => "client disconnected",
            Ending::Abrupt(reason) => reason,
            Ending::Shutdown => "server shutdown",
        };
        tracing::debug!(client_id = %self.client_id, reason, "connection closed");
        if let (Ending::Abrupt(_), Some(will)) = (&ending, self.will.take())
            && valid_topic(&will.topic)
            && !will.topic.starts_with('$')
        {
            let _ = self
                .shared
                .router
                .send(Command::Publish {
                    key: self.key,
                    topic: Bytes::from(will.topic.into_bytes()),
                    payload: will.message,
                    retain: will.retain,
                })
                .await;
        }
        let _ = self
            .shared
            .router
            .send(Command::Detach { key: self.key })
            .await;
        self.shared.clients.release(&self.client_id, self.key);
        self.shared.hooks.disconnected(&self.identity);
    }
}

/// What can end or change a connection from outside it.
struct Control<'a> {
    kick: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    revocations: &'a mut mpsc::UnboundedReceiver<String>,
}

enum Forwarded {
    Publish {
        topic: Bytes,
        payload: Bytes,
        retain: bool,
    },
    Disconnected,
}

/// Moves router notifications onto a tokio channel, which the relay loop can `select!` on
/// without risk of losing a wake-up.
async fn forward_notifications(mut rx: rumqttd::local::LinkRx, out: mpsc::Sender<Forwarded>) {
    loop {
        let forwarded = match rx.next().await {
            Ok(Some(Notification::Forward(forward))) => Forwarded::Publish {
                topic: forward.publish.topic,
                payload: forward.publish.payload,
                retain: forward.publish.retain,
            },
            // The router pauses a link whose buffer it has drained; it must be woken or it
            // stalls (rumqttd examples/stress.rs).
            Ok(Some(Notification::Unschedule)) => {
                if rx.wake().await.is_err() {
                    Forwarded::Disconnected
                } else {
                    continue;
                }
            }
            Ok(Some(Notification::Disconnect(..))) | Err(_) => Forwarded::Disconnected,
            // Acknowledgements of our own router-side subscribes and the like.
            Ok(_) => continue,
        };
        let last = matches!(forwarded, Forwarded::Disconnected);
        if out.send(forwarded).await.is_err() || last {
            return;
        }
    }
}

fn check_client_id(client_id: &str, max_len: usize) -> Result<(), &'static str> {
    if client_id.is_empty() {
        return Err("empty client id with clean session off");
    }
    if client_id.len() > max_len {
        return Err("client id too long");
    }
    // rumqttd's router refuses these characters; refusing them here answers with a CONNACK.
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
    #[error("MQTT protocol level {0} is not supported")]
    UnsupportedVersion(u8),
    #[error(transparent)]
    Mqtt(#[from] mqttbytes::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads the next whole packet; `Ok(None)` when the peer closed first.
async fn read_packet(
    transport: &mut Transport,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Packet>, ReadError> {
    loop {
        if let Some(level) = connect_protocol_level(buf)
            && level != 4
        {
            return Err(ReadError::UnsupportedVersion(level));
        }
        if let Some(packet) = decode(buf, max)? {
            return Ok(Some(packet));
        }
        if transport.read_more(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Decodes one packet if `buf` holds a whole one.
fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, mqttbytes::Error> {
    match Packet::read(buf, max) {
        Ok(packet) => Ok(Some(packet)),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The protocol level of a CONNECT at the head of `buf`, once its variable header has arrived.
/// rumqttc's v4 decoder would misread a v5 CONNECT's properties, so the level is checked first.
fn connect_protocol_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    // Skip the remaining-length varint (1 to 4 bytes).
    let mut i = 1;
    while i < 5 && *buf.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_start = i + 1;
    let name_len = u16::from_be_bytes([*buf.get(name_start)?, *buf.get(name_start + 1)?]) as usize;
    buf.get(name_start + 2 + name_len).copied()
}

async fn refuse(transport: &mut Transport, code: ConnectReturnCode) {
    let _ = write(transport, Packet::ConnAck(ConnAck::new(code, false))).await;
    transport.close().await;
}

/// MQTT 5.0 §3.1.2.2 lets a server answer an unsupported version with a CONNACK in the client's
/// own format; a v5 client then sees reason 0x84 instead of a dropped socket.
async fn refuse_unsupported_version(transport: &mut Transport, level: u8) {
    let mut out = BytesMut::new();
    let written = if level == 5 {
        use rumqttc::v5::mqttbytes::v5::{ConnAck as ConnAckV5, ConnectReturnCode as CodeV5};
        ConnAckV5 {
            session_present: false,
            code: CodeV5::UnsupportedProtocolVersion,
            properties: None,
        }
        .write(&mut out)
        .is_ok()
    } else {
        Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::RefusedProtocolVersion,
            false,
        ))
        .write(&mut out, usize::MAX)
        .is_ok()
    };
    if written {
        let _ = transport.write_all(&out).await;
    }
    transport.close().await;
}

async fn write(transport: &mut Transport, packet: Packet) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(packet.size() + 5);
    packet
        .write(&mut out, usize::MAX)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string()))?;
    transport.write_all(&out).await
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (id, ok) in rows {
            assert_eq!(check_client_id(id, 128).is_ok(), *ok, "{id:?}");
        }
        assert!(check_client_id(&"x".repeat(129), 128).is_err());
    }

    #[test]
    fn protocol_level_is_read_before_decoding() {
        // CONNECT, remaining length 10, "MQTT", level 5.
        let v5 = [0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 60];
        assert_eq!(connect_protocol_level(&v5), Some(5));
        assert_eq!(
            connect_protocol_level(&v5[..8]),
            None,
            "not enough bytes yet"
        );
        assert_eq!(connect_protocol_level(&[0x30, 0]), None, "not a CONNECT");
        // A two-byte remaining length.
        let long = [0x10, 0x80, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 4];
        assert_eq!(connect_protocol_level(&long), Some(4));
    }
}
