package kafkasrc

import (
	"container/list"
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
// took over: this writer's transaction can never commit. It is not
// permanent: the newer producer is another attempt of the same work.
var ErrFenced = errors.New("kafkasrc: producer fenced by a newer instance")

// sinkQueueKBytes bounds the records a sink producer holds for delivery
// (librdkafka's default is 1 GiB): a task that produces faster than the
// brokers acknowledge waits for room instead of growing. 16 MiB is many
// batches in flight; a sink's properties may set another value.
const sinkQueueKBytes = "16384"

// DefaultSinkCapacity is the number of transactional writers, and of
// idempotent producers, that Sinks keeps by default.
const DefaultSinkCapacity = 64

// Sinks writes task output to Kafka: transactions per source partition
// (exactly-once) or an idempotent producer per cluster (at-least-once). It is
// safe for concurrent use.
//
// It keeps producers for reuse across tasks, in two LRU lists bounded by a
// capacity: the transactional writers, by transactional id (a writer is
// reused only when its cluster, properties, transaction timeout and group are
// the task's too, so that an --update of any of them takes effect), and the
// idempotent producers, by cluster and properties. A writer's group client
// lives as long as the writers that use it. A client evicted or replaced
// while a task uses it is closed when the task is done with it.
//
// Sinks also follows each job's incarnation and sink settings as its tasks
// give them: when a task of a job brings new ones, the clients of the job's
// earlier ones are released, so a job deleted and submitted again, reset or
// updated does not leave its old clients behind until the LRU evicts them.
type Sinks struct {
	logger   hclog.Logger
	capacity int

	mu      sync.Mutex
	txns    map[string]*txnWriter // by transactional id
	txnLRU  *list.List            // of *txnWriter, most recently used first
	idem    map[string]*idemProducer
	idemLRU *list.List            // of *idemProducer, most recently used first
	groups  map[string]*groupMeta // by cluster key + group; refcounted by writers
	jobs    map[string]jobUse     // what each job's tasks last used
	closed  bool
	closing sync.WaitGroup // clients being closed in the background
}

// jobUse is the incarnation and sink settings a job's last task used.
type jobUse struct {
	incarnation string
	target      string
}

// Option configures NewSinks and NewAdminPool.
type Option func(*options)

type options struct {
	capacity int
	memory   int64
}

// WithCapacity bounds the number of clients kept (at least 1).
func WithCapacity(n int) Option { return func(o *options) { o.capacity = max(n, 1) } }

// WithMemory is the budget of a Cache's consumers' prefetch, in bytes (see
// Cache).
func WithMemory(n int64) Option { return func(o *options) { o.memory = n } }

// NewSinks returns an empty set of sink writers, keeping at most
// DefaultSinkCapacity transactional writers and as many idempotent producers
// unless WithCapacity says otherwise.
func NewSinks(logger hclog.Logger, opts ...Option) *Sinks {
	o := options{capacity: DefaultSinkCapacity}
	for _, f := range opts {
		f(&o)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Sinks{
		logger: logger, capacity: o.capacity,
		txns: map[string]*txnWriter{}, txnLRU: list.New(),
		idem: map[string]*idemProducer{}, idemLRU: list.New(),
		groups: map[string]*groupMeta{}, jobs: map[string]jobUse{},
	}
}

// Close closes every producer; one in use is closed when its task is done
// with it. Writes fail with ErrClosed after Close.
func (s *Sinks) Close() {
	s.mu.Lock()
	for _, w := range s.txns {
		s.dropTxnLocked(w)
	}
	for _, p := range s.idem {
		s.dropIdemLocked(p)
	}
	s.closed = true // after the drops, so that Wait counts their closes
	s.mu.Unlock()
	s.closing.Wait()
}

// Clients returns the number of transactional writers, idempotent producers
// and group clients open.
func (s *Sinks) Clients() (txns, idem, groups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.txns), len(s.idem), len(s.groups)
}

// ForgetJob releases the clients that only job uses: its transactional
// writers, and the idempotent producers no other job wrote with since they
// were created. Call it when the job is gone.
func (s *Sinks) ForgetJob(job string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseJobLocked(job, jobUse{})
	delete(s.jobs, job)
}

// noteJobLocked records what a task of job uses, and releases the job's
// clients of other incarnations or settings. s.mu must be held.
func (s *Sinks) noteJobLocked(job string, use jobUse) {
	if job == "" {
		return
	}
	if old, ok := s.jobs[job]; ok && old != use {
		s.releaseJobLocked(job, use)
	}
	s.jobs[job] = use
}

// releaseJobLocked drops the job's clients that do not match keep.
func (s *Sinks) releaseJobLocked(job string, keep jobUse) {
	for _, w := range s.txns {
		if w.job == job && w.use != keep {
			s.dropTxnLocked(w)
		}
	}
	for _, p := range s.idem {
		if p.users[job] && "idem|"+p.key != keep.target {
			delete(p.users, job)
			if len(p.users) == 0 {
				s.dropIdemLocked(p)
			}
		}
	}
}

// forgetUnusedJobsLocked deletes the jobs that no cached client mentions,
// so that jobs does not grow with every job ever seen.
func (s *Sinks) forgetUnusedJobsLocked() {
	if len(s.jobs) <= 2*s.capacity {
		return
	}
	used := map[string]bool{}
	for _, w := range s.txns {
		used[w.job] = true
	}
	for _, p := range s.idem {
		for j := range p.users {
			used[j] = true
		}
	}
	for j := range s.jobs {
		if !used[j] {
			delete(s.jobs, j)
		}
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

// IdempotentTask is one task's write with an idempotent producer.
type IdempotentTask struct {
	// Job and Incarnation name the task's job; they let Sinks release the
	// producers a job no longer uses.
	Job, Incarnation string
	Cluster          Cluster
	Properties       map[string]string
}

// idemProducer is a cached idempotent producer, shared by the tasks of
// every job that writes to its cluster with its properties.
type idemProducer struct {
	key     string
	prod    *Producer
	users   map[string]bool // jobs
	elem    *list.Element   // in Sinks.idemLRU; nil once dropped
	refs    int             // writes in progress
	dropped bool
}

// WriteIdempotent writes msgs with an idempotent producer and waits until
// every one is acknowledged. Its error is about these messages only: other
// tasks writing with the same producer at the same time get their own.
// Errors that a retry would repeat wrap ErrPermanent.
func (s *Sinks) WriteIdempotent(ctx context.Context, t IdempotentTask, msgs []Message) error {
	w, err := s.OpenIdempotent(t)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Write(ctx, msgs); err != nil {
		return err
	}
	return w.Flush(ctx)
}

// IdemWrite is one task's write with an idempotent producer, in chunks:
// Write produces a chunk without waiting for it, Flush waits for every
// record written, Close releases the producer. Its errors are about its own
// records only. It is not safe for concurrent use.
type IdemWrite struct {
	s      *Sinks
	p      *idemProducer
	tr     *tracker
	closed bool
}

// OpenIdempotent returns a write with the idempotent producer of t's
// cluster and properties; Close it.
func (s *Sinks) OpenIdempotent(t IdempotentTask) (*IdemWrite, error) {
	p, err := s.acquireIdem(t)
	if err != nil {
		return nil, err
	}
	return &IdemWrite{s: s, p: p, tr: newTracker()}, nil
}

// Write queues msgs. It blocks while librdkafka's queue is full
// (queue.buffering.max.messages, queue.buffering.max.kbytes), until
// deliveries make room. A topic that does not exist fails before its
// records are queued; a delivery already failed is returned at once.
func (w *IdemWrite) Write(ctx context.Context, msgs []Message) error {
	if err := w.tr.failure(); err != nil {
		return err
	}
	if err := w.p.prod.checkTopics(ctx, msgs); err != nil {
		return err
	}
	for _, m := range msgs {
		if err := w.p.prod.produce(ctx, w.tr, m); err != nil {
			return err
		}
	}
	return nil
}

// Flush waits until every record written is delivered or failed, and
// returns the first failure (saying how many more failed).
func (w *IdemWrite) Flush(ctx context.Context) error { return w.p.prod.wait(ctx, w.tr) }

// Close releases the producer; records not flushed may still be delivered.
func (w *IdemWrite) Close() {
	if w.closed {
		return
	}
	w.closed = true
	w.s.releaseIdem(w.p)
}

func (s *Sinks) acquireIdem(t IdempotentTask) (*idemProducer, error) {
	key := t.Cluster.Key() + "|" + propsKey(t.Properties)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("idempotent producer for %s: %w", t.Cluster.Bootstrap, ErrClosed)
	}
	s.noteJobLocked(t.Job, jobUse{incarnation: t.Incarnation, target: "idem|" + key})
	if p, ok := s.idem[key]; ok && p.prod.Fatal() == nil {
		p.refs++
		p.users[t.Job] = true
		s.idemLRU.MoveToFront(p.elem)
		return p, nil
	} else if ok {
		s.logger.Warn("replacing an idempotent producer after a fatal error", "bootstrap", t.Cluster.Bootstrap, "error", p.prod.Fatal())
		s.dropIdemLocked(p)
	}
	all := map[string]string{"enable.idempotence": "true", "acks": "all", "queue.buffering.max.kbytes": sinkQueueKBytes}
	for k, v := range t.Properties {
		all[k] = v
	}
	// Creating a client does no network I/O: holding the lock is fine.
	prod, err := NewProducer(t.Cluster, all, s.logger)
	if err != nil {
		return nil, err
	}
	p := &idemProducer{key: key, prod: prod, users: map[string]bool{t.Job: true}, refs: 1}
	p.elem = s.idemLRU.PushFront(p)
	s.idem[key] = p
	for s.idemLRU.Len() > s.capacity {
		s.dropIdemLocked(s.idemLRU.Back().Value.(*idemProducer))
	}
	s.forgetUnusedJobsLocked()
	return p, nil
}

func (s *Sinks) releaseIdem(p *idemProducer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.refs--
	if p.prod.Fatal() != nil && !p.dropped {
		s.dropIdemLocked(p)
		return
	}
	if p.dropped && p.refs == 0 {
		s.closeLater(p.prod.Close)
	}
}

// dropIdemLocked removes p from the cache; it is closed now if idle, else
// when its last write returns.
func (s *Sinks) dropIdemLocked(p *idemProducer) {
	if p.dropped {
		return
	}
	p.dropped = true
	if s.idem[p.key] == p {
		delete(s.idem, p.key)
	}
	s.idemLRU.Remove(p.elem)
	p.elem = nil
	if p.refs == 0 {
		s.closeLater(p.prod.Close)
	}
}

// closeLater runs close in the background (closing a librdkafka client can
// take a while) and counts it for Close. s.mu must be held.
func (s *Sinks) closeLater(close func()) {
	if s.closed {
		// Close is waiting for, or is done with, the clients it dropped;
		// a client that was in use when it ran is closed on its own.
		go close()
		return
	}
	s.closing.Add(1)
	go func() {
		defer s.closing.Done()
		close()
	}()
}

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

// CommitGroupOffsets sets the group's committed offsets (the next offset to
// read of each partition), for lag tools. The group must have no active
// members, which holds for Sluice's groups: nothing ever subscribes.
func (a *Admin) CommitGroupOffsets(ctx context.Context, group string, offsets map[TopicPartition]int64) error {
	ctx, done, err := a.start(ctx)
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	defer done()
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
	ctx, done, err := a.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	defer done()
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
	ctx, done, err := a.start(ctx)
	if err != nil {
		return 0, fmt.Errorf("describe broker config %s: %w", name, err)
	}
	defer done()
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
