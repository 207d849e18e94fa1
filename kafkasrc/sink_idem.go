package kafkasrc

import (
	"container/list"
	"context"
	"fmt"
)

// IdempotentTask is one task's write with an idempotent producer.
type IdempotentTask struct {
	// Job and Incarnation name the task's job; they let Sinks release the
	// producers a job no longer uses.
	Job, Incarnation string
	Cluster          Cluster
	Properties       map[string]string
}

// idemProducer is a cached idempotent producer, shared by the tasks of
// every job that writes to its cluster with its properties.
type idemProducer struct {
	key     string
	prod    *Producer
	users   map[string]bool // jobs
	elem    *list.Element   // in Sinks.idemLRU; nil once dropped
	refs    int             // writes in progress
	dropped bool
}

// WriteIdempotent writes msgs with an idempotent producer and waits until
// every one is acknowledged. Its error is about these messages only: other
// tasks writing with the same producer at the same time get their own.
// Errors that a retry would repeat wrap ErrPermanent.
func (s *Sinks) WriteIdempotent(ctx context.Context, t IdempotentTask, msgs []Message) error {
	w, err := s.OpenIdempotent(t)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Write(ctx, msgs); err != nil {
		return err
	}
	return w.Flush(ctx)
}

// IdemWrite is one task's write with an idempotent producer, in chunks:
// Write produces a chunk without waiting for it, Flush waits for every
// record written, Close releases the producer. Its errors are about its own
// records only. It is not safe for concurrent use.
type IdemWrite struct {
	s      *Sinks
	p      *idemProducer
	tr     *tracker
	closed bool
}

// OpenIdempotent returns a write with the idempotent producer of t's
// cluster and properties; Close it.
func (s *Sinks) OpenIdempotent(t IdempotentTask) (*IdemWrite, error) {
	p, err := s.acquireIdem(t)
	if err != nil {
		return nil, err
	}
	return &IdemWrite{s: s, p: p, tr: newTracker()}, nil
}

// Write queues msgs. It blocks while librdkafka's queue is full
// (queue.buffering.max.messages, queue.buffering.max.kbytes), until
// deliveries make room. A topic that does not exist fails before its
// records are queued; a delivery already failed is returned at once.
func (w *IdemWrite) Write(ctx context.Context, msgs []Message) error {
	if err := w.tr.failure(); err != nil {
		return err
	}
	if err := w.p.prod.checkTopics(ctx, msgs); err != nil {
		return err
	}
	for _, m := range msgs {
		if err := w.p.prod.produce(ctx, w.tr, m); err != nil {
			return err
		}
	}
	return nil
}

// Flush waits until every record written is delivered or failed, and
// returns the first failure (saying how many more failed).
func (w *IdemWrite) Flush(ctx context.Context) error { return w.p.prod.wait(ctx, w.tr) }

// Close releases the producer; records not flushed may still be delivered.
func (w *IdemWrite) Close() {
	if w.closed {
		return
	}
	w.closed = true
	w.s.releaseIdem(w.p)
}

func (s *Sinks) acquireIdem(t IdempotentTask) (*idemProducer, error) {
	key := t.Cluster.Key() + "|" + propsKey(t.Properties)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("idempotent producer for %s: %w", t.Cluster.Bootstrap, ErrClosed)
	}
	s.noteJobLocked(t.Job, jobUse{incarnation: t.Incarnation, target: "idem|" + key})
	if p, ok := s.idem[key]; ok && p.prod.Fatal() == nil {
		p.refs++
		p.users[t.Job] = true
		s.idemLRU.MoveToFront(p.elem)
		return p, nil
	} else if ok {
		s.logger.Warn("replacing an idempotent producer after a fatal error", "bootstrap", t.Cluster.Bootstrap, "error", p.prod.Fatal())
		s.dropIdemLocked(p)
	}
	all := map[string]string{"enable.idempotence": "true", "acks": "all", "queue.buffering.max.kbytes": sinkQueueKBytes}
	for k, v := range t.Properties {
		all[k] = v
	}
	// Creating a client does no network I/O: holding the lock is fine.
	prod, err := NewProducer(t.Cluster, all, s.logger)
	if err != nil {
		return nil, err
	}
	p := &idemProducer{key: key, prod: prod, users: map[string]bool{t.Job: true}, refs: 1}
	p.elem = s.idemLRU.PushFront(p)
	s.idem[key] = p
	for s.idemLRU.Len() > s.capacity {
		s.dropIdemLocked(s.idemLRU.Back().Value.(*idemProducer))
	}
	s.forgetUnusedJobsLocked()
	return p, nil
}

func (s *Sinks) releaseIdem(p *idemProducer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.refs--
	if p.prod.Fatal() != nil && !p.dropped {
		s.dropIdemLocked(p)
		return
	}
	if p.dropped && p.refs == 0 {
		s.closeLater(p.prod.Close)
	}
}

// dropIdemLocked removes p from the cache; it is closed now if idle, else
// when its last write returns.
func (s *Sinks) dropIdemLocked(p *idemProducer) {
	if p.dropped {
		return
	}
	p.dropped = true
	if s.idem[p.key] == p {
		delete(s.idem, p.key)
	}
	s.idemLRU.Remove(p.elem)
	p.elem = nil
	if p.refs == 0 {
		s.closeLater(p.prod.Close)
	}
}
