// Package offsetstore keeps Sluice's durable state in etcd: job records, batch
// plans and metrics, committed offsets and collect-sink results.
//
// Layout under the prefix (default "/sluice/"):
//
//	jobs/<job>                 Job (spec, state, message)
//	offsets/<job>              CommittedOffsets of every partition of the job
//	batches/<job>/<id:020d>    Batch (plan, state, metrics)
//	results/<job>/<id:020d>    BatchResult of a committed batch
//	retained/<job>/<id:020d>   size index of that result (see CommitBatch)
//	state/<job>                AggregateState across batches (running totals, open windows)
//	leader/                    coordinator election
//
// A job's offsets are one key so that a batch commit is a handful of etcd
// operations whatever the partition count (etcd allows 128 per transaction).
// Every write the leader makes is guarded by a fence, a comparison on the
// leader's election key, so a deposed coordinator can never commit.
package offsetstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

var (
	// ErrNotFound is returned when a job or batch does not exist.
	ErrNotFound = errors.New("offsetstore: not found")
	// ErrExists is returned when a job is created under a name in use.
	ErrExists = errors.New("offsetstore: already exists")
	// ErrConflict is returned when a guarded write lost a race: another writer
	// changed the record, or the fence (leadership) no longer holds.
	ErrConflict = errors.New("offsetstore: conflicting write or lost leadership")
	// ErrTooLarge is returned when a write exceeds the configured request limit.
	ErrTooLarge = errors.New("offsetstore: too large")
)

// KV is the part of the etcd client the store needs.
type KV interface {
	clientv3.KV
}

// Store reads and writes Sluice state. The zero fence means unguarded writes
// (user requests); the leader uses WithFence.
type Store struct {
	kv       KV
	prefix   string
	fence    []clientv3.Cmp
	maxBytes int
	sizes    *sizeCache // shared by the fenced copies
}

// Options tune a Store.
type Options struct {
	// Prefix of every key; default "/sluice/".
	Prefix string
	// MaxRequestBytes bounds one transaction; etcd's default request limit is
	// 1.5 MiB, so the default is 1.4 MiB to leave room for the envelope.
	MaxRequestBytes int
}

// New returns a store over kv.
func New(kv KV, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "/sluice/"
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = 1400 << 10
	}
	return &Store{kv: kv, prefix: opts.Prefix, maxBytes: opts.MaxRequestBytes, sizes: &sizeCache{m: map[string]sizeWindow{}}}
}

// Prefix is the key prefix of this store.
func (s *Store) Prefix() string { return s.prefix }

// ElectionPrefix is where coordinators campaign.
func (s *Store) ElectionPrefix() string { return s.prefix + "leader/" }

// WithFence returns a store whose every write also requires cmp to hold.
func (s *Store) WithFence(cmp clientv3.Cmp) *Store {
	c := *s
	c.fence = []clientv3.Cmp{cmp}
	return &c
}

func (s *Store) jobKey(job string) string     { return s.prefix + "jobs/" + job }
func (s *Store) jobsPrefix() string           { return s.prefix + "jobs/" }
func (s *Store) offsetsKey(job string) string { return s.prefix + "offsets/" + job }
func (s *Store) batchesPrefix(job string) string {
	return s.prefix + "batches/" + job + "/"
}
func (s *Store) resultsPrefix(job string) string {
	return s.prefix + "results/" + job + "/"
}
func (s *Store) stateKey(job string) string { return s.prefix + "state/" + job }
func (s *Store) retainedPrefix(job string) string {
	return s.prefix + "retained/" + job + "/"
}
func (s *Store) retainedKey(job string, id int64) string {
	return fmt.Sprintf("%s%020d", s.retainedPrefix(job), id)
}
func (s *Store) batchKey(job string, id int64) string {
	return fmt.Sprintf("%s%020d", s.batchesPrefix(job), id)
}
func (s *Store) resultKey(job string, id int64) string {
	return fmt.Sprintf("%s%020d", s.resultsPrefix(job), id)
}

// JobName returns the job a jobs/ key belongs to, or "" for other keys.
func (s *Store) JobName(key []byte) string {
	k := string(key)
	if !strings.HasPrefix(k, s.jobsPrefix()) {
		return ""
	}
	return strings.TrimPrefix(k, s.jobsPrefix())
}

// JobsPrefix is the prefix to watch for job changes.
func (s *Store) JobsPrefix() string { return s.jobsPrefix() }

