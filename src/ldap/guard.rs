//! The directory connection as ldap3 sees it: our own TCP (and TLS) connection, relayed to ldap3 over a
//! local socket pair after the length of every LDAP message the server sends has been checked.
//!
//! Why: ldap3 buffers a message until it is whole, whatever length its header claims, so a peer answering
//! the bind with a header claiming 2 GB and then streaming bytes would make it buffer until the kernel kills
//! the process, and `ldap.timeout` does not bound that at LAN speed. ldap3 takes no limit and no stream of
//! ours (only a standard TCP or Unix socket), so the check sits on the stream: TLS (LDAPS, or StartTLS, which
//! this module asks for itself) ends here, the plain LDAP stream is read message header by message header,
//! and ldap3 gets the other end of a Unix socket pair, as an `ldapi://` connection. A message over
//! `ldap.max_message_mib` ends the connection before a byte of it reaches ldap3, and the reason is kept in
//! the [`Verdict`] so that the error ldap3 then reports can name it.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::error::{Cause, rc_name};
use super::{Error, Settings, tls};

/// Why the guard ended a connection, once it has.
#[derive(Clone, Debug, Default)]
pub(super) struct Verdict(Arc<OnceLock<String>>);

impl Verdict {
    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    fn set(&self, reason: String) {
        let _ = self.0.set(reason);
    }
}

/// TCP keepalive on a directory connection: probes after [`KEEPALIVE_IDLE`] of silence, every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] times. A connection that a firewall or a NAT dropped without a
/// word (no FIN, no RST) then ends within about two minutes rather than when the kernel gives up (hours): the
/// watch's persistent search, silent while nothing changes, learns it is gone and opens again.
fn keep_alive(tcp: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "TCP keepalive not set");
    }
}

const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// The StartTLS extended request, message id 1: `SEQUENCE { INTEGER 1, [APPLICATION 23] { [0] "1.3.6.1.4.1.1466.20037" } }`.
const STARTTLS_REQUEST: &[u8] = b"\x30\x1d\x02\x01\x01\x77\x18\x80\x161.3.6.1.4.1.1466.20037";

/// The most a StartTLS answer may take.
const STARTTLS_ANSWER_MAX: u64 = 64 * 1024;

