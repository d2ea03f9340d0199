//! The per-session state machine under fuzzing: a real broker (its `Shared` state, its
//! connection tasks, its routing index) serving a few clients over in-memory streams, on a
//! single-threaded runtime whose clock only moves when every task is idle. The fuzz input is a
//! script (`script`) of what each client sends; the harness writes each step's packets, lets the
//! broker settle, reads what every client received and holds it to the model (`model`).
//!
//! Driving the broker itself, rather than its parts one by one, is what reaches the state
//! machine as clients meet it: the QoS 2 bookkeeping lives in the connection's handling of
//! PUBLISH and PUBREL, outbound aliases and the receive maximum in its deliveries, shared
//! groups in the routing index. Each step, besides what `model::World::observe` checks on every
//! packet, asserts the answer to what it sent:
//!
//! - a QoS 2 publish is forwarded once per packet id until PUBREL releases it: sent again
//!   (DUP), or another publish under the same unreleased id, forwards nothing;
//! - PUBREL is completed with 0x92 exactly when the id is not held;
//! - an MQTT 5 client's new QoS 2 publish beyond the gateway's receive maximum ends the
//!   connection with 0x93, and not before;
//! - an inbound alias of 0 or above the maximum ends it with 0x94, an unset one with 0x82;
//! - SUBACK and UNSUBACK reason codes, subscription identifier 0 and no local on a shared
//!   subscription (0x82);
//! - a QoS 0 publish reaches each live subscriber once and each shared group with a live
//!   member exactly once;
//! - once every client is gone and every session expired, the routing index is empty.

mod answers;
mod model;
mod publishing;
mod script;
mod seeds;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{self, DisconnectReasonCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use crate::connection::Shared;
use crate::transport::Transport;
use model::{ClientModel, World};
use script::AliasUse;
pub(crate) use script::Step;
use wire::{from_v4, v4_bytes, v5_bytes};

/// The gateway's configuration under fuzzing: limits small enough for a short script to reach.
const RECEIVE_MAXIMUM: u16 = 3;
const ALIAS_MAXIMUM: u16 = 3;
/// Short, so that every session is over soon after a script ends (see `Harness::finish`).
const MAX_SESSION_EXPIRY: Duration = Duration::from_secs(10);

/// Runs the script `input` encodes against a fresh broker; panics if any check fails.
pub fn check(input: &[u8]) {
    run(&script::read(input));
}

/// Session scripts covering QoS 2 flows both ways, aliases both ways and shared subscriptions:
/// the `session` fuzz target's seed corpus (kept current by a test).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    seeds::scripts()
        .into_iter()
        .map(|(name, steps)| (name.to_owned(), script::write(&steps)))
        .collect()
}

/// Runs `steps`; returns the model as it ended, for tests to look into.
pub(crate) fn run(steps: &[(usize, Step)]) -> World {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime without I/O starts");
    runtime.block_on(async {
        let mut harness = Harness::start();
        for (client, step) in steps {
            harness.step(*client, step).await;
        }
        harness.finish().await;
        harness.world
    })
}

/// Accepts every client as an agent whose subject is its client id.
struct Everyone;

impl crate::Authenticator for Everyone {
    fn authenticate(&self, connect: &crate::ConnectInfo<'_>) -> crate::AuthOutcome {
        crate::AuthOutcome::Accept(crate::Identity {
            subject: connect.client_id.to_owned(),
            username: None,
            role: crate::Role::Agent,
            anonymous: false,
            expires_at: None,
            issued_at: None,
            token: crate::identity::TokenDetails::default(),
        })
    }
}

/// Allows everything but publishing to, or subscribing under, `deny/`.
struct AllButDeny;

impl crate::Authorizer for AllButDeny {
    fn check_publish(&self, _: &crate::Identity, topic: &str) -> crate::Decision {
        decide(topic)
    }

    fn check_subscribe(&self, _: &crate::Identity, filter: &str) -> crate::Decision {
        decide(filter)
    }
}

fn decide(name: &str) -> crate::Decision {
    if name.starts_with("deny/") {
        crate::Decision::Deny("deny/".to_owned())
    } else {
        crate::Decision::Allow
    }
}

/// Whether the gateway accepts a publish to `topic` from these clients: what the authorizer,
/// the reserved namespace and the retain rule under `cc/` leave.
fn publishable(topic: &str, retain: bool) -> bool {
    !(topic.starts_with("deny/")
        || topic.starts_with('$')
        || (retain && crate::acl::in_protocol(topic)))
}

/// One client's end of its connection.
struct Conn {
    stream: DuplexStream,
    buf: BytesMut,
    v5: bool,
    /// The gateway closed it.
    closed: bool,
    next_pkid: u16,
    /// The maximum packet size the client announced, if it did.
    max_packet_size: Option<usize>,
}

struct Harness {
    shared: Arc<Shared>,
    stop: CancellationToken,
    conns: Vec<Option<Conn>>,
    world: World,
}

