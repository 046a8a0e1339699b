//! A TCP proxy for fault tests: the database reached through it can be cut
//! off as a crash would.

use sightline::config::Settings;

use crate::test_settings;

/// A TCP proxy in front of PostgreSQL whose `cut` makes the database
/// unreachable, as a crash would: the port closes and every open
/// connection through it is dropped.
pub struct TcpProxy {
    pub port: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    pub async fn start(target: String) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut until_cut = stopped.clone();
            loop {
                let accepted = tokio::select! {
                    _ = until_cut.wait_for(|cut| *cut) => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let target = target.clone();
                let mut until_cut = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = until_cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        TcpProxy { port, stop }
    }

    pub fn cut(&self) {
        self.stop.send_replace(true);
    }
}

/// Settings whose database is reached through a [`TcpProxy`]; returns them
/// with the proxy and a direct connection URL for the test's own checks.
pub async fn settings_behind_proxy() -> (Settings, TcpProxy, String) {
    let mut settings = test_settings().await;
    let direct = settings.database_url.clone();
    let mut url = url::Url::parse(&direct).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = TcpProxy::start(target).await;
    url.set_port(Some(proxy.port)).unwrap();
    settings.database_url = url.to_string();
    (settings, proxy, direct)
}
