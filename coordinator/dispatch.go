package coordinator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// deadlineGrace is how long past a task's timeout the coordinator waits
// before it gives the task up as lost on its worker.
const deadlineGrace = 5 * time.Second

// maxTaskTimeout bounds a task's timeout wherever a deadline is computed
// from it, so that no value can overflow into a deadline in the past.
const maxTaskTimeout = 24 * time.Hour

// poisonLosses is how many workers may leave while running one task before
// the task is taken for poison (an input that crashes workers) and fails
// its job instead of taking down every worker in turn.
const poisonLosses = 3

// defaultTaskRetries is the budget of transient failures per task when the
// job does not set limits.max_task_retries.
const defaultTaskRetries = 30

// localityWait is how long a task waits for a slot on its preferred worker
// (the one whose cached consumer holds its partition) before it takes a
// slot elsewhere, like Spark's spark.locality.wait: moving a partition costs
// a new consumer and its prefetch, far more than a short wait.
const localityWait = time.Second

// errNoWorkers is what a batch waits on while no worker is connected.
var errNoWorkers = errors.New("coordinator: no workers connected")

// errNoSlot is what a task waits on while every worker's slots are busy.
var errNoSlot = errors.New("coordinator: every worker slot is busy")

// workerConn is one connected worker stream. Its send channel is drained by
// the stream handler that registered it; done closes when the stream ends.
type workerConn struct {
	id    string
	slots int
	host  string
	send  chan *sluicev1.ConnectResponse
	done  chan struct{}
	once  sync.Once

	inflight int // dispatches sent and not yet released; guarded by dispatcher.mu
}

func (w *workerConn) close() { w.once.Do(func() { close(w.done) }) }

func (w *workerConn) alive() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// dispatch is one attempt of one task on one worker. A result counts only
// if it names the dispatch, came on the stream the task was sent on, and
// echoes the task's range and spec version.
type dispatch struct {
	id     uint64
	task   *sluicev1.Task // the attempt as sent
	worker *workerConn
	// results is the channel of the runTasks call that sent it.
	results   chan<- *sluicev1.TaskResult
	delivered bool // guarded by dispatcher.mu
}

// dispatcher places tasks on connected workers, never more at once than a
// worker has slots, and routes their results back to the batch waiting for
// them. It is shared by all job runners.
type dispatcher struct {
	logger hclog.Logger

	mu      sync.Mutex
	workers map[string]*workerConn
	// changed is closed and replaced whenever a worker joins or leaves or a
	// slot frees.
	changed chan struct{}
	// inflight holds every dispatch whose result is still wanted.
	inflight map[uint64]*dispatch
	lastID   uint64
}

func newDispatcher(logger hclog.Logger) *dispatcher {
	return &dispatcher{
		logger:   logger,
		workers:  map[string]*workerConn{},
		changed:  make(chan struct{}),
		inflight: map[uint64]*dispatch{},
	}
}

// register adds a worker; a worker reconnecting with the same id replaces its
// old stream, whose tasks are then re-run elsewhere.
func (d *dispatcher) register(reg *sluicev1.Register) *workerConn {
	w := &workerConn{
		id:    reg.GetWorkerId(),
		slots: min(max(int(reg.GetSlots()), 1), 1024),
		host:  reg.GetHost(),
		done:  make(chan struct{}),
	}
	// Room for a task and a cancel per slot: sends to a live stream never
	// block for long.
	w.send = make(chan *sluicev1.ConnectResponse, 2*w.slots+16)
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.workers[w.id]; ok {
		old.close()
	}
	d.workers[w.id] = w
	d.notifyLocked()
	d.logger.Info("worker registered", "worker_id", w.id, "slots", w.slots, "host", w.host)
	return w
}

func (d *dispatcher) unregister(w *workerConn) {
	w.close()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.workers[w.id] == w {
		delete(d.workers, w.id)
		d.logger.Info("worker left", "worker_id", w.id)
	}
	d.notifyLocked()
}

func (d *dispatcher) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// dropAll disconnects every worker, as when leadership is lost.
func (d *dispatcher) dropAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, w := range d.workers {
		w.close()
		delete(d.workers, id)
	}
	d.notifyLocked()
}

