package kafkasrc

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"
)

// TxnTask is one task's transactional write.
type TxnTask struct {
	// Job and Incarnation name the task's job; they let Sinks release the
	// writers of a job's earlier incarnations and settings.
	Job, Incarnation string
	Cluster          Cluster
	Properties       map[string]string
	// TransactionalID is stable per (job incarnation, source partition).
	TransactionalID string
	Timeout         time.Duration
	// Group is the job's consumer group; Source's Until is committed to it.
	Group  string
	Source Range
	// BeforeCommit, if set, runs after the output and offsets are in the
	// transaction and before it commits (a failpoint for tests).
	BeforeCommit func()
	// Fence makes the writer fence every other writer of the id at once
	// (a re-run, or a speculative copy of a task still running elsewhere):
	// an idle cached writer is not reused, since reusing it would skip
	// InitTransactions and leave a slow or frozen attempt's transaction to
	// time out first.
	Fence bool
}

func (t TxnTask) timeout() time.Duration {
	if t.Timeout <= 0 {
		return time.Minute
	}
	return t.Timeout
}

// target names the settings a writer is created with, but for its id and
// group.
func (t TxnTask) target() string {
	return fmt.Sprintf("txn|%s|%s|%d", t.Cluster.Key(), propsKey(t.Properties), t.timeout().Milliseconds())
}

// Transact writes msgs and commits Source.Until to the job's group in one
// Kafka transaction. When the group's committed offset of the source
// partition already reached Source.Until, an earlier attempt committed this
// range: nothing is written and skipped is true. A newer producer with the
// same transactional id fences this one (ErrFenced). Errors that a retry
// would repeat wrap ErrPermanent.
func (s *Sinks) Transact(ctx context.Context, t TxnTask, msgs []Message) (skipped bool, err error) {
	tw, skipped, err := s.BeginTxn(ctx, t)
	if err != nil || skipped {
		return skipped, err
	}
	defer tw.Close()
	if err := tw.Write(ctx, msgs); err != nil {
		return false, err
	}
	return false, tw.Commit(ctx)
}

// TxnWrite is one task's open transaction, written in chunks as the task
// produces its output: Write produces a chunk (librdkafka sends it while
// the task goes on; a read_uncommitted reader sees it), Commit adds
// Source.Until for the job's group and commits, and Close aborts a
// transaction that did not commit and releases the writer. A TxnWrite
// holds no records: its memory is librdkafka's queue. It is not safe for
// concurrent use.
type TxnWrite struct {
	s    *Sinks
	w    *txnWriter
	t    TxnTask
	tr   *tracker // the transaction's deliveries: their errors explain a failure
	open bool     // begun, neither committed nor aborted
	done bool     // Close was called
}

// BeginTxn checks t's range and begins its transaction. When the group's
// committed offset of the source partition already reached Source.Until,
// an earlier attempt committed the range: skipped is true, there is no
// transaction, and the caller must write nothing. Otherwise Close the
// TxnWrite when done with it.
func (s *Sinks) BeginTxn(ctx context.Context, t TxnTask) (tw *TxnWrite, skipped bool, err error) {
	w, err := s.acquireTxn(ctx, t)
	if err != nil {
		return nil, false, err
	}
	src := t.Source
	// A range whose end offset the group already holds was written by an
	// earlier attempt (committed in Kafka before its result reached the
	// coordinator): writing it again would duplicate it. Asked before
	// anything is produced.
	if off, err := w.group.committed(ctx, src.Topic, src.Partition); err != nil {
		s.releaseTxn(w)
		return nil, false, err
	} else if off >= src.Until {
		s.releaseTxn(w)
		return nil, true, nil
	}
	tw = &TxnWrite{s: s, w: w, t: t, tr: newTracker()}
	if err := w.prod.kp.BeginTransaction(); err != nil {
		err = w.fail(ctx, "begin", err, nil)
		tw.Close()
		return nil, false, err
	}
	tw.open = true
	return tw, false, nil
}

