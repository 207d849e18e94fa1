package kafkasrc

import (
	"container/list"
	"errors"
	"sort"
	"strconv"
	"sync"

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
const DefaultSinkCapacity = 128

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
	check    func(Cluster) error // AdminPool: see WithCheck
	stats    StatsSink           // Cache and Pool: see WithStats
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
