//! The client's answers to our deliveries (MQTT §4.3): PUBACK ends a QoS 1 flow; PUBREC is
//! answered with PUBREL, PUBCOMP ends a QoS 2 flow; each end makes room under the client's
//! receive maximum. And, when a session resumes, the flows it had not finished sent again in
//! their order (§4.4): the PUBLISH flagged DUP, or the PUBREL.

use rumqttc::v5::mqttbytes::v5::{Packet, PubRel, PubRelReason};

use super::{Ending, Session, Wire};
use crate::session::{Received, Stage};

impl Session<'_> {
    /// PUBACK for a QoS 1 delivery.
    pub(super) async fn puback(&mut self, wire: &mut Wire, pkid: u16) -> Option<Ending> {
        if self.state.inflight.acknowledged(pkid) {
            return self.make_room(wire).await;
        }
        None
    }

    /// PUBREC for a QoS 2 delivery: released, or ended if the client refused it.
    pub(super) async fn pubrec(
        &mut self,
        wire: &mut Wire,
        pkid: u16,
        accepted: bool,
    ) -> Option<Ending> {
        let reason = match self.state.inflight.received(pkid, accepted) {
            Received::Release => PubRelReason::Success,
            Received::Ended => return self.make_room(wire).await,
            Received::Unknown => PubRelReason::PacketIdentifierNotFound,
        };
        match wire.send(&pubrel(pkid, reason)).await {
            Ok(()) => None,
            Err(_) => Some(Ending::abrupt("write failed")),
        }
    }

    /// PUBCOMP: the QoS 2 delivery is complete.
    pub(super) async fn pubcomp(&mut self, wire: &mut Wire, pkid: u16) -> Option<Ending> {
        if self.state.inflight.completed(pkid) {
            return self.make_room(wire).await;
        }
        None
    }

    /// Sends again, in order, every delivery of a resumed session whose flow is not over.
    pub(super) async fn resend_inflight(&mut self, wire: &mut Wire) -> std::io::Result<()> {
        for (pkid, stage) in self.state.inflight.snapshot() {
            match stage {
                Stage::Published(message) => {
                    self.write_publish(wire, &message, pkid, true).await?;
                }
                Stage::Released => wire.send(&pubrel(pkid, PubRelReason::Success)).await?,
            }
        }
        Ok(())
    }

    async fn make_room(&mut self, wire: &mut Wire) -> Option<Ending> {
        self.release_pending(wire)
            .await
            .err()
            .map(|_| Ending::abrupt("write failed"))
    }
}

fn pubrel(pkid: u16, reason: PubRelReason) -> Packet {
    Packet::PubRel(PubRel {
        pkid,
        reason,
        properties: None,
    })
}