impl Harness {
    fn start() -> Self {
        let config = crate::BrokerConfig {
            receive_maximum: RECEIVE_MAXIMUM,
            max_topic_aliases: ALIAS_MAXIMUM,
            max_session_expiry: MAX_SESSION_EXPIRY,
            // Small, so that a subscriber behind its receive maximum overflows within a script.
            max_pending_per_client: 8,
            // The connections run on the harness's paused clock, not on threads of their own.
            workers: 0,
            ..crate::BrokerConfig::default()
        };
        let broker = crate::Broker::builder(config)
            .authentication(crate::AuthChain::new(vec![Box::new(Everyone)]))
            .authorization(crate::AclChain::new(vec![Box::new(AllButDeny)]))
            .start()
            .expect("the harness's configuration is valid");
        Self {
            shared: broker.shared,
            stop: CancellationToken::new(),
            conns: (0..script::CLIENTS).map(|_| None).collect(),
            world: World::new(script::CLIENTS, ALIAS_MAXIMUM),
        }
    }

    /// Lets every task run until all wait: the clock moves only then.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// Writes `bytes` to `client`'s connection, lets the broker settle, and returns what
    /// `client` received meanwhile (what the others received is observed too).
    async fn exchange(&mut self, client: usize, bytes: &[u8]) -> Vec<Packet> {
        if let Some(conn) = self.conns[client].as_mut()
            && !conn.closed
        {
            // A connection the gateway is closing may refuse the bytes: that is its answer.
            let _ = conn.stream.write_all(bytes).await;
        }
        self.settle().await;
        self.collect(client)
    }

    /// Reads what every client received; returns `client`'s packets.
    fn collect(&mut self, client: usize) -> Vec<Packet> {
        let mut mine = Vec::new();
        for index in 0..self.conns.len() {
            let received = self.receive(index);
            for packet in &received {
                self.world.observe(index, packet);
            }
            // What came before the gateway closed the connection was read first.
            if self.conns[index].as_ref().is_some_and(|conn| conn.closed) {
                self.world.clients[index].live = false;
            }
            if index == client {
                mine = received;
            }
        }
        for (index, model) in self.world.clients.iter().enumerate() {
            let cap = usize::from(RECEIVE_MAXIMUM).max(model.unreleased_at_connect);
            if model.v5 && !model.session.tainted {
                assert!(
                    model.session.unreleased.len() <= cap,
                    "client {index}: more unreleased QoS 2 publishes than the receive maximum"
                );
            }
        }
        mine
    }

    fn receive(&mut self, client: usize) -> Vec<Packet> {
        let Some(conn) = self.conns[client].as_mut() else {
            return Vec::new();
        };
        while !conn.closed {
            match conn.stream.read_buf(&mut conn.buf).now_or_never() {
                Some(Ok(0) | Err(_)) => conn.closed = true,
                Some(Ok(_)) => {}
                None => break,
            }
        }
        let mut packets = Vec::new();
        loop {
            let before = conn.buf.len();
            let read = if conn.v5 {
                match Packet::read(&mut conn.buf, None) {
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
                    Ok(Packet::Publish(mut publish)) => {
                        wire::repair(&mut publish);
                        Some(Ok(Packet::Publish(publish)))
                    }
                    read => Some(read.map_err(|err| err.to_string())),
                }
            } else {
                match v4::Packet::read(&mut conn.buf, usize::MAX) {
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => None,
                    read => Some(read.map(from_v4).map_err(|err| err.to_string())),
                }
            };
            match read {
                Some(Ok(packet)) => {
                    // MQTT 5 §3.1.2.11.4: nothing larger than the client accepts; a delivery
                    // that would be is dropped, a reason string left out. (Not CONNACK: its
                    // properties are what the client needs to know, and a client that allows
                    // fewer bytes than they take is not one to serve; see the README.)
                    let size = before - conn.buf.len();
                    if let (Some(max), false) =
                        (conn.max_packet_size, matches!(packet, Packet::ConnAck(_)))
                    {
                        assert!(size <= max, "client {client}: {size} bytes: {packet:?}");
                    }
                    packets.push(packet);
                }
                Some(Err(err)) => {
                    panic!("client {client}: the gateway sent an unreadable packet: {err}")
                }
                None => {
                    assert!(
                        !conn.closed || conn.buf.is_empty(),
                        "client {client}: a packet cut short"
                    );
                    break;
                }
            }
        }
        packets
    }

    async fn step(&mut self, client: usize, step: &Step) {
        match step {
            Step::Connect { .. } => self.connect(client, step).await,
            Step::Drop => {
                self.conns[client] = None;
                self.world.clients[client].live = false;
                self.settle().await;
                self.collect(client);
            }
            Step::Wait { seconds } => {
                tokio::time::sleep(Duration::from_secs(u64::from(*seconds))).await;
                self.settle().await;
                self.collect(client);
            }
            Step::Raw(bytes) => {
                if self.conns[client].is_some() {
                    self.world.clients[client].session.tainted = true;
                }
                self.exchange(client, bytes).await;
            }
            _ if !self.world.clients[client].live => {}
            Step::Publish { .. } | Step::Resend { .. } => self.publish(client, step).await,
            _ => self.answer(client, step).await,
        }
    }

