//! What leaves the controller: events (JSON lines, syslog, journald),
//! Prometheus metrics, and the CrowdSec Local API.

pub mod crowdsec;
pub mod events;
pub mod journal;
pub mod metrics;
pub mod sinks;
