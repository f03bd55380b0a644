//! A stub resolver: one question at a time to the system's recursive
//! servers (or one given server), over UDP, and again over TCP when the
//! answer comes back truncated (RFC 1035 §4.2, RFC 7766).
//!
//! Only `setup --discover`, `check` and `dkim check` ask DNS anything, a
//! handful of absolute names each, so this needs none of what a general
//! resolver adds: no cache, no search list, no server statistics, and no
//! async runtime. hickory-proto encodes and decodes the messages. (Using
//! hickory-resolver brought in a tokio runtime and, through its server
//! statistics, libm: 320 KiB of resident memory in every process, the send
//! path's included, for code that only these commands run.)
//!
//! Every question is bounded: `timeout` per server and attempt, optionally
//! `within` a total per lookup, and at most 64 KiB read for an answer.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

pub use hickory_proto::rr::RecordType as Type;

/// The UDP payload size offered (EDNS0), the value DNS Flag Day 2020
/// settled on: large enough for a 2048-bit DKIM key, small enough not to
/// fragment.
const UDP_PAYLOAD: u16 = 1232;
/// resolv.conf's defaults (resolv.conf(5)).
const DEFAULT_ATTEMPTS: u32 = 2;
/// The most servers of resolv.conf used, as glibc (MAXNS).
const MAX_SERVERS: usize = 3;

/// What a TXT lookup found, as `dkim check`, `check` and discovery report
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txt {
    /// The records, each one's strings joined.
    Found(Vec<String>),
    /// No such name, or no TXT record there.
    None,
    /// No answer (timeout, SERVFAIL, ...): the reason.
    Failed(String),
}

impl From<Result<Vec<String>, Error>> for Txt {
    fn from(result: Result<Vec<String>, Error>) -> Txt {
        match result {
            Ok(records) if records.is_empty() => Txt::None,
            Ok(records) => Txt::Found(records),
            Err(e) => Txt::Failed(e.to_string()),
        }
    }
}

/// Where questions go, and how long each may take.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    /// Per server and attempt.
    timeout: Duration,
    attempts: u32,
    /// Per lookup, all servers and attempts together, if bounded.
    within: Option<Duration>,
}

/// Why a question got no answer.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// No server answered in time.
    Timeout,
    /// A server could not be reached (connection refused, no route).
    Unreachable(io::Error),
    /// A server answered with this error code (SERVFAIL, REFUSED, ...).
    Server(ResponseCode),
    /// An answer that does not decode, or a name that cannot be asked.
    Malformed(String),
    /// /etc/resolv.conf names no usable server.
    NoServers(String),
}

impl Error {
    /// Whether the servers did not answer at all (as opposed to answering
    /// with an error): asking them again soon would wait just as long.
    pub fn is_unanswered(&self) -> bool {
        matches!(self.kind, Kind::Timeout | Kind::Unreachable(_))
    }

    fn new(kind: Kind) -> Error {
        Error { kind }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Timeout => write!(f, "request timed out"),
            Kind::Unreachable(e) => write!(f, "no connection to the DNS server: {e}"),
            Kind::Server(code) => write!(f, "the DNS server answered {code}"),
            Kind::Malformed(why) => write!(f, "{why}"),
            Kind::NoServers(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Unreachable(e) => Some(e),
            _ => None,
        }
    }
}

impl Resolver {
    /// `nameserver` alone when given (`--nameserver`), else the system's.
    pub fn new(nameserver: Option<SocketAddr>, timeout: Duration) -> Result<Resolver, Error> {
        match nameserver {
            Some(addr) => Ok(Resolver::with_server(addr, timeout)),
            None => Resolver::system(timeout),
        }
    }

    /// The servers of /etc/resolv.conf, with its `attempts` (each question
    /// gets `timeout` per server and attempt, whatever its `timeout` says:
    /// the caller's bound is the one the user sees documented).
    pub fn system(timeout: Duration) -> Result<Resolver, Error> {
        let text = std::fs::read("/etc/resolv.conf").map_err(|e| {
            Error::new(Kind::NoServers(format!(
                "cannot read /etc/resolv.conf: {e}"
            )))
        })?;
        Ok(Resolver::from_resolv_conf(&text, timeout))
    }

