//! SMTP replies: parsing (pure, bounded), classification of refusals, and
//! what an answer means for the command it answers.

use std::fmt;

/// Longest reply line accepted (RFC 5321 says 512; servers exceed it).
pub(crate) const MAX_LINE: usize = 4096;
/// Most lines in one reply.
pub(crate) const MAX_LINES: usize = 200;

/// An SMTP reply: code, enhanced status (RFC 3463) if present, and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

/// Why a server refused something, in the classes the delivery logic acts
/// on differently. Derived from the enhanced status code and the words
/// providers actually send, since many servers put the only precise
/// information in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    /// The recipient does not exist (5.1.x other than the sender codes).
    UnknownUser,
    /// The server will not take mail from this sender: not owned by the
    /// login, Send As denied, sender domain refused.
    SenderPolicy,
    /// Throttling: too many connections, messages or logins, or a sending
    /// quota. Waiting helps; retrying now makes it worse.
    RateLimited,
    /// Anything else (including positive replies).
    Other,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code (`5.7.139`), when the first line has one.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let word = first.split_whitespace().next()?;
        let parts: Vec<&str> = word.split('.').collect();
        (parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then_some(word)
    }

    /// One line for humans: `550 5.1.1 <a@b>: User unknown`, with control
    /// characters removed so a hostile server cannot forge terminal output.
    pub fn one_line(&self) -> String {
        let text: String = self.lines.join(" / ");
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("{} {}", self.code, clean.trim())
    }

    pub(crate) fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }

    fn contains_nocase(&self, needle: &str) -> bool {
        self.lines
            .iter()
            .any(|l| l.to_ascii_lowercase().contains(needle))
    }

    /// `word` as a whole word, any case ("rate", not "generated").
    fn has_word(&self, word: &str) -> bool {
        self.lines.iter().any(|l| {
            l.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w.eq_ignore_ascii_case(word))
        })
    }

    /// What kind of refusal this is (see `RefusalClass`). Positive
    /// replies are `Other`.
    pub fn refusal_class(&self) -> RefusalClass {
        if self.is_positive() {
            return RefusalClass::Other;
        }
        let enhanced = self.enhanced().unwrap_or("");
        let (class, subject, detail) = split_enhanced(enhanced);
        if self.is_rate_limit(class, subject, detail) {
            return RefusalClass::RateLimited;
        }
        if self.is_sender_policy(subject, detail) {
            return RefusalClass::SenderPolicy;
        }
        // X.1.7 and X.1.8 are the sender's address, caught above.
        let recipient_text = ["user unknown", "does not exist", "recipientnotfound"]
            .iter()
            .any(|w| self.contains_nocase(w));
        if subject == "1" || (enhanced.is_empty() && recipient_text) {
            return RefusalClass::UnknownUser;
        }
        RefusalClass::Other
    }

    fn is_rate_limit(&self, class: &str, subject: &str, detail: &str) -> bool {
        // Quotas come as 5xx too (Office 365 5.2.0 SubmissionQuotaExceeded,
        // Gmail 5.4.5 daily sending limit): the answer changes tomorrow.
        let quota = [
            "quota exceeded",
            "quotaexceeded",
            "sending limit",
            "rate limit",
        ]
        .iter()
        .any(|w| self.contains_nocase(w));
        // X.2.2 is the recipient's mailbox that is full ("552 5.2.2 …
        // quota exceeded"): the recipient's problem, not a sending limit.
        let mailbox_full = subject == "2" && detail == "2";
        if quota && !mailbox_full {
            return true;
        }
        if class != "4" && !(class.is_empty() && self.is_transient()) {
            return false;
        }
        // 4.7.0 is what Gmail and Postfix use for throttling; 4.3.2 is
        // Office 365's "service not available / thread limit".
        (subject == "7" && detail == "0")
            || (subject == "3" && detail == "2")
            || self.code == 421
            || self.has_word("rate")
            || ["too many", "try again later", "throttl"]
                .iter()
                .any(|w| self.contains_nocase(w))
    }

    fn is_sender_policy(&self, subject: &str, detail: &str) -> bool {
        (subject == "1" && (detail == "7" || detail == "8"))
            || (subject == "2" && detail == "252")
            || (subject == "7" && detail == "60")
            || self.contains("SendAsDenied")
            || [
                "sender address rejected",
                "not owned by user",
                "send as this sender",
                "not allowed to send as",
                "sender not allowed",
            ]
            .iter()
            .any(|w| self.contains_nocase(w))
    }
}

/// `"5.1.10"` → `("5", "1", "10")`; anything else → empty parts.
fn split_enhanced(code: &str) -> (&str, &str, &str) {
    let mut parts = code.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => ("", "", ""),
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// What a reply means for the command it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// One of the codes the protocol prescribes for success here.
    Expected,
    /// A 4xx or 5xx: the server said no, and its code says for how long.
    Refused,
    /// A success code the protocol does not allow here (250 to DATA, 334
    /// after the password, 250 to a bare AUTH). The server is broken or
    /// something sits in the middle; neither says anything about the
    /// message, so the caller treats it as temporary (mailhop(8)).
    Violation,
}

/// Classifies `code` against the success codes `wanted` for one step.
pub(crate) fn answer(code: u16, wanted: &[u16]) -> Answer {
    if wanted.contains(&code) {
        Answer::Expected
    } else if code >= 400 {
        Answer::Refused
    } else {
        Answer::Violation
    }
}