// BatchesPrefix is the prefix to watch for a job's batch changes.
func (s *Store) BatchesPrefix(job string) string { return s.batchesPrefix(job) }

func (s *Store) txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) error {
	all := append(append([]clientv3.Cmp(nil), s.fence...), cmps...)
	resp, err := s.kv.Txn(ctx).If(all...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("etcd txn: %w", err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

func marshal(m proto.Message) (string, error) { return encode(m) }

// Versioned is a record with the etcd revision it was read at, for CAS.
type Versioned[T proto.Message] struct {
	Value       T
	ModRevision int64
}

func get[T proto.Message](ctx context.Context, s *Store, key string, newT func() T) (Versioned[T], error) {
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return Versioned[T]{}, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return Versioned[T]{}, ErrNotFound
	}
	v := newT()
	if err := decode(resp.Kvs[0].Value, v); err != nil {
		return Versioned[T]{}, fmt.Errorf("decode %s: %w", key, err)
	}
	return Versioned[T]{Value: v, ModRevision: resp.Kvs[0].ModRevision}, nil
}

func list[T proto.Message](ctx context.Context, s *Store, prefix string, newT func() T, opts ...clientv3.OpOption) ([]T, error) {
	resp, err := s.kv.Get(ctx, prefix, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("etcd list %s: %w", prefix, err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v := newT()
		if err := decode(kv.Value, v); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func newJob() *sluicev1.Job                  { return &sluicev1.Job{} }
func newBatch() *sluicev1.Batch              { return &sluicev1.Batch{} }
func newResult() *sluicev1.BatchResult       { return &sluicev1.BatchResult{} }
func newOffsets() *sluicev1.CommittedOffsets { return &sluicev1.CommittedOffsets{} }

// CreateJob stores a new job; ErrExists if the name is taken.
func (s *Store) CreateJob(ctx context.Context, job *sluicev1.Job) error {
	val, err := marshal(job)
	if err != nil {
		return err
	}
	key := s.jobKey(job.GetSpec().GetName())
	err = s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, clientv3.OpPut(key, val))
	if errors.Is(err, ErrConflict) {
		// Either the name is taken or the fence failed; only the former is ErrExists.
		if resp, gerr := s.kv.Get(ctx, key, clientv3.WithCountOnly()); gerr == nil && resp.Count > 0 {
			return fmt.Errorf("job %q: %w", job.GetSpec().GetName(), ErrExists)
		}
	}
	return err
}

// Job reads one job.
func (s *Store) Job(ctx context.Context, name string) (Versioned[*sluicev1.Job], error) {
	v, err := get(ctx, s, s.jobKey(name), newJob)
	if errors.Is(err, ErrNotFound) {
		return v, fmt.Errorf("job %q: %w", name, ErrNotFound)
	}
	return v, err
}

// Jobs lists every job, by name.
func (s *Store) Jobs(ctx context.Context) ([]*sluicev1.Job, error) {
	return list(ctx, s, s.jobsPrefix(), newJob)
}

// UpdateJob writes job if its record is still at modRevision.
func (s *Store) UpdateJob(ctx context.Context, job *sluicev1.Job, modRevision int64) error {
	val, err := marshal(job)
	if err != nil {
		return err
	}
	key := s.jobKey(job.GetSpec().GetName())
	return s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRevision)}, clientv3.OpPut(key, val))
}

// Offsets reads a job's committed offsets; ErrNotFound before the job's
// starting offsets were resolved.
func (s *Store) Offsets(ctx context.Context, job string) (Versioned[*sluicev1.CommittedOffsets], error) {
	return get(ctx, s, s.offsetsKey(job), newOffsets)
}

// CommittedBatch returns the id of the job's last committed batch (0 before
// the first), as Offsets would, without expanding the offsets: the API's
// job views ask for it on every call, and at 10,000 partitions expanding
// them is 10,000 messages.
func (s *Store) CommittedBatch(ctx context.Context, job string) (int64, error) {
	key := s.offsetsKey(job)
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, ErrNotFound
	}
	var offs sluicev1.CommittedOffsets // packed_offsets stays packed
	if err := proto.Unmarshal(resp.Kvs[0].Value, &offs); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return offs.GetBatchId(), nil
}