// deliver hands a result that arrived on from's stream to the batch waiting
// for it. Anything else is dropped: a result of a dispatch nobody waits for
// (a stopped job, a superseded attempt, a batch of an earlier incarnation),
// from another stream, or whose range or spec version is not the task's.
func (d *dispatcher) deliver(from *workerConn, res *sluicev1.TaskResult) {
	k := res.GetKey()
	d.mu.Lock()
	disp, ok := d.inflight[k.GetDispatchId()]
	reason := ""
	if ok {
		reason = mismatch(disp, from, res)
		if reason == "" {
			if disp.delivered {
				reason = "a duplicate"
			}
			disp.delivered = true
		}
	}
	d.mu.Unlock()
	if !ok {
		d.logger.Debug("dropping a result nobody waits for", "worker_id", from.id, "job", k.GetJob(),
			"batch", k.GetBatchId(), "task", k.GetIndex(), "dispatch", k.GetDispatchId())
		return
	}
	if reason != "" {
		d.logger.Warn("dropping a result that does not match its dispatch", "worker_id", from.id,
			"job", k.GetJob(), "batch", k.GetBatchId(), "task", k.GetIndex(), "dispatch", k.GetDispatchId(), "reason", reason)
		return
	}
	// The channel has room for every dispatch of its batch that can be
	// delivered before the batch reads them.
	select {
	case disp.results <- res:
	default:
		d.logger.Error("result channel full; the task will be re-run at its deadline", "job", k.GetJob(), "dispatch", disp.id)
	}
}

// mismatch says why res cannot be the result of disp sent to from, or "".
func mismatch(disp *dispatch, from *workerConn, res *sluicev1.TaskResult) string {
	want, got := disp.task.GetKey(), res.GetKey()
	switch {
	case disp.worker != from:
		return fmt.Sprintf("sent to %s's stream, came on %s's", disp.worker.id, from.id)
	case got.GetJob() != want.GetJob() || got.GetBatchId() != want.GetBatchId() ||
		got.GetIndex() != want.GetIndex() || got.GetAttempt() != want.GetAttempt():
		return fmt.Sprintf("key %v is not the dispatch's %v", got, want)
	case !proto.Equal(res.GetRange(), disp.task.GetRange()):
		return fmt.Sprintf("range %v is not the task's %v", res.GetRange(), disp.task.GetRange())
	case res.GetSpecVersion() != disp.task.GetSpecVersion():
		return fmt.Sprintf("spec version %d is not the task's %d", res.GetSpecVersion(), disp.task.GetSpecVersion())
	}
	return ""
}

// send queues task on a worker with a free slot. The worker is chosen by
// rendezvous hashing, so a partition sticks to the same worker across
// batches and its cached consumer is reused: while that worker's slots are
// busy the task waits for one, unless spill is set, when any worker with
// room will do. Workers in avoid are skipped while others qualify. Without
// a worker it returns errNoWorkers, without a slot errNoSlot, and with
// either the channel that closes when that may have changed.
func (d *dispatcher) send(ctx context.Context, task *sluicev1.Task, avoid map[string]bool, spill bool, results chan<- *sluicev1.TaskResult) (*dispatch, <-chan struct{}, error) {
	d.mu.Lock()
	var best *workerConn
	var bestScore uint64
	var bestAvoided bool
	for id, w := range d.workers {
		if !w.alive() || (spill && w.inflight >= w.slots) {
			continue
		}
		h := fnv.New64a()
		r := task.GetRange()
		if task.GetPiece() == 0 {
			fmt.Fprintf(h, "%s\x00%d\x00%s", r.GetTopic(), r.GetPartition(), id)
		} else {
			// The pieces of a split range spread over the workers; the
			// first keeps the partition's worker and its consumer.
			fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s", r.GetTopic(), r.GetPartition(), task.GetPiece(), id)
		}
		score := h.Sum64()
		avoided := avoid[id]
		better := best == nil ||
			(bestAvoided && !avoided) ||
			(bestAvoided == avoided && score > bestScore)
		if better {
			best, bestScore, bestAvoided = w, score, avoided
		}
	}
	if best == nil || best.inflight >= best.slots {
		err := errNoSlot
		if best == nil && len(d.workers) == 0 {
			err = errNoWorkers
		}
		changed := d.changed
		d.mu.Unlock()
		return nil, changed, err
	}
	d.lastID++
	task.Key.DispatchId = d.lastID
	disp := &dispatch{id: d.lastID, task: task, worker: best, results: results}
	d.inflight[disp.id] = disp
	best.inflight++
	d.mu.Unlock()

	msg := &sluicev1.ConnectResponse{Kind: &sluicev1.ConnectResponse_Task{Task: task}}
	select {
	case best.send <- msg:
	case <-best.done:
		// Picked up as a lost worker by the caller.
	case <-ctx.Done():
		d.release(disp, false)
		return nil, nil, ctx.Err()
	}
	return disp, nil, nil
}

