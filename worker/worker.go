// Package worker runs Sluice tasks: it dials the coordinator (workers open no
// inbound port), registers its slots, reads each task's offset range from
// Kafka, applies the job's steps and streams the result back.
package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/failpoint"
	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/steps"
)

// Config configures a Worker.
type Config struct {
	// Coordinators are the coordinator addresses; the worker connects to
	// whichever leads.
	Coordinators []string
	// ID is stable across restarts; default hostname-pid.
	ID string
	// Slots is how many tasks run at once; default 4.
	Slots int
	// ConsumerCacheSize is the capacity of the Kafka consumer cache; default 64.
	ConsumerCacheSize int
	Labels            []string
	Logger            hclog.Logger
	// DialOptions are added to the gRPC dial (tests).
	DialOptions []grpc.DialOption
	// Failpoints may crash or freeze the worker for the fault-tolerance
	// tests: "mid-task" (after the first record of a task), "mid-txn" (output
	// in a Kafka transaction not yet committed), "after-sink-write" (output
	// written, result not yet reported).
	Failpoints failpoint.Set
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Slots: 4, ConsumerCacheSize: 64, Logger: hclog.NewNullLogger()}
}

// Validate checks the config.
func (c *Config) Validate() error {
	if len(c.Coordinators) == 0 {
		return errors.New("worker: config: at least one coordinator address is required")
	}
	if c.Slots < 1 {
		return fmt.Errorf("worker: config: slots %d is below 1", c.Slots)
	}
	if c.ConsumerCacheSize < 1 {
		return fmt.Errorf("worker: config: consumer cache size %d is below 1", c.ConsumerCacheSize)
	}
	return nil
}

// Worker executes tasks for the coordinator.
type Worker struct {
	cfg    Config
	logger hclog.Logger
	cache  *kafkasrc.Cache
	sinks  *kafkasrc.Sinks

	mu       sync.Mutex
	programs map[string]compiled // by job
}

type compiled struct {
	version int64
	prog    *steps.Program
}

// New builds a worker; Run starts it.
func New(cfg Config) (*Worker, error) {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	logger := cfg.Logger.Named("worker").With("worker_id", cfg.ID)
	return &Worker{
		cfg:      cfg,
		logger:   logger,
		cache:    kafkasrc.NewCache(cfg.ConsumerCacheSize, logger.Named("kafka")),
		sinks:    kafkasrc.NewSinks(logger.Named("sink")),
		programs: map[string]compiled{},
	}, nil
}

