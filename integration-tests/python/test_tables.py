"""Table lifecycle through the lancedb client, remote (LanceFleet) vs OSS (local dir)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lf_helpers import (
    assert_tables_equal,
    binary_schema,
    make_binary_data,
    make_data,
    make_wide_data,
    read_all,
    vector_schema,
    wide_schema,
)


def both(remote_db, oss_db, fn):
    return fn(remote_db), fn(oss_db)


# --------------------------------------------------------------------------- create


def test_create_and_read_back(remote_db, oss_db, table_name):
    data = make_data(1500)
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, data))
    assert r.count_rows() == o.count_rows() == 1500
    assert r.version == o.version
    assert r.schema == o.schema
    assert_tables_equal(read_all(r), read_all(o))
    assert_tables_equal(read_all(r), data.sort_by("id"))


def test_create_existing_table_raises_already_exists(remote_db, oss_db, table_name):
    data = make_data(100)
    both(remote_db, oss_db, lambda db: db.create_table(table_name, data))
    errors = []
    for db in (remote_db, oss_db):
        with pytest.raises(ValueError) as ei:
            db.create_table(table_name, make_data(50, seed=9))
        errors.append(str(ei.value))
        assert "already exists" in str(ei.value)
        assert table_name in str(ei.value)
    # nothing was overwritten
    r = remote_db.open_table(table_name)
    assert r.count_rows() == 100
    assert r.version == oss_db.open_table(table_name).version


def test_create_mode_overwrite(remote_db, oss_db, table_name):
    both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(300)))
    new = make_data(120, seed=5, id_offset=10_000)
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, new, mode="overwrite"))
    assert r.count_rows() == o.count_rows() == 120
    assert r.version == o.version
    assert_tables_equal(read_all(r), read_all(o))
    assert read_all(r)["id"].to_pylist()[0] == 10_000


def test_create_overwrite_with_new_schema(remote_db, oss_db, table_name):
    both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(50)))
    other = pa.table({"k": pa.array([1, 2, 3], pa.int32()), "name": ["a", "b", "c"]})
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, other, mode="overwrite"))
    assert r.schema == o.schema == other.schema
    assert remote_db.open_table(table_name).schema == other.schema
    assert r.count_rows() == 3


def test_create_exist_ok(remote_db, oss_db, table_name):
    data = make_data(200)
    both(remote_db, oss_db, lambda db: db.create_table(table_name, data))
    v_before = remote_db.open_table(table_name).version
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(7, seed=3), exist_ok=True))
    # the existing table is returned untouched
    assert r.count_rows() == o.count_rows() == 200
    assert r.version == o.version == v_before
    assert_tables_equal(read_all(r), read_all(o))


def test_create_exist_ok_on_new_table_creates_it(remote_db, oss_db, table_name):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(30), exist_ok=True))
    assert r.count_rows() == o.count_rows() == 30
    assert r.version == o.version


@pytest.mark.parametrize(
    "schema",
    [vector_schema(), binary_schema(), wide_schema()],
    ids=["vector", "binary", "wide"],
)
def test_create_empty_from_schema(remote_db, oss_db, table_name, schema):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, schema=schema))
    assert r.count_rows() == o.count_rows() == 0
    assert r.version == o.version
    assert r.schema == o.schema == schema
    reopened = remote_db.open_table(table_name)
    assert reopened.schema == schema
    assert reopened.count_rows() == 0


def test_empty_table_then_add(remote_db, oss_db, table_name):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, schema=vector_schema()))
    data = make_data(400)
    rr, oo = r.add(data), o.add(data)
    assert rr.version == oo.version
    assert r.count_rows() == o.count_rows() == 400
    assert_tables_equal(read_all(r), read_all(o))


# --------------------------------------------------------------------------- describe / schema


@pytest.mark.parametrize(
    "make",
    [lambda: make_data(64), make_binary_data, make_wide_data],
    ids=["vector", "binary", "wide"],
)
def test_schema_matches_oss(remote_db, oss_db, table_name, make):
    data = make()
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, data))
    assert r.schema == o.schema
    # field-by-field incl. nullability, so a mismatch points at the culprit
    for fr, fo in zip(r.schema, o.schema):
        assert (fr.name, fr.type, fr.nullable) == (fo.name, fo.type, fo.nullable)
    # a fresh connection must see the same (describe on open)
    assert remote_db.open_table(table_name).schema == o.schema


def test_schema_metadata_preserved(remote_db, oss_db, table_name):
    data = make_wide_data()
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, data))
    assert o.schema.metadata and b"owner" in o.schema.metadata
    assert r.schema.metadata == o.schema.metadata


def test_wide_types_round_trip(remote_db, oss_db, table_name):
    data = make_wide_data()
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, data))
    assert_tables_equal(read_all(r), read_all(o))


# --------------------------------------------------------------------------- versions


def test_version_numbers_track_oss(remote_db, oss_db, table_name):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(500)))
    assert r.version == o.version
    steps = [
        lambda t: t.add(make_data(100, seed=1, id_offset=500)),
        lambda t: t.add(make_data(50, seed=2, id_offset=600), mode="overwrite"),
        lambda t: t.delete("id < 610"),
        lambda t: t.delete("id > 100000"),  # deletes nothing
        lambda t: t.add(make_data(10, seed=3, id_offset=700)),
    ]
    for i, step in enumerate(steps):
        res_r, res_o = step(r), step(o)
        assert res_r.version == res_o.version, f"step {i}: result version"
        assert r.version == o.version == res_o.version, f"step {i}: table.version"
        assert r.count_rows() == o.count_rows(), f"step {i}: count"
    # another connection sees the latest version too
    assert remote_db.open_table(table_name).version == o.version


def test_create_overwrite_bumps_version_like_oss(remote_db, oss_db, table_name):
    both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(20)))
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(10), mode="overwrite"))
    assert r.version == o.version
    assert o.version > 1


# --------------------------------------------------------------------------- add


def test_add_append(remote_db, oss_db, table_name):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(1000)))
    more = make_data(1000, seed=11, id_offset=1000)
    assert r.add(more).version == o.add(more).version
    assert r.count_rows() == o.count_rows() == 2000
    assert_tables_equal(read_all(r), read_all(o))


def test_add_overwrite(remote_db, oss_db, table_name):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(1000)))
    repl = make_data(250, seed=12, id_offset=5000)
    assert r.add(repl, mode="overwrite").version == o.add(repl, mode="overwrite").version
    assert r.count_rows() == o.count_rows() == 250
    got = read_all(r)
    assert_tables_equal(got, read_all(o))
    assert got["id"].to_pylist() == list(range(5000, 5250))


@pytest.mark.parametrize("case", ["extra_column", "changed_type", "unrelated"])
def test_add_overwrite_with_new_schema(remote_db, oss_db, table_name, case):
    """add(mode="overwrite") may replace the schema (OSS allows it)."""
    base = make_data(5, seed=13, id_offset=10_000)
    new = {
        "extra_column": base.append_column("extra", pa.array(range(5), pa.int64())),
        "changed_type": base.set_column(0, "id", pa.array(["a", "b", "c", "d", "e"])),
        "unrelated": pa.table({"foo": pa.array([1.5, 2.5])}),
    }[case]
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(10)))
    assert r.add(new, mode="overwrite").version == o.add(new, mode="overwrite").version
    assert r.schema == o.schema
    assert r.count_rows() == o.count_rows() == new.num_rows
    assert remote_db.open_table(table_name).schema == o.schema
    assert_tables_equal(r.search().to_arrow(), o.search().to_arrow())


def test_add_list_of_dicts(remote_db, oss_db, table_name):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(10)))
    rows = [{"id": 100 + i, "vector": [float(i)] * 32, "text": f"x{i}", "score": i / 10} for i in range(5)]
    assert r.add(rows).version == o.add(rows).version
    assert_tables_equal(read_all(r), read_all(o))


def test_add_missing_nullable_column_fills_nulls(remote_db, oss_db, table_name):
    """The client sends the batch without the missing column; OSS fills nulls."""
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(20)))
    partial = make_data(5, seed=4, id_offset=900).drop_columns(["text"])
    assert r.add(partial).version == o.add(partial).version
    got = read_all(r, "id >= 900")
    assert got["text"].to_pylist() == [None] * 5
    assert_tables_equal(read_all(r), read_all(o))


def test_add_castable_types_are_cast(remote_db, oss_db, table_name):
    """int32 ids / float32 scores are cast by the client to the table schema."""
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(10)))
    d = make_data(5, seed=6, id_offset=50)
    d = d.set_column(0, "id", d["id"].cast(pa.int32())).set_column(3, "score", d["score"].cast(pa.float32()))
    r.add(d)
    o.add(d)
    assert r.schema == o.schema == vector_schema()
    assert_tables_equal(read_all(r), read_all(o))


# --------------------------------------------------------------------------- count / delete


@pytest.mark.parametrize(
    "predicate",
    [None, "id > 1000", "score < 0.25", "text IS NULL", "text LIKE 'doc-000%'", "id % 3 = 0 AND score > 0.5", "id < 0"],
)
def test_count_rows(remote_db, oss_db, table_name, predicate):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(2000)))
    expected = o.count_rows(predicate) if predicate else o.count_rows()
    got = r.count_rows(predicate) if predicate else r.count_rows()
    assert isinstance(got, int)
    assert got == expected


@pytest.mark.parametrize(
    "predicate",
    ["id = 5", "id >= 1500", "score < 0.1", "text IS NULL", "id < 0", "true"],
)
def test_delete_then_count(remote_db, oss_db, table_name, predicate):
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(2000)))
    dr, do = r.delete(predicate), o.delete(predicate)
    assert dr.version == do.version
    assert dr.num_deleted_rows == do.num_deleted_rows
    assert r.count_rows() == o.count_rows()
    assert r.version == o.version
    assert_tables_equal(read_all(r), read_all(o))


def test_delete_is_visible_to_new_connection(remote_db, server, table_name):
    from lf_helpers import connect_remote

    r = remote_db.create_table(table_name, make_data(100))
    r.delete("id < 40")
    other = connect_remote(server.url).open_table(table_name)
    assert other.count_rows() == 60
    assert other.version == r.version


# --------------------------------------------------------------------------- open / drop


def test_open_table_from_fresh_connection(remote_db, server, table_name):
    from lf_helpers import connect_remote

    data = make_data(300)
    remote_db.create_table(table_name, data)
    t = connect_remote(server.url).open_table(table_name)
    assert t.schema == data.schema
    assert t.count_rows() == 300
    assert_tables_equal(read_all(t), data.sort_by("id"))


def test_drop_then_open_raises(remote_db, oss_db, table_name, server):
    from lf_helpers import connect_remote

    both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(10)))
    remote_db.drop_table(table_name)
    oss_db.drop_table(table_name)
    for db in (remote_db, oss_db, connect_remote(server.url)):
        with pytest.raises(ValueError, match="not found"):
            db.open_table(table_name)
    assert table_name not in remote_db.list_tables(limit=10_000).tables


def test_drop_then_recreate(remote_db, oss_db, table_name):
    """A table created again after a drop counts its versions from 1 again: its reads never
    see the rows of the table it replaced (plan executors, which keep opened versions, tell
    the two apart by their manifests)."""
    first, _ = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(10)))
    assert first.count_rows() == 10 and read_all(first).num_rows == 10, "version 1 of the first table is read"
    remote_db.drop_table(table_name)
    oss_db.drop_table(table_name)
    r, o = both(remote_db, oss_db, lambda db: db.create_table(table_name, make_data(3, seed=8)))
    assert r.version == o.version
    assert r.count_rows() == 3
    assert_tables_equal(read_all(r), read_all(o))


def test_drop_missing_table_is_not_a_server_error(remote_db, unique_name):
    """Cloud answers 200 for a missing table; 404 is acceptable; never 5xx."""
    try:
        remote_db.drop_table(unique_name("never_created"))
    except ValueError:
        pass  # TableNotFound-like
    except Exception as e:  # lancedb.remote.errors.HttpError
        status = getattr(e, "status_code", None)
        assert status == 404, f"drop of a missing table gave {type(e).__name__} status={status}: {e}"