// State reads a job's aggregate state across batches; ErrNotFound when it
// keeps none or committed no batch since it started keeping one.
func (s *Store) State(ctx context.Context, job string) (Versioned[*sluicev1.AggregateState], error) {
	return get(ctx, s, s.stateKey(job), func() *sluicev1.AggregateState { return &sluicev1.AggregateState{} })
}

// InitOffsets records a new job's resolved starting offsets, once.
func (s *Store) InitOffsets(ctx context.Context, job string, offs *sluicev1.CommittedOffsets) error {
	val, err := marshal(offs)
	if err != nil {
		return err
	}
	key := s.offsetsKey(job)
	return s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, clientv3.OpPut(key, val))
}

// LastBatch returns the job's newest batch record, or ErrNotFound.
func (s *Store) LastBatch(ctx context.Context, job string) (Versioned[*sluicev1.Batch], error) {
	resp, err := s.kv.Get(ctx, s.batchesPrefix(job), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return Versioned[*sluicev1.Batch]{}, fmt.Errorf("etcd get last batch of %s: %w", job, err)
	}
	if len(resp.Kvs) == 0 {
		return Versioned[*sluicev1.Batch]{}, ErrNotFound
	}
	b := newBatch()
	if err := decode(resp.Kvs[0].Value, b); err != nil {
		return Versioned[*sluicev1.Batch]{}, fmt.Errorf("decode %s: %w", resp.Kvs[0].Key, err)
	}
	return Versioned[*sluicev1.Batch]{Value: b, ModRevision: resp.Kvs[0].ModRevision}, nil
}

// Batch reads one batch.
func (s *Store) Batch(ctx context.Context, job string, id int64) (*sluicev1.Batch, error) {
	v, err := get(ctx, s, s.batchKey(job, id), newBatch)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("batch %d of job %q: %w", id, job, ErrNotFound)
	}
	return v.Value, err
}

