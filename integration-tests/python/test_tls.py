"""TLS for REST, Flight and the executor service, mutual between nodes, and towards etcd
(issue 19, item 1).

Certificates come from `trustme` (a throwaway CA, made offline). One query node and two
plan executors share a CA (`tls.ca`): the query node serves HTTPS and `grpc+tls://`, reaches
the executors at `https://` addresses and presents its certificate; the executors refuse a
client without one. Certificates are rotated under query load. A cluster on an etcd that
asks for client certificates (`--client-cert-auth`, a CA of its own) works with
`[control.etcd_tls]`; a node without a client certificate is kept out.
"""

import os
import socket
import subprocess
import ssl
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import certifi
import grpc
import pyarrow.flight as flight
import pytest
import requests
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lancedb.remote import ClientConfig, TlsConfig
from lancedb.remote.errors import HttpError

from conftest import LanceFleetServer, PlanExecutor, free_port, lancefleet_bin
from lf_control import ControlPlane, Etcd, etcd_env, serving_executors, wait_until
from lf_helpers import connect_remote, make_data, metric, parse_metrics, query_vectors


class TlsExecutor(PlanExecutor):
    @property
    def endpoint(self) -> str:
        return f"{self.node_id}=https://127.0.0.1:{self.port}"


class TlsServer(LanceFleetServer):
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def flight_url(self) -> str:
        return f"grpc+tls://127.0.0.1:{self.flight_port}"


def write_atomically(path, data: bytes) -> None:
    """As a mounted Secret changes: the new file appears whole."""
    temporary = f"{path}.new"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def issue(ca: trustme.CA, directory, name: str) -> tuple[str, str]:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    write_atomically(key, leaf.private_key_pem.bytes())
    write_atomically(cert, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return str(cert), str(key)


def served_certificate(port: int, ca_path: str) -> bytes:
    context = ssl.create_default_context(cafile=ca_path)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca_path = root / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_path))
    cert, key = issue(ca, root, "node")
    env = {"LANCEFLEET_TLS__CERT": cert, "LANCEFLEET_TLS__KEY": key, "LANCEFLEET_TLS__CA": str(ca_path)}
    server = TlsServer(root, executors=0, env=env)
    server.executors = [TlsExecutor(root, server.data_dir, f"pe-{i}", env) for i in range(2)]
    mp = pytest.MonkeyPatch()
    mp.setenv("REQUESTS_CA_BUNDLE", str(ca_path))  # the readiness probe and `requests` below
    server.start()
    server.ca, server.ca_path, server.cert, server.key = ca, str(ca_path), cert, key
    yield server
    assert server.stop() == 0
    mp.undo()


def tls_client(server):
    return connect_remote(server.url, client_config=ClientConfig(tls_config=TlsConfig(ssl_ca_cert=server.ca_path)))


def test_the_lancedb_client_works_over_https_through_mutual_tls_executors(secure):
    db = tls_client(secure)
    table = db.create_table("docs", make_data(300))
    hits = table.search(query_vectors(1)[0]).limit(5).to_arrow()
    assert hits.num_rows == 5 and table.count_rows() == 300
    # Every fragment ran on the executors (the query node runs none itself), so the links
    # to them are up, over mutual TLS.
    assert any('rpc="execute"' in open(executor.log_path).read() for executor in secure.executors)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{secure.url}/v1/table/", verify=certifi.where(), timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{secure.port}/health", timeout=10)


def test_flight_and_flight_sql_over_tls(secure):
    tls_client(secure).create_table("flights", make_data(40), mode="overwrite")
    ca_pem = open(secure.ca_path, "rb").read()
    client = flight.connect(secure.flight_url, tls_root_certs=ca_pem)
    info = client.get_flight_info(flight.FlightDescriptor.for_path("flights"))
    assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == 40
    plain = flight.connect(f"grpc://127.0.0.1:{secure.flight_port}")
    with pytest.raises(flight.FlightError):
        list(plain.list_flights(options=flight.FlightCallOptions(timeout=5)))
    kwargs = {"adbc.flight.sql.client_option.tls_root_certs": ca_pem.decode()}
    with flight_sql.connect(secure.flight_url, db_kwargs=kwargs) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) AS n FROM flights")
        assert cursor.fetch_arrow_table()["n"][0].as_py() == 40