/// Opens `url` (`ldap://` or `ldaps://`, with StartTLS when `s.starttls`), and returns the socket ldap3 is to
/// use, with the verdict of the guard relaying it.
pub(super) async fn open(s: &Settings, url: &str) -> Result<(std::os::unix::net::UnixStream, Verdict), Error> {
    let connect_error = |reason: String| Error::Connect { url: url.to_string(), reason: reason.into() };
    let connect_cause = |reason: Cause| Error::Connect { url: url.to_string(), reason };
    let parsed = url::Url::parse(url).map_err(|e| connect_error(format!("not a URL: {e}")))?;
    let ldaps = match parsed.scheme() {
        "ldaps" => true,
        "ldap" => false,
        other => return Err(connect_error(format!("unknown scheme {other:?}: use ldap:// or ldaps://"))),
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => "localhost".to_string(),
    };
    let port = parsed.port().unwrap_or(if ldaps { 636 } else { 389 });
    let limit = s.max_message_bytes;
    let verdict = Verdict::default();
    let within =
        |what: &'static str| move |_| connect_error(format!("no {what} within {:?} (ldap.timeout)", s.timeout));

    let tcp = tokio::time::timeout(s.timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(within("connection"))?
        .map_err(|e| connect_cause(Cause::new(e)))?;
    let _ = tcp.set_nodelay(true);
    keep_alive(&tcp);
    let (ours, theirs) = UnixStream::pair().map_err(|e| connect_error(format!("cannot make a socket pair: {e}")))?;
    let theirs = theirs.into_std().map_err(|e| connect_error(format!("cannot hand the socket over: {e}")))?;

    if !ldaps && !s.starttls {
        tokio::spawn(relay(tcp, ours, limit, verdict.clone()));
        return Ok((theirs, verdict));
    }
    let mut tcp = tcp;
    if !ldaps {
        tokio::time::timeout(s.timeout, start_tls(&mut tcp))
            .await
            .map_err(within("StartTLS answer"))?
            .map_err(connect_error)?;
    }
    let config = tls::client_config(s).map_err(|e| Error::Tls { url: url.to_string(), reason: e.to_string() })?;
    let name = server_name(&host, s.danger_skip_tls_verify).map_err(connect_error)?;
    let tls = tokio::time::timeout(s.timeout, tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(within("TLS handshake"))?
        .map_err(|e| connect_cause(Cause::described(tls::describe_handshake(&e, s, url), e)))?;
    tokio::spawn(relay(tls, ours, limit, verdict.clone()));
    Ok((theirs, verdict))
}

/// The name the certificate must carry. An IP address is matched as one (rustls checks the certificate's IP
/// addresses); with verification off any name will do.
fn server_name(host: &str, skip_verify: bool) -> Result<ServerName<'static>, String> {
    match ServerName::try_from(host.to_string()) {
        Ok(name) => Ok(name),
        Err(_) if skip_verify => Ok(ServerName::try_from("unverified.invalid").expect("a valid DNS name")),
        Err(e) => Err(format!("{host:?} cannot be checked against a certificate: {e}")),
    }
}

/// Asks for StartTLS and reads the answer (one message, at most [`STARTTLS_ANSWER_MAX`] bytes).
async fn start_tls(tcp: &mut TcpStream) -> Result<(), String> {
    tcp.write_all(STARTTLS_REQUEST).await.map_err(|e| format!("cannot send StartTLS: {e}"))?;
    let mut frames = Frames::new(STARTTLS_ANSWER_MAX);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read exactly one message: the TLS handshake follows on the same stream.
    while !frames.at_boundary() || answer.is_empty() {
        let want = frames.wanted().min(buf.len());
        let n = tcp.read(&mut buf[..want]).await.map_err(|e| format!("StartTLS answer unreadable: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection instead of answering StartTLS".into());
        }
        frames.check(&buf[..n]).map_err(|r| format!("StartTLS answer refused: {r}"))?;
        answer.extend_from_slice(&buf[..n]);
    }
    match extended_result(&answer) {
        Some((0, _)) => Ok(()),
        Some((code, text)) => {
            Err(format!("the server refused StartTLS: result code {code} ({}) {text}", rc_name(code))
                .trim()
                .to_string())
        }
        None => Err("the server's StartTLS answer is not an LDAP extended response".into()),
    }
}

/// The result code and diagnostic message of an LDAP extended response.
fn extended_result(message: &[u8]) -> Option<(u32, String)> {
    let (tag, body, _) = tlv(message)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = tlv(body).filter(|(t, _, _)| *t == 0x02)?;
    let (tag, op, _) = tlv(rest)?;
    if tag != 0x78 {
        return None;
    }
    let (_, code, rest) = tlv(op).filter(|(t, _, _)| *t == 0x0a)?;
    let code = code.iter().try_fold(0u32, |n, b| n.checked_mul(256).map(|n| n + u32::from(*b)))?;
    let (_, _matched, rest) = tlv(rest)?;
    let text = tlv(rest).map(|(_, t, _)| String::from_utf8_lossy(t).into_owned()).unwrap_or_default();
    Some((code, text))
}

/// One BER element: its tag, its contents and what follows it (definite lengths of up to 4 bytes only).
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let &first = rest.first()?;
    let octets = length_octets(first)?;
    let header = rest.get(..octets)?;
    let len = usize::try_from(length(header)).ok()?;
    let rest = &rest[octets..];
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// How many octets a definite BER length starting with `first` takes (1 short, 2 to 5 long), or `None` for
/// the indefinite form and lengths past 4 bytes, which no LDAP message needs.
fn length_octets(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7f => Some(1),
        0x81..=0x84 => Some(1 + usize::from(first & 0x7f)),
        _ => None,
    }
}

/// The value of a definite BER length, given its octets whole (as [`length_octets`] counts them).
fn length(octets: &[u8]) -> u64 {
    match octets {
        [short] if *short < 0x80 => u64::from(*short),
        [_, long @ ..] => long.iter().fold(0u64, |l, b| (l << 8) | u64::from(*b)),
        [] => 0,
    }
}

/// Follows the message boundaries of a stream of LDAP messages, refusing one whose header claims more than
/// the limit, or that is not a BER SEQUENCE with a definite length.
#[derive(Debug)]
struct Frames {
    limit: u64,
    header: [u8; 6],
    /// Header bytes seen of the message to come.
    have: usize,
    /// Body bytes still to come of the message under way.
    remaining: u64,
}

