//! The SQLite backend's HNSW graph is built in the background: searches never wait for
//! it, answer exactly until it is there, see writes made during a build at once, and
//! survive a store deleted mid-build or a build that panics.
//!
//! Deterministic: the threshold is lowered to a few hundred vectors, and the test hooks
//! hold a build at a gate after its snapshot (`hold_index_builds`,
//! `wait_index_build_held`), make one panic (`fail_next_index_builds`), and wait for
//! builds to end (`wait_for_index`, `wait_index_builds`); no sleeps, no timing races.

#![allow(clippy::unwrap_used)]

#[path = "support/synth.rs"]
mod synth;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use ferrollama_rag::sqlite::IndexTuning;
use ferrollama_rag::vector_stores::{Chunking, CompareOp, Filter, NewChunk, SearchMode};
use ferrollama_rag::{
    IndexParams, NewStoreFile, NewVectorStore, SearchQuery, SqliteStore, VectorDb,
};
use serde_json::{Map, json};
use synth::{Clustered, recall};

/// Narrow vectors: debug builds link graphs slowly at 384.
const DIM: usize = 64;
const THRESHOLD: usize = 300;
const PER_FILE: usize = 50;
/// Generous: only reached if something hangs.
const LONG: Duration = Duration::from_secs(120);

fn tuning(min_stale: usize, retry_after: Duration) -> IndexTuning {
    IndexTuning {
        params: IndexParams {
            hnsw_threshold: THRESHOLD,
            ..IndexParams::default()
        },
        stale_fraction: 0.0,
        min_stale,
        retry_after,
    }
}

/// A store and the test's own copy of its live vectors (chunk text -> vector).
struct Fixture {
    db: SqliteStore,
    vs: String,
    live: HashMap<String, Vec<f32>>,
    model: Clustered,
}

impl Fixture {
    fn new(files: usize) -> Fixture {
        let db = SqliteStore::open_in_memory().unwrap();
        db.set_index_tuning(tuning(0, Duration::from_secs(3600)));
        let vs = db
            .create_vector_store(NewVectorStore {
                name: "t".into(),
                metadata: Map::new(),
                expires_after: None,
                embedding_model: "synthetic".into(),
                embedding_dimension: DIM,
                id: None,
            })
            .unwrap()
            .id;
        let mut f = Fixture {
            db,
            vs,
            live: HashMap::new(),
            model: Clustered::new(DIM, 12, 7),
        };
        for i in 0..files {
            let data = f.model.sample(PER_FILE, 100 + i as u64);
            f.add(&format!("f{i}"), &data);
        }
        f
    }

    /// Completes file `name` with one chunk per row of `data` (texts `name-c<j>`), as
    /// ingestion does: attach, then all chunks at once.
    fn add(&mut self, name: &str, data: &[f32]) {
        let mut attributes = Map::new();
        attributes.insert("name".into(), json!(name));
        self.db
            .add_file(
                &self.vs,
                NewStoreFile {
                    file_id: name.into(),
                    filename: format!("{name}.txt"),
                    attributes,
                    chunking: Chunking::AUTO,
                },
            )
            .unwrap();
        let chunks: Vec<NewChunk> = data
            .chunks_exact(DIM)
            .enumerate()
            .map(|(j, v)| NewChunk {
                text: format!("{name}-c{j}"),
                tokens: 1,
                embedding: v.to_vec(),
                metadata: Map::new(),
            })
            .collect();
        assert!(self.db.complete_file(&self.vs, name, &chunks).unwrap());
        for c in chunks {
            self.live.insert(c.text, c.embedding);
        }
    }

    fn remove(&mut self, name: &str) {
        assert!(self.db.remove_store_file(&self.vs, name).unwrap());
        let prefix = format!("{name}-c");
        self.live.retain(|t, _| !t.starts_with(&prefix));
    }

    fn search(&self, q: &[f32], k: usize, filter: Option<Filter>) -> Vec<String> {
        self.db
            .search(
                &self.vs,
                &SearchQuery {
                    text: String::new(),
                    embedding: Some(q.to_vec()),
                    mode: SearchMode::Vector,
                    max_results: k,
                    filter,
                    score_threshold: f32::NEG_INFINITY,
                },
            )
            .unwrap()
            .into_iter()
            .map(|h| h.text)
            .collect()
    }

    /// The exact top k (f64 cosines of the unit vectors) among live chunks whose text
    /// starts with one of `files` (all when empty).
    fn exact(&self, q: &[f32], k: usize, files: &[&str]) -> Vec<String> {
        let mut all: Vec<(f64, &String)> = self
            .live
            .iter()
            .filter(|(t, _)| {
                files.is_empty() || files.iter().any(|f| t.starts_with(&format!("{f}-c")))
            })
            .map(|(t, v)| (q.iter().zip(v).map(|(a, b)| *a as f64 * *b as f64).sum(), t))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        all.into_iter().take(k).map(|(_, t)| t.clone()).collect()
    }

