package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/client"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// runSplit runs a command and returns its stdout and stderr apart.
func runSplit(t *testing.T, name string, args ...string) (string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// TestDevRetention runs `sluice dev --keep-batches 5 --keep-bytes 1KiB
// --compact-interval 2s`: a job's older batches are pruned by count and by
// the size of their results; `sluice results` says so on stderr (and in
// -o json) while its totals cover exactly the retained batches; and the
// embedded etcd compacts its history.
func TestDevRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	grpcAddr, kafkaAddr, etcdAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	startProc(t, sluiceBin, "dev", "--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--kafka-addr", kafkaAddr,
		"--etcd-addr", etcdAddr, "--etcd-peer-addr", freeAddr(t), "--workers", "1",
		"--keep-batches", "5", "--keep-bytes", "1KiB", "--compact-interval", "2s")
	c, err := client.Dial([]string{grpcAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitServing(t, c)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	first, err := cli.Get(context.Background(), "probe")
	if err != nil {
		t.Fatal(err)
	}

	const job = "pageviews-by-page"
	want := map[string]int64{}
	producePageviews(t, kafkaAddr, 300, 1, want)
	if out := run(t, sluiceBin, "submit", "-f", exampleWith(t, "job.json", kafkaAddr), "--coordinator", grpcAddr); !strings.Contains(out, "submitted") {
		t.Fatalf("sluice submit: %s", out)
	}
	// Rounds of records, each in batches of its own: more batches than kept.
	waitCounts(t, c, job, want, 60*time.Second)
	for round := 2; round <= 9; round++ {
		waitNoLag(t, c, job, 30*time.Second)
		producePageviews(t, kafkaAddr, 300, round, want)
	}
	waitNoLag(t, c, job, 30*time.Second)
	j, err := c.Job(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	last := j.GetLastBatchId()

	// What is retained: at most 5 batches, at most 1 KiB of results.
	batches := batchesAsc(t, c, job)
	all, err := c.Results(context.Background(), job, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	var size int
	retained := map[string]int64{}
	for _, r := range all.GetResults() {
		size += proto.Size(r)
		for _, a := range r.GetAggregates() {
			retained[a.GetKey()] += a.GetCount()
		}
	}
	if len(batches) == 0 || len(batches) > 5 || batches[len(batches)-1].GetId() != last || size > 1024 || last < 9 {
		t.Fatalf("retained batches %s (last committed %d) with %d bytes of results; want the newest, at most 5, at most 1024 bytes",
			batchSummary(batches), last, size)
	}
	oldest := batches[0].GetId()
	t.Logf("last batch %d; retained batches %d..%d, %d results of %d bytes", last, oldest, last, len(all.GetResults()), size)
	if !all.GetPruned() || all.GetOldestRetainedBatchId() != oldest {
		t.Errorf("GetResults: pruned %v, oldest retained %d; want pruned, oldest %d", all.GetPruned(), all.GetOldestRetainedBatchId(), oldest)
	}

	// The CLI: totals over the retained batches, and a notice.
	out, notice := runSplit(t, sluiceBin, "results", job, "--merge", "--coordinator", grpcAddr)
	wantNotice := fmt.Sprintf("note: batches 1 to %d were pruned; only batches from %d on are included", oldest-1, oldest)
	if !strings.Contains(notice, wantNotice) {
		t.Errorf("sluice results --merge stderr %q, want %q", notice, wantNotice)
	}
	for page, n := range retained {
		if !containsFields(out, fmt.Sprintf("%d-%d", oldest, last), page, fmt.Sprint(n)) {
			t.Errorf("sluice results --merge lacks %d-%d %s %d:\n%s", oldest, last, page, n, out)
		}
	}
	if maps.Equal(retained, want) {
		t.Errorf("the retained batches hold every record (%v): nothing was pruned", retained)
	}
	out, _ = runSplit(t, sluiceBin, "results", job, "--merge", "-o", "json", "--coordinator", grpcAddr)
	resp := &sluicev1.GetResultsResponse{}
	if err := protojson.Unmarshal([]byte(out), resp); err != nil {
		t.Fatalf("sluice results -o json: %v\n%s", err, out)
	}
	if !resp.GetPruned() || resp.GetOldestRetainedBatchId() != oldest || len(resp.GetResults()) != len(all.GetResults()) {
		t.Errorf("sluice results -o json: pruned %v oldest %d, %d results; want pruned, %d, %d", resp.GetPruned(),
			resp.GetOldestRetainedBatchId(), len(resp.GetResults()), oldest, len(all.GetResults()))
	}
	// A range within the retained batches is complete: no notice.
	if _, notice := runSplit(t, sluiceBin, "results", job, "--from", fmt.Sprint(oldest), "--coordinator", grpcAddr); notice != "" {
		t.Errorf("sluice results --from %d printed %q", oldest, notice)
	}

	// The embedded etcd compacts what is older than 2s.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cli.Get(context.Background(), "probe", clientv3.WithRev(first.Header.Revision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd still serves revision %d 30s later (err %v): no auto-compaction", first.Header.Revision, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
