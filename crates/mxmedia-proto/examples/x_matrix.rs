//! X-Matrix from the command line, for benchmarks and debugging a federation setup.
//!
//! `x_matrix sign KEY_FILE ORIGIN DESTINATION URI` prints the `Authorization` header value of a
//! `GET URI` from ORIGIN to DESTINATION, signed with the first key of KEY_FILE (Synapse format).
//! `x_matrix keys KEY_FILE SERVER_NAME` prints the `/_matrix/key/v2/server` response publishing
//! KEY_FILE's keys for SERVER_NAME, valid for a day.
//! `x_matrix bench [N]` times parsing and verifying one such header N times (what a server
//! does per request once the origin's key is cached) and prints the time per request.

use std::{process::ExitCode, time::Instant};

use mxmedia_proto::{RequestParts, ServerName, SigningKey, XMatrix, sign_request, verify_request};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["sign", key_file, origin, destination, uri] => sign(key_file, origin, destination, uri),
        ["keys", key_file, server_name] => keys(key_file, server_name),
        ["bench"] => bench(20_000),
        ["bench", n] => bench(n.parse().unwrap_or(20_000)),
        _ => {
            eprintln!(
                "usage: x_matrix sign KEY_FILE ORIGIN DESTINATION URI | keys KEY_FILE SERVER_NAME | bench [N]"
            );
            ExitCode::FAILURE
        }
    }
}

fn sign(key_file: &str, origin: &str, destination: &str, uri: &str) -> ExitCode {
    let result = (|| -> Result<String, Box<dyn std::error::Error>> {
        let key = SigningKey::from_key_file(&std::fs::read_to_string(key_file)?, None)?;
        let origin: ServerName = origin.parse()?;
        let destination: ServerName = destination.parse()?;
        let request = RequestParts {
            method: "GET",
            uri,
            origin: &origin,
            destination: &destination,
            content: None,
        };
        Ok(sign_request(&request, &key)?.to_string())
    })();
    match result {
        Ok(header) => {
            println!("{header}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("x_matrix: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keys(key_file: &str, server_name: &str) -> ExitCode {
    let result = (|| -> Result<String, Box<dyn std::error::Error>> {
        let keys = SigningKey::parse_key_file(&std::fs::read_to_string(key_file)?)?;
        let name: ServerName = server_name.parse()?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let until = u64::try_from(now.as_millis())? + 24 * 3600 * 1000;
        let response =
            mxmedia_proto::build_server_keys_response(&name, &keys, Default::default(), until)?;
        Ok(response.to_string())
    })();
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("x_matrix: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(n: u32) -> ExitCode {
    let Ok(key) = SigningKey::generate("bench") else {
        return ExitCode::FAILURE;
    };
    let (Ok(origin), Ok(ours)) = (
        "remote.example.org".parse::<ServerName>(),
        "media.example.org".parse::<ServerName>(),
    ) else {
        return ExitCode::FAILURE;
    };
    let uri =
        "/_matrix/federation/v1/media/download/AbCdEfGhIjKlMnOpQrStUvWxYz012345?timeout_ms=20000";
    let request = RequestParts {
        method: "GET",
        uri,
        origin: &origin,
        destination: &ours,
        content: None,
    };
    let Ok(header) = sign_request(&request, &key).map(|h| h.to_string()) else {
        return ExitCode::FAILURE;
    };
    let verify_key = key.verify_key();
    let mut ok = 0u32;
    let started = Instant::now();
    for _ in 0..n {
        let verified = XMatrix::parse(std::hint::black_box(&header))
            .and_then(|auth| verify_request(&auth, &ours, "GET", uri, None, &verify_key));
        ok += u32::from(verified.is_ok());
    }
    let elapsed = started.elapsed();
    println!(
        "parse + verify of an X-Matrix GET with a cached key: {:.1} µs per request ({n} requests, {ok} verified, {:.0} per second on one core)",
        elapsed.as_secs_f64() * 1e6 / f64::from(n),
        f64::from(n) / elapsed.as_secs_f64()
    );
    if ok == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
