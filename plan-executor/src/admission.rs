//! Admission of plan fragments: what admitted fragments may hold in memory together
//! (`executor.memory_budget`), each counted by an estimate of its answer
//! (`executor.fragment_memory` for its read buffers, plus `limit` rows of the table's
//! width when it has a limit). A fragment that does not fit waits, first come first
//! served; when `executor.max_queued` already wait, or it has waited
//! `executor.queue_timeout` (or its own deadline passed), it is refused as UNAVAILABLE, which
//! the query node retries on the fragment's next replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow_schema::{DataType, Schema};
use lancefleet_common::config::ExecutorConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ExecutorError;
use crate::metrics::METRICS;

/// Bytes one unit of the budget stands for (the semaphore counts in `u32` units).
const UNIT: u64 = 1 << 16;
/// Width assumed for a value of variable size (strings, binaries, lists).
const VARIABLE_WIDTH: u64 = 64;

/// The memory budget of one executor and the fragments waiting for room in it.
#[derive(Debug)]
pub struct Admission {
    room: Arc<Semaphore>,
    budget_units: u32,
    base: u64,
    waiting: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

impl Admission {
    /// The budget `config` sets.
    pub fn new(config: &ExecutorConfig) -> Self {
        let budget_units = u32::try_from((config.memory_budget.bytes() / UNIT).max(1)).unwrap_or(u32::MAX);
        Self {
            room: Arc::new(Semaphore::new(budget_units as usize)),
            budget_units,
            base: config.fragment_memory.bytes(),
            waiting: AtomicUsize::new(0),
            max_queued: config.max_queued,
            queue_timeout: config.queue_timeout,
        }
    }

    /// What a fragment returning at most `limit` rows of `schema` is counted for.
    pub fn estimate(&self, limit: Option<u64>, schema: &Schema) -> u64 {
        self.base.saturating_add(limit.unwrap_or(0).saturating_mul(row_width(schema)))
    }

    /// Room for a fragment estimated at `bytes`, held until the permit drops; waits at most
    /// the queue timeout or `deadline`, whichever comes first.
    pub async fn admit(&self, bytes: u64, deadline: Option<Duration>) -> Result<OwnedSemaphorePermit, ExecutorError> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.budget_units);
        if let Ok(permit) = self.room.clone().try_acquire_many_owned(units) {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(refused("its queue is full"));
        }
        METRICS.admission_waiting.inc();
        let wait = deadline.map_or(self.queue_timeout, |deadline| deadline.min(self.queue_timeout));
        let admitted = tokio::time::timeout(wait, self.room.clone().acquire_many_owned(units)).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        METRICS.admission_waiting.dec();
        match admitted {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(refused("it is stopping")),
            Err(_elapsed) => Err(refused("no room came free in time")),
        }
    }
}

/// A refusal the query node retries elsewhere.
fn refused(why: &str) -> ExecutorError {
    METRICS.admission_refused.inc();
    ExecutorError::Overloaded(format!("this executor is at its memory budget and {why}; try another replica"))
}

/// The bytes of one row of `schema`, roughly: fixed widths as they are, vectors by their
/// dimension, values of variable size at [`VARIABLE_WIDTH`].
pub fn row_width(schema: &Schema) -> u64 {
    schema.fields().iter().map(|field| width(field.data_type())).sum()
}

fn width(data_type: &DataType) -> u64 {
    match data_type {
        DataType::FixedSizeList(item, size) => {
            u64::try_from(*size).unwrap_or(0).saturating_mul(width(item.data_type()))
        }
        DataType::Struct(fields) => fields.iter().map(|field| width(field.data_type())).sum(),
        other => other.primitive_width().map_or(VARIABLE_WIDTH, |bytes| bytes as u64),
    }
}

#[cfg(test)]
mod tests {
    use arrow_schema::Field;
    use lancefleet_common::ServiceError;
    use lancefleet_common::config::ByteSize;

    use super::*;

    fn admission(budget: ByteSize, max_queued: usize) -> Admission {
        let config = ExecutorConfig {
            memory_budget: budget,
            fragment_memory: ByteSize::mib(1),
            max_queued,
            queue_timeout: Duration::from_millis(200),
            ..ExecutorConfig::default()
        };
        Admission::new(&config)
    }

    #[test]
    fn estimates_count_the_read_buffers_and_limit_rows_of_the_tables_width() {
        let vector = DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 768);
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("vector", vector, true),
            Field::new("text", DataType::Utf8, true),
        ]);
        assert_eq!(row_width(&schema), 8 + 768 * 4 + 64);
        let admission = admission(ByteSize::gib(1), 4);
        assert_eq!(admission.estimate(None, &schema), 1 << 20);
        assert_eq!(admission.estimate(Some(100), &schema), (1 << 20) + 100 * 3144);
    }

    #[tokio::test]
    async fn fragments_wait_for_room_and_are_refused_when_the_queue_is_full_or_time_runs_out() {
        let admission = Arc::new(admission(ByteSize::mib(4), 1));
        let first = admission.admit(3 << 20, None).await.expect("fits");
        // Waits, then gets room when the first one ends.
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(2 << 20, None).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let full = admission.admit(2 << 20, None).await.expect_err("one waits already");
        assert!(full.to_string().contains("queue is full"), "{full}");
        drop(first);
        waiting.await.expect("joined").expect("admitted once room came free");
        // Too big for the budget: counted as the whole budget, so it runs alone.
        let whole = admission.admit(1 << 40, None).await.expect("the whole budget");
        let late = admission.admit(1, Some(Duration::from_millis(20))).await.expect_err("no room before its deadline");
        assert!(late.to_string().contains("in time"), "{late}");
        assert_eq!(late.to_status().error_code(), lancefleet_proto::ErrorCode::Unavailable);
        drop(whole);
    }
}
