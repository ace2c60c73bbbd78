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
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from conftest import LanceFleetServer
from lf_helpers import connect_remote, make_data, query_body, query_vectors


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
