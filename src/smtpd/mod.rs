//! The SMTP server side (RFC 5321), for `sendmail -bs` and `mailhop
//! serve`: `command` parses a line, `protocol` is the I/O-free state
//! machine, `data` decodes DATA, `session` drives them over a byte stream
//! with bounded reads and deadlines, `reply` formats what we send. The app
//! layer supplies the [`session::Backend`]: the recipient checks and the
//! send pipeline.

pub mod command;
pub mod data;
pub mod protocol;
pub mod reply;
pub mod session;

pub use protocol::{Access, Envelope, Policy, Server, Settings, Step};
pub use reply::Reply;
pub use session::{Backend, Deadlines, End, Summary, Timed};
