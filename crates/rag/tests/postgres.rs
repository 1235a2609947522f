//! Both storage backends through the same test bodies: SQLite (in memory) and PostgreSQL +
//! pgvector (the database at `$FERROLLAMA_PG_URL`, which `scripts/test` starts with
//! `scripts/pg start`; each test gets a fresh `CREATE DATABASE`). Without the variable the
//! PostgreSQL variants print a note and pass; the test command always sets it.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::Arc;

use ferrollama_rag::vector_stores::{
    Chunking, CompareOp, FileStatus, Filter, LastError, NewChunk, SearchMode,
};
use ferrollama_rag::{
    FileQuery, ListQuery, NewFile, NewStoreFile, NewVectorStore, Order, PgStore, Purpose,
    SearchQuery, SqliteStore, Store, StoreError, VectorDb, VectorStoreUpdate,
};
use serde_json::{Map, Value, json};

struct Backend {
    store: Arc<dyn Store>,
    vectors: Arc<dyn VectorDb>,
}

fn sqlite() -> Backend {
    let s = SqliteStore::open_in_memory().unwrap();
    Backend {
        store: Arc::new(s.clone()),
        vectors: Arc::new(s),
    }
}

/// A URL of a fresh, empty database on the test server; `None` without the server.
fn fresh_pg_url() -> Option<String> {
    let Ok(url) = std::env::var("FERROLLAMA_PG_URL") else {
        eprintln!("note: FERROLLAMA_PG_URL is not set; skipping the PostgreSQL variant");
        return None;
    };
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let db = format!("test_{}_{nanos}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let base = url.rsplit_once('/').unwrap().0;
    Some(format!("{base}/{db}"))
}

fn pg_backend() -> Option<Backend> {
    let url = fresh_pg_url()?;
    let s = PgStore::connect(&url).unwrap();
    Some(Backend {
        store: Arc::new(s.clone()),
        vectors: Arc::new(s),
    })
}

/// `name_sqlite` and `name_postgres` tests running the body `name(Backend)`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[test] fn $name() { super::$name(super::sqlite()) } )* }
        mod on_postgres { $( #[test] fn $name() { if let Some(b) = super::pg_backend() { super::$name(b) } } )* }
    };
}

both!(
    files_crud_and_paging,
    vector_stores_crud_and_paging,
    complete_file_is_atomic_and_once,
    search_modes_filters_threshold,
    dimension_mismatch,
    in_progress_and_failed,
);

fn put(store: &dyn Store, name: &str, bytes: &[u8]) -> ferrollama_rag::FileObject {
    let mut up = store.begin_upload().unwrap();
    let (a, b) = bytes.split_at(bytes.len() / 2);
    up.write_all(a).unwrap();
    up.write_all(b).unwrap();
    up.commit(NewFile {
        filename: name.into(),
        purpose: Purpose::Assistants,
        expires_after: None,
    })
    .unwrap()
}

fn files_crud_and_paging(b: Backend) {
    let s = &*b.store;
    // Larger than one PostgreSQL blob part (1 MiB), to cross a part boundary.
    let big: Vec<u8> = (0..(3 << 20) / 2).map(|i| (i % 251) as u8).collect();
    let f1 = put(s, "big.bin", &big);
    let f2 = put(s, "b.txt", b"two");
    let f3 = put(s, "c.txt", b"three");
    assert_eq!(f1.bytes, big.len() as u64);
    assert_eq!(s.get_file(&f1.id).unwrap(), Some(f1.clone()));
    assert_eq!(s.read_content(&f1.id).unwrap().unwrap(), big);
    assert_eq!(s.read_content(&f2.id).unwrap().unwrap(), b"two");

    // A dropped upload leaves nothing.
    let mut up = s.begin_upload().unwrap();
    up.write_all(b"never").unwrap();
    drop(up);

    let q = |after: Option<&str>, order| FileQuery {
        after: after.map(str::to_string),
        limit: 2,
        order,
        purpose: None,
    };
    let p = s.list_files(&q(None, Order::Asc)).unwrap();
    let ids: Vec<_> = p.data.iter().map(|f| f.id.clone()).collect();
    assert_eq!(ids, [f1.id.clone(), f2.id.clone()]);
    assert!(p.has_more);
    let p = s.list_files(&q(Some(&f2.id), Order::Asc)).unwrap();
    assert_eq!(p.data.len(), 1);
    assert_eq!(p.data[0].id, f3.id);
    assert!(!p.has_more);
    let p = s.list_files(&q(None, Order::Desc)).unwrap();
    assert_eq!(p.data[0].id, f3.id);
    let p = s
        .list_files(&FileQuery {
            purpose: Some(Purpose::Batch),
            ..q(None, Order::Asc)
        })
        .unwrap();
    assert!(p.data.is_empty());
    match s.list_files(&q(Some("file-nope"), Order::Asc)) {
        Err(StoreError::NotFound { kind: "file", id }) => assert_eq!(id, "file-nope"),
        other => panic!("{other:?}"),
    }

    // The reader stays whole when the file is deleted meanwhile.
    let mut content = s.open_content(&f2.id).unwrap().unwrap();
    assert!(s.delete_file(&f2.id).unwrap());
    assert!(!s.delete_file(&f2.id).unwrap());
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut content.reader, &mut got).unwrap();
    assert_eq!(got, b"two");
    assert_eq!(s.get_file(&f2.id).unwrap(), None);
    assert!(s.open_content(&f2.id).unwrap().is_none());
    assert_eq!(
        s.list_files(&FileQuery::default()).unwrap().data.len(),
        2,
        "the dropped upload and the deleted file are not listed"
    );
}

