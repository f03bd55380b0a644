//! DKIM: signatures made by `mailhop::dkim` checked by an independent
//! verifier (dkimpy, through `tests/peers/dkimverify.py`), with keys and
//! public records made by OpenSSL, not by mailhop; and `dkim::check`
//! against a real DNS server (dnsmasq on a free loopback port).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mailhop::dkim::{self, Algorithm, Canon, DkimError, Settings};

const DOMAIN: &str = "example.test";
const NOW: u64 = 1_767_225_600;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has dkimpy: `$MAILHOP_TEST_PYTHON`, else the venv that
/// scripts/test creates.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILHOP_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = root().join(".test-venv/bin/python");
    assert!(
        venv.exists(),
        "run scripts/test to create the Python test venv (or set MAILHOP_TEST_PYTHON)"
    );
    venv
}

/// Verifies every DKIM-Signature in `message` with dkimpy, answering DNS
/// from `records` (name, TXT value). Ok: one `OK d s a` line per
/// signature, all verified. Err: the verifier's output.
pub fn verify(message: &[u8], records: &[(String, String)]) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("message.eml");
    std::fs::write(&msg, message).unwrap();
    verify_file(&msg, records)
}

fn verify_file(message: &Path, records: &[(String, String)]) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let dns = dir.path().join("dns.json");
    let map: serde_json::Map<String, serde_json::Value> = records
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    std::fs::write(&dns, serde_json::to_vec(&map).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(root().join("tests/peers/dkimverify.py"))
        .arg("--dns")
        .arg(&dns)
        .arg(message)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout.lines().map(str::to_owned).collect())
    } else {
        Err(format!(
            "dkimverify: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A private key written by OpenSSL (mode 0600) and its DNS record
/// derived by OpenSSL too, so the record does not depend on mailhop's
/// own public-key encoding.
struct TestKey {
    _dir: tempfile::TempDir,
    path: PathBuf,
    algorithm: Algorithm,
    record: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl TestKey {
    fn new(algorithm: Algorithm) -> TestKey {
        match algorithm {
            Algorithm::RsaSha256 => TestKey::rsa(2048),
            Algorithm::Ed25519Sha256 => TestKey::generate(
                Algorithm::Ed25519Sha256,
                &["genpkey", "-algorithm", "ed25519"],
            ),
        }
    }

    fn rsa(bits: u32) -> TestKey {
        TestKey::generate(
            Algorithm::RsaSha256,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
            ],
        )
    }

    fn generate(algorithm: Algorithm, args: &[&str]) -> TestKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let p = path.to_str().unwrap();
        let mut full = args.to_vec();
        full.extend(["-out", p]);
        openssl(&full);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let spki = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
        let record = match algorithm {
            Algorithm::RsaSha256 => format!("v=DKIM1; k=rsa; p={}", BASE64.encode(&spki)),
            // RFC 8463: the raw key, which ends the SubjectPublicKeyInfo.
            Algorithm::Ed25519Sha256 => format!(
                "v=DKIM1; k=ed25519; p={}",
                BASE64.encode(&spki[spki.len() - 32..])
            ),
        };
        TestKey {
            _dir: dir,
            path,
            algorithm,
            record,
        }
    }

    fn settings(&self, selector: &str) -> Settings {
        Settings::new(DOMAIN, selector, &self.path, self.algorithm)
    }

    fn load(&self) -> dkim::Key {
        let (key, warnings) = dkim::load_key(&self.path, self.algorithm, None, self.uid()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        key
    }

    fn uid(&self) -> u32 {
        std::fs::metadata(&self.path).unwrap().uid()
    }

    fn dns(&self, selector: &str) -> (String, String) {
        (
            format!("{selector}._domainkey.{DOMAIN}."),
            self.record.clone(),
        )
    }
}

/// Folded fields, raw UTF-8 in a display name and the Subject, obsolete
/// whitespace, an empty field and a field that is not signed.
const HEADER: &[u8] = "From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.test>\r\n\
To: Bob Example <bob@example.org>,\r\n\tCarol Example <carol@example.org>,\r\n   dave@example.org\r\n\
Cc:   \tcarol@example.org   \r\n\
Subject: Grüße aus Köln 🌍 — a subject long enough\r\n that it had to be folded\r\n\
Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
Message-ID: <20260101000000.1234@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
X-Empty:\r\n\
X-Mailer: mailhop tests\r\n"
    .as_bytes();

/// Quoted-printable with soft breaks on lines of 76 characters, trailing
/// whitespace, runs of blanks, and empty lines at the end.
fn qp_body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..20 {
        let line = format!("Line {i:02}: Gr=C3=BC=C3=9Fe {} x", "abcdefghij".repeat(6));
        let bytes = line.as_bytes();
        for chunk in bytes.chunks(75) {
            body.extend_from_slice(chunk);
            if chunk.len() == 75 {
                body.extend_from_slice(b"=\r\n");
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"trailing blanks   \t \r\n  two  spaces  inside\r\n\r\n\r\n\r\n");
    body
}

/// `sig` + `header` + separator + `body`.
fn assemble(sigs: &[Vec<u8>], header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = sigs.concat();
    m.extend_from_slice(header);
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(body);
    m
}

fn sign(settings: &Settings, key: &dkim::Key, header: &[u8], body: &[u8]) -> Vec<u8> {
    dkim::sign(settings, key, header, &mut &body[..], NOW).unwrap()
}

#[test]
fn every_algorithm_and_canonicalization_verifies() {
    let rsa = TestKey::new(Algorithm::RsaSha256);
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let (rsa_key, ed_key) = (rsa.load(), ed.load());
    let body = qp_body();
    for (hc, bc) in [
        (Canon::Relaxed, Canon::Relaxed),
        (Canon::Relaxed, Canon::Simple),
        (Canon::Simple, Canon::Simple),
        (Canon::Simple, Canon::Relaxed),
    ] {
        let mut sigs = Vec::new();
        let mut records = Vec::new();
        for (test_key, key, name) in [(&rsa, &rsa_key, "rsa"), (&ed, &ed_key, "ed")] {
            let selector = format!("{name}-{hc}-{bc}");
            let mut settings = test_key.settings(&selector);
            settings.header_canon = hc;
            settings.body_canon = bc;
            sigs.push(sign(&settings, key, HEADER, &body));
            records.push(test_key.dns(&selector));
        }
        let message = assemble(&sigs, HEADER, &body);
        let lines = verify(&message, &records).unwrap_or_else(|e| panic!("{hc}/{bc}: {e}"));
        assert_eq!(
            lines,
            [
                format!("OK {DOMAIN} rsa-{hc}-{bc} rsa-sha256"),
                format!("OK {DOMAIN} ed-{hc}-{bc} ed25519-sha256"),
            ]
        );
        let text = String::from_utf8_lossy(&sigs[0]).into_owned();
        assert!(text.contains(&format!("c={hc}/{bc}")), "{text}");
        assert!(text.contains(&format!("t={NOW}")), "{text}");
    }
}

#[test]
fn signed_fields_are_the_present_ones_plus_oversigned_from() {
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let sig = sign(&ed.settings("s"), &ed.load(), HEADER, b"");
    let text = String::from_utf8(sig).unwrap();
    let unfolded: String = text.split_whitespace().collect();
    let h = unfolded
        .split(';')
        .find_map(|t| t.strip_prefix("h="))
        .unwrap();
    assert_eq!(
        h,
        "From:From:Subject:Date:To:Cc:Message-ID:MIME-Version:Content-Type:\
         Content-Transfer-Encoding"
    );
}

#[test]
fn body_hash_and_signature_agree_with_mail_auth() {
    use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
    use mail_auth::common::headers::HeaderWriter as _;
    use mail_auth::dkim::{Canonicalization, DkimSigner};

    let rsa = TestKey::new(Algorithm::RsaSha256);
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let header = b"From: a@example.test\r\nTo: b@example.org\r\nSubject: compare\r\n";
    let body = b"Hello  there \r\n\r\n\tindented\r\n\r\n\r\n";
    let message = assemble(&[], header, body);

    let pem = std::fs::read_to_string(&rsa.path).unwrap();
    let ed_pem = std::fs::read_to_string(&ed.path).unwrap();
    let ed_b64: String = ed_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let ed_der = BASE64.decode(ed_b64).unwrap();
    let ma_canon = |c: Canon| match c {
        Canon::Relaxed => Canonicalization::Relaxed,
        Canon::Simple => Canonicalization::Simple,
    };

    for (hc, bc) in [
        (Canon::Relaxed, Canon::Relaxed),
        (Canon::Simple, Canon::Simple),
    ] {
        #[allow(deprecated)] // from_key_der needs rustls-pki-types, not a dependency
        let ma_rsa = RsaKey::<Sha256>::from_pkcs8_pem(&pem).unwrap();
        let ma_ed = Ed25519Key::from_pkcs8_maybe_unchecked_der(&ed_der).unwrap();
        let theirs_rsa = DkimSigner::from_key(ma_rsa)
            .domain(DOMAIN)
            .selector("ma-rsa")
            .headers(["From", "To", "Subject"])
            .header_canonicalization(ma_canon(hc))
            .body_canonicalization(ma_canon(bc))
            .sign(&message)
            .unwrap();
        let theirs_ed = DkimSigner::from_key(ma_ed)
            .domain(DOMAIN)
            .selector("ma-ed")
            .headers(["From", "To", "Subject"])
            .header_canonicalization(ma_canon(hc))
            .body_canonicalization(ma_canon(bc))
            .sign(&message)
            .unwrap();

        let ours_bh = dkim::body_hash(bc, &mut &body[..]).unwrap();
        assert_eq!(ours_bh, theirs_rsa.bh, "{bc}");

        let mut sigs = Vec::new();
        for (test_key, selector) in [(&rsa, "rsa"), (&ed, "ed")] {
            let mut settings = test_key.settings(selector);
            settings.header_canon = hc;
            settings.body_canon = bc;
            let ours = sign(&settings, &test_key.load(), header, body);
            let text: String = String::from_utf8(ours.clone())
                .unwrap()
                .split_whitespace()
                .collect();
            assert!(
                text.contains(&format!("bh={};", BASE64.encode(&ours_bh))),
                "{text}"
            );
            sigs.push(ours);
        }
        sigs.push(theirs_rsa.to_header().into_bytes());
        sigs.push(theirs_ed.to_header().into_bytes());
        let records = [
            rsa.dns("rsa"),
            ed.dns("ed"),
            rsa.dns("ma-rsa"),
            ed.dns("ma-ed"),
        ];
        let lines = verify(&assemble(&sigs, header, body), &records)
            .unwrap_or_else(|e| panic!("{hc}/{bc}: {e}"));
        assert_eq!(lines.len(), 4, "{lines:?}");
    }
}

#[test]
fn dual_signature_rsa_and_ed25519() {
    let rsa = TestKey::new(Algorithm::RsaSha256);
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let body = b"Both signatures must verify.\r\n";
    // Each signature is computed over the header as it will be sent; the
    // other DKIM-Signature is not a signed field, so the order does not
    // matter.
    let first = sign(&rsa.settings("rsa2026"), &rsa.load(), HEADER, body);
    let mut with_first = first.clone();
    with_first.extend_from_slice(HEADER);
    let second = sign(&ed.settings("ed2026"), &ed.load(), &with_first, body);
    let message = assemble(&[second, first], HEADER, body);
    let lines = verify(&message, &[rsa.dns("rsa2026"), ed.dns("ed2026")]).unwrap();
    assert_eq!(
        lines,
        [
            format!("OK {DOMAIN} ed2026 ed25519-sha256"),
            format!("OK {DOMAIN} rsa2026 rsa-sha256"),
        ]
    );
}

#[test]
fn oversigned_from_breaks_when_a_from_is_added() {
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let key = ed.load();
    let header = b"From: ceo@example.test\r\nTo: staff@example.org\r\nSubject: pay\r\n";
    let body = b"Please pay invoice 42.\r\n";
    // Added on top, where clients look first.
    let forged = |sig: &[u8], field: &[u8]| {
        let mut m = sig.to_vec();
        m.extend_from_slice(field);
        m.extend_from_slice(&assemble(&[], header, body));
        m
    };

    let signed = sign(&ed.settings("s"), &key, header, body);
    let text = String::from_utf8_lossy(&signed).into_owned();
    assert!(text.contains("h=From:From:"), "{text}");
    assert!(
        verify(
            &assemble(std::slice::from_ref(&signed), header, body),
            &[ed.dns("s")]
        )
        .is_ok()
    );
    let e = verify(
        &forged(&signed, b"From: attacker@evil.example\r\n"),
        &[ed.dns("s")],
    )
    .unwrap_err();
    assert!(e.contains(&format!("FAIL {DOMAIN} s")), "{e}");

    // dkimpy always treats From as oversigned, so the mechanism is shown
    // with Subject: an added Subject passes unless Subject is oversigned.
    let extra = b"Subject: URGENT: new bank details\r\n";
    assert!(verify(&forged(&signed, extra), &[ed.dns("s")]).is_ok());
    let mut settings = ed.settings("s");
    settings.oversign.push("Subject".into());
    let oversigned = sign(&settings, &key, header, body);
    let e = verify(&forged(&oversigned, extra), &[ed.dns("s")]).unwrap_err();
    assert!(e.contains(&format!("FAIL {DOMAIN} s")), "{e}");
}

/// A 50 MB body produced on the fly, so the test itself never holds it;
/// it records the largest read it was asked for.
struct BigBody {
    remaining: usize,
    line: Vec<u8>,
    pos: usize,
    largest_read: usize,
}

const BIG: usize = 50 * 1024 * 1024;

impl BigBody {
    fn new() -> BigBody {
        let mut line =
            b"0123456789 The quick brown fox jumps over the lazy dog =C3=BC  \t".to_vec();
        line.extend_from_slice(b"\r\n");
        BigBody {
            remaining: BIG,
            line,
            pos: 0,
            largest_read: 0,
        }
    }
}

impl Read for BigBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_read = self.largest_read.max(buf.len());
        let n = buf.len().min(self.remaining);
        for b in &mut buf[..n] {
            *b = self.line[self.pos];
            self.pos = (self.pos + 1) % self.line.len();
        }
        self.remaining -= n;
        Ok(n)
    }
}

#[test]
fn fifty_megabyte_body_is_streamed() {
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let key = ed.load();
    let header = b"From: big@example.test\r\nSubject: large\r\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.eml");
    for (selector, bc) in [("relaxed", Canon::Relaxed), ("simple", Canon::Simple)] {
        let mut settings = ed.settings(selector);
        settings.body_canon = bc;
        let mut body = BigBody::new();
        let sig = dkim::sign(&settings, &key, header, &mut body, NOW).unwrap();
        assert!(
            body.largest_read <= 1024 * 1024,
            "sign read {} bytes at once",
            body.largest_read
        );
        assert_eq!(body.remaining, 0, "the whole body was hashed");
        // The file for the verifier is written in pieces too.
        let mut file = io::BufWriter::new(std::fs::File::create(&path).unwrap());
        file.write_all(&sig).unwrap();
        file.write_all(header).unwrap();
        file.write_all(b"\r\n").unwrap();
        io::copy(&mut BigBody::new(), &mut file).unwrap();
        file.into_inner().unwrap().sync_all().unwrap();
        let lines = verify_file(&path, &[ed.dns(selector)]).unwrap();
        assert_eq!(lines, [format!("OK {DOMAIN} {selector} ed25519-sha256")]);
    }
}

#[test]
fn keygen_record_verifies_signatures_from_the_generated_key() {
    let dir = tempfile::tempdir().unwrap();
    for (algorithm, bits, selector) in [
        (Algorithm::Ed25519Sha256, 0, "edgen"),
        (Algorithm::RsaSha256, 2048, "rsagen"),
    ] {
        let out = dir.path().join(format!("{selector}.private"));
        let mut stdout = Vec::new();
        dkim::keygen(DOMAIN, selector, algorithm, bits, Some(&out), &mut stdout).unwrap();
        let text = String::from_utf8(stdout).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The single-line value, as pasted into a web form.
        let value = text
            .lines()
            .find(|l| l.starts_with("v=DKIM1;"))
            .unwrap()
            .to_owned();
        // The zone-file form holds the same value in strings of at most
        // 255 bytes.
        let zone_start = text
            .find(&format!("{selector}._domainkey.{DOMAIN}. IN TXT ("))
            .unwrap();
        let zone = &text[zone_start..zone_start + text[zone_start..].find(')').unwrap()];
        let strings: Vec<&str> = zone.split('"').skip(1).step_by(2).collect();
        assert!(strings.iter().all(|s| s.len() <= 255), "{zone}");
        assert_eq!(strings.concat(), value);
        // And OpenSSL reads the key.
        openssl(&["pkey", "-in", out.to_str().unwrap(), "-noout"]);

        let uid = std::fs::metadata(&out).unwrap().uid();
        let (key, _) = dkim::load_key(&out, algorithm, None, uid).unwrap();
        let settings = Settings::new(DOMAIN, selector, &out, algorithm);
        let body = b"signed with a fresh key\r\n";
        let sig = sign(&settings, &key, HEADER, body);
        let record = (format!("{selector}._domainkey.{DOMAIN}"), value);
        let lines = verify(&assemble(&[sig], HEADER, body), &[record]).unwrap();
        assert_eq!(lines, [format!("OK {DOMAIN} {selector} {algorithm}")]);
    }
}

#[test]
fn key_files_others_can_read_are_refused() {
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let uid = ed.uid();
    let gid = std::fs::metadata(&ed.path).unwrap().gid();
    let set_mode =
        |mode| std::fs::set_permissions(&ed.path, std::fs::Permissions::from_mode(mode)).unwrap();
    let load = |group| dkim::load_key(&ed.path, Algorithm::Ed25519Sha256, group, uid);

    set_mode(0o644);
    let e = load(None).unwrap_err();
    assert!(matches!(e, DkimError::KeyWorldAccessible { .. }), "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");

    set_mode(0o640);
    let e = load(None).unwrap_err();
    assert!(matches!(e, DkimError::KeyGroupAccessible { .. }), "{e}");
    // The setgid installation's group may read it.
    assert!(load(Some(gid)).is_ok());

    set_mode(0o600);
    let link = ed.path.with_extension("link");
    std::os::unix::fs::symlink(&ed.path, &link).unwrap();
    let e = dkim::load_key(&link, Algorithm::Ed25519Sha256, None, uid).unwrap_err();
    assert!(matches!(e, DkimError::KeySymlink { .. }), "{e}");
    assert!(load(None).is_ok());
}

#[test]
fn rsa_1024_is_warned_and_512_refused() {
    let weak = TestKey::rsa(1024);
    let (key, warnings) =
        dkim::load_key(&weak.path, Algorithm::RsaSha256, None, weak.uid()).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("1024 bits"), "{warnings:?}");
    assert!(warnings[0].contains(&weak.path.display().to_string()));
    // Still a valid signature (RFC 8301 allows 1024 bits).
    let body = b"legacy\r\n";
    let sig = sign(&weak.settings("old"), &key, HEADER, body);
    verify(&assemble(&[sig], HEADER, body), &[weak.dns("old")]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.pem");
    openssl(&["genrsa", "-out", tiny.to_str().unwrap(), "512"]);
    std::fs::set_permissions(&tiny, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uid = std::fs::metadata(&tiny).unwrap().uid();
    let e = dkim::load_key(&tiny, Algorithm::RsaSha256, None, uid).unwrap_err();
    assert!(matches!(e, DkimError::KeyTooSmall { bits: 512, .. }), "{e}");
    assert!(e.to_string().contains("mailhop dkim keygen"), "{e}");
}

/// dnsmasq serving fixed TXT records for `example.test` on a free
/// loopback port; killed when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 for both UDP and TCP (dnsmasq wants both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for dnsmasq");
}

/// A TXT query for `name` (RFC 1035 §4.1) with the given ID.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    q
}

