//! The SMTP AUTH password file: `user:hash` lines, the hash argon2 (PHC
//! string, `$argon2id$…`) or bcrypt (`$2b$…`). Nothing here ever holds or
//! logs a password longer than the check.

use std::collections::BTreeMap;
use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordVerifier};

use crate::exit::{self, Exit};

use super::super::failure::Failure;

/// The users and their password hashes.
#[derive(Debug)]
pub(super) struct PasswordFile {
    users: BTreeMap<String, Hash>,
}

#[derive(Debug)]
enum Hash {
    Argon2(String),
    Bcrypt(String),
}

/// A bcrypt hash of a random password, checked for unknown users so that
/// their reply takes as long as a known user's.
const DUMMY_BCRYPT: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

impl PasswordFile {
    pub(super) fn load(path: &Path) -> Result<PasswordFile, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                exit::from_io(e.kind()),
                format!("[smtpd] password_file {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text).map_err(|(line, why)| {
            Failure::new(
                Exit::Config,
                format!(
                    "[smtpd] password_file {} line {line}: {why}",
                    path.display()
                ),
            )
        })
    }

    /// Parses the file; the error is the line number and why (never the
    /// line itself, which holds a hash).
    pub(super) fn parse(text: &str) -> Result<PasswordFile, (usize, String)> {
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err((i + 1, "expected user:hash".into()));
            };
            let hash = if hash.starts_with("$argon2") {
                PasswordHash::new(hash).map_err(|e| (i + 1, format!("bad argon2 hash: {e}")))?;
                Hash::Argon2(hash.to_string())
            } else if hash.starts_with("$2") {
                Hash::Bcrypt(hash.to_string())
            } else {
                return Err((
                    i + 1,
                    "the hash must be argon2 ($argon2id$…) or bcrypt ($2b$…)".into(),
                ));
            };
            users.insert(user.to_string(), hash);
        }
        Ok(PasswordFile { users })
    }

    pub(super) fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(Hash::Argon2(h)) => PasswordHash::new(h)
                .is_ok_and(|p| Argon2::default().verify_password(password, &p).is_ok()),
            Some(Hash::Bcrypt(h)) => bcrypt::verify(password, h).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, DUMMY_BCRYPT);
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn argon2_and_bcrypt() {
        use argon2::PasswordHasher;
        let a = Argon2::default()
            .hash_password(b"pw-a")
            .unwrap()
            .to_string();
        let b = bcrypt::hash("pw-b", 4).unwrap();
        let f = PasswordFile::parse(&format!("# users\nalice:{a}\n\nbob:{b}\n")).unwrap();
        assert!(f.verify("alice", b"pw-a"));
        assert!(!f.verify("alice", b"pw-b"));
        assert!(f.verify("bob", b"pw-b"));
        assert!(!f.verify("bob", b""));
        assert!(!f.verify("carol", b"pw-a"));
    }

    #[test]
    fn bad_lines() {
        assert_eq!(PasswordFile::parse("alice").unwrap_err().0, 1);
        assert_eq!(PasswordFile::parse("\nalice:plain").unwrap_err().0, 2);
        assert!(PasswordFile::parse("a:$argon2id$garbage").is_err());
    }
}
