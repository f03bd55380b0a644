//! The server side of RFC 5321 as a state machine with no I/O: a command
//! line goes in, a [`Step`] (the reply, and what the driver must do next)
//! comes out. What needs the outside world (is this recipient acceptable,
//! is this password right) is asked of a [`Policy`]. The message itself
//! is read by the driver (see `data`), and handed back as an [`Envelope`].

use base64::Engine;
use zeroize::Zeroizing;

use super::command::{self, Command, MailFrom, Mechanism, RcptTo};
use super::reply::Reply;

/// Who the client is, as the listener decided from its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Loopback, the `-bs` caller, or an allowed network.
    Trusted,
    /// Elsewhere: may send only after AUTH.
    NeedsAuth,
    /// Elsewhere, and no AUTH is configured: refused at the greeting.
    Denied,
}

/// What a session may do; fixed for its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Our name, in the greeting and the EHLO reply.
    pub hostname: String,
    /// RCPTs per transaction (Postfix's smtpd_recipient_limit).
    pub max_recipients: usize,
    /// The SIZE we announce and enforce, in octets.
    pub max_size: u64,
    /// Bad commands before we hang up (Postfix's smtpd_hard_error_limit).
    pub max_errors: u32,
    /// STARTTLS can be offered (a certificate is configured).
    pub tls_available: bool,
    /// AUTH can be offered (a password file is configured); only after TLS.
    pub auth_available: bool,
    pub access: Access,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hostname: "localhost".into(),
            max_recipients: crate::message::prepare::DEFAULT_MAX_RECIPIENTS,
            max_size: DEFAULT_MAX_SIZE,
            max_errors: 20,
            tls_available: false,
            auth_available: false,
            access: Access::Trusted,
        }
    }
}

/// Default message size limit: 35 MiB, what Microsoft 365 and most
/// smarthosts take; a bigger message would only bounce later.
pub const DEFAULT_MAX_SIZE: u64 = 35 * 1024 * 1024;

/// The decisions the state machine cannot make alone.
pub trait Policy {
    /// Whether `rcpt` is acceptable (aliases, address rules); the error is
    /// the reply (a 5xx or 4xx).
    fn check_recipient(&mut self, sender: &str, rcpt: &str) -> Result<(), Reply>;
    /// Whether `user`'s password is `password`.
    fn check_login(&mut self, user: &str, password: &[u8]) -> bool;
}

/// What the driver does after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// Send the 354, then read the message and call [`Server::data_done`].
    Data(Reply),
    /// Send the 220, then start TLS and call [`Server::tls_started`]; bytes
    /// the client sent before the handshake must be discarded.
    StartTls(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
}

/// One accepted transaction, ready for the send pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub mail: MailFrom,
    pub recipients: Vec<RcptTo>,
}

/// Where an AUTH exchange stands.
#[derive(Debug)]
enum AuthStep {
    /// `AUTH PLAIN` without an initial response: the next line is it.
    Plain,
    /// `AUTH LOGIN`: the next line is the user name.
    LoginUser,
    /// `AUTH LOGIN`: the next line is the password of `user`.
    LoginPassword(String),
}

/// Session state.
#[derive(Debug)]
pub struct Server {
    settings: Settings,
    /// `Some(true)` after EHLO, `Some(false)` after HELO.
    greeted: Option<bool>,
    tx: Option<Envelope>,
    in_data: bool,
    tls: bool,
    user: Option<String>,
    auth: Option<AuthStep>,
    errors: u32,
}

/// A command line as the driver read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line without its CRLF.
    Text(&'a [u8]),
    /// Longer than the limit; the rest was discarded.
    TooLong,
}