    fn from_resolv_conf(text: &[u8], timeout: Duration) -> Resolver {
        let (conf, _) = resolv_conf::Config::parse_with_errors(text);
        let servers: Vec<SocketAddr> = conf
            .nameservers
            .iter()
            .take(MAX_SERVERS)
            .map(server_address)
            .collect();
        // As glibc: no nameserver line means the local one.
        let servers = if servers.is_empty() {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)]
        } else {
            servers
        };
        Resolver {
            servers,
            timeout,
            attempts: conf.attempts.clamp(1, 5),
            within: None,
        }
    }

    /// Every question to `server` alone.
    pub fn with_server(server: SocketAddr, timeout: Duration) -> Resolver {
        Resolver {
            servers: vec![server],
            timeout,
            attempts: DEFAULT_ATTEMPTS,
            within: None,
        }
    }

    /// Asks each server once per attempt, not more.
    pub fn attempts(mut self, attempts: u32) -> Resolver {
        self.attempts = attempts.max(1);
        self
    }

    /// Ends each lookup (`lookup_ip`: both of its questions) within `total`,
    /// however many servers and attempts that leaves untried.
    pub fn within(mut self, total: Duration) -> Resolver {
        self.within = Some(total);
        self
    }

    fn lookup_deadline(&self) -> Option<Instant> {
        self.within.map(|total| Instant::now() + total)
    }

    /// The records of type `rtype` at `name` (taken as absolute). No such
    /// name and no such record are both an empty list: nobody here tells
    /// them apart.
    pub fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, Error> {
        self.lookup_until(name, rtype, self.lookup_deadline())
    }

    fn lookup_until(
        &self,
        name: &str,
        rtype: RecordType,
        deadline: Option<Instant>,
    ) -> Result<Vec<RData>, Error> {
        let mut qname = Name::from_ascii(name.trim_end_matches('.'))
            .map_err(|e| Error::new(Kind::Malformed(format!("cannot ask for {name:?}: {e}"))))?;
        qname.set_fqdn(true);
        let mut last = Error::new(Kind::Timeout);
        for _ in 0..self.attempts {
            for server in &self.servers {
                let timeout = match deadline.map(remaining) {
                    None => self.timeout,
                    Some(Ok(left)) => self.timeout.min(left),
                    Some(Err(_)) => return Err(last),
                };
                match ask(*server, &qname, rtype, timeout) {
                    Ok(answer) => return Ok(answer),
                    // A server that answered with an error says more than
                    // one that did not answer: that is what is reported.
                    Err(e) if e.is_unanswered() && !last.is_unanswered() => {}
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// The addresses of `host`, IPv4 first. An AAAA question that fails
    /// does not lose the IPv4 addresses found.
    pub fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, Error> {
        let deadline = self.lookup_deadline();
        let mut out: Vec<IpAddr> = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let answer = match self.lookup_until(host, rtype, deadline) {
                Ok(answer) => answer,
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            for data in answer {
                match data {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The TXT records at `name`, each one's strings joined (as DKIM, SPF
    /// and DMARC read them).
    pub fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .lookup(name, RecordType::TXT)?
            .iter()
            .filter_map(|data| match data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }
}

/// A resolv.conf server on port 53, a link-local IPv6 one with its
/// interface (`fe80::1%eth0`), by name or number.
fn server_address(ip: &resolv_conf::ScopedIp) -> SocketAddr {
    match ip {
        resolv_conf::ScopedIp::V6(v6, Some(scope)) => {
            let id = scope
                .parse::<u32>()
                .ok()
                .or_else(|| nix::net::if_::if_nametoindex(scope.as_str()).ok())
                .unwrap_or(0);
            SocketAddr::V6(std::net::SocketAddrV6::new(*v6, 53, 0, id))
        }
        other => SocketAddr::new(IpAddr::from(other), 53),
    }
}

/// One question to one server: UDP, then TCP if the answer was truncated.
/// A server that does not understand EDNS answers FORMERR; it is asked
/// once more without it (RFC 6891 §7), within the same time.
fn ask(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Vec<RData>, Error> {
    let deadline = Instant::now() + timeout;
    let mut answer = exchange(server, &question(name, rtype, true), deadline)?;
    if answer.metadata.response_code == ResponseCode::FormErr {
        answer = exchange(server, &question(name, rtype, false), deadline)?;
    }
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer
            .answers
            .into_iter()
            .filter(|r| r.record_type() == rtype)
            .map(|r| r.data)
            .collect()),
        code => Err(Error::new(Kind::Server(code))),
    }
}

/// A recursive query for `name`, offering a larger UDP payload if `edns`.
fn question(name: &Name, rtype: RecordType, edns: bool) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), rtype));
    if edns {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        query.set_edns(edns);
    }
    query
}

/// Sends `query` and returns the answer, over TCP if UDP's was truncated.
fn exchange(server: SocketAddr, query: &Message, deadline: Instant) -> Result<Message, Error> {
    let bytes = query
        .to_vec()
        .map_err(|e| Error::new(Kind::Malformed(format!("cannot encode the question: {e}"))))?;
    let answer = over_udp(server, &bytes, query, deadline)?;
    if answer.metadata.truncation {
        // The server did answer: a failure now is not "no answer".
        return over_tcp(server, &bytes, query, deadline).map_err(|e| {
            Error::new(Kind::Malformed(format!(
                "the answer was truncated, and asking again over TCP failed: {e}"
            )))
        });
    }
    Ok(answer)
}

/// Whether `answer` answers `query`: its id, a response, the same question.
/// Anything else arriving on the socket (a late answer to an earlier try, a
/// spoofing attempt) is ignored.
fn answers(answer: &Message, query: &Message) -> bool {
    // A server that does not parse the question (FORMERR) may not echo it.
    let question = answer.queries == query.queries
        || (answer.queries.is_empty() && answer.metadata.response_code == ResponseCode::FormErr);
    answer.metadata.id == query.metadata.id
        && answer.metadata.message_type == MessageType::Response
        && question
}

fn remaining(deadline: Instant) -> Result<Duration, Error> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(Error::new(Kind::Timeout))
}

fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::new(Kind::Timeout),
        _ => Error::new(Kind::Unreachable(e)),
    }
}

