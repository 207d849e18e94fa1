package worker

import (
	"context"
	"testing"
	"time"
)

func TestTaskSetCancelAndDuplicates(t *testing.T) {
	s := newTaskSet(1)
	ctx1, ok := s.start(context.Background(), 1)
	if !ok {
		t.Fatal("start 1 refused")
	}
	if _, ok := s.start(context.Background(), 1); ok {
		t.Error("a duplicate dispatch id was started twice")
	}
	ctx2, _ := s.start(context.Background(), 2)
	if s.len() != 2 {
		t.Errorf("len = %d, want 2", s.len())
	}
	s.cancel(1)
	if ctx1.Err() == nil || !s.cancelled(1) {
		t.Error("cancel did not reach task 1")
	}
	if ctx2.Err() != nil || s.cancelled(2) {
		t.Error("cancel of task 1 reached task 2")
	}
	s.cancel(99) // unknown: ignored

	// One slot: task 2 waits for task 1's, and gives up when cancelled.
	if !s.acquire(ctx2) {
		t.Fatal("first acquire failed")
	}
	waiting, stop := context.WithCancel(context.Background())
	got := make(chan bool, 1)
	go func() { got <- s.acquire(waiting) }()
	select {
	case <-got:
		t.Fatal("acquired a second slot of one")
	case <-time.After(50 * time.Millisecond):
	}
	stop()
	if <-got {
		t.Error("acquire succeeded after its context ended")
	}
	s.releaseSlot()

	s.done(1)
	s.done(2)
	if s.len() != 0 {
		t.Errorf("len = %d after done, want 0", s.len())
	}
	s.wait()
}
