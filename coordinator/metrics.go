package coordinator

import (
	"strconv"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// MaxLagPartitions bounds the series of sluice_job_partition_lag_records:
// a job on more partitions exports only its total lag
// (sluice_job_lag_records), so that one job cannot flood the scrape.
const MaxLagPartitions = 10_000

// delayBuckets are the buckets, in seconds, of the batch timings: from a
// few milliseconds (a small batch) to minutes (a job far behind).
var delayBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// commitBuckets are the buckets, in seconds, of an etcd commit.
var commitBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics are a coordinator's Prometheus metrics, registered on its own
// registry. Per-job series are labelled job and removed when the job is
// deleted or this coordinator stops leading.
type metrics struct {
	leader          prometheus.Gauge
	recordsIn       *prometheus.CounterVec
	recordsOut      *prometheus.CounterVec
	recordsFailed   *prometheus.CounterVec
	recordsDead     *prometheus.CounterVec
	batches         *prometheus.CounterVec
	processing      *prometheus.HistogramVec
	schedulingDelay *prometheus.HistogramVec
	totalDelay      *prometheus.HistogramVec
	commit          *prometheus.HistogramVec
	lag             *prometheus.GaugeVec
	partitionLag    *prometheus.GaugeVec
	rateCap         *prometheus.GaugeVec
	taskAttempts    *prometheus.CounterVec
	taskRetries     *prometheus.CounterVec
	taskFailures    *prometheus.CounterVec
	grpc            *grpcprom.ServerMetrics
	jobVecs         []jobVec

	// lagged are the lag series of each job's partitions, so that a
	// partition gone from a job (its topic deleted) loses its series, and
	// a batch sets its gauges without looking up their labels: at 10,000
	// partitions and 50 batches a second that was a tenth of a core.
	mu     sync.Mutex
	lagged map[string]map[partitionKey]*lagSeries
	plans  uint64 // plans recorded (planned), all jobs: lagSeries.plan
}

// lagSeries is a partition's lag gauge and the last plan that set it.
type lagSeries struct {
	gauge prometheus.Gauge
	plan  uint64
}

// jobVec is a metric vector with a job label.
type jobVec interface {
	DeletePartialMatch(prometheus.Labels) int
	Reset()
}

func newMetrics(reg prometheus.Registerer, workers func() float64) *metrics {
	job := []string{"job"}
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_coordinator_leader",
			Help: "1 while this coordinator leads the cluster, 0 while it stands by."}),
		recordsIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_records_in_total",
			Help: "Records read by the job's committed batches."}, job),
		recordsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_records_out_total",
			Help: "Records the job's committed batches output (after filters)."}, job),
		recordsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_records_failed_total",
			Help: "Records the job's steps failed on and skipped or dead-lettered, in committed batches."}, job),
		recordsDead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_records_dead_lettered_total",
			Help: "Failed records the job wrote to its dead-letter topic, in committed batches (also in sluice_job_records_failed_total)."}, job),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_batches_committed_total",
			Help: "Batches of the job committed to etcd."}, job),
		processing: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_job_batch_processing_seconds",
			Help: "Time from the start of a batch's tasks to their last result.", Buckets: delayBuckets}, job),
		schedulingDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_job_batch_scheduling_delay_seconds",
			Help: "Time from a batch's batch time to the start of its tasks.", Buckets: delayBuckets}, job),
		totalDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_job_batch_total_delay_seconds",
			Help: "Time from a batch's batch time to its last result (scheduling delay plus processing).", Buckets: delayBuckets}, job),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_job_etcd_commit_seconds",
			Help: "Latency of the etcd transaction committing a batch, its results and offsets.", Buckets: commitBuckets}, job),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_job_lag_records",
			Help: "Records between the job's committed offsets and the latest offsets, over all partitions, when its last batch was planned."}, job),
		partitionLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_job_partition_lag_records",
			Help: "Records between the job's committed offset and the latest offset of one partition, when its last batch was planned (jobs of at most 10000 partitions)."},
			[]string{"job", "topic", "partition"}),
		rateCap: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_job_rate_cap_records_per_second",
			Help: "The rate cap of the job's last batch, from backpressure or limits.initial_rate; 0 when none is in force."}, job),
		taskAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_task_attempts_total",
			Help: "Task dispatches to workers, speculative copies included."}, job),
		taskRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_task_retries_total",
			Help: "Tasks retried after a transient error (Kafka away or slow, a task deadline on the worker)."}, job),
		taskFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_job_task_failures_total",
			Help: "Task attempts that failed, by reason: error (counts against limits.max_task_attempts), deadline (the worker went silent past it), worker_lost, fatal (fails the job)."},
			[]string{"job", "reason"}),
		grpc:   grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()),
		lagged: map[string]map[partitionKey]*lagSeries{},
	}
	m.jobVecs = []jobVec{
		m.recordsIn, m.recordsOut, m.recordsFailed, m.recordsDead, m.batches, m.processing, m.schedulingDelay, m.totalDelay,
		m.commit, m.lag, m.partitionLag, m.rateCap, m.taskAttempts, m.taskRetries, m.taskFailures,
	}
	reg.MustRegister(m.leader, m.recordsIn, m.recordsOut, m.recordsFailed, m.recordsDead, m.batches, m.processing,
		m.schedulingDelay, m.totalDelay, m.commit, m.lag, m.partitionLag, m.rateCap,
		m.taskAttempts, m.taskRetries, m.taskFailures, m.grpc,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_coordinator_workers_connected",
			Help: "Workers connected to this coordinator (0 on a standby)."}, workers))
	return m
}

