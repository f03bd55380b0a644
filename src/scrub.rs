//! Header scrubbing: removing or rewriting header fields that leak the
//! local machine, its software or its environment, applied to the finished
//! header just before signing.
//!
//! This module owns the `[headers]` policy once the configuration module
//! has read it: the built-in privacy preset ([`PRIVACY_PRESET`]), the extra
//! `remove` names, and the ordered Postfix-style `[[headers.rule]]` rules;
//! the checks that keep all three away from the fields a message cannot do
//! without ([`is_protected`]); and applying them to a [`Header`].
//!
//! Rules match the unfolded header line `Name: value` (the name as written,
//! a colon, one space, the unfolded value with surrounding whitespace
//! trimmed) and, like Postfix's `REPLACE`, a replacement is the whole new
//! line: the `replace` text with `$1`, `${name}` expanded from the match.
//!
//! Scrubbing never touches the body, and fields nobody changes keep their
//! exact bytes: the header is signed right after this runs, and we are a
//! relay, not a rewriter. Everything here is pure; problems with a single
//! message come back as warning strings in the [`Report`], never as errors,
//! because a scrub rule must not stop mail from going out.

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};

use crate::message::header::{Field, Header, fold};

/// The headers `scrub = "privacy"` removes, every instance, in any case.
///
/// - `User-Agent`, `X-Mailer`: the mail software and its version
///   (PHPMailer in WordPress, Drupal, Symfony Mailer all set `X-Mailer`).
/// - `X-Newsreader`, `X-MimeOLE`: the same for older clients (Pan, slrn,
///   Outlook Express), with version numbers that identify unpatched hosts.
/// - `X-Powered-By`: PHP frameworks copy PHP's `expose_php` banner
///   (`PHP/8.1.2`) into mail as well as into HTTP responses.
/// - `X-Originating-IP`: the submitting client's address.
/// - `X-Forwarded-For`: web applications copy the HTTP visitor's address
///   chain (and internal proxy addresses) into contact-form mail.
/// - `X-PHP-Originating-Script`: the uid and path of the PHP script
///   (PHP's `mail.add_x_header`).
/// - `X-PHP-Script`: the older patched-PHP form of the same, with the
///   host name, script path and visitor address.
/// - `X-Source`, `X-Source-Args`, `X-Source-Dir`: cPanel-style hosting
///   records the sending program, its command line and its directory
///   (document root, user name).
/// - `X-Cron-Env`: cronie writes one per environment variable, secrets
///   included.
/// - `Received`: mailhop adds none, so every one present at intake was
///   added by local tools before submission and describes this machine.
pub const PRIVACY_PRESET: &[&str] = &[
    "User-Agent",
    "X-Mailer",
    "X-Newsreader",
    "X-MimeOLE",
    "X-Powered-By",
    "X-Originating-IP",
    "X-Forwarded-For",
    "X-PHP-Originating-Script",
    "X-PHP-Script",
    "X-Source",
    "X-Source-Args",
    "X-Source-Dir",
    "X-Cron-Env",
    "Received",
];

/// Fields scrubbing never removes or renames, besides every `Content-*`
/// field: without them the message has no author, recipients, date,
/// identity, subject or structure.
const PROTECTED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "Subject",
    "MIME-Version",
];

/// The `Content-*` family (RFC 2045, 2183, 3066, ...) is open-ended, so it
/// is protected by prefix.
const PROTECTED_PREFIX: &str = "Content-";

/// What error messages list as protected.
const PROTECTED_TEXT: &str = "From, To, Cc, Date, Message-ID, Subject, MIME-Version or Content-*";

/// Names used to build the sample lines rules are tested against at load
/// time: every fixed protected name plus the common `Content-*` fields.
const SAMPLE_NAMES: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "Message-Id",
    "Subject",
    "MIME-Version",
    "Mime-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Content-ID",
    "Content-Description",
    "Content-Language",
];

/// Value shapes for the sample lines: addresses, dates, message ids, free
/// text, MIME parameters, and nothing at all.
const SAMPLE_VALUES: &[&str] = &[
    "",
    "x",
    "a@b.c",
    "root",
    "User Name <user@example.org>",
    "\"Doe, John\" <john.doe@example.com>, other@example.net",
    "undisclosed-recipients:;",
    "Tue, 1 Jul 2025 10:00:00 +0000",
    "<20250701100000.12345@host.example>",
    "Hello world",
    "Cron <root@host> /usr/local/bin/backup",
    "=?UTF-8?B?SsO2cmc=?=",
    "1.0",
    "text/plain",
    "text/plain; charset=utf-8",
    "multipart/mixed; boundary=\"b1\"",
    "7bit",
    "quoted-printable",
    "base64",
    "attachment; filename=\"a.pdf\"",
    "en",
];

/// Which built-in list of headers to remove (`[headers] scrub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// Remove [`PRIVACY_PRESET`].
    #[default]
    Privacy,
    /// Remove nothing beyond `remove` and the rules.
    None,
}

