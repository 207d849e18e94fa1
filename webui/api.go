package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// offsetsTimeout bounds the Kafka round trip behind a job's lag: a page
// shows the rest when Kafka is slow or unreachable.
const offsetsTimeout = 5 * time.Second

// rateBatches is how many batch intervals the jobs page's input rate
// averages over.
const rateBatches = 10

// Reads are authorized as the JobService methods they call; the cluster
// and workers pages, which have no method of their own, as ListJobs: any
// viewer may see them.
var (
	methodList    = sluicev1.JobService_ListJobs_FullMethodName
	methodGet     = sluicev1.JobService_GetJob_FullMethodName
	methodWatch   = sluicev1.JobService_WatchBatches_FullMethodName
	methodStop    = sluicev1.JobService_StopJob_FullMethodName
	methodResume  = sluicev1.JobService_ResumeJob_FullMethodName
	methodCluster = methodList
)

// pj encodes a message with protojson, the API's JSON mapping (as grpcurl
// prints it), compacted: protojson varies its spacing on purpose.
func pj(m proto.Message) json.RawMessage {
	b, err := protojson.Marshal(m)
	if err != nil {
		// Every message here is a valid one the JobService built.
		return json.RawMessage(`null`)
	}
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return b
	}
	return out.Bytes()
}

type clusterInfo struct {
	Leader     bool   `json:"leader"`
	LeaderAddr string `json:"leaderAddr,omitempty"`
	LeaderErr  string `json:"leaderError,omitempty"`
	Auth       bool   `json:"auth"`
}

func (s *server) clusterInfo(ctx context.Context) clusterInfo {
	ci := clusterInfo{Auth: s.cfg.Auth != nil}
	if s.cfg.Cluster == nil {
		return ci
	}
	ci.Leader = s.cfg.Cluster.IsLeader()
	addr, err := s.cfg.Cluster.Leader(ctx)
	ci.LeaderAddr = addr
	if err != nil {
		ci.LeaderErr = err.Error()
	}
	return ci
}

func (s *server) cluster(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.authorize(w, r, methodCluster)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.clusterInfo(ctx))
}

