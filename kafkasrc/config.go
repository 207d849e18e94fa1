package kafkasrc

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Sentinel errors. Errors returned by this package wrap them (test with
// errors.Is) and name the topic, partition and offsets involved.
var (
	// ErrUnknownTopic means that the topic, or the partition, does not exist
	// in the cluster.
	ErrUnknownTopic = errors.New("kafkasrc: unknown topic")
	// ErrOffsetOutOfRange means that a read started below the log start
	// offset (the records were deleted, e.g. by retention) or beyond the end
	// of the partition.
	ErrOffsetOutOfRange = errors.New("kafkasrc: offset out of range")
	// ErrReservedProperty means that a client property is managed by Sluice
	// and may not be set by the user.
	ErrReservedProperty = errors.New("kafkasrc: property is managed by sluice")
	// ErrInvalidRange means that a range is malformed (negative from, from
	// after until, empty topic).
	ErrInvalidRange = errors.New("kafkasrc: invalid range")
	// ErrClosed means that the Cache, AdminPool or client was closed.
	ErrClosed = errors.New("kafkasrc: closed")
)

// Cluster identifies a Kafka cluster and the client properties to use with it.
type Cluster struct {
	// Bootstrap is the comma-separated list of host:port of brokers.
	Bootstrap string
	// Properties are extra librdkafka properties (security, timeouts, ...)
	// used by every client of this cluster. Properties that Sluice owns are
	// refused, see ValidateProperties; which of the others a job may set is
	// the operator's Policy, checked before a job's clients are made.
	Properties map[string]string
	// ReadCommitted reads with isolation.level=read_committed: only records
	// of committed transactions are read, and "latest" is the last stable
	// offset instead of the high watermark.
	ReadCommitted bool
}

// Key returns a stable cache key for the cluster: the bootstrap servers, the
// properties sorted by name and the isolation level. Two Clusters with the
// same Key share cached clients.
func (c Cluster) Key() string {
	names := make([]string, 0, len(c.Properties))
	for k := range c.Properties {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(strconv.Quote(c.Bootstrap))
	for _, k := range names {
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(k))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(c.Properties[k]))
	}
	if c.ReadCommitted {
		b.WriteString(" isolation=read_committed")
	} else {
		b.WriteString(" isolation=read_uncommitted")
	}
	return b.String()
}

// reservedProperties are the librdkafka properties (and aliases) that Sluice
// sets itself: a user value would break exact range reading or the isolation
// level, or bypass the cluster's bootstrap.
var reservedProperties = map[string]bool{
	"bootstrap.servers":          true,
	"metadata.broker.list":       true,
	"group.id":                   true,
	"enable.auto.commit":         true,
	"auto.commit.enable":         true,
	"enable.auto.offset.store":   true,
	"auto.offset.reset":          true,
	"isolation.level":            true,
	"enable.partition.eof":       true,
	"log.queue":                  true,
	"transactional.id":           true,
	"delivery.report.only.error": true,
}

// ValidateProperties refuses properties that Sluice owns (bootstrap.servers,
// group.id, enable.auto.commit, auto.offset.reset, isolation.level,
// enable.partition.eof, go.* ...) with an error naming the property and
// wrapping ErrReservedProperty. It also refuses an empty property name.
func ValidateProperties(props map[string]string) error {
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names) // report the same property every time
	for _, k := range names {
		if err := validateProperty(k); err != nil {
			return err
		}
	}
	return nil
}

func validateProperty(name string) error {
	n := strings.TrimSpace(name)
	if n == "" {
		return fmt.Errorf("property %q: empty name: %w", name, ErrReservedProperty)
	}
	if reservedProperties[n] || strings.HasPrefix(n, "go.") {
		return fmt.Errorf("property %q: %w", name, ErrReservedProperty)
	}
	return nil
}

// validateProducerProperties checks the producer-specific properties of
// NewProducer. A producer may set transactional.id and acks, but not the
// bootstrap servers, nor the go.* properties that route its events and logs.
func validateProducerProperties(props map[string]string) error {
	for k := range props {
		n := strings.TrimSpace(k)
		switch {
		case n == "":
			return fmt.Errorf("property %q: empty name: %w", k, ErrReservedProperty)
		case n == "bootstrap.servers", n == "metadata.broker.list",
			n == "delivery.report.only.error", n == "log.queue",
			strings.HasPrefix(n, "go."):
			return fmt.Errorf("property %q: %w", k, ErrReservedProperty)
		}
	}
	return nil
}

// baseConfig returns the properties common to every client of c: the
// bootstrap servers, quiet defaults (which the user's properties may
// override) and then the user's properties.
func baseConfig(c Cluster) kafka.ConfigMap {
	cm := kafka.ConfigMap{
		"client.id":           "sluice",
		"enable.metrics.push": false,
		// Idle connections closed by the broker are normal; do not log them
		// as errors.
		"log.connection.close": false,
		// After a broker outage, reconnect within a second rather than
		// librdkafka's default backoff of up to 10s.
		"reconnect.backoff.max.ms": 1000,
	}
	for k, v := range c.Properties {
		cm[k] = v
	}
	cm["bootstrap.servers"] = c.Bootstrap
	return cm
}

