//! The bodies of the `mxmedia` subcommands, one module each; `main.rs` parses the arguments,
//! loads the configuration and dispatches here.

pub(crate) mod backup;
pub(crate) mod doctor;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod migrate;
pub(crate) mod s3;
pub(crate) mod serve;
