package coordinator

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// speculating is the policy of a job with the default speculation.
var speculating = taskPolicy{speculation: 3}

func (f *fakeWorker) received() []*sluicev1.Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tasks)
}

// waitUntil polls cond for up to 10s: fake workers block on it, and must
// not hang the test when the code under test is wrong.
func waitUntil(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// untilCancelled blocks until the coordinator cancelled the task on w.
func untilCancelled(w *fakeWorker, task *sluicev1.Task) {
	waitUntil(func() bool { return slices.Contains(w.cancels(), task.GetKey().GetDispatchId()) })
}

// dispatchesOf returns the dispatches of partition p over the workers, and
// the worker of each.
func dispatchesOf(p int32, ws ...*fakeWorker) (tasks []*sluicev1.Task, on []*fakeWorker) {
	for _, w := range ws {
		for _, task := range w.received() {
			if task.GetRange().GetPartition() == p {
				tasks, on = append(tasks, task), append(on, w)
			}
		}
	}
	return tasks, on
}

// checkOneCopy checks that partition p ran twice, once as a speculative
// copy on another worker than the original's, and returns both.
func checkOneCopy(t *testing.T, p int32, ws ...*fakeWorker) (orig, copy *sluicev1.Task, origOn, copyOn *fakeWorker) {
	t.Helper()
	tasks, on := dispatchesOf(p, ws...)
	if len(tasks) != 2 {
		t.Fatalf("t/%d was dispatched %d times, want twice (the original and one copy)", p, len(tasks))
	}
	orig, copy, origOn, copyOn = tasks[0], tasks[1], on[0], on[1]
	if orig.GetSpeculative() {
		orig, copy, origOn, copyOn = copy, orig, copyOn, origOn
	}
	if orig.GetSpeculative() || !copy.GetSpeculative() {
		t.Fatalf("t/%d: speculative flags %v and %v, want one copy", p, orig.GetSpeculative(), copy.GetSpeculative())
	}
	if origOn == copyOn {
		t.Fatalf("t/%d: the copy ran on the original's worker %s", p, origOn.conn.id)
	}
	return orig, copy, origOn, copyOn
}

func TestSpeculativeCopyOfAStragglerWins(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		if task.GetRange().GetPartition() == 0 && !task.GetSpeculative() {
			untilCancelled(w, task) // a straggler: answers only once it lost
			r := ok(task)
			r.RecordsIn = -1 // a late result, to be dropped
			return r
		}
		return ok(task)
	}
	w1, w2 := startFakeWorker(t, d, "w1", 4, handle), startFakeWorker(t, d, "w2", 4, handle)
	out, err := d.runTasks(context.Background(), testTasks(4, time.Minute), defaultLimits, speculating, func(string) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	orig, copy, origOn, _ := checkOneCopy(t, 0, w1, w2)
	if r := out.results[0]; r.GetKey().GetDispatchId() != copy.GetKey().GetDispatchId() || r.GetRecordsIn() != 10 {
		t.Errorf("result %v, want the copy's", r)
	}
	if out.speculative != 1 || out.attempts != 5 {
		t.Errorf("speculative %d, attempts %d; want 1 and 5", out.speculative, out.attempts)
	}
	waitCancels(origOn, 1)
	if c := origOn.cancels(); !slices.Contains(c, orig.GetKey().GetDispatchId()) {
		t.Errorf("the original's worker got cancels %v, want its dispatch %d", c, orig.GetKey().GetDispatchId())
	}
}

func TestOriginalFinishingFirstCancelsTheCopy(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	copied := make(chan struct{})
	handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		switch {
		case task.GetRange().GetPartition() != 0:
		case task.GetSpeculative():
			close(copied)
			untilCancelled(w, task)
			return nil
		default:
			<-copied // slow enough to be copied, then done first
		}
		return ok(task)
	}
	w1, w2 := startFakeWorker(t, d, "w1", 4, handle), startFakeWorker(t, d, "w2", 4, handle)
	out, err := d.runTasks(context.Background(), testTasks(2, time.Minute), defaultLimits, speculating, func(string) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	orig, copy, _, copyOn := checkOneCopy(t, 0, w1, w2)
	if out.results[0].GetKey().GetDispatchId() != orig.GetKey().GetDispatchId() {
		t.Errorf("result of dispatch %d, want the original's %d", out.results[0].GetKey().GetDispatchId(), orig.GetKey().GetDispatchId())
	}
	waitCancels(copyOn, 1)
	if c := copyOn.cancels(); !slices.Contains(c, copy.GetKey().GetDispatchId()) {
		t.Errorf("the copy's worker got cancels %v, want the copy's dispatch %d", c, copy.GetKey().GetDispatchId())
	}
	if out.speculative != 1 {
		t.Errorf("speculative = %d, want 1", out.speculative)
	}
}

// failure is a failed result of each kind.
var failures = map[string]func(*sluicev1.TaskResult){
	"retryable": func(r *sluicev1.TaskResult) { r.Error, r.Retryable = "broker unreachable", true },
	"failed":    func(r *sluicev1.TaskResult) { r.Error = "offset out of range" },
	// The original's transaction fenced by its copy may say so as a
	// fatal producer error.
	"fatal": func(r *sluicev1.TaskResult) { r.Error, r.Fatal = "transaction t-0: commit: fenced", true },
}

// noSecondChance allows no failure at all: a failure that counted would fail
// the batch.
var noSecondChance = taskLimits{maxAttempts: 1, maxRetries: 0}

func TestFailedSpeculativeCopyCountsForNothing(t *testing.T) {
	for kind, fail := range failures {
		t.Run(kind, func(t *testing.T) {
			d := newDispatcher(hclog.NewNullLogger())
			copyFailed := make(chan struct{})
			handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
				switch {
				case task.GetRange().GetPartition() != 0:
				case task.GetSpeculative():
					r := ok(task)
					fail(r)
					d.deliver(w.conn, r)
					close(copyFailed)
					return nil
				default:
					<-copyFailed // the batch hears of the copy's failure first
				}
				return ok(task)
			}
			w1, w2 := startFakeWorker(t, d, "w1", 4, handle), startFakeWorker(t, d, "w2", 4, handle)
			out, err := d.runTasks(context.Background(), testTasks(2, time.Minute), noSecondChance, speculating, func(string) {}, nil)
			if err != nil {
				t.Fatalf("a failed speculative copy failed the batch: %v", err)
			}
			orig, _, _, _ := checkOneCopy(t, 0, w1, w2)
			if out.results[0].GetKey().GetDispatchId() != orig.GetKey().GetDispatchId() {
				t.Errorf("result %v, want the original's", out.results[0])
			}
		})
	}
}