/// Parses one reply line: `Some((code, is_last, text))`.
pub fn parse_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let code_bytes = line.get(..3)?;
    if !code_bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = code_bytes
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(200..600).contains(&code) {
        return None;
    }
    let (last, text) = match line.get(3) {
        None => (true, &b""[..]),
        Some(b' ') => (true, line.get(4..).unwrap_or_default()),
        Some(b'-') => (false, line.get(4..).unwrap_or_default()),
        Some(_) => return None,
    };
    Some((code, last, String::from_utf8_lossy(text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: text.split('\n').map(str::to_string).collect(),
        }
    }

    #[test]
    fn a_full_mailbox_is_not_a_sending_limit() {
        let full = reply(552, "5.2.2 <b@example.net>: mailbox full, quota exceeded");
        assert_ne!(full.refusal_class(), RefusalClass::RateLimited);
        let quota = reply(
            550,
            "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        );
        assert_eq!(quota.refusal_class(), RefusalClass::RateLimited);
    }

    #[test]
    fn answers_to_each_step() {
        // DATA wants 354; 250 there is a protocol break, not a refusal.
        assert_eq!(answer(354, &[354]), Answer::Expected);
        assert_eq!(answer(250, &[354]), Answer::Violation);
        assert_eq!(answer(554, &[354]), Answer::Refused);
        assert_eq!(answer(451, &[354]), Answer::Refused);
        // The password step wants 235; another 334 is a break.
        assert_eq!(answer(334, &[235]), Answer::Violation);
        assert_eq!(answer(535, &[235]), Answer::Refused);
        // A bare AUTH LOGIN wants a 334 challenge.
        assert_eq!(answer(250, &[334]), Answer::Violation);
        assert_eq!(answer(235, &[334]), Answer::Violation);
        assert_eq!(answer(504, &[334]), Answer::Refused);
    }

    /// Real texts from Office 365, Gmail and Postfix.
    #[test]
    fn refusal_classes_of_real_replies() {
        use RefusalClass::*;
        let cases: &[(u16, &str, RefusalClass)] = &[
            // Office 365
            (
                550,
                "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
                UnknownUser,
            ),
            (
                554,
                "5.2.252 SendAsDenied; alice@contoso.com not allowed to send as bob@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
                SenderPolicy,
            ),
            (
                550,
                "5.7.60 SMTP; Client does not have permissions to send as this sender",
                SenderPolicy,
            ),
            (421, "4.3.2 Service not available", RateLimited),
            (
                432,
                "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
                RateLimited,
            ),
            (
                554,
                "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception",
                RateLimited,
            ),
            (
                535,
                "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
                Other,
            ),
            (
                550,
                "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
                Other,
            ),
            // Gmail
            (
                550,
                "5.1.1 The email account that you tried to reach does not exist. Please try\n5.1.1 double-checking the recipient's email address for typos or\n5.1.1 unnecessary spaces.",
                UnknownUser,
            ),
            (
                421,
                "4.7.0 Try again later, closing connection. (EHLO) d2-20020a05",
                RateLimited,
            ),
            (
                454,
                "4.7.0 Too many login attempts, please try again later. 123si",
                RateLimited,
            ),
            (
                450,
                "4.2.1 The user you are trying to contact is receiving mail at a rate that\n4.2.1 prevents additional messages from being delivered.",
                RateLimited,
            ),
            (
                550,
                "5.4.5 Daily user sending limit exceeded. For more information on Gmail\n5.4.5 sending limits go to",
                RateLimited,
            ),
            (
                451,
                "4.3.0 Error: queue file write error; generated by the relay",
                Other,
            ),
            (
                552,
                "5.7.0 This message was blocked because its content presents a potential\n5.7.0 security issue.",
                Other,
            ),
            // Postfix
            (
                550,
                "5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
                UnknownUser,
            ),
            (
                553,
                "5.7.1 <ceo@example.org>: Sender address rejected: not owned by user alice",
                SenderPolicy,
            ),
            (
                450,
                "4.1.8 <a@nxdomain.invalid>: Sender address rejected: Domain not found",
                SenderPolicy,
            ),
            (
                421,
                "4.7.0 mail.example.org Error: too many connections from 192.0.2.7",
                RateLimited,
            ),
            (452, "4.5.3 Error: too many recipients", RateLimited),
            (554, "5.7.1 <x@example.net>: Relay access denied", Other),
            (550, "User unknown", UnknownUser),
            (250, "2.1.5 Ok", Other),
        ];
        for (code, text, want) in cases {
            assert_eq!(reply(*code, text).refusal_class(), *want, "{code} {text}");
        }
    }

    #[test]
    fn reply_lines_parse() {
        assert_eq!(parse_line(b"250 OK\r\n"), Some((250, true, "OK".into())));
        assert_eq!(
            parse_line(b"250-SIZE 100\r\n"),
            Some((250, false, "SIZE 100".into()))
        );
        assert_eq!(parse_line(b"220\r\n"), Some((220, true, String::new())));
        assert_eq!(parse_line(b"25 x\r\n"), None);
        assert_eq!(parse_line(b"abc\r\n"), None);
        assert_eq!(parse_line(b"250x\r\n"), None);
        assert_eq!(parse_line(b"999 x\r\n"), None);
    }
}
