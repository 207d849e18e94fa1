package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-stream/sluice/jobspec"
	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/offsetstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// NewGRPCServer returns a gRPC server with the coordinator's JobService and
// WorkerService, grpc.health.v1 and server reflection (so grpcurl needs no
// proto files). With the config's TLS and Auth it serves over TLS and
// checks every caller.
func NewGRPCServer(c *Coordinator, opts ...grpc.ServerOption) *grpc.Server {
	if c.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(c.cfg.TLS)))
	}
	if c.cfg.Auth != nil {
		opts = append(opts, c.cfg.Auth.ServerOptions()...)
	}
	// After authentication: a call it refuses ends before the metrics'
	// interceptors, which then see only callers that are let in.
	opts = append(opts,
		grpc.ChainUnaryInterceptor(c.metrics.grpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(c.metrics.grpc.StreamServerInterceptor()))
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(64 << 20),
		// Flow-control windows past a batch's tasks and results (streamWindow).
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		// Workers ping; a peer that stops answering (SIGSTOP, a partition) is
		// dropped by keepalive even when its TCP connection stays up.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 5 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	}, opts...)
	gs := grpc.NewServer(opts...)
	sluicev1.RegisterJobServiceServer(gs, &jobServer{c: c})
	sluicev1.RegisterWorkerServiceServer(gs, &workerServer{c: c})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	c.metrics.grpc.InitializeMetrics(gs)
	return gs
}

// jobServer adapts the user API to the store.
type jobServer struct {
	sluicev1.UnimplementedJobServiceServer
	c *Coordinator
}

func (s *jobServer) SubmitJob(ctx context.Context, req *sluicev1.SubmitJobRequest) (*sluicev1.SubmitJobResponse, error) {
	spec := req.GetSpec()
	if err := Validate(spec); err != nil {
		return nil, toStatus(err)
	}
	spec = proto.Clone(spec).(*sluicev1.JobSpec)
	var old offsetstore.Versioned[*sluicev1.Job]
	if req.GetUpdate() {
		var err error
		if old, err = s.c.store.Job(ctx, spec.GetName()); err != nil {
			return nil, toStatus(err)
		}
	}
	// Before any Kafka client is made for the spec: its credentials are
	// the stored ones, and the policy allows its clusters and properties.
	if err := keepSecrets(spec, old.Value.GetSpec()); err != nil {
		return nil, toStatus(err)
	}
	if err := CheckPolicy(spec, s.c.cfg.KafkaPolicy); err != nil {
		return nil, toStatus(err)
	}
	if err := s.checkTransactionTimeout(ctx, spec); err != nil {
		return nil, err
	}
	if err := s.checkStateKept(ctx, old.Value.GetSpec(), spec); err != nil {
		return nil, err
	}
	now := timestamppb.Now()
	job := &sluicev1.Job{Spec: spec, State: sluicev1.JobState_JOB_STATE_RUNNING, CreateTime: now, UpdateTime: now}
	if req.GetValidateOnly() {
		return s.dryRun(ctx, job, old.Value)
	}
	if !req.GetUpdate() {
		job.Incarnation = jobspec.NewIncarnation()
		if err := s.c.store.CreateJob(ctx, job); err != nil {
			if errors.Is(err, offsetstore.ErrExists) {
				return nil, status.Errorf(codes.AlreadyExists, "job %q exists; set update to replace its spec (its offsets are kept)", spec.GetName())
			}
			return nil, toStatus(err)
		}
		return &sluicev1.SubmitJobResponse{Job: redacted(s.withProgress(ctx, job))}, nil
	}
	// An update keeps the incarnation: the offsets, and the Kafka group and
	// transactional ids that go with them, are the same job's. The job's
	// runner writes its record too (its message, its state): a write in
	// between is not the user's conflict, so the update is applied again
	// on the record as it is now.
	for attempt := 1; ; attempt++ {
		job.CreateTime = old.Value.GetCreateTime()
		job.Incarnation = old.Value.GetIncarnation()
		err := s.c.store.UpdateJob(ctx, job, old.ModRevision)
		if err == nil {
			break
		}
		if !errors.Is(err, offsetstore.ErrConflict) || attempt == maxUpdateAttempts {
			return nil, toStatus(err)
		}
		if old, err = s.c.store.Job(ctx, spec.GetName()); err != nil {
			return nil, toStatus(err)
		}
	}
	return &sluicev1.SubmitJobResponse{Job: redacted(s.withProgress(ctx, job))}, nil
}

