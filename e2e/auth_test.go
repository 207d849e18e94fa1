package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/dev"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// security is what a secured test cluster and its callers use: a CA with
// certificates, a token file and a JWT signing key.
type security struct {
	certs     auth.DevCerts
	tokens    map[string]string // principal name -> token
	tokenFile string
	jwtKey    *ecdsa.PrivateKey
	jwtPub    string
}

func newSecurity(t *testing.T) *security {
	t.Helper()
	dir := t.TempDir()
	certs, err := auth.EnsureDevCerts(filepath.Join(dir, "tls"), []auth.DevClient{
		{Name: "admin", Role: auth.RoleAdmin}, {Name: "viewer", Role: auth.RoleViewer},
		{Name: "w1", Role: auth.RoleWorker}, {Name: "w2", Role: auth.RoleWorker}, {Name: "w3", Role: auth.RoleWorker},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &security{certs: certs, tokens: map[string]string{}, tokenFile: filepath.Join(dir, "tokens")}
	file := "# role name token\n"
	for _, e := range []struct{ role, name string }{{"admin", "alice"}, {"viewer", "bob"}, {"worker", "w1"}, {"worker", "w2"}, {"worker", "w3"}} {
		tok := fmt.Sprintf("%s-token-%x", e.name, randomBytes(t, 16))
		s.tokens[e.name] = tok
		file += fmt.Sprintf("%s %s %s\n", e.role, e.name, tok)
	}
	if err := os.WriteFile(s.tokenFile, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	s.jwtKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&s.jwtKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	s.jwtPub = filepath.Join(dir, "jwt.pub")
	if err := os.WriteFile(s.jwtPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// coord serves TLS with tokens and JWTs; mutual TLS too when mtls is set.
func (s *security) coord(t *testing.T, mtls bool) func(*coordinator.Config) {
	clientCA := ""
	if mtls {
		clientCA = s.certs.CA()
	}
	tlsCfg, err := auth.ServerTLS(s.certs.ServerCert(), s.certs.ServerKey(), clientCA)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{TokenFile: s.tokenFile, JWTPublicKey: s.jwtPub, ClientCerts: mtls})
	if err != nil {
		t.Fatal(err)
	}
	return func(c *coordinator.Config) { c.TLS, c.Auth = tlsCfg, a }
}

// clientTLS trusts the CA and presents cert's certificate ("" for none).
func (s *security) clientTLS(t *testing.T, cert string) *tls.Config {
	t.Helper()
	c, k := "", ""
	if cert != "" {
		c, k = s.certs.ClientCert(cert), s.certs.ClientKey(cert)
	}
	cfg, err := auth.ClientTLS(s.certs.CA(), c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// sdk is the SDK's options: TLS with cert ("" none) and token ("" none).
func (s *security) sdk(t *testing.T, cert, token string) []grpc.DialOption {
	opts := []grpc.DialOption{client.WithTLS(s.clientTLS(t, cert))}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return opts
}

// conn is a raw gRPC connection over TLS with cert ("" none) and token ("" none).
func (s *security) conn(t *testing.T, addr, cert, token string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(s.clientTLS(t, cert)))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.Bearer{Token: token}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (s *security) jwt(t *testing.T, key *ecdsa.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenCluster serves TLS, tokens and JWTs (no client certificates); its
// workers authenticate with their tokens and its Client is the admin.
func tokenCluster(t *testing.T, s *security, opts clusterOptions) *testCluster {
	opts.coord = s.coord(t, false)
	opts.worker = func(w *worker.Config) {
		w.TLS, w.Token = s.clientTLS(t, ""), s.tokens[w.ID]
	}
	opts.dial = s.sdk(t, "", s.tokens["alice"])
	return newTestCluster(t, opts)
}

// rpc is one method of the API, called with empty requests.
type rpc struct {
	method string
	call   func(ctx context.Context, conn *grpc.ClientConn) error
}

func allRPCs() []rpc {
	js := func(conn *grpc.ClientConn) sluicev1.JobServiceClient { return sluicev1.NewJobServiceClient(conn) }
	unary := func(method string, f func(ctx context.Context, c sluicev1.JobServiceClient) error) rpc {
		return rpc{method, func(ctx context.Context, conn *grpc.ClientConn) error { return f(ctx, js(conn)) }}
	}
	return []rpc{
		unary(sluicev1.JobService_SubmitJob_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.SubmitJob(ctx, &sluicev1.SubmitJobRequest{})
			return err
		}),
		unary(sluicev1.JobService_GetJob_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.GetJob(ctx, &sluicev1.GetJobRequest{Name: "none"})
			return err
		}),
		unary(sluicev1.JobService_ListJobs_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.ListJobs(ctx, &sluicev1.ListJobsRequest{})
			return err
		}),
		unary(sluicev1.JobService_StopJob_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.StopJob(ctx, &sluicev1.StopJobRequest{Name: "none"})
			return err
		}),
		unary(sluicev1.JobService_ResumeJob_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.ResumeJob(ctx, &sluicev1.ResumeJobRequest{Name: "none"})
			return err
		}),
		unary(sluicev1.JobService_ResetOffsets_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.ResetOffsets(ctx, &sluicev1.ResetOffsetsRequest{Name: "none"})
			return err
		}),
		unary(sluicev1.JobService_DeleteJob_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.DeleteJob(ctx, &sluicev1.DeleteJobRequest{Name: "none"})
			return err
		}),
		unary(sluicev1.JobService_ListTransactions_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.ListTransactions(ctx, &sluicev1.ListTransactionsRequest{Job: "none"})
			return err
		}),
		unary(sluicev1.JobService_AbortTransactions_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.AbortTransactions(ctx, &sluicev1.AbortTransactionsRequest{Job: "none"})
			return err
		}),
		unary(sluicev1.JobService_ListBatches_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.ListBatches(ctx, &sluicev1.ListBatchesRequest{Job: "none"})
			return err
		}),
		unary(sluicev1.JobService_GetBatch_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.GetBatch(ctx, &sluicev1.GetBatchRequest{Job: "none", Id: 1})
			return err
		}),
		unary(sluicev1.JobService_WatchBatches_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			st, err := c.WatchBatches(ctx, &sluicev1.WatchBatchesRequest{Job: "none"})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}),
		unary(sluicev1.JobService_GetResults_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.GetResults(ctx, &sluicev1.GetResultsRequest{Job: "none"})
			return err
		}),
		unary(sluicev1.JobService_GetOffsets_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.GetOffsets(ctx, &sluicev1.GetOffsetsRequest{Job: "none"})
			return err
		}),
		unary(sluicev1.JobService_GetState_FullMethodName, func(ctx context.Context, c sluicev1.JobServiceClient) error {
			_, err := c.GetState(ctx, &sluicev1.GetStateRequest{Job: "none"})
			return err
		}),
		{sluicev1.WorkerService_Connect_FullMethodName, func(ctx context.Context, conn *grpc.ClientConn) error {
			// Registers as w3, a worker the cluster does not run.
			st, err := sluicev1.NewWorkerServiceClient(conn).Connect(ctx)
			if err != nil {
				return err
			}
			// A refused stream ends with io.EOF on Send; Recv has the status.
			_ = st.Send(&sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Register{Register: &sluicev1.Register{WorkerId: "w3", Slots: 1}}})
			_, err = st.Recv()
			return err
		}},
	}
}

