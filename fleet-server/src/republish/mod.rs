//! Republisher: every new device record, alert transition and incident change as JSON on
//! `fleet/v1/...` for third-party subscribers (topics and schemas: `docs/topics.md`).
//!
//! | source | topic | retained |
//! | --- | --- | --- |
//! | the ingest writer, after a record is stored and found new | `fleet/v1/devices/{id}/{kind}` | `state` only |
//! | the alerts actor: every [`Transition`](crate::alerts::alert::Transition) | `fleet/v1/alerts` | no |
//! | the alerts actor: every [`IncidentChange`](crate::incidents::incident::IncidentChange) | `fleet/v1/incidents` | no |
//!
//! Invariants:
//! - it never slows ingest or alerting: producers offer into a bounded queue
//!   ([`queue::RepublishHandle::offer`] is a `try_send`); a full queue drops the message and counts
//!   it (`dropped_full`), and so does a payload past the wire limit (`dropped_too_large`), which
//!   a broker would refuse anyway;
//! - QoS 1 and best effort: its own MQTT client (server identity, client id
//!   [`client::REPUBLISH_CLIENT_ID`], clean session), so after a reconnect what was in flight is not
//!   sent again. The store and the REST API, not these topics, are the record of truth;
//! - device state is retained, so a new subscriber learns every machine's presence at once;
//! - it runs on its own thread and tokio runtime: encoding a burst never competes with the
//!   actix system (HTTP, fleet and alerts actors).

pub mod client;
pub mod item;
pub mod queue;
