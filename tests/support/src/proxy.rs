//! A TCP proxy for fault tests: the service reached through it can be cut
//! off as a crash would, or refused for a while (an outage) and let back.

use sightline::config::Settings;

use crate::test_settings;

/// A TCP proxy in front of PostgreSQL whose `cut` makes the database
/// unreachable, as a crash would: the port closes and every open
/// connection through it is dropped.
pub struct TcpProxy {
    pub port: u16,
    stop: tokio::sync::watch::Sender<bool>,
    /// While true, every connection is dropped at once (open ones too).
    refusing: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    pub async fn start(target: String) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (refusing, refused) = tokio::sync::watch::channel(false);
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
                if *refused.borrow() {
                    continue; // dropped: the outage
                }
                let target = target.clone();
                let mut until_cut = stopped.clone();
                let mut until_refused = refused.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = until_cut.wait_for(|cut| *cut) => {}
                        _ = until_refused.wait_for(|refusing| *refusing) => {}
                    }
                });
            }
        });
        TcpProxy {
            port,
            stop,
            refusing,
        }
    }

    pub fn cut(&self) {
        self.stop.send_replace(true);
    }

    /// An outage: open connections are dropped and new ones closed at once,
    /// until [`TcpProxy::allow`].
    pub fn refuse(&self) {
        self.refusing.send_replace(true);
    }

    /// The outage is over: connections are forwarded again.
    pub fn allow(&self) {
        self.refusing.send_replace(false);
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
