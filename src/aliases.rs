//! The aliases(5) table: parsing the file format that Postfix and sendmail
//! read, the in-memory map (file entries plus `[aliases] map` entries from
//! the configuration), and recursive expansion of one envelope recipient.
//!
//! This module is pure on purpose: it gets bytes and a display name for
//! them, and returns values, errors and warning strings. Reading the file,
//! deciding which domains are local, and printing are the callers' jobs, so
//! every rule here can be unit-tested without a filesystem.
//!
//! mailhop is a relay, not a local delivery agent, so the aliases(5) targets
//! that run programs (`|cmd`), append to files (`/path`) or read other files
//! (`:include:`) are skipped with a warning instead of being honoured:
//! executing commands named in a file is exactly the kind of privilege a
//! small relay should not have.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// How many aliases may be nested inside one another while expanding one
/// address. sendmail and Postfix both stop somewhere near here; a legitimate
/// table never comes close, so hitting it means a mistake.
pub const MAX_DEPTH: usize = 32;

/// How many targets one expansion may visit in total. Nesting alone is
/// bounded by [`MAX_DEPTH`], but aliases that each list the next one twice
/// grow exponentially (2^32 visits) without ever looping; this cap turns
/// that hang into an error.
pub const MAX_STEPS: usize = 100_000;

/// A UTF-8 byte order mark, which some editors put at the start of files.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where an alias was defined: the display name of its source and the
/// 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The source's display name (normally the aliases file's path).
    pub source: String,
    /// The 1-based line number.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

/// Everything that can go wrong with an aliases table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasError {
    /// A line is not valid UTF-8.
    NotUtf8 {
        /// The offending line.
        at: Location,
    },
    /// A line breaks the aliases(5) syntax; `message` says how and what to do.
    Syntax {
        /// The offending line.
        at: Location,
        /// The alias being defined, when the name could be read.
        alias: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Aliases refer to each other in a cycle (not counting a name that
    /// lists itself, which is a legitimate terminal).
    Loop {
        /// Where the alias that closes the cycle is defined; `None` for an
        /// alias from the configuration.
        at: Option<Location>,
        /// The alias that closes the cycle.
        alias: String,
        /// The names expanded, ending with the repeated one.
        chain: Vec<String>,
    },
    /// Aliases are nested more than [`MAX_DEPTH`] deep.
    TooDeep {
        /// Where the innermost alias is defined, if known.
        at: Option<Location>,
        /// The innermost alias.
        alias: String,
        /// The names expanded so far, ending with the one that was refused.
        chain: Vec<String>,
    },
    /// One expansion visited more than [`MAX_STEPS`] targets.
    TooLarge {
        /// Where the expanded alias is defined, if known.
        at: Option<Location>,
        /// The alias (or address) being expanded.
        alias: String,
    },
    /// An empty address was given to [`Aliases::expand`].
    EmptyAddress,
}

/// `file:line: alias "x"` or, for aliases from the configuration,
/// `alias "x" (from the configuration)`, so every message names its alias.
fn place(at: Option<&Location>, alias: &str) -> String {
    match at {
        Some(at) => format!("{at}: alias {alias:?}"),
        None => format!("alias {alias:?} (from the configuration)"),
    }
}

impl fmt::Display for AliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasError::NotUtf8 { at } => write!(
                f,
                "{at}: line is not valid UTF-8; save the aliases file as UTF-8 \
                 (addresses should be plain ASCII)"
            ),
            AliasError::Syntax { at, alias, message } => match alias {
                Some(alias) => write!(f, "{}: {message}", place(Some(at), alias)),
                None => write!(f, "{at}: {message}"),
            },
            AliasError::Loop { at, alias, chain } => write!(
                f,
                "{}: alias loop {}; remove one of these references \
                 (an alias may list its own name to mean the local mailbox)",
                place(at.as_ref(), alias),
                chain.join(" -> ")
            ),
            AliasError::TooDeep { at, alias, chain } => write!(
                f,
                "{}: aliases nested more than {MAX_DEPTH} deep ({}); \
                 point the outer aliases at the final addresses directly",
                place(at.as_ref(), alias),
                chain.join(" -> ")
            ),
            AliasError::TooLarge { at, alias } => write!(
                f,
                "{}: expansion visits more than {MAX_STEPS} targets \
                 (nested aliases list each other many times); simplify the nesting",
                place(at.as_ref(), alias)
            ),
            AliasError::EmptyAddress => write!(
                f,
                "cannot expand an empty address; give a local name or user@domain"
            ),
        }
    }
}

impl std::error::Error for AliasError {}

/// One alias: its targets as written, and where it came from.
#[derive(Debug, Clone)]
struct Entry {
    targets: Vec<String>,
    /// `None` for entries inserted from the configuration.
    origin: Option<Location>,
}

/// The alias table: lowercase name -> targets, in the order written.
///
/// Targets are stored as normalised by the parser: outer quotes removed,
/// `Name <addr>` reduced to `addr`, comments dropped. A leading backslash
/// (`\bob`) is kept, because it means "the local mailbox, do not look this
/// up again" (sendmail semantics) and [`Aliases::expand`] honours it.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    entries: BTreeMap<String, Entry>,
}

