//! courtchat's chat pipeline (planned: issue 4).
//!
//! The bridge will take what participants submit, decide whether it is allowed, persist it in
//! batched transactions, give it its place in the session's single order, append it to the audit
//! chain, and only then publish it on the session's canonical stream. It enforces reply locks and
//! runs in-process under `courtchat serve` or as its own process (`courtchat bridge`) over MQTT.
//!
//! Nothing is implemented yet, and `courtchat serve` does not start it; ARCHITECTURE.md walks
//! the planned path of a message.