    fn queries(&self, n: usize) -> Vec<Vec<f32>> {
        self.model
            .sample(n, 999)
            .chunks_exact(DIM)
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// recall@10 of the store's searches against the exact answers.
    fn recall(&self) -> f64 {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for q in self.queries(20) {
            let ids = |v: Vec<String>| v.into_iter().map(|t| self.key(&t)).collect::<Vec<_>>();
            got.push(ids(self.search(&q, 10, None)));
            want.push(ids(self.exact(&q, 10, &[])));
        }
        recall(&got, &want)
    }

    /// A number per chunk text, for `synth::recall`.
    fn key(&self, text: &str) -> u64 {
        let mut h: u64 = 1469598103934665603;
        for b in text.bytes() {
            h = (h ^ b as u64).wrapping_mul(1099511628211);
        }
        h
    }

    fn assert_exact(&self) {
        for q in self.queries(5) {
            assert_eq!(self.search(&q, 10, None), self.exact(&q, 10, &[]));
        }
    }
}

fn only(name: &str) -> Filter {
    Filter::Compare {
        op: CompareOp::Eq,
        key: "name".into(),
        value: json!(name),
    }
}

/// The bug: the first search of a store past the threshold linked the whole HNSW graph
/// (~40 s at 100K vectors) before answering. Now it answers at once by the exact scan,
/// while the build, held at its gate here, has not even started linking.
#[test]
fn first_search_does_not_wait_for_index_build() {
    let f = Fixture::new(8); // 400 vectors, threshold 300
    f.db.hold_index_builds(true);
    let q = f.queries(1).remove(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(f.search(&q, 10, None)).unwrap());
        // A search that waited for the held build would never send.
        let hits = rx
            .recv_timeout(LONG)
            .expect("the first search waited for the build");
        assert_eq!(hits, f.exact(&q, 10, &[]));
    });
    assert!(f.db.wait_index_build_held(LONG));
    let st = f.db.index_status(&f.vs).unwrap();
    assert!(st.building, "{st:?}");
    assert_eq!((st.vectors, st.graph, st.pending), (400, 0, 400));
    assert!(!st.graph_searched);
    f.assert_exact();

    f.db.hold_index_builds(false);
    let st = f.db.wait_for_index(&f.vs, LONG).unwrap().unwrap();
    assert_eq!(
        (st.vectors, st.graph, st.pending, st.dead),
        (400, 400, 0, 0)
    );
    assert!(st.graph_searched && !st.building, "{st:?}");
    assert_eq!(st.builds, 1);
    let r = f.recall();
    assert!(r >= 0.95, "recall@10 {r}");
}

/// Files completed or removed while a graph is linked are searched correctly at once
/// (the new ones by the exact scan beside the graph), and kept correct by the swap.
#[test]
fn writes_during_a_build_are_searched_at_once() {
    let mut f = Fixture::new(8);
    // Builds only when 1000 vectors changed after the first: the state after the swap
    // stays observable.
    f.db.set_index_tuning(tuning(1000, Duration::from_secs(3600)));
    f.db.hold_index_builds(true);
    let q = f.queries(1).remove(0);
    f.search(&q, 10, None); // starts the build
    assert!(f.db.wait_index_build_held(LONG));

    // After the snapshot: a file whose chunk is the query itself, and a file removed.
    let mut fresh = q.clone();
    fresh.extend(f.model.sample(PER_FILE - 1, 555));
    f.add("new", &fresh);
    let gone = f.live["f0-c0"].clone();
    f.remove("f0");
    // Through the graph the answers are approximate: 9 of the exact 10 at least.
    let close = |got: &[String], want: &[String]| {
        let hit = want.iter().filter(|t| got.contains(t)).count();
        assert!(hit * 10 >= want.len() * 9, "{got:?} vs {want:?}");
    };
    let check = |f: &Fixture| {
        assert_eq!(f.search(&q, 1, None), ["new-c0"]);
        let hits = f.search(&gone, 10, None);
        assert!(hits.iter().all(|t| !t.starts_with("f0-")), "{hits:?}");
        close(&hits, &f.exact(&gone, 10, &[]));
        let hits = f.search(&q, 10, Some(only("f3")));
        assert!(hits.iter().all(|t| t.starts_with("f3-")), "{hits:?}");
        close(&hits, &f.exact(&q, 10, &["f3"]));
    };
    check(&f);

    f.db.hold_index_builds(false);
    let st = f.db.wait_for_index(&f.vs, LONG).unwrap().unwrap();
    // The graph holds the 400 of the snapshot, f0's 50 of them dead; "new" is pending.
    assert_eq!(
        (st.vectors, st.graph, st.pending, st.dead),
        (400, 350, 50, 50),
        "{st:?}"
    );
    assert!(st.graph_searched);
    check(&f);

    // Now stale enough for an extension: everything linked, nothing dead.
    f.db.set_index_tuning(tuning(0, Duration::from_secs(3600)));
    let st = f.db.wait_for_index(&f.vs, LONG).unwrap().unwrap();
    assert_eq!(
        (st.vectors, st.graph, st.pending, st.dead),
        (400, 400, 0, 0)
    );
    assert_eq!(st.builds, 2);
    check(&f);
    let r = f.recall();
    assert!(r >= 0.95, "recall@10 {r}");
}

