//! Converting an ssmtp or msmtp configuration into a mailhop.toml.
//!
//! `mailhop import` reads the old files and hands their text here. This
//! module only turns text into text (no file access, no environment), so a
//! conversion can be shown to the administrator before anything is written,
//! and tested.
//!
//! The result is a complete, commented configuration that mailhop's parser
//! accepts. A value mailhop would refuse is written as a comment with the
//! reason instead, since a file that does not load helps nobody. A value
//! that had to be guessed is marked "check this".
//!
//! Passwords are never copied. ssmtp and msmtp keep them inside their
//! configuration files, which are often world-readable. mailhop reads them
//! from a protected password file instead. For each password the result
//! names that file and gives the shell commands that fill it straight from
//! the old file. That way the secret never passes through this program, the
//! terminal or the new configuration, and it cannot leak into the output,
//! the warnings or an error message.
//!
//! Where behaviour changes, `warnings` says so (it is also written at the top
//! of the file). Both peers could send mail in plain text, and ssmtp never
//! checks certificates. mailhop refuses both, so mail that "worked" before
//! may now fail, and the administrator should hear why from us first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Key, Table, Value};

use crate::transport::{TlsMode, is_loopback};
// The same checks the configuration applies, so an imported file never
// fails to load for an address or domain that looked fine here.
use crate::config::{is_domain, is_plain_address};

/// A converted configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The complete, commented mailhop.toml.
    pub toml: String,
    /// Changes in behaviour and things to do, one sentence or two each. They
    /// are also written at the top of `toml`.
    pub warnings: Vec<String>,
    /// The password files that `toml` names. Each must be created (with
    /// `command_hint`) before the account can log in.
    pub password_files: Vec<PasswordFile>,
}

/// A password file to create from the old configuration. It never holds
/// the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    /// The absolute path that `password_file` names in the output.
    pub path: String,
    /// The `[[account]]` it belongs to.
    pub account: String,
    /// Shell commands that create the file with safe ownership and mode and
    /// copy the password into it from the old configuration, without
    /// showing it on the terminal.
    pub command_hint: String,
}