// Write produces msgs in the transaction. It blocks while librdkafka's
// queue is full, until deliveries make room. A topic that does not exist,
// a record refused or a delivery already failed aborts the transaction and
// is returned; the TxnWrite is then done but for Close.
func (tw *TxnWrite) Write(ctx context.Context, msgs []Message) error {
	if !tw.open {
		return fmt.Errorf("transaction %s: write: %w", tw.w.id, errTxnNotOpen)
	}
	w := tw.w
	if err := tw.tr.failure(); err != nil {
		// librdkafka would refuse the next produce or the commit anyway.
		tw.open = false
		w.abort(ctx)
		return fmt.Errorf("transaction %s: deliver: %w", w.id, err)
	}
	if err := w.prod.checkTopics(ctx, msgs); err != nil {
		tw.open = false
		w.abort(ctx)
		return fmt.Errorf("transaction %s: %w", w.id, err)
	}
	for _, m := range msgs {
		if err := w.prod.produce(ctx, tw.tr, m); err != nil {
			tw.open = false
			return w.fail(ctx, "produce", err, tw.tr)
		}
	}
	return nil
}

// failure returns the first delivery error so far, nil if none, without
// waiting for the records still pending.
func (t *tracker) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failed == 0 {
		return nil
	}
	return t.firstErr
}

// errTxnNotOpen: a TxnWrite used after it failed, committed or closed.
var errTxnNotOpen = errors.New("kafkasrc: transaction not open")

// Commit sends Source.Until to the group in the transaction, runs
// BeforeCommit and commits. A ctx done by then aborts instead: the task was
// cancelled or is past its deadline, and its range may have moved on.
func (tw *TxnWrite) Commit(ctx context.Context) error {
	if !tw.open {
		return fmt.Errorf("transaction %s: commit: %w", tw.w.id, errTxnNotOpen)
	}
	tw.open = false
	w, src := tw.w, tw.t.Source
	kp := w.prod.kp
	offsets := []kafka.TopicPartition{{Topic: &src.Topic, Partition: src.Partition, Offset: kafka.Offset(src.Until)}}
	if err := kp.SendOffsetsToTransaction(ctx, offsets, w.group.meta); err != nil {
		return w.fail(ctx, "send offsets to group "+w.groupID, err, tw.tr)
	}
	if tw.t.BeforeCommit != nil {
		tw.t.BeforeCommit()
	}
	if err := ctx.Err(); err != nil {
		w.abort(ctx)
		return fmt.Errorf("transaction %s: not committed: %w", w.id, err)
	}
	if err := kp.CommitTransaction(ctx); err != nil {
		return w.fail(ctx, "commit", err, tw.tr)
	}
	return nil
}

// Close aborts the transaction if it is still open (the task failed or was
// cancelled part way) and releases the writer. It may be called more than
// once.
func (tw *TxnWrite) Close() {
	if tw.done {
		return
	}
	tw.done = true
	if tw.open {
		tw.open = false
		tw.w.abort(context.Background())
	}
	tw.s.releaseTxn(tw.w)
}

// acquireTxn returns the writer of t's transactional id, created with t's
// settings, for the caller's use only.
func (s *Sinks) acquireTxn(ctx context.Context, t TxnTask) (*txnWriter, error) {
	use := jobUse{incarnation: t.Incarnation, target: t.target()}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("transactional writer %s: %w", t.TransactionalID, ErrClosed)
	}
	s.noteJobLocked(t.Job, use)
	if w, ok := s.txns[t.TransactionalID]; ok && !t.Fence && !w.broken && w.refs == 0 && w.use == use && w.groupID == t.Group {
		w.refs++
		s.txnLRU.MoveToFront(w.elem)
		s.mu.Unlock()
		return w, nil
	}
	s.mu.Unlock()
	// A writer of this id with other settings, or busy with another attempt
	// of the same range, is replaced: the new writer's InitTransactions
	// fences it and aborts its transaction.
	g, err := s.acquireGroup(t.Cluster, t.Group)
	if err != nil {
		return nil, err
	}
	w, err := newTxnWriter(ctx, t, g, s.logger)
	if err != nil {
		s.releaseGroup(g)
		return nil, err
	}
	w.job, w.use, w.refs = t.Job, use, 1
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.closeTxnLocked(w)
		return nil, fmt.Errorf("transactional writer %s: %w", t.TransactionalID, ErrClosed)
	}
	if old, ok := s.txns[t.TransactionalID]; ok {
		s.dropTxnLocked(old)
	}
	w.elem = s.txnLRU.PushFront(w)
	s.txns[t.TransactionalID] = w
	for s.txnLRU.Len() > s.capacity {
		s.dropTxnLocked(s.txnLRU.Back().Value.(*txnWriter))
	}
	s.forgetUnusedJobsLocked()
	return w, nil
}

