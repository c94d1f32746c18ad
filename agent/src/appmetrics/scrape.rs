//! The scrape client (blocking IO): GETs the vision service's Prometheus text endpoint with a
//! hand-written HTTP/1.1 client (Content-Length, chunked, or read to close; bounded) and
//! returns its samples as readings. Call it from a blocking thread.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use common::Reading;

use super::names::shorten;
use super::prometheus::{parse_prometheus, samples_to_readings};
use crate::shared::http1::{HTTP_MAX_HEAD, parse_http_url, parse_status_line};

/// Most bytes of a scraped body (after de-chunking).
pub const SCRAPE_MAX_BODY: usize = 1 << 20;
/// Longest chunk-size line accepted in a chunked body.
const CHUNK_LINE_MAX: usize = 1024;

/// GETs `url` (a Prometheus text endpoint, `http://` only) within `timeout` and returns its
/// samples as readings (see the module doc). Blocking: call it from a blocking thread.
pub fn scrape(url: &str, timeout: Duration) -> Result<Vec<Reading>, String> {
    let body = http_get_body(url, timeout, SCRAPE_MAX_BODY)?;
    let text = std::str::from_utf8(&body).map_err(|e| format!("{url}: the body is not UTF-8: {e}"))?;
    let samples = parse_prometheus(text).map_err(|e| format!("{url}: {e}"))?;
    Ok(samples_to_readings(&samples))
}

