package worker

import (
	"context"
	"sync"
)

// taskSet is the tasks of one session by dispatch id, so that a cancel from
// the coordinator reaches them, and the slots they take turns on.
type taskSet struct {
	slots chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	running map[uint64]*runningTask
}

type runningTask struct {
	cancel    context.CancelFunc
	cancelled bool
}

func newTaskSet(slots int) *taskSet {
	return &taskSet{slots: make(chan struct{}, slots), running: map[uint64]*runningTask{}}
}

// start registers a task and returns its context, or false if a task with
// the same dispatch id runs already.
func (s *taskSet) start(ctx context.Context, id uint64) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.running[id]; ok {
		return nil, false
	}
	tctx, cancel := context.WithCancel(ctx)
	s.running[id] = &runningTask{cancel: cancel}
	s.wg.Add(1)
	return tctx, true
}

// done forgets a finished task.
func (s *taskSet) done(id uint64) {
	s.mu.Lock()
	if t, ok := s.running[id]; ok {
		t.cancel()
		delete(s.running, id)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// cancel stops a task the coordinator no longer wants.
func (s *taskSet) cancel(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.running[id]; ok {
		t.cancelled = true
		t.cancel()
	}
}

// cancelled reports whether the coordinator cancelled the task.
func (s *taskSet) cancelled(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.running[id]
	return ok && t.cancelled
}

// acquire waits for a free slot; false if ctx ended first.
func (s *taskSet) acquire(ctx context.Context) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *taskSet) releaseSlot() { <-s.slots }

func (s *taskSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running)
}

// wait returns when every task has finished.
func (s *taskSet) wait() { s.wg.Wait() }
