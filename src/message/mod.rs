//! Everything about the message itself, at the byte level: reading it in
//! (`intake`), its header fields (`header`), the addresses in them
//! (`address`), and finishing envelope and header (`prepare`).

pub mod address;
pub mod dsn;
pub mod header;
pub mod intake;
pub mod prepare;