func (s *Sinks) releaseTxn(w *txnWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.refs--
	if w.broken && !w.dropped {
		s.dropTxnLocked(w)
		return
	}
	if w.dropped && w.refs == 0 {
		s.closeTxnLocked(w)
	}
}

// dropTxnLocked removes w from the cache; it is closed now if idle, else
// when its task is done with it.
func (s *Sinks) dropTxnLocked(w *txnWriter) {
	if w.dropped {
		return
	}
	w.dropped = true
	if s.txns[w.id] == w {
		delete(s.txns, w.id)
	}
	s.txnLRU.Remove(w.elem)
	w.elem = nil
	if w.refs == 0 {
		s.closeTxnLocked(w)
	}
}

// closeTxnLocked closes w, and its group client if w was its last writer,
// in the background. s.mu must be held.
func (s *Sinks) closeTxnLocked(w *txnWriter) {
	g := w.group
	last := s.unrefGroupLocked(g)
	s.closeLater(func() {
		w.prod.Close()
		if last {
			g.close()
		}
	})
}

// groupMeta holds a consumer that has the job's group.id but never
// subscribes: its group metadata lets a transaction commit offsets for the
// group (SendOffsetsToTransaction), and its committed-offset queries read the
// group's offsets. It is shared by the writers of the group and closed with
// the last of them.
type groupMeta struct {
	key      string
	group    string
	consumer *kafka.Consumer
	logs     *logPump
	meta     *kafka.ConsumerGroupMetadata
	refs     int // writers using it; guarded by Sinks.mu
}

func (s *Sinks) acquireGroup(c Cluster, group string) (*groupMeta, error) {
	key := c.Key() + "|" + group
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.groups[key]; ok {
		g.refs++
		return g, nil
	}
	g := &groupMeta{key: key, group: group, logs: newLogPump(s.logger)}
	cm := baseConfig(c)
	cm["group.id"] = group
	cm["enable.auto.commit"] = false
	cm["isolation.level"] = "read_committed"
	g.logs.configure(cm)
	cons, err := newKafkaConsumer(&cm)
	if err != nil {
		g.logs.stop()
		return nil, permanent(fmt.Errorf("group %s consumer: %w", group, err))
	}
	meta, err := cons.GetConsumerGroupMetadata()
	if err != nil {
		_ = closeKafkaConsumer(cons)
		g.logs.stop()
		return nil, fmt.Errorf("group %s metadata: %w", group, err)
	}
	g.consumer, g.meta, g.refs = cons, meta, 1
	s.groups[key] = g
	return g, nil
}

// releaseGroup is called once per writer that acquired g, when the writer
// is closed; the last one closes g.
func (s *Sinks) releaseGroup(g *groupMeta) {
	s.mu.Lock()
	last := s.unrefGroupLocked(g)
	s.mu.Unlock()
	if last {
		g.close()
	}
}

// unrefGroupLocked drops one writer's reference to g and reports whether it
// was the last: g is then out of the cache, for the caller to close.
func (s *Sinks) unrefGroupLocked(g *groupMeta) bool {
	g.refs--
	if g.refs > 0 {
		return false
	}
	if s.groups[g.key] == g {
		delete(s.groups, g.key)
	}
	return true
}

