//! The pieces of HTTP/1.1 that both hand-written blocking clients share: the health probe
//! ([`crate::health`] `http_get_status`) and the app-metrics scrape ([`crate::appmetrics`]).
//! Only `http://` is supported.

/// Most bytes of an HTTP response read while looking for the status line.
pub const HTTP_MAX_HEAD: usize = 8 * 1024;

/// Splits `http://host[:port]/path` into host, port and path (with query).
pub fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{url:?}: scheme {scheme:?} is not supported (http:// only)"
            ));
        }
        None => return Err(format!("{url:?} does not start with http://")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(format!("{url:?}: credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in host"))?;
        match after {
            "" => (h.to_string(), 80),
            p => (h.to_string(), parse_port(url, p.strip_prefix(':').unwrap_or(p))?),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), parse_port(url, p)?),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{url:?}: the path contains whitespace or control characters"
        ));
    }
    Ok((host, port, path))
}

fn parse_port(url: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{url:?}: {p:?} is not a port")),
        Ok(port) => Ok(port),
    }
}

pub(crate) fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split_whitespace();
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return Err(format!(
            "not an HTTP status line: {:?}",
            truncate_chars(&text, 80)
        ));
    }
    code.parse::<u16>()
        .map_err(|_| format!("not an HTTP status code: {code:?}"))
}

fn truncate_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_split_into_host_port_and_path() {
        assert_eq!(
            parse_http_url("http://localhost:8080/a/b?c=d"),
            Ok(("localhost".into(), 8080, "/a/b?c=d".into()))
        );
        assert_eq!(parse_http_url("http://host"), Ok(("host".into(), 80, "/".into())));
        assert_eq!(
            parse_http_url("http://[::1]:81/x"),
            Ok(("::1".into(), 81, "/x".into()))
        );
        assert_eq!(parse_http_url("http://h?q"), Ok(("h".into(), 80, "/?q".into())));
        assert!(parse_http_url("http://:80/").is_err());
        assert!(parse_http_url("http://h:99999/").is_err());
        assert!(parse_http_url("localhost:80").is_err());
    }
}