/// The result of parsing an aliases file: the table and every warning, each
/// already formatted as `file:line: alias "x": ...` for the caller to print.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The aliases defined.
    pub aliases: Aliases,
    /// Problems that did not stop parsing (skipped targets, duplicates).
    pub warnings: Vec<String>,
}

/// The result of expanding one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// Final recipients, deduplicated case-insensitively, in order of first
    /// appearance. Unqualified names are local mailboxes the caller must
    /// qualify.
    pub addresses: Vec<String>,
    /// Human-readable steps (`root -> admin, ops@example.net`) for
    /// `sendmail -bv`.
    pub trace: Vec<String>,
}

impl Aliases {
    /// Parses an aliases(5) file. `source` is only used in messages.
    ///
    /// # Errors
    ///
    /// Non-UTF-8 lines and syntax errors stop parsing (the caller must not
    /// run with half a table); skipped targets and duplicates are warnings.
    pub fn parse(source: &str, text: &[u8]) -> Result<Parsed, AliasError> {
        let mut parser = Parser {
            source,
            aliases: Aliases::default(),
            warnings: Vec::new(),
        };
        let mut pending: Option<Logical> = None;
        for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = index.saturating_add(1);
            let at = || Location {
                source: source.to_string(),
                line: line_no,
            };
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let raw = if index == 0 {
                raw.strip_prefix(BOM).unwrap_or(raw)
            } else {
                raw
            };
            let line = std::str::from_utf8(raw).map_err(|_| AliasError::NotUtf8 { at: at() })?;
            if let Some(c) = line.chars().find(|&c| c.is_control() && c != '\t') {
                return Err(AliasError::Syntax {
                    at: at(),
                    alias: None,
                    message: format!(
                        "line contains the control character {c:?}; remove it \
                         (only spaces and tabs are allowed)"
                    ),
                });
            }
            let body = line.trim_start();
            // aliases(5): `#` is a comment only at the start of a line.
            // Comment and blank lines are transparent, like Postfix: they
            // neither end nor continue the alias before them.
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            if body.len() != line.len() {
                match pending.as_mut() {
                    Some(logical) => logical.push(line_no, line),
                    None => {
                        return Err(AliasError::Syntax {
                            at: at(),
                            alias: None,
                            message: "indented line with no alias before it; \
                                      remove the leading whitespace (only \
                                      continuation lines are indented)"
                                .to_string(),
                        });
                    }
                }
            } else {
                if let Some(logical) = pending.take() {
                    parser.entry(&logical)?;
                }
                pending = Some(Logical::new(line_no, line));
            }
        }
        if let Some(logical) = pending.take() {
            parser.entry(&logical)?;
        }
        Ok(Parsed {
            aliases: parser.aliases,
            warnings: parser.warnings,
        })
    }

    /// Adds an alias from the configuration (`map = { root = "a@x" }`).
    ///
    /// The first definition of a name wins, as in the file, so this returns
    /// `false` (and changes nothing) when `name` is already present or is
    /// empty. Targets should be plain addresses or local names; unsupported
    /// ones (`|cmd`, `/file`, `:include:`) are skipped at expansion time
    /// with a note in the trace.
    pub fn insert(&mut self, name: &str, targets: Vec<String>) -> bool {
        let key = name.trim().to_lowercase();
        if key.is_empty() || self.entries.contains_key(&key) {
            return false;
        }
        self.entries.insert(
            key,
            Entry {
                targets,
                origin: None,
            },
        );
        true
    }

    /// Adds every alias of `other` whose name `self` does not have yet;
    /// entries already in `self` win.
    pub fn merge(&mut self, other: Aliases) {
        for (key, entry) in other.entries {
            self.entries.entry(key).or_insert(entry);
        }
    }

    /// The targets of alias `name` (looked up case-insensitively), as stored.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.entries
            .get(&name.trim().to_lowercase())
            .map(|entry| entry.targets.as_slice())
    }

    /// The number of aliases.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Expands one envelope recipient.
    ///
    /// Only unqualified names (no `@`) are looked up, case-insensitively.
    /// A qualified address is returned as is: deciding which domains are
    /// local is the caller's job, and it must strip a local domain
    /// (`root@thishost` -> `root`) before calling if that address should be
    /// aliased.
    ///
    /// Targets that are unqualified names are expanded again. A name that
    /// lists itself (`bob: bob, b@x`), or a target written `\name`, is the
    /// local mailbox and is not looked up again. A cycle through other
    /// names is [`AliasError::Loop`]; nesting beyond [`MAX_DEPTH`] is
    /// [`AliasError::TooDeep`].
    ///
    /// Unqualified names left that have no alias are returned for the
    /// caller to qualify (a catch-all, if any, is the caller's policy).
    ///
    /// # Errors
    ///
    /// [`AliasError::Loop`], [`AliasError::TooDeep`],
    /// [`AliasError::TooLarge`], or [`AliasError::EmptyAddress`] for an
    /// empty `address`.
    pub fn expand(&self, address: &str) -> Result<Expansion, AliasError> {
        let address = address.trim();
        if address.is_empty() {
            return Err(AliasError::EmptyAddress);
        }
        let mut walker = Walker {
            aliases: self,
            items: Vec::new(),
            trace: Vec::new(),
            steps: 0,
            top: address,
        };
        walker.visit(address, &mut Vec::new())?;
        let mut out = Output::default();
        for item in std::mem::take(&mut walker.items) {
            out.add(item);
        }
        Ok(Expansion {
            addresses: out.addresses,
            trace: walker.trace,
        })
    }
}

