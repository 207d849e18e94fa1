package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestTorture is the randomized operations test (Jepsen-style). Separate
// etcd, broker, two coordinator and three worker processes run three jobs
// (two collect jobs that aggregate, exactly-once through etcd, and one
// Kafka sink job, exactly-once through Kafka transactions) while producers
// write a known stream. A seeded generator issues random operations on the
// jobs (submit, update with an equivalent spec, stop, resume, reset to
// earliest, latest, explicit offsets or a time, delete and resubmit) and a
// nemesis breaks processes (kill -9 and restart a coordinator or a worker,
// SIGSTOP and SIGCONT one, take the broker down and up or freeze it).
//
// Then every fault heals, every job runs again until it caught up with the
// sources, and the checker (torture_model_test.go) compares every
// incarnation of every job with the ground truth, the source topics read
// back: lost 0, duplicated 0, wrong 0. On failure it prints the seed, what
// it found and the whole operation history; the processes' logs are kept.
//
// TORTURE_SEED replays a run's sequence of operations (not its timing),
// TORTURE_DURATION sets how long the operations go on (default 60s),
// TORTURE_RATE the records per second written to each source topic (default
// 150), TORTURE_SKIP a comma-separated list of operations to leave out (to
// tell which one a failure needs): update, stop, reset, delete,
// stop-resume, kill, pause, broker-down, broker-pause. scripts/torture.sh
// runs it for longer.
func TestTorture(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	duration := envDuration(t, "TORTURE_DURATION", 60*time.Second)
	rate := 150
	if s := os.Getenv("TORTURE_RATE"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("TORTURE_RATE %q: want records per second per topic, at least 1", s)
		}
		rate = v
	}
	skip := map[string]bool{}
	if s := os.Getenv("TORTURE_SKIP"); s != "" {
		known := map[string]bool{}
		for _, op := range clientOps {
			known[op.name] = true
		}
		for _, f := range nemesisFaults {
			known[f] = true
		}
		for _, op := range strings.Split(s, ",") {
			if !known[op] {
				t.Fatalf("TORTURE_SKIP: unknown operation %q; known: %v", op, slices.Sorted(maps.Keys(known)))
			}
			skip[op] = true
		}
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("TORTURE_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("TORTURE_SEED %q: %v", s, err)
		}
		seed = v
	}
	fmt.Printf("torture: seed %d, duration %s, rate %d/s per topic, skipping %v (TORTURE_SEED=%d replays the operations)\n",
		seed, duration, rate, slices.Sorted(maps.Keys(skip)), seed)
	t.Logf("seed %d", seed)

	logDir, err := os.MkdirTemp("", "sluice-torture-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Printf("torture: seed %d failed; process logs kept in %s\n", seed, logDir)
			return
		}
		os.RemoveAll(logDir)
	})

	tc := newTortureCluster(t, logDir, 2, 3)
	for topic, parts := range sourceParts {
		createTopic(t, tc.brokers, topic, parts)
	}
	createTopic(t, tc.brokers, sinkOut, sinkOutParts)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{tc.etcd}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := cli.Get(ctx, "/sluice/probe")
	if err != nil {
		t.Fatal(err)
	}

	mirror := newSourceMirror()
	var bg sync.WaitGroup
	defer bg.Wait()
	defer cancel()
	bg.Add(1)
	go func() {
		defer bg.Done()
		mirror.run(ctx, tc.brokers, srcA, srcB)
	}()
	prodCtx, stopProducers := context.WithCancel(ctx)
	var producers []*tProducer
	var prodWG sync.WaitGroup
	for _, topic := range []string{srcA, srcB} {
		p := &tProducer{topic: topic, parts: sourceParts[topic], rate: rate, acked: map[int32][]int64{}}
		producers = append(producers, p)
		prodWG.Add(1)
		go func() {
			defer prodWG.Done()
			p.run(prodCtx, tc.brokers)
		}()
	}

	c := (&procCluster{t: t, coords: tc.coords}).client()
	waitServing(t, c)

	h := &history{start: time.Now()}
	gen := newGenerator(rand.New(rand.NewSource(seed)), c, h, tc.brokers, mirror, skip)
	model := newTortureModel("/sluice/", h.start, mirror, gen.resetsAsked)
	progress := make(chan int64, 1)
	bg.Add(1)
	go func() {
		defer bg.Done()
		model.watch(ctx, cli, first.Header.Revision+1, progress)
	}()
	nem := newNemesis(rand.New(rand.NewSource(seed+1)), tc, h, skip)

	// Report everything known when the test fails, wherever it fails.
	done := false
	defer func() {
		if !done {
			t.Logf("seed %d; history:\n%s", seed, h)
			model.mu.Lock()
			t.Logf("anomalies so far: %s", fmtAnomalies(model.anomalies, 200))
			model.mu.Unlock()
		}
	}()

	// The run: client operations here, faults beside them.
	for _, j := range gen.jobs {
		gen.submit("client", j, h.start)
	}
	end := h.start.Add(duration)
	var nemWG sync.WaitGroup
	nemWG.Add(1)
	go func() {
		defer nemWG.Done()
		for time.Now().Before(end) {
			time.Sleep(time.Duration(1000+nem.rng.Intn(2000)) * time.Millisecond)
			if time.Now().Before(end) {
				nem.step()
			}
		}
	}()
	for time.Now().Before(end) {
		time.Sleep(time.Duration(200+gen.rng.Intn(1300)) * time.Millisecond)
		if time.Now().Before(end) {
			gen.step(h.start)
		}
	}
	nemWG.Wait()
	nem.healAll()
	fmt.Printf("torture: operations done after %s; healing and catching up\n", time.Since(h.start).Round(time.Second))

	// Every process up again (a restart that failed is retried here).
	for _, name := range nem.targets() {
		if p := tc.proc(name); p == nil || p.exited() {
			o := h.begin("final", "restart", name, "was not running")
			err := tc.restart(name)
			h.finish(o, err)
			if err != nil {
				t.Fatalf("restart %s: %v", name, err)
			}
		}
	}
	stopProducers()
	prodWG.Wait()
	adm := kadm.NewClient(newKgo(t, tc.brokers))
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	ends, err := mirror.waitEnds(wctx, adm, []string{srcA, srcB})
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	catchUp := 90*time.Second + duration/4
	if err := gen.settle(h.start, time.Now().Add(catchUp)); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, model, gen, c, ends, catchUp)
	syncWatch(t, cli, progress, model)

	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	out, err := readSinkOutput(rctx, tc.brokers)
	rcancel()
	if err != nil {
		model.mu.Lock()
		model.report("sink-b", "wrong", "%v", err)
		model.mu.Unlock()
	}
	if out == nil {
		out = newSinkOutput()
	}
	model.mu.Lock()
	model.drainPending(true)
	model.mu.Unlock()
	for _, k := range tortureJobs {
		if k.sink {
			model.checkSink(k.name, out)
		}
	}
	model.checkIncarnationIDs()
	checkPublicResults(t, model, c, ends)
	checkSinkGroup(t, model, c, adm)
	checkInfra(model, mirror, producers, nem)

	model.mu.Lock()
	defer model.mu.Unlock()
	var incs []string
	nincs := 0
	for _, k := range tortureJobs {
		for _, inc := range model.jobs[k.name].incs {
			nincs++
			incs = append(incs, "  "+inc.String())
		}
	}
	var produced int64
	for _, e := range ends {
		produced += e
	}
	summary := fmt.Sprintf("torture: seed %d, %s: operations %v; faults %v; %d records, %d batches committed, %d collect results checked, %d incarnations, %d sink output records; lost %d, duplicated %d, wrong %d, anomalies %d",
		seed, duration, h.counts(), nem.counts, produced, model.commits, model.checked, nincs, out.records, model.lost, model.dup, model.wrong, len(model.anomalies))
	fmt.Println(summary)
	done = true
	if len(model.anomalies) > 0 || model.lost+model.dup+model.wrong > 0 {
		t.Fatalf("%s\n\nanomalies:\n%s\n\nincarnations:\n%s\n\nseed %d; operation history:\n%s\nprocess logs: %s",
			summary, fmtAnomalies(model.anomalies, 0), strings.Join(incs, "\n"), seed, h, logDir)
	}
	t.Logf("incarnations:\n%s", strings.Join(incs, "\n"))
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s %q: want a positive duration such as 90s or 30m", name, s)
	}
	return d
}