// TestAuthEveryMethodRefusesNoCredentials calls every JobService and
// WorkerService method over TLS: without credentials (or with a wrong
// token) each is Unauthenticated; with a token, each answers or is
// PermissionDenied as its role says.
func TestAuthEveryMethodRefusesNoCredentials(t *testing.T) {
	s := newSecurity(t)
	tc := tokenCluster(t, s, clusterOptions{workers: 1, topics: []string{"t"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitLeader(t, tc)
	anon := s.conn(t, tc.Addr, "", "")
	forged := s.conn(t, tc.Addr, "", "alice-token-000000000000000000000000")
	viewer := s.conn(t, tc.Addr, "", s.tokens["bob"])
	admin := s.conn(t, tc.Addr, "", s.tokens["alice"])
	w3 := s.conn(t, tc.Addr, "", s.tokens["w3"])
	adminOnly := map[string]bool{
		sluicev1.JobService_SubmitJob_FullMethodName: true, sluicev1.JobService_StopJob_FullMethodName: true,
		sluicev1.JobService_ResumeJob_FullMethodName: true, sluicev1.JobService_ResetOffsets_FullMethodName: true,
		sluicev1.JobService_DeleteJob_FullMethodName: true, sluicev1.JobService_AbortTransactions_FullMethodName: true,
	}
	rpcs := allRPCs()
	if n := len(sluicev1.JobService_ServiceDesc.Methods) + len(sluicev1.JobService_ServiceDesc.Streams) + 1; len(rpcs) != n {
		t.Fatalf("the table has %d methods, the services %d", len(rpcs), n)
	}
	for _, r := range rpcs {
		connect := r.method == sluicev1.WorkerService_Connect_FullMethodName
		// authOK: the call passed authentication and authorization (it may
		// still fail, e.g. NotFound for a job that does not exist).
		authOK := func(err error) bool {
			c := status.Code(err)
			return c != codes.Unauthenticated && c != codes.PermissionDenied && c != codes.Unavailable
		}
		if err := r.call(ctx, anon); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "no credentials") {
			t.Errorf("%s without credentials: %v, want Unauthenticated naming the missing credentials", r.method, err)
		}
		if err := r.call(ctx, forged); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s with a wrong token: %v, want Unauthenticated", r.method, err)
		}
		err := r.call(ctx, viewer)
		if adminOnly[r.method] || connect {
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "bob") {
				t.Errorf("%s as a viewer: %v, want PermissionDenied naming bob", r.method, err)
			}
		} else if !authOK(err) {
			t.Errorf("%s as a viewer: %v, want it allowed", r.method, err)
		}
		err = r.call(ctx, admin)
		if connect {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s as an admin: %v, want PermissionDenied", r.method, err)
			}
		} else if !authOK(err) {
			t.Errorf("%s as an admin: %v, want it allowed", r.method, err)
		}
		err = r.call(ctx, w3)
		if connect {
			if !authOK(err) {
				t.Errorf("%s as worker w3: %v, want it allowed", r.method, err)
			}
		} else if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s as a worker: %v, want PermissionDenied", r.method, err)
		}
	}
	// A plaintext client reaches nothing on a TLS coordinator.
	plain, err := grpc.NewClient(tc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := sluicev1.NewJobServiceClient(plain).ListJobs(ctx, &sluicev1.ListJobsRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext ListJobs on a TLS coordinator: %v, want Unavailable", err)
	}
	// The SDK will not send a token in the clear to a non-loopback address.
	if _, err := client.Dial([]string{"192.0.2.1:7070"}, client.WithToken(s.tokens["bob"])); err == nil || !strings.Contains(err.Error(), "only over TLS") {
		t.Errorf("SDK token without TLS to a remote address: %v, want refused", err)
	}
}

