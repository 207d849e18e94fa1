package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

func TestPlacementChoose(t *testing.T) {
	// The table names partitions by the rendezvous order of workers a..d
	// they need: part[i] is the first partition of t with order[i].
	orderOf := func(k placeKey) []string {
		got := []string{"a", "b", "c", "d"}
		slices.SortFunc(got, func(x, y string) int {
			if rendezvous(k, x) > rendezvous(k, y) {
				return -1
			}
			return 1
		})
		return got
	}
	orders := [][]string{{"d", "b", "c", "a"}, {"d", "c", "b", "a"}, {"d", "a", "b", "c"}, {"d", "c", "a", "b"}, {"b", "c", "a", "d"}}
	part := make([]int32, len(orders))
	for i, want := range orders {
		part[i] = -1
		for p := int32(0); p < 100_000 && part[i] < 0; p++ {
			if slices.Equal(orderOf(placeKey{partitionKey{"t", p}, 0}), want) && !slices.Contains(part[:i], p) {
				part[i] = p
			}
		}
		if part[i] < 0 {
			t.Fatalf("no partition has the rendezvous order %v", want)
		}
	}
	pk := func(i int32) placeKey { return placeKey{partitionKey{"t", part[i]}, 0} }
	var piece4 int32 = 1 // a later piece of part[4] whose order starts with a
	for orderOf(placeKey{partitionKey{"t", part[4]}, piece4})[0] != "a" {
		piece4++
	}
	piece := func(i, n int32) placeKey { return placeKey{partitionKey{"t", part[i]}, n} }
	workers := []workerInfo{
		{id: "a", slots: 2, free: 2, labels: []string{"gpu"}, host: "127.0.0.1"},
		{id: "b", slots: 2, free: 0, labels: []string{"gpu", "ssd"}, host: "h2"},
		{id: "c", slots: 1, free: 1, host: "127.0.0.1"},
		{id: "d", slots: 4, free: 4, labels: []string{"ssd"}, host: "h4"},
	}
	consistent := newPlacement(&sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_CONSISTENT}, nil)
	fixed := newPlacement(&sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED, Fixed: []*sluicev1.FixedPlacement{
		{Topic: "t", WorkerLabel: "ssd"},
		{Topic: "t", Partitions: []int32{part[0]}, WorkerLabel: "gpu"}, // beats the topic-wide entry
		{Topic: "t", Partitions: []int32{part[2]}, WorkerLabel: "tpu"},
	}}, nil)
	brokers := newPlacement(&sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_BROKERS}, map[partitionKey]string{
		{"t", part[0]}: "127.0.0.1", {"t", part[1]}: "H4", {"t", part[2]}: "elsewhere", {"t", part[4]}: "h2",
	})
	tests := []struct {
		name     string
		pl       *placement
		pk       placeKey
		workers  []workerInfo
		avoid    []string
		exclude  string
		spill    bool
		want     string
		wantErr  error
		wantWait string
	}{
		{name: "consistent: the top worker", pl: consistent, pk: pk(0), want: "d"},
		{name: "nil placement is consistent", pk: pk(0), want: "d"},
		{name: "consistent: waits for a busy top worker", pl: consistent, pk: pk(4), wantErr: errNoSlot},
		{name: "consistent: spills to the next with a free slot", pl: consistent, pk: pk(4), spill: true, want: "c"},
		{name: "consistent: passes over avoided workers, waits for the next", pl: consistent, pk: pk(0), avoid: []string{"d"}, wantErr: errNoSlot},
		{name: "consistent: avoided workers only when no other has room", pl: consistent, pk: pk(0), avoid: []string{"d", "c", "a"}, spill: true, want: "d"},
		{name: "consistent: a later piece of a split range has a preferred worker of its own", pl: consistent, pk: piece(4, piece4), want: "a"},
		{name: "consistent: never the excluded worker", pl: consistent, pk: pk(0), exclude: "d", spill: true, want: "c"},
		{name: "no workers", pl: consistent, pk: pk(0), workers: []workerInfo{}, wantErr: errNoWorkers},
		{name: "no workers, fixed", pl: fixed, pk: pk(0), workers: []workerInfo{}, wantErr: errNoWorkers},

		{name: "fixed: partition entry, top labelled worker busy", pl: fixed, pk: pk(0), wantErr: errNoSlot},
		{name: "fixed: spills only among labelled workers", pl: fixed, pk: pk(0), spill: true, want: "a"},
		{name: "fixed: topic-wide entry", pl: fixed, pk: pk(1), want: "d"},
		{name: "fixed: the copy finds no other labelled worker with room", pl: fixed, pk: pk(1), exclude: "d", spill: true, wantErr: errNoSlot},
		{name: "fixed: no live worker has the label", pl: fixed, pk: pk(2), spill: true,
			wantWait: fmt.Sprintf(`no live worker has label "tpu" (placement.fixed for t/%d)`, part[2])},
		{name: "fixed: no entry covers the partition", pl: fixed, pk: placeKey{partitionKey{"u", 0}, 0},
			wantWait: "no placement.fixed entry covers u/0"},

		{name: "brokers: consistent among the leader's host", pl: brokers, pk: pk(0), want: "c"},
		{name: "brokers: hosts compare without case", pl: brokers, pk: pk(1), want: "d"},
		{name: "brokers: the copy goes to the leader's host too", pl: brokers, pk: pk(0), exclude: "c", spill: true, want: "a"},
		{name: "brokers: no worker on the leader's host", pl: brokers, pk: pk(2), want: "d"},
		{name: "brokers: leader unknown", pl: brokers, pk: pk(3), want: "d"},
		{name: "brokers: waits for the busy worker on the leader's host", pl: brokers, pk: pk(4), wantErr: errNoSlot},
		{name: "brokers: spills elsewhere when the host is full", pl: brokers, pk: pk(4), spill: true, want: "c"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := workers
			if tc.workers != nil {
				ws = tc.workers
			}
			avoid := map[string]bool{}
			for _, id := range tc.avoid {
				avoid[id] = true
			}
			i, err := tc.pl.choose(tc.pk, ws, avoid, tc.exclude, tc.spill)
			var pw *placementWait
			switch {
			case tc.wantWait != "":
				if !errors.As(err, &pw) || pw.reason != tc.wantWait {
					t.Fatalf("err = %v, want the wait %q", err, tc.wantWait)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("err = %v, want worker %s", err, tc.want)
			case ws[i].id != tc.want:
				t.Fatalf("chose %s, want %s", ws[i].id, tc.want)
			}
		})
	}
}

