//! The SQLite file store: uploads, paging, deletes, expiry, crash leftovers and reopening.

use std::io::Write;
use std::path::Path;

use ferrollama_rag::sqlite::{DB_FILE, FILES_DIR};
use ferrollama_rag::{FileQuery, NewFile, Order, Purpose, SqliteStore, Store, StoreError};

fn new_file(name: &str, purpose: Purpose) -> NewFile {
    NewFile {
        filename: name.into(),
        purpose,
        expires_after: None,
    }
}

/// Uploads `bytes` in two writes (as a stream would arrive) and commits it.
fn put(
    store: &dyn Store,
    name: &str,
    purpose: Purpose,
    bytes: &[u8],
) -> ferrollama_rag::FileObject {
    let mut up = store.begin_upload().expect("begin");
    let (a, b) = bytes.split_at(bytes.len() / 2);
    up.write_all(a).expect("write");
    up.write_all(b).expect("write");
    assert_eq!(up.len(), bytes.len() as u64);
    up.commit(new_file(name, purpose)).expect("commit")
}

/// Names in the files folder, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("files dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn ids(page: &ferrollama_rag::Page<ferrollama_rag::FileObject>) -> Vec<String> {
    page.data.iter().map(|f| f.id.clone()).collect()
}

#[test]
fn create_get_content_delete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(tmp.path()).expect("open");
    let f = put(&store, "notes.txt", Purpose::Assistants, b"hello, files");
    assert!(f.id.starts_with("file-") && f.id.len() == 29, "{}", f.id);
    assert_eq!(f.bytes, 12);
    assert_eq!(f.filename, "notes.txt");
    assert_eq!(f.purpose, Purpose::Assistants);
    assert_eq!(f.expires_at, None);
    assert!(f.created_at > 1_700_000_000);

    assert_eq!(store.get_file(&f.id).expect("get"), Some(f.clone()));
    assert_eq!(
        store.read_content(&f.id).expect("read"),
        Some(b"hello, files".to_vec())
    );
    // The bytes are the blob named by the id; nothing else is in the folder.
    let dir = tmp.path().join(FILES_DIR);
    assert_eq!(entries(&dir), vec![f.id.clone()]);

    assert!(store.delete_file(&f.id).expect("delete"));
    assert_eq!(store.get_file(&f.id).expect("get"), None);
    assert!(store.read_content(&f.id).expect("read").is_none());
    assert!(!store.delete_file(&f.id).expect("delete again"));
    assert!(entries(&dir).is_empty());
    // Unknown and malformed ids are simply absent (never a path).
    assert_eq!(
        store
            .get_file("file-000000000000000000000000")
            .expect("get"),
        None
    );
    assert!(
        store
            .open_content("../rag.sqlite")
            .expect("content")
            .is_none()
    );
}

#[test]
fn dropped_upload_leaves_nothing() {
    let store = SqliteStore::open_in_memory().expect("open");
    let mut up = store.begin_upload().expect("begin");
    up.write_all(&[7u8; 4096]).expect("write");
    assert_eq!(
        entries(store.files_dir()).len(),
        1,
        "the upload is a temporary file"
    );
    drop(up);
    assert!(entries(store.files_dir()).is_empty());
    assert!(
        store
            .list_files(&FileQuery::default())
            .expect("list")
            .data
            .is_empty()
    );
}

#[test]
fn list_pages_in_both_orders_with_purpose_filter() {
    let store = SqliteStore::open_in_memory().expect("open");
    // Same-second uploads: order falls back to upload order.
    let all: Vec<_> = (0..7)
        .map(|i| {
            let p = if i % 3 == 0 {
                Purpose::Batch
            } else {
                Purpose::Assistants
            };
            put(
                &store,
                &format!("f{i}.txt"),
                p,
                format!("file {i}").as_bytes(),
            )
            .id
        })
        .collect();

    // Default: newest first, everything.
    let page = store.list_files(&FileQuery::default()).expect("list");
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(ids(&page), rev);
    assert!(!page.has_more);
    assert_eq!(page.first_id.as_deref(), Some(rev[0].as_str()));
    assert_eq!(page.last_id.as_deref(), Some(all[0].as_str()));

    // Ascending pages of 3 via `after`, covering every file once.
    for (order, expected) in [(Order::Asc, all.clone()), (Order::Desc, rev.clone())] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_files(&FileQuery {
                    after: after.clone(),
                    limit: 3,
                    order,
                    purpose: None,
                })
                .expect("page");
            assert!(page.data.len() <= 3);
            seen.extend(ids(&page));
            if !page.has_more {
                break;
            }
            after = page.last_id.clone();
        }
        assert_eq!(seen, expected, "{order:?}");
    }

    let batch = store
        .list_files(&FileQuery {
            purpose: Some(Purpose::Batch),
            order: Order::Asc,
            ..FileQuery::default()
        })
        .expect("filter");
    assert_eq!(
        ids(&batch),
        vec![all[0].clone(), all[3].clone(), all[6].clone()]
    );
    assert!(batch.data.iter().all(|f| f.purpose == Purpose::Batch));

    // An unknown cursor is an error naming it, not an empty page.
    let err = store
        .list_files(&FileQuery {
            after: Some("file-ffffffffffffffffffffffff".into()),
            ..FileQuery::default()
        })
        .expect_err("unknown cursor");
    assert!(
        matches!(err, StoreError::NotFound { kind: "file", ref id } if id == "file-ffffffffffffffffffffffff"),
        "{err:?}"
    );

    // Deleting the middle of a page does not disturb the next one.
    assert!(store.delete_file(&all[3]).expect("delete"));
    let next = store
        .list_files(&FileQuery {
            after: Some(all[2].clone()),
            order: Order::Asc,
            limit: 2,
            purpose: None,
        })
        .expect("after");
    assert_eq!(ids(&next), vec![all[4].clone(), all[5].clone()]);
    assert!(next.has_more);
}

