package kafkasrc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"
)

// ErrFenced is returned when a newer producer with the same transactional id
// took over: this writer's transaction can never commit.
var ErrFenced = errors.New("kafkasrc: producer fenced by a newer instance")

// Sinks writes task output to Kafka: transactions per source partition
// (exactly-once) or an idempotent producer per cluster (at-least-once). It
// keeps one producer per transactional id and per cluster so that producers
// are reused across tasks, and is safe for concurrent use.
type Sinks struct {
	logger hclog.Logger

	mu     sync.Mutex
	txns   map[string]*txnWriter // by transactional id
	idem   map[string]*Producer  // by cluster key + properties
	groups map[string]*groupMeta // by cluster key + group
}

// NewSinks returns an empty set of sink writers.
func NewSinks(logger hclog.Logger) *Sinks {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Sinks{logger: logger, txns: map[string]*txnWriter{}, idem: map[string]*Producer{}, groups: map[string]*groupMeta{}}
}

// Close closes every producer.
func (s *Sinks) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.txns {
		w.close()
		delete(s.txns, id)
	}
	for k, p := range s.idem {
		p.Close()
		delete(s.idem, k)
	}
	for k, g := range s.groups {
		g.close()
		delete(s.groups, k)
	}
}

func propsKey(props map[string]string) string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := ""
	for _, k := range keys {
		out += strconv.Quote(k) + "=" + strconv.Quote(props[k]) + ";"
	}
	return out
}

// WriteIdempotent writes msgs with an idempotent producer and waits until
// every one is acknowledged.
func (s *Sinks) WriteIdempotent(ctx context.Context, c Cluster, props map[string]string, msgs []Message) error {
	key := c.Key() + "|" + propsKey(props)
	s.mu.Lock()
	p, ok := s.idem[key]
	if !ok {
		all := map[string]string{"enable.idempotence": "true", "acks": "all"}
		for k, v := range props {
			all[k] = v
		}
		var err error
		if p, err = NewProducer(c, all, s.logger); err != nil {
			s.mu.Unlock()
			return err
		}
		s.idem[key] = p
	}
	s.mu.Unlock()
	for _, m := range msgs {
		if err := p.ProduceMessage(ctx, m); err != nil {
			return err
		}
	}
	return p.Flush(ctx)
}

// TxnTask is one task's transactional write.
type TxnTask struct {
	Cluster    Cluster
	Properties map[string]string
	// TransactionalID is stable per (job, source partition).
	TransactionalID string
	Timeout         time.Duration
	// Group is the job's consumer group; Source's Until is committed to it.
	Group  string
	Source Range
	// BeforeCommit, if set, runs after the output and offsets are in the
	// transaction and before it commits (a failpoint for tests).
	BeforeCommit func()
}

// Transact writes msgs and commits Source.Until to the job's group in one
// Kafka transaction. When the group's committed offset of the source
// partition already reached Source.Until, an earlier attempt committed this
// range: nothing is written and skipped is true. A newer producer with the
// same transactional id fences this one (ErrFenced).
func (s *Sinks) Transact(ctx context.Context, t TxnTask, msgs []Message) (skipped bool, err error) {
	w, err := s.txnWriter(ctx, t)
	if err != nil {
		return false, err
	}
	skipped, err = w.transact(ctx, t, msgs)
	if err != nil && w.broken {
		s.mu.Lock()
		if s.txns[t.TransactionalID] == w {
			delete(s.txns, t.TransactionalID)
		}
		s.mu.Unlock()
		w.close()
	}
	return skipped, err
}

func (s *Sinks) txnWriter(ctx context.Context, t TxnTask) (*txnWriter, error) {
	s.mu.Lock()
	w, ok := s.txns[t.TransactionalID]
	s.mu.Unlock()
	if ok {
		return w, nil
	}
	g, err := s.group(t.Cluster, t.Group)
	if err != nil {
		return nil, err
	}
	w, err = newTxnWriter(ctx, t, g, s.logger)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if old, ok := s.txns[t.TransactionalID]; ok {
		old.close()
	}
	s.txns[t.TransactionalID] = w
	s.mu.Unlock()
	return w, nil
}

// groupMeta holds a consumer that has the job's group.id but never
// subscribes: its group metadata lets a transaction commit offsets for the
// group (SendOffsetsToTransaction), and its committed-offset queries read the
// group's offsets.
type groupMeta struct {
	consumer *kafka.Consumer
	logs     *logPump
	meta     *kafka.ConsumerGroupMetadata
	once     sync.Once
}