func fmtAnomalies(as []anomaly, limit int) string {
	var b strings.Builder
	for i, a := range as {
		if limit > 0 && i == limit {
			fmt.Fprintf(&b, "  ... and %d more\n", len(as)-limit)
			break
		}
		fmt.Fprintf(&b, "  %8.3fs %-10s %-8s %s\n", a.at.Seconds(), a.kind, a.job, a.msg)
	}
	return b.String()
}

// waitCaughtUp waits until every job runs with its committed offsets at the
// sources' ends, as etcd says.
func waitCaughtUp(t *testing.T, m *tortureModel, gen *generator, c interface {
	Job(context.Context, string) (*sluicev1.Job, error)
}, ends map[tp]int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var behind []string
		m.mu.Lock()
		for _, k := range tortureJobs {
			jm := m.jobs[k.name]
			for _, topic := range k.topics {
				for p := range sourceParts[topic] {
					key := tp{topic, p}
					if jm.offsets == nil || jm.offsets[key] != ends[key] {
						at := int64(-1)
						if jm.offsets != nil {
							at = jm.offsets[key]
						}
						behind = append(behind, fmt.Sprintf("%s at %s %d of %d", k.name, key, at, ends[key]))
					}
				}
			}
		}
		m.mu.Unlock()
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var states []string
			for _, k := range tortureJobs {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				j, err := c.Job(ctx, k.name)
				cancel()
				states = append(states, fmt.Sprintf("%s: %v %q (err %v)", k.name, j.GetState(), j.GetMessage(), err))
			}
			m.mu.Lock()
			m.report("", "lost", "jobs did not catch up within %s of the end: %s; jobs: %s", timeout, strings.Join(behind, ", "), strings.Join(states, "; "))
			m.mu.Unlock()
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// syncWatch waits until the checker applied every etcd write made so far.
func syncWatch(t *testing.T, cli *clientv3.Client, progress <-chan int64, m *tortureModel) {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/sluice/probe")
	if err != nil {
		t.Fatal(err)
	}
	want := resp.Header.Revision
	deadline := time.Now().Add(30 * time.Second)
	for {
		m.mu.Lock()
		at := m.rev
		m.mu.Unlock()
		if at >= want {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = cli.RequestProgress(clientv3.WithRequireLeader(ctx))
		select {
		case r := <-progress:
			if r >= want {
				cancel()
				return
			}
		case <-ctx.Done():
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("the checker's etcd watch is at revision %d, etcd at %d", at, want)
		}
	}
}

// checkPublicResults reads each collect job's results through the public
// API (GetResults with merge) over its last incarnation and compares them
// with the ground truth of everything that incarnation covered.
func checkPublicResults(t *testing.T, m *tortureModel, c interface {
	Results(context.Context, string, int64, int64, bool) (*sluicev1.GetResultsResponse, error)
}, ends map[tp]int64) {
	t.Helper()
	for _, k := range tortureJobs {
		if !k.agg() {
			continue
		}
		m.mu.Lock()
		inc := m.jobs[k.name].cur
		if inc == nil || len(inc.batches) == 0 {
			m.mu.Unlock()
			continue
		}
		start, end, firstID, n := maps.Clone(inc.start), maps.Clone(inc.end), inc.batches[0].id, inc.n
		m.mu.Unlock()
		want := map[string]*aggTruth{}
		for key, from := range start {
			for off := from; off < end[key]; off++ {
				n, _ := m.mirror.get(key, off)
				if n < 0 || !k.keep(n) {
					continue
				}
				addTruth(want, n)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := c.Results(ctx, k.name, firstID, 0, true)
		cancel()
		m.mu.Lock()
		switch {
		case err != nil:
			m.report(k.name, "protocol", "GetResults: %v", err)
		case resp.GetPruned():
			t.Logf("%s: GetResults says batches of the last incarnation were pruned; merged totals not compared", k.name)
		default:
			var diffs []string
			got := map[string]*sluicev1.KeyAggregate{}
			for _, ka := range resp.GetMerged() {
				got[ka.GetKey()] = ka
			}
			for _, key := range slices.Sorted(maps.Keys(want)) {
				w, g := want[key], got[key]
				if g.GetCount() != w.count || (k.sumAmt && (g.GetSum() != float64(w.sum) || g.GetMin() != float64(w.min) || g.GetMax() != float64(w.max))) {
					diffs = append(diffs, fmt.Sprintf("%s: got count %d sum %v, want %d %d", key, g.GetCount(), g.GetSum(), w.count, w.sum))
				}
			}
			for key, g := range got {
				if want[key] == nil && g.GetCount() != 0 {
					diffs = append(diffs, fmt.Sprintf("%s: got count %d, want none", key, g.GetCount()))
				}
			}
			if len(diffs) > 0 {
				m.report(k.name, "wrong", "GetResults merged from batch %d (incarnation %d) differs from the ground truth of %s..%s: %s",
					firstID, n, fmtOffsets(start), fmtOffsets(end), strings.Join(diffs, "; "))
			}
		}
		m.mu.Unlock()
	}
}

// checkSinkGroup compares the Kafka sink job's consumer group offsets with
// its committed offsets, as standard lag tools would read them.
func checkSinkGroup(t *testing.T, m *tortureModel, c interface {
	Job(context.Context, string) (*sluicev1.Job, error)
}, adm *kadm.Client) {
	t.Helper()
	for _, k := range tortureJobs {
		if !k.sink {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		j, err := c.Job(ctx, k.name)
		group := j.GetKafkaGroup()
		if group == "" {
			group = "sluice-" + k.name
		}
		var offs kadm.OffsetResponses
		if err == nil {
			offs, err = adm.FetchOffsets(ctx, group)
		}
		cancel()
		m.mu.Lock()
		jm := m.jobs[k.name]
		switch {
		case errors.Is(err, kerr.GroupIDNotFound) && (jm.cur == nil || jm.cur.kind == "start" && len(jm.cur.batches) == 0):
			// Kafka creates a group with its first offsets: an incarnation
			// that committed no batch yet has none, unless a reset set them.
		case err != nil:
			m.report(k.name, "protocol", "read the group offsets of %s: %v", group, err)
		default:
			for key, want := range m.jobs[k.name].offsets {
				o, ok := offs.Lookup(key.topic, key.part)
				if !ok || o.At != want {
					m.report(k.name, "protocol", "group %s has %s at %d, committed offset %d", group, key, o.At, want)
				}
			}
		}
		m.mu.Unlock()
	}
}

// checkInfra reports faults of the test bed rather than of Sluice: a broker
// that lost acknowledged records, records that are not the known stream, a
// process that could not be restarted.
func checkInfra(m *tortureModel, mirror *sourceMirror, producers []*tProducer, nem *nemesis) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mirror.mu.RLock()
	for _, s := range mirror.corrupt {
		m.report("", "infra", "source: %s", s)
	}
	mirror.mu.RUnlock()
	for _, p := range producers {
		p.mu.Lock()
		for part, acked := range p.acked {
			for off, n := range acked {
				if n < 0 {
					continue
				}
				if got, ok := mirror.get(tp{p.topic, part}, int64(off)); !ok || got != n {
					m.report("", "infra", "the broker lost an acknowledged record: %s/%d offset %d was n %d, reads %d (present %v)", p.topic, part, off, n, got, ok)
					break
				}
			}
		}
		p.mu.Unlock()
	}
	nem.mu.Lock()
	for _, e := range nem.errs {
		m.report("", "infra", "%s", e)
	}
	nem.mu.Unlock()
}
