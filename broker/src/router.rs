//! The embedded rumqttd router and the one thread that talks to it.
//!
//! rumqttd's local links make blocking calls into the router's bounded channel (`LinkBuilder::build`
//! waits for the router's answer; `LinkTx` sends block when the channel is full). Calling them from
//! tokio tasks could stall a runtime worker, so every call goes through [`RouterFeeder`]: one
//! dedicated thread that owns all `LinkTx` halves and executes commands in the order they were
//! queued. That order is what makes a client-id takeover safe: the old link's disconnect is
//! queued before the new link's connect, so the router never sees two live links with one id.
//! Connection tasks keep their `LinkRx` half, whose receive is async.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::thread;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, Publish, PublishProperties, QoS,
    RetainForwardRule, Subscribe,
};
use rumqttd::{Router, RouterConfig};
use tokio::sync::{mpsc, oneshot};

/// Identifies one gateway connection; unlike rumqttd's connection ids it is never reused.
pub(crate) type LinkKey = u64;

pub(crate) enum Command {
    Attach {
        key: LinkKey,
        client_id: String,
        clean_session: bool,
        reply: oneshot::Sender<Result<LinkRx, LinkError>>,
    },
    /// Routed without the retain flag: the gateway keeps retained messages itself.
    Publish {
        key: LinkKey,
        topic: Bytes,
        payload: Bytes,
        properties: Option<v5::PublishProperties>,
    },
    Subscribe {
        key: LinkKey,
        filters: Vec<String>,
    },
    Unsubscribe {
        key: LinkKey,
        filter: String,
    },
    Detach {
        key: LinkKey,
    },
}

/// The router's settings, shared with the plain rumqttd that benchmarks compare against: the
/// log sizes an operator sets (`mqtt.router`), and the rest derived or fixed.
pub(crate) fn router_config(max_connections: usize, sizes: &crate::RouterConfig) -> RouterConfig {
    RouterConfig {
        // Head-room above the gateway's own limit, which is enforced first with a CONNACK.
        max_connections: max_connections + 16,
        // How many QoS 0 messages the router moves to one link per pass over its log: a
        // batching choice inside the router, which bounds neither memory nor what is delivered,
        // so not configuration.
        max_outgoing_packet_count: 200,
        max_segment_size: sizes.max_segment_size,
        max_segment_count: sizes.max_segment_count,
        ..RouterConfig::default()
    }
}

/// Queue of commands for the router thread. Cloned by every connection.
#[derive(Clone)]
pub(crate) struct RouterFeeder {
    commands: mpsc::Sender<Command>,
}

/// The feeder's queue is bounded so that a flood of publishes slows its publishers down instead
/// of growing memory; 4096 commands is a few milliseconds of router work. Not configuration:
/// nothing waits on its size but the publishers it slows, so no deployment needs another.
const COMMAND_QUEUE: usize = 4096;

impl RouterFeeder {
    /// Starts rumqttd's router and the feeder thread.
    pub(crate) fn start(config: &crate::BrokerConfig) -> std::io::Result<Self> {
        let router_tx =
            Router::new(0, router_config(config.max_connections, &config.router)).spawn();
        let (commands, mut queue) = mpsc::channel::<Command>(COMMAND_QUEUE);
        thread::Builder::new()
            .name("courtchat-router-feeder".to_owned())
            .spawn(move || {
                let mut links: HashMap<LinkKey, LinkTx> = HashMap::new();
                // Returns when every `RouterFeeder` clone is gone.
                while let Some(command) = queue.blocking_recv() {
                    match command {
                        Command::Attach {
                            key,
                            client_id,
                            clean_session,
                            reply,
                        } => {
                            let built = LinkBuilder::new(&client_id, router_tx.clone())
                                .clean_session(clean_session)
                                .build();
                            let answer = built.map(|(tx, rx, _ack)| {
                                links.insert(key, tx);
                                rx
                            });
                            if let Err(Ok(attached)) = reply.send(answer) {
                                // The connection gave up waiting: release the link at once.
                                drop(attached);
                                detach(&mut links, key);
                            }
                        }
                        Command::Publish {
                            key,
                            topic,
                            payload,
                            properties,
                        } => {
                            if let Some(tx) = links.get_mut(&key) {
                                let publish = Publish::new(topic, payload, false);
                                send_now(tx, Packet::Publish(publish, properties.map(to_router)));
                            }
                        }
                        Command::Subscribe { key, filters } => {
                            if let Some(tx) = links.get_mut(&key) {
                                let filters = filters
                                    .into_iter()
                                    .map(|path| Filter {
                                        path,
                                        qos: QoS::AtMostOnce,
                                        nolocal: false,
                                        preserve_retain: false,
                                        // The gateway delivers retained messages itself.
                                        retain_forward_rule: RetainForwardRule::Never,
                                    })
                                    .collect();
                                let subscribe = Subscribe { pkid: 1, filters };
                                send_now(tx, Packet::Subscribe(subscribe, None));
                            }
                        }
                        Command::Unsubscribe { key, filter } => {
                            if let Some(tx) = links.get_mut(&key) {
                                log_failure(tx.unsubscribe(filter).map(drop));
                            }
                        }
                        Command::Detach { key } => detach(&mut links, key),
                    }
                }
                tracing::debug!("router feeder stopped");
            })?;
        Ok(Self { commands })
    }

    /// Queues a command; fails only when the feeder thread is gone.
    pub(crate) async fn send(&self, command: Command) -> Result<(), RouterGone> {
        self.commands.send(command).await.map_err(|_| RouterGone)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the embedded router has stopped")]
pub(crate) struct RouterGone;

/// Tells the router a link is gone; without it dead connections pile up in the router.
fn detach(links: &mut HashMap<LinkKey, LinkTx>, key: LinkKey) {
    if let Some(mut tx) = links.remove(&key) {
        let disconnect = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        send_now(&mut tx, Packet::Disconnect(disconnect, None));
    }
}

/// `LinkTx::send` is an `async fn` without an await point: its body runs to completion on the
/// first poll (blocking on the router's channel if it is full, which is why only this thread calls
/// it). Polling it once here avoids a runtime in the feeder thread.
fn send_now(tx: &mut LinkTx, packet: Packet) {
    let mut future = pin!(tx.send(packet));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => log_failure(result.map(drop)),
        // Unreachable with rumqttd 0.20, but a future version could add an await point; losing
        // the packet loudly beats blocking the feeder forever.
        Poll::Pending => {
            tracing::error!("rumqttd LinkTx::send did not complete synchronously; packet dropped")
        }
    }
}

fn log_failure(result: Result<(), LinkError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "router rejected a link command");
    }
}

/// rumqttd and rumqttc each define MQTT 5's publish properties; the fields are the same.
fn to_router(p: v5::PublishProperties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    }
}

pub(crate) fn from_router(p: PublishProperties) -> v5::PublishProperties {
    v5::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    }
}
