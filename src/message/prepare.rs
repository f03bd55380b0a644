//! Turns a parsed header plus what the caller asked for (argv recipients,
//! `-t`, `-f`, `-F`) into the finished envelope and header: alias expansion
//! of recipients in the envelope *and* in To/Cc, sender rewriting by
//! `from_policy`, and the RFC 5322 / RFC 6409 §8 fix-ups (Date,
//! Message-ID, From, Bcc removal, undisclosed-recipients).
//!
//! Pure: lookups that need configuration (aliases, revaliases, accounts)
//! go through the `Directory` trait, and the clock and host identity arrive
//! preformatted in `Context`. Fields nobody asked to change keep their raw
//! bytes.

use std::collections::HashSet;
use std::fmt;

use super::address::{self, Address, Mailbox};
use super::header::{self, Field, Header};

/// How the sender is rewritten; see `mailhop.toml(5)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FromPolicy {
    /// Envelope sender and From address become the account's address.
    #[default]
    Account,
    /// The caller's From and `-f` are used as given (only qualified).
    Keep,
    /// Unqualified addresses are qualified and revaliases apply.
    Qualify,
}

/// A revaliases entry as the directory returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevAlias {
    pub from: String,
    pub account: Option<String>,
}

/// A selected smarthost account: its name and the address it may send as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    pub name: String,
    pub from: String,
}

/// The lookups `prepare` needs, implemented by the app layer over the
/// configuration and the aliases file.
pub trait Directory {
    /// The revaliases entry for a local user name.
    fn revalias(&self, local_user: &str) -> Option<RevAlias>;
    /// The account named `name`, or else the one selected for `sender`.
    fn account(&self, name: Option<&str>, sender: &str) -> Option<AccountRef>;
    /// Alias expansion and qualification of one recipient. Returns the
    /// final, qualified addr-specs.
    fn expand(&self, mailbox: &Mailbox) -> Result<Vec<String>, String>;
    /// Whether `domain` is this host (its own names, localhost).
    fn is_local_domain(&self, domain: &str) -> bool;
}

/// What the caller asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub sender: Option<&'a str>,
    pub full_name: Option<&'a str>,
    pub extract_recipients: bool,
    pub recipients: &'a [String],
}

/// Facts about the environment, supplied by the app layer.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Login name of the invoking user.
    pub user: &'a str,
    /// The user's full name from the passwd GECOS field.
    pub gecos_name: Option<&'a str>,
    /// Qualifying domain for bare names.
    pub domain: &'a str,
    /// A ready RFC 5322 date-time for a missing Date field.
    pub date: &'a str,
    /// A ready msg-id (with angle brackets) for a missing Message-ID field.
    pub message_id: &'a str,
    pub from_policy: FromPolicy,
    pub reply_to_original: bool,
}

/// The finished envelope and header.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub header: Header,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// Final envelope recipients, deduplicated, in order of first mention.
    pub recipients: Vec<String>,
    /// For each of `recipients`, the index in [`Request::recipients`] of
    /// the argument it came from (after alias expansion), or `None` for
    /// one found by `-t`: per-recipient DSN parameters follow it.
    pub origins: Vec<Option<usize>>,
    /// The selected account, if any is configured.
    pub account: Option<String>,
    /// The address in the final From field (DKIM picks its key by it).
    pub from_address: Option<String>,
    /// Human-readable notes for `-v`: what was rewritten and why.
    pub notes: Vec<String>,
    /// How many header fields were removed (Bcc, Return-Path).
    pub removed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareError {
    /// No recipient at all: none on the command line and none found by -t.
    NoRecipients { extract: bool },
    /// A recipient (argv or header) cannot be parsed or expanded.
    BadRecipient { address: String, reason: String },
    /// The `-f` sender cannot be parsed.
    BadSender { address: String, reason: String },
    /// More envelope recipients than [`Limits::max_recipients`], counted
    /// after alias expansion and deduplication.
    TooManyRecipients { max: usize },
}

impl fmt::Display for PrepareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepareError::NoRecipients { extract: true } => write!(
                f,
                "no recipients: -t found no address in To, Cc or Bcc and none was given on the command line"
            ),
            PrepareError::NoRecipients { extract: false } => write!(
                f,
                "no recipients: give addresses as arguments, or use -t to take them from the To, Cc and Bcc fields"
            ),
            PrepareError::BadRecipient { address, reason } => {
                write!(f, "bad recipient address \"{address}\": {reason}")
            }
            PrepareError::BadSender { address, reason } => {
                write!(
                    f,
                    "bad sender address given with -f \"{address}\": {reason}"
                )
            }
            PrepareError::TooManyRecipients { max } => write!(
                f,
                "too many recipients: a message may have at most {max} \
                 (after alias expansion); split the list or send to a mailing list"
            ),
        }
    }
}

impl std::error::Error for PrepareError {}

/// Header fields whose addresses are recipients, as read by `-t`.
const RECIPIENT_FIELDS: [&str; 3] = ["To", "Cc", "Bcc"];
const RESENT_RECIPIENT_FIELDS: [&str; 3] = ["Resent-To", "Resent-Cc", "Resent-Bcc"];
/// Header fields whose addresses are rewritten through aliases.
const ALIASED_FIELDS: [&str; 4] = ["To", "Cc", "Resent-To", "Resent-Cc"];
/// Header fields whose bare local names are only qualified.
const QUALIFIED_FIELDS: [&str; 3] = ["Reply-To", "Sender", "Resent-From"];

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The default for [`Limits::max_recipients`]: Postfix's
/// `smtpd_recipient_limit`. A message to more people than this is a
/// mistake or an attack (80,000 bare names in `Cc:` once made 17,846
/// local copies), and smarthosts refuse far fewer anyway.
pub const DEFAULT_MAX_RECIPIENTS: usize = 1000;

/// Bounds on what one message may ask for; the app layer fills them in
/// from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most final envelope recipients (after alias expansion and
    /// deduplication); more is refused with
    /// [`PrepareError::TooManyRecipients`].
    pub max_recipients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recipients: DEFAULT_MAX_RECIPIENTS,
        }
    }
}

/// RFC 5321 §4.5.3.1.1-3: the longest local part, domain and path
/// (`<local@domain>`, brackets included) an SMTP server must accept.
/// Longer ones are refused at intake rather than by the smarthost later,
/// when the caller is gone.
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_PATH: usize = 256;

