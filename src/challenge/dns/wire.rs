//! DNS exchanges: a query over UDP (retransmitted within its timeout, retried over TCP when
//! the answer is truncated) and a TSIG-signed UPDATE over TCP.
//!
//! Updates go over TCP only: the answer can be long (a TSIG error carries the server's time),
//! and a lost UDP answer would leave us not knowing whether the change was made.
//! Every answer is checked against the question before it is believed: same ID, a response,
//! the same opcode and question. An update's answer must carry a valid TSIG signature, except
//! the unsigned error answers RFC 8945 §5.2 prescribes, which are turned into a clear
//! [`Dns01Error::TsigRejected`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::{Name, RecordType, TSigVerifier, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::{Dns01Error, TSIG_FUDGE, TsigAlgorithm, TsigKey};
use crate::name::Hostname;

/// Largest UDP answer we ask for (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// UDP sends per query: the first and this many minus one retransmissions.
const UDP_SENDS: u32 = 3;

/// A hickory name for a validated hostname (fully qualified).
pub(super) fn to_name(h: &Hostname) -> Result<Name> {
    Name::from_ascii(format!("{h}.")).map_err(|e| anyhow!("{h}: {e}"))
}

/// A hostname for a name read from DNS (validated like any other untrusted name).
pub(super) fn to_hostname(n: &Name) -> Result<Hostname> {
    let ascii = n.to_ascii();
    Ok(Hostname::parse(ascii.trim_end_matches('.'))?)
}

/// Asks `server` for `name`/`rtype`, with the recursion-desired bit as given.
pub(super) async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    recursion: bool,
    timeout: Duration,
) -> Result<Message> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = recursion;
    msg.add_query(Query::query(name.clone(), rtype));
    msg.set_edns(Edns::new().set_max_payload(EDNS_PAYLOAD).clone());
    let bytes = msg.to_vec()?;
    let deadline = Instant::now() + timeout;
    let answer = udp_exchange(server, &bytes, msg.metadata.id, deadline).await?;
    let answer = if answer.metadata.truncation {
        let raw = tcp_exchange(server, &bytes, deadline).await?;
        Message::from_vec(&raw).map_err(|e| anyhow!("malformed answer from {server}: {e}"))?
    } else {
        answer
    };
    check_answer(server, &msg, &answer)?;
    Ok(answer)
}

/// Sends a signed UPDATE to `server` and returns its (verified, successful) answer.
pub(super) async fn update(
    server: SocketAddr,
    mut msg: Message,
    key: &TsigKey,
    zone: &Hostname,
    timeout: Duration,
) -> Result<Message> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut verifier = sign(&mut msg, key, now)?;
    let bytes = msg.to_vec()?;
    let raw = tcp_exchange(server, &bytes, Instant::now() + timeout).await?;
    read_update_answer(server, &msg, &raw, &mut verifier, key, zone)
}

/// Signs `msg` with `key` at `now` (seconds since the epoch); the verifier returned checks
/// the answer's signature.
pub(super) fn sign(msg: &mut Message, key: &TsigKey, now: u64) -> Result<TSigVerifier> {
    let algorithm = match key.algorithm() {
        TsigAlgorithm::HmacSha256 => hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
        TsigAlgorithm::HmacSha384 => hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha384,
        TsigAlgorithm::HmacSha512 => hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha512,
    };
    let signer = TSigner::new(
        key.secret().to_vec(),
        algorithm,
        to_name(key.name())?,
        TSIG_FUDGE,
    )
    .map_err(|e| anyhow!("TSIG key {}: {e}", key.name()))?;
    msg.finalize(&signer, now)
        .map_err(|e| anyhow!("signing the update: {e}"))?
        .ok_or_else(|| anyhow!("signing the update gave no verifier"))
}

