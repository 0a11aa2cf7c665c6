use super::{Federation, FetchError};
use crate::config::Config;

/// Federation refuses loopback in every IPv6 embedding, for IP-literal server names and
/// delegation targets alike, even with a denylist that names only the IPv4 range.
#[tokio::test]
async fn federation_refuses_embedded_loopback() {
    let mut config = Config::default().federation;
    config.ip_range_denylist = vec!["127.0.0.0/8".parse().unwrap()];
    let federation = Federation::new(&config).unwrap();
    for host in [
        "127.0.0.1",
        "[::127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    ] {
        assert!(
            matches!(federation.lookup(host, 8448).await, Err(FetchError::Denied)),
            "{host}"
        );
    }
    assert!(federation.lookup("[2606:4700::1111]", 8448).await.is_ok());
}