// ID is the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run connects to the leading coordinator and runs tasks until ctx ends,
// reconnecting with backoff when the stream breaks.
func (w *Worker) Run(ctx context.Context) error {
	defer w.cache.Close()
	defer w.sinks.Close()
	backoff := 100 * time.Millisecond
	for i := 0; ; i++ {
		addr := w.cfg.Coordinators[i%len(w.cfg.Coordinators)]
		start := time.Now()
		err := w.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		if status.Code(err) == codes.FailedPrecondition {
			// A standby, or a coordinator still campaigning: expected
			// during startup and failover, so not worth a warning.
			w.logger.Debug("coordinator is not the leader, trying the next", "coordinator", addr, "error", err)
		} else {
			w.logger.Warn("coordinator stream ended, reconnecting", "coordinator", addr, "error", err, "backoff", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

// session is one stream to one coordinator; its goroutines end with it.
func (w *Worker) session(ctx context.Context, addr string) error {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	}, w.cfg.DialOptions...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := sluicev1.NewWorkerServiceClient(conn).Connect(ctx)
	if err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	host, _ := os.Hostname()
	if err := stream.Send(&sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Register{Register: &sluicev1.Register{
		WorkerId: w.cfg.ID, Slots: int32(w.cfg.Slots), Host: host, Labels: w.cfg.Labels,
	}}}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	hb := first.GetRegistered().GetHeartbeatInterval().AsDuration()
	if hb <= 0 {
		hb = time.Second
	}
	w.logger.Info("connected", "coordinator", addr, "slots", w.cfg.Slots)

	g, gctx := errgroup.WithContext(ctx)
	// Recv has no ctx of its own: cancelling the stream's is what unblocks it.
	g.Go(func() error {
		<-gctx.Done()
		cancel()
		return nil
	})
	out := make(chan *sluicev1.ConnectRequest, w.cfg.Slots*2)
	var running sync.WaitGroup
	var runningCount int32
	var countMu sync.Mutex
	slots := make(chan struct{}, w.cfg.Slots)

	// Sender: the only goroutine that writes to the stream.
	g.Go(func() error {
		t := time.NewTicker(hb)
		defer t.Stop()
		for {
			var msg *sluicev1.ConnectRequest
			select {
			case <-gctx.Done():
				return nil
			case msg = <-out:
			case <-t.C:
				countMu.Lock()
				n := runningCount
				countMu.Unlock()
				msg = &sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Heartbeat{Heartbeat: &sluicev1.Heartbeat{RunningTasks: n}}}
			}
			if err := stream.Send(msg); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
	})
	// Watchdog: the coordinator pings every heartbeat interval; silence for
	// three of them means it froze or is cut off, so try the next one.
	heard := make(chan struct{}, 1)
	g.Go(func() error {
		silence := 3 * hb
		t := time.NewTimer(silence)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-heard:
				t.Reset(silence) // safe without draining since Go 1.23
			case <-t.C:
				return fmt.Errorf("coordinator %s silent for %s", addr, silence)
			}
		}
	})
	// Receiver: starts a goroutine per task, bounded by the slots.
	g.Go(func() error {
		defer running.Wait()
		for {
			msg, err := stream.Recv()
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
			select {
			case heard <- struct{}{}:
			default:
			}
			task := msg.GetTask()
			if task == nil {
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-gctx.Done():
				return nil
			}
			running.Add(1)
			countMu.Lock()
			runningCount++
			countMu.Unlock()
			go func() {
				defer running.Done()
				defer func() {
					countMu.Lock()
					runningCount--
					countMu.Unlock()
					<-slots
				}()
				res := w.runTask(gctx, task)
				select {
				case out <- &sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Result{Result: res}}:
				case <-gctx.Done():
				}
			}()
		}
	})
	return g.Wait()
}

// program returns the job's compiled steps, compiling once per spec version.
func (w *Worker) program(task *sluicev1.Task) (*steps.Program, error) {
	job := task.GetKey().GetJob()
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.programs[job]; ok && c.version == task.GetSpecVersion() {
		return c.prog, nil
	}
	prog, err := steps.Compile(task.GetSpec())
	if err != nil {
		return nil, err
	}
	w.programs[job] = compiled{version: task.GetSpecVersion(), prog: prog}
	return prog, nil
}

