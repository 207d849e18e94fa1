// Package client is the Go SDK of Sluice: submit jobs, follow their batches
// and read their results and offsets.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/sluice-stream/sluice/auth"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Client talks to a Sluice cluster. Any coordinator answers; when one is
// unreachable the next address is tried.
type Client struct {
	conn *grpc.ClientConn
	jobs sluicev1.JobServiceClient
}

// WithTLS dials over TLS; auth.ClientTLS builds cfg from a CA file and,
// for mutual TLS, a client certificate and key.
func WithTLS(cfg *tls.Config) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// WithToken sends token (from a token file, or a JWT) as
// "authorization: Bearer <token>" on every call. Without WithTLS, Dial
// refuses it unless every address is loopback: the token would cross the
// network in the clear.
func WithToken(token string) grpc.DialOption {
	return tokenOption{token: token}
}

// tokenOption is read by Dial, which knows the addresses.
type tokenOption struct {
	grpc.EmptyDialOption
	token string
}

// Dial connects to the coordinators at addrs (host:port).
func Dial(addrs []string, opts ...grpc.DialOption) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("client: at least one coordinator address is required")
	}
	loopback := true
	for _, a := range addrs {
		loopback = loopback && auth.IsLoopback(a)
	}
	token := false
	for _, o := range opts {
		if t, ok := o.(tokenOption); ok {
			// gRPC refuses to dial when the token needs TLS and has none.
			opts = append(opts, grpc.WithPerRPCCredentials(auth.Bearer{Token: t.token, AllowPlaintext: loopback}))
			token = true
		}
	}
	r := manual.NewBuilderWithScheme("sluice")
	state := resolver.State{}
	for _, a := range addrs {
		// Each coordinator's TLS certificate is checked against its own
		// address, not the channel's name.
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: a})
	}
	r.InitialState(state)
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}, opts...)
	conn, err := grpc.NewClient(r.Scheme()+":///coordinators", opts...)
	if err != nil && token && !loopback {
		return nil, fmt.Errorf("client: dial %v: a token is sent only over TLS (WithTLS) off loopback: %w", addrs, err)
	}
	if err != nil {
		return nil, fmt.Errorf("client: dial %v: %w", addrs, err)
	}
	return &Client{conn: conn, jobs: sluicev1.NewJobServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// JobService is the raw gRPC client, for calls the helpers do not cover.
func (c *Client) JobService() sluicev1.JobServiceClient { return c.jobs }

// Submit creates a job. Invalid specs fail with codes.InvalidArgument naming
// the field (status.Code(err), and a BadRequest detail).
func (c *Client) Submit(ctx context.Context, spec *sluicev1.JobSpec) (*sluicev1.Job, error) {
	resp, err := c.jobs.SubmitJob(ctx, &sluicev1.SubmitJobRequest{Spec: spec})
	return resp.GetJob(), err
}

// Update replaces a job's spec, keeping its committed offsets, and runs it.
func (c *Client) Update(ctx context.Context, spec *sluicev1.JobSpec) (*sluicev1.Job, error) {
	resp, err := c.jobs.SubmitJob(ctx, &sluicev1.SubmitJobRequest{Spec: spec, Update: true})
	return resp.GetJob(), err
}

// Job reads one job.
func (c *Client) Job(ctx context.Context, name string) (*sluicev1.Job, error) {
	resp, err := c.jobs.GetJob(ctx, &sluicev1.GetJobRequest{Name: name})
	return resp.GetJob(), err
}

// Jobs lists the jobs.
func (c *Client) Jobs(ctx context.Context) ([]*sluicev1.Job, error) {
	resp, err := c.jobs.ListJobs(ctx, &sluicev1.ListJobsRequest{})
	return resp.GetJobs(), err
}

// Stop stops a job; its offsets are kept.
func (c *Client) Stop(ctx context.Context, name string) (*sluicev1.Job, error) {
	resp, err := c.jobs.StopJob(ctx, &sluicev1.StopJobRequest{Name: name})
	return resp.GetJob(), err
}

// Resume runs a stopped or failed job again from its committed offsets.
func (c *Client) Resume(ctx context.Context, name string) (*sluicev1.Job, error) {
	resp, err := c.jobs.ResumeJob(ctx, &sluicev1.ResumeJobRequest{Name: name})
	return resp.GetJob(), err
}

// ResetOffsets moves a stopped or failed job's offsets.
func (c *Client) ResetOffsets(ctx context.Context, name string, to *sluicev1.StartingOffsets) ([]*sluicev1.PartitionOffset, error) {
	resp, err := c.jobs.ResetOffsets(ctx, &sluicev1.ResetOffsetsRequest{Name: name, To: to})
	return resp.GetOffsets(), err
}

// Delete stops and deletes a job with its offsets, batches and results.
func (c *Client) Delete(ctx context.Context, name string) error {
	_, err := c.jobs.DeleteJob(ctx, &sluicev1.DeleteJobRequest{Name: name})
	return err
}

// Transactions lists the Kafka sink transactions of a job.
func (c *Client) Transactions(ctx context.Context, job string) ([]*sluicev1.Transaction, error) {
	resp, err := c.jobs.ListTransactions(ctx, &sluicev1.ListTransactionsRequest{Job: job})
	return resp.GetTransactions(), err
}

// AbortTransactions aborts the open Kafka sink transactions of a job that is
// not running, returning the transactional ids aborted.
func (c *Client) AbortTransactions(ctx context.Context, job string) ([]string, error) {
	resp, err := c.jobs.AbortTransactions(ctx, &sluicev1.AbortTransactionsRequest{Job: job})
	return resp.GetAborted(), err
}

// Batches lists up to limit of a job's batches, newest first.
func (c *Client) Batches(ctx context.Context, job string, limit int) ([]*sluicev1.Batch, error) {
	resp, err := c.jobs.ListBatches(ctx, &sluicev1.ListBatchesRequest{Job: job, Limit: int32(limit)})
	return resp.GetBatches(), err
}

// Results reads the collect results of the retained batches from..to (0 =
// unbounded), every page of them, and their merged per-key totals when
// merge is set. Batches pruned by the coordinator's retention
// (--keep-batches, --keep-bytes) are missing from both: the response's
// pruned field says so. AllResults reads the pages without holding them.
func (c *Client) Results(ctx context.Context, job string, from, to int64, merge bool) (*sluicev1.GetResultsResponse, error) {
	var results []*sluicev1.BatchResult
	resp, err := c.AllResults(ctx, &sluicev1.GetResultsRequest{Job: job, FromBatchId: from, ToBatchId: to, Merge: merge}, func(r *sluicev1.BatchResult) error {
		results = append(results, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	resp.Results = results
	return resp, nil
}

// AllResults follows the pages of req (next_from_batch_id), calling fn with
// each result, oldest first, until fn returns an error. It returns the first
// page's answer without its results: merged (which covers every selected
// retained batch), pruned and oldest_retained_batch_id.
func (c *Client) AllResults(ctx context.Context, req *sluicev1.GetResultsRequest, fn func(*sluicev1.BatchResult) error) (*sluicev1.GetResultsResponse, error) {
	req = proto.Clone(req).(*sluicev1.GetResultsRequest)
	var first *sluicev1.GetResultsResponse
	for {
		resp, err := c.jobs.GetResults(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, r := range resp.GetResults() {
			if err := fn(r); err != nil {
				return nil, err
			}
		}
		if first == nil {
			first = resp
			// The totals came with the first page; the next pages need not
			// merge everything again.
			req.Merge = false
		}
		next := resp.GetNextFromBatchId()
		if next == 0 {
			break
		}
		if next <= req.GetFromBatchId() {
			return nil, fmt.Errorf("client: results of %s: next page from batch %d does not advance past %d", req.GetJob(), next, req.GetFromBatchId())
		}
		req.FromBatchId = next
	}
	first.Results, first.NextFromBatchId = nil, 0
	return first, nil
}

// Offsets reads a job's committed offsets and lag.
func (c *Client) Offsets(ctx context.Context, job string) (*sluicev1.GetOffsetsResponse, error) {
	return c.jobs.GetOffsets(ctx, &sluicev1.GetOffsetsRequest{Job: job})
}

// Watch calls fn for every batch of job that commits after afterBatchID
// (0: only new ones) until ctx ends or fn returns an error.
func (c *Client) Watch(ctx context.Context, job string, afterBatchID int64, withResults bool, fn func(*sluicev1.WatchBatchesResponse) error) error {
	stream, err := c.jobs.WatchBatches(ctx, &sluicev1.WatchBatchesRequest{Job: job, AfterBatchId: afterBatchID, IncludeResults: withResults})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(msg); err != nil {
			return err
		}
	}
}

// ParseSpec reads a job spec in the protobuf JSON mapping, or the same
// document written as YAML.
func ParseSpec(data []byte, yamlDoc bool) (*sluicev1.JobSpec, error) {
	if yamlDoc {
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return nil, fmt.Errorf("parse YAML: %w", err)
		}
		data = j
	}
	spec := &sluicev1.JobSpec{}
	if err := protojson.Unmarshal(data, spec); err != nil {
		return nil, fmt.Errorf("parse job spec: %w", err)
	}
	return spec, nil
}

// LoadSpec reads a job file (.json, .yaml or .yml; "-" is standard input as JSON).
func LoadSpec(path string) (*sluicev1.JobSpec, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read job file: %w", err)
	}
	ext := strings.ToLower(filepath.Ext(path))
	spec, err := ParseSpec(data, ext == ".yaml" || ext == ".yml")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}
