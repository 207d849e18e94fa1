package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/worker"
)

// scrape reads addr's /metrics with the official text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s: %s", addr, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the metrics of %s: %v", addr, err)
	}
	return mfs
}

// get returns the status code and body of addr's path.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// family returns the family name of type typ, failing the test if it is
// missing or of another type.
func family(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType) *dto.MetricFamily {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	if mf.GetType() != typ {
		t.Fatalf("metric %s is a %v, want a %v", name, mf.GetType(), typ)
	}
	return mf
}

// value is the value of the series of name whose labels include labels
// (pairs of name and value); ok is false without one.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf, found := mfs[name]
	if !found {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func mustValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := value(mfs, name, labels...)
	if !ok {
		t.Fatalf("no series of %s with labels %v", name, labels)
	}
	return v
}

// waitHTTP waits until addr's path answers.
func waitHTTP(t *testing.T, addr, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + path)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%s does not answer: %v", addr, path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady waits until addr's /readyz answers 200: a process starting
// (a standby joining the election) is not ready at once.
func waitReady(t *testing.T, addr, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, addr, "/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /readyz = %d %q, want 200", what, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsEndpoints scrapes a leading coordinator, a standby and the
// workers over real HTTP, with the official text parser: the metrics have
// their names and types, the job's records in equal the records produced,
// leader is 1 on the leader and 0 on the standby, slots equal --slots;
// /healthz answers 200 and /readyz 200 where the process can work and 503
// on a worker with no coordinator. A deleted job's series go away.
func TestMetricsEndpoints(t *testing.T) {
	const topic, parts, slots = "metered", 4, 3
	coordHTTP := freeAddr(t)
	workerHTTP := map[string]string{"w1": freeAddr(t), "w2": freeAddr(t)}
	tc := newTestCluster(t, clusterOptions{workers: 2, partitions: parts, topics: []string{topic},
		coord: func(c *coordinator.Config) { c.HTTPAddr = coordHTTP },
		worker: func(c *worker.Config) {
			c.HTTPAddr = workerHTTP[c.ID]
			c.Slots = slots
		},
	})
	pr := tc.producer()
	ends := map[string]int64{}
	var recs []*kgo.Record
	const n = 2000
	for i := range n {
		p := int32(i % parts)
		recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: []byte(fmt.Sprintf("k%d", i%13)), Value: []byte("v")})
		ends[fmt.Sprintf("%s/%d", topic, p)]++
	}
	if err := pr.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	spec := countJob("metered-job", tc.Brokers, topic)
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	tc.waitOffsets(spec.GetName(), ends, 60*time.Second)

	// The leader.
	waitHTTP(t, coordHTTP, "/healthz")
	if code, body := get(t, coordHTTP, "/healthz"); code != http.StatusOK {
		t.Errorf("leader /healthz = %d %q, want 200", code, body)
	}
	if code, body := get(t, coordHTTP, "/readyz"); code != http.StatusOK {
		t.Errorf("leader /readyz = %d %q, want 200", code, body)
	}
	job := []string{"job", spec.GetName()}
	// The lag is measured when a batch is planned: the batch after the
	// last records sees none left. The job can catch up on one worker's
	// slots before the second has connected (it did once in CI, 0.8 s
	// into the test), so the scrape also waits for both workers.
	deadline := time.Now().Add(10 * time.Second)
	var mfs map[string]*dto.MetricFamily
	for {
		mfs = scrape(t, coordHTTP)
		lag, ok := value(mfs, "sluice_job_lag_records", job...)
		workers, _ := value(mfs, "sluice_coordinator_workers_connected")
		if ok && lag == 0 && workers == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice_job_lag_records of the job = %v (found %v), want 0 once it caught up; workers connected %v, want 2", lag, ok, workers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	family(t, mfs, "sluice_coordinator_leader", dto.MetricType_GAUGE)
	if v := mustValue(t, mfs, "sluice_coordinator_leader"); v != 1 {
		t.Errorf("sluice_coordinator_leader on the leader = %v, want 1", v)
	}
	if v := mustValue(t, mfs, "sluice_coordinator_workers_connected"); v != 2 {
		t.Errorf("sluice_coordinator_workers_connected = %v, want 2", v)
	}
	for name, typ := range map[string]dto.MetricType{
		"sluice_job_records_in_total":               dto.MetricType_COUNTER,
		"sluice_job_records_out_total":              dto.MetricType_COUNTER,
		"sluice_job_records_failed_total":           dto.MetricType_COUNTER,
		"sluice_job_batches_committed_total":        dto.MetricType_COUNTER,
		"sluice_job_batch_processing_seconds":       dto.MetricType_HISTOGRAM,
		"sluice_job_batch_scheduling_delay_seconds": dto.MetricType_HISTOGRAM,
		"sluice_job_batch_total_delay_seconds":      dto.MetricType_HISTOGRAM,
		"sluice_job_etcd_commit_seconds":            dto.MetricType_HISTOGRAM,
		"sluice_job_lag_records":                    dto.MetricType_GAUGE,
		"sluice_job_partition_lag_records":          dto.MetricType_GAUGE,
		"sluice_job_rate_cap_records_per_second":    dto.MetricType_GAUGE,
		"sluice_job_task_attempts_total":            dto.MetricType_COUNTER,
		"grpc_server_handled_total":                 dto.MetricType_COUNTER,
		"grpc_server_handling_seconds":              dto.MetricType_HISTOGRAM,
		"go_goroutines":                             dto.MetricType_GAUGE,
	} {
		family(t, mfs, name, typ)
	}
	if v := mustValue(t, mfs, "sluice_job_records_in_total", job...); v != n {
		t.Errorf("sluice_job_records_in_total = %v, want the %d records produced", v, n)
	}
	if v := mustValue(t, mfs, "sluice_job_records_out_total", job...); v != n {
		t.Errorf("sluice_job_records_out_total = %v, want %d (the job filters nothing)", v, n)
	}
	batches := mustValue(t, mfs, "sluice_job_batches_committed_total", job...)
	if batches <= 0 {
		t.Errorf("sluice_job_batches_committed_total = %v, want > 0", batches)
	}
	if v := mustValue(t, mfs, "sluice_job_batch_processing_seconds", job...); v != batches {
		t.Errorf("sluice_job_batch_processing_seconds has %v observations, want one per committed batch (%v)", v, batches)
	}
	if v := mustValue(t, mfs, "sluice_job_etcd_commit_seconds", job...); v < batches {
		t.Errorf("sluice_job_etcd_commit_seconds has %v observations, want at least one per committed batch (%v)", v, batches)
	}
	if v := mustValue(t, mfs, "sluice_job_task_attempts_total", job...); v < batches {
		t.Errorf("sluice_job_task_attempts_total = %v, want at least one per batch (%v)", v, batches)
	}
	for p := range parts {
		if v := mustValue(t, mfs, "sluice_job_partition_lag_records", "job", spec.GetName(), "topic", topic, "partition", fmt.Sprint(p)); v != 0 {
			t.Errorf("lag of %s/%d = %v, want 0", topic, p, v)
		}
	}
	if v := mustValue(t, mfs, "grpc_server_handled_total", "grpc_method", "SubmitJob", "grpc_code", "OK"); v != 1 {
		t.Errorf("grpc_server_handled_total of SubmitJob OK = %v, want 1", v)
	}

	// The workers.
	var ok float64
	for id, addr := range workerHTTP {
		if code, body := get(t, addr, "/readyz"); code != http.StatusOK {
			t.Errorf("worker %s /readyz = %d %q, want 200", id, code, body)
		}
		wm := scrape(t, addr)
		family(t, wm, "sluice_worker_slots", dto.MetricType_GAUGE)
		family(t, wm, "sluice_worker_slots_busy", dto.MetricType_GAUGE)
		family(t, wm, "sluice_worker_tasks_total", dto.MetricType_COUNTER)
		family(t, wm, "sluice_worker_consumer_cache_entries", dto.MetricType_GAUGE)
		family(t, wm, "sluice_worker_consumer_cache_prefetch_bytes", dto.MetricType_GAUGE)
		family(t, wm, "sluice_worker_task_seconds", dto.MetricType_HISTOGRAM)
		if v := mustValue(t, wm, "sluice_worker_slots"); v != slots {
			t.Errorf("worker %s sluice_worker_slots = %v, want --slots %d", id, v, slots)
		}
		if v := mustValue(t, wm, "sluice_worker_connected"); v != 1 {
			t.Errorf("worker %s sluice_worker_connected = %v, want 1", id, v)
		}
		ok += mustValue(t, wm, "sluice_worker_tasks_total", "outcome", "ok")
	}
	if attempts := mustValue(t, mfs, "sluice_job_task_attempts_total", job...); ok > attempts || ok < batches {
		t.Errorf("the workers ran %v tasks ok; the coordinator dispatched %v over %v batches", ok, attempts, batches)
	}

	// A standby on the same etcd.
	standbyHTTP := freeAddr(t)
	scfg := coordinator.DefaultConfig()
	scfg.Etcd, scfg.AdvertiseAddr, scfg.HTTPAddr = tc.Etcd, freeAddr(t), standbyHTTP
	standby, err := coordinator.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopStandby := context.WithCancel(context.Background())
	standbyDone := make(chan error, 1)
	go func() { standbyDone <- standby.Run(sctx) }()
	t.Cleanup(func() {
		stopStandby()
		if err := <-standbyDone; err != nil {
			t.Errorf("standby: %v", err)
		}
	})
	waitHTTP(t, standbyHTTP, "/healthz")
	waitReady(t, standbyHTTP, "the standby, which sees the leader,")
	sm := scrape(t, standbyHTTP)
	if v := mustValue(t, sm, "sluice_coordinator_leader"); v != 0 {
		t.Errorf("sluice_coordinator_leader on the standby = %v, want 0", v)
	}
	if _, found := value(sm, "sluice_job_records_in_total", job...); found {
		t.Errorf("the standby exports series of a job it does not run")
	}

	// A worker with no coordinator is alive but not ready.
	loneHTTP := freeAddr(t)
	wcfg := worker.DefaultConfig()
	wcfg.Coordinators, wcfg.ID, wcfg.HTTPAddr = []string{freeAddr(t)}, "lonely", loneHTTP
	lone, err := worker.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLone := context.WithCancel(context.Background())
	loneDone := make(chan error, 1)
	go func() { loneDone <- lone.Run(lctx) }()
	t.Cleanup(func() {
		stopLone()
		if err := <-loneDone; err != nil {
			t.Errorf("lone worker: %v", err)
		}
	})
	waitHTTP(t, loneHTTP, "/healthz")
	if code, body := get(t, loneHTTP, "/healthz"); code != http.StatusOK {
		t.Errorf("lone worker /healthz = %d %q, want 200", code, body)
	}
	if code, body := get(t, loneHTTP, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to a coordinator") {
		t.Errorf("lone worker /readyz = %d %q, want 503 saying it is not connected to a coordinator", code, body)
	}
	if v := mustValue(t, scrape(t, loneHTTP), "sluice_worker_connected"); v != 0 {
		t.Errorf("lone worker sluice_worker_connected = %v, want 0", v)
	}

	// Deleting the job removes its series.
	if err := tc.Client.Delete(context.Background(), spec.GetName()); err != nil {
		t.Fatalf("delete: %v", err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		mfs = scrape(t, coordHTTP)
		_, in := value(mfs, "sluice_job_records_in_total", job...)
		_, lag := value(mfs, "sluice_job_partition_lag_records", job...)
		if !in && !lag {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted job's series are still exported (records in %v, partition lag %v)", in, lag)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLogFormatJSON: a coordinator run with --log-format json writes one
// JSON object per line, with hclog's @level and @message; its metrics
// listener serves --http-addr.
func TestLogFormatJSON(t *testing.T) {
	tc := newTestCluster(t, clusterOptions{workers: 1})
	httpAddr := freeAddr(t)
	p := startProc(t, sluiceBin, "coordinator", "--etcd-endpoints", tc.EtcdURL, "--grpc-addr", freeAddr(t),
		"--http-addr", httpAddr, "--log-format", "json", "--log-level", "debug")
	p.waitOutput(t, "campaigning for leadership", 20*time.Second)
	waitHTTP(t, httpAddr, "/healthz")
	waitReady(t, httpAddr, "the standby process")
	if v := mustValue(t, scrape(t, httpAddr), "sluice_coordinator_leader"); v != 0 {
		t.Errorf("sluice_coordinator_leader of the standby process = %v, want 0", v)
	}
	p.interrupt(t)
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		lines++
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d is not a JSON object: %v\n%s", lines, err, line)
		}
		if obj["@level"] == nil || obj["@message"] == nil {
			t.Errorf("line %d has no @level or @message: %s", lines, line)
		}
	}
	if lines < 2 {
		t.Fatalf("%d log lines, want several:\n%s", lines, p.out.String())
	}
	t.Logf("%d JSON log lines", lines)
}

// TestLogFormatRefused: a wrong --log-format is refused, naming the flag.
func TestLogFormatRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	out := runFail(t, nil, sluiceBin, "worker", "--log-format", "xml")
	if !strings.Contains(out, `--log-format "xml": use text or json`) {
		t.Errorf("output %q does not name --log-format and its values", out)
	}
}

// TestWorkerKafkaStatistics: a worker with --http-addr turns on its
// consumers' librdkafka statistics; while a job reads, the real events
// reach /metrics: the messages fetched count up, and the consumers that
// reported are counted.
func TestWorkerKafkaStatistics(t *testing.T) {
	const topic, parts = "stats", 2
	workerHTTP := freeAddr(t)
	tc := newTestCluster(t, clusterOptions{workers: 1, partitions: parts, topics: []string{topic},
		worker: func(c *worker.Config) { c.HTTPAddr = workerHTTP },
	})
	spec := countJob("stats-job", tc.Brokers, topic)
	if _, err := tc.Client.Submit(context.Background(), spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	pr := tc.producer()
	// A consumer reports every kafkasrc.StatsInterval, and its report is
	// polled with its records: produce until the first one arrives.
	deadline := time.Now().Add(kafkaStatsWait)
	for i := 0; ; i++ {
		var recs []*kgo.Record
		for j := range 200 {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(j % parts), Value: []byte("v")})
		}
		if err := pr.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		wm := scrape(t, workerHTTP)
		msgs := mustValue(t, wm, "sluice_worker_kafka_rx_messages_total")
		consumers := mustValue(t, wm, "sluice_worker_kafka_consumers")
		if msgs > 0 && consumers > 0 {
			if b := mustValue(t, wm, "sluice_worker_kafka_rx_bytes_total"); b <= 0 {
				t.Errorf("sluice_worker_kafka_rx_bytes_total = %v with %v messages fetched, want > 0", b, msgs)
			}
			t.Logf("after %d rounds: %v messages fetched by %v consumers", i+1, msgs, consumers)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no librdkafka statistics within %s: rx messages %v, consumers %v", kafkaStatsWait, msgs, consumers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kafkaStatsWait bounds the wait for the first statistics: two intervals.
const kafkaStatsWait = 2 * kafkasrc.StatsInterval

// TestDevServesMetrics: sluice dev serves its coordinator's metrics on
// --http-addr and prints the address in its banner; the coordinator leads
// there with its workers connected, and logs in JSON with --log-format.
func TestDevServesMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	httpAddr := freeAddr(t)
	d := startProc(t, sluiceBin, "dev", "--data-dir", t.TempDir(), "--grpc-addr", freeAddr(t), "--http-addr", httpAddr,
		"--kafka-addr", freeAddr(t), "--etcd-addr", freeAddr(t), "--etcd-peer-addr", freeAddr(t), "--workers", "2", "--slots", "2",
		"--log-format", "json")
	d.waitOutput(t, "curl http://"+httpAddr+"/metrics", 30*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		mfs := scrape(t, httpAddr)
		leader, _ := value(mfs, "sluice_coordinator_leader")
		workers, _ := value(mfs, "sluice_coordinator_workers_connected")
		if leader == 1 && workers == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice dev: leader %v, workers connected %v; want 1 and 2", leader, workers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitReady(t, httpAddr, "sluice dev")
	d.interrupt(t)
	for _, line := range strings.Split(d.out.String(), "\n") {
		if strings.HasPrefix(line, "{") {
			var obj map[string]any
			if err := json.Unmarshal([]byte(line), &obj); err != nil {
				t.Errorf("a log line that starts as JSON does not parse: %v: %s", err, line)
			}
		}
	}
}

// TestReadyzWithoutEtcd: a coordinator that cannot reach etcd is alive but
// not ready: it neither leads nor sees a leader to stand by for.
func TestReadyzWithoutEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{freeAddr(t)}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	httpAddr := freeAddr(t)
	cfg := coordinator.DefaultConfig()
	cfg.Etcd, cfg.AdvertiseAddr, cfg.HTTPAddr = cli, freeAddr(t), httpAddr
	c, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	waitHTTP(t, httpAddr, "/healthz")
	if code, body := get(t, httpAddr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q, want 200", code, body)
	}
	if code, body := get(t, httpAddr, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "standby without a leader") {
		t.Errorf("/readyz = %d %q, want 503 saying it is a standby without a leader", code, body)
	}
	if v := mustValue(t, scrape(t, httpAddr), "sluice_coordinator_leader"); v != 0 {
		t.Errorf("sluice_coordinator_leader = %v, want 0", v)
	}
}