// deleteJob removes a job's series.
func (m *metrics) deleteJob(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.lagged, name)
	for _, v := range m.jobVecs {
		v.DeletePartialMatch(prometheus.Labels{"job": name})
	}
}

// resetJobs removes every job's series: a coordinator that stops leading
// runs no job, and the next leader exports them.
func (m *metrics) resetJobs() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.lagged)
	for _, v := range m.jobVecs {
		v.Reset()
	}
}

// jobMetrics are one job's series, bound to its label.
type jobMetrics struct {
	m            *metrics
	name         string
	recordsIn    prometheus.Counter
	recordsOut   prometheus.Counter
	recordsFail  prometheus.Counter
	recordsDead  prometheus.Counter
	batches      prometheus.Counter
	processing   prometheus.Observer
	scheduling   prometheus.Observer
	totalDelay   prometheus.Observer
	commit       prometheus.Observer
	lag          prometheus.Gauge
	rateCap      prometheus.Gauge
	taskAttempts prometheus.Counter
	taskRetries  prometheus.Counter
}

func (m *metrics) job(name string) *jobMetrics {
	// Every reason is exported from the start, at 0, so that a rate over
	// it has a series before the first failure.
	for _, r := range []string{failError, failDeadline, failWorkerLost, failFatal} {
		m.taskFailures.WithLabelValues(name, r)
	}
	return &jobMetrics{
		m: m, name: name,
		recordsIn:    m.recordsIn.WithLabelValues(name),
		recordsOut:   m.recordsOut.WithLabelValues(name),
		recordsFail:  m.recordsFailed.WithLabelValues(name),
		recordsDead:  m.recordsDead.WithLabelValues(name),
		batches:      m.batches.WithLabelValues(name),
		processing:   m.processing.WithLabelValues(name),
		scheduling:   m.schedulingDelay.WithLabelValues(name),
		totalDelay:   m.totalDelay.WithLabelValues(name),
		commit:       m.commit.WithLabelValues(name),
		lag:          m.lag.WithLabelValues(name),
		rateCap:      m.rateCap.WithLabelValues(name),
		taskAttempts: m.taskAttempts.WithLabelValues(name),
		taskRetries:  m.taskRetries.WithLabelValues(name),
	}
}

// committed records a committed batch.
func (j *jobMetrics) committed(b *sluicev1.Batch) {
	if j == nil {
		return
	}
	bm := b.GetMetrics()
	j.recordsIn.Add(float64(bm.GetRecordsIn()))
	j.recordsOut.Add(float64(bm.GetRecordsOut()))
	j.recordsFail.Add(float64(bm.GetRecordsFailed()))
	j.recordsDead.Add(float64(bm.GetRecordsDeadLettered()))
	j.batches.Inc()
	j.processing.Observe(bm.GetProcessingTime().AsDuration().Seconds())
	j.scheduling.Observe(bm.GetSchedulingDelay().AsDuration().Seconds())
	j.totalDelay.Observe(bm.GetTotalDelay().AsDuration().Seconds())
}

// commitTook records the latency of a batch's etcd commit.
func (j *jobMetrics) commitTook(d time.Duration) {
	if j != nil {
		j.commit.Observe(d.Seconds())
	}
}

// planned records the lag and rate cap a batch was planned with.
func (j *jobMetrics) planned(states []partitionState, cap *sluicev1.BatchCap) {
	if j == nil {
		return
	}
	m := j.m
	m.mu.Lock()
	defer m.mu.Unlock()
	series := m.lagged[j.name]
	if series == nil {
		series = map[partitionKey]*lagSeries{}
		m.lagged[j.name] = series
	}
	m.plans++
	var total int64
	perPartition := len(states) <= MaxLagPartitions
	for _, s := range states {
		lag := max(s.Latest-s.From, 0)
		total += lag
		if !perPartition {
			continue
		}
		ls := series[s.partitionKey]
		if ls == nil {
			ls = &lagSeries{gauge: m.partitionLag.WithLabelValues(j.name, s.Topic, strconv.Itoa(int(s.Partition)))}
			series[s.partitionKey] = ls
		}
		ls.gauge.Set(float64(lag))
		ls.plan = m.plans
	}
	for pk, ls := range series {
		if ls.plan != m.plans {
			m.partitionLag.DeleteLabelValues(j.name, pk.Topic, strconv.Itoa(int(pk.Partition)))
			delete(series, pk)
		}
	}
	j.lag.Set(float64(total))
	j.rateCap.Set(float64(cap.GetRate()))
}

// task failure reasons, the values of sluice_job_task_failures_total's
// reason label.
const (
	failError      = "error"
	failDeadline   = "deadline"
	failWorkerLost = "worker_lost"
	failFatal      = "fatal"
)

// The taskEvents of runTasks; a nil *jobMetrics counts nothing.
func (j *jobMetrics) attempt() {
	if j != nil {
		j.taskAttempts.Inc()
	}
}

func (j *jobMetrics) retry() {
	if j != nil {
		j.taskRetries.Inc()
	}
}

func (j *jobMetrics) failure(reason string) {
	if j != nil {
		j.m.taskFailures.WithLabelValues(j.name, reason).Inc()
	}
}
