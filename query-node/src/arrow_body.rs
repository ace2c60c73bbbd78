//! Arrow IPC request and response bodies.
//!
//! LanceDB clients upload LZ4-compressed Arrow IPC *streams* and expect query results as
//! an Arrow IPC *file*. A whole upload is decoded on the blocking pool before anything is
//! written; answers are encoded a batch at a time as their rows stream.

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

/// Decodes a whole IPC stream, so that a malformed upload is refused before any write;
/// `limit` bounds what its compressed buffers may decompress to.
pub async fn decode_stream(body: Bytes, limit: usize) -> Result<DecodedBatches, ApiError> {
    tokio::task::spawn_blocking(move || {
        if body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty; expected an Arrow IPC stream"));
        }
        read_ipc_stream(&body, limit)
    })
    .await?
}

/// Reads a whole Arrow IPC stream a client sent. A stream arrow-rs cannot read is a 400,
/// also where its reader would not return an error: its framing is checked first
/// ([`check_framing`]), and a panic of the reader (it panics on some corrupt buffer
/// offsets) is caught.
pub fn read_ipc_stream(input: &[u8], limit: usize) -> Result<DecodedBatches, ApiError> {
    check_framing(input, limit)?;
    let read = || {
        let reader = StreamReader::try_new(input, None).map_err(|error| {
            ApiError::bad_request(format!("the request body is not a valid Arrow IPC stream: {error}"))
        })?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ApiError::bad_request(format!("the Arrow IPC stream is malformed: {error}")))?;
        Ok(DecodedBatches { schema, batches })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the decoder failed");
        Err(ApiError::bad_request(format!("the Arrow IPC stream is malformed (the reader failed: {reason})")))
    })
}

/// Walks the messages of an IPC stream before arrow-rs reads it. arrow-rs allocates what
/// a message header claims (its metadata and body lengths, a compressed buffer's
/// decompressed length) before reading any of it, and a failed allocation aborts the
/// process: a few bytes claiming 512 GiB would take the node down. Refuses metadata or
/// a body longer than the bytes that follow, and compressed buffers that claim more than
/// `limit` bytes in all.
fn check_framing(mut rest: &[u8], limit: usize) -> Result<(), ApiError> {
    fn take<'a>(rest: &mut &'a [u8], length: usize, what: &str) -> Result<&'a [u8], ApiError> {
        let (taken, remainder) = rest
            .split_at_checked(length)
            .ok_or_else(|| malformed(format!("{what} of {length} bytes, but only {} bytes follow", rest.len())))?;
        *rest = remainder;
        Ok(taken)
    }
    let mut claimed = 0;
    while !rest.is_empty() {
        // A message: [0xFFFFFFFF] <metadata length: i32> <metadata> <body>; length 0 ends.
        let mut word = take(&mut rest, 4, "a message length")?;
        if word == [0xff; 4] {
            word = take(&mut rest, 4, "a message length")?;
        }
        let length = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        if length == 0 {
            return Ok(());
        }
        let length = usize::try_from(length).map_err(|_| malformed(format!("a message length of {length}")))?;
        let metadata = take(&mut rest, length, "message metadata")?;
        let message = arrow_ipc::root_as_message(metadata)
            .map_err(|error| malformed(format!("a message header does not parse: {error}")))?;
        let body_length = usize::try_from(message.bodyLength())
            .map_err(|_| malformed(format!("a body length of {}", message.bodyLength())))?;
        let body = take(&mut rest, body_length, "a message body")?;
        claimed = check_decompressed(message, body, claimed, limit)?;
    }
    Ok(())
}

/// Checks one message of a Flight stream (its header and body arrive apart) as
/// [`check_framing`] does a whole stream: its compressed buffers may claim at most
/// `limit` bytes.
pub fn check_flight_message(header: &[u8], body: &[u8], limit: usize) -> Result<(), ApiError> {
    if header.is_empty() {
        return Ok(());
    }
    let message = arrow_ipc::root_as_message(header)
        .map_err(|error| malformed(format!("a message header does not parse: {error}")))?;
    check_decompressed(message, body, 0, limit).map(|_| ())
}

