package kafkasrc

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"
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
	// plan answers Partitions, LatestOffsets and EarliestOffsets when the
	// cluster allows it (see plancalls.go); nil otherwise.
	plan   *kgo.Client
	logs   *logPump
	events sync.WaitGroup // the goroutine draining prod.Events()
	pooled bool           // owned by an AdminPool: Close is a no-op
	elem   *list.Element  // in AdminPool.lru; guarded by AdminPool.mu
	used   time.Time      // last Get from the pool; guarded by AdminPool.mu

	// calls is held shared by every request and exclusively by close, so
	// that an Admin evicted from its pool is closed only after the requests
	// in progress are done (each is bounded by defaultAdminTimeout or its
	// ctx); closed makes later requests fail with ErrClosed.
	calls     sync.RWMutex
	closed    bool
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
	prod, err := newKafkaProducer(&cm)
	if err != nil {
		a.logs.stop()
		return nil, fmt.Errorf("new admin for %s: %w", c.Bootstrap, err)
	}
	admin, err := kafka.NewAdminClientFromProducer(prod)
	if err != nil {
		closeKafkaProducer(prod)
		a.logs.stop()
		return nil, fmt.Errorf("new admin for %s: %w", c.Bootstrap, err)
	}
	a.prod, a.admin = prod, admin
	if a.plan, err = newPlanClient(c, logger); err != nil {
		admin.Close()
		closeKafkaProducer(prod)
		a.logs.stop()
		return nil, fmt.Errorf("new admin for %s: %w", c.Bootstrap, err)
	}
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
		a.calls.Lock()
		a.closed = true
		a.calls.Unlock()
		a.admin.Close()
		if a.plan != nil {
			a.plan.Close()
		}
		closeKafkaProducer(a.prod)
		a.events.Wait()
		a.logs.stop()
	})
}

// start begins a request: it fails with ErrClosed once the Admin is closed,
// and otherwise holds off close until done is called. The request's ctx gets
// a deadline when it has none.
func (a *Admin) start(ctx context.Context) (context.Context, func(), error) {
	a.calls.RLock()
	if a.closed {
		a.calls.RUnlock()
		return nil, nil, fmt.Errorf("admin for %s: %w", a.cluster.Bootstrap, ErrClosed)
	}
	ctx, cancel := withTimeout(ctx)
	return ctx, func() {
		cancel()
		a.calls.RUnlock()
	}, nil
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
		return nil, fmt.Errorf("describe topics %s: %w", briefList(topics), err)
	}
	ctx, done, err := a.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("describe topics %s: %w", briefList(topics), err)
	}
	defer done()
	if a.plan != nil {
		return a.kgoPartitions(ctx, topics)
	}
	res, err := a.admin.DescribeTopics(ctx, kafka.NewTopicCollectionOfTopicNames(dedup(topics)))
	if err != nil {
		return nil, fmt.Errorf("describe topics %s: %w", briefList(topics), err)
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

// Leaders returns the host of each partition's leader broker (the host part
// of its advertised address), for placing tasks near their data. A
// partition without a leader at the moment (an election in progress) is
// left out. A missing topic fails with an error naming it that wraps
// ErrUnknownTopic.
func (a *Admin) Leaders(ctx context.Context, tps []TopicPartition) (map[TopicPartition]string, error) {
	out := make(map[TopicPartition]string, len(tps))
	if len(tps) == 0 {
		return out, nil
	}
	topics := make([]string, 0, len(tps))
	for _, tp := range tps {
		topics = append(topics, tp.Topic)
	}
	topics = dedup(topics)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("partition leaders of %s: %w", briefList(topics), err)
	}
	ctx, done, err := a.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("partition leaders of %s: %w", briefList(topics), err)
	}
	defer done()
	res, err := a.admin.DescribeTopics(ctx, kafka.NewTopicCollectionOfTopicNames(topics))
	if err != nil {
		return nil, fmt.Errorf("partition leaders of %s: %w", briefList(topics), err)
	}
	want := make(map[TopicPartition]bool, len(tps))
	for _, tp := range tps {
		want[tp] = true
	}
	for _, d := range res.TopicDescriptions {
		switch d.Error.Code() {
		case kafka.ErrNoError:
		case kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic, kafka.ErrUnknownTopicID:
			return nil, fmt.Errorf("partition leaders: topic %q: %w", d.Name, ErrUnknownTopic)
		default:
			return nil, fmt.Errorf("partition leaders: describe topic %q: %w", d.Name, d.Error)
		}
		for _, p := range d.Partitions {
			tp := TopicPartition{Topic: d.Name, Partition: int32(p.Partition)}
			if want[tp] && p.Leader != nil && p.Leader.ID >= 0 && p.Leader.Host != "" {
				out[tp] = p.Leader.Host
			}
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
	return a.listOffsets(ctx, "latest", tps, kafka.LatestOffsetSpec, -1)
}

// EarliestOffsets returns, for each partition, the log start offset: the
// first offset that can still be read.
func (a *Admin) EarliestOffsets(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error) {
	return a.listOffsets(ctx, "earliest", tps, kafka.EarliestOffsetSpec, -2)
}

// OffsetsForTimes returns, for each partition, the first offset whose record
// timestamp is >= ts, or the latest offset (as LatestOffsets) when there is
// none.
func (a *Admin) OffsetsForTimes(ctx context.Context, tps []TopicPartition, ts time.Time) (map[TopicPartition]int64, error) {
	what := "offsets for time " + ts.UTC().Format(time.RFC3339Nano)
	out, err := a.listOffsets(ctx, what, tps, kafka.NewOffsetSpecForTimestamp(ts.UnixMilli()), 0)
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

// listOffsets asks for the offsets spec names; kgoSpec is the same as a
// ListOffsets timestamp for the franz-go client (-1 latest, -2 earliest),
// or 0 to ask through librdkafka.
func (a *Admin) listOffsets(ctx context.Context, what string, tps []TopicPartition, spec kafka.OffsetSpec, kgoSpec int64) (map[TopicPartition]int64, error) {
	out := make(map[TopicPartition]int64, len(tps))
	if len(tps) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s offsets of %s: %w", what, briefList(tps), err)
	}
	ctx, done, err := a.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s offsets of %s: %w", what, briefList(tps), err)
	}
	defer done()
	if a.plan != nil && kgoSpec < 0 {
		return a.kgoListOffsets(ctx, what, tps, kgoSpec)
	}
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
		return nil, fmt.Errorf("list %s offsets of %s: %w", what, briefList(tps), err)
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
	ctx, done, err := a.start(ctx)
	if err != nil {
		return fmt.Errorf("create topic %q: %w", topic, err)
	}
	defer done()
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

// DefaultAdminCapacity is the number of Admins an AdminPool keeps by
// default.
const DefaultAdminCapacity = 64

// AdminPool caches one Admin per Cluster.Key(), at most a capacity of them:
// the least recently used one is closed to make room, once its requests in
// progress are done. It is safe for concurrent use.
type AdminPool struct {
	logger   hclog.Logger
	capacity int
	check    func(Cluster) error // nil: any cluster

	mu      sync.Mutex
	admins  map[string]*Admin
	lru     *list.List // of *Admin, most recently used first
	closed  bool
	closing sync.WaitGroup // evicted Admins being closed
}

// NewAdminPool returns an empty pool whose Admins log to logger. It keeps
// DefaultAdminCapacity Admins unless WithCapacity says otherwise.
func NewAdminPool(logger hclog.Logger, opts ...Option) *AdminPool {
	o := options{capacity: DefaultAdminCapacity}
	for _, f := range opts {
		f(&o)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &AdminPool{logger: logger, capacity: o.capacity, check: o.check, admins: make(map[string]*Admin), lru: list.New()}
}

// Get returns the pool's Admin for c, connecting it on first use. The pool
// owns the Admin: its Close does nothing. An Admin evicted from the pool
// (see Forget and the capacity) fails later requests with ErrClosed: get it
// again for each piece of work rather than keep it.
func (p *AdminPool) Get(c Cluster) (*Admin, error) {
	if p.check != nil {
		if err := p.check(c); err != nil {
			return nil, fmt.Errorf("admin for %s: %w", c.Bootstrap, err)
		}
	}
	key := c.Key()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("admin for %s: %w", c.Bootstrap, ErrClosed)
	}
	if a, ok := p.admins[key]; ok {
		p.lru.MoveToFront(a.elem)
		a.used = time.Now()
		return a, nil
	}
	// Creating a client does not do network I/O: holding the lock is fine.
	a, err := NewAdmin(c, p.logger)
	if err != nil {
		return nil, err
	}
	a.pooled = true
	a.used = time.Now()
	a.elem = p.lru.PushFront(a)
	p.admins[key] = a
	for p.lru.Len() > p.capacity {
		p.removeLocked(p.lru.Back().Value.(*Admin))
	}
	return a, nil
}

// Forget closes the pool's Admin for c, if any, once its requests in
// progress are done. Call it when no job uses the cluster any more.
func (p *AdminPool) Forget(c Cluster) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.admins[c.Key()]; ok {
		p.removeLocked(a)
	}
}

