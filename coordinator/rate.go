package coordinator

import (
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Backpressure defaults: Spark's PID estimator gains and min rate, and an
// initial rate so that the first batch of a job on a huge backlog is small
// enough to finish near the batch interval (Spark's first batch is
// unbounded unless initialRate is set; ours never is).
const (
	defaultInitialRate  = 100_000 // records per second over the job
	defaultProportional = 1.0
	defaultIntegral     = 0.2
	defaultDerivative   = 0.0
	defaultMinRate      = 100
)

// pidEstimator is Spark Streaming's PIDRateEstimator: after every batch it
// turns the batch's size, processing time and scheduling delay into the
// rate (records per second over the job) that the next batch may read. It
// is pure: the job runner feeds it and reads the estimate.
type pidEstimator struct {
	intervalMs              float64
	kp, ki, kd              float64
	minRate                 float64
	first                   bool
	latestTime              int64 // ms
	latestRate, latestError float64
}

func newPIDEstimator(interval time.Duration, kp, ki, kd, minRate float64) *pidEstimator {
	return &pidEstimator{
		intervalMs: float64(interval.Milliseconds()), kp: kp, ki: ki, kd: kd, minRate: minRate,
		first: true, latestTime: -1, latestRate: -1, latestError: -1,
	}
}

// estimatorFor builds the estimator of a spec's backpressure settings; nil
// when backpressure is off.
func estimatorFor(spec *sluicev1.JobSpec, interval time.Duration) *pidEstimator {
	bp := spec.GetLimits().GetBackpressure()
	if bp != nil && bp.Enabled != nil && !*bp.Enabled {
		return nil
	}
	if bp == nil {
		bp = &sluicev1.Backpressure{}
	}
	gain := func(v *float64, def float64) float64 {
		if v == nil {
			return def
		}
		return *v
	}
	minRate := float64(defaultMinRate)
	if r := bp.GetMinRate(); r > 0 {
		minRate = float64(r)
	}
	return newPIDEstimator(interval,
		gain(bp.Proportional, defaultProportional), gain(bp.Integral, defaultIntegral),
		gain(bp.Derivative, defaultDerivative), minRate)
}

// compute takes a finished batch: when it ended (ms), its records, its
// processing time and its scheduling delay (ms). It returns the new rate,
// or false when the batch says nothing (no records, no time passed, the
// first batch, which only seeds the estimator).
func (p *pidEstimator) compute(timeMs, records, processingMs, schedulingMs int64) (float64, bool) {
	if timeMs <= p.latestTime || records <= 0 || processingMs <= 0 {
		return 0, false
	}
	// Seconds since the last update, for the derivative.
	dt := float64(timeMs-p.latestTime) / 1000
	rate := float64(records) / float64(processingMs) * 1000
	err := p.latestRate - rate
	// The backlog, as a rate: records delayed per interval.
	histErr := float64(schedulingMs) * rate / p.intervalMs
	dErr := (err - p.latestError) / dt
	newRate := max(p.latestRate-p.kp*err-p.ki*histErr-p.kd*dErr, p.minRate)
	p.latestTime = timeMs
	if p.first {
		p.latestRate = rate
		p.latestError = 0
		p.first = false
		return 0, false
	}
	p.latestRate = newRate
	p.latestError = err
	return newRate, true
}

// measured is the processing rate of the last batch the estimator saw, once
// it saw one. After the first batch Spark publishes nothing and plans the
// second one at the initial rate again; the job runner uses this instead,
// so that a job on a backlog reaches its speed one batch sooner.
func (p *pidEstimator) measured() (float64, bool) {
	return p.latestRate, !p.first
}
