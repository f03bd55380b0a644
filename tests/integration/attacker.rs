//! The set-group-ID install against a hostile local user (issue #15 A):
//! every subcommand, run as an ordinary user, is driven at a password
//! file, a token file and the spool that only the mailhop group may read
//! or write. No byte of the secrets may appear in any output, and nothing
//! may be written into the spool or the shared files. Root only (it
//! creates a user with a home, and the setgid install).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::privilege::{Run, SetgidInstall, run_as};

const PASSWORD: &str = "PW-ATTACK-7f3a9c";
const REFRESH: &str = "RT-ATTACK-2b8e1d";
const USER: &str = "mhtest-c";

/// The victim's install, and an attacker with a home of their own.
struct Scene {
    install: SetgidInstall,
    home: PathBuf,
    spool: PathBuf,
    password_file: PathBuf,
    token_file: PathBuf,
    log: PathBuf,
}

fn scene() -> Option<Scene> {
    let install = SetgidInstall::new()?;
    let base = install.dir.path().to_path_buf();
    let home = base.join("home-c");
    std::fs::create_dir(&home).unwrap();
    let have = Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success();
    let (cmd, flag) = if have {
        ("usermod", "-d")
    } else {
        ("useradd", "-d")
    };
    let mut args = vec![flag, home.to_str().unwrap()];
    if !have {
        args.extend(["-M", "-N", "-s", "/usr/sbin/nologin"]);
    }
    args.push(USER);
    assert!(
        Command::new(cmd).args(&args).status().unwrap().success(),
        "{cmd}"
    );
    let user = nix::unistd::User::from_name(USER).unwrap().unwrap();
    nix::unistd::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
    let spool = install.group_dir("spool");
    let shared = install.group_dir("shared");
    let password_file = shared.join("smarthost.password");
    install.group_file(&password_file, &format!("{PASSWORD}\n"));
    let token_file = shared.join("token.json");
    install.group_file(
        &token_file,
        &format!("{{\"refresh_token\":\"{REFRESH}\",\"scopes\":[]}}\n"),
    );
    let log = base.join("mailhop.log");
    install.group_file(&log, "");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o660)).unwrap();
    install.write_config(&format!(
        "hostname = \"host.example.com\"\nsyslog = false\nlog_file = \"{}\"\n\
         [queue]\ndir = \"{}\"\nmode = \"always\"\n\
         [[account]]\nname = \"shared\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n\
         from = \"shop@example.com\"\nuser = \"shop@example.com\"\npassword_file = \"{}\"\n",
        log.display(),
        spool.display(),
        password_file.display(),
    ));
    Some(Scene {
        install,
        home,
        spool,
        password_file,
        token_file,
        log,
    })
}

impl Scene {
    fn run(&self, argv0: &str, args: &[&str], stdin: &[u8]) -> Run {
        let r = run_as(USER, &self.install.bin, argv0, args, stdin);
        for secret in [PASSWORD, REFRESH] {
            assert!(
                !r.stdout.contains(secret) && !r.stderr.contains(secret),
                "{argv0} {args:?} leaked a secret: {} {}",
                r.stdout,
                r.stderr
            );
        }
        r
    }

    /// Files in the spool's item directories.
    fn spool_files(&self) -> Vec<String> {
        let mut all = Vec::new();
        for sub in ["q", "failed"] {
            if let Ok(rd) = std::fs::read_dir(self.spool.join(sub)) {
                all.extend(rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()));
            }
        }
        all.sort();
        all
    }

    fn user_config(&self, text: &str) -> PathBuf {
        let dir = self.home.join(".config/mailhop");
        std::fs::create_dir_all(&dir).unwrap();
        let f = self.home.join("own.toml");
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let user = nix::unistd::User::from_name(USER).unwrap().unwrap();
        for p in [self.home.join(".config"), dir.clone()] {
            nix::unistd::chown(&p, Some(user.uid), Some(user.gid)).unwrap();
        }
        dir.join("config.toml")
    }
}

fn link(target: &Path, at: &Path) {
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(target, at).unwrap();
}

