//! Reading records again from the source (`POST /api/relay/replay`): what a replay asks for,
//! and the shape of what answers it (Kafka's replayer; a database source has none).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::log::NewMessage;

/// Which records to read again from the source (`POST /api/relay/replay`): one partition of a
/// topic, by offsets (inclusive) or by record times; only `route`'s messages when given.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub route: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
    #[serde(skip)]
    pub since_ms: Option<i64>,
    #[serde(skip)]
    pub until_ms: Option<i64>,
}

/// Reads records again from the source, as messages for the log.
pub type Replay = Arc<
    dyn Fn(
            ReplayRequest,
        ) -> Pin<Box<dyn Future<Output = ferry_core::Result<Vec<NewMessage>>> + Send>>
        + Send
        + Sync,
>;
