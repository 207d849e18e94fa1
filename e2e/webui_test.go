package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/webui"
	"github.com/sluice-stream/sluice/worker"
)

// chromiumPath finds the browser the web UI tests drive. Without one the
// tests skip, except under CI, where scripts/tools.sh installs it and its
// absence is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if ci := os.Getenv("CI"); ci != "" && ci != "false" {
		t.Fatal("chromium not found, and CI is set: scripts/tools.sh chromium installs it")
	}
	t.Skip("chromium not found: install it (scripts/tools.sh chromium) to run the web UI tests")
	return ""
}

// browser is one headless chromium tab; JavaScript exceptions and
// console errors on its pages fail the test at the end.
type browser struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	js  []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // tests run as root, as in CI
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	// The first Run starts the browser and must not have a deadline: the
	// browser lives as long as the context of that call.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	b.ctx = ctx
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.js) > 0 {
			t.Errorf("JavaScript errors on the pages:\n%s", strings.Join(b.js, "\n"))
		}
	})
	return b
}

func (b *browser) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = "exception: " + d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		msg = "console.error:"
		for _, a := range ev.Args {
			msg += " " + string(a.Value) + a.Description
		}
	default:
		return
	}
	b.mu.Lock()
	b.js = append(b.js, msg)
	b.mu.Unlock()
}