/// Why `addr_spec` is too long to be an SMTP path, if it is.
fn length_error(addr_spec: &str) -> Option<String> {
    let (local, domain) = match addr_spec.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (addr_spec, None),
    };
    if local.len() > MAX_LOCAL_PART {
        return Some(format!(
            "the local part is {} octets long; RFC 5321 allows at most {MAX_LOCAL_PART}",
            local.len()
        ));
    }
    if let Some(d) = domain.filter(|d| d.len() > MAX_DOMAIN) {
        return Some(format!(
            "the domain is {} octets long; RFC 5321 allows at most {MAX_DOMAIN}",
            d.len()
        ));
    }
    let path = addr_spec.len() + 2;
    (path > MAX_PATH).then(|| {
        format!(
            "the address is {path} octets long with its angle brackets; \
             RFC 5321 allows at most {MAX_PATH}"
        )
    })
}

/// The most characters of caller-supplied text an error message or a
/// `-v` note repeats: enough to find it, never a 500 KB field.
const SHOWN_CHARS: usize = 80;

/// `text`, cut to [`SHOWN_CHARS`] characters plus "…" when longer.
fn shown(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Like [`shown`] for raw field bytes, decoding only what is shown.
fn shown_bytes(bytes: &[u8]) -> String {
    let head = bytes.get(..SHOWN_CHARS * 4).unwrap_or(bytes);
    let text = shown(&String::from_utf8_lossy(head));
    if head.len() < bytes.len() && !text.ends_with('…') {
        text + "…"
    } else {
        text
    }
}

/// Indexes of the fields in the first (topmost) Resent- block, if the
/// message has one: that is where `-t` takes recipients from (RFC 5322
/// §3.6.6, as sendmail and Postfix do).
fn first_resent_block(h: &Header) -> Option<std::ops::Range<usize>> {
    let is_resent =
        |f: &Field| f.name().len() > 7 && f.name()[..7].eq_ignore_ascii_case(b"resent-");
    let fields = h.fields();
    let start = fields.iter().position(is_resent)?;
    let len = fields[start..].iter().take_while(|f| is_resent(f)).count();
    Some(start..start + len)
}

fn mailboxes(items: Vec<Address>) -> Vec<Mailbox> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Address::Mailbox(m) => out.push(m),
            Address::Group { members, .. } => out.extend(members),
        }
    }
    out
}

/// Builds a new field, folded to the usual line length.
fn folded_field(name: &str, value: &[u8]) -> Field {
    let raw = header::fold(name, value);
    match Header::parse(&raw) {
        Ok(h) if h.len() == 1 => h.fields()[0].clone(),
        // `fold` produces exactly one well-formed field; fall back to an
        // unfolded one rather than lose the value if that ever changes.
        _ => Field::new(name, value),
    }
}

struct Prep<'a, D: Directory> {
    dir: &'a D,
    ctx: &'a Context<'a>,
    notes: Vec<String>,
}

impl<D: Directory> Prep<'_, D> {
    fn is_local(&self, m: &Mailbox) -> bool {
        match &m.domain {
            None => true,
            Some(d) => self.dir.is_local_domain(d),
        }
    }

    fn qualify(&self, addr_spec: &str) -> String {
        if addr_spec.contains('@') {
            addr_spec.to_string()
        } else {
            format!("{addr_spec}@{}", self.ctx.domain)
        }
    }

    /// Rewrites the address fields named in `names` with `f`, which maps a
    /// mailbox to its replacement(s) or `None` to keep it. A field is only
    /// re-rendered when something changed; an unparseable field is kept.
    fn rewrite_fields(
        &mut self,
        header: &mut Header,
        names: &[&str],
        mut f: impl FnMut(&Self, &Mailbox) -> Option<Vec<Mailbox>>,
    ) {
        for i in 0..header.len() {
            let field = &header.fields()[i];
            let Some(name) = names.iter().find(|n| field.is(n)) else {
                continue;
            };
            let Ok(items) = address::parse_address_list(&field.unfolded_value()) else {
                continue;
            };
            let mut changed = false;
            let mut out = Vec::new();
            for item in items {
                match item {
                    Address::Mailbox(m) => match f(self, &m) {
                        Some(new) => {
                            changed = true;
                            out.extend(new.into_iter().map(Address::Mailbox));
                        }
                        None => out.push(Address::Mailbox(m)),
                    },
                    Address::Group {
                        name: gname,
                        members,
                    } => {
                        let mut new_members = Vec::new();
                        for m in members {
                            match f(self, &m) {
                                Some(new) => {
                                    changed = true;
                                    new_members.extend(new);
                                }
                                None => new_members.push(m),
                            }
                        }
                        out.push(Address::Group {
                            name: gname,
                            members: new_members,
                        });
                    }
                }
            }
            if changed {
                let old = shown_bytes(&field.unfolded_value());
                let value = address::render_list(&out);
                self.notes.push(format!(
                    "{name}: \"{old}\" rewritten to \"{}\"",
                    shown_bytes(&value)
                ));
                header.replace_at(i, folded_field(name, &value));
            }
        }
    }

    /// The replacement for one To/Cc mailbox: its alias expansion,
    /// qualified. A single result keeps the display name.
    fn expand_header_mailbox(&self, m: &Mailbox) -> Option<Vec<Mailbox>> {
        if !self.is_local(m) {
            return None;
        }
        let targets = self.dir.expand(m).ok()?;
        if targets.len() == 1 && targets[0] == m.addr_spec() {
            return None;
        }
        let mut out: Vec<Mailbox> = targets.iter().map(|t| plain_mailbox(t)).collect();
        if let [only] = out.as_mut_slice() {
            only.display_name = m.display_name.clone();
            only.comment_name = m.comment_name.clone();
        }
        Some(out)
    }

    fn qualify_mailbox(&self, m: &Mailbox) -> Option<Vec<Mailbox>> {
        if m.is_qualified() {
            return None;
        }
        let mut q = m.clone();
        q.domain = Some(self.ctx.domain.to_string());
        Some(vec![q])
    }
}

/// At most this many "recipient a -> b" notes; a summary line stands for
/// the rest, so `-v` output stays readable and bounded.
const MAX_RECIPIENT_NOTES: usize = 50;

