//! Tests of the agent database (`ferrollama_agents::db`): agents/sessions/turns with their
//! cascades, persistence across reopening a file, OpenAI-style cursor pagination, retention,
//! the errors for foreign or too-new files, and use from several threads.

// Helpers outside #[test] fns unwrap too; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrollama_agents::db::{Db, ListQuery, Order, Page, ResponseRow, SCHEMA_VERSION};
use ferrollama_agents::error::DbError;
use serde_json::{Value, json};

/// A fresh folder under the system temp dir, removed on drop (no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferrollama-agentdb-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mem() -> Db {
    Db::open_in_memory().unwrap()
}

fn ids<T>(page: &Page<T>, id: impl Fn(&T) -> String) -> Vec<String> {
    page.data.iter().map(id).collect()
}

#[test]
fn db_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Db>();
}

#[test]
fn agents_crud_and_cascade() {
    let db = mem();
    let cfg = json!({"model": "llama3.1-8b", "instructions": "be brief", "tools": []});
    db.create_agent("a1", &cfg, "2025-01-01T00:00:00Z").unwrap();
    db.create_agent("a2", &json!({"model": "m2"}), "2025-01-02T00:00:00Z")
        .unwrap();
    assert!(matches!(
        db.create_agent("a1", &cfg, "x"),
        Err(DbError::AlreadyExists { kind: "agent", .. })
    ));

    let a1 = db.get_agent("a1").unwrap().unwrap();
    assert_eq!(a1.agent_id, "a1");
    assert_eq!(a1.config, cfg);
    assert_eq!(a1.created_at, "2025-01-01T00:00:00Z");
    assert!(db.get_agent("nope").unwrap().is_none());
    let all: Vec<String> = db
        .list_agents()
        .unwrap()
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    assert_eq!(all, ["a1", "a2"]);

    db.create_session("a1", "s1", "first", "t1").unwrap();
    db.create_session("a1", "s2", "second", "t2").unwrap();
    db.create_session("a2", "s3", "other", "t3").unwrap();
    let s1 = db.get_session("a1", "s1").unwrap().unwrap();
    assert_eq!(
        (
            s1.session_id.as_str(),
            s1.agent_id.as_str(),
            s1.name.as_str()
        ),
        ("s1", "a1", "first")
    );
    // A session is only found under its own agent.
    assert!(db.get_session("a2", "s1").unwrap().is_none());
    let names: Vec<String> = db
        .list_sessions("a1")
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(names, ["s1", "s2"]);

    db.put_turn("s1", "t1", "complete", &json!({"turn_id": "t1"}), "c1")
        .unwrap();
    db.put_turn("s2", "t2", "complete", &json!({"turn_id": "t2"}), "c2")
        .unwrap();
    db.put_session_state("s1", &json!({"messages": [1, 2]}))
        .unwrap();
    db.put_turn("s3", "t3", "complete", &json!({}), "c3")
        .unwrap();

    // Deleting a session removes its turns only.
    assert!(db.delete_session("a1", "s2").unwrap());
    assert!(!db.delete_session("a1", "s2").unwrap());
    assert!(db.list_turns("s2").unwrap().is_empty());
    assert_eq!(db.list_turns("s1").unwrap().len(), 1);

    // Deleting an agent removes its sessions, their turns and state; other agents stay.
    assert!(db.delete_agent("a1").unwrap());
    assert!(!db.delete_agent("a1").unwrap());
    assert!(db.get_agent("a1").unwrap().is_none());
    assert!(db.list_sessions("a1").unwrap().is_empty());
    assert!(db.get_session("a1", "s1").unwrap().is_none());
    assert!(db.list_turns("s1").unwrap().is_empty());
    assert!(db.get_turn("s1", "t1").unwrap().is_none());
    assert!(db.get_session_state("s1").unwrap().is_none());
    assert_eq!(db.list_sessions("a2").unwrap().len(), 1);
    assert_eq!(db.list_turns("s3").unwrap().len(), 1);
    // The session id is free again once its agent is gone.
    db.create_session("a2", "s1", "reused", "t4").unwrap();
}

