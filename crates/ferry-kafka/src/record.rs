//! A record's identity for matching and verifying: a digest of its key, value and headers
//! (with absent and empty kept apart), and its timestamp beside it.

use rdkafka::message::{Headers, Message};
use sha2::{Digest, Sha256};

/// What identifies a record's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub digest: [u8; 32],
    /// Creation time in milliseconds; None when the broker set the time at append.
    pub created_ms: Option<i64>,
}

fn feed(hasher: &mut Sha256, bytes: Option<&[u8]>) {
    match bytes {
        None => hasher.update([0u8]),
        Some(bytes) => {
            hasher.update([1u8]);
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
    }
}

/// The fingerprint of a record as read from either cluster.
pub fn fingerprint<M: Message>(message: &M) -> Fingerprint {
    let mut hasher = Sha256::new();
    feed(&mut hasher, message.key());
    feed(&mut hasher, message.payload());
    match message.headers() {
        None => hasher.update(0u64.to_be_bytes()),
        Some(headers) => {
            hasher.update((headers.count() as u64).to_be_bytes());
            for header in headers.iter() {
                feed(&mut hasher, Some(header.key.as_bytes()));
                feed(&mut hasher, header.value);
            }
        }
    }
    let created_ms = match message.timestamp() {
        rdkafka::Timestamp::CreateTime(ms) => Some(ms),
        _ => None,
    };
    Fingerprint {
        digest: hasher.finalize().into(),
        created_ms,
    }
}

impl Fingerprint {
    /// Whether a target record is the copy of a source record: same content, and the same
    /// creation time unless the target stamps records itself.
    pub fn is_copy_of(&self, source: &Fingerprint) -> bool {
        self.digest == source.digest
            && match (self.created_ms, source.created_ms) {
                // A source time of 0 or less cannot be kept (the producer stamps the present).
                (Some(target), Some(source)) if source > 0 => target == source,
                _ => true,
            }
    }
}

/// The record's size for throughput figures: key, value and headers.
pub fn size<M: Message>(message: &M) -> usize {
    let headers = message.headers().map_or(0, |headers| {
        headers
            .iter()
            .map(|header| header.key.len() + header.value.map_or(0, <[u8]>::len))
            .sum()
    });
    message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len) + headers
}