/// `claimed` plus what the compressed buffers of `message` (a record or dictionary batch)
/// say they decompress to; refused over `limit`.
fn check_decompressed(
    message: arrow_ipc::Message<'_>,
    body: &[u8],
    claimed: u64,
    limit: usize,
) -> Result<u64, ApiError> {
    let batch = message
        .header_as_record_batch()
        .or_else(|| message.header_as_dictionary_batch().and_then(|dictionary| dictionary.data()));
    let Some(batch) = batch.filter(|batch| batch.compression().is_some()) else { return Ok(claimed) };
    let mut claimed = claimed;
    for buffer in batch.buffers().into_iter().flatten() {
        // A compressed buffer starts with its decompressed length (-1: not compressed).
        let start = usize::try_from(buffer.offset()).unwrap_or(usize::MAX);
        let prefix = body.get(start..start.saturating_add(8)).filter(|_| buffer.length() >= 8);
        if let Some(prefix) = prefix.and_then(|prefix| <[u8; 8]>::try_from(prefix).ok()) {
            claimed = claimed.saturating_add(u64::try_from(i64::from_le_bytes(prefix)).unwrap_or(0));
        }
    }
    if claimed > limit as u64 {
        return Err(ApiError::bad_request(format!(
            "the Arrow IPC stream decompresses to more than this server takes ({limit} bytes, rest.max_body)"
        )));
    }
    Ok(claimed)
}

fn malformed(what: String) -> ApiError {
    ApiError::bad_request(format!("the Arrow IPC stream is malformed: {what}"))
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
    /// The decompressed size uploads in these tests may reach.
    const LIMIT: usize = 1 << 30;

    use std::io::Cursor;
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
        let decoded = decode_stream(Bytes::from(lz4_stream(&batch)), LIMIT).await.expect("decodes");
        assert_eq!(decoded.schema, batch.schema());
        assert_eq!(decoded.batches, vec![batch]);
    }

    #[tokio::test]
    async fn malformed_and_truncated_streams_are_bad_requests() {
        let garbage = decode_stream(Bytes::from_static(b"{\"not\": \"arrow\"}"), LIMIT).await.expect_err("garbage");
        assert!(matches!(garbage, ApiError::BadRequest(_)), "{garbage}");

        let stream = lz4_stream(&sample());
        let truncated = Bytes::copy_from_slice(&stream[..stream.len() - 20]);
        let error = decode_stream(truncated, LIMIT).await.expect_err("truncated");
        assert!(matches!(error, ApiError::BadRequest(_)), "{error}");

        assert!(matches!(decode_stream(Bytes::new(), LIMIT).await, Err(ApiError::BadRequest(_))));
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

    /// 512 rows that LZ4 compresses (so the stream has compressed buffers).
    fn compressible() -> RecordBatch {
        let ids = Int64Array::from_iter_values((0..512).map(|index| index / 64));
        let texts = StringArray::from_iter_values((0..512).map(|index| format!("row {}", index % 4)));
        RecordBatch::try_new(sample().schema(), vec![Arc::new(ids), Arc::new(texts)]).expect("batch")
    }

    /// Every single-byte corruption of a plain and an LZ4 stream is a 400 or reads: none
    /// may panic through or abort the process (arrow-rs allocates claimed lengths first).
    #[test]
    fn corrupt_streams_are_refused_and_never_take_the_process_down() {
        let batch = compressible();
        let mut plain = Vec::new();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut plain, &batch.schema()).expect("writer");
        writer.write(&batch).expect("write");
        writer.finish().expect("finish");
        drop(writer);
        let mut refusals = Vec::new();
        for stream in [plain, lz4_stream(&batch)] {
            for position in 0..stream.len() {
                for flip in [0x01u8, 0x40, 0x80, 0xff] {
                    let mut corrupt = stream.clone();
                    corrupt[position] ^= flip;
                    if let Err(error) = read_ipc_stream(&corrupt, LIMIT) {
                        assert!(matches!(error, ApiError::BadRequest(_)), "{error}");
                        refusals.push(error.to_string());
                    }
                }
            }
        }
        let refused = |what: &str| refusals.iter().any(|message| message.contains(what));
        assert!(refused("bytes follow"), "no corruption claimed more bytes than follow");
        assert!(refused("decompresses to more"), "no corruption claimed a huge decompressed size");
        assert!(refused("the reader failed"), "no corruption made the reader panic");
    }

    #[test]
    fn a_compressed_buffer_claiming_more_than_the_limit_is_refused_before_it_is_allocated() {
        let stream = lz4_stream(&compressible());
        assert_eq!(read_ipc_stream(&stream, LIMIT).expect("reads").batches, vec![compressible()]);
        // The id buffer's 8-byte decompressed-length prefix (512 × 8 bytes), made to claim
        // 512 GiB.
        let mut claimed = stream.clone();
        let at = (0..stream.len() - 8)
            .rev()
            .find(|&at| stream[at..at + 8] == 4096i64.to_le_bytes())
            .expect("the id buffer's decompressed length");
        claimed[at..at + 8].copy_from_slice(&(512i64 << 30).to_le_bytes());
        let error = read_ipc_stream(&claimed, LIMIT).expect_err("refused");
        assert!(error.to_string().contains("decompresses to more than this server takes"), "{error}");
    }
}