// Batches lists up to limit retained batches of a job, newest first.
func (s *Store) Batches(ctx context.Context, job string, limit int) ([]*sluicev1.Batch, error) {
	return list(ctx, s, s.batchesPrefix(job), newBatch,
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
}

// Results reads the retained results of batches from..to (inclusive, 0 = unbounded).
func (s *Store) Results(ctx context.Context, job string, from, to int64) ([]*sluicev1.BatchResult, error) {
	start := s.resultKey(job, max(from, 0))
	end := clientv3.GetPrefixRangeEnd(s.resultsPrefix(job))
	if to > 0 && to < math.MaxInt64 {
		end = s.resultKey(job, to+1)
	}
	resp, err := s.kv.Get(ctx, start, clientv3.WithRange(end))
	if err != nil {
		return nil, fmt.Errorf("etcd get results of %s: %w", job, err)
	}
	out := make([]*sluicev1.BatchResult, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r := newResult()
		if err := decode(kv.Value, r); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Retention is what a job retains of its committed batches, read at one
// etcd revision.
type Retention struct {
	// Revision is the etcd revision it was read at; read the results at it
	// (EachResult) for a view consistent with it.
	Revision int64
	// LastCommitted is the id of the job's last committed batch (0: none).
	LastCommitted int64
	// OldestRetained is the oldest committed batch still retained (0: none).
	OldestRetained int64
}

// Pruned reports whether committed batches of from..to (inclusive; 0 is
// unbounded) were pruned: their results are gone.
func (r Retention) Pruned(from, to int64) bool {
	from = max(from, 1)
	last := r.LastCommitted
	if to > 0 {
		last = min(last, to)
	}
	if from > last {
		return false
	}
	return r.OldestRetained == 0 || from < r.OldestRetained
}

// Retention reads a job's last committed batch (from its offsets) and its
// oldest retained committed batch (from the batch keys), in one request.
func (s *Store) Retention(ctx context.Context, job string) (Retention, error) {
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(s.offsetsKey(job)),
		clientv3.OpGet(s.batchesPrefix(job), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(1)),
	).Commit()
	if err != nil {
		return Retention{}, fmt.Errorf("etcd read retention of %s: %w", job, err)
	}
	r := Retention{Revision: resp.Header.Revision}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		offs := newOffsets()
		if err := decode(kv.Value, offs); err != nil {
			return r, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		r.LastCommitted = offs.GetBatchId()
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		b := newBatch()
		if err := decode(kv.Value, b); err != nil {
			return r, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		// Only the newest batch can be PLANNED: then none committed is retained.
		if b.GetState() == sluicev1.BatchState_BATCH_STATE_COMMITTED {
			r.OldestRetained = b.GetId()
		}
	}
	return r, nil
}

// resultChunkBytes is about how much one read of EachResult fetches.
const resultChunkBytes = 4 << 20

// EachResult calls fn with the retained results of batches from..to
// (inclusive, 0 = unbounded), oldest first, with each result's encoded
// size, read at revision rev (0: the current one), until fn returns false.
// Results are read a few at a time, so memory stays bounded whatever the
// number of batches.
func (s *Store) EachResult(ctx context.Context, job string, from, to, rev int64, fn func(r *sluicev1.BatchResult, size int) bool) error {
	end := clientv3.GetPrefixRangeEnd(s.resultsPrefix(job))
	if to > 0 && to < math.MaxInt64 {
		end = s.resultKey(job, to+1)
	}
	key := s.resultKey(job, max(from, 0))
	chunk := int64(8)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(chunk)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, key, opts...)
		if err != nil {
			return fmt.Errorf("etcd get results of %s: %w", job, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision // the next chunks read the same snapshot
		}
		var bytes int64
		for _, kv := range resp.Kvs {
			r := newResult()
			if err := decode(kv.Value, r); err != nil {
				return fmt.Errorf("decode %s: %w", kv.Key, err)
			}
			bytes += int64(len(kv.Value))
			if !fn(r, len(kv.Value)) {
				return nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		// Fetch about resultChunkBytes next time: many small results per
		// read, few large ones.
		chunk = min(max(resultChunkBytes*int64(len(resp.Kvs))/max(bytes, 1), 1), 256)
	}
}

// Result reads one batch's result; ErrNotFound if the batch had none.
func (s *Store) Result(ctx context.Context, job string, id int64) (*sluicev1.BatchResult, error) {
	v, err := get(ctx, s, s.resultKey(job, id), newResult)
	return v.Value, err
}

// LogPlan writes a new PLANNED batch before any of its tasks runs, provided the
// batch id is new and the offsets it was planned from are still current.
func (s *Store) LogPlan(ctx context.Context, b *sluicev1.Batch, offsetsRev int64) (int64, error) {
	val, err := marshal(b)
	if err != nil {
		return 0, err
	}
	key := s.batchKey(b.GetJob(), b.GetId())
	all := append(append([]clientv3.Cmp(nil), s.fence...),
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.offsetsKey(b.GetJob())), "=", offsetsRev))
	resp, err := s.kv.Txn(ctx).If(all...).Then(clientv3.OpPut(key, val)).Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd log plan of batch %d: %w", b.GetId(), err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("log plan of batch %d of %s: %w", b.GetId(), b.GetJob(), ErrConflict)
	}
	return resp.Header.Revision, nil
}

// Commit is everything a batch commit writes, in one transaction.
type Commit struct {
	Batch *sluicev1.Batch // state COMMITTED, metrics filled
	// BatchRevision is the ModRevision of the PLANNED record; the commit fails if it changed.
	BatchRevision int64
	Result        *sluicev1.BatchResult // nil when there is nothing to collect
	Offsets       *sluicev1.CommittedOffsets
	// OffsetsRevision is the ModRevision of the offsets the batch was planned from.
	OffsetsRevision int64
	// Keep is how many batches (and results) to retain; older ones are deleted.
	Keep int64
	// KeepBytes bounds the retained results' encoded size; older batches
	// (and results) are deleted past it. 0 is no bound.
	KeepBytes int64
	// State is the job's aggregate state with this batch folded in (nil:
	// the job keeps none). It is written with the offsets, so the two never
	// disagree; StateRevision is the ModRevision of the state it was folded
	// from (0: there was none), which must still hold.
	State         *sluicev1.AggregateState
	StateRevision int64
}

// pruneWindow is how many of the oldest retained results one commit looks
// at to prune by size: the work of a commit stays bounded, and a backlog
// (KeepBytes lowered) is pruned over the next commits.
const pruneWindow = 64

// sizeEntry is a retained/ index entry: the encoded size of one batch's
// result and the running total of result bytes the job committed up to and
// including it. The retained results' size is then the newest entry's
// total minus what preceded the oldest entry, from two small reads,
// whatever the number of retained batches.
type sizeEntry struct {
	ID, Size, Total int64
}

func encodeSize(size, total int64) string {
	b := binary.AppendUvarint(nil, uint64(size))
	return string(binary.AppendUvarint(b, uint64(total)))
}

func decodeSize(key, val []byte, prefix string) (sizeEntry, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(string(key), prefix), 10, 64)
	if err != nil {
		return sizeEntry{}, fmt.Errorf("decode %s: %w", key, err)
	}
	size, n := binary.Uvarint(val)
	if n <= 0 {
		return sizeEntry{}, fmt.Errorf("decode %s: bad size entry %x", key, val)
	}
	total, m := binary.Uvarint(val[n:])
	if m <= 0 {
		return sizeEntry{}, fmt.Errorf("decode %s: bad size entry %x", key, val)
	}
	return sizeEntry{ID: id, Size: int64(size), Total: int64(total)}, nil
}