#[test]
fn session_for_missing_agent_fails() {
    let db = mem();
    match db.create_session("ghost", "s1", "n", "t") {
        Err(DbError::NotFound { kind, id }) => assert_eq!((kind, id.as_str()), ("agent", "ghost")),
        other => panic!("expected NotFound(agent), got {other:?}"),
    }
    db.create_agent("a", &json!({}), "t").unwrap();
    db.create_session("a", "s1", "n", "t").unwrap();
    assert!(matches!(
        db.create_session("a", "s1", "n", "t"),
        Err(DbError::AlreadyExists {
            kind: "session",
            ..
        })
    ));
    // Turns and state need an existing session.
    assert!(matches!(
        db.put_turn("ghost", "t1", "complete", &json!({}), "t"),
        Err(DbError::NotFound {
            kind: "session",
            ..
        })
    ));
    assert!(matches!(
        db.put_session_state("ghost", &json!({})),
        Err(DbError::NotFound {
            kind: "session",
            ..
        })
    ));
}

#[test]
fn put_turn_upserts_and_keeps_creation_order() {
    let db = mem();
    db.create_agent("a", &json!({}), "t").unwrap();
    db.create_session("a", "s", "n", "t").unwrap();
    db.put_turn("s", "t1", "in_progress", &json!({"steps": []}), "c1")
        .unwrap();
    db.put_turn("s", "t2", "in_progress", &json!({"steps": []}), "c2")
        .unwrap();
    // Updating the first turn must not move it behind the second, nor change created_at.
    let done = json!({"steps": [{"step_type": "inference"}], "output_message": "hi"});
    db.put_turn("s", "t1", "complete", &done, "later").unwrap();
    db.put_turn("s", "t3", "awaiting_input", &json!({}), "c3")
        .unwrap();

    let turns = db.list_turns("s").unwrap();
    let order: Vec<&str> = turns.iter().map(|t| t.turn_id.as_str()).collect();
    assert_eq!(order, ["t1", "t2", "t3"]);
    let t1 = db.get_turn("s", "t1").unwrap().unwrap();
    assert_eq!(t1.status, "complete");
    assert_eq!(t1.turn, done);
    assert_eq!(t1.created_at, "c1");
    assert_eq!(t1.session_id, "s");
    assert!(db.get_turn("s", "nope").unwrap().is_none());

    assert!(db.get_session_state("s").unwrap().is_none());
    db.put_session_state("s", &json!({"history": ["a"]}))
        .unwrap();
    db.put_session_state("s", &json!({"history": ["a", "b"]}))
        .unwrap();
    assert_eq!(
        db.get_session_state("s").unwrap(),
        Some(json!({"history": ["a", "b"]}))
    );
}

fn response(id: &str, created_at: i64, model: &str, n_items: usize) -> ResponseRow {
    ResponseRow {
        id: id.to_owned(),
        created_at,
        model: model.to_owned(),
        previous_response_id: None,
        response: json!({"id": id, "object": "response", "model": model, "output": []}),
        input_items: (0..n_items)
            .map(|i| json!({"id": format!("{id}_item{i}"), "type": "message", "role": "user", "content": i}))
            .collect(),
        messages: json!([{"role": "user", "content": "hello"}]),
    }
}