// TestAuthTokensRunJob: on a TLS coordinator with a token file, whose
// workers authenticate with their tokens, a viewer cannot submit but can
// list, and the admin's job runs to exact counts.
func TestAuthTokensRunJob(t *testing.T) {
	const topic, parts = "secure", 4
	s := newSecurity(t)
	tc := tokenCluster(t, s, clusterOptions{workers: 2, partitions: parts, topics: []string{topic}})
	ctx := context.Background()
	viewer, err := client.Dial([]string{tc.Addr}, s.sdk(t, "", s.tokens["bob"])...)
	if err != nil {
		t.Fatal(err)
	}
	defer viewer.Close()
	spec := countJob("secure-count", tc.Brokers, topic)
	if _, err := viewer.Submit(ctx, spec); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a viewer's submit: %v, want PermissionDenied", err)
	}
	if jobs, err := viewer.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Fatalf("a viewer's list: %v, %v; want no jobs", jobs, err)
	}
	str := newStream()
	str.produce(t, tc.Brokers, topic, parts, 2000, 0)
	if _, err := tc.Client.Submit(ctx, spec); err != nil {
		t.Fatalf("the admin's submit: %v", err)
	}
	str.produce(t, tc.Brokers, topic, parts, 2000, 0)
	verifyExact(t, tc.Client, spec.GetName(), str, 60*time.Second)
	jobs, err := viewer.Jobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].GetSpec().GetName() != spec.GetName() {
		t.Fatalf("a viewer's list: %v, %v; want %s", jobs, err, spec.GetName())
	}
	if err := viewer.Delete(ctx, spec.GetName()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a viewer's delete: %v, want PermissionDenied", err)
	}
}