func (g *groupMeta) close() {
	_ = closeKafkaConsumer(g.consumer)
	g.logs.stop()
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
		return 0, permanent(fmt.Errorf("committed offset of %s/%d in group %s: %w", topic, partition, g.group, err))
	}
	if len(tps) != 1 {
		return -1, nil
	}
	if groupNotFound(tps[0].Error) {
		return -1, nil
	}
	if tps[0].Error != nil {
		return 0, permanent(fmt.Errorf("committed offset of %s/%d in group %s: %w", topic, partition, g.group, tps[0].Error))
	}
	return int64(tps[0].Offset), nil
}

func groupNotFound(err error) bool {
	var ke kafka.Error
	return errors.As(err, &ke) && ke.Code() == kafka.ErrGroupIDNotFound
}

// txnWriter is one transactional producer. It is used by one task at a
// time: its transactional id is its source partition's, and a second
// attempt of the same range gets a new writer that fences this one.
type txnWriter struct {
	id      string
	groupID string
	prod    *Producer
	group   *groupMeta

	// Guarded by Sinks.mu.
	job     string
	use     jobUse
	elem    *list.Element // in Sinks.txnLRU; nil once dropped
	refs    int
	dropped bool

	// Owned by the task using the writer; read under Sinks.mu on release.
	broken bool
}

func newTxnWriter(ctx context.Context, t TxnTask, g *groupMeta, logger hclog.Logger) (*txnWriter, error) {
	props := map[string]string{
		"transactional.id":           t.TransactionalID,
		"transaction.timeout.ms":     strconv.FormatInt(t.timeout().Milliseconds(), 10),
		"enable.idempotence":         "true",
		"acks":                       "all",
		"queue.buffering.max.kbytes": sinkQueueKBytes,
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
		return nil, permanent(fmt.Errorf("init transactions of %s: %w", t.TransactionalID, err))
	}
	return &txnWriter{id: t.TransactionalID, groupID: t.Group, prod: p, group: g}, nil
}

// abort aborts the open transaction, within 10 seconds whatever ctx says;
// a writer that cannot abort is broken.
func (w *txnWriter) abort(ctx context.Context) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := w.prod.kp.AbortTransaction(actx); err != nil {
		w.prod.logger.Warn("abort transaction", "transactional_id", w.id, "error", err)
		w.broken = true
	}
}

// fail aborts the transaction where that is possible and classifies err: a
// fenced or fatal producer is broken and must be replaced. When the
// transaction failed because a record could not be delivered, that
// delivery error is returned instead: it says what went wrong.
func (w *txnWriter) fail(ctx context.Context, what string, err error, tr *tracker) error {
	var ke kafka.Error
	isKafka := errors.As(err, &ke)
	switch {
	case isKafka && (ke.Code() == kafka.ErrFenced || ke.Code() == kafka.ErrProducerFenced):
		w.broken = true
		return fmt.Errorf("transaction %s: %s: %w: %w", w.id, what, ErrFenced, err)
	case isKafka && ke.IsFatal():
		w.broken = true
	case (isKafka && ke.TxnRequiresAbort()) || what == "produce":
		// A record refused by produce leaves the transaction open and
		// usable: abort it too.
		w.abort(ctx)
	default:
		// A context error or a non-abortable one: the transaction state is
		// unknown.
		w.broken = true
	}
	if tr != nil {
		// The commit or abort flushed every record: their reports are on
		// their way.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		derr := w.prod.wait(wctx, tr)
		cancel()
		// Records purged by the abort say nothing about the cause.
		if errors.Is(derr, ErrPermanent) && !purged(derr) {
			return fmt.Errorf("transaction %s: %s: %w", w.id, what, derr)
		}
	}
	return fmt.Errorf("transaction %s: %s: %w", w.id, what, permanent(err))
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