func TestOriginalFailingWhileItsCopyRunsLeavesTheCopy(t *testing.T) {
	for kind, fail := range failures {
		t.Run(kind, func(t *testing.T) {
			d := newDispatcher(hclog.NewNullLogger())
			copied, origFailed := make(chan struct{}), make(chan struct{})
			handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
				switch {
				case task.GetRange().GetPartition() != 0:
				case task.GetSpeculative():
					close(copied)
					<-origFailed
				default:
					<-copied // then fenced by it, say
					r := ok(task)
					fail(r)
					d.deliver(w.conn, r)
					close(origFailed)
					return nil
				}
				return ok(task)
			}
			w1, w2 := startFakeWorker(t, d, "w1", 4, handle), startFakeWorker(t, d, "w2", 4, handle)
			out, err := d.runTasks(context.Background(), testTasks(2, time.Minute), noSecondChance, speculating, func(string) {}, nil)
			if err != nil {
				t.Fatalf("the original's failure while its copy ran failed the batch: %v", err)
			}
			_, copy, _, _ := checkOneCopy(t, 0, w1, w2) // and no third dispatch
			if out.results[0].GetKey().GetDispatchId() != copy.GetKey().GetDispatchId() {
				t.Errorf("result %v, want the copy's", out.results[0])
			}
			if out.attempts != 3 {
				t.Errorf("attempts = %d, want 3 (two tasks and a copy)", out.attempts)
			}
		})
	}
}