fn over_udp(
    server: SocketAddr,
    bytes: &[u8],
    query: &Message,
    deadline: Instant,
) -> Result<Message, Error> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(io_error)?;
    // Connected: the kernel drops datagrams from anyone but the server.
    socket.connect(server).map_err(io_error)?;
    socket.send(bytes).map_err(io_error)?;
    // As large as a datagram can be: a server that ignores the payload size
    // offered would otherwise have its answer cut short by the kernel.
    let mut buf = vec![0u8; 65_535];
    loop {
        socket
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(io_error)?;
        let n = socket.recv(&mut buf).map_err(io_error)?;
        if let Ok(answer) = Message::from_vec(&buf[..n])
            && answers(&answer, query)
        {
            return Ok(answer);
        }
    }
}

fn over_tcp(
    server: SocketAddr,
    bytes: &[u8],
    query: &Message,
    deadline: Instant,
) -> Result<Message, Error> {
    let mut stream = TcpStream::connect_timeout(&server, remaining(deadline)?).map_err(io_error)?;
    let len = u16::try_from(bytes.len())
        .map_err(|_| Error::new(Kind::Malformed("the question is too long".into())))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(io_error)?;
    stream.write_all(&framed).map_err(io_error)?;
    let mut len = [0u8; 2];
    read_full(&mut stream, &mut len, deadline)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_full(&mut stream, &mut buf, deadline)?;
    let answer = Message::from_vec(&buf).map_err(|e| {
        Error::new(Kind::Malformed(format!(
            "the DNS server's answer does not decode: {e}"
        )))
    })?;
    if answers(&answer, query) {
        Ok(answer)
    } else {
        Err(Error::new(Kind::Malformed(
            "the DNS server answered another question".into(),
        )))
    }
}

