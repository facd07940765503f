//! The database feed: a source's change stream into the delivery log, one message per row
//! change and matching route.
//!
//! - First start: the source's change stream is created (a replication slot on PostgreSQL,
//!   the binary log position on MySQL) and its start stored as the checkpoint; existing rows
//!   are not sent, only changes from then on.
//! - Messages and the position after them are stored in one log transaction (up to
//!   [`FLUSH_MESSAGES`] messages or [`FLUSH_INTERVAL`]), then the source is acknowledged: the
//!   source keeps every change the log does not hold yet.
//! - A message's id derives from the relay, the route and the change's place in the source's
//!   log (the transaction's start position and the change's index in it), so a transaction
//!   read again after a crash is not stored twice, even when its first part was stored before
//!   its commit was read (large transactions are stored in parts).
//! - Every [`TABLE_CHECK_INTERVAL`] the source is asked for new tables that match a route; when
//!   one appears, what was read is stored and the feed starts over with it (its changes from
//!   then on are relayed).
//! - When the log holds [`crate::intake::MAX_PENDING`] undelivered messages, reading pauses until deliveries
//!   catch up, so a dead endpoint cannot fill the disk faster than retention empties it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::change::StreamEvent;
use ferry_core::connector::Source;
use ferry_core::select::Selection;
use ferry_core::{Error, Position, Result, TableName, TableSchema};
use tokio::sync::watch;
use tracing::info;

use crate::config::Route;
use crate::document::{documents, Coordinates};
use crate::intake::Intake;
use crate::log::NewMessage;
use crate::signature::message_id;
use ferry_core::calendar::unix_millis_now;

/// Messages stored per log transaction at most.
pub const FLUSH_MESSAGES: usize = 5_000;

/// How long read messages may wait before they are stored.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How often the source is asked for new tables that match a route.
pub const TABLE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The checkpoint's name in the log.
pub const CHECKPOINT: &str = "source";

/// The change stream's name on the source: `relay_` and the relay's name in `[a-z0-9_]`.
pub fn stream_name(relay: &str) -> String {
    let cleaned: String = relay
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("relay_{cleaned}")
}

/// The tables a route covers.
struct RouteTables {
    route: Arc<Route>,
    selection: Selection,
}

/// Reads the source into the log until `shutdown` turns true.
pub struct Feed {
    pub relay: String,
    pub routes: Vec<Arc<Route>>,
    pub intake: Intake,
}

impl Feed {
    /// The tables the routes select, and each route's selection.
    async fn tables(&self, source: &dyn Source) -> Result<(Vec<TableSchema>, Vec<RouteTables>)> {
        let mut routes = Vec::new();
        let mut all_patterns = Vec::new();
        for route in &self.routes {
            let selection = Selection::parse(&route.patterns)
                .map_err(|error| error.context(format!("route '{}'", route.name)))?;
            all_patterns.extend(route.patterns.iter().cloned());
            routes.push(RouteTables {
                route: route.clone(),
                selection,
            });
        }
        let catalog = source
            .read_catalog(&Selection::parse(&all_patterns)?)
            .await?;
        let tables: Vec<TableSchema> = catalog.tables;
        for route in &routes {
            if !tables
                .iter()
                .any(|table| route.selection.matches(&table.name))
            {
                return Err(Error::operator(
                    "relay.no_tables",
                    format!("route '{}' matches no table of the source ({})", route.route.name, route.route.patterns.join(", ")),
                )
                .with_hint("write tables as schema.table (PostgreSQL) or database.table (MySQL); * matches any part"));
            }
        }
        Ok((tables, routes))
    }

    /// Tables that match a route now but are not among `names`.
    async fn new_tables(&self, source: &dyn Source, names: &[TableName]) -> Result<Vec<TableName>> {
        let patterns: Vec<String> = self
            .routes
            .iter()
            .flat_map(|route| route.patterns.iter().cloned())
            .collect();
        let catalog = source.read_catalog(&Selection::parse(&patterns)?).await?;
        Ok(catalog
            .tables
            .into_iter()
            .map(|table| table.name)
            .filter(|name| !names.contains(name))
            .collect())
    }