// TestAuthJWT: a JWT signed by the configured key authenticates its sub in
// its role; an expired one, one signed by another key and one without a
// role are Unauthenticated.
func TestAuthJWT(t *testing.T) {
	s := newSecurity(t)
	tc := tokenCluster(t, s, clusterOptions{workers: 1, topics: []string{"t"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name     string
		token    string
		list     codes.Code
		submit   codes.Code
		contains string
	}{
		{"valid admin", s.jwt(t, s.jwtKey, jwt.MapClaims{"sub": "carol", "role": "admin", "exp": hour}), codes.OK, codes.InvalidArgument, ""},
		{"valid viewer", s.jwt(t, s.jwtKey, jwt.MapClaims{"sub": "dave", "role": "viewer", "exp": hour}), codes.OK, codes.PermissionDenied, "dave"},
		{"expired", s.jwt(t, s.jwtKey, jwt.MapClaims{"sub": "carol", "role": "admin", "exp": time.Now().Add(-time.Minute).Unix()}), codes.Unauthenticated, codes.Unauthenticated, "expired"},
		{"no exp", s.jwt(t, s.jwtKey, jwt.MapClaims{"sub": "carol", "role": "admin"}), codes.Unauthenticated, codes.Unauthenticated, "exp"},
		{"wrong key", s.jwt(t, other, jwt.MapClaims{"sub": "carol", "role": "admin", "exp": hour}), codes.Unauthenticated, codes.Unauthenticated, "signature is invalid"},
		{"missing role", s.jwt(t, s.jwtKey, jwt.MapClaims{"sub": "carol", "exp": hour}), codes.Unauthenticated, codes.Unauthenticated, "no role claim"},
	}
	for _, tc2 := range tests {
		t.Run(tc2.name, func(t *testing.T) {
			c, err := client.Dial([]string{tc.Addr}, s.sdk(t, "", tc2.token)...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Jobs(ctx); status.Code(err) != tc2.list {
				t.Errorf("list: %v, want %v", err, tc2.list)
			}
			// An empty spec: an admin gets as far as validation.
			_, err = c.Submit(ctx, &sluicev1.JobSpec{})
			if status.Code(err) != tc2.submit || (tc2.contains != "" && !strings.Contains(err.Error(), tc2.contains)) {
				t.Errorf("submit: %v, want %v containing %q", err, tc2.submit, tc2.contains)
			}
		})
	}
}

// TestAuthMutualTLS: every caller must present a certificate signed by the
// CA. A worker registers only under its certificate's (or token's) name:
// a worker certificate or token cannot take another worker's id, and a
// result for a task sent to another worker is not accepted; the job's
// counts stay exact.
func TestAuthMutualTLS(t *testing.T) {
	const topic, parts = "mtls", 4
	s := newSecurity(t)
	logs := &syncBuffer{}
	released := make(chan struct{})
	held := make(chan *sluicev1.Task, 1)
	var once sync.Once
	opts := clusterOptions{workers: 1, partitions: parts, topics: []string{topic}}
	coord := s.coord(t, true)
	opts.coord = func(c *coordinator.Config) {
		coord(c)
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: logs})
	}
	opts.worker = func(w *worker.Config) {
		w.TLS = s.clientTLS(t, w.ID)
		w.Labels = []string{"real"}
		// w1 holds its first result until the forgery was tried.
		w.BeforeResult = func(task *sluicev1.Task) {
			first := false
			once.Do(func() { first = true })
			if first {
				held <- task
				<-released
			}
		}
	}
	opts.dial = s.sdk(t, "admin", "")
	tc := newTestCluster(t, opts)
	t.Cleanup(func() {
		select {
		case <-released:
		default:
			close(released)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitLeader(t, tc)

	// No client certificate: the TLS handshake fails.
	if _, err := sluicev1.NewJobServiceClient(s.conn(t, tc.Addr, "", s.tokens["alice"])).ListJobs(ctx, &sluicev1.ListJobsRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("ListJobs without a client certificate: %v, want Unavailable", err)
	}
	register := func(conn *grpc.ClientConn, id string) (grpc.BidiStreamingClient[sluicev1.ConnectRequest, sluicev1.ConnectResponse], error) {
		st, err := sluicev1.NewWorkerServiceClient(conn).Connect(ctx)
		if err != nil {
			return nil, err
		}
		_ = st.Send(&sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Register{Register: &sluicev1.Register{WorkerId: id, Slots: 1}}})
		_, err = st.Recv()
		return st, err
	}
	for _, bad := range []struct {
		name, cert, token, as, principal string
	}{
		{"w2's certificate as w1", "w2", "", "w1", "w2"},
		{"w1's certificate as w9", "w1", "", "w9", "w1"},
		{"w2's token as w1", "viewer", s.tokens["w2"], "w1", "w2"},
	} {
		_, err := register(s.conn(t, tc.Addr, bad.cert, bad.token), bad.as)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), bad.principal) || !strings.Contains(err.Error(), `"`+bad.as+`"`) {
			t.Errorf("%s: %v, want PermissionDenied naming %s and %q", bad.name, err, bad.principal, bad.as)
		}
	}
	if _, err := register(s.conn(t, tc.Addr, "viewer", ""), "viewer"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a viewer's certificate registering: %v, want PermissionDenied", err)
	}

	// w3 is a worker in its own right; it tries to answer w1's task.
	w3, err := register(s.conn(t, tc.Addr, "w3", ""), "w3")
	if err != nil {
		t.Fatalf("w3 registers as itself: %v", err)
	}
	str := newStream()
	str.produce(t, tc.Brokers, topic, parts, 2000, 0)
	spec := countJob("mtls-count", tc.Brokers, topic)
	// Only w1 carries the label: w3 is sent no task.
	spec.Placement = &sluicev1.Placement{Mode: sluicev1.PlacementMode_PLACEMENT_MODE_FIXED,
		Fixed: []*sluicev1.FixedPlacement{{Topic: topic, WorkerLabel: "real"}}}
	if _, err := tc.Client.Submit(ctx, spec); err != nil {
		t.Fatalf("submit: %v", err)
	}
	var task *sluicev1.Task
	select {
	case task = <-held:
	case <-ctx.Done():
		t.Fatal("w1 ran no task")
	}
	forged := &sluicev1.TaskResult{
		Key: task.GetKey(), SpecVersion: task.GetSpecVersion(), Range: task.GetRange(), Ranges: task.GetRanges(),
		RecordsIn: 1, Aggregates: []*sluicev1.KeyAggregate{{Key: "forged", Count: 1000000}},
	}
	if err := w3.Send(&sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Result{Result: forged}}); err != nil {
		t.Fatalf("w3 sends its forgery: %v", err)
	}
	// The coordinator says it dropped it; then w1 answers.
	for !strings.Contains(logs.String(), "dropping a result that does not match its dispatch") || !strings.Contains(logs.String(), "sent to w1's stream, came on w3's") {
		select {
		case <-ctx.Done():
			t.Fatalf("the coordinator did not drop w3's forged result; logs:\n%s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(released)
	verifyExact(t, tc.Client, spec.GetName(), str, 60*time.Second)
	got := tc.mergedCounts(spec.GetName())
	if _, ok := got["forged"]; ok || !maps.Equal(got, str.counts) {
		t.Fatalf("counts %v, want exactly %v", got, str.counts)
	}
}

// waitLeader waits until the cluster's coordinator leads (workers can
// register only then).
func waitLeader(t *testing.T, tc *testCluster) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !tc.Coord.IsLeader(); {
		if time.Now().After(deadline) {
			t.Fatal("the coordinator does not lead")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runFail runs a command that must fail and returns its output.
func runFail(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("%s %v succeeded, want a failure:\n%s", filepath.Base(name), args, out)
	}
	return string(out)
}

func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
	}
	return string(out)
}

// TestCoordinatorRefusesToStartOpen: a coordinator on a non-loopback
// address without TLS or authentication does not start unless --insecure;
// a malformed token file is refused with its line.
func TestCoordinatorRefusesToStartOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	out := runFail(t, nil, sluiceBin, "coordinator", "--grpc-addr", "0.0.0.0:0", "--etcd-endpoints", "127.0.0.1:1")
	if !strings.Contains(out, "--grpc-addr 0.0.0.0:0 is not loopback") || !strings.Contains(out, "--insecure") {
		t.Errorf("an open coordinator on 0.0.0.0:\n%s", out)
	}
	bad := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(bad, []byte("# tokens\nadmin alice 0123456789abcdef0123\nviewer bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = runFail(t, nil, sluiceBin, "coordinator", "--token-file", bad, "--etcd-endpoints", "127.0.0.1:1")
	if !strings.Contains(out, bad) || !strings.Contains(out, "line 3: want 3 fields") {
		t.Errorf("a malformed token file:\n%s", out)
	}
	out = runFail(t, nil, sluiceBin, "coordinator", "--tls-client-ca", bad, "--etcd-endpoints", "127.0.0.1:1")
	if !strings.Contains(out, "--tls-client-ca needs --tls-cert and --tls-key") {
		t.Errorf("a client CA without a certificate:\n%s", out)
	}
}

// TestSecureProcesses runs `sluice coordinator` with TLS and a token file,
// a `sluice worker` that authenticates with its token from SLUICE_TOKEN,
// submits with the CLI's --token and reads with grpcurl as the README
// shows (-H 'authorization: Bearer ...').
func TestSecureProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	grpcurl := grpcurlBin(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "-H 'authorization: Bearer ") {
		t.Errorf("README shows no grpcurl call with -H 'authorization: Bearer ...'")
	}
	ctx := context.Background()
	s := newSecurity(t)
	etcdAddr, peerAddr := freeAddr(t), freeAddr(t)
	e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: t.TempDir(), ClientAddr: etcdAddr, PeerAddr: peerAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, err := dev.StartKafka(dev.KafkaConfig{Addr: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	brokers := k.ListenAddrs()[0]
	grpcAddr := freeAddr(t)
	startProc(t, sluiceBin, "coordinator", "--etcd-endpoints", etcdAddr, "--grpc-addr", grpcAddr,
		"--tls-cert", s.certs.ServerCert(), "--tls-key", s.certs.ServerKey(), "--token-file", s.tokenFile, "--jwt-public-key", s.jwtPub)
	startProcEnv(t, []string{"SLUICE_TOKEN=" + s.tokens["w1"], "SLUICE_TLS_CA=" + s.certs.CA()}, sluiceBin,
		"worker", "--coordinator", grpcAddr, "--id", "w1")
	c, err := client.Dial([]string{grpcAddr}, s.sdk(t, "", s.tokens["alice"])...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitServing(t, c)

	want := map[string]int64{}
	producePageviews(t, brokers, 3000, 4, want)
	job := exampleWith(t, "job.json", brokers)
	out := runFail(t, nil, sluiceBin, "submit", "-f", job, "--coordinator", grpcAddr, "--tls-ca", s.certs.CA())
	if !strings.Contains(out, "Unauthenticated") {
		t.Errorf("sluice submit without a token:\n%s", out)
	}
	out = runFail(t, nil, sluiceBin, "submit", "-f", job, "--coordinator", grpcAddr, "--tls-ca", s.certs.CA(), "--token", s.tokens["bob"])
	if !strings.Contains(out, "PermissionDenied") {
		t.Errorf("sluice submit as a viewer:\n%s", out)
	}
	out = runEnv(t, []string{"SLUICE_TOKEN=" + s.tokens["alice"]}, sluiceBin, "submit", "-f", job, "--coordinator", grpcAddr, "--tls-ca", s.certs.CA())
	if !strings.Contains(out, "job pageviews-by-page submitted") {
		t.Fatalf("sluice submit: %s", out)
	}
	waitCounts(t, c, "pageviews-by-page", want, 60*time.Second)

	out = run(t, grpcurl, "-cacert", s.certs.CA(), "-H", "authorization: Bearer "+s.tokens["bob"],
		"-d", `{"job":"pageviews-by-page","merge":true}`, grpcAddr, "sluice.v1.JobService/GetResults")
	if !strings.Contains(out, `"merged"`) {
		t.Errorf("grpcurl GetResults as a viewer:\n%s", out)
	}
	out = runFail(t, nil, grpcurl, "-cacert", s.certs.CA(), "-d", `{"job":"pageviews-by-page"}`, grpcAddr, "sluice.v1.JobService/GetResults")
	if !strings.Contains(out, "Unauthenticated") {
		t.Errorf("grpcurl without a token:\n%s", out)
	}
}

// TestDevTLS runs `sluice dev --tls`: it makes a CA and certificates in the
// data dir, its workers and demo authenticate with theirs, grpcurl and the
// CLI work with the admin's certificate, and nothing works without one.
// Restarted on the same data dir, it keeps the certificates.
func TestDevTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	grpcurl := grpcurlBin(t)
	dataDir := t.TempDir()
	grpcAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	etcdAddr, peerAddr := freeAddr(t), freeAddr(t)
	devArgs := []string{"dev", "--tls", "--data-dir", dataDir, "--grpc-addr", grpcAddr, "--kafka-addr", kafkaAddr,
		"--etcd-addr", etcdAddr, "--etcd-peer-addr", peerAddr, "--workers", "2"}
	d := startProc(t, sluiceBin, devArgs...)
	tlsDir := filepath.Join(dataDir, "tls")
	ca, adminCert, adminKey := filepath.Join(tlsDir, "ca.pem"), filepath.Join(tlsDir, "admin.pem"), filepath.Join(tlsDir, "admin-key.pem")
	// The certificates exist before the coordinator listens.
	var c *client.Client
	for deadline := time.Now().Add(30 * time.Second); c == nil; {
		if cfg, err := auth.ClientTLS(ca, adminCert, adminKey); err == nil {
			if c, err = client.Dial([]string{grpcAddr}, client.WithTLS(cfg)); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificates in %s", tlsDir)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer c.Close()
	waitServing(t, c)
	banner := d.out.String()
	wantGrpcurl := fmt.Sprintf("grpcurl -cacert %s -cert %s -key %s -d @ %s sluice.v1.JobService/SubmitJob", ca, adminCert, adminKey, grpcAddr)
	if !strings.Contains(banner, wantGrpcurl) {
		t.Errorf("the banner does not show %q:\n%s", wantGrpcurl, banner)
	}

	want := map[string]int64{}
	producePageviews(t, kafkaAddr, 3000, 5, want)
	cmd := exec.Command(grpcurl, "-cacert", ca, "-cert", adminCert, "-key", adminKey, "-d", "@", grpcAddr, "sluice.v1.JobService/SubmitJob")
	in, err := os.Open(exampleWith(t, "submit-request.json", kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"JOB_STATE_RUNNING"`) {
		t.Fatalf("grpcurl SubmitJob: %v\n%s", err, out)
	}
	const job = "pageviews-by-page"
	waitCounts(t, c, job, want, 60*time.Second)

	viewer := []string{"SLUICE_TLS_CA=" + ca, "SLUICE_TLS_CERT=" + filepath.Join(tlsDir, "viewer.pem"), "SLUICE_TLS_KEY=" + filepath.Join(tlsDir, "viewer-key.pem")}
	if out := runEnv(t, viewer, sluiceBin, "jobs", "--coordinator", grpcAddr); !strings.Contains(out, job) {
		t.Errorf("sluice jobs as the viewer:\n%s", out)
	}
	if out := runFail(t, viewer, sluiceBin, "stop", job, "--coordinator", grpcAddr); !strings.Contains(out, "PermissionDenied") {
		t.Errorf("sluice stop as the viewer:\n%s", out)
	}
	if out := runFail(t, nil, sluiceBin, "jobs", "--coordinator", grpcAddr, "--tls-ca", ca); !strings.Contains(out, "Unavailable") {
		t.Errorf("sluice jobs without a client certificate:\n%s", out)
	}
	if out := runFail(t, nil, grpcurl, "-plaintext", grpcAddr, "sluice.v1.JobService/ListJobs"); !strings.Contains(out, "Unavailable") && !strings.Contains(out, "Failed to dial") {
		t.Errorf("grpcurl -plaintext:\n%s", out)
	}

	// A restart keeps the CA: the admin's certificate still works.
	before, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	d.interrupt(t)
	startProc(t, sluiceBin, devArgs...)
	waitServing(t, c)
	if after, _ := os.ReadFile(ca); string(after) != string(before) {
		t.Errorf("the restart replaced the CA")
	}
	producePageviews(t, kafkaAddr, 1000, 6, want)
	waitCounts(t, c, job, want, 60*time.Second)
}