def test_executors_refuse_a_client_without_a_certificate(secure):
    ca_pem = open(secure.ca_path, "rb").read()
    address = f"127.0.0.1:{secure.executors[0].port}"
    request = health_pb2.HealthCheckRequest(service="lancefleet.v1.PlanExecutor")

    def check(credentials):
        with grpc.secure_channel(address, credentials) as channel:
            return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status

    with pytest.raises(grpc.RpcError):
        check(grpc.ssl_channel_credentials(root_certificates=ca_pem))
    other = trustme.CA().issue_cert("127.0.0.1")
    with pytest.raises(grpc.RpcError):
        check(grpc.ssl_channel_credentials(ca_pem, other.private_key_pem.bytes(), other.cert_chain_pems[0].bytes()))
    key, cert = open(secure.key, "rb").read(), open(secure.cert, "rb").read()
    assert check(grpc.ssl_channel_credentials(ca_pem, key, cert)) == health_pb2.HealthCheckResponse.SERVING


def test_a_certificate_rotated_under_load_fails_no_query(secure):
    table = tls_client(secure).create_table("rotated", make_data(200), mode="overwrite")
    vector = query_vectors(1)[0]
    before = served_certificate(secure.port, secure.ca_path)
    failures, answered, stop = [], [0], threading.Event()

    def load():
        db = tls_client(secure)
        while not stop.is_set():
            try:
                assert db.open_table("rotated").search(vector).limit(3).to_arrow().num_rows == 3
                answered[0] += 1
            except Exception as error:  # noqa: BLE001 - every failure is counted
                failures.append(repr(error))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(1)
        # The query node's and the executors' files are the same: all rotate at once.
        leaf = secure.ca.issue_cert("127.0.0.1", "localhost")
        write_atomically(secure.key, leaf.private_key_pem.bytes())
        write_atomically(secure.cert, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        deadline = time.monotonic() + 15
        while served_certificate(secure.port, secure.ca_path) == before:
            assert time.monotonic() < deadline, "the new certificate was not served"
            time.sleep(0.3)
        time.sleep(2)  # more queries after the switch
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures, failures[:3]
    assert answered[0] > 5
    flight_port_cert = served_certificate(secure.flight_port, secure.ca_path)
    assert flight_port_cert != before
    assert table.count_rows() == 200


def test_clients_without_a_certificate_are_refused_with_client_ca(secure, tmp_path):
    """`tls.client_ca`: the REST API and Flight accept only clients presenting a certificate
    that CA signed: the `lancedb` client with `TlsConfig(cert_file, key_file)` and
    `pyarrow.flight` with `cert_chain`/`private_key` get in, clients without one do not."""
    clients = trustme.CA()
    client_ca = str(tmp_path / "clients-ca.crt")
    clients.cert_pem.write_to_path(client_ca)
    client_cert, client_key = issue(clients, tmp_path, "client")
    stranger_cert, stranger_key = issue(trustme.CA(), tmp_path, "stranger")
    env = {"LANCEFLEET_TLS__CERT": secure.cert, "LANCEFLEET_TLS__KEY": secure.key, "LANCEFLEET_TLS__CLIENT_CA": client_ca}
    server = TlsServer(tmp_path, executors=0, env=env)
    server.client_cert = (client_cert, client_key)
    server.start()
    try:
        def lancedb_client(cert=None, key=None):
            config = TlsConfig(ssl_ca_cert=secure.ca_path, cert_file=cert, key_file=key)
            return connect_remote(server.url, client_config=ClientConfig(tls_config=config, retry_config={"retries": 0}))

        table = lancedb_client(client_cert, client_key).create_table("certified", make_data(50))
        assert table.search(query_vectors(1)[0]).limit(3).to_arrow().num_rows == 3
        for cert, key in [(None, None), (stranger_cert, stranger_key)]:
            # The handshake fails: the request is never sent, and there is no HTTP status.
            with pytest.raises(HttpError, match="error sending request") as refused:
                lancedb_client(cert, key).table_names()
            assert refused.value.status_code is None
        ca_pem = open(secure.ca_path, "rb").read()
        certified = flight.connect(server.flight_url, tls_root_certs=ca_pem,
                                   cert_chain=open(client_cert, "rb").read(), private_key=open(client_key, "rb").read())
        assert [i.descriptor.path[0] for i in certified.list_flights()] == [b"certified"]
        with pytest.raises(flight.FlightError):
            list(flight.connect(server.flight_url, tls_root_certs=ca_pem).list_flights(
                options=flight.FlightCallOptions(timeout=5)))
    finally:
        assert server.stop() == 0


def test_nodes_reach_an_etcd_that_asks_for_client_certificates(tmp_path):
    etcd_ca = trustme.CA()  # etcd's own CA, not the nodes'
    ca_path = str(tmp_path / "etcd-ca.crt")
    etcd_ca.cert_pem.write_to_path(ca_path)
    client_cert, client_key = issue(etcd_ca, tmp_path, "etcd-client")
    etcd = Etcd(tmp_path, tls=(ca_path, *issue(etcd_ca, tmp_path, "etcd")), client=(client_cert, client_key)).start()
    env = {
        **etcd_env(etcd, "etcd-tls"),
        # A member that is down comes first: connections move on to the next.
        "LANCEFLEET_CONTROL__ETCD_ENDPOINTS": f'["https://127.0.0.1:{free_port()}", "{etcd.endpoint}"]',
        "LANCEFLEET_CONTROL__ETCD_TLS__CA": ca_path,
        "LANCEFLEET_CONTROL__ETCD_TLS__CERT": client_cert,
        "LANCEFLEET_CONTROL__ETCD_TLS__KEY": client_key,
    }
    data = tmp_path / "data"
    control = ControlPlane(tmp_path, "cp-0", env).start()
    executor = PlanExecutor(tmp_path, data, "pe-0", env).start()
    (tmp_path / "qn").mkdir()
    query_node = LanceFleetServer(tmp_path / "qn", data_dir=data, executors=0, env=env).start()
    (tmp_path / "stranger").mkdir()
    without_cert = {key: value for key, value in env.items() if not key.endswith(("__CERT", "__KEY"))}
    stranger = LanceFleetServer(tmp_path / "stranger", data_dir=tmp_path / "data2", executors=0, env=without_cert)
    try:
        wait_until(lambda: serving_executors(control.state()) == {"pe-0"}, 20, "the executor in the cluster state")
        table = connect_remote(query_node.url).create_table("docs", make_data(120))
        assert table.search(query_vectors(1)[0]).limit(4).to_arrow().num_rows == 4
        executed = metric(executor.metrics(), "lancefleet_executor_fragments_total", rpc="execute")
        assert executed > 0, "the query node found the executor through etcd"

        registered = {node["node_id"] for node in control.state()["nodes"]}
        stranger.start()  # serves, but etcd refuses its TLS handshake
        time.sleep(3)
        assert metric(parse_metrics(requests.get(f"{stranger.url}/metrics", timeout=10).text),
                      "lancefleet_etcd_reachable") == 0
        assert {node["node_id"] for node in control.state()["nodes"]} == registered, "the stranger registered"
        assert "client didn't provide a certificate" in etcd.log_path.read_text()

        # An https:// endpoint without the CA to check it by is refused at start.
        refused = subprocess.run(
            [lancefleet_bin(), "control-plane", "--listen", "127.0.0.1:0", "--node-id", "cp-x"],
            env={**os.environ, **{k: v for k, v in env.items() if "ETCD_TLS" not in k}},
            capture_output=True, text=True, timeout=60,
        )
        assert refused.returncode != 0 and "control.etcd_tls.ca" in refused.stderr, refused.stderr[-2000:]
    finally:
        for process in (stranger, query_node, executor, control):
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
        etcd.stop()
