package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// now is the tests' clock: batch i's time is i seconds before it.
var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func committed(id, in int64) *sluicev1.Batch {
	return &sluicev1.Batch{Id: id, State: sluicev1.BatchState_BATCH_STATE_COMMITTED, Metrics: &sluicev1.BatchMetrics{RecordsIn: in},
		BatchTime: timestamppb.New(now.Add(-time.Duration(id) * time.Second))}
}

func TestInputRate(t *testing.T) {
	planned := &sluicev1.Batch{Id: 1, State: sluicev1.BatchState_BATCH_STATE_PLANNED, BatchTime: timestamppb.New(now)}
	for _, c := range []struct {
		name     string
		batches  []*sluicev1.Batch
		interval time.Duration
		want     float64
	}{
		{"none", nil, time.Second, 0},
		{"one batch in 10 ticks of 1s", []*sluicev1.Batch{committed(1, 500)}, time.Second, 50},
		{"summed over the window", []*sluicev1.Batch{committed(1, 100), committed(2, 300)}, time.Second, 40},
		{"a batch older than 10 ticks is out", []*sluicev1.Batch{committed(3, 100), committed(10, 1000)}, time.Second, 10},
		{"an idle job", []*sluicev1.Batch{committed(30, 5000)}, time.Second, 0},
		{"ticks of 2s", []*sluicev1.Batch{committed(15, 200)}, 2 * time.Second, 10},
		{"a planned batch has read nothing yet", []*sluicev1.Batch{planned, committed(8, 40)}, time.Second, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := inputRate(c.batches, c.interval, now); got != c.want {
				t.Fatalf("inputRate = %v, want %v", got, c.want)
			}
		})
	}
}

func TestBatchIntervalDefault(t *testing.T) {
	if got := batchInterval(&sluicev1.JobSpec{}); got != time.Second {
		t.Fatalf("default interval %v, want 1s", got)
	}
	if got := batchInterval(&sluicev1.JobSpec{BatchInterval: durationpb.New(250 * time.Millisecond)}); got != 250*time.Millisecond {
		t.Fatalf("interval %v, want 250ms", got)
	}
}

func TestTotalLag(t *testing.T) {
	got := totalLag([]*sluicev1.PartitionProgress{{Lag: 5}, {Lag: 0}, {Lag: -3}, {Lag: 7}})
	if got != 12 {
		t.Fatalf("totalLag = %d, want 12 (a negative lag counts as none)", got)
	}
}

func TestHTTPStatus(t *testing.T) {
	for c, want := range map[codes.Code]int{
		codes.NotFound: 404, codes.InvalidArgument: 400, codes.FailedPrecondition: 409, codes.Aborted: 409,
		codes.Unauthenticated: 401, codes.PermissionDenied: 403, codes.Unavailable: 503,
		codes.DeadlineExceeded: 504, codes.Internal: 500, codes.Unknown: 500,
	} {
		if got := httpStatus(c); got != want {
			t.Errorf("httpStatus(%v) = %d, want %d", c, got, want)
		}
	}
}

func TestCrossOrigin(t *testing.T) {
	for _, c := range []struct {
		name   string
		header map[string]string
		want   bool
	}{
		{"no origin (curl)", nil, false},
		{"same origin", map[string]string{"Origin": "http://127.0.0.1:8080"}, false},
		{"another port", map[string]string{"Origin": "http://127.0.0.1:9090"}, true},
		{"another host", map[string]string{"Origin": "http://127.0.0.2:8080"}, true},
		{"fetch metadata says cross-site", map[string]string{"Sec-Fetch-Site": "cross-site"}, true},
		{"an opaque origin", map[string]string{"Origin": "null"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://127.0.0.1:8080/api/jobs/j/stop", nil)
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			if got := crossOrigin(r); got != c.want {
				t.Fatalf("crossOrigin = %v, want %v", got, c.want)
			}
		})
	}
}

// fakeJobs is a JobService with one job, "j", and its batches.
type fakeJobs struct {
	sluicev1.UnimplementedJobServiceServer
	batches []*sluicev1.Batch
	stopped bool
}

var errNoJob = status.Error(codes.NotFound, `job "x": not found`)

func (f *fakeJobs) job() *sluicev1.Job {
	st := sluicev1.JobState_JOB_STATE_RUNNING
	if f.stopped {
		st = sluicev1.JobState_JOB_STATE_STOPPED
	}
	return &sluicev1.Job{Spec: &sluicev1.JobSpec{Name: "j"}, State: st}
}

func (f *fakeJobs) ListJobs(context.Context, *sluicev1.ListJobsRequest) (*sluicev1.ListJobsResponse, error) {
	return &sluicev1.ListJobsResponse{Jobs: []*sluicev1.Job{f.job()}}, nil
}

func (f *fakeJobs) GetJob(_ context.Context, r *sluicev1.GetJobRequest) (*sluicev1.GetJobResponse, error) {
	if r.GetName() != "j" {
		return nil, errNoJob
	}
	return &sluicev1.GetJobResponse{Job: f.job()}, nil
}

