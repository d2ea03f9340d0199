//! One client connection: the CONNECT rules, the session the gateway keeps for the client, and
//! the relay between the client and its router link.
//!
//! Packets are handled in MQTT 5's model (see `codec`), whichever version the client speaks.
//! rumqttd's router only fans messages out, at QoS 0, to local links; everything a client sees
//! of MQTT's delivery guarantees is done here: QoS 1 deliveries with packet ids, the client's
//! receive maximum and maximum packet size, QoS min(published, granted), no-local,
//! retain-as-published and retain handling, retained messages, persistent sessions and their
//! expiry, and the will.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{
    self, ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, Packet,
    PubAck, PubAckReason, PubComp, PubRec, PubRecReason, Publish, PublishProperties,
    RetainForwardRule, SubAck, SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use rumqttc::v5::mqttbytes::{QoS, matches, valid_filter};
use rumqttd::Notification;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use schemas::topics::Topic;

use crate::acl::{AclChain, DeniedPublish, Memberships};
use crate::auth::{AuthChain, ConnectInfo, Identity, Refusal, Role};
use crate::codec::{self, CodecError, Version};
use crate::config::BrokerConfig;
use crate::fanout::{self, Fanout, Inbox};
use crate::framing;
use crate::hooks::{Denial, HookSet};
use crate::inbound::{self, Inbound};
use crate::router::{Command, LinkKey, RouterFeeder};
use crate::session::{
    self, Outbound, PROVENANCE_KEY, Provenance, RetainedStore, SessionState, SessionStore,
    SubOptions,
};
use crate::staff::StaffRevocations;
use crate::transport::Transport;

/// State shared by every connection of one broker.
pub(crate) struct Shared {
    pub config: BrokerConfig,
    pub router: RouterFeeder,
    pub slots: Arc<Semaphore>,
    pub clients: ClientRegistry,
    pub auth: AuthChain,
    pub acl: AclChain,
    /// Session memberships, kept current from the pipeline's announcements (`feed`).
    pub memberships: Memberships,
    /// Revoked credentials, which the JWT authenticator also checks (`staff`).
    pub staff_revocations: StaffRevocations,
    pub fanout: Fanout,
    link_ids: LinkIds,
    pub hooks: HookSet,
    sessions: SessionStore,
    retained: RetainedStore,
    next_key: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: BrokerConfig,
        router: RouterFeeder,
        auth: AuthChain,
        acl: AclChain,
        memberships: Memberships,
        staff_revocations: StaffRevocations,
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
            memberships,
            staff_revocations,
            fanout: Fanout::default(),
            link_ids: LinkIds::default(),
            hooks: HookSet::new(hooks),
            sessions: SessionStore::default(),
            retained: RetainedStore::default(),
            next_key: AtomicU64::new(1),
        }
    }

    fn key(&self) -> LinkKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Lets go of a stored session that will not resume: its fan-out registrations.
    fn release(&self, state: SessionState) {
        if let Some(parked) = state.parked {
            self.fanout
                .remove_all(parked.key, state.subscriptions.keys());
        }
    }

    /// Drops what the gateway keeps for a session that is over: its retained messages.
    pub(crate) fn forget_session(&self, session: &str) {
        let prefix = Topic::Session {
            session,
            kind: schemas::topics::SessionTopic::Messages,
            subject: None,
        }
        .to_string();
        // `cc/v1/sessions/{id}/messages` -> `cc/v1/sessions/{id}/`
        let prefix = prefix.trim_end_matches("messages");
        self.retained.remove_under(prefix);
    }
}

/// Ids for rumqttd links of sessions that end with their connection, reused after detaching.
#[derive(Default)]
struct LinkIds {
    free: Mutex<Vec<u64>>,
    next: AtomicU64,
}

