package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// fakeWorker answers the tasks the dispatcher sends it with handle, in its
// own goroutine, and records the cancels it receives.
type fakeWorker struct {
	conn *workerConn

	mu        sync.Mutex
	tasks     []*sluicev1.Task
	cancelled []uint64
}

func (f *fakeWorker) cancels() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.cancelled...)
}

// startFakeWorker registers a worker with slots and serves it until the test
// ends or the worker is unregistered. handle returns the result to send, or
// nil to send nothing.
func startFakeWorker(t *testing.T, d *dispatcher, id string, slots int, handle func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult) *fakeWorker {
	t.Helper()
	return startFakeWorkerReg(t, d, &sluicev1.Register{WorkerId: id, Slots: int32(slots)}, handle)
}

// startFakeWorkerReg is startFakeWorker with a whole register message
// (labels, host).
func startFakeWorkerReg(t *testing.T, d *dispatcher, reg *sluicev1.Register, handle func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult) *fakeWorker {
	t.Helper()
	f := &fakeWorker{conn: d.register(reg)}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-f.conn.done:
				return
			case msg := <-f.conn.send:
				if c := msg.GetCancel(); c != nil {
					f.mu.Lock()
					f.cancelled = append(f.cancelled, c.GetDispatchIds()...)
					f.mu.Unlock()
					continue
				}
				task := msg.GetTask()
				f.mu.Lock()
				f.tasks = append(f.tasks, task)
				f.mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					if res := handle(f, task); res != nil {
						d.deliver(f.conn, res)
					}
				}()
			}
		}
	}()
	return f
}

// ok is the successful result of task, as a worker builds it.
func ok(task *sluicev1.Task) *sluicev1.TaskResult {
	return &sluicev1.TaskResult{
		Key: proto.CloneOf(task.GetKey()), Range: task.GetRange(), Ranges: task.GetRanges(), SpecVersion: task.GetSpecVersion(),
		RecordsIn: task.GetRange().GetUntilOffset() - task.GetRange().GetFromOffset(),
	}
}

func testTasks(n int, timeout time.Duration) []*sluicev1.Task {
	tasks := make([]*sluicev1.Task, n)
	for i := range tasks {
		tasks[i] = &sluicev1.Task{
			Key:         &sluicev1.TaskKey{Job: "j", BatchId: 7, Index: int32(i)},
			Range:       &sluicev1.OffsetRange{Topic: "t", Partition: int32(i), FromOffset: 10, UntilOffset: 20},
			SpecVersion: 3,
			Timeout:     durationpb.New(timeout),
		}
	}
	return tasks
}

func run(ctx context.Context, d *dispatcher, tasks []*sluicev1.Task, lim taskLimits) (batchOutcome, error) {
	return d.runTasks(ctx, tasks, lim, taskPolicy{}, func(string) {}, nil)
}

var defaultLimits = taskLimits{maxAttempts: 4, maxRetries: 30}

func TestRunTasksAcceptsOnlyTheDispatchedResult(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	var other *fakeWorker
	forged := func(task *sluicev1.Task) []*sluicev1.TaskResult {
		wrongRange := ok(task)
		wrongRange.Range = &sluicev1.OffsetRange{Topic: "t", Partition: task.GetRange().GetPartition(), FromOffset: 10, UntilOffset: 99}
		wrongSpec := ok(task)
		wrongSpec.SpecVersion = 2
		wrongAttempt := ok(task)
		wrongAttempt.Key.Attempt++
		wrongDispatch := ok(task)
		wrongDispatch.Key.DispatchId += 1000
		// A task carries one range or several: a result must echo the same.
		extraRanges := ok(task)
		extraRanges.Ranges = []*sluicev1.OffsetRange{task.GetRange()}
		return []*sluicev1.TaskResult{wrongRange, wrongSpec, wrongAttempt, wrongDispatch, extraRanges}
	}
	w := startFakeWorker(t, d, "w1", 4, func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		for _, r := range forged(task) {
			r.RecordsIn = -1
			d.deliver(w.conn, r)
		}
		// The right result, but on another worker's stream.
		fromOther := ok(task)
		fromOther.RecordsIn = -1
		d.deliver(other.conn, fromOther)
		return ok(task)
	})
	other = startFakeWorker(t, d, "w2", 0, func(*fakeWorker, *sluicev1.Task) *sluicev1.TaskResult { return nil })
	d.mu.Lock()
	other.conn.slots = 0 // never picked: only a stream that results could be forged on
	d.mu.Unlock()

	out, err := run(context.Background(), d, testTasks(3, time.Minute), defaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range out.results {
		if r.GetRecordsIn() != 10 {
			t.Errorf("task %d: accepted a result that is not its dispatch's: %v", i, r)
		}
	}
	if out.attempts != 3 {
		t.Errorf("attempts = %d, want 3", out.attempts)
	}
	if len(w.tasks) != 3 {
		t.Errorf("worker got %d tasks, want 3", len(w.tasks))
	}
}

