//! `host:port` as the fleet writes it: the broker address a provisioning bundle hands the
//! agent (`fleetctl certs bundle --broker`, `[mqtt] broker` in `agent.toml`), which the server
//! checks when it writes the bundle and the agent parses when it connects. One definition for
//! both sides of that contract; the server also reads its own `host:port` options with it
//! (`[mqtt] connect`, an SMTP relay, `fleetctl sub --broker`).

/// Splits `host:port` (`[::1]:8883` for an IPv6 address); None when the port is missing, not a
/// number or zero, or the host is empty.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port: u16 = p.parse().ok()?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty() && port != 0).then(|| (h.to_string(), port))
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

    #[test]
    fn host_and_port_are_split() {
        assert_eq!(
            split_host_port("smtp.example.com:587"),
            Some(("smtp.example.com".into(), 587))
        );
        assert_eq!(split_host_port("[::1]:25"), Some(("::1".into(), 25)));
        assert_eq!(split_host_port("relay"), None);
        assert_eq!(split_host_port("relay:0"), None);
    }

    #[test]
    fn empty_brackets_are_no_host() {
        assert_eq!(split_host_port("[]:25"), None);
    }
}
