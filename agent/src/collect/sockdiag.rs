//! TCP connections by state through netlink `NETLINK_SOCK_DIAG` (inet_diag, what `ss` uses).
//!
//! `/proc/net/tcp` and `tcp6` make the kernel format a text line per socket and walk its
//! whole connection hash table to do so: 7.9 ms of kernel time a read with 50 sockets on the
//! bench machine, 19 % of the agent's CPU at one read every 10 s. One dump request per
//! family here returns a fixed-size binary message per socket, of which only the state byte
//! is read. Where netlink is refused (a seccomp filter, a kernel without `inet_diag`) the
//! caller falls back to the text tables ([`super::inside::InsideReader::tcp`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use common::TcpStates;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad (u8 each), states u32, then
/// `struct inet_diag_sockid` (48 bytes).
const REQ_LEN: usize = 4 + 4 + 48;
/// Every state, `NEW_SYN_RECV` (12) included: bit n is state n.
const ALL_STATES: u32 = 0x1fff;
/// The receive buffer: the kernel fills each datagram up to the size of the last read
/// (8 KiB pages of `inet_diag_msg`, 72 bytes each).
const RECV_BUF: usize = 16 * 1024;

/// Counts TCP sockets by state, IPv4 and IPv6, in the agent's network namespace.
pub fn tcp_states() -> io::Result<TcpStates> {
    let sock = open()?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut t = TcpStates::default();
    for (seq, family) in [(1u32, libc::AF_INET), (2, libc::AF_INET6)] {
        request(&sock, seq, family as u8)?;
        receive(&sock, seq, &mut buf, &mut t)?;
    }
    Ok(t)
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn request(sock: &OwnedFd, seq: u32, family: u8) -> io::Result<()> {
    let mut msg = [0u8; NLMSG_HDR + REQ_LEN];
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel
    msg[NLMSG_HDR] = family;
    msg[NLMSG_HDR + 1] = libc::IPPROTO_TCP as u8;
    msg[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&ALL_STATES.to_ne_bytes());
    // SAFETY: zeroed sockaddr_nl is a valid address (the kernel, no groups).
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` and `to` outlive the call and their lengths are passed with them.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the dump of request `seq` to its end, counting each socket's state.
fn receive(sock: &OwnedFd, seq: u32, buf: &mut [u8], t: &mut TcpStates) -> io::Result<()> {
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if count_messages(&buf[..n as usize], seq, t)? {
            return Ok(());
        }
    }
}

/// Counts the sockets of one datagram; true at the end of the dump (`NLMSG_DONE`).
fn count_messages(mut data: &[u8], seq: u32, t: &mut TcpStates) -> io::Result<bool> {
    let u32_at = |d: &[u8], at: usize| u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    while data.len() >= NLMSG_HDR {
        let len = u32_at(data, 0) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDR || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sock_diag: message length {len} in a datagram of {}", data.len()),
            ));
        }
        if u32_at(data, 8) == seq {
            match i32::from(kind) {
                libc::NLMSG_DONE => return Ok(true),
                libc::NLMSG_ERROR => {
                    // the payload starts with the negated errno
                    let errno = if len >= NLMSG_HDR + 4 {
                        -(u32_at(data, NLMSG_HDR) as i32)
                    } else {
                        libc::EINVAL
                    };
                    return Err(io::Error::from_raw_os_error(errno));
                }
                _ if kind == SOCK_DIAG_BY_FAMILY && len > NLMSG_HDR + 1 => {
                    // inet_diag_msg: family u8, state u8, ...
                    add_state(t, data[NLMSG_HDR + 1]);
                }
                _ => {}
            }
        }
        // messages are aligned to 4 bytes
        let next = (len + 3) & !3;
        data = data.get(next..).unwrap_or(&[]);
    }
    Ok(false)
}

/// The kernel's TCP state numbers (include/net/tcp_states.h), as `/proc/net/tcp` shows them.
fn add_state(t: &mut TcpStates, state: u8) {
    let n = match state {
        1 => &mut t.established,
        2 => &mut t.syn_sent,
        3 | 12 => &mut t.syn_recv,
        4 => &mut t.fin_wait1,
        5 => &mut t.fin_wait2,
        6 => &mut t.time_wait,
        7 => &mut t.close,
        8 => &mut t.close_wait,
        9 => &mut t.last_ack,
        10 => &mut t.listen,
        11 => &mut t.closing,
        _ => return,
    };
    *n += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::inside::InsideReader;
    use std::net::{Shutdown, TcpListener, TcpStream};

    /// Brings up the loopback interface of the calling thread's network namespace.
    fn loopback_up() -> bool {
        // SAFETY: a plain socket, two ioctls on a zeroed ifreq naming "lo", and close.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return false;
            }
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *s as libc::c_char;
            }
            let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0 && {
                ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) == 0
            };
            libc::close(fd);
            ok
        }
    }

    /// Opens sockets in known states: a listener per family, three established pairs, one
    /// half-closed pair (FIN_WAIT2 on the closer's side, CLOSE_WAIT on the other's).
    fn known_sockets() -> Vec<Box<dyn std::any::Any>> {
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
        for _ in 0..3 {
            let c = TcpStream::connect(l4.local_addr().unwrap()).unwrap();
            let (s, _) = l4.accept().unwrap();
            keep.push(Box::new((c, s)));
        }
        let c = TcpStream::connect(l4.local_addr().unwrap()).unwrap();
        let (s, _) = l4.accept().unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        keep.push(Box::new((c, s)));
        keep.push(Box::new(l4));
        if let Ok(l6) = TcpListener::bind("[::1]:0") {
            keep.push(Box::new(l6));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        keep
    }

    /// Real sockets in known states, in a network namespace of the test's own (a thread
    /// that `unshare`s one: as root, as the tests run here), where nothing else opens or
    /// closes connections: both readers count exactly the same, and exactly these. The
    /// text tables are read through `/proc/thread-self` (`/proc/net` is the process's
    /// namespace, not the thread's).
    #[test]
    fn netlink_and_the_text_tables_count_the_same_real_sockets() {
        let isolated = std::thread::spawn(|| {
            // SAFETY: unshare of this thread's network namespace only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 || !loopback_up() {
                return None;
            }
            let keep = known_sockets();
            let nl = tcp_states().expect("netlink sock_diag in a fresh namespace");
            let text = InsideReader::new("/proc/thread-self", "/sys")
                .tcp_text()
                .expect("/proc/thread-self/net/tcp");
            drop(keep);
            Some((nl, text))
        })
        .join()
        .unwrap();
        match isolated {
            Some((nl, text)) => {
                assert_eq!(nl, text);
                let ipv6 = u32::from(std::net::TcpListener::bind("[::1]:0").is_ok());
                assert_eq!(
                    (nl.listen, nl.established, nl.fin_wait2, nl.close_wait),
                    (1 + ipv6, 6, 1, 1),
                    "{nl:?}"
                );
            }
            None => {
                // not allowed a namespace: the machine's own, where others open and close
                // connections between the two reads; at least ours, and close to each other
                eprintln!("no network namespace of our own: comparing on the machine's");
                let keep = known_sockets();
                let nl = tcp_states().expect("netlink sock_diag on this machine");
                let text = InsideReader::new("/proc", "/sys").tcp_text().unwrap();
                drop(keep);
                assert!(
                    nl.established >= 6 && nl.fin_wait2 >= 1 && nl.close_wait >= 1,
                    "{nl:?}"
                );
                let total = |t: &TcpStates| t.established + t.listen + t.time_wait + t.close_wait;
                assert!(
                    total(&nl).abs_diff(total(&text)) <= total(&text) / 20 + 10,
                    "{nl:?} / {text:?}"
                );
            }
        }
    }

    #[test]
    fn a_datagram_is_parsed_to_its_done_and_an_error_is_returned() {
        let msg = |kind: u16, seq: u32, payload: &[u8]| {
            let mut m = Vec::new();
            m.extend(((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
            m.extend(kind.to_ne_bytes());
            m.extend(0u16.to_ne_bytes());
            m.extend(seq.to_ne_bytes());
            m.extend(0u32.to_ne_bytes());
            m.extend(payload);
            while m.len() % 4 != 0 {
                m.push(0);
            }
            m
        };
        let mut diag = vec![0u8; 72];
        diag[0] = libc::AF_INET as u8;
        let mut d = Vec::new();
        for state in [10u8, 1, 1, 6, 12] {
            diag[1] = state;
            d.extend(msg(SOCK_DIAG_BY_FAMILY, 7, &diag));
        }
        // a stray message of another request is not counted
        diag[1] = 1;
        d.extend(msg(SOCK_DIAG_BY_FAMILY, 8, &diag));
        let mut t = TcpStates::default();
        assert!(!count_messages(&d, 7, &mut t).unwrap());
        assert_eq!((t.listen, t.established, t.time_wait, t.syn_recv), (1, 2, 1, 1));
        assert!(count_messages(&msg(libc::NLMSG_DONE as u16, 7, &[0; 4]), 7, &mut t).unwrap());
        let e = count_messages(
            &msg(libc::NLMSG_ERROR as u16, 7, &(-libc::EPERM).to_ne_bytes()),
            7,
            &mut t,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let mut short = msg(SOCK_DIAG_BY_FAMILY, 7, &diag);
        short.truncate(40);
        assert!(
            count_messages(&short, 7, &mut t).is_err(),
            "a truncated message is an error"
        );
    }
}
