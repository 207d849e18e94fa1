package coordinator

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Leaders move rarely: brokers placement asks Kafka at most this often per
// job, and as soon as a batch has a partition it has not asked about.
const leaderRefresh = 10 * time.Second

// leaderLookupTimeout bounds the lookup a batch waits for: without an
// answer the batch is placed as in consistent mode, never held back.
const leaderLookupTimeout = time.Second

// leaderForget drops the leaders of a job that has not asked for them this
// long (stopped or deleted).
const leaderForget = 10 * time.Minute

// taskPolicy is how runTasks places and speculates one batch's tasks.
type taskPolicy struct {
	placement *placement // nil: consistent
	// speculation is the multiple of the batch's median task duration past
	// which a running task gets a speculative copy; 0 is off.
	speculation float64
	// events counts the tasks' attempts, retries and failures (nil: not).
	events *jobMetrics
}

// taskPolicy is the batch's placement and speculation under the job's spec.
func (r *jobRunner) taskPolicy(ctx context.Context, tasks []*sluicev1.Task) taskPolicy {
	pl := r.spec.GetPlacement()
	var leaders map[partitionKey]string
	if pl.GetMode() == sluicev1.PlacementMode_PLACEMENT_MODE_BROKERS {
		pks := make([]partitionKey, 0, len(tasks))
		for _, t := range tasks {
			pks = append(pks, partitionKey{t.GetRange().GetTopic(), t.GetRange().GetPartition()})
		}
		leaders = r.dispatcher.leaders.get(ctx, r.name, pks, r.lookupLeaders, r.logger)
	}
	placement := newPlacement(pl, leaders)
	placement.processors = jobspec.Processors(r.spec)
	if mode := pl.GetMode(); mode == sluicev1.PlacementMode_PLACEMENT_MODE_UNSPECIFIED || mode == sluicev1.PlacementMode_PLACEMENT_MODE_CONSISTENT {
		keys := make([]placeKey, len(tasks))
		for i, t := range tasks {
			keys[i] = placeKeyOf(t)
		}
		placement.prefer = balance(keys, r.dispatcher.liveWorkersWith(placement.processors))
	}
	return taskPolicy{placement: placement, speculation: jobspec.SpeculationMultiplier(r.spec), events: r.metrics}
}

func (r *jobRunner) lookupLeaders(ctx context.Context, pks []partitionKey) (map[partitionKey]string, error) {
	admin, err := r.admins.Get(r.cluster())
	if err != nil {
		return nil, err
	}
	tps := make([]kafkasrc.TopicPartition, len(pks))
	for i, pk := range pks {
		tps[i] = kafkasrc.TopicPartition{Topic: pk.Topic, Partition: pk.Partition}
	}
	got, err := admin.Leaders(ctx, tps)
	if err != nil {
		return nil, err
	}
	out := make(map[partitionKey]string, len(got))
	for tp, host := range got {
		out[partitionKey{tp.Topic, tp.Partition}] = host
	}
	return out, nil
}

// leaderCache holds each job's partition leader hosts for brokers
// placement. Lookups are bounded and their failures are not errors: the
// batch is placed as in consistent mode, and the failure logged once until
// a lookup succeeds again.
type leaderCache struct {
	now func() time.Time

	mu   sync.Mutex
	jobs map[string]*jobLeaders
}

type jobLeaders struct {
	hosts   map[partitionKey]string
	asked   map[partitionKey]bool
	at      time.Time // of the last lookup, answered or not
	used    time.Time
	failing bool
}

func newLeaderCache() *leaderCache {
	return &leaderCache{now: time.Now, jobs: map[string]*jobLeaders{}}
}

// get returns the leader hosts of the job's partitions, looking them up
// with fetch when they are stale or a partition is new to it.
func (c *leaderCache) get(ctx context.Context, job string, pks []partitionKey,
	fetch func(context.Context, []partitionKey) (map[partitionKey]string, error), logger hclog.Logger) map[partitionKey]string {
	now := c.now()
	c.mu.Lock()
	for name, e := range c.jobs {
		if now.Sub(e.used) > leaderForget {
			delete(c.jobs, name)
		}
	}
	e, ok := c.jobs[job]
	if !ok {
		e = &jobLeaders{}
		c.jobs[job] = e
	}
	e.used = now
	stale := e.at.IsZero() || now.Sub(e.at) >= leaderRefresh
	if !stale && !e.failing {
		for _, pk := range pks {
			if !e.asked[pk] {
				stale = true
				break
			}
		}
	}
	if !stale {
		hosts := e.hosts
		c.mu.Unlock()
		return hosts
	}
	// Ask about every partition the job placed before as well, so that
	// batches of different partitions do not each make a lookup.
	want := make(map[partitionKey]bool, len(pks)+len(e.asked))
	for _, pk := range pks {
		want[pk] = true
	}
	for pk := range e.asked {
		want[pk] = true
	}
	c.mu.Unlock()
	ask := slices.SortedFunc(maps.Keys(want), func(a, b partitionKey) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})

	lctx, cancel := context.WithTimeout(ctx, leaderLookupTimeout)
	got, err := fetch(lctx, ask)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	e.at = c.now()
	if err != nil {
		if !e.failing {
			logger.Warn("partition leader lookup failed: placing tasks as in consistent mode until it succeeds",
				"error", err, "retry_in", leaderRefresh)
		}
		e.failing = true
		e.hosts, e.asked = nil, nil
		return nil
	}
	if e.failing {
		logger.Info("partition leader lookup succeeds again: placing tasks on the leaders' hosts")
	}
	e.failing = false
	e.hosts = got
	e.asked = make(map[partitionKey]bool, len(ask))
	for _, pk := range ask {
		e.asked[pk] = true
	}
	return got
}
