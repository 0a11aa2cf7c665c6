//! The SQL an export writes for Synapse's `local_media_repository`, one `INSERT` per item, in
//! the dialect of Synapse's database. Both dialects quote text the standard way (a quote is
//! doubled; nothing else is special once PostgreSQL is told `standard_conforming_strings`), so
//! any unicode name survives as it is. Every statement is `INSERT … ON CONFLICT (media_id) DO
//! NOTHING` (the table has `UNIQUE (media_id)`; SQLite ≥ 3.24, PostgreSQL ≥ 9.5), so the file
//! can be loaded twice, or after an earlier export's, and changes nothing the second time.
//! The whole file is one transaction: loaded whole or not at all.
//!
//! The columns are those of Synapse's current schema (its `full_schemas` plus deltas up to
//! `91/01_media_hash.sql`): `url_cache` is NULL (previews are not users' media).

use std::io::{self, Write};

use crate::store::export::ExportItem;

/// Synapse's two database engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

const COLUMNS: &str = "media_id, media_type, media_length, created_ts, upload_name, user_id, \
                       quarantined_by, url_cache, last_access_ts, safe_from_quarantine, \
                       authenticated, sha256";

impl Dialect {
    /// Set-up before the statements.
    pub(crate) fn header(self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "-- Written by `mxmedia export synapse`: local media for Synapse's \
             local_media_repository.\n-- Safe to load more than once: rows already there \
             are left as they are."
        )?;
        if self == Self::Postgres {
            // psql sends the file in the client's encoding, which a C or Latin-1 locale would
            // make mangle every non-ASCII name; and a backslash must stay a backslash.
            writeln!(out, "SET client_encoding = 'UTF8';")?;
            writeln!(out, "SET standard_conforming_strings = on;")?;
        }
        writeln!(out, "BEGIN;")
    }

    pub(crate) fn footer(self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "COMMIT;")
    }

    /// The statement inserting `item`, unless its id is there already.
    pub(crate) fn insert(self, out: &mut dyn Write, item: &ExportItem) -> io::Result<()> {
        writeln!(
            out,
            "INSERT INTO local_media_repository ({COLUMNS}) VALUES ({}, {}, {}, {}, {}, {}, {}, \
             NULL, {}, {}, {}, {}) ON CONFLICT (media_id) DO NOTHING;",
            text(&item.media_id),
            text(&item.content_type),
            item.len,
            item.created_at,
            item.filename.as_deref().map_or_else(null, text),
            text(&item.uploader),
            item.quarantined_by.as_deref().map_or_else(null, text),
            item.last_access.unwrap_or(item.created_at),
            self.boolean(item.protected),
            self.boolean(item.authenticated),
            text(&item.sha256),
        )
    }

    /// What Synapse itself stores: 0/1 in SQLite (no boolean type), booleans in PostgreSQL.
    fn boolean(self, value: bool) -> &'static str {
        match (self, value) {
            (Self::Sqlite, true) => "1",
            (Self::Sqlite, false) => "0",
            (Self::Postgres, true) => "TRUE",
            (Self::Postgres, false) => "FALSE",
        }
    }
}

fn null() -> String {
    "NULL".to_owned()
}

/// A string literal. A NUL, which neither engine keeps in text (PostgreSQL refuses it, SQLite's
/// shell ends the string there), becomes U+FFFD; everything else is kept byte for byte.
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::text;

    /// Quotes are doubled and nothing else changes, so any name reads back as written.
    #[test]
    fn literals_double_quotes_only() {
        assert_eq!(text("it's"), "'it''s'");
        assert_eq!(text(r"a\b"), r"'a\b'");
        assert_eq!(text("résumé ☃\n"), "'résumé ☃\n'");
        assert_eq!(text("a\0b"), "'a\u{fffd}b'");
    }
}
