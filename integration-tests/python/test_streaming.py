"""Answers that stream (issue 19, item 5): a scan of 10M rows through REST and Flight
`DoGet` reaches the client as the executors send it, merged back into table order, and
the query node holds about a batch per executor, never the result.

The query node's peak RSS is read from `/proc/<pid>/status` (`VmHWM`, reset per scan by
writing 5 to `clear_refs`). Without executors the query node also runs lance's scan, whose
read-ahead is part of what it holds; with executors that is on them. Measured here (debug
build, 10M × (int64, float32), a 114 MiB answer): the peak grew by 2-5 MiB with
executors and by 35-65 MiB without (lance's scan in the same process), against 500-600
MiB when answers were collected before they were sent.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

import lance

ROWS = 10_000_000
ROWS_PER_FRAGMENT = 1_000_000
SCHEMA = pa.schema([("id", pa.int64()), ("x", pa.float32())])
# The answer's size in Arrow (12 bytes a row). A query node that held the answer would
# grow by at least that much; one that only passes executors' rows on, by far less.
ANSWER_BYTES = ROWS * 12


@pytest.fixture(scope="module")
def big(server, tmp_path_factory) -> str:
    """A 10M-row table of 10 fragments, written with pylance into the server's data dir."""
    name = f"stream_{tmp_path_factory.mktemp('n').name}"

    def batches():
        for start in range(0, ROWS, ROWS_PER_FRAGMENT):
            ids = np.arange(start, start + ROWS_PER_FRAGMENT, dtype=np.int64)
            yield pa.record_batch({"id": ids, "x": ids.astype(np.float32) * 0.5})

    reader = pa.RecordBatchReader.from_batches(SCHEMA, batches())
    lance.write_dataset(reader, str(server.data_dir / f"{name}.lance"), max_rows_per_file=ROWS_PER_FRAGMENT)
    return name


def proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


class PeakGrowth:
    """How far the process's RSS rose above where it stood when the block began."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self):
        self.before = proc_status(self.pid, "VmRSS")
        with open(f"/proc/{self.pid}/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
        return self

    def __exit__(self, *_):
        self.growth = proc_status(self.pid, "VmHWM") - self.before


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def check_ids(ids: np.ndarray) -> None:
    """Every row once, in table order."""
    assert len(ids) == ROWS
    assert ids[0] == 0 and bool((np.diff(ids) == 1).all()), "rows out of table order or missing"


def rest_scan(server, name: str, path, headers=None) -> requests.Response:
    """Streams the answer of a full scan into `path`; returns the response."""
    answer = requests.post(
        f"{server.url}/v1/table/{name}/query/",
        json={"columns": ["id", "x"]},
        headers=headers or {},
        stream=True,
        timeout=600,
    )
    with open(path, "wb") as out:
        for chunk in answer.iter_content(1 << 20):
            out.write(chunk)
    return answer


def test_a_10m_row_scan_streams_in_table_order_without_the_query_node_holding_it(server, big, tmp_path):
    pid = server.proc.pid
    warm = tmp_path / "warm.arrow"
    assert rest_scan(server, big, warm).status_code == 200  # lance's caches fill once
    warm.unlink()

    path = tmp_path / "scan.arrow"
    with PeakGrowth(pid) as rest:
        answer = rest_scan(server, big, path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/vnd.apache.arrow.file"
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.schema.names == ["id", "x"]
    ids = table["id"].to_numpy()
    check_ids(ids)
    assert np.array_equal(table["x"].to_numpy(), ids.astype(np.float32) * 0.5)
    del table, ids

    client = flight.connect(server.flight_url)
    ticket = flight.Ticket(json.dumps({"table": big, "columns": ["id", "x"]}))
    with PeakGrowth(pid) as do_get:
        reader = client.do_get(ticket)
        chunks = [chunk.data.column(0).to_numpy() for chunk in reader]
    check_ids(np.concatenate(chunks))

    measured = f"peak RSS growth: REST {mib(rest.growth)}, DoGet {mib(do_get.growth)}; answer {mib(ANSWER_BYTES)}"
    print(measured)
    # Without executors the query node runs lance's scan too, with its read-ahead.
    bound = ANSWER_BYTES // 8 if server.executors else ANSWER_BYTES
    assert rest.growth < bound and do_get.growth < bound, measured


def test_a_streamed_answer_past_the_clients_deadline_breaks_off_instead_of_ending_short(server, big, tmp_path):
    path = tmp_path / "late.arrow"
    try:
        answer = rest_scan(server, big, path, headers={"x-request-timeout-ms": "1000"})
    except requests.exceptions.ChunkedEncodingError:
        return  # the body broke off at the deadline: the client knows it is incomplete
    if answer.status_code == 504:
        return  # the deadline passed before the first rows
    assert answer.status_code == 200, answer.text
    # Only a scan that finished within the deadline reads as a file, and then it is whole.
    try:
        with pa.memory_map(str(path)) as source:
            rows = pa.ipc.open_file(source).read_all().num_rows
    except pa.ArrowInvalid:
        return  # a file without its footer
    assert rows == ROWS