/// Parses `text` and checks that every alias expands without a loop or
/// excessive nesting, for `newaliases`. Returns the warnings for the caller
/// to print.
///
/// # Errors
///
/// The first parse error, or the first expansion error in file order.
pub fn validate(source: &str, text: &[u8]) -> Result<Vec<String>, AliasError> {
    let parsed = Aliases::parse(source, text)?;
    // Check in file order so the error reported is the first one a reader
    // of the file would meet.
    let mut names: Vec<(usize, &str)> = parsed
        .aliases
        .entries
        .iter()
        .map(|(name, entry)| (entry.origin.as_ref().map_or(0, |at| at.line), name.as_str()))
        .collect();
    names.sort_unstable();
    for (_, name) in names {
        parsed.aliases.expand(name)?;
    }
    Ok(parsed.warnings)
}

/// One logical line: a first line plus its indented continuations.
struct Logical {
    text: String,
    /// (byte offset in `text`, physical line number) where each physical
    /// line starts, so a bad target is reported on its own line.
    starts: Vec<(usize, usize)>,
}

impl Logical {
    fn new(line_no: usize, line: &str) -> Logical {
        Logical {
            text: line.to_string(),
            starts: vec![(0, line_no)],
        }
    }

    fn push(&mut self, line_no: usize, line: &str) {
        self.starts.push((self.text.len(), line_no));
        // The continuation keeps its leading whitespace, which separates
        // it from the previous line's text.
        self.text.push_str(line);
    }

    fn first_line(&self) -> usize {
        self.starts.first().map_or(0, |&(_, line)| line)
    }

    /// The physical line holding byte `offset`.
    fn line_at(&self, offset: usize) -> usize {
        // Binary search: one alias may span many thousands of lines.
        let index = self.starts.partition_point(|&(start, _)| start <= offset);
        self.starts
            .get(index.saturating_sub(1))
            .map_or_else(|| self.first_line(), |&(_, line)| line)
    }
}

/// Why a target is not supported, each with its own wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsupported {
    Command,
    File,
    Include,
}

impl Unsupported {
    fn of(target: &str) -> Option<Unsupported> {
        let lower = target.get(..9).map(str::to_ascii_lowercase);
        if target.starts_with('|') {
            Some(Unsupported::Command)
        } else if target.starts_with('/') {
            Some(Unsupported::File)
        } else if lower.as_deref() == Some(":include:") {
            Some(Unsupported::Include)
        } else {
            None
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Unsupported::Command => {
                "mailhop does not run commands from aliases; deliver to a mailbox address instead"
            }
            Unsupported::File => {
                "mailhop does not write to files from aliases; deliver to a mailbox address instead"
            }
            Unsupported::Include => {
                "mailhop does not read :include: files; list the addresses in the alias instead"
            }
        }
    }
}

/// A character of a line, with whether it is syntax: outside double
/// quotes and not escaped by a backslash (RFC 5322 quoting, which is what
/// sendmail's and Postfix's alias parsers honour).
#[derive(Debug, Clone, Copy)]
struct Char {
    offset: usize,
    c: char,
    live: bool,
}

/// Classifies every character of `s`; the flag is false when a quote is
/// left open at the end.
fn scan(s: &str) -> (Vec<Char>, bool) {
    let mut chars = Vec::with_capacity(s.len());
    let mut quoted = false;
    let mut escaped = false;
    for (offset, c) in s.char_indices() {
        let live = if escaped {
            escaped = false;
            false
        } else if c == '\\' {
            escaped = true;
            false
        } else if c == '"' {
            quoted = !quoted;
            false
        } else {
            !quoted
        };
        chars.push(Char { offset, c, live });
    }
    (chars, !quoted)
}

/// `"a b"` -> `a b` (unescaping `\x`) when the whole of `s` is one quoted
/// string; anything else unchanged.
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            // A bare quote inside means this was not one quoted string
            // (`"a"@"b"`), so keep the original.
            return s.to_string();
        } else {
            out.push(c);
        }
    }
    if escaped {
        // The closing quote was escaped: not a complete quoted string.
        return s.to_string();
    }
    out
}

/// The parser's state while reading one file.
struct Parser<'a> {
    source: &'a str,
    aliases: Aliases,
    warnings: Vec<String>,
}