#[test]
fn deleting_a_store_while_its_graph_builds() {
    let f = Fixture::new(8);
    f.db.hold_index_builds(true);
    let q = f.queries(1).remove(0);
    f.search(&q, 10, None);
    assert!(f.db.wait_index_build_held(LONG));
    assert!(f.db.delete_vector_store(&f.vs).unwrap());
    // The held build is woken by the cancellation and ends without swapping anything in.
    assert!(f.db.wait_index_builds(LONG));
    assert!(f.db.index_status(&f.vs).is_none());

    // A new store under the same id starts from scratch.
    f.db.hold_index_builds(false);
    f.db.create_vector_store(NewVectorStore {
        name: "again".into(),
        metadata: Map::new(),
        expires_after: None,
        embedding_model: "synthetic".into(),
        embedding_dimension: DIM,
        id: Some(f.vs.clone()),
    })
    .unwrap();
    let mut g = Fixture {
        db: f.db.clone(),
        vs: f.vs.clone(),
        live: HashMap::new(),
        model: Clustered::new(DIM, 12, 7),
    };
    let data = g.model.sample(10, 4242);
    g.add("small", &data);
    assert_eq!(g.search(&q, 10, None), g.exact(&q, 10, &[]));
    let st = g.db.index_status(&g.vs).unwrap();
    assert_eq!((st.vectors, st.builds, st.building), (10, 0, false));
}

#[test]
fn a_failed_build_does_not_poison_the_store() {
    let mut f = Fixture::new(8);
    f.db.fail_next_index_builds(1);
    let q = f.queries(1).remove(0);
    assert_eq!(f.search(&q, 10, None), f.exact(&q, 10, &[]));
    assert!(f.db.wait_index_builds(LONG));
    let st = f.db.index_status(&f.vs).unwrap();
    assert_eq!((st.failures, st.builds, st.graph), (1, 0, 0), "{st:?}");
    assert!(
        st.last_error.as_deref().unwrap().contains("injected"),
        "{st:?}"
    );
    assert!(!st.building);

    // Searches and writes go on; no retry before `retry_after` (an hour here).
    f.assert_exact();
    let data = f.model.sample(PER_FILE, 77);
    f.add("later", &data);
    f.assert_exact();
    assert!(f.db.wait_index_builds(LONG));
    assert_eq!(f.db.index_status(&f.vs).unwrap().builds, 0);

    // Once the retry is due, the next build succeeds.
    f.db.set_index_tuning(tuning(0, Duration::ZERO));
    let st = f.db.wait_for_index(&f.vs, LONG).unwrap().unwrap();
    assert_eq!(
        (st.vectors, st.graph, st.failures, st.builds),
        (450, 450, 1, 1)
    );
    let r = f.recall();
    assert!(r >= 0.95, "recall@10 {r}");
}

/// The graph is not persisted: a reopened store answers its first search exactly and
/// rebuilds the graph in the background.
#[test]
fn a_reopened_store_answers_while_its_graph_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fixture::new(0);
    f.db = SqliteStore::open(dir.path()).unwrap();
    f.db.set_index_tuning(tuning(0, Duration::from_secs(3600)));
    f.vs =
        f.db.create_vector_store(NewVectorStore {
            name: "disk".into(),
            metadata: Map::new(),
            expires_after: None,
            embedding_model: "synthetic".into(),
            embedding_dimension: DIM,
            id: None,
        })
        .unwrap()
        .id;
    for i in 0..7 {
        let data = f.model.sample(PER_FILE, 300 + i);
        f.add(&format!("d{i}"), &data);
    }
    assert_eq!(
        f.db.wait_for_index(&f.vs, LONG).unwrap().unwrap().graph,
        350
    );
    drop(std::mem::replace(
        &mut f.db,
        SqliteStore::open_in_memory().unwrap(),
    ));

    f.db = SqliteStore::open(dir.path()).unwrap();
    f.db.set_index_tuning(tuning(0, Duration::from_secs(3600)));
    f.db.hold_index_builds(true);
    f.assert_exact();
    assert!(f.db.wait_index_build_held(LONG));
    assert_eq!(f.db.index_status(&f.vs).unwrap().graph, 0);
    f.db.hold_index_builds(false);
    assert_eq!(
        f.db.wait_for_index(&f.vs, LONG).unwrap().unwrap().graph,
        350
    );
}