impl Preset {
    /// Every value `scrub` accepts, for error messages and the man page.
    pub const NAMES: &[&str] = &["privacy", "none"];

    /// The preset called `name` in the configuration file, if any.
    pub fn from_name(name: &str) -> Option<Preset> {
        match name {
            "privacy" => Some(Preset::Privacy),
            "none" => Some(Preset::None),
            _ => None,
        }
    }

    /// The name the configuration file uses for this preset.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Privacy => "privacy",
            Preset::None => "none",
        }
    }
}

/// What a rule does to a field whose line its pattern matches.
#[derive(Debug, Clone)]
pub enum Action {
    /// Remove the field.
    Remove,
    /// Replace the whole field with this template, `$1` and `${name}`
    /// expanded from the match (regex crate syntax; `$$` is a dollar).
    Replace(String),
}

/// Why the scrub settings are unusable. Every message starts with the
/// setting it is about (`headers.remove`, `headers.rule #N`) and says
/// what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScrubError {
    /// A `remove` entry is not a header field name.
    InvalidName { name: String },
    /// A `remove` entry names a protected field.
    ProtectedRemove { name: String },
    /// A rule's pattern does not compile.
    InvalidPattern { rule: usize, error: String },
    /// A rule's pattern matches the sample line of a protected field.
    ProtectedPattern { rule: usize, sample: String },
    /// A rule's pattern starts by naming a protected field.
    TargetsProtected { rule: usize, name: String },
    /// A rule's replacement can never be a header field.
    InvalidReplacement { rule: usize, reason: &'static str },
    /// A rule's replacement names a protected field or Bcc.
    ProtectedReplacement { rule: usize, name: String },
    /// A rule's replacement uses a capture group its pattern lacks.
    UnknownGroup { rule: usize, group: String },
}

impl fmt::Display for ScrubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScrubError::InvalidName { name } => write!(
                f,
                "headers.remove: {name:?} is not a header field name (printable \
                 ASCII without spaces or colons); write the bare name, e.g. \"X-Mailer\""
            ),
            ScrubError::ProtectedRemove { name } => write!(
                f,
                "headers.remove: {name} is never removed ({PROTECTED_TEXT} are \
                 protected); take it out of the list"
            ),
            ScrubError::InvalidPattern { rule, error } => write!(
                f,
                "headers.rule #{rule}: invalid pattern (regex crate syntax): {error}"
            ),
            ScrubError::ProtectedPattern { rule, sample } => write!(
                f,
                "headers.rule #{rule}: the pattern matches the protected header line \
                 {sample:?}, and rules may not touch {PROTECTED_TEXT}; anchor the \
                 pattern to the header you mean, e.g. \"^X-Mailer: \""
            ),
            ScrubError::TargetsProtected { rule, name } => write!(
                f,
                "headers.rule #{rule}: the pattern names the protected header {name}, \
                 and rules may not touch {PROTECTED_TEXT}; remove the rule"
            ),
            ScrubError::InvalidReplacement { rule, reason } => write!(
                f,
                "headers.rule #{rule}: the replacement {reason}; it must be a whole \
                 header line \"Name: value\", e.g. \"X-Mailer: $1\""
            ),
            ScrubError::ProtectedReplacement { rule, name } => write!(
                f,
                "headers.rule #{rule}: the replacement would create a {name} field, \
                 and rules may not add {PROTECTED_TEXT} or Bcc fields; use another \
                 field name"
            ),
            ScrubError::UnknownGroup { rule, group } => write!(
                f,
                "headers.rule #{rule}: the replacement refers to capture group \
                 ${{{group}}}, which the pattern does not have; when letters or digits \
                 follow a group, write ${{1}}x rather than $1x"
            ),
        }
    }
}

impl std::error::Error for ScrubError {}

/// One compiled `[[headers.rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 1-based position in the file, for messages.
    index: usize,
    regex: Regex,
    action: Action,
}

impl Rule {
    /// Compiles and checks rule number `index` (1-based, used in messages).
    ///
    /// A rule is refused if its pattern matches the sample line of any
    /// protected field (built from [`SAMPLE_NAMES`] and [`SAMPLE_VALUES`]),
    /// if it starts by naming a protected field literally (`^Subject: `),
    /// or if its replacement could never be a valid, unprotected field.
    ///
    /// Limitation: samples cannot prove that a pattern never matches a
    /// protected field (`^(?i)subject: \[spam\]`-like patterns with unusual
    /// text pass), so this only catches rules that visibly aim at them;
    /// [`scrub`] never applies any rule to a protected field anyway.
    pub fn new(index: usize, pattern: &str, action: Action) -> Result<Rule, ScrubError> {
        // Bytes, with ASCII classes and case folding, as Postfix's regexp
        // tables: header fields are ASCII (RFC 5322; non-ASCII text is
        // encoded words), and regex's Unicode tables would cost every
        // mailhop process about 100 KiB of relocated pointers at start-up.
        let regex = RegexBuilder::new(pattern)
            .unicode(false)
            .build()
            .map_err(|e| ScrubError::InvalidPattern {
                rule: index,
                error: e.to_string(),
            })?;
        if let Some(name) = literal_protected_name(pattern) {
            return Err(ScrubError::TargetsProtected { rule: index, name });
        }
        if let Some(sample) = protected_sample_match(&regex) {
            return Err(ScrubError::ProtectedPattern {
                rule: index,
                sample,
            });
        }
        if let Action::Replace(template) = &action {
            check_template(index, template, &regex)?;
        }
        Ok(Rule {
            index,
            regex,
            action,
        })
    }

