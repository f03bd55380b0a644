//! Documentation drift: every flag the parsers know must be in mailhop(8),
//! and every config key in mailhop.toml(5).

const MAN8: &str = include_str!("../../man/mailhop.8");
const MAN5: &str = include_str!("../../man/mailhop.toml.5");

/// roff escapes the hyphen as `\-`; undo that so flags can be searched.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
}

#[test]
fn every_sendmail_flag_is_documented() {
    let man = plain(MAN8);
    let missing: Vec<&str> = mailhop::cli::SENDMAIL_FLAGS
        .iter()
        .map(|f| f.flag)
        .filter(|f| !man.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "flags missing from man/mailhop.8: {missing:?}"
    );
}

#[test]
fn every_mailhop_subcommand_and_flag_is_documented() {
    let man = plain(MAN8);
    let mut missing = Vec::new();
    let cmd = mailhop::cli::clap_command();
    for sub in cmd.get_subcommands() {
        if !man.contains(&format!("mailhop {}", sub.get_name())) {
            missing.push(format!("subcommand {}", sub.get_name()));
        }
        for arg in sub.get_arguments() {
            if let Some(l) = arg.get_long()
                && !man.contains(&format!("--{l}"))
            {
                missing.push(format!("{} --{l}", sub.get_name()));
            }
        }
    }
    for arg in cmd.get_arguments() {
        if let Some(l) = arg.get_long()
            && !man.contains(&format!("--{l}"))
        {
            missing.push(format!("--{l}"));
        }
    }
    assert!(
        missing.is_empty(),
        "missing from man/mailhop.8: {missing:?}"
    );
}

#[test]
fn every_exit_status_is_documented() {
    let man = plain(MAN8);
    for e in mailhop::exit::Exit::ALL {
        assert!(
            man.contains(e.name()),
            "{} missing from EXIT STATUS",
            e.name()
        );
    }
}

#[test]
fn every_config_key_is_documented() {
    let man = plain(MAN5);
    let missing: Vec<&&str> = mailhop::config::KEYS
        .iter()
        .filter(|k| !man.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from man/mailhop.toml.5: {missing:?}"
    );
}
