//! `mailhop import`: real ssmtp and msmtp configurations, in the forms
//! found in the wild, converted; the result passes `mailhop check
//! --offline`, and one pointed at the test server delivers through it.

use std::path::Path;

use crate::certs::TestPki;
use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
use crate::util::{World, run_raw};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
        .display()
        .to_string()
}

/// Imports, points the password files into `dir`, and creates them by
/// running the printed commands (so the hints themselves are tested).
fn import_into(w: &World, args: &[&str]) -> std::path::PathBuf {
    let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let r = run_raw("mailhop", &argv, b"", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let secrets = w.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let sdir = secrets.display().to_string();
    let toml = r.stdout.replace("/etc/mailhop", &sdir);
    for line in r.stderr.lines() {
        let line = line.trim();
        if line.starts_with("mkdir -p /etc/mailhop") {
            // Ownership by root:mailhop is the packaged install's; here the
            // test user owns the file, mode 0600.
            let cmd = line
                .replace("/etc/mailhop", &sdir)
                .replace("install -m 0640 -o root -g mailhop", "install -m 0600");
            let ok = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .status()
                .unwrap();
            assert!(ok.success(), "{cmd}");
        }
    }
    let out = w.path("imported.toml");
    std::fs::write(&out, toml).unwrap();
    out
}

fn check_offline(cfg: &Path) -> crate::util::Run {
    run_raw(
        "mailhop",
        &[
            "check".into(),
            "--offline".into(),
            "-C".into(),
            cfg.display().to_string(),
        ],
        b"",
        &[],
    )
}

#[test]
fn ssmtp_office365_config_imports_and_validates() {
    let w = World::new("");
    let cfg = import_into(
        &w,
        &[
            "import",
            "ssmtp",
            "--conf",
            &fixture("ssmtp-office365.conf"),
            "--revaliases",
            &fixture("revaliases-office365"),
        ],
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("host = \"smtp.office365.com\""), "{text}");
    assert!(text.contains("tls = \"starttls\""), "{text}");
    let fixture_text = std::fs::read_to_string(fixture("ssmtp-office365.conf")).unwrap();
    let pass = fixture_text
        .lines()
        .find_map(|l| l.strip_prefix("AuthPass="))
        .unwrap()
        .trim();
    assert!(!text.contains(pass), "the password is never in the output");
    let r = check_offline(&cfg);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("account office365") && r.stdout.contains("credentials: available"),
        "{}",
        r.stdout
    );
    // The password file holds exactly the old password.
    let written = std::fs::read_to_string(w.path("secrets/office365.password")).unwrap();
    assert_eq!(written.trim_end(), pass);
}

#[test]
fn ssmtp_gmail_and_msmtp_configs_validate() {
    let w = World::new("");
    let cfg = import_into(
        &w,
        &[
            "import",
            "ssmtp",
            "--conf",
            &fixture("ssmtp-gmail.conf"),
            "--revaliases",
            "/nonexistent",
        ],
    );
    let r = check_offline(&cfg);
    assert_eq!(r.code, 0, "{r:?}");

    // The msmtprc names /etc/aliases and a `pass` password helper: give
    // the test its own of both, as the user's machine would have them.
    let w = World::new("");
    let cfg = import_into(&w, &["import", "msmtp", &fixture("msmtprc")]);
    let aliases = w.path("aliases");
    std::fs::write(&aliases, "root: john\n").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("password_command = \"pass show mail/gmail\""),
        "{text}"
    );
    std::fs::write(
        &cfg,
        text.replace("/etc/aliases", &aliases.display().to_string()),
    )
    .unwrap();
    let bin = w.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("pass"), "#!/bin/sh\necho app-password\n").unwrap();
    std::fs::set_permissions(
        bin.join("pass"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let r = run_raw(
        "mailhop",
        &[
            "check".into(),
            "--offline".into(),
            "-C".into(),
            cfg.display().to_string(),
        ],
        b"",
        &[("PATH", Path::new(&path))],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.matches("credentials: available").count(),
        3,
        "{}",
        r.stdout
    );
}

#[test]
fn imported_ssmtp_config_delivers_through_the_test_server() {
    let w = World::new("");
    let pki_dir = w.path("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = TestPki::create(&pki_dir);
    let server = Smtpd::start(
        &SmtpdOptions {
            users: vec![("shop@domain.test".into(), "Old ssmtp pass".into())],
            ..SmtpdOptions::tls(
                Mode::StartTls,
                &pki.path("server.pem"),
                &pki.path("server.key"),
            )
        },
        &w.path("spool"),
    );
    // An ssmtp.conf as people write it, pointing at the test server.
    let conf = w.path("ssmtp.conf");
    std::fs::write(
        &conf,
        format!(
            "# Config file for sSMTP sendmail\n\
             root=postmaster@domain.test\n\
             mailhub=127.0.0.1:{}\n\
             UseSTARTTLS=YES\n\
             AuthUser=shop@domain.test\n\
             AuthPass=Old ssmtp pass\n\
             TLS_CA_File={}\n\
             RewriteDomain=domain.test\n\
             FromLineOverride=YES\n",
            server.port,
            pki.path("ca.pem").display()
        ),
    )
    .unwrap();
    let cfg = import_into(
        &w,
        &[
            "import",
            "ssmtp",
            "--conf",
            &conf.display().to_string(),
            "--revaliases",
            "/nonexistent",
        ],
    );
    // Pin the queue and dead letters to the test world.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{text}\n[queue]\ndir = \"{}\"\nmode = \"never\"\n",
            w.path("queue").display()
        ),
    )
    .unwrap();
    assert_eq!(check_offline(&cfg).code, 0);
    let r = run_raw(
        "sendmail",
        &[
            "-C".into(),
            cfg.display().to_string(),
            "-oi".into(),
            "b@example.net".into(),
        ],
        b"From: Shop <shop@domain.test>\nSubject: imported\n\nhello\n",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let got = server.wait_messages(1);
    assert_eq!(got[0].auth_user.as_deref(), Some("shop@domain.test"));
    assert!(got[0].tls);
}
