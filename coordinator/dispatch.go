package coordinator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// deadlineGrace is how long past a task's timeout the coordinator waits
// before it gives the task up as lost on its worker.
const deadlineGrace = 5 * time.Second

// errNoWorkers is what a batch waits on while no worker is connected.
var errNoWorkers = errors.New("coordinator: no workers connected")

// workerConn is one connected worker stream. Its send channel is drained by
// the stream handler that registered it; done closes when the stream ends.
type workerConn struct {
	id    string
	slots int
	host  string
	send  chan *sluicev1.ConnectResponse
	done  chan struct{}
	once  sync.Once
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

// taskID names a task across its attempts.
type taskID struct {
	job   string
	batch int64
	index int32
}

// dispatcher places tasks on connected workers and routes their results back
// to the batch waiting for them. It is shared by all job runners.
type dispatcher struct {
	logger hclog.Logger

	mu      sync.Mutex
	workers map[string]*workerConn
	// changed is closed and replaced whenever a worker joins or leaves.
	changed chan struct{}
	// waiting routes results to the batch run that owns the task.
	waiting map[taskID]chan *sluicev1.TaskResult
}

func newDispatcher(logger hclog.Logger) *dispatcher {
	return &dispatcher{
		logger:  logger,
		workers: map[string]*workerConn{},
		changed: make(chan struct{}),
		waiting: map[taskID]chan *sluicev1.TaskResult{},
	}
}

// register adds a worker; a worker reconnecting with the same id replaces its
// old stream, whose tasks are then re-run elsewhere.
func (d *dispatcher) register(reg *sluicev1.Register) *workerConn {
	w := &workerConn{
		id:    reg.GetWorkerId(),
		slots: max(int(reg.GetSlots()), 1),
		host:  reg.GetHost(),
		send:  make(chan *sluicev1.ConnectResponse, 256),
		done:  make(chan struct{}),
	}
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

// deliver hands a result to the batch waiting for it. Results nobody waits
// for (a batch that already finished, a superseded attempt) are dropped.
func (d *dispatcher) deliver(res *sluicev1.TaskResult) {
	k := res.GetKey()
	d.mu.Lock()
	ch, ok := d.waiting[taskID{k.GetJob(), k.GetBatchId(), k.GetIndex()}]
	d.mu.Unlock()
	if !ok {
		return
	}
	select {
	case ch <- res:
	default:
		// The channel holds one slot per attempt; a full one means a
		// duplicate, which the batch would ignore anyway.
	}
}

// pick chooses the worker for a task by rendezvous hashing over live workers,
// so a partition sticks to the same worker across batches and its cached
// consumer is reused. Workers in avoid are skipped while others exist.
func (d *dispatcher) pick(r *sluicev1.OffsetRange, avoid map[string]bool) (*workerConn, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var best *workerConn
	var bestScore uint64
	var bestAvoided bool
	for id, w := range d.workers {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s\x00%d\x00%s", r.GetTopic(), r.GetPartition(), id)
		score := h.Sum64()
		avoided := avoid[id]
		better := best == nil ||
			(bestAvoided && !avoided) ||
			(bestAvoided == avoided && score > bestScore)
		if better {
			best, bestScore, bestAvoided = w, score, avoided
		}
	}
	return best, d.changed
}

// batchOutcome is what running a batch's tasks yields.
type batchOutcome struct {
	results  []*sluicev1.TaskResult // by task index
	attempts int
}

// taskFailure is a task that used up its attempts.
type taskFailure struct {
	task     *sluicev1.Task
	failures int
	lastErr  string
}

func (e *taskFailure) Error() string {
	r := e.task.GetRange()
	return fmt.Sprintf("task %d of batch %d (%s/%d [%d, %d)) failed %d times, last error: %s",
		e.task.GetKey().GetIndex(), e.task.GetKey().GetBatchId(), r.GetTopic(), r.GetPartition(),
		r.GetFromOffset(), r.GetUntilOffset(), e.failures, e.lastErr)
}

// runTasks runs every task to success. A task whose worker leaves is re-run
// elsewhere; one that reports a transient error (Kafka away or slow) is
// retried with backoff; one that fails otherwise or passes its deadline is
// re-run, preferably on another worker, and counts against maxAttempts. Each
// dispatch has a new attempt number and results of older attempts are
// ignored. note is told what holds the batch back ("" when nothing does).
func (d *dispatcher) runTasks(ctx context.Context, tasks []*sluicev1.Task, maxAttempts int, note func(msg string), dispatched func()) (batchOutcome, error) {
	type running struct {
		task     *sluicev1.Task
		worker   *workerConn
		deadline time.Time
		notFrom  time.Time // earliest next dispatch, after a transient error
		backoff  time.Duration
		failures int
		avoid    map[string]bool
		lastErr  string
	}
	results := make([]*sluicev1.TaskResult, len(tasks))
	state := make([]*running, len(tasks))
	merged := make(chan *sluicev1.TaskResult, len(tasks)*4)

	d.mu.Lock()
	chans := make([]chan *sluicev1.TaskResult, len(tasks))
	for i, t := range tasks {
		chans[i] = make(chan *sluicev1.TaskResult, 4)
		k := t.GetKey()
		d.waiting[taskID{k.GetJob(), k.GetBatchId(), k.GetIndex()}] = chans[i]
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		for _, t := range tasks {
			k := t.GetKey()
			delete(d.waiting, taskID{k.GetJob(), k.GetBatchId(), k.GetIndex()})
		}
		d.mu.Unlock()
	}()

	// Fan the per-task channels into one; the goroutines end with runCtx.
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case r := <-ch:
					select {
					case merged <- r:
					case <-runCtx.Done():
						return
					}
				case <-runCtx.Done():
					return
				}
			}
		}()
	}

	attempts := 0
	// dispatch sends task i to a worker, or reports that no worker is there.
	dispatch := func(i int) (<-chan struct{}, error) {
		st := state[i]
		w, changed := d.pick(st.task.GetRange(), st.avoid)
		if w == nil {
			return changed, errNoWorkers
		}
		st.task.Key.Attempt++
		attempts++
		st.worker = w
		// The worker enforces the timeout itself and reports it as a
		// transient error; the grace leaves room for that report, so the
		// coordinator's deadline only catches a worker that went silent.
		st.deadline = time.Now().Add(st.task.GetTimeout().AsDuration() + deadlineGrace)
		msg := &sluicev1.ConnectResponse{Kind: &sluicev1.ConnectResponse_Task{Task: cloneTask(st.task)}}
		select {
		case w.send <- msg:
		case <-w.done:
			// Picked up as a lost worker on the next check.
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, nil
	}
	// failed records a failure that counts against the task's attempts.
	failed := func(st *running, reason string) error {
		st.lastErr = reason
		st.failures++
		if st.failures >= maxAttempts {
			return &taskFailure{task: st.task, failures: st.failures, lastErr: reason}
		}
		return nil
	}

	for i, t := range tasks {
		state[i] = &running{task: t, avoid: map[string]bool{}, backoff: 100 * time.Millisecond}
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
			if now.Before(state[i].notFrom) {
				still = append(still, i)
				continue
			}
			ch, err := dispatch(i)
			if errors.Is(err, errNoWorkers) {
				still = append(still, i)
				changed = ch
				waitingForWorkers = true
				continue
			}
			if err != nil {
				return batchOutcome{}, err
			}
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

		select {
		case <-ctx.Done():
			return batchOutcome{}, ctx.Err()
		case <-changed:
		case <-tick.C:
		case r := <-merged:
			i := int(r.GetKey().GetIndex())
			if i < 0 || i >= len(tasks) || results[i] != nil {
				continue
			}
			st := state[i]
			if r.GetKey().GetAttempt() != st.task.GetKey().GetAttempt() || st.worker == nil {
				continue // a superseded attempt
			}
			if r.GetError() == "" {
				results[i] = r
				remaining--
				continue
			}
			d.logger.Warn("task failed", "job", r.GetKey().GetJob(), "batch", r.GetKey().GetBatchId(),
				"task", i, "attempt", r.GetKey().GetAttempt(), "worker_id", st.worker.id,
				"retryable", r.GetRetryable(), "error", r.GetError())
			failedOn := st.worker.id
			st.worker = nil
			if r.GetRetryable() {
				st.lastErr = r.GetError()
				st.notFrom = time.Now().Add(st.backoff)
				st.backoff = min(st.backoff*2, 5*time.Second)
				setNote(fmt.Sprintf("task %d (%s/%d): %s (retrying)", i, st.task.GetRange().GetTopic(), st.task.GetRange().GetPartition(), r.GetError()))
			} else {
				st.avoid[failedOn] = true
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
			if results[i] != nil || st.worker == nil {
				continue
			}
			switch {
			case !st.worker.alive():
				st.lastErr = fmt.Sprintf("worker %s left", st.worker.id)
			case now.After(st.deadline):
				st.avoid[st.worker.id] = true
				if err := failed(st, fmt.Sprintf("worker %s did not finish within %s", st.worker.id, st.task.GetTimeout().AsDuration())); err != nil {
					return batchOutcome{}, err
				}
			default:
				continue
			}
			d.logger.Warn("re-running task", "job", st.task.GetKey().GetJob(), "batch", st.task.GetKey().GetBatchId(),
				"task", i, "reason", st.lastErr)
			st.worker = nil
			pendingDispatch = append(pendingDispatch, i)
		}
	}
	return batchOutcome{results: results, attempts: attempts}, nil
}

func cloneTask(t *sluicev1.Task) *sluicev1.Task {
	return &sluicev1.Task{
		Key: &sluicev1.TaskKey{
			Job: t.GetKey().GetJob(), BatchId: t.GetKey().GetBatchId(),
			Index: t.GetKey().GetIndex(), Attempt: t.GetKey().GetAttempt(),
		},
		Range:       t.GetRange(),
		Spec:        t.GetSpec(),
		SpecVersion: t.GetSpecVersion(),
		Timeout:     durationpb.New(t.GetTimeout().AsDuration()),
	}
}
