package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/dev"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// proc is a child process whose output goes to the test log on failure.
type proc struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{} // closed when the process exited (startProcEnv)
	waitErr error
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, name, args...)
}

// interrupt stops the process as Ctrl-C would and waits for it to exit.
func (p *proc) interrupt(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		if p.waitErr != nil {
			t.Fatalf("exit after SIGINT: %v\n%s", p.waitErr, lastLines(p.out.String(), 30))
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGINT")
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
	}
	return string(out)
}

// producePageviews writes n JSON page views to the pageviews topic and
// returns the counts per page of those with ms < 1000 (what the example job
// keeps) and the end offsets.
func producePageviews(t *testing.T, brokers string, n, seed int, want map[string]int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.DefaultProduceTopic("pageviews"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(context.Background(), 4, 1, nil, "pageviews"); err != nil && !strings.Contains(err.Error(), "TOPIC_ALREADY_EXISTS") {
		t.Fatalf("create topic: %v", err)
	}
	rng := rand.New(rand.NewSource(int64(seed)))
	pages := []string{"/", "/search", "/cart", "/checkout", "/help"}
	for i := range n {
		page := pages[rng.Intn(len(pages))]
		ms := rng.Intn(1300)
		if ms < 1000 {
			want[page]++
		}
		cl.Produce(context.Background(), &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, `{"page":%q,"ms":%d}`, page, ms)}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func waitCounts(t *testing.T, c *client.Client, job string, want map[string]int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	got := map[string]int64{}
	for time.Now().Before(deadline) {
		res, err := c.Results(context.Background(), job, 0, 0, true)
		if err == nil {
			got = map[string]int64{}
			for _, a := range res.GetMerged() {
				got[a.GetKey()] = a.GetCount()
			}
			if maps.Equal(got, want) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	j, _ := c.Job(context.Background(), job)
	t.Fatalf("job %s counts %v, want %v (job %v)", job, got, want, j)
}

func grpcurlBin(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../.tmp/bin/grpcurl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("grpcurl is not installed at %s: make test installs it (scripts/tools.sh)", p)
		}
		t.Skipf("grpcurl not installed (run ./scripts/tools.sh grpcurl): %v", err)
	}
	return p
}

// exampleWith returns an example file with the dev default Kafka address
// replaced by the test broker's.
func exampleWith(t *testing.T, name, brokers string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte("127.0.0.1:19092"), []byte(brokers)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDevGrpcurlAndRestart runs `sluice dev` as a child process, submits the
// README's job with the real grpcurl binary, checks the counts exactly with
// the CLI and the SDK, then stops dev with SIGINT, starts it again on the same
// data dir and checks that the job resumed from its committed offsets:
// records of both runs are each counted exactly once.
func TestDevGrpcurlAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	grpcurl := grpcurlBin(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const submitCmd = "grpcurl -plaintext -d @ 127.0.0.1:7070 sluice.v1.JobService/SubmitJob < examples/submit-request.json"
	if !strings.Contains(string(readme), submitCmd) {
		t.Fatalf("README does not show %q", submitCmd)
	}

	dataDir := t.TempDir()
	grpcAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	etcdAddr, peerAddr := freeAddr(t), freeAddr(t)
	devArgs := []string{"dev", "--data-dir", dataDir, "--grpc-addr", grpcAddr, "--kafka-addr", kafkaAddr,
		"--etcd-addr", etcdAddr, "--etcd-peer-addr", peerAddr, "--workers", "2"}
	d := startProc(t, sluiceBin, devArgs...)
	c, err := client.Dial([]string{grpcAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitServing(t, c)

	want := map[string]int64{}
	producePageviews(t, kafkaAddr, 5000, 1, want)

	req := exampleWith(t, "submit-request.json", kafkaAddr)
	cmd := exec.Command(grpcurl, "-plaintext", "-d", "@", grpcAddr, "sluice.v1.JobService/SubmitJob")
	in, err := os.Open(req)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd.Stdin = in
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"JOB_STATE_RUNNING"`) {
		t.Fatalf("grpcurl SubmitJob: %v\n%s", err, out)
	}
	const job = "pageviews-by-page"
	waitCounts(t, c, job, want, 60*time.Second)
	// The counts can be complete before the last batch commits when its
	// records are all filtered out: wait for the offsets too.
	waitNoLag(t, c, job, 30*time.Second)

	// The banner's commands work as printed, from the working directory.
	printed := 0
	for _, line := range strings.Split(d.out.String(), "\n") {
		if line = strings.TrimSpace(line); strings.Contains(line, " jobs --coordinator ") {
			printed++
			if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil || !strings.Contains(string(out), job) {
				t.Errorf("the banner's %q: %v\n%s", line, err, out)
			}
		}
	}
	if printed != 1 {
		t.Errorf("the banner shows %d sluice jobs commands, want 1:\n%s", printed, d.out.String())
	}

	// The CLI shows the same numbers.
	jobs := run(t, sluiceBin, "jobs", "--coordinator", grpcAddr)
	if !strings.Contains(jobs, job) || !strings.Contains(jobs, "running") {
		t.Errorf("sluice jobs:\n%s", jobs)
	}
	results := run(t, sluiceBin, "results", job, "--merge", "--coordinator", grpcAddr)
	for page, n := range want {
		if !containsFields(results, page, fmt.Sprint(n)) {
			t.Errorf("sluice results --merge lacks %s=%d:\n%s", page, n, results)
		}
	}
	batches := run(t, sluiceBin, "batches", job, "--ranges", "--coordinator", grpcAddr)
	if !strings.Contains(batches, "committed") || !strings.Contains(batches, "pageviews/0") {
		t.Errorf("sluice batches:\n%s", batches)
	}
	// protojson varies its whitespace on purpose: parse, do not match text.
	offsets := &sluicev1.GetOffsetsResponse{}
	if err := protojson.Unmarshal([]byte(run(t, sluiceBin, "offsets", job, "-o", "json", "--coordinator", grpcAddr)), offsets); err != nil {
		t.Fatalf("sluice offsets -o json: %v", err)
	}
	for _, p := range offsets.GetPartitions() {
		if p.GetLag() != 0 || p.GetLatest() != p.GetCommitted() {
			t.Errorf("sluice offsets: %s/%d committed %d latest %d lag %d, want no lag", p.GetTopic(), p.GetPartition(), p.GetCommitted(), p.GetLatest(), p.GetLag())
		}
	}
	if len(offsets.GetPartitions()) != 4 {
		t.Errorf("sluice offsets lists %d partitions, want 4", len(offsets.GetPartitions()))
	}

	// Restart on the same data dir: the job resumes where it committed.
	last, err := c.Job(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	d.interrupt(t)
	startProc(t, sluiceBin, devArgs...)
	waitServing(t, c)
	producePageviews(t, kafkaAddr, 3000, 2, want)
	waitCounts(t, c, job, want, 60*time.Second)
	again, err := c.Job(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetLastBatchId() <= last.GetLastBatchId() {
		t.Errorf("last batch id after restart = %d, want above %d", again.GetLastBatchId(), last.GetLastBatchId())
	}
}

func waitNoLag(t *testing.T, c *client.Client, job string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Offsets(context.Background(), job)
		done := err == nil && len(resp.GetPartitions()) > 0
		for _, p := range resp.GetPartitions() {
			done = done && p.GetLag() == 0
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still lags: %v %v", job, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsFields(text string, fields ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		ok := true
		for _, want := range fields {
			found := false
			for _, x := range f {
				if x == want {
					found = true
				}
			}
			ok = ok && found
		}
		if ok {
			return true
		}
	}
	return false
}

func waitServing(t *testing.T, c *client.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Jobs(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator not serving: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSeparateProcesses runs `sluice coordinator` and two `sluice worker`
// processes against an etcd and a broker, submits examples/job.json with
// `sluice submit -f`, and runs the README's SDK example program.
func TestSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx := context.Background()
	etcdAddr, peerAddr := freeAddr(t), freeAddr(t)
	e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: t.TempDir(), ClientAddr: etcdAddr, PeerAddr: peerAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, err := dev.StartKafka(dev.KafkaConfig{Addr: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	brokers := k.ListenAddrs()[0]
	grpcAddr := freeAddr(t)
	startProc(t, sluiceBin, "coordinator", "--etcd-endpoints", etcdAddr, "--grpc-addr", grpcAddr)
	for i := range 2 {
		startProc(t, sluiceBin, "worker", "--coordinator", grpcAddr, "--id", fmt.Sprintf("proc-worker-%d", i))
	}
	c, err := client.Dial([]string{grpcAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitServing(t, c)

	want := map[string]int64{}
	producePageviews(t, brokers, 4000, 3, want)
	out := run(t, sluiceBin, "submit", "-f", exampleWith(t, "job.json", brokers), "--coordinator", grpcAddr)
	if !strings.Contains(out, "job pageviews-by-page submitted") {
		t.Fatalf("sluice submit: %s", out)
	}
	waitCounts(t, c, "pageviews-by-page", want, 60*time.Second)

	// The README's SDK example, as a program.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../examples/sdk/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), string(src)) {
		t.Errorf("README does not include examples/sdk/main.go verbatim")
	}
	sdkOut := run(t, "go", "run", "../examples/sdk", "-coordinator", grpcAddr, "-bootstrap", brokers, "-records", "4000")
	for page, n := range want {
		if !containsFields(sdkOut, page, fmt.Sprint(n)) {
			t.Errorf("SDK example output lacks %s %d:\n%s", page, n, sdkOut)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writing child process and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