impl Dnsmasq {
    /// `records`: (name, value) pairs; a value longer than 255 bytes is
    /// split into several strings, as a zone file would.
    fn start(records: &[(String, String)]) -> Dnsmasq {
        let program = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dnsmasq is not installed: apt-get install -y dnsmasq-base");
        let mut txt: Vec<String> = records
            .iter()
            .map(|(name, value)| {
                let strings: Vec<String> = value
                    .as_bytes()
                    .chunks(255)
                    .map(|c| String::from_utf8(c.to_vec()).unwrap())
                    .collect();
                assert!(!value.contains(','), "dnsmasq splits TXT strings at commas");
                format!(
                    "--txt-record={},{}",
                    name.trim_end_matches('.'),
                    strings.join(",")
                )
            })
            .collect();
        txt.push(format!("--txt-record=ready.{DOMAIN},ready"));
        // A port can be taken between free_port() and dnsmasq's bind.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(program)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--pid-file",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    &format!("--port={port}"),
                    // Names under the test domain are answered locally
                    // (NXDOMAIN when unknown), never forwarded.
                    &format!("--local=/{DOMAIN}/"),
                    "--log-facility=-",
                ])
                .args(&txt)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            if Dnsmasq::wait_ready(&mut child, addr) {
                return Dnsmasq { child, addr };
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            eprintln!(
                "dnsmasq on port {port} did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("dnsmasq did not start");
    }

    /// Real queries until one is answered: at most 100 attempts of up to
    /// 100 ms each, stopping early if dnsmasq exits.
    fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        for attempt in 0..100u16 {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            let query = dns_query(attempt, &format!("ready.{DOMAIN}"));
            if socket.send_to(&query, addr).is_err() {
                continue;
            }
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                let answers = u16::from_be_bytes([buf[6], buf[7]]);
                if n > 12 && buf[..2] == attempt.to_be_bytes() && answers > 0 {
                    return true;
                }
            }
        }
        false
    }
}