// do runs steps with a deadline, failing the test with what was being done.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func evalIn[T any](b *browser, what, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitJS waits until the expression is truthy in the page.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	// An element the page is re-rendering can be missing for a moment: an
	// expression that throws then is not true yet, not a failure.
	expr = "(() => { try { return !!(" + expr + "); } catch (e) { return false; } })()"
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(0))); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// screenshot saves the page to $SLUICE_UI_SCREENSHOTS/name.png when set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("SLUICE_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// produceWave writes n records round-robin over the partitions and adds
// them to ends.
func produceWave(t *testing.T, pr *kgo.Client, topic string, parts int32, n int, ends map[string]int64) {
	t.Helper()
	for i := range n {
		p := int32(i) % parts
		ends[fmt.Sprintf("%s/%d", topic, p)]++
		pr.Produce(context.Background(), &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d", i%13), Value: []byte("v")}, nil)
	}
	if err := pr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func lastBatchID(t *testing.T, tc *testCluster, job string) int64 {
	t.Helper()
	bs, err := tc.Client.Batches(context.Background(), job, 1)
	if err != nil || len(bs) == 0 {
		t.Fatalf("batches of %s: %v (%d)", job, err, len(bs))
	}
	return bs[0].GetId()
}

// TestWebUI drives the web UI in headless chromium against a running
// cluster: the jobs page lists the job, the job page draws its charts and
// shows a new batch as it is committed, without a reload, the workers
// page lists the workers, the stop button stops the job and the resume
// button resumes it.
func TestWebUI(t *testing.T) {
	const topic, job, parts = "clicks", "clicks-per-user", 4
	b := newBrowser(t)
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	ui := httptest.NewServer(webui.New(webui.Config{Jobs: tc.Coord.JobService(), Cluster: tc.Coord}))
	t.Cleanup(func() {
		// The page's event stream stays open: cut it, or Close waits for it.
		ui.CloseClientConnections()
		ui.Close()
	})

	ctx := context.Background()
	pr := tc.producer()
	ends := map[string]int64{}
	spec := countJob(job, tc.Brokers, topic)
	if _, err := tc.Client.Submit(ctx, spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	// A few waves, so the charts have points.
	for i := range 4 {
		produceWave(t, pr, topic, parts, 100*(i+1), ends)
		tc.waitOffsets(job, ends, time.Minute)
	}

	// Jobs page.
	b.do("open the jobs page",
		chromedp.Navigate(ui.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#jobs tr[data-job="`+job+`"]`)),
	)
	state := evalIn[string](b, "read the job's state", `document.querySelector('#jobs tr[data-job="`+job+`"] .state').textContent`)
	if state != "RUNNING" {
		t.Fatalf("jobs page shows state %q, want RUNNING", state)
	}
	b.waitJS("the jobs page shows the job's lag", `document.querySelector('#jobs tr[data-job="`+job+`"] td:nth-child(5)').textContent === '0'`)
	b.screenshot("jobs")

	// Job page: charts and batches.
	last := lastBatchID(t, tc, job)
	b.do("open the job page",
		chromedp.Click(chromedp.CSS(`#jobs tr[data-job="`+job+`"] a`)),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#batches tr[data-batch-id="%d"]`, last))),
	)
	canvases := evalIn[[]map[string]float64](b, "measure the charts",
		`[...document.querySelectorAll('#charts .chart canvas')].map(c => ({w: c.getBoundingClientRect().width, h: c.getBoundingClientRect().height}))`)
	if len(canvases) != 4 {
		t.Fatalf("%d chart canvases, want 4 (input rate, processing time, scheduling delay, total delay)", len(canvases))
	}
	for i, c := range canvases {
		if c["w"] <= 0 || c["h"] <= 0 {
			t.Fatalf("chart %d has size %vx%v", i, c["w"], c["h"])
		}
	}
	b.waitJS("the offsets table shows every partition", fmt.Sprintf(`document.querySelectorAll('#offsets tbody tr').length === %d`, parts))
	if spec := evalIn[string](b, "read the spec", `document.getElementById('spec').textContent`); !strings.Contains(spec, `"name": "`+job+`"`) {
		t.Fatalf("the spec panel does not show the job:\n%s", spec)
	}

	// A new batch appears without a reload: a marker set on the page
	// survives, and the rows after the last one count the new records.
	evalIn[bool](b, "mark the page", `window.__sameDocument = true`)
	produceWave(t, pr, topic, parts, 250, ends)
	tc.waitOffsets(job, ends, time.Minute)
	newLast := lastBatchID(t, tc, job)
	b.waitJS("the new batch's row appears", fmt.Sprintf(`!!document.querySelector('#batches tr[data-batch-id="%d"]')`, newLast))
	if !evalIn[bool](b, "check the page was not reloaded", `window.__sameDocument === true`) {
		t.Fatal("the page was reloaded")
	}
	got := evalIn[int](b, "sum the new batches' records", fmt.Sprintf(
		`[...document.querySelectorAll('#batches tbody tr[data-batch-id]')].filter(r => +r.dataset.batchId > %d).reduce((s, r) => s + +r.children[3].textContent.replace(/,/g, ''), 0)`, last))
	if got != 250 {
		t.Fatalf("the batches after %d show %d records in, want 250", last, got)
	}
	b.waitJS("the table shows every batch", fmt.Sprintf(`document.querySelectorAll('#batches tbody tr[data-batch-id]').length === %d`, newLast))
	b.screenshot("job")

	// Workers page.
	b.do("open the workers page",
		chromedp.Click(chromedp.CSS(`#nav-workers`)),
		chromedp.WaitVisible(chromedp.CSS(`#workers tr[data-worker="w2"]`)),
	)
	row := evalIn[[]string](b, "read worker w1", `[...document.querySelectorAll('#workers tr[data-worker="w1"] td')].map(td => td.textContent)`)
	if len(row) != 6 || row[0] != "w1" || row[3] != "4" || !strings.HasSuffix(row[5], "ago") {
		t.Fatalf("worker w1's row %q; want id w1, 4 slots, a heartbeat age", row)
	}
	b.screenshot("workers")

	// Stop.
	b.do("open the job page again and stop the job",
		chromedp.Click(chromedp.CSS(`#nav-jobs`)),
		chromedp.Click(chromedp.CSS(`#jobs tr[data-job="`+job+`"] a`)),
		chromedp.WaitEnabled(chromedp.CSS(`#stop`)),
		chromedp.Click(chromedp.CSS(`#stop`)),
	)
	b.waitJS("the page shows the job stopped", `document.querySelector('#job-state .state').textContent === 'STOPPED' && document.getElementById('resume').disabled === false`)
	j, err := tc.Client.Job(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
		t.Fatalf("after the stop button the job is %v, want STOPPED", j.GetState())
	}

	// Resume, and the job goes on from its offsets.
	b.do("resume the job", chromedp.Click(chromedp.CSS(`#resume`)))
	b.waitJS("the page shows the job running", `document.querySelector('#job-state .state').textContent === 'RUNNING' && document.getElementById('stop').disabled === false`)
	produceWave(t, pr, topic, parts, 40, ends)
	tc.waitOffsets(job, ends, time.Minute)
}

// uiCall makes one request to the web UI's API with token ("" none) and
// returns the status and the error message of the answer.
func uiCall(t *testing.T, method, url, token string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp.StatusCode, ""
	}
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return resp.StatusCode, e.Error
}

// TestWebUIAuth: with authentication on, the UI's API refuses a request
// without a token (401) and a viewer's stop (403), as gRPC does; in the
// browser the page asks for a token, reads with a viewer's and stops the
// job once given an admin's.
func TestWebUIAuth(t *testing.T) {
	const topic, job = "t", "guarded"
	b := newBrowser(t)
	s := newSecurity(t)
	var authn *auth.Authenticator
	secure := s.coord(t, false)
	opts := clusterOptions{workers: 1, partitions: 2, topics: []string{topic}}
	opts.coord = func(c *coordinator.Config) { secure(c); authn = c.Auth }
	opts.worker = func(w *worker.Config) { w.TLS, w.Token = s.clientTLS(t, ""), s.tokens[w.ID] }
	opts.dial = s.sdk(t, "", s.tokens["alice"])
	tc := newTestCluster(t, opts)
	ui := httptest.NewServer(webui.New(webui.Config{Jobs: tc.Coord.JobService(), Cluster: tc.Coord, Auth: authn}))
	t.Cleanup(func() {
		// The page's event stream stays open: cut it, or Close waits for it.
		ui.CloseClientConnections()
		ui.Close()
	})
	ctx := context.Background()
	if _, err := tc.Client.Submit(ctx, countJob(job, tc.Brokers, topic)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	viewer, admin := s.tokens["bob"], s.tokens["alice"]

	for _, c := range []struct {
		name, method, path, token string
		header                    []string
		code                      int
		msg                       string // in the error message
	}{
		{"jobs without a token", "GET", "/api/jobs", "", nil, 401, "no credentials"},
		{"jobs with a bad token", "GET", "/api/jobs", "not-a-token", nil, 401, "not valid"},
		{"job without a token", "GET", "/api/jobs/" + job, "", nil, 401, "no credentials"},
		{"events without a token", "GET", "/api/jobs/" + job + "/events", "", nil, 401, "no credentials"},
		{"workers without a token", "GET", "/api/workers", "", nil, 401, "no credentials"},
		{"a worker's token", "GET", "/api/jobs", s.tokens["w1"], nil, 403, "ListJobs, which needs role viewer or admin"},
		{"jobs as a viewer", "GET", "/api/jobs", viewer, nil, 200, ""},
		{"job as a viewer", "GET", "/api/jobs/" + job, viewer, nil, 200, ""},
		{"events as a viewer", "GET", "/api/jobs/" + job + "/events", viewer, nil, 200, ""},
		{"stop as a viewer", "POST", "/api/jobs/" + job + "/stop", viewer, nil, 403, `bob (role "viewer") may not call /sluice.v1.JobService/StopJob, which needs role admin`},
		{"resume as a viewer", "POST", "/api/jobs/" + job + "/resume", viewer, nil, 403, "needs role admin"},
		{"stop from another origin", "POST", "/api/jobs/" + job + "/stop", admin, []string{"Origin", "http://127.0.0.2:9"}, 403, "cross-origin request refused"},
		{"a missing job", "GET", "/api/jobs/nope", viewer, nil, 404, `"nope"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, msg := uiCall(t, c.method, ui.URL+c.path, c.token, c.header...)
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Fatalf("%s %s: %d %q; want %d with %q", c.method, c.path, code, msg, c.code, c.msg)
			}
		})
	}
	if j, err := tc.Client.Job(ctx, job); err != nil || j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("after refused stops the job is %v (%v), want RUNNING", j.GetState(), err)
	}

	// In the browser: the page asks for a token, reads with the viewer's,
	// and asks again when the viewer's stop is refused.
	b.do("open the jobs page and give a viewer's token",
		chromedp.Navigate(ui.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#token-dialog[open]`)),
		chromedp.SendKeys(chromedp.CSS(`#token-input`), viewer),
		chromedp.Click(chromedp.CSS(`#token-save`)),
		chromedp.WaitVisible(chromedp.CSS(`#jobs tr[data-job="`+job+`"]`)),
		chromedp.Click(chromedp.CSS(`#jobs tr[data-job="`+job+`"] a`)),
		chromedp.WaitEnabled(chromedp.CSS(`#stop`)),
		chromedp.Click(chromedp.CSS(`#stop`)),
		chromedp.WaitVisible(chromedp.CSS(`#token-dialog[open]`)),
	)
	b.screenshot("token")
	reason := evalIn[string](b, "read why a token is asked", `document.getElementById('token-reason').textContent`)
	if !strings.Contains(reason, "needs role admin") {
		t.Fatalf("the token dialog says %q; want why the viewer may not stop the job", reason)
	}
	b.do("give an admin's token",
		chromedp.SendKeys(chromedp.CSS(`#token-input`), admin),
		chromedp.Click(chromedp.CSS(`#token-save`)),
	)
	b.waitJS("the page shows the job stopped", `document.querySelector('#job-state .state').textContent === 'STOPPED'`)
	if j, err := tc.Client.Job(ctx, job); err != nil || j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
		t.Fatalf("after the admin's stop the job is %v (%v), want STOPPED", j.GetState(), err)
	}
}

// TestWebUIStandby: a standby coordinator's UI reads the jobs from etcd,
// names the leader, lists no workers (they connect to the leader) and
// stops a job.
func TestWebUIStandby(t *testing.T) {
	const topic, job = "t", "on-standby"
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: 2, topics: []string{topic}})
	ctx := context.Background()
	if _, err := tc.Client.Submit(ctx, countJob(job, tc.Brokers, topic)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	cfg := coordinator.DefaultConfig()
	cfg.Etcd = tc.Etcd
	cfg.AdvertiseAddr = freeAddr(t)
	cfg.SessionTTL = 2 * time.Second
	standby, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- standby.Run(sctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("standby: %v", err)
		}
	})
	ui := httptest.NewServer(webui.New(webui.Config{Jobs: standby.JobService(), Cluster: standby}))
	t.Cleanup(func() {
		ui.CloseClientConnections()
		ui.Close()
	})

	var workers struct {
		Cluster struct {
			Leader     bool   `json:"leader"`
			LeaderAddr string `json:"leaderAddr"`
		} `json:"cluster"`
		Workers []json.RawMessage `json:"workers"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for workers.Cluster.LeaderAddr != tc.Addr {
		if time.Now().After(deadline) {
			t.Fatalf("the standby's UI names leader %q, want %s", workers.Cluster.LeaderAddr, tc.Addr)
		}
		resp, err := http.Get(ui.URL + "/api/workers")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&workers)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if workers.Cluster.Leader || len(workers.Workers) != 0 {
		t.Fatalf("the standby's UI says leader=%v with %d workers; want a standby without workers", workers.Cluster.Leader, len(workers.Workers))
	}
	resp, err := http.Get(ui.URL + "/api/jobs")
	if err != nil {
		t.Fatal(err)
	}
	var jobs struct {
		Jobs []struct {
			Job struct {
				Spec struct {
					Name string `json:"name"`
				} `json:"spec"`
				State string `json:"state"`
			} `json:"job"`
		} `json:"jobs"`
	}
	err = json.NewDecoder(resp.Body).Decode(&jobs)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(jobs.Jobs) != 1 || jobs.Jobs[0].Job.Spec.Name != job || jobs.Jobs[0].Job.State != "JOB_STATE_RUNNING" {
		t.Fatalf("the standby's jobs: %d %+v (%v); want %s running", resp.StatusCode, jobs, err, job)
	}
	if code, msg := uiCall(t, "POST", ui.URL+"/api/jobs/"+job+"/stop", ""); code != 200 {
		t.Fatalf("stop on the standby: %d %s", code, msg)
	}
	if j, err := tc.Client.Job(ctx, job); err != nil || j.GetState() != sluicev1.JobState_JOB_STATE_STOPPED {
		t.Fatalf("after a stop on the standby the job is %v (%v), want STOPPED", j.GetState(), err)
	}
}