/// Reads the answer `raw` to the signed UPDATE `msg`: it must belong to it, carry a valid
/// TSIG signature (a server's TSIG error becomes [`Dns01Error::TsigRejected`]) and succeed.
pub(super) fn read_update_answer(
    server: SocketAddr,
    msg: &Message,
    raw: &[u8],
    verifier: &mut TSigVerifier,
    key: &TsigKey,
    zone: &Hostname,
) -> Result<Message> {
    let answer =
        Message::from_vec(raw).map_err(|e| anyhow!("malformed answer from {server}: {e}"))?;
    check_answer(server, msg, &answer)?;

    let rejected = |reason: String| Dns01Error::TsigRejected {
        server,
        key: key.name().clone(),
        reason,
    };
    // RFC 8945 §5.2: a server that cannot verify our signature answers NOTAUTH with an
    // unsigned TSIG record naming the problem, or with no TSIG at all.
    match answer.signature() {
        Some(sig) if sig.data.error.is_some() => {
            let reason = match sig.data.error {
                Some(TsigError::BadSig) => {
                    "BADSIG (the signature does not verify: wrong secret or algorithm?)".to_owned()
                }
                Some(TsigError::BadKey) => {
                    "BADKEY (the server does not know this key name and algorithm)".to_owned()
                }
                Some(TsigError::BadTime) => format!(
                    "BADTIME (our clock differs from the server's by more than {TSIG_FUDGE} s)"
                ),
                other => format!("TSIG error {other:?}"),
            };
            return Err(rejected(reason).into());
        }
        Some(_) => {}
        None if answer.metadata.response_code == ResponseCode::NotAuth => {
            return Err(rejected(
                "NOTAUTH without a signature (the key is unknown, or the server does not serve this zone)"
                    .to_owned(),
            )
            .into());
        }
        None => bail!(
            "{server} answered the update of {zone} with {} and no TSIG signature",
            rcode_name(answer.metadata.response_code)
        ),
    }
    verifier
        .verify(raw)
        .map_err(|e| rejected(format!("its answer's TSIG signature is not valid: {e}")))?;

    let rcode = answer.metadata.response_code;
    if rcode != ResponseCode::NoError {
        let hint = match rcode {
            ResponseCode::NotAuth => {
                " (the server is not primary for this zone, or the key may not update it)"
            }
            ResponseCode::Refused => " (the server's ACL does not allow this key, name or type)",
            ResponseCode::NotZone => " (the name is not in the zone)",
            ResponseCode::ServFail => " (the server failed to apply it)",
            _ => "",
        };
        return Err(Dns01Error::UpdateFailed {
            server,
            zone: zone.clone(),
            rcode: rcode_name(rcode),
            hint,
        }
        .into());
    }
    Ok(answer)
}

/// Refuses an answer that does not belong to `question`.
pub(super) fn check_answer(server: SocketAddr, question: &Message, answer: &Message) -> Result<()> {
    if answer.metadata.id != question.metadata.id
        || answer.metadata.message_type != MessageType::Response
        || answer.metadata.op_code != question.metadata.op_code
    {
        bail!("{server} sent an answer that does not match the question");
    }
    // Some servers leave the question out of error answers; when it is there it must match.
    if !answer.queries.is_empty() {
        let same = answer.queries.len() == question.queries.len()
            && answer.queries.iter().zip(&question.queries).all(|(a, q)| {
                // Name equality is case-insensitive.
                a.query_type() == q.query_type()
                    && a.query_class() == q.query_class()
                    && a.name() == q.name()
            });
        if !same {
            bail!("{server} answered a different question");
        }
    }
    Ok(())
}

/// We cannot send to this address at all from here (no route, no such address family): a
/// property of this host, not of the server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct NoRoute(String);

fn no_route(server: SocketAddr, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::{AddrNotAvailable, HostUnreachable, NetworkUnreachable};
    if matches!(
        e.kind(),
        NetworkUnreachable | HostUnreachable | AddrNotAvailable
    ) {
        NoRoute(format!("cannot send to {server}: {e}")).into()
    } else {
        anyhow!("cannot send to {server}: {e}")
    }
}

/// One UDP question, resent up to [`UDP_SENDS`] times before `deadline`; answers from other
/// addresses are impossible (the socket is connected) and ones with another ID are ignored.
async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    deadline: Instant,
) -> Result<Message> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| NoRoute(format!("cannot open a socket for {server}: {e}")))?;
    sock.connect(server)
        .await
        .map_err(|e| no_route(server, e))?;
    let start = Instant::now();
    let step = deadline.saturating_duration_since(start) / UDP_SENDS;
    let mut next_send = start;
    let mut buf = vec![0u8; 65535];
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("no answer from {server} (timed out)");
        }
        if now >= next_send {
            sock.send(bytes).await.map_err(|e| no_route(server, e))?;
            next_send += step.max(Duration::from_millis(100));
        }
        let wake = next_send.min(deadline);
        match tokio::time::timeout_at(wake, sock.recv(&mut buf)).await {
            Err(_) => continue,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                bail!("no DNS server at {server} (port unreachable)")
            }
            Ok(Err(e)) => return Err(anyhow!("receiving from {server}: {e}")),
            Ok(Ok(n)) => {
                let Ok(msg) = Message::from_vec(&buf[..n]) else {
                    tracing::debug!("ignoring a malformed UDP answer from {server}");
                    continue;
                };
                if msg.metadata.id == id {
                    return Ok(msg);
                }
            }
        }
    }
}

/// One question over TCP (2-byte length prefix, RFC 1035 §4.2.2).
async fn tcp_exchange(server: SocketAddr, bytes: &[u8], deadline: Instant) -> Result<Vec<u8>> {
    let len = u16::try_from(bytes.len()).context("DNS message too long")?;
    let exchange = async {
        let mut stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("cannot connect to {server} over TCP"))?;
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        stream.write_all(&out).await?;
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .await
            .with_context(|| format!("{server} closed the connection without answering"))?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await?;
        anyhow::Ok(answer)
    };
    tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| anyhow!("no answer from {server} over TCP (timed out)"))?
}

/// An rcode's mnemonic, as dig and server logs write it.
pub(super) fn rcode_name(rcode: ResponseCode) -> String {
    let name = match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        other => return format!("rcode {}", u16::from(other)),
    };
    name.to_owned()
}