// dryRun answers a validate_only submit: the job it would store, or the
// error a real submit would meet, so a taken name is AlreadyExists too.
func (s *jobServer) dryRun(ctx context.Context, job, old *sluicev1.Job) (*sluicev1.SubmitJobResponse, error) {
	if old != nil {
		job.CreateTime, job.Incarnation = old.GetCreateTime(), old.GetIncarnation()
		return &sluicev1.SubmitJobResponse{Job: redacted(job)}, nil
	}
	_, err := s.c.store.Job(ctx, job.GetSpec().GetName())
	switch {
	case err == nil:
		return nil, status.Errorf(codes.AlreadyExists, "job %q exists; set update to replace its spec (its offsets are kept)", job.GetSpec().GetName())
	case !errors.Is(err, offsetstore.ErrNotFound):
		return nil, toStatus(err)
	}
	return &sluicev1.SubmitJobResponse{Job: redacted(job)}, nil
}

// CheckSpec checks a new job's spec offline as SubmitJob does before it
// asks etcd or Kafka anything (fields, CEL, secrets, the Kafka policy),
// and fails with the same gRPC status: `sluice validate`.
func CheckSpec(spec *sluicev1.JobSpec, policy kafkasrc.Policy) error {
	if err := Validate(spec); err != nil {
		return toStatus(err)
	}
	spec = proto.Clone(spec).(*sluicev1.JobSpec)
	if err := keepSecrets(spec, nil); err != nil {
		return toStatus(err)
	}
	return toStatus(CheckPolicy(spec, policy))
}

// maxUpdateAttempts bounds the tries of an update that the job's runner's
// own writes keep getting in the way of.
const maxUpdateAttempts = 5

// checkTransactionTimeout refuses a transactional Kafka sink whose
// transaction timeout the brokers would refuse (transaction.max.timeout.ms),
// which would otherwise fail every task. When Kafka cannot be asked, the job
// is accepted: the tasks will say so.
func (s *jobServer) checkTransactionTimeout(ctx context.Context, spec *sluicev1.JobSpec) error {
	if !jobspec.Transactional(spec) {
		return nil
	}
	timeout := spec.GetSink().GetKafka().GetTransactionTimeout().AsDuration()
	if timeout <= 0 {
		timeout = time.Minute
	}
	admin, err := s.c.admins.Get(jobspec.Sink(spec))
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	maxMs, err := admin.BrokerConfigInt(ctx, "transaction.max.timeout.ms")
	if err != nil {
		s.c.logger.Warn("could not check the sink's transaction timeout against the broker", "job", spec.GetName(), "error", err)
		return nil
	}
	if timeout.Milliseconds() > maxMs {
		return toStatus(invalid("sink.kafka.transaction_timeout", "%s is above the brokers' transaction.max.timeout.ms (%s): lower it or raise the broker setting",
			timeout, time.Duration(maxMs)*time.Millisecond))
	}
	return nil
}