// runTask reads the task's range and applies the steps; any failure is
// reported in the result for the coordinator to retry.
func (w *Worker) runTask(ctx context.Context, task *sluicev1.Task) *sluicev1.TaskResult {
	start := time.Now()
	res := &sluicev1.TaskResult{Key: task.GetKey()}
	fail := func(err error) *sluicev1.TaskResult {
		res.Error = err.Error()
		res.Retryable = retryable(err)
		res.Duration = durationpb.New(time.Since(start))
		w.logger.Warn("task failed", "job", task.GetKey().GetJob(), "batch", task.GetKey().GetBatchId(),
			"task", task.GetKey().GetIndex(), "attempt", task.GetKey().GetAttempt(), "error", err)
		return res
	}
	prog, err := w.program(task)
	if err != nil {
		return fail(fmt.Errorf("compile steps: %w", err))
	}
	if d := task.GetTimeout().AsDuration(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	spec := task.GetSpec()
	cl := jobspec.Source(spec)
	r := task.GetRange()
	runner := prog.NewRunner()
	first := true
	_, err = w.cache.Read(ctx, cl, kafkasrc.GroupID(spec.GetName()), kafkasrc.Range{
		Topic: r.GetTopic(), Partition: r.GetPartition(), From: r.GetFromOffset(), Until: r.GetUntilOffset(),
	}, func(rec *record.Record) error {
		if first {
			first = false
			w.cfg.Failpoints.Hit("mid-task")
		}
		return runner.Process(rec)
	})
	if err != nil {
		return fail(err)
	}
	out := runner.Result()
	res.RecordsIn, res.RecordsOut, res.RecordsFailed = out.In, out.Out, out.Failed
	res.Aggregates, res.Records = out.Aggregates, out.Records
	if k := spec.GetSink().GetKafka(); k != nil {
		if err := w.writeKafka(ctx, task, k, out.Records); err != nil {
			return fail(err)
		}
		res.Records = nil // written to Kafka, not collected
	}
	res.Duration = durationpb.New(time.Since(start))
	return res
}

// writeKafka writes a task's output records to the Kafka sink: in one
// transaction with the source range's end offset (exactly-once), or with an
// idempotent producer (at-least-once). Every record carries sluice-job,
// sluice-batch and sluice-src headers so that readers can de-duplicate.
func (w *Worker) writeKafka(ctx context.Context, task *sluicev1.Task, k *sluicev1.KafkaSink, recs []*sluicev1.OutputRecord) error {
	job, batch := task.GetKey().GetJob(), strconv.FormatInt(task.GetKey().GetBatchId(), 10)
	msgs := make([]kafkasrc.Message, len(recs))
	for i, r := range recs {
		hdrs := make([]record.Header, 0, len(r.GetHeaders())+3)
		for _, h := range r.GetHeaders() {
			hdrs = append(hdrs, record.Header{Key: h.GetKey(), Value: h.GetValue()})
		}
		hdrs = append(hdrs,
			record.Header{Key: "sluice-job", Value: []byte(job)},
			record.Header{Key: "sluice-batch", Value: []byte(batch)},
			record.Header{Key: "sluice-src", Value: fmt.Appendf(nil, "%s/%d/%d", r.GetTopic(), r.GetPartition(), r.GetOffset())})
		msgs[i] = kafkasrc.Message{Topic: r.GetSinkTopic(), Partition: r.GetSinkPartition(), Key: r.GetKey(), Value: r.GetValue(), Headers: hdrs}
	}
	target := jobspec.Sink(task.GetSpec())
	if !jobspec.Transactional(task.GetSpec()) {
		err := w.sinks.WriteIdempotent(ctx, target, k.GetProperties(), msgs)
		if err == nil {
			w.cfg.Failpoints.Hit("after-sink-write")
		}
		return err
	}
	r := task.GetRange()
	skipped, err := w.sinks.Transact(ctx, kafkasrc.TxnTask{
		Cluster:         target,
		Properties:      k.GetProperties(),
		TransactionalID: jobspec.TransactionalID(task.GetSpec(), r.GetTopic(), r.GetPartition()),
		Timeout:         k.GetTransactionTimeout().AsDuration(),
		Group:           kafkasrc.GroupID(job),
		Source:          kafkasrc.Range{Topic: r.GetTopic(), Partition: r.GetPartition(), From: r.GetFromOffset(), Until: r.GetUntilOffset()},
		BeforeCommit:    func() { w.cfg.Failpoints.Hit("mid-txn") },
	}, msgs)
	if err == nil {
		w.cfg.Failpoints.Hit("after-sink-write")
	}
	if skipped {
		w.logger.Info("range already committed to Kafka by an earlier attempt; not written again",
			"job", job, "batch", batch, "topic", r.GetTopic(), "partition", r.GetPartition(), "until", r.GetUntilOffset())
	}
	return err
}

// retryable tells transient failures (Kafka unreachable or slow, a task
// deadline) from those that a retry would repeat: a record the steps reject
// under the FAIL policy, offsets Kafka no longer has, a spec that does not compile.
func retryable(err error) bool {
	var re *steps.RecordError
	var fe *steps.FieldError
	switch {
	case errors.As(err, &re), errors.As(err, &fe),
		errors.Is(err, kafkasrc.ErrOffsetOutOfRange), errors.Is(err, kafkasrc.ErrInvalidRange):
		return false
	}
	return true
}
