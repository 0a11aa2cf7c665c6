//! Reading a Synapse media repository: the rows of `local_media_repository` and
//! `remote_media_cache` from its database (SQLite file or PostgreSQL, read-only), and where each
//! row's file lies in its media store.
//!
//! The layout is Synapse's `MediaFilePaths`: `local_content/ab/cd/rest` for local media id
//! `abcdrest`, `remote_content/<origin>/ab/cd/rest` for a remote file id. Columns added by later
//! Synapse versions (`safe_from_quarantine`, `authenticated`, `sha256`) are read when present.
//! Rows are streamed: memory does not grow with the table.

use std::path::{Path, PathBuf};

use mxmedia_proto::ids::{MediaId, ServerName};

/// One row of either table, as much as the import needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    /// `None` for local media; the origin server of cached remote media.
    pub(crate) origin: Option<String>,
    pub(crate) media_id: String,
    /// The file id of remote media in the media store.
    pub(crate) filesystem_id: Option<String>,
    pub(crate) media_type: Option<String>,
    /// `None` for an async upload whose bytes never came.
    pub(crate) media_length: Option<i64>,
    pub(crate) created_ts: Option<i64>,
    pub(crate) upload_name: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) quarantined_by: Option<String>,
    /// Set on rows of URL previews, which are not users' media.
    pub(crate) url_cache: Option<String>,
    pub(crate) last_access_ts: Option<i64>,
    pub(crate) safe_from_quarantine: bool,
    pub(crate) authenticated: bool,
    pub(crate) sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Local,
    Remote,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Local => "local_media_repository",
            Self::Remote => "remote_media_cache",
        }
    }

    /// What is read, in `Row` order: a column, or a constant where the table has no such
    /// column; and the constant to read instead if a later Synapse's column is missing.
    fn columns(self) -> [(&'static str, Option<&'static str>); 14] {
        let (origin, fs_id, user, url_cache, safe) = match self {
            Self::Local => (
                "NULL",
                "NULL",
                "user_id",
                "url_cache",
                "safe_from_quarantine",
            ),
            Self::Remote => ("media_origin", "filesystem_id", "NULL", "NULL", "FALSE"),
        };
        [
            (origin, None),
            ("media_id", None),
            (fs_id, None),
            ("media_type", None),
            ("media_length", None),
            ("created_ts", None),
            ("upload_name", None),
            (user, None),
            ("quarantined_by", None),
            (url_cache, None),
            ("last_access_ts", None),
            (safe, Some("FALSE")),
            ("authenticated", Some("FALSE")),
            ("sha256", Some("NULL")),
        ]
    }

    /// The query for this table given the columns the database has. Both backends return the
    /// same types: text, 64-bit integers, and booleans as integers.
    fn select(self, has: &dyn Fn(&str) -> bool) -> String {
        let columns: Vec<String> = self
            .columns()
            .iter()
            .zip(0usize..)
            .map(|((column, missing), i)| {
                let value = match missing {
                    Some(instead) if !has(column) => instead,
                    _ => column,
                };
                match i {
                    4 | 5 | 10 => format!("CAST({value} AS BIGINT)"),
                    11 | 12 => format!("CASE WHEN {value} THEN 1 ELSE 0 END"),
                    _ if *value == "NULL" => "CAST(NULL AS TEXT)".to_owned(),
                    _ => (*value).to_owned(),
                }
            })
            .collect();
        format!("SELECT {} FROM {}", columns.join(", "), self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: not a readable SQLite database ({source})", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{}: no table {table}: is this Synapse's database (`database.args.database` in homeserver.yaml)?",
        path
    )]
    NotSynapse { path: String, table: &'static str },
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("reading the database: {0}")]
    Read(#[from] rusqlite::Error),
}

/// An open Synapse database.
pub(crate) enum Database {
    Sqlite {
        conn: rusqlite::Connection,
        path: PathBuf,
    },
    Postgres {
        client: Box<postgres::Client>,
        url: String,
    },
}

/// `--database`: a PostgreSQL URL, else a SQLite file.
pub(crate) fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