type workerJSON struct {
	ID            string    `json:"id"`
	Host          string    `json:"host,omitempty"`
	Labels        []string  `json:"labels"`
	Processors    []string  `json:"processors,omitempty"`
	Slots         int       `json:"slots"`
	Running       int       `json:"running"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// HeartbeatAgeMs is measured on the server, whose clock the heartbeat
	// time is on.
	HeartbeatAgeMs int64 `json:"heartbeatAgeMs"`
}

func (s *server) workers(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.authorize(w, r, methodCluster)
	if !ok {
		return
	}
	out := struct {
		Cluster clusterInfo  `json:"cluster"`
		Workers []workerJSON `json:"workers"`
	}{Cluster: s.clusterInfo(ctx), Workers: []workerJSON{}}
	if s.cfg.Cluster != nil {
		now := time.Now()
		for _, ws := range s.cfg.Cluster.Workers() {
			labels := ws.Labels
			if labels == nil {
				labels = []string{}
			}
			out.Workers = append(out.Workers, workerJSON{
				ID: ws.ID, Host: ws.Host, Labels: labels, Processors: ws.Processors, Slots: ws.Slots, Running: ws.Running,
				LastHeartbeat: ws.LastHeartbeat, HeartbeatAgeMs: now.Sub(ws.LastHeartbeat).Milliseconds(),
			})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type jobSummary struct {
	Job json.RawMessage `json:"job"`
	// InputRate is records per second over the recent batches.
	InputRate float64 `json:"inputRate"`
	// Lag is records behind the latest offsets over all partitions; nil
	// when Kafka could not be asked (LagError says why).
	Lag      *int64 `json:"lag"`
	LagError string `json:"lagError,omitempty"`
}

func (s *server) jobs(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.authorize(w, r, methodList)
	if !ok {
		return
	}
	resp, err := s.cfg.Jobs.ListJobs(ctx, &sluicev1.ListJobsRequest{})
	if err != nil {
		writeRPCError(w, err)
		return
	}
	out := make([]jobSummary, len(resp.GetJobs()))
	var wg sync.WaitGroup
	for i, job := range resp.GetJobs() {
		wg.Go(func() { out[i] = s.summarize(ctx, job) })
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, struct {
		Jobs []jobSummary `json:"jobs"`
	}{out})
}

func (s *server) summarize(ctx context.Context, job *sluicev1.Job) jobSummary {
	sum := jobSummary{Job: pj(job)}
	name := job.GetSpec().GetName()
	// One batch per tick at most, and a planned one: the window's batches.
	if bs, err := s.cfg.Jobs.ListBatches(ctx, &sluicev1.ListBatchesRequest{Job: name, Limit: rateBatches + 1}); err == nil {
		sum.InputRate = inputRate(bs.GetBatches(), batchInterval(job.GetSpec()), time.Now())
	}
	lag, err := s.lag(ctx, name)
	if err != nil {
		sum.LagError = status.Convert(err).Message()
	} else {
		sum.Lag = &lag
	}
	return sum
}

func (s *server) offsets(ctx context.Context, job string) (*sluicev1.GetOffsetsResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
	defer cancel()
	return s.cfg.Jobs.GetOffsets(ctx, &sluicev1.GetOffsetsRequest{Job: job})
}

func (s *server) lag(ctx context.Context, job string) (int64, error) {
	offs, err := s.offsets(ctx, job)
	if err != nil {
		return 0, err
	}
	return totalLag(offs.GetPartitions()), nil
}

// maxBatchLimit bounds the batches one job page asks for.
const maxBatchLimit = 1000

func (s *server) job(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.authorize(w, r, methodGet)
	if !ok {
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxBatchLimit {
			writeError(w, http.StatusBadRequest, "limit: want a number of batches from 1 to "+strconv.Itoa(maxBatchLimit)+", got "+strconv.Quote(v))
			return
		}
		limit = n
	}
	name := r.PathValue("name")
	jr, err := s.cfg.Jobs.GetJob(ctx, &sluicev1.GetJobRequest{Name: name})
	if err != nil {
		writeRPCError(w, err)
		return
	}
	br, err := s.cfg.Jobs.ListBatches(ctx, &sluicev1.ListBatchesRequest{Job: name, Limit: int32(limit)})
	if err != nil {
		writeRPCError(w, err)
		return
	}
	out := struct {
		Job          json.RawMessage   `json:"job"`
		Batches      []json.RawMessage `json:"batches"`
		Offsets      json.RawMessage   `json:"offsets,omitempty"`
		OffsetsError string            `json:"offsetsError,omitempty"`
	}{Job: pj(jr.GetJob()), Batches: []json.RawMessage{}}
	for _, b := range br.GetBatches() {
		out.Batches = append(out.Batches, pj(b))
	}
	if offs, err := s.offsets(ctx, name); err != nil {
		out.OffsetsError = status.Convert(err).Message()
	} else {
		out.Offsets = pj(offs)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) stop(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.authorize(w, r, methodStop)
	if !ok {
		return
	}
	resp, err := s.cfg.Jobs.StopJob(ctx, &sluicev1.StopJobRequest{Name: r.PathValue("name")})
	if err != nil {
		writeRPCError(w, err)
		return
	}
	s.log.Info("job stopped from the web UI", "job", r.PathValue("name"))
	writeJSON(w, http.StatusOK, struct {
		Job json.RawMessage `json:"job"`
	}{pj(resp.GetJob())})
}

func (s *server) resume(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.authorize(w, r, methodResume)
	if !ok {
		return
	}
	resp, err := s.cfg.Jobs.ResumeJob(ctx, &sluicev1.ResumeJobRequest{Name: r.PathValue("name")})
	if err != nil {
		writeRPCError(w, err)
		return
	}
	s.log.Info("job resumed from the web UI", "job", r.PathValue("name"))
	writeJSON(w, http.StatusOK, struct {
		Job json.RawMessage `json:"job"`
	}{pj(resp.GetJob())})
}
