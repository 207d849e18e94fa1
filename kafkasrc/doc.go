// Package kafkasrc is Sluice's only door to Kafka: it is the one package that
// imports confluent-kafka-go (librdkafka, bundled, cgo).
//
// It offers three things:
//
//   - [Admin] (and [AdminPool]) answer the coordinator's questions: the
//     partitions of a topic, latest (high watermark or last stable offset),
//     earliest and by-timestamp offsets, and topic creation.
//   - [Cache] reads exact offset ranges [from, until) for the workers, with an
//     LRU cache of assigned consumers so that the data a consumer prefetched
//     for one task is reused by the next task on the same partition.
//   - [Producer] writes records (the demo's synthetic stream), and [Sinks]
//     writes task output: Kafka transactions that commit the source range's
//     end offset with the output (exactly-once), or an idempotent producer
//     whose deliveries are tracked per task (at-least-once).
//
// # Bounded clients
//
// Every librdkafka client holds threads, connections and buffers. [Cache],
// [AdminPool] and [Sinks] keep theirs in LRU lists bounded by a capacity and
// close what they evict once it is idle; [LiveClients] counts the handles
// open, for tests.
//
// # Security
//
// A cluster's properties reach every client made for it. The coordinator's
// franz-go clients (planning, [ListTransactions]) translate the librdkafka
// TLS and SASL properties (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); planning
// falls back to librdkafka for what they cannot honour, and
// [ListTransactions] refuses it with [ErrUnsupportedProperty].
//
// # Errors
//
// Errors wrap sentinels (test with errors.Is) and name the topic, partition,
// offsets or property concerned. [ErrPermanent] marks those a retry would
// repeat: a record too large for its topic, a missing sink topic or
// partition, refused or conflicting producer properties, an authentication
// or authorization failure. Fencing ([ErrFenced]) is not permanent.
//
// # Reading exact ranges
//
// A consumer is assigned its partition and positioned with seeks; it never
// subscribes and never commits. A range is done when the consumer's position
// reaches until, not after until-from records: offsets have gaps
// (transaction markers, aborted records under read_committed, compaction).
// auto.offset.reset is "error", so a range that starts below the log start
// (retention deleted it) or beyond the end fails with [ErrOffsetOutOfRange]
// instead of silently jumping elsewhere.
//
// # Logs
//
// librdkafka's logs go to the injected hclog.Logger (librdkafka level 3 and
// below as Error, 4 as Warn, 5 as Info, 6 as Debug, 7 as Trace); nothing is
// written to stderr.
package kafkasrc