/// The envelope recipients as they are collected: in order of first
/// mention, deduplicated case-insensitively, capped.
struct Recipients {
    list: Vec<String>,
    /// Parallel to `list`: see [`Prepared::origins`].
    origins: Vec<Option<usize>>,
    /// The argument being added, while there is one.
    origin: Option<usize>,
    seen: HashSet<String>,
    max: usize,
    /// Recipients rewritten by expansion or qualification.
    rewritten: usize,
}

impl Recipients {
    /// Adds the final addresses for one mentioned mailbox.
    fn add<D: Directory>(&mut self, p: &mut Prep<'_, D>, m: &Mailbox) -> Result<(), PrepareError> {
        let mentioned = m.addr_spec();
        let bad = |address: &str, reason: String| PrepareError::BadRecipient {
            address: shown(address),
            reason,
        };
        if let Some(why) = length_error(&mentioned) {
            return Err(bad(&mentioned, why));
        }
        let targets = if p.is_local(m) {
            p.dir.expand(m).map_err(|why| bad(&mentioned, why))?
        } else {
            vec![mentioned.clone()]
        };
        for t in targets {
            let t = p.qualify(&t);
            if let Some(why) = length_error(&t) {
                return Err(bad(&t, why));
            }
            if !self.seen.insert(t.to_ascii_lowercase()) {
                continue;
            }
            if self.list.len() >= self.max {
                return Err(PrepareError::TooManyRecipients { max: self.max });
            }
            if t != mentioned {
                self.rewritten += 1;
                if self.rewritten <= MAX_RECIPIENT_NOTES {
                    p.notes
                        .push(format!("recipient {} -> {}", shown(&mentioned), shown(&t)));
                }
            }
            self.list.push(t);
            self.origins.push(self.origin);
        }
        Ok(())
    }

