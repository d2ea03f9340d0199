//! Deliveries to one client that carry a packet identifier and wait for the client's answer: the
//! QoS 1 and QoS 2 flows of MQTT §4.3, server side. A QoS 1 delivery waits for PUBACK; a QoS 2
//! delivery waits for PUBREC, then, released with PUBREL, for PUBCOMP. Each counts against the
//! client's receive maximum until its flow ends (MQTT 5 §4.9), and the window is kept with the
//! session, so that a resumed session sends again, in order, what it had not finished: the
//! PUBLISH flagged DUP, or the PUBREL (§4.4).

use std::collections::VecDeque;

use rumqttc::v5::mqttbytes::QoS;

use super::Outbound;

/// Where one delivery's flow stands.
#[derive(Clone, Debug)]
pub(crate) enum Stage {
    /// The PUBLISH was sent (QoS 1 or 2); PUBACK or PUBREC is awaited. Boxed: a released
    /// delivery then takes a pointer's room, not a message's.
    Published(Box<Outbound>),
    /// QoS 2: the client received it and PUBREL was sent; PUBCOMP is awaited. The message
    /// itself is no longer needed: the client has it.
    Released,
}

/// What a PUBREC from the client calls for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Release it: send PUBREL (again, if it was released already and the PUBREC repeats).
    Release,
    /// The client refused it (a reason code of 0x80 or more): the flow ends there.
    Ended,
    /// No QoS 2 delivery has this packet id: PUBREL 0x92 (packet identifier not found).
    Unknown,
}

/// The deliveries in flight to one client, oldest first.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    entries: VecDeque<(u16, Stage)>,
}

impl InFlight {
    /// How many count against the client's receive maximum.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, pkid: u16) -> bool {
        self.entries.iter().any(|(id, _)| *id == pkid)
    }

    /// A PUBLISH (QoS 1 or 2) sent under `pkid`.
    pub fn published(&mut self, pkid: u16, message: Outbound) {
        debug_assert!(message.qos != QoS::AtMostOnce);
        self.entries
            .push_back((pkid, Stage::Published(Box::new(message))));
    }

    /// PUBACK: ends a QoS 1 flow. Whether one ended (a PUBACK for anything else is ignored).
    pub fn acknowledged(&mut self, pkid: u16) -> bool {
        self.remove_if(
            pkid,
            |stage| matches!(stage, Stage::Published(m) if m.qos == QoS::AtLeastOnce),
        )
    }

    /// PUBREC for `pkid`, `accepted` unless its reason code is 0x80 or more.
    pub fn received(&mut self, pkid: u16, accepted: bool) -> Received {
        let Some(index) = self.entries.iter().position(|(id, stage)| {
            *id == pkid
                && match stage {
                    Stage::Published(message) => message.qos == QoS::ExactlyOnce,
                    Stage::Released => true,
                }
        }) else {
            return Received::Unknown;
        };
        if !accepted {
            self.entries.remove(index);
            return Received::Ended;
        }
        // The order of the window is kept: a resumed session sends PUBLISHes and PUBRELs again
        // in the order the PUBLISHes were first sent.
        self.entries[index].1 = Stage::Released;
        Received::Release
    }

    /// PUBCOMP: ends a QoS 2 flow. Whether one ended.
    pub fn completed(&mut self, pkid: u16) -> bool {
        self.remove_if(pkid, |stage| matches!(stage, Stage::Released))
    }

    /// Forgets a delivery that was never written (larger than the client accepts).
    pub fn discard(&mut self, pkid: u16) {
        self.remove_if(pkid, |_| true);
    }

    /// Every delivery in flight, in the order they were first sent, for a resumed session.
    pub fn snapshot(&self) -> Vec<(u16, Stage)> {
        self.entries.iter().cloned().collect()
    }

    fn remove_if(&mut self, pkid: u16, wanted: impl Fn(&Stage) -> bool) -> bool {
        match self
            .entries
            .iter()
            .position(|(id, stage)| *id == pkid && wanted(stage))
        {
            Some(index) => {
                self.entries.remove(index);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn message(qos: QoS) -> Outbound {
        Outbound {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
            qos,
            retain: false,
            properties: None,
            expires_at: None,
        }
    }

    #[test]
    fn each_acknowledgement_ends_only_its_own_kind_of_flow() {
        let mut window = InFlight::default();
        window.published(1, message(QoS::AtLeastOnce));
        window.published(2, message(QoS::ExactlyOnce));
        // (what the client sends, what it changes, how many stay in the window)
        assert!(!window.acknowledged(2), "PUBACK does not end a QoS 2 flow");
        assert_eq!(
            window.received(1, true),
            Received::Unknown,
            "nor PUBREC a QoS 1 one"
        );
        assert!(!window.completed(2), "PUBCOMP before PUBREC ends nothing");
        assert_eq!(window.received(2, true), Received::Release);
        assert_eq!(window.len(), 2, "a released delivery still counts");
        assert_eq!(
            window.received(2, true),
            Received::Release,
            "a repeated PUBREC"
        );
        assert!(window.completed(2));
        assert!(window.acknowledged(1));
        assert_eq!(window.len(), 0);
        assert_eq!(window.received(9, true), Received::Unknown);
    }

    #[test]
    fn a_refused_delivery_ends_its_flow_and_the_order_is_kept() {
        let mut window = InFlight::default();
        window.published(1, message(QoS::ExactlyOnce));
        window.published(2, message(QoS::ExactlyOnce));
        window.published(3, message(QoS::AtLeastOnce));
        assert_eq!(window.received(2, false), Received::Ended);
        assert_eq!(window.received(1, true), Received::Release);
        let order: Vec<_> = window
            .snapshot()
            .into_iter()
            .map(|(pkid, stage)| (pkid, matches!(stage, Stage::Released)))
            .collect();
        assert_eq!(order, vec![(1, true), (3, false)]);
    }
}
