//! Where an import's records go: the store opened by this process (server stopped), the
//! running server over the data dir's socket, or nowhere (`--dry-run`), and the choice between
//! them.

use std::{
    fs,
    os::unix::{fs::MetadataExt as _, net::UnixStream},
};

use super::{Error, Options, Target, socket};
use crate::{
    backup::SOCKET_NAME,
    config::Config,
    store::{
        Store,
        import::{ImportContent, ImportItem, ImportOutcome, ImportThumb, Known, ThumbOutcome},
    },
};

/// Where the records go.
pub(super) enum Sink {
    Store(Store),
    Socket(socket::Client),
    /// Dry run: lookups from the running server if there is one.
    DryRun(Option<socket::Client>),
}

impl Sink {
    pub(super) fn lookup(&mut self, keys: Vec<String>) -> Result<Vec<Known>, String> {
        match self {
            Self::Store(store) => store.import_lookup(&keys).map_err(|e| format!("{e:#}")),
            Self::Socket(client) | Self::DryRun(Some(client)) => {
                client.lookup(keys).map_err(|e| e.to_string())
            }
            Self::DryRun(None) => Ok(vec![Known::Absent; keys.len()]),
        }
    }

    pub(super) fn commit(&mut self, items: Vec<ImportItem>) -> Result<Vec<ImportOutcome>, String> {
        match self {
            Self::Store(store) => store
                .commit_import(&items)
                .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
            Self::Socket(client) => client.commit(items).map_err(|e| e.to_string()),
            Self::DryRun(_) => Ok(items
                .iter()
                .map(|item| match item.content {
                    ImportContent::File { .. } => ImportOutcome::Imported { new_blob: true },
                    ImportContent::Quarantined { .. } => ImportOutcome::Blocked,
                })
                .collect()),
        }
    }
}

impl Sink {
    pub(super) fn commit_thumbnails(
        &mut self,
        thumbs: Vec<ImportThumb>,
    ) -> Result<Vec<ThumbOutcome>, String> {
        match self {
            Self::Store(store) => store
                .commit_import_thumbnails(&thumbs)
                .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
            Self::Socket(client) => client.thumbnails(thumbs).map_err(|e| e.to_string()),
            Self::DryRun(_) => Ok(vec![ThumbOutcome::Imported; thumbs.len()]),
        }
    }
}

pub(super) fn connect(config: &Config, options: &Options) -> Result<(Sink, Target), Error> {
    let data_dir = &config.data_dir;
    let socket = data_dir.join(SOCKET_NAME);
    let socket_err = |source| Error::Socket {
        socket: socket.clone(),
        source,
    };
    let running = UnixStream::connect(&socket).ok();
    if options.dry_run {
        let client = running.map(socket::Client::start).transpose();
        let client = client.map_err(socket_err)?;
        let asked_server = client.is_some();
        return Ok((Sink::DryRun(client), Target::DryRun { asked_server }));
    }
    // Files staged here become the server's blob files: they must be its user's.
    if let Ok(meta) = fs::metadata(data_dir)
        && meta.uid() != nix::unistd::geteuid().as_raw()
    {
        return Err(Error::WrongUser {
            data_dir: data_dir.clone(),
            owner: meta.uid(),
        });
    }
    if let Some(stream) = running {
        let client = socket::Client::start(stream).map_err(socket_err)?;
        return Ok((Sink::Socket(client), Target::RunningServer));
    }
    let store = Store::open(config).map_err(|source| Error::Store {
        data_dir: data_dir.clone(),
        source,
    })?;
    Ok((Sink::Store(store), Target::StoppedDataDir))
}
