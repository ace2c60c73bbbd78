//! Test tables, written in-process through the engine's catalog, and what lance itself
//! answers over them (the baseline every distributed answer must equal).

use std::sync::Arc;

use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lance::Dataset;
use lancefleet_engine::{Catalog, CreateMode, InsertMode, TableId};

/// Dimension of the test vectors.
pub const DIM: i32 = 8;

/// A deterministic stream of numbers in [0, 1) (xorshift), so tables and queries repeat.
#[derive(Debug, Clone)]
pub struct Numbers(u64);

impl Numbers {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A vector of [`DIM`] numbers.
    pub fn vector(&mut self) -> Vec<f32> {
        (0..DIM).map(|_| self.next_f32()).collect()
    }
}

/// The schema of the test tables: `id`, `vector` (DIM floats), `category` (0..4), `body`.
pub fn schema() -> SchemaRef {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("vector", DataType::FixedSizeList(item, DIM), true),
        Field::new("category", DataType::Int64, false),
        Field::new("body", DataType::Utf8, true),
    ]))
}

/// `rows` rows with ids from `first`.
pub fn rows(first: i64, rows: usize, numbers: &mut Numbers) -> RecordBatch {
    let ids = (first..first + rows as i64).collect::<Vec<_>>();
    let values = (0..rows).flat_map(|_| numbers.vector()).collect::<Vec<_>>();
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let vectors = FixedSizeListArray::try_new(item, DIM, Arc::new(Float32Array::from(values)), None).expect("vectors");
    let words = ["river stone", "stone bridge", "silver river", "quiet forest", "river forest bridge"];
    let bodies = ids.iter().map(|id| words[(*id as usize) % words.len()]).collect::<Vec<_>>();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(vectors),
            Arc::new(Int64Array::from(ids.iter().map(|id| id % 4).collect::<Vec<_>>())),
            Arc::new(StringArray::from(bodies)),
        ],
    )
    .expect("a batch")
}

/// Creates table `name` of `fragments` fragments of `per_fragment` rows each (one write
/// per fragment), and returns its latest version.
pub async fn vector_table(catalog: &Catalog, name: &str, fragments: usize, per_fragment: usize) -> Dataset {
    let id = TableId::parse(name).expect("a table name");
    let mut numbers = Numbers::new(7);
    let mut dataset = None;
    for fragment in 0..fragments {
        let batch = rows((fragment * per_fragment) as i64, per_fragment, &mut numbers);
        let written = if fragment == 0 {
            catalog.create_table(&id, schema(), vec![batch], CreateMode::Create).await
        } else {
            catalog.insert(&id, schema(), vec![batch], InsertMode::Append).await
        };
        dataset = Some(written.expect("the write commits"));
    }
    dataset.expect("at least one fragment")
}

/// The `k` nearest rows to `query` by L2 as lance answers in one process, with a filter
/// applied before the search: `(id, distance)` in order.
pub async fn lance_nearest(dataset: &Dataset, query: &[f32], k: usize, filter: Option<&str>) -> Vec<(i64, f32)> {
    let mut scanner = dataset.scan();
    scanner.prefilter(true);
    scanner.nearest("vector", &Float32Array::from(query.to_vec()), k).expect("a vector search");
    scanner.project(&["id", "_distance"]).expect("a projection");
    if let Some(filter) = filter {
        scanner.filter(filter).expect("a filter");
    }
    let batches = scanner.try_into_stream().await.expect("runs").try_collect::<Vec<_>>().await.expect("answers");
    batches.iter().flat_map(ids_and_distances).collect()
}

/// `batch` as an Arrow IPC stream, the body of REST writes.
pub fn arrow_stream(batch: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).expect("a stream writer");
    writer.write(batch).expect("written");
    writer.into_inner().expect("finished")
}

/// `(id, _distance)` of every row of an answer.
pub fn ids_and_distances(batch: &RecordBatch) -> Vec<(i64, f32)> {
    let ids = column::<Int64Array>(batch, "id");
    let distances = column::<Float32Array>(batch, "_distance");
    (0..batch.num_rows()).map(|row| (ids.value(row), distances.value(row))).collect()
}

/// The ids of an answer, in order.
pub fn ids(batch: &RecordBatch) -> Vec<i64> {
    column::<Int64Array>(batch, "id").values().to_vec()
}

/// Column `name` of `batch` as `T`.
pub fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("the answer has a column '{name}'"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column '{name}' has the expected type"))
}

/// Rows of `dataset` matching `filter`, counted by lance in one process.
pub async fn lance_count(dataset: &Dataset, filter: Option<&str>) -> u64 {
    dataset.count_rows(filter.map(str::to_string)).await.expect("counts") as u64
}