    /// The 1-based rule number given to [`Rule::new`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// What the rule does on a match.
    pub fn action(&self) -> &Action {
        &self.action
    }
}

/// The validated `[headers]` section.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub preset: Preset,
    /// Extra field names to remove, every instance, in any case.
    pub remove: Vec<String>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
}

impl Settings {
    /// Checks that every `remove` entry is a field name and not a
    /// protected one; rules were checked by [`Rule::new`].
    pub fn new(
        preset: Preset,
        remove: Vec<String>,
        rules: Vec<Rule>,
    ) -> Result<Settings, ScrubError> {
        for name in &remove {
            if name.is_empty() || !name.bytes().all(is_name_char) {
                return Err(ScrubError::InvalidName { name: name.clone() });
            }
            if is_protected(name) {
                return Err(ScrubError::ProtectedRemove { name: name.clone() });
            }
        }
        Ok(Settings {
            preset,
            remove,
            rules,
        })
    }
}

/// What [`scrub`] did to one header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Fields removed (by the preset, `remove` or a rule).
    pub removed: usize,
    /// Fields rewritten by rules and kept.
    pub replaced: usize,
    /// Replacements that were not applied, and why. They name the rule and
    /// the field but never quote values, which may hold secrets.
    pub warnings: Vec<String>,
}

/// Whether scrubbing must leave fields called `name` alone (ASCII case
/// ignored): From, To, Cc, Date, Message-ID, Subject, MIME-Version and
/// every `Content-*` field.
pub fn is_protected(name: &str) -> bool {
    is_protected_bytes(name.as_bytes())
}

fn is_protected_bytes(name: &[u8]) -> bool {
    let prefix = PROTECTED_PREFIX.as_bytes();
    PROTECTED
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p.as_bytes()))
        || name
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Applies `settings` to `header`: the preset first, then `remove`, then
/// the rules in order, so rules only see fields that survived the lists.
/// Protected fields are skipped by all three. Never fails: a replacement
/// that is not a valid field leaves the field as it was and adds a warning.
pub fn scrub(header: &mut Header, settings: &Settings) -> Report {
    let mut report = Report::default();
    if settings.preset == Preset::Privacy {
        report.removed += header
            .retain(|f| is_protected_bytes(f.name()) || !PRIVACY_PRESET.iter().any(|n| f.is(n)));
    }
    if !settings.remove.is_empty() {
        report.removed += header
            .retain(|f| is_protected_bytes(f.name()) || !settings.remove.iter().any(|n| f.is(n)));
    }
    if !settings.rules.is_empty() {
        apply_rules(header, &settings.rules, &mut report);
    }
    report
}

/// What the rules decided for one field.
enum Outcome {
    Keep,
    Remove,
    Replace(Field),
}

fn apply_rules(header: &mut Header, rules: &[Rule], report: &mut Report) {
    let outcomes: Vec<Outcome> = header
        .fields()
        .iter()
        .map(|field| field_outcome(field, rules, &mut report.warnings))
        .collect();
    let mut remove = Vec::with_capacity(outcomes.len());
    for (index, outcome) in outcomes.into_iter().enumerate() {
        remove.push(matches!(outcome, Outcome::Remove));
        if let Outcome::Replace(field) = outcome {
            header.replace_at(index, field);
            report.replaced += 1;
        }
    }
    // `retain` visits fields in order, exactly once each, so the flags line
    // up with the fields they were computed for.
    let mut flags = remove.into_iter();
    report.removed += header.retain(|_| !flags.next().unwrap_or(false));
}