fn run_check(entries: &[Settings], dns: &Dnsmasq, uid: u32) -> (bool, String) {
    let mut out = Vec::new();
    let good =
        dkim::check(entries, Some(dns.addr), None, uid, &mut out).unwrap() == dkim::Verdict::Good;
    let out = String::from_utf8(out).unwrap();
    // Shown when a test fails.
    println!("{out}");
    (good, out)
}

#[test]
fn check_against_a_real_dns_server() {
    let rsa = TestKey::new(Algorithm::RsaSha256);
    let other = TestKey::new(Algorithm::RsaSha256);
    let ed = TestKey::new(Algorithm::Ed25519Sha256);
    let uid = rsa.uid();
    let dns = Dnsmasq::start(&[
        rsa.dns("good"),
        // Published, but another key.
        other.dns("stale"),
        (
            format!("edtest._domainkey.{DOMAIN}"),
            format!("{}; t=y", ed.record),
        ),
        (DOMAIN.to_owned(), "v=spf1 -all".to_owned()),
        (
            format!("_dmarc.{DOMAIN}"),
            "v=DMARC1; p=reject; adkim=s".to_owned(),
        ),
    ]);

    // The published key is the local one.
    let (good, out) = run_check(&[rsa.settings("good")], &dns, uid);
    assert!(good, "{out}");
    assert!(out.contains("local key:  2048-bit RSA"), "{out}");
    assert!(
        out.contains(&format!(
            "OK: the key published at good._domainkey.{DOMAIN} matches the local key (2048-bit RSA)"
        )),
        "{out}"
    );
    assert!(out.contains("SPF:        v=spf1 -all"), "{out}");
    assert!(
        out.contains(&format!("p=reject (from _dmarc.{DOMAIN})")),
        "{out}"
    );
    assert!(out.contains("alignment:  yes"), "{out}");
    assert!(!out.contains("test mode"), "{out}");

    // Another key is published under the selector.
    let (good, out) = run_check(&[rsa.settings("stale")], &dns, uid);
    assert!(!good, "{out}");
    assert!(out.contains("MISMATCH"), "{out}");
    // It says what to publish instead.
    assert!(out.contains(&rsa.record), "{out}");

    // Nothing is published under the selector.
    let (good, out) = run_check(&[rsa.settings("missing")], &dns, uid);
    assert!(!good, "{out}");
    assert!(
        out.contains(&format!(
            "MISSING: no TXT record at missing._domainkey.{DOMAIN}"
        )),
        "{out}"
    );
    assert!(out.contains("IN TXT ( \"v=DKIM1; k=rsa; \""), "{out}");

    // Ed25519 in test mode, and a pattern entry: d= is the parent, which
    // strict alignment (adkim=s) rejects for subdomains.
    let mut pattern = ed.settings("edtest");
    pattern.domain = format!("*.{DOMAIN}");
    let (good, out) = run_check(&[ed.settings("edtest"), pattern], &dns, uid);
    assert!(good, "{out}");
    assert_eq!(
        out.matches("matches the local key (Ed25519)").count(),
        2,
        "{out}"
    );
    assert!(out.contains("t=y is set"), "{out}");
    assert!(out.contains("alignment:  NO: adkim=s"), "{out}");

    // All entries are reported even when one fails.
    let (good, out) = run_check(&[rsa.settings("missing"), rsa.settings("good")], &dns, uid);
    assert!(!good, "{out}");
    assert!(
        out.contains("MISSING") && out.contains("matches the local key"),
        "{out}"
    );
}