// sizeWindow is what a commit needs of a job's size index: its newest entry
// and its oldest ones (all of them when complete).
type sizeWindow struct {
	newest   *sizeEntry
	oldest   []sizeEntry
	complete bool
	// offsetsRev is the offsets revision the window is current at: every
	// write of the index also writes the offsets.
	offsetsRev int64
}

// sizeCache keeps each job's size window as the last commit through this
// store left it, so that the next commit, if nothing else wrote the offsets
// meanwhile, needs no read.
type sizeCache struct {
	mu sync.Mutex
	m  map[string]sizeWindow
}

func (c *sizeCache) get(job string, offsetsRev int64) (sizeWindow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.m[job]
	// A window running low is read again, so that pruning keeps a window to work on.
	if !ok || w.offsetsRev != offsetsRev || (!w.complete && len(w.oldest) < pruneWindow/2) {
		return sizeWindow{}, false
	}
	return w, true
}

func (c *sizeCache) put(job string, w sizeWindow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[job] = w
}

func (c *sizeCache) drop(job string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, job)
}

// window returns a job's size window at offsetsRev, from the cache or etcd.
func (s *Store) window(ctx context.Context, job string, offsetsRev int64) (sizeWindow, error) {
	if w, ok := s.sizes.get(job, offsetsRev); ok {
		return w, nil
	}
	newest, oldest, err := s.readSizes(ctx, job)
	if err != nil {
		return sizeWindow{}, err
	}
	return sizeWindow{newest: newest, oldest: oldest, complete: len(oldest) < pruneWindow, offsetsRev: offsetsRev}, nil
}

// readSizes reads the newest and the pruneWindow oldest entries of a job's size
// index, in one request.
func (s *Store) readSizes(ctx context.Context, job string) (newest *sizeEntry, oldest []sizeEntry, err error) {
	prefix := s.retainedPrefix(job)
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
		clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(pruneWindow)),
	).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("etcd read result sizes of %s: %w", job, err)
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		e, err := decodeSize(kv.Key, kv.Value, prefix)
		if err != nil {
			return nil, nil, err
		}
		newest = &e
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		e, err := decodeSize(kv.Key, kv.Value, prefix)
		if err != nil {
			return nil, nil, err
		}
		oldest = append(oldest, e)
	}
	return newest, oldest, nil
}

// pruneBelow decides the oldest batch id a commit of batch id keeps: the
// keep newest batches, and within that as few of the oldest as make the
// retained results (with the new one, of newSize bytes) fit keepBytes, as
// far as the window of oldest index entries reaches. The batch being
// committed is always kept.
func pruneBelow(id, keep, keepBytes, newSize int64, newest *sizeEntry, oldest []sizeEntry) int64 {
	cut := int64(0)
	if keep > 0 && id-keep+1 > 0 {
		cut = id - keep + 1
	}
	if keepBytes <= 0 || len(oldest) == 0 || newest == nil {
		return cut
	}
	retained := newest.Total + newSize - (oldest[0].Total - oldest[0].Size)
	for _, e := range oldest {
		if e.ID < cut {
			retained -= e.Size // pruned by count anyway
			continue
		}
		if retained <= keepBytes || e.ID >= id {
			break
		}
		retained -= e.Size
		cut = e.ID + 1
	}
	return cut
}