/// Runs every rule over one field. A replaced field is what later rules
/// see; a removed one is seen by none.
fn field_outcome(original: &Field, rules: &[Rule], warnings: &mut Vec<String>) -> Outcome {
    // Defence in depth: load-time checks are heuristics (see `Rule::new`).
    if is_protected_bytes(original.name()) {
        return Outcome::Keep;
    }
    let mut current: Option<Field> = None;
    let mut line = logical_line(original);
    for rule in rules {
        let Some(caps) = rule.regex.captures(&line) else {
            continue;
        };
        match &rule.action {
            Action::Remove => return Outcome::Remove,
            Action::Replace(template) => {
                let mut new_line = Vec::new();
                caps.expand(template.as_bytes(), &mut new_line);
                if new_line == line {
                    continue;
                }
                let name = current.as_ref().unwrap_or(original).name();
                match build_field(&new_line) {
                    Ok(field) => {
                        line = logical_line(&field);
                        current = Some(field);
                    }
                    Err(reason) => warnings.push(format!(
                        "headers.rule #{}: not applied to a {} field: the replacement {reason}; \
                         the field was left as it was",
                        rule.index,
                        String::from_utf8_lossy(name)
                    )),
                }
            }
        }
    }
    match current {
        Some(field) if field != *original => Outcome::Replace(field),
        _ => Outcome::Keep,
    }
}

/// `Name: value` with the name as written and the value unfolded and
/// trimmed: the text rules match.
fn logical_line(field: &Field) -> Vec<u8> {
    let value = field.unfolded_value();
    let mut line = Vec::with_capacity(field.name().len() + 2 + value.len());
    line.extend_from_slice(field.name());
    line.extend_from_slice(b": ");
    line.extend_from_slice(&value);
    line
}

/// Turns an expanded replacement into a field, folded to the usual line
/// length, or says why it cannot be one.
fn build_field(line: &[u8]) -> Result<Field, String> {
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err("contains a line break".to_owned());
    }
    if line.contains(&0) {
        return Err("contains a NUL byte".to_owned());
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err("has no colon after a field name".to_owned());
    };
    let name = line.get(..colon).unwrap_or_default();
    if name.is_empty() || !name.iter().all(|&b| is_name_char(b)) {
        return Err("does not start with a valid field name and a colon".to_owned());
    }
    // Only printable ASCII passed the check above, so this cannot fail.
    let Ok(name) = std::str::from_utf8(name) else {
        return Err("does not start with a valid field name and a colon".to_owned());
    };
    if forbidden_new_name(name) {
        return Err(format!("would create a {name} field"));
    }
    let value = line.get(colon + 1..).unwrap_or_default();
    let raw = fold(name, value);
    // Reparsing is the final word on validity, and gives a `Field` whose
    // raw bytes are exactly what will be written.
    match Header::parse(&raw) {
        Ok(parsed) if parsed.len() == 1 => parsed
            .fields()
            .first()
            .cloned()
            .ok_or_else(|| "is not a header field".to_owned()),
        _ => Err("is not a header field".to_owned()),
    }
}

/// Whether a replacement may not produce a field called `name`: a
/// protected one (it would duplicate or forge it), or Bcc, which would
/// reveal blind recipients now that the envelope is fixed.
fn forbidden_new_name(name: &str) -> bool {
    is_protected(name) || name.eq_ignore_ascii_case("Bcc")
}

/// RFC 5322 3.6.8 ftext: printable US-ASCII except the colon.
fn is_name_char(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// The first protected sample line `regex` matches, if any.
fn protected_sample_match(regex: &Regex) -> Option<String> {
    for name in SAMPLE_NAMES {
        // Fields may be written in any case; a case-sensitive pattern for
        // `from:` must be caught as surely as one for `From:`.
        for written in [
            name.to_string(),
            name.to_ascii_lowercase(),
            name.to_ascii_uppercase(),
        ] {
            for value in SAMPLE_VALUES {
                let line = format!("{written}: {value}");
                if regex.is_match(line.as_bytes()) {
                    return Some(line);
                }
            }
        }
    }
    None
}

/// If `pattern` starts (after `^`, `\A` and inline flags) with a literal
/// `Name:` whose name is protected, that name. Such a rule can only ever
/// match protected fields, so it would silently do nothing: refuse it.
fn literal_protected_name(pattern: &str) -> Option<String> {
    let mut rest = pattern;
    loop {
        if let Some(r) = rest.strip_prefix('^').or_else(|| rest.strip_prefix("\\A")) {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("(?") {
            // An inline flag group such as `(?i)` or `(?i-u)`.
            let end = r.find(')')?;
            let flags = r.get(..end)?;
            if flags.is_empty() || !flags.chars().all(|c| "imsuxR-".contains(c)) {
                return None;
            }
            rest = r.get(end + 1..)?;
        } else {
            break;
        }
    }
    let mut name = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => return is_protected(&name).then_some(name),
            '\\' => match chars.next() {
                // Escaped punctuation is a literal character.
                Some(e) if e.is_ascii_punctuation() && e != ':' => name.push(e),
                Some(':') => return is_protected(&name).then_some(name),
                _ => return None,
            },
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => name.push(c),
            _ => return None,
        }
    }
    None
}

