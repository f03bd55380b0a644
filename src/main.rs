//! The `mailhop` binary (also run as `sendmail`, `mailq`, `newaliases`):
//! everything lives in the library; this only hands over argv and turns the
//! result into the process exit status.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let status = mailhop::app::run(std::env::args_os());
    std::process::ExitCode::from(status.code())
}