func (f *fakeJobs) ListBatches(_ context.Context, r *sluicev1.ListBatchesRequest) (*sluicev1.ListBatchesResponse, error) {
	return &sluicev1.ListBatchesResponse{Batches: f.batches}, nil
}

func (f *fakeJobs) GetOffsets(context.Context, *sluicev1.GetOffsetsRequest) (*sluicev1.GetOffsetsResponse, error) {
	return nil, status.Error(codes.Unavailable, "kafka: unreachable")
}

func (f *fakeJobs) StopJob(context.Context, *sluicev1.StopJobRequest) (*sluicev1.StopJobResponse, error) {
	f.stopped = true
	return &sluicev1.StopJobResponse{Job: f.job()}, nil
}

func (f *fakeJobs) WatchBatches(r *sluicev1.WatchBatchesRequest, s grpc.ServerStreamingServer[sluicev1.WatchBatchesResponse]) error {
	for _, b := range f.batches {
		if b.GetId() > r.GetAfterBatchId() {
			if err := s.Send(&sluicev1.WatchBatchesResponse{Batch: b}); err != nil {
				return err
			}
		}
	}
	return status.Error(codes.Unavailable, "etcd: gone")
}

type fakeCluster struct{}

func (fakeCluster) IsLeader() bool                         { return false }
func (fakeCluster) Leader(context.Context) (string, error) { return "10.0.0.1:7070", nil }
func (fakeCluster) Workers() []coordinator.WorkerStatus {
	return []coordinator.WorkerStatus{{ID: "w1", Slots: 4, Running: 1, LastHeartbeat: time.Now()}}
}

func get(t *testing.T, h http.Handler, method, path string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAPI(t *testing.T) {
	f := &fakeJobs{batches: []*sluicev1.Batch{committed(2, 30), committed(1, 10)}}
	for _, b := range f.batches {
		b.BatchTime = timestamppb.Now()
	}
	h := New(Config{Jobs: f, Cluster: fakeCluster{}})

	w := get(t, h, "GET", "/api/jobs")
	var jobs struct {
		Jobs []struct {
			InputRate float64 `json:"inputRate"`
			Lag       *int64  `json:"lag"`
			LagError  string  `json:"lagError"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &jobs); err != nil || w.Code != 200 || len(jobs.Jobs) != 1 {
		t.Fatalf("GET /api/jobs: %d %s (%v)", w.Code, w.Body, err)
	}
	if j := jobs.Jobs[0]; j.InputRate != 4 || j.Lag != nil || j.LagError != "kafka: unreachable" {
		t.Fatalf("job summary %+v; want 40 records over 10 ticks of 1s (4/s) and the lag's error", j)
	}

	if w := get(t, h, "GET", "/api/jobs/x"); w.Code != 404 || !strings.Contains(w.Body.String(), `job \"x\": not found`) {
		t.Fatalf("GET /api/jobs/x: %d %s", w.Code, w.Body)
	}
	if w := get(t, h, "GET", "/api/jobs/j?limit=0"); w.Code != 400 || !strings.Contains(w.Body.String(), "limit: want a number of batches from 1 to 1000") {
		t.Fatalf("GET limit=0: %d %s", w.Code, w.Body)
	}
	if w := get(t, h, "GET", "/api/jobs/j/events?after=-1"); w.Code != 400 || !strings.Contains(w.Body.String(), "after: want a batch id") {
		t.Fatalf("GET after=-1: %d %s", w.Code, w.Body)
	}
	if w := get(t, h, "GET", "/api/nothing"); w.Code != 404 || !strings.Contains(w.Body.String(), "no such API: GET /api/nothing") {
		t.Fatalf("GET /api/nothing: %d %s", w.Code, w.Body)
	}
	if w := get(t, h, "GET", "/api/workers"); w.Code != 200 || !strings.Contains(w.Body.String(), `"leaderAddr":"10.0.0.1:7070"`) || !strings.Contains(w.Body.String(), `"id":"w1"`) {
		t.Fatalf("GET /api/workers: %d %s", w.Code, w.Body)
	}
	if w := get(t, h, "POST", "/api/jobs/j/stop", "Origin", "http://127.0.0.2:1"); w.Code != 403 || f.stopped {
		t.Fatalf("cross-origin stop: %d %s (stopped %v)", w.Code, w.Body, f.stopped)
	}
	if w := get(t, h, "POST", "/api/jobs/j/stop"); w.Code != 200 || !f.stopped || !strings.Contains(w.Body.String(), "JOB_STATE_STOPPED") {
		t.Fatalf("stop: %d %s", w.Code, w.Body)
	}
	w = get(t, h, "GET", "/")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "uPlot.iife.min.js") || !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("GET /: %d %v", w.Code, w.Header())
	}
	for _, p := range []string{"/static/app.js", "/static/app.css", "/static/vendor/uplot/uPlot.iife.min.js", "/static/vendor/uplot/uPlot.min.css", "/static/vendor/uplot/LICENSE"} {
		if w := get(t, h, "GET", p); w.Code != 200 || w.Body.Len() == 0 {
			t.Errorf("GET %s: %d", p, w.Code)
		}
	}
	if w := get(t, h, "GET", "/static/vendor/"); w.Code != 404 {
		t.Errorf("GET /static/vendor/: %d, want 404 (no listings)", w.Code)
	}
}