func TestRunTasksNeverExceedsSlots(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	var peak atomic.Int32
	inflight := map[string]*atomic.Int32{"w1": {}, "w2": {}}
	slots := map[string]int32{"w1": 2, "w2": 3}
	handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		n := inflight[w.conn.id].Add(1)
		if n > slots[w.conn.id] {
			peak.Store(n)
		}
		time.Sleep(5 * time.Millisecond)
		inflight[w.conn.id].Add(-1)
		return ok(task)
	}
	startFakeWorker(t, d, "w1", 2, handle)
	startFakeWorker(t, d, "w2", 3, handle)
	out, err := run(context.Background(), d, testTasks(40, time.Minute), defaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if p := peak.Load(); p != 0 {
		t.Errorf("a worker ran %d tasks at once, above its slots", p)
	}
	if len(out.results) != 40 || out.attempts != 40 {
		t.Errorf("results %d, attempts %d; want 40 and 40", len(out.results), out.attempts)
	}
}

func TestRunTasksFailsAPoisonTask(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	// Every worker that gets partition 0's task leaves, as a worker that
	// crashes on its input would.
	crash := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		if task.GetRange().GetPartition() == 0 {
			d.unregister(w.conn)
			return nil
		}
		return ok(task)
	}
	for i := range 5 {
		startFakeWorker(t, d, fmt.Sprintf("w%d", i), 2, crash)
	}
	_, err := run(context.Background(), d, testTasks(2, time.Minute), defaultLimits)
	var tf *taskFailure
	if !errors.As(err, &tf) {
		t.Fatalf("err = %v, want a task failure", err)
	}
	if msg := tf.Error(); !strings.Contains(msg, "t/0 [10, 20)") || !strings.Contains(msg, "3 workers that left") {
		t.Errorf("message %q does not name the range and the lost workers", msg)
	}
}

func TestRunTasksBoundsRetries(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	startFakeWorker(t, d, "w1", 4, func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		r := ok(task)
		r.Error, r.Retryable = "broker unreachable", true
		return r
	})
	_, err := run(context.Background(), d, testTasks(1, time.Minute), taskLimits{maxAttempts: 4, maxRetries: 3})
	var tf *taskFailure
	if !errors.As(err, &tf) || !strings.Contains(err.Error(), "after 3 retries") || !strings.Contains(err.Error(), "broker unreachable") {
		t.Fatalf("err = %v, want a failure after 3 retries naming the last error", err)
	}
}

func TestRunTasksFatalFailsAtOnce(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	w := startFakeWorker(t, d, "w1", 4, func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		r := ok(task)
		r.Error, r.Fatal = "record t/0 offset 12: steps[0].filter: no such overload", true
		return r
	})
	_, err := run(context.Background(), d, testTasks(1, time.Minute), defaultLimits)
	if err == nil || !strings.Contains(err.Error(), "offset 12: steps[0].filter") {
		t.Fatalf("err = %v, want the fatal error", err)
	}
	if len(w.tasks) != 1 {
		t.Errorf("dispatched %d times, want once", len(w.tasks))
	}
}

func TestRunTasksCancelsWhatIsInFlightWhenStopped(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	got := make(chan uint64, 1)
	w := startFakeWorker(t, d, "w1", 4, func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		got <- task.GetKey().GetDispatchId()
		return nil // runs until cancelled
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := run(ctx, d, testTasks(1, time.Minute), defaultLimits)
		errc <- err
	}()
	id := <-got
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitCancels(w, 1)
	if c := w.cancels(); len(c) != 1 || c[0] != id {
		t.Fatalf("cancels = %v, want [%d]", c, id)
	}
	// A late result of the stopped dispatch is no longer wanted.
	d.mu.Lock()
	n := len(d.inflight)
	d.mu.Unlock()
	if n != 0 {
		t.Errorf("%d dispatches still in flight after the batch stopped", n)
	}
}