    /// Adds every mailbox of one address-list value, entry by entry, so
    /// a huge list is never held whole and stops at the cap.
    fn add_list<D: Directory>(
        &mut self,
        p: &mut Prep<'_, D>,
        value: &[u8],
        source: impl Fn() -> String,
    ) -> Result<(), PrepareError> {
        let bad = |e: address::AddressError| PrepareError::BadRecipient {
            address: source(),
            reason: e.to_string(),
        };
        for item in address::addresses(value).map_err(bad)? {
            match item.map_err(bad)? {
                Address::Mailbox(m) => self.add(p, &m)?,
                Address::Group { members, .. } => {
                    for m in &members {
                        self.add(p, m)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The header fields `-t` reads recipients from: the first Resent- block's
/// Resent-To/Cc/Bcc if there are any, else To, Cc and Bcc.
fn recipient_fields(header: &Header) -> Vec<usize> {
    let fields = header.fields();
    let in_block = |range: std::ops::Range<usize>| -> Vec<usize> {
        range
            .filter(|&i| RESENT_RECIPIENT_FIELDS.iter().any(|n| fields[i].is(n)))
            .collect()
    };
    let resent = first_resent_block(header).map(in_block).unwrap_or_default();
    if !resent.is_empty() {
        return resent;
    }
    (0..fields.len())
        .filter(|&i| RECIPIENT_FIELDS.iter().any(|n| fields[i].is(n)))
        .collect()
}

/// Step 1 of `prepare`: the envelope recipients from the command line and,
/// with `-t`, the header; expanded, qualified, deduplicated and capped.
/// Memory stays linear in the input: nothing is copied per address.
fn collect_recipients<D: Directory>(
    p: &mut Prep<'_, D>,
    header: &Header,
    req: &Request<'_>,
    limits: &Limits,
) -> Result<(Vec<String>, Vec<Option<usize>>), PrepareError> {
    let mut acc = Recipients {
        list: Vec::new(),
        origins: Vec::new(),
        origin: None,
        seen: HashSet::new(),
        max: limits.max_recipients,
        rewritten: 0,
    };
    for (i, arg) in req.recipients.iter().enumerate() {
        acc.origin = Some(i);
        acc.add_list(p, arg.as_bytes(), || shown(arg))?;
    }
    acc.origin = None;
    if req.extract_recipients {
        for i in recipient_fields(header) {
            let field = &header.fields()[i];
            let value = field.unfolded_value();
            let source = || format!("{}: {}", lossy(field.name()), shown_bytes(&value));
            acc.add_list(p, &value, source)?;
        }
    }
    if acc.rewritten > MAX_RECIPIENT_NOTES {
        p.notes.push(format!(
            "... and {} more recipients rewritten",
            acc.rewritten - MAX_RECIPIENT_NOTES
        ));
    }
    if acc.list.is_empty() {
        return Err(PrepareError::NoRecipients {
            extract: req.extract_recipients,
        });
    }
    Ok((acc.list, acc.origins))
}

/// A mailbox for a bare addr-spec we produced ourselves.
fn plain_mailbox(addr_spec: &str) -> Mailbox {
    match address::parse_mailbox(addr_spec.as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            let (local, domain) = match addr_spec.rsplit_once('@') {
                Some((l, d)) => (l.to_string(), Some(d.to_string())),
                None => (addr_spec.to_string(), None),
            };
            Mailbox {
                display_name: None,
                comment_name: None,
                local_part: local,
                domain,
            }
        }
    }
}

/// Finishes envelope and header with the default [`Limits`]. See the
/// module comment.
pub fn prepare<D: Directory>(
    header: Header,
    req: &Request<'_>,
    ctx: &Context<'_>,
    dir: &D,
) -> Result<Prepared, PrepareError> {
    prepare_with_limits(header, req, ctx, dir, &Limits::default())
}

/// Finishes envelope and header within `limits`. See the module comment.
pub fn prepare_with_limits<D: Directory>(
    mut header: Header,
    req: &Request<'_>,
    ctx: &Context<'_>,
    dir: &D,
    limits: &Limits,
) -> Result<Prepared, PrepareError> {
    let mut p = Prep {
        dir,
        ctx,
        notes: Vec::new(),
    };

    // 1. Recipients: argv, plus the header fields with -t.
    let (recipients, origins) = collect_recipients(&mut p, &header, req, limits)?;

    // 2. To/Cc carry the real addresses too, not only the envelope: cron's
    // "To: root" must arrive as the aliased address.
    p.rewrite_fields(&mut header, &ALIASED_FIELDS, |p, m| {
        p.expand_header_mailbox(m)
    });
    p.rewrite_fields(&mut header, &QUALIFIED_FIELDS, |p, m| p.qualify_mailbox(m));

    // 3. Fields that must not leave the machine.
    let mut removed = 0;
    for name in ["Bcc", "Resent-Bcc", "Return-Path"] {
        removed += header.remove_all(name);
    }

    // 4. Sender and From.
    let (sender, account, from_address) = rewrite_sender(&mut p, &mut header, req)?;

    // 5. Missing fields (RFC 6409 §8.1-8.3).
    if !header.contains("Date") {
        header.push(Field::new("Date", ctx.date.as_bytes()));
        p.notes.push("added Date".into());
    }
    if !header.contains("Message-ID") {
        header.push(Field::new("Message-ID", ctx.message_id.as_bytes()));
        p.notes.push("added Message-ID".into());
    }
    if !header.contains("To") && !header.contains("Cc") {
        header.push(Field::new("To", b"undisclosed-recipients:;"));
    }

    Ok(Prepared {
        header,
        sender,
        recipients,
        origins,
        account,
        from_address,
        notes: p.notes,
        removed,
    })
}

/// Who a message is sent as, before any header is touched: the sender
/// as given (`-f`, else the invoking user), its revaliases entry, the
/// account that entry or the sender selects, and the resulting address.
struct SenderChoice {
    sender_box: Mailbox,
    null_sender: bool,
    account: Option<AccountRef>,
    send_as: String,
}

fn choose_sender<D: Directory>(
    p: &Prep<'_, D>,
    sender: Option<&str>,
) -> Result<SenderChoice, PrepareError> {
    let ctx = p.ctx;
    let dir = p.dir;

    // The sender as given: -f, else the invoking user.
    let given: Option<Mailbox> = match sender {
        Some(s) if address::is_null_sender(s) => None,
        Some(s) => {
            let bad = |reason: String| PrepareError::BadSender {
                address: shown(s),
                reason,
            };
            let m = address::parse_mailbox(s.as_bytes()).map_err(|e| bad(e.to_string()))?;
            if let Some(why) = length_error(&m.addr_spec()) {
                return Err(bad(why));
            }
            Some(m)
        }
        None => Some(plain_mailbox(ctx.user)),
    };
    let null_sender = given.is_none();
    let user_box = plain_mailbox(ctx.user);
    let sender_box = given.unwrap_or_else(|| user_box.clone());

    // revaliases: the sender's local name if it is local, else the invoking
    // user. `keep` leaves the caller's choice alone.
    let rev = if ctx.from_policy == FromPolicy::Keep {
        None
    } else {
        let by_sender = if p.is_local(&sender_box) {
            dir.revalias(&sender_box.local_part.to_ascii_lowercase())
        } else {
            None
        };
        // An explicit remote -f is the caller's deliberate choice; only a
        // local or absent one falls back to the invoking user's entry.
        if sender.is_some() && !p.is_local(&sender_box) {
            by_sender
        } else {
            by_sender.or_else(|| dir.revalias(&ctx.user.to_ascii_lowercase()))
        }
    };

    let qualified_sender = p.qualify(&sender_box.addr_spec());
    let account = dir.account(
        rev.as_ref().and_then(|r| r.account.as_deref()),
        rev.as_ref()
            .map_or(qualified_sender.as_str(), |r| r.from.as_str()),
    );

    // The address this message is sent as.
    let send_as: String = match (ctx.from_policy, &rev, &account) {
        (FromPolicy::Keep, _, _) => qualified_sender.clone(),
        (_, Some(r), _) => r.from.clone(),
        (FromPolicy::Account, None, Some(a)) => a.from.clone(),
        (_, None, _) => qualified_sender.clone(),
    };
    Ok(SenderChoice {
        sender_box,
        null_sender,
        account,
        send_as,
    })
}

/// The account a message from `sender` (`-f`; `None` for the invoking
/// user) goes through, chosen exactly as `prepare` chooses it: revaliases
/// first, then the sender. For `sendmail -bv`.
pub fn account_for_sender<D: Directory>(
    ctx: &Context<'_>,
    dir: &D,
    sender: Option<&str>,
) -> Result<Option<AccountRef>, PrepareError> {
    let p = Prep {
        dir,
        ctx,
        notes: Vec::new(),
    };
    Ok(choose_sender(&p, sender)?.account)
}

/// Works out the envelope sender, the account and the From field, per
/// `from_policy`. Returns (envelope sender, account name, From address).
fn rewrite_sender<D: Directory>(
    p: &mut Prep<'_, D>,
    header: &mut Header,
    req: &Request<'_>,
) -> Result<(String, Option<String>, Option<String>), PrepareError> {
    let ctx = p.ctx;
    let SenderChoice {
        sender_box,
        null_sender,
        account,
        send_as,
    } = choose_sender(p, req.sender)?;
    let envelope = if null_sender {
        String::new()
    } else {
        send_as.clone()
    };
    // Qualifying can push a local part that was just short enough over.
    if let Some(why) = length_error(&envelope) {
        return Err(PrepareError::BadSender {
            address: shown(&envelope),
            reason: why,
        });
    }
    if !null_sender && envelope != sender_box.addr_spec() {
        p.notes.push(format!(
            "envelope sender {} -> {envelope}",
            sender_box.addr_spec()
        ));
    }

    // The From field.
    let from_address;
    match header.position("From") {
        None => {
            let name = req
                .full_name
                .or(ctx.gecos_name)
                .map(str::trim)
                .filter(|n| !n.is_empty());
            let mut m = plain_mailbox(&send_as);
            m.display_name = name.map(header::encode_phrase);
            header.push(folded_field("From", &m.render()));
            p.notes
                .push(format!("added From: {}", shown_bytes(&m.render())));
            from_address = Some(send_as);
        }
        Some(i) => {
            let field = &header.fields()[i];
            let parsed = address::parse_address_list(&field.unfolded_value()).map(mailboxes);
            match ctx.from_policy {
                FromPolicy::Account if account.is_some() => {
                    let first = parsed.as_ref().ok().and_then(|v| v.first().cloned());
                    let original = first.as_ref().map(|m| p.qualify(&m.addr_spec()));
                    if original.as_deref().map(str::to_ascii_lowercase)
                        == Some(send_as.to_ascii_lowercase())
                        && parsed.as_ref().is_ok_and(|v| v.len() == 1)
                    {
                        from_address = Some(send_as);
                    } else {
                        let mut m = plain_mailbox(&send_as);
                        if let Some(f) = &first {
                            m.display_name = f
                                .display_name
                                .clone()
                                .or_else(|| f.comment_name.as_deref().map(header::encode_phrase));
                        }
                        let old = shown_bytes(&field.unfolded_value());
                        header.replace_at(i, folded_field("From", &m.render()));
                        p.notes.push(format!(
                            "From: \"{old}\" rewritten to \"{}\"",
                            shown_bytes(&m.render())
                        ));
                        // Replies should still reach the real author, but
                        // only if that was a full address outside this host:
                        // a Reply-To of root@localhost helps nobody.
                        if let Some(f) = first.filter(|f| f.is_qualified() && !p.is_local(f))
                            && ctx.reply_to_original
                            && !header.contains("Reply-To")
                        {
                            let mut reply = f.clone();
                            if reply.display_name.is_none() {
                                reply.display_name =
                                    reply.comment_name.take().map(|c| header::encode_phrase(&c));
                            }
                            header.push(folded_field("Reply-To", &reply.render()));
                            p.notes
                                .push(format!("added Reply-To: {}", shown_bytes(&reply.render())));
                        }
                        from_address = Some(send_as);
                    }
                }
                FromPolicy::Keep => {
                    p.rewrite_fields(header, &["From"], |p, m| p.qualify_mailbox(m));
                    from_address = parsed
                        .ok()
                        .and_then(|v| v.first().map(|m| p.qualify(&m.addr_spec())));
                }
                // qualify, or account with no account configured.
                _ => {
                    p.rewrite_fields(header, &["From"], |p, m| {
                        if p.is_local(m)
                            && let Some(r) = p.dir.revalias(&m.local_part.to_ascii_lowercase())
                        {
                            let mut n = plain_mailbox(&r.from);
                            n.display_name = m.display_name.clone();
                            n.comment_name = m.comment_name.clone();
                            return Some(vec![n]);
                        }
                        p.qualify_mailbox(m)
                    });
                    from_address = header
                        .get("From")
                        .and_then(|f| address::parse_address_list(&f.unfolded_value()).ok())
                        .and_then(|v| mailboxes(v).first().map(|m| m.addr_spec()));
                }
            }
        }
    }
    Ok((envelope, account.map(|a| a.name), from_address))
}

/// What the body needs before it may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// Send as it is.
    AsIs,
    /// A single-part text body with lines over 998 octets: re-encode it as
    /// quoted-printable (RFC 5322 §2.1.1 forbids such lines on the wire).
    QuotedPrintable,
    /// Long lines in a body we cannot safely re-encode (multipart, message/*,
    /// or already base64/quoted-printable): refuse rather than send it raw.
    Refuse(String),
}

/// The RFC 5322 line length limit, without CRLF.
pub const MAX_LINE: usize = 998;

fn content_type(header: &Header) -> Option<String> {
    header.get("Content-Type").map(|f| {
        let v = lossy(&f.unfolded_value());
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

fn transfer_encoding(header: &Header) -> Option<String> {
    header
        .get("Content-Transfer-Encoding")
        .map(|f| lossy(&f.unfolded_value()).trim().to_ascii_lowercase())
}

/// Decides what the body needs, from the header and the longest body line.
pub fn plan_body(header: &Header, longest_line: usize) -> BodyPlan {
    if longest_line <= MAX_LINE {
        return BodyPlan::AsIs;
    }
    let ct = content_type(header);
    let text = ct.as_deref().is_none_or(|t| t.starts_with("text/"));
    if !text {
        return BodyPlan::Refuse(format!(
            "a body line is {longest_line} octets long (the limit is {MAX_LINE}) and the body is {}, \
             which mailhop does not re-encode; have the sending program encode it (quoted-printable or base64)",
            ct.unwrap_or_default()
        ));
    }
    match transfer_encoding(header).as_deref() {
        None | Some("7bit") | Some("8bit") | Some("binary") => BodyPlan::QuotedPrintable,
        Some(other) => BodyPlan::Refuse(format!(
            "a body line is {longest_line} octets long (the limit is {MAX_LINE}) but the body claims \
             Content-Transfer-Encoding: {other}, so it is malformed; fix the sending program"
        )),
    }
}

/// Header changes that go with re-encoding the body as quoted-printable.
pub fn apply_quoted_printable(header: &mut Header, body_is_utf8: bool) {
    let cte = Field::new("Content-Transfer-Encoding", b"quoted-printable");
    match header.position("Content-Transfer-Encoding") {
        Some(i) => header.replace_at(i, cte),
        None => header.push(cte),
    }
    add_mime_basics(header, body_is_utf8);
}

/// An 8-bit body with no MIME labelling at all (cron output, shell
/// one-liners): label it so readers can display it. Only when the body is
/// valid UTF-8; anything else is left alone rather than mislabelled.
pub fn label_eight_bit(header: &mut Header, body_is_utf8: bool) -> bool {
    if !body_is_utf8 || header.contains("MIME-Version") || header.contains("Content-Type") {
        return false;
    }
    if !header.contains("Content-Transfer-Encoding") {
        header.push(Field::new("Content-Transfer-Encoding", b"8bit"));
    }
    add_mime_basics(header, true);
    true
}

fn add_mime_basics(header: &mut Header, utf8: bool) {
    if !header.contains("MIME-Version") {
        header.push(Field::new("MIME-Version", b"1.0"));
    }
    if !header.contains("Content-Type") {
        let ct: &[u8] = if utf8 {
            b"text/plain; charset=utf-8"
        } else {
            b"text/plain; charset=unknown-8bit"
        };
        header.push(Field::new("Content-Type", ct));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Dir {
        aliases: HashMap<&'static str, Vec<&'static str>>,
        rev: HashMap<&'static str, RevAlias>,
        accounts: Vec<AccountRef>,
    }

    impl Dir {
        fn new() -> Dir {
            Dir {
                aliases: HashMap::new(),
                rev: HashMap::new(),
                accounts: Vec::new(),
            }
        }
        fn with_account(mut self) -> Dir {
            self.accounts.push(AccountRef {
                name: "office365".into(),
                from: "shop@example.com".into(),
            });
            self
        }
    }

    impl Directory for Dir {
        fn revalias(&self, u: &str) -> Option<RevAlias> {
            self.rev.get(u).cloned()
        }
        fn account(&self, name: Option<&str>, _sender: &str) -> Option<AccountRef> {
            match name {
                Some(n) => self.accounts.iter().find(|a| a.name == n).cloned(),
                None => self.accounts.first().cloned(),
            }
        }
        fn expand(&self, m: &Mailbox) -> Result<Vec<String>, String> {
            if m.local_part == "loop" {
                return Err("alias loop: loop -> loop2 -> loop".into());
            }
            Ok(match self.aliases.get(m.local_part.as_str()) {
                Some(t) => t.iter().map(|s| s.to_string()).collect(),
                None => vec![m.addr_spec()],
            })
        }
        fn is_local_domain(&self, d: &str) -> bool {
            d.eq_ignore_ascii_case("host.example.com") || d.eq_ignore_ascii_case("localhost")
        }
    }

    fn ctx(policy: FromPolicy) -> Context<'static> {
        Context {
            user: "root",
            gecos_name: Some("root"),
            domain: "example.com",
            date: "Sun, 22 Nov 2026 10:00:00 +0000",
            message_id: "<1.2@host.example.com>",
            from_policy: policy,
            reply_to_original: true,
        }
    }

    fn hdr(s: &str) -> Header {
        Header::parse(s.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    fn text(h: &Header) -> String {
        let mut v = Vec::new();
        h.write_to(&mut v);
        String::from_utf8(v).unwrap().replace("\r\n", "\n")
    }

    fn run(h: &str, req: Request<'_>, policy: FromPolicy, dir: &Dir) -> Prepared {
        prepare(hdr(h), &req, &ctx(policy), dir).unwrap()
    }

    #[test]
    fn debian_cron_to_root_is_aliased_in_envelope_and_header() {
        let mut dir = Dir::new().with_account();
        dir.aliases.insert("root", vec!["admin@example.net"]);
        let rcpt = vec!["root".to_string()];
        let p = run(
            "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@h> ls\n",
            Request {
                recipients: &rcpt,
                full_name: Some("CronDaemon"),
                ..Request::default()
            },
            FromPolicy::Account,
            &dir,
        );
        assert_eq!(p.recipients, vec!["admin@example.net"]);
        assert_eq!(p.sender, "shop@example.com");
        assert_eq!(p.account.as_deref(), Some("office365"));
        let t = text(&p.header);
        assert!(t.contains("From: Cron Daemon <shop@example.com>\n"), "{t}");
        assert!(t.contains("To: admin@example.net\n"), "{t}");
        assert!(t.contains("Subject: Cron <root@h> ls\n"), "{t}");
        assert!(t.contains("Date: Sun, 22 Nov 2026 10:00:00 +0000\n"), "{t}");
        assert!(t.contains("Message-ID: <1.2@host.example.com>\n"), "{t}");
        // root was local: no Reply-To pointing back at this machine.
        assert!(!t.contains("Reply-To"), "{t}");
    }

    #[test]
    fn account_policy_moves_external_from_to_reply_to() {
        let dir = Dir::new().with_account();
        let rcpt = vec!["b@y.org".to_string()];
        let p = run(
            "From: \"Jane Doe\" <jane@gmail.com>\nTo: b@y.org\n",
            Request {
                recipients: &rcpt,
                ..Request::default()
            },
            FromPolicy::Account,
            &dir,
        );
        let t = text(&p.header);
        assert!(t.contains("From: \"Jane Doe\" <shop@example.com>\n"), "{t}");
        assert!(
            t.contains("Reply-To: \"Jane Doe\" <jane@gmail.com>\n"),
            "{t}"
        );
        assert_eq!(p.from_address.as_deref(), Some("shop@example.com"));
    }

    #[test]
    fn existing_reply_to_is_not_overwritten() {
        let dir = Dir::new().with_account();
        let rcpt = vec!["b@y.org".to_string()];
        let p = run(
            "From: jane@gmail.com\nReply-To: list@z.org\n",
            Request {
                recipients: &rcpt,
                ..Request::default()
            },
            FromPolicy::Account,
            &dir,
        );
        let t = text(&p.header);
        assert_eq!(t.matches("Reply-To").count(), 1, "{t}");
        assert!(
            t.contains("From: <shop@example.com>\n") || t.contains("From: shop@example.com\n"),
            "{t}"
        );
    }

    #[test]
    fn keep_policy_respects_caller_but_qualifies() {
        let dir = Dir::new().with_account();
        let rcpt = vec!["root".to_string()];
        let p = run(
            "From: fail2ban\n",
            Request {
                sender: Some("fail2ban"),
                recipients: &rcpt,
                ..Request::default()
            },
            FromPolicy::Keep,
            &dir,
        );
        assert_eq!(p.sender, "fail2ban@example.com");
        let t = text(&p.header);
        assert!(t.contains("From: fail2ban@example.com\n"), "{t}");
        assert!(t.contains("To: undisclosed-recipients:;\n"), "{t}");
    }

    #[test]
    fn qualify_policy_applies_revaliases() {
        let mut dir = Dir::new();
        dir.rev.insert(
            "root",
            RevAlias {
                from: "ops@example.com".into(),
                account: None,
            },
        );
        let rcpt = vec!["a@b.org".to_string()];
        let p = run(
            "From: root\nTo: a@b.org\n",
            Request {
                recipients: &rcpt,
                ..Request::default()
            },
            FromPolicy::Qualify,
            &dir,
        );
        assert_eq!(p.sender, "ops@example.com");
        assert!(text(&p.header).contains("From: ops@example.com\n"));
    }

    #[test]
    fn missing_from_uses_full_name_and_sender() {
        let dir = Dir::new();
        let rcpt = vec!["a@b.org".to_string()];
        let p = run(
            "Subject: hi\n",
            Request {
                recipients: &rcpt,
                full_name: Some("Jörg Müller"),
                sender: Some("jm@example.org"),
                ..Request::default()
            },
            FromPolicy::Account,
            &dir,
        );
        let t = text(&p.header);
        assert!(t.contains("From: =?UTF-8?B?"), "{t}");
        assert!(t.contains("<jm@example.org>"), "{t}");
        assert_eq!(p.sender, "jm@example.org");
    }

    #[test]
    fn null_sender_is_kept() {
        let dir = Dir::new().with_account();
        let rcpt = vec!["a@b.org".to_string()];
        let p = run(
            "",
            Request {
                sender: Some("<>"),
                recipients: &rcpt,
                ..Request::default()
            },
            FromPolicy::Account,
            &dir,
        );
        assert_eq!(p.sender, "");
        assert!(text(&p.header).contains("From: root <shop@example.com>\n"));
    }

    #[test]
    fn extract_recipients_with_argv_added_and_bcc_removed() {
        let dir = Dir::new();
        let rcpt = vec!["extra@z.org".to_string()];
        let p = run(
            "To: a@x.org, \"B, B\" <b@x.org>\nCc: c@x.org\nBcc: secret@x.org\nReturn-Path: <x@y>\n",
            Request {
                extract_recipients: true,
                recipients: &rcpt,
                ..Request::default()
            },
            FromPolicy::Qualify,
            &dir,
        );
        assert_eq!(
            p.recipients,
            vec![
                "extra@z.org",
                "a@x.org",
                "b@x.org",
                "c@x.org",
                "secret@x.org"
            ]
        );
        let t = text(&p.header);
        assert!(!t.contains("Bcc") && !t.contains("Return-Path"), "{t}");
        assert!(
            t.contains("To: a@x.org, \"B, B\" <b@x.org>\n"),
            "unchanged To is byte-exact: {t}"
        );
        assert_eq!(p.removed, 2);
    }

    #[test]
    fn extract_uses_first_resent_block() {
        let dir = Dir::new();
        let p = run(
            "Resent-From: r@x.org\nResent-To: new@x.org\nFrom: a@x.org\nTo: old@x.org\n",
            Request {
                extract_recipients: true,
                ..Request::default()
            },
            FromPolicy::Keep,
            &dir,
        );
        assert_eq!(p.recipients, vec!["new@x.org"]);
    }

    #[test]
    fn multiple_alias_targets_dedupe_and_rewrite_header() {
        let mut dir = Dir::new();
        dir.aliases.insert("ops", vec!["a@x.org", "b@x.org"]);
        dir.aliases.insert("root", vec!["a@x.org"]);
        let p = run(
            "To: Ops Team <ops>, root@host.example.com\n",
            Request {
                extract_recipients: true,
                ..Request::default()
            },
            FromPolicy::Keep,
            &dir,
        );
        assert_eq!(p.recipients, vec!["a@x.org", "b@x.org"]);
        assert!(
            text(&p.header).contains("To: a@x.org, b@x.org, a@x.org\n"),
            "{}",
            text(&p.header)
        );
    }

    #[test]
    fn each_recipient_knows_the_argument_it_came_from() {
        let mut dir = Dir::new();
        dir.aliases.insert("ops", vec!["a@x.org", "b@x.org"]);
        let args = vec!["ops".to_string(), "c@x.org, a@x.org".to_string()];
        let p = run(
            "To: d@x.org, c@x.org\n",
            Request {
                recipients: &args,
                extract_recipients: true,
                ..Request::default()
            },
            FromPolicy::Keep,
            &dir,
        );
        assert_eq!(p.recipients, ["a@x.org", "b@x.org", "c@x.org", "d@x.org"]);
        assert_eq!(p.origins, [Some(0), Some(0), Some(1), None]);
    }

    #[test]
    fn errors() {
        let dir = Dir::new();
        let none: Vec<String> = vec![];
        let e = prepare(
            hdr("Subject: x\n"),
            &Request {
                recipients: &none,
                ..Request::default()
            },
            &ctx(FromPolicy::Keep),
            &dir,
        )
        .unwrap_err();
        assert_eq!(e, PrepareError::NoRecipients { extract: false });
        let bad = vec!["<unterminated".to_string()];
        let e = prepare(
            hdr(""),
            &Request {
                recipients: &bad,
                ..Request::default()
            },
            &ctx(FromPolicy::Keep),
            &dir,
        )
        .unwrap_err();
        assert!(matches!(e, PrepareError::BadRecipient { .. }), "{e:?}");
        let lp = vec!["loop".to_string()];
        let e = prepare(
            hdr(""),
            &Request {
                recipients: &lp,
                ..Request::default()
            },
            &ctx(FromPolicy::Keep),
            &dir,
        )
        .unwrap_err();
        assert!(e.to_string().contains("loop -> loop2"), "{e}");
    }

    fn extract(h: &str, limits: &Limits) -> Result<Prepared, PrepareError> {
        let header = Header::parse(h.as_bytes()).unwrap();
        let req = Request {
            extract_recipients: true,
            ..Request::default()
        };
        prepare_with_limits(header, &req, &ctx(FromPolicy::Keep), &Dir::new(), limits)
    }

    /// `n` distinct remote addresses, comma separated: 979 KB at 100,000.
    fn many(n: usize) -> String {
        (0..n)
            .map(|i| format!("u{i}@example.org"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn hundred_thousand_addresses_with_t_are_linear() {
        // Each address used to copy the whole field (24 GB for this one);
        // now the field is read once, entry by entry.
        let h = format!("From: a@x.org\r\nTo: {}\r\n", many(100_000));
        assert!(h.len() > 1_500_000, "{}", h.len());
        let roomy = Limits {
            max_recipients: 200_000,
        };
        let p = extract(&h, &roomy).unwrap();
        assert_eq!(p.recipients.len(), 100_000);
        assert_eq!(p.recipients[99_999], "u99999@example.org");
        // With the default cap it is a refusal, and a short one.
        let e = extract(&h, &Limits::default()).unwrap_err();
        assert_eq!(e, PrepareError::TooManyRecipients { max: 1000 });
        assert!(e.to_string().contains("at most 1000"), "{e}");
    }

    #[test]
    fn recipient_cap_counts_final_distinct_recipients() {
        let limits = Limits { max_recipients: 3 };
        let ok = extract("To: a@x, b@x, c@x, A@X, b@x\r\n", &limits).unwrap();
        assert_eq!(ok.recipients, vec!["a@x", "b@x", "c@x"]);
        let e = extract("To: a@x, b@x\r\nCc: c@x, d@x\r\n", &limits).unwrap_err();
        assert_eq!(e, PrepareError::TooManyRecipients { max: 3 });
        // Alias expansion counts: one name for four people is four.
        let mut dir = Dir::new();
        dir.aliases.insert("team", vec!["a@x", "b@x", "c@x", "d@x"]);
        let rcpt = vec!["team".to_string()];
        let req = Request {
            recipients: &rcpt,
            ..Request::default()
        };
        let e = prepare_with_limits(hdr(""), &req, &ctx(FromPolicy::Keep), &dir, &limits);
        assert_eq!(e.unwrap_err(), PrepareError::TooManyRecipients { max: 3 });
        // 80,000 bare names in Cc: refused, not 80,000 local copies.
        let names: Vec<String> = (0..80_000).map(|i| format!("n{i}")).collect();
        let h = format!("Cc: {}\r\n", names.join(", "));
        let e = extract(&h, &Limits::default()).unwrap_err();
        assert_eq!(e, PrepareError::TooManyRecipients { max: 1000 });
        assert_eq!(DEFAULT_MAX_RECIPIENTS, 1000);
    }

    fn argv_error(rcpt: &str) -> Option<PrepareError> {
        let rcpt = vec![rcpt.to_string()];
        let req = Request {
            recipients: &rcpt,
            ..Request::default()
        };
        prepare(hdr(""), &req, &ctx(FromPolicy::Keep), &Dir::new()).err()
    }

    #[test]
    fn rfc5321_length_limits() {
        let l64 = "l".repeat(64);
        let d = |n: usize| format!("{}.org", "d".repeat(n - 4));
        assert_eq!(argv_error(&format!("{l64}@x.org")), None);
        let e = argv_error(&format!("{l64}l@x.org")).unwrap();
        assert!(e.to_string().contains("local part is 65 octets"), "{e}");
        // Octets, not characters.
        let e = argv_error(&format!("{}@x.org", "ö".repeat(33))).unwrap();
        assert!(e.to_string().contains("66 octets"), "{e}");
        let e = argv_error(&format!("a@{}", d(256))).unwrap();
        assert!(e.to_string().contains("domain is 256 octets"), "{e}");
        // 64 + 1 + 189 = 254, which with <> is the 256 limit.
        assert_eq!(argv_error(&format!("{l64}@{}", d(189))), None);
        let e = argv_error(&format!("{l64}@{}", d(190))).unwrap();
        assert!(e.to_string().contains("257 octets"), "{e}");
        // A bare name qualifies; the limit applies to the result too.
        let e = argv_error(&l64.repeat(2)).unwrap();
        assert!(matches!(e, PrepareError::BadRecipient { .. }), "{e}");

        // From the header with -t.
        let e = extract(&format!("To: ok@x, {l64}l@x.org\r\n"), &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("local part is 65"), "{e}");

        // And -f.
        let rcpt = vec!["a@b.org".to_string()];
        let long_sender = format!("{l64}l@x.org");
        let req = Request {
            sender: Some(&long_sender),
            recipients: &rcpt,
            ..Request::default()
        };
        let e = prepare(hdr(""), &req, &ctx(FromPolicy::Keep), &Dir::new()).unwrap_err();
        assert!(
            matches!(&e, PrepareError::BadSender { reason, .. } if reason.contains("65 octets")),
            "{e}"
        );
    }

    #[test]
    fn errors_and_notes_show_bounded_excerpts() {
        // An unterminated quote in a 500 KB To: field.
        let h = format!("To: \"{}\r\n", "x".repeat(500_000));
        let e = extract(&h, &Limits::default()).unwrap_err();
        let text = e.to_string();
        assert!(text.len() < 400, "{} bytes: {}", text.len(), &text[..400]);
        assert!(text.contains("unterminated quoted string"), "{text}");
        assert!(text.contains('…'), "{text}");
        // Long argv recipient and long -f sender.
        let e = argv_error(&format!("<{}", "y".repeat(100_000))).unwrap();
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
        // A long header rewritten with -v notes: each note is short.
        let mut dir = Dir::new();
        dir.aliases.insert("root", vec!["admin@example.net"]);
        let h = format!("To: root, {}\r\n", many(900));
        let req = Request {
            extract_recipients: true,
            ..Request::default()
        };
        let header = Header::parse(h.as_bytes()).unwrap();
        let p = prepare(header, &req, &ctx(FromPolicy::Keep), &dir).unwrap();
        assert!(
            p.notes.iter().any(|n| n.starts_with("To: ")),
            "{:?}",
            p.notes
        );
        for n in &p.notes {
            assert!(n.len() < 400, "{n}");
        }
        // So are the recipient notes, and their number.
        let names: Vec<String> = (0..500).map(|i| format!("n{i}")).collect();
        let p = extract(&format!("To: {}\r\n", names.join(", ")), &Limits::default()).unwrap();
        assert!(
            p.notes.len() <= MAX_RECIPIENT_NOTES + 5,
            "{}",
            p.notes.len()
        );
        assert!(
            p.notes.iter().any(|n| n.contains("450 more recipients")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn shown_cuts_at_characters() {
        assert_eq!(shown("short"), "short");
        let cut = shown(&"ä".repeat(100));
        assert_eq!(cut.chars().count(), SHOWN_CHARS + 1);
        assert!(cut.ends_with('…'));
        let bytes = "é".repeat(1000);
        assert_eq!(
            shown_bytes(bytes.as_bytes()).chars().count(),
            SHOWN_CHARS + 1
        );
        assert_eq!(shown_bytes(b"abc"), "abc");
    }

    #[test]
    fn body_plans() {
        let plain = hdr("Subject: x\n");
        assert_eq!(plan_body(&plain, 998), BodyPlan::AsIs);
        assert_eq!(plan_body(&plain, 999), BodyPlan::QuotedPrintable);
        let html = hdr("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n");
        assert_eq!(plan_body(&html, 5000), BodyPlan::QuotedPrintable);
        let multi = hdr("Content-Type: multipart/mixed; boundary=x\n");
        assert!(matches!(plan_body(&multi, 5000), BodyPlan::Refuse(_)));
        let b64 = hdr("Content-Type: text/plain\nContent-Transfer-Encoding: base64\n");
        assert!(matches!(plan_body(&b64, 5000), BodyPlan::Refuse(_)));
    }

    #[test]
    fn qp_and_8bit_labelling() {
        let mut h = hdr("Subject: x\nContent-Transfer-Encoding: 8bit\n");
        apply_quoted_printable(&mut h, true);
        let t = text(&h);
        assert!(t.contains("Content-Transfer-Encoding: quoted-printable\n"));
        assert!(t.contains("MIME-Version: 1.0\n"));
        assert!(t.contains("Content-Type: text/plain; charset=utf-8\n"));
        let mut h = hdr("Subject: x\n");
        assert!(label_eight_bit(&mut h, true));
        assert!(text(&h).contains("Content-Transfer-Encoding: 8bit\n"));
        let mut h = hdr("Content-Type: text/plain; charset=latin1\n");
        assert!(!label_eight_bit(&mut h, true));
    }
}