impl Frames {
    fn new(limit: u64) -> Frames {
        Frames { limit, header: [0; 6], have: 0, remaining: 0 }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// How many bytes may be read without going past the end of the message under way (at least 1).
    fn wanted(&self) -> usize {
        if self.remaining > 0 { usize::try_from(self.remaining).unwrap_or(usize::MAX) } else { 1 }
    }

    /// Checks the next `bytes` from the server.
    fn check(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut i = 0;
        while i < bytes.len() {
            if self.remaining > 0 {
                let take = self.remaining.min((bytes.len() - i) as u64);
                self.remaining -= take;
                i += take as usize;
                continue;
            }
            self.header[self.have] = bytes[i];
            self.have += 1;
            i += 1;
            if self.have == 1 {
                if self.header[0] != 0x30 {
                    return Err(format!(
                        "the server sent something that is not an LDAP message (byte 0x{:02x})",
                        self.header[0]
                    ));
                }
                continue;
            }
            let first = self.header[1];
            let Some(octets) = length_octets(first) else {
                return Err(format!(
                    "the server sent an LDAP message without a usable length (length byte 0x{first:02x})"
                ));
            };
            if self.have < 1 + octets {
                continue;
            }
            let length = length(&self.header[1..1 + octets]);
            if length > self.limit {
                return Err(format!(
                    "the server sent an LDAP message of {length} bytes, over the limit of {} bytes (ldap.max_message_mib)",
                    self.limit
                ));
            }
            self.have = 0;
            self.remaining = length;
        }
        Ok(())
    }
}

/// Relays between the server and ldap3 until either side ends, checking each message from the server.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(server: S, ldap3: UnixStream, limit: u64, verdict: Verdict) {
    let (mut from_server, mut to_server) = tokio::io::split(server);
    let (mut from_ldap3, mut to_ldap3) = ldap3.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut from_ldap3, &mut to_server).await;
        let _ = to_server.shutdown().await;
    };
    let down = async {
        let mut frames = Frames::new(limit);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Err(reason) = frames.check(&buf[..n]) {
                tracing::error!(reason = %reason, "directory connection ended");
                verdict.set(reason);
                break;
            }
            if to_ldap3.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    // Either direction ending ends the connection: both halves are dropped here.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a test waits for the relay.
    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    #[tokio::test]
    async fn directory_connections_probe_a_silent_peer_within_two_minutes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let socket = socket2::SockRef::from(&tcp);
        assert!(!socket.keepalive().unwrap(), "off by default: the control");
        keep_alive(&tcp);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        let gone_within = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES;
        assert!(gone_within <= std::time::Duration::from_secs(120), "{gone_within:?}");
    }

    #[test]
    fn frames_follow_message_boundaries_and_refuse_a_header_over_the_limit() {
        let mut f = Frames::new(1000);
        // Two messages (short and long form), split at every byte.
        let mut stream = vec![0x30, 0x03, 1, 2, 3, 0x30, 0x82, 0x01, 0x00];
        stream.extend(std::iter::repeat_n(7u8, 256));
        for b in &stream {
            f.check(std::slice::from_ref(b)).unwrap();
        }
        assert!(f.at_boundary());
        let mut f = Frames::new(1000);
        f.check(&stream).unwrap();
        assert!(f.at_boundary());
        // A header claiming 2 GB, in one piece or split.
        let huge = [0x30, 0x84, 0x80, 0x00, 0x00, 0x00];
        let e = Frames::new(64 << 20).check(&huge).unwrap_err();
        assert!(e.contains("2147483648 bytes") && e.contains("ldap.max_message_mib"), "{e}");
        let mut f = Frames::new(64 << 20);
        f.check(&huge[..3]).unwrap();
        assert!(f.check(&huge[3..]).is_err());
        // Not BER, or no definite length.
        assert!(Frames::new(10).check(b"HTTP/1.1 400").unwrap_err().contains("not an LDAP message"));
        assert!(Frames::new(10).check(&[0x30, 0x80]).unwrap_err().contains("without a usable length"));
        assert!(Frames::new(10).check(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
    }

    #[test]
    fn a_starttls_answer_yields_its_result_code() {
        // { 1, ExtendedResponse { success, "", "" } } and { 1, { protocolError (2), "", "no TLS here" } }
        let ok = [0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];
        assert_eq!(extended_result(&ok), Some((0, String::new())));
        let mut refused = vec![0x30, 0x17, 0x02, 0x01, 0x01, 0x78, 0x12, 0x0a, 0x01, 0x02, 0x04, 0x00, 0x04, 0x0b];
        refused.extend_from_slice(b"no TLS here");
        assert_eq!(extended_result(&refused), Some((2, "no TLS here".into())));
        assert_eq!(extended_result(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert_eq!(extended_result(b"garbage"), None);
        assert_eq!(STARTTLS_REQUEST.len(), 31);
        assert_eq!(tlv(STARTTLS_REQUEST).map(|(t, b, rest)| (t, b.len(), rest.len())), Some((0x30, 29, 0)));
    }

    #[tokio::test]
    async fn a_peer_claiming_a_huge_message_is_cut_before_ldap3_gets_a_byte() {
        let (server, mut peer) = tokio::io::duplex(1 << 16);
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let verdict = Verdict::default();
        let relayed = tokio::spawn(relay(server, ours, 1 << 20, verdict.clone()));
        peer.write_all(&[0x30, 0x84, 0x80, 0, 0, 0, 1, 2, 3]).await.unwrap();
        tokio::time::timeout(WAIT, relayed).await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, theirs.read_to_end(&mut got)).await.unwrap().unwrap();
        assert!(got.is_empty(), "{got:?}");
        assert!(verdict.reason().unwrap().contains("2147483648 bytes"), "{verdict:?}");
    }
}
