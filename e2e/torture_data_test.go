package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The known stream: record n of a source topic goes to partition n mod the
// partition count, with a key and a value that are functions of n. The
// source topics themselves, read back, are the ground truth of any offset
// range, whatever the fate of a produce request the broker's outage cut off.
const (
	srcA, srcB           = "tsrc-a", "tsrc-b"
	sinkOut              = "tsink-out"
	sinkOutParts   int32 = 3
	tagHeader            = "torture-tag"
	sentinelHeader       = "torture-sentinel"
)

var sourceParts = map[string]int32{srcA: 4, srcB: 3}

func tKey(n int64) string   { return fmt.Sprintf("k%02d", (n*7+n/13)%23) }
func tAmt(n int64) int64    { return (n*37 + n/7) % 100 }
func tValue(n int64) []byte { return fmt.Appendf(nil, `{"n":%d,"amt":%d}`, n, tAmt(n)) }

// tp is a topic partition.
type tp struct {
	topic string
	part  int32
}

func (p tp) String() string { return fmt.Sprintf("%s/%d", p.topic, p.part) }

// jobKind is one of the torture jobs: its base spec and what it must
// compute, record by record.
type jobKind struct {
	name   string
	topics []string
	// keep is the job's filter, as the ground truth applies it.
	keep func(n int64) bool
	// sumAmt: the aggregate also has sum, min and max of amt.
	sumAmt bool
	sink   bool
}

func keepAll(int64) bool          { return true }
func keepAmt10(n int64) bool      { return tAmt(n) >= 10 }
func (k *jobKind) agg() bool      { return !k.sink }
func (k *jobKind) String() string { return k.name }

var tortureJobs = []*jobKind{
	// Exactly-once via etcd: count by key of the records with amt >= 10.
	{name: "count-a", topics: []string{srcA}, keep: keepAmt10},
	// Two topics; count, sum, min and max of amt by key.
	{name: "stats-ab", topics: []string{srcA, srcB}, keep: keepAll, sumAmt: true},
	// Exactly-once via Kafka transactions: the records with amt >= 10,
	// keyed c-<key>, valued n, to sinkOut.
	{name: "sink-b", topics: []string{srcB}, keep: keepAmt10, sink: true},
}

// variant is what an --update may change without changing any result.
type variant struct {
	interval   time.Duration
	maxRecords int64
	// extra is an always-true filter added after the job's own ("" none).
	extra string
	// keyExpr is the aggregate key: "" (the record key) or an equivalent expression.
	keyExpr string
}

var (
	variantIntervals = []time.Duration{150 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 500 * time.Millisecond}
	variantMax       = []int64{500, 1500, 3000}
	variantExtra     = []string{"", "offset >= 0", "size(key) == 3", "json.n >= 0.0"}
	variantKeys      = []string{"", "key", `key + ""`}
)

// spec builds the job's spec; tag marks a Kafka sink's output with the
// incarnation it belongs to.
func (k *jobKind) spec(brokers string, v variant, tag string, start *sluicev1.StartingOffsets) *sluicev1.JobSpec {
	s := &sluicev1.JobSpec{
		Name: k.name,
		Source: &sluicev1.KafkaSource{
			BootstrapServers: brokers, Topics: k.topics, StartingOffsets: start,
		},
		BatchInterval: durationpb.New(v.interval),
		Limits: &sluicev1.Limits{
			MaxRecordsPerBatch: v.maxRecords, TaskTimeout: durationpb.New(10 * time.Second),
		},
	}
	if k.name != "stats-ab" {
		s.Steps = append(s.Steps, &sluicev1.Step{Kind: &sluicev1.Step_Filter{Filter: "json.amt >= 10"}})
	}
	if v.extra != "" {
		s.Steps = append(s.Steps, &sluicev1.Step{Kind: &sluicev1.Step_Filter{Filter: v.extra}})
	}
	switch {
	case k.sink:
		s.Steps = append(s.Steps, &sluicev1.Step{Kind: &sluicev1.Step_Map{Map: &sluicev1.MapStep{Key: `"c-" + key`, Value: "json.n"}}})
		s.Sink = &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{
			Topic: sinkOut, Mode: sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL,
			TransactionTimeout: durationpb.New(10 * time.Second),
			Headers:            map[string]string{tagHeader: strconv.Quote(tag)},
		}}}
	case k.sumAmt:
		s.Aggregate = &sluicev1.Aggregate{Key: v.keyExpr, Value: "json.amt", Functions: []sluicev1.AggregateFunction{
			sluicev1.AggregateFunction_AGGREGATE_FUNCTION_COUNT, sluicev1.AggregateFunction_AGGREGATE_FUNCTION_SUM,
			sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MIN, sluicev1.AggregateFunction_AGGREGATE_FUNCTION_MAX,
		}}
	default:
		s.Aggregate = &sluicev1.Aggregate{Key: v.keyExpr}
	}
	return s
}