impl Parser<'_> {
    fn at(&self, line: usize) -> Location {
        Location {
            source: self.source.to_string(),
            line,
        }
    }

    fn syntax(&self, line: usize, alias: Option<&str>, message: String) -> AliasError {
        AliasError::Syntax {
            at: self.at(line),
            alias: alias.map(str::to_string),
            message,
        }
    }

    /// Parses one logical line into an alias and records it.
    fn entry(&mut self, logical: &Logical) -> Result<(), AliasError> {
        let first = logical.first_line();
        let text = logical.text.as_str();
        let (chars, closed) = scan(text);
        let colon = chars
            .iter()
            .find(|ch| ch.live && ch.c == ':')
            .map(|ch| ch.offset);
        let Some(colon) = colon else {
            let shown: String = text.chars().take(40).collect();
            let message = if closed {
                format!(
                    "{shown:?} has no colon; write \"name: target, ...\", \
                     or indent the line if it continues the alias above"
                )
            } else {
                format!("{shown:?} has an unterminated double quote; close the quote")
            };
            return Err(self.syntax(first, None, message));
        };
        let raw_name = text.get(..colon).unwrap_or_default().trim();
        let rest = text.get(colon.saturating_add(1)..).unwrap_or_default();
        let rest_offset = colon.saturating_add(1);

        let name = unquote(raw_name);
        if name.trim().is_empty() {
            return Err(self.syntax(
                first,
                None,
                "empty alias name before \":\"; put the local name to alias before the colon"
                    .to_string(),
            ));
        }
        if raw_name
            .chars()
            .zip(scan(raw_name).0)
            .any(|(c, ch)| ch.live && c.is_whitespace())
        {
            return Err(self.syntax(
                first,
                Some(&name),
                "alias name contains whitespace; quote it (\"a b\": ...) if that is meant"
                    .to_string(),
            ));
        }
        let key = name.to_lowercase();
        if key.contains('@') {
            self.warnings.push(format!(
                "{}: alias names are local parts, so this entry can never match; \
                 use the part before \"@\"",
                place(Some(&self.at(first)), &name)
            ));
        }

        let (rest_chars, rest_closed) = scan(rest);
        if !rest_closed {
            return Err(self.syntax(
                first,
                Some(&name),
                "unterminated double quote; close the quote".to_string(),
            ));
        }
        let mut bounds: Vec<usize> = rest_chars
            .iter()
            .filter(|ch| ch.live && ch.c == ',')
            .map(|ch| ch.offset)
            .collect();
        bounds.push(rest.len());

        let mut targets = Vec::new();
        let mut written = 0usize;
        let mut start = 0usize;
        for end in bounds {
            let piece = rest.get(start..end).unwrap_or_default();
            // The offset of the piece's first non-blank character, for the
            // line number of a multi-line alias.
            let lead = piece.len().saturating_sub(piece.trim_start().len());
            let line = logical.line_at(rest_offset.saturating_add(start).saturating_add(lead));
            start = end.saturating_add(1);
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            written = written.saturating_add(1);
            if let Some(target) = self.target(piece, line, &name)? {
                targets.push(target);
            }
        }

        let at = self.at(first);
        if targets.is_empty() {
            let why = if written == 0 {
                "has no targets"
            } else {
                "has no deliverable targets left"
            };
            self.warnings.push(format!(
                "{}: {why}; it expands to nothing",
                place(Some(&at), &name)
            ));
        }
        if let Some(existing) = self.aliases.entries.get(&key) {
            let earlier = existing
                .origin
                .as_ref()
                .map_or_else(|| "the configuration".to_string(), Location::to_string);
            self.warnings.push(format!(
                "{}: duplicate entry, ignored; the first definition at {earlier} is used",
                place(Some(&at), &name)
            ));
            return Ok(());
        }
        self.aliases.entries.insert(
            key,
            Entry {
                targets,
                origin: Some(at),
            },
        );
        Ok(())
    }

    /// Normalises one target; `None` when it is skipped (with a warning
    /// for unsupported kinds).
    fn target(
        &mut self,
        piece: &str,
        line: usize,
        name: &str,
    ) -> Result<Option<String>, AliasError> {
        // Commands and paths may legitimately contain spaces and
        // parentheses, so recognise them before any address syntax.
        let unquoted = unquote(piece);
        if let Some(kind) = Unsupported::of(piece).or_else(|| Unsupported::of(&unquoted)) {
            self.skip(line, name, &unquoted, kind);
            return Ok(None);
        }

        let bare = strip_comments(piece).map_err(|message| {
            self.syntax(line, Some(name), format!("target {piece:?}: {message}"))
        })?;
        let bare = angle_address(bare.trim()).map_err(|message| {
            self.syntax(line, Some(name), format!("target {piece:?}: {message}"))
        })?;
        let (chars, _) = scan(bare);
        if chars.iter().any(|ch| ch.live && ch.c.is_whitespace()) {
            return Err(self.syntax(
                line,
                Some(name),
                format!(
                    "target {piece:?} contains whitespace; separate targets with commas \
                     (\"#\" starts a comment only at the beginning of a line)"
                ),
            ));
        }
        let value = unquote(bare);
        if value.trim().is_empty() {
            return Ok(None);
        }
        if let Some(kind) = Unsupported::of(&value) {
            self.skip(line, name, &value, kind);
            return Ok(None);
        }
        Ok(Some(value))
    }

    fn skip(&mut self, line: usize, name: &str, target: &str, kind: Unsupported) {
        self.warnings.push(format!(
            "{}: ignoring target {target:?}: {}",
            place(Some(&self.at(line)), name),
            kind.reason()
        ));
    }
}