/// What the response head says about the body.
#[derive(Debug, Clone, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or("").as_bytes())?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {:?}", shorten(line)));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {:?}", shorten(value)))?;
            if content_length.is_some_and(|old| old != n) {
                return Err("two different Content-Length headers".into());
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(format!("transfer encoding {coding:?} is not supported"));
                }
            }
        } else if name.eq_ignore_ascii_case("content-encoding") && !value.eq_ignore_ascii_case("identity") {
            return Err(format!("content encoding {:?} is not supported", shorten(value)));
        }
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// Decodes a chunked body: `Ok(None)` while incomplete, the body once the last chunk and the
/// trailers are in, an error when malformed or larger than `max`.
fn decode_chunked(raw: &[u8], max: usize) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let line_at = |pos: usize| -> Result<Option<(&[u8], usize)>, String> {
        let rest = &raw[pos..];
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(end) => Ok(Some((&rest[..end], pos + end + 2))),
            None if rest.len() > CHUNK_LINE_MAX => {
                Err(format!("a chunk line is longer than {CHUNK_LINE_MAX} bytes"))
            }
            None => Ok(None),
        }
    };
    loop {
        let Some((line, next)) = line_at(pos)? else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(line);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {:?}", shorten(size_text)))?;
        pos = next;
        if size == 0 {
            // trailers, then an empty line
            loop {
                let Some((trailer, next)) = line_at(pos)? else {
                    return Ok(None);
                };
                pos = next;
                if trailer.is_empty() {
                    return Ok(Some(out));
                }
            }
        }
        if size > max.saturating_sub(out.len()) {
            return Err(format!("the body is larger than {max} bytes"));
        }
        if raw.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[pos..pos + size]);
        if &raw[pos + size..pos + size + 2] != b"\r\n" {
            return Err("a chunk is not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

/// A blocking HTTP/1.1 `GET` that returns the body of a 200 response, at most `max_body` bytes,
/// all within `timeout`.
fn http_get_body(url: &str, timeout: Duration, max_body: usize) -> Result<Vec<u8>, String> {
    let (host, port, path) = parse_http_url(url)?;
    let deadline = Instant::now() + timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let timed_out = |what: &str| format!("timed out after {} ms {what}", timeout.as_millis());
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last_err = format!("{host} resolved to no address");
    let mut stream = None;
    for addr in addrs {
        if remaining().is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, remaining()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host_header = match (host.contains(':'), port) {
        (true, 80) => format!("[{host}]"),
        (true, p) => format!("[{host}]:{p}"),
        (false, 80) => host.clone(),
        (false, p) => format!("{host}:{p}"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: rvm-agent\r\n\
         Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nConnection: close\r\n\r\n"
    );
    let left = |what: &str| -> Result<Duration, String> {
        let r = remaining();
        if r.is_zero() { Err(timed_out(what)) } else { Ok(r) }
    };
    stream
        .set_write_timeout(Some(left("before sending")?))
        .map_err(|e| format!("socket: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;

    // Reads more into `buf`; Ok(false) at the end of the stream.
    let mut read_more = |buf: &mut Vec<u8>| -> Result<bool, String> {
        let mut chunk = [0u8; 8192];
        loop {
            stream
                .set_read_timeout(Some(left("waiting for the response")?))
                .map_err(|e| format!("socket: {e}"))?;
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out("waiting for the response"));
                }
                Err(e) => return Err(format!("read response: {e}")),
            }
        }
    };

    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() >= HTTP_MAX_HEAD {
            return Err(format!(
                "no end of the response head in the first {HTTP_MAX_HEAD} bytes"
            ));
        }
        if !read_more(&mut buf)? {
            return Err(if buf.is_empty() {
                "connection closed without a response".into()
            } else {
                "connection closed inside the response head".into()
            });
        }
    };
    let head = parse_head(&buf[..head_end])?;
    if head.status != 200 {
        return Err(format!("status {} from {url}", head.status));
    }
    let mut body = buf.split_off(head_end + 4);
    if head.chunked {
        // the chunk framing may add a little to the body size
        let raw_max = max_body + max_body / 8 + 4096;
        loop {
            if let Some(decoded) = decode_chunked(&body, max_body)? {
                return Ok(decoded);
            }
            if body.len() > raw_max {
                return Err(format!("the body is larger than {max_body} bytes"));
            }
            if !read_more(&mut body)? {
                return Err("connection closed inside a chunked body".into());
            }
        }
    }
    if let Some(len) = head.content_length {
        if len > max_body {
            return Err(format!("the body is {len} bytes, more than {max_body}"));
        }
        while body.len() < len {
            if !read_more(&mut body)? {
                return Err(format!("connection closed after {} of {len} bytes", body.len()));
            }
        }
        body.truncate(len);
        return Ok(body);
    }
    // no framing: the body ends when the server closes
    loop {
        if body.len() > max_body {
            return Err(format!("the body is larger than {max_body} bytes"));
        }
        if !read_more(&mut body)? {
            return Ok(body);
        }
    }
}
#[cfg(test)]
mod tests {
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
            // write in pieces so the client has to reassemble
            for piece in response.chunks(7) {
                s.write_all(piece).unwrap();
                s.flush().unwrap();
            }
            String::from_utf8_lossy(&req).into_owned()
        });
        (format!("http://{addr}/metrics"), handle)
    }

    const BODY: &str =
        "# TYPE items_recognised counter\nitems_recognised 42\ncamera_fps{camera=\"front\"} 29.5\n";

    #[test]
    fn a_scrape_reads_a_content_length_body() {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let (url, server) = serve_once(response.into_bytes());
        let got = scrape(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(
            got,
            vec![
                Reading::new("items_recognised", 42.0),
                Reading::new("camera_fps.front", 29.5)
            ]
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /metrics HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Accept: text/plain;version=0.0.4"), "{request}");
    }

    #[test]
    fn a_scrape_reads_a_chunked_body() {
        let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (a, b) = BODY.split_at(20);
        response.extend_from_slice(format!("{:x};ext=1\r\n{a}\r\n", a.len()).as_bytes());
        response.extend_from_slice(format!("{:X}\r\n{b}\r\n", b.len()).as_bytes());
        response.extend_from_slice(b"0\r\nX-Trailer: y\r\n\r\n");
        let (url, server) = serve_once(response);
        let got = scrape(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Reading::new("camera_fps.front", 29.5));
        server.join().unwrap();
    }

    #[test]
    fn a_scrape_reports_a_bad_status_a_bad_body_and_a_refused_connection() {
        let (url, server) = serve_once(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec());
        let err = scrape(&url, Duration::from_secs(5)).unwrap_err();
        assert!(err.starts_with("status 503"), "{err}");
        server.join().unwrap();

        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nok 1\n<html>\n".to_vec());
        let err = scrape(&url, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("line 2: "), "{err}");
        server.join().unwrap();

        let (url, server) = serve_once(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                SCRAPE_MAX_BODY + 1
            )
            .into_bytes(),
        );
        let err = scrape(&url, Duration::from_secs(5)).unwrap_err();
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
        .unwrap_err();
        assert!(err.starts_with("connect 127.0.0.1:"), "{err}");
    }

    #[test]
    fn chunked_bodies_are_decoded_incrementally_and_malformed_ones_refused() {
        let full = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(decode_chunked(&full[..cut], 100), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode_chunked(full, 100), Ok(Some(b"abcde".to_vec())));
        assert!(
            decode_chunked(b"zz\r\n", 100)
                .unwrap_err()
                .contains("bad chunk size")
        );
        assert!(
            decode_chunked(b"3\r\nabcX\r\n", 100)
                .unwrap_err()
                .contains("CRLF")
        );
        assert!(
            decode_chunked(b"65\r\n", 100)
                .unwrap_err()
                .contains("larger than 100")
        );
        assert!(
            decode_chunked(&[b'1'; 2000], 100)
                .unwrap_err()
                .contains("longer than")
        );
    }

    #[test]
    fn response_heads_give_the_status_and_framing() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nX: y").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: Some(12),
                chunked: false
            }
        );
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked")
                .unwrap()
                .chunked
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
    }
}
