// Differential scenario for the official TypeScript client (@lancedb/lancedb).
//
// Usage:
//   node differential.mjs <local-directory>
//   node differential.mjs remote <url> <apiKey-or-empty>
//
// Runs one fixed, deterministic scenario and prints ONE JSON document to stdout:
//   {"client": {...}, "steps": {"<step name>": <normalised result>, ...}}
// A step that throws records {"error": <class name>, "category": <kind>, "message": ...}
// (plus the HTTP "status" and "request_id" the REST client reports, when it does).
// Results are normalised so that a LanceFleet server and a local directory can be compared
// with plain equality: rows sorted where order is undefined, floats rounded, timestamps,
// uuids and paths dropped. Steps named "ann.*" use an ANN index: compare their row counts
// and their recall against the exact search, not their rows.
//
// Module resolution: run with NODE_PATH=<node_modules> (see scripts/lib.sh, ensure_node_client)
// or from a directory whose node_modules holds @lancedb/lancedb and apache-arrow.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

// ESM `import` ignores NODE_PATH; createRequire honours it.
const require = createRequire(path.join(process.cwd(), "noop.js"));
const lancedb = require("@lancedb/lancedb");
const arrow = require("apache-arrow");

// The local directory of the run (null against a server), hidden in error messages.
const LOCAL_DIR = process.argv[2] === "remote" ? null : path.resolve(process.argv[2]).replace(/^\//, "");

const DIM = 16;
const N_ROWS = 300;
const WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"];
const CATEGORIES = ["red", "green", "blue", "cyan", "gold"];

// ---------------------------------------------------------------- deterministic data

// mulberry32: a small seeded PRNG, so both targets get exactly the same rows.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SCHEMA = new arrow.Schema([
  new arrow.Field("id", new arrow.Int64(), false),
  new arrow.Field("text", new arrow.Utf8(), true),
  new arrow.Field("category", new arrow.Utf8(), false),
  // nullable, with nulls every 10th row: for orderBy nulls first/last
  new arrow.Field("score", new arrow.Float64(), true),
  new arrow.Field("n32", new arrow.Int32(), true),
  new arrow.Field("vector", new arrow.FixedSizeList(DIM, new arrow.Field("item", new arrow.Float32(), true)), true),
]);

function makeRows(n, seed, firstId = 0) {
  const next = rng(seed);
  const rows = [];
  for (let i = 0; i < n; i++) {
    const id = firstId + i;
    const words = Array.from({ length: 3 + Math.floor(next() * 4) }, () => WORDS[Math.floor(next() * WORDS.length)]);
    // every 37th row also holds "omega", 1..9 times: a rare term with distinct BM25 scores,
    // so full-text and hybrid rankings have no ties
    if (id % 37 === 0) words.push(...Array(1 + ((id / 37) % 9)).fill("omega"));
    rows.push({
      id,
      text: words.join(" "),
      category: CATEGORIES[Math.floor(next() * CATEGORIES.length)],
      score: id % 10 === 0 ? null : Math.round(next() * 1000) / 10,
      n32: id % 7,
      vector: Array.from({ length: DIM }, () => Math.fround(next() * 2 - 1)),
    });
  }
  return rows;
}

// Rows as an Arrow table with the fixed schema (ids stay Int64, vectors Float32).
const toArrow = (rows) => lancedb.makeArrowTable(rows, { schema: SCHEMA });

const queryVector = (seed) => {
  const next = rng(seed);
  return Array.from({ length: DIM }, () => Math.fround(next() * 2 - 1));
};

// ---------------------------------------------------------------- normalisation

const round = (x, digits = 4) => {
  if (!Number.isFinite(x)) return String(x);
  const r = Math.round(x * 10 ** digits) / 10 ** digits;
  return Object.is(r, -0) ? 0 : r;
};

// Any Arrow / JS value -> plain JSON (bigint -> number, vectors -> arrays, floats rounded).
function plain(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number") return Number.isInteger(v) ? v : round(v);
  if (typeof v === "string" || typeof v === "boolean") return v;
  if (v instanceof Date) return "<date>";
  if (ArrayBuffer.isView(v)) return Array.from(v, plain);
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v.toArray === "function" && typeof v.length === "number") return Array.from(v.toArray(), plain);
  if (typeof v.toJSON === "function") return plain(v.toJSON());
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, plain(x)]));
  if (typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return String(v);
}