    async fn connect(&mut self, client: usize, step: &Step) {
        let Step::Connect {
            v5,
            clean_start,
            expiry,
            receive_maximum,
            alias_maximum,
            will,
            small_packets,
            keep_alive,
        } = *step
        else {
            return;
        };
        if self.conns[client].take().is_some() {
            self.world.clients[client].live = false;
            self.settle().await;
        }
        let (mine, theirs) = tokio::io::duplex(1 << 16);
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 10_000 + client as u16));
        tokio::spawn(crate::connection::serve(
            Box::new(crate::connection::Accepted {
                transport: Transport::Stream(Box::new(theirs)),
                peer,
            }),
            crate::Listener::Tcp,
            self.shared.clone(),
            self.stop.clone(),
        ));
        self.conns[client] = Some(Conn {
            stream: mine,
            buf: BytesMut::new(),
            v5,
            closed: false,
            next_pkid: 1,
            max_packet_size: (v5 && small_packets).then_some(script::SMALL_PACKETS as usize),
        });
        let model = &mut self.world.clients[client];
        *model = ClientModel {
            v5,
            receive_maximum: if v5 {
                usize::from(receive_maximum)
            } else {
                usize::from(u16::MAX)
            },
            alias_maximum: if v5 { alias_maximum } else { 0 },
            small_packets: v5 && small_packets,
            session: std::mem::take(&mut model.session),
            ..ClientModel::default()
        };
        let client_id = format!("c{client}");
        let bytes = if v5 {
            let properties = v5::ConnectProperties {
                session_expiry_interval: (expiry > 0).then_some(expiry),
                receive_maximum: Some(receive_maximum),
                topic_alias_max: (alias_maximum > 0).then_some(alias_maximum),
                max_packet_size: small_packets.then_some(script::SMALL_PACKETS),
                ..v5::ConnectProperties::new()
            };
            let will = will.then(|| {
                let properties = v5::LastWillProperties {
                    delay_interval: Some(2),
                    payload_format_indicator: None,
                    message_expiry_interval: None,
                    content_type: None,
                    response_topic: None,
                    correlation_data: None,
                    user_properties: Vec::new(),
                };
                v5::LastWill::new(
                    "a/b",
                    format!("w{client}"),
                    QoS::AtMostOnce,
                    false,
                    Some(properties),
                )
            });
            let connect = v5::Connect {
                keep_alive,
                client_id,
                clean_start,
                properties: Some(properties),
            };
            v5_bytes(&Packet::Connect(connect, will, None))
        } else {
            let mut connect = v4::Connect::new(client_id);
            connect.keep_alive = keep_alive;
            connect.clean_session = clean_start;
            connect.last_will = will.then(|| {
                v4::LastWill::new(
                    "a/b",
                    format!("w{client}"),
                    rumqttc::mqttbytes::QoS::AtMostOnce,
                    false,
                )
            });
            v4_bytes(v4::Packet::Connect(connect))
        };
        let received = self.exchange(client, &bytes).await;
        match received.first() {
            Some(Packet::ConnAck(ack)) => assert_eq!(
                ack.code,
                v5::ConnectReturnCode::Success,
                "client {client}: refused"
            ),
            other => panic!("client {client}: no CONNACK but {other:?}"),
        }
        self.world.resent(client);
    }

    fn forget(&mut self, client: usize, id: u16) {
        self.world.clients[client]
            .session
            .outstanding
            .retain(|(at, _)| *at != id);
    }

    /// The gateway ended `client`'s connection, telling an MQTT 5 client `code`.
    fn expect_closed(&mut self, client: usize, received: &[Packet], code: DisconnectReasonCode) {
        let conn = self.conns[client].as_ref().expect("connected");
        assert!(
            conn.closed,
            "client {client}: still open, expected {code:?}"
        );
        if conn.v5 {
            let told = received.iter().find_map(|p| match p {
                Packet::Disconnect(disconnect) => Some(disconnect.reason_code),
                _ => None,
            });
            assert_eq!(told, Some(code), "client {client}: {received:?}");
        }
    }

    /// Every client leaves and every session expires: nothing may be left in the routing index.
    async fn finish(&mut self) {
        for conn in &mut self.conns {
            *conn = None;
        }
        tokio::time::sleep(MAX_SESSION_EXPIRY * 2).await;
        self.settle().await;
        assert_eq!(
            self.shared.fanout.len(),
            0,
            "the routing index kept entries after every session ended"
        );
        self.stop.cancel();
    }
}

fn step_alias(step: &Step) -> AliasUse {
    match step {
        Step::Publish { alias, .. } => *alias,
        _ => AliasUse::None,
    }
}

fn qos_of(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}
