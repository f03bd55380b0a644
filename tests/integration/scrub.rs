//! Header scrubbing through the binary: the privacy preset, `remove`,
//! header_checks-style rules, and refused rules as config errors.

use crate::util::{World, head};

const LEAKY: &str = "Subject: report\n\
User-Agent: Mutt/2.2\n\
X-Mailer: PHPMailer 6.8\n\
X-Originating-IP: [192.0.2.7]\n\
X-PHP-Originating-Script: 33:/var/www/site/contact.php\n\
X-Cron-Env: <SHELL=/bin/sh>\n\
X-Cron-Env: <DB_PASSWORD=hunter2>\n\
Received: from localhost by build-host (Postfix)\n\
x-mailer: lowercase too\n\
X-Internal-Ticket: 4711\n\
X-Env: staging\n\
\n\
body with X-Mailer: in it stays\n";

#[test]
fn privacy_preset_removes_every_listed_header_and_never_the_body() {
    let w = World::new("");
    let r = w.sendmail(&["-v", "-oi", "root"], LEAKY.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    let m = &w.maildir("root")[0];
    let h = head(m);
    for gone in [
        "User-Agent",
        "X-Mailer",
        "x-mailer",
        "X-Originating-IP",
        "X-PHP-Originating-Script",
        "X-Cron-Env",
        "hunter2",
        "Received:",
    ] {
        assert!(!h.contains(gone), "{gone} left in:\n{h}");
    }
    assert!(
        h.contains("X-Internal-Ticket: 4711") && h.contains("Subject: report"),
        "{h}"
    );
    assert!(crate::util::text(m).contains("body with X-Mailer: in it stays"));
    assert!(r.stderr.contains("8 field(s) removed"), "{}", r.stderr);
}

#[test]
fn scrub_none_keeps_them() {
    let w = World::new("[headers]\nscrub = \"none\"\n");
    assert_eq!(w.sendmail(&["-oi", "root"], LEAKY.as_bytes()).code, 0);
    let h = head(&w.maildir("root")[0]);
    assert!(
        h.contains("X-Mailer: PHPMailer 6.8") && h.contains("X-Cron-Env"),
        "{h}"
    );
}

#[test]
fn remove_list_and_regex_rules() {
    let w = World::new(
        "[headers]\nremove = [\"x-internal-ticket\"]\n\
         [[headers.rule]]\npattern = '^X-Env: staging$'\naction = \"remove\"\n\
         [[headers.rule]]\npattern = '^X-Env: (.*)$'\nreplace = 'X-Environment: $1'\n",
    );
    let r = w.sendmail(&["-oi", "root"], LEAKY.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    let h = head(&w.maildir("root")[0]);
    assert!(!h.contains("X-Internal-Ticket"), "{h}");
    assert!(!h.contains("X-Env: staging"), "{h}");
    // A second message whose X-Env the remove rule does not match is
    // rewritten by the replace rule.
    let msg = LEAKY.replace("X-Env: staging", "X-Env: production");
    assert_eq!(w.sendmail(&["-oi", "root"], msg.as_bytes()).code, 0);
    let msgs = w.maildir("root");
    let h = msgs
        .iter()
        .map(|m| head(m))
        .find(|h| h.contains("X-Environment"))
        .unwrap();
    assert!(
        h.contains("X-Environment: production") && !h.contains("X-Env: production"),
        "{h}"
    );
}

#[test]
fn rules_that_could_touch_protected_headers_are_config_errors() {
    for (rule, what) in [
        (
            "[[headers.rule]]\npattern = '^Subject: (.*)$'\nreplace = 'Subject: [x] $1'\n",
            "rule #1",
        ),
        (
            "[[headers.rule]]\npattern = '@'\naction = \"remove\"\n",
            "rule #1",
        ),
        ("remove = [\"From\"]\n", "remove"),
        (
            "[[headers.rule]]\npattern = '(unclosed'\naction = \"remove\"\n",
            "rule #1",
        ),
        // Patterns match bytes: Unicode classes are refused, not ignored.
        (
            "[[headers.rule]]\npattern = '^X-Script: \\p{Greek}'\naction = \"remove\"\n",
            "rule #1",
        ),
    ] {
        let w = World::new(&format!("[headers]\n{rule}"));
        let r = w.sendmail(&["-oi", "root"], LEAKY.as_bytes());
        assert_eq!(r.code, 78, "{rule}: {r:?}");
        assert!(
            r.stderr.contains("mailhop.toml:") && r.stderr.contains(what),
            "{rule}: {}",
            r.stderr
        );
    }
}
