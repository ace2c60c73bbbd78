//! Strong reads without listing the store. In a cluster, every write records its table's
//! new version on the event bus (etcd) before it is acknowledged, and never lowers it
//! ([`lancefleet_common::events::EventBus::publish_write`]). So a strong read asks the bus
//! (one linearizable etcd read) and opens that version, whose manifest is immutable and
//! cacheable, instead of listing `_versions/`.
//!
//! A read lists the store after all when the bus records no version for the table, a
//! write to it is under way (announced, not yet recorded), the bus cannot be reached, the
//! recorded version does not open, or the table was not listed within the external-writer
//! check interval (`rest.external_writer_check`: how late a write from outside the cluster,
//! such as LanceDB OSS on the same bucket, may be seen). A newer version found by listing
//! is recorded, so later reads on every node see it too.
//!
//! A version opened this way is kept for the check interval, keyed by the record it came
//! from, so that the next strong read of an unchanged table costs the etcd read alone, not
//! the object-store round trips of opening a manifest. A table dropped and created again
//! through the cluster is another record, so its version 1 is never the old table's.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lance::Dataset;

use lancefleet_common::events::{ChangeKind, EventBus, RecordedVersion, TableEvent};
use prometheus::{IntCounterVec, Opts, register_int_counter_vec};

use crate::error::Result;
use crate::table_id::TableId;

/// Versions kept open for strong reads, over all tables.
const OPENED_VERSIONS: u64 = 1024;

/// `lancefleet_catalog_latest_version_lookups_total{source}`: how strong reads found a
/// table's latest version: `recorded` (the bus) or `store` (a listing).
static LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "lancefleet_catalog_latest_version_lookups_total",
            "How strong reads found a table's latest version: recorded on the bus, or by listing the store."
        ),
        &["source"]
    )
    .expect("register lancefleet_catalog_latest_version_lookups_total")
});

/// Counts one lookup of a latest version from `source` (`recorded` or `store`).
pub(crate) fn count_lookup(source: &str) {
    LOOKUPS.with_label_values(&[source]).inc();
}

/// Where a cluster records tables' latest versions, and when the store is checked anyway.
#[derive(Clone)]
pub struct RecordedVersions {
    bus: Arc<dyn EventBus>,
    /// Tables listed within the external-writer check interval.
    listed: moka::sync::Cache<String, ()>,
    /// Recorded versions opened within that interval, by (table, record generation, version).
    opened: moka::future::Cache<(String, i64, u64), Dataset>,
}

impl std::fmt::Debug for RecordedVersions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RecordedVersions").field("bus", &self.bus).finish_non_exhaustive()
    }
}

/// What a strong read should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Open this version: the recorded latest, of record `generation`.
    Open {
        /// The version.
        version: u64,
        /// Its record ([`RecordedVersion::generation`]).
        generation: i64,
    },
    /// List the store; the recorded version, when the bus answered.
    List(Option<RecordedVersion>),
}

impl RecordedVersions {
    /// Versions recorded on `bus`, with the store listed at least every `external_check`
    /// per table.
    pub fn new(bus: Arc<dyn EventBus>, external_check: Duration) -> Self {
        for source in ["recorded", "store"] {
            LOOKUPS.with_label_values(&[source]);
        }
        let listed = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(external_check).build();
        let opened = moka::future::Cache::builder().max_capacity(OPENED_VERSIONS).time_to_live(external_check).build();
        Self { bus, listed, opened }
    }

    /// How a strong read of `id` finds the latest version.
    pub async fn lookup(&self, id: &TableId) -> Lookup {
        let table = id.to_string();
        let recorded = match self.bus.recorded_version(&table).await {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::debug!(%table, %error, "no recorded version; listing the store");
                return Lookup::List(None);
            }
        };
        match recorded {
            Some(recorded) if !recorded.writing && self.listed.contains_key(&table) => {
                Lookup::Open { version: recorded.version, generation: recorded.generation }
            }
            other => Lookup::List(other),
        }
    }

    /// The dataset of `id` at the recorded `version` of record `generation`: the one opened
    /// within the check interval, or what `load` opens.
    pub async fn open<F, Fut>(&self, id: &TableId, version: u64, generation: i64, load: F) -> Result<Dataset>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Dataset>>,
    {
        let key = (id.to_string(), generation, version);
        if let Some(dataset) = self.opened.get(&key).await {
            return Ok(dataset);
        }
        let dataset = load().await?;
        self.opened.insert(key, dataset.clone()).await;
        Ok(dataset)
    }

    /// After a listing of `id` found `latest`: remembers the check, and records `latest`
    /// when it is newer than what the bus had (`recorded`) and no write is under way.
    pub async fn listed(&self, id: &TableId, latest: u64, recorded: Option<RecordedVersion>) {
        let table = id.to_string();
        self.listed.insert(table.clone(), ());
        let behind = recorded.is_none_or(|recorded| !recorded.writing && recorded.version < latest);
        if behind {
            let event = TableEvent::now(table.clone(), latest, ChangeKind::External, 0);
            if let Err(error) = self.bus.publish(event).await {
                tracing::debug!(%table, %error, "could not record the version found in the store");
            }
        }
    }
}
