package webui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// events streams a job's newly committed batches as server-sent events
// ("event: batch", the id is the batch id, the data the batch's JSON), fed
// by the JobService's WatchBatches. `after` (or the Last-Event-ID header of
// a reconnecting client) resumes after that batch; without it only batches
// committed from now on are sent.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.authorize(w, r, methodWatch)
	if !ok {
		return
	}
	name := r.PathValue("name")
	after, err := afterBatch(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// A missing job is a 404 before the stream starts, not an event.
	if _, err := s.cfg.Jobs.GetJob(ctx, &sluicev1.GetJobRequest{Name: name}); err != nil {
		writeRPCError(w, err)
		return
	}
	rc := http.NewResponseController(w)
	// The stream outlives any write timeout the server has.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st := &sseStream{ctx: ctx, w: w, rc: rc}
	if err := st.comment("watching " + name); err != nil {
		return
	}

	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(s.cfg.KeepAlive)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if st.comment("keep-alive") != nil {
					return
				}
			}
		}
	}()
	err = s.cfg.Jobs.WatchBatches(&sluicev1.WatchBatchesRequest{Job: name, AfterBatchId: after}, st)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("batch event stream ended", "job", name, "error", err)
		_ = st.event("error", "", []byte(strconv.Quote(err.Error())))
	}
}

func afterBatch(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("after")
	if v == "" {
		v = r.Header.Get("Last-Event-ID")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("after: want a batch id (0 or more), got %q", v)
	}
	return n, nil
}

// sseStream is the WatchBatches server stream of one HTTP response: each
// batch becomes an event. Writes are serialized with the keep-alives.
type sseStream struct {
	ctx context.Context
	mu  sync.Mutex
	w   io.Writer
	rc  *http.ResponseController
}

func (s *sseStream) Send(m *sluicev1.WatchBatchesResponse) error {
	b := m.GetBatch()
	return s.event("batch", strconv.FormatInt(b.GetId(), 10), pj(b))
}

// event writes one event; data must be one line (compact JSON is).
func (s *sseStream) event(typ, id string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != "" {
		if _, err := fmt.Fprintf(s.w, "id: %s\n", id); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", typ, data); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sseStream) comment(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sseStream) Context() context.Context { return s.ctx }

// The rest of grpc.ServerStream: an HTTP response has no gRPC headers or
// trailers, and WatchBatches only sends.
func (s *sseStream) SetHeader(metadata.MD) error  { return nil }
func (s *sseStream) SendHeader(metadata.MD) error { return nil }
func (s *sseStream) SetTrailer(metadata.MD)       {}
func (s *sseStream) SendMsg(m any) error {
	resp, ok := m.(*sluicev1.WatchBatchesResponse)
	if !ok {
		return fmt.Errorf("webui: cannot send a %T as an event", m)
	}
	return s.Send(resp)
}
func (s *sseStream) RecvMsg(any) error { return io.EOF }
