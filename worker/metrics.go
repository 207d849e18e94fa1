package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Task outcomes, the values of sluice_worker_tasks_total's outcome label.
const (
	outcomeOK        = "ok"
	outcomeRetryable = "retryable"
	outcomeFailed    = "failed"
	outcomeFatal     = "fatal"
	outcomeCancelled = "cancelled"
)

// taskBuckets are the buckets, in seconds, of a task's run time.
var taskBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// metrics are a worker's Prometheus metrics, on its own registry.
type metrics struct {
	connected prometheus.Gauge
	slots     prometheus.Gauge
	slotsBusy prometheus.Gauge
	tasks     *prometheus.CounterVec
	taskTime  prometheus.Histogram
	records   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, w *Worker) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_worker_connected",
			Help: "1 while the worker is registered with a coordinator."}),
		slots: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_worker_slots",
			Help: "Tasks the worker runs at once (--slots)."}),
		slotsBusy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_worker_slots_busy",
			Help: "Slots running a task now."}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_worker_tasks_total",
			Help: "Tasks run, by outcome: ok, retryable (a transient error), failed, fatal, cancelled (by the coordinator)."},
			[]string{"outcome"}),
		taskTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_worker_task_seconds",
			Help: "Time a task ran, from its slot to its result.", Buckets: taskBuckets}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_worker_records_in_total",
			Help: "Records the worker's successful tasks read."}),
	}
	m.slots.Set(float64(w.cfg.Slots))
	for _, o := range []string{outcomeOK, outcomeRetryable, outcomeFailed, outcomeFatal, outcomeCancelled} {
		m.tasks.WithLabelValues(o)
	}
	reg.MustRegister(m.connected, m.slots, m.slotsBusy, m.tasks, m.taskTime, m.records,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_worker_consumer_cache_entries",
			Help: "Kafka consumers in the worker's consumer cache (--consumer-cache bounds them)."},
			func() float64 { return float64(w.cache.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_worker_consumer_cache_prefetch_bytes",
			Help: "Prefetch memory the cached consumers may hold: entries times each one's share of --consumer-memory."},
			func() float64 { return float64(w.cache.Len()) * float64(w.cache.Share()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_worker_consumer_pool_idle",
			Help: "Idle sticky consumers in the pool that reads packed tasks and small ranges."},
			func() float64 { return float64(w.pool.Idle()) }),
	)
	return m
}

// taskDone counts a finished task.
func (m *metrics) taskDone(res *sluicev1.TaskResult, cancelled bool) {
	outcome := outcomeOK
	switch {
	case cancelled:
		outcome = outcomeCancelled
	case res.GetFatal():
		outcome = outcomeFatal
	case res.GetRetryable():
		outcome = outcomeRetryable
	case res.GetError() != "":
		outcome = outcomeFailed
	default:
		m.records.Add(float64(res.GetRecordsIn()))
	}
	m.tasks.WithLabelValues(outcome).Inc()
	m.taskTime.Observe(res.GetDuration().AsDuration().Seconds())
}