func (s *Sinks) group(c Cluster, group string) (*groupMeta, error) {
	key := c.Key() + "|" + group
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.groups[key]; ok {
		return g, nil
	}
	g := &groupMeta{logs: newLogPump(s.logger)}
	cm := baseConfig(c)
	cm["group.id"] = group
	cm["enable.auto.commit"] = false
	cm["isolation.level"] = "read_committed"
	g.logs.configure(cm)
	cons, err := kafka.NewConsumer(&cm)
	if err != nil {
		g.logs.stop()
		return nil, fmt.Errorf("group %s consumer: %w", group, err)
	}
	meta, err := cons.GetConsumerGroupMetadata()
	if err != nil {
		cons.Close()
		g.logs.stop()
		return nil, fmt.Errorf("group %s metadata: %w", group, err)
	}
	g.consumer, g.meta = cons, meta
	s.groups[key] = g
	return g, nil
}

func (g *groupMeta) close() {
	g.once.Do(func() {
		_ = g.consumer.Close()
		g.logs.stop()
	})
}

// committed reads the group's committed offset of one partition, waiting for
// pending transactional commits to settle (require_stable), -1 if none.
func (g *groupMeta) committed(ctx context.Context, topic string, partition int32) (int64, error) {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), 10*time.Millisecond)
	}
	tps, err := g.consumer.Committed([]kafka.TopicPartition{{Topic: &topic, Partition: partition}}, int(timeout.Milliseconds()))
	if groupNotFound(err) {
		return -1, nil // a group that never committed (some brokers say so instead of -1)
	}
	if err != nil {
		return 0, fmt.Errorf("committed offset of %s/%d: %w", topic, partition, err)
	}
	if len(tps) != 1 {
		return -1, nil
	}
	if groupNotFound(tps[0].Error) {
		return -1, nil
	}
	if tps[0].Error != nil {
		return 0, fmt.Errorf("committed offset of %s/%d: %w", topic, partition, tps[0].Error)
	}
	return int64(tps[0].Offset), nil
}

func groupNotFound(err error) bool {
	var ke kafka.Error
	return errors.As(err, &ke) && ke.Code() == kafka.ErrGroupIDNotFound
}

// txnWriter is one transactional producer, used by one task at a time (its
// transactional id is its source partition's, and a partition has one task
// in flight).
type txnWriter struct {
	id     string
	prod   *Producer
	group  *groupMeta
	broken bool
}

func newTxnWriter(ctx context.Context, t TxnTask, g *groupMeta, logger hclog.Logger) (*txnWriter, error) {
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	props := map[string]string{
		"transactional.id":       t.TransactionalID,
		"transaction.timeout.ms": strconv.FormatInt(timeout.Milliseconds(), 10),
		"enable.idempotence":     "true",
		"acks":                   "all",
	}
	for k, v := range t.Properties {
		props[k] = v
	}
	p, err := NewProducer(t.Cluster, props, logger)
	if err != nil {
		return nil, err
	}
	// InitTransactions fences every older producer with this transactional
	// id and aborts its open transaction.
	if err := p.kp.InitTransactions(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("init transactions of %s: %w", t.TransactionalID, err)
	}
	return &txnWriter{id: t.TransactionalID, prod: p, group: g}, nil
}

func (w *txnWriter) close() { w.prod.Close() }

func (w *txnWriter) transact(ctx context.Context, t TxnTask, msgs []Message) (bool, error) {
	src := t.Source
	// A range whose end offset the group already holds was written by an
	// earlier attempt (committed in Kafka before its result reached the
	// coordinator): writing it again would duplicate it.
	if off, err := w.group.committed(ctx, src.Topic, src.Partition); err != nil {
		return false, err
	} else if off >= src.Until {
		return true, nil
	}
	kp := w.prod.kp
	if err := kp.BeginTransaction(); err != nil {
		return false, w.fail(ctx, "begin", err)
	}
	for _, m := range msgs {
		if err := w.prod.ProduceMessage(ctx, m); err != nil {
			return false, w.fail(ctx, "produce", err)
		}
	}
	offsets := []kafka.TopicPartition{{Topic: &src.Topic, Partition: src.Partition, Offset: kafka.Offset(src.Until)}}
	if err := kp.SendOffsetsToTransaction(ctx, offsets, w.group.meta); err != nil {
		return false, w.fail(ctx, "send offsets", err)
	}
	if t.BeforeCommit != nil {
		t.BeforeCommit()
	}
	if err := kp.CommitTransaction(ctx); err != nil {
		return false, w.fail(ctx, "commit", err)
	}
	// Deliveries are settled by the commit; clear the producer's count.
	w.prod.mu.Lock()
	w.prod.inflight, w.prod.firstErr = 0, nil
	w.prod.mu.Unlock()
	return false, nil
}

