//! State shared by every connection of one broker: the configuration, the routing index, the
//! plugin chains, the registries of live and stored sessions, and the retained messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use schemas::topics::Topic;
use tokio::sync::Semaphore;

use super::ClientRegistry;
use crate::acl::AclChain;
use crate::auth::AuthChain;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::fanout::{Fanout, Inbox, LinkKey};
use crate::hook_set::HookSet;
use crate::hooks::{Origin, Publish, Routing};
use crate::identity::Identity;
use crate::memberships::Memberships;
use crate::message::{Forwarded, Message};
use crate::retained::RetainRefusal;
use crate::retained::RetainedStore;
use crate::session::{self, Outbound};
use crate::session::{SessionState, SessionStore};
use crate::signal::Signals;
use crate::staff::StaffRevocations;
use crate::subscribe_limit::SubscribeAllowance;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

/// State shared by every connection of one broker.
pub(crate) struct Shared {
    pub config: BrokerConfig,
    pub slots: Arc<Semaphore>,
    pub clients: ClientRegistry,
    pub auth: AuthChain,
    pub acl: AclChain,
    /// Session memberships, kept current from the pipeline's announcements (`chat::feed`).
    pub memberships: Memberships,
    /// Revoked credentials, which the JWT authenticator also checks (`staff`).
    pub staff_revocations: StaffRevocations,
    pub fanout: Fanout,
    pub hooks: HookSet,
    /// Each sender's allowance for typing and presence, and their checks (`signal`).
    pub signals: Signals,
    /// Each sender's allowance of subscriptions (`subscribe_limit`).
    pub subscribe_allowance: SubscribeAllowance,
    pub(super) sessions: SessionStore,
    pub(crate) retained: RetainedStore,
    next_key: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: BrokerConfig,
        auth: AuthChain,
        acl: AclChain,
        memberships: Memberships,
        staff_revocations: StaffRevocations,
        hooks: Vec<Arc<dyn crate::hooks::Hook>>,
    ) -> Result<Self, BrokerError> {
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let signals = Signals::new(&config.signals)
            .map_err(|(key, reason)| BrokerError::Config(key, reason))?;
        let subscribe_allowance = SubscribeAllowance::new(&config.subscriptions)
            .map_err(|(key, reason)| BrokerError::Config(key, reason))?;
        let hooks = HookSet::new(hooks, &config.denials);
        let retained = RetainedStore::new(config.retained.clone());
        Ok(Self {
            config,
            slots,
            clients: ClientRegistry::default(),
            auth,
            acl,
            memberships,
            staff_revocations,
            fanout: Fanout::default(),
            hooks,
            signals,
            subscribe_allowance,
            sessions: SessionStore::default(),
            retained,
            next_key: AtomicU64::new(1),
        })
    }

    pub(crate) fn key(&self) -> LinkKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Lets go of a stored session that will not resume: its fan-out registrations.
    pub(super) fn release(&self, state: SessionState) {
        if let Some(parked) = state.parked {
            self.fanout
                .remove_all(parked.key, state.subscriptions.filters());
        }
    }

    /// Delivers copies of a publish that found patient queues (the pipeline's) full, in order,
    /// as room appears, once their publisher cannot hold anything for them any more (it
    /// disconnected, or it is the gateway itself); the bound (`mqtt.pipeline_queue_wait_secs`)
    /// only guards against a pipeline that never reads again.
    pub(crate) fn deliver_when_room(&self, waiting: impl IntoIterator<Item = (Inbox, Forwarded)>) {
        let waiting: Vec<_> = waiting.into_iter().collect();
        if waiting.is_empty() {
            return;
        }
        let patience = Duration::from_secs(self.config.pipeline_queue_wait_secs);
        tokio::spawn(async move {
            for (inbox, message) in waiting {
                let room = inbox.deliveries.send(message);
                if tokio::time::timeout(patience, room).await.is_err() {
                    tracing::warn!("a publish for the pipeline was dropped: its queue stayed full");
                    return;
                }
            }
        });
    }

    /// Hands a message to the publish hooks, then, unless one consumed it, to its subscribers,
    /// and records it if retained; a retained message that does not fit the store's bounds is
    /// neither kept nor delivered. What comes back is the copies for patient queues (the
    /// pipeline's) that were full, for the publisher to deliver as room appears.
    pub(crate) fn route(
        &self,
        identity: &Identity,
        publisher: Option<&Arc<str>>,
        key: LinkKey,
        mut message: Outbound,
        origin: Origin,
    ) -> Result<Vec<(Inbox, Forwarded)>, RetainRefusal> {
        let topic = String::from_utf8_lossy(&message.topic).into_owned();
        let protocol = crate::acl::in_protocol(&topic);
        if let Some(properties) = message.properties.as_mut() {
            session::sanitize_user_properties(properties, protocol);
        }
        let mut publish = Publish::new(
            identity,
            &topic,
            &message.payload,
            message.qos as u8,
            message.retain,
            origin,
            &mut message.properties,
        );
        let routing = self.hooks.publish(&mut publish);
        if message
            .properties
            .as_ref()
            .is_some_and(|properties| *properties == PublishProperties::default())
        {
            message.properties = None;
        }
        if routing == Routing::Consume {
            return Ok(Vec::new());
        }
        if message.retain
            && let Err(refusal) = self.retained.store(&topic, message.clone())
        {
            tracing::debug!(subject = %identity.subject, topic, %refusal, "retained publish refused");
            return Err(refusal);
        }
        let forwarded = Arc::new(Message {
            topic: message.topic,
            payload: message.payload,
            qos: message.qos,
            retain: message.retain,
            publisher: publisher.cloned(),
            properties: message.properties,
            via: None,
            expires_at: message.expires_at,
        });
        Ok(self.fanout.publish(key, &topic, &forwarded))
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