func TestRunTasksDropsTheResultOfASupersededAttempt(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	late := make(chan *sluicev1.TaskResult, 1)
	slow := startFakeWorker(t, d, "slow", 1, func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		r := ok(task)
		r.RecordsIn = -1
		late <- r // held back until the task was re-run elsewhere
		return nil
	})
	tasks := testTasks(1, time.Millisecond) // the coordinator's deadline passes after the grace
	out := make(chan error, 1)
	var res batchOutcome
	go func() {
		var err error
		res, err = run(context.Background(), d, tasks, defaultLimits)
		out <- err
	}()
	stale := <-late
	// Only now does a second worker exist: the re-run goes there.
	fast := startFakeWorker(t, d, "fast", 1, func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		d.deliver(slow.conn, stale) // the first attempt reports after all
		return ok(task)
	})
	if err := <-out; err != nil {
		t.Fatal(err)
	}
	if r := res.results[0]; r.GetRecordsIn() != 10 || r.GetKey().GetAttempt() != 2 {
		t.Errorf("accepted %v, want the second attempt's result", r)
	}
	if len(fast.tasks) != 1 {
		t.Errorf("fast worker got %d tasks, want 1", len(fast.tasks))
	}
	waitCancels(slow, 1)
	if c := slow.cancels(); len(c) != 1 || c[0] != stale.GetKey().GetDispatchId() {
		t.Errorf("slow worker's cancels = %v, want its dispatch %d", c, stale.GetKey().GetDispatchId())
	}
}

// waitCancels waits up to 5s for the fake worker to have read n cancels.
func waitCancels(w *fakeWorker, n int) {
	deadline := time.Now().Add(5 * time.Second)
	for len(w.cancels()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunTasksKeepPartitionsOnTheirWorker(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	handle := func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		time.Sleep(2 * time.Millisecond)
		return ok(task)
	}
	workers := []*fakeWorker{
		startFakeWorker(t, d, "w1", 1, handle), startFakeWorker(t, d, "w2", 1, handle), startFakeWorker(t, d, "w3", 1, handle),
	}
	tasks := testTasks(30, time.Minute)
	for i, task := range tasks {
		task.Range.Partition = int32(i % 3) // ten tasks per partition
	}
	if _, err := run(context.Background(), d, tasks, defaultLimits); err != nil {
		t.Fatal(err)
	}
	owner := map[int32]string{}
	for _, w := range workers {
		for _, task := range w.tasks {
			p := task.GetRange().GetPartition()
			if o, ok := owner[p]; ok && o != w.conn.id {
				t.Errorf("partition %d ran on %s and %s: a busy worker's partitions moved instead of waiting", p, o, w.conn.id)
			}
			owner[p] = w.conn.id
		}
	}
}

func TestRunTasksSpillAfterTheLocalityWait(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	stuck := make(chan struct{})
	var holder string
	var mu sync.Mutex
	handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		mu.Lock()
		first := holder == ""
		if first {
			holder = w.conn.id
		}
		mu.Unlock()
		if first {
			<-stuck // holds its only slot for the whole test
			return nil
		}
		return ok(task)
	}
	w1 := startFakeWorker(t, d, "w1", 1, handle)
	w2 := startFakeWorker(t, d, "w2", 1, handle)
	t.Cleanup(func() { close(stuck) }) // before the workers' cleanups wait for their handlers
	tasks := testTasks(2, time.Minute)
	tasks[1].Range.Partition = 0 // same partition: same preferred worker
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = run(ctx, d, tasks, defaultLimits)
	}()
	// The second task waits for the first's worker, then runs elsewhere.
	deadline := time.Now().Add(5 * time.Second)
	received := func(w *fakeWorker) int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.tasks)
	}
	for {
		if received(w1) == 1 && received(w2) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second task never spilled to the free worker")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if waited := time.Since(start); waited < localityWait {
		t.Errorf("spilled after %s, before the locality wait of %s", waited, localityWait)
	}
	cancel()
	<-done
}

// TestSameRange: ranges match only when every field does, and the
// comparison knows every field of OffsetRange (a new field must be added to
// sameRange).
func TestSameRange(t *testing.T) {
	r := func(topic string, p int32, from, until int64) *sluicev1.OffsetRange {
		return &sluicev1.OffsetRange{Topic: topic, Partition: p, FromOffset: from, UntilOffset: until}
	}
	base := r("t", 1, 10, 20)
	for _, tt := range []struct {
		other *sluicev1.OffsetRange
		want  bool
	}{
		{r("t", 1, 10, 20), true},
		{r("u", 1, 10, 20), false},
		{r("t", 2, 10, 20), false},
		{r("t", 1, 11, 20), false},
		{r("t", 1, 10, 21), false},
		{nil, false},
	} {
		if got := sameRange(base, tt.other); got != tt.want || got != proto.Equal(base, tt.other) {
			t.Errorf("sameRange(%v, %v) = %v, want %v (proto.Equal agrees)", base, tt.other, got, tt.want)
		}
	}
	if n := base.ProtoReflect().Descriptor().Fields().Len(); n != 4 {
		t.Fatalf("OffsetRange has %d fields; sameRange compares 4", n)
	}
}
