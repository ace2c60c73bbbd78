//! `lancefleet status`: a terminal view of a running cluster, from a control plane's (or a
//! query node's) `GET /v1/cluster`: nodes, roles, health, the leader and placement shares;
//! each plan executor's cache hit ratio, read from its `/metrics`; and, through a query
//! node, every table's rows, fragments, indexes, unindexed rows and index coverage.
//! `--watch` redraws it; `--json` prints it for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

/// Where the view comes from.
#[derive(Debug, Clone)]
pub struct Source {
    /// A control plane's or a query node's HTTP base URL.
    pub url: String,
    /// A query node's REST base URL, for tables (the `url` itself when it is a query node).
    pub query_node: Option<String>,
    /// An API key for the query node.
    pub api_key: Option<String>,
}

/// Everything `status` shows, as JSON.
pub async fn gather(source: &Source) -> Result<Value, String> {
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|error| error.to_string())?;
    let cluster = get_json(&http, &format!("{}/v1/cluster", base(&source.url)), source.api_key.as_deref()).await?;
    let answered_by_query_node = cluster["answered_by"] == "query-node";
    let mut caches = serde_json::Map::new();
    for node in cluster["nodes"].as_array().into_iter().flatten() {
        let (Some(id), Some(metrics)) = (node["node_id"].as_str(), node["metrics_address"].as_str()) else { continue };
        let ratio = match http.get(format!("{}/metrics", base(metrics))).send().await {
            Ok(response) => response.text().await.ok().and_then(|text| cache_hit_ratio(&text)),
            Err(_) => None,
        };
        caches.insert(id.to_string(), ratio.map_or(Value::Null, Value::from));
    }
    let query_node = source.query_node.clone().or_else(|| answered_by_query_node.then(|| source.url.clone()));
    let tables = match &query_node {
        Some(url) => Value::Array(tables(&http, base(url), source.api_key.as_deref()).await?),
        None => Value::Null,
    };
    Ok(json!({ "cluster": cluster, "cache_hit_ratio": caches, "tables": tables }))
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

async fn get_json(http: &reqwest::Client, url: &str, api_key: Option<&str>) -> Result<Value, String> {
    send(http.get(url), url, api_key).await
}

async fn post_json(http: &reqwest::Client, url: &str, api_key: Option<&str>) -> Result<Value, String> {
    send(http.post(url).json(&json!({})), url, api_key).await
}

async fn send(request: reqwest::RequestBuilder, url: &str, api_key: Option<&str>) -> Result<Value, String> {
    let request = match api_key {
        Some(key) => request.header("x-api-key", key),
        None => request,
    };
    let response = request.send().await.map_err(|error| format!("{url}: {error}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", response.text().await.unwrap_or_default()));
    }
    response.json::<Value>().await.map_err(|error| format!("{url}: {error}"))
}

/// Every table of the root namespace: rows, fragments, and per index its coverage.
async fn tables(http: &reqwest::Client, url: &str, api_key: Option<&str>) -> Result<Vec<Value>, String> {
    let listed = get_json(http, &format!("{url}/v1/table/?limit=1000"), api_key).await?;
    let mut tables = Vec::new();
    for name in listed["tables"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let stats = post_json(http, &format!("{url}/v1/table/{name}/stats/"), api_key).await?;
        let indexes = post_json(http, &format!("{url}/v1/table/{name}/index/list/"), api_key).await?;
        let indexes = indexes["indexes"].as_array().cloned().unwrap_or_default();
        let unindexed = indexes.iter().filter_map(|index| index["num_unindexed_rows"].as_u64()).max();
        let coverage = indexes
            .iter()
            .filter_map(|index| {
                let indexed = index["num_indexed_rows"].as_u64()? as f64;
                let unindexed = index["num_unindexed_rows"].as_u64()? as f64;
                Some(if indexed + unindexed == 0.0 { 1.0 } else { indexed / (indexed + unindexed) })
            })
            .fold(None, |lowest: Option<f64>, coverage| Some(lowest.map_or(coverage, |lowest| lowest.min(coverage))));
        tables.push(json!({
            "table": name,
            "rows": stats["num_rows"],
            "fragments": stats["fragment_stats"]["num_fragments"],
            "indexes": indexes.len(),
            "unindexed_rows": unindexed,
            "index_coverage": coverage,
        }));
    }
    Ok(tables)
}

/// Hits / (hits + misses) of an executor's object cache, from its Prometheus text.
pub fn cache_hit_ratio(metrics: &str) -> Option<f64> {
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (hits, misses) = (sum("lancefleet_cache_hits_total"), sum("lancefleet_cache_misses_total"));
    (hits + misses > 0.0).then(|| hits / (hits + misses))
}

