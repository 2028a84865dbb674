//! The subscription loads: `entryAdded` over `graphql-transport-ws` on PostgreSQL.
//!
//! 1. 1,000 subscribers, 10 on each of the first 100 holders' accounts, each on a socket of its own. Transfers
//!    among those accounts, closed-loop as the transfer load, in turns with transfers among the next 100 accounts,
//!    which have no subscribers: what the subscribers cost transfers.
//! 2. Transfers among the subscribed accounts paced at a fixed 200 a second (open loop) while the 1,000 subscribers listen: each
//!    transfer writes two entries, each entry reaches its account's 10 subscribers, so 4,000 deliveries a second.
//!    Every delivery is checked against the acknowledged transfers, and timed from the transfer's HTTP
//!    acknowledgement to its receipt; the server's statements meanwhile, less the transfers' own, are divided by
//!    the deliveries.
//! 3. 10,000 idle subscriptions (100 sockets of a banker, 100 subscriptions each) on a fresh server process on the
//!    same database: its memory before and after, and the statements it runs while they idle.
//!
//! A subscription starts from the cursor of its account's second newest entry, so its first event is the newest
//! entry: when it arrives the subscription is running, and the loads start only then. Each paced transfer moves a
//! different amount, which tells its deliveries apart without asking the server for anything more.
//!
//! The subscribers run in this process, on the cores the server and PostgreSQL use, so their side is kept cheap: small
//! read buffers (see `tests::Socket`) and only each event's amount read, borrowed from its text. The server's side is
//! the real one: every delivery is executed, serialised and sent to its own socket.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tests::{Bank, Received, Socket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connections::Dedicated;
use crate::loads::{Client, Loads, pick_pair};
use crate::measure::{Cpu, Load, Measured, percentile_ms, turn};
use crate::report::name;
use crate::server::{MAX_SOCKETS_PER_USER, MAX_SUBSCRIPTIONS_PER_SOCKET, Release, Server};
use crate::{CONCURRENCY, Result, USERS};

/// The accounts subscribed to, and the subscribers on each.
const ACCOUNTS: usize = 100;
const PER_ACCOUNT: usize = 10;
/// The paced load: transfers a second, and for how long.
const RATE: u32 = 200;
const PACED: Duration = Duration::from_secs(10);
/// Connections for the paced transfers: a second's worth, so that a server that falls behind shows it as latency;
/// only one more than a second behind makes a transfer fail (`more clients than connections`).
const PACED_CONNECTIONS: usize = RATE as usize;
/// How long deliveries may trail the last acknowledged transfer before the missing ones count as lost.
const DRAIN: Duration = Duration::from_secs(5);
/// Rounds of the closed-loop turns without and with subscribers.
const ROUNDS: usize = 3;
/// How long the idle subscriptions are held before the server's memory and statements are read.
const IDLE: Duration = Duration::from_secs(2);
/// Opening sockets: at most this many handshakes at once, so the server's listen backlog is not overrun.
const OPENING: usize = 32;

const ENTRY_ADDED: &str =
    "subscription($id: ID!, $after: String) { entryAdded(accountId: $id, after: $after) { node { amount } } }";
const SECOND_NEWEST: &str = "query($id: ID!) { account(id: $id) { entries(first: 2) { edges { cursor } } } }";

/// What the subscription loads found, besides their rows of the table.
#[derive(Debug)]
pub struct Figures {
    pub paced: Paced,
    pub idle: Idle,
}

/// What the paced load delivered.
#[derive(Debug)]
pub struct Paced {
    /// Paced transfers acknowledged, and the deliveries they called for.
    pub transfers: usize,
    pub expected: usize,
    pub delivered: usize,
    pub duplicated: usize,
    /// Deliveries of entries no acknowledged transfer wrote.
    pub unexpected: usize,
    /// Deliveries that arrived before their transfer's acknowledgement (timed as 0).
    pub before_ack: usize,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The server's statements during the paced load, less the transfers' own, per delivery.
    pub statements_per_delivery: Option<f64>,
}

/// What the idle subscriptions cost.
#[derive(Debug)]
pub struct Idle {
    pub subscriptions: usize,
    /// The server's resident memory after they opened less before, per subscription.
    pub kib_per_subscription: Option<f64>,
    /// Statements the server ran while they were held for `seconds`.
    pub statements: Option<u64>,
    pub seconds: f64,
}