    /// Runs until shutdown (Ok) or a failure (the caller retries transient ones).
    pub async fn run(
        &self,
        source: &dyn Source,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let (tables, routes) = self.tables(source).await?;
        let names: Vec<TableName> = tables.iter().map(|table| table.name.clone()).collect();
        let stream_name = stream_name(&self.relay);
        let start = match self.intake.log.checkpoint(CHECKPOINT).await? {
            Some(stored) => {
                let position = Position::from_storage(&stored).ok_or_else(|| {
                    Error::operator(
                        "relay.checkpoint",
                        format!("the log's checkpoint '{stored}' is not a position"),
                    )
                    .with_hint("the log belongs to another source: point [log] url at a new file")
                })?;
                source.update_stream(&stream_name, &names).await?;
                position
            }
            None => {
                let (position, _snapshot) = source.create_stream(&stream_name, &names).await?;
                self.intake
                    .store(Vec::new(), vec![(CHECKPOINT.into(), position.to_storage())])
                    .await?;
                info!(position = %position, tables = names.len(), "change stream created: changes from here on are relayed");
                position
            }
        };
        info!(position = %start, tables = names.len(), "reading the source's changes");
        let mut stream = source
            .open_stream(&stream_name, start.clone(), &tables, &[])
            .await?;
        let mut buffered: Vec<NewMessage> = Vec::new();
        let mut checkpoint: Option<Position> = None;
        let mut buffered_since = Instant::now();
        // Where the current transaction started (its changes' identity), and how many
        // changes of it were read.
        let mut transaction_at = start.to_storage();
        let mut index: u64 = 0;
        let mut last_position = start;
        let mut in_transaction = false;
        let mut next_table_check = Instant::now() + TABLE_CHECK_INTERVAL;
        loop {
            // Within a transaction its messages wait for its commit time (unless it grows
            // past FLUSH_MESSAGES).
            let flush_due = (!buffered.is_empty() || checkpoint.is_some()) && !in_transaction;
            let event = tokio::select! {
                event = stream.next() => event?,
                _ = tokio::time::sleep_until(next_table_check.into()), if !in_transaction => {
                    next_table_check = Instant::now() + TABLE_CHECK_INTERVAL;
                    let joined = self.new_tables(source, &names).await?;
                    if !joined.is_empty() {
                        // Everything read so far is stored; the next run takes them in.
                        self.store(&mut buffered, &mut checkpoint, &mut *stream).await?;
                        stream.close().await?;
                        info!(tables = ?joined.iter().map(ToString::to_string).collect::<Vec<_>>(), "new tables match a route: they join now (their changes from here on are relayed)");
                        return Err(Error::transient("relay.tables_joined", "new tables joined").starting_over_for(joined));
                    }
                    continue;
                }
                _ = tokio::time::sleep(FLUSH_INTERVAL.saturating_sub(buffered_since.elapsed())), if flush_due => {
                    self.flush(&mut buffered, &mut checkpoint, &mut *stream).await?;
                    buffered_since = Instant::now();
                    continue;
                }
                _ = shutdown.changed() => {
                    // Stored even past the pending limit: the workers have stopped.
                    self.store(&mut buffered, &mut checkpoint, &mut *stream).await?;
                    return stream.close().await;
                }
            };
            let Some(event) = event else {
                self.flush(&mut buffered, &mut checkpoint, &mut *stream)
                    .await?;
                return Err(Error::transient(
                    "relay.stream_ended",
                    "the source's change stream ended",
                ));
            };
            match event {
                StreamEvent::Begin { at } => {
                    in_transaction = true;
                    index = 0;
                    transaction_at = match at {
                        Some(at) => at.to_storage(),
                        None => format!("after {}", last_position.to_storage()),
                    };
                }
                StreamEvent::Change(change) => {
                    let coordinates = Coordinates {
                        position: &transaction_at,
                        index,
                        commit_time_unix_micros: None,
                    };
                    let index_text = index.to_string();
                    let position = format!("{transaction_at}#{index}");
                    for document in documents(&change, &coordinates) {
                        let topic = document.table.to_string();
                        for route in routes
                            .iter()
                            .filter(|route| route.selection.matches(&document.table))
                        {
                            buffered.push(NewMessage {
                                id: message_id(&[
                                    &self.relay,
                                    &route.route.name,
                                    &transaction_at,
                                    &index_text,
                                    &topic,
                                ]),
                                route: route.route.name.clone(),
                                topic: topic.clone(),
                                partition: None,
                                offset: None,
                                position: Some(position.clone()),
                                key: Some(document.key.clone()),
                                payload: document.body.clone().into_bytes(),
                                created_at_ms: unix_millis_now(),
                                old_key: document.old_key.clone(),
                                barrier: document.barrier,
                                refused: None,
                            });
                        }
                    }
                    index += 1;
                    if buffered.len() >= FLUSH_MESSAGES {
                        // Part of a large transaction: stored without a checkpoint (its ids
                        // make a second reading harmless).
                        self.flush(&mut buffered, &mut checkpoint, &mut *stream)
                            .await?;
                        buffered_since = Instant::now();
                    }
                }
                StreamEvent::Commit {
                    position,
                    commit_time_unix_micros,
                } => {
                    in_transaction = false;
                    stamp_commit_time(&mut buffered, &transaction_at, commit_time_unix_micros);
                    last_position = position.clone();
                    checkpoint = Some(position);
                    if buffered.len() >= FLUSH_MESSAGES {
                        self.flush(&mut buffered, &mut checkpoint, &mut *stream)
                            .await?;
                        buffered_since = Instant::now();
                    }
                }
                StreamEvent::Idle { position } | StreamEvent::Fence { position } => {
                    if !in_transaction {
                        last_position = position.clone();
                        checkpoint = Some(position);
                    }
                }
                StreamEvent::SchemaChanged { .. } => {
                    // Changes carry their columns' names: nothing to do.
                }
            }
        }
    }

