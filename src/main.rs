//! The `mxmedia` command: parse arguments, load config, and dispatch to the subcommand (`cli`).

mod cli;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use mxmedia::{
    config::{Config, StrayEnv},
    export, import,
};

use crate::cli::{
    backup::run_backup,
    doctor::run_doctor,
    export::run_export,
    import::run_import,
    keys::{check_signing_key, generate_key},
    migrate::run_migrate,
    s3::check_bucket,
    serve::{init_tracing, serve},
};

#[derive(Parser)]
#[command(
    name = "mxmedia",
    version,
    about = "A Matrix media repository in one binary"
)]
struct Cli {
    /// TOML config file (default: $MXMEDIA_CONFIG, else /etc/mxmedia/config.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration and print it with secrets masked.
    CheckConfig,
    /// Write a new federation signing key file and print the line the homeserver must publish.
    GenerateKey {
        /// Where to write the key (default: ./mxmedia.signing.key). Never overwritten.
        path: Option<PathBuf>,
    },
    /// Write a consistent backup of the data dir into DIR, whether the server runs or not.
    /// DIR must not exist; when done it is a data dir that `serve` can run on.
    Backup {
        /// The data dir to back up. Default: the configured one, as `serve` would use.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where to write the backup: a directory that does not exist yet.
        dir: PathBuf,
        /// With blobs in S3: copy every blob into DIR/blobs too (verified by hash), so the
        /// backup does not depend on the bucket. Interrupted, run it again: it goes on.
        #[arg(long)]
        include_s3_blobs: bool,
    },
    /// Check the whole path to this server from outside (proxy routes and headers, upload size,
    /// federation keys and delegation, TLS, disk, clock) and print the fix for each problem.
    /// Run it as the service user while the server runs; exit 1 when something is wrong.
    Doctor {
        /// The public client URL (default: from https://SERVER_NAME/.well-known/matrix/client).
        #[arg(long)]
        base_url: Option<String>,
        /// An access token: also upload, download, thumbnail and remove a 1 MiB test image
        /// (a media admin's token, so the image can be removed).
        #[arg(long)]
        token: Option<String>,
        /// Print the report as JSON, for monitoring.
        #[arg(long)]
        json: bool,
    },
    /// Bring in the media of another media repository, keeping every mxc:// URI.
    #[command(subcommand)]
    Import(ImportFrom),
    /// Copy every blob file to the other blob backend (the data dir's blobs/ or the S3 bucket
    /// of [store.s3]), verified by hash, while the server keeps serving. Run it again to copy
    /// what was uploaded meanwhile; see the README for switching over.
    MigrateStore {
        /// The backend to copy to: `s3` (from the data dir) or `fs` (from the bucket).
        #[arg(long, value_enum)]
        to: BackendArg,
        /// Say what would be copied, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// After the copy, remove the copies in the old backend, once every blob is verified in
        /// the new one; refused unless the running server already reads from the new one.
        #[arg(long)]
        remove_source: bool,
        /// The data dir whose blobs to move. Default: the configured one, as `serve` would use.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write this server's media for another media repository, so nobody is locked in.
    #[command(subcommand)]
    Export(ExportTo),
}

#[derive(Subcommand)]
enum ExportTo {
    /// Write the local media in a Synapse media store's layout, and SQL giving Synapse's
    /// local_media_repository a row for each item (same ids, names, types, times,
    /// quarantines). Works with the server running or stopped; run it again to add what is new.
    Synapse {
        /// The media store to write (Synapse's media_store_path, or a new directory to move
        /// there). Files already there with the same bytes are left alone.
        #[arg(long)]
        media_store: PathBuf,
        /// Where to write the SQL statements (INSERT … ON CONFLICT DO NOTHING: safe to load twice).
        #[arg(long)]
        sql: PathBuf,
        /// The engine of Synapse's database: sqlite (load with `sqlite3 homeserver.db < FILE`)
        /// or postgres (load with `psql -f FILE`).
        #[arg(long, value_enum)]
        dialect: DialectArg,
        /// Hard-link blob files instead of copying (media store and data dir on one file system).
        #[arg(long)]
        link: bool,
        /// The data dir to export from. Default: the configured one, as `serve` would use.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    S3,
    Fs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DialectArg {
    Sqlite,
    Postgres,
}

#[derive(Subcommand)]
enum ImportFrom {
    /// Import a Synapse media repository: local media (and with --remote its remote cache),
    /// ids, names, types, times and quarantines. Run it again to bring in what is new.
    Synapse {
        /// Synapse's media_store_path.
        #[arg(long)]
        media_store: PathBuf,
        /// Synapse's database: the SQLite file, or a postgres:// URL. Only read.
        #[arg(long)]
        database: String,
        /// Also import the media Synapse cached from other servers.
        #[arg(long)]
        remote: bool,
        /// Also keep the thumbnails Synapse stored where they match a size served here
        /// (default: made again on demand).
        #[arg(long)]
        thumbnails: bool,
        /// Hard-link files instead of copying (media store and data dir on one file system).
        #[arg(long)]
        link: bool,
        /// Read and check everything, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where to list the ids not imported and why.
        #[arg(long, default_value = "mxmedia-import-problems.txt")]
        problems: PathBuf,
        /// The data dir to import into. Default: the configured one, as `serve` would use.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenerateKey { path }) = &cli.command {
        return generate_key(path.clone());
    }
    // `check-config` refuses every `MXMEDIA_*` variable that names no setting; the others only
    // refuse ones that look like a mistyped setting and ignore the rest (say, a shell's
    // `MXMEDIA_TOKEN`), naming them, so a leftover variable cannot keep the server down.
    let strays = match cli.command {
        Some(Command::CheckConfig) => StrayEnv::Refuse,
        _ => StrayEnv::Ignore,
    };
    let (config, ignored_env) = match Config::load_with(cli.config, strays) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("mxmedia: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!("{}", config.masked_json());
            let bucket = check_bucket(&config);
            let key = check_signing_key(&config);
            if bucket == ExitCode::SUCCESS {
                key
            } else {
                bucket
            }
        }
        Command::GenerateKey { .. } => ExitCode::FAILURE,
        Command::Backup {
            data_dir,
            dir,
            include_s3_blobs,
        } => {
            for var in &ignored_env {
                eprintln!("mxmedia: ignoring {var}: it names no setting");
            }
            let mut config = config;
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            let options = mxmedia::backup::Options {
                include_s3_blobs,
                progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            run_backup(&config, &dir, &options)
        }
        Command::Import(ImportFrom::Synapse {
            media_store,
            database,
            remote,
            thumbnails,
            link,
            dry_run,
            problems,
            data_dir,
        }) => {
            for var in &ignored_env {
                eprintln!("mxmedia: ignoring {var}: it names no setting");
            }
            let mut config = config;
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            let options = import::Options {
                media_store,
                database,
                remote,
                link,
                dry_run,
                problems_file: problems,
                progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                thumbnails,
            };
            run_import(&config, &options)
        }
        Command::MigrateStore {
            to,
            dry_run,
            remove_source,
            data_dir,
        } => {
            for var in &ignored_env {
                eprintln!("mxmedia: ignoring {var}: it names no setting");
            }
            let mut config = config;
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            let options = mxmedia::migrate::Options {
                to: match to {
                    BackendArg::S3 => mxmedia::store::backends::Backend::S3,
                    BackendArg::Fs => mxmedia::store::backends::Backend::Fs,
                },
                dry_run,
                remove_source,
                progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            run_migrate(&config, &options)
        }
        Command::Export(ExportTo::Synapse {
            media_store,
            sql,
            dialect,
            link,
            data_dir,
        }) => {
            for var in &ignored_env {
                eprintln!("mxmedia: ignoring {var}: it names no setting");
            }
            let mut config = config;
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            let options = export::Options {
                media_store,
                sql,
                dialect: match dialect {
                    DialectArg::Sqlite => export::Dialect::Sqlite,
                    DialectArg::Postgres => export::Dialect::Postgres,
                },
                link,
                progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            run_export(&config, &options)
        }
        Command::Doctor {
            base_url,
            token,
            json,
        } => run_doctor(&config, mxmedia::doctor::Options { base_url, token }, json),
        Command::Serve => {
            let _log_guard = init_tracing();
            for var in &ignored_env {
                tracing::warn!(
                    variable = %var,
                    "ignoring an MXMEDIA_ environment variable that names no setting"
                );
            }
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