impl Server {
    pub fn new(settings: Settings) -> Server {
        Server {
            settings,
            greeted: None,
            tx: None,
            in_data: false,
            tls: false,
            user: None,
            auth: None,
            errors: 0,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Who authenticated, if anyone.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The first thing the server says.
    pub fn greeting(&self) -> Step {
        let host = &self.settings.hostname;
        match self.settings.access {
            Access::Denied => Step::Close(Reply::new(
                554,
                "5.7.1",
                format!("{host} Access denied: this address may not send mail here"),
            )),
            _ => Step::Reply(Reply::new(220, "", format!("{host} ESMTP mailhop"))),
        }
    }

    /// One command line in, one step out.
    pub fn line(&mut self, line: Line<'_>, policy: &mut dyn Policy) -> Step {
        if self.in_data {
            // The driver must finish DATA first; treat as a protocol bug.
            return Step::Close(Reply::new(421, "4.3.0", "Internal error: DATA in progress"));
        }
        let step = match (line, self.auth.take()) {
            (Line::TooLong, Some(_)) => Step::Reply(Reply::new(501, "5.5.2", "Line too long")),
            (Line::TooLong, None) => Step::Reply(Reply::new(500, "5.5.2", "Error: line too long")),
            (Line::Text(t), Some(a)) => self.auth_response(a, t, policy),
            (Line::Text(t), None) => match command::parse(t) {
                Ok(c) => self.command(c, policy),
                Err(r) => Step::Reply(r),
            },
        };
        self.count_errors(step)
    }

    /// Hard errors add up; past the limit the client is hung up on, so a
    /// stream of garbage cannot hold a connection forever.
    fn count_errors(&mut self, step: Step) -> Step {
        let failed = matches!(&step, Step::Reply(r) if r.code >= 500);
        if failed {
            self.errors = self.errors.saturating_add(1);
            if self.errors >= self.settings.max_errors {
                return Step::Close(Reply::new(
                    421,
                    "4.7.0",
                    format!("{} Error: too many errors", self.settings.hostname),
                ));
            }
        }
        step
    }

    fn command(&mut self, c: Command, policy: &mut dyn Policy) -> Step {
        let reply = match c {
            Command::Ehlo(_) => return Step::Reply(self.ehlo(true)),
            Command::Helo(_) => return Step::Reply(self.ehlo(false)),
            Command::Mail(m) => self.mail(m),
            Command::Rcpt(r) => self.rcpt(r, policy),
            Command::Data => return self.data(),
            Command::Rset => {
                self.tx = None;
                Reply::new(250, "2.0.0", "Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0", "Ok"),
            Command::Quit => return Step::Close(Reply::new(221, "2.0.0", "Bye")),
            Command::Vrfy => Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Command::Expn => Reply::new(502, "5.5.1", "Error: EXPN not implemented"),
            Command::Help => Reply::new(214, "2.0.0", "See RFC 5321; mailhop(8), SMTP SERVER"),
            Command::StartTls => return self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, policy),
        };
        Step::Reply(reply)
    }

    fn ehlo(&mut self, extended: bool) -> Reply {
        self.tx = None;
        self.greeted = Some(extended);
        let host = &self.settings.hostname;
        if !extended {
            return Reply::new(250, "", host.clone());
        }
        let mut r = Reply::new(250, "", host.clone());
        r.lines = vec![
            "PIPELINING".into(),
            format!("SIZE {}", self.settings.max_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "DSN".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.settings.tls_available && !self.tls {
            r.lines.push("STARTTLS".into());
        }
        if self.settings.auth_available && self.tls && self.user.is_none() {
            r.lines.push("AUTH PLAIN LOGIN".into());
        }
        r
    }

    fn mail(&mut self, m: MailFrom) -> Reply {
        if self.greeted.is_none() {
            return Reply::new(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.tx.is_some() {
            return Reply::new(503, "5.5.1", "Error: nested MAIL command");
        }
        if self.settings.access != Access::Trusted && self.user.is_none() {
            return Reply::new(530, "5.7.0", "Authentication required");
        }
        if m.size.is_some_and(|s| s > self.settings.max_size) {
            return Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed limit of {} octets",
                    self.settings.max_size
                ),
            );
        }
        self.tx = Some(Envelope {
            mail: m,
            recipients: Vec::new(),
        });
        Reply::new(250, "2.1.0", "Ok")
    }

    fn rcpt(&mut self, r: RcptTo, policy: &mut dyn Policy) -> Reply {
        let max = self.settings.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return Reply::new(503, "5.5.1", "Error: need MAIL command");
        };
        if tx.recipients.len() >= max {
            return Reply::new(452, "4.5.3", "Error: too many recipients");
        }
        if let Err(reply) = policy.check_recipient(&tx.mail.address, &r.address) {
            return reply;
        }
        tx.recipients.push(r);
        Reply::new(250, "2.1.5", "Ok")
    }

    fn data(&mut self) -> Step {
        let reply = match &self.tx {
            None => Reply::new(503, "5.5.1", "Error: need RCPT command"),
            Some(tx) if tx.recipients.is_empty() => {
                Reply::new(554, "5.5.1", "Error: no valid recipients")
            }
            Some(_) => {
                self.in_data = true;
                return Step::Data(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
            }
        };
        Step::Reply(reply)
    }

    /// The message was read (or abandoned): the transaction ends either way
    /// and its envelope goes to the caller, who replies.
    pub fn data_done(&mut self) -> Option<Envelope> {
        self.in_data = false;
        self.tx.take()
    }

    fn starttls(&mut self) -> Step {
        let reply = if !self.settings.tls_available {
            Reply::new(502, "5.5.1", "Error: command not implemented")
        } else if self.tls {
            Reply::new(503, "5.5.1", "Error: TLS already active")
        } else {
            return Step::StartTls(Reply::new(220, "2.0.0", "Ready to start TLS"));
        };
        Step::Reply(reply)
    }

    /// TLS is up: RFC 3207 4.2, the client starts over with EHLO.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = None;
        self.tx = None;
    }

    fn auth(&mut self, mech: Mechanism, initial: Option<String>, policy: &mut dyn Policy) -> Reply {
        if !self.settings.auth_available {
            return Reply::new(502, "5.5.1", "Error: authentication not enabled");
        }
        if !self.tls {
            return Reply::new(538, "5.7.11", "Encryption required: use STARTTLS first");
        }
        if self.greeted.is_none() {
            return Reply::new(503, "5.5.1", "Error: send EHLO first");
        }
        if self.user.is_some() {
            return Reply::new(503, "5.5.1", "Error: already authenticated");
        }
        if self.tx.is_some() {
            return Reply::new(503, "5.5.1", "Error: MAIL transaction in progress");
        }
        match (mech, initial) {
            // `=` is an empty initial response (RFC 4954 4).
            (Mechanism::Plain, Some(i)) if i == "=" => self.plain("", policy),
            (Mechanism::Plain, Some(i)) => self.plain(&i, policy),
            (Mechanism::Plain, None) => {
                self.auth = Some(AuthStep::Plain);
                Reply::new(334, "", "")
            }
            (Mechanism::Login, Some(user)) => match decode(&user) {
                Some(u) => self.ask_password(u),
                None => bad_base64(),
            },
            (Mechanism::Login, None) => {
                self.auth = Some(AuthStep::LoginUser);
                Reply::new(334, "", "VXNlcm5hbWU6")
            }
        }
    }

    fn ask_password(&mut self, user: Zeroizing<Vec<u8>>) -> Reply {
        match String::from_utf8(user.to_vec()) {
            Ok(u) => {
                self.auth = Some(AuthStep::LoginPassword(u));
                Reply::new(334, "", "UGFzc3dvcmQ6")
            }
            Err(_) => bad_base64(),
        }
    }

    fn auth_response(&mut self, step: AuthStep, line: &[u8], policy: &mut dyn Policy) -> Step {
        if line == b"*" {
            return Step::Reply(Reply::new(501, "5.7.0", "Authentication cancelled"));
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return Step::Reply(bad_base64());
        };
        let reply = match step {
            AuthStep::Plain => self.plain(text, policy),
            AuthStep::LoginUser => match decode(text) {
                Some(u) => self.ask_password(u),
                None => bad_base64(),
            },
            AuthStep::LoginPassword(user) => match decode(text) {
                Some(p) => self.login(&user, &p, policy),
                None => bad_base64(),
            },
        };
        Step::Reply(reply)
    }

    /// RFC 4616: `authzid NUL authcid NUL password`; an authzid other than
    /// the authcid is refused (we do not let one user act as another).
    fn plain(&mut self, b64: &str, policy: &mut dyn Policy) -> Reply {
        let Some(raw) = decode(b64) else {
            return bad_base64();
        };
        let mut parts = raw.splitn(3, |&b| b == 0);
        let (Some(authz), Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next())
        else {
            return Reply::new(501, "5.5.2", "Malformed PLAIN response");
        };
        let Ok(user) = std::str::from_utf8(user) else {
            return Reply::new(501, "5.5.2", "Malformed PLAIN response");
        };
        if !authz.is_empty() && authz != user.as_bytes() {
            return Reply::new(535, "5.7.8", "Authentication credentials invalid");
        }
        self.login(user, pass, policy)
    }

    fn login(&mut self, user: &str, pass: &[u8], policy: &mut dyn Policy) -> Reply {
        if !user.is_empty() && policy.check_login(user, pass) {
            self.user = Some(user.to_string());
            Reply::new(235, "2.7.0", "Authentication successful")
        } else {
            Reply::new(535, "5.7.8", "Authentication credentials invalid")
        }
    }
}

fn decode(b64: &str) -> Option<Zeroizing<Vec<u8>>> {
    if b64.len() > 2048 {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .map(Zeroizing::new)
}

fn bad_base64() -> Reply {
    Reply::new(501, "5.5.2", "Invalid base64 data")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]
mod tests;