/// Why a configuration cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The file, as the caller named it.
    pub file: String,
    /// The line (from 1), when the problem is on one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ImportError {
    fn at(file: &str, line: usize, message: impl Into<String>) -> Self {
        ImportError {
            file: file.to_string(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn whole(file: &str, message: impl Into<String>) -> Self {
        ImportError {
            file: file.to_string(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ImportError {}

/// Where password files go for a system-wide configuration.
const SYSTEM_DIR: &str = "/etc/mailhop";

/// A `from` that parses but cannot be delivered from (`.invalid` never
/// resolves), for accounts whose sender address cannot be derived. The
/// warning and the comment beside it say to replace it.
const PLACEHOLDER_FROM: &str = "change-me@example.invalid";

mod msmtp;
mod ssmtp;

pub use msmtp::from_msmtp;
pub use ssmtp::from_ssmtp;

// ---------------------------------------------------------------------------
// Writing the TOML
//
// The document is built with toml_edit, so every key and value is quoted
// by the TOML library; the importer's comments ride along as the decor
// (the text before) of the key or table header that follows them.

/// One line of a table: a comment, or a key and its value.
#[derive(Debug)]
enum Line {
    /// A whole comment line, `#` included.
    Comment(String),
    Entry(String, Value),
}

/// Lines of one table, comments included.
#[derive(Debug, Default)]
struct Block {
    lines: Vec<Line>,
}

/// Comment text is wrapped to this width.
const WIDTH: usize = 76;

impl Block {
    fn comment(&mut self, text: &str) {
        for l in wrap(&clean(text), WIDTH) {
            self.push_comment(format!("# {l}").trim_end().to_string());
        }
    }

    /// A comment line that must not be wrapped, such as a command.
    fn raw_comment(&mut self, text: &str) {
        self.push_comment(format!("# {}", clean(text).replace('\n', " ")));
    }

    fn push_comment(&mut self, line: String) {
        self.lines.push(Line::Comment(line));
    }

    fn kv(&mut self, key: &str, value: impl Into<Value>) {
        self.lines.push(Line::Entry(key.to_string(), value.into()));
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds the entries to `table`. `pending` holds comment lines not yet
    /// placed: they become the decor of the next key, and those after the
    /// last key are left in `pending` for whatever follows the table.
    fn fill(&self, table: &mut Table, pending: &mut String) {
        for line in &self.lines {
            match line {
                Line::Comment(c) => {
                    pending.push_str(c);
                    pending.push('\n');
                }
                Line::Entry(k, v) => {
                    let mut key = Key::new(k.as_str());
                    key.leaf_decor_mut().set_prefix(std::mem::take(pending));
                    table.insert_formatted(&key, Item::Value(v.clone()));
                }
            }
        }
    }

    /// The block as a table of its own, its header preceded by `pending`;
    /// `None` when it is empty (no header is written then). A blank line
    /// separates it from what follows.
    fn table(&self, pending: &mut String) -> Option<Table> {
        if self.is_empty() {
            return None;
        }
        let mut t = Table::new();
        t.decor_mut().set_prefix(std::mem::take(pending));
        self.fill(&mut t, pending);
        pending.push('\n');
        Some(t)
    }
}

/// `[parent]` with `[parent.child]` inside, either possibly empty; `None`
/// when both are.
fn nested(parent: Option<Table>, child_key: &str, child: Option<Table>) -> Option<Table> {
    if parent.is_none() && child.is_none() {
        return None;
    }
    let mut p = parent.unwrap_or_else(|| {
        // No keys of its own: TOML needs no `[parent]` header then.
        let mut t = Table::new();
        t.set_implicit(true);
        t
    });
    if let Some(c) = child {
        p.insert(child_key, Item::Table(c));
    }
    Some(p)
}

/// The converted file, assembled section by section (TOML wants the
/// top-level keys before any table).
#[derive(Debug)]
struct Out {
    source: String,
    warnings: Vec<String>,
    top: Block,
    accounts: Vec<Block>,
    rewrite: Block,
    revaliases: Block,
    aliases: Block,
    aliases_map: Block,
    /// (file, line) to remark, for settings without an equivalent.
    notes: BTreeMap<(String, usize), Vec<String>>,
    names: BTreeSet<String>,
    password_files: Vec<PasswordFile>,
}

impl Out {
    /// Points an account at a password file the admin must create (the
    /// secret is never copied): a comment saying why and how, the key,
    /// and an entry for the summary printed after the import.
    fn password_file(
        &mut self,
        b: &mut Block,
        why: &str,
        account: &str,
        path: String,
        hint: String,
    ) {
        b.comment(why);
        b.raw_comment(&format!("  {hint}"));
        b.kv("password_file", &path);
        self.password_files.push(PasswordFile {
            path,
            account: account.to_string(),
            command_hint: hint,
        });
    }

    fn new(source: String) -> Self {
        Out {
            source,
            warnings: Vec::new(),
            top: Block::default(),
            accounts: Vec::new(),
            rewrite: Block::default(),
            revaliases: Block::default(),
            aliases: Block::default(),
            aliases_map: Block::default(),
            notes: BTreeMap::new(),
            names: BTreeSet::new(),
            password_files: Vec::new(),
        }
    }

    fn warn(&mut self, text: &str) {
        let text = clean(text);
        if !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }

    fn note(&mut self, file: &str, line: usize, text: &str) {
        let list = self.notes.entry((file.to_string(), line)).or_default();
        if !list.iter().any(|t| t == text) {
            list.push(text.to_string());
        }
    }

    /// `base`, or `base-2`, `base-3`, ... when taken.
    fn unique_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 2;
        while self.names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// The comment block at the top: what this is, what to do, and every
    /// warning.
    fn head(&self) -> Block {
        let mut head = Block::default();
        head.comment(&format!(
            "mailhop configuration, converted by `mailhop import` from {}.",
            self.source
        ));
        head.push_comment("#".into());
        head.comment(
            "Review it, above all the lines marked \"check this\" or \"FILL IN\", \
             create the password files as shown beside them, then run `mailhop check \
             --offline` (and `mailhop check` to try the connection and the server's \
             certificate). See mailhop.toml(5).",
        );
        for w in &self.warnings {
            head.push_comment("#".into());
            for (i, l) in wrap(&format!("WARNING: {w}"), WIDTH)
                .into_iter()
                .enumerate()
            {
                head.push_comment(if i == 0 {
                    format!("# {l}")
                } else {
                    format!("#   {l}")
                });
            }
        }
        head
    }

    /// The closing comment: settings without an equivalent, by file and line.
    fn notes_block(&self) -> Block {
        let mut b = Block::default();
        if !self.notes.is_empty() {
            b.comment("Settings mailhop has no equivalent for:");
            for ((file, line), texts) in &self.notes {
                for t in texts {
                    b.comment(&format!("{file}:{line}: {t}"));
                }
            }
        }
        b
    }

    fn finish(self) -> Imported {
        let mut doc = DocumentMut::new();
        let mut pending = String::new();
        self.head().fill(doc.as_table_mut(), &mut pending);
        pending.push('\n');
        if !self.top.is_empty() {
            self.top.fill(doc.as_table_mut(), &mut pending);
            pending.push('\n');
        }
        let mut accounts = ArrayOfTables::new();
        for t in self.accounts.iter().filter_map(|a| a.table(&mut pending)) {
            accounts.push(t);
        }
        if !accounts.is_empty() {
            doc.insert("account", Item::ArrayOfTables(accounts));
        }
        let rewrite = self.rewrite.table(&mut pending);
        let revaliases = self.revaliases.table(&mut pending);
        if let Some(t) = nested(rewrite, "revaliases", revaliases) {
            doc.insert("rewrite", Item::Table(t));
        }
        let aliases = self.aliases.table(&mut pending);
        let map = self.aliases_map.table(&mut pending);
        if let Some(t) = nested(aliases, "map", map) {
            doc.insert("aliases", Item::Table(t));
        }
        let mut scratch = Table::new();
        self.notes_block().fill(&mut scratch, &mut pending);
        doc.set_trailing(pending);
        let mut s = doc.to_string();
        while s.ends_with("\n\n") {
            s.pop();
        }
        Imported {
            toml: s,
            warnings: self.warnings,
            password_files: self.password_files,
        }
    }
}

/// Text fit for a TOML comment: no control characters (TOML forbids them
/// there), line breaks kept as paragraph breaks.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '\n' || !c.is_control() {
                c
            } else if c == '\t' {
                ' '
            } else {
                '?'
            }
        })
        .collect()
}

/// Greedy word wrap; a word longer than `width` gets a line of its own.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push(line);
    }
    out
}

/// A string as TOML writes it, for a setting shown inside a comment.
fn toml_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// `[a, b]` of strings, for `senders`.
fn toml_array(items: &[String]) -> Value {
    Value::Array(items.iter().collect::<Array>())
}

/// A word for a POSIX shell: as it is when it is safe, else single-quoted.
fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---------------------------------------------------------------------------
// Names and addresses (mirroring what config.rs accepts)

/// `smtp.office365.com` is "office365", `smtp.gmail.com` "gmail", otherwise
/// the first label that says more than "smtp" or "mail".
fn account_name_for_host(host: &str) -> String {
    let h = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if is_loopback(&h) {
        return "local".into();
    }
    if h.parse::<IpAddr>().is_ok() {
        return "relay".into();
    }
    for (suffix, name) in [
        ("office365.com", "office365"),
        ("outlook.com", "outlook"),
        ("gmail.com", "gmail"),
        ("googlemail.com", "gmail"),
        ("amazonaws.com", "ses"),
    ] {
        if h == suffix || h.ends_with(&format!(".{suffix}")) {
            return name.into();
        }
    }
    const GENERIC: &[&str] = &[
        "smtp",
        "smtps",
        "mail",
        "email",
        "submission",
        "relay",
        "out",
        "outgoing",
        "mx",
        "send",
        "auth",
        "mailout",
    ];
    let labels: Vec<&str> = h.split('.').filter(|l| !l.is_empty()).collect();
    let candidates = match labels.split_last() {
        Some((_, rest)) if !rest.is_empty() => rest,
        _ => labels.as_slice(),
    };
    candidates
        .iter()
        .find(|l| !l.split('-').all(|p| GENERIC.contains(&p)))
        .or(candidates.first())
        .map_or_else(|| "smarthost".to_string(), |l| sanitize_name(l))
}

/// mailhop's account name charset: letters, digits, `-`, `_`, `.`.
fn sanitize_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let t = mapped.trim_matches('-');
    if t.is_empty() {
        "account".into()
    } else {
        t.to_string()
    }
}