// release forgets a dispatch and frees its slot; cancel also tells the
// worker to stop the task, whose result is no longer wanted.
func (d *dispatcher) release(disp *dispatch, cancel bool) {
	d.mu.Lock()
	if _, ok := d.inflight[disp.id]; !ok {
		d.mu.Unlock()
		return
	}
	delete(d.inflight, disp.id)
	disp.worker.inflight--
	d.notifyLocked()
	d.mu.Unlock()
	if !cancel || !disp.worker.alive() {
		return
	}
	msg := &sluicev1.ConnectResponse{Kind: &sluicev1.ConnectResponse_Cancel{Cancel: &sluicev1.Cancel{DispatchIds: []uint64{disp.id}}}}
	select {
	case disp.worker.send <- msg:
	case <-disp.worker.done:
	default:
		// The stream is backed up; the task's own deadline ends it, and its
		// result is dropped since nobody waits for it.
		d.logger.Warn("could not send a cancel to a busy worker stream", "worker_id", disp.worker.id, "dispatch", disp.id)
	}
}

// batchOutcome is what running a batch's tasks yields.
type batchOutcome struct {
	results  []*sluicev1.TaskResult // by task index
	attempts int
}

// taskFailure is a task that cannot succeed: it used up its attempts or its
// retries, failed in a way no retry would change, or took workers down.
type taskFailure struct {
	task   *sluicev1.Task
	reason string
}

func (e *taskFailure) Error() string {
	r := e.task.GetRange()
	return fmt.Sprintf("task %d of batch %d (%s/%d [%d, %d)) %s",
		e.task.GetKey().GetIndex(), e.task.GetKey().GetBatchId(), r.GetTopic(), r.GetPartition(),
		r.GetFromOffset(), r.GetUntilOffset(), e.reason)
}

// taskLimits are a job's bounds on one task's attempts.
type taskLimits struct {
	maxAttempts int // failures that count: errors, missed deadlines
	maxRetries  int // transient errors, retried with backoff
}

// runningTask is one task of runTasks and its history.
type runningTask struct {
	task     *sluicev1.Task
	disp     *dispatch // in flight, or nil
	deadline time.Time
	notFrom  time.Time // earliest next dispatch, after a transient error
	queued   time.Time // when it last became ready to dispatch
	backoff  time.Duration
	attempt  int32 // dispatches so far
	failures int
	retries  int
	lostOn   []string // workers that left while running it
	avoid    map[string]bool
	lastErr  string
}

