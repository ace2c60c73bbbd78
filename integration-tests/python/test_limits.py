"""Request limits and the client's deadline (issue 19, item 5).

- a search over `rest.max_search_k`, with more than `rest.max_query_vectors` vectors, or a
  filter longer than `rest.max_filter` is a 400 naming the limit, on REST and Flight alike,
  and writes nothing;
- `x-request-timeout-ms` (a header, or Flight metadata) bounds every executor call of the
  request, retries included: with every executor stalled, REST, Flight and `count_rows`
  answer "timed out" at the client's deadline, not after the fragment timeout and a retry.
"""

import json
import signal
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from conftest import LanceFleetServer
from lf_helpers import connect_remote, make_data, metric, parse_metrics, query_body, query_vectors, read_arrow_file


def test_requests_over_a_limit_are_refused_with_the_limit_named(server, unique_name):
    name = unique_name("limits")
    table = connect_remote(server.url).create_table(name, make_data(50))
    url = f"{server.url}/v1/table/{name}"
    vector = query_vectors(1)[0]

    def status(route, body):
        answer = requests.post(f"{url}/{route}/", json=body, timeout=60)
        return answer.status_code, answer.text

    code, text = status("query", query_body(vector, k=100_001))
    assert code == 400 and "rest.max_search_k" in text, text
    code, text = status("query", query_body([vector] * 1025, k=1))
    assert code == 400 and "rest.max_query_vectors" in text, text
    long_filter = "id IN (" + ", ".join(str(i) for i in range(200_000)) + ")"
    assert len(long_filter) > 1 << 20
    for route, body in [
        ("query", query_body(vector, k=5, filter=long_filter)),
        ("count_rows", {"predicate": long_filter}),
        ("delete", {"predicate": long_filter}),
        ("update", {"predicate": long_filter, "updates": [["id", "id + 1"]]}),
    ]:
        code, text = status(route, body)
        assert code == 400 and "rest.max_filter" in text, (route, text)
    # A plain scan takes any limit; a search at the limit is answered.
    assert status("query", query_body(None, k=1_000_000))[0] == 200
    assert status("query", query_body(vector, k=100_000))[0] == 200

    client = flight.connect(server.flight_url)
    ticket = flight.Ticket(json.dumps({"table": name, **query_body(vector, k=200_000)}))
    with pytest.raises(pa.ArrowInvalid, match="rest.max_search_k"):
        client.do_get(ticket).read_all()
    assert table.count_rows() == 50 and table.version == 1, "nothing was written"


def test_the_clients_deadline_bounds_every_executor_call(tmp_path):
    env = {"LANCEFLEET_CLUSTER__FRAGMENT_TIMEOUT": "20s", "LANCEFLEET_CLUSTER__HEDGE_AFTER": "off"}
    server = LanceFleetServer(tmp_path, executors=2, env=env).start()
    try:
        name = "deadline"
        connect_remote(server.url).create_table(name, make_data(200))
        body = query_body(query_vectors(1)[0], k=5)
        deadline = {"x-request-timeout-ms": "1500"}
        assert requests.post(f"{server.url}/v1/table/{name}/query/", json=body, headers=deadline, timeout=60).ok
        bad = requests.post(f"{server.url}/v1/table/{name}/query/", json=body, headers={"x-request-timeout-ms": "soon"})
        assert bad.status_code == 400 and "x-request-timeout-ms" in bad.text

        client = flight.connect(server.flight_url)
        ticket = flight.Ticket(json.dumps({"table": name, **body}))
        options = flight.FlightCallOptions(headers=[(b"x-request-timeout-ms", b"1500")])
        for executor in server.executors:
            executor.proc.send_signal(signal.SIGSTOP)
        try:
            for attempt in ["rest", "count", "flight"]:
                started = time.monotonic()
                if attempt == "flight":
                    with pytest.raises(flight.FlightTimedOutError):
                        client.do_get(ticket, options).read_all()
                else:
                    route = "query" if attempt == "rest" else "count_rows"
                    answer = requests.post(
                        f"{server.url}/v1/table/{name}/{route}/", json=body if route == "query" else {}, headers=deadline, timeout=60
                    )
                    assert answer.status_code == 504, (attempt, answer.status_code, answer.text)
                waited = time.monotonic() - started
                # The deadline (1.5 s), not the fragment timeout (20 s) and its retry.
                assert 1.4 <= waited < 6, (attempt, waited)
        finally:
            for executor in server.executors:
                executor.proc.send_signal(signal.SIGCONT)
        assert client.do_get(ticket, options).read_all().num_rows == 5, "answered again once the executors resume"
    finally:
        assert server.stop() == 0


def test_executors_at_their_memory_budget_refuse_and_the_query_node_retries_or_answers_503(tmp_path):
    """Two executors that each run one fragment at a time and queue none: under 8 parallel
    searches some fragments are refused (counted), retried on the other replica, and a
    query whose every replica refused answers 503 with `retry-after`; every other answer is
    exact, and nothing answers 500."""
    env = {
        "LANCEFLEET_EXECUTOR__MEMORY_BUDGET": "32MiB",
        "LANCEFLEET_EXECUTOR__FRAGMENT_MEMORY": "32MiB",
        "LANCEFLEET_EXECUTOR__MAX_QUEUED": "0",
        "LANCEFLEET_CLUSTER__HEDGE_AFTER": "off",
    }
    server = LanceFleetServer(tmp_path, executors=2, env=env).start()
    try:
        table = connect_remote(server.url).create_table("busy", make_data(500))
        for batch in range(1, 4):
            table.add(make_data(500, seed=batch, id_offset=batch * 500))
        body = query_body(query_vectors(1)[0], k=10)
        url = f"{server.url}/v1/table/busy/query/"
        ids = lambda content: read_arrow_file(content)["id"].to_pylist()  # noqa: E731
        expected = ids(requests.post(url, json=body, timeout=60).content)
        answers = []

        def search():
            for _ in range(6):
                answer = requests.post(url, json=body, timeout=60)
                exact = answer.status_code == 200 and ids(answer.content) == expected
                answers.append((answer.status_code, answer.headers.get("retry-after"), exact))

        threads = [threading.Thread(target=search) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {status for status, _, _ in answers} <= {200, 503}, answers
        assert all(exact for status, _, exact in answers if status == 200)
        assert all(retry == "1" for status, retry, _ in answers if status == 503)
        assert sum(status == 200 for status, _, _ in answers) > 0
        refused = sum(
            metric(parse_metrics(requests.get(f"http://127.0.0.1:{executor.metrics_port}/metrics").text), "lancefleet_executor_admission_refused_total")
            for executor in server.executors
        )
        assert refused > 0, "no fragment was refused: the budget did not bind"
    finally:
        assert server.stop() == 0
