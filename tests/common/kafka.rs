//! A real Kafka-protocol broker for tests: tansu (crates.io, in-memory storage), started per
//! test on free loopback ports; `scripts/test` installs it. Read and written through
//! librdkafka, as any Kafka client would.
//!
//! tansu 0.6 answers a fetch that starts inside a record batch with the batches after it, and
//! reports a high watermark below its last offset (Kafka returns the whole batch and the
//! client skips what it already has). A consumer that goes on from a committed offset or
//! after a pause would then miss messages for the broker's sake, so whatever the tests
//! produce goes one message per record batch (`batch.num.messages = 1`).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub struct Broker {
    pub port: u16,
    child: Option<Child>,
}

/// One message read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// The tansu binary: `$SLUICE_TANSU`, else where `scripts/test` installs it, else `PATH`.
fn program() -> String {
    if let Ok(path) = std::env::var("SLUICE_TANSU") {
        return path;
    }
    let installed = "/var/tmp/sluice-tools/bin/tansu";
    if std::path::Path::new(installed).exists() { installed.to_owned() } else { "tansu".to_owned() }
}

impl Broker {
    pub fn start() -> Self {
        let program = program();
        let spawn = |port: u16| {
            Command::new(&program)
                .arg("broker")
                .args(["--storage-engine", "memory://tansu/"])
                .args(["--kafka-listener-url", &format!("tcp://127.0.0.1:{port}")])
                .args(["--kafka-advertised-listener-url", &format!("tcp://127.0.0.1:{port}")])
                .env_remove("STORAGE_ENGINE")
                .current_dir(std::env::temp_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start tansu ({program}): {e}; scripts/test installs it"))
        };
        let is_it = |port: u16| {
            let producer: Result<BaseProducer, _> = client(port).create();
            producer.is_ok_and(|p| p.client().fetch_metadata(None, Duration::from_secs(2)).is_ok())
        };
        let (port, child) = super::start_server("tansu", spawn, is_it);
        Self { port, child: Some(child) }
    }

    /// A handle on a broker started elsewhere (another thread of the test).
    pub fn attach(port: u16) -> Self {
        Self { port, child: None }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            client(self.port).create().unwrap_or_else(|e| panic!("admin client: {e}"));
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures::executor::block_on(admin.create_topics([&new], &options))
            .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
        // The topic is usable once its metadata shows every partition.
        let ready = super::files::wait_until(Duration::from_secs(20), || {
            admin
                .inner()
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .is_ok_and(|m| m.topics().first().is_some_and(|t| t.partitions().len() == partitions as usize))
        });
        assert!(ready, "topic {topic} has its {partitions} partitions");
    }

    /// Produces `messages` (key, payload, headers) round-robin over the topic's partitions
    /// (by key when there is one), and waits until every one is acknowledged.
    pub fn produce(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>)>,
    ) {
        let producer: BaseProducer = client(self.port)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap_or_else(|e| panic!("producer: {e}"));
        for (key, payload, headers) in messages {
            let mut owned = OwnedHeaders::new();
            for (name, value) in &headers {
                owned = owned.insert(Header { key: name, value: Some(value) });
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(&payload).headers(owned);
            if let Some(key) = &key {
                record = record.key(key);
            }
            let mut record = Some(record);
            while let Some(r) = record.take() {
                if let Err((e, back)) = producer.send(r) {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "produce: {e}"
                    );
                    producer.poll(Duration::from_millis(10));
                    record = Some(back);
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).unwrap_or_else(|e| panic!("flush: {e}"));
    }

    /// Produces `count` plain messages `{prefix}{i}` without keys.
    pub fn produce_lines(&self, topic: &str, prefix: &str, range: std::ops::Range<usize>) {
        self.produce(topic, range.map(|i| (None, format!("{prefix}{i}").into_bytes(), Vec::new())));
    }

    /// Reads `topic` from the beginning until `count` messages are in or `timeout` passes.
    pub fn read_all(&self, topic: &str, partitions: i32, count: usize, timeout: Duration) -> Vec<Record> {
        let consumer: BaseConsumer = client(self.port)
            .set("group.id", "sluice-tests-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap_or_else(|e| panic!("consumer: {e}"));
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p, Offset::Beginning).unwrap_or_else(|e| panic!("{e}"));
        }
        consumer.assign(&list).unwrap_or_else(|e| panic!("assign: {e}"));
        let started = Instant::now();
        let mut out = Vec::new();
        while out.len() < count && started.elapsed() < timeout {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: m
                        .headers()
                        .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                        .unwrap_or_default(),
                }),
                Some(Err(e)) => panic!("read {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    /// The offsets `group` has committed on each partition of `topic` (`None`: nothing yet).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = client(self.port)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap_or_else(|e| panic!("consumer: {e}"));
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("committed offsets of {group}: {e}"));
        (0..partitions)
            .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn client(port: u16) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", format!("127.0.0.1:{port}")).set("log_level", "3");
    config
}