/// Checks what can be known about a replacement before any message: no
/// line breaks, only capture groups the pattern has, and, when the name
/// part is literal, a valid and unprotected field name.
fn check_template(rule: usize, template: &str, regex: &Regex) -> Result<(), ScrubError> {
    if template.contains(['\r', '\n']) {
        return Err(ScrubError::InvalidReplacement {
            rule,
            reason: "contains a line break",
        });
    }
    for group in template_groups(template) {
        let exists = match group.parse::<usize>() {
            Ok(n) => n < regex.captures_len(),
            Err(_) => regex.capture_names().any(|n| n == Some(group)),
        };
        if !exists {
            return Err(ScrubError::UnknownGroup {
                rule,
                group: group.to_owned(),
            });
        }
    }
    match template.split_once(':') {
        // The name comes (partly) from the match: checked per message.
        Some((name, _)) if name.contains('$') => Ok(()),
        Some((name, _)) => {
            if name.is_empty() || !name.bytes().all(is_name_char) {
                Err(ScrubError::InvalidReplacement {
                    rule,
                    reason: "does not start with a valid field name and a colon",
                })
            } else if forbidden_new_name(name) {
                Err(ScrubError::ProtectedReplacement {
                    rule,
                    name: name.to_owned(),
                })
            } else {
                Ok(())
            }
        }
        None if template.contains('$') => Ok(()),
        None => Err(ScrubError::InvalidReplacement {
            rule,
            reason: "has no colon after a field name",
        }),
    }
}