// specTag reads the incarnation tag back from a stored spec.
func specTag(s *sluicev1.JobSpec) string {
	q := s.GetSink().GetKafka().GetHeaders()[tagHeader]
	if tag, err := strconv.Unquote(q); err == nil {
		return tag
	}
	return q
}

// tProducer writes the known stream to one topic at a steady rate until ctx ends.
type tProducer struct {
	topic string
	parts int32
	rate  int

	mu    sync.Mutex
	next  int64
	acked map[int32][]int64 // offset -> n, -1 where no acknowledged record is known
	errs  int
	last  error
}

func (p *tProducer) run(ctx context.Context, brokers string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(1000), kgo.ProduceRequestTimeout(5*time.Second))
	if err != nil {
		p.fail(err)
		return
	}
	defer cl.Close()
	const tick = 100 * time.Millisecond
	per := max(p.rate*int(tick)/int(time.Second), 1)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		batch := make([]*kgo.Record, 0, per)
		p.mu.Lock()
		for range per {
			n := p.next
			p.next++
			batch = append(batch, &kgo.Record{Topic: p.topic, Partition: int32(n % int64(p.parts)), Key: []byte(tKey(n)), Value: tValue(n)})
		}
		p.mu.Unlock()
		// A produce cut off by the test's end or a broker outage may or may
		// not have landed: the source read back decides.
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		res := cl.ProduceSync(pctx, batch...)
		cancel()
		p.mu.Lock()
		for _, r := range res {
			if r.Err != nil {
				p.errs++
				p.last = r.Err
				continue
			}
			var n int64
			fmt.Sscanf(string(r.Record.Value), `{"n":%d`, &n)
			s := p.acked[r.Record.Partition]
			for int64(len(s)) <= r.Record.Offset {
				s = append(s, -1)
			}
			s[r.Record.Offset] = n
			p.acked[r.Record.Partition] = s
		}
		p.mu.Unlock()
	}
}

func (p *tProducer) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs++
	p.last = err
}

// sourceMirror tails the source topics: for every partition, the n of the
// record at each offset (-1 where there is no record).
type sourceMirror struct {
	mu      sync.RWMutex
	ns      map[tp][]int64
	corrupt []string
}

func newSourceMirror() *sourceMirror { return &sourceMirror{ns: map[tp][]int64{}} }

func (m *sourceMirror) run(ctx context.Context, brokers string, topics ...string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		m.mu.Lock()
		m.corrupt = append(m.corrupt, fmt.Sprintf("mirror client: %v", err))
		m.mu.Unlock()
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		m.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			var n int64
			if _, err := fmt.Sscanf(string(r.Value), `{"n":%d`, &n); err != nil || string(r.Key) != tKey(n) || !bytes.Equal(r.Value, tValue(n)) {
				m.corrupt = append(m.corrupt, fmt.Sprintf("%s offset %d: unexpected record key %q value %q", k, r.Offset, r.Key, r.Value))
				n = -1
			}
			s := m.ns[k]
			if r.Offset < int64(len(s)) {
				if s[r.Offset] != n {
					m.corrupt = append(m.corrupt, fmt.Sprintf("%s offset %d read twice with different records (n %d, then %d)", k, r.Offset, s[r.Offset], n))
				}
				return
			}
			for int64(len(s)) < r.Offset {
				s = append(s, -1)
			}
			m.ns[k] = append(s, n)
		})
		m.mu.Unlock()
	}
}