fn new_store(v: &dyn VectorDb, name: &str, dim: usize) -> String {
    v.create_vector_store(NewVectorStore {
        name: name.into(),
        metadata: Map::new(),
        expires_after: None,
        embedding_model: "test-4d".into(),
        embedding_dimension: dim,
        id: None,
    })
    .unwrap()
    .id
}

fn attach(v: &dyn VectorDb, vs: &str, file: &str, attrs: Value) {
    v.add_file(
        vs,
        NewStoreFile {
            file_id: file.into(),
            filename: format!("{file}.txt"),
            attributes: attrs.as_object().cloned().unwrap_or_default(),
            chunking: Chunking::AUTO,
        },
    )
    .unwrap();
}

fn chunk(text: &str, e: [f32; 4]) -> NewChunk {
    NewChunk {
        text: text.into(),
        tokens: text.split_whitespace().count(),
        embedding: e.to_vec(),
        metadata: Map::new(),
    }
}

fn vector_stores_crud_and_paging(b: Backend) {
    let v = &*b.vectors;
    let ids: Vec<String> = (0..3).map(|i| new_store(v, &format!("s{i}"), 4)).collect();
    let dup = v.create_vector_store(NewVectorStore {
        name: "again".into(),
        metadata: Map::new(),
        expires_after: None,
        embedding_model: "m".into(),
        embedding_dimension: 4,
        id: Some(ids[0].clone()),
    });
    assert!(matches!(dup, Err(StoreError::Invalid(m)) if m.contains("already exists")));
    let q = ListQuery {
        limit: 2,
        order: Order::Asc,
        ..ListQuery::default()
    };
    let p = v.list_vector_stores(&q).unwrap();
    assert_eq!(
        p.data.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&ids[0], &ids[1]]
    );
    assert!(p.has_more);
    let p = v
        .list_vector_stores(&ListQuery {
            after: Some(ids[1].clone()),
            ..q.clone()
        })
        .unwrap();
    assert_eq!(p.data[0].id, ids[2]);
    assert!(!p.has_more);
    let p = v
        .list_vector_stores(&ListQuery {
            before: Some(ids[0].clone()),
            order: Order::Desc,
            ..q.clone()
        })
        .unwrap();
    // `before` names the item the page ends before, in the listing's order.
    assert_eq!(
        p.data.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&ids[2], &ids[1]]
    );
    assert!(matches!(
        v.list_vector_stores(&ListQuery {
            after: Some("vs_nope".into()),
            ..q.clone()
        }),
        Err(StoreError::NotFound {
            kind: "vector store",
            ..
        })
    ));

    let mut meta = Map::new();
    meta.insert("team".into(), json!("a"));
    let u = v
        .update_vector_store(
            &ids[0],
            VectorStoreUpdate {
                name: Some("renamed".into()),
                metadata: Some(meta.clone()),
                expires_after: None,
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!((u.name.as_str(), &u.metadata), ("renamed", &meta));
    assert_eq!(
        v.update_vector_store("vs_nope", VectorStoreUpdate::default())
            .unwrap(),
        None
    );

    attach(v, &ids[0], "file-a", json!({"k": 1}));
    attach(v, &ids[0], "file-b", json!({}));
    attach(v, &ids[0], "file-a", json!({"k": 2})); // unchanged: already attached
    assert_eq!(
        v.get_store_file(&ids[0], "file-a")
            .unwrap()
            .unwrap()
            .attributes["k"],
        1
    );
    let s = v.get_vector_store(&ids[0]).unwrap().unwrap();
    assert_eq!((s.file_counts.total, s.file_counts.in_progress), (2, 2));
    let files = v
        .list_store_files(
            &ids[0],
            &ListQuery {
                limit: 1,
                order: Order::Asc,
                ..ListQuery::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(
        (files.data[0].id.as_str(), files.has_more),
        ("file-a", true)
    );
    let done = v
        .list_store_files(&ids[0], &ListQuery::default(), Some(FileStatus::Completed))
        .unwrap();
    assert!(done.data.is_empty());
    assert!(matches!(
        v.list_store_files(
            &ids[0],
            &ListQuery {
                after: Some("file-x".into()),
                ..ListQuery::default()
            },
            None
        ),
        Err(StoreError::NotFound {
            kind: "file in this vector store",
            ..
        })
    ));
    assert!(matches!(
        v.add_file(
            "vs_nope",
            NewStoreFile {
                file_id: "f".into(),
                filename: "f".into(),
                attributes: Map::new(),
                chunking: Chunking::AUTO
            }
        ),
        Err(StoreError::NotFound {
            kind: "vector store",
            ..
        })
    ));
    let mut attrs = Map::new();
    attrs.insert("lang".into(), json!("en"));
    let f = v
        .update_file_attributes(&ids[0], "file-b", attrs.clone())
        .unwrap()
        .unwrap();
    assert_eq!(f.attributes, attrs);
    assert!(v.remove_store_file(&ids[0], "file-b").unwrap());
    assert!(!v.remove_store_file(&ids[0], "file-b").unwrap());

    assert!(v.delete_vector_store(&ids[0]).unwrap());
    assert!(!v.delete_vector_store(&ids[0]).unwrap());
    assert_eq!(v.get_vector_store(&ids[0]).unwrap(), None);
    assert_eq!(v.get_store_file(&ids[0], "file-a").unwrap(), None);
}

fn complete_file_is_atomic_and_once(b: Backend) {
    let v = &*b.vectors;
    let vs = new_store(v, "s", 4);
    attach(v, &vs, "file-a", json!({}));
    // A bad vector fails the whole file: nothing written, still in_progress.
    let bad = [
        chunk("ok", [1.0, 0.0, 0.0, 0.0]),
        NewChunk {
            embedding: vec![1.0; 3],
            ..chunk("bad", [0.0; 4])
        },
    ];
    assert!(matches!(
        v.complete_file(&vs, "file-a", &bad),
        Err(StoreError::Invalid(_))
    ));
    assert!(v.file_chunks(&vs, "file-a").unwrap().is_empty());
    assert_eq!(
        v.get_store_file(&vs, "file-a").unwrap().unwrap().status,
        FileStatus::InProgress
    );

    let good = [
        chunk("first part", [1.0, 0.0, 0.0, 0.0]),
        chunk("second part", [0.0, 1.0, 0.0, 0.0]),
    ];
    assert!(v.complete_file(&vs, "file-a", &good).unwrap());
    // A second completion (another replica, a retry) writes nothing.
    assert!(!v.complete_file(&vs, "file-a", &good[..1]).unwrap());
    assert_eq!(
        v.file_chunks(&vs, "file-a").unwrap(),
        ["first part", "second part"]
    );
    let f = v.get_store_file(&vs, "file-a").unwrap().unwrap();
    assert_eq!(f.status, FileStatus::Completed);
    assert_eq!(f.usage_bytes, 21);
    assert!(!v.complete_file(&vs, "file-none", &good).unwrap());
    assert!(!v.complete_file("vs_none", "file-a", &good).unwrap());

    // insert_chunks: one completed entry, or nothing.
    v.insert_chunks(&vs, "doc-1", "doc-1", &good).unwrap();
    assert_eq!(
        v.get_store_file(&vs, "doc-1").unwrap().unwrap().status,
        FileStatus::Completed
    );
    assert!(v.insert_chunks(&vs, "doc-2", "doc-2", &bad).is_err());
    assert_eq!(v.get_store_file(&vs, "doc-2").unwrap(), None);
    assert!(matches!(
        v.insert_chunks("vs_none", "d", "d", &good),
        Err(StoreError::NotFound { .. })
    ));
    let s = v.get_vector_store(&vs).unwrap().unwrap();
    assert_eq!((s.file_counts.completed, s.file_counts.total), (2, 2));
}

fn search(
    v: &dyn VectorDb,
    vs: &str,
    text: &str,
    e: Option<[f32; 4]>,
    mode: SearchMode,
    filter: Option<Filter>,
    threshold: f32,
) -> Vec<(String, String, f32)> {
    v.search(
        vs,
        &SearchQuery {
            text: text.into(),
            embedding: e.map(|e| e.to_vec()),
            mode,
            max_results: 3,
            filter,
            score_threshold: threshold,
        },
    )
    .unwrap()
    .into_iter()
    .map(|h| (h.file_id, h.text, h.score))
    .collect()
}

fn eq(key: &str, value: Value) -> Filter {
    Filter::Compare {
        op: CompareOp::Eq,
        key: key.into(),
        value,
    }
}

fn search_modes_filters_threshold(b: Backend) {
    let v = &*b.vectors;
    let vs = new_store(v, "s", 4);
    attach(v, &vs, "file-cats", json!({"topic": "cats", "year": 2020}));
    attach(v, &vs, "file-dogs", json!({"topic": "dogs", "year": 2024}));
    v.complete_file(
        &vs,
        "file-cats",
        &[
            chunk("cats purr and sleep", [1.0, 0.0, 0.0, 0.0]),
            chunk("kittens play", [0.8, 0.6, 0.0, 0.0]),
        ],
    )
    .unwrap();
    v.complete_file(
        &vs,
        "file-dogs",
        &[
            chunk("dogs bark loudly", [0.0, 0.0, 1.0, 0.0]),
            chunk("puppies bark and play", [0.0, 0.0, 0.6, 0.8]),
        ],
    )
    .unwrap();

    // Vector: cosine similarity, best first.
    let hits = search(
        v,
        &vs,
        "",
        Some([1.0, 0.0, 0.0, 0.0]),
        SearchMode::Vector,
        None,
        0.0,
    );
    assert_eq!(hits[0].1, "cats purr and sleep");
    assert!((hits[0].2 - 1.0).abs() < 1e-5, "{hits:?}");
    assert_eq!(hits[1].1, "kittens play");
    assert!((hits[1].2 - 0.8).abs() < 1e-5, "{hits:?}");
    // The threshold drops the orthogonal chunks (cosine 0).
    let hits = search(
        v,
        &vs,
        "",
        Some([1.0, 0.0, 0.0, 0.0]),
        SearchMode::Vector,
        None,
        0.5,
    );
    assert_eq!(hits.len(), 2);
    // Filter: only dogs.
    let hits = search(
        v,
        &vs,
        "",
        Some([1.0, 0.0, 0.0, 0.0]),
        SearchMode::Vector,
        Some(eq("topic", json!("dogs"))),
        0.0,
    );
    assert!(
        hits.iter().all(|h| h.0 == "file-dogs") && hits.len() == 2,
        "{hits:?}"
    );
    let gt = Filter::Compare {
        op: CompareOp::Gt,
        key: "year".into(),
        value: json!(2021),
    };
    let hits = search(v, &vs, "play", None, SearchMode::Keyword, Some(gt), 0.0);
    assert_eq!(
        hits.iter().map(|h| h.1.as_str()).collect::<Vec<_>>(),
        ["puppies bark and play"]
    );
    // A filter on an attribute no file has is refused.
    let r = v.search(
        &vs,
        &SearchQuery {
            text: "x".into(),
            embedding: None,
            mode: SearchMode::Keyword,
            max_results: 3,
            filter: Some(eq("color", json!("red"))),
            score_threshold: 0.0,
        },
    );
    assert!(
        matches!(&r, Err(StoreError::Invalid(m)) if m.contains("\"color\"") && m.contains("topic, year")),
        "{r:?}"
    );

    // Keyword: matching words only, scores in (0, 1), more matches first.
    let hits = search(
        v,
        &vs,
        "Bark, LOUDLY!",
        None,
        SearchMode::Keyword,
        None,
        0.0,
    );
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0].1, "dogs bark loudly");
    assert!(hits.iter().all(|h| h.2 > 0.0 && h.2 < 1.0), "{hits:?}");
    assert!(hits[0].2 > hits[1].2);
    assert!(search(v, &vs, "giraffes", None, SearchMode::Keyword, None, 0.0).is_empty());
    assert!(search(v, &vs, " ;; ", None, SearchMode::Keyword, None, 0.0).is_empty());

    // Hybrid: first in both rankings scores 1.
    let hits = search(
        v,
        &vs,
        "cats purr",
        Some([1.0, 0.0, 0.0, 0.0]),
        SearchMode::Hybrid,
        None,
        0.0,
    );
    assert_eq!(hits[0].1, "cats purr and sleep");
    assert!((hits[0].2 - 1.0).abs() < 1e-6, "{hits:?}");
    assert!(hits[1].2 < 1.0);

    assert!(matches!(
        v.search(
            "vs_nope",
            &SearchQuery {
                text: "x".into(),
                embedding: None,
                mode: SearchMode::Keyword,
                max_results: 3,
                filter: None,
                score_threshold: 0.0
            }
        ),
        Err(StoreError::NotFound {
            kind: "vector store",
            ..
        })
    ));
    // Removing a file removes it from search.
    assert!(v.remove_store_file(&vs, "file-cats").unwrap());
    let hits = search(
        v,
        &vs,
        "",
        Some([1.0, 0.0, 0.0, 0.0]),
        SearchMode::Vector,
        None,
        0.0,
    );
    assert!(hits.iter().all(|h| h.0 == "file-dogs"), "{hits:?}");
}

fn dimension_mismatch(b: Backend) {
    let v = &*b.vectors;
    let vs = new_store(v, "s", 4);
    attach(v, &vs, "file-a", json!({}));
    let r = v.complete_file(
        &vs,
        "file-a",
        &[NewChunk {
            embedding: vec![0.5; 5],
            ..chunk("x", [0.0; 4])
        }],
    );
    assert!(
        matches!(&r, Err(StoreError::Invalid(m)) if m == "embedding of dimension 5 for a vector store of dimension 4"),
        "{r:?}"
    );
    let r = v.search(
        &vs,
        &SearchQuery {
            text: "x".into(),
            embedding: Some(vec![1.0; 3]),
            mode: SearchMode::Vector,
            max_results: 3,
            filter: None,
            score_threshold: 0.0,
        },
    );
    assert!(
        matches!(&r, Err(StoreError::Invalid(m)) if m.starts_with("the query embedding has 3 dimensions")),
        "{r:?}"
    );
    let r = v.search(
        &vs,
        &SearchQuery {
            text: "x".into(),
            embedding: None,
            mode: SearchMode::Hybrid,
            max_results: 3,
            filter: None,
            score_threshold: 0.0,
        },
    );
    assert!(
        matches!(&r, Err(StoreError::Invalid(m)) if m.contains("needs the query's embedding")),
        "{r:?}"
    );
    // Stores of different dimensions live side by side.
    let vs2 = new_store(v, "wide", 6);
    v.insert_chunks(
        &vs2,
        "d",
        "d",
        &[NewChunk {
            embedding: vec![0.1; 6],
            ..chunk("six", [0.0; 4])
        }],
    )
    .unwrap();
    v.insert_chunks(&vs, "d", "d", &[chunk("four", [0.1; 4])])
        .unwrap();
    let h = v
        .search(
            &vs2,
            &SearchQuery {
                text: String::new(),
                embedding: Some(vec![0.1; 6]),
                mode: SearchMode::Vector,
                max_results: 3,
                filter: None,
                score_threshold: 0.0,
            },
        )
        .unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].text, "six");
}

