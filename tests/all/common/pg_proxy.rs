//! A TCP proxy between a test's store and PostgreSQL that can lose the reply to a
//! `COMMIT` on the wire: the server commits, the client never hears it and sees its
//! connection closed — the one failure a database client cannot tell from a commit
//! that did not happen. It reads PostgreSQL's protocol only as far as it must: the
//! untyped startup message, then typed messages (a type byte, a length that counts
//! itself) in both directions. TLS is not spoken (its URLs carry `sslmode=disable`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The proxy, listening on a free loopback port for as long as the test runs.
pub struct PgProxy {
    port: u16,
    armed: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
}

impl PgProxy {
    /// Starts proxying to the PostgreSQL server of `database_url` (host and port).
    pub async fn start(database_url: &str) -> Self {
        let upstream = upstream_of(database_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's port").port();
        let armed = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicUsize::new(0));
        let (a, l) = (armed.clone(), lost.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                tokio::spawn(relay(client, server, a.clone(), l.clone()));
            }
        });
        Self { port, armed, lost }
    }

    /// `database_url` through the proxy.
    pub fn url(&self, database_url: &str) -> String {
        let (scheme, rest) = database_url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').expect("a database in the URL");
        let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{scheme}://{user}127.0.0.1:{}/{path}{sep}sslmode=disable", self.port)
    }

    /// The reply to the next `COMMIT` any connection sends is lost: its connection is
    /// closed once the server has committed.
    pub fn lose_next_commit_reply(&self) {
        self.armed.fetch_add(1, Ordering::SeqCst);
    }

    /// How many `COMMIT` replies were lost so far.
    pub fn replies_lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

fn upstream_of(database_url: &str) -> SocketAddr {
    let rest = database_url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().expect("an authority");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host.contains(':') { host.to_string() } else { format!("{host}:5432") };
    let host = host.replace("localhost", "127.0.0.1");
    host.parse().unwrap_or_else(|e| panic!("the proxy needs a numeric loopback address, not {host}: {e}"))
}

async fn relay(client: TcpStream, server: TcpStream, armed: Arc<AtomicUsize>, lost: Arc<AtomicUsize>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set by the client's side when this connection's COMMIT is the armed one; the
    // server's side then drops the connection at the COMMIT's completion.
    let losing = Arc::new(AtomicBool::new(false));
    let up = tokio::spawn(client_to_server(client_read, server_write, armed, losing.clone()));
    server_to_client(server_read, client_write, losing, lost).await;
    up.abort();
}

/// One typed message: its type byte and its whole bytes (type, length, body).
async fn message(from: &mut OwnedReadHalf) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    from.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut bytes = head.to_vec();
    bytes.resize(1 + len.max(4), 0);
    from.read_exact(&mut bytes[5..]).await.ok()?;
    Some((head[0], bytes))
}

async fn client_to_server(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    armed: Arc<AtomicUsize>,
    losing: Arc<AtomicBool>,
) {
    // The startup message: a length that counts itself, no type byte.
    let mut len = [0u8; 4];
    if from.read_exact(&mut len).await.is_err() {
        return;
    }
    let mut startup = len.to_vec();
    startup.resize(u32::from_be_bytes(len).max(4) as usize, 0);
    if from.read_exact(&mut startup[4..]).await.is_err() || to.write_all(&startup).await.is_err() {
        return;
    }
    while let Some((kind, bytes)) = message(&mut from).await {
        // A simple query `COMMIT` (sqlx commits that way).
        if kind == b'Q'
            && bytes[5..].starts_with(b"COMMIT")
            && armed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            losing.store(true, Ordering::SeqCst);
        }
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

async fn server_to_client(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    losing: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
) {
    while let Some((kind, bytes)) = message(&mut from).await {
        // CommandComplete with the tag COMMIT: the server committed. Its reply is lost
        // and the connection closed (both halves are dropped on return).
        if kind == b'C' && bytes[5..].starts_with(b"COMMIT") && losing.load(Ordering::SeqCst) {
            lost.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