// adminIdleTimeout: an Admin no one got from the pool for this long is
// closed by Run. The jobs of its cluster are gone, stopped or failed, and
// a client left open keeps connecting (and logging, if it cannot log in).
const adminIdleTimeout = time.Minute

// Run closes the Admins left unused for adminIdleTimeout until ctx ends.
func (p *AdminPool) Run(ctx context.Context) error {
	sweepIdle(ctx, adminIdleTimeout, 4, p.closeIdle, p.logger, "admin clients")
	return nil
}

// closeIdle closes the Admins last got before t and returns how many.
func (p *AdminPool) closeIdle(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	n := 0
	for e := p.lru.Back(); e != nil; {
		a := e.Value.(*Admin)
		e = e.Prev()
		if !a.used.Before(t) {
			break // the rest were used later
		}
		p.removeLocked(a)
		n++
	}
	return n
}

// Len returns the number of Admins in the pool.
func (p *AdminPool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.admins)
}

// removeLocked takes a out of the pool and closes it in the background.
// p.mu must be held and p not closed.
func (p *AdminPool) removeLocked(a *Admin) {
	delete(p.admins, a.cluster.Key())
	p.lru.Remove(a.elem)
	a.elem = nil
	p.closing.Add(1)
	go func() {
		defer p.closing.Done()
		a.close()
	}()
}

// Close closes every Admin of the pool. Get fails after Close.
func (p *AdminPool) Close() {
	p.mu.Lock()
	admins := p.admins
	p.admins = nil
	p.lru.Init()
	p.closed = true
	p.mu.Unlock()
	for _, a := range admins {
		p.closing.Add(1)
		go func() {
			defer p.closing.Done()
			a.close()
		}()
	}
	p.closing.Wait()
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

// briefList names a list in an error: whole when short, else its first
// items and how many more. A job may have thousands of partitions, and an
// error becomes a log line and the job's message.
func briefList[T any](items []T) string {
	const shown = 4
	if len(items) <= shown {
		return fmt.Sprint(items)
	}
	return fmt.Sprintf("%v and %d more", items[:shown], len(items)-shown)
}