fn in_progress_and_failed(b: Backend) {
    let v = &*b.vectors;
    let vs = new_store(v, "s", 4);
    for f in ["file-1", "file-2", "file-3"] {
        attach(v, &vs, f, json!({}));
    }
    v.complete_file(&vs, "file-2", &[chunk("x", [1.0, 0.0, 0.0, 0.0])])
        .unwrap();
    let err = LastError {
        code: "unsupported_file".into(),
        message: "not text".into(),
    };
    v.fail_file(&vs, "file-3", err.clone()).unwrap();
    // Failing a completed file changes nothing.
    v.fail_file(&vs, "file-2", err.clone()).unwrap();
    assert_eq!(
        v.in_progress_files().unwrap(),
        [(vs.clone(), "file-1".to_string())]
    );
    let f3 = v.get_store_file(&vs, "file-3").unwrap().unwrap();
    assert_eq!((f3.status, f3.last_error), (FileStatus::Failed, Some(err)));
    assert_eq!(
        v.get_store_file(&vs, "file-2").unwrap().unwrap().status,
        FileStatus::Completed
    );
    let failed = v
        .list_store_files(&vs, &ListQuery::default(), Some(FileStatus::Failed))
        .unwrap();
    assert_eq!(failed.data.len(), 1);
    let s = v.get_vector_store(&vs).unwrap().unwrap();
    assert_eq!(
        (
            s.file_counts.in_progress,
            s.file_counts.completed,
            s.file_counts.failed
        ),
        (1, 1, 1)
    );
}