func (s *jobServer) DeleteJob(ctx context.Context, req *sluicev1.DeleteJobRequest) (*sluicev1.DeleteJobResponse, error) {
	if err := s.c.store.DeleteJob(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &sluicev1.DeleteJobResponse{}, nil
}

func (s *jobServer) ListTransactions(ctx context.Context, req *sluicev1.ListTransactionsRequest) (*sluicev1.ListTransactionsResponse, error) {
	v, err := s.c.store.Job(ctx, req.GetJob())
	if err != nil {
		return nil, toStatus(err)
	}
	if !jobspec.PerPartitionTasks(v.Value.GetSpec()) {
		return &sluicev1.ListTransactionsResponse{}, nil
	}
	if err := CheckPolicy(v.Value.GetSpec(), s.c.cfg.KafkaPolicy); err != nil {
		return nil, toStatus(err)
	}
	txns, err := s.c.transactions(ctx, v.Value)
	if err != nil {
		return nil, kafkaStatus("ask Kafka for the transactions", err)
	}
	resp := &sluicev1.ListTransactionsResponse{}
	for _, t := range txns {
		resp.Transactions = append(resp.Transactions, &sluicev1.Transaction{
			TransactionalId: t.ID, State: t.State, ProducerId: t.ProducerID,
			ProducerEpoch: int32(t.ProducerEpoch), Partitions: t.Partitions,
		})
	}
	return resp, nil
}

func (s *jobServer) AbortTransactions(ctx context.Context, req *sluicev1.AbortTransactionsRequest) (*sluicev1.AbortTransactionsResponse, error) {
	v, err := s.settled(ctx, req.GetJob(), "abort its transactions (stopping it aborts them)")
	if err != nil {
		return nil, err
	}
	if err := CheckPolicy(v.Value.GetSpec(), s.c.cfg.KafkaPolicy); err != nil {
		return nil, toStatus(err)
	}
	aborted, err := s.c.abortTransactions(ctx, v.Value)
	if err != nil {
		return nil, kafkaStatus("abort transactions", err)
	}
	return &sluicev1.AbortTransactionsResponse{Aborted: aborted}, nil
}

// withProgress fills a job's output-only fields: its last committed batch
// and its Kafka consumer group.
func (s *jobServer) withProgress(ctx context.Context, job *sluicev1.Job) *sluicev1.Job {
	if id, err := s.c.store.CommittedBatch(ctx, job.GetSpec().GetName()); err == nil {
		job.LastBatchId = id
	}
	job.KafkaGroup = jobspec.GroupID(job.GetSpec().GetName(), job.GetIncarnation())
	return job
}

func (s *jobServer) GetJob(ctx context.Context, req *sluicev1.GetJobRequest) (*sluicev1.GetJobResponse, error) {
	v, err := s.c.store.Job(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &sluicev1.GetJobResponse{Job: redacted(s.withProgress(ctx, v.Value))}, nil
}

func (s *jobServer) ListJobs(ctx context.Context, _ *sluicev1.ListJobsRequest) (*sluicev1.ListJobsResponse, error) {
	jobs, err := s.c.store.Jobs(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	for i, j := range jobs {
		jobs[i] = redacted(s.withProgress(ctx, j))
	}
	return &sluicev1.ListJobsResponse{Jobs: jobs}, nil
}

func (s *jobServer) StopJob(ctx context.Context, req *sluicev1.StopJobRequest) (*sluicev1.StopJobResponse, error) {
	for range 5 {
		v, err := s.c.store.Job(ctx, req.GetName())
		if err != nil {
			return nil, toStatus(err)
		}
		if v.Value.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
			return &sluicev1.StopJobResponse{Job: redacted(s.withProgress(ctx, v.Value))}, nil
		}
		v.Value.State = sluicev1.JobState_JOB_STATE_STOPPED
		v.Value.Message = ""
		v.Value.UpdateTime = timestamppb.Now()
		err = s.c.store.UpdateJob(ctx, v.Value, v.ModRevision)
		if errors.Is(err, offsetstore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, toStatus(err)
		}
		return &sluicev1.StopJobResponse{Job: redacted(s.withProgress(ctx, v.Value))}, nil
	}
	return nil, status.Errorf(codes.Aborted, "job %q kept changing; try again", req.GetName())
}

// settled reads a job that must not be running, for resume and reset.
func (s *jobServer) settled(ctx context.Context, name, what string) (offsetstore.Versioned[*sluicev1.Job], error) {
	v, err := s.c.store.Job(ctx, name)
	if err != nil {
		return v, toStatus(err)
	}
	if v.Value.GetState() == sluicev1.JobState_JOB_STATE_RUNNING {
		return v, status.Errorf(codes.FailedPrecondition, "job %q is running: stop it before you %s", name, what)
	}
	return v, nil
}

func (s *jobServer) ResumeJob(ctx context.Context, req *sluicev1.ResumeJobRequest) (*sluicev1.ResumeJobResponse, error) {
	v, err := s.c.store.Job(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	if v.Value.GetState() == sluicev1.JobState_JOB_STATE_RUNNING {
		return &sluicev1.ResumeJobResponse{Job: redacted(s.withProgress(ctx, v.Value))}, nil
	}
	v.Value.State = sluicev1.JobState_JOB_STATE_RUNNING
	v.Value.Message = ""
	v.Value.UpdateTime = timestamppb.Now()
	if err := s.c.store.UpdateJob(ctx, v.Value, v.ModRevision); err != nil {
		return nil, toStatus(err)
	}
	return &sluicev1.ResumeJobResponse{Job: redacted(s.withProgress(ctx, v.Value))}, nil
}

func (s *jobServer) ResetOffsets(ctx context.Context, req *sluicev1.ResetOffsetsRequest) (*sluicev1.ResetOffsetsResponse, error) {
	v, err := s.settled(ctx, req.GetName(), "reset its offsets")
	if err != nil {
		return nil, err
	}
	spec := v.Value.GetSpec()
	if err := CheckPolicy(spec, s.c.cfg.KafkaPolicy); err != nil {
		return nil, toStatus(err)
	}
	topics := map[string]bool{}
	for _, t := range spec.GetSource().GetTopics() {
		topics[t] = true
	}
	if req.GetTo().GetKind() == nil {
		return nil, toStatus(invalid("to", "say where to move the offsets: position, explicit or timestamp"))
	}
	if err := validateStart(req.GetTo(), topics); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ve.Field = strings.Replace(ve.Field, "source.starting_offsets", "to", 1)
		}
		return nil, toStatus(err)
	}
	r := &jobRunner{spec: spec, name: spec.GetName(), logger: s.c.logger}
	admin, err := s.c.admins.Get(r.cluster())
	if err != nil {
		return nil, toStatus(err)
	}
	tps, err := r.partitions(ctx, admin, nil)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "ask Kafka for the partitions: %v", err)
	}
	offs, err := resolveStart(ctx, admin, req.GetTo(), tps)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "ask Kafka for the offsets: %v", err)
	}
	// Read the offsets and the batches the reset replaces, with their
	// revisions: the reset fails rather than overwrite a batch that commits
	// (or is planned) meanwhile.
	var offsRev int64
	switch cur, err := s.c.store.Offsets(ctx, spec.GetName()); {
	case err == nil:
		offsRev = cur.ModRevision
	case !errors.Is(err, offsetstore.ErrNotFound):
		return nil, toStatus(err)
	}
	var plannedID, plannedRev int64
	nextID := int64(1)
	last, err := s.c.store.LastBatch(ctx, spec.GetName())
	switch {
	case err == nil:
		offs.BatchId = last.Value.GetId()
		nextID = last.Value.GetId() + 1
		if last.Value.GetState() == sluicev1.BatchState_BATCH_STATE_PLANNED {
			plannedID, plannedRev = last.Value.GetId(), last.ModRevision
			offs.BatchId--
		}
	case !errors.Is(err, offsetstore.ErrNotFound):
		return nil, toStatus(err)
	}
	// A reset starts a new incarnation of the job, with a Kafka group of its
	// own: a task of the old incarnation whose Kafka transaction commits
	// late moves the old group, never the new one, so the resumed job does
	// not skip what the reset asks to reprocess. The group is set first: if
	// the reset then fails, the new group is never used.
	job := proto.Clone(v.Value).(*sluicev1.Job)
	job.Incarnation = jobspec.NewIncarnation()
	job.UpdateTime = timestamppb.Now()
	group := map[kafkasrc.TopicPartition]int64{}
	for _, po := range offs.GetOffsets() {
		group[kafkasrc.TopicPartition{Topic: po.GetTopic(), Partition: po.GetPartition()}] = po.GetOffset()
	}
	gadmin := admin
	if jobspec.Transactional(spec) {
		if gadmin, err = s.c.admins.Get(jobspec.Sink(spec)); err != nil {
			return nil, toStatus(err)
		}
	}
	groupID := jobspec.GroupID(spec.GetName(), job.GetIncarnation())
	if err := gadmin.CommitGroupOffsets(ctx, groupID, group); err != nil {
		return nil, status.Errorf(codes.Unavailable, "set the offsets of the job's new Kafka group %s: %v", groupID, err)
	}
	err = s.c.store.ResetOffsets(ctx, offsetstore.Reset{
		Job: job, JobRevision: v.ModRevision,
		Offsets: offs, OffsetsRevision: offsRev,
		PlannedID: plannedID, PlannedRevision: plannedRev, NextBatchID: nextID,
	})
	if errors.Is(err, offsetstore.ErrConflict) {
		return nil, status.Errorf(codes.Aborted, "job %q changed while its offsets were being reset (a batch was planned or committed, or the job was edited): nothing was reset; try again", spec.GetName())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	s.c.logger.Info("offsets reset", "job", spec.GetName(), "partitions", len(offs.GetOffsets()), "dropped_planned_batch", plannedID,
		"incarnation", job.GetIncarnation(), "kafka_group", groupID)
	return &sluicev1.ResetOffsetsResponse{Offsets: offs.GetOffsets()}, nil
}

