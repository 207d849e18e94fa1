package coordinator

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// A job's tasks go only to workers that registered every processor it
// calls, in every placement mode; while none did, the task waits and says
// which processor it waits for.
func TestPlacementWithProcessors(t *testing.T) {
	k := placeKey{partitionKey{"t", 0}, 0}
	w := func(id string, free int, labels []string, host string, procs ...string) workerInfo {
		return workerInfo{id: id, slots: 4, free: free, labels: labels, host: host, processors: procs}
	}
	fixed := func(label string) *sluicev1.Placement {
		return &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED,
			Fixed: []*sluicev1.FixedPlacement{{Topic: "t", WorkerLabel: label}}}
	}
	brokers := &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_BROKERS}
	tests := []struct {
		name    string
		pl      *sluicev1.Placement
		leader  string // brokers: partition t/0's leader host
		procs   []string
		ws      []workerInfo
		exclude string
		spill   bool
		want    string // the worker's id, or the error
	}{
		{"only the worker with it", nil, "", []string{"enrich"},
			[]workerInfo{w("a", 4, nil, ""), w("b", 4, nil, "", "enrich"), w("c", 4, nil, "", "geo")}, "", false, "b"},
		{"with all of them", nil, "", []string{"enrich", "geo"},
			[]workerInfo{w("a", 4, nil, "", "enrich"), w("b", 4, nil, "", "enrich", "geo", "x"), w("c", 4, nil, "", "geo")}, "", true, "b"},
		{"none has it", nil, "", []string{"enrich"},
			[]workerInfo{w("a", 4, nil, ""), w("b", 4, nil, "", "geo")}, "", true, `waiting for a worker with processor "enrich"`},
		{"none has two of them", nil, "", []string{"enrich", "geo", "x"},
			[]workerInfo{w("a", 4, nil, "", "enrich")}, "", true, `waiting for a worker with processors "geo", "x"`},
		{"each is somewhere, all nowhere", nil, "", []string{"enrich", "geo"},
			[]workerInfo{w("a", 4, nil, "", "enrich"), w("b", 4, nil, "", "geo")}, "", true,
			`waiting for a worker with all of processors "enrich", "geo": no live worker has them all`},
		{"its worker is busy: waits, even with spill", nil, "", []string{"enrich"},
			[]workerInfo{w("a", 4, nil, ""), w("b", 0, nil, "", "enrich")}, "", true, errNoSlot.Error()},
		{"the only one is excluded (a speculative copy)", nil, "", []string{"enrich"},
			[]workerInfo{w("a", 4, nil, ""), w("b", 4, nil, "", "enrich")}, "b", true, errNoSlot.Error()},
		{"no workers at all", nil, "", []string{"enrich"}, nil, "", true, errNoWorkers.Error()},
		{"fixed: the labelled worker with it", fixed("ssd"), "", []string{"enrich"},
			[]workerInfo{w("a", 4, []string{"ssd"}, ""), w("b", 4, []string{"ssd"}, "", "enrich"), w("c", 4, nil, "", "enrich")}, "", true, "b"},
		{"fixed: the label is only on workers without it", fixed("ssd"), "", []string{"enrich"},
			[]workerInfo{w("a", 4, []string{"ssd"}, ""), w("c", 4, nil, "", "enrich")}, "", true, `no live worker has label "ssd"`},
		{"brokers: the local worker lacks it", brokers, "h1", []string{"enrich"},
			[]workerInfo{w("a", 4, nil, "h1"), w("b", 4, nil, "h2", "enrich")}, "", true, "b"},
		{"brokers: the local worker with it", brokers, "h1", []string{"enrich"},
			[]workerInfo{w("a", 4, nil, "h1", "enrich"), w("b", 4, nil, "h2", "enrich"), w("c", 4, nil, "h1")}, "", false, "a"},
		{"a job without processors runs anywhere", nil, "", nil,
			[]workerInfo{w("a", 0, nil, "", "enrich"), w("b", 4, nil, "")}, "", true, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlacement(tt.pl, map[partitionKey]string{{"t", 0}: tt.leader})
			p.processors = tt.procs
			i, err := p.choose(k, tt.ws, nil, tt.exclude, tt.spill)
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				got = tt.ws[i].id
			}
			if !strings.Contains(got, tt.want) {
				t.Fatalf("choose() = %q, want %q", got, tt.want)
			}
			var pw *placementWait
			if strings.HasPrefix(tt.want, "waiting") && !errors.As(err, &pw) {
				t.Fatalf("choose() error %v is not a placementWait", err)
			}
		})
	}
}

