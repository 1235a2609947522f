//! Search latency and loading speed through the vector stores themselves (the `VectorDb`
//! API that ingestion and the server use), on SQLite and PostgreSQL + pgvector.
//!
//! ```sh
//! cargo run --release -p ferrollama-rag --example store_bench                 # SQLite, 10K and 100K
//! cargo run --release -p ferrollama-rag --example store_bench -- \
//!     --sizes 10000,100000 --pg postgres://postgres@127.0.0.1:PORT/postgres --json out.json
//! ```
//!
//! `--pg URL` (or `$FERROLLAMA_PG_URL`) adds PostgreSQL: each size gets a fresh database
//! (`CREATE DATABASE`, dropped at the end). `--backends sqlite,postgres` picks backends,
//! `--queries N` (300) the query count. Above `--pg-maintained-max` chunks (20000) the
//! PostgreSQL store is loaded with its HNSW index dropped and then rebuilt with the same
//! definition (inserting through the maintained index runs at ~100-200 chunks/s here);
//! PostgreSQL's exact scan runs `--pg-flat-queries` (60) queries only.
//!
//! Corpus: `n` seeded 384-d "clustered" synthetic embeddings (`tests/support/synth.rs`,
//! n/1000 clusters, as the `vector_bench` example), each chunk with ~60 words of seeded
//! Zipf-distributed pseudo-words so keyword search has something to rank. Loaded as
//! ingestion does: files of 100 chunks, `add_file` then `complete_file` (one transaction
//! per file), timed as chunks/s. SQLite lives in a temporary folder on disk (WAL), as
//! `serve --data-dir` does.
//!
//! Queries: fresh samples of the same mixture, each with 3 words; `search` with
//! `max_num_results` 10, run one after another from one thread. A search's time is the
//! whole `VectorDb::search` call: ranking, fetching the hits' rows and the store's
//! `last_active_at` update. recall@10 is against the exact top 10 (a flat scan over the
//! corpus in the benchmark itself).
//!
//! Modes:
//! - SQLite `flat`: `hnsw_threshold` = MAX, every search is the exact SIMD scan;
//!   `indexed`: threshold 0 and the graph built (the build's wall time is reported as
//!   `build s`; it runs in the background). `cold` is the first search after opening
//!   the store (loads the vectors from SQLite; at the default threshold it also starts the
//!   background build at 100K, and `during build` is the latency of searches made while
//!   that build runs: none waits for it).
//! - PostgreSQL `indexed`: the store's partial HNSW index (created with the store, kept up
//!   to date by every insert, so loading pays for it), `hnsw.ef_search` as the backend
//!   sets it; `flat`: the same queries from sessions with `enable_indexscan = off`
//!   (`ALTER DATABASE ... SET`, then a fresh connection pool), which leaves pgvector's
//!   exact sequential scan. The plan of one query is printed to show which ran.
//! - `keyword` and `hybrid` (the indexed configuration) are reported too; they have no
//!   recall figure.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/synth.rs"]
mod synth;

use std::time::{Duration, Instant};

use ferrollama_rag::sqlite::IndexTuning;
use ferrollama_rag::vector_stores::{Chunking, NewChunk, SearchMode};
use ferrollama_rag::{
    IndexParams, NewStoreFile, NewVectorStore, PgStore, SearchQuery, SqliteStore, VectorDb,
    VectorIndex,
};
use serde_json::{Map, Value, json};
use synth::{Clustered, Rng, recall};

const DIM: usize = 384;
const K: usize = 10;
const PER_FILE: usize = 100;
const WORDS_PER_CHUNK: usize = 60;
const VOCAB: usize = 5000;

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

/// Pronounceable pseudo-words: word `i` spelled from its digits in base 20 syllables.
fn word(mut i: usize) -> String {
    const SYL: [&str; 20] = [
        "ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "xe", "ba", "do", "fi", "gu", "he",
        "ja", "ko", "le", "mo", "ne",
    ];
    let mut w = String::new();
    loop {
        w.push_str(SYL[i % 20]);
        i /= 20;
        if i == 0 {
            break;
        }
    }
    w
}