#[test]
fn persists_across_reopen() {
    let tmp = TempDir::new("reopen");
    // A missing parent folder is created.
    let path = tmp.path().join("nested").join("agents.db");
    {
        let db = Db::open(&path).unwrap();
        db.create_agent("a", &json!({"model": "m"}), "t0").unwrap();
        db.create_session("a", "s", "n", "t1").unwrap();
        db.put_turn("s", "t", "complete", &json!({"x": 1}), "t2")
            .unwrap();
        db.put_session_state("s", &json!({"k": "v"})).unwrap();
        let mut r = response("resp_1", 100, "m", 2);
        r.previous_response_id = Some("resp_0".into());
        db.put_response(&r).unwrap();
        db.put_chat_completion(
            "chatcmpl-1",
            50,
            "m",
            &json!({"id": "chatcmpl-1"}),
            &[json!({"role": "user", "content": "q"})],
        )
        .unwrap();
    }
    assert!(path.is_file());
    // WAL is a property of the file, visible to any other connection.
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let db = Db::open(&path).unwrap();
    assert_eq!(
        db.get_agent("a").unwrap().unwrap().config,
        json!({"model": "m"})
    );
    assert_eq!(db.get_session("a", "s").unwrap().unwrap().name, "n");
    assert_eq!(
        db.get_turn("s", "t").unwrap().unwrap().turn,
        json!({"x": 1})
    );
    assert_eq!(db.get_session_state("s").unwrap(), Some(json!({"k": "v"})));
    let r = db.get_response("resp_1").unwrap().unwrap();
    assert_eq!(r, {
        let mut want = response("resp_1", 100, "m", 2);
        want.previous_response_id = Some("resp_0".into());
        want
    });
    let c = db.get_chat_completion("chatcmpl-1").unwrap().unwrap();
    assert_eq!(c.created, 50);
    assert_eq!(c.input_messages, [json!({"role": "user", "content": "q"})]);
    // Foreign keys are on in a reopened connection too (they are per connection).
    assert!(db.delete_agent("a").unwrap());
    assert!(db.list_turns("s").unwrap().is_empty());
}

/// Stores 5 completions: cc0..cc4 at times 10, 20, 20, 30, 40 (a tie broken by insertion),
/// models alternating m-a / m-b.
fn five_completions(db: &Db) {
    for (i, created) in [10, 20, 20, 30, 40].into_iter().enumerate() {
        let id = format!("cc{i}");
        let model = if i % 2 == 0 { "m-a" } else { "m-b" };
        db.put_chat_completion(
            &id,
            created,
            model,
            &json!({"id": id, "object": "chat.completion"}),
            &[json!({"role": "user", "content": format!("q{i}")})],
        )
        .unwrap();
    }
}

fn q(order: Order, limit: usize, after: Option<&str>) -> ListQuery {
    ListQuery {
        after: after.map(str::to_owned),
        limit,
        order,
        ..ListQuery::default()
    }
}