/// Removes RFC 5322 `(comments)` outside quotes: `a@x (Admin)` -> `a@x `.
fn strip_comments(s: &str) -> Result<String, &'static str> {
    let (chars, _) = scan(s);
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for ch in chars {
        if ch.live && ch.c == '(' {
            depth = depth.saturating_add(1);
        } else if ch.live && ch.c == ')' {
            depth = depth
                .checked_sub(1)
                .ok_or("unbalanced \")\"; remove it or quote the name")?;
        } else if depth == 0 {
            out.push(ch.c);
        }
    }
    if depth == 0 {
        Ok(out)
    } else {
        Err("unclosed \"(\"; close the comment or remove it")
    }
}

/// `Name <addr>` -> `addr`; anything without angle brackets unchanged.
fn angle_address(s: &str) -> Result<&str, &'static str> {
    let (chars, _) = scan(s);
    let open = chars.iter().find(|ch| ch.live && ch.c == '<');
    let close = chars.iter().rev().find(|ch| ch.live && ch.c == '>');
    match (open, close) {
        (None, None) => Ok(s),
        (Some(open), Some(close))
            if close.offset.saturating_add(1) == s.len() && open.offset < close.offset =>
        {
            let inner = s
                .get(open.offset.saturating_add(1)..close.offset)
                .unwrap_or_default();
            if inner.contains(['<', '>']) {
                Err("nested \"<\" or \">\"; write a single address")
            } else {
                Ok(inner.trim())
            }
        }
        _ => Err("malformed \"<address>\"; write Name <user@domain> or just user@domain"),
    }
}

/// Deduplicating, order-preserving output list.
#[derive(Debug, Default)]
struct Output {
    addresses: Vec<String>,
    seen: HashSet<String>,
}

impl Output {
    fn add(&mut self, address: String) {
        if self.seen.insert(address.to_lowercase()) {
            self.addresses.push(address);
        }
    }
}

/// Depth-first expansion state for one address.
struct Walker<'a> {
    aliases: &'a Aliases,
    /// The final addresses, in walk order, before deduplication.
    items: Vec<String>,
    trace: Vec<String>,
    steps: usize,
    /// The address being expanded, for errors raised before any alias.
    top: &'a str,
}