// TestEvents: batches after `after` (or Last-Event-ID) arrive as events
// with their id; the stream's end is an error event.
func TestEvents(t *testing.T) {
	f := &fakeJobs{batches: []*sluicev1.Batch{committed(1, 10), committed(2, 30), committed(3, 5)}}
	srv := httptest.NewServer(New(Config{Jobs: f}))
	defer srv.Close()
	for _, c := range []struct {
		name   string
		path   string
		header string
		want   []string
	}{
		{"after", "/api/jobs/j/events?after=1", "", []string{"2", "3"}},
		{"Last-Event-ID", "/api/jobs/j/events", "2", []string{"3"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
			if c.header != "" {
				req.Header.Set("Last-Event-ID", c.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			var ids []string
			var lastEvent, lastData string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "id: "):
					ids = append(ids, strings.TrimPrefix(line, "id: "))
				case strings.HasPrefix(line, "event: "):
					lastEvent = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: "):
					lastData = strings.TrimPrefix(line, "data: ")
				}
			}
			if strings.Join(ids, ",") != strings.Join(c.want, ",") {
				t.Fatalf("event ids %v, want %v", ids, c.want)
			}
			if lastEvent != "error" || !strings.Contains(lastData, "etcd: gone") {
				t.Fatalf("last event %s %s; want the stream's error", lastEvent, lastData)
			}
		})
	}
}

// TestAuthRefusals: the same authenticator and role table as gRPC.
func TestAuthRefusals(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("admin alice admin-token-0123456789\nviewer bob viewer-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{TokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeJobs{}
	h := New(Config{Jobs: f, Auth: a})
	for _, c := range []struct {
		method, path, auth string
		code               int
		msg                string
	}{
		{"GET", "/api/jobs", "", 401, "no credentials"},
		{"GET", "/api/jobs", "Basic Ym9iOng=", 401, "the authorization header must be"},
		{"GET", "/api/jobs", "Bearer viewer-token-0123456789", 200, ""},
		{"GET", "/api/cluster", "Bearer viewer-token-0123456789", 200, ""},
		{"POST", "/api/jobs/j/stop", "Bearer viewer-token-0123456789", 403, "needs role admin"},
		{"POST", "/api/jobs/j/stop", "Bearer admin-token-0123456789", 200, ""},
	} {
		w := get(t, h, c.method, c.path, "Authorization", c.auth)
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.msg) {
			t.Errorf("%s %s with %q: %d %s; want %d with %q", c.method, c.path, c.auth, w.Code, w.Body, c.code, c.msg)
		}
		if c.code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: a 401 without WWW-Authenticate", c.method, c.path)
		}
	}
	// The static files load without a token: the page must load to ask for one.
	if w := get(t, h, "GET", "/"); w.Code != 200 {
		t.Fatalf("GET / with auth on: %d", w.Code)
	}
}

// chanJobs streams the batches sent on its channel.
type chanJobs struct {
	fakeJobs
	batches chan *sluicev1.Batch
}

func (c *chanJobs) WatchBatches(_ *sluicev1.WatchBatchesRequest, s grpc.ServerStreamingServer[sluicev1.WatchBatchesResponse]) error {
	for {
		select {
		case b := <-c.batches:
			if err := s.Send(&sluicev1.WatchBatchesResponse{Batch: b}); err != nil {
				return err
			}
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
}

// TestEventsOutliveReadTimeout: a server's ReadTimeout (the ops listener
// has one) does not end an open page's event stream.
func TestEventsOutliveReadTimeout(t *testing.T) {
	const readTimeout = 50 * time.Millisecond
	jobs := &chanJobs{batches: make(chan *sluicev1.Batch)}
	srv := httptest.NewUnstartedServer(New(Config{Jobs: jobs}))
	srv.Config.ReadTimeout = readTimeout
	srv.Start()
	defer func() {
		srv.CloseClientConnections()
		srv.Close()
	}()
	resp, err := http.Get(srv.URL + "/api/jobs/j/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				return id
			}
		}
		t.Fatalf("the stream ended: %v", sc.Err())
		return ""
	}
	jobs.batches <- committed(1, 1)
	if id := next(); id != "1" {
		t.Fatalf("event id %s, want 1", id)
	}
	// Well past the read timeout, the stream still delivers.
	time.Sleep(6 * readTimeout)
	select {
	case jobs.batches <- committed(2, 1):
	case <-time.After(5 * time.Second):
		t.Fatal("the stream's watch ended past the server's read timeout")
	}
	if id := next(); id != "2" {
		t.Fatalf("event id %s, want 2", id)
	}
}
