//! `lancefleet smoke-test`: what a `helm test` pod runs against a running cluster. Through
//! the query node's REST API it creates a small table, searches it, counts it and drops it,
//! checking each answer; it exits 0 when all of it worked.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};

/// Rows of the smoke-test table.
const ROWS: i64 = 100;
/// Dimension of its vectors.
const DIM: i32 = 4;

/// The cluster behind the query node at `url` (e.g. `http://lancefleet-query-node:8080`).
#[derive(Debug)]
struct Cluster {
    url: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Cluster {
    /// POSTs `body` with `content_type` to `path`; the answer's bytes, or what went wrong.
    async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut request = self.http.post(format!("{}{path}", self.url)).header("content-type", content_type).body(body);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.map_err(|error| format!("POST {path}: {error}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| format!("POST {path}: {error}"))?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        Ok(bytes.to_vec())
    }
}

/// Row `id`'s vector.
fn vector(id: i64) -> Vec<f32> {
    (0..DIM).map(|dimension| ((id * 7 + i64::from(dimension) * 13) % 101) as f32 / 101.0).collect()
}

/// The table, as an Arrow IPC stream.
fn table() -> Result<Vec<u8>, String> {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("vector", DataType::FixedSizeList(item.clone(), DIM), false),
    ]));
    let values = Float32Array::from((0..ROWS).flat_map(vector).collect::<Vec<_>>());
    let vectors = FixedSizeListArray::try_new(item, DIM, Arc::new(values), None).map_err(|error| error.to_string())?;
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..ROWS)), Arc::new(vectors)])
            .map_err(|error| error.to_string())?;
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(|error| error.to_string())?;
    writer.write(&batch).map_err(|error| error.to_string())?;
    writer.into_inner().map_err(|error| error.to_string())
}

/// The ids of an Arrow IPC file answer, in order.
fn ids(answer: Vec<u8>) -> Result<Vec<i64>, String> {
    let reader =
        FileReader::try_new(Cursor::new(answer), None).map_err(|error| format!("not an Arrow file: {error}"))?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| error.to_string())?;
        let column = batch.column_by_name("id").ok_or("the answer has no id column")?;
        let column = column.as_any().downcast_ref::<Int64Array>().ok_or("ids are not Int64")?;
        ids.extend(column.iter().flatten());
    }
    Ok(ids)
}

/// Runs the smoke test against the query node at `url`, trusting `ca_cert` too.
pub async fn run(url: &str, api_key: Option<String>, ca_cert: Option<&Path>) -> Result<(), String> {
    let mut http = reqwest::Client::builder();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| format!("{} holds no PEM certificate: {error}", path.display()))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build().map_err(|error| format!("cannot make an HTTP client: {error}"))?;
    let cluster = Cluster { url: url.trim_end_matches('/').to_string(), api_key, http };
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis());
    let name = format!("lancefleet_smoke_{}_{millis}", std::process::id());
    cluster.post(&format!("/v1/table/{name}/create/"), "application/vnd.apache.arrow.stream", table()?).await?;
    println!("created table {name} with {ROWS} rows");
    let outcome = check(&cluster, &name).await;
    let dropped = cluster.post(&format!("/v1/table/{name}/drop/"), "application/json", b"{}".to_vec()).await;
    outcome?;
    dropped?;
    println!("dropped table {name}: the cluster works");
    Ok(())
}

/// Searches and counts table `name`.
async fn check(cluster: &Cluster, name: &str) -> Result<(), String> {
    let query = serde_json::json!({ "vector": vector(42), "k": 3, "columns": ["id"] });
    let answer =
        cluster.post(&format!("/v1/table/{name}/query/"), "application/json", query.to_string().into_bytes()).await?;
    let found = ids(answer)?;
    if found.first() != Some(&42) || found.len() != 3 {
        return Err(format!("the 3 nearest rows to row 42's vector are {found:?}; row 42 must come first"));
    }
    println!("searched: nearest ids {found:?}");
    let count = cluster.post(&format!("/v1/table/{name}/count_rows/"), "application/json", b"{}".to_vec()).await?;
    let count = String::from_utf8_lossy(&count).trim().to_string();
    if count != ROWS.to_string() {
        return Err(format!("count_rows answered {count}, not {ROWS}"));
    }
    println!("counted {count} rows");
    Ok(())
}