// TestSpeculationWaitsForAFreeSlotOnAnotherWorker: a copy never goes to
// the original's worker nor beyond a worker's slots, and follows the
// placement: it waits until an allowed worker has a free slot.
func TestSpeculationWaitsForAFreeSlotOnAnotherWorker(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	// A runs on x or y (label L), and prefers x; C only on y; B and D on z.
	var pA int32
	for rendezvous(placeKey{partitionKey{"t", pA}, 0}, "x") < rendezvous(placeKey{partitionKey{"t", pA}, 0}, "y") {
		pA++
	}
	pC, pB, pD := pA+1, pA+2, pA+3
	pol := taskPolicy{speculation: 3, placement: newPlacement(&sluicev1.Placement{
		Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED,
		Fixed: []*sluicev1.FixedPlacement{
			{Topic: "t", Partitions: []int32{pA}, WorkerLabel: "L"},
			{Topic: "t", Partitions: []int32{pC}, WorkerLabel: "y-only"},
			{Topic: "t", WorkerLabel: "M"},
		},
	}, nil)}
	releaseC := make(chan struct{})
	var fastDone atomic.Int32
	handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		switch p := task.GetRange().GetPartition(); {
		case p == pA && !task.GetSpeculative():
			untilCancelled(w, task)
			return nil
		case p == pC:
			<-releaseC
		case p == pB || p == pD:
			defer fastDone.Add(1)
		}
		return ok(task)
	}
	x := startFakeWorkerReg(t, d, &sluicev1.Register{WorkerId: "x", Slots: 1, Labels: []string{"L"}}, handle)
	y := startFakeWorkerReg(t, d, &sluicev1.Register{WorkerId: "y", Slots: 1, Labels: []string{"L", "y-only"}}, handle)
	z := startFakeWorkerReg(t, d, &sluicev1.Register{WorkerId: "z", Slots: 2, Labels: []string{"M"}}, handle)
	t.Cleanup(func() {
		select {
		case <-releaseC:
		default:
			close(releaseC)
		}
	})
	tasks := testTasks(4, time.Minute)
	for i, p := range []int32{pA, pC, pB, pD} {
		tasks[i].Range.Partition = p
	}
	type outcome struct {
		out batchOutcome
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		out, err := d.runTasks(context.Background(), tasks, defaultLimits, pol, func(string) {}, nil)
		done <- outcome{out, err}
	}()
	if !waitUntil(func() bool { return fastDone.Load() == 2 }) {
		t.Fatal("B and D never finished")
	}
	// Half the tasks are done and A and C are stragglers, but A's only other
	// worker, y, is busy with C, and C may run on y alone.
	time.Sleep(minSpeculationAge + 500*time.Millisecond)
	for _, w := range []*fakeWorker{x, y, z} {
		for _, task := range w.received() {
			if task.GetSpeculative() {
				t.Fatalf("copy of t/%d sent to %s while no other allowed worker had a free slot", task.GetRange().GetPartition(), w.conn.id)
			}
		}
	}
	close(releaseC)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	_, copy, origOn, copyOn := checkOneCopy(t, pA, x, y, z)
	if origOn != x || copyOn != y {
		t.Errorf("A ran on %s and its copy on %s, want x and y", origOn.conn.id, copyOn.conn.id)
	}
	if res.out.results[0].GetKey().GetDispatchId() != copy.GetKey().GetDispatchId() || res.out.speculative != 1 {
		t.Errorf("result %v, %d copies; want the copy's, 1", res.out.results[0], res.out.speculative)
	}
	if cs, _ := dispatchesOf(pC, x, y, z); len(cs) != 1 {
		t.Errorf("C was dispatched %d times, want once: no other worker may run it", len(cs))
	}
}