/// A Zipf-like draw over the vocabulary (rank ~ u^3: common words common, a long tail).
fn draw(rng: &mut Rng, vocab: &[String]) -> String {
    let u = rng.unit();
    let i = ((u * u * u) * VOCAB as f64) as usize;
    vocab[i.min(VOCAB - 1)].clone()
}

struct Corpus {
    data: Vec<f32>,
    texts: Vec<String>,
    queries: Vec<f32>,
    query_texts: Vec<String>,
    /// Exact top-K corpus rows per query.
    exact: Vec<Vec<u64>>,
}

fn corpus(n: usize, queries: usize) -> Corpus {
    let model = Clustered::new(DIM, (n / 1000).max(10), 1);
    let data = model.sample(n, 2);
    let qv = model.sample(queries, 3);
    let vocab: Vec<String> = (0..VOCAB).map(word).collect();
    let mut rng = Rng::new(11);
    // Each text starts with its row tag `rNNN`, which maps a hit back to its row.
    let texts = (0..n)
        .map(|i| {
            let mut t = format!("r{i}");
            for _ in 0..WORDS_PER_CHUNK {
                t.push(' ');
                t.push_str(&draw(&mut rng, &vocab));
            }
            t
        })
        .collect();
    let query_texts = (0..queries)
        .map(|_| {
            (0..3)
                .map(|_| draw(&mut rng, &vocab))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut flat = VectorIndex::with_params(
        DIM,
        IndexParams {
            hnsw_threshold: usize::MAX,
            ..IndexParams::default()
        },
    );
    for (i, v) in data.chunks_exact(DIM).enumerate() {
        flat.insert(i as u64, v).unwrap();
    }
    let exact = qv
        .chunks_exact(DIM)
        .map(|q| {
            flat.exact_search(q, K, None)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        })
        .collect();
    Corpus {
        data,
        texts,
        queries: qv,
        query_texts,
        exact,
    }
}

fn new_store(db: &dyn VectorDb) -> String {
    db.create_vector_store(NewVectorStore {
        name: "bench".into(),
        metadata: Map::new(),
        expires_after: None,
        embedding_model: "synthetic".into(),
        embedding_dimension: DIM,
        id: None,
    })
    .unwrap()
    .id
}

/// Loads the corpus as ingestion does; returns seconds.
fn load(db: &dyn VectorDb, vs: &str, c: &Corpus) -> f64 {
    let t = Instant::now();
    let rows: Vec<&[f32]> = c.data.chunks_exact(DIM).collect();
    for (f, start) in (0..rows.len()).step_by(PER_FILE).enumerate() {
        let file = format!("file-{f:06}");
        db.add_file(
            vs,
            NewStoreFile {
                file_id: file.clone(),
                filename: format!("{file}.txt"),
                attributes: Map::new(),
                chunking: Chunking::AUTO,
            },
        )
        .unwrap();
        let end = (start + PER_FILE).min(rows.len());
        let chunks: Vec<NewChunk> = (start..end)
            .map(|i| NewChunk {
                text: c.texts[i].clone(),
                tokens: WORDS_PER_CHUNK + 1,
                embedding: rows[i].to_vec(),
                metadata: Map::new(),
            })
            .collect();
        assert!(db.complete_file(vs, &file, &chunks).unwrap());
    }
    t.elapsed().as_secs_f64()
}

fn search_once(db: &dyn VectorDb, vs: &str, c: &Corpus, i: usize, mode: SearchMode) -> Vec<u64> {
    let q = &c.queries[i * DIM..(i + 1) * DIM];
    let hits = db
        .search(
            vs,
            &SearchQuery {
                text: c.query_texts[i].clone(),
                embedding: Some(q.to_vec()),
                mode,
                max_results: K,
                filter: None,
                score_threshold: f32::NEG_INFINITY,
            },
        )
        .unwrap();
    hits.iter()
        .filter_map(|h| {
            h.text
                .split(' ')
                .next()
                .and_then(|t| t.strip_prefix('r'))
                .and_then(|t| t.parse().ok())
        })
        .collect()
}

#[derive(Debug)]
struct Run {
    p50: f64,
    p99: f64,
    mean: f64,
    recall: Option<f64>,
}

/// Every query once in `mode` (plus 10 untimed warm-up queries).
fn run(db: &dyn VectorDb, vs: &str, c: &Corpus, mode: SearchMode, queries: usize) -> Run {
    for i in 0..10.min(queries) {
        search_once(db, vs, c, i, mode);
    }
    let mut ms = Vec::with_capacity(queries);
    let mut got = Vec::with_capacity(queries);
    for i in 0..queries {
        let t = Instant::now();
        let ids = search_once(db, vs, c, i, mode);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        got.push(ids);
    }
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    ms.sort_by(f64::total_cmp);
    Run {
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        mean,
        recall: (mode == SearchMode::Vector).then(|| recall(&got, &c.exact[..queries])),
    }
}

struct Report {
    rows: Vec<Value>,
}

impl Report {
    fn add(&mut self, backend: &str, n: usize, mode: &str, r: &Run, note: &str) {
        let rec = r.recall.map_or("-".to_string(), |x| format!("{x:.4}"));
        println!(
            "| {backend} | {n} | {mode} | {:.2} | {:.2} | {:.2} | {rec} | {note} |",
            r.p50, r.p99, r.mean
        );
        self.rows.push(json!({
            "backend": backend, "n": n, "mode": mode, "p50_ms": r.p50, "p99_ms": r.p99,
            "mean_ms": r.mean, "recall_at_10": r.recall, "note": note,
        }));
    }
}

fn sqlite_bench(n: usize, c: &Corpus, queries: usize, rep: &mut Report, extra: &mut Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStore::open(dir.path()).unwrap();
    let vs = new_store(&db);
    let load_s = load(&db, &vs, c);
    drop(db);
    // Reopened: the first search loads the vectors as after a restart.
    let db = SqliteStore::open(dir.path()).unwrap();
    let defaults = IndexTuning::default();
    let t = Instant::now();
    search_once(&db, &vs, c, 0, SearchMode::Vector);
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    // At the default threshold (20K) a 100K store now builds its graph in the background:
    // searches meanwhile.
    let during = db.index_status(&vs).is_some_and(|s| s.building).then(|| {
        let q = queries.min(100);
        let r = run(&db, &vs, c, SearchMode::Vector, q);
        let still = db.index_status(&vs).is_some_and(|s| s.building);
        (r, still)
    });
    let t = Instant::now();
    db.set_index_tuning(IndexTuning {
        params: IndexParams {
            hnsw_threshold: 0,
            ..defaults.params
        },
        ..defaults
    });
    let st = db
        .wait_for_index(&vs, Duration::from_secs(3600))
        .unwrap()
        .unwrap();
    let build_s = t.elapsed().as_secs_f64();
    assert_eq!(st.graph, n, "{st:?}");
    let note = if during.is_some() {
        "graph built in the background, started by the cold search at the default threshold"
    } else {
        "graph built in the background (threshold set to 0)"
    };
    extra.push(json!({"backend": "sqlite", "n": n, "load_s": load_s,
        "chunks_per_s": n as f64 / load_s, "cold_first_search_ms": cold_ms,
        "graph_build_s": build_s, "note": note}));
    if let Some((r, still)) = during {
        let note = if still {
            "while the graph builds"
        } else {
            "while the graph builds (it ended during the run)"
        };
        rep.add("sqlite", n, "vector, during build", &r, note);
    }
    let r = run(&db, &vs, c, SearchMode::Vector, queries);
    rep.add("sqlite", n, "vector indexed", &r, "HNSW M=16 efC=100 ef=96");
    let r = run(&db, &vs, c, SearchMode::Keyword, queries);
    rep.add("sqlite", n, "keyword", &r, "FTS5 BM25");
    let r = run(&db, &vs, c, SearchMode::Hybrid, queries);
    rep.add("sqlite", n, "hybrid", &r, "graph + FTS5, RRF");
    db.set_index_tuning(IndexTuning {
        params: IndexParams {
            hnsw_threshold: usize::MAX,
            ..defaults.params
        },
        ..defaults
    });
    let r = run(&db, &vs, c, SearchMode::Vector, queries);
    rep.add("sqlite", n, "vector flat", &r, "exact SIMD scan");
}

/// PostgreSQL options: stores above `maintained_max` chunks are loaded with their HNSW
/// index dropped and rebuilt after (pgvector's bulk build), since inserting through a
/// maintained index runs at ~100-200 chunks/s here; exact-scan runs use at most
/// `flat_queries` queries (each scans the whole store).
struct PgOpts {
    maintained_max: usize,
    flat_queries: usize,
}

fn pg_bench(
    url: &str,
    n: usize,
    c: &Corpus,
    queries: usize,
    o: &PgOpts,
    rep: &mut Report,
    extra: &mut Vec<Value>,
) {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let name = format!("store_bench_{}_{n}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let base = url.rsplit_once('/').unwrap().0;
    let db_url = format!("{base}/{name}");
    {
        let db = PgStore::connect(&db_url).unwrap();
        let vs = new_store(&db);
        let mut sql = postgres::Client::connect(&db_url, postgres::NoTls).unwrap();
        // The store's partial HNSW index, as the backend created it.
        let (index, indexdef): (String, String) = {
            let r = sql
                .query_one(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chunks' AND indexname LIKE 'chunks_hnsw_%'",
                    &[],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        let bulk = n > o.maintained_max;
        if bulk {
            sql.batch_execute(&format!("DROP INDEX {index}")).unwrap();
        }
        let load_s = load(&db, &vs, c);
        let build_s = bulk.then(|| {
            let t = Instant::now();
            sql.batch_execute(&format!("SET maintenance_work_mem = '1GB'; {indexdef}"))
                .unwrap();
            t.elapsed().as_secs_f64()
        });
        sql.batch_execute("VACUUM ANALYZE chunks").unwrap();
        let size: i64 = sql
            .query_one("SELECT pg_total_relation_size('chunks')", &[])
            .unwrap()
            .get(0);
        let how = if bulk {
            "loaded without the HNSW index, then CREATE INDEX (pgvector bulk build, maintenance_work_mem 1GB)"
        } else {
            "HNSW index maintained by every insert"
        };
        extra.push(json!({"backend": "postgres", "n": n, "load_s": load_s, "chunks_per_s": n as f64 / load_s,
            "graph_build_s": build_s, "chunks_bytes": size,
            "note": format!("{how}; chunks table + indexes {} MiB", size >> 20)}));
        let plan = |sql: &mut postgres::Client| -> String {
            // The backend's own query text (see postgres/vectors/search.rs).
            let q = &c.queries[..DIM];
            let v = format!(
                "[{}]",
                q.iter()
                    .map(|x| format!("{x:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut tx = sql.transaction().unwrap();
            tx.batch_execute("SET LOCAL hnsw.ef_search = 40").unwrap();
            let rows = tx
                .query(
                    &format!(
                        "EXPLAIN SELECT id, 1 - (embedding::vector({DIM}) <=> $2::text::vector({DIM})) FROM chunks
                         WHERE vector_store_id = $1 AND ($3::text[] IS NULL OR file_id = ANY($3))
                         ORDER BY embedding::vector({DIM}) <=> $2::text::vector({DIM}) LIMIT $4"
                    ),
                    &[&vs, &v, &None::<Vec<String>>, &(K as i64)],
                )
                .unwrap();
            tx.commit().unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .find(|l| l.contains("Scan"))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        eprintln!("postgres {n}: plan (indexed): {}", plan(&mut sql));
        let r = run(&db, &vs, c, SearchMode::Vector, queries);
        rep.add(
            "postgres",
            n,
            "vector indexed",
            &r,
            "pgvector HNSW, ef_search 100",
        );
        let r = run(&db, &vs, c, SearchMode::Keyword, queries);
        rep.add("postgres", n, "keyword", &r, "ts_rank_cd, GIN");
        let r = run(&db, &vs, c, SearchMode::Hybrid, queries);
        rep.add("postgres", n, "hybrid", &r, "HNSW + full text, RRF");
        drop(db);
        sql.batch_execute(&format!("ALTER DATABASE {name} SET enable_indexscan = off"))
            .unwrap();
        let mut sql = postgres::Client::connect(&db_url, postgres::NoTls).unwrap();
        eprintln!(
            "postgres {n}: plan (enable_indexscan = off): {}",
            plan(&mut sql)
        );
        let db = PgStore::connect(&db_url).unwrap();
        let fq = queries.min(o.flat_queries);
        let r = run(&db, &vs, c, SearchMode::Vector, fq);
        rep.add(
            "postgres",
            n,
            "vector flat",
            &r,
            &format!("exact scan (enable_indexscan = off), {fq} queries"),
        );
    }
    // Sessions of the pools are closed by now (their drop closes them on a thread: give
    // it a moment, then force).
    std::thread::sleep(Duration::from_millis(500));
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let queries: usize = arg("--queries").and_then(|q| q.parse().ok()).unwrap_or(300);
    let pg = arg("--pg").or_else(|| std::env::var("FERROLLAMA_PG_URL").ok());
    let backends = arg("--backends").unwrap_or_else(|| "sqlite,postgres".into());
    let want = |b: &str| backends.split(',').any(|x| x.trim() == b);
    println!(
        "ISA {}; {queries} queries, k={K}, dim={DIM}; files of {PER_FILE} chunks, ~{WORDS_PER_CHUNK} words each",
        ferrollama_tensor::cpu_features()
    );
    if want("postgres") && pg.is_none() {
        println!("(no --pg URL / FERROLLAMA_PG_URL: PostgreSQL skipped)");
    }
    println!("| backend | n | mode | p50 ms | p99 ms | mean ms | recall@10 | note |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut rep = Report { rows: Vec::new() };
    let mut extra = Vec::new();
    for &n in &sizes {
        let c = corpus(n, queries);
        if want("sqlite") {
            sqlite_bench(n, &c, queries, &mut rep, &mut extra);
        }
        if let (true, Some(url)) = (want("postgres"), &pg) {
            let o = PgOpts {
                maintained_max: arg("--pg-maintained-max")
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(20_000),
                flat_queries: arg("--pg-flat-queries")
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(60),
            };
            pg_bench(url, n, &c, queries, &o, &mut rep, &mut extra);
        }
    }
    println!();
    println!("| backend | n | load s | chunks/s | cold first search ms | graph build s | note |");
    println!("|---|---|---|---|---|---|---|");
    for e in &extra {
        let f = |k: &str| e.get(k).and_then(Value::as_f64);
        let opt = |x: Option<f64>, d: usize| x.map_or("-".to_string(), |x| format!("{x:.d$}"));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            e["backend"].as_str().unwrap_or(""),
            e["n"],
            opt(f("load_s"), 1),
            opt(f("chunks_per_s"), 0),
            opt(f("cold_first_search_ms"), 0),
            opt(f("graph_build_s"), 1),
            e["note"].as_str().unwrap_or("")
        );
    }
    let out =
        json!({"queries": queries, "k": K, "dim": DIM, "searches": rep.rows, "loading": extra});
    let text = serde_json::to_string_pretty(&out).unwrap();
    match arg("--json") {
        Some(path) => std::fs::write(&path, text + "\n").unwrap(),
        None => println!("{text}"),
    }
}