// CommitBatch atomically marks the batch committed, stores its results and
// advances the offsets. It returns the offsets' new revision.
//
// It also prunes the job's oldest batches and results, past c.Keep batches
// or c.KeepBytes of results. The size of each result is kept in a small
// index entry (retained/<job>/<id>) written with it, so that a commit knows
// how much to prune from two bounded reads; the offsets comparison makes
// those reads part of the transaction, since every write of the index also
// writes the offsets.
func (s *Store) CommitBatch(ctx context.Context, c Commit) (int64, error) {
	job, id := c.Batch.GetJob(), c.Batch.GetId()
	batchVal, err := marshal(c.Batch)
	if err != nil {
		return 0, err
	}
	offVal, err := marshal(c.Offsets)
	if err != nil {
		return 0, err
	}
	ops := []clientv3.Op{
		clientv3.OpPut(s.batchKey(job, id), batchVal),
		clientv3.OpPut(s.offsetsKey(job), offVal),
	}
	size := len(batchVal) + len(offVal)
	var resSize int64
	if c.Result != nil {
		resVal, err := marshal(c.Result)
		if err != nil {
			return 0, err
		}
		size += len(resVal)
		resSize = int64(len(resVal))
		ops = append(ops, clientv3.OpPut(s.resultKey(job, id), resVal))
	}
	var stateSize int
	if c.State != nil {
		stateVal, err := marshal(c.State)
		if err != nil {
			return 0, err
		}
		stateSize = len(stateVal)
		size += stateSize
		ops = append(ops, clientv3.OpPut(s.stateKey(job), stateVal))
	}
	if size > s.maxBytes {
		if stateSize > 0 {
			return 0, fmt.Errorf("commit of batch %d of %s is %d bytes (%d of them the aggregate state), above the %d-byte etcd request limit (lower limits.max_state_keys, shorten the aggregate keys, or use fewer or shorter windows): %w",
				id, job, size, stateSize, s.maxBytes, ErrTooLarge)
		}
		return 0, fmt.Errorf("commit of batch %d of %s is %d bytes, above the %d-byte etcd request limit (aggregate the output or lower maxRecordsPerBatch): %w",
			id, job, size, s.maxBytes, ErrTooLarge)
	}
	w, err := s.window(ctx, job, c.OffsetsRevision)
	if err != nil {
		return 0, err
	}
	var entry *sizeEntry
	if c.Result != nil {
		entry = &sizeEntry{ID: id, Size: resSize, Total: resSize}
		if w.newest != nil {
			entry.Total += w.newest.Total
		}
		ops = append(ops, clientv3.OpPut(s.retainedKey(job, id), encodeSize(entry.Size, entry.Total)))
	}
	cut := pruneBelow(id, c.Keep, c.KeepBytes, resSize, w.newest, w.oldest)
	if cut > 1 { // ids start at 1
		ops = append(ops,
			clientv3.OpDelete(s.batchKey(job, 0), clientv3.WithRange(s.batchKey(job, cut))),
			clientv3.OpDelete(s.resultKey(job, 0), clientv3.WithRange(s.resultKey(job, cut))),
			clientv3.OpDelete(s.retainedKey(job, 0), clientv3.WithRange(s.retainedKey(job, cut))))
	}
	cmps := append(append([]clientv3.Cmp(nil), s.fence...),
		clientv3.Compare(clientv3.ModRevision(s.batchKey(job, id)), "=", c.BatchRevision),
		clientv3.Compare(clientv3.ModRevision(s.offsetsKey(job)), "=", c.OffsetsRevision))
	if c.State != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.stateKey(job)), "=", c.StateRevision))
	}
	resp, err := s.kv.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		s.sizes.drop(job)
		return 0, fmt.Errorf("etcd commit of batch %d of %s: %w", id, job, err)
	}
	if !resp.Succeeded {
		s.sizes.drop(job)
		return 0, fmt.Errorf("commit of batch %d of %s: %w", id, job, ErrConflict)
	}
	s.sizes.put(job, w.after(entry, cut, resp.Header.Revision))
	return resp.Header.Revision, nil
}

// after is the window once a commit at offsetsRev added entry (nil: no
// result) and pruned the batches below cut.
func (w sizeWindow) after(entry *sizeEntry, cut, offsetsRev int64) sizeWindow {
	next := sizeWindow{newest: w.newest, complete: w.complete, offsetsRev: offsetsRev}
	for _, e := range w.oldest {
		if e.ID >= cut {
			next.oldest = append(next.oldest, e)
		}
	}
	if entry != nil {
		next.newest = entry
		// Only a window holding every entry may be extended at its end.
		if next.complete && len(next.oldest) < pruneWindow {
			next.oldest = append(next.oldest, *entry)
		} else {
			next.complete = false
		}
	}
	if len(next.oldest) == 0 && !next.complete {
		next.offsetsRev = 0 // entries beyond the window may remain: read them
	}
	return next
}