/// The view as text.
pub fn render(view: &Value) -> String {
    let cluster = &view["cluster"];
    let mut out = String::new();
    let name = cluster["cluster"].as_str().unwrap_or("lancefleet");
    let leader = cluster["leader"].as_str().unwrap_or("none");
    let answered_by = cluster["answered_by"].as_str().unwrap_or("?");
    let _ = writeln!(out, "cluster {name}   leader {leader}   answered by {answered_by}");
    let shares = &cluster["placement"]["first_choice_share"];
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<28} {:<14} {:<32} {:<10} {:>7} {:>10}",
        "NODE", "ROLE", "ADDRESS", "HEALTH", "SHARE", "CACHE HIT"
    );
    for node in cluster["nodes"].as_array().into_iter().flatten() {
        let id = node["node_id"].as_str().unwrap_or("?");
        let health = match (node["stopping"].as_bool(), node["healthy"].as_bool()) {
            (Some(true), _) => "stopping".to_string(),
            (_, Some(false)) => {
                format!("unhealthy{}", node["unhealthy_reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default())
            }
            _ => "ok".to_string(),
        };
        let share = shares[id].as_f64().map_or_else(|| "-".to_string(), |share| format!("{:.1}%", share * 100.0));
        let cache = view["cache_hit_ratio"][id]
            .as_f64()
            .map_or_else(|| "-".to_string(), |ratio| format!("{:.1}%", ratio * 100.0));
        let role = node["role"].as_str().unwrap_or("?");
        let address = node["address"].as_str().unwrap_or("?");
        let _ = writeln!(out, "{id:<28} {role:<14} {address:<32} {health:<10} {share:>7} {cache:>10}");
    }
    if let Some(tables) = view["tables"].as_array() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<28} {:>12} {:>10} {:>8} {:>15} {:>9}",
            "TABLE", "ROWS", "FRAGMENTS", "INDEXES", "UNINDEXED ROWS", "COVERAGE"
        );
        for table in tables {
            let number = |value: &Value| value.as_u64().map_or_else(|| "-".to_string(), |n| n.to_string());
            let coverage =
                table["index_coverage"].as_f64().map_or_else(|| "-".to_string(), |c| format!("{:.1}%", c * 100.0));
            let _ = writeln!(
                out,
                "{:<28} {:>12} {:>10} {:>8} {:>15} {:>9}",
                table["table"].as_str().unwrap_or("?"),
                number(&table["rows"]),
                number(&table["fragments"]),
                number(&table["indexes"]),
                number(&table["unindexed_rows"]),
                coverage
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_hit_ratios_come_from_the_counters() {
        let metrics = "# HELP x\nlancefleet_cache_hits_total{tier=\"memory\"} 6\nlancefleet_cache_hits_total{tier=\"disk\"} 2\nlancefleet_cache_misses_total 2\nlancefleet_cache_misses_totalx 99\n";
        assert_eq!(cache_hit_ratio(metrics), Some(0.8));
        assert_eq!(cache_hit_ratio("lancefleet_cache_misses_total 0\n"), None);
    }

    #[test]
    fn the_view_names_every_node_the_leader_and_the_tables() {
        let view = json!({
            "cluster": {
                "cluster": "lf", "leader": "cp-0", "answered_by": "cp-1",
                "nodes": [
                    {"node_id": "pe-0", "role": "plan-executor", "address": "http://a:7070", "healthy": true, "stopping": false},
                    {"node_id": "pe-1", "role": "plan-executor", "address": "http://b:7070", "healthy": false, "unhealthy_reason": "probe timed out"},
                    {"node_id": "cp-0", "role": "control-plane", "address": "http://c:8070", "healthy": true},
                ],
                "placement": {"first_choice_share": {"pe-0": 1.0}},
            },
            "cache_hit_ratio": {"pe-0": 0.5},
            "tables": [{"table": "docs", "rows": 10, "fragments": 2, "indexes": 1, "unindexed_rows": 0, "index_coverage": 1.0}],
        });
        let text = render(&view);
        assert!(text.contains("leader cp-0"), "{text}");
        assert!(text.contains("pe-0") && text.contains("100.0%") && text.contains("50.0%"), "{text}");
        assert!(text.contains("unhealthy: probe timed out"), "{text}");
        assert!(text.lines().any(|line| line.starts_with("docs") && line.contains("100.0%")), "{text}");
    }
}
