//! The scrape (async, on the agent's runtime): GETs the vision service's Prometheus text
//! endpoint with the agent's HTTP client ([`crate::shared::http`]) within the scrape timeout and
//! at most [`SCRAPE_MAX_BODY`] bytes, then parses it on a blocking thread (reading a large body
//! is CPU work) into readings ([`super::prometheus`]).

use std::path::Path;
use std::time::Duration;

use common::Reading;

use super::prometheus::{BadLine, ParseError, parse_prometheus, samples_to_readings};
use crate::shared::http::{ClientError, RequestError, build_client, get_body};

/// Most bytes of a scraped body.
pub const SCRAPE_MAX_BODY: usize = 1 << 20;
/// The `Accept` header of a scrape: the text format, anything else as a last resort.
pub const SCRAPE_ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Why a scrape brought nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error("{url}: the body is not UTF-8: {reason}")]
    NotUtf8 { url: String, reason: String },
    #[error("{url}: {source}")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
    #[error("parsing the body stopped: {0}")]
    Parser(String),
}

/// What a good scrape brought: readings, and the lines that were not Prometheus text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scraped {
    pub readings: Vec<Reading>,
    pub bad_lines: usize,
    pub first_bad: Option<BadLine>,
}

/// One endpoint and the client that scrapes it.
#[derive(Debug, Clone)]
pub struct Scraper {
    url: String,
    timeout: Duration,
    client: reqwest::Client,
}

impl Scraper {
    /// Blocking (it may read `ca_file` or the system's roots): call it from a blocking thread.
    pub fn build(url: &str, ca_file: Option<&Path>, timeout: Duration) -> Result<Scraper, ClientError> {
        Ok(Scraper {
            url: url.to_string(),
            timeout,
            client: build_client(ca_file, url.starts_with("https:"))?,
        })
    }

    /// One scrape: the body within the timeout, parsed on a blocking thread.
    pub async fn scrape(&self) -> Result<Scraped, ScrapeError> {
        let body = get_body(
            &self.client,
            &self.url,
            SCRAPE_ACCEPT,
            self.timeout,
            SCRAPE_MAX_BODY,
        )
        .await?;
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || parse_body(&url, &body))
            .await
            .map_err(|e| ScrapeError::Parser(e.to_string()))?
    }
}

/// A scraped body to readings (pure).
pub fn parse_body(url: &str, body: &[u8]) -> Result<Scraped, ScrapeError> {
    let text = std::str::from_utf8(body).map_err(|e| ScrapeError::NotUtf8 {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let parsed = parse_prometheus(text).map_err(|source| ScrapeError::Parse {
        url: url.to_string(),
        source,
    })?;
    Ok(Scraped {
        readings: samples_to_readings(&parsed.samples),
        bad_lines: parsed.bad_lines,
        first_bad: parsed.first_bad,
    })
}
#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Serves one connection with `response`, after reading the request head; returns the
    /// request.
    fn serve_once(response: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            // write in pieces so the client has to reassemble; the client may hang up early
            for piece in response.chunks(7) {
                if s.write_all(piece).and_then(|()| s.flush()).is_err() {
                    break;
                }
            }
            String::from_utf8_lossy(&req).into_owned()
        });
        (format!("http://{addr}/metrics"), handle)
    }

    async fn scrape(url: &str, timeout: Duration) -> Result<Vec<Reading>, ScrapeError> {
        let u = url.to_string();
        let scraper = tokio::task::spawn_blocking(move || Scraper::build(&u, None, timeout))
            .await
            .unwrap()
            .unwrap();
        scraper.scrape().await.map(|s| s.readings)
    }

    const BODY: &str =
        "# TYPE items_recognised counter\nitems_recognised 42\ncamera_fps{camera=\"front\"} 29.5\n";

    #[tokio::test]
    async fn a_scrape_reads_a_content_length_body() {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let (url, server) = serve_once(response.into_bytes());
        let got = scrape(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            got,
            vec![
                Reading::new("items_recognised", 42.0),
                Reading::new("camera_fps.front", 29.5)
            ]
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /metrics HTTP/1.1\r\n"), "{request}");
        // header names are case-insensitive (the client writes them in lower case)
        assert!(
            request
                .to_ascii_lowercase()
                .contains("accept: text/plain;version=0.0.4"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_scrape_reads_a_chunked_body() {
        let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (a, b) = BODY.split_at(20);
        response.extend_from_slice(format!("{:x};ext=1\r\n{a}\r\n", a.len()).as_bytes());
        response.extend_from_slice(format!("{:X}\r\n{b}\r\n", b.len()).as_bytes());
        response.extend_from_slice(b"0\r\nX-Trailer: y\r\n\r\n");
        let (url, server) = serve_once(response);
        let got = scrape(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Reading::new("camera_fps.front", 29.5));
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_scrape_reports_a_bad_status_a_bad_body_and_a_refused_connection() {
        let (url, server) = serve_once(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec());
        let err = scrape(&url, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("status 503"), "{err}");
        server.join().unwrap();

        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\n<html>\n<body>502</body>\n".to_vec());
        let err = scrape(&url, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1: "), "{err}");
        server.join().unwrap();

        let (url, server) = serve_once(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                SCRAPE_MAX_BODY + 1
            )
            .into_bytes(),
        );
        let err = scrape(&url, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 1048576"), "{err}");
        server.join().unwrap();

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = scrape(
            &format!("http://127.0.0.1:{port}/metrics"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("connect 127.0.0.1:"), "{err}");
    }

    #[tokio::test]
    async fn a_body_larger_than_the_limit_without_a_length_is_cut_off() {
        let mut response = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        response.extend(std::iter::repeat_n(b'#', SCRAPE_MAX_BODY + 10));
        let (url, server) = serve_once(response);
        let err = scrape(&url, Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 1048576"), "{err}");
        let _ = server.join();
    }

    #[test]
    fn a_body_with_some_bad_lines_keeps_the_rest_and_counts_them() {
        let got = parse_body("u", b"ok 1\nnot a metric line\nfps 2\n").unwrap();
        assert_eq!(
            got.readings,
            vec![Reading::new("ok", 1.0), Reading::new("fps", 2.0)]
        );
        assert_eq!(got.bad_lines, 1);
        assert_eq!(got.first_bad.map(|b| b.line), Some(2));
        let err = parse_body("u", &[0xff, 0xfe]).unwrap_err();
        assert!(matches!(err, ScrapeError::NotUtf8 { .. }), "{err}");
    }
}