#[test]
fn expired_files_are_gone() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(tmp.path()).expect("open");
    let mut up = store.begin_upload().expect("begin");
    up.write_all(b"short-lived").expect("write");
    // Expires the second it is created.
    let f = up
        .commit(NewFile {
            expires_after: Some(0),
            ..new_file("gone.txt", Purpose::UserData)
        })
        .expect("commit");
    assert_eq!(f.expires_at, Some(f.created_at));
    let kept = put(&store, "kept.txt", Purpose::UserData, b"kept");
    assert_eq!(store.get_file(&f.id).expect("get"), None);
    assert_eq!(
        ids(&store.list_files(&FileQuery::default()).expect("list")),
        vec![kept.id.clone()]
    );
    assert_eq!(store.purge_expired().expect("purge"), 1);
    assert_eq!(entries(store.files_dir()), vec![kept.id.clone()]);

    let mut up = store.begin_upload().expect("begin");
    up.write_all(b"later").expect("write");
    let later = up
        .commit(NewFile {
            expires_after: Some(3600),
            ..new_file("later.txt", Purpose::UserData)
        })
        .expect("commit");
    assert_eq!(later.expires_at, Some(later.created_at + 3600));
    assert_eq!(store.get_file(&later.id).expect("get"), Some(later));
}

#[test]
fn reopen_keeps_files_and_sweeps_leftovers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join(FILES_DIR);
    let (a, b) = {
        let store = SqliteStore::open(tmp.path()).expect("open");
        let a = put(&store, "a.md", Purpose::Assistants, b"# A\n");
        let b = put(&store, "b.jsonl", Purpose::Batch, &vec![b'x'; 100_000]);
        (a, b)
    };
    assert!(tmp.path().join(DB_FILE).is_file());
    // What a crash can leave: an unfinished upload, and a blob whose row was never
    // inserted. And something that is not ours.
    std::fs::write(dir.join(".upload-0123456789abcdef01234567.tmp"), b"partial").expect("tmp");
    std::fs::write(dir.join("file-00000000000000000000abcd"), b"orphan").expect("orphan");
    std::fs::write(dir.join("README"), b"not ours").expect("other");

    let store = SqliteStore::open(tmp.path()).expect("reopen");
    let mut expected = vec![a.id.clone(), b.id.clone(), "README".to_string()];
    expected.sort();
    assert_eq!(entries(&dir), expected);
    assert_eq!(store.get_file(&a.id).expect("get"), Some(a.clone()));
    assert_eq!(store.get_file(&b.id).expect("get"), Some(b.clone()));
    assert_eq!(
        store
            .read_content(&b.id)
            .expect("read")
            .expect("some")
            .len(),
        100_000
    );
    assert_eq!(
        ids(&store.list_files(&FileQuery::default()).expect("list")),
        vec![b.id.clone(), a.id.clone()]
    );
    // Uploads go on after a reopen, and the sweep keeps their blobs.
    let c = put(&store, "c.txt", Purpose::Vision, b"c");
    assert_eq!(store.sweep().expect("sweep"), 0);
    assert_eq!(
        store.read_content(&c.id).expect("read"),
        Some(b"c".to_vec())
    );
}

#[test]
fn refuses_a_file_that_is_not_sqlite() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join(DB_FILE), vec![b'z'; 4096]).expect("write");
    let err = SqliteStore::open(tmp.path()).expect_err("not a database");
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
}

#[test]
fn in_memory_folder_is_removed_on_drop() {
    let store = SqliteStore::open_in_memory().expect("open");
    let f = put(&store, "x.bin", Purpose::FineTune, &[0, 1, 2, 255]);
    let dir = store.files_dir().to_path_buf();
    assert_eq!(entries(&dir), vec![f.id.clone()]);
    assert_eq!(
        store.read_content(&f.id).expect("read"),
        Some(vec![0, 1, 2, 255])
    );
    drop(store);
    assert!(!dir.exists());
}
