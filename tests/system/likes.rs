//! Likes: three real `agora-likes` nodes on a real nats-server. Counts are exact and the same
//! on every node after concurrent load, a node killed mid-load, a node cut off from NATS, and
//! the leader's death.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_devtools::process::{Component, component_binary};
use agora_nats::likes::wire::NodesReply;
use agora_nats::subjects::likes as subject;
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::{POLL, System, TEST_LIKES_LEASE_MS, code, eventually, wait_until};
use bytes::Bytes;
use futures::StreamExt;

/// Waits until `nodes` nodes all report exactly `expected`; returns how long that took.
async fn agree(
    client: &AgoraClient,
    expected: &BTreeMap<String, u64>,
    nodes: usize,
    within: Duration,
) -> Duration {
    let items: Vec<String> = expected.keys().cloned().collect();
    let started = Instant::now();
    eventually(within, POLL, async || {
        let digests = client
            .likes_digests(Duration::from_millis(500), &items, Some(nodes))
            .await
            .map_err(|e| e.to_string())?;
        if digests.len() == nodes && digests.iter().all(|d| &d.counts == expected) {
            Ok(started.elapsed())
        } else {
            Err(format!("the nodes did not agree on {expected:?}: {digests:#?}"))
        }
    })
    .await
}

/// Likes until accepted: a user's like is idempotent, so a retry after a lost reply is safe.
async fn like_until_accepted(client: &AgoraClient, item: &str, user: &str) {
    for _ in 0..200 {
        match client.like(item, Some(user)).await {
            Ok(_) => return,
            Err(error) if error.code() == ErrorCode::InvalidRequest => panic!("{error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("{user}'s like of {item} was never accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_exactly_on_ten_thousand_concurrent_likes() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 1_250;
    const ITEMS: usize = 5;
    let system = System::with_likes(3);
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        // 10,000 likes at once on a shared 2-core machine: a like may wait longer than the
        // usual 3 s; what is asserted is that every one is accepted and counted exactly.
        let client = system.client().await.with_timeout(Duration::from_secs(20));
        load.push(tokio::spawn(async move {
            let results: Vec<Result<String, ClientError>> = futures::stream::iter(0..PER_CLIENT)
                .map(|i| {
                    let client = client.clone();
                    async move {
                        let item = format!("post-{}", (c + i) % ITEMS);
                        // Every third like is a user's, the rest anonymous.
                        let user = (i % 3 == 0).then(|| format!("u{c}-{i}"));
                        client.like(&item, user.as_deref()).await.map(|_| item)
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            results
        }));
    }
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for task in load {
        for result in task.await.expect("load task") {
            *expected.entry(result.expect("every like is accepted")).or_default() += 1;
        }
    }
    assert_eq!(expected.values().sum::<u64>(), (CLIENTS * PER_CLIENT) as u64);
    // A user's like sent again does not count twice, on whichever node takes it.
    let client = system.client().await;
    for c in 0..CLIENTS {
        let again = client
            .like(&format!("post-{}", c % ITEMS), Some(&format!("u{c}-0")))
            .await
            .expect("ok");
        assert_eq!((again.changed, again.liked), (Some(false), Some(true)));
    }
    let took = agree(&client, &expected, 3, Duration::from_secs(10)).await;
    eprintln!("10,000 likes: every node agreed {took:?} after the load");
    let digests = client.likes_digests(Duration::from_secs(1), &[], Some(3)).await.expect("ok");
    for digest in &digests {
        assert!(digest.accepted > 1_000, "every node took a share of the load: {digest:?}");
        assert_eq!(digest.likes, 10_000);
    }
    let top = client.top_likes(ITEMS).await.expect("top");
    let counts: BTreeMap<String, u64> =
        top.items.iter().map(|item| (item.item.clone(), item.count)).collect();
    assert_eq!(counts, expected);
    assert!(top.items.windows(2).all(|w| w[0].count >= w[1].count), "most liked first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_load_and_restarted_ends_with_exact_totals_everywhere() {
    const CLIENTS: usize = 6;
    const PER_CLIENT: usize = 600;
    const ITEMS: usize = 4;
    let mut system = System::with_likes(3);
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        let client = system.client().await.with_timeout(Duration::from_secs(1));
        let accepted = accepted.clone();
        load.push(tokio::spawn(async move {
            futures::stream::iter(0..PER_CLIENT)
                .for_each_concurrent(16, |i| {
                    let (client, accepted) = (client.clone(), accepted.clone());
                    async move {
                        let item = format!("item-{}", i % ITEMS);
                        like_until_accepted(&client, &item, &format!("k{c}-{i}")).await;
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await;
        }));
    }
    let total = CLIENTS * PER_CLIENT;
    let load_runs = Duration::from_secs(60);
    wait_until(load_runs, "a quarter of the likes", async || {
        accepted.load(Ordering::Relaxed) >= total / 4
    })
    .await;
    tokio::task::block_in_place(|| system.kill_likes(1));
    let killed_at = accepted.load(Ordering::Relaxed);
    wait_until(load_runs, "another quarter of the likes", async || {
        accepted.load(Ordering::Relaxed) >= killed_at + total / 4
    })
    .await;
    // The fault hit the load: likes were still coming while the node was dead.
    let restarting_at = accepted.load(Ordering::Relaxed);
    assert!(restarting_at < total, "the load was over before the restart");
    tokio::task::block_in_place(|| system.start_likes(1));
    for task in load {
        tokio::time::timeout(load_runs, task)
            .await
            .expect("the load ends")
            .expect("every like was accepted");
    }
    let expected: BTreeMap<String, u64> =
        (0..ITEMS).map(|i| (format!("item-{i}"), (total / ITEMS) as u64)).collect();
    let client = system.client().await;
    let took = agree(&client, &expected, 3, Duration::from_secs(20)).await;
    eprintln!("kill -9 and restart: every node agreed {took:?} after the load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_catches_up_by_anti_entropy_alone() {
    let mut system = System::nats_only();
    system.add_likes(false);
    system.add_likes(false);
    let cut_off = system.add_likes(true);
    let client = system.client().await;
    for i in 0..30 {
        client.like("before", Some(&format!("b{i}"))).await.expect("like");
    }
    let before = BTreeMap::from([("before".to_owned(), 30)]);
    agree(&client, &before, 3, Duration::from_secs(10)).await;

    system.likes_proxies[cut_off].as_ref().expect("proxied").cut();
    // Wait until the server dropped the node: then no like can reach it.
    wait_until(Duration::from_secs(10), "the node is disconnected", async || {
        client.likes_digests(Duration::from_millis(300), &[], None).await.expect("ok").len() == 2
    })
    .await;
    let mut expected = BTreeMap::from([("before".to_owned(), 30), ("during".to_owned(), 0)]);
    for i in 0..400 {
        let user = (i % 2 == 0).then(|| format!("d{i}"));
        client.like("during", user.as_deref()).await.expect("the other nodes take likes");
        *expected.get_mut("during").expect("present") += 1;
    }
    for i in 0..10 {
        client.unlike("before", Some(&format!("b{i}"))).await.expect("unlike");
    }
    *expected.get_mut("before").expect("present") -= 10;
    agree(&client, &expected, 2, Duration::from_secs(10)).await;

    // Healed, with no like after it: only anti-entropy can bring the node up to date.
    system.likes_proxies[cut_off].as_ref().expect("proxied").heal();
    let took = agree(&client, &expected, 3, Duration::from_secs(20)).await;
    eprintln!("partition healed: the cut-off node agreed after {took:?}");
    let digests = client.likes_digests(Duration::from_secs(1), &[], Some(3)).await.expect("ok");
    let node = digests.iter().find(|d| d.node == format!("likes-{cut_off}")).expect("back");
    assert!(node.syncs > 0 && node.last_sync_from.is_some(), "it pulled: {node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_silently_missed_events_converges_by_the_leaders_round() {
    let mut system = System::nats_only();
    system.add_likes(false);
    system.add_likes(false);
    let deaf = system.add_likes(true);
    let proxy = system.likes_proxies[deaf].as_ref().expect("proxied");
    let client = system.client().await;
    // Its connection stays up, but no other node's event reaches it: a lost subscription's worth
    // of messages, with no disconnect to tell it.
    proxy.drop_messages(Some("agora.likes.events."));
    let expected = BTreeMap::from([("missed".to_owned(), 300)]);
    // All at once, so the load ends well within one leader round: a round only orders a pull
    // for what a node still lacks of the coverage seen a round earlier, so the node is still
    // behind when the digests are read (sent one by one on a loaded machine, the likes took
    // longer than a round and the leader repaired the node before it could be seen behind).
    futures::stream::iter(0..300)
        .map(|i| {
            let client = &client;
            async move {
                let user = (i % 3 == 0).then(|| format!("m{i}"));
                client.like("missed", user.as_deref()).await.expect("like");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let digests = client
        .likes_digests(Duration::from_secs(1), &["missed".to_owned()], Some(3))
        .await
        .expect("digests");
    let behind = digests.iter().find(|d| d.node == format!("likes-{deaf}")).expect("listed");
    assert!(behind.counts["missed"] < 300, "it missed the others' likes: {behind:?}");
    // Events flow again, but no like follows: no gap shows, no reconnect happens. Only the
    // leader's periodic round can tell the node what it lacks.
    proxy.drop_messages(None);
    let took = agree(&client, &expected, 3, Duration::from_secs(10)).await;
    eprintln!("the deaf node agreed {took:?} after events flowed again");
    let digests = client.likes_digests(Duration::from_secs(1), &[], Some(3)).await.expect("ok");
    let node = digests.iter().find(|d| d.node == format!("likes-{deaf}")).expect("listed");
    assert!(node.syncs > 0, "it pulled on the leader's order: {node:?}");
}

/// The leader's `agora.likes.nodes` answer once it lists `nodes` nodes.
async fn nodes_reply(client: &AgoraClient, nodes: usize, within: Duration) -> NodesReply {
    eventually(within, Duration::from_millis(20), async || match client.like_nodes().await {
        Ok(reply) if reply.nodes.len() == nodes => Ok(reply),
        other => Err(format!("no leader listing {nodes} nodes: {other:?}")),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_is_replaced_within_the_lease_and_likes_never_wait_for_it() {
    let mut system = System::with_likes(3);
    let client = system.client().await.with_timeout(Duration::from_secs(1));
    let before = nodes_reply(&client, 3, Duration::from_secs(10)).await;
    assert!(before.nodes.iter().any(|n| n.leader && n.node == before.leader.node));
    let index: usize =
        before.leader.node.trim_start_matches("likes-").parse().expect("a test node id");

    system.kill_likes(index);
    let killed = Instant::now();
    let mut likes_while_leaderless = 0;
    let after = eventually(Duration::from_secs(10), Duration::from_millis(10), async || {
        // Likes go on while there is no leader.
        client.like("leaderless", None).await.expect("a like needs no leader");
        likes_while_leaderless += 1;
        match client.like_nodes().await {
            Ok(reply) if reply.leader.node != before.leader.node => Ok(reply),
            other => Err(format!("no new leader: {other:?}")),
        }
    })
    .await;
    let took = killed.elapsed();
    eprintln!(
        "new leader {} after {took:?} ({likes_while_leaderless} likes meanwhile)",
        after.leader.node
    );
    assert!(after.leader.epoch > before.leader.epoch, "a new leadership has a larger epoch");
    // Within the lease, plus one follower poll (a tenth of it) and the first round (200 ms).
    assert!(
        took <= Duration::from_millis(TEST_LIKES_LEASE_MS + TEST_LIKES_LEASE_MS / 10 + 500),
        "new leader after {took:?}"
    );
    let listed = nodes_reply(&client, 2, Duration::from_secs(5)).await;
    assert!(listed.nodes.iter().all(|n| n.node != before.leader.node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_are_idempotent_per_user_and_unlikes_take_back_only_ones_own() {
    let system = System::with_likes(3);
    let client = system.client().await;
    let liked = client.like("photo", Some("alice")).await.expect("like");
    assert_eq!((liked.count, liked.liked, liked.changed), (1, Some(true), Some(true)));
    let again = client.like("photo", Some("alice")).await.expect("like again");
    assert_eq!((again.count, again.changed), (1, Some(false)));
    client.like("photo", None).await.expect("anonymous");
    // Bob never liked it: his unlike changes nothing.
    let bob = client.unlike("photo", Some("bob")).await.expect("unlike");
    assert_eq!((bob.count, bob.liked, bob.changed), (2, Some(false), Some(false)));
    let alice = client.unlike("photo", Some("alice")).await.expect("unlike");
    assert_eq!((alice.count, alice.changed), (1, Some(true)));
    assert_eq!(client.unlike("photo", Some("alice")).await.expect("twice").count, 1);
    // An anonymous like cannot be taken back: no count goes below what users intended.
    let anonymous = client.request_bytes(&subject::unlike("photo"), Bytes::new()).await;
    assert_eq!(code(anonymous), ErrorCode::InvalidRequest);
    // One user's like and unlike alternating, each on whichever node: the last one holds.
    for round in 0..20 {
        if round % 2 == 0 {
            client.like("flip", Some("carol")).await.expect("like");
        } else {
            client.unlike("flip", Some("carol")).await.expect("unlike");
        }
        let count = client.like_count("flip", Some("carol")).await.expect("count");
        // Counted on any node right after: that node may not have the last event yet, so only
        // the end state is checked everywhere below.
        assert!(count.count <= 1);
    }
    client.like("flip", Some("carol")).await.expect("like");
    let expected = BTreeMap::from([("photo".to_owned(), 1), ("flip".to_owned(), 1)]);
    agree(&client, &expected, 3, Duration::from_secs(10)).await;
    let count = client.like_count("flip", Some("carol")).await.expect("count");
    assert_eq!((count.count, count.liked), (1, Some(true)));
    // Each node's `$SRV.STATS` shows what it holds and its coverage.
    let stats = client.request_bytes("$SRV.STATS.agora-likes", Bytes::new()).await.expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats).expect("JSON");
    let like = stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "like"))
        .expect("a like endpoint");
    assert_eq!(like["data"]["node"]["items"], 2, "{like}");
    assert!(like["data"]["node"]["vector"].as_object().is_some_and(|v| !v.is_empty()), "{like}");
    let info = client.request_bytes("$SRV.INFO.agora-likes", Bytes::new()).await.expect("info");
    let info: serde_json::Value = serde_json::from_slice(&info).expect("JSON");
    assert!(info["metadata"]["node"].as_str().is_some_and(|n| n.starts_with("likes-")), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_coded_errors_and_the_nodes_keep_serving() {
    let system = System::with_likes(3);
    let client = system.client().await;
    let long_item = "i".repeat(65);
    let cases: Vec<(String, &str)> = vec![
        (subject::like("p"), "not json"),
        (subject::like("p"), r#"{"user":""}"#),
        (subject::like("p"), r#"{"user":"has space"}"#),
        (subject::like("p"), r#"{"user":"a","extra":true}"#),
        (subject::like("p"), r#"{"user":["a"]}"#),
        (subject::like(&long_item), ""),
        (subject::like("bad$item"), ""),
        (subject::unlike("p"), ""),
        (subject::unlike("p"), r#"{"user":null}"#),
        (subject::count("p"), r#"{"users":"a"}"#),
        (subject::TOP_SUBJECT.to_owned(), r#"{"limit":0}"#),
        (subject::TOP_SUBJECT.to_owned(), r#"{"limit":-1}"#),
        (subject::TOP_SUBJECT.to_owned(), r#"{"limit":"ten"}"#),
        (subject::sync("likes-0"), ""),
        (subject::sync("likes-0"), r#"{"node":"x","vector":{"not a node":1}}"#),
        (subject::sync("likes-0"), r#"{"node":"x.y","vector":{}}"#),
        (subject::DIGEST_SUBJECT.to_owned(), r#"{"items":["a b"]}"#),
        (subject::DIGEST_SUBJECT.to_owned(), r#"{"nodes":[]}"#),
    ];
    for (subject, payload) in &cases {
        let result = client.request_bytes(subject, Bytes::from(payload.to_string())).await;
        assert_eq!(code(result), ErrorCode::InvalidRequest, "{subject} {payload}");
    }
    let huge = format!(r#"{{"user":"{}"}}"#, "u".repeat(5_000));
    assert_eq!(
        code(client.request_bytes(&subject::like("p"), Bytes::from(huge)).await),
        ErrorCode::InvalidRequest
    );
    // Nothing was counted, and every node still serves.
    let digests = client
        .likes_digests(Duration::from_secs(1), &["p".to_owned()], Some(3))
        .await
        .expect("digests");
    assert_eq!(digests.len(), 3);
    assert!(digests.iter().all(|d| d.counts["p"] == 0 && d.likes == 0), "{digests:?}");
    assert_eq!(client.like("p", Some("ok")).await.expect("serving").count, 1);

    // Two processes with one node id would number their batches alike: the second refuses.
    let binary = component_binary("agora-likes").expect("built");
    let start = |dir: &str, id: &str| {
        let args: Vec<String> = [
            "--server",
            system.url(),
            "--data-dir",
            &system.dir.path().join(dir).display().to_string(),
            "--node-id",
            id,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Component::start("refused", &binary, &args, &[], &system.dir.path().join("logs"))
    };
    // A new node taking a registered id: its new key is not the registered one.
    let twin = start("twin", "likes-0").expect_err("a second likes-0 is refused");
    assert!(twin.to_string().contains("registered with another signing key"), "{twin:#}");
    // A copy of a running node's directory has its key: the running node answers with the id.
    copy_dir(&system.dir.path().join("likes-0"), &system.dir.path().join("copy"));
    let copied = start("copy", "likes-0").expect_err("a copy of likes-0 is refused");
    assert!(copied.to_string().contains("another likes node with id likes-0"), "{copied:#}");
    // Another node's directory: held while that node runs; a copy of it keeps its node id.
    let held = start("likes-1", "likes-9").expect_err("a running node's directory is refused");
    assert!(held.to_string().contains("is in use by another process"), "{held:#}");
    copy_dir(&system.dir.path().join("likes-1"), &system.dir.path().join("other"));
    let stolen = start("other", "likes-9").expect_err("another node's directory is refused");
    assert!(stolen.to_string().contains("belongs to likes node likes-1"), "{stolen:#}");
}

/// Copies the files of a node's data directory (its database, WAL and lock file) to `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for entry in std::fs::read_dir(from).expect("the node's files") {
        let entry = entry.expect("a file");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copied");
    }
}

/// Publishes one batch of `events` (all of one origin and batch) as a node would: the last
/// event carries `signer`'s signature of the batch (none without a signer).
async fn publish_batch(
    client: &AgoraClient,
    origin: &str,
    batch: u64,
    events: &[agora_nats::likes::wire::LikeEvent],
    signer: Option<&nkeys::KeyPair>,
) {
    use agora_nats::likes::trust::{batch_digest, signed};
    let payloads: Vec<Vec<u8>> =
        events.iter().map(|e| serde_json::to_vec(e).expect("JSON")).collect();
    let digest = batch_digest(origin, batch, payloads.iter().map(Vec::as_slice));
    for (index, (event, payload)) in events.iter().zip(payloads).enumerate() {
        let subject = subject::events(&event.item);
        let last = index + 1 == events.len();
        match signer.filter(|_| last) {
            Some(key) => client
                .nats()
                .publish_with_headers(subject, signed(key, &digest), payload.into())
                .await
                .expect("published"),
            None => client.nats().publish(subject, payload.into()).await.expect("published"),
        }
    }
    client.nats().flush().await.expect("flushed");
}

fn counter_event(
    item: &str,
    origin: &str,
    batch: u64,
    total: u64,
) -> agora_nats::likes::wire::LikeEvent {
    agora_nats::likes::wire::LikeEvent {
        item: item.to_owned(),
        count: total,
        origin: origin.to_owned(),
        batch,
        parts: 1,
        total: Some(total),
        users: Vec::new(),
    }
}

/// Waits until every node's `refused` count reached `at_least` (and returns the digests).
async fn refused_at_least(
    client: &AgoraClient,
    nodes: usize,
    at_least: impl Fn(&str) -> u64,
) -> Vec<agora_nats::likes::wire::NodeDigest> {
    eventually(Duration::from_secs(20), POLL, async || {
        let digests = client
            .likes_digests(Duration::from_millis(500), &["p".into(), "q".into()], Some(nodes))
            .await
            .map_err(|e| e.to_string())?;
        if digests.len() == nodes && digests.iter().all(|d| d.refused >= at_least(&d.node)) {
            Ok(digests)
        } else {
            Err(format!("refusals not counted: {digests:#?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_merges_only_what_its_origin_signed_and_a_batch_can_hold() {
    use agora_nats::likes::trust::{page_digest, signed};
    let system = System::with_likes(2);
    let client = system.client().await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let roster = js.get_key_value(subject::NODES_BUCKET).await.expect("the roster exists");
    for node in ["likes-0", "likes-1"] {
        let entry = roster.entry(node).await.expect("read").expect("every node registered");
        assert!(String::from_utf8_lossy(&entry.value).starts_with('U'), "an nkey: {entry:?}");
    }
    // The test plays a node that exists (registered with its own key)...
    let rogue = nkeys::KeyPair::new_user();
    roster.create("rogue", rogue.public_key().into()).await.expect("registered");
    // ...and one that does not.
    let ghost = nkeys::KeyPair::new_user();

    // 1. Unsigned: "likes-1 took a million likes".
    publish_batch(&client, "likes-1", 1, &[counter_event("p", "likes-1", 1, 1_000_000)], None)
        .await;
    // 2. Claiming to be likes-1, signed by another key.
    let forged = counter_event("p", "likes-1", 1, 1_000_000);
    publish_batch(&client, "likes-1", 1, &[forged], Some(&rogue)).await;
    // 3. A node that is not in the roster, signing its own batch.
    publish_batch(&client, "ghost", 1, &[counter_event("p", "ghost", 1, 500)], Some(&ghost)).await;
    // 4. A node that exists, signed, but more likes than one batch can hold.
    publish_batch(&client, "rogue", 1, &[counter_event("p", "rogue", 1, 1_000_000)], Some(&rogue))
        .await;
    // 5. A batch whose last part never comes (so neither does its signature).
    let mut half = counter_event("q", "rogue", 2, 7);
    half.parts = 2;
    publish_batch(&client, "rogue", 2, &[half], None).await;
    // 6. What rogue can hold: 5 likes in batch 3.
    publish_batch(&client, "rogue", 3, &[counter_event("p", "rogue", 3, 5)], Some(&rogue)).await;

    // Batches are merged in order per origin: once the last one counts, the others were judged.
    let expected = BTreeMap::from([("p".to_owned(), 5), ("q".to_owned(), 0)]);
    agree(&client, &expected, 2, Duration::from_secs(20)).await;
    // likes-0 refused all four; likes-1 takes no event of its own id from anyone, so it
    // judged only the ghost's and rogue's.
    let refused =
        |zero: u64, one: u64| move |node: &str| if node == "likes-0" { zero } else { one };
    refused_at_least(&client, 2, refused(4, 2)).await;

    // Sync pages: likes-0 is told to pull from rogue; the test answers as rogue.
    let mut requests = client.nats().subscribe(subject::sync("rogue")).await.expect("subscribed");
    agora_nats::client::barrier(client.nats()).await.expect("barrier");
    let page = |node: &str, counters: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "node": node,
            "vector": {"likes-1": 900, "rogue": 3, "ghost": 9},
            "counters": counters,
        }))
        .expect("JSON")
    };
    let huge =
        serde_json::json!([{"item": "q", "node": "likes-1", "total": 1_000_000, "batch": 1}]);
    let ghostly = serde_json::json!([{"item": "q", "node": "ghost", "total": 3, "batch": 1}]);
    let answers: Vec<(Vec<u8>, &nkeys::KeyPair, &str)> = vec![
        (page("rogue", ghostly.clone()), &ghost, "signed by another key"),
        (page("likes-1", ghostly.clone()), &rogue, "answered as another node"),
        (page("rogue", huge), &rogue, "more than a batch can hold"),
        (page("rogue", ghostly), &rogue, "a record of a node that does not exist"),
    ];
    for (index, (payload, key, what)) in answers.into_iter().enumerate() {
        let order = serde_json::json!({"leader": "x", "epoch": 1_000_000, "from": ["rogue"]});
        client
            .nats()
            .publish(subject::pull("likes-0"), order.to_string().into())
            .await
            .expect("ordered");
        let reply = loop {
            let request = tokio::time::timeout(Duration::from_secs(20), requests.next())
                .await
                .unwrap_or_else(|_| panic!("likes-0 pulls from rogue ({what})"))
                .expect("a request");
            let asked: serde_json::Value = serde_json::from_slice(&request.payload).expect("JSON");
            if asked["node"] == "likes-0" {
                break request.reply.expect("a reply subject");
            }
        };
        let headers = signed(key, &page_digest("rogue", &payload));
        client.nats().publish_with_headers(reply, headers, payload.into()).await.expect("answered");
        refused_at_least(&client, 2, refused(5 + index as u64, 2)).await;
    }
    // Nothing of it was taken, coverage included: likes-1's own batches still count.
    agree(&client, &expected, 2, Duration::from_secs(5)).await;
    let liked = client.like("q", Some("amy")).await.expect("a real like");
    assert_eq!(liked.count, 1);
    let expected = BTreeMap::from([("p".to_owned(), 5), ("q".to_owned(), 1)]);
    agree(&client, &expected, 2, Duration::from_secs(20)).await;
    // A revoked node's batches are refused from then on.
    roster.delete("rogue").await.expect("revoked");
    let digests = eventually(Duration::from_secs(20), Duration::from_millis(200), async || {
        publish_batch(&client, "rogue", 4, &[counter_event("p", "rogue", 4, 6)], Some(&rogue))
            .await;
        let digests = client
            .likes_digests(Duration::from_millis(500), &["p".into()], Some(2))
            .await
            .map_err(|e| e.to_string())?;
        if digests.iter().all(|d| d.refused >= refused(9, 3)(&d.node)) {
            Ok(digests)
        } else {
            Err(format!("the revoked node was not refused: {digests:#?}"))
        }
    })
    .await;
    assert!(digests.iter().all(|d| d.counts["p"] == 5), "{digests:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_table_shows_likes_answered_before_it_was_asked() {
    let system = System::with_likes(3);
    let client = system.client().await;
    nodes_reply(&client, 3, Duration::from_secs(20)).await;
    let mut took: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..5u64 {
        for _ in 0..6 {
            let reply = client.like(&format!("fresh-{round}"), None).await.expect("liked");
            *took.entry(reply.node).or_default() += 1;
        }
        let asked_ms = agora_nats::clock::now_ms();
        let table = client.like_nodes().await.expect("the leader answers");
        assert!(table.as_of_ms + 5 >= asked_ms, "a table from before the question: {table:?}");
        for (node, likes) in &took {
            let digest = table.nodes.iter().find(|d| &d.node == node).expect("every node");
            // What a node answered is in its own digest at once.
            assert!(digest.accepted >= *likes, "{node} took {likes}: {digest:?}");
            assert!(digest.likes >= *likes, "{node} took {likes}: {digest:?}");
        }
    }
}
