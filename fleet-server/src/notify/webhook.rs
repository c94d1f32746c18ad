//! Webhook channel: the [`Notification`] as a JSON POST. A failed attempt (connection error,
//! timeout, 408, 429 or 5xx) is retried with exponential backoff, jittered (±50 %) and capped
//! at [`RETRY_MAX_INTERVAL`] between attempts, for at most the channel's `max_retry_s`; any
//! other status is final. This module is the only user of the `backoff` crate on the server.

use std::time::Duration;

use backoff::ExponentialBackoff;

use super::notification::Notification;

/// First wait before a retry.
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
pub const RETRY_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// A validated webhook channel.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub timeout: Duration,
    pub max_retry: Duration,
}

/// The HTTP client every webhook shares (connection reuse).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("rvm-fleet-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Accepts `http://` URLs with a host (this build has no TLS client).
pub fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            format!("{url:?}: https is not supported by this build; put a TLS proxy in front of the receiver")
        } else {
            format!("{url:?} is not an http:// URL")
        });
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn backoff_for(max_retry: Duration) -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: RETRY_INITIAL,
        current_interval: RETRY_INITIAL,
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_interval: RETRY_MAX_INTERVAL,
        max_elapsed_time: Some(max_retry),
        ..Default::default()
    }
}

fn is_retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// POSTs the notification, retrying as the module docs say.
pub async fn send(http: &reqwest::Client, cfg: &WebhookConfig, n: &Notification) -> Result<(), String> {
    let attempt = || async {
        let resp = http
            .post(&cfg.url)
            .timeout(cfg.timeout)
            .json(n)
            .send()
            .await
            .map_err(|e| backoff::Error::transient(format!("POST {}: {e}", cfg.url)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let err = format!("POST {}: the receiver answered {status}", cfg.url);
        if is_retryable(status) {
            tracing::warn!(notification = %n.id, error = %err, "webhook attempt failed; retrying");
            Err(backoff::Error::transient(err))
        } else {
            Err(backoff::Error::permanent(err))
        }
    };
    backoff::future::retry(backoff_for(cfg.max_retry), attempt).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::notify::notification::Source;

    #[test]
    fn only_plain_http_urls_with_a_host_are_accepted() {
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("http://hooks.local").is_ok());
        assert!(check_url("https://x/").unwrap_err().contains("TLS proxy"));
        assert!(check_url("http:///x").is_err());
        assert!(check_url("x").is_err());
    }

    /// Answers `statuses` in turn to successive requests, then 200.
    async fn build_receiver(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                let i = h.fetch_add(1, Ordering::SeqCst);
                let status = statuses.get(i).copied().unwrap_or(200);
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (url, hits)
    }

    fn build_notification() -> Notification {
        Notification {
            id: "x/firing".into(),
            source: Source::Alert,
            event: "firing".into(),
            severity: common::Severity::Warning,
            at_ms: 0,
            title: "t".into(),
            text: "t".into(),
            labels: Default::default(),
            alert: None,
            incident: None,
        }
    }

    fn build_cfg(url: String) -> WebhookConfig {
        WebhookConfig {
            url,
            timeout: Duration::from_secs(2),
            max_retry: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn a_server_error_is_retried_until_it_succeeds() {
        let (url, hits) = build_receiver(vec![503, 500]).await;
        send(&client(), &build_cfg(url), &build_notification())
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_client_error_is_final() {
        let (url, hits) = build_receiver(vec![404]).await;
        let e = send(&client(), &build_cfg(url), &build_notification())
            .await
            .unwrap_err();
        assert!(e.contains("404"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