#[test]
fn a_local_user_cannot_read_or_plant_through_the_setgid_binary() {
    let Some(s) = scene() else {
        return;
    };
    let pw = s.password_file.display().to_string();
    let token = s.token_file.display().to_string();
    let etc = "/etc/mailhop.toml";

    // 1. A user configuration naming the password file as its aliases
    //    file, and one that is a symlink to the password file itself:
    //    both are read with the caller's rights only.
    let own = s.user_config(&format!("[aliases]\nfile = \"{pw}\"\n"));
    link(&s.home.join("own.toml"), &own);
    let r = s.run("sendmail", &["-bv", "root"], b"");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    // A link to the password file is not the user's configuration: it is
    // not opened with the group, and nothing of it is shown.
    link(&s.password_file, &own);
    s.run("sendmail", &["-bv", "root"], b"");
    // The race of the report: the link swapped in and out while -bv runs.
    let swapper = {
        let (own, target) = (own.clone(), s.home.join("own.toml"));
        std::thread::spawn(move || {
            for i in 0..400 {
                if i % 2 == 0 {
                    link(&target, &own);
                } else {
                    let _ = std::fs::remove_file(&own);
                }
            }
        })
    };
    for _ in 0..20 {
        s.run("sendmail", &["-bv", "root"], b"");
    }
    swapper.join().unwrap();
    let _ = std::fs::remove_file(&own);

    // 2. oauth login for an account of the system file needs root.
    let before = std::fs::read(&s.token_file).unwrap();
    let r = s.run("mailhop", &["oauth", "login", "shared"], b"");
    assert_eq!(r.code, 77, "{}", r.stderr);
    assert_eq!(
        std::fs::read(&s.token_file).unwrap(),
        before,
        "token file untouched"
    );

    // 3. import reads its inputs with the caller's rights.
    for args in [
        vec!["import", "msmtp", etc],
        vec!["import", "msmtp", &pw],
        vec!["import", "msmtp", &token],
        vec!["import", "ssmtp", "--conf", &pw],
    ] {
        let r = s.run("mailhop", &args, b"");
        assert!(
            r.stderr.contains("Permission denied"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let conf = s.home.join("ssmtp.conf");
    std::fs::write(&conf, "mailhub=smtp.example.com:587\n").unwrap();
    let r = s.run(
        "mailhop",
        &[
            "import",
            "ssmtp",
            "--conf",
            conf.to_str().unwrap(),
            "--revaliases",
            &pw,
        ],
        b"",
    );
    assert_eq!(
        r.code, 0,
        "the unreadable revaliases is skipped: {}",
        r.stderr
    );

    // 4. Nothing is planted in the spool: dkim keygen --out, and a
    //    ~/Maildir that is a symlink into it.
    let q = s.spool.join("q");
    let r = s.run("sendmail", &["-oi", "a@example.net"], b"Subject: q\n\nx\n");
    assert_eq!(r.code, 0, "queued: {}", r.stderr);
    let before = s.spool_files();
    let planted = q.join("0123456789ABCDEF0123456789ABCD.meta");
    let r = s.run(
        "mailhop",
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "s",
            "--out",
            planted.to_str().unwrap(),
        ],
        b"",
    );
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    link(&q, &s.home.join("Maildir"));
    let r = s.run("sendmail", &["-oi", USER], b"Subject: local\n\nx\n");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    let stats_out = q.join("00000000000000000000000000AAAA.meta");
    let r = s.run(
        "mailhop",
        &[
            "queue",
            "stats",
            "--prometheus",
            "--output",
            stats_out.to_str().unwrap(),
        ],
        b"",
    );
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    assert_eq!(s.spool_files(), before, "nothing planted in the spool");
    assert!(!q.join("new").exists() && !q.join("tmp").exists());

    // 5. -L cannot forge log lines.
    s.run(
        "sendmail",
        &[
            "-L",
            "x\nJan  1 00:00:00 host postfix/smtp[1]: forged",
            "-oi",
            "a@example.net",
        ],
        b"Subject: tag\n\nx\n",
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("Jan  1") || l.contains("postfix/smtp")),
        "{log}"
    );

    // 6. Every other subcommand, aimed at the shared files.
    for args in [
        vec!["check", "--offline"],
        vec!["check", "-C", &pw],
        vec!["dkim", "check", "-C", &pw],
        vec!["newaliases"],
        vec!["queue", "list"],
        vec!["queue", "show", "0123456789ABCDEF0123456789ABCD"],
        vec!["completions", "bash"],
        vec!["send", "-C", &pw, "-oi", "a@example.net"],
        vec!["send", "-X", &pw, "-oi", "a@example.net"],
    ] {
        s.run("mailhop", &args, b"Subject: x\n\nx\n");
    }
    assert_eq!(
        std::fs::read_to_string(&s.password_file).unwrap(),
        format!("{PASSWORD}\n")
    );
}

/// Root delivering into a user's ~/Maildir (cron's mail for the user)
/// does so as that user: a ~/Maildir that leads into a directory of
/// root's gets nothing there, and what is delivered is the user's without
/// a chown by path (which a symbolic link swapped in could redirect).
#[test]
fn root_delivers_into_a_home_as_its_user() {
    let Some(s) = scene() else {
        return;
    };
    let base = s.install.dir.path();
    let dead = base.join("dead-root");
    std::fs::create_dir(&dead).unwrap();
    let cfg = base.join("root.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"host.example.com\"\nsyslog = false\ndead_letter = \"{}\"\n\
             [local]\npath = \"~/Maildir\"\n[queue]\nmode = \"never\"\n",
            dead.display()
        ),
    )
    .unwrap();
    let send = || {
        crate::util::run_raw(
            "sendmail",
            &[
                "-C".into(),
                cfg.display().to_string(),
                "-oi".into(),
                USER.into(),
            ],
            b"Subject: for c\n\nx\n",
            &[],
        )
    };
    // ~/Maildir is a link into a directory only root may write.
    let rootdir = base.join("root-only");
    std::fs::create_dir(&rootdir).unwrap();
    std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    link(&rootdir, &s.home.join("Maildir"));
    let r = send();
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_dir(&rootdir).unwrap().count(),
        0,
        "nothing written into root's directory"
    );
    assert_eq!(std::fs::read_dir(&dead).unwrap().count(), 1, "kept");
    // A real Maildir: delivered, and the files are the user's.
    std::fs::remove_file(s.home.join("Maildir")).unwrap();
    let r = send();
    assert_eq!(r.code, 0, "{r:?}");
    let user = nix::unistd::User::from_name(USER).unwrap().unwrap();
    let new = s.home.join("Maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().uid(),
        user.uid.as_raw()
    );
    assert_eq!(std::fs::metadata(&new).unwrap().uid(), user.uid.as_raw());
}
