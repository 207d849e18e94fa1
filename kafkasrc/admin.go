package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"
)

// defaultAdminTimeout bounds an admin request whose ctx has no deadline.
const defaultAdminTimeout = 30 * time.Second

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

func (tp TopicPartition) String() string {
	return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition)
}

// Admin answers the coordinator's questions about a cluster: partitions and
// offsets. It is safe for concurrent use.
//
// An Admin is a librdkafka producer handle (which carries the connections and
// forwards the logs) with an AdminClient derived from it.
type Admin struct {
	cluster Cluster
	logger  hclog.Logger
	prod    *kafka.Producer
	admin   *kafka.AdminClient
	logs    *logPump
	events  sync.WaitGroup // the goroutine draining prod.Events()
	pooled  bool           // owned by an AdminPool: Close is a no-op

	closeOnce sync.Once
}

// NewAdmin connects an Admin to the cluster c. Its librdkafka logs go to
// logger.
func NewAdmin(c Cluster, logger hclog.Logger) (*Admin, error) {
	if err := ValidateProperties(c.Properties); err != nil {
		return nil, fmt.Errorf("new admin for %s: %w", c.Bootstrap, err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	a := &Admin{cluster: c, logger: logger}
	a.logs = newLogPump(logger)
	cm := baseConfig(c)
	cm["go.delivery.reports"] = false
	cm["go.events.channel.size"] = 1000
	cm["allow.auto.create.topics"] = false
	a.logs.configure(cm)
	prod, err := kafka.NewProducer(&cm)
	if err != nil {
		a.logs.stop()
		return nil, fmt.Errorf("new admin for %s: %w", c.Bootstrap, err)
	}
	admin, err := kafka.NewAdminClientFromProducer(prod)
	if err != nil {
		prod.Close()
		a.logs.stop()
		return nil, fmt.Errorf("new admin for %s: %w", c.Bootstrap, err)
	}
	a.prod, a.admin = prod, admin
	a.events.Add(1)
	go func() { // stops when prod.Close closes the Events channel
		defer a.events.Done()
		for ev := range prod.Events() {
			if e, ok := ev.(kafka.Error); ok {
				logger.Warn("kafka admin client error", "error", e, "code", e.Code(), "fatal", e.IsFatal())
			}
		}
	}()
	return a, nil
}

// Close releases the Admin's connections. Close on an Admin obtained from an
// AdminPool does nothing: the pool owns it.
func (a *Admin) Close() {
	if a.pooled {
		return
	}
	a.close()
}

func (a *Admin) close() {
	a.closeOnce.Do(func() {
		a.admin.Close()
		a.prod.Close()
		a.events.Wait()
		a.logs.stop()
	})
}

// withTimeout gives ctx a deadline when it has none, so that no admin request
// blocks forever.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultAdminTimeout)
}

// Partitions returns the sorted partition ids of each topic. It asks the
// cluster every time (no cache), so that partitions added since the last
// call are found. A missing topic fails with an error naming it that wraps
// ErrUnknownTopic.
func (a *Admin) Partitions(ctx context.Context, topics []string) (map[string][]int32, error) {
	out := make(map[string][]int32, len(topics))
	if len(topics) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("describe topics %v: %w", topics, err)
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	res, err := a.admin.DescribeTopics(ctx, kafka.NewTopicCollectionOfTopicNames(dedup(topics)))
	if err != nil {
		return nil, fmt.Errorf("describe topics %v: %w", topics, err)
	}
	for _, d := range res.TopicDescriptions {
		switch d.Error.Code() {
		case kafka.ErrNoError:
		case kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic, kafka.ErrUnknownTopicID:
			return nil, fmt.Errorf("topic %q: %w", d.Name, ErrUnknownTopic)
		default:
			return nil, fmt.Errorf("describe topic %q: %w", d.Name, d.Error)
		}
		ps := make([]int32, 0, len(d.Partitions))
		for _, p := range d.Partitions {
			ps = append(ps, int32(p.Partition))
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		out[d.Name] = ps
	}
	for _, t := range topics {
		if _, ok := out[t]; !ok {
			return nil, fmt.Errorf("topic %q: not in the describe answer: %w", t, ErrUnknownTopic)
		}
	}
	return out, nil
}

func dedup(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// LatestOffsets returns, for each partition, the offset after the last
// record: the high watermark, or the last stable offset when the cluster is
// read with ReadCommitted.
func (a *Admin) LatestOffsets(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error) {
	return a.listOffsets(ctx, "latest", tps, kafka.LatestOffsetSpec)
}

// EarliestOffsets returns, for each partition, the log start offset: the
// first offset that can still be read.
func (a *Admin) EarliestOffsets(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error) {
	return a.listOffsets(ctx, "earliest", tps, kafka.EarliestOffsetSpec)
}

// OffsetsForTimes returns, for each partition, the first offset whose record
// timestamp is >= ts, or the latest offset (as LatestOffsets) when there is
// none.
func (a *Admin) OffsetsForTimes(ctx context.Context, tps []TopicPartition, ts time.Time) (map[TopicPartition]int64, error) {
	what := "offsets for time " + ts.UTC().Format(time.RFC3339Nano)
	out, err := a.listOffsets(ctx, what, tps, kafka.NewOffsetSpecForTimestamp(ts.UnixMilli()))
	if err != nil {
		return nil, err
	}
	var none []TopicPartition
	for tp, off := range out {
		if off < 0 {
			none = append(none, tp)
		}
	}
	if len(none) == 0 {
		return out, nil
	}
	latest, err := a.LatestOffsets(ctx, none)
	if err != nil {
		return nil, err
	}
	for tp, off := range latest {
		out[tp] = off
	}
	return out, nil
}

func (a *Admin) listOffsets(ctx context.Context, what string, tps []TopicPartition, spec kafka.OffsetSpec) (map[TopicPartition]int64, error) {
	out := make(map[TopicPartition]int64, len(tps))
	if len(tps) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s offsets of %v: %w", what, tps, err)
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	req := make(map[kafka.TopicPartition]kafka.OffsetSpec, len(tps))
	seen := make(map[TopicPartition]bool, len(tps))
	for _, tp := range tps {
		if seen[tp] {
			continue
		}
		seen[tp] = true
		topic := tp.Topic
		req[kafka.TopicPartition{Topic: &topic, Partition: tp.Partition}] = spec
	}
	isolation := kafka.IsolationLevelReadUncommitted
	if a.cluster.ReadCommitted {
		isolation = kafka.IsolationLevelReadCommitted
	}
	res, err := a.admin.ListOffsets(ctx, req, kafka.SetAdminIsolationLevel(isolation))
	if err != nil {
		return nil, fmt.Errorf("list %s offsets of %v: %w", what, tps, err)
	}
	for ktp, info := range res.ResultInfos {
		tp := TopicPartition{Partition: ktp.Partition}
		if ktp.Topic != nil {
			tp.Topic = *ktp.Topic
		}
		switch info.Error.Code() {
		case kafka.ErrNoError:
		case kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic, kafka.ErrUnknownPartition:
			return nil, fmt.Errorf("list %s offset of %s: %w: %w", what, tp, info.Error, ErrUnknownTopic)
		default:
			return nil, fmt.Errorf("list %s offset of %s: %w", what, tp, info.Error)
		}
		out[tp] = int64(info.Offset)
	}
	for tp := range seen {
		if _, ok := out[tp]; !ok {
			return nil, fmt.Errorf("list %s offset of %s: no answer for the partition: %w", what, tp, ErrUnknownTopic)
		}
	}
	return out, nil
}

// CreateTopic creates topic with the given number of partitions and the
// broker's default replication factor. It returns nil if the topic already
// exists (whatever its partition count).
func (a *Admin) CreateTopic(ctx context.Context, topic string, partitions int32) error {
	if partitions < 1 {
		return fmt.Errorf("create topic %q with %d partitions: %w", topic, partitions, ErrInvalidRange)
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	res, err := a.admin.CreateTopics(ctx, []kafka.TopicSpecification{{
		Topic:             topic,
		NumPartitions:     int(partitions),
		ReplicationFactor: -1, // the broker's default.replication.factor
	}})
	if err != nil {
		return fmt.Errorf("create topic %q: %w", topic, err)
	}
	for _, r := range res {
		switch r.Error.Code() {
		case kafka.ErrNoError, kafka.ErrTopicAlreadyExists:
		default:
			return fmt.Errorf("create topic %q: %w", r.Topic, r.Error)
		}
	}
	return nil
}

// AdminPool caches one Admin per Cluster.Key(). It is safe for concurrent
// use.
type AdminPool struct {
	logger hclog.Logger

	mu     sync.Mutex
	admins map[string]*Admin
	closed bool
}

// NewAdminPool returns an empty pool whose Admins log to logger.
func NewAdminPool(logger hclog.Logger) *AdminPool {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &AdminPool{logger: logger, admins: make(map[string]*Admin)}
}

// Get returns the pool's Admin for c, connecting it on first use. The pool
// owns the Admin: its Close does nothing, the pool's Close closes it.
func (p *AdminPool) Get(c Cluster) (*Admin, error) {
	key := c.Key()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("admin for %s: %w", c.Bootstrap, ErrClosed)
	}
	if a, ok := p.admins[key]; ok {
		return a, nil
	}
	// Creating a client does not do network I/O: holding the lock is fine.
	a, err := NewAdmin(c, p.logger)
	if err != nil {
		return nil, err
	}
	a.pooled = true
	p.admins[key] = a
	return a, nil
}

// Close closes every Admin of the pool. Get fails after Close.
func (p *AdminPool) Close() {
	p.mu.Lock()
	admins := p.admins
	p.admins = nil
	p.closed = true
	p.mu.Unlock()
	for _, a := range admins {
		a.close()
	}
}

// isUnknownTopic reports whether err is a Kafka unknown topic or partition
// error.
func isUnknownTopic(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke.Code() {
	case kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic, kafka.ErrUnknownPartition:
		return true
	}
	return false
}