func (s *jobServer) ListBatches(ctx context.Context, req *sluicev1.ListBatchesRequest) (*sluicev1.ListBatchesResponse, error) {
	if _, err := s.c.store.Job(ctx, req.GetJob()); err != nil {
		return nil, toStatus(err)
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 20
	}
	batches, err := s.c.store.Batches(ctx, req.GetJob(), min(limit, 10000))
	if err != nil {
		return nil, toStatus(err)
	}
	return &sluicev1.ListBatchesResponse{Batches: batches}, nil
}

func (s *jobServer) GetBatch(ctx context.Context, req *sluicev1.GetBatchRequest) (*sluicev1.GetBatchResponse, error) {
	b, err := s.c.store.Batch(ctx, req.GetJob(), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &sluicev1.GetBatchResponse{Batch: b}, nil
}

func (s *jobServer) WatchBatches(req *sluicev1.WatchBatchesRequest, stream grpc.ServerStreamingServer[sluicev1.WatchBatchesResponse]) error {
	ctx := stream.Context()
	store := s.c.store
	if _, err := store.Job(ctx, req.GetJob()); err != nil {
		return toStatus(err)
	}
	last := req.GetAfterBatchId()
	send := func(raw []byte) error {
		b := &sluicev1.Batch{}
		if err := offsetstore.Decode(raw, b); err != nil {
			return status.Errorf(codes.Internal, "decode batch: %v", err)
		}
		if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED || b.GetId() <= last {
			return nil
		}
		out := &sluicev1.WatchBatchesResponse{Batch: b}
		if req.GetIncludeResults() {
			r, err := store.Result(ctx, req.GetJob(), b.GetId())
			if err != nil && !errors.Is(err, offsetstore.ErrNotFound) {
				return toStatus(err)
			}
			out.Result = r
		}
		last = b.GetId()
		return stream.Send(out)
	}
	onlyNew := last <= 0
	for {
		// Read history and the revision to watch from in one request, so no
		// commit falls between them.
		resp, err := s.c.cfg.Etcd.Get(ctx, store.BatchesPrefix(req.GetJob()), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return toStatus(err)
		}
		if onlyNew {
			// Only new batches: skip everything committed so far.
			onlyNew = false
			if n := len(resp.Kvs); n > 0 {
				b := &sluicev1.Batch{}
				if err := offsetstore.Decode(resp.Kvs[n-1].Value, b); err == nil {
					last = b.GetId()
					if b.GetState() != sluicev1.BatchState_BATCH_STATE_COMMITTED {
						last--
					}
				}
			}
		} else {
			for _, kv := range resp.Kvs {
				if err := send(kv.Value); err != nil {
					return err
				}
			}
		}
		compacted, err := s.watchBatches(ctx, req.GetJob(), resp.Header.Revision+1, send)
		if err != nil || !compacted {
			return err
		}
		// etcd compacted the history the watch had yet to deliver (a
		// watcher that fell behind): read what is retained and go on from
		// the last batch sent, rather than fail the client's stream.
		s.c.logger.Debug("batch watch fell behind a compaction; re-reading", "job", req.GetJob(), "after_batch", last)
	}
}

// watchBatches sends the job's batches that change from revision rev on,
// until ctx ends (nil), sending fails, or etcd compacted rev (compacted).
func (s *jobServer) watchBatches(ctx context.Context, job string, rev int64, send func(raw []byte) error) (compacted bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := s.c.cfg.Etcd.Watch(wctx, s.c.store.BatchesPrefix(job), clientv3.WithPrefix(), clientv3.WithRev(rev))
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return true, nil
		}
		if err := wr.Err(); err != nil {
			return false, toStatus(err)
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			if err := send(ev.Kv.Value); err != nil {
				return false, err
			}
		}
	}
	return false, toStatus(ctx.Err())
}