impl Paced {
    pub fn missing(&self) -> usize {
        self.expected - self.delivered
    }
}

/// Runs the three loads on `server`, whose bank has at least twice [`ACCOUNTS`] holders; `release` starts the
/// fresh process of the idle load.
pub async fn run(
    release: &Release,
    server: &Server,
    bank: &Arc<Bank>,
    clients: &Dedicated<Client>,
) -> Result<(Vec<Measured>, Figures)> {
    ring(bank, clients).await?;
    let opening = Instant::now();
    let mut subscribers = Subscribers::open(server, bank).await?;
    eprintln!("  {} subscribers running after {:.1} s", ACCOUNTS * PER_ACCOUNT, opening.elapsed().as_secs_f64());
    // Without subscribers: the same transfers among the next 100 accounts, which have none, while the 1,000
    // sockets stay open (opening them takes longer than a turn, too long to do in every round).
    let without = Load::new(name::TRANSFER_WITHOUT_SUBSCRIBERS, Some(server), |rng| {
        bank.transfer(clients, pair_among(ACCOUNTS..2 * ACCOUNTS, rng), 1)
    });
    let with = Load::new(name::TRANSFER_WITH_SUBSCRIBERS, Some(server), |rng| {
        bank.transfer(clients, pair_among(0..ACCOUNTS, rng), 1)
    });
    let (mut without_turns, mut with_turns) = (Vec::new(), Vec::new());
    // Each turn starts once the deliveries of the one before have stopped, so that neither pays for the other's.
    for _ in 0..ROUNDS {
        subscribers.quiet().await;
        without_turns.push(turn(&without).await);
        subscribers.quiet().await;
        with_turns.push(turn(&with).await);
    }
    let without = Measured::from_turns(without.name, &without_turns);
    let with = Measured::from_turns(with.name, &with_turns);
    subscribers.quiet().await;
    let (deliveries, paced) = paced(server, bank, &mut subscribers, without.statements_per_request).await?;
    subscribers.close();
    let fresh = Server::start(release, server.database_url())?;
    fresh.wait_ready().await?;
    let idle = idle(&fresh, bank).await?;
    Ok((vec![without, with, deliveries], Figures { paced, idle }))
}

/// Two different holders' indexes in `range`.
fn pair_among(range: std::ops::Range<usize>, rng: &mut rand::rngs::ThreadRng) -> (usize, usize) {
    let (from, to) = pick_pair(range.len(), rng);
    (range.start + from, range.start + to)
}

/// One transfer from each account to the next: every account then has two entries more than its deposit, so the
/// cursor of its second newest entry exists. A transfer the server fails is said and tried again, twice at most.
async fn ring(bank: &Arc<Bank>, clients: &Dedicated<Client>) -> Result<()> {
    let accounts = bank.holders.len();
    let transfers = (0..accounts).map(|from| async move {
        let pair = (from, (from + 1) % accounts);
        let mut tries = 1;
        loop {
            match bank.transfer(clients, pair, 1).await {
                Err(err) if tries < 3 => eprintln!("  the ring's transfer {pair:?} failed ({err}); again"),
                outcome => return outcome,
            }
            tries += 1;
        }
    });
    let done: Vec<Result<()>> = futures::stream::iter(transfers).buffer_unordered(CONCURRENCY).collect().await;
    done.into_iter().collect()
}

/// The cursor of each account's second newest entry, asked as `token`'s holder: a subscription after it first
/// sends the newest entry.
async fn second_newest(server: &Server, bank: &Bank, accounts: usize, token: Option<&str>) -> Result<Vec<String>> {
    let asking = bank.holders[..accounts].iter().map(|holder| async move {
        let data =
            server.graphql(SECOND_NEWEST, json!({ "id": holder.account }), token.unwrap_or(&holder.token)).await?;
        let cursor = data.pointer("/account/entries/edges/1/cursor").and_then(Value::as_str);
        Ok(cursor.ok_or("an account with fewer than two entries")?.to_owned())
    });
    let cursors: Vec<Result<String>> = futures::stream::iter(asking).buffered(CONCURRENCY).collect().await;
    cursors.into_iter().collect()
}

/// A delivery as a subscriber received it.
struct Receipt {
    subscriber: usize,
    /// The entry's amount: each paced transfer's is its own.
    amount: i64,
    at: Instant,
}