    /// Waits until the log has room, then stores what was read and the checkpoint, then
    /// acknowledges the source.
    async fn flush(
        &self,
        buffered: &mut Vec<NewMessage>,
        checkpoint: &mut Option<Position>,
        stream: &mut dyn ferry_core::connector::ChangeStream,
    ) -> Result<()> {
        if buffered.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        self.intake.wait_for_room().await?;
        self.store(buffered, checkpoint, stream).await
    }

    /// Stores what was read and the checkpoint, then acknowledges the source.
    async fn store(
        &self,
        buffered: &mut Vec<NewMessage>,
        checkpoint: &mut Option<Position>,
        stream: &mut dyn ferry_core::connector::ChangeStream,
    ) -> Result<()> {
        let position = checkpoint.take();
        let checkpoints = position
            .as_ref()
            .map(|position| (CHECKPOINT.to_string(), position.to_storage()))
            .into_iter()
            .collect();
        self.intake
            .store(std::mem::take(buffered), checkpoints)
            .await?;
        if let Some(position) = position {
            stream.acknowledge(position);
        }
        Ok(())
    }
}

/// Documents read before their transaction's commit learn its time once it is known.
fn stamp_commit_time(buffered: &mut [NewMessage], transaction_at: &str, micros: i64) {
    let prefix = format!("{transaction_at}#");
    let stamp = format!("\"commit_time\":\"{}\"", crate::document::rfc3339(micros));
    for message in buffered.iter_mut().rev() {
        if !message
            .position
            .as_deref()
            .is_some_and(|position| position.starts_with(&prefix))
        {
            break;
        }
        if let Ok(text) = std::str::from_utf8(&message.payload) {
            if let Some(at) = text.rfind("\"commit_time\":null") {
                let mut stamped = String::with_capacity(text.len() + 40);
                stamped.push_str(&text[..at]);
                stamped.push_str(&stamp);
                stamped.push_str(&text[at + "\"commit_time\":null".len()..]);
                message.payload = stamped.into_bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_identifiers() {
        assert_eq!(stream_name("orders-relay"), "relay_orders_relay");
        assert_eq!(stream_name("Billing.2"), "relay_billing_2");
    }
}
