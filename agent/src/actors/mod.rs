//! The agent's actors. Each is a thin shell: decisions live in the pure modules
//! ([`crate::buffer`], [`crate::link::InFlight`], [`crate::health`], [`crate::recovery`],
//! [`crate::supervise`]); the actor does the IO.
//!
//! ```text
//! AgentSupervisor   one_for_one, restart intensity, exits non-zero past it
//!  |- collector     machine + GPU + app metrics -> buffer
//!  |- health        probes + evaluation -> buffer, -> recovery
//!  |- recovery      ladder, allow-list, interlock -> executor -> events
//!  `- link          buffer -> MQTT (mTLS), PUBACK -> buffer delete; commands in
//! ```

pub mod recovery;
