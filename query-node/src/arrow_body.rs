//! Arrow IPC request and response bodies.
//!
//! LanceDB clients upload LZ4-compressed Arrow IPC *streams* and expect query results as
//! an Arrow IPC *file*. Decoding and encoding are CPU work, so they run on the blocking pool.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use bytes::Bytes;

use crate::error::ApiError;

/// Content type of an Arrow IPC file (query responses).
pub const ARROW_FILE_CONTENT_TYPE: &str = "application/vnd.apache.arrow.file";
/// Content type of an Arrow IPC stream (uploads).
pub const ARROW_STREAM_CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";

/// A fully decoded upload: its schema and every batch.
#[derive(Debug, Clone)]
pub struct DecodedBatches {
    /// The schema from the stream's first message.
    pub schema: SchemaRef,
    /// The batches, in order.
    pub batches: Vec<RecordBatch>,
}

/// Decodes a whole IPC stream, so that a malformed upload is refused before any write.
pub async fn decode_stream(body: Bytes) -> Result<DecodedBatches, ApiError> {
    tokio::task::spawn_blocking(move || decode_stream_blocking(body)).await?
}

fn decode_stream_blocking(body: Bytes) -> Result<DecodedBatches, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty; expected an Arrow IPC stream"));
    }
    let reader = StreamReader::try_new(Cursor::new(body), None)
        .map_err(|error| ApiError::bad_request(format!("the request body is not a valid Arrow IPC stream: {error}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::bad_request(format!("the Arrow IPC stream is malformed: {error}")))?;
    Ok(DecodedBatches { schema, batches })
}

/// Encodes batches as an Arrow IPC file.
pub async fn encode_file(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<u8>, ApiError> {
    tokio::task::spawn_blocking(move || encode_file_blocking(&schema, &batches)).await?
}

fn encode_file_blocking(schema: &Arc<arrow_schema::Schema>, batches: &[RecordBatch]) -> Result<Vec<u8>, ApiError> {
    let mut writer = FileWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_ipc::CompressionType;
    use arrow_ipc::reader::FileReader;
    use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
    use arrow_schema::{DataType, Field, Schema};

    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(StringArray::from(vec!["a", "b", "c"]))],
        )
        .expect("batch")
    }

    fn lz4_stream(batch: &RecordBatch) -> Vec<u8> {
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .expect("lz4 is compiled in");
        let mut writer = StreamWriter::try_new_with_options(Vec::new(), &batch.schema(), options).expect("writer");
        writer.write(batch).expect("write");
        writer.finish().expect("finish");
        writer.into_inner().expect("bytes")
    }

    #[tokio::test]
    async fn lz4_compressed_streams_decode() {
        let batch = sample();
        let decoded = decode_stream(Bytes::from(lz4_stream(&batch))).await.expect("decodes");
        assert_eq!(decoded.schema, batch.schema());
        assert_eq!(decoded.batches, vec![batch]);
    }

    #[tokio::test]
    async fn malformed_and_truncated_streams_are_bad_requests() {
        let garbage = decode_stream(Bytes::from_static(b"{\"not\": \"arrow\"}")).await.expect_err("garbage");
        assert!(matches!(garbage, ApiError::BadRequest(_)), "{garbage}");

        let stream = lz4_stream(&sample());
        let truncated = Bytes::copy_from_slice(&stream[..stream.len() - 20]);
        let error = decode_stream(truncated).await.expect_err("truncated");
        assert!(matches!(error, ApiError::BadRequest(_)), "{error}");

        assert!(matches!(decode_stream(Bytes::new()).await, Err(ApiError::BadRequest(_))));
    }

    #[tokio::test]
    async fn results_are_ipc_files() {
        let batch = sample();
        let bytes = encode_file(batch.schema(), vec![batch.clone()]).await.expect("encodes");
        let reader = FileReader::try_new(Cursor::new(bytes), None).expect("file format");
        let batches = reader.collect::<Result<Vec<_>, _>>().expect("reads");
        assert_eq!(batches, vec![batch]);
    }

    #[tokio::test]
    async fn empty_results_keep_their_schema() {
        let schema = sample().schema();
        let bytes = encode_file(schema.clone(), Vec::new()).await.expect("encodes");
        let reader = FileReader::try_new(Cursor::new(bytes), None).expect("file format");
        assert_eq!(reader.schema(), schema);
        assert_eq!(reader.count(), 0);
    }
}