impl Walker<'_> {
    fn origin(&self, key: &str) -> Option<Location> {
        self.aliases
            .entries
            .get(key)
            .and_then(|entry| entry.origin.clone())
    }

    /// Expands `target`; `chain` holds the lowercase names being expanded,
    /// outermost first, so its last element is the alias listing `target`.
    fn visit(&mut self, target: &str, chain: &mut Vec<String>) -> Result<(), AliasError> {
        self.steps = self.steps.saturating_add(1);
        if self.steps > MAX_STEPS {
            let alias = chain.first().map_or(self.top, String::as_str).to_string();
            return Err(AliasError::TooLarge {
                at: self.origin(&alias),
                alias,
            });
        }
        let target = target.trim();
        if target.is_empty() {
            return Ok(());
        }
        if let Some(kind) = Unsupported::of(target) {
            let parent = chain.last().map_or(self.top, String::as_str);
            self.trace
                .push(format!("{parent}: ignoring {target:?}: {}", kind.reason()));
            return Ok(());
        }
        if let Some(local) = target.strip_prefix('\\') {
            // `\name`: the local mailbox itself, never looked up again.
            if !local.is_empty() {
                self.items.push(local.to_string());
            }
            return Ok(());
        }
        if target.contains('@') {
            self.items.push(target.to_string());
            return Ok(());
        }
        let key = target.to_lowercase();
        if chain.last() == Some(&key) {
            // sendmail semantics: an alias listing itself means the local
            // mailbox of that name, which ends the recursion.
            self.items.push(target.to_string());
            return Ok(());
        }
        let Some(entry) = self.aliases.entries.get(&key) else {
            self.items.push(target.to_string());
            return Ok(());
        };
        if chain.contains(&key) {
            let alias = chain.last().cloned().unwrap_or_default();
            let mut names = chain.clone();
            names.push(key);
            return Err(AliasError::Loop {
                at: self.origin(&alias),
                alias,
                chain: names,
            });
        }
        if chain.len() >= MAX_DEPTH {
            let mut names = chain.clone();
            names.push(key.clone());
            return Err(AliasError::TooDeep {
                at: entry.origin.clone(),
                alias: key,
                chain: names,
            });
        }
        let listed = if entry.targets.is_empty() {
            "(nothing)".to_string()
        } else {
            entry.targets.join(", ")
        };
        self.trace.push(format!("{key} -> {listed}"));
        chain.push(key);
        for next in &entry.targets {
            self.visit(next, chain)?;
        }
        chain.pop();
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        Aliases::parse("/etc/aliases", text.as_bytes()).unwrap()
    }

    fn err(text: &str) -> AliasError {
        Aliases::parse("/etc/aliases", text.as_bytes()).unwrap_err()
    }

    fn targets(parsed: &Parsed, name: &str) -> Vec<String> {
        parsed.aliases.get(name).unwrap().to_vec()
    }

    fn expand(text: &str, address: &str) -> Vec<String> {
        parse(text).aliases.expand(address).unwrap().addresses
    }

    #[test]
    fn basic_entries_and_case_insensitive_names() {
        let p = parse("Root: Admin@Example.NET, ops\npostmaster: root\n");
        assert_eq!(p.aliases.len(), 2);
        assert!(!p.aliases.is_empty());
        assert_eq!(targets(&p, "root"), ["Admin@Example.NET", "ops"]);
        assert_eq!(targets(&p, "ROOT"), ["Admin@Example.NET", "ops"]);
        assert_eq!(targets(&p, "postmaster"), ["root"]);
        assert!(p.warnings.is_empty());
        assert!(p.aliases.get("nobody").is_none());
    }

    #[test]
    fn continuation_lines_and_line_numbers() {
        let p = parse("staff: a@x,\n  b@x,\n\tc@x,\n# note\n\n   d@x\nnext: e@x\n");
        assert_eq!(targets(&p, "staff"), ["a@x", "b@x", "c@x", "d@x"]);
        assert_eq!(targets(&p, "next"), ["e@x"]);

        let e = err("staff: a@x,\n  b c@x\n");
        assert!(
            e.to_string().starts_with("/etc/aliases:2: alias \"staff\""),
            "{e}"
        );
    }

    #[test]
    fn comments_only_at_line_start() {
        let p = parse("# top\n   # indented comment\nroot: a@x\n");
        assert_eq!(targets(&p, "root"), ["a@x"]);
        // A `#` after text is not a comment; the whitespace it brings is
        // reported with a hint.
        let e = err("root: a@x # trailing\n");
        let msg = e.to_string();
        assert!(msg.contains("/etc/aliases:1"), "{msg}");
        assert!(msg.contains("comment only at the beginning"), "{msg}");
        // Without whitespace `#` is just part of the address.
        let p = parse("root: a#b@x\n");
        assert_eq!(targets(&p, "root"), ["a#b@x"]);
    }

    #[test]
    fn quoted_names_and_targets() {
        let p = parse("\"a b\": x@y\n\"c:d\": \"quoted, with comma\"@x, \"plain\"\n");
        assert_eq!(targets(&p, "a b"), ["x@y"]);
        assert_eq!(targets(&p, "C:D"), ["\"quoted, with comma\"@x", "plain"]);
    }

    #[test]
    fn angle_addresses_and_comments() {
        let p = parse("root: Admin Person <admin@x>, ops@x (Ops team), <b@x>\n");
        assert_eq!(targets(&p, "root"), ["admin@x", "ops@x", "b@x"]);
        assert!(matches!(err("root: a@x)\n"), AliasError::Syntax { .. }));
        assert!(matches!(err("root: <a@x\n"), AliasError::Syntax { .. }));
    }

    #[test]
    fn crlf_and_bom() {
        let p = parse("\u{feff}root: a@x,\r\n  b@x\r\nuser: c@x\r\n");
        assert_eq!(targets(&p, "root"), ["a@x", "b@x"]);
        assert_eq!(targets(&p, "user"), ["c@x"]);
        let p = parse("root: a@x");
        assert_eq!(targets(&p, "root"), ["a@x"]);
    }

    #[test]
    fn long_lines() {
        let list: Vec<String> = (0..20_000).map(|i| format!("u{i}@x")).collect();
        let p = parse(&format!("big: {}\n", list.join(", ")));
        assert_eq!(targets(&p, "big").len(), 20_000);
    }

    #[test]
    fn many_continuation_lines() {
        let mut text = String::from("big: first@x");
        for i in 0..50_000 {
            text.push_str(&format!(",\n  u{i}@x"));
        }
        text.push_str(",\n  bad target\n");
        let e = err(&text);
        assert!(
            e.to_string()
                .starts_with("/etc/aliases:50002: alias \"big\""),
            "{e}"
        );
    }

    #[test]
    fn unsupported_targets_are_warned_and_skipped() {
        let p = parse(
            "logs: |/usr/bin/logger -t mail, \"|/bin/cat\", /var/log/mail.txt, \
             :include:/etc/list, keep@x\nonly: |cmd\n",
        );
        assert_eq!(targets(&p, "logs"), ["keep@x"]);
        assert_eq!(targets(&p, "only"), Vec::<String>::new());
        let w = &p.warnings;
        assert_eq!(
            w[0],
            "/etc/aliases:1: alias \"logs\": ignoring target \"|/usr/bin/logger -t mail\": \
             mailhop does not run commands from aliases; deliver to a mailbox address instead"
        );
        assert!(w[1].contains("ignoring target \"|/bin/cat\""), "{}", w[1]);
        assert!(w[2].contains("\"/var/log/mail.txt\": mailhop does not write to files"));
        assert!(w[3].contains("\":include:/etc/list\": mailhop does not read :include:"));
        assert!(
            w[4].starts_with("/etc/aliases:2: alias \"only\": ignoring"),
            "{}",
            w[4]
        );
        assert!(w[5].contains("\"only\"") && w[5].contains("no deliverable targets"));
        assert_eq!(w.len(), 6);
        // The alias still exists and expands to nothing.
        let e = p.aliases.expand("only").unwrap();
        assert!(e.addresses.is_empty());
    }

    #[test]
    fn empty_alias_warns() {
        let p = parse("empty:\n");
        assert_eq!(p.aliases.get("empty"), Some(&[][..]));
        assert!(p.warnings[0].contains("has no targets"));
    }

    #[test]
    fn duplicate_first_wins() {
        let p = parse("root: a@x\nROOT: b@x\n");
        assert_eq!(targets(&p, "root"), ["a@x"]);
        assert_eq!(
            p.warnings,
            ["/etc/aliases:2: alias \"ROOT\": duplicate entry, ignored; \
              the first definition at /etc/aliases:1 is used"]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("root: a@x\nno colon here\n");
        assert!(matches!(&e, AliasError::Syntax { at, .. } if at.line == 2));
        assert!(e.to_string().contains("has no colon"));
        let e = err(": a@x\n");
        assert!(
            e.to_string()
                .starts_with("/etc/aliases:1: empty alias name"),
            "{e}"
        );
        let e = err("\"\": a@x\n");
        assert!(e.to_string().contains("empty alias name"));
        let e = err("  a@x\n");
        assert!(e.to_string().contains("no alias before it"));
        let e = err("root: \"open, a@x\n");
        assert!(
            e.to_string().contains("alias \"root\": unterminated"),
            "{e}"
        );
        let e = err("\"open: a@x\n");
        assert!(e.to_string().contains("unterminated"), "{e}");
        let e = err("root x: a@x\n");
        assert!(e.to_string().contains("name contains whitespace"), "{e}");
        let e = err("root: a@x\u{0}\n");
        assert!(e.to_string().contains("control character"), "{e}");
    }

    #[test]
    fn non_utf8_is_an_error_with_line() {
        let e = Aliases::parse("f", b"root: a@x\nbad: \xff@x\n").unwrap_err();
        assert_eq!(
            e,
            AliasError::NotUtf8 {
                at: Location {
                    source: "f".into(),
                    line: 2
                }
            }
        );
        assert!(e.to_string().starts_with("f:2: "));
    }

    #[test]
    fn qualified_names_warn() {
        let p = parse("root@example.com: a@x\n");
        assert!(p.warnings[0].contains("can never match"));
    }

    #[test]
    fn recursion() {
        let text = "root: admin\nadmin: alice@x, ops\nops: bob@x, carol@x\n";
        let e = parse(text).aliases.expand("root").unwrap();
        assert_eq!(e.addresses, ["alice@x", "bob@x", "carol@x"]);
        assert_eq!(
            e.trace,
            [
                "root -> admin",
                "admin -> alice@x, ops",
                "ops -> bob@x, carol@x"
            ]
        );
    }

    #[test]
    fn qualified_addresses_pass_through() {
        let e = parse("root: a@x\n").aliases.expand("root@here").unwrap();
        assert_eq!(e.addresses, ["root@here"]);
        assert!(e.trace.is_empty());
    }

    #[test]
    fn self_reference_is_terminal() {
        assert_eq!(expand("root: root, a@x\n", "root"), ["root", "a@x"]);
        assert_eq!(expand("bob: Bob\n", "BOB"), ["Bob"]);
        assert_eq!(expand("bob: \\bob, b@x\n", "bob"), ["bob", "b@x"]);
        // Through another alias, the self-reference still stops.
        assert_eq!(
            expand("postmaster: root\nroot: root, a@x\n", "postmaster"),
            ["root", "a@x"]
        );
    }

    #[test]
    fn loops_name_the_chain() {
        let text = "a: b\nb: c@x, a\n";
        let e = parse(text).aliases.expand("a").unwrap_err();
        assert_eq!(
            e,
            AliasError::Loop {
                at: Some(Location {
                    source: "/etc/aliases".into(),
                    line: 2
                }),
                alias: "b".into(),
                chain: vec!["a".into(), "b".into(), "a".into()],
            }
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("/etc/aliases:2: alias \"b\": alias loop a -> b -> a"),
            "{msg}"
        );
        let e = validate("/etc/aliases", text.as_bytes()).unwrap_err();
        assert!(matches!(e, AliasError::Loop { .. }));
        // A diamond is not a loop.
        assert_eq!(expand("a: b, c\nb: d\nc: d\nd: z@x\n", "a"), ["z@x"]);
    }

    #[test]
    fn depth_limit() {
        let chain = |n: usize| {
            let mut text = String::new();
            for i in 0..n {
                text.push_str(&format!("a{i}: a{}\n", i + 1));
            }
            text.push_str(&format!("a{n}: end@x\n"));
            text
        };
        // a0 .. a31: 32 nested aliases are allowed.
        assert_eq!(expand(&chain(31), "a0"), ["end@x"]);
        let e = parse(&chain(32)).aliases.expand("a0").unwrap_err();
        assert!(matches!(&e, AliasError::TooDeep { chain, .. } if chain.len() == 33));
        assert!(e.to_string().contains("more than 32 deep"), "{e}");
    }

    #[test]
    fn exponential_fanout_is_bounded() {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!("a{i}: a{0}, a{0}\n", i + 1));
        }
        text.push_str("a40: z@x\n");
        let e = parse(&text).aliases.expand("a0").unwrap_err();
        assert!(matches!(
            e,
            AliasError::TooLarge { .. } | AliasError::TooDeep { .. }
        ));
        let mut text = String::new();
        for i in 0..25 {
            text.push_str(&format!("a{i}: a{0}, a{0}\n", i + 1));
        }
        text.push_str("a25: z@x\n");
        let e = parse(&text).aliases.expand("a0").unwrap_err();
        assert!(matches!(e, AliasError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("alias \"a0\""), "{e}");
    }

    #[test]
    fn unknown_names_are_left_for_the_caller() {
        let text = "root: admin, bob, a@x\nadmin: admin, c@x\n";
        let a = parse(text).aliases;
        // `bob` has no alias, `admin` is a self-reference: both stay names.
        assert_eq!(
            a.expand("root").unwrap().addresses,
            ["admin", "c@x", "bob", "a@x"]
        );
        assert_eq!(a.expand("nobody").unwrap().addresses, ["nobody"]);
        assert_eq!(a.expand("").unwrap_err(), AliasError::EmptyAddress);
        assert_eq!(a.expand("  ").unwrap_err(), AliasError::EmptyAddress);
    }

    #[test]
    fn output_is_deduplicated_case_insensitively() {
        let text = "all: A@X, b, a@x, team\nteam: b, B@x, c@x\nb: b@X\n";
        assert_eq!(expand(text, "all"), ["A@X", "b@X", "c@x"]);
        let p = parse("all: u1, U1, u2\n").aliases;
        assert_eq!(p.expand("all").unwrap().addresses, ["u1", "u2"]);
    }

    #[test]
    fn insert_and_merge_first_wins() {
        let mut a = Aliases::default();
        assert!(a.is_empty());
        assert!(a.insert("Root", vec!["a@x".into()]));
        assert!(!a.insert("root", vec!["b@x".into()]));
        assert!(!a.insert("  ", vec!["b@x".into()]));
        assert_eq!(a.get("ROOT").unwrap(), ["a@x"]);

        let file = parse("root: file@x\nops: o@x\n").aliases;
        a.merge(file);
        assert_eq!(a.len(), 2);
        assert_eq!(a.get("root").unwrap(), ["a@x"]);
        assert_eq!(a.get("ops").unwrap(), ["o@x"]);

        // Loops through configuration entries say where they come from.
        let mut c = Aliases::default();
        c.insert("x", vec!["y".into()]);
        c.insert("y", vec!["x".into(), "|cmd".into()]);
        let e = c.expand("x").unwrap_err();
        assert!(e.to_string().contains("(from the configuration)"), "{e}");
        // Unsupported targets from the configuration are skipped, traced.
        let mut d = Aliases::default();
        d.insert("y", vec!["|cmd".into(), "q@x".into()]);
        let e = d.expand("y").unwrap();
        assert_eq!(e.addresses, ["q@x"]);
        assert!(e.trace.iter().any(|t| t.contains("does not run commands")));
    }

    #[test]
    fn validate_returns_warnings() {
        let w = validate("f", b"root: a@x, |cmd\nx: root\n").unwrap();
        assert_eq!(w.len(), 1);
        assert!(validate("f", b"a: b\nb: a\n").is_err());
        assert!(validate("f", b"bad line\n").is_err());
    }

    const SAMPLE: &str = "\u{feff}# sample\r\n\
        root: Admin <admin@example.net>, root, \"ops team\"\r\n\
        \"ops team\": o1@x,\n\
        \t  o2@x (second), \\bob\n\
        postmaster: root\n\
        \n\
        logs: \"|/usr/bin/logger -t x\", /var/log/x, :include:/etc/l\n\
        naïve: \"quoted, \\\"name\\\"\"@x\n\
        dup: a\nDUP: b\n";

    #[test]
    fn sample_parses() {
        let p = parse(SAMPLE);
        assert_eq!(p.aliases.len(), 6);
        let e = p.aliases.expand("postmaster").unwrap();
        assert_eq!(
            e.addresses,
            ["admin@example.net", "root", "o1@x", "o2@x", "bob"]
        );
        assert!(validate("s", SAMPLE.as_bytes()).is_ok());
    }

    #[test]
    fn no_panic_on_any_prefix() {
        let bytes = SAMPLE.as_bytes();
        for end in 0..=bytes.len() {
            let prefix = &bytes[..end];
            if let Ok(p) = Aliases::parse("s", prefix) {
                for name in ["root", "postmaster", "ops team", "dup", "x", "a@b", "\\q"] {
                    let _ = p.aliases.expand(name);
                }
            }
            let _ = validate("s", prefix);
        }
    }

    #[test]
    fn no_panic_on_noise() {
        // Deterministic pseudo-random bytes biased towards syntax characters.
        let alphabet = b"ab:,\"\\ \t\n\r#<>()|/@\xc3\xa9\xff";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            let mut input = Vec::new();
            for _ in 0..64 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let i = (state >> 33) as usize % alphabet.len();
                input.push(alphabet[i]);
            }
            if let Ok(p) = Aliases::parse("n", &input) {
                let _ = p.aliases.expand("a");
                let _ = p.aliases.expand("ab");
            }
            let _ = validate("n", &input);
        }
    }
}
