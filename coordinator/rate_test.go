package coordinator

import (
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The cases of Spark's PIDRateEstimatorSuite, with its estimator settings.
func TestPIDFirstEstimateIsNone(t *testing.T) {
	p := newPIDEstimator(20*time.Millisecond, 1, 0, 0, 10)
	if _, ok := p.compute(0, 10, 10, 0); ok {
		t.Fatal("first batch published an estimate")
	}
	if r, ok := p.measured(); !ok || r != 1000 {
		t.Fatalf("measured after the first batch = %v, %v; want 1000, true", r, ok)
	}
}

func TestPIDSecondEstimate(t *testing.T) {
	p := newPIDEstimator(20*time.Millisecond, 1, 0, 0, 10)
	p.compute(0, 10, 10, 0)
	if r, ok := p.compute(10, 10, 10, 0); !ok || r != 1000 {
		t.Fatalf("second estimate = %v, %v; want 1000 records/s", r, ok)
	}
}

func TestPIDNoEstimate(t *testing.T) {
	cases := []struct {
		name                       string
		time, n, processing, sched int64
	}{
		{"no time difference", 10, 10, 10, 0},
		{"time goes back", 5, 10, 10, 0},
		{"no records", 20, 0, 10, 0},
		{"negative records", 20, -10, 10, 0},
		{"no processing delay", 20, 10, 0, 0},
		{"negative processing delay", 20, 10, -10, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPIDEstimator(20*time.Millisecond, 1, 0, 0, 10)
			p.compute(0, 10, 10, 0)
			if _, ok := p.compute(10, 10, 10, 0); !ok {
				t.Fatal("valid batch gave no estimate")
			}
			if r, ok := p.compute(c.time, c.n, c.processing, c.sched); ok {
				t.Fatalf("estimate %v; want none", r)
			}
		})
	}
}

func TestPIDNeverBelowMinRate(t *testing.T) {
	p := newPIDEstimator(20*time.Millisecond, 1, 1, 0, 5)
	for i := range 50 {
		r, ok := p.compute(int64(i*20), 1, 20, 100)
		if i == 0 {
			if ok {
				t.Fatal("first batch published an estimate")
			}
			continue
		}
		if !ok || r != 5 {
			t.Fatalf("batch %d: estimate %v, %v; want the min rate 5", i, r, ok)
		}
	}
}

func TestPIDFollowsProcessingSpeed(t *testing.T) {
	for _, c := range []struct {
		name     string
		elements func(i int) int64
	}{
		{"increasing", func(i int) int64 { return int64((i + 1) * 20) }},
		{"decreasing", func(i int) int64 { return int64((50 - i) * 20) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Integral gain 1 but no scheduling delay: only the
			// proportional term acts, and the estimate is the speed.
			p := newPIDEstimator(20*time.Millisecond, 1, 1, 0, 10)
			for i := range 50 {
				r, ok := p.compute(int64(i*20), c.elements(i), 20, 0)
				if i == 0 {
					continue
				}
				if want := float64(c.elements(i)) * 1000 / 20; !ok || r != want {
					t.Fatalf("batch %d: estimate %v, %v; want %v", i, r, ok, want)
				}
			}
		})
	}
}

func TestPIDStaysBelowSpeedWithDelay(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	p := newPIDEstimator(20*time.Millisecond, 1, 0.01, 0, 10)
	for i := range 50 {
		n := int64(rng.IntN(1000))
		sched := int64(rng.IntN(19))
		r, ok := p.compute(int64(i*20), n, 20, sched)
		if i == 0 || n == 0 {
			continue
		}
		if !ok {
			t.Fatalf("batch %d: no estimate", i)
		}
		if speed := float64(n) / 20 * 1000; r > 0 && sched > 0 && r >= speed {
			t.Fatalf("batch %d: estimate %v not below the speed %v with %dms delay", i, r, speed, sched)
		}
	}
}

// The example of research/spark.md with the default gains: previous rate
// 10 000, 8 000 records in 1 s with 500 ms of scheduling delay.
func TestPIDDefaultsExample(t *testing.T) {
	p := estimatorFor(&sluicev1.JobSpec{}, time.Second)
	p.compute(1000, 10_000, 1000, 0)
	if r, ok := p.compute(2000, 8_000, 1000, 500); !ok || r != 7200 {
		t.Fatalf("estimate %v, %v; want 7200", r, ok)
	}
}

func TestEstimatorFor(t *testing.T) {
	off := &sluicev1.JobSpec{Limits: &sluicev1.Limits{Backpressure: &sluicev1.Backpressure{Enabled: proto.Bool(false)}}}
	if estimatorFor(off, time.Second) != nil {
		t.Fatal("backpressure disabled still has an estimator")
	}
	p := estimatorFor(&sluicev1.JobSpec{Limits: &sluicev1.Limits{Backpressure: &sluicev1.Backpressure{
		Integral: proto.Float64(0), MinRate: 7,
	}}}, time.Second)
	if p.kp != 1 || p.ki != 0 || p.kd != 0 || p.minRate != 7 {
		t.Fatalf("gains %v %v %v min %v; want 1 0 0 7", p.kp, p.ki, p.kd, p.minRate)
	}
}