// get returns the n at an offset; ok is false while the mirror has not
// read that far.
func (m *sourceMirror) get(k tp, off int64) (n int64, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := m.ns[k]
	if off < 0 || off >= int64(len(s)) {
		return 0, false
	}
	return s[off], true
}

// has says whether the mirror holds every offset below until.
func (m *sourceMirror) has(k tp, until int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.ns[k])) >= until
}

func (m *sourceMirror) end(k tp) int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.ns[k]))
}

// waitEnds waits until the mirror holds every record up to the partitions'
// end offsets and returns those.
func (m *sourceMirror) waitEnds(ctx context.Context, adm *kadm.Client, topics []string) (map[tp]int64, error) {
	var ends kadm.ListedOffsets
	var err error
	for {
		ends, err = adm.ListEndOffsets(ctx, topics...)
		if err == nil && ends.Error() == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("list end offsets: %v %v", err, ctx.Err())
		}
		time.Sleep(200 * time.Millisecond)
	}
	out := map[tp]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[tp{o.Topic, o.Partition}] = o.Offset })
	for {
		done := true
		for k, e := range out {
			done = done && m.has(k, e)
		}
		if done {
			return out, nil
		}
		if ctx.Err() != nil {
			got := map[string]int64{}
			for k := range out {
				got[k.String()] = m.end(k)
			}
			return nil, fmt.Errorf("source mirror stuck at %v, ends %v", got, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// outKey names the output records of one source record in one incarnation.
type outKey struct {
	tag string
	src tp
	off int64
}

// outRec is one output record: its sluice-batch header and the n its value
// carries (-1 when the value is not a number).
type outRec struct {
	batch int64
	n     int64
}

type seriesKey struct {
	tag string
	src tp
}

const chunkSize = 1024

// outChunk holds the first output record of chunkSize consecutive source
// offsets; the sink output of a long run is millions of records.
type outChunk struct {
	has, seen [chunkSize]bool
	batch, n  [chunkSize]int32
}

// sinkOutput is the sink topic as a read_committed consumer sees it, by
// tag and source record.
type sinkOutput struct {
	series  map[seriesKey]map[int64]*outChunk
	more    map[outKey][]outRec // records after the first of a source record
	records int
	bad     []string // keys that do not go with the value
	odd     []string // records that name no source, no tag or another job
}

func newSinkOutput() *sinkOutput {
	return &sinkOutput{series: map[seriesKey]map[int64]*outChunk{}, more: map[outKey][]outRec{}}
}

func (o *sinkOutput) put(tag string, src tp, off int64, r outRec) {
	sk := seriesKey{tag, src}
	cs := o.series[sk]
	if cs == nil {
		cs = map[int64]*outChunk{}
		o.series[sk] = cs
	}
	c := cs[off/chunkSize]
	if c == nil {
		c = &outChunk{}
		cs[off/chunkSize] = c
	}
	i := off % chunkSize
	if c.has[i] {
		k := outKey{tag, src, off}
		o.more[k] = append(o.more[k], r)
		return
	}
	c.has[i], c.batch[i], c.n[i] = true, int32(r.batch), int32(r.n)
}

// get returns the output records of a source record under tag and marks
// them seen.
func (o *sinkOutput) get(tag string, src tp, off int64) []outRec {
	c := o.series[seriesKey{tag, src}][off/chunkSize]
	if c == nil || !c.has[off%chunkSize] {
		return nil
	}
	i := off % chunkSize
	c.seen[i] = true
	return append([]outRec{{int64(c.batch[i]), int64(c.n[i])}}, o.more[outKey{tag, src, off}]...)
}

// replace sets the output records of a source record (tests).
func (o *sinkOutput) replace(tag string, src tp, off int64, recs ...outRec) {
	if c := o.series[seriesKey{tag, src}][off/chunkSize]; c != nil {
		c.has[off%chunkSize] = false
	}
	delete(o.more, outKey{tag, src, off})
	for _, r := range recs {
		o.put(tag, src, off, r)
	}
}

// unseen calls fn for every source record whose output get never returned.
func (o *sinkOutput) unseen(fn func(k outKey, recs []outRec)) {
	keys := slices.SortedFunc(maps.Keys(o.series), func(a, b seriesKey) int {
		return strings.Compare(a.tag+" "+a.src.String(), b.tag+" "+b.src.String())
	})
	for _, sk := range keys {
		cs := o.series[sk]
		for _, ci := range slices.Sorted(maps.Keys(cs)) {
			c := cs[ci]
			for i := range int64(chunkSize) {
				if c.has[i] && !c.seen[i] {
					off := ci*chunkSize + i
					fn(outKey{sk.tag, sk.src, off}, append([]outRec{{int64(c.batch[i]), int64(c.n[i])}}, o.more[outKey{sk.tag, sk.src, off}]...))
				}
			}
		}
	}
}

// readSinkOutput produces a sentinel record to every partition of the sink
// topic, after every transaction of the run, and reads the topic with
// read_committed up to the sentinels. A transaction left open holds the
// reader back before its sentinel: then it returns an error naming it.
func readSinkOutput(ctx context.Context, brokers string) (*sinkOutput, error) {
	pr, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	for p := range sinkOutParts {
		rec := &kgo.Record{Topic: sinkOut, Partition: p, Headers: []kgo.RecordHeader{{Key: sentinelHeader, Value: []byte("end")}}}
		if err := pr.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return nil, fmt.Errorf("produce sentinel: %w", err)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(sinkOut),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := newSinkOutput()
	seen := map[int32]bool{}
	for len(seen) < int(sinkOutParts) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			var missing []string
			for p := range sinkOutParts {
				if !seen[p] {
					missing = append(missing, fmt.Sprint(p))
				}
			}
			adm := kadm.NewClient(pr)
			hwm, _ := adm.ListEndOffsets(context.Background(), sinkOut)
			lso, _ := adm.ListCommittedOffsets(context.Background(), sinkOut)
			var parts []string
			for _, p := range missing {
				pi, _ := strconv.Atoi(p)
				h, _ := hwm.Lookup(sinkOut, int32(pi))
				l, _ := lso.Lookup(sinkOut, int32(pi))
				parts = append(parts, fmt.Sprintf("partition %s: high watermark %d, last stable offset %d", p, h.Offset, l.Offset))
			}
			return out, fmt.Errorf("read_committed reader did not reach the sentinels of %s (a transaction left open blocks it): %s",
				sinkOut, strings.Join(parts, "; "))
		}
		fs.EachRecord(func(r *kgo.Record) { out.add(r, seen) })
	}
	return out, nil
}

func (o *sinkOutput) add(r *kgo.Record, sentinels map[int32]bool) {
	h := map[string]string{}
	for _, x := range r.Headers {
		h[x.Key] = string(x.Value)
	}
	if _, ok := h[sentinelHeader]; ok {
		sentinels[r.Partition] = true
		return
	}
	o.records++
	where := fmt.Sprintf("%s/%d offset %d", r.Topic, r.Partition, r.Offset)
	srcOK := false
	var src tp
	var off int64
	if parts := strings.Split(h["sluice-src"], "/"); len(parts) == 3 {
		p, err1 := strconv.ParseInt(parts[1], 10, 32)
		o2, err2 := strconv.ParseInt(parts[2], 10, 64)
		src, off, srcOK = tp{parts[0], int32(p)}, o2, err1 == nil && err2 == nil && o2 >= 0
	}
	batch, err := strconv.ParseInt(h["sluice-batch"], 10, 64)
	tag := h[tagHeader]
	if !srcOK || err != nil || tag == "" || !strings.HasPrefix(tag, h["sluice-job"]+"-g") {
		o.odd = append(o.odd, fmt.Sprintf("%s: headers %v", where, h))
		return
	}
	n, err := strconv.ParseInt(string(r.Value), 10, 64)
	if err != nil {
		n = -1
	} else if string(r.Key) != "c-"+tKey(n) {
		o.bad = append(o.bad, fmt.Sprintf("%s (from %s/%d): key %q, want %q for n %d", where, src, off, r.Key, "c-"+tKey(n), n))
	}
	o.put(tag, src, off, outRec{batch: batch, n: n})
}