/// The capture group references in a replacement, following the regex
/// crate's `expand` rules: `$$` is a dollar, `${name}` runs to the brace,
/// `$name` takes the longest run of `[_0-9A-Za-z]`, and a `$` followed by
/// anything else is literal.
fn template_groups(template: &str) -> Vec<&str> {
    let mut groups = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        let after = rest.get(at + 1..).unwrap_or_default();
        if let Some(r) = after.strip_prefix('$') {
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            match r.find('}') {
                Some(end) if end > 0 => {
                    groups.push(r.get(..end).unwrap_or_default());
                    rest = r.get(end + 1..).unwrap_or_default();
                }
                _ => rest = after,
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if end > 0 {
                groups.push(after.get(..end).unwrap_or_default());
            }
            rest = after.get(end..).unwrap_or_default();
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(block: &[u8]) -> Header {
        Header::parse(block).unwrap()
    }

    fn bytes(h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        h.write_to(&mut out);
        out
    }

    fn rule(index: usize, pattern: &str, action: Action) -> Rule {
        Rule::new(index, pattern, action).unwrap()
    }

    fn replace(text: &str) -> Action {
        Action::Replace(text.to_owned())
    }

    fn settings(preset: Preset, remove: &[&str], rules: Vec<Rule>) -> Settings {
        Settings::new(
            preset,
            remove.iter().map(|s| s.to_string()).collect(),
            rules,
        )
        .unwrap()
    }

    #[test]
    fn privacy_removes_every_preset_entry_in_any_case() {
        let mut h = header(
            b"Received: from localhost by host\r\n\
              \tfor <root@host>; Tue, 1 Jul 2025 10:00:00 +0000\r\n\
              From: root@host\r\n\
              received: by host (Postfix, from userid 0)\r\n\
              User-Agent: mutt/2.2\r\n\
              x-mailer: PHPMailer 6.9\r\n\
              X-MAILER: again\r\n\
              X-Originating-IP: [192.0.2.7]\r\n\
              X-PHP-Originating-Script: 33:mail.php\r\n\
              X-Cron-Env: <SHELL=/bin/sh>\r\n\
              X-Cron-Env: <API_TOKEN=secret>\r\n\
              X-Powered-By: PHP/8.1.2\r\n\
              X-Newsreader: Pan 0.149\r\n\
              X-MimeOLE: Produced By Microsoft MimeOLE V6.00\r\n\
              X-Forwarded-For: 198.51.100.4, 10.0.0.2\r\n\
              X-PHP-Script: www.example.org/contact.php for 198.51.100.4\r\n\
              X-Source: /usr/bin/php\r\n\
              X-Source-Args: /usr/bin/php /home/alice/public_html/mail.php\r\n\
              X-Source-Dir: example.org:/public_html\r\n\
              Subject: hi\r\n",
        );
        let report = scrub(&mut h, &Settings::default());
        assert_eq!(bytes(&h), b"From: root@host\r\nSubject: hi\r\n");
        assert_eq!(
            report,
            Report {
                removed: 17,
                ..Report::default()
            }
        );
        for name in PRIVACY_PRESET {
            assert!(!is_protected(name), "{name}");
        }
    }

    #[test]
    fn preset_none_keeps_them() {
        let block =
            b"User-Agent: mutt\r\nX-Mailer: x\r\nReceived: by host\r\nX-Cron-Env: <A=b>\r\n";
        let mut h = header(block);
        let report = scrub(&mut h, &settings(Preset::None, &[], Vec::new()));
        assert_eq!(bytes(&h), block);
        assert_eq!(report, Report::default());
    }

    #[test]
    fn remove_list_is_case_insensitive_and_total() {
        let mut h = header(b"X-Foo: 1\r\nTo: a@b.c\r\nx-foo: 2\r\nX-Bar: 3\r\nX-Keep: 4\r\n");
        let report = scrub(
            &mut h,
            &settings(Preset::None, &["X-FOO", "x-bar"], Vec::new()),
        );
        assert_eq!(bytes(&h), b"To: a@b.c\r\nX-Keep: 4\r\n");
        assert_eq!(report.removed, 3);
    }

    #[test]
    fn remove_list_refuses_protected_and_invalid_names() {
        for name in [
            "From",
            "from",
            "Subject",
            "MIME-Version",
            "content-type",
            "Content-Foo",
        ] {
            let e = Settings::new(Preset::Privacy, vec![name.to_owned()], Vec::new()).unwrap_err();
            assert_eq!(
                e,
                ScrubError::ProtectedRemove {
                    name: name.to_owned()
                }
            );
        }
        let e = Settings::new(Preset::Privacy, vec!["From".to_owned()], Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "headers.remove: From is never removed (From, To, Cc, Date, Message-ID, \
             Subject, MIME-Version or Content-* are protected); take it out of the list"
        );
        for name in ["", "X Foo", "X-Foo:", "Ä"] {
            let e = Settings::new(Preset::Privacy, vec![name.to_owned()], Vec::new()).unwrap_err();
            assert!(matches!(e, ScrubError::InvalidName { .. }), "{name}");
        }
    }

    #[test]
    fn regex_remove() {
        let mut h = header(b"X-Trace: abc\r\nX-Other: keep\r\nX-Trace-Id: 7\r\n");
        let s = settings(Preset::None, &[], vec![rule(1, "^X-Trace", Action::Remove)]);
        let report = scrub(&mut h, &s);
        assert_eq!(bytes(&h), b"X-Other: keep\r\n");
        assert_eq!(report.removed, 2);
    }

    #[test]
    fn regex_replace_with_groups() {
        let mut h = header(b"X-Script: /home/alice/site/mail.php\r\nTo: a@b.c\r\n");
        let s = settings(
            Preset::None,
            &[],
            vec![
                rule(1, r"^X-Script: .*/([^/]+)$", replace("X-Script: $1")),
                rule(2, r"^(?P<n>X-Nothing): (.*)$", replace("${n}: x$2")),
            ],
        );
        let report = scrub(&mut h, &s);
        assert_eq!(bytes(&h), b"X-Script: mail.php\r\nTo: a@b.c\r\n");
        assert_eq!(
            report,
            Report {
                replaced: 1,
                ..Report::default()
            }
        );
    }

    #[test]
    fn later_rules_see_replacements_not_removed_fields() {
        let mut h = header(b"X-A: one\r\nX-Gone: x\r\n");
        let s = settings(
            Preset::None,
            &[],
            vec![
                rule(1, "^X-A: (.*)$", replace("X-B: $1")),
                rule(2, "^X-B: (.*)$", replace("X-C: ${1} two")),
                rule(3, "^X-A:", replace("X-Wrong: stale line seen")),
                rule(4, "^X-Gone:", Action::Remove),
                rule(5, "^X-Gone:", replace("X-Back: resurrected")),
            ],
        );
        let report = scrub(&mut h, &s);
        assert_eq!(bytes(&h), b"X-C: one two\r\n");
        assert_eq!(report.replaced, 1);
        assert_eq!(report.removed, 1);

        // Replaced, then removed by a later rule: counted as removed only.
        let mut h = header(b"X-A: one\r\n");
        let s = settings(
            Preset::None,
            &[],
            vec![
                rule(1, "^X-A: (.*)$", replace("X-B: $1")),
                rule(2, "^X-B:", Action::Remove),
            ],
        );
        let report = scrub(&mut h, &s);
        assert!(h.is_empty());
        assert_eq!((report.removed, report.replaced), (1, 0));
    }

    #[test]
    fn patterns_match_bytes_with_ascii_classes() {
        let mut h = header(
            b"x-trace: ab_1\r\nX-Name: Andr\xc3\xa9\r\nX-Raw: \xff\xfe\r\nX-Keep: \xc3\xa9t\xc3\xa9\r\n",
        );
        let rules = vec![
            rule(1, r"(?i)^X-TRACE: \w+$", Action::Remove),
            rule(2, "^X-Name: Andr\u{e9}$", Action::Remove),
            rule(3, r"^X-Raw: .+$", Action::Remove),
            // \w is ASCII: an accented letter is not a word character.
            rule(4, r"^X-Keep: \w+$", Action::Remove),
        ];
        let report = scrub(&mut h, &settings(Preset::None, &[], rules));
        assert_eq!(bytes(&h), b"X-Keep: \xc3\xa9t\xc3\xa9\r\n");
        assert_eq!(report.removed, 3);
        let e = Rule::new(5, r"^X-Script: \p{Greek}", Action::Remove).unwrap_err();
        assert!(
            matches!(e, ScrubError::InvalidPattern { rule: 5, .. }),
            "{e}"
        );
    }

    #[test]
    fn invalid_regex_names_the_rule() {
        let e = Rule::new(3, "^X-Foo: (", Action::Remove).unwrap_err();
        assert!(matches!(e, ScrubError::InvalidPattern { rule: 3, .. }));
        assert!(
            e.to_string()
                .starts_with("headers.rule #3: invalid pattern"),
            "{e}"
        );
    }

    #[test]
    fn rules_touching_protected_fields_are_refused() {
        for pattern in [
            "^From:",
            "^Subject: ",
            "(?i)^from: .*",
            "^from:",
            "Subject",
            "@",
            ".",
            "",
            "^(To|Cc):",
            "^Content-",
            "charset=utf-8",
            "^Message-Id:",
        ] {
            let e = Rule::new(2, pattern, Action::Remove).unwrap_err();
            assert!(
                matches!(
                    e,
                    ScrubError::ProtectedPattern { rule: 2, .. }
                        | ScrubError::TargetsProtected { rule: 2, .. }
                ),
                "{pattern}: {e:?}"
            );
        }
        let e = Rule::new(2, "^From:", Action::Remove).unwrap_err();
        assert!(e.to_string().starts_with("headers.rule #2: "), "{e}");
        // Too specific for the samples, but literally aimed at Subject.
        for pattern in [
            r"^Subject: \[SPAM\]",
            r"(?i)^subject:\s*\[x\]",
            r"\AContent\-Type: foo",
        ] {
            let e = Rule::new(4, pattern, Action::Remove).unwrap_err();
            assert!(
                matches!(e, ScrubError::TargetsProtected { rule: 4, .. }),
                "{pattern}"
            );
        }
        // Anchored to other fields: fine, even when they mention addresses.
        for pattern in [
            "^X-Mailer:",
            r"^X-Sender: .*@example\.org",
            "^X-From-Host:",
            "^Sender:",
        ] {
            Rule::new(1, pattern, Action::Remove).unwrap();
        }
    }

    #[test]
    fn protected_fields_never_touched_at_run_time() {
        // A pattern that passes the load check but matches a protected
        // field: the limitation documented on `Rule::new`.
        let r = rule(1, r"^(?i)subj\w+: \[spam\]", Action::Remove);
        let block = b"Subject: [SPAM] buy\r\nContent-Type: text/plain\r\n";
        let mut h = header(block);
        let report = scrub(&mut h, &settings(Preset::Privacy, &[], vec![r]));
        assert_eq!(bytes(&h), block);
        assert_eq!(report, Report::default());
    }

    #[test]
    fn replacements_are_checked_at_load() {
        let e = Rule::new(5, "^X-A: (.*)", replace("From: $1")).unwrap_err();
        assert_eq!(
            e,
            ScrubError::ProtectedReplacement {
                rule: 5,
                name: "From".to_owned()
            }
        );
        let e = Rule::new(5, "^X-A: (.*)", replace("X-B: $2")).unwrap_err();
        assert_eq!(
            e,
            ScrubError::UnknownGroup {
                rule: 5,
                group: "2".to_owned()
            }
        );
        let e = Rule::new(5, "^X-A: (.*)", replace("X-B: $1x")).unwrap_err();
        assert_eq!(
            e,
            ScrubError::UnknownGroup {
                rule: 5,
                group: "1x".to_owned()
            }
        );
        assert!(e.to_string().contains("${1}x"), "{e}");
        let e = Rule::new(5, "^X-A: (.*)", replace("X-B: ${nope}")).unwrap_err();
        assert_eq!(
            e,
            ScrubError::UnknownGroup {
                rule: 5,
                group: "nope".to_owned()
            }
        );
        for bad in ["no colon", "", "X B: y", "X-B: a\r\nBcc: evil@example.org"] {
            let e = Rule::new(5, "^X-A:", replace(bad)).unwrap_err();
            assert!(
                matches!(e, ScrubError::InvalidReplacement { rule: 5, .. }),
                "{bad:?}"
            );
        }
        for good in ["X-B: $$5 ${1}x $0", "$1", "X-B:", "X-$1: y"] {
            Rule::new(5, "^X-A: (.*)", replace(good)).unwrap();
        }
    }

    #[test]
    fn folded_field_is_matched_unfolded() {
        // Unfolding drops the CRLF and keeps the whitespace after it.
        let mut h =
            header(b"X-Long: first part\r\n second   part\r\nX-Tab: a\r\n\tb\r\nX-Other: 1\r\n");
        let s = settings(
            Preset::None,
            &[],
            vec![
                rule(1, "^X-Long: first part second   part$", Action::Remove),
                rule(2, r"^X-Tab: a\tb$", Action::Remove),
            ],
        );
        assert_eq!(scrub(&mut h, &s).removed, 2);
        assert_eq!(bytes(&h), b"X-Other: 1\r\n");
    }

    #[test]
    fn untouched_fields_stay_byte_exact() {
        let block: &[u8] = b"From:   \"Odd\"  <a@b.c>  \r\n\
            Subject: J\xc3\xb6rg \xff raw\r\n\
            X-Keep :  spaced\r\n\
            \t folded  \r\n\
            X-Mailer: gone\r\n\
            X-Replace: old\r\n\
            X-Same: same\r\n";
        let mut h = header(block);
        let s = settings(
            Preset::Privacy,
            &[],
            vec![
                rule(1, "^X-Replace: (.*)", replace("X-Replace: new $1")),
                // Matches, but the result is the same line: no rewrite.
                rule(2, "^X-Same: (.*)", replace("X-Same: $1")),
            ],
        );
        let report = scrub(&mut h, &s);
        let expected: &[u8] = b"From:   \"Odd\"  <a@b.c>  \r\n\
            Subject: J\xc3\xb6rg \xff raw\r\n\
            X-Keep :  spaced\r\n\
            \t folded  \r\n\
            X-Replace: new old\r\n\
            X-Same: same\r\n";
        assert_eq!(bytes(&h), expected);
        assert_eq!((report.removed, report.replaced), (1, 1));
    }

    #[test]
    fn invalid_replacement_is_not_applied() {
        let block: &[u8] = b"X-Data: Bcc: evil@example.org\r\nX-Name: From\r\nX-Sp: a b\r\n";
        let mut h = header(block);
        let s = settings(
            Preset::None,
            &[],
            vec![
                rule(1, "^X-Data: (.*)$", replace("$1")),
                rule(2, "^X-Name: (.*)$", replace("$1: spoofed")),
                rule(3, "^X-Sp: (.*)$", replace("$1: v")),
                rule(4, "^X-Sp: (.*)$", replace("X-Sp2: $1")),
            ],
        );
        let report = scrub(&mut h, &s);
        assert_eq!(
            bytes(&h),
            b"X-Data: Bcc: evil@example.org\r\nX-Name: From\r\nX-Sp2: a b\r\n"
        );
        assert_eq!((report.removed, report.replaced), (0, 1));
        let w = &report.warnings;
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(
            w[0],
            "headers.rule #1: not applied to a X-Data field: the replacement would \
             create a Bcc field; the field was left as it was"
        );
        assert!(w[1].starts_with("headers.rule #2: not applied to a X-Name field"));
        assert!(w[1].contains("would create a From field"));
        assert!(w[2].starts_with("headers.rule #3: "));
        assert!(w[2].contains("valid field name"));
        // Warnings never quote values.
        assert!(!w.concat().contains("spoofed") && !w.concat().contains("evil"));
    }

    #[test]
    fn replacement_with_line_break_from_capture_is_not_applied() {
        // A stray LF inside a line (not a fold) reaches the captures.
        let mut h = header(b"X-Odd: a\nb\r\n");
        let s = settings(
            Preset::None,
            &[],
            vec![rule(1, r"^X-Odd: (?s)(.*)$", replace("X-New: $1"))],
        );
        let report = scrub(&mut h, &s);
        assert_eq!(bytes(&h), b"X-Odd: a\nb\r\n");
        assert_eq!(report.replaced, 0);
        assert_eq!(report.warnings.len(), 1);
        assert!(
            report.warnings[0].contains("line break"),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn long_replacement_is_folded() {
        let mut h = header(b"X-A: x\r\n");
        let long = "word ".repeat(40);
        let s = settings(
            Preset::None,
            &[],
            vec![rule(1, "^X-A: x$", replace(&format!("X-A: {long}")))],
        );
        scrub(&mut h, &s);
        let out = bytes(&h);
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= 80);
        }
        assert_eq!(h.fields()[0].unfolded_value(), long.trim_end().as_bytes());
    }

    #[test]
    fn protection_list() {
        for name in [
            "From",
            "to",
            "CC",
            "Date",
            "message-id",
            "Subject",
            "Mime-Version",
            "Content-Type",
            "content-x",
        ] {
            assert!(is_protected(name), "{name}");
        }
        for name in [
            "Bcc",
            "Sender",
            "Reply-To",
            "Received",
            "X-Content-Type",
            "Content",
            "Contents",
        ] {
            assert!(!is_protected(name), "{name}");
        }
        assert_eq!(Preset::from_name("privacy"), Some(Preset::Privacy));
        assert_eq!(Preset::from_name("none"), Some(Preset::None));
        assert_eq!(Preset::from_name("Privacy"), None);
        for name in Preset::NAMES {
            assert_eq!(Preset::from_name(name).map(Preset::name), Some(*name));
        }
    }
}