/// The amount of the entry an event carries. The load generator shares the server's two cores, so its subscribers
/// read only this, borrowed from the message's text, rather than building each message as a JSON value.
fn amount(text: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        payload: Payload<'a>,
    }
    #[derive(Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        data: Data<'a>,
    }
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(rename = "entryAdded", borrow)]
        entry_added: Edge<'a>,
    }
    #[derive(Deserialize)]
    struct Edge<'a> {
        #[serde(borrow)]
        node: Node<'a>,
    }
    #[derive(Deserialize)]
    struct Node<'a> {
        amount: &'a str,
    }
    serde_json::from_str::<Message<'_>>(text).ok()?.payload.data.entry_added.node.amount.parse().ok()
}

/// The 1,000 subscribers, each on a socket of its own as its account's holder, reading their events as they come.
struct Subscribers {
    readers: Vec<JoinHandle<()>>,
    receipts: mpsc::UnboundedReceiver<Receipt>,
}

impl Subscribers {
    /// Subscriber `s` listens to account `s % ACCOUNTS`; returns once every subscription is running.
    async fn open(server: &Server, bank: &Bank) -> Result<Self> {
        let cursors = second_newest(server, bank, ACCOUNTS, None).await?;
        let sockets: Vec<(usize, Socket)> = futures::stream::iter(0..ACCOUNTS * PER_ACCOUNT)
            .map(|s| {
                let (holder, after) = (&bank.holders[s % ACCOUNTS], &cursors[s % ACCOUNTS]);
                async move {
                    let mut socket = Socket::connect(&server.base, &holder.token).await;
                    socket.subscribe("1", ENTRY_ADDED, json!({ "id": holder.account, "after": after })).await;
                    socket.next_payload("1").await;
                    (s, socket)
                }
            })
            .buffer_unordered(OPENING)
            .collect()
            .await;
        let (sender, receipts) = mpsc::unbounded_channel();
        let readers = sockets
            .into_iter()
            .map(|(subscriber, mut socket)| {
                let sender = sender.clone();
                tokio::spawn(async move {
                    while let Some(text) = socket.receive_text().await {
                        if let Some(amount) = amount(&text) {
                            let _ = sender.send(Receipt { subscriber, amount, at: Instant::now() });
                        }
                    }
                })
            })
            .collect();
        Ok(Self { readers, receipts })
    }

    /// Waits until deliveries have stopped for half a second, and forgets those received.
    async fn quiet(&mut self) {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), self.receipts.recv()).await {}
    }

    /// Drops every socket (the server sees them go).
    fn close(self) {
        for reader in self.readers {
            reader.abort();
        }
    }
}

/// A paced transfer the server acknowledged.
struct Ack {
    from: usize,
    to: usize,
    at: Instant,
}