// DefaultConsumerMemory is the default budget of a Cache's consumers'
// prefetch: 128 MiB, 2 MiB for each of 64 cached consumers.
const DefaultConsumerMemory = 128 << 20

// MinConsumerShare is the least prefetch memory a consumer gets: one fetch
// of a full default-size record batch (the brokers' message.max.bytes is
// about 1 MB), and a queue as large.
const MinConsumerShare = 2 << 20

// multiConsumerShare is the prefetch memory of a Pool consumer. Idle pool
// consumers are unassigned and hold nothing, so a worker's pool holds at
// most this much per running task.
const multiConsumerShare = 8 << 20

// prefetchLimits are the librdkafka properties that bound a consumer's
// prefetch memory, with their aliases and their value for a share of
// memory. librdkafka fetches until its queue holds queued.min.messages
// records or queued.max.messages.kbytes of keys and values, so a consumer
// holds its queue and one fetch response (fetch.max.bytes; one partition,
// so max.partition.fetch.bytes too): half the share each. The queue's
// bytes count keys and values only, while each queued record also costs
// librdkafka a few hundred bytes of bookkeeping: the record count bounds
// that (one record per 256 bytes of the queue's half), which small records
// would otherwise multiply.
var prefetchLimits = []struct {
	name    string
	aliases []string
	limit   func(half int64) int64
	// lowerOnly: set only a user value above the limit, else leave
	// librdkafka's default.
	lowerOnly bool
}{
	{name: "queued.max.messages.kbytes", limit: func(h int64) int64 { return h >> 10 }},
	{name: "queued.min.messages", limit: func(h int64) int64 { return h / 256 }},
	{name: "fetch.max.bytes", limit: func(h int64) int64 { return h }},
	{name: "max.partition.fetch.bytes", aliases: []string{"fetch.message.max.bytes"}, limit: func(h int64) int64 { return h }},
	// librdkafka requires fetch.max.bytes >= message.max.bytes (default
	// 1,000,000); a consumer sends no large requests, so a smaller value
	// costs nothing.
	{name: "message.max.bytes", limit: func(h int64) int64 { return h }, lowerOnly: true},
}

// consumerConfig returns the configuration of a range-reading consumer
// whose prefetch may use share bytes (see prefetchLimits). Prefetch
// properties of the cluster that ask for more are lowered to that, and
// reported in clamped as "name=value (asked for N)"; smaller ones are kept.
func consumerConfig(c Cluster, groupID string, share int64) (cm kafka.ConfigMap, clamped []string) {
	share = max(share, MinConsumerShare)
	half := share / 2
	cm = kafka.ConfigMap{
		// Fetch settings (the user's properties override them): a fetch at
		// the tail waits at most 100 ms. When its queue is full, the
		// fetcher looks again after 10 ms: librdkafka's default (1 s)
		// stalls a consumer that drains its queue quickly, halving
		// throughput.
		"fetch.wait.max.ms":      100,
		"fetch.queue.backoff.ms": 10,
	}
	for k, v := range baseConfig(c) {
		cm[k] = v
	}
	for _, l := range prefetchLimits {
		limit := l.limit(half)
		asked, name, set, ok := int64(0), l.name, false, false
		for _, a := range append([]string{l.name}, l.aliases...) {
			if _, found := cm[a]; found && !set {
				name, set = a, true
				asked, ok = userInt(cm, a)
				if !ok {
					cm[l.name] = cm[a] // not a number: librdkafka refuses it, naming it
				}
			}
			if a != l.name {
				delete(cm, a) // set once, by its name: librdkafka applies them in map order
			}
		}
		switch {
		case set && !ok:
		case !set && l.lowerOnly:
		case !set:
			cm[l.name] = strconv.FormatInt(limit, 10)
		case asked > limit:
			cm[l.name] = strconv.FormatInt(limit, 10)
			clamped = append(clamped, fmt.Sprintf("%s=%d (asked for %d)", name, limit, asked))
		default:
			cm[l.name] = strconv.FormatInt(asked, 10)
		}
	}
	isolation := "read_uncommitted"
	if c.ReadCommitted {
		isolation = "read_committed"
	}
	// Owned by Sluice (ValidateProperties refuses them from the user).
	cm["group.id"] = groupID
	cm["enable.auto.commit"] = false
	cm["enable.auto.offset.store"] = false
	cm["auto.offset.reset"] = "error"
	cm["isolation.level"] = isolation
	cm["enable.partition.eof"] = false
	return cm, clamped
}

// userInt reads an integer property of cm; a value that is not an integer
// is left for librdkafka to refuse with its own message.
func userInt(cm kafka.ConfigMap, name string) (int64, bool) {
	v, ok := cm[name]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(fmt.Sprint(v)), 10, 64)
	return n, err == nil
}