// TestWorkerLabelsAgreeWithValidation: a label a worker accepts is one a
// job's placement may name, and the other way round.
func TestWorkerLabelsAgreeWithValidation(t *testing.T) {
	if labelRE.String() != worker.LabelPattern {
		t.Fatalf("placement labels %s, worker labels %s: they must be the same rule", labelRE, worker.LabelPattern)
	}
}

// TestBalance: consistent placement with bounded loads gives every worker
// its share of a batch's tasks by slots, keeps a task's worker when the
// batch is the same, and leaves a task with its rendezvous worker when
// that worker has room.
func TestBalance(t *testing.T) {
	keys := func(n int) []placeKey {
		out := make([]placeKey, n)
		for i := range out {
			out[i] = placeKey{partitionKey: partitionKey{"backlog-10m", int32(i)}}
		}
		return out
	}
	two := []liveWorker{{id: "bench-10m-w1", slots: 4}, {id: "bench-10m-w2", slots: 4}}
	tests := []struct {
		name string
		keys []placeKey
		ws   []liveWorker
		want map[string]int
	}{
		{"8 partitions on two equal workers", keys(8), two, map[string]int{"bench-10m-w1": 4, "bench-10m-w2": 4}},
		{"by slots", keys(8), []liveWorker{{id: "a", slots: 2}, {id: "b", slots: 6}}, map[string]int{"a": 2, "b": 6}},
		{"fewer tasks than slots", keys(3), two, nil},
		{"no workers", keys(3), nil, map[string]int{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := balance(tc.keys, tc.ws)
			if again := balance(tc.keys, tc.ws); fmt.Sprint(again) != fmt.Sprint(got) {
				t.Fatalf("balance is not stable: %v then %v", got, again)
			}
			per := map[string]int{}
			for _, id := range got {
				per[id]++
			}
			if tc.want != nil && fmt.Sprint(per) != fmt.Sprint(tc.want) {
				t.Fatalf("tasks per worker %v, want %v", per, tc.want)
			}
			for _, k := range tc.keys {
				id, ok := got[k]
				if len(tc.ws) == 0 {
					continue
				}
				if !ok {
					t.Fatalf("%v has no worker", k)
				}
				// A task on a worker other than its rendezvous one only
				// because that one was full.
				top := tc.ws[0].id
				for _, w := range tc.ws {
					if rendezvous(k, w.id) > rendezvous(k, top) {
						top = w.id
					}
				}
				if ok && id != top && per[top] < (len(tc.keys)*slotsOf(tc.ws, top)+totalSlots(tc.ws)-1)/totalSlots(tc.ws) {
					t.Fatalf("%v went to %s though its worker %s had room", k, id, top)
				}
			}
		})
	}
	// Preferred: the task waits for its balanced worker, and spills.
	pl := &placement{prefer: map[placeKey]string{{partitionKey: partitionKey{"t", 0}}: "b"}}
	ws := []workerInfo{{id: "a", slots: 1, free: 1}, {id: "b", slots: 1, free: 0}}
	if _, err := pl.choose(placeKey{partitionKey: partitionKey{"t", 0}}, ws, nil, "", false); !errors.Is(err, errNoSlot) {
		t.Fatalf("choose = %v, want to wait for the preferred worker b", err)
	}
	if i, err := pl.choose(placeKey{partitionKey: partitionKey{"t", 0}}, ws, nil, "", true); err != nil || ws[i].id != "a" {
		t.Fatalf("choose with spill = %v, %v; want a", i, err)
	}
	ws[1].free = 1
	if i, err := pl.choose(placeKey{partitionKey: partitionKey{"t", 0}}, ws, nil, "", false); err != nil || ws[i].id != "b" {
		t.Fatalf("choose = %v, %v; want the preferred worker b", i, err)
	}
}

func slotsOf(ws []liveWorker, id string) int {
	for _, w := range ws {
		if w.id == id {
			return w.slots
		}
	}
	return 0
}