// runTasks runs every task to success. A task whose worker leaves is re-run
// elsewhere, unless workers left while running it poisonLosses times; one
// that reports a transient error (Kafka away or slow) is retried with
// backoff, up to maxRetries; one that fails otherwise or passes its deadline
// is re-run, preferably on another worker, up to maxAttempts; a fatal error
// fails at once. Superseded dispatches are cancelled on their workers, and
// so is everything in flight when runTasks returns. note is told what holds
// the batch back ("" when nothing does).
func (d *dispatcher) runTasks(ctx context.Context, tasks []*sluicev1.Task, lim taskLimits, note func(msg string), dispatched func()) (batchOutcome, error) {
	results := make([]*sluicev1.TaskResult, len(tasks))
	// Each task has one dispatch in flight, and a superseded one may have
	// delivered before it was released: two results per task at most.
	incoming := make(chan *sluicev1.TaskResult, 2*len(tasks))
	state := make([]*runningTask, len(tasks))
	for i, t := range tasks {
		state[i] = &runningTask{task: t, avoid: map[string]bool{}, backoff: 100 * time.Millisecond}
	}
	defer func() {
		for _, st := range state {
			if st.disp != nil {
				d.release(st.disp, true)
			}
		}
	}()

	attempts := 0
	// failed records a failure that counts against the task's attempts.
	failed := func(st *runningTask, reason string) error {
		st.lastErr = reason
		st.failures++
		if st.failures >= lim.maxAttempts {
			return &taskFailure{task: st.task, reason: fmt.Sprintf("failed %d times, last error: %s", st.failures, reason)}
		}
		return nil
	}
	// supersede gives up the task's dispatch, cancelling it on its worker.
	supersede := func(st *runningTask) {
		d.release(st.disp, true)
		st.disp = nil
	}

	pendingDispatch := make([]int, 0, len(tasks))
	for i := range tasks {
		pendingDispatch = append(pendingDispatch, i)
	}
	remaining := len(tasks)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	currentNote := ""
	setNote := func(msg string) {
		if msg != currentNote {
			currentNote = msg
			note(msg)
		}
	}
	defer func() { setNote("") }()

	for remaining > 0 {
		// Send whatever needs sending and may be sent now.
		var changed <-chan struct{}
		now := time.Now()
		waitingForWorkers := false
		still := pendingDispatch[:0]
		for _, i := range pendingDispatch {
			st := state[i]
			if now.Before(st.notFrom) {
				still = append(still, i)
				continue
			}
			if st.queued.IsZero() {
				st.queued = now
			}
			attempt := cloneTask(st.task)
			attempt.Key.Attempt = st.attempt + 1
			spill := now.Sub(st.queued) >= localityWait
			disp, ch, err := d.send(ctx, attempt, st.avoid, spill, incoming)
			if errors.Is(err, errNoWorkers) || errors.Is(err, errNoSlot) {
				still = append(still, i)
				changed = ch
				waitingForWorkers = waitingForWorkers || errors.Is(err, errNoWorkers)
				continue
			}
			if err != nil {
				return batchOutcome{}, err
			}
			attempts++
			st.attempt++
			st.disp = disp
			st.queued = time.Time{}
			timeout := min(st.task.GetTimeout().AsDuration(), maxTaskTimeout)
			// The worker enforces the timeout itself and reports it as a
			// transient error; the grace leaves room for that report, so the
			// coordinator's deadline only catches a worker that went silent.
			st.deadline = time.Now().Add(timeout + deadlineGrace)
		}
		pendingDispatch = still
		if len(pendingDispatch) == 0 && dispatched != nil {
			dispatched()
			dispatched = nil
		}
		if waitingForWorkers {
			setNote("waiting for workers to connect")
		} else if currentNote == "waiting for workers to connect" {
			setNote("")
		}

		// Wait for a result, a change of workers or slots, or the tick.
		var r *sluicev1.TaskResult
		select {
		case <-ctx.Done():
			return batchOutcome{}, ctx.Err()
		case r = <-incoming:
		case <-changed:
		case <-tick.C:
		}
		if r != nil {
			i := int(r.GetKey().GetIndex())
			st := state[i]
			if st.disp == nil || st.disp.id != r.GetKey().GetDispatchId() {
				continue // of a dispatch superseded since it delivered
			}
			d.release(st.disp, false)
			worker := st.disp.worker.id
			st.disp = nil
			switch {
			case r.GetError() == "":
				results[i] = r
				remaining--
				continue
			case r.GetFatal():
				return batchOutcome{}, &taskFailure{task: st.task, reason: fmt.Sprintf("failed on worker %s: %s", worker, r.GetError())}
			}
			d.logger.Warn("task failed", "job", r.GetKey().GetJob(), "batch", r.GetKey().GetBatchId(),
				"task", i, "attempt", r.GetKey().GetAttempt(), "worker_id", worker,
				"retryable", r.GetRetryable(), "error", r.GetError())
			if r.GetRetryable() {
				st.lastErr = r.GetError()
				st.retries++
				if st.retries > lim.maxRetries {
					return batchOutcome{}, &taskFailure{task: st.task, reason: fmt.Sprintf(
						"still failing after %d retries (limits.max_task_retries), last error: %s", lim.maxRetries, r.GetError())}
				}
				st.notFrom = time.Now().Add(st.backoff)
				st.backoff = min(st.backoff*2, 5*time.Second)
				setNote(fmt.Sprintf("task %d (%s/%d): %s (retry %d of %d)", i, st.task.GetRange().GetTopic(),
					st.task.GetRange().GetPartition(), r.GetError(), st.retries, lim.maxRetries))
			} else {
				st.avoid[worker] = true
				if err := failed(st, r.GetError()); err != nil {
					return batchOutcome{}, err
				}
			}
			pendingDispatch = append(pendingDispatch, i)
			continue
		}
		// Re-run tasks whose worker left or whose deadline passed.
		now = time.Now()
		for i, st := range state {
			if results[i] != nil || st.disp == nil {
				continue
			}
			w := st.disp.worker
			switch {
			case !w.alive():
				st.lastErr = fmt.Sprintf("worker %s left", w.id)
				st.lostOn = append(st.lostOn, w.id)
				if len(st.lostOn) >= poisonLosses {
					return batchOutcome{}, &taskFailure{task: st.task, reason: fmt.Sprintf(
						"was running on %d workers that left (%s): its input may crash workers, so it is not tried again",
						len(st.lostOn), strings.Join(st.lostOn, ", "))}
				}
			case now.After(st.deadline):
				st.avoid[w.id] = true
				if err := failed(st, fmt.Sprintf("worker %s did not finish within %s", w.id, st.task.GetTimeout().AsDuration())); err != nil {
					return batchOutcome{}, err
				}
			default:
				continue
			}
			d.logger.Warn("re-running task", "job", st.task.GetKey().GetJob(), "batch", st.task.GetKey().GetBatchId(),
				"task", i, "reason", st.lastErr)
			supersede(st)
			pendingDispatch = append(pendingDispatch, i)
		}
	}
	return batchOutcome{results: results, attempts: attempts}, nil
}

func cloneTask(t *sluicev1.Task) *sluicev1.Task {
	c := proto.CloneOf(t)
	c.Spec = t.GetSpec() // shared, read-only: specs can be large
	c.Timeout = durationpb.New(min(t.GetTimeout().AsDuration(), maxTaskTimeout))
	return c
}