// Results pages: at most jobspec.MaxResultsPage results (a larger limit is
// that maximum: the page says where the next starts), and about
// maxPageBytes.
const (
	defaultResultsLimit = jobspec.DefaultResultsPage
	maxResultsLimit     = jobspec.MaxResultsPage
	maxPageBytes        = 4 << 20
)

func (s *jobServer) GetResults(ctx context.Context, req *sluicev1.GetResultsRequest) (*sluicev1.GetResultsResponse, error) {
	switch {
	case req.GetLimit() < 0:
		return nil, toStatus(invalid("limit", "%d is negative: give at most %d results per page, or 0 for %d", req.GetLimit(), maxResultsLimit, defaultResultsLimit))
	case req.GetFromBatchId() < 0:
		return nil, toStatus(invalid("from_batch_id", "%d is negative (0 is the oldest retained batch)", req.GetFromBatchId()))
	case req.GetToBatchId() < 0:
		return nil, toStatus(invalid("to_batch_id", "%d is negative (0 is the newest batch)", req.GetToBatchId()))
	}
	if _, err := s.c.store.Job(ctx, req.GetJob()); err != nil {
		return nil, toStatus(err)
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = defaultResultsLimit
	}
	limit = min(limit, maxResultsLimit)
	ret, err := s.c.store.Retention(ctx, req.GetJob())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &sluicev1.GetResultsResponse{
		OldestRetainedBatchId: ret.OldestRetained,
		Pruned:                ret.Pruned(req.GetFromBatchId(), req.GetToBatchId()),
	}
	// One pass, at the revision the retention was read at: the page, and
	// (merge) the totals over every selected batch, merged a few dozen
	// results at a time so that memory holds one total per key.
	var pageBytes int
	var merged []*sluicev1.KeyAggregate
	var parts [][]*sluicev1.KeyAggregate
	flush := func() {
		if len(parts) > 0 {
			merged = steps.Merge(append([][]*sluicev1.KeyAggregate{merged}, parts...)...)
			parts = parts[:0]
		}
	}
	err = s.c.store.EachResult(ctx, req.GetJob(), req.GetFromBatchId(), req.GetToBatchId(), ret.Revision, func(r *sluicev1.BatchResult, size int) bool {
		if resp.NextFromBatchId == 0 {
			if len(resp.Results) < limit && (len(resp.Results) == 0 || pageBytes+size <= maxPageBytes) {
				resp.Results = append(resp.Results, r)
				pageBytes += size
			} else {
				resp.NextFromBatchId = r.GetBatchId()
			}
		}
		if !req.GetMerge() {
			return resp.NextFromBatchId == 0
		}
		parts = append(parts, r.GetAggregates())
		if len(parts) >= 64 {
			flush()
		}
		return true
	})
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetMerge() {
		flush()
		resp.Merged = merged
		if resp.Merged == nil {
			resp.Merged = []*sluicev1.KeyAggregate{}
		}
	}
	return resp, nil
}

