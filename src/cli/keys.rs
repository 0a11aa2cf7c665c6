//! `mxmedia generate-key` and the signing-key part of `mxmedia check-config`: writing a
//! federation signing key, and checking that the homeserver publishes the one in use.

use std::{path::PathBuf, process::ExitCode};

use mxmedia::config::Config;

pub(crate) fn generate_key(path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(|| PathBuf::from("mxmedia.signing.key"));
    let written = mxmedia::federation::identity::new_key().and_then(|key| {
        mxmedia::federation::identity::write_key_file(&path, &key)?;
        Ok(key)
    });
    match written {
        Ok(key) => {
            println!(
                "Wrote the signing key {} to {}.\n\n\
                 Remote servers accept requests signed with it once the homeserver publishes it.\n\
                 Append this line to the homeserver's signing key file (Synapse: the file named by\n\
                 signing_key_path; keep the homeserver's own key first) and restart the homeserver:\n\n\
                 {}\n\
                 Then run mxmedia with MXMEDIA_FEDERATION__SIGNING_KEY_PATH={}",
                key.key_id(),
                path.display(),
                key.to_key_file_line(),
                path.display(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mxmedia: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: can we sign, and does the homeserver publish the key we sign with?
pub(crate) fn check_signing_key(config: &Config) -> ExitCode {
    use mxmedia::federation::identity::{GENERATED_KEY_FILE, Identity, Published};
    if config.federation.signing_key_path.is_none()
        && !config.data_dir.join(GENERATED_KEY_FILE).exists()
    {
        eprintln!(
            "note: no signing key yet; the first start generates {}",
            config.data_dir.join(GENERATED_KEY_FILE).display()
        );
        return ExitCode::SUCCESS;
    }
    let identity = match Identity::load(config) {
        Ok(identity) => identity,
        Err(e) => {
            eprintln!("mxmedia: signing key: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "signing key: {} from {}",
        identity.key.key_id(),
        identity.path.display()
    );
    let Some(url) = config.auth.homeserver_url.clone() else {
        return ExitCode::SUCCESS;
    };
    let outcome = actix_web::rt::System::new()
        .block_on(async move { mxmedia::verify_signing_key(&identity, &url).await });
    match outcome {
        Ok(Published::Yes) => eprintln!("the homeserver publishes this key"),
        Ok(Published::WrongKey) => eprintln!(
            "warning: the homeserver publishes a different public key under this key id; \
             remote servers will refuse mxmedia's federation requests"
        ),
        Ok(Published::Missing(ids)) => eprintln!(
            "warning: the homeserver publishes only [{}], not this key; remote servers will \
             refuse mxmedia's federation requests until it does (see `mxmedia generate-key`)",
            ids.join(", ")
        ),
        Err(e) => eprintln!("warning: could not check the homeserver's published keys: {e:#}"),
    }
    ExitCode::SUCCESS
}