/// The paced load (2. above): its row of the table and the figures.
async fn paced(
    server: &Server,
    bank: &Arc<Bank>,
    subscribers: &mut Subscribers,
    statements_per_transfer: Option<f64>,
) -> Result<(Measured, Paced)> {
    let clients = server.clients(PACED_CONNECTIONS).await?;
    let count = (PACED.as_secs_f64() * f64::from(RATE)) as i64;
    let statements_before = server.statements().await;
    let cpu_before = Cpu::used(Some(server.pid()));
    let mut pace = tokio::time::interval(Duration::from_secs(1) / RATE);
    let mut sending = Vec::with_capacity(count as usize);
    // Each transfer moves its own amount, 2, 3, 4, … (the closed-loop turns' transfers move 1).
    for amount in 2..count + 2 {
        pace.tick().await;
        let (from, to) = pick_pair(ACCOUNTS, &mut rand::rng());
        let request = bank.transfer(&clients, (from, to), amount);
        sending
            .push(tokio::spawn(async move { (amount, request.await.map(|()| Ack { from, to, at: Instant::now() })) }));
    }
    let mut acks: HashMap<i64, Ack> = HashMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for sent in futures::future::join_all(sending).await {
        match sent {
            Ok((amount, Ok(ack))) => {
                acks.insert(amount, ack);
            }
            Ok((_, Err(err))) => *errors.entry(err.to_string()).or_default() += 1,
            Err(join) => *errors.entry(join.to_string()).or_default() += 1,
        }
    }
    let expected = acks.len() * 2 * PER_ACCOUNT;
    let last_ack = acks.values().map(|a| a.at).max().unwrap_or_else(Instant::now);
    let mut receipts = Vec::with_capacity(expected);
    while receipts.len() < expected {
        match tokio::time::timeout_at((last_ack + DRAIN).into(), subscribers.receipts.recv()).await {
            Ok(Some(receipt)) => receipts.push(receipt),
            Ok(None) | Err(_) => break,
        }
    }
    let cpu = Cpu::used(Some(server.pid())).minus(cpu_before);
    let statements = server.statements().await.zip(statements_before).map(|(after, before)| after - before);

    // Each receipt against the transfer that wrote its entry: once, to a subscriber of one of its two accounts.
    let mut seen: HashMap<(usize, i64), usize> = HashMap::new();
    let (mut unexpected, mut before_ack) = (0, 0);
    let mut latencies = Vec::with_capacity(receipts.len());
    for receipt in &receipts {
        let account = receipt.subscriber % ACCOUNTS;
        match acks.get(&receipt.amount.abs()) {
            Some(ack) if ack.from == account || ack.to == account => {
                *seen.entry((receipt.subscriber, receipt.amount)).or_default() += 1;
                before_ack += usize::from(receipt.at < ack.at);
                latencies.push(receipt.at.saturating_duration_since(ack.at));
            }
            _ => unexpected += 1,
        }
    }
    latencies.sort();
    let delivered = seen.len();
    let duplicated = seen.values().map(|n| n - 1).sum();
    let seconds = count as f64 / f64::from(RATE);
    let statements_per_delivery = statements
        .zip(statements_per_transfer)
        .map(|(all, per_transfer)| (all as f64 - count as f64 * per_transfer) / delivered.max(1) as f64);
    if delivered < expected {
        *errors.entry("deliveries missing".to_owned()).or_default() += (expected - delivered) as u64;
    }
    let figures = Paced {
        transfers: acks.len(),
        expected,
        delivered,
        duplicated,
        unexpected,
        before_ack,
        seconds,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        statements_per_delivery,
    };
    let throughput = delivered as f64 / seconds;
    eprintln!("  measured {}: {throughput:.0}/s", name::DELIVERIES);
    let row = Measured {
        name: name::DELIVERIES.to_owned(),
        throughput,
        turn_throughputs: vec![throughput],
        p50_ms: figures.p50_ms,
        p99_ms: figures.p99_ms,
        errors,
        requests: delivered as u64,
        rss_mb: server.rss_mb(),
        cpu_us: (delivered > 0).then(|| cpu.per(delivered as f64)),
        statements_per_request: statements_per_delivery,
    };
    Ok((row, figures))
}

/// The idle load (3. above) on `server`, a process that has served nothing yet.
async fn idle(server: &Server, bank: &Bank) -> Result<Idle> {
    let sockets = MAX_SOCKETS_PER_USER;
    let per_socket = MAX_SUBSCRIPTIONS_PER_SOCKET;
    let cursors = second_newest(server, bank, USERS, Some(&bank.banker)).await?;
    let before = server.rss_mb();
    let opening = Instant::now();
    // Socket k holds the accounts k, k + 1, …, k + 99 (modulo all the bank's accounts).
    let held: Vec<Socket> = futures::stream::iter(0..sockets)
        .map(|k| {
            let cursors = &cursors;
            async move {
                let mut socket = Socket::connect(&server.base, &bank.banker).await;
                for j in 0..per_socket {
                    let account = (k + j) % USERS;
                    let variables = json!({ "id": bank.holders[account].account, "after": cursors[account] });
                    socket.subscribe(&j.to_string(), ENTRY_ADDED, variables).await;
                }
                for _ in 0..per_socket {
                    match socket.receive().await {
                        Received::Message(message) if message["type"] == "next" => {}
                        other => panic!("expected the newest entry, got {other:?}"),
                    }
                }
                socket
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    eprintln!("  {} idle subscriptions running after {:.1} s", sockets * per_socket, opening.elapsed().as_secs_f64());
    let statements_before = server.statements().await;
    tokio::time::sleep(IDLE).await;
    let statements = server.statements().await.zip(statements_before).map(|(after, before)| after - before);
    let after = server.rss_mb();
    drop(held);
    let subscriptions = sockets * per_socket;
    Ok(Idle {
        subscriptions,
        kib_per_subscription: after.zip(before).map(|(after, before)| (after - before) * 1024.0 / subscriptions as f64),
        statements,
        seconds: IDLE.as_secs_f64(),
    })
}
