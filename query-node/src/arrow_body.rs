//! Arrow IPC request and response bodies.
//!
//! LanceDB clients upload LZ4-compressed Arrow IPC *streams* and expect query results as
//! an Arrow IPC *file*. A whole upload is decoded on the blocking pool before anything is
//! written; answers are encoded a batch at a time as their rows stream.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::dispatch::Answer;
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

/// Encodes `answer` as an Arrow IPC file, a body chunk per batch as its rows arrive: the
/// header with the first, the footer (the batches' offsets) after the last. An error of
/// the rows ends the body with it, so the client sees a broken transfer, never a short
/// file that reads as complete.
pub fn encode_file(answer: Answer) -> Result<BoxStream<'static, Result<Bytes, ApiError>>, ApiError> {
    let writer = FileWriter::try_new(Vec::new(), &answer.schema)?;
    let chunks = futures::stream::unfold(Some((writer, answer.rows)), |state| async move {
        let (mut writer, mut rows) = state?;
        let taken = |writer: &mut FileWriter<Vec<u8>>| Bytes::from(std::mem::take(writer.get_mut()));
        match rows.next().await {
            Some(Ok(batch)) => {
                let chunk = writer.write(&batch).map(|()| taken(&mut writer)).map_err(ApiError::from);
                let more = chunk.is_ok().then_some((writer, rows));
                Some((chunk, more))
            }
            Some(Err(error)) => Some((Err(error), None)),
            None => Some((writer.finish().map(|()| taken(&mut writer)).map_err(ApiError::from), None)),
        }
    });
    Ok(chunks.boxed())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    fn answer(schema: SchemaRef, rows: Vec<Result<RecordBatch, ApiError>>) -> Answer {
        Answer { schema, rows: futures::stream::iter(rows).boxed() }
    }

    /// The body's chunks, or the error that ended it.
    async fn body(answer: Answer) -> Result<Vec<Bytes>, ApiError> {
        use futures::TryStreamExt;
        encode_file(answer)?.try_collect().await
    }

    #[tokio::test]
    async fn results_are_ipc_files_sent_a_batch_at_a_time() {
        let batch = sample();
        let chunks = body(answer(batch.schema(), vec![Ok(batch.clone()), Ok(batch.clone())])).await.expect("encodes");
        assert_eq!(chunks.len(), 3, "a chunk per batch, then the footer");
        let reader = FileReader::try_new(Cursor::new(chunks.concat()), None).expect("file format");
        let batches = reader.collect::<Result<Vec<_>, _>>().expect("reads");
        assert_eq!(batches, vec![batch.clone(), batch]);
    }

    #[tokio::test]
    async fn empty_results_keep_their_schema() {
        let schema = sample().schema();
        let chunks = body(answer(schema.clone(), Vec::new())).await.expect("encodes");
        let reader = FileReader::try_new(Cursor::new(chunks.concat()), None).expect("file format");
        assert_eq!(reader.schema(), schema);
        assert_eq!(reader.count(), 0);
    }

    #[tokio::test]
    async fn a_failure_midway_ends_the_body_with_the_error() {
        let batch = sample();
        let rows = vec![Ok(batch.clone()), Err(ApiError::Internal("executor lost".into())), Ok(batch.clone())];
        let error = body(answer(batch.schema(), rows)).await.expect_err("broken off");
        assert!(matches!(error, ApiError::Internal(_)), "{error}");
    }
}
