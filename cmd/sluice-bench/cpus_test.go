package main

import (
	"runtime"
	"slices"
	"testing"
)

// TestSplitCPUs: the broker gets CPU 0, the coordinator, this process and
// what it starts next the others; restore gives all of them back.
func TestSplitCPUs(t *testing.T) {
	n := runtime.NumCPU()
	if n < 2 {
		t.Skip("one CPU: nothing to split")
	}
	start := func(name string) *proc {
		p, err := startProc(t.TempDir(), name, "sleep", "30")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.stop)
		return p
	}
	broker, coord := start("broker"), start("coordinator")
	restore, err := splitCPUs(broker, coord)
	if err != nil {
		t.Fatal(err)
	}
	worker := start("worker") // started while split
	all, rest := cpuRange(0, n), cpuRange(1, n)
	check := func(when string, want map[*proc][]int, self []int) {
		t.Helper()
		for p, cpus := range want {
			if got, err := cpusOf(p.pid()); err != nil || !slices.Equal(got, cpus) {
				t.Errorf("%s: %s on CPUs %v (%v), want %v", when, p.name, got, err, cpus)
			}
		}
		if got, err := cpusOf(0); err != nil || !slices.Equal(got, self) {
			t.Errorf("%s: this thread on CPUs %v (%v), want %v", when, got, err, self)
		}
	}
	check("split", map[*proc][]int{broker: {0}, coord: rest, worker: rest}, rest)
	restore()
	check("restored", map[*proc][]int{broker: all, coord: all, worker: rest}, all)
}

func TestCPURange(t *testing.T) {
	if got := cpuRange(1, 4); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("cpuRange(1, 4) = %v", got)
	}
	if got := cpuRange(0, 0); got != nil {
		t.Errorf("cpuRange(0, 0) = %v, want none", got)
	}
}
