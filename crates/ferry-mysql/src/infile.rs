//! In-memory "files" for `LOAD DATA LOCAL` statements run inside a transaction, where a
//! connection's own infile handler cannot be set (the transaction holds the connection):
//! registered by name, served once by every ferry session's global handler.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

/// Files registered for a `LOAD DATA LOCAL` inside a transaction (where a connection's own
/// handler cannot be set, since the transaction holds the connection), by name. Every ferry
/// session serves `LOCAL` requests from here ([`serve_registered`]): a name not registered is
/// refused, so a server can never make ferry read a file from disk.
static REGISTERED: Mutex<BTreeMap<String, Bytes>> = Mutex::new(BTreeMap::new());
static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

/// A registered file; dropping it withdraws the file if the server did not ask for it.
pub(crate) struct Registered {
    name: String,
}

impl Registered {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut files) = REGISTERED.lock() {
            files.remove(&self.name);
        }
    }
}

/// Registers `data` under a name of its own, for one `LOAD DATA LOCAL INFILE 'name'`.
pub(crate) fn register(data: Vec<u8>) -> Registered {
    // Not guessable: every ferry session serves these, a source's included.
    static SECRET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let name = format!(
        "ferry-apply-{secret:016x}-{}",
        NEXT_NAME.fetch_add(1, Ordering::Relaxed)
    );
    if let Ok(mut files) = REGISTERED.lock() {
        files.insert(name.clone(), Bytes::from(data));
    }
    Registered { name }
}

/// The sessions' global `LOCAL` handler: the registered file of that name, once.
pub(crate) fn serve_registered(
    file_name: &[u8],
) -> futures_util::future::BoxFuture<
    'static,
    std::result::Result<mysql_async::InfileData, mysql_async::LocalInfileError>,
> {
    let name = String::from_utf8_lossy(file_name).into_owned();
    let data = REGISTERED
        .lock()
        .ok()
        .and_then(|mut files| files.remove(&name));
    Box::pin(async move {
        let data = data.ok_or_else(|| {
            mysql_async::LocalInfileError::other(std::io::Error::other(format!(
                "ferry registered no file named {name:?}"
            )))
        })?;
        Ok::<mysql_async::InfileData, mysql_async::LocalInfileError>(Box::pin(
            futures_util::stream::iter(super::load::pieces(&data)),
        ))
    })
}
