"""schemathesis hooks for test_openapi.py: Arrow IPC request bodies and the server-fault
check. Loaded by schemathesis itself (the `hooks` key of the generated config file)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.ipc as ipc
import schemathesis
from hypothesis import strategies as st

# The fixture tables' schema (test_openapi.py writes them): bodies in it can be appended.
DIM = 4
SCHEMA = pa.schema([
    pa.field("id", pa.int64()),
    pa.field("vector", pa.list_(pa.float32(), DIM)),
    pa.field("text", pa.string()),
])
# 5xx statuses the document lists as answers a client may get on any operation (an
# unsupported option, overload with a retry hint, the client's own deadline); every
# other 5xx is a server fault.
DOCUMENTED_5XX = {501, 503, 504}


def stream_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
rows = st.lists(
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.lists(floats, min_size=DIM, max_size=DIM), st.text(max_size=20)),
    max_size=8,
)


@st.composite
def fixture_rows(draw) -> bytes:
    """A well-formed stream in the fixture tables' schema."""
    drawn = draw(rows)
    return stream_bytes(pa.table({
        "id": pa.array([row[0] for row in drawn], pa.int64()),
        "vector": pa.array([row[1] for row in drawn], pa.list_(pa.float32(), DIM)),
        "text": pa.array([row[2] for row in drawn], pa.string()),
    }, schema=SCHEMA))


@st.composite
def other_schema(draw) -> bytes:
    """A well-formed stream of another shape: a wrong vector size, a missing or an extra
    column, another type."""
    size = draw(st.sampled_from([1, DIM - 1, DIM + 1]))
    choices = [
        pa.table({"id": [1, 2], "vector": pa.array([[0.5] * size] * 2, pa.list_(pa.float32(), size)), "text": ["a", "b"]}),
        pa.table({"id": [1, 2]}),
        pa.table({"id": ["x", "y"], "vector": [[1.0], [2.0]], "extra": [True, False]}),
        pa.table({"other": pa.array([1.5, None])}),
    ]
    return stream_bytes(draw(st.sampled_from(choices)))


@st.composite
def truncated(draw) -> bytes:
    """A well-formed stream cut short, or with one byte changed."""
    body = draw(fixture_rows())
    if draw(st.booleans()):
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    position = draw(st.integers(0, len(body) - 1))
    return body[:position] + bytes([body[position] ^ 0xFF]) + body[position + 1:]


ARROW_BODIES = st.one_of(fixture_rows(), other_schema(), truncated(), st.binary(max_size=512))
schemathesis.openapi.media_type("application/vnd.apache.arrow.stream", ARROW_BODIES)


@schemathesis.check
def no_server_fault(ctx, response, case):
    """No 5xx beyond the documented ones, and every error names its code."""
    status = response.status_code
    if status >= 500 and status not in DOCUMENTED_5XX:
        raise AssertionError(f"server fault {status}: {response.text[:500]}")
    if status >= 400 and "x-lancefleet-error-code" not in {name.lower() for name in response.headers}:
        raise AssertionError(f"{status} without an x-lancefleet-error-code header: {response.text[:200]}")