// fail aborts the transaction where that is possible and classifies err:
// a fenced or fatal producer is broken and must be replaced.
func (w *txnWriter) fail(ctx context.Context, what string, err error) error {
	var ke kafka.Error
	if errors.As(err, &ke) {
		if ke.Code() == kafka.ErrFenced || ke.Code() == kafka.ErrProducerFenced || ke.IsFatal() {
			w.broken = true
			return fmt.Errorf("transaction %s: %s: %w: %w", w.id, what, ErrFenced, err)
		}
		if ke.TxnRequiresAbort() {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if aerr := w.prod.kp.AbortTransaction(actx); aerr != nil {
				w.broken = true
			}
		} else {
			w.broken = true
		}
	} else {
		// A context error or our own: the transaction state is unknown.
		w.broken = true
	}
	return fmt.Errorf("transaction %s: %s: %w", w.id, what, err)
}

// AbortTransactions fences every producer of the given transactional ids
// and so aborts their open transactions: InitTransactions with the same id
// bumps the epoch, and the broker aborts what the old epoch left open.
func AbortTransactions(ctx context.Context, c Cluster, props map[string]string, ids []string, logger hclog.Logger) error {
	var errs []error
	for _, id := range ids {
		all := map[string]string{"transactional.id": id, "enable.idempotence": "true"}
		for k, v := range props {
			all[k] = v
		}
		p, err := NewProducer(c, all, logger)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := p.kp.InitTransactions(ctx); err != nil {
			errs = append(errs, fmt.Errorf("abort transactions of %s: %w", id, err))
		}
		p.Close()
	}
	return errors.Join(errs...)
}

// CommitGroupOffsets sets the group's committed offsets (the next offset to
// read of each partition), for lag tools. The group must have no active
// members, which holds for Sluice's groups: nothing ever subscribes.
func (a *Admin) CommitGroupOffsets(ctx context.Context, group string, offsets map[TopicPartition]int64) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	tps := make([]kafka.TopicPartition, 0, len(offsets))
	for tp, off := range offsets {
		topic := tp.Topic
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: tp.Partition, Offset: kafka.Offset(off)})
	}
	res, err := a.admin.AlterConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group, Partitions: tps}})
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	for _, g := range res.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Error != nil {
				return fmt.Errorf("commit offsets of group %s, %s/%d: %w", group, *tp.Topic, tp.Partition, tp.Error)
			}
		}
	}
	return nil
}

// GroupOffsets reads the group's committed offsets of tps (-1 where none),
// waiting for pending transactional commits to settle.
func (a *Admin) GroupOffsets(ctx context.Context, group string, tps []TopicPartition) (map[TopicPartition]int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	parts := make([]kafka.TopicPartition, 0, len(tps))
	for _, tp := range tps {
		topic := tp.Topic
		parts = append(parts, kafka.TopicPartition{Topic: &topic, Partition: tp.Partition})
	}
	res, err := a.admin.ListConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group, Partitions: parts}},
		kafka.SetAdminRequireStableOffsets(true))
	if err != nil {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	out := map[TopicPartition]int64{}
	for _, g := range res.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Error != nil {
				return nil, fmt.Errorf("offsets of group %s, %s/%d: %w", group, *tp.Topic, tp.Partition, tp.Error)
			}
			out[TopicPartition{Topic: *tp.Topic, Partition: tp.Partition}] = int64(tp.Offset)
		}
	}
	return out, nil
}

// BrokerConfigInt reads an integer broker configuration (e.g.
// transaction.max.timeout.ms) from any broker of the cluster.
func (a *Admin) BrokerConfigInt(ctx context.Context, name string) (int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	md, err := a.admin.GetMetadata(nil, false, 5000)
	if err != nil || len(md.Brokers) == 0 {
		return 0, fmt.Errorf("describe broker config %s: no broker metadata: %v", name, err)
	}
	res, err := a.admin.DescribeConfigs(ctx, []kafka.ConfigResource{{
		Type: kafka.ResourceBroker, Name: strconv.Itoa(int(md.Brokers[0].ID)),
	}})
	if err != nil {
		return 0, fmt.Errorf("describe broker config %s: %w", name, err)
	}
	for _, r := range res {
		if r.Error.Code() != kafka.ErrNoError {
			return 0, fmt.Errorf("describe broker config %s: %w", name, r.Error)
		}
		if e, ok := r.Config[name]; ok {
			v, err := strconv.ParseInt(e.Value, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("broker config %s=%q: %w", name, e.Value, err)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("broker config %s: not reported", name)
}

// GroupID is the consumer group of a job. Sluice never joins it (assign, not
// subscribe); it holds the job's offsets for lag tools and, with the
// transactional Kafka sink, the offsets committed with the output.
func GroupID(job string) string { return "sluice-" + job }

// TransactionalID is the stable, bounded transactional id of a job's source
// partition: one per partition, whatever the number of batches.
func TransactionalID(prefix, job, topic string, partition int32) string {
	if prefix == "" {
		prefix = "sluice"
	}
	return fmt.Sprintf("%s-%s-%s-%d", prefix, job, topic, partition)
}