func TestHasAll(t *testing.T) {
	tests := []struct {
		have, want []string
		ok         bool
	}{
		{nil, nil, true},
		{[]string{"a"}, nil, true},
		{nil, []string{"a"}, false},
		{[]string{"a", "b", "c"}, []string{"a", "c"}, true},
		{[]string{"a", "c"}, []string{"a", "b"}, false},
		{[]string{"b"}, []string{"a", "b"}, false},
		{[]string{"a", "b"}, []string{"b", "c"}, false},
	}
	for _, tt := range tests {
		if got := hasAll(tt.have, tt.want); got != tt.ok {
			t.Errorf("hasAll(%q, %q) = %v, want %v", tt.have, tt.want, got, tt.ok)
		}
	}
}

func TestCheckWorkerProcessors(t *testing.T) {
	many := make([]string, maxWorkerProcessors+1)
	for i := range many {
		many[i] = "p"
	}
	tests := []struct {
		names []string
		want  string
	}{
		{[]string{"enrich", "geo.v2", "a_b-c"}, ""},
		{[]string{"enrich", "bad name"}, `processor name "bad name" must be a letter`},
		{[]string{""}, `processor name ""`},
		{many, "1025 processors: at most 1024"},
	}
	for _, tt := range tests {
		err := checkWorkerProcessors(tt.names)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("checkWorkerProcessors(%.3q) = %v, want %q", tt.names, err, tt.want)
		}
	}
}

// A batch of a job with a processor waits, saying so, while only workers
// without it are connected, and runs once one with it registers; the note
// is cleared then. The worker without it never gets a task.
func TestRunTasksWaitForAWorkerWithTheProcessor(t *testing.T) {
	d := newDispatcher(hclog.NewNullLogger())
	plain := startFakeWorker(t, d, "plain", 4, func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult { return ok(task) })
	var (
		mu    sync.Mutex
		notes []string
	)
	noted := make(chan string, 100)
	note := func(msg string) {
		mu.Lock()
		notes = append(notes, msg)
		mu.Unlock()
		noted <- msg
	}
	pl := newPlacement(nil, nil)
	pl.processors = []string{"enrich"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := d.runTasks(ctx, testTasks(3, 10*time.Second), defaultLimits, taskPolicy{placement: pl}, note, nil)
		done <- err
	}()
	if msg := <-noted; !strings.HasPrefix(msg, `waiting for a worker with processor "enrich"`) {
		t.Fatalf("first note = %q", msg)
	}
	withIt := startFakeWorkerReg(t, d, &sluicev1.Register{WorkerId: "with-it", Slots: 4, Processors: []string{"geo", "enrich"}},
		func(_ *fakeWorker, task *sluicev1.Task) *sluicev1.TaskResult { return ok(task) })
	if err := <-done; err != nil {
		t.Fatalf("runTasks() = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := notes[len(notes)-1]; last != "" {
		t.Fatalf("notes %q: the last should clear the wait", notes)
	}
	plain.mu.Lock()
	defer plain.mu.Unlock()
	withIt.mu.Lock()
	defer withIt.mu.Unlock()
	if len(plain.tasks) != 0 || len(withIt.tasks) != 3 {
		t.Fatalf("worker without the processor got %d tasks, with it %d; want 0 and 3", len(plain.tasks), len(withIt.tasks))
	}
}

// Submit checks processor steps without the processors: their names and
// the size of their config, naming the field.
func TestValidateProcessorSteps(t *testing.T) {
	withStep := func(ps *sluicev1.ProcessorStep) *sluicev1.JobSpec {
		s := validJobSpec()
		s.Steps = append(s.Steps, &sluicev1.Step{Kind: &sluicev1.Step_Processor{Processor: ps}})
		return s
	}
	cfg, err := structpb.NewStruct(map[string]any{"table": "customers", "ttl": 30})
	if err != nil {
		t.Fatal(err)
	}
	big, err := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 70<<10)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		spec      *sluicev1.JobSpec
		wantField string
		wantMsg   string
	}{
		{"valid", withStep(&sluicev1.ProcessorStep{Name: "enrich", Config: cfg}), "", ""},
		{"no name", withStep(&sluicev1.ProcessorStep{}), "steps[3].processor.name", `processor name "" must be a letter`},
		{"bad name", withStep(&sluicev1.ProcessorStep{Name: "en/rich"}), "steps[3].processor.name", `processor name "en/rich"`},
		{"config too big", withStep(&sluicev1.ProcessorStep{Name: "enrich", Config: big}), "steps[3].processor.config", "at most 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.spec)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.wantField || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Validate() = %v, want field %s and %q", err, tt.wantField, tt.wantMsg)
			}
		})
	}
}