// RetainedBytes is the encoded size of a job's retained results, as the
// size index knows it (results committed before the index existed are not
// counted).
func (s *Store) RetainedBytes(ctx context.Context, job string) (int64, error) {
	newest, oldest, err := s.readSizes(ctx, job)
	if err != nil || newest == nil {
		return 0, err
	}
	return newest.Total - (oldest[0].Total - oldest[0].Size), nil
}

// Reset is what ResetOffsets writes, in one transaction.
type Reset struct {
	// Job is the job record to write (with its new incarnation); it must
	// still be at JobRevision, so that a job resumed meanwhile is not touched.
	Job         *sluicev1.Job
	JobRevision int64
	// Offsets replace the committed offsets, which must still be at
	// OffsetsRevision (0: the job has none yet), so that a batch that
	// committed meanwhile is not silently overwritten.
	Offsets         *sluicev1.CommittedOffsets
	OffsetsRevision int64
	// PlannedID is a batch that was planned but not committed (0: none),
	// still at PlannedRevision; it is deleted, as its ranges start from the
	// old offsets.
	PlannedID, PlannedRevision int64
	// NextBatchID is the id the job's next batch would take; the reset fails
	// if a batch was planned under it meanwhile.
	NextBatchID int64
}

// ResetOffsets replaces a job's offsets and record. It returns ErrConflict
// when the job, its offsets or its batches changed since they were read.
func (s *Store) ResetOffsets(ctx context.Context, r Reset) error {
	job := r.Job.GetSpec().GetName()
	val, err := marshal(r.Offsets)
	if err != nil {
		return err
	}
	jobVal, err := marshal(r.Job)
	if err != nil {
		return err
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(s.jobKey(job)), "=", r.JobRevision),
		clientv3.Compare(clientv3.ModRevision(s.offsetsKey(job)), "=", r.OffsetsRevision),
	}
	// The aggregate state totals the records between the old starting and
	// committed offsets; past a reset it would count some twice or some
	// never, so it starts over from the new offsets.
	ops := []clientv3.Op{clientv3.OpPut(s.offsetsKey(job), val), clientv3.OpPut(s.jobKey(job), jobVal), clientv3.OpDelete(s.stateKey(job))}
	if r.NextBatchID > 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.batchKey(job, r.NextBatchID)), "=", 0))
	}
	if r.PlannedID > 0 {
		key := s.batchKey(job, r.PlannedID)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", r.PlannedRevision))
		ops = append(ops, clientv3.OpDelete(key))
	}
	err = s.txn(ctx, cmps, ops...)
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("reset offsets of %s: the job was edited, a batch was planned or committed, or leadership was lost since they were read: %w", job, err)
	}
	if err != nil {
		return fmt.Errorf("reset offsets of %s: %w", job, err)
	}
	return nil
}

// DeleteJob deletes a job with its offsets, batches and results.
func (s *Store) DeleteJob(ctx context.Context, job string) error {
	key := s.jobKey(job)
	err := s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)},
		clientv3.OpDelete(key),
		clientv3.OpDelete(s.offsetsKey(job)),
		clientv3.OpDelete(s.stateKey(job)),
		clientv3.OpDelete(s.batchesPrefix(job), clientv3.WithPrefix()),
		clientv3.OpDelete(s.resultsPrefix(job), clientv3.WithPrefix()),
		clientv3.OpDelete(s.retainedPrefix(job), clientv3.WithPrefix()))
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("job %q: %w", job, ErrNotFound)
	}
	return err
}

// UpdatePlan rewrites a PLANNED batch that is still at modRevision (its
// ranges shrank because Kafka deleted part of them) and returns its new
// revision.
func (s *Store) UpdatePlan(ctx context.Context, b *sluicev1.Batch, modRevision int64) (int64, error) {
	val, err := marshal(b)
	if err != nil {
		return 0, err
	}
	key := s.batchKey(b.GetJob(), b.GetId())
	all := append(append([]clientv3.Cmp(nil), s.fence...), clientv3.Compare(clientv3.ModRevision(key), "=", modRevision))
	resp, err := s.kv.Txn(ctx).If(all...).Then(clientv3.OpPut(key, val)).Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd update plan of batch %d: %w", b.GetId(), err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("update plan of batch %d of %s: %w", b.GetId(), b.GetJob(), ErrConflict)
	}
	return resp.Header.Revision, nil
}