impl Database {
    /// Opens `database` read-only and checks that it has Synapse's media tables.
    pub(crate) fn open(database: &str) -> Result<Self, SourceError> {
        let db = if is_postgres_url(database) {
            let client = postgres::Client::connect(database, postgres::NoTls)?;
            Self::Postgres {
                client: Box::new(client),
                url: redact_url(database),
            }
        } else {
            let path = PathBuf::from(database);
            let sqlite_err = |source| SourceError::Sqlite {
                path: path.clone(),
                source,
            };
            // Read-only, and never created: a wrong path is an error, not an empty database.
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sqlite_err)?;
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .map_err(sqlite_err)?;
            // Opening reads nothing; this makes a file that is not a database fail here.
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sqlite_err)?;
            Self::Sqlite { conn, path }
        };
        Ok(db)
    }

    fn describe(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => path.display().to_string(),
            Self::Postgres { url, .. } => url.clone(),
        }
    }

    fn columns_of(&mut self, table: Table) -> Result<Vec<String>, SourceError> {
        let columns = match self {
            Self::Sqlite { conn, .. } => {
                let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
                stmt.query_map([table.name()], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?
            }
            Self::Postgres { client, .. } => client
                .query(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_name = $1 AND table_schema = current_schema()",
                    &[&table.name()],
                )?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect(),
        };
        if columns.is_empty() {
            return Err(SourceError::NotSynapse {
                path: self.describe(),
                table: table.name(),
            });
        }
        Ok(columns)
    }

    /// Calls `f` with every row of `table`, streamed, in one read-only snapshot. Stops at the
    /// first error `f` returns, which is passed back as `Ok(Err(..))`.
    pub(crate) fn for_each<E>(
        &mut self,
        table: Table,
        f: &mut dyn FnMut(Row) -> Result<(), E>,
    ) -> Result<Result<(), E>, SourceError> {
        let columns = self.columns_of(table)?;
        let query = table.select(&|c| columns.iter().any(|have| have == c));
        match self {
            Self::Sqlite { conn, .. } => {
                // One read transaction: the rows form one snapshot even while Synapse writes.
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
                let mut stmt = tx.prepare(&query)?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let row = Row {
                        origin: r.get(0)?,
                        media_id: r.get(1)?,
                        filesystem_id: r.get(2)?,
                        media_type: r.get(3)?,
                        media_length: r.get(4)?,
                        created_ts: r.get(5)?,
                        upload_name: r.get(6)?,
                        user_id: r.get(7)?,
                        quarantined_by: r.get(8)?,
                        url_cache: r.get(9)?,
                        last_access_ts: r.get(10)?,
                        safe_from_quarantine: r.get::<_, i64>(11)? != 0,
                        authenticated: r.get::<_, i64>(12)? != 0,
                        sha256: r.get(13)?,
                    };
                    if let Err(e) = f(row) {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            }
            Self::Postgres { client, .. } => {
                let mut tx = client
                    .build_transaction()
                    .read_only(true)
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .start()?;
                // A portal fetched in pages: the result set never sits in memory whole.
                let portal = tx.bind(query.as_str(), &[])?;
                loop {
                    let page = tx.query_portal(&portal, 512)?;
                    if page.is_empty() {
                        break;
                    }
                    for r in page {
                        let row = Row {
                            origin: r.try_get(0)?,
                            media_id: r.try_get(1)?,
                            filesystem_id: r.try_get(2)?,
                            media_type: r.try_get(3)?,
                            media_length: r.try_get(4)?,
                            created_ts: r.try_get(5)?,
                            upload_name: r.try_get(6)?,
                            user_id: r.try_get(7)?,
                            quarantined_by: r.try_get(8)?,
                            url_cache: r.try_get(9)?,
                            last_access_ts: r.try_get(10)?,
                            safe_from_quarantine: r.try_get::<_, i32>(11)? != 0,
                            authenticated: r.try_get::<_, i32>(12)? != 0,
                            sha256: r.try_get(13)?,
                        };
                        if let Err(e) = f(row) {
                            return Ok(Err(e));
                        }
                    }
                }
                tx.rollback()?;
                Ok(Ok(()))
            }
        }
    }
}

/// A URL without its password, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "the PostgreSQL URL".to_owned(),
    }
}

/// Where Synapse keeps the file of `row` under `media_store`, or why it cannot say safely.
pub(crate) fn file_path(media_store: &Path, row: &Row) -> Result<PathBuf, &'static str> {
    match &row.origin {
        None => {
            let id: MediaId = row.media_id.parse().map_err(|_| "invalid media id")?;
            let (a, b, rest) = split_id(id.as_str()).ok_or("media id too short for the layout")?;
            Ok(media_store.join("local_content").join(a).join(b).join(rest))
        }
        Some(origin) => {
            let origin: ServerName = origin.parse().map_err(|_| "invalid origin server name")?;
            let fs_id = row.filesystem_id.as_deref().ok_or("no filesystem_id")?;
            // Synapse's file ids are random letters; anything else could walk out of the store.
            if !fs_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err("invalid filesystem_id");
            }
            let (a, b, rest) = split_id(fs_id).ok_or("filesystem_id too short")?;
            Ok(media_store
                .join("remote_content")
                .join(origin.as_str())
                .join(a)
                .join(b)
                .join(rest))
        }
    }
}

fn split_id(id: &str) -> Option<(&str, &str, &str)> {
    let a = id.get(..2)?;
    let b = id.get(2..4)?;
    let rest = id.get(4..).filter(|r| !r.is_empty())?;
    Some((a, b, rest))
}

