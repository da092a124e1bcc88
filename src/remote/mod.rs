//! Repositories on another host: the `ssh` backend (`client`) runs the system `ssh` to
//! `proxborg serve` (`server`) on the far side; the two speak the framed protocol in `wire`,
//! which carries exactly the operations of `repo::backend::Backend` and nothing else. No ssh
//! library: authentication, host keys and options stay ssh's business (`PROXBORG_RSH`).
//!
//! What is pipelined: every request carries an id and the client matches answers by id, so
//! calls from several threads are in flight at once on one connection; and the pack writer
//! sends its pack `put`s without waiting (`Backend::put_pipelined`), collecting their results
//! before it writes the index file that names them (`Backend::settle`), so the crash rule
//! "packs before the index that names them" holds over the wire too.

pub mod client;
pub mod server;
pub mod wire;