/// Fills `buf` before `deadline`: a server that trickles its answer byte
/// by byte still has only the question's time.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), Error> {
    let mut got = 0;
    while got < buf.len() {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(io_error)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(Error::new(Kind::Unreachable(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ))));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, TXT};
    use std::net::TcpListener;
    use std::thread;

    const SHORT: Duration = Duration::from_secs(5);

    type Reply = Box<dyn Fn(&Message) -> Vec<Vec<u8>> + Send>;

    /// A UDP server answering each question with the datagrams
    /// `reply(question)` gives (none: it stays silent), for as many
    /// questions as `replies` has entries.
    fn udp_server(replies: Vec<Reply>) -> (SocketAddr, thread::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for reply in replies {
                let (n, from) = socket.recv_from(&mut buf).unwrap();
                let question = Message::from_vec(&buf[..n]).unwrap();
                for datagram in reply(&question) {
                    socket.send_to(&datagram, from).unwrap();
                }
            }
        });
        (addr, handle)
    }

    fn response(question: &Message) -> Message {
        let mut m = Message::response(question.metadata.id, question.metadata.op_code);
        m.add_queries(question.queries.clone());
        m
    }

    fn txt_answer(question: &Message, text: &[&str]) -> Message {
        let mut m = response(question);
        let name = question.queries[0].name().clone();
        m.add_answer(Record::from_rdata(
            name,
            60,
            RData::TXT(TXT::new(text.iter().map(|s| s.to_string()).collect())),
        ));
        m
    }

    #[test]
    fn a_txt_record_is_its_strings_joined() {
        let (addr, h) = udp_server(vec![Box::new(|q| {
            vec![txt_answer(q, &["v=spf1 ", "-all"]).to_vec().unwrap()]
        })]);
        let r = Resolver::with_server(addr, SHORT);
        assert_eq!(r.txt("example.com").unwrap(), vec!["v=spf1 -all"]);
        h.join().unwrap();
    }

    #[test]
    fn records_of_other_types_are_left_out() {
        let (addr, h) = udp_server(vec![Box::new(|q| {
            let mut m = txt_answer(q, &["text"]);
            m.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(A::new(192, 0, 2, 1)),
            ));
            vec![m.to_vec().unwrap()]
        })]);
        let r = Resolver::with_server(addr, SHORT);
        assert_eq!(r.txt("example.com.").unwrap(), vec!["text"]);
        h.join().unwrap();
    }

    #[test]
    fn nxdomain_is_no_records() {
        let (addr, h) = udp_server(vec![Box::new(|q| {
            let mut m = response(q);
            m.metadata.response_code = ResponseCode::NXDomain;
            vec![m.to_vec().unwrap()]
        })]);
        let r = Resolver::with_server(addr, SHORT);
        assert!(
            r.lookup("nosuch.example", RecordType::MX)
                .unwrap()
                .is_empty()
        );
        h.join().unwrap();
    }

    #[test]
    fn servfail_is_an_error_that_was_answered() {
        let fail = |q: &Message| {
            let mut m = response(q);
            m.metadata.response_code = ResponseCode::ServFail;
            vec![m.to_vec().unwrap()]
        };
        let (addr, h) = udp_server(vec![Box::new(fail), Box::new(fail)]);
        // Two attempts, both answered SERVFAIL.
        let e = Resolver::with_server(addr, SHORT)
            .txt("example.com")
            .unwrap_err();
        assert!(!e.is_unanswered());
        assert!(e.to_string().starts_with("the DNS server answered"), "{e}");
        h.join().unwrap();
    }

    #[test]
    fn a_datagram_that_answers_something_else_is_ignored() {
        let (addr, h) = udp_server(vec![Box::new(|q| {
            let mut forged = txt_answer(q, &["forged"]);
            forged.metadata.id = q.metadata.id.wrapping_add(1);
            let mut other = q.clone();
            other.queries[0].set_name(Name::from_ascii("other.example.").unwrap());
            let other = txt_answer(&other, &["other question"]);
            let right = txt_answer(q, &["right"]);
            vec![
                forged.to_vec().unwrap(),
                other.to_vec().unwrap(),
                b"junk".to_vec(),
                right.to_vec().unwrap(),
            ]
        })]);
        let r = Resolver::with_server(addr, SHORT);
        assert_eq!(r.txt("example.com").unwrap(), vec!["right"]);
        h.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out_and_counts_as_unanswered() {
        let (addr, h) = udp_server(vec![Box::new(|_| Vec::new())]);
        let e = Resolver::with_server(addr, Duration::from_millis(200))
            .attempts(1)
            .txt("example.com")
            .unwrap_err();
        assert!(e.is_unanswered());
        assert_eq!(e.to_string(), "request timed out");
        h.join().unwrap();
    }

    #[test]
    fn the_second_attempt_gets_the_answer() {
        let (addr, h) = udp_server(vec![
            Box::new(|_| Vec::new()),
            Box::new(|q| vec![txt_answer(q, &["late"]).to_vec().unwrap()]),
        ]);
        let r = Resolver::with_server(addr, Duration::from_millis(300)).attempts(2);
        assert_eq!(r.txt("example.com").unwrap(), vec!["late"]);
        h.join().unwrap();
    }

    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        // The UDP server must share the TCP port: bind UDP to it.
        let udp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let long = "k".repeat(3000);
        let long2 = long.clone();
        let h = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, from) = udp.recv_from(&mut buf).unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut m = response(&q);
            m.metadata.truncation = true;
            udp.send_to(&m.to_vec().unwrap(), from).unwrap();
            let (mut s, _) = tcp.accept().unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut body).unwrap();
            let q = Message::from_vec(&body).unwrap();
            let chunks: Vec<&str> = (0..long2.len())
                .step_by(255)
                .map(|i| &long2[i..(i + 255).min(long2.len())])
                .collect();
            let bytes = txt_answer(&q, &chunks).to_vec().unwrap();
            s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
            s.write_all(&bytes).unwrap();
        });
        let r = Resolver::with_server(addr, SHORT);
        assert_eq!(r.txt("example.com").unwrap(), vec![long]);
        h.join().unwrap();
    }

    #[test]
    fn a_server_without_edns_is_asked_again_without_it() {
        let (addr, h) = udp_server(vec![
            Box::new(|q| {
                assert!(q.edns.is_some(), "the first question offers EDNS");
                // As old servers do: no question echoed.
                let m =
                    Message::error_msg(q.metadata.id, q.metadata.op_code, ResponseCode::FormErr);
                vec![m.to_vec().unwrap()]
            }),
            Box::new(|q| {
                assert!(q.edns.is_none(), "the second does not");
                vec![txt_answer(q, &["plain"]).to_vec().unwrap()]
            }),
        ]);
        let r = Resolver::with_server(addr, SHORT).attempts(1);
        assert_eq!(r.txt("example.com").unwrap(), vec!["plain"]);
        h.join().unwrap();
    }

    #[test]
    fn an_answered_error_is_reported_over_a_later_timeout() {
        let (addr, h) = udp_server(vec![
            Box::new(|q| {
                let mut m = response(q);
                m.metadata.response_code = ResponseCode::ServFail;
                vec![m.to_vec().unwrap()]
            }),
            Box::new(|_| Vec::new()),
        ]);
        let e = Resolver::with_server(addr, Duration::from_millis(300))
            .attempts(2)
            .txt("example.com")
            .unwrap_err();
        assert!(!e.is_unanswered(), "{e}");
        h.join().unwrap();
    }

    #[test]
    fn a_failed_aaaa_question_keeps_the_ipv4_addresses() {
        let (addr, h) = udp_server(vec![
            Box::new(|q| {
                let mut m = response(q);
                m.add_answer(Record::from_rdata(
                    q.queries[0].name().clone(),
                    60,
                    RData::A(A::new(192, 0, 2, 7)),
                ));
                vec![m.to_vec().unwrap()]
            }),
            Box::new(|_| Vec::new()),
        ]);
        let r = Resolver::with_server(addr, Duration::from_millis(300)).attempts(1);
        assert_eq!(
            r.lookup_ip("mail.example.com").unwrap(),
            vec![IpAddr::from([192, 0, 2, 7])]
        );
        h.join().unwrap();
    }

    #[test]
    fn no_question_is_sent_once_the_total_bound_is_spent() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = Resolver::with_server(server.local_addr().unwrap(), Duration::from_secs(10))
            .attempts(3)
            .within(Duration::ZERO)
            .txt("example.com")
            .unwrap_err();
        assert!(e.is_unanswered(), "{e}");
        server.set_nonblocking(true).unwrap();
        let got = server.recv(&mut [0u8; 512]);
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn resolv_conf_servers_and_attempts() {
        let r = Resolver::from_resolv_conf(
            b"# comment\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver fe80::1%7\noptions attempts:3\n",
            SHORT,
        );
        assert_eq!(
            r.servers,
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap(),
                "[fe80::1%7]:53".parse().unwrap(),
            ]
        );
        assert_eq!(r.attempts, 3);
        let none = Resolver::from_resolv_conf(b"search example.com\n", SHORT);
        assert_eq!(
            none.servers,
            vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn a_name_that_cannot_be_asked_is_refused_before_sending() {
        let r = Resolver::with_server("127.0.0.1:9".parse().unwrap(), SHORT);
        let e = r.lookup(&"a".repeat(300), RecordType::TXT).unwrap_err();
        assert!(!e.is_unanswered(), "{e}");
    }
}