#[test]
fn chat_completion_pagination() {
    let db = mem();
    five_completions(&db);
    let cc = |p: &Page<ferrollama_agents::db::ChatCompletionRow>| ids(p, |r| r.id.clone());

    // Default: newest first, limit 20.
    let all = db.list_chat_completions(&ListQuery::default()).unwrap();
    assert_eq!(cc(&all), ["cc4", "cc3", "cc2", "cc1", "cc0"]);
    assert!(!all.has_more);
    assert_eq!(
        all.data[0].input_messages,
        [json!({"role": "user", "content": "q4"})]
    );

    // Descending, limit 2, following `after` = last id.
    let p1 = db.list_chat_completions(&q(Order::Desc, 2, None)).unwrap();
    assert_eq!(cc(&p1), ["cc4", "cc3"]);
    assert!(p1.has_more);
    assert_eq!(p1.first_id.as_deref(), Some("cc4"));
    assert_eq!(p1.last_id.as_deref(), Some("cc3"));
    let p2 = db
        .list_chat_completions(&q(Order::Desc, 2, p1.last_id.as_deref()))
        .unwrap();
    assert_eq!(cc(&p2), ["cc2", "cc1"]);
    assert!(p2.has_more);
    let p3 = db
        .list_chat_completions(&q(Order::Desc, 2, p2.last_id.as_deref()))
        .unwrap();
    assert_eq!(cc(&p3), ["cc0"]);
    assert!(!p3.has_more);

    // Ascending.
    let p1 = db.list_chat_completions(&q(Order::Asc, 2, None)).unwrap();
    assert_eq!(cc(&p1), ["cc0", "cc1"]);
    assert!(p1.has_more);
    let p2 = db
        .list_chat_completions(&q(Order::Asc, 2, Some("cc1")))
        .unwrap();
    assert_eq!(cc(&p2), ["cc2", "cc3"]);
    assert!(p2.has_more);
    let p3 = db
        .list_chat_completions(&q(Order::Asc, 2, Some("cc3")))
        .unwrap();
    assert_eq!(cc(&p3), ["cc4"]);
    assert!(!p3.has_more);
    // The last page exactly full: nothing more.
    let p = db
        .list_chat_completions(&q(Order::Asc, 2, Some("cc2")))
        .unwrap();
    assert_eq!(cc(&p), ["cc3", "cc4"]);
    assert!(!p.has_more);
    let empty = db
        .list_chat_completions(&q(Order::Asc, 2, Some("cc4")))
        .unwrap();
    assert!(empty.data.is_empty() && !empty.has_more && empty.first_id.is_none());

    // `before` alone: the page just before the cursor, in the requested order.
    let before = ListQuery {
        before: Some("cc1".into()),
        limit: 2,
        order: Order::Desc,
        ..ListQuery::default()
    };
    let p = db.list_chat_completions(&before).unwrap();
    assert_eq!(cc(&p), ["cc3", "cc2"]);
    assert!(p.has_more);
    // after + before: the rows strictly between.
    let between = ListQuery {
        after: Some("cc4".into()),
        before: Some("cc1".into()),
        ..ListQuery::default()
    };
    assert_eq!(
        cc(&db.list_chat_completions(&between).unwrap()),
        ["cc3", "cc2"]
    );

    // Limit is clamped to 1..=100.
    assert_eq!(
        db.list_chat_completions(&q(Order::Desc, 0, None))
            .unwrap()
            .data
            .len(),
        1
    );
    assert_eq!(
        db.list_chat_completions(&q(Order::Desc, 1000, None))
            .unwrap()
            .data
            .len(),
        5
    );

    // Model filter, with a cursor.
    let mut mq = q(Order::Asc, 2, None);
    mq.model = Some("m-a".into());
    let p = db.list_chat_completions(&mq).unwrap();
    assert_eq!(cc(&p), ["cc0", "cc2"]);
    assert!(p.has_more);
    mq.after = Some("cc2".into());
    let p = db.list_chat_completions(&mq).unwrap();
    assert_eq!(cc(&p), ["cc4"]);
    assert!(!p.has_more);
    mq.model = Some("m-zzz".into());
    mq.after = None;
    assert!(db.list_chat_completions(&mq).unwrap().data.is_empty());

    // An unknown cursor is NotFound.
    match db.list_chat_completions(&q(Order::Desc, 2, Some("nope"))) {
        Err(DbError::NotFound { id, .. }) => assert_eq!(id, "nope"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // Delete, then the messages sub-list of a missing completion is None.
    assert!(db.delete_chat_completion("cc2").unwrap());
    assert!(!db.delete_chat_completion("cc2").unwrap());
    assert!(db.get_chat_completion("cc2").unwrap().is_none());
    assert!(
        db.chat_completion_messages("cc2", &ListQuery::default())
            .unwrap()
            .is_none()
    );
    assert_eq!(
        cc(&db.list_chat_completions(&ListQuery::default()).unwrap()),
        ["cc4", "cc3", "cc1", "cc0"]
    );
}

#[test]
fn chat_completion_messages_paging() {
    let db = mem();
    let msgs: Vec<Value> = (0..5)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    db.put_chat_completion("cc", 1, "m", &json!({}), &msgs)
        .unwrap();
    // Messages without an "id" get "{completion_id}-{position}" as their cursor id.
    let p = db
        .chat_completion_messages("cc", &q(Order::Asc, 2, None))
        .unwrap()
        .unwrap();
    assert_eq!(p.data, msgs[0..2]);
    assert_eq!(p.first_id.as_deref(), Some("cc-0"));
    assert_eq!(p.last_id.as_deref(), Some("cc-1"));
    assert!(p.has_more);
    let p = db
        .chat_completion_messages("cc", &q(Order::Asc, 2, Some("cc-3")))
        .unwrap()
        .unwrap();
    assert_eq!(p.data, msgs[4..5]);
    assert!(!p.has_more);
}

#[test]
fn retention_keeps_newest() {
    let db = mem();
    db.set_retention(3, 2);
    five_completions(&db);
    let left = db.list_chat_completions(&ListQuery::default()).unwrap();
    assert_eq!(ids(&left, |r| r.id.clone()), ["cc4", "cc3", "cc2"]);
    assert!(db.get_chat_completion("cc0").unwrap().is_none());
    // The removed completions' messages went with them.
    assert!(
        db.chat_completion_messages("cc1", &ListQuery::default())
            .unwrap()
            .is_none()
    );

    for (i, t) in [5, 1, 7, 9].into_iter().enumerate() {
        db.put_response(&response(&format!("r{i}"), t, "m", 1))
            .unwrap();
    }
    let left = db.list_responses(&ListQuery::default()).unwrap();
    assert_eq!(ids(&left, |r| r.id.clone()), ["r3", "r2"]);

    // 0 = unlimited.
    db.set_retention(0, 0);
    for i in 10..15 {
        db.put_chat_completion(&format!("x{i}"), i, "m", &json!({}), &[])
            .unwrap();
    }
    assert_eq!(
        db.list_chat_completions(&ListQuery::default())
            .unwrap()
            .data
            .len(),
        8
    );
}

#[test]
fn responses_and_input_items_paging() {
    let db = mem();
    db.put_response(&response("r1", 1, "m-a", 5)).unwrap();
    db.put_response(&response("r2", 2, "m-b", 0)).unwrap();
    let r1 = db.get_response("r1").unwrap().unwrap();
    assert_eq!(r1.input_items.len(), 5);
    assert_eq!(r1.input_items[0]["id"], "r1_item0");

    let item_ids = |p: &Page<Value>| -> Vec<String> {
        p.data
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Default order is newest first (desc by position).
    let p = db
        .response_input_items("r1", &q(Order::Desc, 2, None))
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&p), ["r1_item4", "r1_item3"]);
    assert!(p.has_more);
    assert_eq!(p.first_id.as_deref(), Some("r1_item4"));
    assert_eq!(p.last_id.as_deref(), Some("r1_item3"));
    let p = db
        .response_input_items("r1", &q(Order::Desc, 2, Some("r1_item3")))
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&p), ["r1_item2", "r1_item1"]);
    assert!(p.has_more);
    let p = db
        .response_input_items("r1", &q(Order::Desc, 2, Some("r1_item1")))
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&p), ["r1_item0"]);
    assert!(!p.has_more);
    let p = db
        .response_input_items("r1", &q(Order::Asc, 3, Some("r1_item0")))
        .unwrap()
        .unwrap();
    assert_eq!(item_ids(&p), ["r1_item1", "r1_item2", "r1_item3"]);
    assert!(p.has_more);

    // An empty response lists nothing; a missing one is None; a foreign cursor is NotFound.
    let p = db
        .response_input_items("r2", &ListQuery::default())
        .unwrap()
        .unwrap();
    assert!(p.data.is_empty() && !p.has_more);
    assert!(
        db.response_input_items("nope", &ListQuery::default())
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        db.response_input_items("r2", &q(Order::Asc, 2, Some("r1_item0"))),
        Err(DbError::NotFound { .. })
    ));

    // Replacing a response replaces its items.
    let mut r1b = response("r1", 1, "m-a", 1);
    r1b.response["status"] = json!("completed");
    db.put_response(&r1b).unwrap();
    assert_eq!(db.get_response("r1").unwrap().unwrap(), r1b);

    // Listing and filtering responses by model.
    let all = db.list_responses(&ListQuery::default()).unwrap();
    assert_eq!(ids(&all, |r| r.id.clone()), ["r2", "r1"]);
    let mq = ListQuery {
        model: Some("m-a".into()),
        ..ListQuery::default()
    };
    assert_eq!(
        ids(&db.list_responses(&mq).unwrap(), |r| r.id.clone()),
        ["r1"]
    );

    assert!(db.delete_response("r1").unwrap());
    assert!(!db.delete_response("r1").unwrap());
    assert!(db.get_response("r1").unwrap().is_none());
    assert!(
        db.response_input_items("r1", &ListQuery::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn not_a_database_is_a_clear_error() {
    let tmp = TempDir::new("notdb");
    std::fs::create_dir_all(tmp.path()).unwrap();
    let path = tmp.path().join("agents.db");
    std::fs::write(&path, b"this is a text file, not SQLite, and long enough to have a header ......................................................").unwrap();
    let err = Db::open(&path).unwrap_err();
    assert!(matches!(err, DbError::NotADatabase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("is not a SQLite database"), "{msg}");
    assert!(msg.contains("agents.db"), "{msg}");
    // The file is left alone.
    assert!(
        std::fs::read(&path)
            .unwrap()
            .starts_with(b"this is a text file")
    );
}

#[test]
fn newer_schema_is_a_clear_error() {
    let tmp = TempDir::new("newer");
    let path = tmp.path().join("agents.db");
    drop(Db::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Db::open(&path).unwrap_err();
    match &err {
        DbError::TooNew {
            found, supported, ..
        } => assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("newer than"), "{err}");
}

#[test]
fn concurrent_use_from_threads() {
    let tmp = TempDir::new("threads");
    let db = Arc::new(Db::open(&tmp.path().join("agents.db")).unwrap());
    db.create_agent("a", &json!({}), "t").unwrap();
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let session = format!("s{t}");
                db.create_session("a", &session, "n", "t").unwrap();
                for i in 0..EACH {
                    let turn = format!("t{i}");
                    db.put_turn(&session, &turn, "in_progress", &json!({"i": i}), "c")
                        .unwrap();
                    db.put_turn(&session, &turn, "complete", &json!({"i": i}), "c")
                        .unwrap();
                    let id = format!("cc-{t}-{i}");
                    db.put_chat_completion(&id, i as i64, "m", &json!({}), &[json!({"i": i})])
                        .unwrap();
                    assert!(db.get_chat_completion(&id).unwrap().is_some());
                    db.list_chat_completions(&ListQuery::default()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(db.list_sessions("a").unwrap().len(), THREADS);
    for t in 0..THREADS {
        let turns = db.list_turns(&format!("s{t}")).unwrap();
        assert_eq!(turns.len(), EACH);
        assert!(turns.iter().all(|t| t.status == "complete"));
        let order: Vec<String> = turns.iter().map(|t| t.turn_id.clone()).collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("t{i}")).collect();
        assert_eq!(order, want);
    }
    // Page through everything: every completion exactly once.
    let mut seen = Vec::new();
    let mut query = q(Order::Asc, 7, None);
    loop {
        let p = db.list_chat_completions(&query).unwrap();
        seen.extend(p.data.iter().map(|r| r.id.clone()));
        if !p.has_more {
            break;
        }
        query.after = p.last_id;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), THREADS * EACH);
}

#[test]
fn settings_round_trip_and_replace_across_reopen() {
    let dir = std::env::temp_dir().join(format!("ferrollama-db-settings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("a.sqlite");
    {
        let db = Db::open(&path).unwrap();
        assert_eq!(db.get_setting("toolgroups").unwrap(), None);
        db.put_setting("toolgroups", &serde_json::json!([1]))
            .unwrap();
        db.put_setting("toolgroups", &serde_json::json!([{"id": "mcp::x"}]))
            .unwrap();
    }
    let db = Db::open(&path).unwrap();
    assert_eq!(
        db.get_setting("toolgroups").unwrap(),
        Some(serde_json::json!([{"id": "mcp::x"}]))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
