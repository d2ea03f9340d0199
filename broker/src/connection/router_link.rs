//! A connection's link to rumqttd's router, for topics outside `cc/`: attaching (under a pooled
//! id), serving filters there and in the fan-out, and ending persistent sessions in the router.

use std::sync::Weak;

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use rumqttd::Notification;
use tokio::sync::{mpsc, oneshot};

use super::{Ending, Session, Shared};
use crate::fanout;
use crate::router::{Command, LinkKey};
use crate::session::{self, Forwarded};

impl Session<'_> {
    /// Attaches this connection to rumqttd's router, once, when it first uses a topic outside
    /// `cc/`. rumqttd remembers every client id it was ever given (its session graveyard), so
    /// the link takes a pooled id, reused once this connection has detached: the router's memory
    /// follows the live connections, not every client there ever was.
    pub(super) async fn link(&mut self) -> Result<(), Ending> {
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

    pub(super) async fn attach(
        &self,
        key: LinkKey,
        clean_session: bool,
    ) -> Result<rumqttd::local::LinkRx, ()> {
        self.attach_as(key, self.client_id.clone(), clean_session)
            .await
    }

    pub(super) async fn attach_as(
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

    /// Serves a new filter (already in `state.subscriptions`): in rumqttd for what it matches
    /// outside `cc/`, in the fan-out for what it matches inside.
    pub(super) async fn filter_added(&mut self, filter: &str) -> Result<(), Ending> {
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
    pub(super) async fn filter_removed(&self, filter: &str) -> Result<(), Ending> {
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

    pub(super) async fn to_router(&self, command: Command) -> Result<(), Ending> {
        self.shared
            .router
            .send(command)
            .await
            .map_err(|_| Ending::Shutdown)
    }
}

/// Ends a stored session when its expiry interval has passed without the client returning,
/// in the gateway and in rumqttd's router (which would otherwise keep it forever).
pub(super) fn expire_later(shared: Weak<Shared>, client_id: String, generation: u64, seconds: u32) {
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
pub(super) async fn end_router_session(shared: &Shared, client_id: String) -> Result<(), ()> {
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

/// Moves router notifications onto a tokio channel, which the relay loop can `select!` on
/// without risk of losing a wake-up.
pub(super) async fn forward_notifications(
    mut rx: rumqttd::local::LinkRx,
    out: mpsc::Sender<Forwarded>,
) {
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