impl LinkIds {
    fn take(&self) -> u64 {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn give_back(&self, id: u64) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(id);
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
    /// What the client has just lost access to.
    revocations: mpsc::UnboundedSender<Revocation>,
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
        revocations: mpsc::UnboundedSender<Revocation>,
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
            // wedged task holding the id forever (a bug, not a condition to tune for, so it is not
            // configuration).
            let _ = timeout(Duration::from_secs(5), previous.gone).await;
        }
    }

    /// Tells the connection of `subject`, if any, that it no longer belongs to `session`.
    pub(crate) fn revoke(&self, subject: &str, session: &str) {
        if let Some(registered) = self.lock().get(subject) {
            // Fails only if the connection is ending, which revokes everything anyway.
            let _ = registered
                .revocations
                .send(Revocation::Session(session.to_owned()));
        }
    }

    /// Ends the connection of `subject`, if any: its credentials were revoked (`staff`).
    pub(crate) fn end(&self, subject: &str) {
        if let Some(registered) = self.lock().get(subject) {
            let _ = registered.revocations.send(Revocation::Credentials);
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

/// What a live connection loses from outside it.
enum Revocation {
    /// Its subject left this session: its subscriptions there go.
    Session(String),
    /// Its credentials were revoked: the connection ends (MQTT 5: Administrative action).
    Credentials,
}

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

/// What the client asked for in CONNECT that outlives the handshake.
struct ClientLimits {
    keep_alive: u16,
    /// Unacknowledged QoS 1 deliveries the client accepts at once (MQTT 5 receive maximum).
    receive_maximum: usize,
    /// Largest packet the client accepts; larger deliveries are discarded (MQTT 5 §3.1.2.11.4).
    max_packet_size: usize,
}

/// Serves one accepted transport until it closes. Never panics on input.
pub(crate) async fn serve(
    transport: Transport,
    peer: SocketAddr,
    listener: crate::Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    mut buf: BytesMut,
) {
    let config = &shared.config;
    let mut transport = transport;
    let first = tokio::select! {
        _ = shutdown.cancelled() => return,
        first = timeout(config.connect_timeout, read_connect(&mut transport, &mut buf, config.max_packet_size)) => first,
    };
    let (version, connect, will, login) = match first {
        Ok(Ok(Some(connect))) => connect,
        Ok(Ok(None)) => return,
        Ok(Err(ReadError::Codec(CodecError::UnsupportedVersion(level)))) => {
            tracing::debug!(%peer, level, "unsupported protocol version");
            let mut wire = Wire {
                transport,
                version: Version::V4,
            };
            wire.refuse(ConnectReturnCode::RefusedProtocolVersion).await;
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
    let mut wire = Wire { transport, version };

    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached");
        wire.refuse(ConnectReturnCode::QuotaExceeded).await;
        return;
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
            shared.hooks.denied(Denial::Connect {
                client_id: offered_id.clone(),
                reason: refusal.to_string(),
            });
            wire.refuse(code).await;
            return;
        }
    };
    // The client id is the authenticated subject: an empty offered id takes the token's subject.
    let client_id = identity.subject.clone();
    if let Err(reason) = check_client_id(&client_id, config.max_client_id_len) {
        tracing::debug!(%peer, reason, "client id rejected");
        wire.refuse(ConnectReturnCode::ClientIdentifierNotValid)
            .await;
        return;
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
                .map_err(|reason| format!("will: {reason}")),
            None => Ok(()),
        });
    if let Err(reason) = authorized {
        shared.hooks.denied(Denial::Connect { client_id, reason });
        wire.refuse(ConnectReturnCode::NotAuthorized).await;
        return;
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
    let limits = ClientLimits {
        keep_alive: connect.keep_alive,
        receive_maximum: properties
            .receive_maximum
            .map_or(usize::from(u16::MAX), usize::from)
            .max(1),
        max_packet_size: properties
            .max_packet_size
            .map_or(usize::MAX, |max| max as usize),
    };

    let kick = shutdown.child_token();
    let (gone_tx, gone_rx) = oneshot::channel();
    let (revoke_tx, mut revocations) = mpsc::unbounded_channel();
    shared
        .clients
        .claim(&client_id, key, kick.clone(), revoke_tx.clone(), gone_rx)
        .await;
    // A revocation between authenticating and registering found no connection to end.
    if shared.staff_revocations.refuses_identity(&identity) {
        let _ = revoke_tx.send(Revocation::Credentials);
    }

    // Only now, after any previous connection with this id has stored its session.
    let resumed = if connect.clean_start {
        if let Some(old) = shared.sessions.discard(&client_id) {
            shared.release(old);
        }
        None
    } else {
        shared.sessions.resume(&client_id)
    };
    let session_present = resumed.is_some();

    let mut session = Session {
        shared: &shared,
        version,
        key,
        client_id,
        identity,
        peer,
        listener,
        will: will.map(|will| Outbound {
            topic: will.topic,
            payload: will.message,
            qos: will.qos,
            retain: will.retain,
            properties: will.properties.map(will_properties),
        }),
        state: resumed.unwrap_or_default(),
        expiry,
        limits,
        inbox: None,
        router_id: None,
        persistent_link: false,
        deliveries: None,
        waiting: VecDeque::new(),
        held: VecDeque::new(),
        forwarder: None,
        _permit: permit,
    };
    let mut ack_properties = ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: u32::try_from(config.max_packet_size).ok(),
        assigned_client_identifier: None,
        // 0: clients must not use topic aliases (rumqttd keys them by filter, see the notes).
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        server_keep_alive: None,
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
    let ending = session
        .run(
            &mut wire,
            &mut buf,
            session_present,
            ack_properties,
            Control {
                kick: &kick,
                shutdown: &shutdown,
                revocations: &mut revocations,
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
        let disconnect = Disconnect {
            reason_code,
            // Always with properties: rumqttc cannot read a DISCONNECT that has a reason code
            // but no property length, although MQTT 5 allows it.
            properties: Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(reason.to_owned()),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        };
        let _ = wire.send(&Packet::Disconnect(disconnect)).await;
    }
    if let Some(generation) = session.finish(ending).await {
        expire_later(
            Arc::downgrade(&shared),
            session.client_id.clone(),
            generation,
            session.expiry,
        );
    }
    // The router has been told to drop the link and the session is stored: a waiting takeover
    // may now attach and resume it.
    drop(gone_tx);
    wire.transport.close().await;
}

fn will_properties(p: v5::LastWillProperties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        content_type: p.content_type,
        ..PublishProperties::default()
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
    will: Option<Outbound>,
    state: SessionState,
    /// Seconds the session outlives the connection (0: it ends with it).
    expiry: u32,
    limits: ClientLimits,
    /// This connection's delivery queue, once it is running (see `fanout`).
    inbox: Option<Inbox>,
    /// The pooled id its rumqttd link has, if it is not its own client id.
    router_id: Option<u64>,
    /// Whether its rumqttd link is a persistent session under its client id, which rumqttd
    /// keeps until told otherwise.
    persistent_link: bool,
    /// The receiving end of `inbox` once the connection has ended, for a session kept.
    deliveries: Option<mpsc::Receiver<Forwarded>>,
    /// Moves deliveries from this connection's rumqttd link, once it has one.
    forwarder: Option<tokio::task::JoinHandle<()>>,
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
        // rumqttd keeps a persistent session's subscriptions and catches it up on messages it
        // missed. A new session must start from nothing there too; one that outlives its
        // connection is attached as persistent after the wipe.
        if !session_present
            && self.expiry > 0
            && end_router_session(self.shared, self.client_id.clone())
                .await
                .is_err()
        {
            return self.refuse_unavailable(wire).await;
        }
        // A persistent session's link exists from the start: rumqttd keeps its subscriptions
        // outside `cc/` while it is away, and what they matched. So does a resumed session's
        // even when its new CONNECT gives no expiry (MQTT 5: the session resumes, then ends with
        // this connection), or what it missed and its subscriptions there would be lost. Any
        // other connection gets a link only if it uses a topic outside `cc/` (see `link`): chat
        // clients never do, and a rumqttd link costs tens of KiB.
        let mut attached = None;
        if self.expiry > 0 || session_present {
            match self.attach(self.key, false).await {
                Ok(link) => attached = Some(link),
                Err(()) => return self.refuse_unavailable(wire).await,
            }
            self.persistent_link = true;
        }

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

        // MQTT §4.4: unacknowledged deliveries are sent again, flagged DUP, before anything new.
        let inflight: Vec<_> = self.state.inflight.iter().cloned().collect();
        for (pkid, message) in inflight {
            if self
                .write_publish(wire, &message, pkid, true)
                .await
                .is_err()
            {
                return Ending::abrupt("write failed");
            }
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
        if let Some(link) = attached {
            let notifications = inbox.deliveries.clone();
            self.forwarder = Some(tokio::spawn(forward_notifications(link, notifications)));
        }
        self.inbox = Some(inbox);
        let ending = self.relay(wire, buf, &mut forwarded, control).await;
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
        }
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

    /// Attaches this connection to rumqttd's router, once, when it first uses a topic outside
    /// `cc/`. rumqttd remembers every client id it was ever given (its session graveyard), so
    /// the link takes a pooled id, reused once this connection has detached: the router's memory
    /// follows the live connections, not every client there ever was.
    async fn link(&mut self) -> Result<(), Ending> {
        if self.forwarder.is_some() {
            return Ok(());
        }
        let Some(inbox) = &self.inbox else {
            return Ok(());
        };
        let notifications = inbox.deliveries.clone();
        let id = self.shared.link_ids.take();
        self.router_id = Some(id);
        let router_id = format!("{}link-{id}", crate::feed::INTERNAL_PREFIX);
        match self.attach_as(self.key, router_id, true).await {
            Ok(link) => {
                self.forwarder = Some(tokio::spawn(forward_notifications(link, notifications)));
                Ok(())
            }
            Err(()) => Err(Ending::told(
                "the router refused a link",
                DisconnectReasonCode::ServerBusy,
            )),
        }
    }

    async fn attach(
        &self,
        key: LinkKey,
        clean_session: bool,
    ) -> Result<rumqttd::local::LinkRx, ()> {
        self.attach_as(key, self.client_id.clone(), clean_session)
            .await
    }

    async fn attach_as(
        &self,
        key: LinkKey,
        client_id: String,
        clean_session: bool,
    ) -> Result<rumqttd::local::LinkRx, ()> {
        let (reply, answer) = oneshot::channel();
        let attach = Command::Attach {
            key,
            client_id,
            clean_session,
            reply,
        };
        self.shared.router.send(attach).await.map_err(drop)?;
        match answer.await {
            Ok(Ok(rx)) => Ok(rx),
            Ok(Err(err)) => {
                tracing::warn!(client_id = %self.client_id, error = %err, "router refused the link");
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    async fn refuse_unavailable(&mut self, wire: &mut Wire) -> Ending {
        wire.refuse(ConnectReturnCode::ServerUnavailable).await;
        // The client never got a session: nothing to keep.
        self.expiry = 0;
        Ending::Clean { with_will: false }
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
                        let packet = inbound::screen(packet);
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

    /// Delivers up to `FAIR_SHARE` queued deliveries without waiting, so that a client that
    /// sends without pause still gets what is queued for it (the `select!` in `relay` prefers
    /// reading, and the queue is bounded).
    async fn drain_some(
        &mut self,
        wire: &mut Wire,
        forwarded: &mut mpsc::Receiver<Forwarded>,
    ) -> Option<Ending> {
        for _ in 0..FAIR_SHARE {
            match forwarded.try_recv() {
                Ok(message) => {
                    if let Some(ending) = self.forwarded(wire, Some(message)).await {
                        return Some(ending);
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return self.forwarded(wire, None).await;
                }
            }
        }
        None
    }

    /// One delivery from the fan-out or the router link (`None`: the queue closed).
    async fn forwarded(&mut self, wire: &mut Wire, message: Option<Forwarded>) -> Option<Ending> {
        match message {
            Some(Forwarded::Publish {
                topic,
                payload,
                properties,
            }) => {
                if self
                    .deliver(wire, topic, payload, properties)
                    .await
                    .is_err()
                {
                    return Some(Ending::abrupt("write failed"));
                }
                if self.state.pending.len() > self.shared.config.max_pending_per_client {
                    tracing::warn!(client_id = %self.client_id, "too many deliveries waiting; disconnecting");
                    return Some(Ending::told(
                        "too many undelivered messages",
                        DisconnectReasonCode::QuotaExceeded,
                    ));
                }
                None
            }
            Some(Forwarded::Disconnected) | None => Some(Ending::told(
                "router closed the link",
                DisconnectReasonCode::UnspecifiedError,
            )),
        }
    }

    /// Routes one message from the router to this client, as its subscriptions say.
    async fn deliver(
        &mut self,
        wire: &mut Wire,
        topic: Bytes,
        payload: Bytes,
        properties: Option<Box<PublishProperties>>,
    ) -> std::io::Result<()> {
        let Ok(topic_name) = std::str::from_utf8(&topic) else {
            return Ok(());
        };
        // Access may have been revoked while this message was queued: every delivery is
        // checked, not only the subscription.
        if self
            .shared
            .acl
            .check_subscribe(&self.identity, topic_name)
            .is_err()
        {
            return Ok(());
        }
        let mut properties = properties.map(|p| *p);
        let provenance = Provenance::take(&mut properties).unwrap_or(Provenance {
            qos: QoS::AtMostOnce,
            retain: false,
            publisher: String::new(),
        });
        // The router delivers a copy per matching filter; the options of every matching
        // subscription decide together (MQTT 5 §3.3.4): the highest granted QoS, no-local if
        // the client published it, retain-as-published if any subscription asks for it.
        let mut granted: Option<QoS> = None;
        let mut retain_as_published = false;
        for (filter, options) in &self.state.subscriptions {
            if !matches(topic_name, filter)
                || (options.no_local && provenance.publisher == self.client_id)
            {
                continue;
            }
            granted = Some(granted.map_or(options.qos, |qos| max_qos(qos, options.qos)));
            retain_as_published |= options.retain_as_published;
        }
        let Some(granted) = granted else {
            return Ok(());
        };
        let message = Outbound {
            topic,
            payload,
            qos: min_qos(provenance.qos, granted),
            retain: retain_as_published && provenance.retain,
            properties,
        };
        self.queue(wire, message).await
    }

    /// Sends `message` now, or queues it behind the client's receive maximum.
    async fn queue(&mut self, wire: &mut Wire, message: Outbound) -> std::io::Result<()> {
        if message.qos == QoS::AtMostOnce {
            return self.write_publish(wire, &message, 0, false).await;
        }
        if self.state.inflight.len() >= self.limits.receive_maximum {
            self.state.pending.push_back(message);
            return Ok(());
        }
        let pkid = self.state.next_pkid();
        self.state.inflight.push_back((pkid, message.clone()));
        self.write_publish(wire, &message, pkid, false).await
    }

    /// Sends queued deliveries while the client's receive maximum has room.
    async fn release_pending(&mut self, wire: &mut Wire) -> std::io::Result<()> {
        while self.state.inflight.len() < self.limits.receive_maximum {
            let Some(message) = self.state.pending.pop_front() else {
                break;
            };
            self.queue(wire, message).await?;
        }
        Ok(())
    }

    async fn write_publish(
        &mut self,
        wire: &mut Wire,
        message: &Outbound,
        pkid: u16,
        dup: bool,
    ) -> std::io::Result<()> {
        let publish = Publish {
            dup,
            qos: message.qos,
            retain: message.retain,
            topic: message.topic.clone(),
            pkid,
            payload: message.payload.clone(),
            properties: message.properties.clone(),
        };
        let packet = Packet::Publish(publish);
        if packet.size() > self.limits.max_packet_size {
            // MQTT 5 §3.1.2.11.4: a message the client cannot accept is discarded, as if sent.
            tracing::debug!(client_id = %self.client_id, "delivery larger than the client's maximum packet size dropped");
            if message.qos != QoS::AtMostOnce {
                self.state.inflight.retain(|(id, _)| *id != pkid);
            }
            return Ok(());
        }
        wire.send(&packet).await
    }

    /// Handles one packet from the client; `Some` ends the connection.
    async fn incoming(&mut self, wire: &mut Wire, packet: Inbound) -> Option<Ending> {
        let reply = match packet {
            Inbound::Publish { publish, topic } => match self.publish(publish, topic).await {
                Ok(reply) => reply,
                Err(ending) => return Some(ending),
            },
            Inbound::PubAck(acked) => {
                self.state.inflight.retain(|(pkid, _)| *pkid != acked);
                if self.release_pending(wire).await.is_err() {
                    return Some(Ending::abrupt("write failed"));
                }
                None
            }
            Inbound::PubRel(pkid) => {
                self.state.qos2_incoming.remove(&pkid);
                Some(Packet::PubComp(PubComp {
                    pkid,
                    reason: v5::PubCompReason::Success,
                    properties: None,
                }))
            }
            Inbound::Ignored => None,
            Inbound::Subscribe(subscribe) => {
                return self.subscribe(wire, subscribe).await.err();
            }
            Inbound::Unsubscribe(unsubscribe) => {
                let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
                for filter in unsubscribe.filters {
                    if self.state.subscriptions.remove(&filter).is_some() {
                        if let Err(ending) = self.filter_removed(&filter).await {
                            return Some(ending);
                        }
                        reasons.push(UnsubAckReason::Success);
                    } else {
                        reasons.push(UnsubAckReason::NoSubscriptionExisted);
                    }
                }
                Some(Packet::UnsubAck(UnsubAck {
                    pkid: unsubscribe.pkid,
                    reasons,
                    properties: None,
                }))
            }
            Inbound::PingReq => Some(Packet::PingResp(v5::PingResp)),
            Inbound::Disconnect {
                with_will,
                session_expiry,
            } => {
                // MQTT 5 §3.14.2.2.2: a session that was to end with the connection cannot be
                // made persistent at DISCONNECT; otherwise the new interval applies.
                if let Some(interval) = session_expiry
                    && self.expiry > 0
                {
                    let max = u32::try_from(self.shared.config.max_session_expiry.as_secs())
                        .unwrap_or(u32::MAX - 1);
                    self.expiry = interval.min(max);
                }
                return Some(Ending::Clean { with_will });
            }
            Inbound::Close { reason, code } => {
                tracing::debug!(client_id = %self.client_id, reason, "protocol violation");
                return Some(Ending::told(reason, code));
            }
        };
        match reply {
            Some(reply) if wire.send(&reply).await.is_err() => Some(Ending::abrupt("write failed")),
            _ => None,
        }
    }

    /// A PUBLISH from the client (its topic name already checked): authorized, routed,
    /// acknowledged.
    async fn publish(&mut self, publish: Publish, topic: String) -> Result<Option<Packet>, Ending> {
        let (pkid, qos) = (publish.pkid, publish.qos);
        // The reserved `$` namespace is refused like any unauthorized topic: MQTT 5 says so in
        // its acknowledgement and keeps the connection.
        let decision = if inbound::is_reserved(&topic) {
            Err("topics beginning with `$` are reserved".to_owned())
        } else {
            self.shared.acl.check_publish(&self.identity, &topic)
        };
        // Whether to answer with a negative acknowledgement (MQTT 5 only).
        let refused = match decision {
            Ok(()) => {
                let first_time = qos != QoS::ExactlyOnce || self.state.qos2_incoming.insert(pkid);
                if first_time {
                    self.shared.hooks.message(&self.identity, &topic);
                    if self.identity.role == Role::Service && crate::feed::is_feed(&topic) {
                        crate::feed::apply(&self.shared.memberships, &publish.payload);
                    }
                    let message = Outbound {
                        topic: publish.topic,
                        payload: publish.payload,
                        qos,
                        retain: publish.retain,
                        properties: publish.properties,
                    };
                    self.route(message).await?;
                }
                false
            }
            Err(reason) => {
                self.shared.hooks.denied(Denial::Publish {
                    subject: self.identity.subject.clone(),
                    topic,
                    reason,
                });
                match self.shared.config.acl.denied_publish {
                    // MQTT 5 says no in its acknowledgement.
                    _ if qos != QoS::AtMostOnce && self.is_v5() => true,
                    // MQTT 3.1.1 has no negative acknowledgement: the configured policy decides.
                    DeniedPublish::Disconnect if !self.is_v5() => {
                        return Err(Ending::told(
                            "publish denied",
                            DisconnectReasonCode::NotAuthorized,
                        ));
                    }
                    _ => false,
                }
            }
        };
        Ok(match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(PubAck {
                pkid,
                reason: if refused {
                    PubAckReason::NotAuthorized
                } else {
                    PubAckReason::Success
                },
                properties: None,
            })),
            QoS::ExactlyOnce => Some(Packet::PubRec(PubRec {
                pkid,
                reason: if refused {
                    PubRecReason::NotAuthorized
                } else {
                    PubRecReason::Success
                },
                properties: None,
            })),
        })
    }

    fn is_v5(&self) -> bool {
        self.version == Version::V5
    }

    /// Hands a message (a publish or the will) to the router with its provenance, and records
    /// it if retained.
    async fn route(&mut self, mut message: Outbound) -> Result<(), Ending> {
        let topic = String::from_utf8_lossy(&message.topic).into_owned();
        if let Some(properties) = message.properties.as_mut() {
            session::sanitize_user_properties(properties, fanout::routes(&topic));
            if *properties == PublishProperties::default() {
                message.properties = None;
            }
        }
        if message.retain {
            self.shared.retained.update(&topic, message.clone());
        }
        let provenance = Provenance {
            qos: message.qos,
            retain: message.retain,
            publisher: self.client_id.clone(),
        };
        let mut properties = message.properties.unwrap_or_default();
        properties
            .user_properties
            .push((PROVENANCE_KEY.to_owned(), provenance.encode()));
        if fanout::routes(&topic) && is_submission(&topic) {
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
        if fanout::routes(&topic) {
            let properties = Box::new(properties);
            let forwarded = || Forwarded::Publish {
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                properties: Some(properties.clone()),
            };
            let waiting = self.shared.fanout.publish(self.key, &topic, forwarded);
            self.waiting.extend(waiting);
            return Ok(());
        }
        self.link().await?;
        self.to_router(Command::Publish {
            key: self.key,
            topic: message.topic,
            payload: message.payload,
            properties: Some(properties),
        })
        .await
    }

    /// A SUBSCRIBE: each filter checked and granted at most QoS 1, the SUBACK, then the retained
    /// messages the retain handling option asks for.
    async fn subscribe(&mut self, wire: &mut Wire, subscribe: v5::Subscribe) -> Result<(), Ending> {
        let with_identifier = subscribe
            .properties
            .as_ref()
            .is_some_and(|p| p.id.is_some());
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for filter in subscribe.filters {
            let path = filter.path;
            let code = if with_identifier {
                // CONNACK said subscription identifiers are not available.
                SubscribeReasonCode::SubscriptionIdNotSupported
            } else if path.starts_with("$share/") {
                SubscribeReasonCode::SharedSubscriptionsNotSupported
            } else if !valid_filter(&path) || path.starts_with('$') {
                // `$` filters are refused: rumqttd disconnects links that subscribe to them.
                SubscribeReasonCode::TopicFilterInvalid
            } else if let Err(reason) = self.shared.acl.check_subscribe(&self.identity, &path) {
                self.shared.hooks.denied(Denial::Subscribe {
                    subject: self.identity.subject.clone(),
                    filter: path,
                    reason,
                });
                SubscribeReasonCode::NotAuthorized
            } else {
                let granted = min_qos(filter.qos, QoS::AtLeastOnce);
                let options = SubOptions {
                    qos: granted,
                    no_local: filter.nolocal,
                    retain_as_published: filter.preserve_retain,
                };
                let existed = self
                    .state
                    .subscriptions
                    .insert(path.clone(), options)
                    .is_some();
                let send_retained = match filter.retain_forward_rule {
                    RetainForwardRule::OnEverySubscribe => true,
                    RetainForwardRule::OnNewSubscribe => !existed,
                    RetainForwardRule::Never => false,
                };
                if send_retained {
                    retained.extend(self.shared.retained.matching(&path).into_iter().map(
                        |mut message| {
                            // A retained message sent because of a subscription carries the retain
                            // flag, at no more than the subscription's QoS (MQTT 5 §3.3.1.3).
                            message.retain = true;
                            message.qos = min_qos(message.qos, granted);
                            message
                        },
                    ));
                }
                if !existed {
                    self.filter_added(&path).await?;
                }
                SubscribeReasonCode::Success(granted)
            };
            codes.push(code);
        }
        let ack = SubAck {
            pkid: subscribe.pkid,
            return_codes: codes,
            properties: None,
        };
        if wire.send(&Packet::SubAck(ack)).await.is_err() {
            return Err(Ending::abrupt("write failed"));
        }
        for message in retained {
            if !self.may_read(&message.topic) {
                continue;
            }
            if self.queue(wire, message).await.is_err() {
                return Err(Ending::abrupt("write failed"));
            }
        }
        Ok(())
    }

    fn may_read(&self, topic: &[u8]) -> bool {
        std::str::from_utf8(topic).is_ok_and(|topic| {
            self.shared
                .acl
                .check_subscribe(&self.identity, topic)
                .is_ok()
        })
    }

    /// Removes, in the router, every filter this client may no longer hold after losing access to
    /// `session`. Deliveries already queued are caught by the per-message check in `deliver`.
    async fn drop_revoked_filters(&mut self, session: &str) -> Result<(), Ending> {
        let revoked: Vec<String> = self
            .state
            .subscriptions
            .keys()
            .filter(|filter| {
                self.shared
                    .acl
                    .check_subscribe(&self.identity, filter)
                    .is_err()
            })
            .cloned()
            .collect();
        for filter in revoked {
            tracing::info!(client_id = %self.client_id, session, filter, "subscription revoked");
            self.state.subscriptions.remove(&filter);
            self.filter_removed(&filter).await?;
        }
        // Deliveries waiting for the client are checked again too.
        let (identity, acl) = (&self.identity, &self.shared.acl);
        let readable = |message: &Outbound| {
            std::str::from_utf8(&message.topic)
                .is_ok_and(|topic| acl.check_subscribe(identity, topic).is_ok())
        };
        self.state.pending.retain(readable);
        Ok(())
    }

    /// Serves a new filter (already in `state.subscriptions`): in rumqttd for what it matches
    /// outside `cc/`, in the fan-out for what it matches inside.
    async fn filter_added(&mut self, filter: &str) -> Result<(), Ending> {
        if let Some(inbox) = &self.inbox {
            self.shared.fanout.add(self.key, filter, inbox);
        }
        if fanout::plan(filter).router {
            self.link().await?;
            self.to_router(Command::Subscribe {
                key: self.key,
                filters: vec![filter.to_owned()],
            })
            .await?;
        }
        Ok(())
    }

    /// Stops serving a filter (already gone from `state.subscriptions`).
    async fn filter_removed(&self, filter: &str) -> Result<(), Ending> {
        self.shared.fanout.remove(self.key, filter);
        if fanout::plan(filter).router {
            self.to_router(Command::Unsubscribe {
                key: self.key,
                filter: filter.to_owned(),
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

    /// Publishes the will if the ending calls for it, detaches from the router and keeps the
    /// session if it outlives the connection. Returns the stored session's generation.
    async fn finish(&mut self, ending: Ending) -> Option<u64> {
        let reason = match &ending {
            Ending::Clean { .. } => "client disconnected",
            Ending::Abrupt { reason, .. } => reason,
            Ending::Shutdown => "server shutdown",
        };
        tracing::debug!(client_id = %self.client_id, reason, "connection closed");
        let will_due = matches!(
            ending,
            Ending::Abrupt { .. } | Ending::Clean { with_will: true }
        );
        if let (true, Some(will)) = (will_due, self.will.take()) {
            let _ = self.route(will).await;
        }
        // Publishes accepted but still waiting for room in the pipeline's queue are delivered
        // after the connection is gone; the bound (`mqtt.pipeline_queue_wait_secs`) only guards
        // against a pipeline that never reads again.
        let waiting = std::mem::take(&mut self.waiting);
        if !waiting.is_empty() {
            let patience = Duration::from_secs(self.shared.config.pipeline_queue_wait_secs);
            tokio::spawn(async move {
                for (inbox, message) in waiting {
                    let room = inbox.deliveries.send(message);
                    if tokio::time::timeout(patience, room).await.is_err() {
                        tracing::warn!(
                            "a publish for the pipeline was dropped: its queue stayed full"
                        );
                        return;
                    }
                }
            });
        }
        match (self.inbox.take(), self.deliveries.take()) {
            // A kept session goes on collecting its `cc/` deliveries while the client is away.
            (Some(inbox), Some(deliveries)) if self.expiry > 0 => {
                self.state.parked = Some(session::Parked {
                    key: self.key,
                    inbox,
                    deliveries,
                });
            }
            (Some(_), _) => {
                self.shared
                    .fanout
                    .remove_all(self.key, self.state.subscriptions.keys());
            }
            (None, _) => {}
        }
        let _ = self
            .shared
            .router
            .send(Command::Detach { key: self.key })
            .await;
        if self.persistent_link && self.expiry == 0 {
            // The session ends here (its CONNECT or DISCONNECT gave no expiry): in rumqttd too,
            // which would otherwise keep it, and what it matches, forever.
            let _ = end_router_session(self.shared, self.client_id.clone()).await;
        }
        if let Some(id) = self.router_id.take() {
            // The feeder runs commands in order: the detach above reaches the router before
            // any later attach under this id.
            self.shared.link_ids.give_back(id);
        }
        self.shared.clients.release(&self.client_id, self.key);
        self.shared
            .hooks
            .disconnected(&self.identity, self.listener);
        (self.expiry > 0).then(|| {
            self.shared
                .sessions
                .store(&self.client_id, std::mem::take(&mut self.state))
        })
    }
}

/// Ends a stored session when its expiry interval has passed without the client returning,
/// in the gateway and in rumqttd's router (which would otherwise keep it forever).
fn expire_later(shared: Weak<Shared>, client_id: String, generation: u64, seconds: u32) {
    let Some(after) = session::expiry(seconds) else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(expired) = shared.sessions.expire(&client_id, generation) else {
            return;
        };
        shared.release(expired);
        tracing::debug!(client_id, "session expired");
        let _ = end_router_session(&shared, client_id).await;
    });
}

/// Ends rumqttd's persistent session for `client_id`, if it has one, by attaching a clean
/// session under that id and detaching it: rumqttd has no other way to drop one. Commands reach
/// the router in order, so this happens after any detach queued before it.
async fn end_router_session(shared: &Shared, client_id: String) -> Result<(), ()> {
    let key = shared.key();
    let (reply, answer) = oneshot::channel();
    let attach = Command::Attach {
        key,
        client_id,
        clean_session: true,
        reply,
    };
    shared.router.send(attach).await.map_err(drop)?;
    match answer.await {
        Ok(Ok(_link)) => {
            let _ = shared.router.send(Command::Detach { key }).await;
            Ok(())
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "router refused a link");
            Err(())
        }
        Err(_) => Err(()),
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}

/// A delivery to one connection, from its rumqttd link or from the `cc/` fan-out.
pub(crate) enum Forwarded {
    Publish {
        topic: Bytes,
        payload: Bytes,
        // Boxed: queues hold many of these and most have no properties.
        properties: Option<Box<PublishProperties>>,
    },
    Disconnected,
}

/// Deliveries handled between two reads from the client, at most (see `Session::drain_some`).
/// Not configuration: it only interleaves a connection's reading and writing fairly; how much
/// may wait for a client is `mqtt.max_pending_per_client`.
const FAIR_SHARE: usize = 64;

/// Packets held from a client whose publish waits for room in the pipeline's queue (see
/// `Session::relay`); beyond this the server stops reading from it. Not configuration: the
/// client's own window of unacknowledged publishes already bounds what it can send meanwhile,
/// and TCP's flow control takes over once the server stops reading, so this only caps the
/// memory of a client that sends other packets (pings, subscribes) without end.
const HELD_PACKETS: usize = 1024;

/// Moves router notifications onto a tokio channel, which the relay loop can `select!` on
/// without risk of losing a wake-up.
async fn forward_notifications(mut rx: rumqttd::local::LinkRx, out: mpsc::Sender<Forwarded>) {
    loop {
        let forwarded = match rx.next().await {
            Ok(Some(Notification::Forward(forward))) => Forwarded::Publish {
                topic: forward.publish.topic,
                payload: forward.publish.payload,
                properties: forward
                    .properties
                    .map(|p| Box::new(crate::router::from_router(p))),
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
    if client_id.starts_with(crate::feed::INTERNAL_PREFIX) {
        return Err("client id in the gateway's reserved namespace");
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
            ("courtchat.memberships", false),
        ];
        for (id, ok) in rows {
            assert_eq!(check_client_id(id, 128).is_ok(), *ok, "{id:?}");
        }
        assert!(check_client_id(&"x".repeat(129), 128).is_err());
    }

    #[test]
    fn qos_order() {
        assert_eq!(
            min_qos(QoS::ExactlyOnce, QoS::AtLeastOnce),
            QoS::AtLeastOnce
        );
        assert_eq!(min_qos(QoS::AtMostOnce, QoS::AtLeastOnce), QoS::AtMostOnce);
        assert_eq!(max_qos(QoS::AtMostOnce, QoS::AtLeastOnce), QoS::AtLeastOnce);
    }
}