// An Arrow table -> {columns, types, rows}; rows sorted by `sortBy` (undefined order) or kept.
function tableResult(tbl, { sortBy = "id", keepOrder = false } = {}) {
  const fields = tbl.schema.fields;
  const rows = [];
  for (let i = 0; i < tbl.numRows; i++) {
    const row = {};
    fields.forEach((f, j) => {
      row[f.name] = plain(tbl.getChildAt(j).get(i));
    });
    rows.push(row);
  }
  if (!keepOrder && sortBy && fields.some((f) => f.name === sortBy)) {
    rows.sort((a, b) => (a[sortBy] < b[sortBy] ? -1 : a[sortBy] > b[sortBy] ? 1 : 0));
  }
  return { columns: fields.map((f) => f.name), types: fields.map((f) => String(f.type)), rows };
}

// Search rows ordered by (rounded score, id): ties may come back in any order.
// Vector searches rank by _distance ascending, full-text searches by _score descending.
function searchResult(tbl, { score = "_distance", descending = false } = {}) {
  const out = tableResult(tbl, { keepOrder: true });
  const sign = descending ? -1 : 1;
  out.rows.sort((a, b) => sign * ((a[score] ?? 0) - (b[score] ?? 0)) || (a.id ?? 0) - (b.id ?? 0));
  return out;
}
const FTS = { score: "_score", descending: true };

// An ANN search: its ids (in result order) and its recall against the exact search
// (the same query with bypassVectorIndex). Compared by recall, not equality.
async function annResult(build) {
  const ids = async (q) => {
    const tbl = await q.select(["id"]).toArrow();
    return tbl.numRows ? Array.from(tbl.getChild("id").toArray(), Number) : [];
  };
  const ann = await ids(build());
  const exact = new Set(await ids(build().bypassVectorIndex()));
  const recall = exact.size ? ann.filter((id) => exact.has(id)).length / exact.size : 1;
  return { ann_ids: ann, num_rows: ann.length, recall: round(recall, 2) };
}

const schemaResult = (schema) =>
  schema.fields.map((f) => ({ name: f.name, type: String(f.type), nullable: f.nullable }));

// Error -> class name and a coarse category: messages legitimately differ between a local
// table and the REST client, the kind of failure must not. Categories by meaning:
//   already_exists  a table, index or tag of that name exists
//   not_found       a named table, index, version or tag does not exist (or HTTP 404)
//   invalid_input   the request is wrong: bad SQL, unknown column, wrong dimension (or HTTP 400)
//   not_supported / panic / server_error (HTTP 5xx) / transport / other
// The REST client reports most server refusals as "Http error: <status> ...", with the
// server's message after it: the wording decides first, the status after.
function errorResult(e) {
  const raw = String(e?.message ?? e);
  // the request id is kept apart from the message: it finds the request in the server's log
  const requestId = raw.match(/\(request_id=([^)]*)\)/)?.[1];
  // messages are for people: without absolute paths, request ids and Rust source locations
  const message = raw
    .replaceAll(LOCAL_DIR ?? "\0", "<dir>")
    .replace(/\(request_id=[^)]*\)\s*/g, "")
    .replace(/,? \/\S+\.rs:\d+:\d+/g, "");
  const status = Number(message.match(/Http error:\s*(\d{3})\b/)?.[1]) || undefined;
  const resource = /\b(table|index|tag|ref|version|dataset|manifest)\b[^.]{0,80}(not found|does not exist)/i;
  let category;
  if (/panic/i.test(message)) category = "panic";
  else if (/already exists/i.test(message)) category = "already_exists";
  else if (status === 404 || (!status && resource.test(message))) category = "not_found";
  else if (status === 400 || /Invalid input|Schema Error|Invalid (table name|data type)/i.test(message))
    category = "invalid_input";
  else if (status >= 500) category = "server_error";
  else if (status) category = `http_${status}`;
  else if (/not supported/i.test(message)) category = "not_supported";
  else if (/Retry limit|timed out|connection/i.test(message)) category = "transport";
  else category = "other";
  const out = { error: e?.constructor?.name ?? typeof e, category, message: message.slice(0, 300) };
  if (status) out.status = status;
  if (requestId) out.request_id = requestId;
  return out;
}