/// One row of `local_media_repository_thumbnails` or `remote_media_cache_thumbnails`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ThumbRow {
    /// `None` for thumbnails of local media.
    pub(crate) origin: Option<String>,
    pub(crate) media_id: String,
    /// The file id of the remote media the thumbnail was made from.
    pub(crate) filesystem_id: Option<String>,
    pub(crate) width: i64,
    pub(crate) height: i64,
    pub(crate) content_type: String,
    pub(crate) method: String,
    pub(crate) length: Option<i64>,
}

impl Table {
    fn thumbnails(self) -> &'static str {
        match self {
            Self::Local => "local_media_repository_thumbnails",
            Self::Remote => "remote_media_cache_thumbnails",
        }
    }

    fn select_thumbnails(self) -> String {
        let (origin, fs_id) = match self {
            Self::Local => ("CAST(NULL AS TEXT)", "CAST(NULL AS TEXT)"),
            Self::Remote => ("media_origin", "filesystem_id"),
        };
        format!(
            "SELECT {origin}, media_id, {fs_id}, CAST(thumbnail_width AS BIGINT), \
             CAST(thumbnail_height AS BIGINT), thumbnail_type, thumbnail_method, \
             CAST(thumbnail_length AS BIGINT) FROM {}",
            self.thumbnails()
        )
    }
}

impl Database {
    /// Calls `f` with every thumbnail row of `table`, streamed, as `for_each` does with media.
    pub(crate) fn for_each_thumbnail<E>(
        &mut self,
        table: Table,
        f: &mut dyn FnMut(ThumbRow) -> Result<(), E>,
    ) -> Result<Result<(), E>, SourceError> {
        let query = table.select_thumbnails();
        match self {
            Self::Sqlite { conn, .. } => {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
                let mut stmt = tx.prepare(&query)?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let row = ThumbRow {
                        origin: r.get(0)?,
                        media_id: r.get(1)?,
                        filesystem_id: r.get(2)?,
                        width: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                        height: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                        content_type: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        method: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                        length: r.get(7)?,
                    };
                    if let Err(e) = f(row) {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            }
            Self::Postgres { client, .. } => {
                let mut tx = client
                    .build_transaction()
                    .read_only(true)
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .start()?;
                let portal = tx.bind(query.as_str(), &[])?;
                loop {
                    let page = tx.query_portal(&portal, 512)?;
                    if page.is_empty() {
                        break;
                    }
                    for r in page {
                        let row = ThumbRow {
                            origin: r.try_get(0)?,
                            media_id: r.try_get(1)?,
                            filesystem_id: r.try_get(2)?,
                            width: r.try_get::<_, Option<i64>>(3)?.unwrap_or(0),
                            height: r.try_get::<_, Option<i64>>(4)?.unwrap_or(0),
                            content_type: r.try_get::<_, Option<String>>(5)?.unwrap_or_default(),
                            method: r.try_get::<_, Option<String>>(6)?.unwrap_or_default(),
                            length: r.try_get(7)?,
                        };
                        if let Err(e) = f(row) {
                            return Ok(Err(e));
                        }
                    }
                }
                tx.rollback()?;
                Ok(Ok(()))
            }
        }
    }
}

/// Where Synapse keeps the thumbnail file of `row`:
/// `local_thumbnails/ab/cd/rest/W-H-top-sub-method` (or `remote_thumbnail/<origin>/…` by file id).
pub(crate) fn thumbnail_path(media_store: &Path, row: &ThumbRow) -> Result<PathBuf, &'static str> {
    let (top, sub) = row
        .content_type
        .split_once('/')
        .ok_or("thumbnail type is not a MIME type")?;
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
            && s != "."
            && s != ".."
    };
    if !safe(top) || !safe(sub) || !safe(&row.method) {
        return Err("invalid thumbnail type or method");
    }
    let name = format!("{}-{}-{top}-{sub}-{}", row.width, row.height, row.method);
    let media = Row {
        origin: row.origin.clone(),
        media_id: row.media_id.clone(),
        filesystem_id: row.filesystem_id.clone(),
        ..Row::default()
    };
    // The original's path, with the thumbnail directory in place of the content directory.
    let original = file_path(media_store, &media)?;
    let relative = original
        .strip_prefix(media_store)
        .map_err(|_| "thumbnail path outside the media store")?;
    let mut parts = relative.components();
    let top_dir = match parts.next().and_then(|c| c.as_os_str().to_str()) {
        Some("local_content") => "local_thumbnails",
        Some("remote_content") => "remote_thumbnail",
        _ => return Err("unexpected media store layout"),
    };
    Ok(media_store.join(top_dir).join(parts.as_path()).join(name))
}