func TestNoSpeculationWhenOff(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	handle := func(w *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		if task.GetRange().GetPartition() == 0 {
			time.Sleep(minSpeculationAge + 500*time.Millisecond)
		}
		return ok(task)
	}
	startFakeWorker(t, d, "w1", 4, handle)
	startFakeWorker(t, d, "w2", 4, handle)
	out, err := d.runTasks(context.Background(), testTasks(2, time.Minute), defaultLimits, taskPolicy{}, func(string) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.speculative != 0 || out.attempts != 2 {
		t.Errorf("speculative %d, attempts %d; want 0 and 2", out.speculative, out.attempts)
	}
}

func TestTaskPolicyFromSpec(t *testing.T) {
	r := &jobRunner{name: "j", dispatcher: newDispatcher(hclog.NewNullLogger()), logger: hclog.NewNullLogger()}
	for _, tc := range []struct {
		multiplier float64
		want       float64
	}{{0, 3}, {-1, 0}, {1.5, 1.5}} {
		r.spec = &sluicev1.JobSpec{Limits: &sluicev1.Limits{SpeculationMultiplier: tc.multiplier}}
		if got := r.taskPolicy(context.Background(), testTasks(1, time.Minute)).speculation; got != tc.want {
			t.Errorf("speculation_multiplier %v: speculation %v, want %v", tc.multiplier, got, tc.want)
		}
	}
	r.spec = &sluicev1.JobSpec{Placement: &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED,
		Fixed: []*sluicev1.FixedPlacement{{Topic: "t", WorkerLabel: "gpu"}}}}
	if pl := r.taskPolicy(context.Background(), nil).placement; pl.topicLabels["t"] != "gpu" {
		t.Errorf("placement %+v, want t on gpu", pl)
	}
}

// TestTasksWaitForALabelledWorker: a task whose label no live worker
// carries waits, the job's message says why, and it runs (and the message
// clears) once such a worker joins.
func TestTasksWaitForALabelledWorker(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	pol := taskPolicy{placement: newPlacement(&sluicev1.Placement{
		Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED,
		Fixed: []*sluicev1.FixedPlacement{
			{Topic: "t", Partitions: []int32{0}, WorkerLabel: "gpu"},
			{Topic: "t", WorkerLabel: "cpu"},
		},
	}, nil)}
	release := make(chan struct{})
	handle := func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult {
		if task.GetRange().GetPartition() == 1 {
			<-release
		}
		return ok(task)
	}
	cpu := startFakeWorkerReg(t, d, &sluicev1.Register{WorkerId: "cpu-1", Slots: 4, Labels: []string{"cpu"}}, handle)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	var mu sync.Mutex
	var notes []string
	noted := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(notes)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.runTasks(context.Background(), testTasks(2, time.Minute), defaultLimits, pol, func(msg string) {
			mu.Lock()
			notes = append(notes, msg)
			mu.Unlock()
		}, nil)
		done <- err
	}()
	const want = `no live worker has label "gpu" (placement.fixed for t/0)`
	if !waitUntil(func() bool { return slices.Contains(noted(), want) }) {
		t.Fatalf("notes %q, want %q", noted(), want)
	}
	gpu := startFakeWorkerReg(t, d, &sluicev1.Register{WorkerId: "gpu-1", Slots: 1, Labels: []string{"gpu"}}, handle)
	// t/0 runs on the new worker and the message clears, while t/1 still runs.
	if !waitUntil(func() bool { n := noted(); return len(n) >= 2 && n[len(n)-1] == "" }) {
		t.Fatalf("notes %q: the message did not clear when a gpu worker joined", noted())
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, w := range []*fakeWorker{cpu, gpu} {
		for _, task := range w.received() {
			if want := map[int32]string{0: "gpu-1", 1: "cpu-1"}[task.GetRange().GetPartition()]; w.conn.id != want {
				t.Errorf("t/%d ran on %s, want %s", task.GetRange().GetPartition(), w.conn.id, want)
			}
		}
	}
	if n := len(gpu.received()) + len(cpu.received()); n != 2 {
		t.Errorf("%d dispatches, want 2", n)
	}
}