/// `example.com` for `smtp.example.com`, when the host has a parent domain
/// worth guessing an address in.
fn parent_domain(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() || is_loopback(host) {
        return None;
    }
    let (_, parent) = host.split_once('.')?;
    (parent.contains('.') && is_domain(parent)).then(|| parent.to_ascii_lowercase())
}

fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

fn base_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn table(text: &str) -> toml::Table {
        toml::from_str::<toml::Table>(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The file with wrapped comments joined, so tests can look for a
    /// sentence wherever the wrapping broke it.
    pub(crate) fn flat(toml: &str) -> String {
        toml.replace("\n#   ", " ").replace("\n# ", " ")
    }

    pub(crate) fn s<'a>(t: &'a toml::Table, k: &str) -> Option<&'a str> {
        t.get(k).and_then(toml::Value::as_str)
    }

    pub(crate) fn accounts(t: &toml::Table) -> Vec<toml::Table> {
        t.get("account")
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn section<'a>(t: &'a toml::Table, k: &str) -> &'a toml::Table {
        t.get(k).and_then(toml::Value::as_table).unwrap()
    }

    /// What mailhop's config parser checks, repeated here (the module has
    /// no access to it), plus: no secret anywhere in what is returned.
    pub(crate) fn check(imp: &Imported, secrets: &[&str]) -> toml::Table {
        let t = table(&imp.toml);
        for secret in secrets {
            let everywhere = [imp.toml.clone(), imp.warnings.join("\n")]
                .into_iter()
                .chain(imp.password_files.iter().map(|p| format!("{p:?}")));
            for text in everywhere {
                assert!(
                    !text.contains(secret),
                    "secret {secret:?} leaked into:\n{text}"
                );
            }
        }
        let known = [
            "name",
            "host",
            "from",
            "senders",
            "port",
            "tls",
            "tls_ca_file",
            "tls_fingerprint",
            "tls_min_version",
            "tls_cert_file",
            "tls_key_file",
            "auth",
            "user",
            "password_command",
            "password_file",
            "connect_timeout",
            "timeout",
            "data_timeout",
        ];
        let mut names = BTreeSet::new();
        for a in accounts(&t) {
            for k in a.keys() {
                assert!(known.contains(&k.as_str()), "unknown key {k}");
            }
            let name = s(&a, "name").unwrap();
            assert!(!name.is_empty() && name == sanitize_name(name), "{name}");
            assert!(names.insert(name.to_string()), "{name} twice");
            let host = s(&a, "host").unwrap();
            assert!(!host.is_empty() && !host.contains(char::is_whitespace));
            assert!(is_plain_address(s(&a, "from").unwrap()));
            match s(&a, "tls") {
                Some("none") => assert!(is_loopback(host)),
                Some("starttls" | "implicit") | None => {}
                Some(other) => panic!("tls {other}"),
            }
            if matches!(s(&a, "auth"), Some("plain" | "login" | "xoauth2")) {
                assert!(a.contains_key("user"));
            }
            assert_eq!(
                a.contains_key("tls_cert_file"),
                a.contains_key("tls_key_file")
            );
            if let Some(f) = s(&a, "tls_fingerprint") {
                assert_eq!(
                    msmtp::fingerprint_bytes(f.trim_start_matches("sha256:"))
                        .unwrap()
                        .len(),
                    32
                );
            }
            if let Some(p) = a.get("port") {
                assert!((1..=65535).contains(&p.as_integer().unwrap()));
            }
        }
        if let Some(r) = t.get("rewrite").and_then(toml::Value::as_table) {
            if let Some(d) = s(r, "domain") {
                assert!(is_domain(d));
            }
            if let Some(revs) = r.get("revaliases").and_then(toml::Value::as_table) {
                for v in revs.values() {
                    match v {
                        toml::Value::String(a) => assert!(is_plain_address(a)),
                        toml::Value::Table(e) => {
                            assert!(is_plain_address(s(e, "from").unwrap()));
                            assert!(names.contains(s(e, "account").unwrap()));
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
        if let Some(h) = s(&t, "hostname") {
            assert!(is_domain(h));
        }
        for p in &imp.password_files {
            assert!(p.path.starts_with('/') && names.contains(&p.account));
            assert!(flat(&imp.toml).contains(&toml_str(&p.path)));
        }
        t
    }

    /// Runs the part of a hint that prints the password (the last
    /// command, without the redirection) and returns what it prints.
    pub(crate) fn run_extraction(hint: &str) -> Option<String> {
        let last = hint.rsplit(" && ").next()?;
        let (cmd, _) = last.rsplit_once(" > ")?;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn temp_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("mailhop-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn names_for_hosts() {
        for (host, name) in [
            ("smtp.office365.com", "office365"),
            ("smtp.gmail.com", "gmail"),
            ("smtp-relay.gmail.com", "gmail"),
            ("smtp-mail.outlook.com", "outlook"),
            ("mail.example.com", "example"),
            ("smtp.mail.example.co", "example"),
            ("relay", "relay"),
            ("smtp.com", "smtp"),
            ("127.0.0.1", "local"),
            ("[::1]", "local"),
            ("192.0.2.7", "relay"),
            ("email-smtp.eu-west-1.amazonaws.com", "ses"),
        ] {
            assert_eq!(account_name_for_host(host), name, "{host}");
        }
        assert_eq!(sanitize_name("my mail!"), "my-mail");
        assert_eq!(sanitize_name("!!"), "account");
    }

    #[test]
    fn toml_and_shell_quoting() {
        let odd = "a\"b\\c\u{1}'";
        assert_eq!(
            table(&format!("x = {}", toml_str(odd)))["x"].as_str(),
            Some(odd)
        );
        assert_eq!(sh_quote("/etc/ssmtp/ssmtp.conf"), "/etc/ssmtp/ssmtp.conf");
        assert_eq!(sh_quote("/tmp/it's here"), "'/tmp/it'\\''s here'");
        let t = table(&format!(
            "x = {}\n# {}\n",
            toml_str("\u{7f}\t\n"),
            clean("a\u{7}b")
        ));
        assert_eq!(t["x"].as_str(), Some("\u{7f}\t\n"));
        assert_eq!(ImportError::at("f", 3, "bad").to_string(), "f:3: bad");
    }

    #[test]
    fn comments_stay_beside_their_keys_and_keys_are_quoted_by_toml() {
        let mut out = Out::new("test".into());
        out.top.comment("about the host name");
        out.top.kv("hostname", "h.example.com");
        let mut a = Block::default();
        a.comment("the account");
        a.kv("name", "x");
        a.raw_comment("user = \"left out\"");
        out.accounts.push(a);
        out.rewrite.kv("from_policy", "keep");
        out.revaliases.comment("a dotted user");
        out.revaliases.kv("john.doe", "j@example.com");
        out.aliases.raw_comment("file = \"/x\"");
        out.aliases_map.kv("root", "r@example.com");
        let text = out.finish().toml;
        let t = table(&text);
        assert_eq!(s(&t, "hostname"), Some("h.example.com"));
        let revs = section(section(&t, "rewrite"), "revaliases");
        assert_eq!(s(revs, "john.doe"), Some("j@example.com"));
        assert_eq!(
            s(section(section(&t, "aliases"), "map"), "root"),
            Some("r@example.com")
        );
        for pair in [
            "# about the host name\nhostname = ",
            "[[account]]\n# the account\nname = \"x\"\n# user = \"left out\"\n\n[rewrite]",
            "# a dotted user\n\"john.doe\" = ",
            "[aliases]\n# file = \"/x\"\n\n[aliases.map]\nroot = ",
        ] {
            assert!(text.contains(pair), "{pair:?} not in:\n{text}");
        }
        assert!(text.ends_with("\"r@example.com\"\n"), "{text}");
    }
}
