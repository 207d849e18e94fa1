package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	id     string
	slots  int
	host   string
	labels []string
	// processors are the Go processors the worker registered, sorted.
	processors []string
	send       chan *sluicev1.ConnectResponse
	done       chan struct{}
	once       sync.Once

	inflight int // dispatches sent and not yet released; guarded by dispatcher.mu
	// lastSeen is when the worker's stream last delivered a message (a
	// heartbeat or a result), in Unix nanoseconds.
	lastSeen atomic.Int64
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

// dispatch is one attempt (or speculative copy) of one task on one worker. A result counts only
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
	// infos and conns are the live workers as placement sees them, rebuilt
	// by every send (kept to spare the allocations).
	infos []workerInfo
	conns []*workerConn

	// leaders are the partition leaders' hosts of jobs placed by broker.
	leaders *leaderCache
}

func newDispatcher(logger hclog.Logger) *dispatcher {
	return &dispatcher{
		logger:   logger,
		workers:  map[string]*workerConn{},
		changed:  make(chan struct{}),
		inflight: map[uint64]*dispatch{},
		leaders:  newLeaderCache(),
	}
}

// register adds a worker; a worker reconnecting with the same id replaces its
// old stream, whose tasks are then re-run elsewhere.
func (d *dispatcher) register(reg *sluicev1.Register) *workerConn {
	w := &workerConn{
		id:     reg.GetWorkerId(),
		slots:  min(max(int(reg.GetSlots()), 1), 1024),
		host:   reg.GetHost(),
		labels: append([]string(nil), reg.GetLabels()...),
		done:   make(chan struct{}),
	}
	w.processors = sortedNames(reg.GetProcessors())
	// Room for a task and a cancel per slot: sends to a live stream never
	// block for long.
	w.send = make(chan *sluicev1.ConnectResponse, 2*w.slots+16)
	w.lastSeen.Store(time.Now().UnixNano())
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.workers[w.id]; ok {
		old.close()
	}
	d.workers[w.id] = w
	d.notifyLocked()
	d.logger.Info("worker registered", "worker_id", w.id, "slots", w.slots, "host", w.host, "labels", w.labels, "processors", w.processors)
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
	case !slices.EqualFunc(res.GetRanges(), disp.task.GetRanges(), sameRange):
		return fmt.Sprintf("ranges %v are not the task's %v", res.GetRanges(), disp.task.GetRanges())
	case res.GetSpecVersion() != disp.task.GetSpecVersion():
		return fmt.Sprintf("spec version %d is not the task's %d", res.GetSpecVersion(), disp.task.GetSpecVersion())
	}
	return ""
}

// sameRange compares two ranges field by field: a packed task's result
// echoes thousands of them, and proto.Equal (reflection) took a few
// milliseconds of the coordinator's CPU per batch at 10,000 partitions.
// OffsetRange has exactly these four fields.
func sameRange(a, b *sluicev1.OffsetRange) bool {
	return a.GetTopic() == b.GetTopic() && a.GetPartition() == b.GetPartition() &&
		a.GetFromOffset() == b.GetFromOffset() && a.GetUntilOffset() == b.GetUntilOffset()
}

// send queues task on a worker with a free slot, chosen by pl (see
// placement.choose): a partition sticks to the same worker across batches
// and its cached consumer is reused, so while that worker's slots are busy
// the task waits for one, unless spill is set, when any allowed worker with
// room will do. exclude never gets it. Without a worker it returns
// errNoWorkers, without a slot errNoSlot, when the placement allows no live
// worker a *placementWait, and with any of them the channel that closes
// when that may have changed.
func (d *dispatcher) send(ctx context.Context, task *sluicev1.Task, pl *placement, avoid map[string]bool, exclude string, spill bool, results chan<- *sluicev1.TaskResult) (*dispatch, <-chan struct{}, error) {
	d.mu.Lock()
	d.infos, d.conns = d.infos[:0], d.conns[:0]
	for _, w := range d.workers {
		if w.alive() {
			d.infos = append(d.infos, workerInfo{id: w.id, slots: w.slots, free: w.slots - w.inflight, labels: w.labels, host: w.host, processors: w.processors})
			d.conns = append(d.conns, w)
		}
	}
	i, err := pl.choose(placeKeyOf(task), d.infos, avoid, exclude, spill)
	if err != nil {
		changed := d.changed
		d.mu.Unlock()
		return nil, changed, err
	}
	best := d.conns[i]
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
	results     []*sluicev1.TaskResult // by task index
	attempts    int                    // dispatches, speculative copies included
	speculative int                    // speculative copies launched
}

// taskFailure is a task that cannot succeed: it used up its attempts or its
// retries, failed in a way no retry would change, or took workers down.
type taskFailure struct {
	task   *sluicev1.Task
	reason string
}

