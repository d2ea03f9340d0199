//! MQTT 5 conformance beyond the basics of `mqtt5`, through the real server: QoS 2 end to end and
//! across a resume, subscription identifiers, topic aliases both ways, the will delay, the
//! server keep alive, and publish properties passed through (message expiry counted down).
//! Where a test must see or send exact packets (DUP flags, PUBRELs, aliases rumqttc would refuse
//! to send), it uses `raw::RawClient`.

mod aliases;
mod identifiers;
mod keep_alive;
mod properties;
mod qos2;
mod raw;
mod will_delay;
