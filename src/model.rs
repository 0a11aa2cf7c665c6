//! The values every layer passes around: which media (`id`), what is known about it (`meta`)
//! and which thumbnail of it (`thumb`). This module depends on nothing else in the crate, so
//! the store, the thumbnailer and federation can use these types without reaching up into the
//! media service. Server names and media ids themselves are `mxmedia_proto::ids`.

pub mod id;
pub mod meta;
pub mod thumb;
