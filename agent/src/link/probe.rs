//! The path to the broker, measured from the agent (issue 24): the round trip of the MQTT
//! keep-alive (PINGREQ -> PINGRESP, timed in the link's event loop by [`PingClock`]) and
//! whether, and how fast, the broker's host name resolves ([`dns_loop`], a health check of
//! its own: a machine whose DNS broke cannot reconnect after a loss even while its current
//! connection still works). Both land in [`LinkStatus`] and from there in each telemetry
//! record's `detail.broker`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::status::LinkStatus;

/// How often the broker's name is resolved.
pub const DNS_EVERY: Duration = Duration::from_secs(60);
/// A resolution that takes longer than this counts as failed.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Times a PINGREQ until its PINGRESP; a loss of the connection forgets the PINGREQ.
#[derive(Debug, Default)]
pub struct PingClock {
    sent: Option<Instant>,
}

impl PingClock {
    pub fn sent(&mut self, at: Instant) {
        self.sent = Some(at);
    }

    /// The round trip, if a PINGREQ was waiting for this answer.
    pub fn answered(&mut self, at: Instant) -> Option<Duration> {
        self.sent.take().map(|s| at.saturating_duration_since(s))
    }

    pub fn lost(&mut self) {
        self.sent = None;
    }
}

/// What resolving a `host:port` said: None for an IP address (nothing to resolve).
pub async fn resolve(broker: &str, timeout: Duration) -> Option<(bool, Duration)> {
    let host = broker.rsplit_once(':').map_or(broker, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let started = Instant::now();
    let ok = match tokio::time::timeout(timeout, tokio::net::lookup_host(broker)).await {
        Ok(Ok(mut addrs)) => addrs.next().is_some(),
        _ => false,
    };
    Some((ok, started.elapsed()))
}

/// Resolves the name of the broker the link is on (or trying) every `every`, for as long
/// as the task runs (the link aborts it when it ends).
pub async fn dns_loop(status: Arc<LinkStatus>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let broker = status.broker.lock().map(|b| b.clone()).unwrap_or_default();
        match resolve(&broker, DNS_TIMEOUT).await {
            Some((ok, took)) => status.note_dns(ok, took),
            None => status.note_dns_not_needed(),
        }
        if status.dns_state.load(Ordering::Relaxed) == super::status::DNS_FAILED {
            tracing::warn!(broker = %broker, "the broker's name does not resolve");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_is_timed_once_and_a_loss_forgets_it() {
        let mut c = PingClock::default();
        let t0 = Instant::now();
        assert_eq!(c.answered(t0), None, "an answer nobody asked for");
        c.sent(t0);
        assert_eq!(
            c.answered(t0 + Duration::from_millis(7)),
            Some(Duration::from_millis(7))
        );
        assert_eq!(c.answered(t0 + Duration::from_millis(9)), None);
        c.sent(t0);
        c.lost();
        assert_eq!(c.answered(t0 + Duration::from_millis(9)), None);
    }

    #[tokio::test]
    async fn names_resolve_or_fail_and_addresses_need_nothing() {
        assert_eq!(resolve("127.0.0.1:8883", DNS_TIMEOUT).await, None);
        assert_eq!(resolve("[::1]:8883", DNS_TIMEOUT).await, None);
        let (ok, _) = resolve("localhost:8883", DNS_TIMEOUT).await.unwrap();
        assert!(ok);
        let (ok, _) = resolve("no-such-broker.invalid:8883", DNS_TIMEOUT).await.unwrap();
        assert!(!ok);
    }

    #[tokio::test]
    async fn the_loop_writes_what_it_found_into_the_link_status() {
        let status = Arc::new(LinkStatus::default());
        *status.broker.lock().unwrap() = "localhost:8883".into();
        let task = tokio::spawn(dns_loop(status.clone(), Duration::from_secs(3600)));
        let h = loop {
            let h = status.broker_health();
            if h.dns_ok.is_some() {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        task.abort();
        assert_eq!(h.dns_ok, Some(true));
        assert!(h.dns_ms.is_some());
    }
}