#[test]
fn check_reports_a_local_key_problem_and_goes_on() {
    let rsa = TestKey::new(Algorithm::RsaSha256);
    let uid = rsa.uid();
    let dns = Dnsmasq::start(&[rsa.dns("good")]);
    std::fs::set_permissions(&rsa.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (good, out) = run_check(&[rsa.settings("good")], &dns, uid);
    assert!(!good, "{out}");
    assert!(out.contains("accessible by all users"), "{out}");
    assert!(out.contains("not compared"), "{out}");
    assert!(
        out.contains(&format!("SPF:        none at {DOMAIN}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("DMARC:      none for {DOMAIN}")),
        "{out}"
    );
}

// ---------------------------------------------------------------------------
// Through the binary: keys made by `mailhop dkim keygen`, messages signed
// by `sendmail` on the send path, verified by dkimpy on the bytes the SMTP
// server received and on local Maildir delivery.

/// Runs `mailhop dkim keygen` and returns (key path, DNS name, TXT value).
fn keygen_via_binary(dir: &Path, selector: &str, algorithm: &str) -> (PathBuf, String, String) {
    keygen_for(dir, "example.com", selector, algorithm)
}

fn keygen_for(
    dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: &str,
) -> (PathBuf, String, String) {
    let key = dir.join(format!("{selector}.key"));
    let r = crate::util::run_raw(
        "mailhop",
        &[
            "dkim".into(),
            "keygen".into(),
            "--domain".into(),
            domain.into(),
            "--selector".into(),
            selector.into(),
            "--algorithm".into(),
            algorithm.into(),
            "--out".into(),
            key.display().to_string(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let value = r
        .stdout
        .lines()
        .find(|l| l.starts_with("v=DKIM1;"))
        .unwrap()
        .to_string();
    (key, format!("{selector}._domainkey.{domain}."), value)
}

#[test]
fn sendmail_dual_signs_what_the_server_receives_and_maildir_gets() {
    let w = crate::util::World::new("");
    let (rsa_key, rsa_name, rsa_txt) = keygen_via_binary(w.dir.path(), "r2026", "rsa-sha256");
    let (ed_key, ed_name, ed_txt) = keygen_via_binary(w.dir.path(), "e2026", "ed25519-sha256");
    let server =
        crate::smtpd::Smtpd::start(&crate::smtpd::SmtpdOptions::default(), &w.path("spool"));
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&format!(
        "{cfg}[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"shop@example.com\"\n\
         [[dkim]]\ndomain = \"example.com\"\nselector = \"r2026\"\nkey_file = \"{}\"\n\
         [[dkim]]\ndomain = \"example.com\"\nselector = \"e2026\"\nkey_file = \"{}\"\n\
         algorithm = \"ed25519-sha256\"\ncanonicalization = \"relaxed/simple\"\n",
        server.port,
        rsa_key.display(),
        ed_key.display()
    ));
    let records = vec![(rsa_name, rsa_txt), (ed_name, ed_txt)];
    // Folded and UTF-8 headers, a long line that gets re-encoded, a cron
    // From that gets rewritten, a local and a remote recipient.
    let long = "ä".repeat(700);
    let msg = format!(
        "From: root (Cron Daemon)\nTo: root, b@example.net\nSubject: Grüße, a folded\n subject line\n\
         X-Cron-Env: <SECRET=hunter2>\n\n{long}\n.dot line\n"
    );
    let r = w.sendmail(&["-v", "-oi", "-t"], msg.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("signed with DKIM d=example.com s=r2026"),
        "{}",
        r.stderr
    );
    let got = server.wait_messages(1);
    assert!(
        !String::from_utf8_lossy(&got[0].data).contains("hunter2"),
        "scrubbed before signing"
    );
    let ok = verify(&got[0].data, &records).unwrap_or_else(|e| panic!("server copy: {e}"));
    assert_eq!(ok.len(), 2, "{ok:?}");
    let local = w.maildir("root");
    assert_eq!(local.len(), 1);
    let crlf = String::from_utf8(local[0].clone())
        .unwrap()
        .replace('\n', "\r\n");
    let ok = verify(crlf.as_bytes(), &records).unwrap_or_else(|e| panic!("maildir copy: {e}"));
    assert_eq!(ok.len(), 2, "{ok:?}");
    // Tampering is detected: the verifier can fail.
    let tampered = String::from_utf8_lossy(&got[0].data).replace("Subject: Gr", "Subject: gr");
    assert!(verify(tampered.as_bytes(), &records).is_err());
}

#[test]
fn a_key_others_can_read_refuses_the_message_and_keeps_it() {
    let w = crate::util::World::new("");
    let (key, _, _) = keygen_via_binary(w.dir.path(), "s1", "ed25519-sha256");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&format!(
        "{cfg}[[dkim]]\ndomain = \"host.example.com\"\nselector = \"s1\"\nkey_file = \"{}\"\nalgorithm = \"ed25519-sha256\"\n",
        key.display()
    ));
    let r = w.sendmail(&["-oi", "root"], b"Subject: x\n\nbody\n");
    assert_eq!(r.code, 77, "{r:?}");
    assert!(
        r.stderr.contains("DKIM signing") && r.stderr.contains("chmod"),
        "{}",
        r.stderr
    );
    assert_eq!(w.dead().len(), 1);
    assert!(w.maildir("root").is_empty());
}

#[test]
fn a_weak_key_signs_and_is_logged_but_silent_without_v() {
    // cron mails anything a command prints: a warning on standard error at
    // every send would double every message, so it goes to the log.
    let w = crate::util::World::new("");
    let weak = TestKey::rsa(1024);
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&format!(
        "{cfg}[[dkim]]\ndomain = \"host.example.com\"\nselector = \"old\"\nkey_file = \"{}\"\n",
        weak.path.display()
    ));
    let r = w.sendmail(&["-oi", "root"], b"Subject: x\n\nbody\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr, "", "nothing for cron to mail");
    let log = w.log();
    assert!(log.contains("1024 bits"), "{log}");
    let got = w.maildir("root");
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0]).starts_with("DKIM-Signature:"));
    let r = w.sendmail(&["-v", "-oi", "root"], b"Subject: y\n\nbody\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("1024 bits"), "{}", r.stderr);
}

#[test]
fn dkim_check_command_through_the_binary() {
    let w = crate::util::World::new("");
    let (good, name, txt) = keygen_for(w.dir.path(), DOMAIN, "good", "ed25519-sha256");
    let (stale, _, _) = keygen_for(w.dir.path(), DOMAIN, "stale", "ed25519-sha256");
    let (_, _, other_txt) = keygen_for(w.dir.path(), DOMAIN, "other", "ed25519-sha256");
    let (missing, _, _) = keygen_for(w.dir.path(), DOMAIN, "missing", "ed25519-sha256");
    let dns = Dnsmasq::start(&[
        (name.trim_end_matches('.').to_string(), txt),
        (format!("stale._domainkey.{DOMAIN}"), other_txt),
    ]);
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    let mut entries = String::new();
    for (sel, key) in [("good", &good), ("stale", &stale), ("missing", &missing)] {
        entries.push_str(&format!(
            "[[dkim]]\ndomain = \"{DOMAIN}\"\nselector = \"{sel}\"\nkey_file = \"{}\"\nalgorithm = \"ed25519-sha256\"\n",
            key.display()
        ));
    }
    w.write_config(&format!("{cfg}{entries}"));
    let check_at = |sel: &str, nameserver: String| {
        crate::util::run_raw(
            "mailhop",
            &[
                "dkim".into(),
                "check".into(),
                "-C".into(),
                w.config().display().to_string(),
                "--domain".into(),
                DOMAIN.into(),
                "--selector".into(),
                sel.into(),
                "--nameserver".into(),
                nameserver,
            ],
            b"",
            &[],
        )
    };
    let check = |sel: &str| check_at(sel, dns.addr.to_string());
    let r = check("good");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("matches the local key"), "{}", r.stdout);
    let r = check("stale");
    assert_eq!(r.code, 69, "{r:?}");
    assert!(
        r.stdout.to_lowercase().contains("mismatch") || r.stdout.contains("does not match"),
        "{}",
        r.stdout
    );
    let r = check("missing");
    assert_eq!(r.code, 69, "{r:?}");
    let r = check("nosuch");
    assert_eq!(r.code, 78, "{r:?}");
    // No DNS answer at all (nothing listens there): nothing is known to
    // be wrong with the key, so "try again later", not "unavailable".
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = silent.local_addr().unwrap().to_string();
    drop(silent);
    let r = check_at("good", closed);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stdout.contains("UNKNOWN"), "{}", r.stdout);
}

/// `mailhop check --send-test` goes through the pipeline real mail takes:
/// its test message carries the same DKIM signature, which verifies.
#[test]
fn check_send_test_is_signed_like_real_mail() {
    let w = crate::util::World::new("");
    let (key, name, txt) = keygen_via_binary(w.dir.path(), "t2026", "ed25519-sha256");
    let server =
        crate::smtpd::Smtpd::start(&crate::smtpd::SmtpdOptions::default(), &w.path("spool"));
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&format!(
        "{cfg}[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"shop@example.com\"\n\
         [[dkim]]\ndomain = \"example.com\"\nselector = \"t2026\"\nkey_file = \"{}\"\n\
         algorithm = \"ed25519-sha256\"\n",
        server.port,
        key.display(),
    ));
    let r = w.run("mailhop", &["check", "--send-test", "b@example.net"], b"");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("test message: accepted for b@example.net"),
        "{}",
        r.stdout
    );
    let got = server.wait_messages(1);
    let ok = verify(&got[0].data, &[(name, txt)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert!(
        w.queued().is_empty() && w.dead().is_empty(),
        "a test is neither queued nor kept"
    );
}
