//! Files: real `agora-files` servers over a real directory. Every size downloads intact, the
//! cache hits, evicts by recency and notices changes, nothing escapes the root.

use std::path::Path;
use std::time::{Duration, SystemTime};

use agora_nats::client::gather;
use agora_nats::files::sha256_hex;
use agora_nats::subjects::files as subject;
use agora_nats::subjects::micro;
use agora_nats::{AgoraClient, ErrorCode};
use agora_tests::{System, code};
use bytes::Bytes;
use futures::StreamExt;

const CHUNK: usize = 256 * 1024;
const MIB: usize = 1024 * 1024;
/// Small limits, so eviction and streaming show with small files.
const ARGS: [&str; 6] = [
    "--chunk-bytes",
    "262144",
    "--cache-bytes",
    "3670016", // 3.5 MiB
    "--cache-file-bytes-max",
    "2097152", // 2 MiB
];

/// Deterministic bytes that differ from one file to another.
fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

fn write(root: &Path, name: &str, bytes: &[u8]) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dirs");
    std::fs::write(path, bytes).expect("write");
}

async fn fetch_ok(client: &AgoraClient, name: &str, expected: &[u8]) {
    let (stat, bytes) = client.fetch_file(name).await.expect(name);
    assert_eq!(stat.size, expected.len() as u64, "{name}");
    assert!(bytes == expected, "{name}: the bytes differ");
    assert_eq!(stat.sha256, sha256_hex(expected), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_size_downloads_intact_in_chunks() {
    let system = System::with_files(1, &ARGS);
    let root = system.files_root();
    let files = [
        ("empty", content(0, 1)),
        ("one-byte", content(1, 2)),
        ("one-chunk.bin", content(CHUNK, 3)),
        ("dir/sub/many-chunks.bin", content(3 * CHUNK + CHUNK / 2, 4)),
        ("huge.bin", content(65 * MIB + 3, 5)),
    ];
    for (name, bytes) in &files {
        write(&root, name, bytes);
    }
    let client = system.client().await.with_timeout(Duration::from_secs(20));
    for (name, bytes) in &files {
        fetch_ok(&client, name, bytes).await;
    }
    let stat = client.file_stat("huge.bin").await.expect("stat");
    assert_eq!(
        (stat.chunk_bytes, stat.chunks),
        (CHUNK as u64, (65 * MIB as u64 + 3).div_ceil(CHUNK as u64))
    );
    assert!(!stat.cached, "larger than the cache: streamed from disk");
    // A download resumes from any chunk boundary.
    let chunk =
        client.file_chunk("dir/sub/many-chunks.bin", 3 * CHUNK as u64, None).await.expect("chunk");
    assert!(chunk[..] == files[3].1[3 * CHUNK..], "the last, short chunk");
    let listed = client
        .list_files(&agora_nats::files::wire::ListFilesRequest {
            prefix: Some("dir/".into()),
            limit: None,
        })
        .await
        .expect("list");
    assert_eq!(listed.files.len(), 1);
    assert_eq!(listed.files[0].name, "dir/sub/many-chunks.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_hits_evicts_by_recency_and_serves_changed_files_fresh() {
    let system = System::with_files(1, &ARGS);
    let root = system.files_root();
    for i in 1..=4 {
        write(&root, &format!("f{i}"), &content(MIB, 10 + i));
    }
    let client = system.client().await;
    fetch_ok(&client, "f1", &content(MIB, 11)).await;
    let after_first = client.file_cache().await.expect("cache");
    fetch_ok(&client, "f1", &content(MIB, 11)).await;
    let after_second = client.file_cache().await.expect("cache");
    assert_eq!(after_second.misses, after_first.misses, "the second fetch is all hits");
    assert!(after_second.hits > after_first.hits);
    assert!(client.file_stat("f1").await.expect("stat").cached);

    fetch_ok(&client, "f2", &content(MIB, 12)).await;
    fetch_ok(&client, "f3", &content(MIB, 13)).await;
    fetch_ok(&client, "f1", &content(MIB, 11)).await; // f1 is now the most recent
    fetch_ok(&client, "f4", &content(MIB, 14)).await; // 4 MiB > 3.5 MiB: the least recent goes
    let report = client.file_cache().await.expect("cache");
    let cached: Vec<&str> = report.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(cached, ["f1", "f3", "f4"], "f2 was the least recently used");
    assert!(report.evictions >= 1 && report.bytes <= report.capacity_bytes, "{report:?}");

    // Same size, new bytes and a later mtime: served fresh, never the cached copy.
    let fresh = content(MIB, 99);
    write(&root, "f3", &fresh);
    let later = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(root.join("f3"))
        .expect("open")
        .set_modified(later)
        .expect("mtime");
    fetch_ok(&client, "f3", &fresh).await;
    assert!(client.file_cache().await.expect("cache").invalidations >= 1);

    // A chunk asked for an older version is refused: a download never mixes two versions.
    let old_sha = sha256_hex(&content(MIB, 13));
    assert_eq!(code(client.file_chunk("f3", 0, Some(&old_sha)).await), ErrorCode::Conflict);
    // The cache's counters are in $SRV.STATS too.
    let stats = client.request_bytes("$SRV.STATS.agora-files", Bytes::new()).await.expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats).expect("JSON");
    let get = stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "get"))
        .expect("get");
    assert!(get["data"]["cache"]["hits"].as_u64().is_some_and(|h| h > 0), "{get}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_escapes_the_root_and_bad_input_gets_coded_errors() {
    let system = System::with_files(1, &ARGS);
    let root = system.files_root();
    write(&root, "ok.txt", b"fine");
    let outside = system.dir.path().join("secret.txt");
    std::fs::write(&outside, b"not for you").expect("write");
    std::os::unix::fs::symlink(&outside, root.join("link-out")).expect("symlink");
    std::os::unix::fs::symlink(root.join("ok.txt"), root.join("link-in")).expect("symlink");
    std::fs::create_dir_all(root.join("adir")).expect("dir");
    let client = system.client().await;

    let stat = |name: &str| format!(r#"{{"name":{}}}"#, serde_json::json!(name));
    let cases: Vec<(&str, String, ErrorCode)> = vec![
        (subject::STAT_SUBJECT, stat("../secret.txt"), ErrorCode::InvalidRequest),
        (subject::STAT_SUBJECT, stat(&outside.display().to_string()), ErrorCode::InvalidRequest),
        (subject::STAT_SUBJECT, stat("adir/../../secret.txt"), ErrorCode::InvalidRequest),
        (subject::STAT_SUBJECT, stat("./ok.txt"), ErrorCode::InvalidRequest),
        (subject::STAT_SUBJECT, stat("a\\b"), ErrorCode::InvalidRequest),
        (subject::STAT_SUBJECT, stat(""), ErrorCode::InvalidRequest),
        (subject::STAT_SUBJECT, stat("link-out"), ErrorCode::NotFound),
        (subject::STAT_SUBJECT, stat("missing.txt"), ErrorCode::NotFound),
        (subject::STAT_SUBJECT, stat("adir"), ErrorCode::NotFound),
        (subject::STAT_SUBJECT, "not json".into(), ErrorCode::InvalidRequest),
        (subject::STAT_SUBJECT, r#"{"name":"ok.txt","x":1}"#.into(), ErrorCode::InvalidRequest),
        (subject::GET_SUBJECT, r#"{"name":"link-out"}"#.into(), ErrorCode::NotFound),
        (subject::GET_SUBJECT, r#"{"name":"../secret.txt"}"#.into(), ErrorCode::InvalidRequest),
        (subject::GET_SUBJECT, r#"{"name":"ok.txt","offset":5}"#.into(), ErrorCode::InvalidRequest),
        (subject::GET_SUBJECT, r#"{"name":"ok.txt","length":0}"#.into(), ErrorCode::InvalidRequest),
        (
            subject::GET_SUBJECT,
            r#"{"name":"ok.txt","length":262145}"#.into(),
            ErrorCode::InvalidRequest,
        ),
        (
            subject::GET_SUBJECT,
            r#"{"name":"ok.txt","offset":-1}"#.into(),
            ErrorCode::InvalidRequest,
        ),
        (subject::GET_SUBJECT, r#"{"name":"ok.txt","sha256":"00"}"#.into(), ErrorCode::Conflict),
        (subject::LIST_SUBJECT, r#"{"limit":0}"#.into(), ErrorCode::InvalidRequest),
        (subject::LIST_SUBJECT, r#"{"prefix":7}"#.into(), ErrorCode::InvalidRequest),
    ];
    for (subject, payload, expected) in &cases {
        let result = client.request_bytes(subject, Bytes::from(payload.clone())).await;
        assert_eq!(code(result), *expected, "{subject} {payload}");
    }
    // A symlink that stays inside the root is a file like any other; the listing shows
    // nothing from outside.
    fetch_ok(&client, "link-in", b"fine").await;
    let listed = client.list_files(&Default::default()).await.expect("list");
    let names: Vec<&str> = listed.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["link-in", "ok.txt"]);
    fetch_ok(&client, "ok.txt", b"fine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_serve_many_concurrent_downloads_correctly() {
    let system = System::with_files(2, &ARGS);
    let root = system.files_root();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("shared-{i}.bin"), content(i * 700_000 + 1, 100 + i as u64)))
        .collect();
    for (name, bytes) in &files {
        write(&root, name, bytes);
    }
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(system.client().await.with_timeout(Duration::from_secs(20)));
    }
    futures::stream::iter(clients.iter().enumerate().flat_map(|(c, client)| {
        files.iter().cycle().skip(c).take(3).map(move |(name, bytes)| (client, name, bytes))
    }))
    .map(|(client, name, bytes)| async move { fetch_ok(client, name, bytes).await })
    .buffer_unordered(36)
    .collect::<Vec<()>>()
    .await;
    // Every download checked its bytes; and the chunks were spread over both servers, each
    // chunk asked once (36 downloads, each file six times).
    let chunks: u64 =
        6 * files.iter().map(|(_, bytes)| bytes.len().div_ceil(CHUNK) as u64).sum::<u64>();
    let gets = requests(&clients[0], subject::GET).await;
    assert_eq!(gets.len(), 2, "both servers answer: {gets:?}");
    assert!(gets.iter().all(|&n| n > 0), "both servers served chunks: {gets:?}");
    assert_eq!(gets.iter().sum::<u64>(), chunks, "each chunk asked once: {gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_replaces_a_file_whole_on_every_server() {
    let system = System::with_files(2, &ARGS);
    let root = system.files_root();
    let old = content(MIB / 2, 7);
    write(&root, "report.bin", &old);
    let client = system.client().await;
    // Both servers cache the old version (one client's requests spread over both).
    for _ in 0..6 {
        fetch_ok(&client, "report.bin", &old).await;
    }

    let new = content(MIB / 2 + 3, 8);
    let stat = client.put_file("report.bin", Bytes::from(new.clone())).await.expect("put");
    assert_eq!((stat.size, stat.sha256.clone()), (new.len() as u64, sha256_hex(&new)));
    assert_eq!(std::fs::read(root.join("report.bin")).expect("on disk"), new);
    // Whichever server answers, the new version comes back, never the old one or a mix.
    for _ in 0..6 {
        fetch_ok(&client, "report.bin", &new).await;
    }
    let nested = client.put_file("new/dir/a.txt", Bytes::from_static(b"hello")).await;
    assert_eq!(nested.expect("put in new directories").size, 5);
    fetch_ok(&client, "new/dir/a.txt", b"hello").await;

    // Bad uploads: refused with a code, nothing written, no temporary file left.
    std::fs::create_dir_all(root.join("adir")).expect("dir");
    let put = |name: Option<&str>, sha256: Option<&str>, body: &'static [u8]| {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(name) = name {
            headers.insert(agora_nats::files::wire::HEADER_NAME, name);
        }
        if let Some(sha256) = sha256 {
            headers.insert(agora_nats::files::wire::HEADER_SHA256, sha256);
        }
        client.request_with_headers(subject::PUT_SUBJECT, headers, Bytes::from_static(body))
    };
    let body_sha = sha256_hex(b"x");
    let cases = [
        (None, None, ErrorCode::InvalidRequest),
        (Some("../escape.txt"), None, ErrorCode::InvalidRequest),
        (Some("/abs.txt"), None, ErrorCode::InvalidRequest),
        (Some("a/./b"), None, ErrorCode::InvalidRequest),
        (Some("x.agora-upload-1"), None, ErrorCode::InvalidRequest),
        (Some("damaged.txt"), Some("00ff"), ErrorCode::InvalidRequest),
        (Some("adir"), Some(body_sha.as_str()), ErrorCode::Conflict),
    ];
    for (name, sha256, expected) in cases {
        assert_eq!(code(put(name, sha256, b"x").await), expected, "{name:?} {sha256:?}");
    }
    assert!(!system.dir.path().join("escape.txt").exists());
    assert!(!root.join("damaged.txt").exists());
    let listed = client.list_files(&Default::default()).await.expect("list");
    let names: Vec<&str> = listed.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["new/dir/a.txt", "report.bin"]);
    let on_disk = std::fs::read_dir(&root).expect("root").count();
    assert_eq!(on_disk, 3, "report.bin, new, adir: no temporary files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_file_is_served_by_no_server_and_nothing_else_is_removed() {
    let system = System::with_files(2, &ARGS);
    let root = system.files_root();
    let small = content(1000, 1);
    write(&root, "cached.txt", &small);
    let large = content(2 * MIB + 5, 2); // beyond the cache: read from disk
    write(&root, "large.bin", &large);
    write(&root, "d/e/nested.txt", b"nested");
    write(&root, "k/e/nested.txt", b"nested");
    write(&root, "k/kept.txt", b"kept");
    write(&root, "target.txt", b"target");
    let outside = system.dir.path().join("outside.txt");
    std::fs::write(&outside, b"outside").expect("write");
    std::os::unix::fs::symlink(root.join("target.txt"), root.join("link-in")).expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("link-out")).expect("symlink");
    let client = system.client().await;
    // Both servers hold the small file in their caches, and know the large one's digest.
    for _ in 0..6 {
        fetch_ok(&client, "cached.txt", &small).await;
    }
    fetch_ok(&client, "large.bin", &large).await;
    fetch_ok(&client, "large.bin", &large).await;

    for (name, size) in [("cached.txt", small.len()), ("large.bin", large.len())] {
        let removed = client.delete_file(name).await.expect("removed");
        assert_eq!((removed.name.as_str(), removed.size), (name, size as u64));
        assert!(!root.join(name).exists());
        // Whichever server answers: gone, cached or not.
        for _ in 0..6 {
            assert_eq!(code(client.file_stat(name).await), ErrorCode::NotFound, "{name}");
            assert_eq!(code(client.file_chunk(name, 0, None).await), ErrorCode::NotFound, "{name}");
        }
        assert_eq!(code(client.delete_file(name).await), ErrorCode::NotFound, "twice: {name}");
    }
    // A link is removed itself, never what it points to; one leading outside is not a file here.
    client.delete_file("link-in").await.expect("the link removed");
    assert!(!root.join("link-in").exists());
    fetch_ok(&client, "target.txt", b"target").await;
    assert_eq!(code(client.delete_file("link-out").await), ErrorCode::NotFound);
    assert_eq!(std::fs::read(&outside).expect("still there"), b"outside");
    // A nested file goes, and so do the directories it left empty: nothing unseen stands in the
    // way of a file of that name. A directory still holding a file stays.
    client.delete_file("d/e/nested.txt").await.expect("removed");
    assert!(!root.join("d").exists(), "d and d/e were left empty");
    client.delete_file("k/e/nested.txt").await.expect("removed");
    assert!(!root.join("k/e").exists() && root.join("k").is_dir());
    fetch_ok(&client, "k/kept.txt", b"kept").await;

    // Bad requests: a coded error each, and nothing removed.
    let staged = root.join("x.agora-upload-1");
    std::fs::write(&staged, b"staged").expect("write");
    let delete = |payload: &'static str| {
        client.request_bytes(subject::DELETE_SUBJECT, Bytes::from_static(payload.as_bytes()))
    };
    let cases = [
        (r#"{"name":"../outside.txt"}"#, ErrorCode::InvalidRequest),
        (r#"{"name":"/etc/passwd"}"#, ErrorCode::InvalidRequest),
        (r#"{"name":"a/./b"}"#, ErrorCode::InvalidRequest),
        (r#"{"name":""}"#, ErrorCode::InvalidRequest),
        (r#"{"name":"target.txt","x":1}"#, ErrorCode::InvalidRequest),
        (r#"{}"#, ErrorCode::InvalidRequest),
        (r#"["target.txt"]"#, ErrorCode::InvalidRequest),
        ("", ErrorCode::InvalidRequest),
        (r#"{"name":"k"}"#, ErrorCode::NotFound),
        (r#"{"name":"x.agora-upload-1"}"#, ErrorCode::NotFound),
        (r#"{"name":"missing.txt"}"#, ErrorCode::NotFound),
    ];
    for (payload, expected) in cases {
        assert_eq!(code(delete(payload).await), expected, "{payload}");
    }
    assert!(staged.exists() && root.join("k").is_dir() && outside.exists());
    let listed = client.list_files(&Default::default()).await.expect("list");
    let names: Vec<&str> = listed.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["k/kept.txt", "target.txt"], "a link outside is never listed");
    // A file uploaded again under a removed name is served afresh; so is one named as a
    // directory a removal left empty.
    client.put_file("cached.txt", Bytes::from_static(b"again")).await.expect("put");
    fetch_ok(&client, "cached.txt", b"again").await;
    client.put_file("d", Bytes::from_static(b"a file now")).await.expect("uploaded as d");
    fetch_ok(&client, "d", b"a file now").await;
}

/// How many requests each of the two file servers has answered on `endpoint`.
async fn requests(client: &AgoraClient, endpoint: &str) -> Vec<u64> {
    let stats = gather(
        client.nats(),
        micro::stats(subject::SERVICE),
        Bytes::new(),
        Duration::from_secs(1),
        Some(2),
    )
    .await
    .expect("stats");
    stats
        .iter()
        .map(|reply| {
            let stats: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON");
            let endpoints = stats["endpoints"].as_array().expect("endpoints");
            let found = endpoints.iter().find(|e| e["name"] == endpoint).expect("the endpoint");
            found["num_requests"].as_u64().expect("a count")
        })
        .collect()
}

/// How many `agora.files.put` requests the two file servers have answered in all.
async fn puts(client: &AgoraClient) -> u64 {
    let puts = requests(client, subject::PUT).await;
    assert_eq!(puts.len(), 2, "both servers answer: {puts:?}");
    puts.iter().sum()
}

/// One `agora.files.put` with these headers and body, its JSON reply.
async fn part(
    client: &AgoraClient,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<serde_json::Value, agora_nats::client::ClientError> {
    let mut map = async_nats::HeaderMap::new();
    for (key, value) in headers {
        map.insert(*key, *value);
    }
    let reply = client
        .request_with_headers(subject::PUT_SUBJECT, map, Bytes::copy_from_slice(body))
        .await?;
    Ok(serde_json::from_slice(&reply).expect("a JSON reply"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_parts_lands_whole_or_not_at_all() {
    use agora_nats::files::wire::{HEADER_NAME, HEADER_OFFSET, HEADER_SHA256, HEADER_SIZE};
    const UPLOAD: &str = agora_nats::files::wire::HEADER_UPLOAD;
    let limit = (5 * MIB).to_string();
    let mut args = ARGS.to_vec();
    args.extend(["--upload-bytes-max", &limit, "--uploads-max", "2", "--upload-idle-ms", "1000"]);
    let system = System::with_files(2, &args);
    let root = system.files_root();
    let staging = root.join(".agora-upload-staging");
    let client = system.client().await;
    let old = content(MIB, 1);
    write(&root, "big.bin", &old);
    for _ in 0..4 {
        fetch_ok(&client, "big.bin", &old).await;
    }

    // Larger than a message: sent in parts, in place whole, served by every server.
    let new = content(3 * MIB + 5, 2);
    let stat = client.put_file("big.bin", Bytes::from(new.clone())).await.expect("put in parts");
    assert_eq!((stat.size, stat.sha256.clone()), (new.len() as u64, sha256_hex(&new)));
    assert!(std::fs::read(root.join("big.bin")).expect("on disk") == new);
    for _ in 0..4 {
        fetch_ok(&client, "big.bin", &new).await;
    }
    assert_eq!(std::fs::read_dir(&staging).expect("staging").count(), 0, "nothing left staged");
    // An upload sent again after an interruption goes on from what the servers hold: its
    // first two parts were sent (by hand, with the id the client makes from the name, size
    // and digest); sent again, it asks for the first part once more and then only the rest.
    let resumed = content(3 * MIB + 9, 4);
    let id = agora_nats::files::client::upload_id(
        "resumed.bin",
        resumed.len() as u64,
        &sha256_hex(&resumed),
    );
    let part_max = client.upload_bytes_max();
    let size = resumed.len().to_string();
    for offset in [0, part_max] {
        let at = offset.to_string();
        let headers = [
            (agora_nats::files::wire::HEADER_NAME, "resumed.bin"),
            (agora_nats::files::wire::HEADER_UPLOAD, id.as_str()),
            (agora_nats::files::wire::HEADER_OFFSET, at.as_str()),
            (agora_nats::files::wire::HEADER_SIZE, size.as_str()),
        ];
        part(&client, &headers, &resumed[offset..offset + part_max]).await.expect("a part");
    }
    let before = puts(&client).await;
    let stat = client.put_file("resumed.bin", Bytes::from(resumed.clone())).await.expect("resumed");
    assert_eq!(stat.sha256, sha256_hex(&resumed));
    fetch_ok(&client, "resumed.bin", &resumed).await;
    let parts = resumed.len().div_ceil(part_max) as u64;
    assert_eq!(puts(&client).await - before, 1 + parts - 2, "the held parts were not sent again");
    // The limit of one file.
    let over = Bytes::from(vec![1u8; 5 * MIB + 1]);
    assert_eq!(code(client.put_file("over.bin", over).await), ErrorCode::InvalidRequest);

    // By hand: parts held from 0 without gaps; a retry is harmless; nothing is served until
    // the last part lands.
    let whole = content(20, 3);
    let sha: &'static str = sha256_hex(&whole).leak();
    let headers = |upload: &'static str, offset: &'static str, sha256: Option<&'static str>| {
        let mut h = vec![(HEADER_NAME, "hand.bin"), (UPLOAD, upload), (HEADER_OFFSET, offset)];
        h.push((HEADER_SIZE, "20"));
        if let Some(sha256) = sha256 {
            h.push((HEADER_SHA256, sha256));
        }
        h
    };
    let first = part(&client, &headers("u1", "0", None), &whole[..10]).await.expect("part");
    let progress =
        serde_json::json!({"name": "hand.bin", "upload": "u1", "received": 10, "size": 20});
    assert_eq!(first, progress);
    assert_eq!(
        part(&client, &headers("u1", "0", None), &whole[..10]).await.expect("retry"),
        progress
    );
    let gap = part(&client, &headers("u1", "15", None), &whole[15..]).await;
    assert_eq!(code(gap), ErrorCode::Conflict);
    let gap = part(&client, &headers("u1", "15", None), &whole[15..]).await.expect_err("a gap");
    assert!(gap.to_string().contains("send from offset 10"), "{gap}");
    assert_eq!(code(client.file_stat("hand.bin").await), ErrorCode::NotFound);
    let staged: Vec<String> = std::fs::read_dir(&staging)
        .expect("staging")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    let peek = format!(".agora-upload-staging/{}", staged[0]);
    assert_eq!(code(client.file_stat(&peek).await), ErrorCode::NotFound, "a part is never served");
    let listed = client.list_files(&Default::default()).await.expect("list");
    let names: Vec<&str> = listed.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["big.bin", "resumed.bin"], "no upload in progress is listed");
    // A damaged whole is dropped, and nothing is put in place.
    let damaged = part(&client, &headers("u1", "10", Some("00ff")), &whole[10..]).await;
    assert_eq!(code(damaged), ErrorCode::InvalidRequest);
    assert_eq!(code(client.file_stat("hand.bin").await), ErrorCode::NotFound);
    let gone = part(&client, &headers("u1", "10", None), &whole[10..]).await.expect_err("dropped");
    assert!(gone.to_string().contains("send from offset 0"), "{gone}");
    // Sent again, it lands.
    part(&client, &headers("u2", "0", Some(sha)), &whole[..7]).await.expect("part");
    let stat = part(&client, &headers("u2", "7", Some(sha)), &whole[7..]).await;
    assert_eq!(stat.expect("the last part")["sha256"].as_str(), Some(sha));
    fetch_ok(&client, "hand.bin", &whole).await;
    // A directory in the file's place is refused at the first part.
    std::fs::create_dir_all(root.join("adir")).expect("dir");
    let first = [(HEADER_NAME, "adir"), (UPLOAD, "d"), (HEADER_OFFSET, "0"), (HEADER_SIZE, "2")];
    assert_eq!(code(part(&client, &first, b"x").await), ErrorCode::Conflict);
    // An empty file in parts: one empty part.
    let empty =
        [(HEADER_NAME, "empty.bin"), (UPLOAD, "e"), (HEADER_OFFSET, "0"), (HEADER_SIZE, "0")];
    assert_eq!(part(&client, &empty, b"").await.expect("empty")["size"], 0);

    // Every bad part is refused with a code and leaves nothing behind: (name, upload id,
    // offset, size, body), a header absent where `None`.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);
    let bad: [Case; 10] = [
        ("b", "u", None, Some("2"), b"x"),
        ("b", "u", Some("0"), None, b"x"),
        ("b", "u", Some("-1"), Some("2"), b"x"),
        ("b", "u", Some("0"), Some("two"), b"x"),
        ("b", "a/b", Some("0"), Some("2"), b"x"),
        ("b", "", Some("0"), Some("2"), b"x"),
        ("b", "u", Some("0"), Some("5242881"), b"x"),
        ("b", "u", Some("1"), Some("2"), b"xy"),
        ("b", "u", Some("0"), Some("2"), b""),
        ("../b", "u", Some("0"), Some("2"), b"x"),
    ];
    for (name, upload, offset, size, body) in bad {
        let mut headers = vec![(HEADER_NAME, name), (UPLOAD, upload)];
        headers.extend(offset.map(|offset| (HEADER_OFFSET, offset)));
        headers.extend(size.map(|size| (HEADER_SIZE, size)));
        let refused = code(part(&client, &headers, body).await);
        assert_eq!(refused, ErrorCode::InvalidRequest, "{headers:?} {body:?}");
    }
    assert_eq!(std::fs::read_dir(&staging).expect("staging").count(), 0, "nothing staged");

    // At most two uploads in progress; an idle one makes room for the next.
    let begin = |upload: &'static str| {
        let headers =
            [(HEADER_NAME, "c.bin"), (UPLOAD, upload), (HEADER_OFFSET, "0"), (HEADER_SIZE, "9")];
        let client = client.clone();
        async move { part(&client, &headers, b"abc").await }
    };
    begin("c1").await.expect("first");
    begin("c2").await.expect("second");
    assert_eq!(code(begin("c3").await), ErrorCode::Busy);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    begin("c3").await.expect("room made by the idle ones");
    let next = [(HEADER_NAME, "c.bin"), (UPLOAD, "c1"), (HEADER_OFFSET, "3"), (HEADER_SIZE, "9")];
    assert_eq!(code(part(&client, &next, b"def").await), ErrorCode::Conflict, "c1 was dropped");
    assert_eq!(std::fs::read_dir(&staging).expect("staging").count(), 1, "only c3 is staged");
}
