package coordinator

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/sluice-stream/sluice/jobspec"
)

// maxWorkerProcessors bounds the processors a worker may register.
const maxWorkerProcessors = 1024

// checkWorkerProcessors says what is wrong with the processors a worker
// registers, or nil.
func checkWorkerProcessors(names []string) error {
	if len(names) > maxWorkerProcessors {
		return fmt.Errorf("%d processors: at most %d", len(names), maxWorkerProcessors)
	}
	for _, n := range names {
		if err := jobspec.ValidateProcessorName(n); err != nil {
			return err
		}
	}
	return nil
}

// sortedNames is names sorted, without duplicates, in a new slice.
func sortedNames(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}

// hasAll reports whether sorted have holds every name of sorted want.
func hasAll(have, want []string) bool {
	i := 0
	for _, w := range want {
		for i < len(have) && have[i] < w {
			i++
		}
		if i == len(have) || have[i] != w {
			return false
		}
	}
	return true
}

// choose returns the index in ws of the worker to run a task of k (see
// chooseAmong), among the workers that have every processor the job calls.
// While none has, the task waits with a *placementWait naming the
// processors missing.
func (p *placement) choose(k placeKey, ws []workerInfo, avoid map[string]bool, exclude string, spill bool) (int, error) {
	if p == nil || len(p.processors) == 0 || len(ws) == 0 {
		return p.chooseAmong(k, ws, avoid, exclude, spill)
	}
	var (
		eligible []workerInfo
		index    []int // in ws, of each eligible worker
	)
	for i := range ws {
		if hasAll(ws[i].processors, p.processors) {
			eligible = append(eligible, ws[i])
			index = append(index, i)
		}
	}
	if len(eligible) == 0 {
		return -1, &placementWait{p.processorWait(ws)}
	}
	i, err := p.chooseAmong(k, eligible, avoid, exclude, spill)
	if err != nil {
		return -1, err
	}
	return index[i], nil
}

// processorWait says why no worker of ws can run the job: the processors
// that no worker has, or that none has them all.
func (p *placement) processorWait(ws []workerInfo) string {
	var missing []string
	for _, name := range p.processors {
		found := false
		for i := range ws {
			if _, ok := slices.BinarySearch(ws[i].processors, name); ok {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, fmt.Sprintf("%q", name))
		}
	}
	switch len(missing) {
	case 0:
		return fmt.Sprintf("waiting for a worker with all of processors %s: no live worker has them all", quoteAll(p.processors))
	case 1:
		return "waiting for a worker with processor " + missing[0]
	default:
		return "waiting for a worker with processors " + strings.Join(missing, ", ")
	}
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// liveWorkersWith is liveWorkers restricted to the workers that have every
// processor of names (sorted).
func (d *dispatcher) liveWorkersWith(names []string) []liveWorker {
	if len(names) == 0 {
		return d.liveWorkers()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var ws []liveWorker
	for _, w := range d.workers {
		if w.alive() && hasAll(w.processors, names) {
			ws = append(ws, liveWorker{id: w.id, slots: w.slots})
		}
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].id < ws[j].id })
	return ws
}
