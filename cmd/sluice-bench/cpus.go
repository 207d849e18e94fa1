package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// splitCPUs runs broker on CPU 0 and the coordinator and this process on
// the other CPUs, as a broker host and Sluice's hosts would be; the
// workers this process starts next inherit its CPUs. The returned func
// gives every CPU back to the three (workers stopped later keep theirs).
// Go lowers a pinned process's GOMAXPROCS to its CPUs by itself.
func splitCPUs(broker, coord *proc) (restore func(), err error) {
	n := runtime.NumCPU()
	if n < 2 {
		return nil, fmt.Errorf("split CPUs: %d CPU, want 2 or more", n)
	}
	all := cpuRange(0, n)
	restore = func() {
		for _, pid := range []int{broker.pid(), coord.pid(), os.Getpid()} {
			if err := setAffinity(pid, all); err != nil {
				logf("(e) %v", err)
			}
		}
	}
	for _, p := range []struct {
		pid  int
		cpus []int
	}{{broker.pid(), cpuRange(0, 1)}, {coord.pid(), cpuRange(1, n)}, {os.Getpid(), cpuRange(1, n)}} {
		if err := setAffinity(p.pid, p.cpus); err != nil {
			restore()
			return nil, err
		}
	}
	return restore, nil
}

func cpuRange(from, to int) []int {
	var cpus []int
	for c := from; c < to; c++ {
		cpus = append(cpus, c)
	}
	return cpus
}

// setAffinity sets the CPUs of every thread of pid. Threads started
// meanwhile by a thread not yet set would keep the old CPUs: a second pass
// finds them.
func setAffinity(pid int, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for range 2 {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return fmt.Errorf("CPUs of process %d: %w", pid, err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("CPUs of process %d, thread %d: %w", pid, tid, err)
			}
		}
	}
	return nil
}

// cpusOf returns the CPUs pid may run on.
func cpusOf(pid int) ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &set); err != nil {
		return nil, fmt.Errorf("CPUs of process %d: %w", pid, err)
	}
	var cpus []int
	for c := range runtime.NumCPU() {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