func (e *taskFailure) Error() string {
	return fmt.Sprintf("task %d of batch %d (%s) %s",
		e.task.GetKey().GetIndex(), e.task.GetKey().GetBatchId(), describeRanges(e.task), e.reason)
}

// describeRanges names what a task reads: "t/3 [0, 10)", or for a packed
// task its first ranges and how many more.
func describeRanges(task *sluicev1.Task) string {
	rs := task.GetRanges()
	if r := task.GetRange(); r != nil || len(rs) == 0 {
		rs = []*sluicev1.OffsetRange{r}
	}
	var sb strings.Builder
	for i, r := range rs {
		if i == 2 {
			fmt.Fprintf(&sb, " and %d more ranges", len(rs)-i)
			break
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s/%d [%d, %d)", r.GetTopic(), r.GetPartition(), r.GetFromOffset(), r.GetUntilOffset())
	}
	return sb.String()
}

// taskLimits are a job's bounds on one task's attempts.
type taskLimits struct {
	maxAttempts int // failures that count: errors, missed deadlines
	maxRetries  int // transient errors, retried with backoff
}

// minSpeculationAge is the least a task runs before it is speculated,
// however fast the batch's other tasks were: a copy costs a consumer and a
// read of the range, and below a second the noise of scheduling dominates.
const minSpeculationAge = time.Second

// sent is one dispatch of a task in flight.
type sent struct {
	disp     *dispatch
	at       time.Time
	deadline time.Time
}

// runningTask is one task of runTasks and its history.
type runningTask struct {
	task *sluicev1.Task
	cur  *sent // the dispatch in flight, or nil
	// copy is the speculative copy in flight beside cur, or nil; a task
	// gets one copy at most (speculated).
	copy       *sent
	speculated bool
	notFrom    time.Time // earliest next dispatch, after a transient error
	queued     time.Time // when it last became ready to dispatch
	backoff    time.Duration
	attempt    int32 // dispatches so far, copies included
	failures   int
	retries    int
	lostOn     []string // workers that left while running it
	avoid      map[string]bool
	lastErr    string
}

// promote makes the speculative copy the task's dispatch, when the original
// ended without a result: the copy runs on, as the task's only attempt.
func (st *runningTask) promote() {
	st.cur, st.copy = st.copy, nil
}

// runTasks runs every task to success. A task whose worker leaves is re-run
// elsewhere, unless workers left while running it poisonLosses times; one
// that reports a transient error (Kafka away or slow) is retried with
// backoff, up to maxRetries; one that fails otherwise or passes its deadline
// is re-run, preferably on another worker, up to maxAttempts; a fatal error
// fails at once. Tasks are placed by pol.placement.
//
// Speculation (pol.speculation > 0), as in Spark: once half of the tasks
// have finished, a task running longer than pol.speculation times their
// median duration (and at least minSpeculationAge) gets one copy on another
// worker with a free slot. The first success wins and the other dispatch
// is cancelled. While both run, the failure of either leaves the other as
// the task's attempt and counts against nothing: the copy of a Kafka sink
// task fences the original's transaction, which then fails.
//
// Superseded dispatches are cancelled on their workers, and so is
// everything in flight when runTasks returns. note is told what holds the
// batch back ("" when nothing does).
func (d *dispatcher) runTasks(ctx context.Context, tasks []*sluicev1.Task, lim taskLimits, pol taskPolicy, note func(msg string), dispatched func()) (batchOutcome, error) {
	results := make([]*sluicev1.TaskResult, len(tasks))
	// A task has two dispatches in flight at most (its attempt and a
	// copy), and superseded ones may have delivered before they were
	// released.
	incoming := make(chan *sluicev1.TaskResult, 4*len(tasks))
	state := make([]*runningTask, len(tasks))
	for i, t := range tasks {
		state[i] = &runningTask{task: t, avoid: map[string]bool{}, backoff: 100 * time.Millisecond}
	}
	defer func() {
		for _, st := range state {
			if st.cur != nil {
				d.release(st.cur.disp, true)
			}
			if st.copy != nil {
				d.release(st.copy.disp, true)
			}
		}
	}()

	out := batchOutcome{results: results}
	// failed records a failure that counts against the task's attempts.
	failed := func(st *runningTask, reason, kind string) error {
		st.lastErr = reason
		st.failures++
		pol.events.failure(kind)
		if st.failures >= lim.maxAttempts {
			return &taskFailure{task: st.task, reason: fmt.Sprintf("failed %d times, last error: %s", st.failures, reason)}
		}
		return nil
	}
	// lost records that a worker left while running the task.
	lost := func(st *runningTask, worker string) error {
		pol.events.failure(failWorkerLost)
		st.lastErr = fmt.Sprintf("worker %s left", worker)
		st.lostOn = append(st.lostOn, worker)
		if len(st.lostOn) >= poisonLosses {
			return &taskFailure{task: st.task, reason: fmt.Sprintf(
				"was running on %d workers that left (%s): its input may crash workers, so it is not tried again",
				len(st.lostOn), strings.Join(st.lostOn, ", "))}
		}
		return nil
	}
	timeoutOf := func(st *runningTask) time.Duration { return min(st.task.GetTimeout().AsDuration(), maxTaskTimeout) }
	newSent := func(st *runningTask, disp *dispatch) *sent {
		// The worker enforces the timeout itself and reports it as a
		// transient error; the grace leaves room for that report, so the
		// coordinator's deadline only catches a worker that went silent.
		now := time.Now()
		return &sent{disp: disp, at: now, deadline: now.Add(timeoutOf(st) + deadlineGrace)}
	}
	logTask := func(st *runningTask, msg string, args ...any) {
		k := st.task.GetKey()
		d.logger.Warn(msg, append([]any{"job", k.GetJob(), "batch", k.GetBatchId(), "task", k.GetIndex()}, args...)...)
	}

	pendingDispatch := make([]int, 0, len(tasks))
	for i := range tasks {
		pendingDispatch = append(pendingDispatch, i)
	}
	remaining := len(tasks)
	// durations of the finished tasks, dispatch to result; their median is
	// computed again only when speculation needs it and they changed.
	var durations []time.Duration
	var median time.Duration
	medianN := 0 // how many durations median was computed from
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	currentNote, waitNote := "", ""
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
		var unplaced []string
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
			disp, ch, err := d.send(ctx, attempt, pol.placement, st.avoid, "", spill, incoming)
			var pw *placementWait
			if errors.Is(err, errNoWorkers) || errors.Is(err, errNoSlot) || errors.As(err, &pw) {
				still = append(still, i)
				changed = ch
				waitingForWorkers = waitingForWorkers || errors.Is(err, errNoWorkers)
				if pw != nil {
					unplaced = append(unplaced, pw.reason)
				}
				continue
			}
			if err != nil {
				return batchOutcome{}, err
			}
			out.attempts++
			pol.events.attempt()
			st.attempt++
			st.cur = newSent(st, disp)
			st.queued = time.Time{}
		}
		pendingDispatch = still
		if len(pendingDispatch) == 0 && dispatched != nil {
			dispatched()
			dispatched = nil
		}
		wait := ""
		switch {
		case waitingForWorkers:
			wait = "waiting for workers to connect"
		case len(unplaced) == 1:
			wait = unplaced[0]
		case len(unplaced) > 1:
			wait = fmt.Sprintf("%s; %d tasks wait for a worker their placement allows", unplaced[0], len(unplaced))
		}
		if wait != "" {
			setNote(wait)
			waitNote = wait
		} else if currentNote != "" && currentNote == waitNote {
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
			id := r.GetKey().GetDispatchId()
			isCopy := st.copy != nil && st.copy.disp.id == id
			if !isCopy && (st.cur == nil || st.cur.disp.id != id) {
				continue // of a dispatch superseded since it delivered
			}
			s := st.cur
			if isCopy {
				s = st.copy
			}
			d.release(s.disp, false)
			worker := s.disp.worker.id
			if r.GetError() == "" {
				results[i] = r
				remaining--
				durations = append(durations, time.Since(s.at))
				// The other dispatch lost the race: it is cancelled, and
				// its result, should one come, is dropped.
				if isCopy {
					d.release(st.cur.disp, true)
					d.logger.Info("speculative copy finished first", "job", r.GetKey().GetJob(), "batch", r.GetKey().GetBatchId(),
						"task", i, "worker_id", worker, "original_worker_id", st.cur.disp.worker.id)
				} else if st.copy != nil {
					d.release(st.copy.disp, true)
				}
				st.cur, st.copy = nil, nil
				continue
			}
			if isCopy {
				logTask(st, "speculative copy failed; the original runs on", "worker_id", worker, "error", r.GetError())
				st.copy = nil
				continue
			}
			if st.copy != nil {
				logTask(st, "task failed while its speculative copy runs; the copy goes on", "worker_id", worker,
					"copy_worker_id", st.copy.disp.worker.id, "error", r.GetError())
				st.lastErr = r.GetError()
				st.promote()
				continue
			}
			st.cur = nil
			if r.GetFatal() {
				pol.events.failure(failFatal)
				return batchOutcome{}, &taskFailure{task: st.task, reason: fmt.Sprintf("failed on worker %s: %s", worker, r.GetError())}
			}
			logTask(st, "task failed", "attempt", r.GetKey().GetAttempt(), "worker_id", worker,
				"retryable", r.GetRetryable(), "error", r.GetError())
			if r.GetRetryable() {
				st.lastErr = r.GetError()
				st.retries++
				pol.events.retry()
				if st.retries > lim.maxRetries {
					return batchOutcome{}, &taskFailure{task: st.task, reason: fmt.Sprintf(
						"still failing after %d retries (limits.max_task_retries), last error: %s", lim.maxRetries, r.GetError())}
				}
				st.notFrom = time.Now().Add(st.backoff)
				st.backoff = min(st.backoff*2, 5*time.Second)
				setNote(fmt.Sprintf("task %d (%s): %s (retry %d of %d)", i, describeRanges(st.task),
					r.GetError(), st.retries, lim.maxRetries))
			} else {
				st.avoid[worker] = true
				if err := failed(st, r.GetError(), failError); err != nil {
					return batchOutcome{}, err
				}
			}
			pendingDispatch = append(pendingDispatch, i)
			continue
		}
		// Give up copies whose worker left or whose deadline passed, and
		// re-run tasks whose worker left or whose deadline passed.
		now = time.Now()
		for i, st := range state {
			if results[i] != nil || st.cur == nil {
				continue
			}
			if c := st.copy; c != nil && (!c.disp.worker.alive() || now.After(c.deadline)) {
				w := c.disp.worker
				reason := fmt.Sprintf("worker %s did not finish within %s", w.id, timeoutOf(st))
				if !w.alive() {
					reason = fmt.Sprintf("worker %s left", w.id)
					if err := lost(st, w.id); err != nil {
						return batchOutcome{}, err
					}
				}
				st.avoid[w.id] = true
				logTask(st, "giving up a speculative copy; the original runs on", "worker_id", w.id, "reason", reason)
				d.release(c.disp, true)
				st.copy = nil
			}
			w := st.cur.disp.worker
			left, late := !w.alive(), now.After(st.cur.deadline)
			if !left && !late {
				continue
			}
			if left {
				if err := lost(st, w.id); err != nil {
					return batchOutcome{}, err
				}
			} else {
				st.avoid[w.id] = true
				st.lastErr = fmt.Sprintf("worker %s did not finish within %s", w.id, st.task.GetTimeout().AsDuration())
			}
			d.release(st.cur.disp, true)
			if st.copy != nil {
				logTask(st, "task's worker left or missed its deadline; its speculative copy goes on", "reason", st.lastErr,
					"copy_worker_id", st.copy.disp.worker.id)
				st.promote()
				continue
			}
			if late {
				if err := failed(st, st.lastErr, failDeadline); err != nil {
					return batchOutcome{}, err
				}
			}
			logTask(st, "re-running task", "reason", st.lastErr)
			st.cur = nil
			pendingDispatch = append(pendingDispatch, i)
		}
		// Speculate on stragglers once half of the tasks have finished.
		if pol.speculation <= 0 || len(durations) == 0 || 2*len(durations) < len(tasks) {
			continue
		}
		if medianN != len(durations) {
			median, medianN = medianDuration(durations), len(durations)
		}
		threshold := max(time.Duration(pol.speculation*float64(median)), minSpeculationAge)
		for i, st := range state {
			if results[i] != nil || st.cur == nil || st.speculated || now.Sub(st.cur.at) <= threshold {
				continue
			}
			attempt := cloneTask(st.task)
			attempt.Key.Attempt = st.attempt + 1
			attempt.Speculative = true
			orig := st.cur.disp.worker.id
			disp, _, err := d.send(ctx, attempt, pol.placement, st.avoid, orig, true, incoming)
			var pw *placementWait
			if errors.Is(err, errNoWorkers) || errors.Is(err, errNoSlot) || errors.As(err, &pw) {
				continue // no other worker has room now: the next tick tries again
			}
			if err != nil {
				return batchOutcome{}, err
			}
			out.attempts++
			pol.events.attempt()
			out.speculative++
			st.attempt++
			st.speculated = true
			st.copy = newSent(st, disp)
			d.logger.Info("speculating a slow task", "job", st.task.GetKey().GetJob(), "batch", st.task.GetKey().GetBatchId(),
				"task", i, "running", now.Sub(st.cur.at).Round(time.Millisecond), "median", median.Round(time.Millisecond),
				"worker_id", orig, "copy_worker_id", disp.worker.id)
		}
	}
	return out, nil
}

// medianDuration is the median of ds (not empty); it sorts a copy.
func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func cloneTask(t *sluicev1.Task) *sluicev1.Task {
	c := proto.CloneOf(t)
	c.Spec = t.GetSpec() // shared, read-only: specs can be large
	c.Timeout = durationpb.New(min(t.GetTimeout().AsDuration(), maxTaskTimeout))
	return c
}