// ---------------------------------------------------------------- the scenario

const steps = {};
async function step(name, fn) {
  try {
    const value = await fn();
    steps[name] = value === undefined ? "ok" : plain(value);
  } catch (e) {
    steps[name] = errorResult(e);
  }
}

async function connect(argv) {
  if (argv[0] === "remote") {
    const [, url, apiKey] = argv;
    return lancedb.connect("db://lancefleet", {
      apiKey: apiKey || "no-key",
      hostOverride: url,
      clientConfig: { retryConfig: { retries: 0 }, timeoutConfig: { timeout: 60 } },
    });
  }
  return lancedb.connect(argv[0]);
}

// Waits for an index where the target builds it in the background (a no-op locally).
const waitIndex = (table, names) => table.waitForIndex(names, 60);

async function main() {
  const db = await connect(process.argv.slice(2));
  const rows = makeRows(N_ROWS, 42);
  const qv = queryVector(7);
  let items;

  // ---- tables
  await step("tables.create_from_rows", async () => {
    items = await db.createTable("ts_items", toArrow(rows));
    return { name: items.name, rows: await items.countRows() };
  });
  await step("tables.create_empty", async () => {
    const t = await db.createEmptyTable("ts_empty", SCHEMA);
    return { rows: await t.countRows(), schema: schemaResult(await t.schema()) };
  });
  await step("tables.names", async () => (await db.tableNames()).filter((n) => n.startsWith("ts_")).sort());
  await step("tables.open", async () => {
    const t = await db.openTable("ts_items");
    return { name: t.name, rows: await t.countRows(), version: await t.version() };
  });
  await step("tables.create_duplicate", async () => db.createTable("ts_items", toArrow(rows.slice(0, 3))));
  await step("tables.create_exist_ok", async () => {
    const t = await db.createTable("ts_items", toArrow(rows.slice(0, 3)), { existOk: true });
    return { rows: await t.countRows() };
  });
  await step("tables.schema", async () => schemaResult(await items.schema()));
  await step("tables.count_rows", async () => items.countRows());
  await step("tables.count_rows_filter", async () => items.countRows("category = 'red' AND id < 150"));
  await step("tables.count_rows_filter_empty", async () => items.countRows("id < 0"));

  // ---- flat (exact) vector search: no index yet, so both targets must agree exactly
  for (const dist of ["l2", "cosine", "dot"]) {
    await step(`search.vector_${dist}`, async () =>
      searchResult(await items.vectorSearch(qv).distanceType(dist).select(["id", "category"]).limit(10).toArrow()),
    );
  }
  await step("search.vector_default_columns", async () =>
    searchResult(await items.vectorSearch(qv).limit(3).toArrow()),
  );
  await step("search.vector_prefilter", async () =>
    searchResult(await items.vectorSearch(qv).where("category = 'blue'").select(["id", "category"]).limit(10).toArrow()),
  );
  await step("search.vector_postfilter", async () =>
    searchResult(
      await items.vectorSearch(qv).where("category = 'blue'").postfilter().select(["id", "category"]).limit(40).toArrow(),
    ),
  );
  await step("search.vector_select_expr", async () =>
    searchResult(await items.vectorSearch(qv).select({ id: "id", twice: "id * 2" }).limit(5).toArrow()),
  );
  await step("search.vector_distance_range", async () =>
    searchResult(await items.vectorSearch(qv).distanceRange(0, 12).select(["id"]).limit(50).toArrow()),
  );
  await step("search.vector_with_row_id", async () => {
    const r = await items.vectorSearch(qv).select(["id"]).withRowId().limit(3).toArrow();
    return { columns: r.schema.fields.map((f) => f.name), rows: r.numRows };
  });
  await step("search.vector_offset", async () =>
    searchResult(await items.vectorSearch(qv).select(["id"]).limit(5).offset(5).toArrow()),
  );
  await step("search.vector_two_queries", async () => {
    const r = await items.vectorSearch(qv).addQueryVector(queryVector(8)).select(["id"]).limit(3).toArrow();
    return tableResult(r, { sortBy: null, keepOrder: true }).rows
      .sort((a, b) => a.query_index - b.query_index || a._distance - b._distance || a.id - b.id);
  });

  // ---- flat scans
  await step("query.where_select_limit", async () =>
    tableResult(await items.query().where("n32 = 3").select(["id", "text", "category"]).limit(1000).toArrow()),
  );
  await step("query.offset_limit", async () => {
    // Without orderBy the scan order is the table's order: ids are contiguous here.
    const r = await items.query().select(["id"]).offset(10).limit(5).toArrow();
    return tableResult(r);
  });
  await step("query.all_rows", async () => {
    const r = tableResult(await items.query().limit(N_ROWS + 10).toArrow());
    return { count: r.rows.length, types: r.types, first: r.rows[0], last: r.rows[r.rows.length - 1] };
  });
  await step("query.select_dynamic", async () =>
    tableResult(await items.query().where("id < 5").select({ id: "id", upper: "upper(category)", s: "score + 1" }).toArrow()),
  );
  await step("query.order_by_multi", async () =>
    tableResult(
      await items
        .query()
        .select(["id", "category", "score"])
        .orderBy([
          { columnName: "category", ascending: true },
          { columnName: "score", ascending: false, nullsFirst: true },
          { columnName: "id", ascending: true },
        ])
        .limit(25)
        .toArrow(),
      { keepOrder: true },
    ),
  );
  await step("query.order_by_nulls_last", async () =>
    tableResult(
      await items
        .query()
        .where("id < 40")
        .select(["id", "score"])
        .orderBy([{ columnName: "score", ascending: true, nullsFirst: false }, { columnName: "id" }])
        .toArrow(),
      { keepOrder: true },
    ),
  );

  // ---- full-text search (FTS index first; no vector index yet, so hybrid is exact too)
  await step("index.create_fts", async () => {
    await items.createIndex("text", { config: lancedb.Index.fts({ withPosition: true }) });
    await waitIndex(items, ["text_idx"]);
  });
  await step("search.fts", async () =>
    searchResult(await items.query().fullTextSearch("kappa").select(["id", "text"]).limit(10).toArrow(), FTS),
  );
  await step("search.fts_two_terms", async () =>
    searchResult(await items.query().fullTextSearch("kappa iota").select(["id"]).limit(20).toArrow(), FTS),
  );
  await step("search.fts_where", async () =>
    searchResult(
      await items.query().fullTextSearch("alpha").where("category = 'gold'").select(["id"]).limit(10).toArrow(),
      FTS,
    ),
  );
  await step("search.fts_phrase", async () => {
    const q = new lancedb.PhraseQuery("alpha beta", "text");
    const r = await items.query().fullTextSearch(q).select(["id"]).limit(100).toArrow();
    return tableResult(r);
  });
  await step("search.fts_match_and", async () => {
    const q = new lancedb.MatchQuery("alpha gamma", "text", { operator: lancedb.Operator.And });
    return tableResult(await items.query().fullTextSearch(q).select(["id"]).limit(100).toArrow());
  });
  await step("search.fts_rare_term", async () =>
    searchResult(await items.query().fullTextSearch("omega").select(["id"]).limit(20).toArrow(), FTS),
  );
  await step("search.hybrid_rrf", async () => {
    // "omega" ranks its 9 rows without ties: the fused ranking is deterministic
    const reranker = await lancedb.rerankers.RRFReranker.create();
    const r = await items
      .vectorSearch(qv)
      .fullTextSearch("omega")
      .select(["id"])
      .rerank(reranker)
      .limit(10)
      .toArrow();
    return searchResult(r, { score: "_relevance_score", descending: true });
  });

  // ---- scalar indexes
  await step("index.create_btree", async () => {
    await items.createIndex("id", { config: lancedb.Index.btree() });
    await waitIndex(items, ["id_idx"]);
  });
  await step("index.create_bitmap", async () => {
    await items.createIndex("category", { config: lancedb.Index.bitmap() });
    await waitIndex(items, ["category_idx"]);
  });
  await step("query.with_scalar_indexes", async () =>
    tableResult(await items.query().where("id >= 100 AND id < 110 AND category IN ('red','blue')").select(["id", "category"]).toArrow()),
  );

  // ---- vector index IVF_PQ
  await step("index.create_ivf_pq", async () => {
    await items.createIndex("vector", {
      config: lancedb.Index.ivfPq({ numPartitions: 4, numSubVectors: 4, distanceType: "l2" }),
    });
    await waitIndex(items, ["vector_idx"]);
  });
  await step("index.list", async () => listIndices(items));
  for (const name of ["vector_idx", "text_idx", "id_idx", "category_idx"]) {
    await step(`index.stats_${name}`, async () => items.indexStats(name));
  }
  // undefined for an unknown index (recorded as null)
  await step("index.stats_unknown", async () => (await items.indexStats("no_such_idx")) ?? null);
  await step("ann.ivf_pq", async () => annResult(() => items.vectorSearch(qv).limit(10)));
  await step("ann.ivf_pq_nprobes_refine", async () =>
    annResult(() => items.vectorSearch(qv).nprobes(4).refineFactor(5).limit(10)),
  );
  await step("ann.ivf_pq_prefilter", async () =>
    annResult(() => items.vectorSearch(qv).where("category = 'red'").nprobes(4).limit(10)),
  );
  await step("ann.ivf_pq_postfilter", async () =>
    annResult(() => items.vectorSearch(qv).where("category = 'red'").postfilter().nprobes(4).refineFactor(5).limit(10)),
  );
  // refine with all partitions re-ranks on the original vectors: exact distances
  await step("search.ivf_pq_refined_distances", async () => {
    const r = tableResult(
      await items.vectorSearch(qv).nprobes(4).refineFactor(50).select(["id"]).limit(5).toArrow(),
      { keepOrder: true },
    );
    return { columns: r.columns, count: r.rows.length };
  });
  await step("search.bypass_vector_index", async () =>
    searchResult(await items.vectorSearch(qv).bypassVectorIndex().select(["id"]).limit(10).toArrow()),
  );
  await step("index.drop_ivf_pq", async () => {
    await items.dropIndex("vector_idx");
    return (await listIndices(items)).map((i) => i.name);
  });

  // ---- vector index IVF_FLAT (cosine): with all partitions probed the search is exact
  await step("index.create_ivf_flat", async () => {
    await items.createIndex("vector", { config: lancedb.Index.ivfFlat({ numPartitions: 2, distanceType: "cosine" }) });
    await waitIndex(items, ["vector_idx"]);
  });
  await step("index.stats_ivf_flat", async () => items.indexStats("vector_idx"));
  await step("ann.ivf_flat", async () => annResult(() => items.vectorSearch(qv).distanceType("cosine").limit(10)));
  await step("search.ivf_flat_all_partitions", async () =>
    searchResult(await items.vectorSearch(qv).distanceType("cosine").nprobes(2).select(["id"]).limit(10).toArrow()),
  );
  await step("index.replace_false", async () =>
    items.createIndex("vector", { config: lancedb.Index.ivfFlat({ numPartitions: 2 }), replace: false }),
  );
  await step("index.drop_unknown", async () => items.dropIndex("no_such_idx"));
  await step("index.list_after", async () => listIndices(items));

  // ---- rows appended after the indexes: unindexed rows are still searched (not with fastSearch)
  await step("index.append_rows", async () => ({
    result: await items.add(toArrow(makeRows(10, 19, 1000))),
    rows: await items.countRows(),
  }));
  for (const name of ["vector_idx", "id_idx", "text_idx"]) {
    await step(`index.stats_after_append_${name}`, async () => items.indexStats(name));
  }
  await step("search.after_append_exact", async () =>
    searchResult(await items.vectorSearch(qv).distanceType("cosine").nprobes(2).where("id >= 1000").select(["id"]).limit(5).toArrow()),
  );
  await step("search.fast_search_skips_unindexed", async () => {
    const r = await items.vectorSearch(qv).distanceType("cosine").nprobes(2).fastSearch().where("id >= 1000").select(["id"]).limit(5).toArrow();
    return r.numRows;
  });
  await step("search.fts_after_append", async () =>
    searchResult(await items.query().fullTextSearch("omega").select(["id"]).limit(30).toArrow(), FTS),
  );
  await step("tables.stats", async () => {
    const st = await items.stats();
    return { numRows: st.numRows, numIndices: st.numIndices };
  });

  // ---- writes on a table of their own
  const w = await db.createTable("ts_writes", toArrow(rows.slice(0, 20)));
  const contents = async () =>
    tableResult(await w.query().select(["id", "text", "category", "score", "n32"]).limit(1000).toArrow()).rows;
  await step("writes.add", async () => ({ result: await w.add(toArrow(makeRows(5, 9, 100))), rows: await w.countRows() }));
  await step("writes.add_plain_objects", async () => {
    // plain JS rows: the client infers/casts to the table's schema
    const extra = makeRows(2, 10, 200).map((r) => ({ ...r, id: BigInt(r.id) }));
    return { result: await w.add(extra), rows: await w.countRows() };
  });
  await step("writes.update_values", async () => ({
    result: await w.update({ where: "id < 3", values: { category: "updated", score: 1.5 } }),
    rows: (await contents()).filter((r) => r.id < 5),
  }));
  await step("writes.update_values_sql", async () => ({
    result: await w.update({ where: "id >= 100", valuesSql: { n32: "n32 + 100", text: "concat(text, ' sql')" } }),
    rows: (await contents()).filter((r) => r.id >= 100),
  }));
  await step("writes.update_all", async () => ({
    result: await w.update({ valuesSql: { score: "coalesce(score, 0) + 1" } }),
    sum: (await contents()).reduce((s, r) => s + r.score, 0),
  }));
  await step("writes.delete", async () => ({ result: await w.delete("id % 2 = 1"), rows: await w.countRows() }));
  await step("writes.delete_none", async () => ({ result: await w.delete("id < 0"), rows: await w.countRows() }));
  await step("writes.merge_upsert", async () => {
    // ids 0..5 exist for the even ones; 300..302 are new
    const batch = [...makeRows(6, 11, 0), ...makeRows(3, 12, 300)].map((r) => ({ ...r, category: "merged" }));
    const result = await w.mergeInsert("id").whenMatchedUpdateAll().whenNotMatchedInsertAll().execute(toArrow(batch));
    return { result, rows: await contents() };
  });
  await step("writes.merge_insert_only", async () => {
    const batch = [...makeRows(4, 13, 298)].map((r) => ({ ...r, category: "insert_only" }));
    const result = await w.mergeInsert("id").whenNotMatchedInsertAll().execute(toArrow(batch));
    return { result, rows: (await contents()).filter((r) => r.id >= 298) };
  });
  await step("writes.merge_delete_by_source", async () => {
    const batch = makeRows(3, 14, 0);
    const result = await w
      .mergeInsert("id")
      .whenMatchedUpdateAll({ where: "target.id > 0" })
      .whenNotMatchedBySourceDelete({ where: "id > 250" })
      .execute(toArrow(batch));
    return { result, ids: (await contents()).map((r) => r.id) };
  });
  await step("writes.add_overwrite", async () => ({
    result: await w.add(toArrow(makeRows(4, 15, 500)), { mode: "overwrite" }),
    ids: (await contents()).map((r) => r.id),
    version: await w.version(),
  }));
  await step("writes.add_wrong_schema", async () => w.add([{ id: 1n, nope: "x" }]));

  // ---- schema changes: one alteration per call on ts_schema, all three in one call on
  // ts_alter (so a refused combined call does not cascade into the later steps)
  const s = await db.createTable("ts_schema", toArrow(rows.slice(0, 10)));
  await step("schema.add_columns", async () => ({
    result: await s.addColumns([
      { name: "double_id", valueSql: "id * 2" },
      { name: "label", valueSql: "concat(category, '-', cast(id as string))" },
    ]),
    schema: schemaResult(await s.schema()),
    rows: tableResult(await s.query().select(["id", "double_id", "label"]).limit(3).where("id < 3").toArrow()).rows,
  }));
  await step("schema.alter_rename", async () => ({
    result: await s.alterColumns([{ path: "text", rename: "body" }]),
    schema: schemaResult(await s.schema()),
  }));
  await step("schema.alter_cast", async () => ({
    result: await s.alterColumns([{ path: "n32", dataType: new arrow.Int64() }]),
    schema: schemaResult(await s.schema()),
  }));
  await step("schema.alter_nullable", async () => ({
    result: await s.alterColumns([{ path: "category", nullable: true }]),
    schema: schemaResult(await s.schema()),
  }));
  await step("schema.alter_cast_string_type", async () => ({
    // the string form is the Arrow JSON type name: "float" is float32
    result: await s.alterColumns([{ path: "score", dataType: "float" }]),
    schema: schemaResult(await s.schema()),
  }));
  await step("schema.alter_unknown_column", async () => s.alterColumns([{ path: "nope", rename: "nada" }]));
  await step("schema.drop_columns", async () => ({
    result: await s.dropColumns(["label", "double_id"]),
    schema: schemaResult(await s.schema()),
  }));
  await step("schema.drop_unknown_column", async () => s.dropColumns(["nope"]));
  await step("schema.data_after", async () => tableResult(await s.query().where("id < 3").toArrow()));
  const alt = await db.createTable("ts_alter", toArrow(rows.slice(0, 10)));
  await step("schema.alter_columns_multi", async () => ({
    result: await alt.alterColumns([
      { path: "text", rename: "body" },
      { path: "n32", dataType: new arrow.Int64() },
      { path: "category", nullable: true },
    ]),
    schema: schemaResult(await alt.schema()),
    rows: tableResult(await alt.query().select(["id", "body", "category", "n32"]).where("id < 3").toArrow()).rows,
  }));

  // ---- versions and tags
  const v = await db.createTable("ts_versions", toArrow(rows.slice(0, 10)));
  await step("versions.version_initial", async () => v.version());
  await step("versions.writes", async () => {
    await v.add(toArrow(makeRows(5, 16, 10))); // v2: 15 rows
    await v.delete("id < 2"); // v3: 13 rows
    return { version: await v.version(), rows: await v.countRows() };
  });
  await step("versions.list", async () =>
    // metadata without total_files_size: byte sizes depend on the writer's encoder
    (await v.listVersions()).map((x) => {
      const { total_files_size, ...metadata } = x.metadata ?? {};
      return { version: x.version, metadata };
    }),
  );
  await step("versions.checkout", async () => {
    await v.checkout(2);
    return { version: await v.version(), rows: await v.countRows() };
  });
  await step("versions.write_while_checked_out", async () => v.add(toArrow(makeRows(1, 17, 50))));
  await step("versions.checkout_latest", async () => {
    await v.checkoutLatest();
    return { version: await v.version(), rows: await v.countRows() };
  });
  await step("versions.restore", async () => {
    await v.checkout(1);
    await v.restore();
    return { version: await v.version(), rows: await v.countRows() };
  });
  await step("versions.checkout_unknown", async () => {
    try {
      await v.checkout(999);
      return { version: await v.version(), rows: await v.countRows() };
    } finally {
      await v.checkoutLatest().catch(() => {});
    }
  });
  await step("tags.create_list", async () => {
    const tags = await v.tags();
    await tags.create("first", 1);
    await tags.create("second", 2);
    return tagList(await tags.list());
  });
  await step("tags.get_version", async () => (await v.tags()).getVersion("second"));
  await step("tags.update", async () => {
    const tags = await v.tags();
    await tags.update("second", 3);
    return tagList(await tags.list());
  });
  await step("tags.create_duplicate", async () => (await v.tags()).create("first", 2));
  await step("tags.create_bad_version", async () => (await v.tags()).create("bad", 999));
  await step("tags.checkout_tag", async () => {
    await v.checkout("second");
    const out = { version: await v.version(), rows: await v.countRows() };
    await v.checkoutLatest();
    return out;
  });
  await step("tags.delete", async () => {
    const tags = await v.tags();
    await tags.delete("first");
    return tagList(await tags.list());
  });
  await step("tags.get_unknown", async () => (await v.tags()).getVersion("first"));
  await step("tags.delete_unknown", async () => (await v.tags()).delete("nope"));
  await step("versions.open_at_version", async () => {
    const t = await db.openTable("ts_versions", undefined, { version: 2 });
    return { version: await t.version(), rows: await t.countRows() };
  });

  // ---- bad input
  await step("bad.vector_wrong_dimension", async () => items.vectorSearch([1, 2, 3]).limit(3).toArray());
  await step("bad.invalid_filter", async () => items.query().where("id >>>= 3 AND").limit(3).toArray());
  await step("bad.unknown_column_filter", async () => items.query().where("nope = 1").limit(3).toArray());
  await step("bad.unknown_column_select", async () => items.query().select(["id", "nope"]).limit(3).toArray());
  await step("bad.count_rows_invalid_filter", async () => items.countRows("id ==== 1"));
  await step("bad.open_unknown_table", async () => db.openTable("ts_no_such_table"));
  await step("bad.drop_unknown_table", async () => db.dropTable("ts_no_such_table"));
  await step("bad.create_existing_table", async () => db.createTable("ts_writes", toArrow(rows.slice(0, 1))));
  await step("bad.update_unknown_column", async () => w.update({ values: { nope: 1 } }));
  await step("bad.delete_invalid_filter", async () => w.delete("id === "));
  await step("bad.index_unknown_column", async () => w.createIndex("nope", { config: lancedb.Index.btree() }));
  await step("bad.fts_without_index", async () => w.query().fullTextSearch("alpha").limit(3).toArray());
  await step("bad.merge_unknown_key", async () =>
    w.mergeInsert("nope").whenNotMatchedInsertAll().execute(toArrow(makeRows(1, 18, 900))),
  );

  await step("bad.invalid_table_name", async () => db.createTable("bad name!", toArrow(rows.slice(0, 1))));
  // The request that follows a refused create on the same keep-alive connection must still
  // be answered (a server that refuses without reading the body must not leave the
  // connection half-used). Repeated, with a ~100 KB body, as the failure is a race.
  const all = toArrow(rows);
  await step("bad.request_after_refused_create", async () => {
    const outcome = { answered: 0, failed: {} };
    for (let i = 0; i < 50; i++) {
      await db.createTable("bad name!", all).catch(() => {});
      try {
        await w.countRows();
        outcome.answered++;
      } catch (e) {
        const { category } = errorResult(e);
        outcome.failed[category] = (outcome.failed[category] ?? 0) + 1;
      }
    }
    return outcome;
  });

  // ---- drop
  await step("tables.drop", async () => {
    await db.dropTable("ts_empty");
    return (await db.tableNames()).filter((n) => n.startsWith("ts_")).sort();
  });
  await step("tables.open_dropped", async () => db.openTable("ts_empty"));
  await step("tables.drop_all_remaining", async () => {
    for (const name of ["ts_items", "ts_writes", "ts_schema", "ts_alter", "ts_versions"]) await db.dropTable(name);
    return (await db.tableNames()).filter((n) => n.startsWith("ts_")).sort();
  });
}

// listIndices, sorted by name (order is not defined).
async function listIndices(table) {
  const list = await table.listIndices();
  return list.map((i) => ({ name: i.name, indexType: i.indexType, columns: i.columns })).sort((a, b) => (a.name < b.name ? -1 : 1));
}

// tags.list() without manifest sizes (storage detail).
const tagList = (tags) =>
  Object.fromEntries(Object.keys(tags).sort().map((k) => [k, { version: tags[k].version }]));

main()
  .catch((e) => {
    steps["<fatal>"] = errorResult(e);
  })
  .finally(() => {
    // package.json is not exported: read it next to the resolved entry point (dist/index.js)
    const entry = require.resolve("@lancedb/lancedb");
    const pkg = JSON.parse(readFileSync(path.join(path.dirname(entry), "..", "package.json"), "utf8"));
    process.stdout.write(JSON.stringify({ client: { lancedb: pkg.version, node: process.version }, steps }, null, 1) + "\n");
  });
