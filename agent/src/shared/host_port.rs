//! `host:port` parsing, for the broker address (and, for now, the server's SMTP relay and
//! broker options, which import it from here).

/// Splits `host:port`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port: u16 = p.parse().ok()?;
    if h.is_empty() || port == 0 {
        return None;
    }
    Some((h.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_split() {
        assert_eq!(
            split_host_port("localhost:8883"),
            Some(("localhost".into(), 8883))
        );
        assert_eq!(split_host_port("[::1]:1"), Some(("::1".into(), 1)));
        assert_eq!(split_host_port("x"), None);
        assert_eq!(split_host_port("x:0"), None);
    }
}