/// The multi-replica property: two stores on one database (as two `serve` replicas) see
/// each other's files, vectors and completions at once; several replicas connecting to a
/// fresh database together migrate it once.
#[test]
fn postgres_replicas_share_one_database() {
    let Some(url) = fresh_pg_url() else { return };
    let replicas: Vec<PgStore> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PgStore::connect(&url).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (a, b) = (&replicas[0], &replicas[1]);
    let f = put(a, "shared.txt", b"bytes on replica a");
    assert_eq!(
        b.read_content(&f.id).unwrap().unwrap(),
        b"bytes on replica a"
    );
    let vs = new_store(a, "shared", 4);
    attach(b, &vs, &f.id, json!({}));
    assert_eq!(a.in_progress_files().unwrap(), [(vs.clone(), f.id.clone())]);
    // Both replicas resumed the file; only one completion commits.
    let c = [chunk("shared chunk", [0.0, 1.0, 0.0, 0.0])];
    let done: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = replicas
            .iter()
            .map(|r| s.spawn(|| r.complete_file(&vs, &f.id, &c).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(done.iter().filter(|d| **d).count(), 1, "{done:?}");
    assert_eq!(b.file_chunks(&vs, &f.id).unwrap(), ["shared chunk"]);
    let hits = search(
        a,
        &vs,
        "",
        Some([0.0, 1.0, 0.0, 0.0]),
        SearchMode::Vector,
        None,
        0.0,
    );
    assert_eq!(hits.len(), 1);
    assert!(b.delete_file(&f.id).unwrap());
    assert_eq!(a.get_file(&f.id).unwrap(), None);
}

/// A schema from a newer build is refused, not overwritten.
#[test]
fn postgres_refuses_a_newer_schema() {
    let Some(url) = fresh_pg_url() else { return };
    drop(PgStore::connect(&url).unwrap());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("UPDATE schema_version SET version = 999")
        .unwrap();
    match PgStore::connect(&url) {
        Err(StoreError::TooNew { found: 999, .. }) => {}
        other => panic!("{other:?}"),
    }
}