func (s *jobServer) GetOffsets(ctx context.Context, req *sluicev1.GetOffsetsRequest) (*sluicev1.GetOffsetsResponse, error) {
	job, err := s.c.store.Job(ctx, req.GetJob())
	if err != nil {
		return nil, toStatus(err)
	}
	offs, err := s.c.store.Offsets(ctx, req.GetJob())
	if errors.Is(err, offsetstore.ErrNotFound) {
		return &sluicev1.GetOffsetsResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &sluicev1.GetOffsetsResponse{BatchId: offs.Value.GetBatchId()}
	latest := s.latest(ctx, job.Value.GetSpec(), offs.Value)
	for _, po := range offs.Value.GetOffsets() {
		p := &sluicev1.PartitionProgress{Topic: po.GetTopic(), Partition: po.GetPartition(), Committed: po.GetOffset(), Latest: -1, Lag: -1}
		if l, ok := latest[kafkasrc.TopicPartition{Topic: po.GetTopic(), Partition: po.GetPartition()}]; ok {
			p.Latest, p.Lag = l, max(l-po.GetOffset(), 0)
		}
		resp.Partitions = append(resp.Partitions, p)
	}
	return resp, nil
}

// latest asks Kafka for the partitions' latest offsets, best effort: lag is
// informative, and Kafka being away must not hide the committed offsets.
func (s *jobServer) latest(ctx context.Context, spec *sluicev1.JobSpec, offs *sluicev1.CommittedOffsets) map[kafkasrc.TopicPartition]int64 {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r := &jobRunner{spec: spec}
	admin, err := s.c.admins.Get(r.cluster())
	if err != nil {
		return nil
	}
	tps := make([]kafkasrc.TopicPartition, 0, len(offs.GetOffsets()))
	for _, po := range offs.GetOffsets() {
		tps = append(tps, kafkasrc.TopicPartition{Topic: po.GetTopic(), Partition: po.GetPartition()})
	}
	latest, err := admin.LatestOffsets(ctx, tps)
	if err != nil {
		return nil
	}
	return latest
}

// Serve serves gs on lis until ctx ends, then drains in-flight calls for up
// to five seconds before closing the rest (watch streams never end on their own).
func Serve(ctx context.Context, gs *grpc.Server, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("grpc serve: %w", err)
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc serve: %w", err)
	}
	return nil
}

// streamWindow and connWindow are the HTTP/2 flow-control windows of the
// coordinator's gRPC server (and the workers' connections to it). A
// task of a 10,000-partition job carries 1,700 ranges (about 57 KB); with
// grpc-go's default windows, which start at 64 KiB and grow only with its
// estimate of the link's bandwidth-delay product (small on a fast link),
// a batch's tasks to one worker waited for window updates on the way.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)
