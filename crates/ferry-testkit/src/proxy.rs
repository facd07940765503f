//! A fault-injecting TCP proxy for tests: placed between ferry and a server, it can delay
//! traffic, cut every connection, black-hole traffic (hold it without closing, as a dropped
//! network does) and limit bandwidth.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Forward everything at once.
    None,
    /// Forward after this delay per chunk.
    Delay(Duration),
    /// Forward nothing and close nothing.
    BlackHole,
    /// At most this many bytes per second in each direction.
    Bandwidth(u64),
}

/// A running proxy on 127.0.0.1.
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (fault, watcher) = watch::channel(Fault::None);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = connections.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watcher = watcher.clone();
                let handle = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let upward = pump(client_read, server_write, watcher.clone());
                    let downward = pump(server_read, client_write, watcher);
                    tokio::select! {
                        _ = upward => {}
                        _ = downward => {}
                    }
                });
                let mut list = tracked.lock().expect("connections lock");
                list.retain(|connection| !connection.is_finished());
                list.push(handle);
            }
        });
        Ok(FaultProxy {
            port,
            fault,
            connections,
            acceptor,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Applies a fault to current and future traffic.
    pub fn set(&self, fault: Fault) {
        let _ = self.fault.send(fault);
    }

    /// Closes every open connection at once (both ends see the connection drop).
    pub fn cut(&self) {
        for connection in self.connections.lock().expect("connections lock").drain(..) {
            connection.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // While black-holed, neither read nor forward: the peer's data sits unacknowledged.
        while *fault.borrow() == Fault::BlackHole {
            if fault.changed().await.is_err() {
                return;
            }
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let current = *fault.borrow();
        match current {
            Fault::Delay(delay) => tokio::time::sleep(delay).await,
            Fault::Bandwidth(bytes_per_second) => {
                tokio::time::sleep(Duration::from_secs_f64(
                    read as f64 / bytes_per_second.max(1) as f64,
                ))
                .await
            }
            Fault::BlackHole => {
                // Hold what was read when the hole opened (TCP would retransmit it), forward later.
                while *fault.borrow() == Fault::BlackHole {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
            Fault::None => {}
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
